//! Adopting a legacy `co2_emissions` (the seed shape, `date_time DATETIME,
//! emissions DOUBLE(7,2)`) before the first migration runs, step by step
//! with a log line before each, ending in the state that migration's
//! procedure would leave (which then finds nothing to do).
//!
//! Why not leave it to the procedure: its duplicate check is a correlated
//! `EXISTS` on (device, date_time) with no index to use, quadratic in the
//! rows (over 1100 s on 3M rows, still running after 628 s on 300k), and it
//! says nothing while it runs. Here the rows to keep are found with one
//! `GROUP BY` into a temporary table keyed by id, and the check is a join
//! on that key. The migration file itself cannot change: sqlx refuses to run
//! against a database whose applied migrations' checksums differ.

use sqlx::{Executor, MySqlConnection, MySqlPool};

/// The first migration, the one that creates or adopts `co2_emissions`.
pub const ADOPTING_MIGRATION: i64 = 20260101000001;

/// The rows that cannot meet the unique key and NOT NULL constraints: a
/// NULL time or value, or a later row for the same (device, time).
const CONFLICTS: &str = "FROM co2_emissions e LEFT JOIN co2_adopt_keep k ON k.id = e.id \
     WHERE k.id IS NULL OR e.date_time IS NULL OR e.emissions IS NULL";

/// Adopts a legacy `co2_emissions` when there is one; a no-op otherwise.
pub async fn adopt(pool: &MySqlPool) -> Result<(), sqlx::Error> {
    // One connection: the temporary table lives in its session.
    let mut conn = pool.acquire().await?;
    let Some(rows) = legacy_rows(&mut conn).await? else {
        return Ok(());
    };
    tracing::info!(
        approx_rows = rows,
        "Adopting the legacy co2_emissions table; each ALTER copies it"
    );
    if !has(&mut conn, "columns", "column_name", "id").await? {
        step(rows, "adding the id column");
        conn.execute(
            "ALTER TABLE co2_emissions \
             ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST",
        )
        .await?;
    }
    if !has(&mut conn, "columns", "column_name", "device").await? {
        step(rows, "adding the device column");
        conn.execute(
            "ALTER TABLE co2_emissions \
             ADD COLUMN device VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin \
             NOT NULL DEFAULT 'default' AFTER id",
        )
        .await?;
    }
    if !has(&mut conn, "columns", "column_name", "received_at").await? {
        step(rows, "adding the received_at column");
        // Adopted rows were received at an unknown time: NULL, not "now".
        conn.execute(
            "ALTER TABLE co2_emissions ADD COLUMN received_at DATETIME(3) NULL DEFAULT NULL",
        )
        .await?;
        conn.execute(
            "ALTER TABLE co2_emissions \
             MODIFY COLUMN received_at DATETIME(3) NULL DEFAULT CURRENT_TIMESTAMP(3)",
        )
        .await?;
    }
    step(rows, "finding rows without a time or value, and duplicates");
    conn.execute("DROP TEMPORARY TABLE IF EXISTS co2_adopt_keep")
        .await?;
    conn.execute(
        "CREATE TEMPORARY TABLE co2_adopt_keep (id BIGINT UNSIGNED NOT NULL PRIMARY KEY) \
         SELECT MIN(id) AS id FROM co2_emissions GROUP BY device, date_time",
    )
    .await?;
    let conflicts: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {CONFLICTS}"))
        .fetch_one(&mut *conn)
        .await?;
    if conflicts > 0 {
        tracing::info!(
            conflicts,
            "Moving the rows that cannot meet the new constraints to co2_emissions_adopted_conflicts"
        );
        conn.execute(
            "CREATE TABLE IF NOT EXISTS co2_emissions_adopted_conflicts LIKE co2_emissions",
        )
        .await?;
        conn.execute(
            format!("INSERT INTO co2_emissions_adopted_conflicts SELECT e.* {CONFLICTS}").as_str(),
        )
        .await?;
        conn.execute(
            "DELETE FROM co2_emissions WHERE id IN (SELECT id FROM co2_emissions_adopted_conflicts)",
        )
        .await?;
    }
    conn.execute("DROP TEMPORARY TABLE co2_adopt_keep").await?;
    step(rows, "adding the unique key on (device, date_time)");
    conn.execute(
        "ALTER TABLE co2_emissions \
         MODIFY COLUMN date_time DATETIME(3) NOT NULL, \
         MODIFY COLUMN emissions DOUBLE(7,2) NOT NULL, \
         ADD UNIQUE KEY uq_device_date_time (device, date_time), \
         ADD KEY idx_date_time (date_time)",
    )
    .await?;
    tracing::info!(conflicts, "Adopted co2_emissions");
    Ok(())
}

fn step(approx_rows: u64, what: &str) {
    tracing::info!(approx_rows, step = what, "Adopting co2_emissions");
}

/// The approximate row count of a `co2_emissions` still to adopt (one
/// without the unique key), or None.
async fn legacy_rows(conn: &mut MySqlConnection) -> Result<Option<u64>, sqlx::Error> {
    let rows: Option<Option<u64>> = sqlx::query_scalar(
        "SELECT CAST(TABLE_ROWS AS UNSIGNED) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = 'co2_emissions'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(rows) = rows else {
        return Ok(None);
    };
    if has(conn, "statistics", "index_name", "uq_device_date_time").await? {
        return Ok(None);
    }
    Ok(Some(rows.unwrap_or(0)))
}

/// Whether information_schema.`view` lists `name` in `column` for co2_emissions.
async fn has(
    conn: &mut MySqlConnection,
    view: &str,
    column: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM information_schema.{view} \
         WHERE table_schema = DATABASE() AND table_name = 'co2_emissions' AND {column} = ?"
    ))
    .bind(name)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}
