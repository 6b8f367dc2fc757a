//! Separated fields at fixed positions, e.g. a smart bin's
//! `"<level> <bin id> <YYYY-MM-DD> <hh:mm:ss>"` where `<level>` may be `FULL`.

use co2_wire::{Decoder, DeviceId};

use super::settings::{DelimitedSettings, FieldKind};
use super::target::{Row, Value};
use super::{Context, Decoded};

/// A configured delimited decoder.
#[derive(Debug, Clone)]
pub struct Delimited {
    separator: String,
    fields: Vec<Field>,
    times: Decoder,
}

#[derive(Debug, Clone)]
struct Field {
    kind: FieldKind,
    span: usize,
    flag_word: Option<String>,
    has_column: bool,
    has_flag: bool,
}

impl Delimited {
    /// Builds the decoder; the caller has validated the settings.
    pub fn new(settings: &DelimitedSettings, times: Decoder) -> Self {
        Self {
            separator: settings.separator.clone(),
            fields: settings
                .fields
                .iter()
                .map(|f| Field {
                    kind: f.kind,
                    span: f.span.max(1),
                    flag_word: f.flag_word.clone(),
                    has_column: f.column.is_some() && f.kind != FieldKind::Skip,
                    has_flag: f.flag_column.is_some(),
                })
                .collect(),
            times,
        }
    }

    /// Columns filled, in row order (field columns, then flag columns).
    pub fn columns(settings: &DelimitedSettings) -> Vec<String> {
        let mut columns: Vec<String> = settings
            .fields
            .iter()
            .filter(|f| f.kind != FieldKind::Skip)
            .filter_map(|f| f.column.clone())
            .collect();
        columns.extend(settings.fields.iter().filter_map(|f| f.flag_column.clone()));
        columns
    }

    /// Decodes one payload.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Decoded, &'static str> {
        let text = std::str::from_utf8(payload).map_err(|_| "not_utf8")?.trim();
        let parts: Vec<&str> = if self.separator == " " {
            text.split_whitespace().collect()
        } else {
            text.split(self.separator.as_str()).map(str::trim).collect()
        };
        let expected: usize = self.fields.iter().map(|f| f.span).sum();
        if parts.len() != expected {
            return Err("field_count");
        }
        let mut row: Row = Vec::with_capacity(self.fields.len() + 1);
        let mut flags: Row = Vec::new();
        let mut device = None;
        let mut at = 0;
        for field in &self.fields {
            let text = parts[at..at + field.span].join(" ");
            at += field.span;
            let value = match field.kind {
                FieldKind::Skip => continue,
                FieldKind::Number => {
                    let flagged = field
                        .flag_word
                        .as_deref()
                        .is_some_and(|w| w.eq_ignore_ascii_case(&text));
                    if field.has_flag {
                        flags.push(Value::Int(i64::from(flagged)));
                    }
                    if flagged {
                        Value::Null
                    } else {
                        match text.parse::<f64>() {
                            Ok(v) if v.is_finite() => Value::Float(v),
                            _ => return Err("bad_number"),
                        }
                    }
                }
                FieldKind::Integer => Value::Int(text.parse().map_err(|_| "bad_number")?),
                FieldKind::Text => {
                    if text.chars().count() > 255 {
                        return Err("field_too_long");
                    }
                    Value::Text(text)
                }
                FieldKind::Device => {
                    let id = DeviceId::parse(&text).map_err(|_| "bad_device")?;
                    let value = Value::Text(id.as_str().to_owned());
                    device = Some(id);
                    value
                }
                FieldKind::Datetime => {
                    let t = self
                        .times
                        .time_from_text(&text, ctx.now)
                        .map_err(|r| r.reason())?;
                    Value::Time(t.naive_utc())
                }
            };
            if field.has_column {
                row.push(value);
            }
        }
        row.extend(flags);
        Ok(Decoded {
            rows: vec![row],
            device: device.unwrap_or_else(|| ctx.device.clone()),
            reading: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::settings::FieldSettings;
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

    fn decode(payload: &str) -> Result<Decoded, &'static str> {
        let device = DeviceId::parse("fallback").unwrap();
        let ctx = Context {
            device: &device,
            device_from_source: false,
            topic: "bins/level",
            now: Utc::now(),
        };
        Delimited::new(&bins(), Decoder::default()).decode(payload.as_bytes(), &ctx)
    }

    #[test]
    fn a_bin_level_and_a_full_bin() {
        assert_eq!(
            Delimited::columns(&bins()),
            ["level", "bin_id", "measured_at", "full"]
        );
        let t = NaiveDate::from_ymd_opt(2020, 7, 13)
            .unwrap()
            .and_hms_opt(22, 43, 23)
            .unwrap();
        let d = decode("37.5 bin-7 2020-07-13 22:43:23").unwrap();
        assert_eq!(d.device.as_str(), "bin-7");
        assert_eq!(
            d.rows,
            [vec![
                Value::Float(37.5),
                Value::Text("bin-7".into()),
                Value::Time(t),
                Value::Int(0)
            ]]
        );
        let d = decode("FULL  bin-7   2020-07-13 22:43:23\n").unwrap();
        assert_eq!(d.rows[0][0], Value::Null);
        assert_eq!(d.rows[0][3], Value::Int(1));
    }

    #[test]
    fn malformed_lines_say_why() {
        assert_eq!(decode("37.5 bin-7 2020-07-13").unwrap_err(), "field_count");
        assert_eq!(
            decode("lots bin-7 2020-07-13 22:43:23").unwrap_err(),
            "bad_number"
        );
        assert_eq!(
            decode("1 bin;7 2020-07-13 22:43:23").unwrap_err(),
            "bad_device"
        );
        assert_eq!(
            decode("1 b 2020-13-13 22:43:23").unwrap_err(),
            "bad_datetime"
        );
    }
}
