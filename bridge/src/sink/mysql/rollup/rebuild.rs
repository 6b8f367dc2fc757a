//! `co2-bridge rollup rebuild`: the rollups of a time range recomputed from
//! the raw rows, one coarsest bucket (a day, by default) per transaction.
//!
//! For rows the bridge did not write: an adopted legacy table, an import, a
//! manual fix. Idempotent; safe while the bridge writes (each step claims
//! its devices' buckets like a batch does, and a deadlock retries the step).

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::MySqlPool;

use super::series::Series;
use super::{sql, Rollups};
use crate::sink::mysql::schema::mysql_error_number;

/// How one series' rebuild went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Steps (coarsest buckets) recomputed.
    pub steps: u64,
    /// Rollup rows written, over all tiers.
    pub rows: u64,
}

/// Where a rebuild is, after each step.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// The raw table.
    pub table: &'a str,
    /// The step just done (its start).
    pub step: NaiveDateTime,
    /// Steps done and in all, for this table.
    pub done: u64,
    /// Steps in all.
    pub of: u64,
}

/// Retries of one step after a deadlock or lock wait timeout.
const STEP_RETRIES: u32 = 5;

impl Rollups {
    /// Rebuilds `series` between `from` and `to` (whole coarsest buckets
    /// around them; the raw table's first and last row when not given),
    /// reporting each step to `progress`.
    pub async fn rebuild(
        &self,
        pool: &MySqlPool,
        series: &Series,
        from: Option<NaiveDateTime>,
        to: Option<NaiveDateTime>,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Result<Rebuilt, sqlx::Error> {
        let steps = self.steps(pool, series, from, to).await?;
        let of = u64::try_from(steps.len()).unwrap_or(u64::MAX);
        let mut rebuilt = Rebuilt::default();
        for (start, end) in steps {
            let mut attempt = 0;
            let rows = loop {
                match self.rebuild_step(pool, series, start, end).await {
                    Ok(rows) => break rows,
                    Err(e)
                        if attempt < STEP_RETRIES
                            && matches!(mysql_error_number(&e), Some(1213 | 1205)) =>
                    {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            rebuilt.steps += 1;
            rebuilt.rows += rows;
            progress(Progress {
                table: series.table,
                step: start,
                done: rebuilt.steps,
                of,
            });
        }
        Ok(rebuilt)
    }

    /// One step: claims, then every tier's buckets in `[start, end)`
    /// deleted and recomputed, in one transaction.
    async fn rebuild_step(
        &self,
        pool: &MySqlPool,
        series: &Series,
        start: NaiveDateTime,
        end: NaiveDateTime,
    ) -> Result<u64, sqlx::Error> {
        // Devices with raw rows or rollups in the step, read without locks;
        // their claims are then taken in order, as a batch takes them.
        let time = format!("`{}`", series.time);
        let coarsest = self
            .coarsest()
            .map(|t| series.tier_table(t))
            .unwrap_or_default();
        let devices: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT CAST(d AS CHAR) FROM (SELECT `{device}` AS d FROM `{table}` WHERE {time} >= ? AND {time} < ? \
             UNION SELECT `{device}` FROM `{coarsest}` WHERE `bucket` >= ? AND `bucket` < ?) x ORDER BY d",
            device = series.device,
            table = series.table,
        ))
        .bind(start)
        .bind(end)
        .bind(start)
        .bind(end)
        .fetch_all(pool)
        .await?;
        let raw: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM `{table}` WHERE {time} >= ? AND {time} < ? LIMIT 1",
            table = series.table
        ))
        .bind(start)
        .bind(end)
        .fetch_optional(pool)
        .await?;
        if raw.is_none() {
            // No raw row left (retention dropped them): the rollups are all
            // that is kept of this step, and a rebuild must not delete them.
            return Ok(0);
        }
        let mut tx = pool.begin().await?;
        for chunk in devices.chunks(super::CLAIMS_PER_STATEMENT) {
            let claim = sql::claim(chunk.len());
            let mut query = sqlx::query(&claim);
            for device in chunk {
                query = query.bind(series.table).bind(device.as_str()).bind(start);
            }
            query.execute(&mut *tx).await?;
        }
        let mut rows = 0;
        let mut finer = None;
        for tier in self.tiers() {
            sqlx::query(&format!(
                "DELETE FROM `{}` WHERE `bucket` >= ? AND `bucket` < ?",
                series.tier_table(tier)
            ))
            .bind(start)
            .bind(end)
            .execute(&mut *tx)
            .await?;
            let statement = match finer {
                None => sql::refresh_from_raw(series, tier, &format!("{time} >= ? AND {time} < ?")),
                Some(finer) => {
                    sql::refresh_from_finer(series, finer, tier, "`bucket` >= ? AND `bucket` < ?")
                }
            };
            rows += sqlx::query(&statement)
                .bind(start)
                .bind(end)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            finer = Some(tier);
        }
        tx.commit().await?;
        Ok(rows)
    }
}

impl Rollups {
    /// Recomputes `device`'s buckets of `series` that hold any time in
    /// `[first, last]`, inside `tx`: for rows that moved in time
    /// (`co2-bridge retime`), whose old buckets may now be empty.
    pub async fn recompute_device(
        &self,
        tx: &mut sqlx::MySqlConnection,
        series: &Series,
        device: &str,
        first: NaiveDateTime,
        last: NaiveDateTime,
    ) -> Result<(), sqlx::Error> {
        let Some(step) = self.coarsest().map(|t| i64::from(t.seconds)) else {
            return Ok(());
        };
        let from_n = first.and_utc().timestamp().div_euclid(step);
        let to_n = last.and_utc().timestamp().div_euclid(step) + 1;
        let (Some(start), Some(end)) = (
            from_n.checked_mul(step).and_then(super::span::at),
            to_n.checked_mul(step).and_then(super::span::at),
        ) else {
            return Ok(());
        };
        let claims: Vec<NaiveDateTime> = (from_n..to_n)
            .filter_map(|n| super::span::at(n.checked_mul(step)?))
            .collect();
        for chunk in claims.chunks(super::CLAIMS_PER_STATEMENT) {
            let claim = sql::claim(chunk.len());
            let mut query = sqlx::query(&claim);
            for bucket in chunk {
                query = query.bind(series.table).bind(device).bind(*bucket);
            }
            query.execute(&mut *tx).await?;
        }
        let time = format!("`{}`", series.time);
        let mut finer = None;
        for tier in self.tiers() {
            sqlx::query(&format!(
                "DELETE FROM `{}` WHERE `{}` = ? AND `bucket` >= ? AND `bucket` < ?",
                series.tier_table(tier),
                series.device
            ))
            .bind(device)
            .bind(start)
            .bind(end)
            .execute(&mut *tx)
            .await?;
            let statement = match finer {
                None => {
                    sql::refresh_from_raw(series, tier, &sql::spans_where(series.device, &time, 1))
                }
                Some(finer) => sql::refresh_from_finer(
                    series,
                    finer,
                    tier,
                    &sql::spans_where(series.device, "`bucket`", 1),
                ),
            };
            sqlx::query(&statement)
                .bind(device)
                .bind(start)
                .bind(end)
                .execute(&mut *tx)
                .await?;
            finer = Some(tier);
        }
        Ok(())
    }
}
