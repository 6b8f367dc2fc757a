//! The MySQL sink: each route's messages go into its table with one
//! idempotent multi-row `INSERT ... ON DUPLICATE KEY UPDATE` per statement,
//! the dead letters into `rejected_messages`, all in one transaction (with
//! the deletion of the dead letters a replayed batch settles).

mod adopt;
pub(crate) mod completeness;
mod frames;
pub(crate) mod nodes;
pub mod retention;
pub mod rollup;
pub(crate) mod schema;
pub(crate) mod settle;
mod target;

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::mysql::MySqlArguments;
use sqlx::query::Query;
use sqlx::{MySql, MySqlPool, Transaction};

use super::{Batch, Item, PrepareError, Pruned, Sink, SinkError, StoredLetter, Written};
use crate::config::DatabaseSettings;
use crate::model::DeadLetter;
use crate::model::RouteId;
use crate::route::Routes;
use nodes::Nodes;
use retention::Retention;
use rollup::{Rollups, Series, Touches};
use target::Cell;
pub use target::Target;

/// Rows per statement at most; a statement also stays under MySQL's 65535
/// placeholders (see [`statement_chunks`]).
const ROWS_PER_STATEMENT: usize = 10_000;

/// Bytes of values per statement: images can be megabytes each, and a
/// statement must stay under the server's max_allowed_packet (16 MiB by default
/// on MariaDB, 64 MiB on MySQL 8).
const BYTES_PER_STATEMENT: usize = 8 * 1024 * 1024;

/// Writes batches to one MySQL (or MariaDB, or any MySQL-protocol) database.
pub struct MysqlSink {
    pool: MySqlPool,
    nodes: Nodes,
    /// The table target of each route that writes here, by route id.
    targets: Vec<Option<Target>>,
    /// The series with rollups each route writes, by route id.
    series: Vec<Option<&'static Series>>,
    rollups: Option<Rollups>,
    /// The tables partitioned by time, for migrations at start.
    retention: Retention,
    migrate_on_start: bool,
    retry_max: Duration,
}

impl MysqlSink {
    /// A sink over `pool` (on one of `nodes`) for the routes of `routes` that
    /// name sink `name`, configured by `db` (migrations at start, retry
    /// back-off), keeping `rollups` of the series that have them.
    pub fn new(
        pool: MySqlPool,
        nodes: Nodes,
        routes: &Routes,
        name: &str,
        db: &DatabaseSettings,
        rollups: Option<Rollups>,
        retention: Retention,
    ) -> Self {
        let targets = routes
            .iter()
            .map(|r| (r.sink() == name).then(|| Target::new(r)))
            .collect();
        let series = routes
            .iter()
            .map(|r| {
                (r.sink() == name && rollups.is_some())
                    .then(|| Series::of(r))
                    .flatten()
            })
            .collect();
        Self {
            pool,
            nodes,
            targets,
            series,
            rollups,
            retention,
            migrate_on_start: db.migrate_on_start,
            retry_max: Duration::from_millis(db.retry_max_ms),
        }
    }

    /// Brings the schema up to date, or checks that it is.
    async fn prepare_schema(&self) -> Result<(), PrepareError> {
        let pending = schema::pending_migrations(&self.pool).await.map_err(|e| {
            self.on_error(&e);
            PrepareError::Unavailable(e.to_string())
        })?;
        let missing = match &self.rollups {
            Some(rollups) => rollups.missing_tables(&self.pool).await.map_err(|e| {
                self.on_error(&e);
                PrepareError::Unavailable(e.to_string())
            })?,
            None => Vec::new(),
        };
        if pending.is_empty() && missing.is_empty() {
            return Ok(());
        }
        let behind = || {
            PrepareError::Fatal(format!(
                "the database schema is behind ({} migration(s) pending, {} rollup table(s) \
                 missing) and this account may not change it; run `co2-bridge migrate` with an \
                 admin account",
                pending.len(),
                missing.len()
            ))
        };
        if !self.migrate_on_start {
            return Err(behind());
        }
        match schema::migrate(&self.pool, self.rollups.as_ref(), &self.retention).await {
            Ok(()) => {
                tracing::info!(applied = pending.len(), "Database schema migrated");
                Ok(())
            }
            Err(e) if schema::is_access_denied(&e) => Err(behind()),
            Err(sqlx::migrate::MigrateError::Execute(e)) if is_transient(&e) => Err(
                PrepareError::Unavailable(format!("migration interrupted: {e}")),
            ),
            Err(e) => Err(PrepareError::Fatal(format!("migration failed: {e}"))),
        }
    }

