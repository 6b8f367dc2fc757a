//! Reading the import's files (or standard input) into chunks of records,
//! on a thread of its own: lines ([`lines`]), their format told from the
//! extension or the first line unless `--format` says, each row made into
//! a record by the route ([`mapping`]). Chunks go to the writer through a
//! bounded channel, so reading runs ahead of writing by a few chunks at most.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::csv::{Columns, Named, Splitter};
use super::lines::{is_blank, Line, Lines};
use super::mapping::{Location, Mapper, Reading};
use super::ndjson::RowReader;
use super::{Chunk, ImportError};
use crate::model::Reason;

/// Longest line read (longer ones are dead letters): far more than any
/// row of a reading, and what memory a line may cost.
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes read from the input at a time.
const READ_BUFFER: usize = 256 * 1024;

/// What the lines of an input are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// The payloads devices send, `datetime|emissions`, one per line.
    Lines,
}

impl InputFormat {
    /// The format a file name's extension says, if it says one.
    pub fn of_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "txt" | "log" | "lines" => Some(Self::Lines),
            _ => None,
        }
    }

    /// The format the first non-blank line looks like: an object is
    /// NDJSON, a `|` without a comma a payload, anything else a CSV header.
    pub fn sniff(first: &[u8]) -> Self {
        let trimmed = first.trim_ascii_start();
        if trimmed.starts_with(b"{") {
            Self::Ndjson
        } else if first.contains(&b'|') && !first.contains(&b',') {
            Self::Lines
        } else {
            Self::Csv
        }
    }
}

/// How the rows of every input are read.
pub struct Reader<'a> {
    /// `--format`, else told per input.
    pub format: Option<InputFormat>,
    /// Column (or key) names from the command line.
    pub named: Named<'a>,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Makes rows into records.
    pub mapper: Mapper,
    /// Where the chunks go.
    pub chunks: mpsc::Sender<Chunk>,
    /// "Now" for every row (the fuzz target's fixed clock); `None`: the
    /// real clock, read once per chunk.
    pub clock: Option<DateTime<Utc>>,
}

/// How one input's rows are read, once its format is known.
enum Shape {
    Csv(Columns, Box<Splitter>),
    Ndjson(RowReader),
    Lines,
}

