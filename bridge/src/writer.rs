//! Writes a batch in one transaction: readings with one idempotent multi-row
//! INSERT, refused messages into `rejected_messages`. Transient failures are
//! retried with capped exponential back-off while nothing is acknowledged; a
//! row the database refuses is found by splitting the batch and dead-lettered
//! on its own, so one bad row never holds the others back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use co2_wire::{DeviceId, Reading};
use sqlx::{MySql, MySqlPool, QueryBuilder, Transaction};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// Rows per statement. Each reading binds 3 values, each dead letter 4, and a
/// MySQL statement takes at most 65535 placeholders.
const ROWS_PER_STATEMENT: usize = 10_000;

/// Bytes of topic kept in a dead letter (`rejected_messages.topic` is VARCHAR(255)).
const DEAD_LETTER_TOPIC_CHARS: usize = 255;

/// What one message becomes in the database.
#[derive(Debug, Clone)]
pub enum Record {
    /// A valid reading for `co2_emissions`; topic and payload are kept in case the
    /// database refuses the row and it must be dead-lettered after all.
    Reading {
        /// The device, from the topic.
        device: DeviceId,
        /// The decoded reading.
        reading: Reading,
        /// The topic it arrived on.
        topic: String,
        /// The raw payload.
        payload: Bytes,
    },
    /// A message that cannot be stored as a reading.
    Rejected(DeadLetter),
}

/// A row for `rejected_messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic, truncated to the column.
    pub topic: String,
    /// The first bytes of the payload.
    pub payload: Vec<u8>,
    /// The payload's real length.
    pub payload_bytes: u32,
    /// A snake_case reason (a metric label too).
    pub reason: &'static str,
}

impl DeadLetter {
    /// A dead letter keeping at most `max_payload` bytes of the payload.
    pub fn new(topic: &str, payload: &[u8], reason: &'static str, max_payload: usize) -> Self {
        Self {
            topic: topic.chars().take(DEAD_LETTER_TOPIC_CHARS).collect(),
            payload: payload[..payload.len().min(max_payload)].to_vec(),
            payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            reason,
        }
    }
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Readings newly stored.
    pub inserted: u64,
    /// Readings that were already stored.
    pub duplicates: u64,
    /// Reasons of the messages dead-lettered, one entry per message.
    pub rejected: Vec<&'static str>,
    /// Indices (into the batch) of readings the database refused, now dead letters.
    pub refused: Vec<usize>,
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Shutdown came while the database was failing; the batch stays unacknowledged
    /// and the broker delivers it again to the next session.
    #[error("gave up writing the batch because the bridge is shutting down")]
    Abandoned,
}

/// Writes batches to MySQL.
pub struct Writer {
    pool: MySqlPool,
    retry_max: Duration,
    dead_letter_bytes: usize,
    metrics: std::sync::Arc<Metrics>,
}

impl Writer {
    /// A writer over `pool`, backing off at most `retry_max` between attempts.
    pub fn new(
        pool: MySqlPool,
        retry_max: Duration,
        dead_letter_bytes: usize,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            retry_max,
            dead_letter_bytes,
            metrics,
        }
    }

    /// Writes every record, durably, or returns [`WriteError::Abandoned`] once `stop`
    /// fires while the database is failing.
    pub async fn write(
        &self,
        records: &[Record],
        stop: &CancellationToken,
    ) -> Result<Outcome, WriteError> {
        let mut outcome = Outcome::default();
        // Ranges still to write; a range the database refuses is split in two.
        let mut todo: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
        todo.push(0..records.len());
        while let Some(range) = todo.pop() {
            if range.is_empty() {
                continue;
            }
            let slice = &records[range.clone()];
            match self.commit_with_retry(slice, stop).await? {
                Ok(part) => outcome.merge(part),
                Err(refusal) if slice.len() == 1 => {
                    tracing::warn!(
                        error = %refusal,
                        "The database refused a reading; storing it in rejected_messages"
                    );
                    let letter = match &slice[0] {
                        Record::Reading { topic, payload, .. } => {
                            DeadLetter::new(topic, payload, "db_rejected", self.dead_letter_bytes)
                        }
                        Record::Rejected(letter) => letter.clone(),
                    };
                    let single = [Record::Rejected(letter)];
                    match self.commit_with_retry(&single, stop).await? {
                        Ok(part) => {
                            if matches!(slice[0], Record::Reading { .. }) {
                                outcome.refused.push(range.start);
                            }
                            outcome.merge(part);
                        }
                        // A dead letter is built to fit its table; if even that is
                        // refused, retrying is all that is left that loses nothing.
                        Err(e) => {
                            tracing::error!(error = %e, "The database refused a dead letter; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(self.retry_max) => todo.push(range),
                                _ = stop.cancelled() => return Err(WriteError::Abandoned),
                            }
                        }
                    }
                }
                Err(_) => {
                    let mid = range.start + range.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
            }
        }
        Ok(outcome)
    }

    /// Commits `records`, retrying transient failures. The inner result is a
    /// permanent refusal by the database.
    async fn commit_with_retry(
        &self,
        records: &[Record],
        stop: &CancellationToken,
    ) -> Result<Result<Outcome, sqlx::Error>, WriteError> {
        let mut backoff = Backoff::new(Duration::from_millis(50), self.retry_max);
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.commit(records).await {
                Ok(outcome) => {
                    self.metrics
                        .db_write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.db_up.set(1);
                    if let Some(since) = failing_since {
                        tracing::info!(
                            down_for_s = since.elapsed().as_secs_f64(),
                            "Database writes succeed again"
                        );
                    }
                    return Ok(Ok(outcome));
                }
                Err(e) if is_transient(&e) => {
                    self.metrics.db_retries.inc();
                    self.metrics.db_up.set(0);
                    let delay = backoff.next_delay();
                    if failing_since.is_none() {
                        failing_since = Some(started);
                        tracing::warn!(
                            error = %e,
                            rows = records.len(),
                            "Database write failed; retrying with back-off, nothing is acknowledged meanwhile"
                        );
                    } else {
                        tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "Database write failed again");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return Err(WriteError::Abandoned),
                    }
                }
                Err(e) => {
                    self.metrics.db_up.set(1);
                    return Ok(Err(e));
                }
            }
        }
    }

    async fn commit(&self, records: &[Record]) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut outcome = Outcome::default();

        let readings: Vec<(&DeviceId, &Reading)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Reading {
                    device, reading, ..
                } => Some((device, reading)),
                Record::Rejected(_) => None,
            })
            .collect();
        for chunk in readings.chunks(ROWS_PER_STATEMENT) {
            let (inserted, duplicates) = insert_readings(&mut tx, chunk).await?;
            outcome.inserted += inserted;
            outcome.duplicates += duplicates;
        }

        let letters: Vec<&DeadLetter> = records
            .iter()
            .filter_map(|r| match r {
                Record::Rejected(letter) => Some(letter),
                Record::Reading { .. } => None,
            })
            .collect();
        for chunk in letters.chunks(ROWS_PER_STATEMENT) {
            insert_dead_letters(&mut tx, chunk).await?;
        }
        outcome.rejected = letters.iter().map(|l| l.reason).collect();

        tx.commit().await?;
        Ok(outcome)
    }
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.rejected.extend(other.rejected);
        self.refused.extend(other.refused);
    }
}

