//! `co2-bridge retime` with a running bridge, real Mosquitto and MariaDB: a
//! New York Pi sending local time without an offset, as the reference
//! Python publisher does, to a bridge on defaults (`wire.time_zone = "UTC"`)
//! has every reading stored five hours early; `retime --by +5h` puts them at
//! their true UTC times in every table, with the completeness records, and
//! leaves other devices alone. Readings that arrive during a retime move
//! whole or not at all. (Collisions and dry runs: `retime_collisions.rs`.)

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::America::New_York;
use co2_testkit::{unique, wait_until, Database, Publisher};
use co2_wire::{DeviceEvent, EventId, EventKind};

use crate::support::*;

/// `co2-bridge retime <args>` with `env`: exit code, stdout, stderr.
pub async fn retime(env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
        .arg("retime")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the reference publisher sends at New York wall-clock time `local`:
/// `f"{now.year}-{now.month}-{now.day} {now.hour}:{now.minute}:{now.second}|{value}"`.
fn reference_payload(local: NaiveDateTime, value: f64) -> String {
    format!("{}|{value:?}", python_time(local))
}

/// `datetime.now()` as that f-string prints it: no zero padding, no offset.
fn python_time(local: NaiveDateTime) -> String {
    format!(
        "{}-{}-{} {}:{}:{}",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    )
}

/// New York's wall clock at the true instant `utc`.
fn new_york(utc: DateTime<Utc>) -> NaiveDateTime {
    New_York.from_utc_datetime(&utc.naive_utc()).naive_local()
}

/// The true instant of reading `i`: 2026-01-05 14:00 UTC (09:00 in New
/// York, UTC-5 in January) plus `i` minutes.
fn instant(i: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 14, 0, 0).unwrap() + chrono::Duration::minutes(i)
}

