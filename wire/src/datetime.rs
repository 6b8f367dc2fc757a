//! A lenient parser for the datetimes real publishers send.
//!
//! chrono's format strings either demand zero padding or accept far more than
//! we want, and they cannot say *why* an input was refused, so the grammar is
//! spelled out here: `Y-M-D[ T]h:m:s[.frac][Z|±hh:mm|±hhmm|±hh]`.

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};

/// A parsed datetime: the wall-clock time plus the offset, if the text had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParsedDateTime {
    pub(crate) local: NaiveDateTime,
    pub(crate) offset: Option<FixedOffset>,
}

/// Parses `text`, truncating fractional seconds to milliseconds (the column's precision).
pub(crate) fn parse(text: &str) -> Option<ParsedDateTime> {
    let (date, rest) = text.split_once([' ', 'T', 't'])?;
    let (time, offset) = split_offset(rest.trim_start())?;
    let date = parse_date(date)?;
    let time = parse_time(time)?;
    Some(ParsedDateTime {
        local: NaiveDateTime::new(date, time),
        offset,
    })
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let mut parts = text.split('-');
    let year = small_uint(parts.next()?, 4)?;
    let month = small_uint(parts.next()?, 2)?;
    let day = small_uint(parts.next()?, 2)?;
    if parts.next().is_some() || year < 1000 {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    let (hms, frac) = match text.split_once(['.', ',']) {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (text, None),
    };
    let mut parts = hms.split(':');
    let hour = small_uint(parts.next()?, 2)?;
    let minute = small_uint(parts.next()?, 2)?;
    let second = small_uint(parts.next()?, 2)?;
    if parts.next().is_some() {
        return None;
    }
    let millis = match frac {
        None => 0,
        Some(frac) => {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Truncate, never round: rounding could carry into the next second.
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            digits.parse::<u32>().ok()?
        }
    };
    // `from_hms_milli_opt` would accept second 60 as a leap second; the DB would not.
    if second > 59 {
        return None;
    }
    NaiveTime::from_hms_milli_opt(hour, minute, second, millis)
}

/// Splits a trailing `Z` or numeric offset from the time part.
fn split_offset(text: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(time) = text.strip_suffix(['Z', 'z']) {
        return Some((time.trim_end(), FixedOffset::east_opt(0)));
    }
    let Some(pos) = text.rfind(['+', '-']) else {
        return Some((text, None));
    };
    let (time, offset) = text.split_at(pos);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits = &offset[1..];
    let (hours, minutes) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None if digits.len() == 2 => (digits, "00"),
        None => return None,
    };
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours = small_uint(hours, 2)?;
    let minutes = small_uint(minutes, 2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let seconds = i32::try_from(hours * 3600 + minutes * 60).ok()?;
    Some((time.trim_end(), FixedOffset::east_opt(sign * seconds)))
}

/// An unsigned decimal of 1 to `max_len` ASCII digits (no sign, no spaces).
fn small_uint(text: &str, max_len: usize) -> Option<u32> {
    if text.is_empty() || text.len() > max_len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        parse(text).map(|p| p.local).unwrap_or_default()
    }

    #[test]
    fn canonical_and_unpadded_forms_agree() {
        assert_eq!(local("2020-07-13 09:03:05"), local("2020-7-13 9:3:5"));
        assert_eq!(local("2020-07-13T09:03:05"), local("2020-07-13 09:03:05"));
    }

    #[test]
    fn fraction_is_truncated_to_milliseconds() {
        let t = local("2020-07-13 22:43:23.123999");
        assert_eq!(t.and_utc().timestamp_subsec_millis(), 123);
        assert_eq!(
            local("2020-07-13 22:43:23.5")
                .and_utc()
                .timestamp_subsec_millis(),
            500
        );
    }

    #[test]
    fn offsets_are_kept() {
        let p = parse("2020-07-13T22:43:23+02:00");
        assert_eq!(p.and_then(|p| p.offset), FixedOffset::east_opt(7200));
        let p = parse("2020-07-13T22:43:23-0530");
        assert_eq!(
            p.and_then(|p| p.offset),
            FixedOffset::west_opt(5 * 3600 + 1800)
        );
        let p = parse("2020-07-13T22:43:23Z");
        assert_eq!(p.and_then(|p| p.offset), FixedOffset::east_opt(0));
    }

    #[test]
    fn garbage_is_refused() {
        for text in [
            "",
            "2020-07-13",
            "22:43:23",
            "2020-13-01 00:00:00",
            "2020-02-30 00:00:00",
            "2020-07-13 24:00:00",
            "2020-07-13 23:60:00",
            "2020-07-13 23:59:60",
            "20-07-13 00:00:00",
            "2020-07-13 00:00:00.",
            "2020-07-13 00:00:00.x",
            "2020-07-13 00:00:00+25:00",
            "2020-07-13 00:00:00+1",
            "+2020-07-13 00:00:00",
            "2020-07-13 -1:00:00",
            "2020-07-13 00:00:00:00",
            "٢٠٢٠-07-13 00:00:00",
        ] {
            assert_eq!(parse(text), None, "{text:?} should be refused");
        }
    }
}
