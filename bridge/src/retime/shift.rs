//! What `retime` is told on its command line: how far to move stored times
//! (`--by`) and which stored times to move (`--from`, `--to`).
//!
//! Both parsers are strict on purpose: a shift in the wrong direction or a
//! bound read in the wrong zone would quietly move the wrong rows, so
//! anything unclear is refused with what would be right.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta};

/// The largest shift accepted, in seconds: no zone is more than 26 hours
/// from another, and a device clock off by days is a different repair.
pub const MAX_SHIFT_S: i64 = 48 * 3600;

/// How far to move stored times: a non-zero whole number of seconds, at most
/// [`MAX_SHIFT_S`] either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    seconds: i64,
}

/// Why a `--by` value is not a shift.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShiftError {
    /// Nothing says which way the rows move.
    #[error("{0:?} has no sign: write +{0} (stored times move later) or -{0} (earlier)")]
    Unsigned(String),
    /// Not of the grammar.
    #[error("{0:?} is not a shift; write e.g. +5h, -9h, +5h30m, -05:30 or +90s")]
    Malformed(String),
    /// A fraction (`+5.5h`).
    #[error("{0:?}: no fractions; write +5h30m for five and a half hours")]
    Fraction(String),
    /// A shift of nothing.
    #[error("a shift of 0 moves nothing")]
    Zero,
    /// More than [`MAX_SHIFT_S`].
    #[error("{0:?} is more than 48 hours; a time zone is never that far off")]
    TooLarge(String),
}

impl Shift {
    /// A shift of `seconds`, checked like a parsed one.
    pub fn from_seconds(seconds: i64) -> Result<Self, ShiftError> {
        if seconds == 0 {
            return Err(ShiftError::Zero);
        }
        if seconds.unsigned_abs() > MAX_SHIFT_S.unsigned_abs() {
            return Err(ShiftError::TooLarge(format!("{seconds}s")));
        }
        Ok(Self { seconds })
    }

    /// The shift in seconds (negative: earlier).
    pub fn seconds(self) -> i64 {
        self.seconds
    }

    /// The shift as a duration.
    pub fn delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds)
    }

    /// `time` moved by the shift (`None` past chrono's range, which no
    /// `DATETIME` reaches).
    pub fn apply(self, time: NaiveDateTime) -> Option<NaiveDateTime> {
        time.checked_add_signed(self.delta())
    }
}

impl FromStr for Shift {
    type Err = ShiftError;

    fn from_str(text: &str) -> Result<Self, ShiftError> {
        let malformed = || ShiftError::Malformed(text.to_owned());
        let (negative, body) = match text.as_bytes().first() {
            Some(b'+') => (false, &text[1..]),
            Some(b'-') => (true, &text[1..]),
            Some(b'0'..=b'9') => return Err(ShiftError::Unsigned(text.to_owned())),
            _ => return Err(malformed()),
        };
        if body.contains(['.', ',']) {
            return Err(ShiftError::Fraction(text.to_owned()));
        }
        let magnitude = if body.contains(':') {
            clock(body)
        } else {
            units(body)
        }
        .ok_or_else(malformed)?;
        if magnitude == 0 {
            return Err(ShiftError::Zero);
        }
        if magnitude > MAX_SHIFT_S {
            return Err(ShiftError::TooLarge(text.to_owned()));
        }
        Ok(Self {
            seconds: if negative { -magnitude } else { magnitude },
        })
    }
}

/// `5h`, `30m`, `90s`, `5h30m`, `1h0m15s`: each unit at most once, in that
/// order, each a run of at most six digits.
fn units(body: &str) -> Option<i64> {
    let mut rest = body;
    let mut total: i64 = 0;
    let mut any = false;
    for (unit, seconds) in [('h', 3600), ('m', 60), ('s', 1)] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(unit) {
            continue;
        }
        let n = number(&rest[..digits])?;
        total = total.checked_add(n.checked_mul(seconds)?)?;
        rest = &rest[digits + 1..];
        any = true;
    }
    (any && rest.is_empty()).then_some(total)
}

/// `hh:mm` or `hh:mm:ss` (one or two hour digits; minutes and seconds two
/// digits, below 60).
fn clock(body: &str) -> Option<i64> {
    let parts: Vec<&str> = body.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [h, m] => (*h, *m, "00"),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    let sixty = |p: &str| {
        (p.len() == 2)
            .then(|| number(p))
            .flatten()
            .filter(|n| *n < 60)
    };
    if !(1..=2).contains(&h.len()) {
        return None;
    }
    Some(number(h)? * 3600 + sixty(m)? * 60 + sixty(s)?)
}

/// A run of one to six ASCII digits.
fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl fmt::Display for Shift {
    /// The shortest unit form, e.g. `+5h`, `-5h30m`, `+1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let s = self.seconds.unsigned_abs();
        let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
        write!(f, "{sign}")?;
        for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A `--from` or `--to` bound: a stored time, UTC (stored times are UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound(pub NaiveDateTime);

/// Why a `--from`/`--to` value is not a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time; write RFC 3339 (2026-01-05T09:00:00Z, 2026-01-05T04:00:00-05:00) \
     or UTC as 2026-01-05 or 2026-01-05 09:00:00"
)]
pub struct TimeError(String);

