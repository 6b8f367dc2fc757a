//! Which buckets a batch touched: per device, runs of consecutive buckets.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime};

/// Consecutive buckets of one device: `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The device (the series' first key column).
    pub device: String,
    /// The first bucket's start.
    pub from: NaiveDateTime,
    /// The end of the last bucket.
    pub to: NaiveDateTime,
}

/// The buckets of one tier that a set of readings fall in.
#[derive(Debug, Default, Clone)]
pub struct Touched {
    /// Bucket numbers by device: a bucket starts at `number * seconds`.
    buckets: BTreeMap<String, BTreeSet<i64>>,
}

/// The bucket number of `time` for buckets of `seconds` from the epoch.
pub fn bucket_of(time: NaiveDateTime, seconds: u32) -> i64 {
    time.and_utc().timestamp().div_euclid(i64::from(seconds))
}

/// The start of bucket `number`; `None` past chrono's range (not reachable
/// from a time chrono holds).
fn start_of(number: i64, seconds: u32) -> Option<NaiveDateTime> {
    at(number.checked_mul(i64::from(seconds))?)
}

/// The UTC time `secs` seconds after the epoch.
pub fn at(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|t| t.naive_utc())
}

impl Touched {
    /// Notes that `device` has a reading at `time`, for buckets of `seconds`.
    pub fn add(&mut self, device: &str, time: NaiveDateTime, seconds: u32) {
        let bucket = bucket_of(time, seconds);
        // Most readings of a batch are of a device already noted.
        match self.buckets.get_mut(device) {
            Some(buckets) => {
                buckets.insert(bucket);
            }
            None => {
                self.buckets
                    .insert(device.to_owned(), BTreeSet::from([bucket]));
            }
        }
    }

    /// True when nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The buckets noted, as they fall into coarser buckets `factor` times longer.
    pub fn coarser(&self, factor: i64) -> Touched {
        Touched {
            buckets: self
                .buckets
                .iter()
                .map(|(d, b)| {
                    (
                        d.clone(),
                        b.iter().map(|b| b.div_euclid(factor.max(1))).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Every (device, bucket start), sorted: the order claims are taken in.
    pub fn starts(&self, seconds: u32) -> Vec<(&str, NaiveDateTime)> {
        self.buckets
            .iter()
            .flat_map(|(d, b)| {
                b.iter()
                    .filter_map(move |b| Some((d.as_str(), start_of(*b, seconds)?)))
            })
            .collect()
    }

    /// Runs of consecutive buckets per device, sorted by device and time.
    pub fn spans(&self, seconds: u32) -> Vec<Span> {
        let mut spans: Vec<(String, i64, i64)> = Vec::new();
        for (device, bucket) in self
            .buckets
            .iter()
            .flat_map(|(d, b)| b.iter().map(move |b| (d, b)))
        {
            match spans.last_mut() {
                Some((d, _, last)) if d == device && *last + 1 == *bucket => *last = *bucket,
                _ => spans.push((device.clone(), *bucket, *bucket)),
            }
        }
        spans
            .into_iter()
            .filter_map(|(device, first, last)| {
                Some(Span {
                    device,
                    from: start_of(first, seconds)?,
                    to: start_of(last.checked_add(1)?, seconds)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn consecutive_minutes_of_a_device_are_one_span() {
        let mut t = Touched::default();
        for time in [
            "2026-01-01 10:00:59.999",
            "2026-01-01 10:01:00",
            "2026-01-01 10:03:30",
        ] {
            t.add("a", at(time), 60);
        }
        t.add("b", at("2026-01-01 10:00:00"), 60);
        assert_eq!(
            t.spans(60),
            [
                Span {
                    device: "a".into(),
                    from: at("2026-01-01 10:00:00"),
                    to: at("2026-01-01 10:02:00")
                },
                Span {
                    device: "a".into(),
                    from: at("2026-01-01 10:03:00"),
                    to: at("2026-01-01 10:04:00")
                },
                Span {
                    device: "b".into(),
                    from: at("2026-01-01 10:00:00"),
                    to: at("2026-01-01 10:01:00")
                },
            ]
        );
        let hours = t.coarser(60);
        assert_eq!(hours.spans(3600).len(), 2);
        assert_eq!(hours.starts(3600)[0], ("a", at("2026-01-01 10:00:00")));
    }

    #[test]
    fn times_before_the_epoch_fall_in_their_own_bucket() {
        let mut t = Touched::default();
        t.add("a", at("1969-12-31 23:59:30"), 60);
        assert_eq!(t.spans(60)[0].from, at("1969-12-31 23:59:00"));
    }

    proptest! {
        /// Every noted time lies in exactly one span of its device, and spans
        /// of one device neither touch nor overlap.
        #[test]
        fn spans_cover_every_time_once(
            times in proptest::collection::vec((0u8..3, -10_000_000i64..10_000_000), 1..200),
            seconds in prop::sample::select(vec![60u32, 300, 3600, 86_400]),
        ) {
            let mut t = Touched::default();
            let points: Vec<(String, NaiveDateTime)> = times
                .iter()
                .map(|(d, s)| (format!("d{d}"), DateTime::from_timestamp(*s, 0).unwrap().naive_utc()))
                .collect();
            for (d, time) in &points {
                t.add(d, *time, seconds);
            }
            let spans = t.spans(seconds);
            for (d, time) in &points {
                let covering = spans.iter().filter(|s| &s.device == d && s.from <= *time && *time < s.to).count();
                prop_assert_eq!(covering, 1);
            }
            for pair in spans.windows(2) {
                if pair[0].device == pair[1].device {
                    prop_assert!(pair[0].to < pair[1].from);
                }
            }
        }
    }
}
