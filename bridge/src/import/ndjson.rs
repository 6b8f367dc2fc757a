//! NDJSON rows of an import: one JSON object per line, as the export writes
//! them (`{"device":"kitchen","date_time":"2026-01-05T09:00:00.000Z",
//! "emissions":412.5,…}`); the keys are the CSV header's names.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::csv::{Columns, Named};

/// The fields of one NDJSON row, as text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// The reading's time.
    pub time: String,
    /// Its value (a JSON number's text, or a string's).
    pub value: String,
    /// Its device, if the row names one.
    pub device: Option<String>,
    /// Its number, `seq_epoch` and `seq`, if the row has both.
    pub seq: Option<(String, String)>,
}

/// Reads NDJSON rows, with the key names given on the command line.
#[derive(Debug, Clone, Default)]
pub struct RowReader {
    time: Option<String>,
    value: Option<String>,
    device: Option<String>,
}

impl RowReader {
    /// A reader looking for the keys `named`, else the export's names.
    pub fn new(named: &Named<'_>) -> Self {
        Self {
            time: named.time.map(str::to_owned),
            value: named.value.map(str::to_owned),
            device: named.device.map(str::to_owned),
        }
    }

    /// The row of one line, or why it is not one.
    pub fn read(&self, line: &[u8]) -> Result<Row, String> {
        let object: Map<String, Value> = match serde_json::from_slice(line) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err("not a JSON object".to_owned()),
            Err(e) => return Err(format!("not JSON: {e}")),
        };
        let get = |named: &Option<String>, names: &[&str]| match named {
            Some(key) => object.get(key.as_str()),
            None => names.iter().find_map(|n| object.get(*n)),
        };
        let time = get(&self.time, Columns::time_names())
            .and_then(text)
            .ok_or("no time (date_time, time, …) string")?;
        let value = get(&self.value, Columns::value_names())
            .and_then(text)
            .ok_or("no value (emissions, value, …) number")?;
        let device = match get(&self.device, &["device"]) {
            None | Some(Value::Null) => None,
            Some(v) => Some(text(v).ok_or("device is not a string")?),
        };
        let seq = match (object.get("seq_epoch"), object.get("seq")) {
            (Some(e), Some(n)) => text(e).zip(text(n)),
            _ => None,
        };
        Ok(Row {
            time,
            value,
            device,
            seq,
        })
    }
}

/// A string's text, or a number's; `None` for anything else.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => {
            let mut out = String::new();
            let _ = write!(out, "{n}");
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exports_rows_read_back() {
        let r = RowReader::default();
        let row = r
            .read(br#"{"id":1,"device":"kitchen","date_time":"2026-01-05T09:00:00.250Z","emissions":412.5,"received_at":null,"redeliveries":0,"seq_epoch":"00000000000000aa","seq":7}"#)
            .unwrap();
        assert_eq!(
            row,
            Row {
                time: "2026-01-05T09:00:00.250Z".into(),
                value: "412.5".into(),
                device: Some("kitchen".into()),
                seq: Some(("00000000000000aa".into(), "7".into())),
            }
        );
        assert!(r.read(b"[1]").unwrap_err().contains("object"));
        assert!(r.read(b"{\"time\":\"x\"}").unwrap_err().contains("value"));
        assert!(r.read(b"{").unwrap_err().contains("JSON"));
        let named = RowReader::new(&Named {
            time: Some("t"),
            value: Some("v"),
            device: None,
        });
        let row = named
            .read(br#"{"t":"2026-01-05 09:00:00","v":"400"}"#)
            .unwrap();
        assert_eq!(
            (row.time.as_str(), row.value.as_str()),
            ("2026-01-05 09:00:00", "400")
        );
    }
}
