//! Writes a batch in one transaction: each route's rows with one idempotent
//! multi-row INSERT per table, refused messages into `rejected_messages`. Transient failures are
//! retried with capped exponential back-off while nothing is acknowledged; a
//! row the database refuses is found by splitting the batch and dead-lettered
//! on its own, so one bad row never holds the others back.

use std::time::{Duration, Instant};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use co2_wire::Reading;
use sqlx::mysql::MySqlArguments;
use sqlx::query::Query;
use sqlx::{MySql, MySqlPool, Transaction};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
pub use crate::route::{DeadLetter, Record};
use crate::route::{Row, Target, Value};

/// Rows per statement. Each reading binds 3 values, each dead letter 4, and a
/// MySQL statement takes at most 65535 placeholders.
const ROWS_PER_STATEMENT: usize = 10_000;

/// Bytes of values per statement: images can be megabytes each, and a
/// statement must stay under the server's max_allowed_packet (16 MiB by default
/// on MariaDB, 64 MiB on MySQL 8).
const BYTES_PER_STATEMENT: usize = 8 * 1024 * 1024;

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Rows newly stored, per route.
    pub inserted: Vec<(Arc<str>, u64)>,
    /// Rows that were already stored, per route.
    pub duplicates: Vec<(Arc<str>, u64)>,
    /// (route, reason) of the messages dead-lettered, one entry per message.
    pub rejected: Vec<(Arc<str>, &'static str)>,
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
                    let single = [match &slice[0] {
                        Record::Rows {
                            route,
                            topic,
                            payload,
                            ..
                        } => Record::Rejected {
                            route: route.clone(),
                            letter: DeadLetter::new(
                                topic,
                                payload,
                                "db_rejected",
                                self.dead_letter_bytes,
                            ),
                        },
                        rejected => rejected.clone(),
                    }];
                    match self.commit_with_retry(&single, stop).await? {
                        Ok(part) => {
                            if matches!(slice[0], Record::Rows { .. }) {
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

        // Rows grouped by table, in arrival order within each.
        let mut groups: Vec<(&Arc<str>, &Arc<Target>, Vec<&Row>)> = Vec::new();
        let mut letters: Vec<&DeadLetter> = Vec::new();
        for record in records {
            match record {
                Record::Rows {
                    route,
                    target,
                    rows,
                    ..
                } => {
                    let group = match groups.iter_mut().position(|g| Arc::ptr_eq(g.1, target)) {
                        Some(i) => &mut groups[i],
                        None => {
                            groups.push((route, target, Vec::new()));
                            let last = groups.len() - 1;
                            &mut groups[last]
                        }
                    };
                    group.2.extend(rows);
                }
                Record::Rejected { route, letter } => {
                    letters.push(letter);
                    outcome.rejected.push((route.clone(), letter.reason));
                }
            }
        }
        for (route, target, rows) in groups {
            let (mut inserted, mut duplicates) = (0, 0);
            for chunk in statement_chunks(&rows, target.columns.len()) {
                let (i, d) = insert_rows(&mut tx, target, chunk).await?;
                inserted += i;
                duplicates += d;
            }
            outcome.inserted.push((route.clone(), inserted));
            outcome.duplicates.push((route.clone(), duplicates));
        }
        for chunk in letters.chunks(ROWS_PER_STATEMENT) {
            insert_dead_letters(&mut tx, chunk).await?;
        }

        tx.commit().await?;
        Ok(outcome)
    }
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        add_counts(&mut self.inserted, other.inserted);
        add_counts(&mut self.duplicates, other.duplicates);
        self.rejected.extend(other.rejected);
        self.refused.extend(other.refused);
    }

    /// Rows newly stored, all routes.
    pub fn total_inserted(&self) -> u64 {
        self.inserted.iter().map(|(_, n)| n).sum()
    }

    /// Duplicates, all routes.
    pub fn total_duplicates(&self) -> u64 {
        self.duplicates.iter().map(|(_, n)| n).sum()
    }
}

fn add_counts(into: &mut Vec<(Arc<str>, u64)>, from: Vec<(Arc<str>, u64)>) {
    for (route, n) in from {
        match into.iter_mut().find(|(r, _)| *r == route) {
            Some((_, total)) => *total += n,
            None => into.push((route, n)),
        }
    }
}

/// Splits rows into statements under the placeholder limit and the byte budget.
fn statement_chunks<'a, 'r>(rows: &'a [&'r Row], columns: usize) -> Vec<&'a [&'r Row]> {
    let max_rows = (u16::MAX as usize / columns.max(1)).min(ROWS_PER_STATEMENT);
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let weight: usize = row.iter().map(Value::weight).sum();
        if i > start && (i - start >= max_rows || bytes + weight > BYTES_PER_STATEMENT) {
            chunks.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += weight;
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// `INSERT ... VALUES (?, ?), (?, ?) ...` for `rows` rows of `columns` values.
///
/// Written out here rather than with sqlx's `QueryBuilder`, whose `push_bind`
/// panics when a value cannot be encoded: a value from a device must cost a
/// dead letter, never the pipeline.
fn values_sql(prefix: &str, rows: usize, columns: usize, suffix: &str) -> String {
    let group_len = 2 + columns.max(1) * 3;
    let mut sql = String::with_capacity(prefix.len() + 7 + rows * group_len + suffix.len());
    sql.push_str(prefix);
    sql.push_str("VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql.push_str(suffix);
    sql
}

/// Binds one value; an encoding failure is an error of this statement (and,
/// once the batch is split down to it, of this message), not a panic.
fn bind<'q>(
    query: &mut Query<'q, MySql, MySqlArguments>,
    value: &'q Value,
) -> Result<(), sqlx::Error> {
    match value {
        Value::Null => query.try_bind(None::<i64>),
        Value::Int(v) => query.try_bind(*v),
        Value::Float(v) => query.try_bind(*v),
        Value::Text(v) => query.try_bind(v.as_str()),
        Value::Bytes(v) => query.try_bind(v.as_ref()),
        Value::Time(v) => query.try_bind(*v),
    }
    .map_err(sqlx::Error::Encode)
}

/// A duplicate changes only its redelivery counter, so it reports two affected
/// rows and an insert one (sqlx sets CLIENT_FOUND_ROWS, under which a no-op
/// update would also report one): duplicates = affected - rows.
const ON_DUPLICATE: &str = " ON DUPLICATE KEY UPDATE `redeliveries` = `redeliveries` + 1";

/// Inserts rows; returns (newly inserted, duplicates).
async fn insert_rows(
    tx: &mut Transaction<'_, MySql>,
    target: &Target,
    rows: &[&Row],
) -> Result<(u64, u64), sqlx::Error> {
    let sql = values_sql(
        &target.insert_prefix,
        rows.len(),
        target.columns.len(),
        ON_DUPLICATE,
    );
    let mut query = sqlx::query(&sql);
    for value in rows.iter().flat_map(|row| row.iter()) {
        bind(&mut query, value)?;
    }
    let affected = query.execute(&mut **tx).await?.rows_affected();
    let rows = rows.len() as u64;
    let duplicates = affected.saturating_sub(rows).min(rows);
    Ok((rows - duplicates, duplicates))
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, MySql>,
    letters: &[&DeadLetter],
) -> Result<(), sqlx::Error> {
    let sql = values_sql(
        "INSERT INTO rejected_messages (topic, payload, payload_bytes, reason) ",
        letters.len(),
        4,
        "",
    );
    let mut query = sqlx::query(&sql);
    for letter in letters {
        query
            .try_bind(letter.topic.as_str())
            .and_then(|()| query.try_bind(letter.payload.as_slice()))
            .and_then(|()| query.try_bind(letter.payload_bytes))
            .and_then(|()| query.try_bind(letter.reason))
            .map_err(sqlx::Error::Encode)?;
    }
    query.execute(&mut **tx).await?;
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
    1153, // packet bigger than max_allowed_packet
    3819, // check constraint violated (MySQL)
    4025, // check constraint violated (MariaDB)
];

/// True when retrying the same statement later can succeed.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        // A value that cannot be encoded never will be.
        sqlx::Error::Encode(_) => false,
        _ => {
            crate::db::mysql_error_number(error).is_none_or(|n| !PERMANENT_ROW_ERRORS.contains(&n))
        }
    }
}

