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

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Settings;

/// What happened on the connection, reduced to what the uplink needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection (CONNACK).
    Connected,
    /// A requested publish went out with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id (PUBACK).
    Acked(u16),
    /// The DISCONNECT packet went out.
    Disconnected,
    /// Anything else (pings...).
    Other,
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
    fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), LinkError>;
    /// Drops the current connection and starts a new attempt; events of the
    /// old one are never reported again.
    fn reconnect(&mut self);
    /// Queues a DISCONNECT; a [`LinkEvent::Disconnected`] follows.
    fn disconnect(&mut self) -> Result<(), LinkError>;
}

/// Builds the rumqttc options for `settings` (reads TLS files, so call it at start).
pub fn mqtt_options(settings: &Settings) -> Result<MqttOptions, LinkError> {
    let m = &settings.mqtt;
    let mut options = MqttOptions::new(settings.client_id(), m.host.clone(), m.port);
    options
        .set_keep_alive(Duration::from_secs(m.keep_alive_s))
        // A clean session: whatever was in flight is republished from the queue.
        .set_clean_session(true)
        .set_inflight(m.max_inflight)
        .set_max_packet_size(4096, 4096);
    if let Some(user) = &m.username {
        options.set_credentials(user.clone(), settings.password().unwrap_or_default());
    }
    if let Some(tls) = &m.tls {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| LinkError(format!("{key}: {}: {e}", path.display())))
        };
        let ca = read("mqtt.tls.ca_file", &tls.ca_file)?;
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => Some((
                read("mqtt.tls.client_cert_file", cert)?,
                read("mqtt.tls.client_key_file", key)?,
            )),
            _ => None,
        };
        options.set_transport(Transport::tls(ca, client_auth, None));
    }
    Ok(options)
}

/// [`Link`] over rumqttc.
pub struct RumqttLink {
    options: MqttOptions,
    client: AsyncClient,
    events: mpsc::Receiver<Result<LinkEvent, LinkError>>,
    pump: JoinHandle<()>,
}

impl RumqttLink {
    /// Starts the first connection attempt. Needs a Tokio runtime.
    pub fn start(options: MqttOptions) -> Self {
        let (client, events, pump) = Self::spawn(options.clone());
        Self {
            options,
            client,
            events,
            pump,
        }
    }

    fn spawn(
        options: MqttOptions,
    ) -> (
        AsyncClient,
        mpsc::Receiver<Result<LinkEvent, LinkError>>,
        JoinHandle<()>,
    ) {
        // Request channel: the window plus room for a DISCONNECT, so
        // `try_publish` within the window never finds it full.
        let cap = usize::from(options.inflight()) + 8;
        let (client, eventloop) = AsyncClient::new(options, cap);
        let (tx, rx) = mpsc::channel(1024);
        let pump = tokio::spawn(pump(eventloop, tx));
        (client, rx, pump)
    }
}

/// Polls one connection until it fails, forwarding events.
async fn pump(mut eventloop: EventLoop, tx: mpsc::Sender<Result<LinkEvent, LinkError>>) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => Ok(LinkEvent::Connected),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => Ok(LinkEvent::Acked(ack.pkid)),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(LinkEvent::Disconnected),
            Ok(_) => continue,
            Err(e) => Err(LinkError(e.to_string())),
        };
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            // The uplink is gone, or this connection is: a new one gets a new pump.
            return;
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

    fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), LinkError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| LinkError(e.to_string()))
    }

    fn reconnect(&mut self) {
        self.pump.abort();
        let (client, events, pump) = Self::spawn(self.options.clone());
        self.client = client;
        self.events = events;
        self.pump = pump;
    }

    fn disconnect(&mut self) -> Result<(), LinkError> {
        self.client
            .try_disconnect()
            .map_err(|e| LinkError(e.to_string()))
    }
}

impl Drop for RumqttLink {
    fn drop(&mut self) {
        self.pump.abort();
    }
}
