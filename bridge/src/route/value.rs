//! One bare value per topic, the way ESPHome and Shelly publish
//! (`shellies/<id>/relay/0/power` → `12.5`, `esphome/<id>/sensor/temperature/state`
//! → `21.5`, `.../relay/0` → `on`). The field is named by the topic: its
//! `{field}` level if the filter names one, else its last level. Other named
//! levels are tags. The payload is a number (a plain decimal, spaces around
//! allowed), `true` or `false`, a JSON string (read like a JSON field's), or
//! any other text (a word such as `on`, or a text sensor's state). A bare
//! value carries no time: it is stamped with the time it arrived.

use std::sync::Arc;

use super::flatten::MAX_FIELD_NAME;
use super::scalar::{plain_number, text_value, Leaf};
use super::Context;
use crate::model::Layout;
use crate::model::Reason;
use crate::model::{Field, Message, Value};

/// The named level that names the field instead of being a tag.
pub const FIELD_LEVEL: &str = "field";

/// The `value` decoder (it has no settings).
#[derive(Debug, Clone, Default)]
pub struct ValueDecoder;

impl ValueDecoder {
    /// The long `readings` layout.
    pub fn layout() -> Layout {
        Layout::readings()
    }

    /// Decodes one payload.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        let text = std::str::from_utf8(payload).map_err(|_| Reason::NotUtf8)?;
        let value = bare_value(text)?;
        let mut tags = Vec::with_capacity(ctx.tags.len());
        let mut name = None;
        for (tag, level) in ctx.tags {
            if &**tag == FIELD_LEVEL && name.is_none() {
                name = Some(level.as_str());
            } else {
                tags.push((tag.clone(), level.clone()));
            }
        }
        let name = name
            .or_else(|| ctx.topic.rsplit('/').next())
            .unwrap_or_default();
        if name.is_empty()
            || name.chars().nth(MAX_FIELD_NAME).is_some()
            || name.chars().any(char::is_control)
        {
            return Err(Reason::BadFieldName);
        }
        Ok(Message {
            device: ctx.device.clone(),
            time: ctx.received().naive_utc(),
            tags,
            fields: vec![Field {
                name: Arc::from(name),
                value,
            }],
            reading: None,
            frame: None,
        })
    }
}

