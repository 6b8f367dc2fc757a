//! Separated fields at fixed positions, e.g. a smart bin's
//! `"<level> <bin id> <YYYY-MM-DD> <hh:mm:ss>"` where `<level>` may be `FULL`.

use std::sync::Arc;

use co2_wire::DeviceId;

use super::Context;
use crate::config::routes::{DelimitedSettings, FieldKind};
use crate::model::Reason;
use crate::model::{Column, Layout};
use crate::model::{Field, Message, Value};

/// A configured delimited decoder.
#[derive(Debug, Clone)]
pub struct Delimited {
    separator: String,
    fields: Vec<Part>,
}

/// One field of the payload and where it goes.
#[derive(Debug, Clone)]
struct Part {
    kind: FieldKind,
    span: usize,
    flag_word: Option<String>,
    /// The field the value is stored as (its column), if it is kept.
    name: Option<Arc<str>>,
    /// The 0/1 field that says the flag word was sent.
    flag: Option<Arc<str>>,
}

impl Delimited {
    /// Builds the decoder; the caller has validated the settings.
    pub fn new(settings: &DelimitedSettings) -> Self {
        Self {
            separator: settings.separator.clone(),
            fields: settings
                .fields
                .iter()
                .map(|f| Part {
                    kind: f.kind,
                    span: f.span.max(1),
                    flag_word: f.flag_word.clone(),
                    name: f
                        .column
                        .as_deref()
                        .filter(|_| f.kind != FieldKind::Skip)
                        .map(Arc::from),
                    flag: f.flag_column.as_deref().map(Arc::from),
                })
                .collect(),
        }
    }

    /// One column per kept field, then the flag columns; each holds the field of its name.
    pub fn layout(settings: &DelimitedSettings) -> Layout {
        let mut columns: Vec<&str> = settings
            .fields
            .iter()
            .filter(|f| f.kind != FieldKind::Skip)
            .filter_map(|f| f.column.as_deref())
            .collect();
        columns.extend(
            settings
                .fields
                .iter()
                .filter_map(|f| f.flag_column.as_deref()),
        );
        Layout::wide(
            columns
                .into_iter()
                .map(|c| (c, Column::Field(Arc::from(c)))),
        )
    }

    /// Decodes one payload.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| Reason::NotUtf8)?
            .trim();
        let parts: Vec<&str> = if self.separator == " " {
            text.split_whitespace().collect()
        } else {
            text.split(self.separator.as_str()).map(str::trim).collect()
        };
        let expected: usize = self.fields.iter().map(|f| f.span).sum();
        if parts.len() != expected {
            return Err(Reason::FieldCount);
        }
        let mut fields = Vec::with_capacity(self.fields.len() + 1);
        let mut flags = Vec::new();
        let mut device = None;
        let mut time = None;
        let mut at = 0;
        for part in &self.fields {
            let text = parts
                .get(at..at + part.span)
                .ok_or(Reason::FieldCount)?
                .join(" ");
            at += part.span;
            let value = match part.kind {
                FieldKind::Skip => continue,
                FieldKind::Number => {
                    let flagged = part
                        .flag_word
                        .as_deref()
                        .is_some_and(|w| w.eq_ignore_ascii_case(&text));
                    if let Some(flag) = &part.flag {
                        flags.push(Field {
                            name: flag.clone(),
                            value: Value::Int(i64::from(flagged)),
                        });
                    }
                    if flagged {
                        Value::Null
                    } else {
                        match text.parse::<f64>() {
                            Ok(v) if v.is_finite() => Value::Float(v),
                            _ => return Err(Reason::BadNumber),
                        }
                    }
                }
                FieldKind::Integer => Value::Int(text.parse().map_err(|_| Reason::BadNumber)?),
                FieldKind::Text => {
                    if text.chars().count() > 255 {
                        return Err(Reason::FieldTooLong);
                    }
                    Value::Text(text)
                }
                FieldKind::Device => {
                    let id = DeviceId::parse(&text).map_err(|_| Reason::BadDevice)?;
                    let value = Value::Text(id.as_str().to_owned());
                    device = Some(id);
                    value
                }
                FieldKind::Datetime => {
                    let t = ctx.times.read_text(&text)?.naive_utc();
                    time.get_or_insert(t);
                    Value::Time(t)
                }
            };
            if let Some(name) = &part.name {
                fields.push(Field {
                    name: name.clone(),
                    value,
                });
            }
        }
        fields.extend(flags);
        Ok(Message {
            device: ctx.device_named(device)?,
            time: time.unwrap_or_else(|| ctx.received().naive_utc()),
            tags: ctx.tags.to_vec(),
            fields,
            reading: None,
            frame: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::FieldSettings;
    use crate::route::ReceiveClock;
    use chrono::{NaiveDate, Utc};

    fn bins() -> DelimitedSettings {
        let field = |column: &str, kind, span| FieldSettings {
            column: Some(column.into()),
            kind,
            span,
            flag_word: None,
            flag_column: None,
        };
        let mut level = field("level", FieldKind::Number, 1);
        level.flag_word = Some("FULL".into());
        level.flag_column = Some("full".into());
        DelimitedSettings {
            separator: " ".into(),
            fields: vec![
                level,
                field("bin_id", FieldKind::Device, 1),
                field("measured_at", FieldKind::Datetime, 2),
            ],
        }
    }

    fn decode(payload: &str) -> Result<Message, Reason> {
        let device = DeviceId::parse("fallback").unwrap();
        let now = Utc::now();
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
        Delimited::new(&bins()).decode(payload.as_bytes(), &ctx)
    }

    #[test]
    fn a_bin_level_and_a_full_bin() {
        let layout = Delimited::layout(&bins());
        let columns: Vec<&str> = layout.columns().iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(columns, ["level", "bin_id", "measured_at", "full"]);
        let t = NaiveDate::from_ymd_opt(2020, 7, 13)
            .unwrap()
            .and_hms_opt(22, 43, 23)
            .unwrap();
        let d = decode("37.5 bin-7 2020-07-13 22:43:23").unwrap();
        assert_eq!(d.device.as_str(), "bin-7");
        assert_eq!(d.time, t);
        let values: Vec<(&str, &Value)> = d.fields.iter().map(|f| (&*f.name, &f.value)).collect();
        assert_eq!(
            values,
            [
                ("level", &Value::Float(37.5)),
                ("bin_id", &Value::Text("bin-7".into())),
                ("measured_at", &Value::Time(t)),
                ("full", &Value::Int(0))
            ]
        );
        let d = decode("FULL  bin-7   2020-07-13 22:43:23\n").unwrap();
        assert_eq!(d.field("level"), Some(&Value::Null));
        assert_eq!(d.field("full"), Some(&Value::Int(1)));
    }

    #[test]
    fn malformed_lines_say_why() {
        assert_eq!(
            decode("37.5 bin-7 2020-07-13").unwrap_err(),
            Reason::FieldCount
        );
        assert_eq!(
            decode("lots bin-7 2020-07-13 22:43:23").unwrap_err(),
            Reason::BadNumber
        );
        assert_eq!(
            decode("1 bin;7 2020-07-13 22:43:23").unwrap_err(),
            Reason::BadDevice
        );
        assert_eq!(
            decode("1 b 2020-13-13 22:43:23").unwrap_err(),
            Reason::BadDatetime
        );
    }
}
