//! Numbered test readings: what reading `i` of device `d` is, publishing a
//! range of them, and checking that a table holds each exactly once.

use std::collections::BTreeSet;
use std::ops::Range;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::MySqlPool;

use crate::{Database, Publisher};

/// 2026-01-01 00:00:00 UTC, the time of reading 0.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Reading `i` of device `d`: a distinct millisecond time and a value derived
/// from both, so every row can be checked.
pub fn reading(d: usize, i: usize) -> (String, DateTime<Utc>, f64) {
    let time = base() + chrono::Duration::milliseconds((i * 1000 + d * 7) as i64);
    let value = ((i * 13 + d * 101) % 99_000) as f64 + 0.25;
    (format!("dev{d}"), time, value)
}

/// The canonical payload of a reading.
pub fn payload(time: DateTime<Utc>, value: f64) -> String {
    format!("{}|{value:.2}", time.format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// Publishes readings `range` of `devices` devices to `<prefix>/devN/emissions`;
/// panics (for tests) if the client is gone.
pub async fn publish_range(
    publisher: &Publisher,
    prefix: &str,
    devices: usize,
    range: Range<usize>,
) {
    for i in range {
        for d in 0..devices {
            let (device, time, value) = reading(d, i);
            let topic = format!("{prefix}/{device}/emissions");
            if let Err(e) = publisher.publish(&topic, payload(time, value)).await {
                panic!("cannot publish to {topic}: {e}");
            }
        }
    }
}

/// Every (device, epoch ms, value in cents) we expect for `devices` × `count`.
pub fn expected(devices: usize, count: usize) -> BTreeSet<(String, i64, i64)> {
    (0..count)
        .flat_map(|i| (0..devices).map(move |d| reading(d, i)))
        .map(|(device, time, value)| {
            (
                device,
                time.timestamp_millis(),
                (value * 100.0).round() as i64,
            )
        })
        .collect()
}

/// What `co2_emissions` of the database behind `pool` holds, in the same
/// shape, plus the raw row count; panics (for tests) if it cannot be read.
pub async fn stored_in(pool: &MySqlPool) -> (BTreeSet<(String, i64, i64)>, i64) {
    let rows: Vec<(String, DateTime<Utc>, f64)> =
        sqlx::query_as("SELECT CAST(device AS CHAR), date_time, emissions FROM co2_emissions")
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("cannot read co2_emissions: {e}"));
    let count = rows.len() as i64;
    let set = rows
        .into_iter()
        .map(|(device, time, value)| {
            (
                device,
                time.timestamp_millis(),
                (value * 100.0).round() as i64,
            )
        })
        .collect();
    (set, count)
}

/// Asserts (for tests) the table holds exactly the expected readings, each once.
pub async fn assert_exactly_once(db: &Database, devices: usize, count: usize) {
    assert_exactly_once_in(db.pool(), devices, count).await;
}

/// As [`assert_exactly_once`], in the database behind `pool`.
pub async fn assert_exactly_once_in(pool: &MySqlPool, devices: usize, count: usize) {
    let want = expected(devices, count);
    let (got, rows) = stored_in(pool).await;
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} readings missing, e.g. {missing:?}",
        want.difference(&got).count()
    );
    assert!(extra.is_empty(), "unexpected rows, e.g. {extra:?}");
    assert_eq!(
        rows,
        want.len() as i64,
        "some reading is stored more than once"
    );
}
