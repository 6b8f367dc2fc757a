//! Numeric times as devices send them: Unix seconds, or milliseconds,
//! microseconds or nanoseconds since the epoch, possibly fractional.

use chrono::{DateTime, Utc};

/// The unit of a numeric time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnixUnit {
    /// Decided by magnitude: below 1e11 seconds, 1e14 milliseconds, 1e17
    /// microseconds, else nanoseconds. Each threshold is the year 5138 in the
    /// smaller unit, so every time from 1973 to 5138 is read correctly
    /// whatever unit it was sent in.
    #[default]
    Auto,
    /// Seconds since 1970-01-01 UTC.
    Seconds,
    /// Milliseconds since 1970-01-01 UTC.
    Millis,
    /// Microseconds since 1970-01-01 UTC.
    Micros,
    /// Nanoseconds since 1970-01-01 UTC.
    Nanos,
}

impl UnixUnit {
    /// The unit `value` is read in: itself, or for [`UnixUnit::Auto`] the one its magnitude says.
    pub fn resolve(self, value: f64) -> UnixUnit {
        if self != UnixUnit::Auto {
            return self;
        }
        let magnitude = value.abs();
        if magnitude < 1e11 {
            UnixUnit::Seconds
        } else if magnitude < 1e14 {
            UnixUnit::Millis
        } else if magnitude < 1e17 {
            UnixUnit::Micros
        } else {
            UnixUnit::Nanos
        }
    }

    /// `value` in this unit as a time with millisecond precision (floored), or
    /// `None` when it is not finite or beyond what chrono represents. Callers
    /// still check it against the column's range.
    pub fn to_datetime(self, value: f64) -> Option<DateTime<Utc>> {
        if !value.is_finite() {
            return None;
        }
        let micros_per_unit = match self.resolve(value) {
            UnixUnit::Seconds => 1e6,
            UnixUnit::Millis | UnixUnit::Auto => 1e3,
            UnixUnit::Micros => 1.0,
            UnixUnit::Nanos => 1e-3,
        };
        // Rounded to whole microseconds first, so that 1714557600.123 s (which
        // is 1714557600.12299990654 as a float) is still .123, then floored to
        // the millisecond like every other time.
        let micros = (value * micros_per_unit).round();
        // i64 spans ±292,000 years of microseconds; anything outside is
        // refused here rather than saturated by `as`.
        if !(-9.2e18..=9.2e18).contains(&micros) {
            return None;
        }
        let millis = (micros as i64).div_euclid(1000);
        DateTime::from_timestamp_millis(millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_instant_in_every_unit_reads_the_same() {
        let want = DateTime::from_timestamp_millis(1_714_557_600_123);
        for value in [
            1_714_557_600.123,
            1_714_557_600_123.0,
            1_714_557_600_123_000.0,
            1_714_557_600_123_000_000.0,
        ] {
            assert_eq!(UnixUnit::Auto.to_datetime(value), want, "{value}");
        }
        assert_eq!(
            UnixUnit::Millis.to_datetime(1_714_557_600.0),
            DateTime::from_timestamp_millis(1_714_557_600)
        );
    }

    #[test]
    fn before_the_epoch_floors_to_the_millisecond() {
        assert_eq!(
            UnixUnit::Seconds.to_datetime(-0.0005),
            DateTime::from_timestamp_millis(-1)
        );
    }

    #[test]
    fn what_cannot_be_a_time_is_none() {
        for value in [f64::NAN, f64::INFINITY, -f64::INFINITY, 1e300, -1e300] {
            assert_eq!(UnixUnit::Auto.to_datetime(value), None, "{value}");
            assert_eq!(UnixUnit::Seconds.to_datetime(value), None, "{value}");
        }
    }
}
