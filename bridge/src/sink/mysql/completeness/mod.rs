//! The completeness scan: which numbered readings are missing from
//! `co2_emissions`, which LoRaWAN uplinks from `lorawan_frames`, and why.
//!
//! It works from the table, not from what one bridge saw: several bridges in
//! a shared subscription each see part of a stream, and only the table holds
//! all of it. Every `scan_interval` one bridge (a database lock keeps the
//! others out) reads:
//! 1. new announcements (`device_events`): the numbers each publisher says
//!    it dropped go into `announced_drops`;
//! 2. new readings: for each (device, epoch) they touch, the numbers between
//!    the highest number scanned and the newest that have no row are a gap,
//!    recorded `open` in `reading_gaps`;
//! 3. open gaps older than the grace period (`late_after`): the numbers in
//!    them are looked up once more (a reading that arrived after its
//!    successors is late, not lost), and what is still missing becomes a
//!    `final` gap, counted in `co2_device_readings_missing_total` as
//!    `announced` (the publisher said so) or `lost` (it did not: lost between
//!    the publisher and the table); what arrived is counted as late.
//!
//! Readings without a number are counted as unnumbered and are never gaps.
//!
//! LoRaWAN uplinks are numbered by their frame counter within a session
//! (`lorawan_frames`, written with the readings; see `frames.rs`), and go
//! through the same steps: a gap in the counter is uplinks lost between the
//! device and the table, counted as `lost` (nobody announces them). A session
//! starts wherever its first stored frame is: the counters before it are not
//! a gap, so a bridge that starts listening mid-session, or a reset, claims
//! no loss it cannot see.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use co2_wire::{DeviceEvent, EventError, EventKind, SeqRange};
use sqlx::pool::PoolConnection;
use sqlx::{MySql, MySqlPool, Row};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

mod spans;
mod summary;

pub use spans::{covered, missing_spans, Span};
pub use summary::{summary, DeviceCompleteness};

/// Rows read per query, so one scan never holds much in memory.
const CHUNK: i64 = 1000;

/// The completeness scan of one MySQL sink.
pub struct Completeness {
    pool: MySqlPool,
    metrics: Arc<Metrics>,
    interval: Duration,
    late_after: Duration,
}

/// A table of numbered rows the scan reads.
struct Numbered {
    /// Its name in `completeness_progress`.
    progress: &'static str,
    table: &'static str,
    epoch: &'static str,
    seq: &'static str,
    time: &'static str,
    /// Numbers start at 1 in every epoch, so what precedes its first row is
    /// missing too (the publisher's numbering); false where the start cannot be seen.
    from_one: bool,
}

/// The CO2 readings' numbers (`seq_epoch`, `seq`; NULL for unnumbered ones).
const READINGS: Numbered = Numbered {
    progress: "readings",
    table: "co2_emissions",
    epoch: "seq_epoch",
    seq: "seq",
    time: "date_time",
    from_one: true,
};

/// LoRaWAN uplinks' frame counters within their sessions.
const FRAMES: Numbered = Numbered {
    progress: "lorawan_frames",
    table: "lorawan_frames",
    epoch: "epoch",
    seq: "f_cnt",
    time: "`time`",
    from_one: false,
};

impl Completeness {
    /// A scan every `interval`, calling a gap final after `late_after`.
    pub fn new(
        pool: MySqlPool,
        metrics: Arc<Metrics>,
        interval: Duration,
        late_after: Duration,
    ) -> Self {
        Self {
            pool,
            metrics,
            interval,
            late_after,
        }
    }

    /// The pool it scans (the status page reads the same tables).
    pub fn pool(&self) -> MySqlPool {
        self.pool.clone()
    }

