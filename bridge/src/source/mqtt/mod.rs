//! The MQTT side: one task that polls the rumqttc event loop and hands
//! deliveries to the pipeline.
//!
//! Polling is what keeps the session alive (pings, acks going out) and also
//! what reads the socket: rumqttc offers no way to do one without the other.
//! Deliveries go into a bounded channel sized to the in-flight window. The
//! broker should never send more than that unacknowledged, but Mosquitto
//! 2.0.11 overruns a v5 receive-maximum on a resumed session (BENCHMARKS.md),
//! so when the channel is full the rest of the current read waits in a small
//! local queue and this task stops polling until the pipeline has taken
//! enough to make room: the socket is not read, TCP pushes back, and the
//! backlog stays at the broker, where it is persisted, instead of in the
//! bridge's memory. Acks do not need this task to be polling to be queued
//! (see `acks`), so the pause cannot deadlock; it is cut short every second
//! to keep the session alive while the database is down. `EventLoop::poll` is
//! not cancel safe (a cancelled flush would corrupt the stream), so it is
//! never raced in a `select!`; shutdown reaches this task through the events
//! it causes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) mod acks;
pub(crate) mod client;
mod following;
mod tls;

use bytes::Bytes;
use co2_wire::backoff::Backoff;
use co2_wire::endpoint::Endpoint;
use co2_wire::Seq;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use acks::{AckToken, Acker, ConnectionEpoch};
pub use client::{connect, connect_as, Client, EventLoop, MqttError, MqttEvent};
pub use following::Following;

use super::budget::ByteBudget;
use super::handoff::Handoff;
use super::{Ack, Delivery};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::Origin;
use client::AckHandle;

/// The task that owns the event loop.
pub struct Ingress {
    eventloop: EventLoop,
    client: Client,
    subscriptions: Vec<String>,
    handoff: Handoff,
    epoch: ConnectionEpoch,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    reconnect_max: Duration,
    /// The node the last session was established on (`None` before the first).
    last_broker: Option<Endpoint>,
    link: usize,
    max_pause: Duration,
    budget: Arc<ByteBudget>,
    /// Home Assistant discovery's subscriptions, on the connection that follows them.
    discovery: Option<Following>,
    /// The SUBSCRIBE requests awaiting their SUBACK, in order.
    asked: VecDeque<Asked>,
    connected: bool,
}

/// What a SUBSCRIBE asked for, to read its SUBACK by.
enum Asked {
    /// The routes' filters.
    Routes,
    /// Discovery's filters and state topics.
    Discovery(Vec<String>),
}

