//! The zone a device's offset-less times are read in: an IANA zone with its
//! daylight-saving rules, or a fixed offset from UTC.
//!
//! Daylight saving makes two kinds of wall-clock time special, and both have
//! one stated rule here:
//! - **the repeated hour of a fall-back** (02:30 happens twice in Berlin on
//!   the last Sunday of October): the time is read as whichever of the two
//!   instants lies nearer to when the reading arrived, so a live device is
//!   right in both passes of the hour (taking the earlier one always would
//!   store the second pass on top of the first, where the unique key drops
//!   it); a reading of that hour that arrives hours late is read as the
//!   later instant;
//! - **the skipped hour of a spring-forward** (02:30 never happens in Berlin
//!   on the last Sunday of March): no clock that follows the zone shows it,
//!   so the device does not follow the zone; the reading is refused
//!   (`bad_datetime`) rather than stored at a guessed time.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Offsets of zones in use lie within UTC−12:00 … UTC+14:00.
pub const MIN_ZONE_OFFSET_S: i32 = -12 * 3600;
/// See [`MIN_ZONE_OFFSET_S`].
pub const MAX_ZONE_OFFSET_S: i32 = 14 * 3600;
/// Every zone in use is a whole multiple of 15 minutes from UTC.
pub const ZONE_STEP_S: i32 = 15 * 60;

/// Where offset-less times are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// An IANA zone (`Europe/Berlin`), daylight saving included.
    Named(Tz),
    /// A fixed offset (`+09:00`): what a learned or pinned offset is.
    Fixed(FixedOffset),
}

/// Why a text is not a [`Zone`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time zone: use an IANA name such as UTC or Europe/Berlin, \
     or a fixed offset such as +09:00 or UTC-05:30 (a multiple of 15 minutes \
     within -12:00..+14:00)"
)]
pub struct ZoneError(pub String);

/// Why a wall-clock time has no instant in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Localize {
    /// The time falls in the hour a spring-forward skips.
    Skipped,
}

impl Zone {
    /// Coordinated Universal Time.
    pub const UTC: Zone = Zone::Named(Tz::UTC);

    /// The instant `local` names in this zone; in a fall-back's repeated
    /// hour the one nearer to `arrival` (see the module's rules).
    pub fn localize(
        &self,
        local: NaiveDateTime,
        arrival: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Localize> {
        let candidates = match self {
            // The default zone, once per reading: UTC has no transitions, and
            // chrono-tz's search of them cost ~230 instructions per reading.
            Zone::Named(Tz::UTC) => return Ok(local.and_utc()),
            Zone::Named(tz) => map_local(tz, local),
            Zone::Fixed(offset) => map_local(offset, local),
        };
        match candidates {
            LocalResult::Single(t) => Ok(t),
            LocalResult::Ambiguous(early, late) => {
                let distance = |t: DateTime<Utc>| (t - arrival).abs();
                Ok(if distance(late) < distance(early) {
                    late
                } else {
                    early
                })
            }
            LocalResult::None => Err(Localize::Skipped),
        }
    }

    /// The zone's offset from UTC at `instant`.
    pub fn offset_at(&self, instant: DateTime<Utc>) -> FixedOffset {
        match self {
            Zone::Named(tz) => tz.offset_from_utc_datetime(&instant.naive_utc()).fix(),
            Zone::Fixed(offset) => *offset,
        }
    }

    /// A fixed zone `seconds` east of UTC, if that is a zone's offset (a
    /// multiple of 15 minutes within −12:00 … +14:00).
    pub fn fixed(seconds: i32) -> Option<Zone> {
        let plausible = (MIN_ZONE_OFFSET_S..=MAX_ZONE_OFFSET_S).contains(&seconds)
            && seconds % ZONE_STEP_S == 0;
        plausible
            .then(|| FixedOffset::east_opt(seconds))
            .flatten()
            .map(Zone::Fixed)
    }
}

fn map_local<Z: TimeZone>(zone: &Z, local: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
    zone.from_local_datetime(&local)
        .map(|t| t.with_timezone(&Utc))
}

impl From<Tz> for Zone {
    fn from(tz: Tz) -> Self {
        Zone::Named(tz)
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    /// An IANA name, or `±hh:mm`, `±hhmm`, `±hh`, each optionally after `UTC`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ZoneError(text.to_owned());
        if let Ok(tz) = Tz::from_str(text) {
            return Ok(Zone::Named(tz));
        }
        let offset = text
            .strip_prefix("UTC")
            .or_else(|| text.strip_prefix("GMT"))
            .unwrap_or(text);
        let seconds = parse_offset(offset).ok_or_else(error)?;
        Zone::fixed(seconds).ok_or_else(error)
    }
}

/// `±hh:mm`, `±hhmm`, `±hh` or `±h` in seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, text.get(1..)?),
        b'-' => (-1, text.get(1..)?),
        _ => return None,
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => (rest.get(..2)?, rest.get(2..)?),
        None => (rest, "0"),
    };
    let all_digits =
        |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(hours) || !all_digits(minutes) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    if minutes >= 60 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// `UTC+09:00`, `UTC-05:30`, `UTC+00:00`.
