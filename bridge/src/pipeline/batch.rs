//! Size-or-age batching, kept pure (the caller passes the time) so it is
//! tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Collects items until `max_rows` are waiting, or they weigh `max_bytes`,
/// or the first has waited `max_delay`.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    bytes: usize,
    max_rows: usize,
    max_bytes: usize,
    max_delay: Duration,
    opened_at: Option<Instant>,
}

impl<T> Batcher<T> {
    /// A batcher that emits at `max_rows` items (at least 1), at `max_bytes`
    /// (a single heavier item still makes a batch) or `max_delay` after the first.
    pub fn new(max_rows: usize, max_bytes: usize, max_delay: Duration) -> Self {
        let max_rows = max_rows.max(1);
        Self {
            items: Vec::with_capacity(max_rows),
            bytes: 0,
            max_rows,
            max_bytes,
            max_delay,
            opened_at: None,
        }
    }

    /// Adds an item of `bytes` received at `now`; returns true when the batch is full.
    pub fn push(&mut self, item: T, bytes: usize, now: Instant) -> bool {
        if self.items.is_empty() {
            self.opened_at = Some(now);
        }
        self.items.push(item);
        self.bytes = self.bytes.saturating_add(bytes);
        self.items.len() >= self.max_rows || self.bytes >= self.max_bytes
    }

    /// When the current batch is due by age, if anything is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.max_delay)
    }

    /// How many more items fit before the batch is full by count (at least 1).
    pub fn room(&self) -> usize {
        self.max_rows.saturating_sub(self.items.len()).max(1)
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes everything waiting and starts a new batch.
    pub fn take(&mut self) -> Vec<T> {
        self.opened_at = None;
        self.bytes = 0;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max_rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_max_rows() {
        let t = Instant::now();
        let mut b = Batcher::new(3, usize::MAX, Duration::from_millis(50));
        assert!(!b.push(1, 10, t));
        assert!(!b.push(2, 10, t));
        assert!(b.push(3, 10, t));
        assert_eq!(b.take(), vec![1, 2, 3]);
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn deadline_runs_from_the_first_item() {
        let t = Instant::now();
        let mut b = Batcher::new(10, usize::MAX, Duration::from_millis(50));
        assert_eq!(b.deadline(), None);
        b.push('a', 1, t);
        b.push('b', 1, t + Duration::from_millis(40));
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(50)));
        b.take();
        b.push('c', 1, t + Duration::from_millis(70));
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(120)));
    }

    #[test]
    fn room_is_what_fits_by_count_and_never_zero() {
        let t = Instant::now();
        let mut b = Batcher::new(3, usize::MAX, Duration::from_millis(50));
        assert_eq!(b.room(), 3);
        b.push(1, 1, t);
        assert_eq!(b.room(), 2);
        b.push(2, 1, t);
        b.push(3, 1, t);
        assert_eq!(
            b.room(),
            1,
            "a full batch still asks for one, to notice a closed channel"
        );
    }

    #[test]
    fn zero_max_rows_still_makes_progress() {
        let mut b = Batcher::new(0, usize::MAX, Duration::ZERO);
        assert!(b.push((), 0, Instant::now()));
    }

    #[test]
    fn full_at_max_bytes_and_a_heavy_item_is_a_batch_alone() {
        let t = Instant::now();
        let mut b = Batcher::new(1000, 100, Duration::from_millis(50));
        assert!(!b.push(1, 60, t));
        assert!(b.push(2, 60, t));
        assert_eq!(b.take(), vec![1, 2]);
        assert!(b.push(3, 500, t));
    }
}
