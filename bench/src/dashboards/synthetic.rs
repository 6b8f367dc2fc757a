//! The synthetic dataset, loaded in bulk with `INSERT … SELECT` from
//! MariaDB's `seq_<a>_to_<b>` sequence tables (no rows cross the network).
//!
//! Per device, readings every `interval_s` ending at `end` (a whole minute):
//! - `co2_emissions`: CO2 between 400 and 2,000 ppm (a level per device, a
//!   daily wave of ±300, noise of ±100), `received_at` 0.5 to 5 s after `date_time`, numbered
//!   (`seq_epoch`, `seq`) with one number skipped a day, which `reading_gaps`
//!   records (alternately dropped at the source and lost in transit), so the
//!   completeness panel has something to count;
//! - `readings`: two numeric fields per device every 20 intervals (a tenth of
//!   the CO2 rows) and a text field every 60;
//! - `bin_levels`: five bins every 10 intervals; `rejected_messages`: one
//!   dead letter every 60 intervals.
//!
//! The column lists are the bridge's schema today: a schema change that
//! renames a column changes the statements here.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::{Executor, MySqlConnection};

/// Bins in `bin_levels`.
const BINS: u64 = 5;
/// Intervals between two numeric `readings` of a device (two fields each).
const READINGS_EVERY: u64 = 20;
/// Intervals between two text `readings` of a device, and between two dead letters.
const HOURLY_EVERY: u64 = 60;
/// Intervals between two `bin_levels` rows of a bin.
const BINS_EVERY: u64 = 10;
/// Rows per statement aimed at (a day of CO2 readings at the defaults).
const ROWS_PER_STATEMENT: u64 = 28_800;

/// What to load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Shape {
    /// Devices.
    pub devices: u64,
    /// Seconds between two readings of a device.
    pub interval_s: u64,
    /// Readings per device.
    pub per_device: u64,
    /// UTC epoch seconds of the newest reading (a whole minute).
    pub end: i64,
}

impl Shape {
    /// CO2 readings in all.
    pub fn readings(&self) -> u64 {
        self.devices * self.per_device
    }

    /// Days the readings span.
    pub fn days(&self) -> f64 {
        (self.per_device * self.interval_s) as f64 / 86_400.0
    }

    /// Epoch seconds of the oldest reading.
    pub fn start(&self) -> i64 {
        self.end - (self.per_device.saturating_sub(1) * self.interval_s) as i64
    }

    /// Readings per device per day: one `seq` number is skipped per this many.
    fn per_day(&self) -> u64 {
        (86_400 / self.interval_s.max(1)).max(1)
    }
}

/// Rows written to one table and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct TableLoad {
    /// Table.
    pub table: String,
    /// Rows inserted.
    pub rows: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// A series: `slots` time slots of `rows_per_slot` rows, one slot every
/// `every` intervals, written by `statement(first, last)` for slots first..=last.
struct Series {
    table: &'static str,
    slots: u64,
    rows_per_slot: u64,
    statement: Box<dyn Fn(u64, u64) -> String>,
}

/// The time of slot `k` of a series with a slot every `step_s` seconds and
/// `slots` slots ending at `end`, for device `d` (devices are a few seconds
/// apart so no two share a timestamp).
fn time_expr(end: i64, slots: u64, step_s: u64, interval_s: u64) -> String {
    format!(
        "({end} - ({last} - CAST(k.seq AS SIGNED)) * {step_s} - MOD(d.seq * 7, {interval_s}))",
        last = slots.saturating_sub(1)
    )
}

