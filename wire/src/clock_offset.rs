//! How far the time a reading carries is from when it arrived, and what such
//! a difference means.
//!
//! A reading stamped by a device and received moments later carries a time a
//! little before its arrival: the difference is the network's delay, seconds
//! at most. A difference that sits near a whole multiple of 15 minutes, hours
//! long, is almost never a clock that drifted: it is a device that sends its
//! local wall-clock time, read in another zone than its own.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};

use crate::zone::{UtcOffset, Zone, MAX_ZONE_OFFSET_S, MIN_ZONE_OFFSET_S, ZONE_STEP_S};

/// How near a multiple of 15 minutes a difference must be to be taken for a
/// zone offset: a live reading's delay plus a clock that is a little off.
pub const ZONE_TOLERANCE_S: i64 = 120;

/// A carried time minus an arrival time: positive when the reading claims
/// to be from later than it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockOffset {
    millis: i64,
}

impl ClockOffset {
    /// `carried − arrived`.
    pub fn between(carried: DateTime<Utc>, arrived: DateTime<Utc>) -> Self {
        Self::from_millis(
            carried
                .timestamp_millis()
                .saturating_sub(arrived.timestamp_millis()),
        )
    }

    /// An offset of `millis` milliseconds.
    pub const fn from_millis(millis: i64) -> Self {
        Self { millis }
    }

    /// The offset in milliseconds.
    pub const fn millis(self) -> i64 {
        self.millis
    }

    /// The offset in seconds.
    pub fn seconds(self) -> f64 {
        self.millis as f64 / 1000.0
    }

    /// The zone offset this difference sits near: the nearest multiple of 15
    /// minutes within [`ZONE_TOLERANCE_S`], inside −12:00 … +14:00. `Some`
    /// of UTC+00:00 when the difference is small.
    pub fn nearest_zone(self) -> Option<FixedOffset> {
        let millis = self.millis;
        let tolerance = ZONE_TOLERANCE_S * 1000;
        // Beyond the widest zones nothing is near one, and what is left
        // rounds in i64 without overflow (rounding in i128 called a 128-bit
        // division, ~80 instructions per observed reading).
        let widest = i64::from(MIN_ZONE_OFFSET_S) * 1000 - tolerance
            ..=i64::from(MAX_ZONE_OFFSET_S) * 1000 + tolerance;
        if !widest.contains(&millis) {
            return None;
        }
        let step = i64::from(ZONE_STEP_S) * 1000;
        let nearest = (millis + step / 2).div_euclid(step) * step;
        if (millis - nearest).abs() > tolerance {
            return None;
        }
        let seconds = i32::try_from(nearest / 1000).ok()?;
        if !(MIN_ZONE_OFFSET_S..=MAX_ZONE_OFFSET_S).contains(&seconds) {
            return None;
        }
        FixedOffset::east_opt(seconds)
    }

    /// True when the difference looks like a zone mistake: near a non-zero
    /// zone offset (see [`ClockOffset::nearest_zone`]).
    pub fn is_zone_like(self) -> bool {
        self.nearest_zone()
            .is_some_and(|zone| zone.local_minus_utc() != 0)
    }

    /// The fixed [`Zone`] of [`ClockOffset::nearest_zone`].
    pub fn as_zone(self) -> Option<Zone> {
        self.nearest_zone()
            .and_then(|offset| Zone::fixed(offset.local_minus_utc()))
    }
}

/// `9 h 00 min ahead`, `5 h 00 min behind`, `12 min 05 s ahead`, `3 s behind`.
impl fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direction = if self.millis < 0 { "behind" } else { "ahead" };
        let seconds = (self.millis.unsigned_abs() + 500) / 1000;
        if seconds >= 3600 {
            let minutes = (seconds + 30) / 60;
            write!(f, "{} h {:02} min {direction}", minutes / 60, minutes % 60)
        } else if seconds >= 60 {
            write!(f, "{} min {:02} s {direction}", seconds / 60, seconds % 60)
        } else {
            write!(f, "{seconds} s {direction}")
        }
    }
}

