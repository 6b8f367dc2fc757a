//! The MQTT connection seen by the uplink: a [`Link`] trait, and its rumqttc impl.
//!
//! Each connection gets a fresh rumqttc client and event loop, driven by its
//! own task that forwards events over a channel. Why:
//! - the event loop is never cancelled mid-write by the uplink's `select!`
//!   (a cancelled write could lose a packet rumqttc already counts in flight);
//! - a new connection starts with an empty request channel, so no publish
//!   requested for an old connection can be sent on the new one and be
//!   mistaken for a new publish when its packet id comes back;
//! - the uplink's queue I/O never holds up pings.
//!
//! MQTT v5 (the default) carries a reading's number in the `co2-seq` user
//! property, so the payload stays the two-field `datetime|emissions` that old
//! bridges and third-party subscribers parse; v3.1.1 (`mqtt.protocol =
//! "v311"`, for brokers such as NATS) has no properties, so readings go
//! unnumbered there.

use std::future::Future;
use std::time::Duration;

use co2_wire::endpoint::{Endpoint, Ring};
use co2_wire::{Seq, SEQ_PROPERTY};
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use rumqttc::{Event, Incoming, MqttOptions, Outgoing, QoS, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Protocol, Settings};

/// What happened on the connection, reduced to what the uplink needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection (CONNACK).
    Connected,
    /// A requested publish went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id (PUBACK), and whether a
    /// subscription covered its topic as far as the PUBACK says.
    Acked(u16, Matched),
    /// The broker answered this packet id with a PUBACK that refuses the
    /// message (MQTT v5 reason code >= 0x80), for the reason given.
    Refused(u16, String),
    /// A message arrived on this topic (only after [`RumqttLink::subscribe`],
    /// which only `co2-publisher doctor` calls).
    Received(String),
    /// The DISCONNECT packet went out.
    Disconnected,
    /// Anything else (pings...).
    Other,
}

/// Whether a message the broker acknowledged matched a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// A subscription covers its topic (MQTT v5 PUBACK reason 0).
    Yes,
    /// No client subscribes to its topic, so the broker discarded it
    /// (MQTT v5 reason 0x10).
    No,
    /// The PUBACK does not say (MQTT 3.1.1).
    Unknown,
}

/// What travels with a payload besides its topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// The reading's number: the `co2-seq` user property (MQTT v5 only).
    pub seq: Option<Seq>,
    /// The payload is JSON (device events): content type `application/json` (v5 only).
    pub json: bool,
}

/// The connection failed or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

/// An MQTT connection the uplink can drive; fakes implement it in tests.
pub trait Link: Send {
    /// The next event. Cancel-safe: dropping the future loses nothing.
    fn poll(&mut self) -> impl Future<Output = Result<LinkEvent, LinkError>> + Send;
    /// Queues a QoS 1 publish without waiting; a [`LinkEvent::Sent`] follows.
    fn publish(&mut self, topic: &str, payload: Vec<u8>, meta: Meta) -> Result<(), LinkError>;
    /// Drops the current connection and starts a new attempt; events of the
    /// old one are never reported again.
    fn reconnect(&mut self);
    /// Queues a DISCONNECT; a [`LinkEvent::Disconnected`] follows.
    fn disconnect(&mut self) -> Result<(), LinkError>;
}

/// Largest packet sent: a reading is ~40 bytes, an event at most
/// `co2_wire::MAX_EVENT_BYTES`, plus topic and properties.
const MAX_PACKET: usize = co2_wire::MAX_EVENT_BYTES + 4096;

/// The client options of either MQTT version, one per broker node.
#[derive(Clone)]
pub struct LinkOptions {
    /// Publishes awaiting PUBACK at most (sizes the request channel).
    window: u16,
    /// The broker nodes with their options, and the one the next connection goes to.
    brokers: Ring<(Endpoint, Versioned)>,
}

#[derive(Clone)]
enum Versioned {
    V5(Box<rumqttc::v5::MqttOptions>),
    V311(Box<MqttOptions>),
}

