//! `co2-bridge export`: rows to a file or stdout, with progress on stderr,
//! resumable from the file after an interruption.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use super::{pool, resume, Export, ExportError, Filter, Format, Request, Source, CHUNK_ROWS};
use crate::config::Settings;
use crate::retime::TimeBound;

/// `co2-bridge export`'s arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ExportArgs {
    /// The route whose table to export (default: the CO2 route, co2_emissions).
    #[arg(long, value_name = "NAME", conflicts_with = "table")]
    pub route: Option<String>,
    /// The table to export: one a configured route writes to MySQL.
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// A rollup tier (1m, 5m, 30m, 1h, 6h, 1d: as configured) instead of the raw rows.
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Only these devices (repeatable, or comma-separated; default: all).
    #[arg(long = "device", value_name = "ID", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Rows at or after this time (inclusive; RFC 3339, or UTC as
    /// YYYY-MM-DD[ hh:mm:ss]).
    #[arg(long, value_name = "T")]
    pub from: Option<TimeBound>,
    /// Rows before this time (exclusive, so consecutive ranges never share a row).
    #[arg(long, value_name = "T")]
    pub to: Option<TimeBound>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Write to this file (default: stdout).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Go on with an export that was cut off: read --output, drop its last
    /// (possibly partial) row, and append the rows after the one before it.
    /// Give the same table, devices, range and format as the first run.
    #[arg(long, requires = "output")]
    pub resume: bool,
    /// Rows read per query.
    #[arg(long, default_value_t = CHUNK_ROWS, hide = true)]
    pub chunk_rows: usize,
}

const AFTER_HELP: &str = "\
Rows come in time order (ties at one time in the order of the table's key), \
times in UTC ISO 8601. CSV: RFC 4180 with a header row; NULL is an empty \
field, the empty string \"\". NDJSON: one JSON object per line. \
Examples:

  co2-bridge export --device kitchen --from 2026-01-01 --to 2026-02-01 -o kitchen-jan.csv
  co2-bridge export --tier 1h --from 2025-01-01 --to 2026-01-01 --format ndjson > hourly.ndjson
  co2-bridge export --route dht11 --device hall -o hall.csv --resume   # after an interruption

Progress goes to stderr every few seconds. Exit status: 0 when every row \
was written, 1 when the export failed (run it again with --resume), 2 for \
a configuration or argument error.";

/// What an export wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// Rows written by this run.
    pub rows: u64,
    /// Rows that were already in the file (resumed).
    pub kept: u64,
}

impl ExportArgs {
    /// The request these arguments make.
    pub fn request(&self) -> Request {
        Request {
            source: Source {
                route: self.route.clone(),
                table: self.table.clone(),
                tier: self.tier.clone(),
            },
            filter: Filter {
                devices: self
                    .devices
                    .iter()
                    .filter(|d| !d.is_empty())
                    .cloned()
                    .collect(),
                from: self.from.map(|b| b.0),
                to: self.to.map(|b| b.0),
            },
            format: self.format,
        }
    }
}

/// Runs `co2-bridge export`.
pub async fn run(settings: &Settings, args: &ExportArgs) -> Result<Summary, ExportError> {
    let request = args.request();
    if let (Some(from), Some(to)) = (request.filter.from, request.filter.to) {
        if from >= to {
            return Err(ExportError::Request(format!(
                "--from {from} is not before --to {to}"
            )));
        }
    }
    let table = request.source.resolve(settings)?;
    let pool = pool(&table, 1)?;
    let export = Export::prepare(&request, table, pool.clone(), args.chunk_rows).await?;
    let (mut out, point): (Box<dyn Write + Send>, Option<resume::Point>) = match &args.output {
        None => (
            Box::new(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )),
            None,
        ),
        Some(path) => {
            let point = match args.resume {
                true => resume::point(path, args.format, &export.shape)?,
                false => None,
            };
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(point.is_none())
                .open(path)?;
            if let Some(point) = &point {
                file.set_len(point.keep)?;
                file.seek(SeekFrom::Start(point.keep))?;
                eprintln!(
                    "export: resuming {} after {} row(s) already written",
                    path.display(),
                    point.rows
                );
            }
            (
                Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
                point,
            )
        }
    };
    let (cursor, header, kept) = match point {
        Some(p) => (p.cursor, !p.header, p.rows),
        None => (None, true, 0),
    };
    let mut progress = Progress::new(request.filter.from, request.filter.to, kept);
    // The CLI is its export's only reader: it never stops reading for long.
    let mut pieces = export.stream(cursor, header, Duration::from_secs(3600), Box::new(()));
    let mut complete = false;
    while let Some(piece) = pieces.recv().await {
        let piece = piece?;
        blocking(|| out.write_all(&piece.bytes))?;
        progress.add(piece.rows as u64, piece.last_time);
        complete = piece.end;
    }
    if !complete {
        blocking(|| out.flush())?;
        return Err(ExportError::Io(std::io::Error::other(
            "the export stopped before its last row; run it again with --resume",
        )));
    }
    blocking(|| out.flush())?;
    drop(out);
    pool.close().await;
    progress.done();
    Ok(Summary {
        rows: progress.rows,
        kept,
    })
}

/// Runs `f`, a write, letting the runtime's other tasks (the chunk read
/// ahead) go on on another thread meanwhile when it can.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Rows written, how far in time, and how fast, on stderr.
struct Progress {
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
    rows: u64,
    kept: u64,
    started: Instant,
    shown: Instant,
    last_time: Option<NaiveDateTime>,
}

/// Between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    fn new(from: Option<NaiveDateTime>, to: Option<NaiveDateTime>, kept: u64) -> Self {
        let now = Instant::now();
        Self {
            from,
            to,
            rows: 0,
            kept,
            started: now,
            shown: now,
            last_time: None,
        }
    }

    fn add(&mut self, rows: u64, last_time: Option<NaiveDateTime>) {
        self.rows += rows;
        if last_time.is_some() {
            self.last_time = last_time;
        }
        if self.shown.elapsed() >= PROGRESS_EVERY {
            self.shown = Instant::now();
            eprintln!("export: {}", self.line());
        }
    }

    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut line = format!(
            "{} row(s), {:.0} rows/s",
            self.rows + self.kept,
            self.rows as f64 / seconds
        );
        if let Some(t) = self.last_time {
            line.push_str(&format!(", at {}", t.format("%Y-%m-%dT%H:%M:%SZ")));
            if let (Some(from), Some(to)) = (self.from, self.to) {
                let whole = (to - from).num_seconds().max(1) as f64;
                let done = (t - from).num_seconds() as f64 / whole;
                line.push_str(&format!(
                    " ({:.0}% of the range)",
                    (done * 100.0).clamp(0.0, 100.0)
                ));
            }
        }
        line
    }

    fn done(&self) {
        eprintln!(
            "export: done, {} in {:.1} s",
            self.line(),
            self.started.elapsed().as_secs_f64()
        );
    }
}