/// Inserts readings; returns (newly inserted, duplicates).
async fn insert_readings(
    tx: &mut Transaction<'_, MySql>,
    rows: &[(&DeviceId, &Reading)],
) -> Result<(u64, u64), sqlx::Error> {
    let mut query =
        QueryBuilder::<MySql>::new("INSERT INTO co2_emissions (device, date_time, emissions) ");
    query.push_values(rows, |mut row, (device, reading)| {
        row.push_bind(device.as_str())
            .push_bind(reading.time().naive_utc())
            .push_bind(reading.emissions());
    });
    // A duplicate changes only its redelivery counter, so it reports two affected
    // rows and an insert one (sqlx sets CLIENT_FOUND_ROWS, under which a no-op
    // update would also report one): duplicates = affected - rows.
    query.push(" ON DUPLICATE KEY UPDATE redeliveries = redeliveries + 1");
    let affected = query.build().execute(&mut **tx).await?.rows_affected();
    let rows = rows.len() as u64;
    let duplicates = affected.saturating_sub(rows).min(rows);
    Ok((rows - duplicates, duplicates))
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, MySql>,
    letters: &[&DeadLetter],
) -> Result<(), sqlx::Error> {
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO rejected_messages (topic, payload, payload_bytes, reason) ",
    );
    query.push_values(letters, |mut row, letter| {
        row.push_bind(letter.topic.as_str())
            .push_bind(letter.payload.as_slice())
            .push_bind(letter.payload_bytes)
            .push_bind(letter.reason);
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

/// MySQL/MariaDB error numbers that mean "this row can never be stored as it is".
/// Everything else is retried: a missing table or a revoked grant is fixed by an
/// operator, and until then the messages wait unacknowledged instead of being lost.
const PERMANENT_ROW_ERRORS: &[u16] = &[
    1048, // column cannot be null
    1264, // out of range value for column
    1265, // data truncated for column
    1292, // incorrect datetime value
    1366, // incorrect value for column
    1406, // data too long for column
    1451, 1452, // foreign key constraint
    1690, // value out of range
    3819, // check constraint violated (MySQL)
    4025, // check constraint violated (MariaDB)
];

/// True when retrying the same statement later can succeed.
pub fn is_transient(error: &sqlx::Error) -> bool {
    crate::db::mysql_error_number(error).is_none_or(|n| !PERMANENT_ROW_ERRORS.contains(&n))
}

/// Commit time minus reading time, for the ingest-lag histogram.
pub fn lag_seconds(reading: &Reading, now: DateTime<Utc>) -> f64 {
    (now - reading.time()).num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_bounded() {
        let topic = "t".repeat(300);
        let d = DeadLetter::new(&topic, &[7u8; 2000], "oversized", 1024);
        assert_eq!(d.topic.chars().count(), 255);
        assert_eq!(d.payload.len(), 1024);
        assert_eq!(d.payload_bytes, 2000);
        // Truncation counts characters, so a multi-byte topic is never cut mid-character.
        let d = DeadLetter::new(&"é".repeat(300), b"", "x", 0);
        assert_eq!(d.topic.chars().count(), 255);
    }

    #[test]
    fn io_and_pool_errors_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&io));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
    }
}
