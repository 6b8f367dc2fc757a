//! Property tests: canonical payloads round-trip, and no input panics.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use co2_wire::{Decoder, Limits, Reading, TopicFilter};
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

    #[test]
    fn near_misses_of_the_format_never_panic(
        s in r"[ 0-9:.T+\-Z|eE]{0,40}",
    ) {
        let _ = Decoder::default().decode(s.as_bytes(), Utc::now());
    }

    #[test]
    fn arbitrary_topics_and_filters_never_panic(filter in "\\PC{0,30}", topic in "\\PC{0,30}") {
        if let Ok(f) = TopicFilter::parse(&filter) {
            let _ = f.matches(&topic);
        }
    }
}
