//! How long the oldest message taken in and not yet acknowledged has waited.
//!
//! `co2_bridge_pending_messages` says how many wait, not for how long: a
//! route whose sink keeps failing holds its few messages for hours while the
//! other routes' messages are acknowledged within milliseconds, and the count
//! stays small. Every delivery registers its arrival here (the byte budget's
//! `Held` does, for exactly as long as it holds the payload) and leaves when it
//! is acknowledged or given up, so the oldest arrival is at the front.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Arrivals still pending, counted per whole second since the tracker started.
pub struct PendingAges {
    start: Instant,
    /// `(second, messages)`, seconds strictly increasing, no zero counts.
    seconds: Mutex<VecDeque<(u64, u64)>>,
}

/// One message's arrival, handed back to [`PendingAges::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival(u64);

impl Default for PendingAges {
    fn default() -> Self {
        Self::new()
    }
}

impl PendingAges {
    /// Nothing pending.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            seconds: Mutex::new(VecDeque::new()),
        }
    }

    /// A message arrives now.
    pub fn arrive(&self) -> Arrival {
        let mut seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        // Read the clock under the lock, so that arrivals are registered in
        // time order and the deque stays sorted.
        let now = self.start.elapsed().as_secs();
        match seconds.back_mut() {
            Some((second, n)) if *second == now => *n += 1,
            _ => seconds.push_back((now, 1)),
        }
        Arrival(now)
    }

    /// A message that arrived at `arrival` was acknowledged or given up.
    pub fn leave(&self, arrival: Arrival) {
        let mut seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        let at = seconds.partition_point(|(second, _)| *second < arrival.0);
        if let Some((second, n)) = seconds.get_mut(at) {
            if *second == arrival.0 {
                *n = n.saturating_sub(1);
            }
        }
        while seconds.front().is_some_and(|(_, n)| *n == 0) {
            seconds.pop_front();
        }
        // A zero count in the middle is left until it reaches the front: the
        // age is read from the front only.
    }

    /// How long the oldest pending message has waited (zero when none
    /// waits); at most a second more than the truth, never less.
    pub fn oldest(&self) -> Duration {
        let seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        match seconds.front() {
            Some((second, _)) => self
                .start
                .elapsed()
                .saturating_sub(Duration::from_secs(*second)),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
impl PendingAges {
    /// Messages pending.
    pub fn len(&self) -> u64 {
        let seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        seconds.iter().map(|(_, n)| n).sum()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ages: &PendingAges, second: u64) -> Arrival {
        // Stand-in for an arrival `second` seconds after the start.
        let mut seconds = ages.seconds.lock().unwrap();
        match seconds.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => seconds.push_back((second, 1)),
        }
        Arrival(second)
    }

    #[test]
    fn the_age_is_that_of_the_oldest_still_pending() {
        let ages = PendingAges {
            start: Instant::now() - Duration::from_secs(100),
            seconds: Mutex::new(VecDeque::new()),
        };
        assert_eq!(ages.oldest(), Duration::ZERO);
        let first = at(&ages, 10);
        let second = at(&ages, 10);
        let later = at(&ages, 70);
        let age = ages.oldest().as_secs();
        assert!((90..=91).contains(&age), "{age}");
        // Leaving out of order: the newer one first changes nothing.
        ages.leave(later);
        assert!(ages.oldest().as_secs() >= 90);
        ages.leave(first);
        assert!(
            ages.oldest().as_secs() >= 90,
            "one of second 10 still waits"
        );
        let newest = at(&ages, 95);
        ages.leave(second);
        let age = ages.oldest().as_secs();
        assert!((5..=6).contains(&age), "{age}");
        ages.leave(newest);
        assert_eq!(ages.oldest(), Duration::ZERO);
        assert!(ages.is_empty());
    }

    #[test]
    fn a_middle_second_emptied_first_is_skipped_once_the_front_leaves() {
        let ages = PendingAges::new();
        let (a, b, c) = (at(&ages, 0), at(&ages, 1), at(&ages, 2));
        ages.leave(b);
        assert_eq!(ages.len(), 2);
        ages.leave(a);
        assert_eq!(ages.seconds.lock().unwrap().front(), Some(&(2, 1)));
        ages.leave(c);
        assert!(ages.is_empty());
        // Leaving twice (a bug elsewhere) never underflows or panics.
        ages.leave(c);
        assert!(ages.is_empty());
    }

    #[test]
    fn real_arrivals_are_registered_in_order() {
        let ages = PendingAges::new();
        let arrivals: Vec<_> = (0..1000).map(|_| ages.arrive()).collect();
        assert_eq!(ages.len(), 1000);
        for a in arrivals.into_iter().rev() {
            ages.leave(a);
        }
        assert!(ages.is_empty());
        assert_eq!(ages.oldest(), Duration::ZERO);
    }
}
