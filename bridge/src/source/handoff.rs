//! The hand-off from a source to the pipeline: the bounded channel, and the
//! queue of deliveries a source has already taken from its broker but the
//! full channel could not take yet. MQTT and Kafka sources both use it; a
//! source stops reading while its queue is not empty, so the queue stays
//! about one read long.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Delivery;
use crate::metrics::Metrics;

/// Free room in the pipeline channel that ends a wait, so that a source
/// wakes once per few hundred deliveries, not once per delivery.
pub const RESUME_ROOM: usize = 256;

/// A source's side of the pipeline channel.
pub struct Handoff {
    tx: mpsc::Sender<Delivery>,
    overflow: VecDeque<Delivery>,
    metrics: Arc<Metrics>,
}

impl Handoff {
    /// A hand-off into `tx`, counting what it holds in `pending_messages`.
    pub fn new(tx: mpsc::Sender<Delivery>, metrics: Arc<Metrics>) -> Self {
        Self {
            tx,
            overflow: VecDeque::new(),
            metrics,
        }
    }

    /// Takes a delivery just read from the broker, counting it pending until
    /// it is acknowledged: into the channel, or behind what already waits.
    /// After shutdown it is dropped unacknowledged, and the broker delivers
    /// it again to the next session (or consumer).
    pub fn push(&mut self, delivery: Delivery) {
        self.metrics.pending_messages.inc();
        if !self.overflow.is_empty() {
            self.overflow.push_back(delivery);
            return;
        }
        match self.tx.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(d)) => {
                tracing::debug!("Pipeline channel full; holding deliveries in the overflow queue");
                self.overflow.push_back(d);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.pending_messages.dec(),
        }
    }

    /// Moves waiting deliveries into the channel while it has room.
    pub fn forward(&mut self) {
        while let Some(delivery) = self.overflow.pop_front() {
            match self.tx.try_send(delivery) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    self.overflow.push_front(d);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.metrics.pending_messages.dec();
                    self.let_go();
                    return;
                }
            }
        }
    }

    /// Waits until the channel has room for every waiting delivery (and at
    /// least [`RESUME_ROOM`] more, bounded by its size) and moves them in,
    /// or until `max` has passed.
    pub async fn wait_for_room(&mut self, max: Duration) {
        let want = self
            .overflow
            .len()
            .max(RESUME_ROOM)
            .min(self.tx.max_capacity());
        let room = tokio::select! {
            room = self.tx.reserve_many(want) => room,
            _ = tokio::time::sleep(max) => return,
        };
        let overflow = &mut self.overflow;
        let open = room
            .map(|permits| {
                for permit in permits {
                    let Some(delivery) = overflow.pop_front() else {
                        break;
                    };
                    permit.send(delivery);
                }
            })
            .is_ok();
        if !open {
            self.let_go();
        }
    }

    /// Keeps only the waiting deliveries `keep` accepts (MQTT: those of the
    /// current connection, once a resumed session redelivers the others).
    pub fn retain(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        let before = self.overflow.len();
        self.overflow.retain(keep);
        let dropped = before - self.overflow.len();
        self.metrics.pending_messages.sub(dropped as i64);
    }

    /// Drops what waits, unacknowledged (shutdown: the broker delivers it again).
    pub fn let_go(&mut self) {
        self.metrics
            .pending_messages
            .sub(self.overflow.len() as i64);
        self.overflow.clear();
    }

    /// True while deliveries wait for room.
    pub fn is_waiting(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// True once the pipeline has stopped taking deliveries.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True when the channel has room for [`RESUME_ROOM`] deliveries (or is
    /// smaller and empty).
    pub fn has_resume_room(&self) -> bool {
        self.tx.capacity() >= RESUME_ROOM.min(self.tx.max_capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;
    use crate::source::budget::ByteBudget;
    use crate::source::{Ack, HttpReply};

    fn delivery(budget: &Arc<ByteBudget>, n: u8) -> Delivery {
        let (reply, _wait) = HttpReply::new();
        Delivery {
            origin: Origin::Mqtt(bytes::Bytes::from_static(b"t")),
            payload: bytes::Bytes::from(vec![n]),
            seq: None,
            ack: Ack::Http(reply),
            held: budget.hold(1),
        }
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(10, &[("co2", "mysql")], &["mysql"]).unwrap())
    }

    #[tokio::test]
    async fn a_full_channel_queues_in_order_and_room_moves_the_queue_in() {
        let metrics = metrics();
        let budget = ByteBudget::new(1 << 20, metrics.clone());
        let (tx, mut rx) = mpsc::channel(2);
        let mut h = Handoff::new(tx, metrics.clone());
        for n in 0..5 {
            h.push(delivery(&budget, n));
        }
        assert!(h.is_waiting());
        assert_eq!(metrics.pending_messages.get(), 5);
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(rx.recv().await.unwrap().payload[0]);
            h.forward();
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert!(!h.is_waiting());
    }

    #[tokio::test]
    async fn a_closed_pipeline_lets_everything_go_uncounted() {
        let metrics = metrics();
        let budget = ByteBudget::new(1 << 20, metrics.clone());
        let (tx, rx) = mpsc::channel(1);
        let mut h = Handoff::new(tx, metrics.clone());
        for n in 0..3 {
            h.push(delivery(&budget, n));
        }
        drop(rx);
        h.wait_for_room(Duration::from_secs(5)).await;
        assert!(!h.is_waiting());
        h.push(delivery(&budget, 9));
        assert!(h.is_closed());
        // The one in the dropped channel was handed over; only it is still counted.
        assert_eq!(metrics.pending_messages.get(), 1);
    }

    #[tokio::test]
    async fn waiting_for_room_gives_up_after_its_bound() {
        let metrics = metrics();
        let budget = ByteBudget::new(1 << 20, metrics.clone());
        let (tx, _rx) = mpsc::channel(1);
        let mut h = Handoff::new(tx, metrics);
        h.push(delivery(&budget, 0));
        h.push(delivery(&budget, 1));
        h.wait_for_room(Duration::from_millis(50)).await;
        assert!(h.is_waiting());
        h.retain(|_| false);
        assert!(!h.is_waiting());
    }
}
