//! Property tests: canonical payloads round-trip, and no input panics.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use co2_wire::{
    Decoder, Limits, Reading, Rejection, TopicFilter, UnixUnit, MAX_TIME_MILLIS, MIN_TIME_MILLIS,
};
use proptest::prelude::*;

fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap()
}

prop_compose! {
    /// A reading with a time between 1970 and 2100 (ms precision) and a value in cents.
    fn reading()(millis in 0i64..4_102_444_800_000, cents in -9_999_999i64..=9_999_999) -> Reading {
        let time = DateTime::from_timestamp_millis(millis).unwrap();
        Reading::new(time, cents as f64 / 100.0, &Limits::default()).unwrap()
    }
}

proptest! {
    #[test]
    fn format_then_parse_round_trips(r in reading()) {
        let decoded = Decoder::default().decode(&r.to_payload(), far_future());
        prop_assert_eq!(decoded, Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Decoder::default().decode(&bytes, Utc::now());
    }

    /// The grammar's own characters mixed with multi-byte ones: the shape of
    /// the input that once panicked (`+1é1` inside an offset).
    #[test]
    fn near_misses_of_the_format_never_panic(
        s in r"[ 0-9:.T+\-Z|eEé€🦀\u{0660}]{0,40}",
    ) {
        let d = Decoder::default();
        let _ = d.decode(s.as_bytes(), Utc::now());
        let _ = d.time_from_text(&s, Utc::now());
    }

    /// Whatever is accepted fits a DATETIME(3) column and the future bound;
    /// whatever is refused says why.
    #[test]
    fn accepted_times_fit_the_column(s in r"[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}[ T][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}([+-][0-9]{2}(:?[0-9]{2})?|Z)?") {
        let now = Utc::now();
        match Decoder::default().time_from_text(&s, now) {
            Ok(t) => {
                prop_assert!((MIN_TIME_MILLIS..=MAX_TIME_MILLIS).contains(&t.timestamp_millis()));
                prop_assert!(t <= now + chrono::Duration::seconds(300));
            }
            Err(r) => prop_assert!(matches!(
                r,
                Rejection::BadDatetime | Rejection::TimeOutOfRange | Rejection::TooFarInFuture
            )),
        }
    }

    #[test]
    fn numeric_times_fit_the_column_or_are_refused(value in any::<f64>()) {
        let now = Utc::now();
        for unit in [UnixUnit::Auto, UnixUnit::Seconds, UnixUnit::Millis, UnixUnit::Nanos] {
            if let Ok(t) = Decoder::default().time_from_unix(value, unit, now) {
                prop_assert!((MIN_TIME_MILLIS..=MAX_TIME_MILLIS).contains(&t.timestamp_millis()));
            }
        }
    }

    #[test]
    fn arbitrary_topics_and_filters_never_panic(filter in "\\PC{0,30}", topic in "\\PC{0,30}") {
        if let Ok(f) = TopicFilter::parse(&filter) {
            let _ = f.matches(&topic);
        }
    }
}