/// Builds the client options for `settings` (reads TLS files, so call it at start).
pub fn mqtt_options(settings: &Settings) -> Result<LinkOptions, LinkError> {
    let m = &settings.mqtt;
    let transport = match &m.tls {
        Some(tls) => {
            let read = |key: &str, path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| LinkError(format!("{key}: {}: {e}", path.display())))
            };
            let ca = read("mqtt.tls.ca_file", &tls.ca_file)?;
            let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(cert), Some(key)) => Some((
                    read("mqtt.tls.client_cert_file", cert)?,
                    read("mqtt.tls.client_key_file", key)?,
                )),
                _ => None,
            };
            Some(Transport::tls(ca, client_auth, None))
        }
        None => None,
    };
    let credentials = m.username.as_ref().map(|user| {
        (
            user.clone(),
            settings.password().unwrap_or_default().to_owned(),
        )
    });
    let keep_alive = Duration::from_secs(m.keep_alive_s);
    let endpoints = settings
        .mqtt_endpoints()
        .map_err(|e| LinkError(e.to_string()))?;
    let node = |broker: &Endpoint| match m.protocol {
        Protocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(
                settings.client_id(),
                broker.host.clone(),
                broker.port,
            );
            // A clean start: whatever was in flight is republished from the queue.
            o.set_clean_start(true)
                .set_keep_alive(keep_alive)
                .set_outgoing_inflight_upper_limit(m.max_inflight)
                .set_max_packet_size(Some(MAX_PACKET as u32));
            if let Some((user, password)) = &credentials {
                o.set_credentials(user.clone(), password.clone());
            }
            if let Some(t) = &transport {
                o.set_transport(t.clone());
            }
            Versioned::V5(Box::new(o))
        }
        Protocol::V311 => {
            let mut o = MqttOptions::new(settings.client_id(), broker.host.clone(), broker.port);
            o.set_keep_alive(keep_alive)
                // A clean session: whatever was in flight is republished from the queue.
                .set_clean_session(true)
                .set_inflight(m.max_inflight)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET);
            if let Some((user, password)) = &credentials {
                o.set_credentials(user.clone(), password.clone());
            }
            if let Some(t) = &transport {
                o.set_transport(t.clone());
            }
            Versioned::V311(Box::new(o))
        }
    };
    let nodes = endpoints
        .into_iter()
        .map(|broker| {
            let options = node(&broker);
            (broker, options)
        })
        .collect();
    let brokers = Ring::new(nodes, 0).ok_or_else(|| LinkError("mqtt.hosts: no broker".into()))?;
    Ok(LinkOptions {
        window: m.max_inflight,
        brokers,
    })
}

/// The request side of either client.
enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// [`Link`] over rumqttc.
pub struct RumqttLink {
    options: LinkOptions,
    client: Client,
    events: mpsc::Receiver<Result<LinkEvent, LinkError>>,
    pump: JoinHandle<()>,
}

impl RumqttLink {
    /// Starts the first connection attempt. Needs a Tokio runtime.
    pub fn start(options: LinkOptions) -> Self {
        let (client, events, pump) = Self::spawn(&options);
        Self {
            options,
            client,
            events,
            pump,
        }
    }

    fn spawn(
        options: &LinkOptions,
    ) -> (
        Client,
        mpsc::Receiver<Result<LinkEvent, LinkError>>,
        JoinHandle<()>,
    ) {
        // Request channel: the window plus room for a DISCONNECT, so
        // `try_publish` within the window never finds it full.
        let cap = usize::from(options.window) + 8;
        let (tx, rx) = mpsc::channel(1024);
        match options.brokers.current().1.clone() {
            Versioned::V5(o) => {
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(*o, cap);
                (Client::V5(client), rx, tokio::spawn(pump_v5(eventloop, tx)))
            }
            Versioned::V311(o) => {
                let (client, eventloop) = rumqttc::AsyncClient::new(*o, cap);
                (
                    Client::V311(client),
                    rx,
                    tokio::spawn(pump_v311(eventloop, tx)),
                )
            }
        }
    }
}

/// Forwards `event`; false when this connection is over (failed, or the uplink is gone).
async fn forward(
    tx: &mpsc::Sender<Result<LinkEvent, LinkError>>,
    event: Result<LinkEvent, LinkError>,
) -> bool {
    let failed = event.is_err();
    tx.send(event).await.is_ok() && !failed
}

/// Polls one v3.1.1 connection until it fails, forwarding events.
async fn pump_v311(
    mut eventloop: rumqttc::EventLoop,
    tx: mpsc::Sender<Result<LinkEvent, LinkError>>,
) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => Ok(LinkEvent::Connected),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                Ok(LinkEvent::Acked(ack.pkid, Matched::Unknown))
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => Ok(LinkEvent::Received(p.topic)),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(LinkEvent::Disconnected),
            Ok(_) => continue,
            Err(e) => Err(LinkError(e.to_string())),
        };
        if !forward(&tx, event).await {
            return;
        }
    }
}

