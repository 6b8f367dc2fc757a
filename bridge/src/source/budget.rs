//! The byte budget: payload bytes taken in from every source and not yet
//! acknowledged. The in-flight window bounds how many messages wait in the
//! bridge, not how large they are: a 65,535-message window of 4 MiB camera
//! images would be 256 GiB. So every delivery holds its payload's bytes
//! against `batch.max_inflight_bytes` until it is acknowledged (or given up),
//! and a source takes no more while the budget is spent: MQTT stops reading
//! the broker (which keeps the rest, persisted), HTTP ingest answers 503.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::metrics::{Arrival, Metrics};

/// Bytes held by deliveries in flight, against a limit.
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
    released: Notify,
    metrics: Arc<Metrics>,
}

/// One delivery's bytes; released when dropped (acknowledged or given up).
/// It also keeps the delivery's arrival registered for
/// `co2_bridge_oldest_pending_age_seconds` for exactly as long.
pub struct Held {
    budget: Arc<ByteBudget>,
    bytes: usize,
    arrival: Arrival,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes)", self.bytes)
    }
}

impl ByteBudget {
    /// A budget of `limit` bytes, reported as `co2_bridge_inflight_bytes`.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            released: Notify::new(),
            metrics,
        })
    }

    /// Holds `bytes` whatever the budget says (for a message already read).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.metrics.inflight_bytes.set(used as i64);
        Held {
            budget: self.clone(),
            bytes,
            arrival: self.metrics.pending_ages.arrive(),
        }
    }

    /// Holds `bytes` unless the budget is spent (one message is always let in).
    pub fn try_hold(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        let used = self.used.load(Ordering::Acquire);
        (used == 0 || used + bytes <= self.limit).then(|| self.hold(bytes))
    }

    /// True while more than the limit is held.
    pub fn spent(&self) -> bool {
        self.used.load(Ordering::Acquire) > self.limit
    }

    /// True while more than twice the limit is held: a source must not read
    /// at all then, not even to keep its connection alive.
    pub fn overspent(&self) -> bool {
        self.used.load(Ordering::Acquire) > self.limit.saturating_mul(2)
    }

    /// Waits until no more than the limit is held.
    pub async fn wait_until_available(&self) {
        loop {
            let released = self.released.notified();
            if !self.spent() {
                return;
            }
            released.await;
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.metrics.pending_ages.leave(self.arrival);
        let before = self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        let used = before.saturating_sub(self.bytes);
        self.budget.metrics.inflight_bytes.set(used as i64);
        if before > self.budget.limit && used <= self.budget.limit {
            self.budget.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> Arc<ByteBudget> {
        let metrics = Arc::new(Metrics::new(1, &[("co2", "mysql")], &["mysql"]).unwrap());
        ByteBudget::new(limit, metrics)
    }

    #[test]
    fn holds_until_dropped_and_always_lets_one_in() {
        let b = budget(100);
        let big = b.try_hold(500).expect("the first message always fits");
        assert!(b.spent() && b.overspent());
        assert!(b.try_hold(1).is_none());
        drop(big);
        assert_eq!(b.used(), 0);
        let a = b.try_hold(60).unwrap();
        assert!(b.try_hold(60).is_none());
        let c = b.hold(60);
        assert!(b.spent() && !b.overspent());
        drop((a, c));
        assert!(!b.spent());
    }

    #[test]
    fn a_held_delivery_is_pending_until_dropped() {
        let b = budget(100);
        let (one, two) = (b.hold(1), b.hold(1));
        assert_eq!(b.metrics.pending_ages.len(), 2);
        drop(one);
        assert_eq!(b.metrics.pending_ages.len(), 1);
        drop(two);
        assert!(b.metrics.pending_ages.is_empty());
        assert!(b
            .metrics
            .render()
            .contains("co2_bridge_oldest_pending_age_seconds 0\n"));
    }

    #[tokio::test]
    async fn a_waiting_source_wakes_when_bytes_are_released() {
        let b = budget(10);
        let held = b.hold(20);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_until_available().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
