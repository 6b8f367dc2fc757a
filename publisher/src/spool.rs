//! The on-disk queue: SQLite in WAL mode, oldest first, bounded by rows and age.
//!
//! A reading is appended (with its sequence number) before it is published
//! and deleted only on its PUBACK, so a crash, a reboot or an outage replays
//! it. Device events ride in the same table (`kind = 1`) so that they are as
//! durable as readings, but the bounds never drop them.
//!
//! Durability against SD wear: an append commits with `synchronous = FULL`
//! (by default, `queue.synchronous`): the WAL is fsynced before the reading
//! is handed to MQTT, so a power cut cannot lose a reading that was
//! published or reported queued. Deletes after PUBACK commit with `NORMAL`
//! (no fsync; the next append's fsync covers them): a power cut may undo the
//! last deletes, which only means those readings are sent again and the
//! bridge's unique key absorbs them. In WAL mode neither setting can corrupt
//! the file on power loss. At one reading per 10 s that is one fsync per
//! reading, and the uplink batches deletes (see `uplink`).
//!
//! The `meta` table keeps what must survive with the queue: the numbering
//! (epoch, next number), the row count (so a damaged file still tells how
//! many readings it held) and the drops not yet announced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::config::Synchronous;
use crate::ledger::{DropLedger, Numbering};
use crate::store::QueueStore;
pub use crate::store::{Appended, Dropped, Entry, Failure, Kind, NewEntry, SpoolError};

mod sql;

use sql::{
    add_missing_columns, apply_bounds, classify, meta_text, quick_check, row_entry, set_meta,
    sqlite,
};
pub(crate) use sql::{meta_int, read_numbering, seq_of};

/// Most device events kept in the queue; beyond it the oldest go (counted).
pub const MAX_EVENTS: u64 = 10_000;
/// WAL pages between checkpoints (SQLite's default is 1000).
const WAL_PAGES: i64 = 256;

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::Reading => 0,
            Kind::Event => 1,
        }
    }

    fn from_code(code: i64) -> Self {
        if code == 1 {
            Kind::Event
        } else {
            Kind::Reading
        }
    }
}

/// Size and age bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most readings kept.
    pub max_rows: u64,
    /// Oldest reading kept; `None` keeps any age.
    pub max_age: Option<Duration>,
}

/// How the queue file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Size and age bounds.
    pub bounds: Bounds,
    /// `synchronous` for appends.
    pub synchronous: Synchronous,
}

impl Options {
    /// `bounds`, with the default `synchronous = FULL`.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            synchronous: Synchronous::Full,
        }
    }
}

/// Extra work an append does in its transaction.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// Number from here on (memory's numbering continued on disk).
    pub numbering: Option<Numbering>,
    /// Drops to add to the ledger (memory's, when it moves to disk).
    pub drops: Option<&'a DropLedger>,
    /// Start from an empty ledger (its drops were just announced).
    pub clear_drops: bool,
}

/// The queue. One process at a time: the file is locked exclusively.
pub struct Spool {
    conn: Connection,
    path: PathBuf,
    options: Options,
    /// Readings queued, kept in memory: `COUNT(*)` scans the table, too slow per append.
    rows: u64,
    /// Events queued.
    events: u64,
    numbering: Numbering,
    /// Whether this open started the numbering (a new or pre-numbering file).
    fresh_numbering: bool,
    ledger: DropLedger,
    events_dropped: u64,
    /// The `synchronous` value last set, so it is set only when it changes.
    sync_now: Option<&'static str>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused
    stamped_ms INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    kind       INTEGER NOT NULL DEFAULT 0,        -- 0 reading, 1 device event
    epoch      INTEGER,                           -- the reading's number: epoch (u64 bits) ...
    seq        INTEGER                            -- ... and n; NULL for events and old readings
);
CREATE INDEX IF NOT EXISTS readings_stamped_ms ON readings (stamped_ms);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value
);
";

