//! The other streams: bin levels, camera images, HTTP ingest and the images
//! page (JSON has a module of its own, `json_payloads.rs`). The routes come from the shipped bridge/routes.example.toml;
//! each test owns its broker, since those topics carry no test prefix.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use co2_testkit::{
    chromium, http_get, http_request, metric_value, unique, wait_until, Database, Publisher,
};

use crate::support::*;

const CAMERA_TOKEN: &str = "cam-1-token-0123456789abcdef";

async fn setup(name: &str) -> RouteRig {
    route_rig(name, ("cam-1", CAMERA_TOKEN), str::to_owned).await
}

async fn start(s: &RouteRig) -> InProcess {
    InProcess::start_with(s.env.clone(), Some(&s.config)).await
}

async fn count_where(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_levels_from_the_shipped_example_including_full_and_bad_lines() {
    let s = setup("bins").await;
    let bridge = start(&s).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("bin"));
    let lines = [
        "37.5 bin-1 2024-05-01 10:00:00",
        "FULL bin-1 2024-05-01 10:05:00",
        "12 bin-2 2024-05-01 10:00:00",
        "full   bin-2   2024-5-1 10:5:0",
        "half bin-3 2024-05-01 10:00:00",
        "12 bin-3 2024-05-01",
        "12 bin;3 2024-05-01 10:00:00",
    ];
    for line in lines {
        publisher.publish("bins/level", line).await.unwrap();
    }
    assert!(
        publisher
            .wait_acked(lines.len() as u64, Duration::from_secs(20))
            .await
    );
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.db.count("rejected_messages").await.unwrap_or(0) >= 3
        })
        .await
    );

    let rows: Vec<(String, String, Option<f64>, i8)> = sqlx::query_as(
        "SELECT CAST(bin_id AS CHAR), DATE_FORMAT(measured_at, '%Y-%m-%d %H:%i:%s'), level, `full` \
         FROM bin_levels ORDER BY bin_id, measured_at",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("bin-1".into(), "2024-05-01 10:00:00".into(), Some(37.5), 0),
            ("bin-1".into(), "2024-05-01 10:05:00".into(), None, 1),
            ("bin-2".into(), "2024-05-01 10:00:00".into(), Some(12.0), 0),
            ("bin-2".into(), "2024-05-01 10:05:00".into(), None, 1),
        ]
    );
    let mut reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM rejected_messages")
        .fetch_all(s.db.pool())
        .await
        .unwrap();
    reasons.sort();
    assert_eq!(reasons, ["bad_device", "bad_number", "field_count"]);
    // The pipeline counts a batch just after its commit, which the table
    // shows first: on a busy machine the scrape can come in between.
    co2_testkit::wait_until(Duration::from_secs(10), || async {
        let scrape = bridge.scrape().await;
        metric_value(
            &scrape,
            "co2_bridge_rows_written_total{route=\"bins\",sink=\"mysql\"}",
        ) == Some(4.0)
    })
    .await;
    let scrape = bridge.scrape().await;
    assert_eq!(
        metric_value(
            &scrape,
            "co2_bridge_rows_written_total{route=\"bins\",sink=\"mysql\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        metric_value(
            &scrape,
            "co2_bridge_messages_received_total{route=\"bins\"}"
        ),
        Some(7.0)
    );
    publisher.disconnect().await;
    bridge.stop().await;
}

