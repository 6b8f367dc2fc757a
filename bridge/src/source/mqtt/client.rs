//! One face for rumqttc's MQTT v5 and v3.1.1 clients.
//!
//! v5 is the default: the bridge states its receive-maximum, and the broker
//! keeps that many messages in flight. A broker without v5 gets v3.1.1
//! (`mqtt.protocol = "v311"`), where the broker alone decides the window
//! (Mosquitto: `max_inflight_messages`, 20 by default). Only the few things
//! the bridge needs are mapped: connect, receive, ack, subscribe, disconnect.

use std::time::Duration;

use bytes::Bytes;
use co2_wire::endpoint::{Endpoint, Ring};
use co2_wire::{Seq, SEQ_PROPERTY};
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use secrecy::ExposeSecret;

use crate::config::{ConfigError, Protocol, Settings};
use crate::metrics::TlsExpiry;

/// What the event loop reports, in either protocol.
#[derive(Debug)]
pub enum MqttEvent {
    /// CONNACK accepted.
    Connected {
        /// The broker still had this client's session.
        session_present: bool,
    },
    /// A message.
    Publish {
        /// Topic bytes as sent.
        topic: Bytes,
        /// Payload as sent.
        payload: Bytes,
        /// What acknowledges it.
        ack: AckHandle,
        /// The reading's number at its source (MQTT v5 user property `co2-seq`).
        seq: Option<Seq>,
    },
    /// SUBACK: one flag per filter, true when granted.
    Subscribed(Vec<bool>),
    /// The broker sent DISCONNECT (v5 only), with its reason.
    ServerDisconnect(String),
    /// Our own DISCONNECT went out.
    ClientDisconnected,
    /// Anything else (pings, acks going out).
    Other,
}

/// What a PUBACK needs: the packet id and whether the message wants one (QoS > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckHandle {
    pkid: u16,
    needs_ack: bool,
}

/// A connection error, with a hint for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MqttError {
    message: String,
    /// What the operator should check.
    pub hint: &'static str,
}

impl MqttError {
    /// The broker refused the credentials.
    pub fn is_auth(&self) -> bool {
        self.hint == HINT_AUTH
    }

    /// The TLS handshake failed (certificate chain, host name, expiry).
    pub fn is_tls(&self) -> bool {
        self.hint == HINT_TLS
    }
}

/// Sends requests to the event loop.
#[derive(Clone)]
pub enum Client {
    /// v5.
    V5(rumqttc::v5::AsyncClient),
    /// v3.1.1.
    V311(rumqttc::AsyncClient),
}

/// The event loop; polled by one task only. It holds the client options of
/// every broker node, so a failover only swaps the address the next
/// reconnect uses: the request channel, the client and the session state
/// (packets awaiting acks) stay.
pub struct EventLoop {
    inner: Inner,
    /// `mqtt.read_linger_ms`.
    linger: Duration,
    /// The last socket read brought messages and emptied the socket.
    drained: bool,
}

enum Inner {
    V5 {
        eventloop: Box<rumqttc::v5::EventLoop>,
        brokers: Ring<(Endpoint, rumqttc::v5::MqttOptions)>,
    },
    V311 {
        eventloop: Box<rumqttc::EventLoop>,
        brokers: Ring<(Endpoint, rumqttc::MqttOptions)>,
    },
}

/// Creates the client and event loop of connection `link` from the settings.
/// Connection `link` starts on node `link` of `mqtt.hosts` (wrapping), so that
/// several connections spread over a cluster. With `expiry`, the end dates
/// of the TLS certificates in use are reported there.
pub fn connect(
    settings: &Settings,
    link: usize,
    expiry: Option<&TlsExpiry>,
) -> Result<(Client, EventLoop), ConfigError> {
    open(settings, &settings.mqtt_client_id(link), true, link, expiry)
}

/// As [`connect`], as `client_id`, starting on the first node of
/// `mqtt.hosts`; `persistent: false` asks for a clean session the broker
/// forgets at disconnect (`co2-bridge doctor`, which must neither take over
/// the bridge's session nor leave one behind).
pub fn connect_as(
    settings: &Settings,
    client_id: &str,
    persistent: bool,
) -> Result<(Client, EventLoop), ConfigError> {
    open(settings, client_id, persistent, 0, None)
}

