//! [`Reading`]: one CO2 measurement, and the [`Decoder`] that builds it from a payload.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::datetime::{self, Unparsable, WallTime};
use crate::unix_time::UnixUnit;
use crate::zone::{Localize, Zone};

/// One validated measurement: a UTC time (millisecond precision) and a value.
///
/// Built only by [`Decoder::decode`] or [`Reading::new`], so a `Reading` always
/// fits the `co2_emissions` columns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    time: DateTime<Utc>,
    emissions: f64,
}

impl Reading {
    /// Builds a reading, truncating the time to milliseconds and rounding the
    /// value to the column's two decimals, then checking it against `limits`.
    pub fn new(time: DateTime<Utc>, emissions: f64, limits: &Limits) -> Result<Self, Rejection> {
        if !emissions.is_finite() {
            return Err(Rejection::NotFinite);
        }
        let emissions = round_cents(emissions);
        if emissions < limits.min_emissions || emissions > limits.max_emissions {
            return Err(Rejection::OutOfRange);
        }
        let time = column_time(time)?;
        Ok(Self { time, emissions })
    }

    /// When the measurement was taken, in UTC.
    pub fn time(&self) -> DateTime<Utc> {
        self.time
    }

    /// The measured value, rounded to two decimals.
    pub fn emissions(&self) -> f64 {
        self.emissions
    }

    /// The payload bytes to send, e.g. `2020-07-13 22:43:23Z|3500.00`: the
    /// canonical form with its time marked as UTC, so a bridge that reads
    /// offset-less times in another zone (for devices that send their local
    /// time) still reads this one at its instant.
    pub fn to_payload(&self) -> Vec<u8> {
        format!("{}Z|{:.2}", UtcText(self.time), self.emissions).into_bytes()
    }
}

/// Canonical form: UTC, no offset, milliseconds only when non-zero.
impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{:.2}", UtcText(self.time), self.emissions)
    }
}

/// A time as UTC without an offset, milliseconds only when non-zero.
struct UtcText(DateTime<Utc>);

impl fmt::Display for UtcText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let naive = self.0.naive_utc();
        if self.0.timestamp_subsec_millis() == 0 {
            write!(f, "{}", naive.format("%Y-%m-%d %H:%M:%S"))
        } else {
            write!(f, "{}", naive.format("%Y-%m-%d %H:%M:%S%.3f"))
        }
    }
}

/// Why a payload was refused. [`Rejection::reason`] is the metric label and
/// the `reason` stored with the dead-lettered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    /// The payload is longer than [`Limits::max_payload_bytes`].
    #[error("payload is larger than the configured maximum")]
    Oversized,
    /// The payload is not valid UTF-8.
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    /// There is no `|` between datetime and value.
    #[error("payload has no '|' between datetime and value")]
    MissingSeparator,
    /// The datetime part is not a date and time we understand.
    #[error("datetime is not 'YYYY-MM-DD hh:mm:ss[.fff][offset]'")]
    BadDatetime,
    /// The value part is not a decimal number.
    #[error("value is not a decimal number")]
    BadNumber,
    /// The value is NaN or infinite.
    #[error("value is NaN or infinite")]
    NotFinite,
    /// The value does not fit the configured range (by default the `DOUBLE(7,2)` column).
    #[error("value is outside the configured range")]
    OutOfRange,
    /// The reading is stamped further in the future than allowed.
    #[error("datetime is too far in the future")]
    TooFarInFuture,
    /// The time lies outside what a `DATETIME` column holds (years 1000–9999).
    #[error("datetime is outside the years 1000-9999 that the database can store")]
    TimeOutOfRange,
}

impl Rejection {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [Rejection; 9] = [
        Rejection::Oversized,
        Rejection::NotUtf8,
        Rejection::MissingSeparator,
        Rejection::BadDatetime,
        Rejection::BadNumber,
        Rejection::NotFinite,
        Rejection::OutOfRange,
        Rejection::TooFarInFuture,
        Rejection::TimeOutOfRange,
    ];

    /// A short, stable, snake_case name: a metric label and the dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Oversized => "oversized",
            Rejection::NotUtf8 => "not_utf8",
            Rejection::MissingSeparator => "missing_separator",
            Rejection::BadDatetime => "bad_datetime",
            Rejection::BadNumber => "bad_number",
            Rejection::NotFinite => "not_finite",
            Rejection::OutOfRange => "out_of_range",
            Rejection::TooFarInFuture => "too_far_in_future",
            Rejection::TimeOutOfRange => "time_out_of_range",
        }
    }
}

