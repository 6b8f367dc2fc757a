//! Rollups: every tier equals the aggregate of the raw rows whatever the
//! delivery did (a SIGKILL mid-stream and its redeliveries, a backlog three
//! days late, duplicates, three bridges writing the same devices' buckets),
//! and `co2-bridge rollup verify` / `rebuild` find and mend what was written
//! behind the bridge's back (a corrupted bucket, an adopted legacy table).
//!
//! The comparison here is SQL of its own, with another bucket formula than
//! the bridge's, so a shared mistake cannot pass both.

use std::process::Output;
use std::time::Duration;

use chrono::{Duration as Span, TimeZone, Utc};
use co2_testkit::{
    bridge_bin, payload, publish_range, unique, wait_until, Broker, Database, Publisher,
};
use sqlx::MySqlPool;

use crate::support::*;

/// The default tiers and their bucket lengths.
const TIERS: [(&str, u32); 6] = [
    ("1m", 60),
    ("5m", 300),
    ("30m", 1800),
    ("1h", 3600),
    ("6h", 21_600),
    ("1d", 86_400),
];

/// A raw table's rollup shape, as the test sees it.
struct Raw {
    table: &'static str,
    keys: &'static [&'static str],
    time: &'static str,
    value: &'static str,
}

const CO2: Raw = Raw {
    table: "co2_emissions",
    keys: &["device"],
    time: "date_time",
    value: "emissions",
};

const READINGS: Raw = Raw {
    table: "readings",
    keys: &["device", "field", "tags_key"],
    time: "time",
    value: "value",
};

const BINS: Raw = Raw {
    table: "bin_levels",
    keys: &["bin_id"],
    time: "measured_at",
    value: "level",
};

/// Buckets of `raw`'s tier `tier` that are missing, extra or differ from the
/// raw rows' aggregate, with a description of the first few.
async fn differing(pool: &MySqlPool, raw: &Raw, tier: &str, seconds: u32) -> (i64, String) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET time_zone = '+00:00'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let keys = raw.keys.join(", ");
    let on: Vec<String> = raw
        .keys
        .iter()
        .map(|k| format!("m.`{k}` = r.`{k}`"))
        .collect();
    let on = on.join(" AND ");
    let x_on: Vec<String> = raw
        .keys
        .iter()
        .map(|k| format!("x.`{k}` = r.`{k}`"))
        .collect();
    let x_on = x_on.join(" AND ");
    let (t, v, table) = (raw.time, raw.value, raw.table);
    let aggregate = format!(
        "SELECT {keys}, FROM_UNIXTIME(FLOOR(UNIX_TIMESTAMP(`{t}`) / {seconds}) * {seconds}) AS b, \
         COUNT(*) AS n, SUM(`{v}`) AS s, MIN(`{v}`) AS lo, MAX(`{v}`) AS hi, MAX(`{t}`) AS lt \
         FROM `{table}` WHERE `{v}` IS NOT NULL GROUP BY {keys}, b"
    );
    let tier_table = format!("{table}_{tier}");
    let wrong = format!(
        "SELECT CAST(CONCAT_WS(' ', r.`{first}`, r.b, m.n, r.n) AS CHAR) FROM ({aggregate}) r \
         LEFT JOIN `{tier_table}` m ON {on} AND m.bucket = r.b \
         WHERE m.n IS NULL OR m.n <> r.n OR ABS(m.total - r.s) > 1e-9 * GREATEST(1, ABS(r.s)) \
            OR m.min_value <> r.lo OR m.max_value <> r.hi OR m.last_time <> r.lt \
            OR m.last_value <> (SELECT x.`{v}` FROM `{table}` x WHERE {x_on} AND x.`{t}` = r.lt)",
        first = raw.keys[0],
    );
    let wrong: Vec<String> = sqlx::query_scalar(&wrong)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let expected: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({aggregate}) r"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{tier_table}`"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let extra = (stored - expected).abs();
    let n = wrong.len() as i64 + extra;
    let first: Vec<&str> = wrong.iter().take(5).map(String::as_str).collect();
    (
        n,
        format!("{tier_table}: {extra} extra, wrong: {first:?} (expected {expected} buckets)"),
    )
}

/// Asserts every tier of `raw` equals its raw rows' aggregate.
async fn assert_exact(pool: &MySqlPool, raw: &Raw) {
    for (tier, seconds) in TIERS {
        let (n, what) = differing(pool, raw, tier, seconds).await;
        assert_eq!(n, 0, "{what}");
    }
}

/// Asserts every tier of the three shipped series equals its raw rows.
pub async fn assert_all_exact(pool: &MySqlPool) {
    for raw in [&CO2, &READINGS, &BINS] {
        assert_exact(pool, raw).await;
    }
}

