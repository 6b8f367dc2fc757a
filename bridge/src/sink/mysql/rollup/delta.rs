//! A batch's new rows, added to every tier: read back once by id, summed
//! per bucket here, merged into each tier with one upsert.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use sqlx::{MySql, Row, Transaction};

use super::series::Series;
use super::span::{at, bucket_of, Span};
use super::sql;
use crate::config::Tier;

/// One new raw row that counts.
struct NewRow {
    key: Vec<Vec<u8>>,
    value: f64,
    time: NaiveDateTime,
    carried: Vec<Option<String>>,
    counts: Vec<i64>,
}

/// One bucket's delta.
struct Delta {
    n: i64,
    total: f64,
    min: f64,
    max: f64,
    last_value: f64,
    last_time: NaiveDateTime,
    carried: Vec<Option<String>>,
    counts: Vec<i64>,
}

impl Delta {
    fn new(row: &NewRow) -> Self {
        Self {
            n: 1,
            total: row.value,
            min: row.value,
            max: row.value,
            last_value: row.value,
            last_time: row.time,
            carried: row.carried.clone(),
            counts: row.counts.clone(),
        }
    }

    fn add(&mut self, row: &NewRow) {
        self.n += 1;
        self.total += row.value;
        self.min = self.min.min(row.value);
        self.max = self.max.max(row.value);
        if row.time >= self.last_time {
            self.last_value = row.value;
            self.last_time = row.time;
            self.carried.clone_from(&row.carried);
        }
        for (c, r) in self.counts.iter_mut().zip(&row.counts) {
            *c += r;
        }
    }
}

/// Rows per upsert: under MySQL's 65535 placeholders whatever the width.
const ROWS_PER_UPSERT: usize = 2000;

/// Reads the rows of `spans` with an id of at least `first_id` and adds
/// them to every tier.
pub async fn add(
    tx: &mut Transaction<'_, MySql>,
    series: &Series,
    tiers: &[Tier],
    first_id: u64,
    spans: &[Span],
) -> Result<(), sqlx::Error> {
    let time = format!("`{}`", series.time);
    let condition = format!(
        "`id` >= ? AND {}",
        sql::spans_where(series.device, &time, spans.len())
    );
    let statement = sql::new_rows(series, &condition);
    let mut query = sqlx::query(&statement).bind(first_id);
    for span in spans {
        query = query
            .bind(span.device.as_str())
            .bind(span.from)
            .bind(span.to);
    }
    let keys = series.key_names().count();
    let rows: Vec<NewRow> = query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| decode(row, keys, series))
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(());
    }
    for tier in tiers {
        let mut buckets: BTreeMap<(&[Vec<u8>], i64), Delta> = BTreeMap::new();
        for row in &rows {
            let bucket = bucket_of(row.time, tier.seconds);
            match buckets.get_mut(&(row.key.as_slice(), bucket)) {
                Some(delta) => delta.add(row),
                None => {
                    buckets.insert((row.key.as_slice(), bucket), Delta::new(row));
                }
            }
        }
        let buckets: Vec<_> = buckets.into_iter().collect();
        for chunk in buckets.chunks(ROWS_PER_UPSERT) {
            let statement = sql::add_values(series, tier, chunk.len());
            let mut query = sqlx::query(&statement);
            for ((key, bucket), delta) in chunk {
                for part in key.iter() {
                    query = query.bind(part.as_slice());
                }
                let start = bucket
                    .checked_mul(i64::from(tier.seconds))
                    .and_then(at)
                    .unwrap_or(delta.last_time);
                query = query
                    .bind(start)
                    .bind(delta.n)
                    .bind(delta.total)
                    .bind(delta.min)
                    .bind(delta.max)
                    .bind(delta.last_value)
                    .bind(delta.last_time);
                for carried in &delta.carried {
                    query = query.bind(carried.as_deref());
                }
                for count in &delta.counts {
                    query = query.bind(*count);
                }
            }
            query.execute(&mut **tx).await?;
        }
    }
    Ok(())
}

fn decode(
    row: &sqlx::mysql::MySqlRow,
    keys: usize,
    series: &Series,
) -> Result<NewRow, sqlx::Error> {
    let key = (0..keys)
        .map(|i| row.try_get::<Vec<u8>, _>(i))
        .collect::<Result<Vec<_>, _>>()?;
    let carried = (0..series.carried.len())
        .map(|i| row.try_get::<Option<String>, _>(keys + 2 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let counts_at = keys + 2 + series.carried.len();
    let counts = (0..series.counts.len())
        .map(|i| row.try_get::<i64, _>(counts_at + i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NewRow {
        key,
        value: row.try_get(keys)?,
        time: row.try_get(keys + 1)?,
        carried,
        counts,
    })
}
