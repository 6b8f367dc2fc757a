//! Progress of long work (a backlog drained, rows awaited): how much is
//! done and left, the rate, and an estimate, due at an interval. Pure
//! arithmetic over the caller's clock readings; the caller logs it.

use std::fmt;
use std::time::{Duration, Instant};

/// Tracks one piece of work of `total` units (when known).
#[derive(Debug, Clone)]
pub struct Progress {
    total: Option<u64>,
    started: Instant,
    interval: Duration,
    last: (Instant, u64),
}

/// Where the work stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// Units done.
    pub done: u64,
    /// Units left, when the total is known.
    pub left: Option<u64>,
    /// Units per second since the previous update (since the start for the first).
    pub rate_per_s: f64,
    /// Time left at that rate, when the total is known and the rate is not zero.
    pub eta: Option<Duration>,
    /// Time since the start.
    pub elapsed: Duration,
}

impl Progress {
    /// Work started at `now`, reported every `interval`.
    pub fn new(total: Option<u64>, interval: Duration, now: Instant) -> Self {
        Self {
            total,
            started: now,
            interval,
            last: (now, 0),
        }
    }

    /// Changes the total (e.g. a backlog that grows while it drains).
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// An update when `interval` has passed since the previous one.
    pub fn tick(&mut self, done: u64, now: Instant) -> Option<Update> {
        if now.saturating_duration_since(self.last.0) < self.interval {
            return None;
        }
        let update = self.at(done, now);
        self.last = (now, done);
        Some(update)
    }

    /// Where the work stands at `now`, whether an update is due or not.
    pub fn at(&self, done: u64, now: Instant) -> Update {
        let span = now.saturating_duration_since(self.last.0).as_secs_f64();
        let rate_per_s = if span > 0.0 {
            done.saturating_sub(self.last.1) as f64 / span
        } else {
            0.0
        };
        let left = self.total.map(|t| t.saturating_sub(done));
        let eta = left.and_then(|left| {
            (rate_per_s > 0.0).then(|| Duration::from_secs_f64(left as f64 / rate_per_s))
        });
        Update {
            done,
            left,
            rate_per_s,
            eta,
            elapsed: now.saturating_duration_since(self.started),
        }
    }
}

impl fmt::Display for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} done", self.done)?;
        if let Some(left) = self.left {
            write!(f, ", {left} left")?;
        }
        write!(f, ", {:.0}/s", self.rate_per_s)?;
        match (self.left, self.eta) {
            (Some(0), _) => Ok(()),
            (Some(_), Some(eta)) => write!(f, ", about {} s to go", eta.as_secs().max(1)),
            (Some(_), None) => write!(f, ", stalled"),
            (None, _) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_come_at_the_interval_with_rate_and_estimate() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(1000), Duration::from_secs(5), t0);
        assert_eq!(p.tick(10, t0 + Duration::from_secs(1)), None);
        let u = p.tick(250, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!((u.done, u.left, u.rate_per_s), (250, Some(750), 50.0));
        assert_eq!(u.eta, Some(Duration::from_secs(15)));
        assert_eq!(u.to_string(), "250 done, 750 left, 50/s, about 15 s to go");
        // The rate is the recent one, not the average since the start.
        let u = p.tick(1250, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((u.left, u.rate_per_s), (Some(0), 200.0));
        assert_eq!(u.to_string(), "1250 done, 0 left, 200/s");
    }

    #[test]
    fn no_progress_is_stalled_and_an_unknown_total_has_no_estimate() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(10), Duration::from_secs(1), t0);
        let u = p.tick(0, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(u.to_string(), "0 done, 10 left, 0/s, stalled");
        let mut open = Progress::new(None, Duration::from_secs(1), t0);
        let u = open.tick(30, t0 + Duration::from_secs(3)).unwrap();
        assert_eq!((u.left, u.eta), (None, None));
        assert_eq!(u.to_string(), "30 done, 10/s");
    }
}
