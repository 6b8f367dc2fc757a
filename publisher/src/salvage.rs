//! A damaged queue file: moved aside as `<queue>.corrupt-<UTC time>`, a fresh
//! queue started in its place (a new epoch), and whatever rows can still be
//! read copied into it, keeping their numbers. Old damaged files are kept up
//! to a count and a size, for a post-mortem.
//!
//! Reading a damaged file: rows are read in id order; where a read fails, the
//! scan probes ahead (doubling, then bisecting) for the first id it can read
//! again, and goes on from there. What lies between is lost; its numbers are
//! bounded by the readable rows on either side (and by the `meta` table's
//! last number at the end), which is what the announcement reports.

use std::path::{Path, PathBuf};

use co2_wire::{ranges_of, DeviceEvent, Epoch, EventKind, Seq, SeqRange};
use rusqlite::{params, Connection, OpenFlags};

use crate::spool::{meta_int, read_numbering, seq_of, Extras, Options, Spool, SpoolError};
use crate::store::{Kind, NewEntry};

/// Rows copied per transaction.
const BATCH: usize = 500;

/// Where salvaged rows go, by kind (a damaged file's own topic column is not trusted).
#[derive(Debug, Clone)]
pub struct Topics {
    /// `<prefix>/<device>/emissions`.
    pub readings: String,
    /// `<prefix>/<device>/events`.
    pub events: String,
}

/// How many damaged files to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Newest files kept.
    pub files: u32,
    /// Bytes kept (the newest file is kept whatever its size).
    pub bytes: u64,
}

/// What a recovery did; becomes a `queue_corrupt` announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Why the file was judged damaged.
    pub reason: String,
    /// Where it went.
    pub moved_to: PathBuf,
    /// Readings copied into the fresh queue.
    pub salvaged: u64,
    /// Events copied into the fresh queue.
    pub salvaged_events: u64,
    /// Readings the damaged file held but could not give back; `None`: unknown.
    pub lost: Option<u64>,
    /// The damaged file's epoch, if readable.
    pub old_epoch: Option<Epoch>,
    /// The last number it had given, if readable.
    pub old_last_seq: Option<u64>,
    /// Numbers that were in the unreadable part.
    pub lost_ranges: Vec<SeqRange>,
    /// The fresh queue's epoch.
    pub new_epoch: Epoch,
    /// Older damaged files deleted to stay within the retention.
    pub pruned: Vec<PathBuf>,
}

impl Recovery {
    /// The announcement.
    pub fn event(&self) -> EventKind {
        EventKind::QueueCorrupt {
            reason: crate::event::short(&self.reason),
            moved_to: self
                .moved_to
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            salvaged: self.salvaged,
            lost: self.lost,
            old_epoch: self.old_epoch,
            old_last_seq: self.old_last_seq,
            lost_ranges: self
                .lost_ranges
                .iter()
                .take(co2_wire::MAX_RANGES)
                .copied()
                .collect(),
            new_epoch: self.new_epoch,
        }
    }
}

/// Moves the damaged queue at `path` aside, starts a fresh one there and
/// salvages what it can into it.
pub fn recover(
    path: &Path,
    options: Options,
    reason: String,
    topics: &Topics,
    retention: Retention,
) -> Result<(Spool, Recovery), SpoolError> {
    let moved_to = move_aside(path)?;
    let mut fresh = Spool::open(path, options)?;
    let new_epoch = fresh.numbering().epoch;
    let scan = salvage(&moved_to, &mut fresh, topics)?;
    let pruned = prune(path, retention);
    let lost = if scan.unreadable {
        scan.meta_rows
            .map(|rows| rows.saturating_sub(scan.salvaged) + scan.invalid)
    } else {
        Some(scan.invalid)
    };
    let recovery = Recovery {
        reason,
        moved_to,
        salvaged: scan.salvaged,
        salvaged_events: scan.salvaged_events,
        lost,
        old_epoch: scan.numbering.map(|n| n.epoch),
        old_last_seq: scan.numbering.and_then(|n| n.last()),
        lost_ranges: scan.lost_ranges,
        new_epoch,
        pruned,
    };
    Ok((fresh, recovery))
}

/// Renames the queue and its WAL to `<queue>.corrupt-<UTC time>[-<n>]`
/// (the WAL keeps SQLite's naming, so the moved file opens with it).
pub fn move_aside(path: &Path) -> Result<PathBuf, SpoolError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("{}.corrupt-{stamp}", path.display());
    let mut target = PathBuf::from(&base);
    let mut n = 2;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SpoolError::Io { path, source }
    };
    if path.exists() {
        std::fs::rename(path, &target).map_err(io(path))?;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let from = companion(path, suffix);
        if from.exists() {
            std::fs::rename(&from, companion(&target, suffix)).map_err(io(&from))?;
        }
    }
    Ok(target)
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What a scan of a damaged file found.
#[derive(Debug, Default)]
struct Scan {
    salvaged: u64,
    salvaged_events: u64,
    /// Rows read back but unusable (a payload that is not what it should be).
    invalid: u64,
    /// Some read failed.
    unreadable: bool,
    meta_rows: Option<u64>,
    numbering: Option<crate::ledger::Numbering>,
    lost_ranges: Vec<SeqRange>,
}

