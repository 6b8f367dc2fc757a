//! Announcing a queue that nears one of its bounds (`queue_filling`), so that
//! whoever runs the Pi hears of it before readings are dropped: the bridge
//! counts these announcements and an alert names the device.
//!
//! A queue fills only while the broker cannot be reached, so the
//! announcement usually arrives when the link is back, behind the readings
//! queued before it: it says "this outage took the queue to 85 % of its
//! bound; a longer one drops readings".

use std::time::Duration;

use co2_wire::{DropCause, EventKind};

/// Levels announced, in percent of a bound.
const LEVELS: [u64; 2] = [80, 95];
/// Once the queue is below this, the levels are announced again next time.
const REARM_BELOW: u64 = 50;

/// Which levels were announced since the queue was last nearly empty.
#[derive(Debug, Default)]
pub struct LevelWatch {
    announced: u64,
}

impl LevelWatch {
    /// The level to announce for a queue `percent` full, if it is a new one:
    /// each level once, the highest reached, until the queue drains below half.
    pub fn next(&mut self, percent: u64) -> Option<u64> {
        if percent < REARM_BELOW {
            self.announced = 0;
            return None;
        }
        let reached = LEVELS.iter().rev().copied().find(|l| percent >= *l)?;
        (reached > self.announced).then(|| {
            self.announced = reached;
            reached
        })
    }
}

/// What the queue holds against its bounds.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    /// Readings waiting.
    pub readings: u64,
    /// The count bound in force (disk or memory) and its value.
    pub count_bound: (DropCause, u64),
    /// Age of the oldest reading, and `queue.max_age_s`, when both are known.
    pub age: Option<(Duration, Duration)>,
}

impl Fill {
    /// The bound nearest to being reached, and how near, in percent.
    pub fn nearest(&self) -> (DropCause, u64) {
        let (cause, max) = self.count_bound;
        let by_count = (cause, percent(self.readings, max));
        match self.age {
            Some((age, max_age)) => {
                let by_age = percent(millis(age), millis(max_age));
                if by_age > by_count.1 {
                    (DropCause::MaxAge, by_age)
                } else {
                    by_count
                }
            }
            None => by_count,
        }
    }

    /// The announcement for `watch`, if a new level was reached.
    pub fn announcement(&self, watch: &mut LevelWatch) -> Option<EventKind> {
        let (bound, percent) = self.nearest();
        watch.next(percent)?;
        Some(EventKind::QueueFilling {
            bound,
            percent,
            readings: self.readings,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn percent(value: u64, max: u64) -> u64 {
    value.saturating_mul(100) / max.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_once_until_the_queue_drains_below_half() {
        let mut w = LevelWatch::default();
        assert_eq!(w.next(10), None);
        assert_eq!(w.next(79), None);
        assert_eq!(w.next(80), Some(80));
        assert_eq!(w.next(90), None);
        assert_eq!(w.next(70), None, "no rearm above half");
        assert_eq!(w.next(85), None);
        assert_eq!(w.next(99), Some(95));
        assert_eq!(w.next(100), None);
        assert_eq!(w.next(49), None);
        // A jump straight past both levels says the highest only.
        assert_eq!(w.next(97), Some(95));
        assert_eq!(w.next(20), None);
        assert_eq!(w.next(81), Some(80));
    }

    #[test]
    fn the_nearest_bound_is_reported() {
        let hour = Duration::from_secs(3600);
        let fill = Fill {
            readings: 700,
            count_bound: (DropCause::MaxRows, 1000),
            age: Some((hour * 20, hour * 24)),
        };
        assert_eq!(fill.nearest(), (DropCause::MaxAge, 83));
        let fill = Fill { age: None, ..fill };
        assert_eq!(fill.nearest(), (DropCause::MaxRows, 70));
        let memory = Fill {
            readings: 19_000,
            count_bound: (DropCause::MemoryBound, 20_000),
            age: None,
        };
        let mut w = LevelWatch::default();
        assert_eq!(
            memory.announcement(&mut w),
            Some(EventKind::QueueFilling {
                bound: DropCause::MemoryBound,
                percent: 95,
                readings: 19_000
            })
        );
        assert_eq!(memory.announcement(&mut w), None);
        // A zero bound (never configured so) cannot divide by zero.
        assert_eq!(percent(5, 0), 500);
    }
}