impl FromStr for TimeBound {
    type Err = TimeError;

    fn from_str(text: &str) -> Result<Self, TimeError> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(Self(t.naive_utc()));
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
                return Ok(Self(t));
            }
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(Self)
            .ok_or_else(|| TimeError(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Result<i64, ShiftError> {
        text.parse::<Shift>().map(Shift::seconds)
    }

    #[test]
    fn a_shift_is_signed_units_or_a_clock() {
        assert_eq!(secs("+5h"), Ok(5 * 3600));
        assert_eq!(secs("-9h"), Ok(-9 * 3600));
        assert_eq!(secs("+5h30m"), Ok(5 * 3600 + 1800));
        assert_eq!(secs("+1h0m15s"), Ok(3615));
        assert_eq!(secs("+90s"), Ok(90));
        assert_eq!(secs("+90m"), Ok(5400));
        assert_eq!(secs("-05:30"), Ok(-(5 * 3600 + 1800)));
        assert_eq!(secs("+5:30"), Ok(5 * 3600 + 1800));
        assert_eq!(secs("+00:00:01"), Ok(1));
        assert_eq!(secs("+48h"), Ok(MAX_SHIFT_S));
        assert_eq!(secs("-48:00"), Ok(-MAX_SHIFT_S));
    }

    #[test]
    fn a_shift_must_say_which_way() {
        for text in ["5h", "05:30", "90s"] {
            assert_eq!(secs(text), Err(ShiftError::Unsigned(text.into())), "{text}");
        }
        let message = "5h".parse::<Shift>().unwrap_err().to_string();
        assert!(
            message.contains("+5h") && message.contains("-5h"),
            "{message}"
        );
    }

    #[test]
    fn zero_and_more_than_two_days_are_refused() {
        for text in ["+0h", "-0s", "+0h0m0s", "+00:00", "-0:00:00"] {
            assert_eq!(secs(text), Err(ShiftError::Zero), "{text}");
        }
        for text in [
            "+48h1s",
            "-49h",
            "+172801s",
            "+48:00:01",
            "+99:00",
            "+999999h",
        ] {
            assert_eq!(secs(text), Err(ShiftError::TooLarge(text.into())), "{text}");
        }
        assert_eq!(Shift::from_seconds(0), Err(ShiftError::Zero));
        assert!(Shift::from_seconds(-MAX_SHIFT_S - 1).is_err());
        assert_eq!(Shift::from_seconds(-60).map(Shift::seconds), Ok(-60));
    }

    #[test]
    fn anything_unclear_is_refused_rather_than_guessed() {
        for text in [
            "",
            "+",
            "-",
            "+h",
            "+5",
            "+5x",
            "+5H",
            "+5 h",
            " +5h",
            "+5h ",
            "+-5h",
            "--5h",
            "++5h",
            "+5h5h",
            "+30m5h",
            "+5s30m",
            "+1h2m3s4s",
            "+5hh",
            "+h5",
            "+1d",
            "+1234567s",
            "+05:3",
            "+05:60",
            "+05:30:60",
            "+123:00",
            "+:30",
            "+05:",
            "+5:30:00:00",
            "+٥h",
            "+5h\u{301}",
            "\u{2212}5h",
            "+0x10s",
        ] {
            assert!(
                matches!(secs(text), Err(ShiftError::Malformed(_))),
                "{text:?}: {:?}",
                secs(text)
            );
        }
        assert_eq!(secs("+5.5h"), Err(ShiftError::Fraction("+5.5h".into())));
        assert_eq!(secs("-1,5h"), Err(ShiftError::Fraction("-1,5h".into())));
    }

    #[test]
    fn a_shift_prints_in_its_shortest_form() {
        for (text, shown) in [
            ("+5h", "+5h"),
            ("-05:30", "-5h30m"),
            ("+90s", "+1m30s"),
            ("+3600s", "+1h"),
            ("-1h0m1s", "-1h1s"),
        ] {
            assert_eq!(text.parse::<Shift>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn bounds_are_rfc_3339_or_utc() {
        let at = |y, mo, d, h, mi, s| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, s)
                .unwrap()
        };
        let parse = |t: &str| t.parse::<TimeBound>().map(|b| b.0);
        assert_eq!(parse("2026-01-05"), Ok(at(2026, 1, 5, 0, 0, 0)));
        assert_eq!(parse("2026-01-05 09:00:00"), Ok(at(2026, 1, 5, 9, 0, 0)));
        assert_eq!(parse("2026-01-05T09:00:00"), Ok(at(2026, 1, 5, 9, 0, 0)));
        assert_eq!(parse("2026-01-05T09:00:00Z"), Ok(at(2026, 1, 5, 9, 0, 0)));
        // An offset is honoured: the bound is the same instant in UTC.
        assert_eq!(
            parse("2026-01-05T04:00:00-05:00"),
            Ok(at(2026, 1, 5, 9, 0, 0))
        );
        assert_eq!(
            parse("2026-01-05 09:00:00.250"),
            Ok(at(2026, 1, 5, 9, 0, 0) + TimeDelta::milliseconds(250))
        );
        for bad in [
            "",
            "today",
            "2026-13-01",
            "2026-02-30",
            "2026-01-05 25:00:00",
            "9:00",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