fn salvage(damaged: &Path, into: &mut Spool, topics: &Topics) -> Result<Scan, SpoolError> {
    let mut scan = Scan::default();
    // Read-write but query-only: a read-only open of a WAL file without its
    // shared-memory file fails, and exclusive locking needs no such file.
    let conn = match Connection::open_with_flags(
        damaged,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(file = %damaged.display(), error = %e, "Cannot open the damaged queue to salvage it");
            scan.unreadable = true;
            return Ok(scan);
        }
    };
    // writable_schema: a file shorter than its header says (truncated) is
    // otherwise refused outright; query_only keeps it read-only all the same.
    let prepared = conn
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .and_then(|_| conn.pragma_update(None, "writable_schema", true))
        .and_then(|_| conn.pragma_update(None, "query_only", true));
    let Some(select) = prepared.ok().and_then(|_| select_sql(&conn)) else {
        scan.unreadable = true;
        return Ok(scan);
    };
    scan.numbering = read_numbering(&conn).ok().flatten();
    scan.meta_rows = meta_int(&conn, "rows")
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok());

    let mut after = 0i64;
    // The last readable reading's number, and whether unreadable rows follow it.
    let mut prev: Option<Seq> = None;
    let mut gap = false;
    let mut invalid_seqs = Vec::new();
    loop {
        let (rows, failed) = fetch(&conn, &select, after);
        let full = rows.len() == BATCH;
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            after = row.id;
            if gap {
                scan.lost_ranges.extend(between(prev, row.seq));
                gap = false;
            }
            if row.seq.is_some() {
                prev = row.seq;
            }
            match usable(row, topics) {
                Ok(entry) => {
                    match entry.kind {
                        Kind::Reading => scan.salvaged += 1,
                        Kind::Event => scan.salvaged_events += 1,
                    }
                    batch.push(entry);
                }
                Err(seq) => {
                    scan.invalid += 1;
                    invalid_seqs.extend(seq);
                }
            }
        }
        if !batch.is_empty() {
            into.write(&batch, 0, Extras::default())?;
        }
        if !failed {
            if full {
                continue;
            }
            break;
        }
        scan.unreadable = true;
        gap = true;
        match probe_next(&conn, &select, after) {
            Some(id) => after = id - 1,
            None => break,
        }
    }
    if gap {
        // Unreadable to the end: up to the last number the file had given.
        if let Some(numbering) = scan.numbering {
            let first = match prev {
                Some(p) if p.epoch() == numbering.epoch => p.n().saturating_add(1),
                Some(_) => 0,
                None => 1,
            };
            if let Some(last) = numbering.last() {
                if first > 0 {
                    scan.lost_ranges
                        .extend(SeqRange::new(numbering.epoch, first, last).ok());
                }
            }
        }
    }
    scan.lost_ranges.extend(ranges_of(invalid_seqs));
    Ok(scan)
}

/// The numbers strictly between two readable rows (from 1 when nothing was readable before).
fn between(before: Option<Seq>, after: Option<Seq>) -> Option<SeqRange> {
    let after = after?;
    let first = match before {
        Some(b) if b.epoch() == after.epoch() => b.n().checked_add(1)?,
        Some(_) => return None,
        None => 1,
    };
    SeqRange::new(after.epoch(), first, after.n().checked_sub(1)?).ok()
}

/// The SELECT for this file's columns (a file from before numbering lacks some).
fn select_sql(conn: &Connection) -> Option<String> {
    let mut stmt = conn.prepare("PRAGMA table_info(readings)").ok()?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    if have.is_empty() {
        return None;
    }
    let col = |name: &str, missing: &str| {
        if have.iter().any(|h| h == name) {
            name.to_owned()
        } else {
            missing.to_owned()
        }
    };
    Some(format!(
        "SELECT id, stamped_ms, payload, {}, {}, {} FROM readings WHERE id > ?1 ORDER BY id LIMIT ?2",
        col("kind", "0"),
        col("epoch", "NULL"),
        col("seq", "NULL"),
    ))
}

struct Row {
    id: i64,
    stamped_ms: i64,
    payload: Vec<u8>,
    kind: i64,
    seq: Option<Seq>,
}

