//! `co2-bench dashboards`: what the shipped Grafana dashboards cost as the
//! stored data grows.
//!
//! In a throwaway database with the bridge's schema, [`synthetic`] loads
//! devices × readings in bulk; [`scratch`] fills the rollups when the bridge
//! can and reads the sizes; [`panels`] reads every MySQL panel query of
//! `grafana/dashboards`, [`grafana`] expands it as Grafana 10 sends it (every
//! variable on "All"), [`measure`] runs it for each range ending at the
//! data's end (first run, then best of the repeats, a time limit each);
//! [`report`] prints it; [`command`] is the command line's entry.

pub mod command;
pub mod grafana;
pub mod measure;
pub mod panels;
pub mod report;
pub mod scratch;
pub mod synthetic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sqlx::Connection;

use measure::{Runner, Timing};
use panels::PanelQuery;
use scratch::{RollupStep, Scratch, TableSize};
use synthetic::{Shape, TableLoad};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Server URL (its database part is ignored).
    pub db_url: String,
    /// The bridge binary for `migrate` and `rollup rebuild`, if there is one.
    pub bridge_bin: Option<PathBuf>,
    /// Directory of the dashboards' JSON.
    pub dashboards: PathBuf,
    /// Devices.
    pub devices: u64,
    /// Seconds between two readings of a device.
    pub interval_s: u64,
    /// Days of readings (when `readings` is not given).
    pub days: f64,
    /// Ranges to run each panel for: name and seconds.
    pub ranges: Vec<(String, i64)>,
    /// Timed repeats after the first run.
    pub repeat: usize,
    /// Time limit per statement.
    pub timeout: Duration,
    /// Points a panel draws when it does not set maxDataPoints.
    pub max_data_points: u64,
    /// Keep the database.
    pub keep: bool,
}

/// One panel over one range.
#[derive(Debug, Clone, Serialize)]
pub struct RangeResult {
    /// Range name (`1h`...).
    pub range: String,
    /// UTC epoch seconds the query covers (a panel's own timeFrom wins).
    pub from: i64,
    /// UTC epoch seconds of its end.
    pub to: i64,
    /// `$__interval` used.
    pub interval: String,
    /// The SQL sent.
    pub sql: String,
    /// The runs.
    pub timing: Timing,
}

/// One panel over every range.
#[derive(Debug, Clone, Serialize)]
pub struct PanelResult {
    /// Dashboard / panel title.
    pub panel: String,
    /// The panel's own relative range, which replaces the dashboard's.
    pub time_from_s: Option<i64>,
    /// Per range.
    pub ranges: Vec<RangeResult>,
}

/// One dataset size, measured.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    /// The throwaway database.
    pub database: String,
    /// It was dropped at the end.
    pub dropped: bool,
    /// How the schema was applied.
    pub schema: String,
    /// What was loaded.
    pub shape: Shape,
    /// CO2 readings.
    pub readings: u64,
    /// Days they span.
    pub days: f64,
    /// Rows and time per table loaded.
    pub load: Vec<TableLoad>,
    /// Seconds of the whole load.
    pub load_seconds: f64,
    /// The rollup step.
    pub rollups: RollupStep,
    /// Every table after ANALYZE.
    pub tables: Vec<TableSize>,
    /// The CO2 rollup tables among them.
    pub rollup_tables: Vec<String>,
    /// co2_emissions data + index bytes / rows.
    pub bytes_per_co2_reading: Option<f64>,
    /// The same, its rollup tables' bytes included.
    pub bytes_per_co2_reading_with_rollups: Option<f64>,
    /// How `$__interval` was computed.
    pub interval_rule: String,
    /// Range names, in order.
    pub ranges: Vec<String>,
    /// Per panel.
    pub panels: Vec<PanelResult>,
}

/// Readings per device for `readings` in all, or for `days`.
pub fn shape(opts: &Options, readings: Option<u64>, end: i64) -> anyhow::Result<Shape> {
    if opts.devices == 0 || opts.interval_s == 0 {
        bail!("--devices and --interval-s must be at least 1");
    }
    let per_device = match readings {
        Some(r) => r / opts.devices,
        None => (opts.days * 86_400.0 / opts.interval_s as f64) as u64,
    };
    if per_device == 0 {
        bail!("fewer readings than devices: nothing to load");
    }
    Ok(Shape {
        devices: opts.devices,
        interval_s: opts.interval_s,
        per_device,
        end,
    })
}