    /// Scans until `stop`; a failed scan is logged (once until one succeeds) and retried.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            match self.scan().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "The completeness scan failed; it runs again shortly");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One pass (see the module docs); another bridge's pass in progress makes it a no-op.
    pub async fn scan(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(CONCAT('co2-completeness:', DATABASE()), 0)")
                .fetch_one(&mut *conn)
                .await?;
        if locked != Some(1) {
            return Ok(());
        }
        let result = async {
            self.take_events(&mut conn).await?;
            self.take_readings(&mut conn).await?;
            self.take_numbered(&mut conn, &FRAMES).await?;
            self.finalize(&mut conn).await
        }
        .await;
        let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('co2-completeness:', DATABASE()))")
            .execute(&mut *conn)
            .await;
        result
    }

    async fn take_events(&self, conn: &mut PoolConnection<MySql>) -> Result<(), sqlx::Error> {
        let mut last = progress(conn, "events").await?;
        loop {
            let rows = sqlx::query(
                "SELECT id, CAST(device AS CHAR), CAST(event_id AS CHAR), body FROM device_events \
                 WHERE id > ? ORDER BY id LIMIT ?",
            )
            .bind(last)
            .bind(CHUNK)
            .fetch_all(&mut **conn)
            .await?;
            for row in &rows {
                let (device, event_id, body): (String, String, String) =
                    (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                let event = DeviceEvent::decode(body.as_bytes()).map(|e| e.kind);
                if let Ok(EventKind::QueueFilling { bound, .. }) = &event {
                    self.metrics.queue_filling(&device, bound.as_str());
                }
                for (range, cause) in announced(event) {
                    sqlx::query(
                        "INSERT INTO announced_drops (device, epoch, first_seq, last_seq, cause, event_id) \
                         VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE last_seq = last_seq",
                    )
                    .bind(&device)
                    .bind(range.epoch().to_string())
                    .bind(range.first())
                    .bind(range.last())
                    .bind(cause)
                    .bind(&event_id)
                    .execute(&mut **conn)
                    .await?;
                }
            }
            let Some(id) = rows.last().map(|r| r.try_get::<u64, _>(0)).transpose()? else {
                break;
            };
            last = id;
            set_progress(conn, "events", last).await?;
            if (rows.len() as i64) < CHUNK {
                break;
            }
        }
        Ok(())
    }

    async fn take_readings(&self, conn: &mut PoolConnection<MySql>) -> Result<(), sqlx::Error> {
        let Some((last, high)) = self.new_rows(conn, &READINGS).await? else {
            return Ok(());
        };
        let unnumbered = sqlx::query(
            "SELECT CAST(device AS CHAR), COUNT(*) FROM co2_emissions \
             WHERE id > ? AND id <= ? AND seq IS NULL GROUP BY device",
        )
        .bind(last)
        .bind(high)
        .fetch_all(&mut **conn)
        .await?;
        for row in &unnumbered {
            let (device, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            self.metrics
                .completeness(&device, "unnumbered", u64::try_from(n).unwrap_or(0));
        }
        self.find_numbered(conn, &READINGS, last, high).await
    }

    /// Finds the gaps the rows of `source` added since the last scan touch.
    async fn take_numbered(
        &self,
        conn: &mut PoolConnection<MySql>,
        source: &Numbered,
    ) -> Result<(), sqlx::Error> {
        match self.new_rows(conn, source).await? {
            Some((last, high)) => self.find_numbered(conn, source, last, high).await,
            None => Ok(()),
        }
    }

    /// The ids of `source`'s rows not scanned yet, `(after, through)`, if any.
    async fn new_rows(
        &self,
        conn: &mut PoolConnection<MySql>,
        source: &Numbered,
    ) -> Result<Option<(u64, u64)>, sqlx::Error> {
        let last = progress(conn, source.progress).await?;
        let high: Option<u64> =
            sqlx::query_scalar(&format!("SELECT MAX(id) FROM {}", source.table))
                .fetch_one(&mut **conn)
                .await?;
        Ok(high.filter(|high| *high > last).map(|high| (last, high)))
    }

    /// Finds the gaps of the numbered rows with ids in `(last, high]`, and
    /// records them scanned.
    async fn find_numbered(
        &self,
        conn: &mut PoolConnection<MySql>,
        source: &Numbered,
        last: u64,
        high: u64,
    ) -> Result<(), sqlx::Error> {
        let touched = sqlx::query(&format!(
            "SELECT CAST(device AS CHAR), CAST({epoch} AS CHAR), MAX({seq}) FROM {table} \
             WHERE id > ? AND id <= ? AND {seq} IS NOT NULL GROUP BY device, {epoch}",
            epoch = source.epoch,
            seq = source.seq,
            table = source.table,
        ))
        .bind(last)
        .bind(high)
        .fetch_all(&mut **conn)
        .await?;
        for row in &touched {
            let (device, epoch, newest): (String, String, u64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            self.find_gaps(conn, source, &device, &epoch, newest)
                .await?;
        }
        set_progress(conn, source.progress, high).await
    }

    /// Records the gaps of `(device, epoch)` between its highest number
    /// scanned and `newest`.
    async fn find_gaps(
        &self,
        conn: &mut PoolConnection<MySql>,
        source: &Numbered,
        device: &str,
        epoch: &str,
        newest: u64,
    ) -> Result<(), sqlx::Error> {
        let through: u64 = sqlx::query_scalar(
            "SELECT scanned_through FROM completeness_epochs WHERE device = ? AND epoch = ?",
        )
        .bind(device)
        .bind(epoch)
        .fetch_optional(&mut **conn)
        .await?
        .unwrap_or(0);
        if newest <= through {
            return Ok(());
        }
        // Numbers start at 1: in a new epoch, what comes before the first row is missing too.
        if through == 0 && source.from_one {
            let first: Option<(u64, NaiveDateTime)> = sqlx::query_as(&format!(
                "SELECT {seq}, {time} FROM {table} WHERE device = ? AND {epoch} = ? \
                 ORDER BY {seq} LIMIT 1",
                seq = source.seq,
                time = source.time,
                table = source.table,
                epoch = source.epoch,
            ))
            .bind(device)
            .bind(epoch)
            .fetch_optional(&mut **conn)
            .await?;
            if let Some((first, at)) = first.filter(|(first, _)| *first > 1) {
                record_gap(conn, device, epoch, (1, first - 1), None, Some(at)).await?;
            }
        }
        let gaps = sqlx::query(&format!(
            "SELECT prev_seq, seq, prev_time, this_time FROM ( \
               SELECT {seq} AS seq, {time} AS this_time, LAG({seq}) OVER w AS prev_seq, \
                 LAG({time}) OVER w AS prev_time \
               FROM {table} WHERE device = ? AND {epoch} = ? AND {seq} >= ? AND {seq} <= ? \
               WINDOW w AS (ORDER BY {seq})) t \
             WHERE prev_seq IS NOT NULL AND seq > prev_seq + 1",
            seq = source.seq,
            time = source.time,
            table = source.table,
            epoch = source.epoch,
        ))
        .bind(device)
        .bind(epoch)
        .bind(through.max(u64::from(source.from_one)))
        .bind(newest)
        .fetch_all(&mut **conn)
        .await?;
        for row in &gaps {
            let (before, after): (u64, u64) = (row.try_get(0)?, row.try_get(1)?);
            let (from, to): (NaiveDateTime, NaiveDateTime) = (row.try_get(2)?, row.try_get(3)?);
            record_gap(
                conn,
                device,
                epoch,
                (before + 1, after - 1),
                Some(from),
                Some(to),
            )
            .await?;
        }
        sqlx::query(
            "INSERT INTO completeness_epochs (device, epoch, scanned_through) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE scanned_through = GREATEST(scanned_through, VALUES(scanned_through))",
        )
        .bind(device)
        .bind(epoch)
        .bind(newest)
        .execute(&mut **conn)
        .await?;
        Ok(())
    }

    /// Settles open gaps past the grace period: what arrived meanwhile is
    /// late, what is still missing is final.
    async fn finalize(&self, conn: &mut PoolConnection<MySql>) -> Result<(), sqlx::Error> {
        let grace_us = i64::try_from(self.late_after.as_micros()).unwrap_or(i64::MAX);
        let due = sqlx::query(
            "SELECT id, CAST(device AS CHAR), CAST(epoch AS CHAR), first_seq, last_seq, from_time, to_time \
             FROM reading_gaps WHERE state = 'open' \
               AND first_seen <= UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND \
             ORDER BY id LIMIT ?",
        )
        .bind(grace_us)
        .bind(CHUNK)
        .fetch_all(&mut **conn)
        .await?;
        for row in &due {
            let id: u64 = row.try_get(0)?;
            let (device, epoch): (String, String) = (row.try_get(1)?, row.try_get(2)?);
            let span: Span = (row.try_get(3)?, row.try_get(4)?);
            let times: (Option<NaiveDateTime>, Option<NaiveDateTime>) =
                (row.try_get(5)?, row.try_get(6)?);
            // A gap's epoch is either table's: CO2 epochs are 16 random hex
            // digits, LoRaWAN ones a DevAddr and a time, never the same text.
            let present: Vec<u64> = sqlx::query_scalar(
                "SELECT seq FROM co2_emissions WHERE device = ? AND seq_epoch = ? \
                 AND seq BETWEEN ? AND ? \
                 UNION ALL SELECT f_cnt FROM lorawan_frames WHERE device = ? AND epoch = ? \
                 AND f_cnt BETWEEN ? AND ? ORDER BY 1",
            )
            .bind(&device)
            .bind(&epoch)
            .bind(span.0)
            .bind(span.1)
            .bind(&device)
            .bind(&epoch)
            .bind(span.0)
            .bind(span.1)
            .fetch_all(&mut **conn)
            .await?;
            let announced: Vec<Span> = sqlx::query_as(
                "SELECT first_seq, last_seq FROM announced_drops WHERE device = ? AND epoch = ? \
                 AND last_seq >= ? AND first_seq <= ?",
            )
            .bind(&device)
            .bind(&epoch)
            .bind(span.0)
            .bind(span.1)
            .fetch_all(&mut **conn)
            .await?;
            let missing = missing_spans(span, &present);
            let mut pieces = missing.iter();
            match pieces.next() {
                None => {
                    sqlx::query("UPDATE reading_gaps SET state = 'filled' WHERE id = ?")
                        .bind(id)
                        .execute(&mut **conn)
                        .await?;
                }
                Some(first) => {
                    sqlx::query(
                        "UPDATE reading_gaps SET state = 'final', first_seq = ?, last_seq = ?, announced = ? \
                         WHERE id = ?",
                    )
                    .bind(first.0)
                    .bind(first.1)
                    .bind(covered(*first, &announced))
                    .bind(id)
                    .execute(&mut **conn)
                    .await?;
                    for piece in pieces {
                        sqlx::query(
                            "INSERT INTO reading_gaps (device, epoch, first_seq, last_seq, announced, state, \
                             first_seen, from_time, to_time) \
                             VALUES (?, ?, ?, ?, ?, 'final', UTC_TIMESTAMP(3), ?, ?) \
                             ON DUPLICATE KEY UPDATE state = 'final'",
                        )
                        .bind(&device)
                        .bind(&epoch)
                        .bind(piece.0)
                        .bind(piece.1)
                        .bind(covered(*piece, &announced))
                        .bind(times.0)
                        .bind(times.1)
                        .execute(&mut **conn)
                        .await?;
                    }
                }
            }
            let total: u64 = missing.iter().map(|s| s.1 - s.0 + 1).sum();
            let said: u64 = missing.iter().map(|s| covered(*s, &announced)).sum();
            self.metrics.completeness(&device, "announced", said);
            self.metrics.completeness(&device, "lost", total - said);
            self.metrics
                .completeness(&device, "late", present.len() as u64);
            if total > said {
                tracing::warn!(
                    device = %device,
                    epoch = %epoch,
                    lost = total - said,
                    announced = said,
                    from = span.0,
                    to = span.1,
                    "Readings lost between the publisher and the table (numbers missing, not announced)"
                );
            }
        }
        Ok(())
    }
}

async fn record_gap(
    conn: &mut PoolConnection<MySql>,
    device: &str,
    epoch: &str,
    span: Span,
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reading_gaps (device, epoch, first_seq, last_seq, state, first_seen, from_time, to_time) \
         VALUES (?, ?, ?, ?, 'open', UTC_TIMESTAMP(3), ?, ?) ON DUPLICATE KEY UPDATE last_seq = last_seq",
    )
    .bind(device)
    .bind(epoch)
    .bind(span.0)
    .bind(span.1)
    .bind(from)
    .bind(to)
    .execute(&mut **conn)
    .await?;
    Ok(())
}

async fn progress(conn: &mut PoolConnection<MySql>, name: &str) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query_scalar("SELECT last_id FROM completeness_progress WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut **conn)
            .await?
            .unwrap_or(0),
    )
}