pub fn jpeg_like(size: usize, seed: u8) -> Vec<u8> {
    let mut data = vec![0xFF, 0xD8, 0xFF, 0xE0];
    data.extend((0..size - 4).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_images_are_stored_byte_identical_and_oversized_ones_refused() {
    let s = setup("images").await;
    let bridge = start(&s).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("cam"));

    let three_mb = jpeg_like(3 * 1024 * 1024, 7);
    publisher
        .publish("camera/cam-1/snapshot", three_mb.clone())
        .await
        .unwrap();
    let small_png = png(4, 3, [200, 30, 30]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&small_png);
    let json = format!(r#"{{"m_id": 42, "datetime": "2024-05-01 10:00:00", "photo": "{b64}"}}"#);
    publisher.publish("camera/snapshot", json).await.unwrap();
    let too_big = jpeg_like(4 * 1024 * 1024 + 1, 1);
    publisher
        .publish("camera/cam-2/snapshot", too_big)
        .await
        .unwrap();
    assert!(publisher.wait_acked(3, Duration::from_secs(30)).await);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            s.db.count("rejected_messages").await.unwrap_or(0) >= 1
        })
        .await
    );
    assert!(
        wait_until(Duration::from_secs(30), || async {
            s.db.count("images").await.unwrap_or(0) >= 2
        })
        .await
    );

    let (ct, size, data): (String, u32, Vec<u8>) = sqlx::query_as(
        "SELECT CAST(content_type AS CHAR), size, data FROM images WHERE device = 'cam-1'",
    )
    .fetch_one(s.db.pool())
    .await
    .unwrap();
    assert_eq!((ct.as_str(), size as usize), ("image/jpeg", three_mb.len()));
    assert!(
        data == three_mb,
        "the stored JPEG differs from the published one"
    );
    let (ct, data): (String, Vec<u8>) =
        sqlx::query_as("SELECT CAST(content_type AS CHAR), data FROM images WHERE device = '42'")
            .fetch_one(s.db.pool())
            .await
            .unwrap();
    assert_eq!(ct, "image/png");
    assert_eq!(data, small_png);
    let (reason, kept, real): (String, i64, u32) = sqlx::query_as(
        "SELECT reason, CAST(LENGTH(payload) AS SIGNED), payload_bytes FROM rejected_messages",
    )
    .fetch_one(s.db.pool())
    .await
    .unwrap();
    assert_eq!(
        (reason.as_str(), kept, real),
        ("oversized", 1024, 4 * 1024 * 1024 + 1)
    );
    assert_eq!(
        count_where(&s.db, "SELECT COUNT(*) FROM images WHERE device = 'cam-2'").await,
        0
    );
    publisher.disconnect().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_answers_after_commit_and_refuses_bad_requests() {
    let s = setup("ingest").await;
    let bridge = start(&s).await;
    let auth = format!("Bearer {CAMERA_TOKEN}");
    let post = |path: &'static str, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let http = bridge.device.expect("the device listener is on");
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_request(http, "POST", path, &headers, &body)
                .await
                .unwrap()
        }
    };

    let image = png(8, 8, [20, 120, 220]);
    let (status, body) = post(
        "/ingest/camera",
        vec![("Authorization", auth.clone())],
        image.clone(),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // 201 means committed: the row is there the moment the answer is.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT data FROM images WHERE device = 'cam-1'")
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, image);

    let (status, body) = post(
        "/ingest/camera",
        vec![("Authorization", auth.clone())],
        b"not an image".to_vec(),
    )
    .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).trim()),
        (400, "rejected: not_an_image")
    );
    let (status, _) = post("/ingest/camera", vec![], image.clone()).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        "/ingest/camera",
        vec![("Authorization", "Bearer wrong-token-0123456789".into())],
        image.clone(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        "/ingest/camera",
        vec![("Authorization", auth.clone())],
        jpeg_like(4 * 1024 * 1024 + 1, 3),
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = post(
        "/ingest/bins",
        vec![("Authorization", auth.clone())],
        b"1 b 2024-01-01 00:00:00".to_vec(),
    )
    .await;
    assert_eq!(status, 404, "bins has no HTTP ingest");

    assert_eq!(s.db.count("images").await.unwrap(), 1);
    assert_eq!(
        count_where(
            &s.db,
            "SELECT COUNT(*) FROM rejected_messages WHERE reason = 'not_an_image'"
        )
        .await,
        1
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_page_shows_the_latest_image_of_each_device_in_chromium() {
    let mut s = setup("page").await;
    s.env
        .push(("CO2_BRIDGE__HTTP__IMAGES_PUBLIC".into(), "true".into()));
    let bridge = start(&s).await;
    let devices = bridge.device.expect("the device listener is on");
    let publisher = Publisher::connect(s.broker.port(), &unique("cam"));
    let colours = [
        ("cam-a", [220, 40, 40]),
        ("cam-b", [40, 160, 60]),
        ("cam-c", [40, 80, 220]),
    ];
    for (i, (device, rgb)) in colours.iter().enumerate() {
        // An older, smaller image first: the page must show the newer one.
        let old = base64::engine::general_purpose::STANDARD.encode(png(10, 10, [0, 0, 0]));
        let new =
            base64::engine::general_purpose::STANDARD.encode(png(160 + i as u32 * 40, 120, *rgb));
        for (time, photo) in [("2024-05-01 09:00:00", old), ("2024-05-01 10:00:00", new)] {
            let json =
                format!(r#"{{"m_id": "{device}", "datetime": "{time}", "photo": "{photo}"}}"#);
            publisher.publish("camera/snapshot", json).await.unwrap();
        }
    }
    assert!(publisher.wait_acked(6, Duration::from_secs(20)).await);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.db.count("images").await.unwrap_or(0) >= 6
        })
        .await
    );

    let (status, html) = http_get(devices, "/images").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(html.matches("<img ").count(), 3, "{html}");
    assert_eq!(
        http_get(bridge.http, "/images").await.unwrap().0,
        404,
        "the images page is on the device listener, not the operator one"
    );

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-page");
    std::fs::create_dir_all(&out).unwrap();
    let url = format!("http://{devices}/images");
    let dom = chromium(&out, &["--dump-dom", &url]).await.unwrap();
    for (i, (device, _)) in colours.iter().enumerate() {
        let width = 160 + i * 40;
        let figure = dom
            .split("<figure")
            .find(|f| f.contains(&format!("id=\"device-{device}\"")))
            .unwrap_or_else(|| panic!("no figure for {device}:\n{dom}"));
        assert!(
            figure.contains(&format!("data-loaded=\"{width}\"")),
            "{device}'s newest image ({width} px wide) was not rendered:\n{figure}"
        );
    }
    let shot = out.join("images-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &out,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,800",
            &url,
        ],
    )
    .await
    .unwrap();
    let written = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        written.starts_with(b"\x89PNG"),
        "the screenshot is not a PNG"
    );
    eprintln!("screenshot: {}", shot.display());
    publisher.disconnect().await;
    bridge.stop().await;
}

