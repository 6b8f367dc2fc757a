//! Retention: raw rows and rollups kept for their configured days, dropped
//! a partition at a time (milliseconds, no long locks, no undo of millions
//! of rows), with partitions made ahead so every insert has one.
//!
//! Partitions are made by `co2-bridge migrate` (a table's first
//! partitioning copies it once); the bridge's maintenance pass, one bridge
//! at a time, adds the days ahead and drops what expired. A DDL waits at
//! most [`LOCK_WAIT_S`] for a table's metadata lock, so a long transaction
//! elsewhere delays a pass, never the writers queued behind it.

pub mod partitions;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use sqlx::{Acquire, Executor, MySqlConnection, MySqlPool, Row};

use super::rollup::{series, Rollups};
use crate::config::RetentionSettings;
use partitions::Width;

/// Seconds a partition DDL waits for its table's metadata lock.
pub const LOCK_WAIT_S: u32 = 5;

/// One table kept for a number of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The table.
    pub table: String,
    /// Its time column, the partitioning column.
    pub column: &'static str,
    /// Its partitions' width.
    pub width: Width,
    /// Days kept (0: forever).
    pub days: u32,
}

/// What a table holds, for `/metrics` and the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The table.
    pub table: String,
    /// Rows (InnoDB's estimate).
    pub rows: u64,
    /// Bytes of data and indexes.
    pub bytes: u64,
    /// The oldest row's time.
    pub oldest: Option<NaiveDateTime>,
    /// Days kept (0: forever).
    pub days: u32,
}

/// What one maintenance pass did and saw.
#[derive(Debug, Default)]
pub struct Pass {
    /// Partitions dropped, by table.
    pub dropped: Vec<(String, Vec<String>)>,
    /// What each kept table holds after it.
    pub held: Vec<Held>,
    /// Why adding or dropping partitions failed, if it did (what the tables
    /// hold is read all the same).
    pub failed: Option<sqlx::Error>,
}

/// The tables retention keeps, and for how long.
#[derive(Debug, Clone)]
pub struct Retention {
    tables: Vec<Kept>,
    ahead_days: u32,
}

impl Retention {
    /// The raw tables with rollups, each tier's table and the LoRaWAN
    /// frames, per `settings`.
    pub fn new(settings: &RetentionSettings, rollups: Option<&Rollups>) -> Self {
        let mut tables = Vec::new();
        for s in series::ALL {
            tables.push(Kept {
                table: s.table.to_owned(),
                column: s.time,
                width: Width::Day,
                days: settings.raw_days,
            });
            for tier in rollups.map(Rollups::tiers).unwrap_or_default() {
                tables.push(Kept {
                    table: s.tier_table(tier),
                    column: "bucket",
                    width: if tier.seconds < 3600 {
                        Width::Day
                    } else {
                        Width::Month
                    },
                    days: settings.tier_days(&tier.label),
                });
            }
        }
        // A LoRaWAN frame is kept as long as the readings of its uplink:
        // the completeness scan needs no older frame than the newest stored.
        tables.push(Kept {
            table: "lorawan_frames".to_owned(),
            column: "time",
            width: Width::Day,
            days: settings.raw_days,
        });
        Self {
            tables,
            ahead_days: settings.ahead_days,
        }
    }