/// What a difference between a reading's time and its arrival suggests, in
/// words for a dead letter, a log line or the doctor: `subject` names what
/// to configure (`"route co2 or of this device"`).
///
/// `wall` is the offset of the device's own wall-clock time (the text it
/// sent, read as UTC) from its arrival, when the text had no offset: that is
/// the zone the device lives in, whatever zone it was read in.
pub fn explain(error: ClockOffset, wall: Option<ClockOffset>, subject: &str) -> String {
    let mut text = arrival_words(error);
    if !error.is_zone_like() {
        return text;
    }
    match wall.and_then(ClockOffset::nearest_zone) {
        Some(zone) => {
            text.push_str(&format!(
                ": local time of {}? set the time zone of {subject}",
                UtcOffset(zone)
            ));
        }
        None if wall.is_none() => {
            text.push_str(": the device's clock or its offset is wrong; check its time sync");
        }
        None => {}
    }
    text
}

/// `9 h 00 min ahead of its arrival`, `5 h 00 min behind its arrival`.
pub fn arrival_words(offset: ClockOffset) -> String {
    let of = if offset.millis() < 0 { "" } else { " of" };
    format!("{offset}{of} its arrival")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(seconds: i64) -> ClockOffset {
        ClockOffset::from_millis(seconds * 1000)
    }

    #[test]
    fn names_zone_offsets_within_tolerance() {
        let zone = |s| offset(s).nearest_zone().map(|z| z.local_minus_utc());
        assert_eq!(zone(9 * 3600), Some(9 * 3600));
        assert_eq!(zone(9 * 3600 - 2), Some(9 * 3600));
        assert_eq!(zone(9 * 3600 - 120), Some(9 * 3600));
        assert_eq!(zone(9 * 3600 - 121), None);
        assert_eq!(zone(-5 * 3600 - 3), Some(-5 * 3600));
        assert_eq!(zone(5 * 3600 + 1800), Some(5 * 3600 + 1800));
        assert_eq!(zone(5 * 3600 + 2700), Some(5 * 3600 + 2700));
        assert_eq!(zone(-2), Some(0));
        assert_eq!(zone(14 * 3600), Some(14 * 3600));
        assert_eq!(zone(15 * 3600), None);
        assert_eq!(zone(-13 * 3600), None);
        assert_eq!(zone(14 * 3600 + 120), Some(14 * 3600));
        assert_eq!(zone(14 * 3600 + 121), None);
        assert_eq!(zone(-12 * 3600 - 120), Some(-12 * 3600));
        assert_eq!(zone(-12 * 3600 - 121), None);
        assert_eq!(zone(7 * 60), None);
        assert!(!offset(-2).is_zone_like());
        assert!(offset(-5 * 3600).is_zone_like());
        assert_eq!(ClockOffset::from_millis(i64::MIN).nearest_zone(), None);
        assert_eq!(ClockOffset::from_millis(i64::MAX).nearest_zone(), None);
    }

    #[test]
    fn reads_like_a_person_would_say_it() {
        assert_eq!(offset(9 * 3600 - 1).to_string(), "9 h 00 min ahead");
        assert_eq!(offset(-5 * 3600).to_string(), "5 h 00 min behind");
        assert_eq!(offset(-(5 * 3600 + 1800)).to_string(), "5 h 30 min behind");
        assert_eq!(offset(725).to_string(), "12 min 05 s ahead");
        assert_eq!(offset(-3).to_string(), "3 s behind");
        assert!(!ClockOffset::from_millis(i64::MIN).to_string().is_empty());
    }

    #[test]
    fn explains_a_zone_mistake_with_the_devices_own_zone() {
        assert_eq!(
            explain(
                offset(9 * 3600),
                Some(offset(9 * 3600)),
                "route co2 or of this device"
            ),
            "9 h 00 min ahead of its arrival: local time of UTC+09:00? set the time zone \
             of route co2 or of this device"
        );
        // Read in Berlin (UTC+1 in winter), sent in Seoul: 8 h off, the device lives at +9.
        assert_eq!(
            explain(
                offset(8 * 3600),
                Some(offset(9 * 3600)),
                "route co2 or of this device"
            ),
            "8 h 00 min ahead of its arrival: local time of UTC+09:00? set the time zone \
             of route co2 or of this device"
        );
        assert_eq!(
            explain(offset(9 * 3600), None, "x"),
            "9 h 00 min ahead of its arrival: the device's clock or its offset is wrong; \
             check its time sync"
        );
        assert_eq!(
            explain(offset(400), Some(offset(400)), "x"),
            "6 min 40 s ahead of its arrival"
        );
        assert_eq!(
            explain(offset(-5 * 3600), Some(offset(-5 * 3600)), "x"),
            "5 h 00 min behind its arrival: local time of UTC-05:00? set the time zone of x"
        );
    }
}
