//! Export: a route's raw rows or one of its rollup tiers, for a device set
//! and a time range, as CSV or NDJSON, streamed in constant memory.
//!
//! Rows come in the order of the table's key with the time first (raw
//! tables: `(time, id)`; tiers: `(bucket, device, …)`), read a chunk at a
//! time by keyset pagination ([`query`]). The key is unique, so an export
//! cut anywhere resumes after its last written row with nothing lost or
//! repeated, ties at one time included ([`resume`]). `co2-bridge export`
//! ([`cli`]) writes a file or stdout; `GET /export` on the operator listener
//! streams the same bytes (http/export.rs).

pub mod cli;
pub mod format;
pub mod query;
pub mod resume;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDateTime;
use sqlx::MySqlPool;
use tokio::sync::mpsc;

use crate::config::ConfigError;
use crate::sink::mysql::schema;
pub use format::{Format, RowWriter};
pub use query::{Cell, Filter};
pub use table::{Shape, Source, Table};

/// Rows per chunk (fewer for tables with large values, see [`Shape::chunk_rows`]).
pub const CHUNK_ROWS: usize = 5000;

/// Why an export could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request names something that cannot be exported.
    #[error("{0}")]
    Request(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The output could not be written or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A file to resume is not one this export could have written.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The reader of the rows went away or stopped reading.
    #[error("the reader stopped reading")]
    Abandoned,
}

impl ExportError {
    /// True when the request or configuration is at fault (HTTP 400, exit 2).
    pub fn is_request(&self) -> bool {
        matches!(self, ExportError::Request(_) | ExportError::Config(_))
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which table.
    pub source: Source,
    /// Which rows.
    pub filter: Filter,
    /// In which format.
    pub format: Format,
}

/// An export ready to stream: the table, its shape, and a pool to read it.
pub struct Export {
    /// The table read.
    pub table: Table,
    /// Its columns and key.
    pub shape: Arc<Shape>,
    query: Arc<query::ChunkQuery>,
    pool: MySqlPool,
    format: Format,
}

/// One piece of output: the bytes of a chunk of rows.
#[derive(Debug)]
pub struct Piece {
    /// The formatted rows.
    pub bytes: Bytes,
    /// How many rows.
    pub rows: usize,
    /// The time of the last of them.
    pub last_time: Option<NaiveDateTime>,
    /// True for the empty piece that says every row was sent. A stream that
    /// ends without it was cut short: its reader must say so, not finish
    /// as if complete.
    pub end: bool,
}

impl Piece {
    fn new(bytes: Bytes, rows: usize, last_time: Option<NaiveDateTime>) -> Self {
        Self {
            bytes,
            rows,
            last_time,
            end: false,
        }
    }
}

/// A pool of at most `connections` for exports from `table`'s database.
pub fn pool(table: &Table, connections: u32) -> Result<MySqlPool, ConfigError> {
    let mut db = table.db.clone();
    db.max_connections = connections.max(1);
    Ok(schema::pool(&db, &table.sink_key)?.0)
}

impl Export {
    /// Reads the shape of `table` (resolved from `request.source`) through `pool`.
    pub async fn prepare(
        request: &Request,
        table: Table,
        pool: MySqlPool,
        chunk_rows: usize,
    ) -> Result<Self, ExportError> {
        let shape = Shape::read(&pool, &table).await?;
        let query = query::ChunkQuery::new(
            &table.name,
            &shape,
            &request.filter,
            shape.chunk_rows(chunk_rows.max(1)),
        );
        Ok(Self {
            table,
            shape: Arc::new(shape),
            query: Arc::new(query),
            pool,
            format: request.format,
        })
    }

    /// A writer of this export's rows.
    pub fn writer(&self) -> RowWriter {
        RowWriter::new(self.format, &self.shape.columns)
    }

    /// Streams the rows after `cursor` (from the start without) as pieces,
    /// the header first when `header`. A task reads the next chunk while the
    /// last is formatted (off the async workers) and sent; at most two
    /// chunks are in memory besides the one the receiver holds. When the
    /// receiver goes away, or takes longer than `idle` to take a piece, the
    /// task ends: no connection is held while it waits, none after.
    ///
    /// `hold` is kept until the task ends (a slot of the exports allowed at
    /// once): freed when the export is done or dropped, even while a
    /// stalled client keeps its connection open.
    pub fn stream(
        self,
        cursor: Option<Vec<Cell>>,
        header: bool,
        idle: Duration,
        hold: Box<dyn std::any::Any + Send>,
    ) -> mpsc::Receiver<Result<Piece, ExportError>> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _hold = hold;
            if let Err(e) = self.produce(cursor, header, idle, &tx).await {
                if !matches!(e, ExportError::Abandoned) {
                    tracing::warn!(table = %self.table.name, error = %e, "Export failed");
                    let _ = tx.send(Err(e)).await;
                } else {
                    tracing::info!(table = %self.table.name, "Export abandoned by its reader");
                }
            }
        });
        rx
    }

    async fn produce(
        &self,
        mut cursor: Option<Vec<Cell>>,
        header: bool,
        idle: Duration,
        tx: &mpsc::Sender<Result<Piece, ExportError>>,
    ) -> Result<(), ExportError> {
        let writer = Arc::new(self.writer());
        let send = |piece: Piece| async move {
            match tokio::time::timeout(idle, tx.send(Ok(piece))).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(ExportError::Abandoned),
            }
        };
        if header {
            let mut out = Vec::new();
            writer.header(&mut out);
            send(Piece::new(out.into(), 0, None)).await?;
        }
        let mut next = Some(self.fetch(cursor.clone()));
        while let Some(fetching) = next.take() {
            let rows = fetching
                .await
                .map_err(|e| ExportError::Io(std::io::Error::other(e)))??;
            if rows.is_empty() {
                break;
            }
            cursor = rows.last().map(|r| query::key_of(&self.shape, r));
            // The next chunk is read while this one is formatted and sent
            // (a short chunk is not the last: an empty one is).
            let ahead = Some(self.fetch(cursor.clone()));
            let guard = AbortOnDrop(ahead);
            let last_time = match cursor.as_deref().and_then(<[Cell]>::first) {
                Some(Cell::Time(t)) => Some(*t),
                _ => None,
            };
            let count = rows.len();
            let writer = writer.clone();
            let bytes = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(count * 64);
                for row in &rows {
                    writer.row(row, &mut out);
                }
                Bytes::from(out)
            })
            .await
            .map_err(|e| ExportError::Io(std::io::Error::other(e)))?;
            send(Piece::new(bytes, count, last_time)).await?;
            next = guard.take();
        }
        send(Piece {
            end: true,
            ..Piece::new(Bytes::new(), 0, None)
        })
        .await
    }

    fn fetch(
        &self,
        cursor: Option<Vec<Cell>>,
    ) -> tokio::task::JoinHandle<Result<Vec<Vec<Cell>>, sqlx::Error>> {
        let (query, pool, shape) = (self.query.clone(), self.pool.clone(), self.shape.clone());
        tokio::spawn(async move { query.chunk(&pool, &shape, cursor.as_deref()).await })
    }
}

/// A chunk read ahead, abandoned (its task aborted) if the export stops first.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn take(mut self) -> Option<tokio::task::JoinHandle<T>> {
        self.0.take()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}
