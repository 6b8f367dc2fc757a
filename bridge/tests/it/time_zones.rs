//! Devices that send local time without an offset, formatted exactly as the
//! reference Python publisher does (`datetime.now()` under the Pi's `TZ`,
//! unpadded fields), through the real broker into MariaDB: on defaults the
//! mistake is named (dead letter, status page, metric); a per-device zone
//! stores the right UTC times; `auto` learns the offset from live readings,
//! stores nothing at a guessed time and keeps what it learned across a
//! restart; a backlog or a device that alternates offsets teaches nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use co2_testkit::{http_get, metric_value, unique, wait_until, Database, Publisher};
use serde_json::Value;

use crate::support::*;

/// The reference publisher's payload for `value`, read from the clock of a
/// Pi whose zone is `tz`, with the time it was taken (UTC) to compare with.
fn reference_payload(tz: &str, value: f64) -> (String, DateTime<Utc>) {
    let script = "from datetime import datetime\nimport sys\nnow = datetime.now()\n\
                  print(f\"{now.year}-{now.month}-{now.day} {now.hour}:{now.minute}:{now.second}|\" + sys.argv[1])";
    let before = Utc::now();
    let out = std::process::Command::new("python3")
        .args(["-c", script, &format!("{value:.1}")])
        .env("TZ", tz)
        .output()
        .expect("python3 runs the reference formatting");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (text, before)
}

/// Publishes `n` reference readings of `device` from zone `tz`, one a
/// second (the reference format has whole seconds); returns when each was taken.
async fn publish_live(
    publisher: &Publisher,
    prefix: &str,
    device: &str,
    tz: &str,
    n: usize,
) -> Vec<DateTime<Utc>> {
    let mut taken = Vec::new();
    for i in 0..n {
        let (payload, at) = reference_payload(tz, 400.0 + i as f64);
        publisher
            .publish(&format!("{prefix}/{device}/emissions"), payload)
            .await
            .unwrap();
        taken.push(at);
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    taken
}

async fn status_json(http: std::net::SocketAddr) -> Value {
    let (status, body) = http_get(http, "/status.json").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn clock<'a>(json: &'a Value, device: &str) -> Option<&'a Value> {
    json["clocks"]
        .as_array()?
        .iter()
        .find(|c| c["device"] == device)
}

async fn letters(db: &Database, device: &str) -> Vec<(String, String)> {
    sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT reason, detail FROM rejected_messages WHERE topic LIKE ? ORDER BY id",
    )
    .bind(format!("%/{device}/emissions"))
    .fetch_all(db.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(r, d)| (r, d.unwrap_or_default()))
    .collect()
}

/// Stored times of `device`, each minus the UTC time it was taken, in seconds.
async fn stored_errors(db: &Database, device: &str, taken: &[DateTime<Utc>]) -> Vec<i64> {
    stored_errors_shifted(db, device, taken, 0).await
}

/// As [`stored_errors`], each stored time moved `shift_s` first (to pair a
/// row stored hours wrong with the reading it came from).
async fn stored_errors_shifted(
    db: &Database,
    device: &str,
    taken: &[DateTime<Utc>],
    shift_s: i64,
) -> Vec<i64> {
    let rows: Vec<(chrono::NaiveDateTime,)> =
        sqlx::query_as("SELECT date_time FROM co2_emissions WHERE device = ? ORDER BY date_time")
            .bind(device)
            .fetch_all(db.pool())
            .await
            .unwrap();
    rows.iter()
        .map(|(t,)| {
            let t = t.and_utc() + chrono::Duration::seconds(shift_s);
            // The nearest taking time: the reference format drops fractions.
            taken
                .iter()
                .map(|at| (t - *at).num_seconds())
                .min_by_key(|e| e.abs())
                .unwrap_or(i64::MAX)
        })
        .collect()
}

async fn wait_letters(db: &Database, device: &str, n: usize) -> Vec<(String, String)> {
    let ok = wait_until(Duration::from_secs(15), || async {
        letters(db, device).await.len() >= n
    })
    .await;
    let got = letters(db, device).await;
    assert!(
        ok,
        "{device}: {} dead letters, wanted {n}: {got:?}",
        got.len()
    );
    got
}

