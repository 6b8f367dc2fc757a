//! Files, e.g. camera snapshots: the raw bytes, or base64 inside JSON
//! (`{"m_id": 3, "datetime": "...", "photo": "<base64>"}`). The content type
//! is sniffed from the bytes; anything that is not a known image is refused.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value as Json;

use super::json::{device, time};
use super::Context;
use crate::config::routes::BinarySettings;
use crate::model::Reason;
use crate::model::{Column, Layout};
use crate::model::{Field, Message, Value};

/// The fields of an image message, which are also its columns.
const FIELDS: [&str; 3] = ["content_type", "size", "data"];

/// A configured binary decoder.
#[derive(Debug, Clone)]
pub struct BinaryDecoder {
    settings: BinarySettings,
    max_bytes: usize,
    names: [Arc<str>; 3],
}

impl BinaryDecoder {
    /// Builds the decoder; files larger than `max_bytes` are refused, never truncated.
    pub fn new(settings: &BinarySettings, max_bytes: usize) -> Self {
        Self {
            settings: settings.clone(),
            max_bytes,
            names: FIELDS.map(Arc::from),
        }
    }

    /// `(device, time, content_type, size, data)`.
    pub fn layout() -> Layout {
        let mut columns = vec![("device", Column::Device), ("time", Column::Time)];
        columns.extend(FIELDS.map(|f| (f, Column::Field(Arc::from(f)))));
        Layout::wide(columns)
    }

    /// Decodes one payload.
    pub fn decode(&self, payload: &Bytes, ctx: &Context<'_>) -> Result<Message, Reason> {
        let (device, time, data) = if payload.first() == Some(&b'{') {
            let Json::Object(object) =
                serde_json::from_slice(payload).map_err(|_| Reason::BadJson)?
            else {
                return Err(Reason::NotAnObject);
            };
            let device = device(&object, Some(&self.settings.device_field), ctx)?;
            let time = match object.get(&self.settings.time_field) {
                Some(v) => time(v, self.settings.time_unit.into(), ctx)?,
                None => ctx.received(),
            };
            let text = object
                .get(&self.settings.data_field)
                .and_then(Json::as_str)
                .ok_or(Reason::NoDataField)?;
            let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let data = base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .map_err(|_| Reason::BadBase64)?;
            (device, time, Bytes::from(data))
        } else {
            (ctx.device.clone(), ctx.received(), payload.clone())
        };
        if data.len() > self.max_bytes {
            return Err(Reason::Oversized);
        }
        let content_type = sniff(&data).ok_or(Reason::NotAnImage)?;
        let size = i64::try_from(data.len()).map_err(|_| Reason::Oversized)?;
        let [content_type_name, size_name, data_name] = self.names.clone();
        Ok(Message {
            device,
            time: time.naive_utc(),
            tags: ctx.tags.to_vec(),
            fields: vec![
                Field {
                    name: content_type_name,
                    value: Value::Text(content_type.to_owned()),
                },
                Field {
                    name: size_name,
                    value: Value::Int(size),
                },
                Field {
                    name: data_name,
                    value: Value::Bytes(data),
                },
            ],
            reading: None,
            frame: None,
        })
    }
}

/// The image type from its magic bytes.
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    match data {
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some("image/png"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ReceiveClock;
    use chrono::DateTime;
    use co2_wire::DeviceId;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];

    fn decode(payload: &[u8], max: usize) -> Result<Message, &'static str> {
        let device = DeviceId::parse("cam").unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let decoder = co2_wire::Decoder::default();
        let times = crate::route::MessageTimes::new(&decoder, Some(co2_wire::Zone::UTC), now);
        let ctx = Context {
            device: &device,
            device_from_source: false,
            trust_payload_device: true,
            seq: None,
            now,
            topic: "t",
            tags: &[],
            route: 0,
            clock: &ReceiveClock::default(),
            times: &times,
        };
        BinaryDecoder::new(&BinarySettings::default(), max)
            .decode(&Bytes::copy_from_slice(payload), &ctx)
            .map_err(Reason::as_str)
    }

    #[test]
    fn raw_and_base64_json_store_the_same_bytes() {
        let raw = decode(JPEG, 100).unwrap();
        assert_eq!(
            raw.field("content_type"),
            Some(&Value::Text("image/jpeg".into()))
        );
        assert_eq!(
            raw.field("data"),
            Some(&Value::Bytes(Bytes::from_static(JPEG)))
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
        let json = format!(r#"{{"m_id": 3, "datetime": "2024-05-01 10:00:00", "photo": "{b64}"}}"#);
        let d = decode(json.as_bytes(), 100).unwrap();
        assert_eq!(d.device.as_str(), "3");
        assert_eq!(d.field("data"), raw.field("data"));
        assert_eq!(d.field("size"), Some(&Value::Int(JPEG.len() as i64)));
    }

    #[test]
    fn refusals() {
        assert_eq!(decode(JPEG, 3).unwrap_err(), "oversized");
        assert_eq!(decode(b"GIF? no, text", 100).unwrap_err(), "not_an_image");
        assert_eq!(
            decode(br#"{"m_id": 1, "photo": "***"}"#, 100).unwrap_err(),
            "bad_base64"
        );
        assert_eq!(decode(br#"{"m_id": 1}"#, 100).unwrap_err(), "no_data_field");
    }

    /// Regression (issue 11): the binary route's numeric time reached the writer unchecked.
    #[test]
    fn times_the_column_cannot_hold_are_refused_on_the_binary_route() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
        for time in ["-99999999999", "1e300", "\"10000-01-01 00:00:00\""] {
            let json = format!(r#"{{"m_id": 3, "datetime": {time}, "photo": "{b64}"}}"#);
            assert_eq!(
                decode(json.as_bytes(), 100).unwrap_err(),
                "time_out_of_range",
                "{time}"
            );
        }
    }

    #[test]
    fn sniffs_common_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b""), None);
    }
}
