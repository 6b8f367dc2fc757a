//! The MQTT side: one task that does nothing but poll the rumqttc event loop.
//!
//! Polling is what keeps the session alive (pings, acks going out), so this
//! task never waits on the database: deliveries go into a bounded channel
//! sized to the in-flight window, and in the rare case it is full (after a
//! reconnect the broker re-sends what was in flight) they wait in a local
//! queue that the same window bounds. `EventLoop::poll` is not cancel safe
//! (a cancelled flush would corrupt the stream), so it is never raced in a
//! `select!`; shutdown reaches this task through the events it causes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, Transport};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acks::{AckToken, ConnectionEpoch};
use crate::backoff::Backoff;
use crate::config::{ConfigError, Settings};
use crate::health::Health;
use crate::metrics::Metrics;

/// One message taken from the broker, not yet acknowledged.
#[derive(Debug)]
pub struct Delivery {
    /// The topic it was published to.
    pub topic: String,
    /// The payload as received.
    pub payload: Bytes,
    /// What acknowledges it once it is stored.
    pub ack: AckToken,
}

/// Builds the rumqttc options: MQTT v5, fixed client id, persistent session,
/// manual acks, receive-maximum as the back-pressure window.
pub fn mqtt_options(settings: &Settings) -> Result<MqttOptions, ConfigError> {
    let mqtt = &settings.mqtt;
    let mut options = MqttOptions::new(&mqtt.client_id, &mqtt.host, mqtt.port);
    options
        .set_clean_start(false)
        // With v5 a session ends at disconnect unless it has an expiry interval.
        .set_session_expiry_interval(Some(mqtt.session_expiry_s))
        .set_manual_acks(true)
        .set_receive_maximum(Some(mqtt.receive_maximum))
        .set_keep_alive(Duration::from_secs(mqtt.keep_alive_s))
        .set_connection_timeout(10)
        // Room for a window of acks plus subscribes, so acking never waits on a poll.
        .set_request_channel_capacity(usize::from(mqtt.receive_maximum) + 64)
        // Images and other routes may be large; the wire decoder bounds CO2 payloads.
        .set_max_packet_size(Some(16 * 1024 * 1024));
    if let Some(username) = &mqtt.username {
        let password = settings
            .mqtt_password()?
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        options.set_credentials(username, password);
    }
    if let Some(tls) = &mqtt.tls {
        let read = |key: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| ConfigError::SecretFile {
                key,
                path: path.to_owned(),
                source,
            })
        };
        let ca = read("mqtt.tls.ca_file", &tls.ca_file)?;
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => Some((
                read("mqtt.tls.client_cert_file", cert)?,
                read("mqtt.tls.client_key_file", key)?,
            )),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "mqtt.tls.client_cert_file",
                    message: "client_cert_file and client_key_file go together".into(),
                })
            }
        };
        options.set_transport(Transport::tls(ca, client_auth, None));
    }
    Ok(options)
}

/// The task that owns the event loop.
pub struct Ingress {
    eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Vec<String>,
    tx: mpsc::Sender<Delivery>,
    overflow: VecDeque<Delivery>,
    epoch: ConnectionEpoch,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    reconnect_max: Duration,
    broker: String,
}