async fn rows_of(db: &Database, device: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM co2_emissions WHERE device = ?")
        .bind(device)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_defaults_a_zone_mistake_is_named_where_people_look() {
    let db = Database::create("tz_defaults").await.unwrap();
    let prefix = unique("tzd");
    let bridge = InProcess::start(bridge_env(&db.url(), 1883, &prefix, 0)).await;
    let publisher = Publisher::connect(1883, &unique("pub"));

    let seoul = tokio::join!(
        publish_live(&publisher, &prefix, "pi-seoul", "Asia/Seoul", 4),
        publish_live(&publisher, &prefix, "pi-ny", "America/New_York", 4),
        publish_live(&publisher, &prefix, "pi-kolkata", "Asia/Kolkata", 4),
    );
    let (_, ny_taken, _) = seoul;

    // Seoul: nothing stored, each dead letter says what and why.
    let seoul = wait_letters(&db, "pi-seoul", 4).await;
    for (reason, detail) in &seoul {
        assert_eq!(reason, "too_far_in_future");
        assert!(
            detail.starts_with("9 h 00 min ahead of its arrival: local time of UTC+09:00? set the time zone of route co2 or of this device"),
            "{detail}"
        );
    }
    assert_eq!(rows_of(&db, "pi-seoul").await, 0);
    // Kolkata, a half-hour zone, likewise.
    let kolkata = wait_letters(&db, "pi-kolkata", 4).await;
    assert!(
        kolkata[0].1.contains("5 h 30 min ahead") && kolkata[0].1.contains("UTC+05:30"),
        "{kolkata:?}"
    );
    // New York: stored five hours early — that cannot be refused, but it is named.
    wait_for_rows(&db, 4, Duration::from_secs(15)).await;
    let errors = stored_errors_shifted(&db, "pi-ny", &ny_taken, 5 * 3600).await;
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|e| (0..=2).contains(e)), "{errors:?}");

    // The status page and the metric, once the clocks reach them.
    let named = wait_until(Duration::from_secs(15), || async {
        let scrape = bridge.scrape().await;
        let offset = |d: &str| {
            metric_value(
                &scrape,
                &format!("co2_device_clock_offset_seconds{{device=\"{d}\"}}"),
            )
        };
        offset("pi-seoul").is_some_and(|s| (s - 32_400.0).abs() < 120.0)
            && offset("pi-ny").is_some_and(|s| (s + 18_000.0).abs() < 120.0)
    })
    .await;
    assert!(named, "{}", bridge.scrape().await);
    let json = status_json(bridge.http).await;
    let hint = |d: &str| {
        clock(&json, d)
            .and_then(|c| c["hint"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        hint("pi-seoul").contains("local time of UTC+09:00?"),
        "{json}"
    );
    assert!(
        hint("pi-seoul").contains("match = \"pi-seoul\", time_zone = \"+09:00\""),
        "{json}"
    );
    assert!(hint("pi-ny").starts_with("5 h 00 min behind"), "{json}");
    assert!(hint("pi-ny").contains("UTC-05:00"), "{json}");
    let (_, page) = http_get(bridge.http, "/").await.unwrap();
    assert!(
        page.contains("Device clocks") && page.contains("clock-pi-seoul"),
        "{page}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_per_device_stores_true_utc_times() {
    let db = Database::create("tz_devices").await.unwrap();
    let prefix = unique("tzp");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        "[[devices]]\nmatch = \"pi-seoul\"\ntime_zone = \"Asia/Seoul\"\n\n\
         [[devices]]\nmatch = \"pi-ny-*\"\ntime_zone = \"America/New_York\"\n\n\
         [[devices]]\nmatch = \"pi-*\"\ntime_zone = \"Asia/Kolkata\"\n",
    )
    .unwrap();
    let bridge =
        InProcess::start_with(bridge_env(&db.url(), 1883, &prefix, 0), Some(&config)).await;
    let publisher = Publisher::connect(1883, &unique("pub"));
    let (seoul, ny, kolkata) = tokio::join!(
        publish_live(&publisher, &prefix, "pi-seoul", "Asia/Seoul", 3),
        publish_live(&publisher, &prefix, "pi-ny-1", "America/New_York", 3),
        publish_live(&publisher, &prefix, "pi-kolkata", "Asia/Kolkata", 3),
    );
    wait_for_rows(&db, 9, Duration::from_secs(15)).await;
    for (device, taken) in [
        ("pi-seoul", seoul),
        ("pi-ny-1", ny),
        ("pi-kolkata", kolkata),
    ] {
        let errors = stored_errors(&db, device, &taken).await;
        assert_eq!(errors.len(), 3, "{device}");
        assert!(
            errors.iter().all(|e| (0..=2).contains(e)),
            "{device}: {errors:?}"
        );
    }
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);
    let json = status_json(bridge.http).await;
    let zone = |d: &str| {
        clock(&json, d)
            .and_then(|c| c["zone"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        zone("pi-ny-1"),
        "America/New_York ([[devices]] match = \"pi-ny-*\")"
    );
    assert!(
        clock(&json, "pi-seoul").is_some_and(|c| c["hint"].is_null()),
        "{json}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_learns_from_live_readings_never_from_a_backlog_and_remembers() {
    let db = Database::create("tz_auto").await.unwrap();
    let prefix = unique("tza");
    let state = tempfile::tempdir().unwrap();
    let mut env = bridge_env(&db.url(), 1883, &prefix, 0);
    env.push(("CO2_BRIDGE__WIRE__TIME_ZONE".into(), "auto".into()));
    env.push((
        "CO2_BRIDGE__STATE__DIR".into(),
        state.path().display().to_string(),
    ));
    let bridge = InProcess::start(env.clone()).await;
    let publisher = Publisher::connect(1883, &unique("pub"));
    let topic = format!("{prefix}/pi-seoul/emissions");

    // A backlog drained after an outage: an hour of Seoul wall-clock
    // readings, one per 10 s, sent as fast as the broker takes them.
    let seoul = chrono_tz::Asia::Seoul;
    let start = Utc::now() - chrono::Duration::hours(1);
    for i in 0..60 {
        let at = (start + chrono::Duration::seconds(10 * i)).with_timezone(&seoul);
        let payload = at.format("%Y-%-m-%-d %-H:%-M:%-S|500.0").to_string();
        publisher.publish(&topic, payload).await.unwrap();
    }
    let backlog = wait_letters(&db, "pi-seoul", 60).await;
    assert!(
        backlog
            .iter()
            .all(|(r, d)| r == "time_zone_unknown" && d.contains("learning")),
        "{backlog:?}"
    );
    assert_eq!(
        rows_of(&db, "pi-seoul").await,
        0,
        "nothing stored at a guessed time"
    );
    let json = status_json(bridge.http).await;
    assert!(
        clock(&json, "pi-seoul")
            .is_some_and(|c| c["zone"].as_str().unwrap_or("").contains("not learned")),
        "{json}"
    );

    // Live: the fourth reading teaches +09:00 and is itself stored right.
    let taken = publish_live(&publisher, &prefix, "pi-seoul", "Asia/Seoul", 6).await;
    wait_for_rows(&db, 3, Duration::from_secs(15)).await;
    let errors = stored_errors(&db, "pi-seoul", &taken).await;
    assert!(errors.len() >= 3, "{errors:?}");
    assert!(
        errors.iter().all(|e| (0..=2).contains(e)),
        "stored at a wrong time: {errors:?}"
    );
    let held = letters(&db, "pi-seoul").await.len() - 60;
    assert_eq!(
        errors.len() + held,
        6,
        "each live reading is a row or held once"
    );
    bridge.stop().await;

    // After a restart the offset is known at once.
    let bridge = InProcess::start(env).await;
    let before = rows_of(&db, "pi-seoul").await;
    let taken = publish_live(&publisher, &prefix, "pi-seoul", "Asia/Seoul", 1).await;
    let stored = wait_until(Duration::from_secs(10), || async {
        rows_of(&db, "pi-seoul").await == before + 1
    })
    .await;
    assert!(stored, "the first reading after a restart is stored");
    let errors = stored_errors(&db, "pi-seoul", &taken).await;
    assert!(errors.iter().any(|e| (0..=2).contains(e)), "{errors:?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_alternating_offsets_is_flagged_and_never_learned() {
    let db = Database::create("tz_flip").await.unwrap();
    let prefix = unique("tzf");
    let mut env = bridge_env(&db.url(), 1883, &prefix, 0);
    env.push(("CO2_BRIDGE__WIRE__TIME_ZONE".into(), "auto".into()));
    let state = tempfile::tempdir().unwrap();
    env.push((
        "CO2_BRIDGE__STATE__DIR".into(),
        state.path().display().to_string(),
    ));
    let bridge = InProcess::start(env).await;
    let publisher = Publisher::connect(1883, &unique("pub"));
    for i in 0..8 {
        let tz = if i % 2 == 0 { "Asia/Seoul" } else { "UTC" };
        let (payload, _) = reference_payload(tz, 450.0);
        publisher
            .publish(&format!("{prefix}/pi-flip/emissions"), payload)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    // Another device, which sends offsets, keeps landing meanwhile.
    for i in 0..5 {
        let at = Utc::now() - chrono::Duration::seconds(i);
        let payload = format!("{}|1", at.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        publisher
            .publish(&format!("{prefix}/pi-utc/emissions"), payload)
            .await
            .unwrap();
    }
    wait_for_rows(&db, 5, Duration::from_secs(15)).await;
    let flip = wait_letters(&db, "pi-flip", 8).await;
    assert!(
        flip.iter().all(|(r, _)| r == "time_zone_unknown"),
        "{flip:?}"
    );
    assert_eq!(rows_of(&db, "pi-flip").await, 0);
    let json = status_json(bridge.http).await;
    let row = clock(&json, "pi-flip").expect("the device is on the status page");
    assert_eq!(row["unsteady"], true, "{json}");
    assert!(
        row["hint"].as_str().unwrap_or("").contains("jump"),
        "{json}"
    );
    assert!(
        row["zone"].as_str().unwrap_or("").contains("not learned"),
        "{json}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berlin_daylight_saving_follows_the_stated_rules() {
    let db = Database::create("tz_berlin").await.unwrap();
    let prefix = unique("tzb");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, "[co2]\ntime_zone = \"Europe/Berlin\"\n").unwrap();
    let bridge =
        InProcess::start_with(bridge_env(&db.url(), 1883, &prefix, 0), Some(&config)).await;
    let publisher = Publisher::connect(1883, &unique("pub"));
    let topic = format!("{prefix}/pi-berlin/emissions");
    // Wall-clock readings around both switches of 2026, as the reference formats them.
    for payload in [
        "2026-3-29 1:59:59|1", // CET: 00:59:59 UTC
        "2026-3-29 2:30:0|2",  // skipped by the spring-forward: refused
        "2026-3-29 3:0:0|3",   // CEST: 01:00:00 UTC
        "2026-10-25 2:30:0|4", // repeated: read as the later pass, nearer its (late) arrival
        "2026-10-25 3:0:0|5",  // CET: 02:00:00 UTC
    ] {
        publisher.publish(&topic, payload).await.unwrap();
    }
    wait_for_rows(&db, 4, Duration::from_secs(15)).await;
    let rows: Vec<(chrono::NaiveDateTime, f64)> = sqlx::query_as(
        "SELECT date_time, emissions FROM co2_emissions WHERE device = 'pi-berlin' ORDER BY emissions",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let got: Vec<(String, f64)> = rows
        .iter()
        .map(|(t, v)| (t.format("%Y-%m-%d %H:%M:%S").to_string(), *v))
        .collect();
    assert_eq!(
        got,
        [
            ("2026-03-29 00:59:59".to_owned(), 1.0),
            ("2026-03-29 01:00:00".to_owned(), 3.0),
            ("2026-10-25 01:30:00".to_owned(), 4.0),
            ("2026-10-25 02:00:00".to_owned(), 5.0),
        ]
    );
    let letters = wait_letters(&db, "pi-berlin", 1).await;
    assert_eq!(letters[0].0, "bad_datetime");
    bridge.stop().await;
}
