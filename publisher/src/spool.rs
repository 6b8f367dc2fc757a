//! The durable queue: SQLite in WAL mode, oldest first, bounded by rows and age.
//!
//! A reading is appended before it is published and deleted only on its
//! PUBACK, so a crash, a reboot or an outage replays it. An SD card is slow
//! and wears, so callers batch: many appends or acks per transaction, and
//! `synchronous = NORMAL` (in WAL mode a commit then costs no fsync; a power
//! cut can lose the last commits, a process crash loses nothing).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite refused an operation.
    #[error("queue {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Another process holds the queue (two publishers on one file would
    /// publish each reading twice and miscount).
    #[error("queue {0} is in use by another process")]
    Locked(PathBuf),
    /// A thread panicked while holding the queue, or the blocking task died.
    #[error("queue worker failed: {0}")]
    Worker(String),
}

/// One queued reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Queue position: larger is newer; never reused.
    pub id: i64,
    /// MQTT topic it goes to.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// A reading to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// When it was stamped, in Unix milliseconds (for the age bound).
    pub stamped_ms: i64,
}

/// What the bounds dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Oldest readings dropped because the queue held more than `max_rows`.
    pub over_rows: u64,
    /// Readings dropped because they were older than `max_age`.
    pub too_old: u64,
}

impl Dropped {
    /// Both causes together.
    pub fn total(&self) -> u64 {
        self.over_rows + self.too_old
    }
}

/// Size and age bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most rows kept.
    pub max_rows: u64,
    /// Oldest reading kept; `None` keeps any age.
    pub max_age: Option<Duration>,
}

/// The queue. One process at a time: the file is locked exclusively.
pub struct Spool {
    conn: Connection,
    path: PathBuf,
    bounds: Bounds,
    /// Row count, kept in memory: `COUNT(*)` scans the table, too slow per append.
    rows: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused
    stamped_ms INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_stamped_ms ON readings (stamped_ms);
";

impl Spool {
    /// Opens (or creates) the queue at `path`.
    pub fn open(path: &Path, bounds: Bounds) -> Result<Self, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SpoolError::Sqlite {
                path: path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite(path, e))?;
        Self::init(conn, path.to_owned(), bounds)
    }

    /// An in-memory queue (tests).
    pub fn open_in_memory(bounds: Bounds) -> Result<Self, SpoolError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| sqlite(&path, e))?;
        Self::init(conn, path, bounds)
    }

    fn init(conn: Connection, path: PathBuf, bounds: Bounds) -> Result<Self, SpoolError> {
        let err = |e| sqlite(&path, e);
        // Exclusive locking: no shared-memory file, and a second publisher on the
        // same file fails at start instead of double-publishing.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_millis(200)).map_err(err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::DatabaseBusy =>
                {
                    SpoolError::Locked(path.clone())
                }
                e => sqlite(&path, e),
            })?;
        if path.as_os_str() != ":memory:" && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "Queue could not switch to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
                SpoolError::Locked(path.clone())
            }
            e => sqlite(&path, e),
        })?;
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
            .map_err(err)?;
        Ok(Self {
            conn,
            path,
            bounds,
            rows: u64::try_from(rows).unwrap_or(0),
        })
    }

    /// Rows queued.
    pub fn len(&self) -> u64 {
        self.rows
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends `entries` in one transaction, then applies the bounds (`now_ms`
    /// for age). Returns the new ids, in order, and what the bounds dropped.
    pub fn append(
        &mut self,
        entries: &[NewEntry],
        now_ms: i64,
    ) -> Result<(Vec<i64>, Dropped), SpoolError> {
        let path = self.path.clone();
        let err = |e| sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut ids = Vec::with_capacity(entries.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO readings (stamped_ms, topic, payload) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            for e in entries {
                insert
                    .execute(params![e.stamped_ms, e.topic, e.payload])
                    .map_err(err)?;
                ids.push(tx.last_insert_rowid());
            }
        }
        self.rows += entries.len() as u64;
        let dropped = Self::apply_bounds(&tx, self.bounds, &mut self.rows, now_ms).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((ids, dropped))
    }

    /// Applies only the age bound (an idle publisher still ages out readings).
    pub fn trim(&mut self, now_ms: i64) -> Result<Dropped, SpoolError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sqlite(&path, e))?;
        let dropped = Self::apply_bounds(&tx, self.bounds, &mut self.rows, now_ms)
            .map_err(|e| sqlite(&path, e))?;
        tx.commit().map_err(|e| sqlite(&path, e))?;
        Ok(dropped)
    }

    fn apply_bounds(
        tx: &rusqlite::Transaction<'_>,
        bounds: Bounds,
        rows: &mut u64,
        now_ms: i64,
    ) -> Result<Dropped, rusqlite::Error> {
        let mut dropped = Dropped::default();
        if let Some(max_age) = bounds.max_age {
            let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(age_ms);
            let n = tx.execute("DELETE FROM readings WHERE stamped_ms < ?1", [cutoff])?;
            dropped.too_old = n as u64;
            *rows = rows.saturating_sub(n as u64);
        }
        if *rows > bounds.max_rows {
            let excess = i64::try_from(*rows - bounds.max_rows).unwrap_or(i64::MAX);
            // Ids grow with time, so the smallest ids are the oldest readings.
            let n = tx.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?1)",
                [excess],
            )?;
            dropped.over_rows = n as u64;
            *rows = rows.saturating_sub(n as u64);
        }
        Ok(dropped)
    }

    /// Up to `limit` entries with an id greater than `after`, oldest first.
    pub fn next_after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let err = |e| sqlite(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, topic, payload FROM readings WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Deletes acknowledged entries in one transaction; returns how many existed
    /// (an entry the bounds already dropped is not counted twice).
    pub fn ack(&mut self, ids: &[i64]) -> Result<u64, SpoolError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let err = |e| sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut deleted = 0u64;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM readings WHERE id = ?1")
                .map_err(err)?;
            for id in ids {
                deleted += delete.execute([id]).map_err(err)? as u64;
            }
        }
        tx.commit().map_err(err)?;
        self.rows = self.rows.saturating_sub(deleted);
        Ok(deleted)
    }
}