/// Kill -9 mid-stream on one shipped route, restart: every message with its
/// own time is stored exactly once.
async fn drill(
    name: &str,
    table: &'static str,
    message: fn(usize) -> (String, Vec<u8>),
    total: usize,
    kill_at: i64,
) {
    let distinct = match table {
        "bin_levels" => "SELECT COUNT(DISTINCT bin_id, measured_at) FROM bin_levels",
        "readings" => "SELECT COUNT(DISTINCT device, field, `time`) FROM readings",
        _ => "SELECT COUNT(DISTINCT device, `time`) FROM images",
    };
    let drill = Drill {
        rig: setup(name).await,
        table,
        message,
        messages: total,
        rows: total as i64,
        kill_at,
        distinct,
        exact: true,
    };
    sigkill_drill(name, drill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_on_the_delimited_route() {
    drill(
        "killbins",
        "bin_levels",
        |i| {
            let line = format!("{} bin-{} {}", i % 100, i % 7, minute(i));
            ("bins/level".into(), line.into_bytes())
        },
        6000,
        1500,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_on_the_json_route() {
    drill(
        "killjson",
        "readings",
        |i| {
            let json = format!(r#"{{"temp": {}, "time": "{}"}}"#, i % 40, minute(i));
            ("sensors/dht-9/dht11".into(), json.into_bytes())
        },
        6000,
        1500,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_on_the_binary_route() {
    drill(
        "killcam",
        "images",
        |i| {
            let photo =
                base64::engine::general_purpose::STANDARD.encode(jpeg_like(20_000, i as u8));
            let json = format!(
                r#"{{"m_id": "cam-{}", "datetime": "{}", "photo": "{photo}"}}"#,
                i % 5,
                minute(i)
            );
            ("camera/snapshot".into(), json.into_bytes())
        },
        1500,
        300,
    )
    .await;
}