/// Loads, measures and (unless `keep`) drops one dataset of `readings` (or `days`).
pub async fn run_size(opts: &Options, readings: Option<u64>) -> anyhow::Result<SizeReport> {
    let queries = panels::load(&opts.dashboards)?;
    if queries.is_empty() {
        bail!("no MySQL panel queries in {}", opts.dashboards.display());
    }
    let now = chrono::Utc::now().timestamp();
    let shape = shape(opts, readings, now - now.rem_euclid(60))?;
    let scratch = Scratch::create(&opts.db_url).await?;
    eprintln!(
        "co2-bench dashboards: database {}, {} readings of {} devices every {} s ({:.1} days)",
        scratch.name,
        shape.readings(),
        shape.devices,
        shape.interval_s,
        shape.days()
    );
    let result = measure_in(opts, &scratch, shape, &queries).await;
    let dropped = if opts.keep {
        false
    } else {
        scratch
            .drop_now()
            .await
            .with_context(|| format!("cannot drop database {}", scratch.name))?;
        true
    };
    let mut report = result?;
    report.dropped = dropped;
    Ok(report)
}

async fn measure_in(
    opts: &Options,
    scratch: &Scratch,
    shape: Shape,
    queries: &[PanelQuery],
) -> anyhow::Result<SizeReport> {
    let schema = scratch::migrate(scratch, opts.bridge_bin.as_deref()).await?;
    let mut conn = scratch.connect().await?;
    let started = Instant::now();
    let load = synthetic::load(&mut conn, &shape).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    eprintln!("co2-bench dashboards: loaded in {load_seconds:.1} s");
    let rollups = scratch::rollups(scratch, opts.bridge_bin.as_deref())?;
    eprintln!("co2-bench dashboards: rollups: {}", rollups.note);
    scratch::analyze(&mut conn).await?;
    let tables = scratch::sizes(&mut conn).await?;
    conn.close().await?;
    let rollup_tables: Vec<String> = tables
        .iter()
        .filter(|t| scratch::is_co2_rollup(&t.table))
        .map(|t| t.table.clone())
        .collect();
    let co2 = tables.iter().find(|t| t.table == "co2_emissions");
    let per_reading = |extra: u64| {
        co2.filter(|t| t.rows > 0)
            .map(|t| (t.bytes() + extra) as f64 / t.rows as f64)
    };
    let rollup_bytes: u64 = tables
        .iter()
        .filter(|t| rollup_tables.contains(&t.table))
        .map(TableSize::bytes)
        .sum();
    let (bytes_per, bytes_with_rollups) = (per_reading(0), per_reading(rollup_bytes));

    let mut runner = Runner::new(scratch.connect().await?, opts.timeout).await?;
    let mut results: Vec<PanelResult> = queries
        .iter()
        .map(|q| PanelResult {
            panel: q.label(),
            time_from_s: q.time_from_s,
            ranges: Vec::new(),
        })
        .collect();
    // Range by range, every panel in dashboard order: as refreshes would run.
    for (name, seconds) in &opts.ranges {
        eprintln!("co2-bench dashboards: range {name}");
        for (q, result) in queries.iter().zip(results.iter_mut()) {
            let span = q.time_from_s.unwrap_or(*seconds);
            let (from, to) = (shape.end - span, shape.end);
            // A panel with its own range sends the same SQL for every range.
            if let Some(same) = q.time_from_s.and_then(|_| result.ranges.first().cloned()) {
                result.ranges.push(RangeResult {
                    range: name.clone(),
                    ..same
                });
                continue;
            }
            let interval_ms = q.interval_ms(
                u64::try_from(span).unwrap_or(0) * 1000,
                opts.max_data_points,
            );
            let (sql, timing) = match q.sql(from, to, opts.max_data_points) {
                Ok(sql) => {
                    let timing = measure::time(&mut runner, &sql, opts.repeat).await;
                    (sql, timing)
                }
                Err(e) => (
                    q.raw_sql.clone(),
                    Timing {
                        first: measure::Outcome::Failed(e.to_string()),
                        repeats_ms: Vec::new(),
                        best_ms: None,
                        rows: 0,
                        timed_out: false,
                        error: Some(e.to_string()),
                    },
                ),
            };
            result.ranges.push(RangeResult {
                range: name.clone(),
                from,
                to,
                interval: grafana::interval_text(interval_ms),
                sql,
                timing,
            });
        }
    }
    Ok(SizeReport {
        database: scratch.name.clone(),
        dropped: false,
        schema,
        shape,
        readings: shape.readings(),
        days: shape.days(),
        load,
        load_seconds,
        rollups,
        tables,
        rollup_tables,
        bytes_per_co2_reading: bytes_per,
        bytes_per_co2_reading_with_rollups: bytes_with_rollups,
        interval_rule: format!(
            "$__interval = range / maxDataPoints (the panel's, else {}), rounded as Grafana's \
             roundInterval, at least the panel's min interval, else the data source's {}",
            opts.max_data_points,
            grafana::interval_text(grafana::DEFAULT_MIN_INTERVAL_MS)
        ),
        ranges: opts.ranges.iter().map(|(n, _)| n.clone()).collect(),
        panels: results,
    })
}