pub struct UtcOffset(pub FixedOffset);

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.local_minus_utc();
        let sign = if seconds < 0 { '-' } else { '+' };
        let minutes = seconds.unsigned_abs() / 60;
        write!(f, "UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Named(tz) => f.write_str(tz.name()),
            Zone::Fixed(offset) => UtcOffset(*offset).fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, 0))
            .unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn names_and_fixed_offsets_parse_and_print_back() {
        for (text, shown) in [
            ("UTC", "UTC"),
            ("Asia/Seoul", "Asia/Seoul"),
            ("+09:00", "UTC+09:00"),
            ("UTC+9", "UTC+09:00"),
            ("UTC-05:30", "UTC-05:30"),
            ("-0500", "UTC-05:00"),
            ("GMT+05:45", "UTC+05:45"),
            ("+14:00", "UTC+14:00"),
            ("-12", "UTC-12:00"),
        ] {
            let zone: Zone = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(zone.to_string(), shown, "{text}");
            assert_eq!(zone.to_string().parse::<Zone>(), Ok(zone), "{text}");
        }
    }

    #[test]
    fn implausible_offsets_and_names_are_refused() {
        for text in [
            "",
            "auto",
            "Mars/Olympus",
            "+15:00",
            "-13:00",
            "+09:10",
            "+9:60",
            "UTC+",
            "+",
            "+123:00",
            "+09:0a",
            "09:00",
            "+09:00:00",
            "UTC+٩",
        ] {
            assert!(text.parse::<Zone>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn berlin_fall_back_reads_the_repeated_hour_nearest_its_arrival() {
        let berlin = Zone::Named(chrono_tz::Europe::Berlin);
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
        let wall = local(2026, 10, 25, 2, 30);
        let first = utc(2026, 10, 25, 0, 30);
        let second = utc(2026, 10, 25, 1, 30);
        assert_eq!(berlin.localize(wall, first), Ok(first));
        assert_eq!(
            berlin.localize(wall, first + chrono::Duration::seconds(2)),
            Ok(first)
        );
        assert_eq!(
            berlin.localize(wall, second + chrono::Duration::seconds(2)),
            Ok(second)
        );
        // Hours late: the later instant.
        assert_eq!(berlin.localize(wall, utc(2026, 10, 26, 9, 0)), Ok(second));
    }

    #[test]
    fn berlin_spring_forward_skipped_hour_is_refused() {
        let berlin = Zone::Named(chrono_tz::Europe::Berlin);
        // 2026-03-29: 02:00 CET becomes 03:00 CEST.
        let arrival = utc(2026, 3, 29, 1, 0);
        assert_eq!(
            berlin.localize(local(2026, 3, 29, 2, 30), arrival),
            Err(Localize::Skipped)
        );
        assert_eq!(
            berlin.localize(local(2026, 3, 29, 1, 59), arrival),
            Ok(utc(2026, 3, 29, 0, 59))
        );
        assert_eq!(
            berlin.localize(local(2026, 3, 29, 3, 0), arrival),
            Ok(utc(2026, 3, 29, 1, 0))
        );
    }

    #[test]
    fn utc_reads_the_wall_clock_as_chrono_tz_does() {
        let arrival = utc(2026, 12, 7, 12, 0);
        for t in [
            local(2026, 3, 29, 2, 30),
            local(2026, 10, 25, 2, 30),
            NaiveDateTime::MIN,
            NaiveDateTime::MAX,
        ] {
            let by_tz = map_local(&Tz::UTC, t).single();
            assert_eq!(Zone::UTC.localize(t, arrival).ok(), by_tz, "{t}");
            assert_eq!(by_tz.map(|t| t.naive_utc()), Some(t));
        }
    }

    #[test]
    fn fixed_zones_have_no_daylight_saving() {
        let kolkata: Zone = "+05:30".parse().unwrap();
        assert_eq!(
            kolkata.localize(local(2026, 6, 1, 12, 0), utc(2026, 6, 1, 6, 30)),
            Ok(utc(2026, 6, 1, 6, 30))
        );
        assert_eq!(
            kolkata.offset_at(utc(2026, 1, 1, 0, 0)).local_minus_utc(),
            19_800
        );
        let ny = Zone::Named(chrono_tz::America::New_York);
        assert_eq!(
            ny.offset_at(utc(2026, 1, 15, 0, 0)).local_minus_utc(),
            -5 * 3600
        );
        assert_eq!(
            ny.offset_at(utc(2026, 7, 15, 0, 0)).local_minus_utc(),
            -4 * 3600
        );
    }
}