/// Columns added since the first release, for queue files it wrote.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("kind", "INTEGER NOT NULL DEFAULT 0"),
    ("epoch", "INTEGER"),
    ("seq", "INTEGER"),
];

impl Spool {
    /// Opens (or creates) the queue at `path`, checking its integrity first.
    pub fn open(path: &Path, options: Options) -> Result<Self, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite(path, e))?;
        Self::init(conn, path.to_owned(), options, true)
    }

    /// An in-memory queue (tests).
    pub fn open_in_memory(bounds: Bounds) -> Result<Self, SpoolError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| sqlite(&path, e))?;
        Self::init(conn, path, Options::new(bounds), false)
    }

    fn init(
        conn: Connection,
        path: PathBuf,
        options: Options,
        check: bool,
    ) -> Result<Self, SpoolError> {
        let err = |e| classify(&path, e);
        // Exclusive locking: no shared-memory file, and a second publisher on the
        // same file fails at start instead of double-publishing.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_millis(200)).map_err(err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if path.as_os_str() != ":memory:" && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "Queue could not switch to WAL mode");
        }
        // A small WAL: a nearly full card still has room for it, and a
        // checkpoint every ~1 MiB costs a few more page writes than SQLite's
        // 4 MiB default (see the README on SD wear).
        conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_PAGES * 4096)
            .map_err(err)?;
        if check {
            quick_check(&conn, &path)?;
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        add_missing_columns(&conn).map_err(err)?;
        let count = |kind: i64| -> Result<u64, SpoolError> {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM readings WHERE kind = ?1",
                    [kind],
                    |r| r.get(0),
                )
                .map_err(err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let rows = count(Kind::Reading.code())?;
        let events = count(Kind::Event.code())?;
        let stored = read_numbering(&conn).map_err(err)?;
        let fresh_numbering = stored.is_none();
        let numbering = stored.unwrap_or_else(Numbering::fresh);
        let ledger = meta_text(&conn, "pending_drops")
            .map_err(err)?
            .and_then(|t| DropLedger::from_json(&t))
            .unwrap_or_default();
        let events_dropped = meta_int(&conn, "events_dropped")
            .map_err(err)?
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let mut spool = Self {
            conn,
            path,
            options,
            rows,
            events,
            numbering,
            fresh_numbering,
            ledger,
            events_dropped,
            sync_now: None,
        };
        if fresh_numbering {
            // Persist the new epoch now: a restart must continue it, not start another.
            spool.write(&[], 0, Extras::default())?;
        }
        Ok(spool)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Readings and events queued.
    pub fn len(&self) -> u64 {
        self.rows + self.events
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Readings queued.
    pub fn readings(&self) -> u64 {
        self.rows
    }

    /// Events queued.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events dropped by [`MAX_EVENTS`] over the queue's life.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// The numbering: the next reading gets `numbering().next`.
    pub fn numbering(&self) -> Numbering {
        self.numbering
    }

    /// Whether this open started a new epoch (a new file, or one from before numbering).
    pub fn fresh_numbering(&self) -> bool {
        self.fresh_numbering
    }

    /// Drops not yet announced.
    pub fn pending_drops(&self) -> &DropLedger {
        &self.ledger
    }

    /// Appends `entries` in one transaction, numbering readings that have
    /// no number, then applies the bounds (`now_ms` for age; `None` skips
    /// the age bound, e.g. while the clock is not trusted).
    pub fn append(&mut self, entries: &[NewEntry], now_ms: i64) -> Result<Appended, SpoolError> {
        self.write(entries, now_ms, Extras::default())
    }

    /// [`Spool::append`] with extra work in the same transaction.
    pub fn write(
        &mut self,
        entries: &[NewEntry],
        now_ms: i64,
        extras: Extras<'_>,
    ) -> Result<Appended, SpoolError> {
        let sync = match self.options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        self.set_synchronous(sync)?;
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        // Work on copies: a failed transaction must leave the in-memory state as it was.
        let mut numbering = extras.numbering.unwrap_or(self.numbering);
        let mut ledger = if extras.clear_drops {
            DropLedger::default()
        } else {
            self.ledger.clone()
        };
        if let Some(drops) = extras.drops {
            ledger.merge(drops);
        }
        let mut rows = self.rows;
        let mut events = self.events;
        let mut events_dropped = self.events_dropped;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut out = Appended::default();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO readings (stamped_ms, topic, payload, kind, epoch, seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for e in entries {
                let seq = match (e.kind, e.seq) {
                    (_, Some(seq)) => Some(seq),
                    (Kind::Reading, None) => Some(numbering.take()),
                    (Kind::Event, None) => None,
                };
                insert
                    .execute(params![
                        e.stamped_ms,
                        e.topic,
                        e.payload,
                        e.kind.code(),
                        seq.map(|s| s.epoch().get() as i64),
                        seq.map(|s| i64::try_from(s.n()).unwrap_or(i64::MAX)),
                    ])
                    .map_err(err)?;
                out.ids.push(tx.last_insert_rowid());
                out.seqs.push(seq);
                match e.kind {
                    Kind::Reading => rows += 1,
                    Kind::Event => events += 1,
                }
            }
        }
        let bounds = self.options.bounds;
        out.dropped = apply_bounds(&tx, bounds, &mut rows, now_ms, &mut ledger).map_err(err)?;
        if events > MAX_EVENTS {
            let n = tx
                .execute(
                    "DELETE FROM readings WHERE id IN \
                     (SELECT id FROM readings WHERE kind = 1 ORDER BY id LIMIT ?1)",
                    [i64::try_from(events - MAX_EVENTS).unwrap_or(i64::MAX)],
                )
                .map_err(err)? as u64;
            events -= n;
            events_dropped += n;
            out.dropped.events = n;
        }
        set_meta(&tx, "epoch", numbering.epoch.get() as i64).map_err(err)?;
        set_meta(
            &tx,
            "next_seq",
            i64::try_from(numbering.next).unwrap_or(i64::MAX),
        )
        .map_err(err)?;
        set_meta(&tx, "rows", rows as i64).map_err(err)?;
        set_meta(&tx, "events_dropped", events_dropped as i64).map_err(err)?;
        if ledger != self.ledger {
            set_meta(&tx, "pending_drops", ledger.to_json()).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.numbering = numbering;
        self.ledger = ledger;
        self.rows = rows;
        self.events = events;
        self.events_dropped = events_dropped;
        Ok(out)
    }

    /// Applies only the age bound (an idle publisher still ages out readings).
    pub fn trim(&mut self, now_ms: i64) -> Result<Dropped, SpoolError> {
        self.set_synchronous("NORMAL")?;
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let mut rows = self.rows;
        let mut ledger = self.ledger.clone();
        let tx = self.conn.transaction().map_err(err)?;
        let dropped =
            apply_bounds(&tx, self.options.bounds, &mut rows, now_ms, &mut ledger).map_err(err)?;
        if dropped.total() > 0 {
            set_meta(&tx, "rows", rows as i64).map_err(err)?;
            set_meta(&tx, "pending_drops", ledger.to_json()).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.rows = rows;
        self.ledger = ledger;
        Ok(dropped)
    }

    /// Turns the pending drops into events (`make` builds them from the
    /// ledger) and clears the ledger, in one transaction. Returns how many
    /// events were queued.
    pub fn announce_drops(
        &mut self,
        now_ms: i64,
        make: impl FnOnce(&DropLedger) -> Vec<NewEntry>,
    ) -> Result<usize, SpoolError> {
        Ok(self.announce(now_ms, make)?.ids.len())
    }

    fn announce(
        &mut self,
        now_ms: i64,
        make: impl FnOnce(&DropLedger) -> Vec<NewEntry>,
    ) -> Result<Appended, SpoolError> {
        if self.ledger.is_empty() {
            return Ok(Appended::default());
        }
        let entries = make(&self.ledger);
        let extras = Extras {
            clear_drops: true,
            ..Extras::default()
        };
        self.write(&entries, now_ms, extras)
    }

    /// Up to `limit` entries with an id greater than `after`, oldest first.
    pub fn next_after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let err = |e| classify(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, kind, topic, payload, epoch, seq, stamped_ms FROM readings \
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], row_entry)
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// When the oldest queued reading was stamped (Unix ms).
    pub fn oldest_reading_ms(&self) -> Result<Option<i64>, SpoolError> {
        self.conn
            .query_row(
                "SELECT MIN(stamped_ms) FROM readings WHERE kind = 0",
                [],
                |r| r.get(0),
            )
            .map_err(|e| classify(&self.path, e))
    }

    /// Deletes acknowledged entries in one transaction; returns how many existed
    /// (an entry the bounds already dropped is not counted twice).
    pub fn ack(&mut self, ids: &[i64]) -> Result<u64, SpoolError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.set_synchronous("NORMAL")?;
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let (mut rows, mut events) = (self.rows, self.events);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM readings WHERE id = ?1 RETURNING kind")
                .map_err(err)?;
            for id in ids {
                let kind: Option<i64> = delete
                    .query_row([id], |r| r.get(0))
                    .optional()
                    .map_err(err)?;
                match kind.map(Kind::from_code) {
                    Some(Kind::Reading) => rows = rows.saturating_sub(1),
                    Some(Kind::Event) => events = events.saturating_sub(1),
                    None => {}
                }
            }
        }
        set_meta(&tx, "rows", rows as i64).map_err(err)?;
        tx.commit().map_err(err)?;
        let deleted = (self.rows - rows) + (self.events - events);
        self.rows = rows;
        self.events = events;
        Ok(deleted)
    }

    /// Copies the WAL into the file and truncates it: frees the WAL's space
    /// on a full disk when the file itself has room (freed pages) for it.
    pub fn checkpoint(&mut self) -> Result<(), SpoolError> {
        let path = self.path.clone();
        let (busy, _, _): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| classify(&path, e))?;
        if busy != 0 {
            return Err(SpoolError::Worker("checkpoint could not complete".into()));
        }
        Ok(())
    }

    fn set_synchronous(&mut self, value: &'static str) -> Result<(), SpoolError> {
        if self.sync_now != Some(value) {
            self.conn
                .pragma_update(None, "synchronous", value)
                .map_err(|e| classify(&self.path, e))?;
            self.sync_now = Some(value);
        }
        Ok(())
    }
}

