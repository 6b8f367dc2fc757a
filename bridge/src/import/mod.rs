//! `co2-bridge import`: readings from files (CSV, NDJSON, the devices'
//! payload lines), standard input or a legacy MySQL table, stored through
//! the same route decoding and the same sink as live readings, so the
//! bridge's guarantees hold for them: a rerun stores nothing twice (the
//! unique keys), rollups and completeness take the rows in (the sink's
//! transaction), and a bad line is a dead letter naming its file and line
//! while the import goes on.
//!
//! A reader ([`input`] on a thread of its own for files, [`from_mysql`] as
//! a task) makes rows into records ([`mapping`]) and hands them on in
//! chunks of a few thousand through a bounded channel; the writer
//! ([`writer`]) stores each chunk in one sink write while the next is read.

mod csv;
mod from_mysql;
pub mod input;
pub mod lines;
mod mapping;
mod ndjson;
mod progress;
mod seen;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use co2_wire::DeviceId;
use tokio::sync::mpsc;

use crate::clocks::{self, DeviceClocks, ZoneRules, ZoneSetting};
use crate::config::{ConfigError, Settings, CO2_ROUTE};
use crate::model::{Record, RouteId};
use crate::route::Routes;
use crate::sink::{self, PrepareError, Sinks};
pub use csv::{Named, Splitter};
pub use input::InputFormat;
use mapping::Mapper;
pub use progress::Summary;

/// Rows per chunk: a sink write each (the MySQL sink splits its statements
/// below the server's limits).
pub const CHUNK_ROWS: usize = 5000;

/// Chunks read ahead of the writer.
const AHEAD: usize = 4;

/// Why an import could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Request(String),
    /// An input could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The input.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// A sink cannot be used, or failed for good.
    #[error("sink {sink}: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What failed, and what to do.
        message: String,
    },
    /// The legacy database (`--from-mysql`) failed.
    #[error("--from-mysql: {0} (run the import again: it goes on after the last rows stored)")]
    Source(sqlx::Error),
    /// The target database failed outside a sink write.
    #[error("database: {0}")]
    Target(sqlx::Error),
    /// The reader stopped unexpectedly.
    #[error("the reader stopped: {0}")]
    Reader(String),
}

impl ImportError {
    /// True when the configuration or the command line is at fault (exit 2).
    pub fn is_request(&self) -> bool {
        matches!(self, Self::Config(_) | Self::Request(_))
    }
}

/// `co2-bridge import`'s arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ImportArgs {
    /// Files to import, in order; `-` reads standard input.
    #[arg(value_name = "FILE", required_unless_present = "from_mysql")]
    pub files: Vec<PathBuf>,
    /// The files' format (default: from the extension, else the first line).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// The route the readings go through (default: the CO2 route).
    #[arg(long, value_name = "NAME")]
    pub route: Option<String>,
    /// The device of rows that name none (the seed's date_time,emissions,
    /// payload lines, a legacy table without a device column).
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Every line arrives on this topic, as if a device published it there
    /// (lines format; the topic names the device).
    #[arg(long, value_name = "TOPIC", conflicts_with = "device")]
    pub topic: Option<String>,
    /// The CSV column or NDJSON key of the time.
    #[arg(long, value_name = "NAME")]
    pub time_column: Option<String>,
    /// The CSV column or NDJSON key of the value.
    #[arg(long, value_name = "NAME")]
    pub value_column: Option<String>,
    /// The CSV column or NDJSON key of the device.
    #[arg(long, value_name = "NAME")]
    pub device_column: Option<String>,
    /// The zone the input's offset-less times were written in (an IANA name
    /// such as Europe/Berlin, UTC, or an offset such as +02:00), for every
    /// device, instead of the zones configured for live readings; times
    /// with an offset are read as they say.
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    pub time_zone: Option<co2_wire::Zone>,
    /// Decode and count, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read a legacy table on this server instead of files
    /// (mysql://user:password@host:3306/database).
    #[arg(long, value_name = "URL", conflicts_with = "files")]
    pub from_mysql: Option<String>,
    /// The legacy table (--from-mysql).
    #[arg(
        long,
        value_name = "TABLE",
        default_value = "co2_emissions",
        requires = "from_mysql"
    )]
    pub table: String,
    /// Rows per write.
    #[arg(long, default_value_t = CHUNK_ROWS, hide = true)]
    pub chunk_rows: usize,
}

/// A `--time-zone`: a zone, not `auto` (a file's times teach no offset).
fn parse_zone(text: &str) -> Result<co2_wire::Zone, String> {
    text.parse::<co2_wire::Zone>().map_err(|e| {
        format!("{e}; give the zone the file's times were written in, e.g. Europe/Berlin or +02:00")
    })
}