fn series(shape: &Shape) -> Vec<Series> {
    let Shape {
        devices,
        interval_s: s,
        per_device: n,
        end,
    } = *shape;
    let dmax = devices.saturating_sub(1);
    let per_day = shape.per_day();
    let t = time_expr(end, n, s, s);
    let co2 = Series {
        table: "co2_emissions",
        slots: n,
        rows_per_slot: devices,
        statement: Box::new(move |a, b| {
            format!(
                "INSERT INTO co2_emissions (device, date_time, emissions, received_at, seq_epoch, seq) \
                 SELECT CONCAT('bench-', LPAD(d.seq, 3, '0')), FROM_UNIXTIME({t}), \
                 ROUND(LEAST(2000, GREATEST(400, 800 + MOD(d.seq * 97, 400) \
                   + 300 * SIN(2 * PI() * MOD({t}, 86400) / 86400 - PI() / 2) \
                   + MOD(CRC32(k.seq * 1000 + d.seq), 2001) / 10 - 100)), 2), \
                 FROM_UNIXTIME({t}) + INTERVAL (500000 + MOD(CRC32(k.seq * 1000 + d.seq + 7), 4500000)) MICROSECOND, \
                 LPAD(HEX(d.seq + 1), 16, '0'), k.seq + 1 + k.seq DIV {per_day} \
                 FROM seq_{a}_to_{b} k CROSS JOIN seq_0_to_{dmax} d"
            )
        }),
    };
    // Day j >= 1 of each device lacks seq number j * (per_day + 1).
    let day_count = n.saturating_sub(1) / per_day;
    let before = time_expr(end, n, s, s).replace("k.seq", &format!("(k.seq * {per_day} - 1)"));
    let after = time_expr(end, n, s, s).replace("k.seq", &format!("(k.seq * {per_day})"));
    let gaps = Series {
        table: "reading_gaps",
        slots: day_count,
        rows_per_slot: devices,
        statement: Box::new(move |a, b| {
            format!(
                "INSERT INTO reading_gaps (device, epoch, first_seq, last_seq, announced, state, \
                   first_seen, from_time, to_time) \
                 SELECT CONCAT('bench-', LPAD(d.seq, 3, '0')), LPAD(HEX(d.seq + 1), 16, '0'), \
                 k.seq * {p1}, k.seq * {p1}, MOD(k.seq, 2), 'final', FROM_UNIXTIME({after}), \
                 FROM_UNIXTIME({before}), FROM_UNIXTIME({after}) \
                 FROM seq_{a1}_to_{b1} k CROSS JOIN seq_0_to_{dmax} d",
                p1 = per_day + 1,
                a1 = a + 1,
                b1 = b + 1,
            )
        }),
    };
    let nr = n / READINGS_EVERY;
    let tr = time_expr(end, nr, s * READINGS_EVERY, s);
    let numbers = Series {
        table: "readings",
        slots: nr,
        rows_per_slot: devices * 2,
        statement: Box::new(move |a, b| {
            format!(
                "INSERT INTO readings (device, topic, `time`, field, `value`, kind, tags_key) \
                 SELECT CONCAT('bench-', LPAD(d.seq, 3, '0')), \
                 CONCAT('sensors/bench-', LPAD(d.seq, 3, '0'), '/env'), FROM_UNIXTIME({tr}), f.field, \
                 IF(f.field = 'temp', 20 + 3 * SIN(2 * PI() * MOD({tr}, 86400) / 86400) + MOD(d.seq, 5), \
                    45 + 10 * COS(2 * PI() * MOD({tr}, 86400) / 86400) - MOD(d.seq, 5)), \
                 'number', '' \
                 FROM seq_{a}_to_{b} k CROSS JOIN seq_0_to_{dmax} d \
                 CROSS JOIN (SELECT 'temp' AS field UNION ALL SELECT 'humidity') f"
            )
        }),
    };
    let nt = n / HOURLY_EVERY;
    let tt = time_expr(end, nt, s * HOURLY_EVERY, s);
    let texts = Series {
        table: "readings",
        slots: nt,
        rows_per_slot: devices,
        statement: Box::new(move |a, b| {
            format!(
                "INSERT INTO readings (device, topic, `time`, field, text_value, kind, tags_key) \
                 SELECT CONCAT('bench-', LPAD(d.seq, 3, '0')), \
                 CONCAT('sensors/bench-', LPAD(d.seq, 3, '0'), '/env'), FROM_UNIXTIME({tt}), 'status', \
                 IF(MOD(k.seq + d.seq, 24) = 0, 'battery low', 'ok'), 'text', '' \
                 FROM seq_{a}_to_{b} k CROSS JOIN seq_0_to_{dmax} d"
            )
        }),
    };
    let nb = n / BINS_EVERY;
    let tb = time_expr(end, nb, s * BINS_EVERY, s).replace("d.seq", "b.seq");
    let bins = Series {
        table: "bin_levels",
        slots: nb,
        rows_per_slot: BINS,
        statement: Box::new(move |a, b| {
            format!(
                "INSERT INTO bin_levels (bin_id, measured_at, level, `full`, received_at) \
                 SELECT CONCAT('bin-', b.seq + 1), FROM_UNIXTIME({tb}), \
                 IF(MOD(k.seq + 17 * b.seq, 110) >= 100, NULL, MOD(k.seq + 17 * b.seq, 110) + 0.5), \
                 MOD(k.seq + 17 * b.seq, 110) >= 100, FROM_UNIXTIME({tb}) + INTERVAL 1 SECOND \
                 FROM seq_{a}_to_{b} k CROSS JOIN seq_0_to_{bmax} b",
                bmax = BINS - 1
            )
        }),
    };
    let td = time_expr(end, nt, s * HOURLY_EVERY, s).replace("d.seq", "0");
    let dead = Series {
        table: "rejected_messages",
        slots: nt,
        rows_per_slot: 1,
        statement: Box::new(move |a, b| {
            format!(
                "INSERT INTO rejected_messages (received_at, topic, payload, payload_bytes, reason) \
                 SELECT FROM_UNIXTIME({td}), CONCAT('co2/bench-', LPAD(MOD(k.seq, {devices}), 3, '0'), '/emissions'), \
                 CONCAT('2020-13-45 99:99:99|', k.seq), LENGTH(CONCAT('2020-13-45 99:99:99|', k.seq)), \
                 ELT(1 + MOD(k.seq, 3), 'bad_datetime', 'out_of_range', 'missing_separator') \
                 FROM seq_{a}_to_{b} k"
            )
        }),
    };
    vec![co2, gaps, numbers, texts, bins, dead]
}