fn open(
    settings: &Settings,
    client_id: &str,
    persistent: bool,
    link: usize,
    expiry: Option<&TlsExpiry>,
) -> Result<(Client, EventLoop), ConfigError> {
    let mqtt = &settings.mqtt;
    let endpoints = settings.mqtt_endpoints()?;
    let window = usize::from(mqtt.receive_maximum);
    // Requests are acks plus the odd subscribe. rumqttc's requests are 216
    // bytes each, so a window-sized channel cost 14 MB in a backlog drain; the
    // ack forwarders (see `acks`) wait for room here instead, holding 16 bytes
    // per ack.
    let capacity = window.min(2048) + 64;
    let credentials = match &mqtt.username {
        Some(user) => Some((
            user.clone(),
            settings
                .mqtt_password()?
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default(),
        )),
        None => None,
    };
    let transport = super::tls::transport(settings, expiry)?;
    let keep_alive = Duration::from_secs(mqtt.keep_alive_s);
    let (client, inner) = match mqtt.protocol {
        Protocol::V5 => {
            let options: Vec<_> = endpoints
                .into_iter()
                .map(|broker| {
                    let mut o = rumqttc::v5::MqttOptions::new(client_id, &broker.host, broker.port);
                    o.set_clean_start(!persistent)
                        // With v5 a session ends at disconnect unless it has an expiry interval.
                        .set_session_expiry_interval(persistent.then_some(mqtt.session_expiry_s))
                        .set_manual_acks(true)
                        .set_receive_maximum(Some(mqtt.receive_maximum))
                        // The bridge publishes nothing; rumqttc would otherwise preallocate
                        // 65536 outgoing slots (14 MB, seen with massif).
                        .set_outgoing_inflight_upper_limit(16)
                        .set_keep_alive(keep_alive)
                        .set_connection_timeout(10)
                        .set_request_channel_capacity(capacity)
                        .set_max_request_batch(ACK_BATCH)
                        .set_max_packet_size(Some(MAX_PACKET));
                    if let Some((user, password)) = &credentials {
                        o.set_credentials(user.clone(), password.clone());
                    }
                    if let Some(t) = &transport {
                        o.set_transport(t.clone());
                    }
                    (broker, o)
                })
                .collect();
            let brokers = Ring::new(options, link).ok_or_else(no_broker)?;
            let first = brokers.current().1.clone();
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(first, capacity);
            (
                Client::V5(client),
                Inner::V5 {
                    eventloop: Box::new(eventloop),
                    brokers,
                },
            )
        }
        Protocol::V311 => {
            let options: Vec<_> = endpoints
                .into_iter()
                .map(|broker| {
                    let mut o = rumqttc::MqttOptions::new(client_id, &broker.host, broker.port);
                    o.set_clean_session(!persistent)
                        .set_manual_acks(true)
                        .set_keep_alive(keep_alive)
                        .set_request_channel_capacity(capacity)
                        .set_max_request_batch(ACK_BATCH)
                        .set_max_packet_size(MAX_PACKET as usize, 64 * 1024);
                    if let Some((user, password)) = &credentials {
                        o.set_credentials(user.clone(), password.clone());
                    }
                    if let Some(t) = &transport {
                        o.set_transport(t.clone());
                    }
                    (broker, o)
                })
                .collect();
            let brokers = Ring::new(options, link).ok_or_else(no_broker)?;
            let first = brokers.current().1.clone();
            let (client, eventloop) = rumqttc::AsyncClient::new(first, capacity);
            (
                Client::V311(client),
                Inner::V311 {
                    eventloop: Box::new(eventloop),
                    brokers,
                },
            )
        }
    };
    Ok((
        client,
        EventLoop {
            inner,
            linger: Duration::from_millis(mqtt.read_linger_ms),
            drained: false,
        },
    ))
}

fn no_broker() -> ConfigError {
    ConfigError::Invalid {
        key: "mqtt.hosts".to_owned(),
        message: "needs at least one broker".into(),
    }
}

/// How many queued acks the event loop writes with one flush (the patch in
/// vendor/rumqttc): a PUBACK is 4 bytes, so a full batch is one 1 KB write
/// where upstream makes 256 `writev` calls, and the broker reads them in one
/// go too.
const ACK_BATCH: usize = 256;

/// The most packets rumqttc's `Network::readb` takes from the socket per
/// poll (its `max_readb_count` is 10, counted from 1). A read that returns
/// fewer stopped because the socket had nothing more.
const READ_BATCH: usize = 9;

/// Largest packet accepted: CO2 payloads are bounded by the decoder; other routes
/// (camera snapshots) need megabytes.
const MAX_PACKET: u32 = 16 * 1024 * 1024;

impl EventLoop {
    /// The broker node in use.
    pub fn broker(&self) -> &Endpoint {
        match &self.inner {
            Inner::V5 { brokers, .. } => &brokers.current().0,
            Inner::V311 { brokers, .. } => &brokers.current().0,
        }
    }

