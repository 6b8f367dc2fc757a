//! Drills on real clusters, started and stopped by the tests on 127.0.0.1: a
//! three-node MariaDB Galera cluster and a three-node NATS JetStream cluster
//! with MQTT. A node the bridge uses is SIGKILLed in the middle of a stream;
//! every reading must end up a row exactly once, the bridge must be ready
//! again, and the failover must be counted.
//!
//! A suite of its own (`cargo test -p co2-bridge --test clusters`): each
//! drill starts a cluster (20-30 s for Galera), so they run one at a time,
//! after the main suite, on a quieter machine. `cargo test --workspace`
//! (ops/test.sh) runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use co2_testkit::{
    assert_exactly_once_in, bridge_env, device_env, device_log, free_port, http_get, metric_value,
    publish_range, publisher_bin, queue_path, spawn_device, unique, wait_until, BridgeProcess,
    Broker, ChildProcess, Database, GaleraCluster, NatsCluster, Publisher,
};

/// This package's `co2-bridge`, which cargo builds for its tests.
fn bridge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_co2-bridge"))
}

/// One drill at a time: two clusters plus a bridge each on two cores made
/// the NATS drill miss readings within its deadline (seen once).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Devices × readings per device in each drill.
const DEVICES: usize = 4;
const PER_DEVICE: usize = 500;

/// Polls `/readyz` until it answers 200; returns how long that took.
async fn ready_within(http: std::net::SocketAddr, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    wait_until(timeout, || async move {
        matches!(http_get(http, "/readyz").await, Ok((200, _)))
    })
    .await
    .then(|| started.elapsed())
}

/// Samples `/readyz` every 100 ms until stopped: (ready, not ready, no
/// answer). During a failover the bridge may say not ready (a sink or the
/// broker is down for a moment), but it must always answer.
struct ReadinessProbe {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(u32, u32, u32)>,
}

