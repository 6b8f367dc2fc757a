//! Capped exponential back-off with jitter, so many bridges and publishers
//! (or many retries) do not hammer a recovering broker or database in
//! lockstep. The bridge and the publisher both use it: one schedule to reason
//! about when a cluster node goes away.

use std::time::Duration;

use rand::Rng;

/// Delays whose cap doubles from `base` up to `max`; each is drawn uniformly
/// from `[cap/2, cap]` ("equal jitter": spread out, yet never near zero).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off starting at `base` and never exceeding `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = delay(self.attempt, self.base, self.max);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The delay after `attempt` earlier failures (0: the first retry): its cap
/// doubles from `base` up to `max`, and it is drawn from `[cap/2, cap]`.
pub fn delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
    let cap = base.saturating_mul(factor).min(max.max(base));
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    // Never zero: a zero delay would turn a dead peer into a busy loop.
    Duration::from_millis(rand::rng().random_range(cap_ms / 2..=cap_ms.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[30..].iter().all(|d| *d >= Duration::from_secs(1)));
        assert_eq!(b.attempts(), 40);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn delay_is_within_half_and_full_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for _ in 0..100 {
            let d0 = delay(0, min, max);
            assert!(d0 >= Duration::from_millis(50) && d0 <= min, "{d0:?}");
            let d2 = delay(2, min, max);
            assert!(d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400));
            let d29 = delay(29, min, max);
            assert!(d29 >= Duration::from_millis(500) && d29 <= max, "{d29:?}");
        }
    }
}
