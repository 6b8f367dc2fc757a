//! The two export formats, both ways: rows to CSV or NDJSON text, and one
//! value of that text back to a typed cell (what a resumed export reads its
//! cursor with, and what an import will read rows with).
//!
//! Both write a value the same way: times as ISO 8601 UTC
//! (`2024-05-01T10:00:00.250Z`, with as many fractional digits as the column
//! keeps), numbers as the shortest text that reads back to the same value,
//! bytes as lowercase hex. CSV (RFC 4180): a header row, CRLF after each
//! record, a field quoted when it holds a comma, quote, CR or LF (quotes
//! doubled), NULL an empty field and the empty string `""` (PostgreSQL's
//! convention: spreadsheets show both as an empty cell, a careful reader
//! tells them apart). NDJSON: an object per line, keys in column order, NULL
//! `null`, numbers as JSON numbers, JSON columns as JSON.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use super::query::Cell;
use super::table::{ColumnSpec, Kind};

/// How an export writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values, RFC 4180, with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    /// The media type an HTTP answer says.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// Writes rows of one table's columns in one format.
pub struct RowWriter {
    format: Format,
    columns: Vec<ColumnSpec>,
    /// Decides which CSV fields need quotes (RFC 4180's rule).
    csv: csv_core::Writer,
    /// JSON-encoded column names, `"name":`, made once.
    keys: Vec<String>,
}

impl RowWriter {
    /// A writer of `columns` in `format`.
    pub fn new(format: Format, columns: &[ColumnSpec]) -> Self {
        let keys = columns
            .iter()
            .map(|c| {
                let mut key = serde_json::to_string(&c.name).unwrap_or_else(|_| "\"\"".into());
                key.push(':');
                key
            })
            .collect();
        Self {
            format,
            columns: columns.to_vec(),
            csv: csv_core::WriterBuilder::new()
                .quote_style(csv_core::QuoteStyle::Necessary)
                .build(),
            keys,
        }
    }

