//! Helpers: publisher settings for a test, running the publisher and the
//! bridge binaries, listening to what reaches the broker, and reading what a
//! publisher logged and what the bridge stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use co2_testkit::{
    bridge_base_env, bridge_bin, device_env, device_log, free_port, queue_path, spawn_device,
    wait_for_device_rows, BridgeProcess, ChildProcess, Database,
};

use co2_wire::{DeviceEvent, Seq};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// Environment for a publisher binary: `device` on 127.0.0.1:`port`, topics
/// under `prefix`, queue at `queue`, fast interval, no clock-sync wait.
pub fn publisher_env(device: &str, port: u16, prefix: &str, queue: &Path) -> Vec<(String, String)> {
    let mut env = device_env(device, queue);
    env.extend(
        [
            ("CO2_PUBLISHER__MQTT__PORT", port.to_string()),
            ("CO2_PUBLISHER__MQTT__TOPIC_PREFIX", prefix.to_owned()),
            ("CO2_PUBLISHER__MQTT__RECONNECT_MIN_MS", "100".to_owned()),
            ("CO2_PUBLISHER__MQTT__RECONNECT_MAX_MS", "500".to_owned()),
            ("RUST_LOG", "info,co2_publisher=debug".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

/// The publisher binary of this package.
pub fn publisher_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_co2-publisher"))
}

/// Runs the publisher binary with `args`, the [`publisher_env`] of `device`
/// (queue `<dir>/<device>.sqlite3`) plus `extra`, logging to `<dir>/<device>.log`.
pub fn spawn_publisher(
    dir: &Path,
    device: &str,
    port: u16,
    prefix: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> ChildProcess {
    let mut env = publisher_env(device, port, prefix, &queue_path(dir, device));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    spawn_device(&publisher_bin(), dir, device, args, env).unwrap()
}

/// The log of `device` in `dir`.
pub fn log_of(dir: &Path, device: &str) -> String {
    std::fs::read_to_string(device_log(dir, device)).unwrap_or_default()
}

/// Every reading a publisher log says it queued: epoch ms -> value in cents.
/// The line is written after the queue commit, so each is durable.
pub fn queued_readings(log: &str) -> BTreeMap<i64, i64> {
    queued_lines(log)
        .into_iter()
        .map(|q| (q.ms, q.cents))
        .collect()
}

/// One "Reading queued" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedLine {
    /// Stamp, epoch ms.
    pub ms: i64,
    /// Value in cents.
    pub cents: i64,
    /// Its number.
    pub seq: Option<Seq>,
    /// `disk` or `memory`.
    pub store: String,
}

/// Every "Reading queued" line, in log order.
pub fn queued_lines(log: &str) -> Vec<QueuedLine> {
    log.lines()
        .filter(|l| l.contains("Reading queued"))
        .filter_map(|l| {
            let payload = l.split("reading=").nth(1)?;
            let (ms, cents) = parse_payload(payload.trim());
            let token = |key: &str| {
                l.split(key)
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned()
            };
            Some(QueuedLine {
                ms,
                cents,
                seq: token(" seq=").parse().ok(),
                store: token(" store="),
            })
        })
        .collect()
}

/// A canonical payload as (epoch ms, cents); its time may say it is UTC
/// (`Z`, as sent) or not (as logged).
pub fn parse_payload(payload: &str) -> (i64, i64) {
    let (time, value) = payload.split_once('|').unwrap();
    let time = time.strip_suffix('Z').unwrap_or(time);
    let time = NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap()
        .and_utc();
    let cents = (value.parse::<f64>().unwrap() * 100.0).round() as i64;
    (time.timestamp_millis(), cents)
}

/// The real bridge binary, subscribed to `<prefix>/+/emissions` on the broker
/// at `port`, writing into `db`; ready when this returns.
pub async fn start_bridge(dir: &Path, port: u16, prefix: &str, db: &Database) -> ChildProcess {
    start_bridge_with(dir, port, prefix, db, &[]).await
}

/// As [`start_bridge`], with `extra` settings in its environment.
pub async fn start_bridge_with(
    dir: &Path,
    port: u16,
    prefix: &str,
    db: &Database,
    extra: &[(&str, &str)],
) -> ChildProcess {
    let mut env: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.push(("RUST_LOG".into(), "info".into()));
    env.extend(bridge_base_env(
        &db.url(),
        port,
        prefix,
        free_port().unwrap(),
    ));
    env.push(("CO2_BRIDGE__MQTT__RECONNECT_MAX_MS".into(), "500".into()));
    let bridge = BridgeProcess::spawn(&bridge_bin(), &env, &dir.join("bridge.log")).unwrap();
    bridge.wait_ready().await;
    bridge.process
}

/// Rows the bridge stored for `device`: (epoch ms, value in cents), by id.
pub async fn stored(db: &Database, device: &str) -> Vec<(i64, i64)> {
    let rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT date_time, emissions FROM co2_emissions WHERE device = ? ORDER BY id",
    )
    .bind(device)
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, v)| (t.timestamp_millis(), (v * 100.0).round() as i64))
        .collect()
}