async fn rows<T>(db: &Database, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow> + Send + Unpin,
{
    sqlx::query_as(sql).fetch_all(db.pool()).await.unwrap()
}

/// A test-owned broker and database, and a bridge on defaults running the
/// shipped routes plus the CO2 route under `<prefix>/+/emissions`.
async fn rig(name: &str) -> (RouteRig, String, BridgeProcess) {
    let mut rig = route_rig(
        name,
        ("cam-1", "cam-1-token-0123456789abcdef"),
        str::to_owned,
    )
    .await;
    rig.env.extend([
        (
            "CO2_BRIDGE__COMPLETENESS__SCAN_INTERVAL_S".into(),
            "1".into(),
        ),
        ("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "50".into()),
    ]);
    let prefix = rig
        .env
        .iter()
        .find(|(k, _)| k == "CO2_BRIDGE__MQTT__TOPICS")
        .and_then(|(_, v)| v.strip_suffix("/+/emissions"))
        .unwrap()
        .to_owned();
    let bridge = spawn_binary(&rig.env, name);
    bridge.wait_ready().await;
    (rig, prefix, bridge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_york_pi_stored_five_hours_early_is_moved_to_true_utc() {
    let (rig, prefix, bridge) = rig("retime_ny").await;
    let db = &rig.db;
    let port = rig.broker.port();
    let v5 = V5::connect(port, "00000000000000a1");
    let publisher = Publisher::connect(port, &unique("retime-ny"));
    // pi-ny: numbered readings 1..=12 but 5 and 6 (a gap), New York wall clock.
    let ny: Vec<i64> = (1..=12).filter(|n| !(5..=6).contains(n)).collect();
    for &n in &ny {
        let local = new_york(instant(n));
        let topic = format!("{prefix}/pi-ny/emissions");
        v5.publish(
            &topic,
            reference_payload(local, 400.0 + n as f64),
            Some(n as u64),
        )
        .await;
    }
    // pi-utc: the same instants sent in UTC, stored right; 8 is missing.
    let utc: Vec<i64> = (1..=12).filter(|n| *n != 8).collect();
    for &n in &utc {
        let payload = payload(instant(n), 500.0 + n as f64);
        v5.publish(
            &format!("{prefix}/pi-utc/emissions"),
            payload,
            Some(n as u64),
        )
        .await;
    }
    // The same Pi's DHT11 and bin sensor, also on New York wall clock; the
    // other device's DHT11 in UTC.
    for n in 1..=3 {
        let local = python_time(new_york(instant(n)));
        let json = format!(r#"{{"temp": {n}.5, "humidity": 4{n}, "time": "{local}"}}"#);
        publisher
            .publish("sensors/pi-ny/dht11", json)
            .await
            .unwrap();
    }
    for n in 1..=2 {
        let line = format!("3{n}.5 pi-ny {}", python_time(new_york(instant(n))));
        publisher.publish("bins/level", line).await.unwrap();
    }
    let time = instant(1).format("%Y-%m-%dT%H:%M:%SZ");
    let json = format!(r#"{{"temp": 9.5, "humidity": 49, "time": "{time}"}}"#);
    publisher
        .publish("sensors/pi-utc/dht11", json)
        .await
        .unwrap();
    // An announcement carries its time in UTC: right whatever the zone.
    let event = DeviceEvent {
        id: EventId(0x77),
        at: Some(instant(3)),
        kind: EventKind::ClockResync { offset_ms: 4 },
    };
    v5.publish(&format!("{prefix}/pi-ny/events"), event.encode(), None)
        .await;

    let stored = wait_until(Duration::from_secs(30), || async {
        let gaps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reading_gaps")
            .fetch_one(db.pool())
            .await
            .unwrap_or(0);
        db.count("co2_emissions").await.unwrap_or(0) == 21
            && db.count("readings").await.unwrap_or(0) == 8
            && db.count("bin_levels").await.unwrap_or(0) == 2
            && db.count("device_events").await.unwrap_or(0) == 1
            && gaps == 2
    })
    .await;
    assert!(stored, "{}", bridge.log_text());
    // Stored five hours early: the New York wall clock read as UTC.
    let first: NaiveDateTime =
        sqlx::query_scalar("SELECT MIN(date_time) FROM co2_emissions WHERE device = 'pi-ny'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(first, instant(1).naive_utc() - chrono::Duration::hours(5));

    let others = || async {
        (
            rows::<(String, NaiveDateTime, f64)>(
                db,
                "SELECT CAST(device AS CHAR), date_time, emissions FROM co2_emissions \
                 WHERE device <> 'pi-ny' ORDER BY device, date_time",
            )
            .await,
            rows::<(String, NaiveDateTime, String)>(
                db,
                "SELECT CAST(device AS CHAR), time, CAST(field AS CHAR) FROM readings \
                 WHERE device <> 'pi-ny' ORDER BY device, time, field",
            )
            .await,
            rows::<(String, Option<NaiveDateTime>, Option<NaiveDateTime>)>(
                db,
                "SELECT CAST(device AS CHAR), from_time, to_time FROM reading_gaps \
                 WHERE device <> 'pi-ny' ORDER BY device",
            )
            .await,
            rows::<(String, NaiveDateTime)>(
                db,
                "SELECT CAST(device AS CHAR), time FROM device_events ORDER BY id",
            )
            .await,
        )
    };
    let before = others().await;
    assert_eq!(before.0.len(), 11);

    // The bridge keeps running.
    let (code, out, err) = retime(&rig.env, &["--device", "pi-ny", "--by", "+5h"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Moved 18 row(s) in 3 of 5 table(s) and 1 completeness record(s)"),
        "{out}"
    );
    assert!(out.contains("device_events: not moved"), "{out}");

    // Every pi-ny row is at its true UTC time, with its value.
    let co2 = rows::<(NaiveDateTime, f64, Option<u64>)>(
        db,
        "SELECT date_time, emissions, seq FROM co2_emissions WHERE device = 'pi-ny' ORDER BY date_time",
    )
    .await;
    let want: Vec<(NaiveDateTime, f64, Option<u64>)> = ny
        .iter()
        .map(|&n| (instant(n).naive_utc(), 400.0 + n as f64, Some(n as u64)))
        .collect();
    assert_eq!(co2, want);
    let readings = rows::<(NaiveDateTime, String, f64)>(
        db,
        "SELECT time, CAST(field AS CHAR), value FROM readings WHERE device = 'pi-ny' ORDER BY time, field",
    )
    .await;
    let want: Vec<(NaiveDateTime, String, f64)> = (1..=3)
        .flat_map(|n| {
            let t = instant(n).naive_utc();
            [
                (t, "humidity".to_owned(), 40.0 + n as f64),
                (t, "temp".to_owned(), n as f64 + 0.5),
            ]
        })
        .collect();
    assert_eq!(readings, want);
    let bins = rows::<(NaiveDateTime, f64)>(
        db,
        "SELECT measured_at, level FROM bin_levels WHERE bin_id = 'pi-ny' ORDER BY measured_at",
    )
    .await;
    assert_eq!(
        bins,
        [
            (instant(1).naive_utc(), 31.5),
            (instant(2).naive_utc(), 32.5)
        ]
    );
    // The gap 5..=6 names the times of readings 4 and 7 as they are now.
    let gap = rows::<(u64, u64, Option<NaiveDateTime>, Option<NaiveDateTime>)>(
        db,
        "SELECT first_seq, last_seq, from_time, to_time FROM reading_gaps WHERE device = 'pi-ny'",
    )
    .await;
    assert_eq!(
        gap,
        [(
            5,
            6,
            Some(instant(4).naive_utc()),
            Some(instant(7).naive_utc())
        )]
    );
    let around: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM reading_gaps g \
         JOIN co2_emissions b ON b.device = g.device AND b.seq = g.first_seq - 1 AND b.date_time = g.from_time \
         JOIN co2_emissions a ON a.device = g.device AND a.seq = g.last_seq + 1 AND a.date_time = g.to_time \
         WHERE g.device = 'pi-ny'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        around, 1,
        "the gap's times are those of the readings around it"
    );

    // Nothing else moved: the other device, its gap, the announcement.
    assert_eq!(others().await, before);
    // The rollups moved with the rows: old buckets emptied, new ones filled.
    crate::rollups::assert_all_exact(db.pool()).await;
    assert_eq!(before.3, [("pi-ny".to_owned(), instant(3).naive_utc())]);
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);
    publisher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_that_arrive_during_a_retime_move_whole_or_not_at_all() {
    let (rig, _prefix, bridge) = rig("retime_live").await;
    let db = &rig.db;
    // Enough of the Pi's rows that moving them takes a while.
    sqlx::query(
        "INSERT INTO readings (device, topic, time, field, value) \
         SELECT 'pi-ny', 'seed', TIMESTAMP '2025-06-01 00:00:00' + INTERVAL n SECOND, 'seed', n \
         FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n \
               FROM (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a \
               CROSS JOIN (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b \
               CROSS JOIN (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c \
               CROSS JOIN (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
                     UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) e \
               CROSS JOIN (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) f) seq",
    )
    .execute(db.pool())
    .await
    .unwrap();
    const SEEDED: i64 = 50_000;
    const MESSAGES: usize = 600;
    // A DHT11 message is two rows (temp, humidity) written in one statement.
    let port = rig.broker.port();
    let stream = tokio::spawn(async move {
        let publisher = Publisher::connect(port, &unique("retime-live"));
        for i in 0..MESSAGES {
            let local = python_time(new_york(instant(0) + chrono::Duration::seconds(i as i64)));
            let json = format!(r#"{{"temp": {i}, "humidity": {i}, "time": "{local}"}}"#);
            publisher
                .publish("sensors/pi-ny/dht11", json)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        assert!(
            publisher
                .wait_acked(MESSAGES as u64, Duration::from_secs(120))
                .await
        );
        publisher.disconnect().await;
    });
    let live = "SELECT COUNT(*) FROM readings WHERE topic <> 'seed'";
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(db.pool())
            .await
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || async {
            count(live).await >= 200
        })
        .await
    );
    let started = std::time::Instant::now();
    let (code, out, err) = retime(&rig.env, &["--device", "pi-ny", "--by", "+5h"]).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    stream.await.unwrap();
    let all = wait_until(Duration::from_secs(60), || async {
        count(live).await == 2 * MESSAGES as i64
    })
    .await;
    assert!(
        all,
        "{} of {} rows; {}",
        count(live).await,
        2 * MESSAGES,
        bridge.log_text()
    );

    // Each message's two rows sit together, moved or not.
    let messages = rows::<(f64, i64, NaiveDateTime, NaiveDateTime)>(
        db,
        "SELECT value, COUNT(*), MIN(time), MAX(time) FROM readings WHERE topic <> 'seed' \
         GROUP BY value ORDER BY value",
    )
    .await;
    assert_eq!(messages.len(), MESSAGES);
    let (mut moved, mut stayed) = (0, 0);
    for (i, (value, n, first, last)) in messages.into_iter().enumerate() {
        assert_eq!((value, n), (i as f64, 2));
        assert_eq!(first, last, "message {i} is half moved");
        let true_utc = (instant(0) + chrono::Duration::seconds(i as i64)).naive_utc();
        if first == true_utc {
            moved += 1;
        } else {
            assert_eq!(first, true_utc - chrono::Duration::hours(5), "message {i}");
            stayed += 1;
        }
    }
    let seeded_moved: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM readings WHERE topic = 'seed' AND time >= '2025-06-01 05:00:00'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(seeded_moved, SEEDED);
    eprintln!(
        "retime of {SEEDED} seeded rows took {took:?}; of {MESSAGES} live messages {moved} moved, {stayed} arrived after"
    );
    assert!(moved >= 100 && stayed > 0, "moved {moved}, stayed {stayed}");
    assert!(
        out.contains(&format!(
            "readings (device, time): {} row(s)",
            SEEDED + 2 * moved
        )),
        "{out}"
    );
}
