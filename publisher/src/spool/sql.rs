//! The spool's SQL: reading rows back, the bounds' deletes, the `meta`
//! table, the integrity check, and SQLite's errors as [`SpoolError`]s.

use std::path::Path;

use co2_wire::{DropCause, Epoch, Seq};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{Bounds, SpoolError, ADDED_COLUMNS};
use crate::ledger::{DropLedger, Numbering};
use crate::store::{Dropped, Entry, Kind};

/// A reading's number from its `epoch` and `seq` columns (NULL: none).
pub(crate) fn seq_of(epoch: Option<i64>, n: Option<i64>) -> Option<Seq> {
    // The epoch is stored as the u64's bits in SQLite's i64.
    Seq::new(Epoch::new(epoch? as u64), u64::try_from(n?).ok()?)
}

pub(super) fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let seq = seq_of(r.get(4)?, r.get(5)?);
    Ok(Entry {
        id: r.get(0)?,
        kind: Kind::from_code(r.get(1)?),
        topic: r.get(2)?,
        payload: r.get(3)?,
        seq,
        stamped_ms: r.get(6)?,
    })
}

pub(super) fn apply_bounds(
    tx: &rusqlite::Transaction<'_>,
    bounds: Bounds,
    rows: &mut u64,
    now_ms: i64,
    ledger: &mut DropLedger,
) -> Result<Dropped, rusqlite::Error> {
    let mut dropped = Dropped::default();
    let returned = |stmt: &mut rusqlite::Statement<'_>, arg: i64| {
        stmt.query_map([arg], |r| Ok(seq_of(r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<Option<Seq>>>>()
    };
    if let Some(max_age) = bounds.max_age {
        if now_ms > 0 {
            let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(age_ms);
            let mut stmt = tx.prepare_cached(
                "DELETE FROM readings WHERE kind = 0 AND stamped_ms < ?1 RETURNING epoch, seq",
            )?;
            let seqs = returned(&mut stmt, cutoff)?;
            dropped.too_old = seqs.len() as u64;
            *rows = rows.saturating_sub(dropped.too_old);
            ledger.add(DropCause::MaxAge, seqs);
        }
    }
    if *rows > bounds.max_rows {
        let excess = i64::try_from(*rows - bounds.max_rows).unwrap_or(i64::MAX);
        // Ids grow with time, so the smallest ids are the oldest readings.
        let mut stmt = tx.prepare_cached(
            "DELETE FROM readings WHERE id IN \
             (SELECT id FROM readings WHERE kind = 0 ORDER BY id LIMIT ?1) RETURNING epoch, seq",
        )?;
        let seqs = returned(&mut stmt, excess)?;
        dropped.over_rows = seqs.len() as u64;
        *rows = rows.saturating_sub(dropped.over_rows);
        ledger.add(DropCause::MaxRows, seqs);
    }
    Ok(dropped)
}

/// `PRAGMA quick_check`: every page readable and well formed (not the
/// indexes' content: that costs a full `integrity_check`).
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), SpoolError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| classify(path, e))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| classify(path, e))?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(SpoolError::Corrupt {
        path: path.to_owned(),
        reason: format!("integrity check failed: {}", lines.join("; ")),
    })
}

pub(super) fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA table_info(readings)")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    for (name, decl) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE readings ADD COLUMN {name} {decl}"))?;
        }
    }
    Ok(())
}

/// The stored numbering, if the file has one.
pub(crate) fn read_numbering(conn: &Connection) -> rusqlite::Result<Option<Numbering>> {
    let epoch = meta_int(conn, "epoch")?;
    let next = meta_int(conn, "next_seq")?;
    Ok(match (epoch, next) {
        (Some(e), Some(n)) => Some(Numbering {
            epoch: Epoch::new(e as u64),
            next: u64::try_from(n).unwrap_or(1).max(1),
        }),
        _ => None,
    })
}

pub(crate) fn meta_int(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .optional()
    .map(Option::flatten)
}

pub(super) fn meta_text(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, Option<String>>(0)
    })
    .optional()
    .map(Option::flatten)
}

pub(super) fn set_meta(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    value: impl rusqlite::ToSql,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

pub(super) fn sqlite(path: &Path, source: rusqlite::Error) -> SpoolError {
    SpoolError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Like [`sqlite`], but "busy" means another process holds the file.
pub(super) fn classify(path: &Path, source: rusqlite::Error) -> SpoolError {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) => SpoolError::Locked(path.to_owned()),
        _ => sqlite(path, source),
    }
}