/// Up to [`BATCH`] rows after `after`, and whether a read failed before the batch was complete.
fn fetch(conn: &Connection, select: &str, after: i64) -> (Vec<Row>, bool) {
    let Ok(mut stmt) = conn.prepare_cached(select) else {
        return (Vec::new(), true);
    };
    let Ok(mut rows) = stmt.query(params![after, BATCH as i64]) else {
        return (Vec::new(), true);
    };
    let mut out = Vec::new();
    loop {
        match rows.next() {
            Ok(Some(r)) => match read_row(r) {
                Ok(row) => out.push(row),
                Err(_) => return (out, true),
            },
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let seq = seq_of(r.get(4)?, r.get(5)?);
    Ok(Row {
        id: r.get(0)?,
        stamped_ms: r.get(1)?,
        payload: r.get(2)?,
        kind: r.get(3)?,
        seq,
    })
}

/// The row as an entry for the fresh queue, or its number if its content is unusable.
fn usable(row: Row, topics: &Topics) -> Result<NewEntry, Option<Seq>> {
    let (kind, topic, ok) = if row.kind == 1 {
        let ok = DeviceEvent::decode(&row.payload).is_ok();
        (Kind::Event, &topics.events, ok)
    } else {
        // The shape of `datetime|emissions`; the bridge checks the rest.
        let ok = row.payload.len() <= 256
            && std::str::from_utf8(&row.payload).is_ok_and(|s| s.matches('|').count() == 1);
        (Kind::Reading, &topics.readings, ok)
    };
    if !ok {
        return Err(row.seq.filter(|_| kind == Kind::Reading));
    }
    Ok(NewEntry {
        kind,
        topic: topic.clone(),
        payload: row.payload,
        stamped_ms: row.stamped_ms,
        seq: if kind == Kind::Reading { row.seq } else { None },
    })
}

fn first_id_after(conn: &Connection, after: i64) -> rusqlite::Result<Option<i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM readings WHERE id > ?1 ORDER BY id LIMIT 1")?;
    let mut rows = stmt.query([after])?;
    match rows.next()? {
        Some(r) => Ok(Some(r.get(0)?)),
        None => Ok(None),
    }
}

/// The first id after `after` whose row can be read again, skipping an
/// unreadable stretch: starts further ahead, doubling, until a read works,
/// then bisects back to where reading starts working.
fn probe_next(conn: &Connection, select: &str, after: i64) -> Option<i64> {
    let readable = |start: i64| -> Option<Option<i64>> {
        let id = first_id_after(conn, start).ok()?;
        match id {
            // The row itself must be readable too, not only its key.
            Some(id) => {
                let (rows, failed) = fetch_one(conn, select, id - 1);
                (rows && !failed).then_some(Some(id))
            }
            None => Some(None),
        }
    };
    let mut failing = after;
    let mut step: i64 = 1;
    let (mut ok_at, mut found) = loop {
        let start = after.checked_add(step)?;
        if let Some(found) = readable(start) {
            break (start, found);
        }
        failing = start;
        step = step.checked_mul(2)?;
    };
    while ok_at - failing > 1 {
        let mid = failing + (ok_at - failing) / 2;
        match readable(mid) {
            Some(f) => {
                ok_at = mid;
                found = f;
            }
            None => failing = mid,
        }
    }
    found
}

/// Whether the first row after `after` reads completely: (got one, a read failed).
fn fetch_one(conn: &Connection, select: &str, after: i64) -> (bool, bool) {
    let (rows, failed) = fetch(conn, select, after);
    (!rows.is_empty(), failed && rows.is_empty())
}

/// Deletes the oldest `<queue>.corrupt-*` files (with their WAL) beyond the retention.
pub fn prune(queue: &Path, retention: Retention) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (queue.parent(), queue.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.corrupt-", name.to_string_lossy());
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut damaged: Vec<PathBuf> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
                n.starts_with(&prefix)
                    && !["-wal", "-shm", "-journal"].iter().any(|s| n.ends_with(s))
            })
        })
        .collect();
    // The name carries the UTC time: newest first.
    damaged.sort();
    damaged.reverse();
    let size = |p: &Path| -> u64 {
        std::iter::once(p.to_owned())
            .chain(["-wal", "-shm", "-journal"].map(|s| companion(p, s)))
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    };
    let mut kept_bytes = 0u64;
    let mut pruned = Vec::new();
    for (i, file) in damaged.into_iter().enumerate() {
        let bytes = size(&file);
        let keep = (i as u64) < u64::from(retention.files)
            && (i == 0 || kept_bytes.saturating_add(bytes) <= retention.bytes);
        if keep {
            kept_bytes = kept_bytes.saturating_add(bytes);
            continue;
        }
        for f in std::iter::once(file.clone())
            .chain(["-wal", "-shm", "-journal"].map(|s| companion(&file, s)))
        {
            let _ = std::fs::remove_file(f);
        }
        pruned.push(file);
    }
    pruned
}

#[cfg(test)]
mod tests;