/// Polls one v5 connection until it fails, forwarding events.
async fn pump_v5(
    mut eventloop: rumqttc::v5::EventLoop,
    tx: mpsc::Sender<Result<LinkEvent, LinkError>>,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::Event as Event5;
    let mut connected = false;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event5::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                Ok(LinkEvent::Connected)
            }
            Ok(Event5::Incoming(Packet::PubAck(ack))) => Ok(match ack.reason {
                PubAckReason::Success => LinkEvent::Acked(ack.pkid, Matched::Yes),
                PubAckReason::NoMatchingSubscribers => LinkEvent::Acked(ack.pkid, Matched::No),
                reason => LinkEvent::Refused(ack.pkid, format!("{reason:?}")),
            }),
            Ok(Event5::Incoming(Packet::Publish(p))) => Ok(LinkEvent::Received(
                String::from_utf8_lossy(&p.topic).into_owned(),
            )),
            Ok(Event5::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
            Ok(Event5::Outgoing(Outgoing::Disconnect)) => Ok(LinkEvent::Disconnected),
            Ok(_) => continue,
            Err(e) if !connected && reached_the_broker(&e) => Err(LinkError(format!(
                "{e} (if the broker speaks only MQTT 3.1.1, e.g. NATS, set mqtt.protocol = \"v311\")"
            ))),
            Err(e) => Err(LinkError(e.to_string())),
        };
        if !forward(&tx, event).await {
            return;
        }
    }
}

/// Whether a v5 connection failed after a broker answered (a refusal, a
/// garbled or missing CONNACK, a closed socket), where a v3.1.1-only broker
/// is a likely cause; not when nothing listened or the network failed, nor
/// when the TLS handshake failed or a v5 CONNACK refused the login (those
/// say what is wrong, and it is not the protocol version).
fn reached_the_broker(e: &rumqttc::v5::ConnectionError) -> bool {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
    use std::io::ErrorKind;
    match e {
        rumqttc::v5::ConnectionError::Tls(_)
        | rumqttc::v5::ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => false,
        rumqttc::v5::ConnectionError::Io(io) => !matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::NotFound
                | ErrorKind::TimedOut
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::AddrNotAvailable
        ),
        rumqttc::v5::ConnectionError::Timeout(_) => false,
        _ => true,
    }
}

impl RumqttLink {
    /// Subscribes (QoS 1) to `filter`; what arrives comes as [`LinkEvent::Received`].
    pub fn subscribe(&mut self, filter: &str) -> Result<(), LinkError> {
        match &self.client {
            Client::V5(c) => c
                .try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| LinkError(e.to_string())),
            Client::V311(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| LinkError(e.to_string())),
        }
    }
}

impl Link for RumqttLink {
    async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self.events.recv().await {
            Some(event) => event,
            None => Err(LinkError("connection closed".into())),
        }
    }

    fn publish(&mut self, topic: &str, payload: Vec<u8>, meta: Meta) -> Result<(), LinkError> {
        let err = |e: &dyn std::fmt::Display| LinkError(e.to_string());
        match &self.client {
            Client::V5(c) => {
                let properties = PublishProperties {
                    user_properties: meta
                        .seq
                        .map(|s| vec![(SEQ_PROPERTY.to_owned(), s.to_string())])
                        .unwrap_or_default(),
                    content_type: meta.json.then(|| "application/json".to_owned()),
                    ..PublishProperties::default()
                };
                c.try_publish_with_properties(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                    properties,
                )
                .map_err(|e| err(&e))
            }
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| err(&e)),
        }
    }

    fn reconnect(&mut self) {
        self.pump.abort();
        // A cluster: each new attempt goes to the next node, so a dead node
        // costs one failed attempt; the publisher republishes what was in
        // flight from its queue, so nothing depends on the old node's session.
        if self.options.brokers.len() > 1 {
            let from = self.options.brokers.current().0.to_string();
            let to = self.options.brokers.advance().0.to_string();
            tracing::info!(from, to, "Trying the next broker node");
        }
        let (client, events, pump) = Self::spawn(&self.options);
        self.client = client;
        self.events = events;
        self.pump = pump;
    }

    fn disconnect(&mut self) -> Result<(), LinkError> {
        match &self.client {
            Client::V5(c) => c.try_disconnect().map_err(|e| LinkError(e.to_string())),
            Client::V311(c) => c.try_disconnect().map_err(|e| LinkError(e.to_string())),
        }
    }
}

impl Drop for RumqttLink {
    fn drop(&mut self) {
        self.pump.abort();
    }
}