impl Ingress {
    /// Wires the event loop to the pipeline's channel.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        eventloop: EventLoop,
        client: Client,
        subscriptions: Vec<String>,
        tx: mpsc::Sender<Delivery>,
        epoch: ConnectionEpoch,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        reconnect_max: Duration,
        link: usize,
        budget: Arc<ByteBudget>,
    ) -> Self {
        // Often enough that a ping goes out within the keep-alive even when
        // the pipeline stays full (database down).
        let max_pause = (eventloop.keep_alive() / 4).min(Duration::from_secs(1));
        Self {
            eventloop,
            client,
            subscriptions,
            handoff: Handoff::new(tx, metrics.clone()),
            epoch,
            metrics,
            health,
            reconnect_max,
            last_broker: None,
            link,
            max_pause,
            budget,
            discovery: None,
            asked: VecDeque::new(),
            connected: false,
        }
    }

    /// Also subscribes to what Home Assistant discovery announces, following
    /// it as it changes.
    pub fn with_discovery(mut self, following: Following) -> Self {
        self.discovery = Some(following);
        self
    }

    /// Polls until the client sends DISCONNECT, or until `stop` fires while the
    /// broker is unreachable.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.reconnect_max);
        let mut outage: Option<Instant> = None;
        loop {
            if self.handoff.is_waiting() {
                self.handoff.wait_for_room(self.max_pause).await;
            }
            if self.budget.spent() {
                self.wait_for_bytes().await;
            }
            match self.eventloop.poll().await {
                Ok(MqttEvent::Connected { session_present }) => {
                    self.on_connected(session_present, outage.take(), backoff.attempts());
                    backoff.reset();
                }
                Ok(MqttEvent::Publish {
                    topic,
                    payload,
                    ack,
                    seq,
                }) => self.on_publish(topic, payload, ack, seq),
                Ok(MqttEvent::Subscribed(granted)) => self.on_suback(&granted),
                Ok(MqttEvent::ServerDisconnect(reason)) => {
                    tracing::warn!(reason, "The broker closed the session");
                }
                Ok(MqttEvent::ClientDisconnected) => {
                    tracing::info!("Disconnected from the broker");
                    break;
                }
                Ok(MqttEvent::Other) => {}
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
            if self.connected {
                self.follow_discovery();
            }
            self.handoff.forward();
        }
        self.health.set_connected(self.link, false);
    }

    fn on_connected(&mut self, session_present: bool, outage: Option<Instant>, attempts: u32) {
        self.health.set_connected(self.link, true);
        self.connected = true;
        self.metrics.mqtt_connections.inc();
        let broker = self.eventloop.broker().clone();
        let previous = self.last_broker.replace(broker.clone());
        match (outage, previous) {
            (Some(since), Some(from)) if from != broker => {
                self.metrics.mqtt_failovers.inc();
                let down_for_s = since.elapsed().as_secs_f64();
                if session_present {
                    tracing::warn!(
                        link = self.link, from = %from, to = %broker, session_present,
                        down_for_s, attempts,
                        "Failed over to another broker node; the session was resumed there (unacknowledged messages are redelivered)"
                    );
                } else {
                    tracing::error!(
                        link = self.link, from = %from, to = %broker, session_present,
                        down_for_s, attempts,
                        "Failed over to another broker node that did not have this session: messages queued for it on the old node are lost unless that node comes back; replicate sessions across the cluster (see docs/scale-out.md)"
                    );
                }
            }
            (Some(since), _) => tracing::info!(
                broker = %broker,
                session_present,
                down_for_s = since.elapsed().as_secs_f64(),
                attempts,
                "Reconnected to the broker"
            ),
            (None, _) => {
                tracing::info!(broker = %broker, link = self.link, session_present, "Connected to the broker")
            }
        }
        if session_present {
            // The session kept its subscriptions.
            self.health.set_subscribed(self.link, true);
            // The broker re-sends everything still unacknowledged on this
            // connection; the queued copies from the old one are redundant.
            let current = self.epoch.current();
            self.handoff
                .retain(|d| matches!(&d.ack, Ack::Mqtt(t) if t.epoch() == current));
        } else {
            // A new session has no subscriptions: without this the bridge would
            // be connected and receive nothing.
            self.subscribe();
        }
        if let Some(following) = self.discovery.as_mut() {
            let all = following.on_connected();
            tracing::info!(
                state_topics = following.subscribed(),
                "Subscribing to discovery announcements and the state topics known"
            );
            self.client.subscribe(&all);
            self.asked.push_back(Asked::Discovery(all));
        }
    }

    fn subscribe(&mut self) {
        self.health.set_subscribed(self.link, false);
        self.client.subscribe(&self.subscriptions);
        self.asked.push_back(Asked::Routes);
        tracing::info!(topics = ?self.subscriptions, "Subscribing");
    }

    /// Subscribes to state topics newly announced and unsubscribes from
    /// those no sensor uses any more.
    fn follow_discovery(&mut self) {
        let Some(following) = self.discovery.as_mut() else {
            return;
        };
        let Some((new, gone)) = following.changes() else {
            return;
        };
        if !new.is_empty() {
            tracing::debug!(topics = ?new, "Subscribing to discovered state topics");
            self.client.subscribe(&new);
            self.asked.push_back(Asked::Discovery(new));
        }
        for topic in &gone {
            tracing::debug!(topic, "Unsubscribing from a state topic no sensor uses now");
            self.client.unsubscribe(topic);
        }
        if !gone.is_empty() {
            self.metrics
                .discovery_state_topics
                .set(i64::try_from(following.subscribed()).unwrap_or(i64::MAX));
        }
    }

    fn on_suback(&mut self, granted: &[bool]) {
        if let Some(Asked::Discovery(topics)) = self.asked.front() {
            let refused: Vec<&String> = topics
                .iter()
                .zip(granted)
                .filter(|(_, ok)| !**ok)
                .map(|(topic, _)| topic)
                .collect();
            if !refused.is_empty() {
                tracing::error!(
                    refused = ?refused,
                    "The broker refused discovery subscriptions; check the bridge user's ACL (it needs read access to the discovery prefix and the state topics)"
                );
            }
            let subscribed = self.discovery.as_ref().map_or(0, Following::subscribed);
            self.metrics
                .discovery_state_topics
                .set(i64::try_from(subscribed).unwrap_or(i64::MAX));
            self.asked.pop_front();
            return;
        }
        self.asked.pop_front();
        let refused: Vec<&String> = self
            .subscriptions
            .iter()
            .zip(granted)
            .filter(|(_, ok)| !**ok)
            .map(|(topic, _)| topic)
            .collect();
        if refused.is_empty() {
            self.health.set_subscribed(self.link, true);
            tracing::info!("Subscribed");
        } else {
            tracing::error!(
                refused = ?refused,
                "The broker refused subscriptions; check the bridge user's ACL (it needs read access to these topics)"
            );
        }
    }

    fn on_publish(&mut self, topic: Bytes, payload: Bytes, ack: AckHandle, seq: Option<Seq>) {
        self.handoff.push(Delivery {
            held: self.budget.hold(payload.len()),
            origin: Origin::Mqtt(topic),
            payload,
            seq,
            ack: Ack::Mqtt(AckToken::new(self.link, ack, self.epoch.current())),
        });
    }

    /// Holds off reading while the byte budget is spent: up to `max_pause`
    /// (polling then keeps the session alive and reads at most a message or
    /// two more), and without end once twice the budget is held. The broker
    /// may then drop the connection for want of pings; it keeps the session
    /// and the messages, and the bridge resumes it once bytes are released.
    async fn wait_for_bytes(&mut self) {
        if self.budget.overspent() {
            tracing::warn!(
                held_bytes = self.budget.used(),
                "Twice the in-flight byte budget is held; not reading the broker until the sinks catch up"
            );
            self.budget.wait_until_available().await;
            return;
        }
        tokio::select! {
            _ = self.budget.wait_until_available() => {}
            _ = tokio::time::sleep(self.max_pause) => {}
        }
    }

    fn on_connection_error(&mut self, error: &MqttError, first: bool, attempts: u32) {
        self.health.set_connected(self.link, false);
        self.connected = false;
        self.asked.clear();
        self.health.set_subscribed(self.link, false);
        self.health
            .mqtt_error(self.link, format!("{error} ({})", error.hint));
        self.epoch.advance();
        let hint = error.hint;
        let broker = self.eventloop.broker().clone();
        // A cluster: the next attempt goes to the next node (the failed one
        // comes round again after the others).
        let next = self.eventloop.fail_over().cloned();
        let next = next.as_ref().map(ToString::to_string);
        if first {
            tracing::warn!(broker = %broker, next, error = %error, hint, "Lost the broker connection; reconnecting with back-off");
        } else {
            tracing::debug!(broker = %broker, next, error = %error, attempts, "Still cannot reach the broker");
            if attempts > 0 && attempts % 20 == 0 {
                tracing::warn!(broker = %broker, next, error = %error, attempts, hint, "Still cannot reach the broker");
            }
        }
    }
}