    /// Points the next reconnect at the next broker node and returns it;
    /// `None` with a single broker (reconnecting to it is all there is).
    pub fn fail_over(&mut self) -> Option<&Endpoint> {
        match &mut self.inner {
            Inner::V5 { eventloop, brokers } if brokers.len() > 1 => {
                let (broker, options) = brokers.advance();
                eventloop.options = options.clone();
                Some(broker)
            }
            Inner::V311 { eventloop, brokers } if brokers.len() > 1 => {
                let (broker, options) = brokers.advance();
                eventloop.mqtt_options = options.clone();
                Some(broker)
            }
            _ => None,
        }
    }

    /// The keep-alive interval agreed for the connection.
    pub fn keep_alive(&self) -> Duration {
        match &self.inner {
            Inner::V5 { eventloop, .. } => eventloop.options.keep_alive(),
            Inner::V311 { eventloop, .. } => eventloop.mqtt_options.keep_alive(),
        }
    }

    /// Polls once. Not cancel safe: never race it in a `select!`.
    pub async fn poll(&mut self) -> Result<MqttEvent, MqttError> {
        // rumqttc's poll future is about 2.7 KB and was copied several times
        // per event on its way into the caller's future, although most polls
        // only hand out an event that an earlier socket read already decoded
        // (one read yields up to ten packets, each with its outgoing ack).
        // Those are taken here without building it; the rest poll it boxed,
        // so that what callers hold and move stays small.
        if let Some(event) = self.buffered() {
            return Ok(event);
        }
        // A bridge that keeps up would otherwise wake, and make a read call,
        // for every few messages as they arrive (one per 7 readings in the
        // burst benchmark; BENCHMARKS.md, "Bridge CPU per reading": waking
        // less nearly halved the CPU per reading). After a read that emptied
        // the socket it waits a moment, so that the next read brings what
        // arrived meanwhile. Acks queued meanwhile wait too, and then leave
        // in one write. While the broker sends faster than the bridge reads,
        // no read empties the socket and nothing waits.
        if std::mem::take(&mut self.drained) && !self.linger.is_zero() {
            tokio::time::sleep(self.linger).await;
        }
        let polled = Box::pin(self.poll_network()).await;
        match &polled {
            Ok(MqttEvent::Publish { .. }) => self.drained = self.buffered_len() + 1 < READ_BATCH,
            Ok(_) => {}
            Err(_) => self.drop_buffered(),
        }
        polled
    }

    fn buffered_len(&self) -> usize {
        match &self.inner {
            Inner::V5 { eventloop, .. } => eventloop.state.events.len(),
            Inner::V311 { eventloop, .. } => eventloop.state.events.len(),
        }
    }

    /// An event decoded by an earlier read, as rumqttc's own poll would
    /// return it first.
    fn buffered(&mut self) -> Option<MqttEvent> {
        match &mut self.inner {
            Inner::V5 { eventloop, .. } => eventloop.state.events.pop_front().map(v5_event),
            Inner::V311 { eventloop, .. } => eventloop.state.events.pop_front().map(v311_event),
        }
    }

    /// Forgets what the lost connection had decoded but not yet handed out.
    /// rumqttc would return it after the next CONNACK, as if it had come on
    /// the new connection; the broker redelivers the unacknowledged messages
    /// there itself, and an ack for an old packet id could confirm one of
    /// the redeliveries before it is stored.
    fn drop_buffered(&mut self) {
        match &mut self.inner {
            Inner::V5 { eventloop, .. } => eventloop.state.events.clear(),
            Inner::V311 { eventloop, .. } => eventloop.state.events.clear(),
        }
    }

    async fn poll_network(&mut self) -> Result<MqttEvent, MqttError> {
        match &mut self.inner {
            Inner::V5 { eventloop, .. } => eventloop.poll().await.map(v5_event).map_err(v5_error),
            Inner::V311 { eventloop, .. } => {
                eventloop.poll().await.map(v311_event).map_err(v311_error)
            }
        }
    }
}

fn v5_event(event: rumqttc::v5::Event) -> MqttEvent {
    use rumqttc::v5::Event;
    match event {
        Event::Incoming(v5p::Packet::ConnAck(ack)) => MqttEvent::Connected {
            session_present: ack.session_present,
        },
        Event::Incoming(v5p::Packet::Publish(p)) => MqttEvent::Publish {
            ack: AckHandle {
                pkid: p.pkid,
                needs_ack: p.qos != QoS5::AtMostOnce,
            },
            seq: p.properties.as_ref().and_then(seq_of),
            topic: p.topic,
            payload: p.payload,
        },
        Event::Incoming(v5p::Packet::SubAck(ack)) => MqttEvent::Subscribed(
            ack.return_codes
                .iter()
                .map(|c| matches!(c, v5p::SubscribeReasonCode::Success(_)))
                .collect(),
        ),
        Event::Incoming(v5p::Packet::Disconnect(d)) => {
            MqttEvent::ServerDisconnect(format!("{:?}", d.reason_code))
        }
        Event::Outgoing(rumqttc::Outgoing::Disconnect) => MqttEvent::ClientDisconnected,
        _ => MqttEvent::Other,
    }
}

