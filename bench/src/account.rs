//! Loss and duplicate accounting: what was published against what the table holds.

use std::collections::HashMap;

use serde::Serialize;

use crate::stats::Latency;

/// One reading as the load generator sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sent {
    /// Device id (the `+` level of the topic).
    pub device: String,
    /// The reading's own time, milliseconds since the epoch (UTC).
    pub stamp_ms: i64,
}

/// One row of `co2_emissions`, as far as accounting cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `device`.
    pub device: String,
    /// `date_time`, ms since the epoch.
    pub date_time_ms: i64,
    /// `received_at` (set by the database at insert), ms since the epoch.
    pub received_at_ms: Option<i64>,
}

/// What happened to a set of published readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accounting {
    /// Readings published (distinct).
    pub published: u64,
    /// Published readings that have at least one row.
    pub stored: u64,
    /// Published readings without a row.
    pub lost: u64,
    /// Rows beyond the first for the same reading.
    pub duplicates: u64,
    /// Rows that match no published reading (another writer, or a corrupted value).
    pub unexpected: u64,
    /// Reading time → `received_at` of its first row.
    pub latency: Option<Latency>,
    /// The latest `received_at` among the stored readings, ms since the epoch.
    pub last_received_ms: Option<i64>,
}

/// Matches `sent` against `rows` by `(device, time)`.
pub fn account(sent: &[Sent], rows: &[Row]) -> Accounting {
    // key -> (rows seen, earliest received_at)
    let mut seen: HashMap<(&str, i64), (u64, Option<i64>)> = HashMap::with_capacity(sent.len());
    for s in sent {
        seen.entry((s.device.as_str(), s.stamp_ms))
            .or_insert((0, None));
    }
    let mut unexpected = 0;
    for row in rows {
        match seen.get_mut(&(row.device.as_str(), row.date_time_ms)) {
            Some((n, first)) => {
                *n += 1;
                *first = match (*first, row.received_at_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => unexpected += 1,
        }
    }
    let mut stored = 0;
    let mut duplicates = 0;
    let mut latencies = Vec::with_capacity(seen.len());
    let mut last_received_ms: Option<i64> = None;
    for ((_, stamp), (n, first)) in &seen {
        if *n > 0 {
            stored += 1;
            duplicates += n - 1;
            if let Some(at) = first {
                latencies.push(at - stamp);
                last_received_ms = Some(last_received_ms.map_or(*at, |l| l.max(*at)));
            }
        }
    }
    let published = seen.len() as u64;
    Accounting {
        published,
        stored,
        lost: published - stored,
        duplicates,
        unexpected,
        latency: Latency::of(latencies),
        last_received_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(device: &str, stamp_ms: i64) -> Sent {
        Sent {
            device: device.into(),
            stamp_ms,
        }
    }

    fn row(device: &str, t: i64, at: i64) -> Row {
        Row {
            device: device.into(),
            date_time_ms: t,
            received_at_ms: Some(at),
        }
    }

    #[test]
    fn lost_duplicated_and_unexpected_are_told_apart() {
        let s = [sent("a", 1), sent("a", 2), sent("b", 1), sent("b", 3)];
        let rows = [
            row("a", 1, 11),
            row("a", 1, 15), // a second row for the same reading
            row("b", 1, 21),
            row("b", 3, 13),
            row("c", 1, 99), // nobody sent this
        ];
        let a = account(&s, &rows);
        assert_eq!(
            (a.published, a.stored, a.lost, a.duplicates, a.unexpected),
            (4, 3, 1, 1, 1)
        );
        let l = a.latency.unwrap();
        // latencies: a1 -> 10 (the earliest row), b1 -> 20, b3 -> 10
        assert_eq!((l.count, l.p50_ms, l.max_ms), (3, 10, 20));
        assert_eq!(a.last_received_ms, Some(21));
    }

    #[test]
    fn a_reading_sent_twice_counts_once() {
        let a = account(&[sent("a", 1), sent("a", 1)], &[row("a", 1, 2)]);
        assert_eq!((a.published, a.stored, a.lost, a.duplicates), (1, 1, 0, 0));
    }

    #[test]
    fn nothing_stored() {
        let a = account(&[sent("a", 1)], &[]);
        assert_eq!((a.lost, a.latency, a.last_received_ms), (1, None, None));
    }
}