/// Commit time minus reading time, for the ingest-lag histogram.
pub fn lag_seconds(reading: &Reading, now: DateTime<Utc>) -> f64 {
    (now - reading.time()).num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_stay_under_the_placeholder_limit_and_byte_budget() {
        let small: Vec<Row> = (0..50_000)
            .map(|i| vec![Value::Int(i), Value::Int(i), Value::Int(i)])
            .collect();
        let refs: Vec<&Row> = small.iter().collect();
        let chunks = statement_chunks(&refs, 3);
        assert!(chunks.iter().all(|c| c.len() * 3 <= u16::MAX as usize));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 50_000);

        let image = vec![Value::Bytes(bytes::Bytes::from(vec![0u8; 3 * 1024 * 1024]))];
        let images: Vec<Row> = (0..5).map(|_| image.clone()).collect();
        let refs: Vec<&Row> = images.iter().collect();
        let sizes: Vec<usize> = statement_chunks(&refs, 1).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

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
    fn values_sql_has_one_placeholder_per_value() {
        assert_eq!(
            values_sql("INSERT INTO `t` (`a`, `b`) ", 2, 2, " X"),
            "INSERT INTO `t` (`a`, `b`) VALUES (?, ?), (?, ?) X"
        );
        let sql = values_sql("", 1000, 5, "");
        assert_eq!(sql.matches('?').count(), 5000);
    }

    /// Regression (issue 11): a time before the year 0 made sqlx's
    /// `QueryBuilder::push_bind` panic inside the commit task. Binding now
    /// fails with an encode error, which is permanent (dead letter, no retry).
    #[test]
    fn a_value_that_cannot_be_encoded_is_an_error_not_a_panic() {
        let ancient = chrono::NaiveDate::from_ymd_opt(-1200, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap();
        let value = Value::Time(ancient);
        let mut query = sqlx::query("SELECT ?");
        let err = bind(&mut query, &value).unwrap_err();
        assert!(matches!(err, sqlx::Error::Encode(_)), "{err}");
        assert!(!is_transient(&err));
    }

    #[test]
    fn io_and_pool_errors_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&io));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
    }
}