/// The `co2-seq` user property, if present and well formed; anything else
/// leaves the reading unnumbered (it is still a reading).
fn seq_of(properties: &v5p::PublishProperties) -> Option<Seq> {
    properties
        .user_properties
        .iter()
        .find(|(key, _)| key == SEQ_PROPERTY)
        .and_then(|(_, value)| value.parse().ok())
}

fn v311_event(event: rumqttc::Event) -> MqttEvent {
    use rumqttc::{Event, Packet};
    match event {
        Event::Incoming(Packet::ConnAck(ack)) => MqttEvent::Connected {
            session_present: ack.session_present,
        },
        Event::Incoming(Packet::Publish(p)) => MqttEvent::Publish {
            ack: AckHandle {
                pkid: p.pkid,
                needs_ack: p.qos != rumqttc::QoS::AtMostOnce,
            },
            topic: Bytes::from(p.topic.into_bytes()),
            payload: p.payload,
            // MQTT 3.1.1 has no properties: readings arrive unnumbered.
            seq: None,
        },
        Event::Incoming(Packet::SubAck(ack)) => MqttEvent::Subscribed(
            ack.return_codes
                .iter()
                .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                .collect(),
        ),
        Event::Outgoing(rumqttc::Outgoing::Disconnect) => MqttEvent::ClientDisconnected,
        _ => MqttEvent::Other,
    }
}

const HINT_AUTH: &str =
    "check mqtt.username and mqtt.password_file, and the broker's password file";
const HINT_REACH: &str =
    "is the broker running and reachable at mqtt.host:mqtt.port (or mqtt.hosts)?";
const HINT_TLS: &str = "check mqtt.tls.ca_file and that the broker's certificate names mqtt.host";

fn v5_error(error: rumqttc::v5::ConnectionError) -> MqttError {
    use rumqttc::v5::ConnectionError as E;
    let hint = match &error {
        E::ConnectionRefused(
            v5p::ConnectReturnCode::BadUserNamePassword | v5p::ConnectReturnCode::NotAuthorized,
        ) => HINT_AUTH,
        E::ConnectionRefused(
            v5p::ConnectReturnCode::UnsupportedProtocolVersion
            | v5p::ConnectReturnCode::RefusedProtocolVersion,
        ) => "the broker does not speak MQTT 5; set mqtt.protocol = \"v311\"",
        E::ConnectionRefused(_) => "the broker refused the connection",
        E::Io(_) | E::Timeout(_) => HINT_REACH,
        E::Tls(_) => HINT_TLS,
        _ => "reconnecting",
    };
    MqttError {
        message: error.to_string(),
        hint,
    }
}

fn v311_error(error: rumqttc::ConnectionError) -> MqttError {
    use rumqttc::ConnectionError as E;
    let hint = match &error {
        E::ConnectionRefused(
            rumqttc::ConnectReturnCode::BadUserNamePassword
            | rumqttc::ConnectReturnCode::NotAuthorized,
        ) => HINT_AUTH,
        E::ConnectionRefused(_) => "the broker refused the connection",
        E::Io(_) | E::NetworkTimeout | E::FlushTimeout => HINT_REACH,
        E::Tls(_) => HINT_TLS,
        _ => "reconnecting",
    };
    MqttError {
        message: error.to_string(),
        hint,
    }
}

