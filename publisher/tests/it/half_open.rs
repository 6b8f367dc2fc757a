//! A half-open connection: the path to the broker black-holes everything
//! while both sockets stay open, as when a NAT or a cellular link forgets a
//! connection. No error comes and no PUBACK either; the publisher must give
//! the connection up after `mqtt.ack_timeout_s`, connect again and republish,
//! and the bridge must store every reading exactly once. The keep-alive is
//! set far above the test's deadline, so it is the ack timeout that notices.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use co2_testkit::{unique, wait_until, Broker, Database, TcpProxy};

use crate::support::{queued_readings, spawn_publisher, start_bridge, stored};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_left_after_the_ack_timeout_and_nothing_is_lost() {
    let broker = Broker::start("").await.unwrap();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], broker.port())))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("halfopen");
    let db = Database::create("pub_half_open").await.unwrap();
    let _bridge = start_bridge(dir.path(), broker.port(), &prefix, &db).await;
    let device = "half-open";
    let mut publisher = spawn_publisher(
        dir.path(),
        device,
        proxy.port(),
        &prefix,
        &["run", "--count", "300"],
        &[
            ("CO2_PUBLISHER__MQTT__ACK_TIMEOUT_S", "2"),
            ("CO2_PUBLISHER__MQTT__KEEP_ALIVE_S", "120"),
        ],
    );
    let log =
        || std::fs::read_to_string(dir.path().join(format!("{device}.log"))).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            stored(&db, device).await.len() >= 50
        })
        .await,
        "{}",
        log()
    );
    proxy.stall();
    let stalled_at = Instant::now();
    let status = publisher.wait(Duration::from_secs(60)).await.unwrap();
    let log = log();
    assert!(status.success(), "exited with {status}: {log}");
    assert!(
        log.contains("No acknowledgement from the broker in time"),
        "the stall was never noticed: {log}"
    );
    assert!(
        log.matches("Connected to the broker").count() >= 2,
        "never connected again: {log}"
    );
    assert!(
        log.contains("left_in_queue=0"),
        "readings left queued: {log}"
    );
    // With the keep-alive at 120 s, nothing but the 2 s ack timeout can end
    // the stall within the 60 s the publisher was given to finish.
    let recovered = stalled_at.elapsed();
    let produced: BTreeMap<i64, i64> = queued_readings(&log);
    assert_eq!(produced.len(), 300);
    let all_in = wait_until(Duration::from_secs(30), || async {
        stored(&db, device).await.len() >= produced.len()
    })
    .await;
    let rows = stored(&db, device).await;
    let stored_map: BTreeMap<i64, i64> = rows.iter().copied().collect();
    assert!(all_in, "{} of 300 rows stored", rows.len());
    assert_eq!(
        stored_map, produced,
        "stored readings differ from queued ones"
    );
    assert_eq!(stored_map.len(), rows.len(), "a reading stored twice");
    eprintln!(
        "half-open: publisher done {recovered:?} after the stall, {} connections",
        log.matches("Connected to the broker").count()
    );
}