    /// Moves to the next node when `error` says this one failed. Whatever the
    /// batch did there is either committed (and the retry finds its rows:
    /// the insert is idempotent) or rolled back; nothing was acknowledged.
    fn on_error(&self, error: &sqlx::Error) {
        if nodes::node_failed(error) {
            self.nodes.fail_over(&self.pool, &error.to_string());
        }
    }

    /// The rollup buckets `batch` touches.
    fn touches(&self, batch: &Batch<'_>) -> Touches {
        let mut touches = Touches::default();
        if let Some(rollups) = &self.rollups {
            let seconds = rollups.finest_seconds();
            for item in &batch.items {
                if let Some(Some(series)) = self.series.get(item.route) {
                    touches.add(series, item.message, seconds);
                }
            }
        }
        touches
    }

    async fn commit(&self, batch: &Batch<'_>) -> Result<Written, sqlx::Error> {
        let mut touches = self.touches(batch);
        let rollups = self.rollups.as_ref().filter(|_| !touches.is_empty());
        let mut tx = self.pool.begin().await?;
        if let Some(rollups) = rollups {
            rollups.claim(&mut tx, &touches).await?;
        }
        let mut written = Written::default();
        for (route, items) in by_route(&batch.items) {
            let Some(target) = self.targets.get(route).and_then(Option::as_ref) else {
                return Err(sqlx::Error::Protocol(format!(
                    "route {route} has no table in this sink (a bug: routes are checked at start)"
                )));
            };
            let (mut inserted, mut duplicates) = (0, 0);
            let series = self.series.get(route).copied().flatten();
            for chunk in statement_chunks(target, &items) {
                let done = insert_rows(&mut tx, target, chunk).await?;
                inserted += done.inserted;
                duplicates += done.duplicates;
                if let (Some(series), Some(first_id)) = (series, done.first_id) {
                    touches.inserted(series, first_id);
                }
            }
            // The frame counters go with their readings, so the accounting
            // of lost uplinks is exactly as durable as the uplinks.
            for (device, time, frame) in frames::of(&items) {
                frames::record(&mut tx, device, time, frame).await?;
            }
            written.inserted.push((route, inserted));
            written.duplicates.push((route, duplicates));
        }
        for chunk in batch.letters.chunks(ROWS_PER_STATEMENT) {
            insert_dead_letters(&mut tx, chunk).await?;
        }
        if let Some(rollups) = rollups {
            rollups.refresh(&mut tx, &touches).await?;
        }
        if !batch.settles.is_empty() {
            settle::delete_letters(&mut tx, &batch.settles).await?;
        }
        if let Some(checkpoint) = &batch.checkpoint {
            settle::record_checkpoint(&mut tx, checkpoint).await?;
        }
        tx.commit().await?;
        Ok(written)
    }
}

