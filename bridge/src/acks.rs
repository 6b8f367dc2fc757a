//! Acknowledging messages to the broker, in the order they arrived, and only
//! on the connection they arrived on.
//!
//! MQTT requires PUBACKs in arrival order, and the pipeline writes batches in
//! arrival order, so acking each committed batch front to back keeps it.
//! A packet id is only meaningful on the connection that delivered it: after
//! a reconnect the broker re-sends every unacknowledged message (same id,
//! DUP set), and an ack meant for the old delivery could acknowledge a
//! different message that reuses the id. So every delivery carries the
//! connection epoch it arrived in, and acks for older epochs are skipped; the
//! redelivered copy is written again (a no-op, counted as a duplicate) and
//! acked on its own connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::mqtt::{AckHandle, Client};

/// Counts connections; bumped by the ingress task whenever one is lost.
#[derive(Debug, Clone, Default)]
pub struct ConnectionEpoch(Arc<AtomicU64>);

impl ConnectionEpoch {
    /// The current connection's number.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the current connection as gone.
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// What is needed to acknowledge one message later.
#[derive(Debug)]
pub enum AckToken {
    /// A PUBACK, valid only on the connection the message came in on.
    Mqtt {
        /// Which of the bridge's MQTT connections.
        link: usize,
        /// Packet id and QoS.
        handle: AckHandle,
        /// The connection it arrived on.
        epoch: u64,
    },
    /// An HTTP request waiting for its answer.
    Http(oneshot::Sender<HttpOutcome>),
}

/// The answer to an HTTP ingest request, sent once the batch is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// Committed as rows.
    Stored,
    /// Committed as a dead letter, for this reason.
    Rejected(&'static str),
    /// Not written (shutdown while the database failed); try again.
    NotStored,
}

impl AckToken {
    /// A token for a message received on connection `link` during `epoch`.
    pub fn mqtt(link: usize, handle: AckHandle, epoch: u64) -> Self {
        Self::Mqtt {
            link,
            handle,
            epoch,
        }
    }

    /// The connection the message arrived on (`None` for HTTP).
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Self::Mqtt { epoch, .. } => Some(*epoch),
            Self::Http(_) => None,
        }
    }

    /// Tells an HTTP caller that its message was not written.
    pub fn abandon(self) {
        if let Self::Http(reply) = self {
            let _ = reply.send(HttpOutcome::NotStored);
        }
    }
}

/// Sends acknowledgements through the MQTT client of each connection.
#[derive(Clone)]
pub struct Acker {
    links: Vec<(Client, ConnectionEpoch)>,
}

/// How a run of acknowledgements went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AckReport {
    /// Handed to the event loop.
    pub sent: usize,
    /// From an older connection: the broker re-sends those messages instead.
    pub stale: usize,
}

impl Acker {
    /// An acker for the bridge's connections, each numbered by its epoch.
    pub fn new(links: Vec<(Client, ConnectionEpoch)>) -> Self {
        Self { links }
    }

    /// Acknowledges committed messages in order; each comes with the reason it
    /// was dead-lettered, if it was (HTTP callers are told).
    pub async fn ack(
        &self,
        tokens: impl IntoIterator<Item = (AckToken, Option<&'static str>)>,
    ) -> AckReport {
        let mut report = AckReport::default();
        for (token, rejected) in tokens {
            match token {
                AckToken::Mqtt {
                    link,
                    handle,
                    epoch,
                } => {
                    let Some((client, current)) = self.links.get(link) else {
                        report.stale += 1;
                        continue;
                    };
                    if epoch != current.current() {
                        report.stale += 1;
                        continue;
                    }
                    // Fails only when the event loop is gone, i.e. at exit; the
                    // broker then re-delivers the message to the next session.
                    if client.ack(&handle).await {
                        report.sent += 1;
                    } else {
                        report.stale += 1;
                    }
                }
                AckToken::Http(reply) => {
                    let outcome = rejected.map_or(HttpOutcome::Stored, HttpOutcome::Rejected);
                    // The caller may have hung up; the data is stored either way.
                    let _ = reply.send(outcome);
                    report.sent += 1;
                }
            }
        }
        report
    }
}