/// What one bare payload holds.
fn bare_value(text: &str) -> Result<Value, Reason> {
    let text = text.trim();
    if let Some(number) = plain_number(text)? {
        return Ok(Value::Float(number));
    }
    match text {
        "" | "null" => Err(Reason::NoStorableFields),
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        _ if text.starts_with(['{', '[']) => Err(Reason::NotAValue),
        _ if text.starts_with('"') => match serde_json::from_str::<String>(text) {
            Ok(inner) => match Leaf::Text(inner).into_value(true)? {
                Some(value) => Ok(value),
                None => Err(Reason::NoStorableFields),
            },
            // Text that merely starts with a quote is text like any other.
            Err(_) => text_value(text.to_owned()),
        },
        _ => text_value(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ReceiveClock;
    use chrono::DateTime;
    use co2_wire::DeviceId;
    use proptest::prelude::*;

    fn decode(topic: &str, tags: &[(&str, &str)], payload: &[u8]) -> Result<Message, &'static str> {
        let device = DeviceId::parse("shelly-1").unwrap();
        let tags: Vec<(Arc<str>, String)> = tags
            .iter()
            .map(|(n, v)| (Arc::from(*n), (*v).to_owned()))
            .collect();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let decoder = co2_wire::Decoder::default();
        let times = crate::route::MessageTimes::new(&decoder, Some(co2_wire::Zone::UTC), now);
        let ctx = Context {
            device: &device,
            device_from_source: true,
            trust_payload_device: false,
            seq: None,
            now,
            topic,
            tags: &tags,
            route: 0,
            clock: &ReceiveClock::default(),
            times: &times,
        };
        ValueDecoder.decode(payload, &ctx).map_err(Reason::as_str)
    }

    #[test]
    fn a_shelly_power_reading() {
        let m = decode(
            "shellies/shelly-1/relay/0/power",
            &[("channel", "0"), ("field", "power")],
            b"12.5",
        )
        .unwrap();
        assert_eq!(m.fields.len(), 1);
        assert_eq!(m.field("power"), Some(&Value::Float(12.5)));
        assert_eq!(m.tags, [(Arc::from("channel"), "0".to_owned())]);
        assert_eq!(
            m.time,
            DateTime::from_timestamp(1_800_000_000, 0)
                .unwrap()
                .naive_utc()
        );
    }

    #[test]
    fn without_a_field_level_the_last_level_names_it() {
        let m = decode("esphome/node/temperature", &[], b" 21.5\n").unwrap();
        assert_eq!(m.field("temperature"), Some(&Value::Float(21.5)));
        assert!(m.tags.is_empty());
    }

    #[test]
    fn numbers_booleans_and_words() {
        let value = |p: &[u8]| decode("t/x", &[], p).map(|m| m.fields[0].value.clone());
        assert_eq!(
            value(b"40"),
            Ok(Value::Float(40.0)),
            "an integer is a float"
        );
        assert_eq!(value(b"-1e-3"), Ok(Value::Float(-0.001)));
        assert_eq!(value(b"true"), Ok(Value::Bool(true)));
        assert_eq!(value(b"false"), Ok(Value::Bool(false)));
        assert_eq!(value(b"on"), Ok(Value::Text("on".into())));
        assert_eq!(value(b"ON"), Ok(Value::Text("ON".into())));
        assert_eq!(value(b"\"off\""), Ok(Value::Text("off".into())));
        assert_eq!(value(b"\"21.5\""), Ok(Value::Float(21.5)));
        assert_eq!(
            value(b"\"unterminated"),
            Ok(Value::Text("\"unterminated".into()))
        );
        assert_eq!(
            value("192.168.1.5 connected ✓".as_bytes()),
            Ok(Value::Text("192.168.1.5 connected ✓".into()))
        );
    }

    #[test]
    fn refusals() {
        let reason = |topic: &str, p: &[u8]| decode(topic, &[], p).unwrap_err();
        assert_eq!(reason("t/x", b""), "no_storable_fields");
        assert_eq!(reason("t/x", b"  \n"), "no_storable_fields");
        assert_eq!(reason("t/x", b"null"), "no_storable_fields");
        assert_eq!(reason("t/x", b"{\"power\": 1}"), "not_a_value");
        assert_eq!(reason("t/x", b"[1, 2]"), "not_a_value");
        assert_eq!(reason("t/x", b"1e400"), "not_finite");
        assert_eq!(reason("t/x", b"\xff\xfe"), "not_utf8");
        assert_eq!(
            reason("t/x", "x".repeat(16_384).as_bytes()),
            "field_too_long"
        );
        assert_eq!(reason("t/", b"1"), "bad_field_name");
        assert_eq!(
            reason(&format!("t/{}", "f".repeat(65)), b"1"),
            "bad_field_name"
        );
    }

    proptest! {
        /// Any payload is a value or a rejection with a registered reason;
        /// numbers are finite.
        #[test]
        fn any_payload_is_a_value_or_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match decode("t/x", &[], &bytes) {
                Ok(m) => {
                    prop_assert_eq!(m.fields.len(), 1);
                    if let Value::Float(v) = m.fields[0].value {
                        prop_assert!(v.is_finite());
                    }
                }
                Err(reason) => prop_assert!(Reason::ALL.iter().any(|r| r.as_str() == reason)),
            }
        }

        /// A float written by any program reads back as itself.
        #[test]
        fn written_floats_read_back(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            let m = decode("t/x", &[], v.to_string().as_bytes()).unwrap();
            prop_assert_eq!(&m.fields[0].value, &Value::Float(v));
        }
    }
}
