//! `co2-bridge rollup verify`: every rollup bucket compared with the
//! aggregate of the raw rows it covers.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlPool, Row};

use super::series::Series;
use super::{sql, Rollups};
use crate::config::Tier;

/// A bucket whose stored rollup is not the aggregate of its raw rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The tier table, e.g. `co2_emissions_1h`.
    pub table: String,
    /// The bucket's key, readable: `device` or `device field tags_key(hex)`.
    pub key: String,
    /// The bucket's start.
    pub bucket: NaiveDateTime,
    /// What differs, e.g. `n 5, raw rows say 4`, or `missing`.
    pub what: String,
}

/// What a verification read and found.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// Buckets compared, over all tiers.
    pub buckets: u64,
    /// Every difference found.
    pub differences: Vec<Difference>,
}

/// One bucket's statistics, raw or stored.
#[derive(Debug, Clone, PartialEq)]
struct Stats {
    n: i64,
    total: f64,
    min: f64,
    max: f64,
    last_value: f64,
    last_time: NaiveDateTime,
    counted: i64,
}

/// A bucket: its key columns as bytes, and its start.
type BucketKey = (Vec<Vec<u8>>, NaiveDateTime);

/// Bucket statistics by bucket.
type Buckets = BTreeMap<BucketKey, Stats>;

/// Sums may differ in their last bits with the order of addition.
fn same_sum(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

impl Stats {
    /// What differs from `raw`, if anything.
    fn differs_from(&self, raw: &Stats) -> Option<String> {
        let mut what = Vec::new();
        if self.n != raw.n {
            what.push(format!("n {} (raw rows: {})", self.n, raw.n));
        }
        if !same_sum(self.total, raw.total) {
            what.push(format!("total {} (raw: {})", self.total, raw.total));
        }
        for (name, stored, expected) in [
            ("min", self.min, raw.min),
            ("max", self.max, raw.max),
            ("last_value", self.last_value, raw.last_value),
        ] {
            if stored.to_bits() != expected.to_bits() {
                what.push(format!("{name} {stored} (raw: {expected})"));
            }
        }
        if self.last_time != raw.last_time {
            what.push(format!(
                "last_time {} (raw: {})",
                self.last_time, raw.last_time
            ));
        }
        if self.counted != raw.counted {
            what.push(format!("count {} (raw: {})", self.counted, raw.counted));
        }
        (!what.is_empty()).then(|| what.join(", "))
    }
}

impl Rollups {
    /// Compares every tier of `series` with its raw rows between `from` and
    /// `to` (whole coarsest buckets; the raw table's extent when not given).
    pub async fn verify(
        &self,
        pool: &MySqlPool,
        series: &Series,
        from: Option<NaiveDateTime>,
        to: Option<NaiveDateTime>,
    ) -> Result<Verified, sqlx::Error> {
        let mut verified = Verified::default();
        for (start, end) in self.steps(pool, series, from, to).await? {
            for tier in self.tiers() {
                self.verify_step(pool, series, tier, start, end, &mut verified)
                    .await?;
            }
        }
        Ok(verified)
    }

    async fn verify_step(
        &self,
        pool: &MySqlPool,
        series: &Series,
        tier: &Tier,
        start: NaiveDateTime,
        end: NaiveDateTime,
        verified: &mut Verified,
    ) -> Result<(), sqlx::Error> {
        let time = format!("`{}`", series.time);
        let keys = 1 + series.key.len();
        let raw = buckets(
            pool,
            &sql::aggregate_raw(series, tier.seconds, &format!("{time} >= ? AND {time} < ?")),
            keys,
            start,
            end,
        )
        .await?;
        let stored = buckets(
            pool,
            &sql::stored(series, tier, "`bucket` >= ? AND `bucket` < ?"),
            keys,
            start,
            end,
        )
        .await?;
        let table = series.tier_table(tier);
        let mut differ = |key: &[Vec<u8>], bucket: NaiveDateTime, what: String| {
            verified.differences.push(Difference {
                table: table.clone(),
                key: readable(key),
                bucket,
                what,
            });
        };
        for ((key, bucket), expected) in &raw {
            match stored.get(&(key.clone(), *bucket)) {
                None => differ(
                    key,
                    *bucket,
                    "missing: the raw rows have this bucket".into(),
                ),
                Some(got) => {
                    if let Some(what) = got.differs_from(expected) {
                        differ(key, *bucket, what);
                    }
                }
            }
        }
        for (key, bucket) in stored.keys() {
            if !raw.contains_key(&(key.clone(), *bucket)) {
                differ(
                    key,
                    *bucket,
                    "extra: no raw row falls in this bucket".into(),
                );
            }
        }
        verified.buckets += u64::try_from(raw.len().max(stored.len())).unwrap_or(u64::MAX);
        Ok(())
    }
}

/// Rows of [`sql::aggregate_raw`] or [`sql::stored`], by key and bucket.
async fn buckets(
    pool: &MySqlPool,
    statement: &str,
    keys: usize,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<Buckets, sqlx::Error> {
    let rows = sqlx::query(statement)
        .bind(start)
        .bind(end)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|row| decode(row, keys)).collect()
}

fn decode(row: &MySqlRow, keys: usize) -> Result<(BucketKey, Stats), sqlx::Error> {
    let key = (0..keys)
        .map(|i| row.try_get::<Vec<u8>, _>(i))
        .collect::<Result<Vec<_>, _>>()?;
    let n: i64 = match row.try_get::<i64, _>(keys + 1) {
        Ok(n) => n,
        Err(_) => i64::from(row.try_get::<u32, _>(keys + 1)?),
    };
    Ok((
        (key, row.try_get(keys)?),
        Stats {
            n,
            total: row.try_get(keys + 2)?,
            min: row.try_get(keys + 3)?,
            max: row.try_get(keys + 4)?,
            last_value: row.try_get(keys + 5)?,
            last_time: row.try_get(keys + 6)?,
            counted: row.try_get(keys + 7)?,
        },
    ))
}

/// A key for people: text where it is text, hex where it is not.
fn readable(key: &[Vec<u8>]) -> String {
    key.iter()
        .map(|part| match std::str::from_utf8(part) {
            Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
            _ => part.iter().map(|b| format!("{b:02x}")).collect(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_compare_within_rounding_and_the_rest_exactly() {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let raw = Stats {
            n: 3,
            total: 0.1 + 0.2 + 0.3,
            min: 0.1,
            max: 0.3,
            last_value: 0.3,
            last_time: t,
            counted: 3,
        };
        let stored = Stats {
            total: 0.3 + 0.2 + 0.1,
            ..raw.clone()
        };
        assert_eq!(stored.differs_from(&raw), None);
        let off = Stats {
            n: 4,
            max: 0.4,
            ..raw.clone()
        };
        let what = off.differs_from(&raw).unwrap();
        assert!(
            what.contains("n 4 (raw rows: 3)") && what.contains("max 0.4"),
            "{what}"
        );
        assert_eq!(readable(&[b"pi".to_vec(), vec![0, 255]]), "pi 00ff");
    }
}
