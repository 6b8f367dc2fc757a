//! The bridge's edges, against the real binary: HTTP limits (slow clients,
//! idle connections, too many requests, deadlines, shutdown), device identity,
//! the byte budget and dead-letter retention. Each test checks that the other
//! devices' readings keep landing and the bridge stays ready.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use co2_testkit::{
    http_get, http_request, metric_value, unique, wait_until, Broker, Database, Publisher,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const TOKEN: &str = "cam-1-token-0123456789abcdef";
const OTHER_TOKEN: &str = "cam-2-token-0123456789abcdef";

struct Rig {
    db: Database,
    broker: Broker,
    prefix: String,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

async fn rig(name: &str, extra: &[(&str, &str)]) -> Rig {
    let db = Database::create(name).await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique(name);
    let config = routes_config(&[("cam-1", TOKEN), ("cam-2", OTHER_TOKEN)]);
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
    env.push(("CO2_BRIDGE_CONFIG".into(), config.display().to_string()));
    env.push(device_listener());
    env.push((
        "CO2_BRIDGE__STATE__DIR".into(),
        dir.path().display().to_string(),
    ));
    for (k, v) in extra {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    Rig {
        db,
        broker,
        prefix,
        env,
        _dir: dir,
    }
}

/// Publishes reading `i` of device `good` and waits for its row.
async fn a_reading_lands(rig: &Rig, publisher: &Publisher, i: usize) -> bool {
    let (_, time, value) = reading(0, i);
    publisher
        .publish(
            &format!("{}/good/emissions", rig.prefix),
            payload(time, value),
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(15), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM co2_emissions WHERE device = 'good' AND date_time = ?",
        )
        .bind(time.naive_utc())
        .fetch_one(rig.db.pool())
        .await
        .unwrap_or(0);
        n == 1
    })
    .await
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

fn png_upload() -> Vec<u8> {
    png(4, 4, [1, 2, 3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_while_readings_keep_landing() {
    let rig = rig(
        "slow",
        &[
            ("CO2_BRIDGE__HTTP__HEADER_READ_TIMEOUT_S", "2"),
            ("CO2_BRIDGE__HTTP__BODY_TIMEOUT_S", "2"),
            ("CO2_BRIDGE__HTTP__MAX_CONNECTIONS", "50"),
        ],
    )
    .await;
    let bridge = spawn_binary(&rig.env, "slow");
    bridge.wait_ready().await;
    let devices = bridge.device.unwrap();
    let publisher = Publisher::connect(rig.broker.port(), &unique("pub"));

    // Slowloris: a request head sent a byte a second is cut off at the header timeout.
    let mut slow = TcpStream::connect(devices).await.unwrap();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for b in b"POST /ingest/camera HTTP/1.1\r\nHost: x\r\nX-Slow: " {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    assert!(
        a_reading_lands(&rig, &publisher, 1).await,
        "{}",
        bridge.log_text()
    );
    let mut slow = writer.await.unwrap();
    let closed = read_until_closed(&mut slow, Duration::from_secs(20)).await;
    let (_, at) = closed.expect("a slow request head is never cut off");
    assert!(
        at - started < Duration::from_secs(8),
        "cut off after {:?}",
        at - started
    );

    // A slow body: the head arrives, the body a byte a second: 408, nothing stored.
    let mut body = TcpStream::connect(devices).await.unwrap();
    let upload = png_upload();
    body.write_all(
        format!(
            "POST /ingest/camera HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\n\r\n",
            upload.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in upload {
            if body.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        body
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut body = trickle.await.unwrap();
    let (answer, _) = read_until_closed(&mut body, Duration::from_secs(10))
        .await
        .expect("a slow body is never answered");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(rig.db.count("images").await.unwrap(), 0);

    // 2,000 idle connections: 50 are served (and cut at the header timeout), the
    // rest refused at once; the operator listener, MQTT and the database go on.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(devices).await.unwrap());
    }
    assert!(
        a_reading_lands(&rig, &publisher, 2).await,
        "{}",
        bridge.log_text()
    );
    let (status, body) = http_get(bridge.http, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut refused = 0;
    for stream in idle.iter_mut().take(200) {
        if let Some((sent, _)) = read_until_closed(stream, Duration::from_secs(10)).await {
            if String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 100,
        "only {refused} of 200 late connections were refused"
    );
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let counted = metric_value(
        &scrape,
        "co2_bridge_http_refused_total{listener=\"device\",why=\"connections\"}",
    )
    .unwrap_or(0.0);
    assert!(counted >= 1900.0, "refusals counted: {counted}");
    drop(idle);
    // Once they are gone, ingest works again.
    let auth = format!("Bearer {TOKEN}");
    let ok = wait_until(Duration::from_secs(15), || async {
        matches!(
            http_request(
                devices,
                "POST",
                "/ingest/camera",
                &[("Authorization", &auth)],
                &png_upload()
            )
            .await,
            Ok((201, _))
        )
    })
    .await;
    assert!(ok, "{}", bridge.log_text());
    assert!(a_reading_lands(&rig, &publisher, 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_beyond_the_limits_is_refused_and_a_timeout_never_commits_later() {
    let rig = rig(
        "ingest-limits",
        &[
            ("CO2_BRIDGE__HTTP__MAX_INGEST_REQUESTS", "2"),
            ("CO2_BRIDGE__HTTP__REQUEST_TIMEOUT_S", "3"),
            ("CO2_BRIDGE__BATCH__MAX_DELAY_MS", "10"),
            ("CO2_BRIDGE__BATCH__STALL_TIMEOUT_S", "2"),
        ],
    )
    .await;
    let bridge = spawn_binary(&rig.env, "ingest-limits");
    bridge.wait_ready().await;
    let devices = bridge.device.unwrap();
    let auth = format!("Bearer {TOKEN}");
    // Three images with their own times: their rows tell which were stored.
    let upload = |minute: u32| {
        let photo = base64::engine::general_purpose::STANDARD.encode(png_upload());
        format!(r#"{{"datetime": "2026-01-01 00:{minute:02}:00", "photo": "{photo}"}}"#)
            .into_bytes()
    };

    // The images table is locked: the first request's batch is claimed and
    // stuck in its INSERT, the second waits behind it, the third is one too many.
    let mut lock = rig.db.pool().acquire().await.unwrap();
    sqlx::query("LOCK TABLES images WRITE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let post = |body: Vec<u8>| {
        let auth = auth.clone();
        tokio::spawn(async move {
            http_request(
                devices,
                "POST",
                "/ingest/camera",
                &[("Authorization", &auth)],
                &body,
            )
            .await
            .unwrap()
        })
    };
    let first = post(upload(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = post(upload(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = http_request(
        devices,
        "POST",
        "/ingest/camera",
        &[("Authorization", &auth)],
        &upload(3),
    )
    .await
    .unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("too many ingest requests"));

    let (status, body) = first.await.unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("may have been stored"), "{body}");
    let (status, body) = second.await.unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("now it will not be"), "{body}");
    assert_eq!(
        http_get(bridge.http, "/readyz").await.unwrap().0,
        503,
        "stalled writes are not ready"
    );

    sqlx::query("UNLOCK TABLES")
        .execute(&mut *lock)
        .await
        .unwrap();
    drop(lock);
    bridge.wait_ready().await;
    // The first was written after all; the second never is; the third never got in.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            rig.db.count("images").await.unwrap_or(0) == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let minutes: Vec<i64> = sqlx::query_scalar("SELECT MINUTE(`time`) FROM images")
        .fetch_all(rig.db.pool())
        .await
        .unwrap();
    assert_eq!(minutes, [1]);
    // Retrying the first is a no-op: it carries its time.
    let (status, _) = http_request(
        devices,
        "POST",
        "/ingest/camera",
        &[("Authorization", &auth)],
        &upload(1),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    assert_eq!(rig.db.count("images").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_ingest_requests_in_flight() {
    let rig = rig("ingest-drain", &[]).await;
    let mut bridge = spawn_binary(&rig.env, "ingest-drain");
    bridge.wait_ready().await;
    let devices = bridge.device.unwrap();
    let mut lock = rig.db.pool().acquire().await.unwrap();
    sqlx::query("LOCK TABLES images WRITE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let auth = format!("Bearer {TOKEN}");
    let request = tokio::spawn(async move {
        http_request(
            devices,
            "POST",
            "/ingest/camera",
            &[("Authorization", &auth)],
            &png_upload(),
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The lock goes a second after SIGTERM: the draining bridge then commits
    // the request it holds, answers it, and only then exits.
    let unlock = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sqlx::query("UNLOCK TABLES")
            .execute(&mut *lock)
            .await
            .unwrap();
    });
    let exit = bridge
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    unlock.await.unwrap();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert!(exit.success(), "{exit}: {}", bridge.log_text());
    assert_eq!(rig.db.count("images").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_write_in_another_devices_name() {
    let rig = rig("identity", &[]).await;
    let bridge = spawn_binary(&rig.env, "identity");
    bridge.wait_ready().await;
    let devices = bridge.device.unwrap();
    let publisher = Publisher::connect(rig.broker.port(), &unique("pub"));
    let photo = base64::engine::general_purpose::STANDARD.encode(png_upload());
    let image = |device: &str, minute: u32| {
        format!(
            r#"{{"m_id": "{device}", "datetime": "2026-01-01 00:{minute:02}:00", "photo": "{photo}"}}"#
        )
    };

    // MQTT: cam-1's topic, cam-2 in the payload.
    publisher
        .publish("camera/cam-1/snapshot", image("cam-2", 1))
        .await
        .unwrap();
    publisher
        .publish("camera/cam-1/snapshot", image("cam-1", 2))
        .await
        .unwrap();
    // HTTP: cam-1's token, cam-2 in the payload.
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http_request(
        devices,
        "POST",
        "/ingest/camera",
        &[("Authorization", &auth)],
        image("cam-2", 3).as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (400, "rejected: device_mismatch\n".into())
    );
    // The shared topic trusts the payload (trust_payload_device = true).
    publisher
        .publish("camera/snapshot", image("cam-2", 4))
        .await
        .unwrap();
    assert!(a_reading_lands(&rig, &publisher, 1).await);

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT CAST(device AS CHAR), MINUTE(`time`) FROM images ORDER BY 2")
            .fetch_all(rig.db.pool())
            .await
            .unwrap();
    assert_eq!(rows, [("cam-1".to_owned(), 2), ("cam-2".to_owned(), 4)]);
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM rejected_messages ORDER BY id")
            .fetch_all(rig.db.pool())
            .await
            .unwrap();
    assert_eq!(reasons, ["device_mismatch", "device_mismatch"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_images_cannot_fill_the_bridges_memory() {
    // A window of 65,535 and 1 MiB images: the byte budget (4 MiB) holds them back.
    let rig = rig(
        "budget",
        &[("CO2_BRIDGE__BATCH__MAX_INFLIGHT_BYTES", "4194304")],
    )
    .await;
    let bridge = spawn_binary(&rig.env, "budget");
    bridge.wait_ready().await;
    let mut lock = rig.db.pool().acquire().await.unwrap();
    sqlx::query("LOCK TABLES images WRITE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let publisher = Publisher::connect(rig.broker.port(), &unique("pub"));
    let mut image = png(4, 4, [9, 9, 9]);
    image.resize(1024 * 1024, 0);
    let count = 40;
    for i in 0..count {
        let photo = base64::engine::general_purpose::STANDARD.encode(&image);
        let body = format!(
            r#"{{"m_id": "cam-9", "datetime": "2026-01-01 01:{i:02}:00", "photo": "{photo}"}}"#
        );
        publisher.publish("camera/snapshot", body).await.unwrap();
    }
    assert!(publisher.wait_acked(count, Duration::from_secs(60)).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let held = metric_value(&scrape, "co2_bridge_inflight_bytes").unwrap();
    // The budget, plus what one read of a message or two can add (base64: 1.4 MiB each).
    assert!(
        held <= 12.0 * 1024.0 * 1024.0,
        "held {held} bytes with 56 MiB queued"
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", bridge.process.pid()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
        })
        .unwrap();
    assert!(
        rss < 128 * 1024,
        "RSS {rss} kB with 56 MiB queued at the broker"
    );

    sqlx::query("UNLOCK TABLES")
        .execute(&mut *lock)
        .await
        .unwrap();
    drop(lock);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            rig.db.count("images").await.unwrap_or(0) == count as i64
        })
        .await,
        "{}",
        bridge.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_dead_letters_and_keeps_new_ones() {
    let rig = rig(
        "retention",
        &[("CO2_BRIDGE__DEAD_LETTERS__PRUNE_INTERVAL_S", "1")],
    )
    .await;
    let bridge = spawn_binary(&rig.env, "retention");
    bridge.wait_ready().await;
    // 2,500 dead letters from 40 days ago (more than one chunk), and a new one.
    sqlx::query(
        "INSERT INTO rejected_messages (received_at, topic, payload, payload_bytes, reason) \
         SELECT UTC_TIMESTAMP(3) - INTERVAL 40 DAY, 'old', 'x', 1, 'bad_json' FROM seq_1_to_2500",
    )
    .execute(rig.db.pool())
    .await
    .unwrap();
    let publisher = Publisher::connect(rig.broker.port(), &unique("pub"));
    publisher
        .publish(&format!("{}/pi/emissions", rig.prefix), "not a reading")
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            let old: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM rejected_messages WHERE topic = 'old'")
                    .fetch_one(rig.db.pool())
                    .await
                    .unwrap_or(-1);
            old == 0
        })
        .await,
        "{}",
        bridge.log_text()
    );
    // The pass counts what it deleted once it is done; the new one is written meanwhile.
    let settled = wait_until(Duration::from_secs(10), || async {
        let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
        let kept: Vec<String> = sqlx::query_scalar("SELECT reason FROM rejected_messages")
            .fetch_all(rig.db.pool())
            .await
            .unwrap_or_default();
        metric_value(&scrape, "co2_bridge_dead_letters_pruned_total") == Some(2500.0)
            && kept == ["missing_separator"]
    })
    .await;
    assert!(settled, "{}", bridge.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_page_needs_a_viewer_token_and_reads_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let viewers = dir.path().join("viewers");
    std::fs::write(&viewers, "alice viewer-token-0123456789\n").unwrap();
    let viewers = viewers.display().to_string();
    let rig = rig(
        "viewers",
        &[("CO2_BRIDGE__HTTP__VIEWER_TOKENS_FILE", &viewers)],
    )
    .await;
    let bridge = spawn_binary(&rig.env, "viewers");
    bridge.wait_ready().await;
    let devices: SocketAddr = bridge.device.unwrap();
    let (status, _) = http_get(devices, "/images").await.unwrap();
    assert_eq!(status, 401);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:viewer-token-0123456789")
    );
    let (status, _) = http_request(devices, "GET", "/images", &[("Authorization", &basic)], b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = http_request(
        devices,
        "GET",
        "/images",
        &[("Authorization", "Bearer wrong-token-0123456789")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(status, 401);

    // The page's query: no scan of the images table, one index entry per device.
    sqlx::query(
        "INSERT INTO images (device, `time`, content_type, size, data) \
         SELECT CONCAT('d', seq % 20), FROM_UNIXTIME(1700000000 + seq), 'image/png', 1, 'x' FROM seq_1_to_20000",
    )
    .execute(rig.db.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE TABLE images")
        .execute(rig.db.pool())
        .await
        .unwrap();
    let plan: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query(
        "EXPLAIN SELECT i.id FROM `images` i JOIN (SELECT `device` AS d, MAX(`time`) AS t FROM `images` \
         GROUP BY `device`) l ON i.`device` = l.d AND i.`time` = l.t",
    )
    .fetch_all(rig.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| {
        use sqlx::Row;
        (
            row.try_get("table").ok(),
            row.try_get("type").ok(),
            row.try_get("Extra").ok(),
        )
    })
    .collect();
    for (table, kind, _) in &plan {
        if table.as_deref().is_some_and(|t| t == "i" || t == "images") {
            assert_ne!(kind.as_deref(), Some("ALL"), "a full scan: {plan:?}");
        }
    }
    assert!(
        plan.iter().any(|(_, _, e)| e
            .as_deref()
            .is_some_and(|e| e.contains("Using index for group-by"))),
        "{plan:?}"
    );
}
