//! The happy path and the dead-letter path.

use std::time::Duration;

use co2_testkit::{metric_value, unique, Database, Publisher};

use crate::support::*;

const SHARED_BROKER: u16 = 1883;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_are_stored_once_and_a_replay_only_counts_duplicates() {
    let db = Database::create("happy").await.unwrap();
    let prefix = unique("happy");
    let bridge = InProcess::start(bridge_env(&db.url(), SHARED_BROKER, &prefix, 0)).await;

    let publisher = Publisher::connect(SHARED_BROKER, &unique("pub"));
    publish_range(&publisher, &prefix, 5, 0..2000).await;
    assert!(publisher.wait_acked(10_000, Duration::from_secs(60)).await);
    assert_eq!(
        wait_for_rows(&db, 10_000, Duration::from_secs(60)).await,
        10_000
    );
    assert_exactly_once(&db, 5, 2000).await;

    // Times went in as UTC and come back as UTC, to the millisecond.
    let (device, time, value) = reading(3, 1234);
    let stored: (String, f64) = sqlx::query_as(
        "SELECT DATE_FORMAT(date_time, '%Y-%m-%d %H:%i:%s.%f'), emissions FROM co2_emissions \
         WHERE device = ? AND date_time = ?",
    )
    .bind(&device)
    .bind(time.naive_utc())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(stored.0, time.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
    assert_eq!(stored.1, value);

    // The same readings again: nothing new, every one counted as a duplicate.
    publish_range(&publisher, &prefix, 5, 0..2000).await;
    assert!(publisher.wait_acked(20_000, Duration::from_secs(60)).await);
    let counted = co2_testkit::wait_until(Duration::from_secs(60), || async {
        metric_value(
            &bridge.scrape().await,
            "co2_bridge_duplicates_total{route=\"co2\",sink=\"mysql\"}",
        ) == Some(10_000.0)
    })
    .await;
    let scrape = bridge.scrape().await;
    assert!(counted, "duplicates not counted:\n{scrape}");
    assert_eq!(db.count("co2_emissions").await.unwrap(), 10_000);
    assert_eq!(
        metric_value(
            &scrape,
            "co2_bridge_rows_written_total{route=\"co2\",sink=\"mysql\"}"
        ),
        Some(10_000.0)
    );
    assert_eq!(
        metric_value(&scrape, "co2_bridge_messages_received_total{route=\"co2\"}"),
        Some(20_000.0)
    );
    assert_eq!(
        metric_value(&scrape, "co2_bridge_pending_messages"),
        Some(0.0)
    );
    let redelivered: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(redeliveries) AS SIGNED) FROM co2_emissions")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(redelivered, 10_000);

    publisher.disconnect().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_payload_is_dead_lettered_with_its_reason_and_the_good_ones_stored() {
    let db = Database::create("bad").await.unwrap();
    let prefix = unique("bad");
    let mut env = bridge_env(&db.url(), SHARED_BROKER, &prefix, 0);
    // Let the decoder pass values the DOUBLE(7,2) column refuses, so the
    // database's own refusal (and the batch split that isolates it) is exercised.
    env.push((
        "CO2_BRIDGE__WIRE__MAX_EMISSIONS".into(),
        "1000000000".into(),
    ));
    // One batch for everything, so good and bad rows share a transaction.
    env.push(("CO2_BRIDGE__BATCH__MAX_DELAY_MS".into(), "1000".into()));
    let bridge = InProcess::start(env).await;

    let good = |i: usize| payload(reading(0, i).1, 400.0 + i as f64);
    let topic = format!("{prefix}/pi/emissions");
    let cases: Vec<(String, Vec<u8>, Option<&str>)> = vec![
        (topic.clone(), good(0).into_bytes(), None),
        (topic.clone(), b"\xff\xfe|12".to_vec(), Some("not_utf8")),
        (
            topic.clone(),
            b"2026-01-01 00:00:01 420".to_vec(),
            Some("missing_separator"),
        ),
        (
            topic.clone(),
            b"tomorrow|420".to_vec(),
            Some("bad_datetime"),
        ),
        (
            topic.clone(),
            b"2026-01-01 00:00:01|1); DROP TABLE co2_emissions; --".to_vec(),
            Some("bad_number"),
        ),
        (
            topic.clone(),
            b"2026-01-01 00:00:01|NaN".to_vec(),
            Some("not_finite"),
        ),
        (
            topic.clone(),
            b"2026-01-01 00:00:01|-1e12".to_vec(),
            Some("out_of_range"),
        ),
        (
            topic.clone(),
            b"2999-01-01 00:00:01|420".to_vec(),
            Some("too_far_in_future"),
        ),
        (topic.clone(), vec![b'7'; 300], Some("oversized")),
        (topic.clone(), good(1).into_bytes(), None),
        (
            format!("{prefix}/x'; DROP TABLE co2_emissions; --/emissions"),
            good(2).into_bytes(),
            Some("bad_device"),
        ),
        (
            topic.clone(),
            b"2026-01-01 00:00:09|123456.78".to_vec(),
            Some("db_rejected"),
        ),
        (topic.clone(), good(3).into_bytes(), None),
    ];
    let publisher = Publisher::connect(SHARED_BROKER, &unique("pub"));
    for (topic, payload, _) in &cases {
        publisher.publish(topic, payload.clone()).await.unwrap();
    }
    assert!(
        publisher
            .wait_acked(cases.len() as u64, Duration::from_secs(30))
            .await
    );

    let want_rejects = cases.iter().filter(|c| c.2.is_some()).count() as i64;
    co2_testkit::wait_until(Duration::from_secs(30), || async {
        db.count("rejected_messages").await.unwrap_or(0) >= want_rejects
    })
    .await;
    let mut reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM rejected_messages")
        .fetch_all(db.pool())
        .await
        .unwrap();
    reasons.sort();
    let mut want: Vec<String> = cases
        .iter()
        .filter_map(|c| c.2.map(str::to_owned))
        .collect();
    want.sort();
    assert_eq!(reasons, want);

    let values: Vec<f64> =
        sqlx::query_scalar("SELECT emissions FROM co2_emissions ORDER BY date_time")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(values, [400.0, 401.0, 403.0]);

    // The injection-looking payload is kept verbatim as data.
    let (payload, size): (Vec<u8>, u32) = sqlx::query_as(
        "SELECT payload, payload_bytes FROM rejected_messages WHERE reason = 'bad_number'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        payload,
        b"2026-01-01 00:00:01|1); DROP TABLE co2_emissions; --"
    );
    assert_eq!(size as usize, payload.len());
    let (kept, size): (Vec<u8>, u32) = sqlx::query_as(
        "SELECT payload, payload_bytes FROM rejected_messages WHERE reason = 'oversized'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((kept.len(), size), (300, 300));

    let scrape = bridge.scrape().await;
    for reason in &want {
        let series =
            format!("co2_bridge_messages_rejected_total{{reason=\"{reason}\",route=\"co2\"}}");
        assert_eq!(metric_value(&scrape, &series), Some(1.0), "{series}");
    }
    assert_eq!(
        metric_value(&scrape, "co2_bridge_pending_messages"),
        Some(0.0)
    );
    publisher.disconnect().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_311_with_the_brokers_default_window_of_20_stores_everything_in_full_batches() {
    let db = Database::create("v311").await.unwrap();
    // A test-owned broker with Mosquitto's default max_inflight_messages (20).
    let broker = co2_testkit::Broker::start("").await.unwrap();
    let prefix = unique("v311");
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, 0);
    env.push(("CO2_BRIDGE__MQTT__PROTOCOL".into(), "v311".into()));
    env.push(("CO2_BRIDGE__MQTT__RECEIVE_MAXIMUM".into(), "20".into()));
    // Were batches to wait for max_delay, 2,000 readings would take 100 s.
    env.push(("CO2_BRIDGE__BATCH__MAX_DELAY_MS".into(), "1000".into()));
    let bridge = InProcess::start(env).await;

    let publisher = Publisher::connect(broker.port(), &unique("pub"));
    publish_range(&publisher, &prefix, 2, 0..1000).await;
    assert!(publisher.wait_acked(2000, Duration::from_secs(60)).await);
    assert_eq!(
        wait_for_rows(&db, 2000, Duration::from_secs(60)).await,
        2000
    );
    assert_exactly_once(&db, 2, 1000).await;

    let scrape = bridge.scrape().await;
    let batches = metric_value(&scrape, "co2_bridge_batch_rows_count").unwrap();
    let at_most_20 = metric_value(&scrape, "co2_bridge_batch_rows_bucket{le=\"20\"}").unwrap();
    assert_eq!(batches, at_most_20, "a batch outgrew the window:\n{scrape}");
    publisher.disconnect().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_share_the_stream_and_store_every_reading_once() {
    let db = Database::create("conns").await.unwrap();
    let broker = co2_testkit::Broker::start("").await.unwrap();
    let prefix = unique("conns");
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, 0);
    env.push(("CO2_BRIDGE__MQTT__CONNECTIONS".into(), "3".into()));
    let bridge = InProcess::start(env).await;
    let scrape = bridge.scrape().await;
    assert_eq!(
        metric_value(&scrape, "co2_bridge_mqtt_connections_total"),
        Some(3.0)
    );

    // Many publisher connections at once, as in a burst from many devices.
    let mut streams = Vec::new();
    for d in 0..50 {
        let prefix = prefix.clone();
        let port = broker.port();
        streams.push(tokio::spawn(async move {
            let publisher = Publisher::connect(port, &unique("pub"));
            for i in 0..200 {
                let (_, time, value) = reading(d, i);
                let topic = format!("{prefix}/dev{d}/emissions");
                publisher
                    .publish(&topic, payload(time, value))
                    .await
                    .unwrap();
            }
            assert!(publisher.wait_acked(200, Duration::from_secs(60)).await);
            publisher.disconnect().await;
        }));
    }
    for s in streams {
        s.await.unwrap();
    }
    assert_eq!(
        wait_for_rows(&db, 10_000, Duration::from_secs(60)).await,
        10_000
    );
    assert_exactly_once(&db, 50, 200).await;
    bridge.stop().await;
}
