//! A JSON object of fields, as devices send it: a DHT11's
//! `{"temp": 21.5, "humidity": 40}`, a Python producer's strings
//! (`{"m_id": "0", "datetime": "...", "temp": "21.0"}`), Tasmota's nesting
//! (`{"AM2301": {"Temperature": 21.5}}`), Zigbee2MQTT's booleans.
//!
//! Every value is kept: numbers (and strings that are plain decimal numbers,
//! unless `numeric_strings = false`) as numbers, booleans as booleans, other
//! strings as text; `null` is skipped. Nested objects flatten to dotted names
//! (`AM2301.Temperature`), arrays to indices (`values.0`), bounded in depth
//! and field count. The time and device keys (dotted paths for nested ones)
//! are not fields. Three layouts: `long` (a `readings` row per field),
//! `columns` (mapped fields, one row) and `document` (the whole object in a
//! JSON column, one row).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use co2_wire::{DeviceId, UnixUnit};
use serde_json::{Map, Value as Json};

use super::batch::{self, BatchShape, Elements, Split, DEFAULT_MAX_ELEMENTS};
use super::flatten::{flatten, Shape, MAX_DEPTH};
use super::scalar::{plain_number, Leaf};
use super::{Context, Parts};
use crate::config::routes::{JsonMode, JsonSettings};
use crate::model::Reason;
use crate::model::{Column, Layout};
use crate::model::{Field, Message, Value};

/// Fields one message may have unless the route says otherwise.
pub const DEFAULT_MAX_FIELDS: usize = 64;

/// Values one document may hold unless the route says otherwise.
pub const DEFAULT_MAX_DOCUMENT_FIELDS: usize = 1024;

/// Nesting accepted unless the route says otherwise (the object itself is 1).
pub const DEFAULT_MAX_DEPTH: usize = 16;

/// The field a document message carries its JSON text in.
pub const DOCUMENT_FIELD: &str = "document";

/// A configured JSON decoder.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    mode: JsonMode,
    time_field: String,
    device_field: Option<String>,
    /// For `columns` mode: the field names, in column order.
    keys: Vec<Arc<str>>,
    time_unit: UnixUnit,
    numeric_strings: bool,
    shape: Shape,
    document: Arc<str>,
    /// How a batch's elements are found, for routes that take batches.
    batch: Option<BatchShape>,
}

impl JsonDecoder {
    /// Builds the decoder.
    pub fn new(settings: &JsonSettings) -> Self {
        let document = settings.mode == JsonMode::Document;
        let default_fields = if document {
            DEFAULT_MAX_DOCUMENT_FIELDS
        } else {
            DEFAULT_MAX_FIELDS
        };
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
            numeric_strings: settings.numeric_strings,
            shape: Shape {
                max_depth: settings
                    .max_depth
                    .unwrap_or(DEFAULT_MAX_DEPTH)
                    .min(MAX_DEPTH),
                max_fields: settings.max_fields.unwrap_or(default_fields),
                keep_fields: !document,
                check_names: settings.mode == JsonMode::Long,
            },
            document: Arc::from(DOCUMENT_FIELD),
            batch: (settings.batch || settings.batch_field.is_some()).then(|| BatchShape {
                field: settings.batch_field.clone(),
                max_elements: settings.max_elements.unwrap_or(DEFAULT_MAX_ELEMENTS),
                time_field: settings.time_field.clone().unwrap_or_else(|| "time".into()),
                device_field: settings.device_field.clone(),
            }),
        }
    }

    /// `long`: the `readings` layout; `columns`: one row of `(device, time,
    /// <a column per mapped field>)`; `document`: one row of `(device, topic,
    /// time, tags, document, content_key)`. Tag columns are added by the route.
    pub fn layout(settings: &JsonSettings) -> Layout {
        match settings.mode {
            JsonMode::Long => Layout::readings(),
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
            JsonMode::Document => Layout::wide([
                ("device", Column::Device),
                ("topic", Column::Topic),
                ("time", Column::Time),
                ("tags", Column::Tags),
                (DOCUMENT_FIELD, Column::Field(Arc::from(DOCUMENT_FIELD))),
                ("content_key", Column::ContentKey),
            ]),
        }
    }

    /// Decodes one payload: one message, or on a batching route each
    /// element of a batch as one (an element without a time or device takes
    /// its enclosing object's).
    pub(super) fn decode_parts<'p>(&self, payload: &'p [u8], ctx: &Context<'_>) -> Parts<'p> {
        let Some(shape) = &self.batch else {
            return Parts::One(self.decode(payload, ctx));
        };
        match batch::split(payload, shape) {
            Err(reason) => Parts::One(Err(reason)),
            Ok(Split::One) => Parts::One(self.decode(payload, ctx)),
            Ok(Split::Many(elements)) => Parts::Many(
                elements
                    .items
                    .iter()
                    .map(|item| (self.decode_with(item, ctx, &elements), *item))
                    .collect(),
            ),
        }
    }

    /// Decodes one payload as one object.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        self.decode_with(payload, ctx, &Elements::default())
    }

    /// Decodes one object, whose time and device, when it has none, are
    /// those of `enclosing` (a batch's enclosing object).
    fn decode_with(
        &self,
        payload: &[u8],
        ctx: &Context<'_>,
        enclosing: &Elements<'_>,
    ) -> Result<Message, Reason> {
        let mut picks = vec![self.time_field.as_str()];
        picks.extend(self.device_field.as_deref());
        let flat = flatten(payload, &self.shape, &picks)?;
        let mut picked = flat.picked.into_iter();
        let time_leaf = picked.next().flatten().or_else(|| enclosing.time.clone());
        let device_leaf = picked.next().flatten().or_else(|| enclosing.device.clone());
        let device = device_of(device_leaf, ctx)?;
        let time = time_of(time_leaf, self.time_unit, ctx)?.naive_utc();
        let fields = match self.mode {
            JsonMode::Long => {
                let mut fields = Vec::with_capacity(flat.fields.len());
                for (name, leaf) in flat.fields {
                    if let Some(value) = leaf.into_value(self.numeric_strings)? {
                        fields.push(Field {
                            name: Arc::from(name),
                            value,
                        });
                    }
                }
                if fields.is_empty() {
                    return Err(Reason::NoStorableFields);
                }
                fields
            }
            JsonMode::Columns => {
                let mut found = flat.fields;
                let mut fields = Vec::with_capacity(self.keys.len());
                for key in &self.keys {
                    let leaf = found
                        .iter()
                        .position(|(name, _)| name == &**key)
                        .map(|i| found.swap_remove(i).1);
                    let value = match leaf {
                        Some(leaf) => leaf.into_value(self.numeric_strings)?,
                        None => None,
                    };
                    fields.push(Field {
                        name: key.clone(),
                        value: value.unwrap_or(Value::Null),
                    });
                }
                if fields.iter().all(|f| f.value == Value::Null) {
                    return Err(Reason::NoStorableFields);
                }
                fields
            }
            JsonMode::Document => {
                // The object as it was sent (already parsed, so valid UTF-8
                // JSON within the depth a JSON column takes); MySQL keeps its
                // own normal form, MariaDB the text.
                let text = std::str::from_utf8(payload).map_err(|_| Reason::BadJson)?;
                vec![Field {
                    name: self.document.clone(),
                    value: Value::Text(text.to_owned()),
                }]
            }
        };
        Ok(Message {
            device,
            time,
            tags: ctx.tags.to_vec(),
            fields,
            reading: None,
            frame: None,
        })
    }
}