impl ReadinessProbe {
    fn start(http: std::net::SocketAddr) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ready, mut unready, mut silent) = (0, 0, 0);
            while !token.is_cancelled() {
                match tokio::time::timeout(Duration::from_secs(2), http_get(http, "/readyz")).await
                {
                    Ok(Ok((200, _))) => ready += 1,
                    Ok(Ok(_)) => unready += 1,
                    _ => silent += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ready, unready, silent)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (u32, u32, u32) {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Publishes `PER_DEVICE` readings of each of `DEVICES` devices under
/// `prefix`, a round every 10 ms, then waits (up to 120 s) until the broker
/// has acknowledged every one.
fn spawn_stream(publisher: Publisher, prefix: &str) -> tokio::task::JoinHandle<()> {
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        for i in 0..PER_DEVICE {
            publish_range(&publisher, &prefix, DEVICES, i..i + 1).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let total = (DEVICES * PER_DEVICE) as u64;
        assert!(publisher.wait_acked(total, Duration::from_secs(120)).await);
        publisher.disconnect().await;
    })
}

fn device_name(n: usize) -> String {
    format!("nats-device-{n}")
}

fn device_log_text(dir: &std::path::Path, n: usize) -> String {
    std::fs::read_to_string(device_log(dir, &device_name(n))).unwrap_or_default()
}

/// `DEVICES` co2-publisher processes under `dir`, `PER_DEVICE` readings each
/// at 20 ms, MQTT 3.1.1, on node 1 first (then 2, then 0), with a 3 s ack
/// timeout.
fn spawn_devices(dir: &std::path::Path, cluster: &NatsCluster, prefix: &str) -> Vec<ChildProcess> {
    let hosts = cluster.mqtt_hosts();
    let nodes = [1, 2, 0].map(|n| format!("{:?}", hosts[n])).join(", ");
    let config = dir.join("publisher.toml");
    std::fs::write(
        &config,
        format!("[mqtt]\nprotocol = \"v311\"\nhosts = [{nodes}]\nack_timeout_s = 3\nreconnect_min_ms = 100\nreconnect_max_ms = 500\ntopic_prefix = \"{prefix}\"\n"),
    )
    .unwrap();
    let publisher = publisher_bin();
    (0..DEVICES)
        .map(|n| {
            let device = device_name(n);
            let mut env = device_env(&device, &queue_path(dir, &device));
            env.push(("RUST_LOG".into(), "info".into()));
            let count = PER_DEVICE.to_string();
            let args = [
                OsStr::new("--config"),
                config.as_os_str(),
                OsStr::new("run"),
                OsStr::new("--count"),
                OsStr::new(&count),
            ];
            spawn_device(&publisher, dir, &device, args, env).unwrap()
        })
        .collect()
}

/// Galera: the node the bridge writes to is SIGKILLed mid-stream; the bridge
/// moves to the next node of `database.hosts`, and the surviving nodes hold
/// every reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galera_node_killed_mid_stream_loses_and_doubles_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = GaleraCluster::start(3).await.unwrap();
    eprintln!("galera: 3 nodes synced after {:?}", started.elapsed());
    let database = unique("co2t_galera");
    cluster.create_database(&database).await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("galera");
    let mut env = bridge_env(
        &cluster.url(0, &database),
        broker.port(),
        &prefix,
        free_port().unwrap(),
    );
    env.push((
        "CO2_BRIDGE__DATABASE__HOSTS".into(),
        cluster.hosts().join(","),
    ));
    // Small batches, so that the kill lands between commits and inside one.
    env.push(("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "50".into()));
    env.push(("CO2_BRIDGE__DATABASE__CONNECT_TIMEOUT_S".into(), "2".into()));
    let mut bridge = BridgeProcess::spawn_logged(bridge_bin(), &env, "galera-drill").unwrap();
    bridge.wait_ready().await;

    let publisher = Publisher::connect(broker.port(), &unique("galera-pub"));
    let stream = spawn_stream(publisher, &prefix);

    let survivor = cluster.pool(1, &database).await.unwrap();
    let total = (DEVICES * PER_DEVICE) as i64;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM co2_emissions")
            .fetch_one(&survivor)
            .await
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || async {
            count().await >= total / 4
        })
        .await,
        "{}",
        bridge.log_text()
    );
    let probe = ReadinessProbe::start(bridge.http);
    cluster.kill(0).await.unwrap();
    let killed_at = Instant::now();
    let at_kill = count().await;
    assert!(at_kill < total, "the stream ended before the kill");
    eprintln!("galera: node 0 SIGKILLed with {at_kill}/{total} rows");

    let reached = wait_until(Duration::from_secs(120), || async {
        count().await >= total
    })
    .await;
    assert!(
        reached,
        "rows stopped at {}: {}",
        count().await,
        bridge.log_text()
    );
    eprintln!(
        "galera: every row on the survivors {:?} after the kill",
        killed_at.elapsed()
    );
    stream.await.unwrap();
    let (ready, unready, silent) = probe.finish().await;
    eprintln!("galera: /readyz during the failover: {ready} ready, {unready} not ready, {silent} unanswered");
    assert_eq!(silent, 0, "/readyz stopped answering during the failover");
    let ready = ready_within(bridge.http, Duration::from_secs(30)).await;
    assert!(
        ready.is_some(),
        "not ready after the failover: {}",
        bridge.log_text()
    );

    // Both survivors hold the same rows, each reading once.
    for node in [1, 2] {
        let pool = cluster.pool(node, &database).await.unwrap();
        assert_exactly_once_in(&pool, DEVICES, PER_DEVICE).await;
        pool.close().await;
    }
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let failovers = metric_value(&scrape, "co2_bridge_db_failovers_total{sink=\"mysql\"}");
    assert!(
        failovers.unwrap_or(0.0) >= 1.0,
        "failover not counted: {failovers:?}"
    );
    assert_eq!(cluster.status(1, "wsrep_cluster_size").await, Some(2));
    bridge
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("galera drill: {:?} in all", started.elapsed());
}

