//! Completeness accounting against the real binary, MariaDB and a test-owned
//! Mosquitto: numbered readings (MQTT v5 user property `co2-seq`) with some
//! numbers missing, one late, some announced as dropped, and some unnumbered.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use co2_testkit::{http_get, metric_value, unique, wait_until, Broker, Database};
use co2_wire::{DeviceEvent, DropCause, Epoch, EventId, EventKind, SeqRange};

use crate::support::*;

const EPOCH: &str = "00000000000000e1";

fn reading_at(n: u64) -> String {
    let t =
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(n as i64);
    payload(t, 400.0 + n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_counted_by_cause_and_late_readings_are_not_gaps() {
    let db = Database::create("complete").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("complete");
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
    env.push((
        "CO2_BRIDGE__COMPLETENESS__SCAN_INTERVAL_S".into(),
        "1".into(),
    ));
    env.push(("CO2_BRIDGE__COMPLETENESS__LATE_AFTER_S".into(), "8".into()));
    let mut bridge = spawn_binary(&env, "complete");
    bridge.wait_ready().await;
    let publisher = V5::connect(broker.port(), EPOCH);
    let topic = format!("{prefix}/pi/emissions");

    // 1..=100 but 40..=44 and 70; 80 comes last, after its successors.
    for n in (1..=100).filter(|n| !(40..=44).contains(n) && *n != 70 && *n != 80) {
        publisher.publish(&topic, reading_at(n), Some(n)).await;
    }
    // The publisher says it dropped 40..=44 (its queue was full).
    let event = DeviceEvent {
        id: EventId(0x51),
        at: None,
        kind: EventKind::ReadingsDropped {
            cause: DropCause::MaxRows,
            count: 5,
            unnumbered: 0,
            ranges: vec![SeqRange::new(EPOCH.parse::<Epoch>().unwrap(), 40, 44).unwrap()],
        },
    };
    publisher
        .publish(&format!("{prefix}/pi/events"), event.encode(), None)
        .await;
    // Halfway, the bridge restarts: the scan's progress is in the database.
    assert_eq!(wait_for_rows(&db, 93, Duration::from_secs(20)).await, 93);
    bridge
        .process
        .terminate(Duration::from_secs(20))
        .await
        .unwrap();
    let bridge = spawn_binary(&env, "complete-2");
    bridge.wait_ready().await;
    publisher.publish(&topic, reading_at(80), Some(80)).await;
    // Its queue neared a bound; the announcement arrives twice (a
    // redelivery) and counts once.
    let filling = DeviceEvent {
        id: EventId(0x52),
        at: None,
        kind: EventKind::QueueFilling {
            bound: DropCause::MaxAge,
            percent: 81,
            readings: 4_000,
        },
    };
    for _ in 0..2 {
        publisher
            .publish(&format!("{prefix}/pi/events"), filling.encode(), None)
            .await;
    }
    // Three readings of a third-party publisher: counted, never gaps.
    for n in 200..203 {
        publisher.publish(&topic, reading_at(n), None).await;
    }
    assert_eq!(wait_for_rows(&db, 97, Duration::from_secs(20)).await, 97);

    let settled = wait_until(Duration::from_secs(30), || async {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reading_gaps WHERE state = 'open'")
                .fetch_one(db.pool())
                .await
                .unwrap_or(1);
        let finals: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reading_gaps WHERE state = 'final'")
                .fetch_one(db.pool())
                .await
                .unwrap_or(0);
        open == 0 && finals == 2
    })
    .await;
    let gaps: Vec<(u64, u64, u64)> = sqlx::query_as(
        "SELECT first_seq, last_seq, announced FROM reading_gaps WHERE state = 'final' ORDER BY first_seq",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(settled, "{gaps:?}; {}", bridge.log_text());
    assert_eq!(gaps, [(40, 44, 5), (70, 70, 0)]);
    let announced: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM announced_drops")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(announced, 1);

    // Metrics count per cause; the restart split them between the two runs,
    // so add the first run's from its log... the second run saw the late one
    // and everything after the restart; its scrape must hold the late reading
    // and the unnumbered ones at least.
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let late = metric_value(&scrape, "co2_device_readings_late_total{device=\"pi\"}");
    let unnumbered = metric_value(
        &scrape,
        "co2_device_readings_unnumbered_total{device=\"pi\"}",
    );
    let lost = metric_value(
        &scrape,
        "co2_device_readings_missing_total{cause=\"lost\",device=\"pi\"}",
    );
    let said = metric_value(
        &scrape,
        "co2_device_readings_missing_total{cause=\"announced\",device=\"pi\"}",
    );
    assert_eq!(
        (late, unnumbered, lost, said),
        (Some(1.0), Some(3.0), Some(1.0), Some(5.0)),
        "{scrape}"
    );
    let http = bridge.http;
    let filling = "co2_device_queue_filling_total{bound=\"max_age\",device=\"pi\"}";
    let counted = wait_until(Duration::from_secs(10), || async move {
        let scrape = http_get(http, "/metrics").await.unwrap().1;
        metric_value(&scrape, filling) == Some(1.0)
    })
    .await;
    // Settled: a later scan does not count it again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scrape = http_get(http, "/metrics").await.unwrap().1;
    assert!(
        counted && metric_value(&scrape, filling) == Some(1.0),
        "{scrape}"
    );

    // Every row kept its number; the unnumbered ones have none.
    let numbered: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM co2_emissions WHERE seq_epoch = ? AND seq IS NOT NULL",
    )
    .bind(EPOCH)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(numbered, 94);
}
