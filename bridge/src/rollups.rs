//! `co2-bridge rollup rebuild|verify`: the rollups of the tables the
//! configured routes write, recomputed from or compared with the raw rows.

use std::collections::BTreeMap;

use crate::config::{sink_name, ConfigError, DatabaseSettings, Settings, SinkSettings};
use crate::retime::TimeBound;
use crate::route::Routes;
use crate::sink;
use crate::sink::mysql::rollup::{Rollups, Series};
use crate::sink::mysql::schema;

/// `co2-bridge rollup`.
#[derive(Debug, clap::Subcommand)]
pub enum RollupCommand {
    /// Recompute the rollups of a time range from the raw rows, one day per
    /// transaction, with progress: for rows the bridge did not write (an
    /// adopted table, an import). Idempotent; safe while the bridge runs.
    Rebuild(RangeArgs),
    /// Compare every rollup bucket with the raw rows; exit 1 if any differs.
    Verify(RangeArgs),
}

/// Which rows a rebuild or verification covers.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// From this time on (RFC 3339, or UTC as YYYY-MM-DD[ hh:mm:ss]); default:
    /// the oldest raw row. Whole days (coarsest buckets) around it.
    #[arg(long, value_name = "T")]
    pub from: Option<TimeBound>,
    /// Up to this time; default: the newest raw row.
    #[arg(long, value_name = "T")]
    pub to: Option<TimeBound>,
    /// Only this raw table (co2_emissions, readings, bin_levels); repeatable.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
}

/// Why a rollup command could not run.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rollups are off, or no route writes a table that has them.
    #[error("{0}")]
    Nothing(String),
    /// The database failed.
    #[error("database ({sink}): {source}")]
    Database {
        /// The sink's name.
        sink: String,
        /// What it said.
        source: sqlx::Error,
    },
}

/// One sink's database and the series its routes write there.
struct Target {
    sink: String,
    key: String,
    db: DatabaseSettings,
    series: Vec<&'static Series>,
}

/// The MySQL sinks whose routes write series with rollups, `only` those
/// tables if given.
fn targets(settings: &Settings, only: &[String]) -> Result<Vec<Target>, RollupError> {
    let routes = Routes::from_settings(settings)?;
    let sinks = settings.sink_settings();
    let mut by_sink: BTreeMap<String, Target> = BTreeMap::new();
    for route in routes.iter() {
        let Some(series) = Series::of(route) else {
            continue;
        };
        if !only.is_empty() && !only.iter().any(|t| t == series.table) {
            continue;
        }
        let Some((key, db)) = sinks.iter().find_map(|(key, s)| match s {
            SinkSettings::Mysql(db) if sink_name(key) == route.sink() => Some((key, db)),
            _ => None,
        }) else {
            continue;
        };
        let target = by_sink
            .entry(route.sink().to_owned())
            .or_insert_with(|| Target {
                sink: route.sink().to_owned(),
                key: key.clone(),
                db: db.clone(),
                series: Vec::new(),
            });
        if !target.series.contains(&series) {
            target.series.push(series);
        }
    }
    if by_sink.is_empty() {
        return Err(RollupError::Nothing(if only.is_empty() {
            "no configured route writes a table with rollups (co2_emissions, readings, bin_levels) to MySQL".into()
        } else {
            format!("no configured route writes {} to MySQL", only.join(", "))
        }));
    }
    Ok(by_sink.into_values().collect())
}

/// The configured rollups, or why there are none.
fn rollups(settings: &Settings) -> Result<Rollups, RollupError> {
    sink::rollups(settings)?.ok_or_else(|| {
        RollupError::Nothing("rollups are off (rollups.enabled = false); nothing to do".into())
    })
}

/// Runs `command`; returns what to print and whether every bucket agreed.
pub async fn run(
    settings: &Settings,
    command: &RollupCommand,
) -> Result<(String, bool), RollupError> {
    let rollups = rollups(settings)?;
    let args = match command {
        RollupCommand::Rebuild(args) | RollupCommand::Verify(args) => args,
    };
    let (from, to) = (args.from.map(|b| b.0), args.to.map(|b| b.0));
    let mut out = String::new();
    let mut agreed = true;
    for target in targets(settings, &args.tables)? {
        let database = |source| RollupError::Database {
            sink: target.sink.clone(),
            source,
        };
        let (pool, _nodes) = schema::pool(&target.db, &target.key)?;
        for series in &target.series {
            match command {
                RollupCommand::Rebuild(_) => {
                    let mut progress = |p: crate::sink::mysql::rollup::rebuild::Progress<'_>| {
                        // Every tenth step and the last: a year is 365 lines otherwise.
                        if p.done % 10 == 0 || p.done == p.of {
                            eprintln!(
                                "rollup rebuild: {} {} ({}/{})",
                                p.table,
                                p.step.date(),
                                p.done,
                                p.of
                            );
                        }
                    };
                    let done = rollups
                        .rebuild(&pool, series, from, to, &mut progress)
                        .await
                        .map_err(database)?;
                    out.push_str(&format!(
                        "{}: {} step(s) rebuilt, {} rollup row(s) written\n",
                        series.table, done.steps, done.rows
                    ));
                }
                RollupCommand::Verify(_) => {
                    let verified = rollups
                        .verify(&pool, series, from, to)
                        .await
                        .map_err(database)?;
                    out.push_str(&format!(
                        "{}: {} bucket(s) compared, {} differ, {} kept beyond the raw rows' retention\n",
                        series.table,
                        verified.buckets,
                        verified.differences.len(),
                        verified.beyond_raw
                    ));
                    for d in &verified.differences {
                        out.push_str(&format!(
                            "  {} {} {}: {}\n",
                            d.table, d.key, d.bucket, d.what
                        ));
                    }
                    agreed &= verified.differences.is_empty();
                }
            }
        }
        pool.close().await;
    }
    if !agreed {
        out.push_str("Rollups differ from the raw rows; `co2-bridge rollup rebuild --from … --to …` recomputes them.\n");
    }
    Ok((out, agreed))
}
