//! The load generator: K simulated devices on K' MQTT 3.1.1 connections (as the
//! Pis connect), each reading stamped with the millisecond it was handed to
//! the client, at a fixed total rate or flat out, QoS 0 or 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, TimeZone, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::time::Instant;

use crate::account::Sent;

/// The shape of a load: how many devices publish how much, how fast.
#[derive(Debug, Clone)]
pub struct Load {
    /// Simulated devices (K).
    pub devices: usize,
    /// MQTT connections they share (K'); devices are dealt round robin.
    pub connections: usize,
    /// Readings in all.
    pub readings: usize,
    /// Total readings per second; `None` publishes flat out.
    pub rate: Option<f64>,
    /// 0 or 1.
    pub qos: u8,
    /// Unacknowledged publishes per connection.
    pub inflight: u16,
    /// Topics are `<topic_prefix>/<device>/emissions`.
    pub topic_prefix: String,
    /// How long to wait for the broker's PUBACKs after the last publish, and
    /// then for the rows.
    pub wait: Duration,
}

/// A load, and where and as whom to publish it.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// What to publish.
    pub load: Load,
    /// Broker host (loopback).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Device ids are `<device_prefix><4-digit index>`.
    pub device_prefix: String,
    /// Per-device broker users (user = device id, this password); needs one
    /// connection per device, as the provisioned ACL only lets a device publish
    /// under its own name.
    pub device_password: Option<String>,
    /// Client ids are `<client_prefix>-<connection>`.
    pub client_prefix: String,
}

impl LoadSpec {
    /// The id of device `d`.
    pub fn device(&self, d: usize) -> String {
        device_id(&self.device_prefix, d)
    }

    /// Every device id.
    pub fn device_ids(&self) -> Vec<String> {
        (0..self.load.devices).map(|d| self.device(d)).collect()
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.load.devices == 0 || self.load.connections == 0 {
            bail!("devices and connections must be at least 1");
        }
        if self.load.connections > self.load.devices {
            bail!(
                "more connections ({}) than devices ({})",
                self.load.connections,
                self.load.devices
            );
        }
        if self.device_password.is_some() && self.load.connections != self.load.devices {
            bail!("per-device users need one connection per device (--connections = --devices)");
        }
        if self.load.qos > 1 {
            bail!("qos must be 0 or 1");
        }
        if matches!(self.load.rate, Some(r) if !(r > 0.0 && r.is_finite())) {
            bail!("rate must be positive");
        }
        Ok(())
    }
}

/// The id of device `d` under `prefix`.
pub fn device_id(prefix: &str, d: usize) -> String {
    format!("{prefix}{d:04}")
}

/// The payload for a reading stamped `stamp_ms` with a value derived from `i`.
pub fn payload(stamp_ms: i64, i: usize) -> String {
    let time = Utc
        .timestamp_millis_opt(stamp_ms)
        .single()
        .unwrap_or_else(Utc::now);
    format!(
        "{}|{}.{:02}",
        time.format("%Y-%m-%d %H:%M:%S%.3f"),
        400 + i % 1600,
        i % 100
    )
}

/// What the generator did.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// Every reading handed to a client, with its stamp.
    pub sent: Vec<Sent>,
    /// When the first was handed over.
    pub first_publish: DateTime<Utc>,
    /// When the last was handed over.
    pub last_publish: DateTime<Utc>,
    /// PUBACKs received (QoS 1).
    pub acked: u64,
    /// Connection errors seen by the clients.
    pub errors: u64,
}

/// Publisher-side figures for the report.
#[derive(Debug, Clone, Serialize)]
pub struct PublishFigures {
    /// Readings handed to the clients.
    pub published: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Seconds from the first to the last publish.
    pub publish_s: f64,
    /// Connection errors.
    pub errors: u64,
}

impl LoadOutcome {
    /// The publisher-side figures.
    pub fn figures(&self) -> PublishFigures {
        PublishFigures {
            published: self.sent.len() as u64,
            acked: self.acked,
            publish_s: (self.last_publish - self.first_publish).num_milliseconds() as f64 / 1000.0,
            errors: self.errors,
        }
    }
}

