//! Rollups: per-minute, per-hour and per-day count, sum, min, max and last
//! value of each numeric series, kept by the MySQL sink in the transaction
//! that writes the raw rows.
//!
//! A touched bucket is recomputed from what it covers (the finest tier from
//! the raw rows, each coarser one from the tier below), never incremented:
//! the raw insert is idempotent, and a recomputation is too, so a
//! redelivered reading counts once, a reading days late lands in its own
//! buckets, and a crash leaves raw rows and rollups committed together or
//! not at all. Writers of the same device's coarsest bucket (bridges of one
//! `$share` group, `co2-bridge rollup rebuild`) queue on a claim row taken
//! before anything else, instead of deadlocking halfway.

mod delta;
pub mod rebuild;
pub mod series;
mod span;
mod sql;
pub mod verify;

use chrono::NaiveDateTime;
use sqlx::{MySql, MySqlPool, Transaction};

use crate::config::Tier;
use crate::model::Message;
pub use series::Series;
use span::Touched;

/// Spans per statement: three placeholders each, far under MySQL's 65535.
const SPANS_PER_STATEMENT: usize = 2000;

/// Claims per statement.
const CLAIMS_PER_STATEMENT: usize = 2000;

/// The configured tiers, finest first (never empty).
#[derive(Debug, Clone)]
pub struct Rollups {
    tiers: Vec<Tier>,
}

/// What one batch touched: per series, the finest tier's buckets, and the
/// first `id` its statements inserted (every later new row has a higher one).
#[derive(Debug, Default)]
pub struct Touches {
    per_series: Vec<(&'static Series, Touched, Option<u64>)>,
}

impl Touches {
    /// Notes `message`, written to `series`' table.
    pub fn add(&mut self, series: &'static Series, message: &Message, seconds: u32) {
        let touched = match self.per_series.iter_mut().find(|(s, _, _)| *s == series) {
            Some((_, touched, _)) => touched,
            None => {
                self.per_series.push((series, Touched::default(), None));
                match self.per_series.last_mut() {
                    Some((_, touched, _)) => touched,
                    None => return,
                }
            }
        };
        touched.add(message.device.as_str(), message.time, seconds);
    }

    /// Notes that a statement into `series`' table inserted rows from `first_id` on.
    pub fn inserted(&mut self, series: &'static Series, first_id: u64) {
        if let Some((_, _, first)) = self.per_series.iter_mut().find(|(s, _, _)| *s == series) {
            *first = Some(first.map_or(first_id, |f| f.min(first_id)));
        }
    }

    /// True when the batch wrote no series with rollups.
    pub fn is_empty(&self) -> bool {
        self.per_series.iter().all(|(_, t, _)| t.is_empty())
    }
}

impl Rollups {
    /// Rollups over `tiers`; `None` without tiers.
    pub fn new(tiers: Vec<Tier>) -> Option<Self> {
        (!tiers.is_empty()).then_some(Self { tiers })
    }

    /// The tiers, finest first.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The finest tier's bucket length: what [`Touches::add`] is given.
    pub fn finest_seconds(&self) -> u32 {
        self.tiers.first().map_or(60, |t| t.seconds)
    }

    /// The coarsest tier: what claims are taken by and rebuilds step by.
    pub fn coarsest(&self) -> Option<&Tier> {
        self.tiers.last()
    }

    /// Ratio of `tier`'s bucket length to the finest tier's.
    fn factor(&self, tier: &Tier) -> i64 {
        i64::from(tier.seconds / self.finest_seconds().max(1))
    }

