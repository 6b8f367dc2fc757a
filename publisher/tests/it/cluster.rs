//! A broker cluster: the publisher binary is given the three nodes of a NATS
//! JetStream cluster (`mqtt.hosts`, MQTT 3.1.1) and the node it is connected
//! to is SIGKILLed mid-stream. It must move to another node and deliver
//! every queued reading, which the bridge (on a node that stays) stores
//! exactly once. Runs about 30 s (cluster start included).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use co2_testkit::{unique, wait_until, Database, NatsCluster};

use crate::support::{queued_readings, spawn_publisher, start_bridge_with, stored};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publisher_node_killed_mid_stream_loses_and_doubles_nothing() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubnats");
    let db = Database::create("pub_nats").await.unwrap();
    let _bridge = start_bridge_with(
        dir.path(),
        cluster.mqtt_port(2),
        &prefix,
        &db,
        &[("CO2_BRIDGE__MQTT__PROTOCOL", "v311")],
    )
    .await;
    let hosts: Vec<String> = cluster
        .mqtt_hosts()
        .iter()
        .map(|h| format!("{h:?}"))
        .collect();
    let config = dir.path().join("publisher.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nprotocol = \"v311\"\nhosts = [{}]\n",
            hosts.join(", ")
        ),
    )
    .unwrap();
    let device = "nats-a";
    let config_arg = config.display().to_string();
    let mut publisher = spawn_publisher(
        dir.path(),
        device,
        cluster.mqtt_port(0),
        &prefix,
        &["--config", &config_arg, "run", "--count", "600"],
        &[],
    );
    // 600 readings at 20 ms: ~12 s of sampling; kill its node (the first of
    // its list) a few seconds in.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            stored(&db, device).await.len() >= 100
        })
        .await,
        "{}",
        std::fs::read_to_string(dir.path().join(format!("{device}.log"))).unwrap_or_default()
    );
    cluster.kill(0).await.unwrap();
    let status = publisher.wait(Duration::from_secs(120)).await.unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("{device}.log"))).unwrap();
    assert!(status.success(), "exited with {status}: {log}");
    assert!(
        log.contains("left_in_queue=0"),
        "readings left queued: {log}"
    );
    assert!(
        log.contains("Connection to the broker lost")
            && log.contains("Trying the next broker node"),
        "the publisher never failed over: {log}"
    );
    let produced: BTreeMap<i64, i64> = queued_readings(&log);
    assert_eq!(produced.len(), 600);
    let all_in = wait_until(Duration::from_secs(60), || async {
        stored(&db, device).await.len() >= produced.len()
    })
    .await;
    let rows = stored(&db, device).await;
    let stored_map: BTreeMap<i64, i64> = rows.iter().copied().collect();
    assert!(all_in, "{} of 600 rows stored", rows.len());
    assert_eq!(
        stored_map, produced,
        "stored readings differ from queued ones"
    );
    assert_eq!(stored_map.len(), rows.len(), "a reading stored twice");
    eprintln!(
        "nats publisher-node drill: {} readings, {} connections, {:?} in all",
        rows.len(),
        log.matches("Connected to the broker").count(),
        started.elapsed()
    );
}
