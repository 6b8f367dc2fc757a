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
#[derive(Debug, Clone)]
pub struct AckToken {
    handle: AckHandle,
    epoch: u64,
}

impl AckToken {
    /// A token for a message received during connection `epoch`.
    pub fn new(handle: AckHandle, epoch: u64) -> Self {
        Self { handle, epoch }
    }

    /// The connection the message arrived on.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// Sends acknowledgements through the MQTT client.
#[derive(Clone)]
pub struct Acker {
    client: Client,
    epoch: ConnectionEpoch,
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
    /// An acker for `client`'s connection numbered by `epoch`.
    pub fn new(client: Client, epoch: ConnectionEpoch) -> Self {
        Self { client, epoch }
    }

    /// Acknowledges `tokens` in order.
    pub async fn ack(&self, tokens: impl IntoIterator<Item = AckToken>) -> AckReport {
        let mut report = AckReport::default();
        for token in tokens {
            if token.epoch != self.epoch.current() {
                report.stale += 1;
                continue;
            }
            // Fails only when the event loop is gone, i.e. at exit; the broker then
            // re-delivers the message to the next session.
            if self.client.ack(&token.handle).await {
                report.sent += 1;
            } else {
                report.stale += 1;
            }
        }
        report
    }
}