/// Waits until the bridge stored at least `n` rows for `device`.
pub async fn wait_rows(db: &Database, device: &str, n: usize, timeout: Duration) -> bool {
    let n = n as i64;
    wait_for_device_rows(db, device, n, timeout).await >= n
}

/// One message the listener received.
#[derive(Debug, Clone)]
pub struct Heard {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its `co2-seq` user property.
    pub seq: Option<String>,
    /// Its content type.
    pub content_type: Option<String>,
}

/// An MQTT v5 subscriber to `<prefix>/#` that keeps everything it hears,
/// user properties included: what a third-party subscriber would see.
pub struct Listener {
    heard: Arc<Mutex<Vec<Heard>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Subscribes (returns once the broker confirmed the subscription).
    pub async fn start(port: u16, prefix: &str) -> Self {
        let mut options = MqttOptions::new(format!("{prefix}-listener"), "127.0.0.1", port);
        // A persistent session: the broker keeps what arrives while the
        // listener is away (a test restarting the broker) and its subscription.
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_start(false)
            .set_session_expiry_interval(Some(3600));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&heard);
        let filter = format!("{prefix}/#");
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    // Subscribe on every connection, in case the broker lost the session.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let props = p.properties.unwrap_or_default();
                        let seq = props
                            .user_properties
                            .iter()
                            .find(|(k, _)| k == co2_wire::SEQ_PROPERTY)
                            .map(|(_, v)| v.clone());
                        sink.lock().unwrap().push(Heard {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            seq,
                            content_type: props.content_type,
                        });
                    }
                    Ok(_) => {}
                    // The broker may be stopped by the test: keep trying.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("no SUBACK within 10 s")
            .unwrap();
        Self { heard, task }
    }

    /// Everything heard so far.
    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().unwrap().clone()
    }

    /// The announcements heard from `device`, decoded, each once (by id).
    pub fn events(&self, device: &str) -> Vec<DeviceEvent> {
        let mut seen = std::collections::HashSet::new();
        self.heard()
            .into_iter()
            .filter(|h| h.topic.ends_with(&format!("/{device}/events")))
            .map(|h| {
                assert_eq!(h.content_type.as_deref(), Some("application/json"));
                DeviceEvent::decode(&h.payload).unwrap()
            })
            .filter(|e| seen.insert(e.id))
            .collect()
    }

    /// The readings heard from `device`: (epoch ms, cents, number).
    pub fn readings(&self, device: &str) -> Vec<(i64, i64, Option<Seq>)> {
        self.heard()
            .into_iter()
            .filter(|h| h.topic.ends_with(&format!("/{device}/emissions")))
            .map(|h| {
                let (ms, cents) = parse_payload(std::str::from_utf8(&h.payload).unwrap());
                (ms, cents, h.seq.map(|s| s.parse().unwrap()))
            })
            .collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