impl Sink for MysqlSink {
    fn prepare(&self) -> BoxFuture<'_, Result<(), PrepareError>> {
        self.prepare_schema().boxed()
    }

    fn write<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<Written, SinkError>> {
        async move {
            self.commit(batch).await.map_err(|e| {
                self.on_error(&e);
                if is_transient(&e) {
                    SinkError::Transient(e.to_string())
                } else {
                    SinkError::Refused(e.to_string())
                }
            })
        }
        .boxed()
    }

    fn probe(&self) -> BoxFuture<'_, bool> {
        async move {
            let ping = sqlx::query("SELECT 1").execute(&self.pool);
            match tokio::time::timeout(Duration::from_secs(2), ping).await {
                Ok(Ok(_)) => true,
                // Idle while the node died: readiness moves on too, not only writes.
                Ok(Err(e)) => {
                    self.on_error(&e);
                    false
                }
                Err(_) => false,
            }
        }
        .boxed()
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn failovers(&self) -> u64 {
        self.nodes.failovers()
    }

    fn retry_max(&self) -> Duration {
        self.retry_max
    }

    fn prune_dead_letters(&self, days: u32) -> BoxFuture<'_, Result<Pruned, String>> {
        async move {
            prune(&self.pool, days).await.map_err(|e| {
                if schema::mysql_error_number(&e) == Some(1142) {
                    "the bridge's account may not DELETE FROM rejected_messages; grant it \
                     (provisioning/mysql/apply.sh does) or set dead_letters.retention_days = 0"
                        .to_owned()
                } else {
                    e.to_string()
                }
            })
        }
        .boxed()
    }

    fn recent_dead_letters(&self, n: u32) -> BoxFuture<'_, Result<Vec<StoredLetter>, String>> {
        async move {
            recent_letters(&self.pool, n)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// Payload bytes a dead-letter preview keeps.
const PREVIEW_BYTES: u32 = 120;

/// received_at, topic, reason, detail, payload preview, payload_bytes.
type LetterRow = (
    chrono::NaiveDateTime,
    String,
    String,
    Option<String>,
    Vec<u8>,
    u32,
);

/// The newest `n` dead letters (the primary key orders them: ids only grow).
async fn recent_letters(pool: &MySqlPool, n: u32) -> Result<Vec<StoredLetter>, sqlx::Error> {
    let rows: Vec<LetterRow> = sqlx::query_as(
        "SELECT received_at, topic, CAST(reason AS CHAR), detail, LEFT(payload, ?), payload_bytes \
             FROM rejected_messages ORDER BY id DESC LIMIT ?",
    )
    .bind(PREVIEW_BYTES)
    .bind(n)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(received_at, topic, reason, detail, preview, bytes)| StoredLetter {
                received_at,
                topic,
                reason,
                detail,
                preview,
                payload_bytes: u64::from(bytes),
            },
        )
        .collect())
}

/// `items` grouped by route, in arrival order within each: one target,
/// and its statements, per group.
pub(crate) fn by_route<'a, 'i>(items: &'a [Item<'i>]) -> Vec<(RouteId, Vec<&'a Item<'i>>)> {
    let mut groups: Vec<(RouteId, Vec<&Item<'_>>)> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|(r, _)| *r == item.route) {
            Some((_, items)) => items.push(item),
            None => groups.push((item.route, vec![item])),
        }
    }
    groups
}