const AFTER_HELP: &str = "\
Every line goes through the route's decoding and sink like a live reading: \
a time without an offset is read in the device's zone as the bridge would \
read it; a rerun stores nothing twice; rollups and completeness include the \
rows; a bad line becomes a dead letter (topic import/<route>, detail \
<file>:<line>: <reason>) and the import goes on. Examples:

  co2-bridge import kitchen.csv                      # what co2-bridge export wrote
  co2-bridge import --device pi-1 seed.csv           # date_time,emissions
  tail -n +1 queue.log | co2-bridge import --device pi-1 --format lines -
  co2-bridge import --from-mysql mysql://sub@old-host/co2 --device pi-1

Exit status: 0 when every line was stored (or was already), 1 when some \
were rejected or the import failed (run it again: it is idempotent, and \
--from-mysql goes on after the last rows stored), 2 for a configuration or \
argument error.";

/// Records read from one input, in order, with the line of each.
pub struct Chunk {
    /// The input's name.
    pub source: Arc<str>,
    /// The records.
    pub records: Vec<Record>,
    /// The line (or key) of each record.
    pub lines: Vec<u64>,
    /// Lines read for this chunk, blank ones included.
    pub lines_read: u64,
    /// Blank lines skipped.
    pub blank: u64,
    /// How far into the input (bytes, or rows of a table) it ends.
    pub position: u64,
    /// True for an input's last chunk.
    pub end_of_input: bool,
    /// `--from-mysql`: the last key read, and the rows read up to it.
    pub checkpoint: Option<(String, u64)>,
}

impl Chunk {
    /// An empty chunk of `source` for `rows` rows.
    pub fn new(source: Arc<str>, rows: usize) -> Self {
        Self {
            source,
            records: Vec::with_capacity(rows),
            lines: Vec::with_capacity(rows),
            lines_read: 0,
            blank: 0,
            position: 0,
            end_of_input: false,
            checkpoint: None,
        }
    }

    /// Adds the record of line `line`.
    pub fn push(&mut self, record: Record, line: u64) {
        self.records.push(record);
        self.lines.push(line);
    }
}

/// The routes and sinks an import writes through, as the bridge builds them.
struct Target {
    routes: Arc<Routes>,
    sinks: Sinks,
    mysql_pools: Vec<(String, sqlx::MySqlPool)>,
    route: RouteId,
    route_sink: usize,
}