/// What a [`Decoder`] accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Smallest accepted value (after rounding to two decimals).
    pub min_emissions: f64,
    /// Largest accepted value (after rounding to two decimals).
    pub max_emissions: f64,
    /// How far after "now" a reading may be stamped (clock skew between Pi and server).
    pub max_future: Duration,
    /// Longest accepted payload in bytes.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    /// The `DOUBLE(7,2)` column's range, 5 minutes of skew, 256 bytes.
    fn default() -> Self {
        Self {
            min_emissions: -99_999.99,
            max_emissions: 99_999.99,
            max_future: Duration::from_secs(300),
            max_payload_bytes: 256,
        }
    }
}

/// Turns payload bytes into a [`Reading`]; configured once, used for every message.
#[derive(Debug, Clone)]
pub struct Decoder {
    zone: Zone,
    limits: Limits,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(Tz::UTC, Limits::default())
    }
}

impl Decoder {
    /// A decoder that reads offset-less datetimes in `zone`.
    pub fn new(zone: impl Into<Zone>, limits: Limits) -> Self {
        Self {
            zone: zone.into(),
            limits,
        }
    }

    /// The same decoder reading offset-less datetimes in `zone`.
    pub fn with_zone(&self, zone: Zone) -> Self {
        Self {
            zone,
            limits: self.limits.clone(),
        }
    }

    /// The zone offset-less datetimes are read in.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes `payload`; `now` is the receiver's clock, for the future check.
    pub fn decode(&self, payload: &[u8], now: DateTime<Utc>) -> Result<Reading, Rejection> {
        let (time, value) = self.split(payload)?;
        let time = self.time_from_text(time, now)?;
        self.finish(time, value)
    }

    /// The datetime and value texts of `payload`, trimmed, for a receiver
    /// that places the time itself (in a zone chosen per device) before
    /// [`Decoder::finish`].
    pub fn split<'p>(&self, payload: &'p [u8]) -> Result<(&'p str, &'p str), Rejection> {
        if payload.len() > self.limits.max_payload_bytes {
            return Err(Rejection::Oversized);
        }
        let text = std::str::from_utf8(payload).map_err(|_| Rejection::NotUtf8)?;
        let (time, value) = text.split_once('|').ok_or(Rejection::MissingSeparator)?;
        Ok((time.trim(), value.trim()))
    }

    /// The reading of a checked `time` and a payload's value text.
    pub fn finish(&self, time: DateTime<Utc>, value: &str) -> Result<Reading, Rejection> {
        let emissions = parse_number(value)?;
        Reading::new(time, emissions, &self.limits)
    }

    /// Reads a datetime the way payloads are read (lenient forms, offset-less
    /// times in the configured zone) and checks it like [`Decoder::check_time`].
    pub fn time_from_text(
        &self,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        let wall = WallTime::parse(text)?;
        let time = self.place(&wall, now)?;
        self.check_time(time, now)
    }

    /// The instant a parsed datetime names, read in this decoder's zone
    /// (see [`WallTime::place`]). `now` is when it arrived.
    pub fn place(&self, wall: &WallTime, now: DateTime<Utc>) -> Result<DateTime<Utc>, Rejection> {
        wall.place(self.zone, now)
    }

    /// Reads a Unix time (seconds or a finer `unit`, possibly fractional) and
    /// checks it like [`Decoder::check_time`].
    pub fn time_from_unix(
        &self,
        value: f64,
        unit: UnixUnit,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        let time = unit.to_datetime(value).ok_or(Rejection::TimeOutOfRange)?;
        self.check_time(time, now)
    }

    /// Truncates `time` to milliseconds and accepts it only if a `DATETIME(3)`
    /// column can hold it and it is at most `max_future` after `now`. Every
    /// time a route stores from a payload goes through here.
    pub fn check_time(
        &self,
        time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        let time = column_time(time)?;
        let max_future =
            chrono::Duration::from_std(self.limits.max_future).unwrap_or(chrono::Duration::MAX);
        if now
            .checked_add_signed(max_future)
            .is_some_and(|latest| time > latest)
        {
            return Err(Rejection::TooFarInFuture);
        }
        Ok(time)
    }
}

impl WallTime {
    /// Parses the lenient forms payloads use (`Y-M-D[ T]h:m:s[.frac][offset]`).
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        datetime::parse(text).map_err(|e| match e {
            Unparsable::Syntax => Rejection::BadDatetime,
            Unparsable::YearOutOfRange => Rejection::TimeOutOfRange,
        })
    }

    /// The instant this names: by its own offset, else in `zone` (see
    /// [`Zone::localize`] for daylight saving; a time in a skipped hour is
    /// `bad_datetime`). `arrival` is when the reading arrived.
    pub fn place(&self, zone: Zone, arrival: DateTime<Utc>) -> Result<DateTime<Utc>, Rejection> {
        match self.offset {
            Some(offset) => offset
                .from_local_datetime(&self.local)
                .single()
                .map(|t| t.with_timezone(&Utc))
                .ok_or(Rejection::BadDatetime),
            None => zone
                .localize(self.local, arrival)
                .map_err(|Localize::Skipped| Rejection::BadDatetime),
        }
    }
}