/// Splits items into statements under the placeholder limit and the byte budget.
fn statement_chunks<'a, 'i>(target: &Target, items: &'a [&'i Item<'i>]) -> Vec<&'a [&'i Item<'i>]> {
    let columns = target.width().max(1);
    let max_rows = (usize::from(u16::MAX) / columns).min(ROWS_PER_STATEMENT);
    let mut chunks = Vec::new();
    let (mut start, mut rows, mut bytes) = (0, 0, 0);
    for (i, item) in items.iter().enumerate() {
        let (n, weight) = (target.rows(item.message), item.message.weight());
        if i > start && (rows + n > max_rows || bytes + weight > BYTES_PER_STATEMENT) {
            chunks.push(&items[start..i]);
            (start, rows, bytes) = (i, 0, 0);
        }
        rows += n;
        bytes += weight;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
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
    cell: Cell<'q>,
) -> Result<(), sqlx::Error> {
    use crate::model::Value;
    match cell {
        Cell::Str(s) => query.try_bind(s),
        Cell::Time(t) => query.try_bind(t),
        Cell::Text(s) => query.try_bind(s),
        Cell::Binary(b) => query.try_bind(b),
        Cell::Value(value) => match value {
            Value::Null => query.try_bind(None::<i64>),
            Value::Bool(v) => query.try_bind(i8::from(*v)),
            Value::Int(v) => query.try_bind(*v),
            Value::Float(v) => query.try_bind(*v),
            Value::Text(v) => query.try_bind(v.as_str()),
            Value::Bytes(v) => query.try_bind(v.as_ref()),
            Value::Time(v) => query.try_bind(*v),
        },
    }
    .map_err(sqlx::Error::Encode)
}

/// A duplicate changes only its redelivery counter, so it reports two affected
/// rows and an insert one (sqlx sets CLIENT_FOUND_ROWS, under which a no-op
/// update would also report one): duplicates = affected - rows.
const ON_DUPLICATE: &str = " ON DUPLICATE KEY UPDATE `redeliveries` = `redeliveries` + 1";

/// The statement `sql` (from [`values_sql`]) with every cell of `items` bound.
fn bound_insert<'q>(
    sql: &'q str,
    target: &'q Target,
    items: &[&'q Item<'q>],
) -> Result<Query<'q, MySql, MySqlArguments>, sqlx::Error> {
    let mut query = sqlx::query(sql);
    for item in items {
        for cell in target.cells(item.message, item.topic) {
            bind(&mut query, cell)?;
        }
    }
    Ok(query)
}

/// Builds, without a database, every INSERT the sink would send for
/// `items` of one route with `target`: the statement text and its bound
/// values. Returns the rows; the offline benchmark's row-building half.
#[cfg(feature = "tooling")]
pub fn build_inserts(target: &Target, items: &[&Item<'_>]) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    for chunk in statement_chunks(target, items) {
        let rows: usize = chunk.iter().map(|i| target.rows(i.message)).sum();
        let sql = values_sql(target.insert_prefix(), rows, target.width(), ON_DUPLICATE);
        drop(bound_insert(&sql, target, chunk)?);
        total += rows;
    }
    Ok(total)
}

/// Inserts the rows of `items`; returns (newly inserted, duplicates).
async fn insert_rows(
    tx: &mut Transaction<'_, MySql>,
    target: &Target,
    items: &[&Item<'_>],
) -> Result<Inserted, sqlx::Error> {
    let rows: usize = items.iter().map(|i| target.rows(i.message)).sum();
    let sql = values_sql(target.insert_prefix(), rows, target.width(), ON_DUPLICATE);
    let query = bound_insert(&sql, target, items)?;
    let result = query.execute(&mut **tx).await?;
    let rows = rows as u64;
    let duplicates = result.rows_affected().saturating_sub(rows).min(rows);
    let inserted = rows - duplicates;
    Ok(Inserted {
        inserted,
        duplicates,
        // The id of the first row inserted; the server's answer means
        // nothing when none was.
        first_id: (inserted > 0).then(|| result.last_insert_id()),
    })
}

/// What one INSERT did.
struct Inserted {
    inserted: u64,
    duplicates: u64,
    /// The AUTO_INCREMENT id of its first new row, if it inserted any.
    first_id: Option<u64>,
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, MySql>,
    letters: &[&DeadLetter],
) -> Result<(), sqlx::Error> {
    let sql = values_sql(
        "INSERT INTO rejected_messages (topic, payload, payload_bytes, reason, detail) ",
        letters.len(),
        5,
        "",
    );
    let mut query = sqlx::query(&sql);
    for letter in letters {
        query
            .try_bind(letter.topic.as_str())
            .and_then(|()| query.try_bind(letter.payload.as_slice()))
            .and_then(|()| query.try_bind(letter.payload_bytes))
            .and_then(|()| query.try_bind(letter.reason.as_str()))
            .and_then(|()| query.try_bind(letter.detail.as_deref()))
            .map_err(sqlx::Error::Encode)?;
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Dead letters deleted per statement: small enough that no statement holds
/// the table's locks long enough for the writer to notice.
const PRUNE_CHUNK: u64 = 1000;

/// Deletes dead letters older than `days` in chunks, with a pause between them.
async fn prune(pool: &MySqlPool, days: u32) -> Result<Pruned, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM rejected_messages \
             WHERE received_at < UTC_TIMESTAMP(3) - INTERVAL ? DAY ORDER BY id LIMIT ?",
        )
        .bind(days)
        .bind(PRUNE_CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += done;
        if done < PRUNE_CHUNK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An estimate from the table's statistics: counting the rows would read them all.
    let remaining: Option<u64> = sqlx::query_scalar(
        "SELECT TABLE_ROWS FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = 'rejected_messages'",
    )
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(Pruned { deleted, remaining })
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
    3140, // invalid JSON text for a JSON column (MySQL)
    3157, // JSON document too deep (MySQL)
    3819, // check constraint violated (MySQL)
    4025, // check constraint violated (MariaDB; also a JSON column's JSON_VALID)
];

/// True when retrying the same statement later can succeed. That includes
/// Galera's commit-time certification conflicts (1213, reported as a
/// deadlock) and a node outside the primary component (1047): retried like a
/// broken connection, the latter on the next node.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        // A value that cannot be encoded never will be.
        sqlx::Error::Encode(_) => false,
        _ => schema::mysql_error_number(error).is_none_or(is_transient_number),
    }
}