/// `co2-bridge rollup <args>` with `env`.
async fn rollup(env: &[(String, String)], args: &[&str]) -> Output {
    tokio::process::Command::new(bridge_bin())
        .arg("rollup")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn scalar(pool: &MySqlPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_the_raw_rows_after_a_sigkill_a_late_backlog_and_duplicates() {
    let db = Database::create("rollexact").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("rollexact");
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
    // Small batches, so the table grows in steps a kill can land between.
    env.push(("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "100".into()));
    let mut bridge = spawn_binary(&env, "rollexact");
    bridge.wait_ready().await;

    let (devices, per_device) = (3, 2000);
    let stream = spawn_stream(broker.port(), &prefix, devices, per_device, None);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 1500
        })
        .await,
        "{}",
        bridge.log_text()
    );
    bridge.process.kill().await.unwrap();
    let restarted = spawn_binary(&env, "rollexact-restarted");
    restarted.wait_ready().await;
    stream.await.unwrap();

    // A Pi's backlog, three days late, spread over five hours; and the
    // first 100 readings of every device again.
    let publisher = Publisher::connect(broker.port(), &unique("rollexact-late"));
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() - Span::days(3);
    for i in 0..300 {
        let time = base + Span::seconds(i * 60);
        let value = 400.0 + (i % 50) as f64 + 0.5;
        publisher
            .publish(&format!("{prefix}/dev0/emissions"), payload(time, value))
            .await
            .unwrap();
    }
    publish_range(&publisher, &prefix, devices, 0..100).await;
    assert!(publisher.wait_acked(600, Duration::from_secs(60)).await);
    publisher.disconnect().await;

    let total = (devices * per_device + 300) as i64;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= total
                && scalar(
                    db.pool(),
                    "SELECT CAST(COALESCE(SUM(redeliveries), 0) AS SIGNED) FROM co2_emissions",
                )
                .await
                    >= 300
        })
        .await,
        "{}",
        restarted.log_text()
    );
    assert_eq!(db.count("co2_emissions").await.unwrap(), total);
    assert_exact(db.pool(), &CO2).await;
    // Every reading counted once in every tier.
    for (tier, _) in TIERS {
        let counted = scalar(
            db.pool(),
            &format!("SELECT CAST(SUM(n) AS SIGNED) FROM co2_emissions_{tier}"),
        )
        .await;
        assert_eq!(counted, total, "tier {tier}");
    }
    let verify = rollup(&env, &["verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains("co2_emissions: "),
        "{}",
        text(&verify)
    );

    // Behind the bridge's back: a bucket corrupted, one deleted, a raw row
    // inserted by hand. verify names each; rebuild mends them.
    sqlx::query(
        "UPDATE co2_emissions_1h SET n = n + 1 WHERE device = 'dev1' ORDER BY bucket LIMIT 1",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("DELETE FROM co2_emissions_1m WHERE device = 'dev2' ORDER BY bucket LIMIT 1")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO co2_emissions (device, date_time, emissions) VALUES ('dev9', '2026-01-02 12:00:00', 500)")
        .execute(db.pool())
        .await
        .unwrap();
    let verify = rollup(&env, &["verify"]).await;
    let said = text(&verify);
    assert!(!verify.status.success(), "{said}");
    assert!(said.contains("co2_emissions_1h dev1"), "{said}");
    assert!(
        said.contains("co2_emissions_1m dev2") && said.contains("missing"),
        "{said}"
    );
    assert!(said.contains("co2_emissions_1d dev9"), "{said}");
    let rebuild = rollup(&env, &["rebuild", "--table", "co2_emissions"]).await;
    assert!(rebuild.status.success(), "{}", text(&rebuild));
    assert_exact(db.pool(), &CO2).await;
    let verify = rollup(&env, &["verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify));

    // The bridge still works after all that, and keeps the rollups exact.
    let publisher = Publisher::connect(broker.port(), &unique("rollexact-after"));
    publish_range(&publisher, &prefix, devices, per_device..per_device + 10).await;
    assert!(publisher.wait_acked(30, Duration::from_secs(30)).await);
    publisher.disconnect().await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= total + 31
        })
        .await
    );
    assert_exact(db.pool(), &CO2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bridges_in_a_shared_group_keep_one_devices_buckets_exact() {
    let db = Database::create("rollshare").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("rollshare");
    let envs: Vec<Vec<(String, String)>> = (0..3)
        .map(|i| {
            let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
            env.retain(|(k, _)| {
                k != "CO2_BRIDGE__MQTT__CLIENT_ID" && k != "CO2_BRIDGE__MQTT__TOPICS"
            });
            env.push((
                "CO2_BRIDGE__MQTT__CLIENT_ID".into(),
                format!("{prefix}-bridge-{i}"),
            ));
            env.push((
                "CO2_BRIDGE__MQTT__TOPICS".into(),
                format!("$share/rollups/{prefix}/+/emissions"),
            ));
            env.push(("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "50".into()));
            env
        })
        .collect();
    let bridges: Vec<BridgeProcess> = envs
        .iter()
        .enumerate()
        .map(|(i, env)| spawn_binary(env, &format!("rollshare-{i}")))
        .collect();
    for b in &bridges {
        b.wait_ready().await;
    }
    // Two devices flat out: every batch of every member touches the same
    // minute, hour and day buckets.
    let (devices, per_device) = (2, 3000);
    let stream = spawn_stream(broker.port(), &prefix, devices, per_device, None);
    stream.await.unwrap();
    let total = (devices * per_device) as i64;
    assert!(
        wait_until(Duration::from_secs(90), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= total
        })
        .await,
        "{}",
        bridges[0].log_text()
    );
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);
    assert_exact(db.pool(), &CO2).await;
    for b in &bridges {
        assert!(
            b.ready_within(Duration::from_secs(5)).await,
            "{}",
            b.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_legacy_table_is_rolled_up_by_rebuild() {
    let db = Database::create("rolladopt").await.unwrap();
    // The seed's two-column table, two days of a reading a minute.
    sqlx::query("CREATE TABLE co2_emissions (date_time DATETIME, emissions DOUBLE(7,2))")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO co2_emissions SELECT '2025-03-01' + INTERVAL seq MINUTE, 400 + seq MOD 97 + 0.25 \
         FROM seq_0_to_2879",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let env = vec![("CO2_BRIDGE__DATABASE__URL".to_owned(), db.url())];
    let migrate = tokio::process::Command::new(bridge_bin())
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .unwrap();
    assert!(migrate.status.success(), "{}", text(&migrate));
    assert_eq!(db.count("co2_emissions").await.unwrap(), 2880);
    assert_eq!(db.count("co2_emissions_1m").await.unwrap(), 0);

    let verify = rollup(&env, &["verify"]).await;
    assert!(!verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("missing"), "{}", text(&verify));
    let rebuild = rollup(&env, &["rebuild"]).await;
    assert!(rebuild.status.success(), "{}", text(&rebuild));
    assert!(
        text(&rebuild).contains("2 step(s) rebuilt"),
        "{}",
        text(&rebuild)
    );
    assert_exact(db.pool(), &CO2).await;
    assert_eq!(db.count("co2_emissions_1m").await.unwrap(), 2880);
    assert_eq!(db.count("co2_emissions_1h").await.unwrap(), 48);
    assert_eq!(db.count("co2_emissions_1d").await.unwrap(), 2);
    // Rebuilding again changes nothing.
    let again = rollup(
        &env,
        &[
            "rebuild",
            "--from",
            "2025-03-01",
            "--to",
            "2025-03-02 23:59:59",
        ],
    )
    .await;
    assert!(again.status.success(), "{}", text(&again));
    assert_exact(db.pool(), &CO2).await;
    let verify = rollup(&env, &["verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_readings_and_bin_levels_are_rolled_up_per_field_tag_and_bin() {
    let rig = route_rig(
        "rolljson",
        ("cam-1", "token-rolljson-0123456789"),
        str::to_owned,
    )
    .await;
    let bridge = InProcess::start_with(rig.env.clone(), Some(&rig.config)).await;
    let publisher = Publisher::connect(rig.broker.port(), &unique("rolljson"));
    let mut sent = 0;
    for i in 0..240usize {
        let time = minute(i);
        // Two rooms of one device: the same field, two series (tags).
        for (topic, temp) in [
            ("sensors/dht-1/kitchen/dht11", 20.0 + (i % 7) as f64 * 0.5),
            ("sensors/dht-1/hall/dht11", 18.0 + (i % 5) as f64 * 0.25),
            ("sensors/dht-2/dht11", -3.5 + (i % 11) as f64),
        ] {
            let json = format!(
                r#"{{"temp": {temp}, "humidity": {}, "ok": {}, "state": "s{}", "time": "{time}"}}"#,
                40 + i % 9,
                i % 3 == 0,
                i % 4,
            );
            publisher.publish(topic, json).await.unwrap();
            sent += 1;
        }
        let level = if i % 17 == 0 {
            "FULL".to_owned()
        } else {
            format!("{}", i % 100)
        };
        publisher
            .publish("bins/level", format!("{level} bin-{} {time}", i % 3))
            .await
            .unwrap();
        sent += 1;
    }
    assert!(publisher.wait_acked(sent, Duration::from_secs(60)).await);
    publisher.disconnect().await;
    // 3 series x 240 messages x 4 fields, and 240 bin reports.
    assert!(
        wait_until(Duration::from_secs(60), || async {
            rig.db.count("readings").await.unwrap_or(0) >= 2880
                && rig.db.count("bin_levels").await.unwrap_or(0) >= 240
        })
        .await
    );
    assert_exact(rig.db.pool(), &READINGS).await;
    assert_exact(rig.db.pool(), &BINS).await;
    // Text is not rolled up; numbers and booleans are, per room.
    let fields: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT CONVERT(CONCAT(field, ' ', COALESCE(JSON_VALUE(tags, '$.room'), '-')) USING utf8mb4) \
         FROM readings_1h ORDER BY 1",
    )
    .fetch_all(rig.db.pool())
    .await
    .unwrap();
    assert_eq!(
        fields,
        [
            "humidity -",
            "humidity hall",
            "humidity kitchen",
            "ok -",
            "ok hall",
            "ok kitchen",
            "temp -",
            "temp hall",
            "temp kitchen"
        ]
    );
    bridge.stop().await;
}
