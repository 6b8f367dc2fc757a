//! A JSON object of fields, e.g. `{"temp": 21.5, "humidity": 40}` from a DHT11.
//!
//! The stated rule: only top-level JSON numbers are readings. Strings,
//! booleans, nulls, arrays and nested objects are ignored (the time and device
//! keys aside); a message with no number at all is refused (`no_numeric_fields`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use co2_wire::{Decoder, DeviceId, UnixUnit};
use serde_json::{Map, Value as Json};

use super::layout::{Column, Layout};
use super::message::{Field, Message, Value};
use super::settings::{JsonMode, JsonSettings};
use super::Context;
use crate::pipeline::Reason;

/// Longest field name kept (the `field` column).
const MAX_FIELD_NAME: usize = 64;

/// Rows one message may become unless the route says otherwise.
pub const DEFAULT_MAX_FIELDS: usize = 64;

/// A configured JSON decoder.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    mode: JsonMode,
    time_field: String,
    device_field: Option<String>,
    /// For `columns` mode: the JSON keys, in column order.
    keys: Vec<Arc<str>>,
    time_unit: UnixUnit,
    max_fields: usize,
    times: Decoder,
}

impl JsonDecoder {
    /// Builds the decoder.
    pub fn new(settings: &JsonSettings, times: Decoder) -> Self {
        Self {
            mode: settings.mode,
            time_field: settings.time_field.clone().unwrap_or_else(|| "time".into()),
            device_field: settings.device_field.clone(),
            keys: settings
                .fields
                .keys()
                .map(|k| Arc::from(k.as_str()))
                .collect(),
            time_unit: settings.time_unit.into(),
            max_fields: settings.max_fields.unwrap_or(DEFAULT_MAX_FIELDS),
            times,
        }
    }

    /// `long`: a row per field of `(device, topic, time, field, value)`;
    /// `columns`: one row of `(device, time, <a column per mapped key>)`.
    pub fn layout(settings: &JsonSettings) -> Layout {
        match settings.mode {
            JsonMode::Long => Layout::Long(
                [
                    ("device", Column::Device),
                    ("topic", Column::Topic),
                    ("time", Column::Time),
                    ("field", Column::FieldName),
                    ("value", Column::FieldValue),
                ]
                .map(|(n, c)| (n.to_owned(), c))
                .into(),
            ),
            JsonMode::Columns => {
                let mut columns = vec![
                    ("device".to_owned(), Column::Device),
                    ("time".to_owned(), Column::Time),
                ];
                columns.extend(
                    settings.fields.iter().map(|(key, column)| {
                        (column.clone(), Column::Field(Arc::from(key.as_str())))
                    }),
                );
                Layout::Wide(columns)
            }
        }
    }

    /// Decodes one payload.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        let Json::Object(object) = serde_json::from_slice(payload).map_err(|_| Reason::BadJson)?
        else {
            return Err(Reason::NotAnObject);
        };
        let device = device(&object, self.device_field.as_deref(), ctx)?;
        let time = match object.get(&self.time_field) {
            Some(value) => time(value, &self.times, self.time_unit, ctx.now)?,
            None => ctx.now,
        }
        .naive_utc();
        let fields = match self.mode {
            JsonMode::Long => {
                let mut fields = Vec::new();
                for (key, value) in &object {
                    if key == &self.time_field || Some(key) == self.device_field.as_ref() {
                        continue;
                    }
                    let Some(number) = value.as_f64() else {
                        continue;
                    };
                    if key.is_empty() || key.chars().count() > MAX_FIELD_NAME {
                        return Err(Reason::BadFieldName);
                    }
                    if fields.len() >= self.max_fields {
                        return Err(Reason::TooManyFields);
                    }
                    fields.push(Field {
                        name: Arc::from(key.as_str()),
                        value: Value::Float(number),
                    });
                }
                if fields.is_empty() {
                    return Err(Reason::NoNumericFields);
                }
                fields
            }
            JsonMode::Columns => {
                let fields: Vec<Field> = self
                    .keys
                    .iter()
                    .map(|key| Field {
                        name: key.clone(),
                        value: object
                            .get(&**key)
                            .and_then(Json::as_f64)
                            .map_or(Value::Null, Value::Float),
                    })
                    .collect();
                if fields.iter().all(|f| f.value == Value::Null) {
                    return Err(Reason::NoNumericFields);
                }
                fields
            }
        };
        Ok(Message {
            device,
            time,
            tags: Vec::new(),
            fields,
            reading: None,
        })
    }
}

/// The device, given the one `field` names (see [`Context::device_named`]).
pub(super) fn device(
    object: &Map<String, Json>,
    field: Option<&str>,
    ctx: &Context<'_>,
) -> Result<DeviceId, Reason> {
    let named = match field.and_then(|f| object.get(f)) {
        Some(Json::String(s)) => Some(DeviceId::parse(s).map_err(|_| Reason::BadDevice)?),
        Some(Json::Number(n)) => {
            Some(DeviceId::parse(&n.to_string()).map_err(|_| Reason::BadDevice)?)
        }
        Some(_) => return Err(Reason::BadDevice),
        None => None,
    };
    ctx.device_named(named)
}