    /// The header (CSV's first record; nothing for NDJSON).
    pub fn header(&self, out: &mut Vec<u8>) {
        if self.format == Format::Csv {
            for (i, column) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                self.csv_field(out, Some(column.name.as_bytes()));
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Appends `row` (a cell per column) to `out`.
    pub fn row(&self, row: &[Cell], out: &mut Vec<u8>) {
        let mut text = String::new();
        match self.format {
            Format::Csv => {
                for (i, (cell, column)) in row.iter().zip(&self.columns).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match cell {
                        Cell::Null => {}
                        Cell::Text(t) => self.csv_field(out, Some(t.as_bytes())),
                        _ => {
                            text.clear();
                            plain(cell, column.kind, &mut text);
                            self.csv_field(out, Some(text.as_bytes()));
                        }
                    }
                }
                out.extend_from_slice(b"\r\n");
            }
            Format::Ndjson => {
                out.push(b'{');
                for (i, (cell, key)) in row.iter().zip(&self.keys).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(key.as_bytes());
                    let kind = self.columns.get(i).map_or(Kind::Text, |c| c.kind);
                    json_value(cell, kind, &mut text, out);
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }

    /// One CSV field: empty for NULL, `""` for the empty string, quoted when needed.
    fn csv_field(&self, out: &mut Vec<u8>, value: Option<&[u8]>) {
        match value {
            None => {}
            Some([]) => out.extend_from_slice(b"\"\""),
            Some(v) if self.csv.should_quote(v) => {
                out.push(b'"');
                let start = out.len();
                // Worst case every byte a quote, doubled.
                out.resize(start + 2 * v.len(), 0);
                let (_, _, written) = csv_core::quote(
                    v,
                    out.get_mut(start..).unwrap_or_default(),
                    b'"',
                    b'"',
                    true,
                );
                out.truncate(start + written);
                out.push(b'"');
            }
            Some(v) => out.extend_from_slice(v),
        }
    }
}

/// A JSON value for `cell`.
fn json_value(cell: &Cell, kind: Kind, text: &mut String, out: &mut Vec<u8>) {
    text.clear();
    match cell {
        Cell::Null => out.extend_from_slice(b"null"),
        Cell::Int(_) | Cell::UInt(_) | Cell::Float(_) | Cell::Float32(_) => {
            plain(cell, kind, text);
            out.extend_from_slice(text.as_bytes());
        }
        // DECIMAL text is a JSON number as the server writes it.
        Cell::Text(t) if kind == Kind::Decimal && is_json_number(t) => {
            out.extend_from_slice(t.as_bytes())
        }
        Cell::Text(t) if kind == Kind::Json => {
            // Re-encoded: a stored document may hold newlines between its
            // tokens, and an NDJSON line may not.
            match serde_json::from_str::<serde_json::Value>(t) {
                Ok(value) => {
                    let _ = serde_json::to_writer(&mut *out, &value);
                }
                Err(_) => {
                    let _ = serde_json::to_writer(&mut *out, t);
                }
            }
        }
        Cell::Text(t) => {
            let _ = serde_json::to_writer(&mut *out, t);
        }
        _ => {
            plain(cell, kind, text);
            let _ = serde_json::to_writer(&mut *out, text.as_str());
        }
    }
}

/// The text of a non-text cell, as both formats write it.
fn plain(cell: &Cell, kind: Kind, out: &mut String) {
    match cell {
        Cell::Null => {}
        Cell::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Cell::UInt(v) => {
            let _ = write!(out, "{v}");
        }
        Cell::Float(v) => out.push_str(ryu::Buffer::new().format(*v)),
        Cell::Float32(v) => out.push_str(ryu::Buffer::new().format(*v)),
        Cell::Text(t) => out.push_str(t),
        Cell::Bytes(b) => {
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Cell::Time(t) => time(*t, if let Kind::Time(p) = kind { p } else { 6 }, out),
        Cell::Date(d) => date(*d, out),
    }
}

fn date(d: NaiveDate, out: &mut String) {
    let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

/// `YYYY-MM-DDThh:mm:ss[.f…]Z` with `digits` fractional digits.
fn time(t: NaiveDateTime, digits: u8, out: &mut String) {
    date(t.date(), out);
    let _ = write!(out, "T{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    if digits > 0 {
        let micros = t.nanosecond() / 1000;
        let scaled = micros / 10u32.pow(6u32.saturating_sub(u32::from(digits)));
        let _ = write!(out, ".{scaled:0width$}", width = usize::from(digits));
    }
    out.push('Z');
}

fn is_json_number(t: &str) -> bool {
    serde_json::from_str::<serde_json::Number>(t).is_ok()
}

/// Why a value in a file cannot be read back as its column's kind.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {value:?} is not a {kind:?} value")]
pub struct ParseError {
    /// The column.
    pub column: String,
    /// What the file held.
    pub value: String,
    /// What was expected.
    pub kind: Kind,
}

/// Reads back one value that [`RowWriter`] wrote as text (a CSV field, or a
/// JSON string or number's text); `None` is NULL.
pub fn parse(column: &ColumnSpec, text: Option<&str>) -> Result<Cell, ParseError> {
    let Some(text) = text else {
        return Ok(Cell::Null);
    };
    let fail = || ParseError {
        column: column.name.clone(),
        value: text.chars().take(64).collect(),
        kind: column.kind,
    };
    Ok(match column.kind {
        Kind::Int => Cell::Int(text.parse().map_err(|_| fail())?),
        Kind::UInt => Cell::UInt(text.parse().map_err(|_| fail())?),
        Kind::Float => Cell::Float(text.parse().map_err(|_| fail())?),
        Kind::Float32 => Cell::Float32(text.parse().map_err(|_| fail())?),
        Kind::Decimal | Kind::Text | Kind::Json | Kind::Other => Cell::Text(text.to_owned()),
        Kind::Binary => Cell::Bytes(unhex(text).ok_or_else(fail)?),
        Kind::Time(_) => {
            let bare = text.strip_suffix('Z').ok_or_else(fail)?;
            Cell::Time(
                NaiveDateTime::parse_from_str(bare, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| fail())?,
            )
        }
        Kind::Date => Cell::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| fail())?),
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::table::Size;

    fn column(name: &str, kind: Kind) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            kind,
            size: Size::Small,
        }
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn csv_quotes_what_rfc_4180_says_and_tells_null_from_empty() {
        let columns = [
            column("id", Kind::UInt),
            column("t", Kind::Time(3)),
            column("text", Kind::Text),
            column("empty", Kind::Text),
            column("null", Kind::Text),
            column("k", Kind::Binary),
        ];
        let w = RowWriter::new(Format::Csv, &columns);
        let mut out = Vec::new();
        w.header(&mut out);
        w.row(
            &[
                Cell::UInt(7),
                Cell::Time(at("2024-05-01 10:00:00.05")),
                Cell::Text("a,\"b\"\nç".into()),
                Cell::Text(String::new()),
                Cell::Null,
                Cell::Bytes(vec![0, 0xab]),
            ],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,t,text,empty,null,k\r\n7,2024-05-01T10:00:00.050Z,\"a,\"\"b\"\"\nç\",\"\",,00ab\r\n"
        );
    }

    #[test]
    fn ndjson_writes_numbers_json_and_nulls_as_json() {
        let columns = [
            column("v", Kind::Float),
            column("tags", Kind::Json),
            column("d", Kind::Decimal),
            column("t", Kind::Time(0)),
            column("n", Kind::Text),
        ];
        let w = RowWriter::new(Format::Ndjson, &columns);
        let mut out = Vec::new();
        w.row(
            &[
                Cell::Float(412.5),
                Cell::Text("{\"room\":\n \"hall\"}".into()),
                Cell::Text("-12.50".into()),
                Cell::Time(at("2024-05-01 10:00:00")),
                Cell::Null,
            ],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"v\":412.5,\"tags\":{\"room\":\"hall\"},\"d\":-12.50,\"t\":\"2024-05-01T10:00:00Z\",\"n\":null}\n"
        );
    }

    #[test]
    fn what_is_written_reads_back() {
        let cases = [
            (
                column("t", Kind::Time(6)),
                Cell::Time(at("2024-05-01 10:00:00.000001")),
            ),
            (
                column("t", Kind::Time(3)),
                Cell::Time(at("1999-12-31 23:59:59.999")),
            ),
            (column("k", Kind::Binary), Cell::Bytes(vec![1, 2, 255])),
            (column("f", Kind::Float), Cell::Float(0.1 + 0.2)),
            (column("u", Kind::UInt), Cell::UInt(u64::MAX)),
            (column("i", Kind::Int), Cell::Int(-5)),
        ];
        for (column, cell) in cases {
            let mut text = String::new();
            plain(&cell, column.kind, &mut text);
            assert_eq!(parse(&column, Some(&text)).unwrap(), cell, "{text}");
        }
        assert!(parse(&column("k", Kind::Binary), Some("abc")).is_err());
        assert_eq!(parse(&column("x", Kind::Int), None).unwrap(), Cell::Null);
    }
}
