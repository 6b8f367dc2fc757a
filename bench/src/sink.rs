//! Consumers that are not the bridge: a null subscriber that acks at once and
//! stores nothing (the broker's own delivery ceiling), and the naive consumer
//! people run today (one INSERT and one commit per message).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{NaiveDateTime, Utc};
use rumqttc::v5::mqttbytes::v5::Packet as P5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use serde::Serialize;
use sqlx::mysql::MySqlConnection;
use sqlx::Connection;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where a consumer connects and as whom.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (fixed, so a persistent session can be resumed).
    pub client_id: String,
    /// Topic filter.
    pub filter: String,
    /// Broker user and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    distinct: AtomicU64,
    first_ms: AtomicI64,
    last_ms: AtomicI64,
    subscribed: AtomicBool,
    errors: AtomicU64,
}

/// An MQTT v5 subscriber with receive-maximum 65535 that acks every message as it
/// arrives (rumqttc's automatic acks) and keeps only counts.
pub struct NullSubscriber {
    client: rumqttc::v5::AsyncClient,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

/// What a consumer received.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SinkFigures {
    /// Messages received, redeliveries included.
    pub received: u64,
    /// Distinct (topic, payload) pairs.
    pub distinct: u64,
    /// Wall clock ms of the first and last message.
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
}

impl NullSubscriber {
    /// Connects and subscribes at QoS 1; `persistent` keeps the session (expiry
    /// 1 h) after a disconnect, for a backlog test. Otherwise the session ends with
    /// the connection, so it cannot take a share of later runs' messages.
    pub async fn connect(endpoint: &Endpoint, persistent: bool) -> anyhow::Result<Self> {
        let mut o =
            rumqttc::v5::MqttOptions::new(&endpoint.client_id, &endpoint.host, endpoint.port);
        o.set_clean_start(!persistent)
            .set_session_expiry_interval(persistent.then_some(3600))
            .set_receive_maximum(Some(u16::MAX))
            .set_keep_alive(Duration::from_secs(30))
            .set_manual_acks(false);
        if let Some((u, p)) = &endpoint.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(o, 1024);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        // Its own OS thread and runtime, like a separate process: it must not
        // share the load generator's workers (the bridge does not either).
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("null-subscriber".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let state = std::collections::hash_map::RandomState::new();
                    let mut seen: HashSet<u64> = HashSet::new();
                    loop {
                        match eventloop.poll().await {
                            Ok(rumqttc::v5::Event::Incoming(P5::Publish(p))) => {
                                let now = Utc::now().timestamp_millis();
                                if c.received.fetch_add(1, Ordering::Relaxed) == 0 {
                                    c.first_ms.store(now, Ordering::Relaxed);
                                }
                                c.last_ms.store(now, Ordering::Relaxed);
                                let mut h = state.build_hasher();
                                p.topic.hash(&mut h);
                                p.payload.hash(&mut h);
                                if seen.insert(h.finish()) {
                                    c.distinct.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(rumqttc::v5::Event::Incoming(P5::SubAck(_))) => {
                                c.subscribed.store(true, Ordering::Release);
                            }
                            Ok(rumqttc::v5::Event::Incoming(P5::ConnAck(ack)))
                                if ack.session_present =>
                            {
                                c.subscribed.store(true, Ordering::Release);
                            }
                            Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                                break
                            }
                            Ok(_) => {}
                            Err(e) => {
                                c.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "null subscriber connection error");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                });
                let _ = done_tx.send(());
            })
            .context("cannot start the null subscriber thread")?;
        let task = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        client
            .subscribe(endpoint.filter.clone(), Q5::AtLeastOnce)
            .await
            .context("null subscriber: subscribe")?;
        let me = Self {
            client,
            counts,
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !me.counts.subscribed.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                bail!(
                    "null subscriber: no SUBACK from {}:{} within 10 s",
                    endpoint.host,
                    endpoint.port
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(me)
    }

    /// Waits until `n` distinct messages arrived, or `idle` passes without any.
    pub async fn wait_for(&self, n: u64, idle: Duration) -> SinkFigures {
        let mut last = (0, Instant::now());
        loop {
            let got = self.counts.distinct.load(Ordering::Relaxed);
            if got >= n {
                break;
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.figures()
    }

    /// Counts so far.
    pub fn figures(&self) -> SinkFigures {
        let c = &self.counts;
        SinkFigures {
            received: c.received.load(Ordering::Relaxed),
            distinct: c.distinct.load(Ordering::Relaxed),
            first_ms: c.first_ms.load(Ordering::Relaxed),
            last_ms: c.last_ms.load(Ordering::Relaxed),
        }
    }

    /// Sends DISCONNECT (the session stays, for a backlog test) and stops.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("null subscriber did not disconnect within 5 s");
        }
    }
}

/// Ends the broker's session for `endpoint.client_id` (a clean start with no
/// expiry, then DISCONNECT), so a stopped bridge's session stops queueing (and,
/// in a shared group, stops taking a share of) later messages. A broker that
/// speaks only MQTT 3.1.1 (NATS 2.9) refuses the v5 CONNECT; then a 3.1.1
/// clean-session CONNECT, which discards the session just the same.
pub async fn clear_session(endpoint: &Endpoint) -> anyhow::Result<()> {
    let v5 = tokio::time::timeout(Duration::from_secs(10), clear_session_v5(endpoint))
        .await
        .context("clearing a session timed out")
        .and_then(|r| r);
    match v5 {
        Ok(()) => Ok(()),
        Err(v5_error) => {
            tokio::time::timeout(Duration::from_secs(10), clear_session_v311(endpoint))
                .await
                .context("clearing a session (MQTT 3.1.1) timed out")
                .and_then(|r| r)
                .with_context(|| format!("after MQTT 5 failed: {v5_error:#}"))
        }
    }
}

async fn clear_session_v5(endpoint: &Endpoint) -> anyhow::Result<()> {
    let mut o = rumqttc::v5::MqttOptions::new(&endpoint.client_id, &endpoint.host, endpoint.port);
    o.set_clean_start(true)
        .set_session_expiry_interval(None)
        .set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = &endpoint.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(o, 8);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::v5::Event::Incoming(P5::ConnAck(_))) => {
                client.disconnect().await?;
            }
            Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => bail!("clearing session {}: {e}", endpoint.client_id),
        }
    }
}

