//! The datetime grammar: any text is a time that fits the column and reads
//! back as itself, or a named refusal.
#![no_main]

use chrono::SecondsFormat;
use co2_fuzz::now;
use co2_wire::{Decoder, Rejection, MAX_TIME_MILLIS, MIN_TIME_MILLIS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoder = Decoder::default();
    match decoder.time_from_text(text, now()) {
        Ok(time) => {
            let ms = time.timestamp_millis();
            assert!((MIN_TIME_MILLIS..=MAX_TIME_MILLIS).contains(&ms));
            assert!(time <= now() + chrono::Duration::seconds(300));
            let canonical = time.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(decoder.time_from_text(&canonical, now()), Ok(time), "{canonical}");
        }
        Err(r) => assert!(matches!(
            r,
            Rejection::BadDatetime | Rejection::TimeOutOfRange | Rejection::TooFarInFuture
        )),
    }
});
