//! The MySQL sink's connection pool and schema (migrations, readiness).

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, MySqlPool};

use super::nodes::Nodes;
use super::retention::Retention;
use super::rollup::Rollups;
use crate::config::{ConfigError, DatabaseSettings};

/// The embedded migrations of `bridge/migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connection options: URL, password, UTC session time zone; `key` (`database`
/// or `sinks.<name>`) names the section in errors.
pub fn connect_options(
    db: &DatabaseSettings,
    key: &str,
) -> Result<MySqlConnectOptions, ConfigError> {
    let url = db.url(key)?;
    let mut options =
        MySqlConnectOptions::from_str(url.as_str()).map_err(|e| ConfigError::Invalid {
            key: format!("{key}.url"),
            message: e.to_string(),
        })?;
    if let Some(password) = db.password(key)? {
        options = options.password(password.expose_secret());
    }
    Ok(options
        // DATETIMEs carry no zone: both date_time and received_at are UTC only if
        // every session says so.
        .timezone(Some("+00:00".to_owned()))
        .charset("utf8mb4")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2)))
}

/// A pool that connects lazily, so the bridge starts (and reports not ready)
/// while the database is down, to the first of the database's nodes; the
/// [`Nodes`] move it to the next.
pub fn pool(db: &DatabaseSettings, key: &str) -> Result<(MySqlPool, Nodes), ConfigError> {
    let options = connect_options(db, key)?;
    let nodes = Nodes::new(&options, db.endpoints(key)?).ok_or_else(|| ConfigError::Invalid {
        key: format!("{key}.hosts"),
        message: "needs at least one node".into(),
    })?;
    let retired = nodes.clone();
    let pool = MySqlPoolOptions::new()
        .max_connections(db.max_connections)
        .acquire_timeout(Duration::from_secs(db.connect_timeout_s))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // Strict mode turns an out-of-range value into an error the writer
                // can dead-letter, instead of a silently clamped row.
                conn.execute(
                    "SET SESSION sql_mode = IF(@@sql_mode = '', 'STRICT_ALL_TABLES', \
                     CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'))",
                )
                .await?;
                Ok(())
            })
        })
        // A connection to the node failed over from is closed, not reused.
        .before_acquire(move |_conn, meta| {
            let keep = !retired.is_stale(meta.age);
            Box::pin(async move { Ok(keep) })
        })
        .connect_lazy_with(nodes.current_options());
    Ok((pool, nodes))
}

/// Versions of the embedded migrations that the database has not applied.
pub async fn pending_migrations(pool: &MySqlPool) -> Result<Vec<i64>, sqlx::Error> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            Err(e) if mysql_error_number(&e) == Some(1146) => Vec::new(), // no table yet
            Err(e) => return Err(e),
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect())
}

/// How long a bridge waits for another one that is migrating the same database.
const MIGRATION_LOCK_WAIT_S: u32 = 300;

