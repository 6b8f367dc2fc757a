//! Time partitions of one table: their bounds, and the DDL that makes,
//! extends and drops them. A partition is named after its exclusive upper
//! bound (`p20261208` holds rows before 2026-12-08); `pfuture` catches the
//! rest, so no insert ever finds no partition.

use chrono::{Datelike, Days, Months, NaiveDate};

/// How wide the partitions a table gets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// A partition a day: raw rows and the finest rollups, retention to the day.
    Day,
    /// A partition a month: coarse rollups, a few rows a day.
    Month,
}

/// The catch-all last partition.
pub const FUTURE: &str = "pfuture";

/// A partition's name for exclusive upper bound `bound`.
pub fn name(bound: NaiveDate) -> String {
    format!("p{}", bound.format("%Y%m%d"))
}

/// The bound a partition's name says, if it is one of ours.
pub fn bound_of(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix('p')?, "%Y%m%d").ok()
}

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

fn next_month(day: NaiveDate) -> NaiveDate {
    month_start(day)
        .checked_add_months(Months::new(1))
        .unwrap_or(day)
}

/// The bounds a table gets when first partitioned on `today`: months
/// from its oldest row on (so history is dropped a month at a time), then,
/// for [`Width::Day`], days for the last 31 days and `ahead` days to come.
pub fn initial_bounds(
    oldest: Option<NaiveDate>,
    today: NaiveDate,
    width: Width,
    ahead: u32,
) -> Vec<NaiveDate> {
    let recent = today - Days::new(31);
    let end = today + Days::new(u64::from(ahead));
    let mut bounds = Vec::new();
    let mut month = next_month(oldest.unwrap_or(recent).min(recent));
    let months_until = match width {
        Width::Day => recent,
        Width::Month => end,
    };
    while month <= months_until {
        bounds.push(month);
        month = next_month(month);
    }
    if width == Width::Month {
        bounds.push(month);
        return bounds;
    }
    let mut day = bounds.last().map_or(recent, |last| (*last).max(recent));
    while day <= end {
        if bounds.last().is_none_or(|last| *last < day) {
            bounds.push(day);
        }
        day = day + Days::new(1);
    }
    bounds
}

/// The bounds to add after `last` so partitions reach `ahead` days past `today`.
pub fn bounds_ahead(last: NaiveDate, today: NaiveDate, width: Width, ahead: u32) -> Vec<NaiveDate> {
    // Rows of the last day ahead need a partition whose bound is after it.
    let end = today + Days::new(u64::from(ahead) + 1);
    let mut bounds = Vec::new();
    let mut next = last;
    while next < end {
        next = match width {
            Width::Day => next + Days::new(1),
            Width::Month => next_month(next),
        };
        bounds.push(next);
    }
    bounds
}

/// `PARTITION p… VALUES LESS THAN ('…'), …, PARTITION pfuture VALUES LESS THAN (MAXVALUE)`.
pub fn definitions(bounds: &[NaiveDate]) -> String {
    let mut parts: Vec<String> = bounds
        .iter()
        .map(|b| {
            format!(
                "PARTITION {} VALUES LESS THAN ('{}')",
                name(*b),
                b.format("%Y-%m-%d")
            )
        })
        .collect();
    parts.push(format!("PARTITION {FUTURE} VALUES LESS THAN (MAXVALUE)"));
    parts.join(", ")
}

/// The partitions to drop for keeping `days` days on `today`: every one
/// whose rows are all older than the cutoff.
pub fn expired(names: &[String], today: NaiveDate, days: u32) -> Vec<String> {
    if days == 0 {
        return Vec::new();
    }
    let cutoff = today - Days::new(u64::from(days));
    names
        .iter()
        .filter(|n| bound_of(n).is_some_and(|b| b <= cutoff))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn history_gets_months_and_the_last_month_days() {
        let b = initial_bounds(Some(day("2026-09-15")), day("2026-12-07"), Width::Day, 7);
        assert_eq!(b[0], day("2026-10-01"));
        assert_eq!(b[1], day("2026-11-01"));
        assert_eq!(b[2], day("2026-11-06"));
        assert_eq!(*b.last().unwrap(), day("2026-12-14"));
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        let empty = initial_bounds(None, day("2026-12-07"), Width::Day, 7);
        assert_eq!(empty[0], day("2026-11-06"));
        let months = initial_bounds(Some(day("2025-01-20")), day("2026-12-07"), Width::Month, 7);
        assert_eq!(months[0], day("2025-02-01"));
        assert_eq!(*months.last().unwrap(), day("2027-01-01"));
    }

    #[test]
    fn ahead_and_expiry_go_by_the_bound() {
        assert_eq!(
            bounds_ahead(day("2026-12-09"), day("2026-12-07"), Width::Day, 3),
            [day("2026-12-10"), day("2026-12-11")]
        );
        let names: Vec<String> = ["p20261001", "p20261130", "p20261201", "pfuture"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            expired(&names, day("2026-12-07"), 7),
            ["p20261001", "p20261130"]
        );
        assert!(bounds_ahead(day("2026-12-20"), day("2026-12-07"), Width::Day, 3).is_empty());
        assert!(expired(&names, day("2026-12-07"), 0).is_empty());
        assert!(definitions(&[day("2026-12-08")])
            .ends_with("PARTITION pfuture VALUES LESS THAN (MAXVALUE)"));
        assert_eq!(bound_of(&name(day("2026-12-08"))), Some(day("2026-12-08")));
    }
}