    /// The kept tables' names.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.iter().map(|k| k.table.as_str())
    }

    /// Partitions every kept table that exists and is not partitioned yet.
    pub async fn partition_all(&self, pool: &MySqlPool) -> Result<(), sqlx::Error> {
        let today = Utc::now().date_naive();
        let mut conn = pool.acquire().await?;
        for kept in &self.tables {
            if !exists(&mut conn, &kept.table).await? || partitioned(&mut conn, &kept.table).await?
            {
                continue;
            }
            let oldest: Option<NaiveDateTime> = sqlx::query_scalar(&format!(
                "SELECT MIN(`{}`) FROM `{}`",
                kept.column, kept.table
            ))
            .fetch_one(&mut *conn)
            .await?;
            let bounds = partitions::initial_bounds(
                oldest.map(|t| t.date()),
                today,
                kept.width,
                self.ahead_days,
            );
            tracing::info!(table = %kept.table, partitions = bounds.len() + 1, "Partitioning by time (copies the table once)");
            sqlx::query(&format!(
                "ALTER TABLE `{}` PARTITION BY RANGE COLUMNS(`{}`) ({})",
                kept.table,
                kept.column,
                partitions::definitions(&bounds)
            ))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// One maintenance pass on `today` (partitions added ahead, expired ones
    /// dropped), then what each table holds; `None` when another bridge's
    /// pass holds the database's retention lock.
    pub async fn pass(
        &self,
        pool: &MySqlPool,
        today: NaiveDate,
    ) -> Result<Option<Pass>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let conn = conn.acquire().await?;
        let got: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(CONCAT('co2-bridge-retention:', DATABASE()), 0)")
                .fetch_one(&mut *conn)
                .await?;
        if got != Some(1) {
            return Ok(None);
        }
        let result = async {
            let (dropped, failed) = match self.maintain(conn, today).await {
                Ok(dropped) => (dropped, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            let held = self.held(conn).await?;
            Ok(Pass {
                dropped,
                held,
                failed,
            })
        }
        .await;
        let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('co2-bridge-retention:', DATABASE()))")
            .execute(&mut *conn)
            .await;
        result.map(Some)
    }

    /// Adds partitions ahead and drops expired ones; returns (table,
    /// partitions dropped) for each table that lost any.
    async fn maintain(
        &self,
        conn: &mut MySqlConnection,
        today: NaiveDate,
    ) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
        conn.execute(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_S}").as_str())
            .await?;
        let mut dropped = Vec::new();
        for kept in &self.tables {
            let names = partition_names(conn, &kept.table).await?;
            if names.is_empty() {
                continue; // missing or not partitioned: `co2-bridge migrate` makes them
            }
            let last = names.iter().filter_map(|n| partitions::bound_of(n)).max();
            if let Some(last) = last {
                let ahead = partitions::bounds_ahead(last, today, kept.width, self.ahead_days);
                if !ahead.is_empty() {
                    sqlx::query(&format!(
                        "ALTER TABLE `{}` REORGANIZE PARTITION {} INTO ({})",
                        kept.table,
                        partitions::FUTURE,
                        partitions::definitions(&ahead)
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
            }
            let expired = partitions::expired(&names, today, kept.days);
            if !expired.is_empty() {
                sqlx::query(&format!(
                    "ALTER TABLE `{}` DROP PARTITION {}",
                    kept.table,
                    expired.join(", ")
                ))
                .execute(&mut *conn)
                .await?;
                tracing::info!(table = %kept.table, partitions = %expired.join(","), days = kept.days, "Dropped expired partitions");
                dropped.push((kept.table.clone(), expired));
            }
        }
        Ok(dropped)
    }

    /// What each kept table holds now.
    async fn held(&self, conn: &mut MySqlConnection) -> Result<Vec<Held>, sqlx::Error> {
        let mut held = Vec::new();
        for kept in &self.tables {
            let Some(row) = sqlx::query(
                "SELECT CAST(COALESCE(TABLE_ROWS, 0) AS UNSIGNED), \
                 CAST(COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) AS UNSIGNED) \
                 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
            )
            .bind(&kept.table)
            .fetch_optional(&mut *conn)
            .await?
            else {
                continue;
            };
            // The time column is indexed in every kept table: one index dive.
            let oldest: Option<NaiveDateTime> = sqlx::query_scalar(&format!(
                "SELECT MIN(`{}`) FROM `{}`",
                kept.column, kept.table
            ))
            .fetch_one(&mut *conn)
            .await?;
            held.push(Held {
                table: kept.table.clone(),
                rows: row.try_get(0)?,
                bytes: row.try_get(1)?,
                oldest,
                days: kept.days,
            });
        }
        Ok(held)
    }
}

async fn exists(conn: &mut MySqlConnection, table: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

async fn partitioned(conn: &mut MySqlConnection, table: &str) -> Result<bool, sqlx::Error> {
    Ok(!partition_names(conn, table).await?.is_empty())
}

/// The names of `table`'s partitions, in order; empty when it has none.
async fn partition_names(
    conn: &mut MySqlConnection,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(PARTITION_NAME AS CHAR) FROM information_schema.partitions \
         WHERE table_schema = DATABASE() AND table_name = ? AND PARTITION_NAME IS NOT NULL \
         ORDER BY PARTITION_ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
}