/// NATS: the node the bridge is connected to is SIGKILLed mid-stream (the
/// devices are on another node); the bridge resumes its session on the next
/// node of `mqtt.hosts`.
///
/// The devices are real co2-publisher processes, not a test client, because
/// the kill also strikes them: the killed node may lead the `$MQTT_msgs`
/// stream, and while a new leader is elected the devices' node can fail to
/// store a publish (`timeout for request type "MS"` in its log) and never
/// answer it, on a connection it keeps open. An MQTT client re-sends an
/// unacknowledged publish only on a new connection, so a plain client waits
/// for ever (this drill failed 1 run in 3 that way with one); the
/// publisher's `mqtt.ack_timeout_s` reconnects and republishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bridge_node_killed_mid_stream_loses_and_doubles_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    eprintln!("nats: 3 nodes healthy after {:?}", started.elapsed());
    let db = Database::create("nats_drill").await.unwrap();
    let prefix = unique("nats");
    let mut env = bridge_env(
        &db.url(),
        cluster.mqtt_port(0),
        &prefix,
        free_port().unwrap(),
    );
    env.push((
        "CO2_BRIDGE__MQTT__HOSTS".into(),
        cluster.mqtt_hosts().join(","),
    ));
    env.push(("CO2_BRIDGE__MQTT__PROTOCOL".into(), "v311".into()));
    env.push(("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "50".into()));
    let mut bridge = BridgeProcess::spawn_logged(bridge_bin(), &env, "nats-drill").unwrap();
    bridge.wait_ready().await;

    let devices_dir = tempfile::tempdir().unwrap();
    let mut devices = spawn_devices(devices_dir.path(), &cluster, &prefix);
    let total = (DEVICES * PER_DEVICE) as i64;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= total / 4
        })
        .await,
        "{}",
        bridge.log_text()
    );
    let probe = ReadinessProbe::start(bridge.http);
    cluster.kill(0).await.unwrap();
    let killed_at = Instant::now();
    let at_kill = db.count("co2_emissions").await.unwrap();
    assert!(at_kill < total, "the stream ended before the kill");
    eprintln!("nats: node 0 SIGKILLed with {at_kill}/{total} rows");
    let mut reconnects = 0;
    for (n, device) in devices.iter_mut().enumerate() {
        let status = device.wait(Duration::from_secs(120)).await.unwrap();
        let log = device_log_text(devices_dir.path(), n);
        assert!(status.success(), "device {n} exited with {status}: {log}");
        assert!(
            log.contains("left_in_queue=0"),
            "device {n} left readings queued: {log}"
        );
        reconnects += log
            .matches("No acknowledgement from the broker in time")
            .count();
    }
    eprintln!("nats: every device delivered its readings ({reconnects} PUBACK timeouts)");
    let reached = wait_until(Duration::from_secs(90), || async {
        db.count("co2_emissions").await.unwrap_or(0) >= total
    })
    .await;
    let rows = db.count("co2_emissions").await.unwrap();
    assert!(
        reached,
        "rows stopped at {rows}/{total}: {}",
        bridge.log_text()
    );
    eprintln!(
        "nats: every row stored {:?} after the kill",
        killed_at.elapsed()
    );
    let (ready, unready, silent) = probe.finish().await;
    for n in 0..DEVICES {
        let device = device_name(n);
        let (rows, distinct): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT date_time) FROM co2_emissions WHERE device = ?",
        )
        .bind(&device)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(
            (rows, distinct),
            (PER_DEVICE as i64, PER_DEVICE as i64),
            "{device}"
        );
    }
    eprintln!("nats: /readyz during the failover: {ready} ready, {unready} not ready, {silent} unanswered");
    assert_eq!(silent, 0, "/readyz stopped answering during the failover");
    let ready = ready_within(bridge.http, Duration::from_secs(30)).await;
    assert!(
        ready.is_some(),
        "not ready after the failover: {}",
        bridge.log_text()
    );
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let failovers = metric_value(&scrape, "co2_bridge_mqtt_failovers_total");
    assert!(
        failovers.unwrap_or(0.0) >= 1.0,
        "failover not counted: {failovers:?}"
    );
    let log = bridge.log_text();
    assert!(
        log.contains("Failed over to another broker node") && log.contains("session_present=true"),
        "the session did not survive the failover: {log}"
    );
    for line in log.lines().filter(|l| {
        l.contains("Failed over")
            || l.contains("Lost the broker connection")
            || l.contains("Subscribed")
            || l.contains("Still cannot reach")
    }) {
        eprintln!("nats: bridge: {line}");
    }
    bridge
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("nats bridge-node drill: {:?} in all", started.elapsed());
}
