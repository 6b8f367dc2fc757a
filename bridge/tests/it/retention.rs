//! Retention: old raw rows go a partition at a time while readings keep
//! landing, nothing newer is touched, the rollups of what went stay, a
//! reading older than the window is dead-lettered instead of stored, and
//! `/metrics` says what each table holds.

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use co2_testkit::{
    http_get, metric_value, payload, unique, wait_until, Broker, Database, Publisher,
};

use crate::support::*;

async fn scalar(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_partitions_are_dropped_while_readings_land_and_their_rollups_stay() {
    let db = Database::create("retain").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("retain");
    let env = bridge_env(&db.url(), broker.port(), &prefix, http_port());

    // First without retention: readings 20 days old, 3 days old and today's.
    let first = spawn_binary(&env, "retain-first");
    first.wait_ready().await;
    let publisher = Publisher::connect(broker.port(), &unique("retain-old"));
    let now = Utc::now();
    let mut sent = 0;
    for (age_days, n) in [(20, 60), (3, 30)] {
        for i in 0..n {
            let time = now - Span::days(age_days) + Span::seconds(i * 60);
            publisher
                .publish(
                    &format!("{prefix}/old/emissions"),
                    payload(time, 400.0 + i as f64),
                )
                .await
                .unwrap();
            sent += 1;
        }
    }
    assert!(publisher.wait_acked(sent, Duration::from_secs(30)).await);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 90
        })
        .await,
        "{}",
        first.log_text()
    );
    let partitions = scalar(
        &db,
        "SELECT COUNT(*) FROM information_schema.partitions WHERE table_schema = DATABASE() \
         AND table_name = 'co2_emissions' AND partition_name IS NOT NULL",
    )
    .await;
    assert!(partitions > 30, "co2_emissions has {partitions} partitions");
    drop(first);

    // Then with ten days of raw rows, a pass every second, a stream landing.
    let mut env = env.clone();
    env.push(("CO2_BRIDGE__RETENTION__RAW_DAYS".into(), "10".into()));
    env.push(("CO2_BRIDGE__RETENTION__INTERVAL_S".into(), "1".into()));
    let bridge = spawn_binary(&env, "retain-second");
    bridge.wait_ready().await;
    // Today's readings (the shared test stream is dated 2026-01-01).
    let port = broker.port();
    let stream_prefix = prefix.clone();
    let stream = tokio::spawn(async move {
        let publisher = Publisher::connect(port, &unique("retain-stream"));
        let start = Utc::now() - Span::minutes(10);
        for i in 0..400 {
            for d in 0..2 {
                let time = start + Span::seconds(i);
                publisher
                    .publish(
                        &format!("{stream_prefix}/dev{d}/emissions"),
                        payload(time, 500.0 + d as f64),
                    )
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(publisher.wait_acked(800, Duration::from_secs(60)).await);
        publisher.disconnect().await;
    });
    let old = "SELECT COUNT(*) FROM co2_emissions WHERE device = 'old' AND date_time < UTC_TIMESTAMP() - INTERVAL 10 DAY";
    assert!(
        wait_until(Duration::from_secs(30), || async {
            scalar(&db, old).await == 0
        })
        .await,
        "{}",
        bridge.log_text()
    );
    stream.await.unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 30 + 800
        })
        .await,
        "{}",
        bridge.log_text()
    );
    // Nothing newer touched: the 3-day-old rows and the whole stream.
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM co2_emissions WHERE device = 'old'"
        )
        .await,
        30
    );
    assert_eq!(db.count("co2_emissions").await.unwrap(), 30 + 800);
    // What went is still summed up: an hour of 60 readings 20 days ago.
    assert_eq!(
        scalar(
            &db,
            "SELECT CAST(SUM(n) AS SIGNED) FROM co2_emissions_1d WHERE device = 'old' \
             AND bucket < UTC_TIMESTAMP() - INTERVAL 10 DAY"
        )
        .await,
        60
    );

    // A reading older than the window is a dead letter that says why.
    publisher
        .publish(
            &format!("{prefix}/old/emissions"),
            payload(now - Span::days(15), 401.0),
        )
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            scalar(
                &db,
                "SELECT COUNT(*) FROM rejected_messages WHERE reason = 'beyond_retention'",
            )
            .await
                == 1
        })
        .await
    );
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM rejected_messages WHERE reason = 'beyond_retention'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(detail.contains("retention.raw_days"), "{detail}");
    publisher.disconnect().await;

    // /metrics says what co2_emissions holds, from its oldest kept row on.
    // The pass counts its drops when it ends, after the other tables' drops,
    // which may take seconds after the raw rows are gone.
    let dropped = || async {
        let (_, scrape) = http_get(bridge.http, "/metrics").await.unwrap();
        metric_value(
            &scrape,
            r#"co2_bridge_partitions_dropped_total{table="co2_emissions"}"#,
        )
        .unwrap_or(0.0)
            >= 1.0
    };
    assert!(wait_until(Duration::from_secs(60), dropped).await);
    let (code, scrape) = http_get(bridge.http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let oldest = metric_value(
        &scrape,
        r#"co2_bridge_table_oldest_timestamp_seconds{table="co2_emissions"}"#,
    )
    .unwrap();
    assert!(
        oldest >= (now - Span::days(10)).timestamp() as f64,
        "{oldest}"
    );
    assert!(
        metric_value(
            &scrape,
            r#"co2_bridge_table_bytes{table="co2_emissions_1m"}"#
        )
        .unwrap()
            > 0.0
    );
    assert!(bridge.ready_within(Duration::from_secs(5)).await);
}