async fn clear_session_v311(endpoint: &Endpoint) -> anyhow::Result<()> {
    let mut o = rumqttc::MqttOptions::new(&endpoint.client_id, &endpoint.host, endpoint.port);
    o.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = &endpoint.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 8);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                client.disconnect().await?;
            }
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => bail!("clearing session {} (MQTT 3.1.1): {e}", endpoint.client_id),
        }
    }
}

/// What the naive consumer did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NaiveFigures {
    /// Messages received.
    pub received: u64,
    /// INSERTs committed.
    pub inserted: u64,
    /// INSERTs or commits that failed (a real script would have died).
    pub failed: u64,
    /// Payloads it could not parse.
    pub unparsed: u64,
}

/// The consumer people write today: MQTT 3.1.1, clean session, acks on
/// receipt, and for every message one INSERT and one COMMIT (autocommit off,
/// as Python's MySQL drivers default to).
pub struct Naive {
    client: rumqttc::AsyncClient,
    figures: Arc<Mutex<NaiveFigures>>,
    task: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Naive {
    /// Connects to the broker and the database and starts consuming.
    pub async fn start(endpoint: &Endpoint, qos: u8, db_url: &str) -> anyhow::Result<Self> {
        let mut db = MySqlConnection::connect(db_url)
            .await
            .with_context(|| format!("naive consumer: cannot connect to {db_url}"))?;
        sqlx::query("SET time_zone = '+00:00'")
            .execute(&mut db)
            .await?;
        sqlx::query("SET autocommit = 0").execute(&mut db).await?;
        let mut o = rumqttc::MqttOptions::new(&endpoint.client_id, &endpoint.host, endpoint.port);
        o.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = &endpoint.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 64);
        let q = if qos == 0 {
            rumqttc::QoS::AtMostOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        };
        client.subscribe(endpoint.filter.clone(), q).await?;
        let figures = Arc::new(Mutex::new(NaiveFigures::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (figures.clone(), stop.clone());
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let notify = subscribed.clone();
        let task = tokio::spawn(async move {
            loop {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let event = match tokio::time::timeout(Duration::from_millis(200), eventloop.poll())
                    .await
                {
                    Ok(event) => event,
                    Err(_) => continue,
                };
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => notify.notify_one(),
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let mut fig = f.lock().await;
                        fig.received += 1;
                        let Some((device, time, value)) = parse(&p.topic, &p.payload) else {
                            fig.unparsed += 1;
                            continue;
                        };
                        let inserted = async {
                            sqlx::query(
                                "INSERT INTO co2_emissions (device, date_time, emissions) VALUES (?, ?, ?)",
                            )
                            .bind(device)
                            .bind(time)
                            .bind(value)
                            .execute(&mut db)
                            .await?;
                            sqlx::query("COMMIT").execute(&mut db).await?;
                            anyhow::Ok(())
                        }
                        .await;
                        match inserted {
                            Ok(()) => fig.inserted += 1,
                            Err(e) => {
                                fig.failed += 1;
                                tracing::debug!(error = %e, "naive insert failed");
                            }
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "naive consumer connection error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        if tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .is_err()
        {
            bail!("naive consumer: no SUBACK within 10 s");
        }
        Ok(Self {
            client,
            figures,
            task,
            stop,
        })
    }

    /// Waits until `n` messages were handled, or `idle` passes without progress.
    pub async fn wait_for(&self, n: u64, idle: Duration) -> NaiveFigures {
        let mut last = (0, Instant::now());
        loop {
            let fig = *self.figures.lock().await;
            if fig.received >= n {
                return fig;
            }
            if fig.received != last.0 {
                last = (fig.received, Instant::now());
            } else if last.1.elapsed() > idle {
                return fig;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Disconnects and stops.
    pub async fn stop(self) -> NaiveFigures {
        let _ = self.client.try_disconnect();
        self.stop.store(true, Ordering::Relaxed);
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("naive consumer did not stop within 5 s");
        }
        *self.figures.lock().await
    }
}

/// `<prefix>/<device>/emissions` + `YYYY-MM-DD hh:mm:ss.fff|value`, as a
/// hand-written consumer would parse it.
fn parse<'a>(topic: &'a str, payload: &[u8]) -> Option<(&'a str, NaiveDateTime, f64)> {
    let device = topic.split('/').nth(1)?;
    let text = std::str::from_utf8(payload).ok()?;
    let (time, value) = text.split_once('|')?;
    let time = NaiveDateTime::parse_from_str(time.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some((device, time, value.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_parse() {
        let (d, t, v) = parse("co2/dev0001/emissions", b"2026-01-01 00:00:00.123|405.05").unwrap();
        assert_eq!(d, "dev0001");
        assert_eq!(t.and_utc().timestamp_millis(), 1_767_225_600_123);
        assert_eq!(v, 405.05);
        assert!(parse("co2", b"x|1").is_none());
    }
}