/// Loads the dataset, a statement per chunk of about [`ROWS_PER_STATEMENT`]
/// rows, with progress on stderr every few seconds. Returns rows and time per table.
pub async fn load(conn: &mut MySqlConnection, shape: &Shape) -> anyhow::Result<Vec<TableLoad>> {
    let all = series(shape);
    let total: u64 = all.iter().map(|s| s.slots * s.rows_per_slot).sum();
    let started = Instant::now();
    let mut progress = co2_wire::Progress::new(Some(total), Duration::from_secs(5), started);
    let mut done = 0;
    let mut loads: Vec<TableLoad> = Vec::new();
    for series in &all {
        let t0 = Instant::now();
        let chunk = (ROWS_PER_STATEMENT / series.rows_per_slot.max(1)).max(1);
        let mut first = 0;
        while first < series.slots {
            let last = (first + chunk).min(series.slots) - 1;
            let sql = (series.statement)(first, last);
            conn.execute(sql.as_str())
                .await
                .with_context(|| format!("loading {} (slots {first}..={last})", series.table))?;
            done += (last - first + 1) * series.rows_per_slot;
            if let Some(update) = progress.tick(done, Instant::now()) {
                eprintln!("co2-bench dashboards: loading {}: {update}", series.table);
            }
            first = last + 1;
        }
        let rows = series.slots * series.rows_per_slot;
        match loads.iter_mut().find(|l| l.table == series.table) {
            Some(l) => {
                l.rows += rows;
                l.seconds += t0.elapsed().as_secs_f64();
            }
            None => loads.push(TableLoad {
                table: series.table.to_owned(),
                rows,
                seconds: t0.elapsed().as_secs_f64(),
            }),
        }
    }
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_arithmetic() {
        let s = Shape {
            devices: 20,
            interval_s: 60,
            per_device: 50_000,
            end: 1_700_000_040,
        };
        assert_eq!(s.readings(), 1_000_000);
        assert!((s.days() - 34.72).abs() < 0.01);
        assert_eq!(s.start(), 1_700_000_040 - 49_999 * 60);
        assert_eq!(s.per_day(), 1440);
    }

    #[test]
    fn chunks_cover_each_series_once() {
        let s = Shape {
            devices: 3,
            interval_s: 60,
            per_device: 3000,
            end: 1_700_000_040,
        };
        let all = series(&s);
        let co2 = &all[0];
        assert_eq!(co2.slots * co2.rows_per_slot, 9000);
        let sql = (co2.statement)(0, 999);
        assert!(
            sql.contains("FROM seq_0_to_999 k CROSS JOIN seq_0_to_2 d"),
            "{sql}"
        );
        // 3000 readings a device, 1440 a day: days 1 and 2 each skip a number
        assert_eq!(all[1].slots, 2);
        assert!((all[1].statement)(0, 1).contains("seq_1_to_2 k"));
        assert_eq!(all[2].slots * all[2].rows_per_slot, 900, "a tenth");
    }
}