impl Client {
    /// Subscribes to `filters` at QoS 1 without waiting (falls back to a task
    /// when the request channel is full).
    pub fn subscribe(&self, filters: &[String]) {
        match self {
            Client::V5(c) => {
                let f: Vec<v5p::Filter> = filters
                    .iter()
                    .map(|t| v5p::Filter::new(t.clone(), QoS5::AtLeastOnce))
                    .collect();
                if c.try_subscribe_many(f.clone()).is_err() {
                    let c = c.clone();
                    tokio::spawn(async move { c.subscribe_many(f).await });
                }
            }
            Client::V311(c) => {
                let f: Vec<rumqttc::SubscribeFilter> = filters
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), rumqttc::QoS::AtLeastOnce))
                    .collect();
                if c.try_subscribe_many(f.clone()).is_err() {
                    let c = c.clone();
                    tokio::spawn(async move { c.subscribe_many(f).await });
                }
            }
        }
    }

    /// Unsubscribes from `topic` without waiting (falls back to a task when
    /// the request channel is full).
    pub fn unsubscribe(&self, topic: &str) {
        match self {
            Client::V5(c) => {
                if c.try_unsubscribe(topic).is_err() {
                    let (c, t) = (c.clone(), topic.to_owned());
                    tokio::spawn(async move { c.unsubscribe(t).await });
                }
            }
            Client::V311(c) => {
                if c.try_unsubscribe(topic).is_err() {
                    let (c, t) = (c.clone(), topic.to_owned());
                    tokio::spawn(async move { c.unsubscribe(t).await });
                }
            }
        }
    }

    /// Queues a PUBACK; false when the event loop is gone.
    pub async fn ack(&self, handle: &AckHandle) -> bool {
        if !handle.needs_ack {
            return true;
        }
        // rumqttc acks by `&Publish` but reads only its packet id and QoS.
        match self {
            Client::V5(c) => {
                let mut p = v5p::Publish::new("", QoS5::AtLeastOnce, Bytes::new(), None);
                p.pkid = handle.pkid;
                c.ack(&p).await.is_ok()
            }
            Client::V311(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = handle.pkid;
                c.ack(&p).await.is_ok()
            }
        }
    }

    /// Queues DISCONNECT behind everything already queued, waiting for room
    /// while the event loop works through the acks ahead of it.
    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V5(c) => c.disconnect().await.is_ok(),
            Client::V311(c) => c.disconnect().await.is_ok(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use co2_testkit::{unique, Broker, Publisher};

    const MESSAGES: usize = 400;

    fn voluntary_switches_of_this_thread() -> u64 {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }

    /// Receives `MESSAGES` published about one per millisecond by another
    /// thread, with `linger_ms`; returns how often the polling thread blocked
    /// (in `epoll_wait` for the socket, or asleep in the linger).
    fn blocks_while_receiving(linger_ms: u64) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let broker = Broker::start("max_inflight_messages 1000").await.unwrap();
            let port = broker.port();
            let topic = unique("linger");
            let env = [
                ("CO2_BRIDGE__MQTT__PORT", port.to_string()),
                ("CO2_BRIDGE__MQTT__TOPICS", topic.clone()),
                ("CO2_BRIDGE__MQTT__CLIENT_ID", unique("linger-sub")),
                ("CO2_BRIDGE__MQTT__READ_LINGER_MS", linger_ms.to_string()),
            ];
            let env: Vec<_> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let settings = Settings::load_from(None, env).unwrap();
            let (client, mut eventloop) = connect(&settings, 0, None).unwrap();
            client.subscribe(&settings.mqtt.topics);
            while !matches!(eventloop.poll().await, Ok(MqttEvent::Subscribed(_))) {}

            let publishing = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let publisher = Publisher::connect(port, &unique("linger-pub"));
                    for i in 0..MESSAGES {
                        publisher.publish(&topic, i.to_string()).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    assert!(
                        publisher
                            .wait_acked(MESSAGES as u64, Duration::from_secs(30))
                            .await
                    );
                });
            });

            let before = voluntary_switches_of_this_thread();
            let mut received = Vec::with_capacity(MESSAGES);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while received.len() < MESSAGES {
                assert!(tokio::time::Instant::now() < deadline, "{received:?}");
                if let MqttEvent::Publish { payload, ack, .. } = eventloop.poll().await.unwrap() {
                    received.push(String::from_utf8(payload.to_vec()).unwrap());
                    assert!(client.ack(&ack).await);
                }
            }
            let blocked = voluntary_switches_of_this_thread() - before;
            let sent: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
            assert_eq!(received, sent, "every message, in order");
            publishing.join().unwrap();
            blocked
        })
    }

    /// Without the linger, a receiver that keeps up blocks for about every
    /// message of a trickle (seen here: 400 messages, about 400 blocks on a
    /// quiet machine, fewer when the machine is busy and messages bunch up).
    /// With it, a read brings what arrived during the wait.
    #[test]
    fn a_trickle_is_read_in_groups_with_the_linger() {
        let with = blocks_while_receiving(20);
        let without = blocks_while_receiving(0);
        eprintln!("{MESSAGES} messages, one a millisecond: blocked {with} times with a 20 ms linger, {without} without");
        assert!(
            with * 3 < MESSAGES as u64,
            "with a 20 ms linger the receiver should block about once per 20 messages: {with} blocks for {MESSAGES} (without: {without})"
        );
    }
}
