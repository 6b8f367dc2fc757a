//! `co2-bridge retention`: one retention pass on every MySQL database the
//! routes write (partitions added ahead, expired ones dropped), then what
//! each kept table holds. For a timer run as an admin when the bridge's own
//! account may not alter its tables.

use chrono::Utc;

use crate::config::{sink_name, ConfigError, Settings, SinkSettings};
use crate::route::Routes;
use crate::sink;
use crate::sink::mysql::schema;

/// Why the pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another bridge's pass holds the database's retention lock.
    #[error("sink {0}: another retention pass is running; try again in a minute")]
    Busy(String),
    /// The database failed.
    #[error("database ({sink}): {source}")]
    Database {
        /// The sink's name.
        sink: String,
        /// What it said.
        source: sqlx::Error,
    },
}

/// Runs one pass per MySQL sink a route writes; returns the report.
pub async fn run(settings: &Settings) -> Result<String, RetentionError> {
    let routes = Routes::from_settings(settings)?;
    let retention = sink::retention(settings, sink::rollups(settings)?.as_ref());
    let mut out = String::new();
    for (key, sink_settings) in settings.sink_settings() {
        let name = sink_name(&key).to_owned();
        let SinkSettings::Mysql(db) = sink_settings else {
            continue;
        };
        if !routes.iter().any(|r| r.sink() == name) {
            continue;
        }
        let (pool, _nodes) = schema::pool(&db, &key)?;
        let pass = retention
            .pass(&pool, Utc::now().date_naive())
            .await
            .map_err(|source| RetentionError::Database {
                sink: name.clone(),
                source,
            })?
            .ok_or_else(|| RetentionError::Busy(name.clone()))?;
        pool.close().await;
        if let Some(source) = pass.failed {
            return Err(RetentionError::Database { sink: name, source });
        }
        out.push_str(&format!("sink {name}:\n"));
        for (table, partitions) in &pass.dropped {
            out.push_str(&format!("  {table}: dropped {}\n", partitions.join(", ")));
        }
        for held in &pass.held {
            let kept = match held.days {
                0 => "kept forever".to_owned(),
                d => format!("kept {d} days"),
            };
            let oldest = held
                .oldest
                .map_or("empty".to_owned(), |t| format!("oldest {t}"));
            out.push_str(&format!(
                "  {:<24} {:>12} rows {:>10.1} MiB  {oldest}, {kept}\n",
                held.table,
                held.rows,
                held.bytes as f64 / (1024.0 * 1024.0)
            ));
        }
    }
    Ok(out)
}
