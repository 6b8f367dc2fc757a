//! What the fuzz targets check besides "no panic": the invariants every
//! record the bridge builds from a delivery must keep, whatever the bytes.
//!
//! - a rejection names a reason the metrics know (so it is counted and
//!   labelled, not lost), and its dead letter fits `rejected_messages`;
//! - rows have one value per target column, every time fits a `DATETIME(3)`
//!   column and the future bound, every float is finite;
//! - tags fit a 64-character column; no field name occurs twice in a
//!   message (it would collide with itself under the unique key); text
//!   values fit a TEXT column;
//! - a CO2 reading re-encodes to a payload that decodes to the same reading.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use co2_bridge::decode::{Origin, Reason, Record, Routes, Value};
use co2_bridge::Settings;
use co2_wire::{Decoder, MAX_TIME_MILLIS, MIN_TIME_MILLIS};

/// The receiver's clock for every run, so that a crash reproduces.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("a valid fixed time")
}

/// The routes of `config` (a bridge.toml text) plus the built-in CO2 route.
pub fn routes(config: &str) -> Routes {
    let settings: Settings = toml::from_str(config).expect("the fuzz config parses");
    Routes::from_settings(&settings).expect("the fuzz config is valid")
}

/// Decodes one MQTT delivery and checks its records (one, or one per
/// element of a batch).
pub fn deliver(routes: &Routes, topic: &[u8], payload: &[u8]) -> Vec<Record> {
    let records = routes.records(
        &Origin::Mqtt(Bytes::copy_from_slice(topic)),
        Bytes::copy_from_slice(payload),
        None,
        now(),
    );
    assert!(!records.is_empty(), "a delivery became no record");
    records.iter().for_each(check);
    records
}

/// Panics (which the fuzzer reports) when `record` breaks an invariant.
pub fn check(record: &Record) {
    let latest = now().timestamp_millis() + 300_000;
    let fits = |t: &chrono::NaiveDateTime| {
        let ms = t.and_utc().timestamp_millis();
        (MIN_TIME_MILLIS..=MAX_TIME_MILLIS).contains(&ms) && ms <= latest
    };
    match record {
        Record::Rejected { letter, .. } => {
            assert!(Reason::ALL.contains(&letter.reason), "reason {:?} is not pre-registered", letter.reason);
            assert!(letter.topic.chars().count() <= 255, "dead-letter topic too long");
            assert!(letter.payload.len() <= 1024, "dead-letter payload too long");
            assert!(letter.payload_bytes as usize >= letter.payload.len());
        }
        Record::Decoded { message, .. } => {
            assert!(!message.fields.is_empty(), "a message became no fields and no rejection");
            for (name, value) in &message.tags {
                assert!(!name.is_empty() && name.len() <= 64, "tag name {name:?}");
                let chars = value.chars().count();
                assert!((1..=64).contains(&chars), "tag value {value:?} does not fit its column");
                assert!(!value.chars().any(char::is_control), "tag value {value:?}");
            }
            let mut names = std::collections::HashSet::new();
            for field in &message.fields {
                assert!(names.insert(&field.name), "field {:?} twice in one message", field.name);
                if let Value::Text(text) = &field.value {
                    let fits = text.chars().count() <= 16_383 || &*field.name == "document";
                    assert!(fits, "text of {} characters", text.chars().count());
                }
            }
            assert!(fits(&message.time), "time {} does not fit the column or is too far ahead", message.time);
            for field in &message.fields {
                match &field.value {
                    Value::Time(t) => assert!(fits(t), "field time {t} does not fit"),
                    Value::Float(v) => assert!(v.is_finite(), "float {v} is not finite"),
                    _ => {}
                }
            }
            if let Some(reading) = &message.reading {
                let again = Decoder::default().decode(&reading.to_payload(), now());
                assert_eq!(again, Ok(*reading), "a reading does not round-trip");
            }
        }
        // A discovery announcement taken: nothing to store.
        Record::Absorbed { .. } => {}
    }
}

/// Splits fuzz input into a topic and a payload: the first byte is the topic's length.
pub fn split_delivery(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return (b"", b"");
    };
    rest.split_at(usize::from(len).min(rest.len()))
}