/// Whether a server error number is worth a retry (see [`PERMANENT_ROW_ERRORS`]).
fn is_transient_number(number: u16) -> bool {
    !PERMANENT_ROW_ERRORS.contains(&number)
}

/// `name` as a quoted MySQL identifier: backticks doubled, so any name is
/// safe inside a statement (the tables and columns one-shot commands name).
pub(crate) fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Field, Message, Value};
    use co2_wire::DeviceId;

    fn message(fields: Vec<Field>) -> Message {
        Message {
            device: DeviceId::parse("d").unwrap(),
            time: chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc(),
            tags: Vec::new(),
            fields,
            reading: None,
            frame: None,
        }
    }

    #[test]
    fn statements_stay_under_the_placeholder_limit_and_byte_budget() {
        let target = Target::test_wide(3);
        let small = message(vec![]);
        let items: Vec<Item<'_>> = (0..50_000)
            .map(|_| Item {
                route: 0,
                message: &small,
                topic: "t",
            })
            .collect();
        let refs: Vec<&Item<'_>> = items.iter().collect();
        let chunks = statement_chunks(&target, &refs);
        assert!(chunks.iter().all(|c| c.len() * 3 <= u16::MAX as usize));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 50_000);

        let image = message(vec![Field {
            name: "data".into(),
            value: Value::Bytes(bytes::Bytes::from(vec![0u8; 3 * 1024 * 1024])),
        }]);
        let items: Vec<Item<'_>> = (0..5)
            .map(|_| Item {
                route: 0,
                message: &image,
                topic: "t",
            })
            .collect();
        let refs: Vec<&Item<'_>> = items.iter().collect();
        let sizes: Vec<usize> = statement_chunks(&Target::test_wide(1), &refs)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [2, 2, 1]);
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
        let err = bind(&mut query, Cell::Value(&value)).unwrap_err();
        assert!(matches!(err, sqlx::Error::Encode(_)), "{err}");
        assert!(!is_transient(&err));
    }

    #[test]
    fn galera_conflicts_and_non_primary_nodes_are_transient() {
        assert!(
            is_transient_number(1213),
            "deadlock / certification failure"
        );
        assert!(is_transient_number(1047), "WSREP has not yet prepared node");
        assert!(is_transient_number(1205), "lock wait timeout");
        assert!(!is_transient_number(1406), "data too long stays permanent");
    }

    #[test]
    fn io_and_pool_errors_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&io));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
    }
}