/// A plain decimal (optionally with an exponent); Rust's float parser would
/// also take words like `inf` and `NaN`, which are reported as such.
fn parse_number(text: &str) -> Result<f64, Rejection> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    match text.parse::<f64>() {
        Ok(v) if !v.is_finite() => Err(Rejection::NotFinite),
        Ok(v) if plain => Ok(v),
        _ => Err(Rejection::BadNumber),
    }
}

/// The earliest time a `DATETIME` column holds: 1000-01-01 00:00:00 UTC.
pub const MIN_TIME_MILLIS: i64 = -30_610_224_000_000;
/// The latest time a `DATETIME(3)` column holds: 9999-12-31 23:59:59.999 UTC.
pub const MAX_TIME_MILLIS: i64 = 253_402_300_799_999;

/// `time` truncated to milliseconds, if a `DATETIME(3)` column can hold it.
fn column_time(time: DateTime<Utc>) -> Result<DateTime<Utc>, Rejection> {
    let millis = time.timestamp_millis();
    if !(MIN_TIME_MILLIS..=MAX_TIME_MILLIS).contains(&millis) {
        return Err(Rejection::TimeOutOfRange);
    }
    DateTime::from_timestamp_millis(millis).ok_or(Rejection::TimeOutOfRange)
}

fn round_cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn decode(payload: &str) -> Result<Reading, Rejection> {
        Decoder::default().decode(payload.as_bytes(), now())
    }

    #[test]
    fn canonical_payload() {
        let r = decode("2020-07-13 22:43:23|3500.00").unwrap();
        assert_eq!(
            r.time(),
            Utc.with_ymd_and_hms(2020, 7, 13, 22, 43, 23).unwrap()
        );
        assert_eq!(r.emissions(), 3500.0);
        assert_eq!(r.to_string(), "2020-07-13 22:43:23|3500.00");
    }

    #[test]
    fn payloads_say_they_are_utc_and_read_the_same_in_any_zone() {
        let r = decode("2020-07-13 22:43:23.5|3500").unwrap();
        assert_eq!(r.to_payload(), b"2020-07-13 22:43:23.500Z|3500.00");
        let whole = decode("2020-07-13 22:43:23|3500").unwrap();
        assert_eq!(whole.to_payload(), b"2020-07-13 22:43:23Z|3500.00");
        // A bridge set to read its Pis' local times (Seoul, New York) still
        // stores this reading at its instant.
        for zone in [chrono_tz::Asia::Seoul, chrono_tz::America::New_York] {
            let bridge = Decoder::new(zone, Limits::default());
            assert_eq!(bridge.decode(&r.to_payload(), now()), Ok(r), "{zone}");
        }
    }

    #[test]
    fn lenient_forms_real_publishers_send() {
        let canonical = decode("2020-07-13 09:03:05|3500.00").unwrap();
        for form in [
            "2020-7-13 9:3:5|3500",
            "  2020-07-13 09:03:05 | 3500.0 \n",
            "2020-07-13T09:03:05Z|3500",
            "2020-07-13T11:03:05+02:00|3500",
            "2020-07-13 09:03:05.000|3.5e3",
        ] {
            assert_eq!(decode(form), Ok(canonical), "{form:?}");
        }
        let fractional = decode("2020-07-13 09:03:05.25|1").unwrap();
        assert_eq!(fractional.to_string(), "2020-07-13 09:03:05.250|1.00");
    }

    #[test]
    fn offsetless_times_are_read_in_the_configured_zone() {
        let berlin = Decoder::new(chrono_tz::Europe::Berlin, Limits::default());
        let r = berlin.decode(b"2020-07-13 12:00:00|1", now()).unwrap();
        assert_eq!(
            r.time(),
            Utc.with_ymd_and_hms(2020, 7, 13, 10, 0, 0).unwrap()
        );
        // An explicit offset wins over the zone.
        let r = berlin.decode(b"2020-07-13 12:00:00Z|1", now()).unwrap();
        assert_eq!(
            r.time(),
            Utc.with_ymd_and_hms(2020, 7, 13, 12, 0, 0).unwrap()
        );
        // 02:30 on the spring-forward night does not exist in Berlin.
        let gap = berlin.decode(b"2021-03-28 02:30:00|1", now());
        assert_eq!(gap, Err(Rejection::BadDatetime));
        // 02:30 on the fall-back night happens twice: the one nearer to the
        // reading's arrival is taken (see `Zone::localize`).
        let first = Utc.with_ymd_and_hms(2021, 10, 31, 0, 30, 0).unwrap();
        let second = Utc.with_ymd_and_hms(2021, 10, 31, 1, 30, 0).unwrap();
        for (arrival, want) in [(first, first), (second, second), (now(), second)] {
            let fold = berlin.decode(b"2021-10-31 02:30:00|1", arrival).unwrap();
            assert_eq!(fold.time(), want, "arrived {arrival}");
        }
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let cases: [(&[u8], Rejection); 11] = [
            (&[0xff, 0xfe, b'|', b'1'], Rejection::NotUtf8),
            (b"2020-07-13 22:43:23 3500", Rejection::MissingSeparator),
            (b"yesterday|3500", Rejection::BadDatetime),
            (b"2020-07-13 22:43:23|lots", Rejection::BadNumber),
            (b"2020-07-13 22:43:23|", Rejection::BadNumber),
            (b"2020-07-13 22:43:23|0x10", Rejection::BadNumber),
            (b"2020-07-13 22:43:23|NaN", Rejection::NotFinite),
            (b"2020-07-13 22:43:23|inf", Rejection::NotFinite),
            (b"2020-07-13 22:43:23|100000", Rejection::OutOfRange),
            (b"2026-01-01 00:10:00|1", Rejection::TooFarInFuture),
            (&[b'1'; 257], Rejection::Oversized),
        ];
        for (payload, want) in cases {
            let got = Decoder::default().decode(payload, now());
            assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn range_is_checked_after_rounding_like_the_column() {
        assert_eq!(
            decode("2020-07-13 22:43:23|99999.99").unwrap().emissions(),
            99999.99
        );
        // DOUBLE(7,2) would round this to 100000.00 and refuse it.
        assert_eq!(
            decode("2020-07-13 22:43:23|99999.996"),
            Err(Rejection::OutOfRange)
        );
        assert_eq!(
            decode("2020-07-13 22:43:23|-99999.99").unwrap().emissions(),
            -99999.99
        );
    }

    #[test]
    fn times_a_datetime_column_cannot_hold_are_refused_by_name() {
        for payload in [
            "999-12-31 23:59:59|1",
            "10000-01-01 00:00:00|1",
            // Valid text, but the offset moves it before the year 1000 in UTC.
            "1000-01-01 00:30:00+01:00|1",
        ] {
            assert_eq!(decode(payload), Err(Rejection::TimeOutOfRange), "{payload}");
        }
        assert!(decode("1000-01-01 00:00:00|1").is_ok());
        assert!(decode("1000-01-01 01:00:00+01:00|1").is_ok());
    }

    #[test]
    fn numeric_times_are_checked_like_text() {
        let d = Decoder::default();
        for value in [-99_999_999_999.0, 3e15 * 1e3, 1e18, -1e18, f64::NAN] {
            assert_eq!(
                d.time_from_unix(value, UnixUnit::Seconds, now()),
                Err(Rejection::TimeOutOfRange),
                "{value}"
            );
        }
        assert_eq!(
            d.time_from_unix(1e18, UnixUnit::Auto, now())
                .map(|t| t.timestamp()),
            Ok(1_000_000_000),
        );
        assert_eq!(
            d.time_from_unix(1_767_225_901.0, UnixUnit::Auto, now()),
            Err(Rejection::TooFarInFuture),
        );
    }

    #[test]
    fn the_column_bounds_are_the_datetime_range() {
        let min = DateTime::from_timestamp_millis(MIN_TIME_MILLIS).unwrap();
        let max = DateTime::from_timestamp_millis(MAX_TIME_MILLIS).unwrap();
        assert_eq!(min.to_rfc3339(), "1000-01-01T00:00:00+00:00");
        assert_eq!(
            max.to_rfc3339_opts(SecondsFormat::Millis, true),
            "9999-12-31T23:59:59.999Z"
        );
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        let d = Decoder::default();
        assert!(d.check_time(min, far).is_ok() && d.check_time(max, far).is_ok());
        let before = min - chrono::Duration::milliseconds(1);
        assert_eq!(d.check_time(before, far), Err(Rejection::TimeOutOfRange));
    }

    #[test]
    fn small_future_skew_is_tolerated() {
        assert!(decode("2026-01-01 00:04:59|1").is_ok());
    }

    #[test]
    fn reasons_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Rejection::ALL {
            assert!(r
                .reason()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(seen.insert(r.reason()));
        }
    }
}
