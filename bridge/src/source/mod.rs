//! Sources: where deliveries come from, and how each is acknowledged once it
//! is durable. MQTT (PUBACK, in arrival order, on the connection it came in
//! on) and HTTP ingest (the response) today. A source hands the pipeline
//! [`Delivery`]s; the pipeline hands back their [`Ack`]s, in arrival order,
//! once the batch is stored.

pub(crate) mod http;
pub(crate) mod mqtt;

use bytes::Bytes;
use co2_wire::DeviceId;
use tokio::sync::oneshot;

use crate::pipeline::Reason;
use crate::route::RouteId;

/// Where a delivery came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An MQTT topic, as the broker sent it: kept as bytes that share the
    /// packet's buffer, since deliveries wait in the pipeline by the thousand.
    Mqtt(Bytes),
    /// `POST /ingest/<route>` by an authenticated device.
    Http {
        /// The route the request named.
        route: RouteId,
        /// The device the bearer token belongs to.
        device: DeviceId,
    },
}

/// One message taken in, not yet acknowledged.
#[derive(Debug)]
pub struct Delivery {
    /// Where it came from.
    pub origin: Origin,
    /// The payload as received.
    pub payload: Bytes,
    /// What acknowledges it once it is stored.
    pub ack: Ack,
}

/// What acknowledges one delivery, by source.
#[derive(Debug)]
pub enum Ack {
    /// A PUBACK.
    Mqtt(mqtt::AckToken),
    /// An HTTP request waiting for its answer.
    Http(oneshot::Sender<HttpOutcome>),
}

/// The answer to an HTTP ingest request, sent once its batch is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// Stored.
    Stored,
    /// Stored as a dead letter, for this reason.
    Rejected(Reason),
    /// Not written (shutdown while the store failed); try again.
    NotStored,
}

impl Ack {
    /// Tells the source its message was not written: MQTT leaves it
    /// unacknowledged (the broker redelivers), HTTP answers "retry".
    pub fn abandon(self) {
        if let Self::Http(reply) = self {
            let _ = reply.send(HttpOutcome::NotStored);
        }
    }
}

/// How a run of acknowledgements was handed over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AckReport {
    /// Queued for the broker (MQTT) or answered (HTTP).
    pub sent: usize,
    /// Not queued: the source is gone (at exit); it redelivers those messages.
    pub dropped: usize,
}

/// Acknowledges stored deliveries, each through its own source.
pub struct Acker {
    mqtt: mqtt::Acker,
}

impl Acker {
    /// An acker over the MQTT connections' forwarders.
    pub fn new(mqtt: mqtt::Acker) -> Self {
        Self { mqtt }
    }

    /// Acknowledges stored messages in arrival order; each comes with the
    /// reason it was dead-lettered, if it was (HTTP callers are told).
    pub fn ack(&self, acks: impl IntoIterator<Item = (Ack, Option<Reason>)>) -> AckReport {
        let mut report = AckReport::default();
        for (ack, rejected) in acks {
            let sent = match ack {
                Ack::Mqtt(token) => self.mqtt.ack(token),
                Ack::Http(reply) => {
                    let outcome = rejected.map_or(HttpOutcome::Stored, HttpOutcome::Rejected);
                    // The caller may have hung up; the data is stored either way.
                    let _ = reply.send(outcome);
                    true
                }
            };
            if sent {
                report.sent += 1;
            } else {
                report.dropped += 1;
            }
        }
        report
    }
}