struct Connection {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(spec: &LoadSpec, c: usize, username: Option<&str>) -> anyhow::Result<Connection> {
    let mut options =
        MqttOptions::new(format!("{}-{c}", spec.client_prefix), &spec.host, spec.port);
    options
        .set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(spec.load.inflight.max(1));
    if let (Some(user), Some(password)) = (username, &spec.device_password) {
        options.set_credentials(user, password.clone());
    }
    let (client, mut eventloop) =
        AsyncClient::new(options, usize::from(spec.load.inflight.max(10)));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let (a, e) = (acked.clone(), errors.clone());
    let task = tokio::spawn(async move {
        let mut connected = Some(connected_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(error) => {
                    e.fetch_add(1, Ordering::Relaxed);
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(Err(error.to_string()));
                        return;
                    }
                    tracing::warn!(%error, "publisher connection error; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(10), connected_rx).await {
        Ok(Ok(Ok(()))) => Ok(Connection {
            client,
            acked,
            errors,
            task,
        }),
        Ok(Ok(Err(e))) => bail!(
            "publisher {c} cannot connect to {}:{}: {e}",
            spec.host,
            spec.port
        ),
        _ => bail!(
            "publisher {c} got no CONNACK from {}:{} within 10 s",
            spec.host,
            spec.port
        ),
    }
}

/// Publishes `spec.load.readings` readings and waits for the broker's acknowledgements.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadOutcome> {
    spec.check()?;
    let devices = spec.device_ids();
    let mut connections = Vec::with_capacity(spec.load.connections);
    for (c, device) in devices.iter().enumerate().take(spec.load.connections) {
        let user = spec.device_password.as_ref().map(|_| device.as_str());
        connections.push(connect(spec, c, user).await?);
    }
    // Reading j belongs to device j % K, which belongs to connection (j % K) % K'.
    let mut plan: Vec<Vec<usize>> = vec![Vec::new(); spec.load.connections];
    for j in 0..spec.load.readings {
        plan[(j % spec.load.devices) % spec.load.connections].push(j);
    }
    let qos = if spec.load.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let topics: Arc<Vec<String>> = Arc::new(
        devices
            .iter()
            .map(|d| format!("{}/{d}/emissions", spec.load.topic_prefix))
            .collect(),
    );
    let started = Instant::now();
    let rate = spec.load.rate;
    let mut tasks = Vec::with_capacity(spec.load.connections);
    for (connection, indices) in connections.iter().zip(plan) {
        let client = connection.client.clone();
        let topics = topics.clone();
        let devices_n = spec.load.devices;
        tasks.push(tokio::spawn(async move {
            let mut last_stamp = vec![i64::MIN; devices_n];
            let mut sent = Vec::with_capacity(indices.len());
            let mut first = None;
            for j in indices {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(j as f64 / rate);
                    tokio::time::sleep_until(due).await;
                }
                let d = j % devices_n;
                let now = Utc::now().timestamp_millis();
                // A device's readings need distinct times (the table's key).
                let stamp = now.max(last_stamp[d].saturating_add(1));
                last_stamp[d] = stamp;
                first.get_or_insert(now);
                client
                    .publish(topics[d].as_str(), qos, false, payload(stamp, j))
                    .await
                    .context("publisher client closed")?;
                sent.push((d, stamp));
            }
            anyhow::Ok((sent, first, Utc::now().timestamp_millis()))
        }));
    }
    let mut sent = Vec::with_capacity(spec.load.readings);
    let mut first_ms = i64::MAX;
    let mut last_ms = i64::MIN;
    for task in tasks {
        let (part, first, last) = task.await.context("publisher task panicked")??;
        if let Some(f) = first {
            first_ms = first_ms.min(f);
        }
        last_ms = last_ms.max(last);
        sent.extend(part.into_iter().map(|(d, stamp_ms)| Sent {
            device: devices[d].clone(),
            stamp_ms,
        }));
    }
    let total = sent.len() as u64;
    let acked_sum = || {
        connections
            .iter()
            .map(|c| c.acked.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    if spec.load.qos == 1 {
        let deadline = Instant::now() + spec.load.wait;
        while acked_sum() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let acked = acked_sum();
    let errors = connections
        .iter()
        .map(|c| c.errors.load(Ordering::Relaxed))
        .sum();
    for c in connections {
        let _ = c.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(10), c.task)
            .await
            .is_err()
        {
            tracing::warn!("a publisher connection did not close within 10 s");
        }
    }
    let at = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .unwrap_or_else(Utc::now)
    };
    Ok(LoadOutcome {
        sent,
        first_publish: at(if first_ms == i64::MAX {
            last_ms
        } else {
            first_ms
        }),
        last_publish: at(last_ms),
        acked,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_canonical_with_milliseconds() {
        // 2026-01-01 00:00:00.123 UTC
        let p = payload(1_767_225_600_123, 5);
        assert_eq!(p, "2026-01-01 00:00:00.123|405.05");
    }

    #[test]
    fn device_ids_are_padded() {
        assert_eq!(device_id("dev", 7), "dev0007");
    }
}