async fn set_progress(
    conn: &mut PoolConnection<MySql>,
    name: &str,
    id: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO completeness_progress (name, last_id) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE last_id = GREATEST(last_id, VALUES(last_id))",
    )
    .bind(name)
    .bind(id)
    .execute(&mut **conn)
    .await?;
    Ok(())
}

/// The numbers an announcement says were dropped, with why.
fn announced(event: Result<EventKind, EventError>) -> Vec<(SeqRange, &'static str)> {
    match event {
        Ok(EventKind::ReadingsDropped { cause, ranges, .. }) => {
            ranges.into_iter().map(|r| (r, cause.as_str())).collect()
        }
        Ok(EventKind::QueueCorrupt { lost_ranges, .. }) => lost_ranges
            .into_iter()
            .map(|r| (r, "queue_corrupt"))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_drop_announcements_name_numbers() {
        use co2_wire::{DropCause, Epoch, EventId};
        let dropped = DeviceEvent {
            id: EventId(1),
            at: None,
            kind: EventKind::ReadingsDropped {
                cause: DropCause::MaxRows,
                count: 35,
                unnumbered: 0,
                ranges: vec![SeqRange::new(Epoch::new(7), 1, 35).unwrap()],
            },
        };
        let got = announced(DeviceEvent::decode(&dropped.encode()).map(|e| e.kind));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.len(), got[0].1), (35, "max_rows"));
        let resync = DeviceEvent {
            id: EventId(2),
            at: None,
            kind: EventKind::ClockResync { offset_ms: 5 },
        };
        assert!(announced(Ok(resync.kind)).is_empty());
        assert!(announced(DeviceEvent::decode(b"junk").map(|e| e.kind)).is_empty());
    }
}