impl Ingress {
    /// Wires the event loop to the pipeline's channel.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        eventloop: EventLoop,
        client: AsyncClient,
        subscriptions: Vec<String>,
        tx: mpsc::Sender<Delivery>,
        epoch: ConnectionEpoch,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        reconnect_max: Duration,
    ) -> Self {
        let (host, port) = eventloop.options.broker_address();
        Self {
            eventloop,
            client,
            subscriptions,
            tx,
            overflow: VecDeque::new(),
            epoch,
            metrics,
            health,
            reconnect_max,
            broker: format!("{host}:{port}"),
        }
    }

    /// Polls until the client sends DISCONNECT, or until `stop` fires while the
    /// broker is unreachable.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.reconnect_max);
        let mut outage: Option<Instant> = None;
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.on_connected(ack.session_present, outage.take(), backoff.attempts());
                    backoff.reset();
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.on_publish(publish),
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.on_suback(&ack.return_codes),
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    tracing::warn!(reason = ?d.reason_code, "The broker closed the session");
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::info!("Disconnected from the broker");
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    self.on_connection_error(&error, outage.is_none(), backoff.attempts());
                    outage.get_or_insert_with(Instant::now);
                    if stop.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
            self.forward_overflow();
        }
        self.metrics.mqtt_connected.set(0);
    }

    fn on_connected(&mut self, session_present: bool, outage: Option<Instant>, attempts: u32) {
        self.metrics.mqtt_connected.set(1);
        self.metrics.mqtt_connections.inc();
        match outage {
            Some(since) => tracing::info!(
                broker = %self.broker,
                session_present,
                down_for_s = since.elapsed().as_secs_f64(),
                attempts,
                "Reconnected to the broker"
            ),
            None => {
                tracing::info!(broker = %self.broker, session_present, "Connected to the broker")
            }
        }
        if session_present {
            // The session kept its subscriptions.
            self.health.set_subscribed(true);
            // The broker re-sends everything still unacknowledged on this
            // connection; the queued copies from the old one are redundant.
            let current = self.epoch.current();
            let before = self.overflow.len();
            self.overflow.retain(|d| d.ack.epoch() == current);
            let dropped = before - self.overflow.len();
            self.metrics.pending_messages.sub(dropped as i64);
        } else {
            // A new session has no subscriptions: without this the bridge would
            // be connected and receive nothing.
            self.subscribe();
        }
    }

    fn subscribe(&self) {
        self.health.set_subscribed(false);
        let filters: Vec<Filter> = self
            .subscriptions
            .iter()
            .map(|t| Filter::new(t.clone(), QoS::AtLeastOnce))
            .collect();
        if self.client.try_subscribe_many(filters.clone()).is_err() {
            let client = self.client.clone();
            tokio::spawn(async move { client.subscribe_many(filters).await });
        }
        tracing::info!(topics = ?self.subscriptions, "Subscribing");
    }

    fn on_suback(&self, codes: &[SubscribeReasonCode]) {
        let refused: Vec<String> = self
            .subscriptions
            .iter()
            .zip(codes)
            .filter(|(_, code)| !matches!(code, SubscribeReasonCode::Success(_)))
            .map(|(topic, code)| format!("{topic} ({code:?})"))
            .collect();
        if refused.is_empty() {
            self.health.set_subscribed(true);
            tracing::info!("Subscribed");
        } else {
            tracing::error!(
                refused = ?refused,
                "The broker refused subscriptions; check the bridge user's ACL (it needs read access to these topics)"
            );
        }
    }

    fn on_publish(&mut self, publish: rumqttc::v5::mqttbytes::v5::Publish) {
        self.metrics.messages_received.inc();
        self.metrics.pending_messages.inc();
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let payload = publish.payload.clone();
        let delivery = Delivery {
            topic,
            payload,
            ack: AckToken::new(publish, self.epoch.current()),
        };
        if self.overflow.is_empty() {
            match self.tx.try_send(delivery) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    tracing::debug!(
                        "Pipeline channel full; holding deliveries in the overflow queue"
                    );
                    self.overflow.push_back(d);
                }
                // The pipeline stopped taking messages (shutdown): this one stays
                // unacknowledged and the broker delivers it to the next session.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.metrics.pending_messages.dec();
                }
            }
        } else {
            self.overflow.push_back(delivery);
        }
    }

    fn forward_overflow(&mut self) {
        while let Some(delivery) = self.overflow.pop_front() {
            match self.tx.try_send(delivery) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    self.overflow.push_front(d);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let dropped = self.overflow.len() + 1;
                    self.metrics.pending_messages.sub(dropped as i64);
                    self.overflow.clear();
                    return;
                }
            }
        }
    }

    fn on_connection_error(&mut self, error: &ConnectionError, first: bool, attempts: u32) {
        self.metrics.mqtt_connected.set(0);
        self.health.set_subscribed(false);
        self.epoch.advance();
        let hint = match error {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            ) => "check mqtt.username and mqtt.password_file, and the broker's password file",
            ConnectionError::ConnectionRefused(_) => "the broker refused the connection",
            ConnectionError::Io(_) | ConnectionError::Timeout(_) => {
                "is the broker running and reachable at mqtt.host:mqtt.port?"
            }
            ConnectionError::Tls(_) => {
                "check mqtt.tls.ca_file and that the broker's certificate matches mqtt.host"
            }
            _ => "reconnecting",
        };
        if first {
            tracing::warn!(broker = %self.broker, error = %error, hint, "Lost the broker connection; reconnecting with back-off");
        } else {
            tracing::debug!(broker = %self.broker, error = %error, attempts, "Still cannot reach the broker");
            if attempts > 0 && attempts % 20 == 0 {
                tracing::warn!(broker = %self.broker, error = %error, attempts, hint, "Still cannot reach the broker");
            }
        }
    }
}