/// Applies every pending migration, one bridge at a time.
///
/// sqlx's migrator serialises itself with `GET_LOCK(name, -1)` and ignores the
/// answer; MariaDB 10.11 reads a negative timeout as "do not wait" and answers
/// NULL at once, so bridges started together on a fresh database raced and all
/// but one failed with "partially applied". This lock waits for real. It is
/// held on a connection of its own (not the pool's, so a pool of one cannot
/// deadlock) while the migrator works through the pool.
pub async fn migrate(
    pool: &MySqlPool,
    rollups: Option<&Rollups>,
    retention: &Retention,
) -> Result<(), MigrateError> {
    let mut lock = pool.connect_options().connect().await?;
    let got: Option<i64> =
        sqlx::query_scalar("SELECT GET_LOCK(CONCAT('co2-bridge-migrate:', DATABASE()), ?)")
            .bind(MIGRATION_LOCK_WAIT_S)
            .fetch_one(&mut lock)
            .await?;
    if got != Some(1) {
        return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
            "another co2-bridge has been migrating this database for {MIGRATION_LOCK_WAIT_S} s"
        ))));
    }
    let pending = pending_migrations(pool).await.unwrap_or_default();
    if !pending.is_empty() {
        announce(pool, &pending).await;
    }
    let run = async {
        // A legacy co2_emissions is adopted first, in steps that say what
        // they do; the first migration then finds it adopted.
        if pending.contains(&super::adopt::ADOPTING_MIGRATION) {
            super::adopt::adopt(pool)
                .await
                .map_err(MigrateError::Execute)?;
        }
        MIGRATOR.run(pool).await?;
        // Tier tables follow the configured tiers, so they are made here,
        // not by a fixed migration.
        if let Some(rollups) = rollups {
            rollups
                .create_tables(pool)
                .await
                .map_err(MigrateError::Execute)?;
        }
        retention
            .partition_all(pool)
            .await
            .map_err(MigrateError::Execute)?;
        Ok(())
    };
    tokio::pin!(run);
    let started = std::time::Instant::now();
    let result = loop {
        tokio::select! {
            result = &mut run => break result,
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => report_progress(&mut lock, started).await,
        }
    };
    if !pending.is_empty() && result.is_ok() {
        tracing::info!(
            applied = pending.len(),
            took_s = started.elapsed().as_secs_f64(),
            "Migrations applied"
        );
    }
    // Closing the session releases the lock too; this is just prompt.
    let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('co2-bridge-migrate:', DATABASE()))")
        .execute(&mut lock)
        .await;
    let _ = lock.close().await;
    result
}

/// How often a running migration says how far it is.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Says which migrations are about to run and how big the readings table
/// is: on an adopted table of millions of rows an ALTER copies it, for minutes.
async fn announce(pool: &MySqlPool, pending: &[i64]) {
    let size: Option<(Option<u64>, Option<u64>)> = sqlx::query_as(
        "SELECT CAST(TABLE_ROWS AS UNSIGNED), CAST(DATA_LENGTH + INDEX_LENGTH AS UNSIGNED) \
         FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'co2_emissions'",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    for m in MIGRATOR.iter().filter(|m| pending.contains(&m.version)) {
        tracing::info!(version = m.version, description = %m.description, "Migration pending");
    }
    match size {
        Some((rows, bytes)) => tracing::info!(
            migrations = pending.len(),
            co2_emissions_rows = rows.unwrap_or(0),
            co2_emissions_mib = bytes.unwrap_or(0) / (1024 * 1024),
            "Applying migrations; an ALTER of a large co2_emissions copies the table and can take minutes (progress follows)"
        ),
        None => tracing::info!(migrations = pending.len(), "Applying migrations"),
    }
}

/// Logs what the migration is doing now: the statement, and MariaDB's own
/// progress of it when the server reports one (MySQL does not: time only).
async fn report_progress(lock: &mut sqlx::MySqlConnection, started: std::time::Instant) {
    let running: Result<Option<(String, f64, i64, i64)>, sqlx::Error> = sqlx::query_as(
        "SELECT LEFT(INFO, 120), CAST(PROGRESS AS DOUBLE), CAST(STAGE AS SIGNED), CAST(MAX_STAGE AS SIGNED) \
         FROM information_schema.PROCESSLIST \
         WHERE DB = DATABASE() AND COMMAND = 'Query' AND ID <> CONNECTION_ID() AND INFO NOT LIKE '%PROCESSLIST%' \
         ORDER BY TIME DESC LIMIT 1",
    )
    .fetch_optional(&mut *lock)
    .await;
    let elapsed_s = started.elapsed().as_secs();
    match running {
        Ok(Some((statement, progress, stage, stages))) => tracing::info!(
            elapsed_s,
            progress_percent = progress,
            stage,
            stages,
            statement = %statement,
            "Migration still running"
        ),
        _ => tracing::info!(elapsed_s, "Migration still running"),
    }
}

/// True when the error says the account lacks a privilege.
pub fn is_access_denied(error: &MigrateError) -> bool {
    match error {
        MigrateError::Execute(e) => matches!(
            mysql_error_number(e),
            Some(1044 | 1045 | 1142 | 1227 | 1370)
        ),
        _ => false,
    }
}

/// The server's error number, if this is a MySQL/MariaDB error.
pub fn mysql_error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}
