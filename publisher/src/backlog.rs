//! What the uplink says while it drains a backlog: a Pi back online after
//! hours has thousands of readings queued, and its log should show how many
//! are left, how fast they go and when they will be through, not fall silent
//! until they are. Decides what to log; the uplink logs it.

use std::time::{Duration, Instant};

use co2_wire::{Progress, ProgressUpdate};

/// Between two progress lines while a backlog drains.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What to log.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A backlog of this many readings waits at connect.
    Started(u64),
    /// Where the drain stands (`done` counts readings acknowledged).
    Progress(ProgressUpdate),
    /// What was queued is delivered: this many readings, taking this long.
    Drained(u64, Duration),
}

/// One session's drain, when it started with a backlog.
#[derive(Debug, Clone)]
pub struct Backlog {
    /// Readings queued at connect from which a drain is worth reporting.
    min: u64,
    /// Readings left at which the backlog counts as delivered: what one
    /// window carries, since new readings keep arriving while it drains.
    done_at: u64,
    /// The drain under way, and readings acknowledged in it.
    drain: Option<(Progress, u64)>,
}

impl Backlog {
    /// Reports drains of more than two windows (`window` publishes in flight).
    pub fn new(window: usize) -> Self {
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        Self {
            min: window.saturating_mul(2).max(1),
            done_at: window,
            drain: None,
        }
    }

    /// A session starts with `queued` readings waiting.
    pub fn connected(&mut self, queued: u64, now: Instant) -> Option<Note> {
        self.drain = None;
        if queued < self.min {
            return None;
        }
        self.drain = Some((Progress::new(Some(queued), INTERVAL, now), 0));
        Some(Note::Started(queued))
    }

    /// Whether a drain is under way (its progress is due every [`INTERVAL`]).
    pub fn active(&self) -> bool {
        self.drain.is_some()
    }

    /// `n` more readings were acknowledged.
    pub fn acked(&mut self, n: u64) {
        if let Some((_, done)) = &mut self.drain {
            *done = done.saturating_add(n);
        }
    }

    /// The session ended; a drain under way is over without a verdict (the
    /// next session reports what is left then).
    pub fn interrupted(&mut self) {
        self.drain = None;
    }

    /// What to log now, with `left` readings queued and not acknowledged.
    pub fn tick(&mut self, left: u64, now: Instant) -> Option<Note> {
        let (progress, done) = self.drain.as_mut()?;
        let done = *done;
        if left <= self.done_at {
            let elapsed = progress.at(done, now).elapsed;
            self.drain = None;
            return Some(Note::Drained(done, elapsed));
        }
        // New readings join the backlog while it drains.
        progress.set_total(done.saturating_add(left));
        progress.tick(done, now).map(Note::Progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_queue_is_no_backlog() {
        let t0 = Instant::now();
        let mut b = Backlog::new(100);
        assert_eq!(b.connected(199, t0), None);
        b.acked(150);
        assert_eq!(b.tick(0, t0 + INTERVAL), None);
    }

    #[test]
    fn a_backlog_reports_at_the_interval_and_once_when_drained() {
        let t0 = Instant::now();
        let mut b = Backlog::new(100);
        assert_eq!(b.connected(10_000, t0), Some(Note::Started(10_000)));
        assert!(b.active());
        b.acked(500);
        assert_eq!(b.tick(9_500, t0 + Duration::from_secs(1)), None);
        b.acked(4_500);
        let Some(Note::Progress(u)) = b.tick(5_010, t0 + INTERVAL) else {
            panic!("no progress line at the interval");
        };
        // 10 readings arrived meanwhile: they are left too.
        assert_eq!((u.done, u.left, u.rate_per_s), (5_000, Some(5_010), 500.0));
        assert_eq!(
            u.to_string(),
            "5000 done, 5010 left, 500/s, about 10 s to go"
        );
        assert_eq!(b.tick(5_000, t0 + INTERVAL + Duration::from_secs(1)), None);
        b.acked(4_950);
        assert_eq!(
            b.tick(60, t0 + Duration::from_secs(19)),
            Some(Note::Drained(9_950, Duration::from_secs(19)))
        );
        assert_eq!(b.tick(0, t0 + Duration::from_secs(40)), None, "once");
        assert!(!b.active());
    }

    #[test]
    fn a_drain_without_acks_is_reported_as_stalled() {
        let t0 = Instant::now();
        let mut b = Backlog::new(10);
        assert!(b.connected(500, t0).is_some());
        let Some(Note::Progress(u)) = b.tick(500, t0 + INTERVAL) else {
            panic!("no progress line for a stall");
        };
        assert_eq!(u.to_string(), "0 done, 500 left, 0/s, stalled");
    }

    #[test]
    fn a_lost_connection_ends_the_drain_and_the_next_session_starts_over() {
        let t0 = Instant::now();
        let mut b = Backlog::new(10);
        assert!(b.connected(1_000, t0).is_some());
        b.acked(400);
        b.interrupted();
        assert_eq!(b.tick(0, t0 + INTERVAL), None);
        assert_eq!(b.connected(600, t0 + INTERVAL), Some(Note::Started(600)));
        b.acked(595);
        assert_eq!(
            b.tick(5, t0 + INTERVAL + Duration::from_secs(2)),
            Some(Note::Drained(595, Duration::from_secs(2)))
        );
    }
}