/// The device, given the device key's value (a string or an integer; see
/// [`Context::device_named`] for how it meets the topic's or token's).
fn device_of(leaf: Option<Leaf>, ctx: &Context<'_>) -> Result<DeviceId, Reason> {
    let named = match leaf {
        None | Some(Leaf::Null) => None,
        Some(Leaf::Text(s)) => Some(DeviceId::parse(&s).map_err(|_| Reason::BadDevice)?),
        Some(Leaf::Number(n)) => {
            Some(DeviceId::parse(&n.to_string()).map_err(|_| Reason::BadDevice)?)
        }
        Some(Leaf::Bool(_) | Leaf::Nested) => return Err(Reason::BadDevice),
    };
    ctx.device_named(named)
}

/// A time: absent or null is the receive time ([`Context::received`]); a number, or a string that is
/// one, is a Unix time in `unit` (`auto`: by magnitude); any other string is
/// a datetime read like the CO2 payload's (ISO 8601 with or without offset,
/// `%Y-%m-%d %H:%M:%S`, offset-less ones in the route's zone). Either way it
/// is checked against the column's range and the future bound.
fn time_of(leaf: Option<Leaf>, unit: UnixUnit, ctx: &Context<'_>) -> Result<DateTime<Utc>, Reason> {
    let unix = |v: f64| ctx.times.read_unix(v, unit);
    match leaf {
        None | Some(Leaf::Null) => Ok(ctx.received()),
        Some(Leaf::Number(n)) => unix(n.as_f64().ok_or(Reason::BadDatetime)?),
        Some(Leaf::Text(s)) => match plain_number(&s) {
            Ok(Some(v)) => unix(v),
            Ok(None) => ctx.times.read_text(s.trim()),
            Err(_) => Err(Reason::TimeOutOfRange),
        },
        Some(Leaf::Bool(_) | Leaf::Nested) => Err(Reason::BadDatetime),
    }
}

fn leaf(value: &Json) -> Leaf {
    match value {
        Json::Null => Leaf::Null,
        Json::Bool(b) => Leaf::Bool(*b),
        Json::Number(n) => Leaf::Number(n.clone()),
        Json::String(s) => Leaf::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => Leaf::Nested,
    }
}

/// The device of a parsed object (for the binary decoder's JSON form).
pub(super) fn device(
    object: &Map<String, Json>,
    field: Option<&str>,
    ctx: &Context<'_>,
) -> Result<DeviceId, Reason> {
    device_of(field.and_then(|f| object.get(f)).map(leaf), ctx)
}

/// The time of a parsed value (for the binary decoder's JSON form).
pub(super) fn time(
    value: &Json,
    unit: UnixUnit,
    ctx: &Context<'_>,
) -> Result<DateTime<Utc>, Reason> {
    time_of(Some(leaf(value)), unit, ctx)
}

#[cfg(test)]
mod tests;
