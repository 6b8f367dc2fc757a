//! Resuming an export from the file it was writing.
//!
//! The file is the record of what was written, so it is what a resume
//! reads, as `wget -c` and `rsync --append-verify` do: no state file that
//! could disagree with the data (one written after the data lags it, one
//! written before leads it). A process killed mid-write leaves at most one
//! record cut short, and in CSV a cut record cannot always be told from a
//! whole one (a quoted field may hold a newline). So the last record is
//! always dropped and written again: the file is cut after the record
//! before it, whose key is where the export goes on.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{parse, Format};
use super::query::Cell;
use super::table::Shape;
use super::ExportError;

/// Where a resumed export goes on.
#[derive(Debug, PartialEq)]
pub struct Point {
    /// Bytes of the file to keep (the rest is cut).
    pub keep: u64,
    /// Rows in what is kept.
    pub rows: u64,
    /// The key of the last row kept (`None`: from the start).
    pub cursor: Option<Vec<Cell>>,
    /// Whether what is kept holds the header (CSV).
    pub header: bool,
}

/// Reads `path` (written by an export of `shape`'s table in `format`);
/// `None` when there is no file or it is empty (a fresh start).
pub fn point(path: &Path, format: Format, shape: &Shape) -> Result<Option<Point>, ExportError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    match format {
        Format::Csv => csv_point(file, shape).map(Some),
        Format::Ndjson => ndjson_point(file, shape).map(Some),
    }
}

/// A CSV file: the header, then records.
fn csv_point(mut file: File, shape: &Shape) -> Result<Point, ExportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, &mut file));
    let mut record = csv::ByteRecord::new();
    fn read<R: std::io::Read>(
        reader: &mut csv::Reader<R>,
        record: &mut csv::ByteRecord,
    ) -> Result<bool, ExportError> {
        reader
            .read_byte_record(record)
            .map_err(|e| ExportError::Resume(format!("the file is not CSV: {e}")))
    }
    if !read(&mut reader, &mut record)? {
        return Ok(fresh());
    }
    let header_end = reader.position().byte();
    let names: Vec<&[u8]> = shape.columns.iter().map(|c| c.name.as_bytes()).collect();
    let header_matches = record.iter().eq(names.iter().copied());
    // (end of record, the record) of the last two data records.
    let mut previous: Option<(u64, csv::ByteRecord)> = None;
    let mut last: Option<(u64, csv::ByteRecord)> = None;
    let mut rows = 0u64;
    loop {
        let mut next = csv::ByteRecord::new();
        if !read(&mut reader, &mut next)? {
            break;
        }
        rows += 1;
        previous = last.take();
        last = Some((reader.position().byte(), next));
    }
    if !header_matches {
        if last.is_none() {
            // A header cut short: nothing was written after it.
            return Ok(fresh());
        }
        return Err(ExportError::Resume(
            "its header is not this export's columns (another table or tier?)".into(),
        ));
    }
    let Some(_) = last else {
        // Only the header, maybe without its line end: write it again.
        return Ok(fresh());
    };
    let (keep, cursor) = match previous {
        None => (header_end, None),
        Some((end, record)) => {
            let fields: Vec<Option<String>> = record
                .iter()
                .map(|f| Some(String::from_utf8_lossy(f).into_owned()))
                .collect();
            (end, Some(cursor(shape, &fields)?))
        }
    };
    drop(reader);
    // The reader's position after a record ended by CRLF is past the CR:
    // the LF is the record's too.
    let mut next = [0u8; 1];
    file.seek(SeekFrom::Start(keep))?;
    let keep = match file.read(&mut next)? {
        1 if next[0] == b'\n' => keep + 1,
        _ => keep,
    };
    Ok(Point {
        keep,
        rows: rows - 1,
        cursor,
        header: true,
    })
}

/// An NDJSON file: an object per line.
fn ndjson_point(mut file: File, shape: &Shape) -> Result<Point, ExportError> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut offset, mut rows) = (0u64, 0u64);
    // (end offset, text) of the last two lines.
    let mut previous: Option<(u64, Vec<u8>)> = None;
    let mut last: Option<(u64, Vec<u8>)> = None;
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        rows += 1;
        previous = last.take();
        last = Some((offset, line));
    }
    let Some((keep, line)) = previous else {
        return Ok(fresh());
    };
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&line)
        .map_err(|e| ExportError::Resume(format!("line {} is not a JSON object: {e}", rows - 1)))?;
    let fields: Vec<Option<String>> = shape
        .columns
        .iter()
        .map(|c| match object.get(&c.name) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        })
        .collect();
    if shape.columns.iter().any(|c| !object.contains_key(&c.name)) {
        return Err(ExportError::Resume(
            "its rows are not this export's columns (another table or tier?)".into(),
        ));
    }
    Ok(Point {
        keep,
        rows: rows - 1,
        cursor: Some(cursor(shape, &fields)?),
        header: false,
    })
}

fn fresh() -> Point {
    Point {
        keep: 0,
        rows: 0,
        cursor: None,
        header: false,
    }
}

/// The key of a row read back as text fields in column order.
fn cursor(shape: &Shape, fields: &[Option<String>]) -> Result<Vec<Cell>, ExportError> {
    shape
        .key
        .iter()
        .map(|&i| {
            let column = shape
                .columns
                .get(i)
                .ok_or_else(|| ExportError::Resume("the table changed".into()))?;
            let field = fields.get(i).ok_or_else(|| {
                ExportError::Resume(format!("its last row has no {} column", column.name))
            })?;
            parse(column, field.as_deref()).map_err(|e| ExportError::Resume(e.to_string()))
        })
        .collect()
}