impl QueueStore for Spool {
    fn len(&self) -> u64 {
        Spool::len(self)
    }

    fn readings(&self) -> u64 {
        Spool::readings(self)
    }

    fn numbering(&self) -> Numbering {
        self.numbering
    }

    fn pending_drops(&self) -> &DropLedger {
        &self.ledger
    }

    fn oldest_reading_ms(&self) -> Result<Option<i64>, SpoolError> {
        Spool::oldest_reading_ms(self)
    }

    fn append(&mut self, entries: &[NewEntry], now_ms: i64) -> Result<Appended, SpoolError> {
        Spool::append(self, entries, now_ms)
    }

    fn next_after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        Spool::next_after(self, after, limit)
    }

    fn ack(&mut self, ids: &[i64]) -> Result<u64, SpoolError> {
        Spool::ack(self, ids)
    }

    /// The file keeps the bounds it was opened with (`queue.max_age_s`,
    /// as `max_age` is), and applies them all.
    fn trim(&mut self, now_ms: i64, _max_age: Duration) -> Result<Dropped, SpoolError> {
        Spool::trim(self, now_ms)
    }

    fn announce_drops(
        &mut self,
        now_ms: i64,
        make: &mut dyn FnMut(&DropLedger) -> Vec<NewEntry>,
    ) -> Result<Appended, SpoolError> {
        self.announce(now_ms, make)
    }
}

#[cfg(test)]
mod tests;