fn sqlite(path: &Path, source: rusqlite::Error) -> SpoolError {
    SpoolError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// A [`Spool`] shared by async tasks; every call runs on a blocking thread.
#[derive(Clone)]
pub struct SpoolHandle(Arc<Mutex<Spool>>);

impl SpoolHandle {
    /// Shares `spool`.
    pub fn new(spool: Spool) -> Self {
        Self(Arc::new(Mutex::new(spool)))
    }

    /// Runs `f` with the spool on a blocking thread.
    pub async fn with<T, F>(&self, f: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let mut spool = inner
                .lock()
                .map_err(|_| SpoolError::Worker("queue lock poisoned".into()))?;
            f(&mut spool)
        })
        .await
        .map_err(|e| SpoolError::Worker(e.to_string()))?
    }

    /// Rows queued (cheap: no disk access).
    pub fn len(&self) -> u64 {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn entry(n: i64) -> NewEntry {
        NewEntry {
            topic: "co2/a/emissions".into(),
            payload: format!("p{n}").into_bytes(),
            stamped_ms: n * 1000,
        }
    }

    fn payloads(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8(e.payload.clone()).unwrap())
            .collect()
    }

    fn unbounded() -> Bounds {
        Bounds {
            max_rows: 1_000_000,
            max_age: None,
        }
    }

    #[test]
    fn append_ack_and_replay_in_order() {
        let mut s = Spool::open_in_memory(unbounded()).unwrap();
        let (ids, dropped) = s
            .append(&(1..=5).map(entry).collect::<Vec<_>>(), 0)
            .unwrap();
        assert_eq!(dropped, Dropped::default());
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let first = s.next_after(0, 3).unwrap();
        assert_eq!(payloads(&first), ["p1", "p2", "p3"]);
        let rest = s.next_after(first[2].id, 10).unwrap();
        assert_eq!(payloads(&rest), ["p4", "p5"]);
        // Acks may arrive out of order; what is left replays oldest first.
        assert_eq!(s.ack(&[ids[1], ids[3]]).unwrap(), 2);
        assert_eq!(s.ack(&[ids[1]]).unwrap(), 0, "an ack counts once");
        assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p1", "p3", "p5"]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn ids_are_not_reused_after_everything_is_acked() {
        let mut s = Spool::open_in_memory(unbounded()).unwrap();
        let (ids, _) = s.append(&[entry(1)], 0).unwrap();
        s.ack(&ids).unwrap();
        let (again, _) = s.append(&[entry(2)], 0).unwrap();
        assert!(again[0] > ids[0]);
    }

    #[test]
    fn row_bound_drops_the_oldest_and_counts_them() {
        let mut s = Spool::open_in_memory(Bounds {
            max_rows: 3,
            max_age: None,
        })
        .unwrap();
        let mut dropped = 0;
        for n in 1..=10 {
            dropped += s.append(&[entry(n)], 0).unwrap().1.over_rows;
        }
        assert_eq!(dropped, 7);
        assert_eq!(s.len(), 3);
        assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p8", "p9", "p10"]);
        // A batch larger than the bound keeps its newest part.
        let (_, d) = s
            .append(&(11..=15).map(entry).collect::<Vec<_>>(), 0)
            .unwrap();
        assert_eq!(d.over_rows, 5);
        assert_eq!(
            payloads(&s.next_after(0, 10).unwrap()),
            ["p13", "p14", "p15"]
        );
    }

    #[test]
    fn age_bound_drops_old_readings() {
        let mut s = Spool::open_in_memory(Bounds {
            max_rows: 100,
            max_age: Some(Duration::from_secs(3600)),
        })
        .unwrap();
        let old = NewEntry {
            stamped_ms: 0,
            ..entry(1)
        };
        let fresh = NewEntry {
            stamped_ms: 2 * HOUR_MS,
            ..entry(2)
        };
        s.append(&[old, fresh], HOUR_MS / 2).unwrap();
        assert_eq!(s.len(), 2, "both young enough when appended");
        let d = s.trim(2 * HOUR_MS).unwrap();
        assert_eq!(d.too_old, 1);
        assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p2"]);
    }

    #[test]
    fn survives_reopen_and_locks_out_a_second_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/queue.sqlite3");
        {
            let mut s = Spool::open(&path, unbounded()).unwrap();
            s.append(&(1..=3).map(entry).collect::<Vec<_>>(), 0)
                .unwrap();
            let second = Spool::open(&path, unbounded());
            assert!(
                matches!(second, Err(SpoolError::Locked(_))),
                "{:?}",
                second.err()
            );
        }
        let s = Spool::open(&path, unbounded()).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p1", "p2", "p3"]);
    }
}
