//! Sources: where deliveries come from, and how each is acknowledged once it
//! is durable. MQTT (PUBACK, in arrival order, on the connection it came in
//! on), Kafka (an offset commit per partition) and HTTP ingest (the response). A source hands the pipeline
//! [`Delivery`]s; the pipeline hands back their [`Ack`]s, in arrival order,
//! once the batch is stored.

pub(crate) mod budget;
pub(crate) mod certificate;
pub(crate) mod handoff;
pub(crate) mod http;
pub mod kafka;
pub(crate) mod mqtt;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use co2_wire::Seq;
use tokio::sync::oneshot;

use crate::model::{Origin, Reason};

/// One message taken in, not yet acknowledged.
#[derive(Debug)]
pub struct Delivery {
    /// Where it came from.
    pub origin: Origin,
    /// The payload as received.
    pub payload: Bytes,
    /// The reading's number at its source, when the source numbers readings.
    pub seq: Option<Seq>,
    /// What acknowledges it once it is stored.
    pub ack: Ack,
    /// Its bytes, held against the budget until it is acknowledged.
    pub held: budget::Held,
}

/// What acknowledges one delivery, by source.
#[derive(Debug)]
pub enum Ack {
    /// A PUBACK.
    Mqtt(mqtt::AckToken),
    /// A Kafka offset, committed once it and every offset before it are durable.
    Kafka(kafka::AckToken),
    /// An HTTP request waiting for its answer.
    Http(HttpReply),
}

/// Where the answer to a waiting HTTP ingest request goes.
///
/// The request and the commit task race for the message: the commit task
/// claims it just before writing; a request that gives up first (its
/// deadline passed) takes it back, and it is not written at all. So a 503
/// saying "not stored" is never followed by a commit of that message.
#[derive(Debug)]
pub struct HttpReply {
    answer: oneshot::Sender<HttpOutcome>,
    state: Arc<AtomicU8>,
}

/// The waiting request's side of an [`HttpReply`].
#[derive(Debug)]
pub struct HttpWait {
    /// The answer, once the batch is settled.
    pub answer: oneshot::Receiver<HttpOutcome>,
    state: Arc<AtomicU8>,
}

const WAITING: u8 = 0;
const CLAIMED: u8 = 1;
const GIVEN_UP: u8 = 2;

impl HttpReply {
    /// A reply and the request's side of it.
    pub fn new() -> (Self, HttpWait) {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        (
            Self {
                answer: tx,
                state: state.clone(),
            },
            HttpWait { answer: rx, state },
        )
    }

    /// Claims the message for writing; false if its request gave up, in which
    /// case it must not be written.
    pub fn claim(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == CLAIMED,
        }
    }

    /// Answers the request (also for the HTTP listeners without sockets).
    pub(crate) fn send(self, outcome: HttpOutcome) {
        // The caller may have hung up; the data is stored either way.
        let _ = self.answer.send(outcome);
    }
}

impl HttpWait {
    /// Gives up waiting: true if the message was not claimed yet and now never
    /// will be; false if it is being (or was) written.
    pub fn give_up(&self) -> bool {
        self.state
            .compare_exchange(WAITING, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
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
    /// Tells the source its message was not written: MQTT and Kafka leave it
    /// unacknowledged (uncommitted; delivered again), HTTP answers "retry".
    pub fn abandon(self) {
        if let Self::Http(reply) = self {
            reply.send(HttpOutcome::NotStored);
        }
    }

    /// False for an HTTP request that has given up waiting: its message must
    /// not be written (see [`HttpReply`]). Claims the others for writing.
    pub fn claim(&self) -> bool {
        match self {
            Self::Mqtt(_) | Self::Kafka(_) => true,
            Self::Http(reply) => reply.claim(),
        }
    }
}

/// How a run of acknowledgements was handed over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AckReport {
    /// Queued for the broker (MQTT), marked for commit (Kafka) or answered (HTTP).
    pub sent: usize,
    /// Not queued: the source is gone (at exit) or, for Kafka, the partition
    /// was reassigned; those messages are delivered again.
    pub dropped: usize,
}

/// Acknowledges stored deliveries, each through its own source.
pub struct Acker {
    mqtt: mqtt::Acker,
    kafka: kafka::Acker,
}

impl Acker {
    /// An acker over the MQTT connections' forwarders and the Kafka consumers.
    pub fn new(mqtt: mqtt::Acker, kafka: kafka::Acker) -> Self {
        Self { mqtt, kafka }
    }

    /// Acknowledges stored messages in arrival order; each comes with the
    /// reason it was dead-lettered, if it was (HTTP callers are told).
    pub fn ack(&self, acks: impl IntoIterator<Item = (Ack, Option<Reason>)>) -> AckReport {
        let mut report = AckReport::default();
        let mut kafka = false;
        // MQTT acks are gathered and handed to each connection once, after
        // the loop: their order per connection is kept, and no other source
        // orders against them.
        let mut mqtt = self.mqtt.batch();
        for (ack, rejected) in acks {
            let sent = match ack {
                Ack::Mqtt(token) => {
                    mqtt.push(token);
                    continue;
                }
                Ack::Kafka(token) => {
                    kafka = true;
                    self.kafka.done(&token)
                }
                Ack::Http(reply) => {
                    reply.send(rejected.map_or(HttpOutcome::Stored, HttpOutcome::Rejected));
                    true
                }
            };
            if sent {
                report.sent += 1;
            } else {
                report.dropped += 1;
            }
        }
        let (sent, dropped) = mqtt.send();
        report.sent += sent;
        report.dropped += dropped;
        // One commit per batch, of every partition it moved.
        if kafka {
            self.kafka.commit();
        }
        report
    }
}