    /// Takes the claims of every coarsest bucket the batch touches, in
    /// sorted order, before the batch writes anything.
    pub async fn claim(
        &self,
        tx: &mut Transaction<'_, MySql>,
        touches: &Touches,
    ) -> Result<(), sqlx::Error> {
        let Some(coarsest) = self.coarsest() else {
            return Ok(());
        };
        for (series, touched, _) in &touches.per_series {
            let coarse = touched.coarser(self.factor(coarsest));
            let claims = coarse.starts(coarsest.seconds);
            for chunk in claims.chunks(CLAIMS_PER_STATEMENT) {
                let sql = sql::claim(chunk.len());
                let mut query = sqlx::query(&sql);
                for (device, bucket) in chunk {
                    query = query.bind(series.table).bind(*device).bind(*bucket);
                }
                query.execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Adds the batch's new rows to every tier: the rows of the touched
    /// buckets whose `id` is at least the first the batch inserted. Claims
    /// keep any other writer of these devices out until this commits, and
    /// ids only grow, so those are exactly the rows this batch added: a
    /// duplicate (no new row) adds nothing, and the cost follows the batch,
    /// not how many rows its buckets already hold.
    pub async fn refresh(
        &self,
        tx: &mut Transaction<'_, MySql>,
        touches: &Touches,
    ) -> Result<(), sqlx::Error> {
        for (series, touched, first_id) in &touches.per_series {
            let Some(first_id) = first_id else {
                continue; // every row a duplicate: nothing new to add
            };
            let spans = touched.spans(self.finest_seconds());
            for chunk in spans.chunks(SPANS_PER_STATEMENT) {
                delta::add(tx, series, &self.tiers, *first_id, chunk).await?;
            }
        }
        Ok(())
    }

    /// The coarsest buckets between `from` and `to` (those holding them), as
    /// `[start, end)`; the raw table's first and last time stand in for a
    /// bound not given. Rebuilds and verifications go step by step.
    async fn steps(
        &self,
        pool: &MySqlPool,
        series: &Series,
        from: Option<NaiveDateTime>,
        to: Option<NaiveDateTime>,
    ) -> Result<Vec<(NaiveDateTime, NaiveDateTime)>, sqlx::Error> {
        let Some(step) = self.coarsest().map(|t| i64::from(t.seconds)) else {
            return Ok(Vec::new());
        };
        let (first, last) = match (from, to) {
            (Some(from), Some(to)) => (from, to),
            _ => {
                let (min, max): (Option<NaiveDateTime>, Option<NaiveDateTime>) =
                    sqlx::query_as(&format!(
                        "SELECT MIN(`{t}`), MAX(`{t}`) FROM `{table}`",
                        t = series.time,
                        table = series.table
                    ))
                    .fetch_one(pool)
                    .await?;
                match (from.or(min), to.or(max)) {
                    (Some(from), Some(to)) => (from, to),
                    _ => return Ok(Vec::new()),
                }
            }
        };
        let first = first.and_utc().timestamp().div_euclid(step);
        let last = last.and_utc().timestamp().div_euclid(step);
        Ok((first..=last)
            .filter_map(|n| {
                Some((
                    span::at(n.checked_mul(step)?)?,
                    span::at((n + 1).checked_mul(step)?)?,
                ))
            })
            .collect())
    }

    /// Creates the tier tables of every series and the claims table, where missing.
    pub async fn create_tables(&self, pool: &MySqlPool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS `rollup_claims` (\n    \
             `series` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,\n    \
             `device` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,\n    \
             `bucket` DATETIME NOT NULL,\n    \
             PRIMARY KEY (`series`, `device`, `bucket`)\n) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
        )
        .execute(pool)
        .await?;
        for series in series::ALL {
            for tier in &self.tiers {
                sqlx::query(&series.create_table(tier))
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The tables [`Rollups::create_tables`] would create that do not exist.
    pub async fn missing_tables(&self, pool: &MySqlPool) -> Result<Vec<String>, sqlx::Error> {
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE()",
        )
        .fetch_all(pool)
        .await?;
        let wanted = std::iter::once(sql::CLAIMS.to_owned()).chain(
            series::ALL
                .iter()
                .flat_map(|s| self.tiers.iter().map(move |t| s.tier_table(t))),
        );
        Ok(wanted.filter(|t| !present.contains(t)).collect())
    }
}