/// A time: a datetime string (read like the CO2 payload's) or a Unix time in
/// `unit`; either way checked against the column's range and the future bound.
pub(super) fn time(
    value: &Json,
    times: &Decoder,
    unit: UnixUnit,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Reason> {
    let checked = match value {
        Json::String(s) => times.time_from_text(s.trim(), now),
        Json::Number(n) => {
            let n = n.as_f64().ok_or(Reason::BadDatetime)?;
            times.time_from_unix(n, unit, now)
        }
        _ => return Err(Reason::BadDatetime),
    };
    Ok(checked?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(
        settings: &JsonSettings,
        payload: &str,
        topic_device: bool,
    ) -> Result<Message, &'static str> {
        let device = DeviceId::parse("from-topic").unwrap();
        let ctx = Context {
            device: &device,
            device_from_source: topic_device,
            trust_payload_device: true,
            seq: None,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        };
        JsonDecoder::new(settings, Decoder::default())
            .decode(payload.as_bytes(), &ctx)
            .map_err(Reason::as_str)
    }

    #[test]
    fn long_mode_keeps_numbers_and_ignores_the_rest() {
        let s = JsonSettings::default();
        let d = decode(
            &s,
            r#"{"temp": 21.5, "humidity": 40, "label": "kitchen", "ok": true, "nested": {"x": 1}, "list": [1], "time": "2024-05-01T10:00:00Z"}"#,
            true,
        )
        .unwrap();
        let fields: Vec<_> = d.fields.iter().map(|f| (&*f.name, &f.value)).collect();
        assert_eq!(
            fields,
            [
                ("humidity", &Value::Float(40.0)),
                ("temp", &Value::Float(21.5)),
            ]
        );
        let t = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .naive_utc();
        assert_eq!(d.time, t);
    }

    #[test]
    fn receive_time_without_a_time_field_and_device_from_a_key() {
        let s = JsonSettings {
            device_field: Some("id".into()),
            ..Default::default()
        };
        let d = decode(&s, r#"{"id": 42, "temp": 20}"#, false).unwrap();
        assert_eq!(d.device.as_str(), "42");
        assert_eq!(
            d.time,
            DateTime::from_timestamp(1_800_000_000, 0)
                .unwrap()
                .naive_utc()
        );
        assert_eq!(d.fields.len(), 1, "the device key is not a reading");
    }

    #[test]
    fn refusals() {
        let s = JsonSettings::default();
        assert_eq!(decode(&s, "temp=20", true).unwrap_err(), "bad_json");
        assert_eq!(decode(&s, "[1,2]", true).unwrap_err(), "not_an_object");
        assert_eq!(
            decode(&s, r#"{"label": "x", "n": {"a": 1}}"#, true).unwrap_err(),
            "no_numeric_fields"
        );
        assert_eq!(
            decode(&s, r#"{"temp": 1, "time": "soon"}"#, true).unwrap_err(),
            "bad_datetime"
        );
    }

    /// Regression (issue 11): numeric times far outside DATETIME's range went
    /// on to the writer, where sqlx's `push_bind` panicked the commit task.
    #[test]
    fn times_the_column_cannot_hold_are_refused_on_the_json_route() {
        let s = JsonSettings::default();
        for time in [
            "-99999999999",
            "3000000000000000000000",
            "1e300",
            "\"0999-01-01 00:00:00\"",
        ] {
            let payload = format!(r#"{{"temp": 1, "time": {time}}}"#);
            assert_eq!(
                decode(&s, &payload, true).unwrap_err(),
                "time_out_of_range",
                "{time}"
            );
        }
        let payload = r#"{"temp": 1, "time": "2099-01-01T00:00:00Z"}"#;
        assert_eq!(decode(&s, payload, true).unwrap_err(), "too_far_in_future");
        // Auto reads 3e15 as microseconds (the year 2065), so it is in the future.
        let payload = r#"{"temp": 1, "time": 3000000000000000}"#;
        assert_eq!(decode(&s, payload, true).unwrap_err(), "too_far_in_future");
        let seconds = JsonSettings {
            time_unit: crate::route::settings::TimeUnit::S,
            ..Default::default()
        };
        let payload = r#"{"temp": 1, "time": 3000000000000000}"#;
        assert_eq!(
            decode(&seconds, payload, true).unwrap_err(),
            "time_out_of_range"
        );
    }

    #[test]
    fn a_message_with_thousands_of_fields_is_one_rejection() {
        let fields: Vec<String> = (0..10_000).map(|i| format!("\"f{i}\": {i}")).collect();
        let payload = format!("{{{}}}", fields.join(","));
        let s = JsonSettings::default();
        assert_eq!(decode(&s, &payload, true).unwrap_err(), "too_many_fields");
        let few: Vec<String> = (0..64).map(|i| format!("\"f{i}\": {i}")).collect();
        assert_eq!(
            decode(&s, &format!("{{{}}}", few.join(",")), true)
                .unwrap()
                .fields
                .len(),
            64
        );
    }

    #[test]
    fn columns_mode_maps_keys() {
        let s = JsonSettings {
            mode: JsonMode::Columns,
            fields: [
                ("temp".to_owned(), "temperature".to_owned()),
                ("hum".to_owned(), "humidity".to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        let layout = JsonDecoder::layout(&s);
        let columns: Vec<&str> = layout.columns().iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(columns, ["device", "time", "humidity", "temperature"]);
        let d = decode(&s, r#"{"temp": 21.5}"#, true).unwrap();
        assert_eq!(d.field("hum"), Some(&Value::Null));
        assert_eq!(d.field("temp"), Some(&Value::Float(21.5)));
    }
}