impl Reader<'_> {
    /// Reads `path` (`-`: standard input) to its end; false if the writer
    /// went away (it failed, and says why).
    pub fn read(&mut self, path: &Path) -> Result<bool, ImportError> {
        let io = |error| ImportError::Io {
            path: path.display().to_string(),
            error,
        };
        if path == Path::new("-") {
            let stdin = std::io::stdin();
            let lock = BufReader::with_capacity(READ_BUFFER, stdin.lock());
            self.read_from(lock, "stdin", self.format)
        } else {
            let file = File::open(path).map_err(io)?;
            let format = self.format.or_else(|| InputFormat::of_path(path));
            let name = path.display().to_string();
            self.read_from(BufReader::with_capacity(READ_BUFFER, file), &name, format)
        }
    }

    fn read_from(
        &mut self,
        input: impl BufRead,
        name: &str,
        format: Option<InputFormat>,
    ) -> Result<bool, ImportError> {
        let source: Arc<str> = Arc::from(name);
        let io = |error| ImportError::Io {
            path: name.to_owned(),
            error,
        };
        let mut lines = Lines::new(input, MAX_LINE);
        let mut shape: Option<Shape> = None;
        let mut chunk = Chunk::new(source.clone(), self.chunk_rows);
        let mut now = self.clock.unwrap_or_else(Utc::now);
        while let Some(line) = lines.next_line().map_err(io)? {
            chunk.lines_read += 1;
            let number = line.number();
            let at = Location {
                source: &source,
                line: number,
            };
            let record = match line {
                Line::TooLong { start, len, .. } => self.mapper.refuse(
                    at,
                    start,
                    Reason::Oversized,
                    &format!(
                        "a line of {len} bytes, over the {MAX_LINE}-byte bound (its start is kept)"
                    ),
                ),
                Line::Text { bytes, .. } if is_blank(bytes) => {
                    chunk.blank += 1;
                    continue;
                }
                Line::Text { bytes, .. } => match &mut shape {
                    None => {
                        let format = format.unwrap_or_else(|| InputFormat::sniff(bytes));
                        let (first, record) = self.first(bytes, format, at, now)?;
                        shape = Some(first);
                        match record {
                            Some(record) => record,
                            None => continue,
                        }
                    }
                    Some(shape) => self.row(shape, at, bytes, now),
                },
            };
            chunk.push(record, number);
            if chunk.records.len() >= self.chunk_rows {
                chunk.position = lines.position();
                let full =
                    std::mem::replace(&mut chunk, Chunk::new(source.clone(), self.chunk_rows));
                if self.chunks.blocking_send(full).is_err() {
                    return Ok(false);
                }
                // "Now" for the future check: once per chunk, not per row.
                now = self.clock.unwrap_or_else(Utc::now);
            }
        }
        chunk.position = lines.position();
        chunk.end_of_input = true;
        Ok(self.chunks.blocking_send(chunk).is_ok())
    }

    /// The shape of an input from its first line, and that line's record
    /// when it is a row (not a CSV header).
    fn first(
        &mut self,
        line: &[u8],
        format: InputFormat,
        at: Location<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Shape, Option<crate::model::Record>), ImportError> {
        Ok(match format {
            InputFormat::Csv => {
                let mut splitter = Splitter::default();
                let n = splitter
                    .split(line)
                    .map_err(|e| ImportError::Request(format!("{}: header: {e}", at.source)))?;
                let header: Vec<String> = (0..n)
                    .map(|i| {
                        String::from_utf8_lossy(splitter.field(i).unwrap_or_default()).into_owned()
                    })
                    .collect();
                let columns = Columns::from_header(&header, &self.named)
                    .map_err(|e| ImportError::Request(format!("{}: {e}", at.source)))?;
                (Shape::Csv(columns, Box::new(splitter)), None)
            }
            InputFormat::Ndjson => {
                let mut shape = Shape::Ndjson(RowReader::new(&self.named));
                let record = self.row(&mut shape, at, line, now);
                (shape, Some(record))
            }
            InputFormat::Lines => {
                let record = self.mapper.payload(at, line, now);
                (Shape::Lines, Some(record))
            }
        })
    }

    /// The record of one row of an input of `shape`.
    fn row(
        &mut self,
        shape: &mut Shape,
        at: Location<'_>,
        line: &[u8],
        now: DateTime<Utc>,
    ) -> crate::model::Record {
        match shape {
            Shape::Lines => self.mapper.payload(at, line, now),
            Shape::Ndjson(reader) => match reader.read(line) {
                Ok(row) => {
                    let reading = Reading {
                        device: row.device.as_deref(),
                        time: &row.time,
                        value: &row.value,
                        seq: row.seq.as_ref().map(|(e, n)| (e.as_str(), n.as_str())),
                    };
                    self.mapper.reading(at, line, &reading, now)
                }
                Err(why) => self.mapper.refuse(at, line, Reason::BadJson, &why),
            },
            Shape::Csv(columns, splitter) => {
                if let Err(e) = splitter.split(line) {
                    return self
                        .mapper
                        .refuse(at, line, Reason::FieldCount, &e.to_string());
                }
                let text = |i: usize| splitter.field(i).map(std::str::from_utf8);
                let (time, value) = match (text(columns.time), text(columns.value)) {
                    (Some(Ok(time)), Some(Ok(value))) => (time, value),
                    (Some(Err(_)), _) | (_, Some(Err(_))) => {
                        return self.mapper.refuse(at, line, Reason::NotUtf8, "not UTF-8")
                    }
                    _ => {
                        return self.mapper.refuse(
                            at,
                            line,
                            Reason::FieldCount,
                            "fewer fields than the header names",
                        )
                    }
                };
                let device = columns.device.and_then(|i| text(i)?.ok());
                let seq = columns
                    .seq
                    .and_then(|(e, n)| Some((text(e)?.ok()?, text(n)?.ok()?)));
                let reading = Reading {
                    device,
                    time,
                    value,
                    seq,
                };
                self.mapper.reading(at, line, &reading, now)
            }
        }
    }
}

/// Every record an import would make of `input` for the CO2 route of
/// `routes` (rows of device `pi-1` unless they name one), at `now`: the
/// fuzz target's way in, through the same reader and mapping as a file.
#[cfg(feature = "tooling")]
pub fn records_of(
    input: &[u8],
    format: Option<InputFormat>,
    routes: Arc<crate::route::Routes>,
    now: DateTime<Utc>,
) -> Result<Vec<(u64, crate::model::Record)>, ImportError> {
    let route = routes
        .by_name(crate::config::CO2_ROUTE)
        .map(|(id, _)| id)
        .ok_or_else(|| ImportError::Request("no co2 route".to_owned()))?;
    let device = co2_wire::DeviceId::parse("pi-1").ok();
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            out.extend(chunk.lines.into_iter().zip(chunk.records));
        }
        out
    });
    let mut reader = Reader {
        format,
        named: Named::default(),
        chunk_rows: 64,
        mapper: Mapper::new(routes, route, device, None),
        chunks: tx,
        clock: Some(now),
    };
    let read = reader.read_from(input, "fuzz", format);
    drop(reader);
    let records = drain
        .join()
        .map_err(|_| ImportError::Reader("the drain panicked".to_owned()))?;
    read.map(|_| records)
}
