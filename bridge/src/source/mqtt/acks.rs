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

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::{AckHandle, Client};
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

/// What is needed to acknowledge one message later: a PUBACK, valid only on
/// the connection the message came in on.
#[derive(Debug, Clone, Copy)]
pub struct AckToken {
    /// Which of the bridge's MQTT connections.
    link: usize,
    /// Packet id and QoS.
    handle: AckHandle,
    /// The connection it arrived on.
    epoch: u64,
}

impl AckToken {
    /// A token for a message received on connection `link` during `epoch`.
    pub fn new(link: usize, handle: AckHandle, epoch: u64) -> Self {
        Self {
            link,
            handle,
            epoch,
        }
    }

    /// The connection the message arrived on.
    pub fn epoch(&self) -> u64 {
        self.epoch
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
    links: Vec<mpsc::UnboundedSender<Vec<(AckHandle, u64)>>>,
}

/// The PUBACKs of one stored batch, gathered per connection so that each
/// forwarder gets them in one hand-over rather than one per message.
pub struct AckBatch<'a> {
    acker: &'a Acker,
    per_link: Vec<Vec<(AckHandle, u64)>>,
    /// Tokens naming a connection the bridge does not have.
    unknown: usize,
}

impl AckBatch<'_> {
    /// Adds the PUBACK of a stored message, after those added before it.
    pub fn push(&mut self, token: AckToken) {
        match self.per_link.get_mut(token.link) {
            Some(acks) => acks.push((token.handle, token.epoch)),
            None => self.unknown += 1,
        }
    }

    /// Queues every PUBACK with its connection's forwarder; returns how many
    /// were queued and how many not, because the forwarder has ended (at
    /// exit: the broker redelivers those messages to the next session).
    pub fn send(self) -> (usize, usize) {
        let (mut sent, mut dropped) = (0, self.unknown);
        for (queue, acks) in self.acker.links.iter().zip(self.per_link) {
            if acks.is_empty() {
                continue;
            }
            let n = acks.len();
            match queue.send(acks) {
                Ok(()) => sent += n,
                Err(_) => dropped += n,
            }
        }
        (sent, dropped)
    }
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

    /// An empty batch of PUBACKs to send through this acker.
    pub fn batch(&self) -> AckBatch<'_> {
        AckBatch {
            acker: self,
            per_link: vec![Vec::new(); self.links.len()],
            unknown: 0,
        }
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
    mut queue: mpsc::UnboundedReceiver<Vec<(AckHandle, u64)>>,
) {
    while let Some(acks) = queue.recv().await {
        let mut stale = 0u64;
        for (handle, arrived_in) in acks {
            // Checked per ack, just before it goes: a reconnect may come
            // in the middle of a batch.
            if arrived_in != epoch.current() {
                stale += 1;
                continue;
            }
            // Fails only when the event loop is gone, i.e. at exit.
            if !client.ack(&handle).await {
                return;
            }
        }
        if stale > 0 {
            tracing::debug!(link, stale, "Skipped acknowledgements meant for an earlier connection; the broker re-sends those messages");
        }
    }
}
