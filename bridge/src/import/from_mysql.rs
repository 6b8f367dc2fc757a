//! `--from-mysql URL --table co2_emissions`: the seed's table on another
//! server, read in key order a chunk at a time and imported like a file's
//! rows (each row the payload `date_time|emissions` of its device).
//!
//! The key is the table's `id` when it has one (the bridge's own shape, or
//! a seed table someone gave one), else `date_time` (the seed's bare
//! `date_time, emissions`). Chunks are keyset pages (`WHERE key > last
//! ORDER BY key LIMIT n`), each as cheap as the first. `date_time` need not
//! be unique, so a page never ends inside a group of rows of one time: the
//! group is cut off and read whole by the next page.
//!
//! **Resuming.** How far the import got is kept in the target database
//! (`import_progress`), written by the sink in the transaction that stores
//! the page's rows (sink/mysql/settle.rs). Deriving it from the target's
//! rows instead (the newest time stored) would be wrong twice: the source's
//! key order is not time order, and the target may hold rows from
//! elsewhere. So a run cut anywhere, even by SIGKILL, goes on after the
//! last page committed; a page read again would only meet the unique key.

use std::sync::Arc;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, MySqlPool};
use tokio::sync::mpsc;

use super::mapping::{Location, Mapper, Reading};
use super::{Chunk, ImportError};
use crate::model::Reason;
use crate::sink::mysql::quoted;

/// A legacy table's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// `id`, an integer.
    Id,
    /// `date_time`, not necessarily unique.
    DateTime,
}

/// One row of the legacy table, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRow {
    /// Its key as text: the id, or the time.
    pub key: String,
    /// Where a dead letter says it is: its id, or its place in the read.
    pub number: u64,
    /// Its device, when the table has the column.
    pub device: Option<String>,
    /// `date_time`, as the table holds it (no offset); `None` for NULL.
    pub time: Option<String>,
    /// `emissions` as text; `None` for NULL.
    pub value: Option<String>,
}

/// A legacy table being read.
pub struct Legacy {
    pool: MySqlPool,
    table: String,
    key: Key,
    has_device: bool,
    /// The source's name for `import_progress`: server, database, table.
    pub source: String,
    /// About how many rows it has (the server's statistics).
    pub approx_rows: u64,
    /// Rows read, this run and before (what `import_progress` said).
    pub read: u64,
    after: Option<String>,
}

/// `date_time` as text with all six fractional digits: exact, and what a
/// `>` comparison with the column reads back as the same time.
const TIME_TEXT: &str = "DATE_FORMAT(date_time, '%Y-%m-%d %H:%i:%s.%f')";