impl Target {
    /// Today's routes and sinks; the zones the bridge learned are only read.
    fn build(settings: &Settings, args: &ImportArgs) -> Result<Self, ImportError> {
        settings.validate()?;
        let learned = clocks::state_file(&settings.state_dir());
        let clocks = DeviceClocks::load(settings.metrics.max_devices, learned);
        let mut routes = Routes::from_settings(settings)?.with_clocks(Arc::new(clocks));
        if let Some(zone) = args.time_zone {
            routes = routes.with_zones(ZoneRules::uniform(ZoneSetting::Zone(zone)));
        }
        let built = sink::from_settings(settings, &routes)?;
        let name = args.route.as_deref().unwrap_or(CO2_ROUTE);
        let (route, found) = routes.by_name(name).ok_or_else(|| {
            ImportError::Request(format!(
                "--route {name:?}: no such route; routes are {}",
                routes
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let lines = args.format == Some(InputFormat::Lines) || args.topic.is_some();
        if !found.takes_pipe_payload() && !lines {
            return Err(ImportError::Request(format!(
                "route {name:?} does not read time|value payloads: import its payloads \
                 with --format lines --topic <a topic of the route>"
            )));
        }
        let route_sink = built.sinks.position(found.sink()).ok_or_else(|| {
            ImportError::Request(format!("route {name:?}: no sink {:?}", found.sink()))
        })?;
        Ok(Self {
            routes: Arc::new(routes),
            sinks: built.sinks,
            mysql_pools: built.mysql_pools,
            route,
            route_sink,
        })
    }

    /// Readies the sinks written (schema checked, or migrated where the
    /// bridge would migrate it).
    async fn prepare(&self) -> Result<(), ImportError> {
        let mut positions = vec![self.route_sink, self.sinks.dead_letters()];
        positions.dedup();
        for position in positions {
            let name = self.sinks.name(position).to_owned();
            let failed = |message: String| ImportError::Sink {
                sink: name.clone(),
                message,
            };
            let sink = self
                .sinks
                .get(position)
                .ok_or_else(|| failed("no such sink".to_owned()))?;
            match sink.prepare().await {
                Ok(()) => {}
                Err(PrepareError::Fatal(m)) => return Err(failed(m)),
                Err(PrepareError::Unavailable(m)) => {
                    return Err(failed(format!("not reachable: {m}")))
                }
            }
        }
        Ok(())
    }

    /// The pool of the sink that keeps dead letters, when it is a MySQL one.
    fn letters_pool(&self) -> Option<&sqlx::MySqlPool> {
        let name = self.sinks.name(self.sinks.dead_letters());
        self.mysql_pools
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// The pool of the route's sink, when it is a MySQL one.
    fn route_pool(&self) -> Option<&sqlx::MySqlPool> {
        let name = self.sinks.name(self.route_sink);
        self.mysql_pools
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }
}

/// Runs `co2-bridge import`.
pub async fn run(settings: &Settings, args: &ImportArgs) -> Result<Summary, ImportError> {
    let target = Target::build(settings, args)?;
    let device = match &args.device {
        Some(d) => Some(
            DeviceId::parse(d).map_err(|e| ImportError::Request(format!("--device {d:?}: {e}")))?,
        ),
        None => None,
    };
    if args.chunk_rows == 0 {
        return Err(ImportError::Request(
            "--chunk-rows must be at least 1".to_owned(),
        ));
    }
    if !args.dry_run {
        target.prepare().await?;
    }
    let mapper = || {
        Mapper::new(
            target.routes.clone(),
            target.route,
            device.clone(),
            args.topic.as_deref(),
        )
    };
    let (tx, rx) = mpsc::channel(AHEAD);
    let (reader, size, source) = match &args.from_mysql {
        Some(url) => {
            let mut legacy =
                from_mysql::Legacy::open(url, &args.table, args.device.as_deref()).await?;
            if !args.dry_run {
                if let Some(pool) = target.route_pool() {
                    legacy.resume(pool).await?;
                }
            }
            let (size, source) = (legacy.approx_rows, legacy.source.clone());
            let task = tokio::spawn(from_mysql::read(legacy, mapper(), args.chunk_rows, tx));
            (task, Some(size), source)
        }
        None => {
            let size = args
                .files
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .filter(|m| m.is_file())
                        .map(|m| m.len())
                })
                .sum::<Option<u64>>();
            let task = tokio::task::spawn_blocking({
                let (files, format, chunk_rows) =
                    (args.files.clone(), args.format, args.chunk_rows);
                let names = (
                    args.time_column.clone(),
                    args.value_column.clone(),
                    args.device_column.clone(),
                );
                let mapper = mapper();
                move || {
                    let mut reader = input::Reader {
                        format,
                        named: Named {
                            time: names.0.as_deref(),
                            value: names.1.as_deref(),
                            device: names.2.as_deref(),
                        },
                        chunk_rows,
                        mapper,
                        chunks: tx,
                        clock: None,
                    };
                    for file in &files {
                        if !reader.read(file)? {
                            break;
                        }
                    }
                    Ok(())
                }
            });
            (task, size, String::new())
        }
    };
    let labels = mapper();
    let seen = target
        .letters_pool()
        .filter(|_| !args.dry_run)
        .map(|pool| seen::Seen::new(pool.clone(), labels.letter_topic().to_owned()));
    let writer = writer::Writer {
        sinks: &target.sinks,
        route_sink: target.route_sink,
        mapper: &labels,
        source: &source,
        seen: seen.map(tokio::sync::Mutex::new),
    };
    let written = write_all(&writer, rx, args.dry_run, size).await;
    let read = reader
        .await
        .map_err(|e| ImportError::Reader(e.to_string()))
        .and_then(|r| r);
    // A writer's failure explains a reader that stopped; report it first.
    let summary = written?;
    read?;
    tracing::info!(
        lines = summary.lines,
        stored = summary.stored,
        duplicates = summary.duplicates,
        rejected = summary.rejected,
        dry_run = args.dry_run,
        "Import finished"
    );
    Ok(summary)
}

/// Stores every chunk as it comes; the summary of the whole import.
async fn write_all(
    writer: &writer::Writer<'_>,
    mut chunks: mpsc::Receiver<Chunk>,
    dry_run: bool,
    size: Option<u64>,
) -> Result<Summary, ImportError> {
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    let mut progress = progress::Progress::stderr(size);
    let mut done_inputs = 0u64;
    while let Some(mut chunk) = chunks.recv().await {
        summary.lines += chunk.lines_read;
        summary.blank += chunk.blank;
        summary.decoded += chunk
            .records
            .iter()
            .filter(|r| matches!(r, Record::Decoded { .. }))
            .count() as u64;
        if !dry_run {
            let written = writer.store(&mut chunk).await?;
            summary.stored += written.inserted.iter().map(|(_, n)| n).sum::<u64>();
            summary.duplicates += written.duplicates.iter().map(|(_, n)| n).sum::<u64>();
        }
        summary.rejected += chunk
            .records
            .iter()
            .filter(|r| matches!(r, Record::Rejected { .. }))
            .count() as u64;
        let position = done_inputs + chunk.position;
        if chunk.end_of_input {
            done_inputs = position;
        }
        progress.show(&summary, position);
    }
    progress.finish();
    Ok(summary)
}
