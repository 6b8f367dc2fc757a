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
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::mqtt::{AckHandle, Client};
use crate::supervisor::Supervisor;

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

/// Hands acknowledgements to one forwarding task per MQTT connection.
///
/// The pipeline must never wait for the event loop: ingress stops polling it
/// while the pipeline is full (that is the bridge's back-pressure on the
/// broker), so a pipeline blocked on rumqttc's request channel would wait for
/// a task that waits for it. The queue between the two holds only packet ids
/// of messages already written, 16 bytes each, and never more than the
/// broker has in flight to the bridge.
pub struct Acker {
    links: Vec<mpsc::UnboundedSender<(AckHandle, u64)>>,
}

/// How a run of acknowledgements was handed over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AckReport {
    /// Queued for the broker (MQTT) or answered (HTTP).
    pub sent: usize,
    /// Not queued: the connection's forwarder has ended (at exit); the broker
    /// redelivers those messages to the next session.
    pub dropped: usize,
}

/// The forwarding tasks; they end once every [`Acker`] is dropped and their
/// queues are empty.
pub struct AckForwarders(Vec<JoinHandle<()>>);

impl Acker {
    /// Starts one forwarder per connection under `supervisor`, each checking
    /// acks against its connection's epoch just before sending them.
    pub fn spawn(
        links: Vec<(Client, ConnectionEpoch)>,
        supervisor: &Supervisor,
    ) -> (Self, AckForwarders) {
        let mut senders = Vec::with_capacity(links.len());
        let mut tasks = Vec::with_capacity(links.len());
        for (link, (client, epoch)) in links.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tasks.push(supervisor.spawn(
                format!("mqtt acks {link}"),
                forward(link, client, epoch, rx),
            ));
        }
        (Self { links: senders }, AckForwarders(tasks))
    }

    /// Acknowledges committed messages in order; each comes with the reason it
    /// was dead-lettered, if it was (HTTP callers are told).
    pub fn ack(
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
                } => match self.links.get(link) {
                    // A closed queue means the forwarder is gone (exit); the
                    // broker re-delivers the message to the next session.
                    Some(queue) if queue.send((handle, epoch)).is_ok() => report.sent += 1,
                    _ => report.dropped += 1,
                },
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

impl AckForwarders {
    /// Waits until every queued ack is handed to its event loop, or `limit` passes.
    pub async fn finish(self, limit: Duration) {
        let all = async {
            for task in self.0 {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("Not every acknowledgement went out before shutdown; the broker will redeliver those messages");
        }
    }
}

async fn forward(
    link: usize,
    client: Client,
    epoch: ConnectionEpoch,
    mut queue: mpsc::UnboundedReceiver<(AckHandle, u64)>,
) {
    let mut stale = 0u64;
    while let Some((handle, arrived_in)) = queue.recv().await {
        if arrived_in != epoch.current() {
            stale += 1;
            continue;
        }
        if stale > 0 {
            tracing::debug!(link, stale, "Skipped acknowledgements meant for an earlier connection; the broker re-sends those messages");
            stale = 0;
        }
        // Fails only when the event loop is gone, i.e. at exit.
        if !client.ack(&handle).await {
            return;
        }
    }
}