impl Legacy {
    /// Opens `table` on the server of `url` (read only: SELECTs).
    pub async fn open(url: &str, table: &str, device: Option<&str>) -> Result<Self, ImportError> {
        let request = |m: String| ImportError::Request(format!("--from-mysql: {m}"));
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(request(format!(
                "--table {table:?}: letters, digits and _ only"
            )));
        }
        let options: MySqlConnectOptions = url
            .parse()
            .map_err(|e| request(format!("not a mysql:// URL: {e}")))?;
        let options = options
            .timezone(Some("+00:00".to_owned()))
            .disable_statement_logging();
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(ImportError::Source)?;
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .map_err(ImportError::Source)?;
        let has = |c: &str| columns.iter().any(|n| n.eq_ignore_ascii_case(c));
        if columns.is_empty() {
            return Err(request(format!("no table {table:?} in that database")));
        }
        if !has("date_time") || !has("emissions") {
            return Err(request(format!(
                "{table} has no date_time and emissions columns (it has {})",
                columns.join(", ")
            )));
        }
        let has_device = has("device");
        if !has_device && device.is_none() {
            return Err(request(format!(
                "{table} has no device column: say whose readings they are with --device"
            )));
        }
        let key = if has("id") { Key::Id } else { Key::DateTime };
        if key == Key::DateTime {
            let timeless: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {} WHERE date_time IS NULL",
                quoted(table)
            ))
            .fetch_one(&pool)
            .await
            .map_err(ImportError::Source)?;
            if timeless > 0 {
                tracing::warn!(table, rows = timeless, "Rows without a date_time are not imported: the table has no id to read them by, and they have no time to store");
            }
        }
        let approx_rows: Option<u64> = sqlx::query_scalar(
            "SELECT CAST(TABLE_ROWS AS UNSIGNED) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table)
        .fetch_optional(&pool)
        .await
        .map_err(ImportError::Source)?
        .flatten();
        let url: url::Url = url
            .parse()
            .map_err(|e| request(format!("not a URL: {e}")))?;
        let mut source = format!(
            "mysql://{}:{}{}/{table}",
            url.host_str().unwrap_or("localhost"),
            url.port().unwrap_or(3306),
            url.path()
        );
        if !has_device {
            if let Some(device) = device {
                source.push_str(&format!("?device={device}"));
            }
        }
        Ok(Self {
            pool,
            table: table.to_owned(),
            key,
            has_device,
            source,
            approx_rows: approx_rows.unwrap_or(0),
            read: 0,
            after: None,
        })
    }

    /// Goes on after what `import_progress` in the target database says
    /// was committed, if anything.
    pub async fn resume(&mut self, target: &MySqlPool) -> Result<(), ImportError> {
        let found: Option<(String, u64)> =
            sqlx::query_as("SELECT last_key, rows_read FROM import_progress WHERE source = ?")
                .bind(&self.source)
                .fetch_optional(target)
                .await
                .map_err(ImportError::Target)?;
        if let Some((key, read)) = found {
            tracing::info!(source = %self.source, after = %key, rows = read, "Resuming the import after the last key committed");
            self.after = Some(key);
            self.read = read;
        }
        Ok(())
    }

    /// What the queries select as the device.
    fn device_column(&self) -> &'static str {
        if self.has_device {
            "CAST(device AS CHAR)"
        } else {
            "NULL"
        }
    }

    /// The table's name, for dead letters.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The next page of at most `n` rows in key order; empty at the end.
    pub async fn next(&mut self, n: usize) -> Result<Vec<LegacyRow>, ImportError> {
        let device = self.device_column();
        let (key, order) = match self.key {
            Key::Id => ("CAST(id AS CHAR)", "id"),
            Key::DateTime => (TIME_TEXT, "date_time"),
        };
        // Without an id, a row without a time has no place in the order
        // (and no time to store): such rows are counted when the table is
        // opened and left behind.
        let after = match (&self.after, self.key) {
            (None, Key::Id) => "",
            (Some(_), Key::Id) => "WHERE id > CAST(? AS UNSIGNED)",
            (None, Key::DateTime) => "WHERE date_time IS NOT NULL",
            (Some(_), Key::DateTime) => "WHERE date_time > ?",
        };
        let sql = format!(
            "SELECT {key}, {device}, {TIME_TEXT}, CAST(emissions AS CHAR) FROM {table} \
             {after} ORDER BY {order} LIMIT {limit}",
            table = quoted(&self.table),
            limit = n.max(1)
        );
        let mut query = sqlx::query_as::<_, Raw>(&sql);
        if let Some(after) = &self.after {
            query = query.bind(after.as_str());
        }
        let mut rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(ImportError::Source)?;
        if self.key == Key::DateTime && rows.len() >= n.max(1) {
            rows = self.whole_groups(rows).await?;
        }
        let mut out = Vec::with_capacity(rows.len());
        for (key, device, time, value) in rows {
            let key = text(key).unwrap_or_default();
            let (device, time, value) = (text(device), text(time), text(value));
            self.read += 1;
            let number = match self.key {
                Key::Id => key.parse().unwrap_or(self.read),
                Key::DateTime => self.read,
            };
            out.push(LegacyRow {
                key,
                number,
                device,
                time,
                value,
            });
        }
        if let Some(last) = out.last() {
            self.after = Some(last.key.clone());
        }
        Ok(out)
    }

    /// A full page by `date_time` without its last time's rows (the next
    /// page reads them whole), or, when the page is all one time, every
    /// row of that time.
    async fn whole_groups(&self, mut rows: Vec<Raw>) -> Result<Vec<Raw>, ImportError> {
        let Some(last) = rows.last().and_then(|r| r.0.clone()) else {
            return Ok(rows);
        };
        let cut = rows
            .iter()
            .rposition(|r| r.0.as_deref() != Some(last.as_slice()));
        match cut {
            Some(i) => {
                rows.truncate(i + 1);
                Ok(rows)
            }
            None => {
                let device = self.device_column();
                let sql = format!(
                    "SELECT {TIME_TEXT}, {device}, {TIME_TEXT}, CAST(emissions AS CHAR) \
                     FROM {table} WHERE date_time = ?",
                    table = quoted(&self.table)
                );
                sqlx::query_as::<_, Raw>(&sql)
                    .bind(String::from_utf8_lossy(&last).into_owned())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(ImportError::Source)
            }
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Reads a legacy table page by page into chunks; each chunk carries its
/// checkpoint (the page's last key).
pub async fn read(
    mut legacy: Legacy,
    mut mapper: Mapper,
    rows: usize,
    chunks: mpsc::Sender<Chunk>,
) -> Result<(), ImportError> {
    let source: Arc<str> = Arc::from(legacy.table());
    loop {
        let page = legacy.next(rows).await?;
        let now = chrono::Utc::now();
        let mut chunk = Chunk::new(source.clone(), page.len());
        chunk.end_of_input = page.is_empty();
        for row in &page {
            chunk.lines_read += 1;
            let raw = format!(
                "{}|{}",
                row.time.as_deref().unwrap_or("NULL"),
                row.value.as_deref().unwrap_or("NULL")
            );
            let at = Location {
                source: &source,
                line: row.number,
            };
            let record = match (&row.time, &row.value) {
                (Some(time), Some(value)) => {
                    let reading = Reading {
                        device: row.device.as_deref(),
                        time,
                        value,
                        seq: None,
                    };
                    mapper.reading(at, raw.as_bytes(), &reading, now)
                }
                (None, _) => {
                    mapper.refuse(at, raw.as_bytes(), Reason::BadDatetime, "date_time is NULL")
                }
                (_, None) => {
                    mapper.refuse(at, raw.as_bytes(), Reason::BadNumber, "emissions is NULL")
                }
            };
            chunk.push(record, row.number);
        }
        chunk.position = legacy.read;
        chunk.checkpoint = page.last().map(|r| (r.key.clone(), legacy.read));
        let end = chunk.end_of_input;
        if chunks.send(chunk).await.is_err() || end {
            break;
        }
    }
    legacy.close().await;
    Ok(())
}

/// key, device, date_time, emissions: all text, any of them NULL. Read as
/// bytes: a server may label computed text binary, which sqlx will not
/// decode as a string.
type Raw = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// Text of a column read as bytes.
fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| {
        String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    })
}
