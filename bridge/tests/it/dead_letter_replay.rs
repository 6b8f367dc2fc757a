//! `co2-bridge dead-letters list|replay`, the real binary against the real
//! MariaDB and Mosquitto. A Pi in Seoul stamps readings with its local time
//! and no offset, exactly as the reference Python publisher does; a bridge on
//! defaults (`wire.time_zone = "UTC"`, `wire.max_future_s = 300`) reads them
//! as 9 hours ahead and dead-letters every one as `too_far_in_future`. Once
//! the zone is set, a replay (while that bridge still runs) must make every
//! reading a row with its true UTC time, delete the letters, and change
//! nothing when run again. Letters that cannot be stored stay and are
//! counted (a reading ahead of its arrival stays ahead of it, however late
//! the replay), and the filters take only what they name. A route that
//! writes to InfluxDB gets its points, and a run cut between the points and
//! the deletion of the letters is finished by the next without doubles.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use co2_testkit::{unique, wait_until, Database, Influx, Publisher};

use crate::support::*;

pub(crate) const SHARED_BROKER: u16 = 1883;

/// The reference publisher's payload for each (Unix second, value): its
/// f-string over `datetime.now()`, run by python3 with `TZ=Asia/Seoul`
/// (`datetime.fromtimestamp` is what `now()` returns at that second).
pub(crate) fn seoul_payloads(readings: &[(i64, f64)]) -> Vec<String> {
    let script = "\
import sys
from datetime import datetime
for arg in sys.argv[1:]:
    t, value = arg.split(',')
    now = datetime.fromtimestamp(int(t))
    value = float(value)
    print(f\"{now.year}-{now.month}-{now.day} {now.hour}:{now.minute}:{now.second}|{value}\")
";
    let out = std::process::Command::new("python3")
        .env("TZ", "Asia/Seoul")
        .arg("-c")
        .arg(script)
        .args(readings.iter().map(|(t, v)| format!("{t},{v:?}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), readings.len());
    // chrono-tz agrees: Seoul's wall clock, nothing zero-padded, no offset.
    for ((t, _), line) in readings.iter().zip(&lines) {
        let l = DateTime::from_timestamp(*t, 0)
            .unwrap()
            .with_timezone(&chrono_tz::Asia::Seoul);
        let wall = format!(
            "{}-{}-{} {}:{}:{}|",
            l.year(),
            l.month(),
            l.day(),
            l.hour(),
            l.minute(),
            l.second()
        );
        assert!(line.starts_with(&wall), "{line:?} is not {wall:?}...");
    }
    lines
}

/// Runs `co2-bridge dead-letters <args>` with `env`; (exit code, stdout).
pub(crate) async fn dead_letters(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
        .arg("dead-letters")
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "dead-letters {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// `env` with the zone the Pi's clock is in.
pub(crate) fn in_seoul(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("CO2_BRIDGE__WIRE__TIME_ZONE".into(), "Asia/Seoul".into()));
    env
}

/// The `list` lines (without the header) as columns.
fn listed(stdout: &str) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("id\treceived_at\treason\troute\tdevice\ttoday\tdetail\tpayload")
    );
    lines
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// `(reason, count)` of every stored letter.
pub(crate) async fn letters_by_reason(db: &Database) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT CAST(reason AS CHAR), COUNT(*) FROM rejected_messages GROUP BY reason ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// Publishes `(topic, payload)`s and waits until `letters` dead letters are stored.
pub(crate) async fn publish_and_wait(db: &Database, messages: &[(String, String)], letters: i64) {
    let publisher = Publisher::connect(SHARED_BROKER, &unique("seoul-pi"));
    for (topic, payload) in messages {
        publisher.publish(topic, payload.clone()).await.unwrap();
    }
    assert!(
        publisher
            .wait_acked(messages.len() as u64, Duration::from_secs(30))
            .await
    );
    publisher.disconnect().await;
    let stored = wait_until(Duration::from_secs(30), || async {
        db.count("rejected_messages").await.unwrap_or(0) >= letters
    })
    .await;
    assert!(stored, "{:?}", letters_by_reason(db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seoul_readings_refused_on_defaults_are_stored_once_after_the_zone_is_set() {
    let db = Database::create("replay_seoul").await.unwrap();
    let prefix = unique("replay-seoul");
    let env = bridge_env(&db.url(), SHARED_BROKER, &prefix, 0);
    let bridge = InProcess::start(env.clone()).await;

    // 3 devices × 20 readings, a minute apart over the last 20 minutes.
    let now = Utc::now().timestamp();
    let readings: Vec<(String, i64, f64)> = (0..3i64)
        .flat_map(|d| {
            (0..20i64).map(move |i| {
                let value = 400.0 + i as f64 + d as f64 * 0.25;
                (format!("pi-{d}"), now - 1200 + i * 60 + d, value)
            })
        })
        .collect();
    let times: Vec<(i64, f64)> = readings.iter().map(|(_, t, v)| (*t, *v)).collect();
    let messages: Vec<(String, String)> = readings
        .iter()
        .zip(seoul_payloads(&times))
        .map(|((device, _, _), payload)| (format!("{prefix}/{device}/emissions"), payload))
        .collect();
    publish_and_wait(&db, &messages, 60).await;
    assert_eq!(
        letters_by_reason(&db).await,
        [("too_far_in_future".to_owned(), 60)]
    );
    assert_eq!(db.count("co2_emissions").await.unwrap(), 0);

    let seoul = in_seoul(&env);
    let (code, out) = dead_letters(&seoul, &["replay", "--dry-run"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("would be replayed: 60\n"), "{out}");
    assert_eq!(db.count("rejected_messages").await.unwrap(), 60);
    assert_eq!(db.count("co2_emissions").await.unwrap(), 0);

    // The bridge (still on UTC) keeps running meanwhile.
    let (code, out) = dead_letters(&seoul, &["replay"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("replayed: 60 (rows new: 60, already stored: 0)"),
        "{out}"
    );
    let want: BTreeSet<(String, i64, i64)> = readings
        .iter()
        .map(|(d, t, v)| (d.clone(), t * 1000, (v * 100.0).round() as i64))
        .collect();
    let (got, rows) = stored_in(db.pool()).await;
    assert_eq!(got, want, "every reading at its UTC time");
    assert_eq!(rows, 60);
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);

    // Again: nothing is selected and nothing changes.
    let (code, out) = dead_letters(&seoul, &["replay"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Nothing selected"), "{out}");
    assert_eq!(db.count("co2_emissions").await.unwrap(), 60);
    let rewritten: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(redeliveries) AS SIGNED) FROM co2_emissions")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(rewritten, 0, "no row was written twice");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_that_cannot_be_stored_stay_counted_and_filters_take_only_theirs() {
    let db = Database::create("replay_stay").await.unwrap();
    let prefix = unique("replay-stay");
    let env = bridge_env(&db.url(), SHARED_BROKER, &prefix, 0);
    let bridge = InProcess::start(env.clone()).await;

    let now = Utc::now().timestamp();
    let topic = |device: &str| format!("{prefix}/{device}/emissions");
    let seoul = seoul_payloads(&[
        (now - 300, 410.5),
        (now - 240, 411.5),
        (now - 180, 420.5),
        (now - 120, 421.5),
        (now - 60, 430.0),
    ]);
    // Today's zone still refuses this one, for its value this time.
    let bad_value = seoul[4].replace("|430.0", "|12abc");
    let messages = [
        (topic("pi-a"), seoul[0].clone()),
        (topic("pi-a"), seoul[1].clone()),
        (topic("pi-b"), seoul[2].clone()),
        (topic("pi-b"), seoul[3].clone()),
        (topic("pi-c"), bad_value),
        // Kept as its first 1024 bytes only.
        (
            topic("pi-c"),
            format!("2026-01-01 00:00:00|{}", "1".repeat(2000)),
        ),
        (topic("pi-c"), "no separator".to_owned()),
    ];
    publish_and_wait(&db, &messages, 7).await;
    assert_eq!(
        letters_by_reason(&db).await,
        [
            ("missing_separator".to_owned(), 1),
            ("oversized".to_owned(), 1),
            ("too_far_in_future".to_owned(), 5)
        ]
    );
    // A Pi whose clock ran an hour fast: it arrived two hours ago with a
    // reading stamped an hour ago. Measured against its arrival it is still
    // ahead, so it stays; against the replay's clock it would not be.
    let fast = &seoul_payloads(&[(now - 3600, 440.5)])[0];
    sqlx::query(
        "INSERT INTO rejected_messages (received_at, topic, payload, payload_bytes, reason) \
         VALUES (UTC_TIMESTAMP(3) - INTERVAL 2 HOUR, ?, ?, ?, 'too_far_in_future')",
    )
    .bind(topic("pi-d"))
    .bind(fast.as_bytes())
    .bind(fast.len() as u32)
    .execute(db.pool())
    .await
    .unwrap();
    let seoul_env = in_seoul(&env);

    // The list shows what a replay would take, and what it would do with it.
    let (code, out) = dead_letters(
        &seoul_env,
        &["list", "--reason", "too_far_in_future", "--device", "pi-a"],
    )
    .await;
    assert_eq!(code, 0);
    let rows = listed(&out);
    assert_eq!(rows.len(), 2, "{out}");
    for row in &rows {
        assert_eq!(row[2..6], ["too_far_in_future", "co2", "pi-a", "replay"]);
    }
    let (_, out) = dead_letters(&seoul_env, &["list", "--reason", "too_far_in_future"]).await;
    let mut today: Vec<String> = listed(&out).iter().map(|r| r[5].clone()).collect();
    today.sort();
    assert_eq!(
        today,
        [
            "refused:bad_number",
            "refused:too_far_in_future",
            "replay",
            "replay",
            "replay",
            "replay"
        ]
    );
    let (_, out) = dead_letters(&seoul_env, &["list", "--to", "2000-01-01"]).await;
    assert!(listed(&out).is_empty());

    // Only pi-a's readings are taken.
    let (code, out) = dead_letters(
        &seoul_env,
        &[
            "replay",
            "--reason",
            "too_far_in_future",
            "--device",
            "pi-a",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("Dead letters selected: 2\n"), "{out}");
    let devices: Vec<String> =
        sqlx::query_scalar("SELECT CAST(device AS CHAR) FROM co2_emissions ORDER BY date_time")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(devices, ["pi-a", "pi-a"]);
    assert_eq!(db.count("rejected_messages").await.unwrap(), 6);

    // The truncated letter is skipped, counted, and stays.
    let (code, out) = dead_letters(&seoul_env, &["replay", "--reason", "oversized"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("skipped, payload truncated: 1"), "{out}");
    assert_eq!(db.count("rejected_messages").await.unwrap(), 6);

    // Everything: pi-b is stored; the rest stays, pi-c's with today's reason.
    let (code, out) = dead_letters(&seoul_env, &["replay"]).await;
    assert_eq!(code, 1);
    for part in [
        "Dead letters selected: 6\n",
        "replayed: 2 (rows new: 2, already stored: 0)",
        "still refused: 3 (bad_number 1, missing_separator 1, too_far_in_future 1)",
        "skipped, payload truncated: 1",
    ] {
        assert!(out.contains(part), "{part:?} in\n{out}");
    }
    assert_eq!(db.count("co2_emissions").await.unwrap(), 4);
    assert_eq!(
        letters_by_reason(&db).await,
        [
            ("bad_number".to_owned(), 1),
            ("missing_separator".to_owned(), 1),
            ("oversized".to_owned(), 1),
            ("too_far_in_future".to_owned(), 1)
        ]
    );
    let (stayed,): (String,) = sqlx::query_as(
        "SELECT CAST(topic AS CHAR) FROM rejected_messages WHERE reason = 'too_far_in_future'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(stayed, topic("pi-d"));

    // Configuration and argument errors exit 2.
    let (code, _) = dead_letters(&seoul_env, &["replay", "--route", "nosuch"]).await;
    assert_eq!(code, 2);
    let (code, _) = dead_letters(&seoul_env, &["list", "--reason", "late"]).await;
    assert_eq!(code, 2);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_on_influxdb_gets_its_points_and_a_cut_run_is_finished_by_the_next() {
    let db = Database::create("replay_influx").await.unwrap();
    let influx = Influx::start().await.unwrap();
    let points = influx.create_database("replay").await.unwrap();
    let prefix = unique("replay-influx");
    let dir = std::env::temp_dir().join(unique("co2-replay-cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bridge.toml");
    // Readings go to InfluxDB, dead letters stay in MySQL.
    std::fs::write(
        &config,
        format!(
            r#"
[mqtt]
port = {SHARED_BROKER}
client_id = "{prefix}-bridge"
topics = ["{prefix}/+/emissions"]
reconnect_max_ms = 1000

[database]
url = "{db_url}"

[sinks.influx]
kind = "influxdb"
url = "{influx_url}"
database = "{points}"
retry_max_ms = 1000

[co2]
sink = "influx"
measurement = "co2"

[dead_letters]
sink = "mysql"
"#,
            db_url = db.url(),
            influx_url = influx.url(),
        ),
    )
    .unwrap();
    let env = vec![(
        "CO2_BRIDGE__HTTP__LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    )];
    let bridge = InProcess::start_with(env, Some(&config)).await;

    let now = Utc::now().timestamp();
    let readings: Vec<(i64, f64)> = (0..5)
        .map(|i| (now - 600 + i * 60, 500.5 + i as f64))
        .collect();
    let messages: Vec<(String, String)> = seoul_payloads(&readings)
        .into_iter()
        .map(|p| (format!("{prefix}/pi-x/emissions"), p))
        .collect();
    publish_and_wait(&db, &messages, 5).await;
    let letters: Vec<(chrono::NaiveDateTime, String, Vec<u8>, u32)> = sqlx::query_as(
        "SELECT received_at, topic, payload, payload_bytes FROM rejected_messages ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(letters.len(), 5);

    let seoul = in_seoul(&[("CO2_BRIDGE_CONFIG".to_owned(), config.display().to_string())]);
    let stored = || async {
        let series = influx
            .query(&points, r#"SELECT "device", "emissions" FROM "co2""#)
            .await
            .unwrap();
        let rows: Vec<(String, i64, i64)> = series
            .iter()
            .flat_map(|s| &s.values)
            .map(|row| {
                (
                    row[1].as_str().unwrap().to_owned(),
                    row[0].as_i64().unwrap(),
                    (row[2].as_f64().unwrap() * 100.0).round() as i64,
                )
            })
            .collect();
        rows
    };
    let want: Vec<(String, i64, i64)> = readings
        .iter()
        .map(|(t, v)| ("pi-x".to_owned(), t * 1000, (v * 100.0).round() as i64))
        .collect();
    let (code, out) = dead_letters(&seoul, &["replay"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("replayed: 5 (rows new: 5"), "{out}");
    assert_eq!(stored().await, want, "every reading at its UTC time");
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);

    // A run cut after the points were written, before the letters went:
    // the letters are back, the points are there.
    for (received_at, topic, payload, bytes) in &letters {
        sqlx::query(
            "INSERT INTO rejected_messages (received_at, topic, payload, payload_bytes, reason) \
             VALUES (?, ?, ?, ?, 'too_far_in_future')",
        )
        .bind(received_at)
        .bind(topic)
        .bind(payload)
        .bind(bytes)
        .execute(db.pool())
        .await
        .unwrap();
    }
    let (code, out) = dead_letters(&seoul, &["replay"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("replayed: 5"), "{out}");
    assert_eq!(stored().await, want, "the same points, none twice");
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);
    let (code, out) = dead_letters(&seoul, &["replay"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Nothing selected"), "{out}");
    bridge.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
