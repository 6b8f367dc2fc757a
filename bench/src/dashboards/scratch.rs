//! The throwaway database: created with the bridge's schema (its own
//! `co2-bridge migrate`), rollups filled when the bridge can, statistics
//! refreshed, sizes read, dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use sqlx::{ConnectOptions, Connection, Executor, MySqlConnection, Row};

use crate::db;

/// A database of its own on the server.
pub struct Scratch {
    /// Server URL without a database.
    pub server: String,
    /// Its name.
    pub name: String,
}

impl Scratch {
    /// Creates `co2bench_dash_<random>` on the server of `url`.
    pub async fn create(url: &str) -> anyhow::Result<Self> {
        let (server, _) = db::split_url(url)?;
        let name = format!("co2bench_dash_{:08x}", rand::random::<u32>());
        let mut admin = db::options(&server)?.connect().await?;
        admin
            .execute(format!("CREATE DATABASE `{name}`").as_str())
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        admin.close().await?;
        Ok(Self { server, name })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// A connection to it (session in UTC, as Grafana's and the bridge's).
    pub async fn connect(&self) -> anyhow::Result<MySqlConnection> {
        db::options(&self.url())?
            // Slow statements are what this measures; the report says which.
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::ZERO)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.url()))
    }

    /// Drops it.
    pub async fn drop_now(&self) -> anyhow::Result<()> {
        let mut admin = db::options(&self.server)?.connect().await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS `{}`", self.name).as_str())
            .await?;
        admin.close().await?;
        Ok(())
    }
}

/// Runs `bin args…` with `url` as the bridge's database; what it printed.
fn bridge(bin: &Path, url: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    std::process::Command::new(bin)
        .args(args)
        .env("CO2_BRIDGE__DATABASE__URL", url)
        .env_remove("CO2_BRIDGE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))
}

/// Applies the schema: `co2-bridge migrate` when there is a bridge binary (the
/// bridge's own migrator, adoption and lock included), else the same
/// migrations embedded in the bench. Says which.
pub async fn migrate(scratch: &Scratch, bin: Option<&Path>) -> anyhow::Result<String> {
    if let Some(bin) = bin {
        let out = bridge(bin, &scratch.url(), &["migrate"])?;
        if !out.status.success() {
            bail!(
                "{} migrate failed ({}): {}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return Ok(format!("co2-bridge migrate ({})", bin.display()));
    }
    let pool = db::pool(&scratch.url(), 2).await?;
    db::MIGRATOR
        .run(&pool)
        .await
        .context("migrating the scratch database")?;
    pool.close().await;
    Ok("bridge/migrations embedded in co2-bench (no co2-bridge binary found)".into())
}

/// What happened to the rollup tables.
#[derive(Debug, Clone, Serialize)]
pub struct RollupStep {
    /// `co2-bridge rollup rebuild` ran.
    pub ran: bool,
    /// Why not, or what it said.
    pub note: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// Fills the rollup tables with the bridge's `rollup rebuild` when the binary
/// has that command. The one place to change when its name or arguments do.
pub fn rollups(scratch: &Scratch, bin: Option<&Path>) -> anyhow::Result<RollupStep> {
    let skipped = |note: &str| RollupStep {
        ran: false,
        note: note.to_owned(),
        seconds: 0.0,
    };
    let Some(bin) = bin else {
        return Ok(skipped("skipped: no co2-bridge binary"));
    };
    let help = bridge(bin, &scratch.url(), &["rollup", "rebuild", "--help"])?;
    if !help.status.success() {
        return Ok(skipped(
            "skipped: this co2-bridge has no `rollup rebuild` command",
        ));
    }
    let started = Instant::now();
    let out = bridge(bin, &scratch.url(), &["rollup", "rebuild"])?;
    if !out.status.success() {
        bail!(
            "co2-bridge rollup rebuild failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let said = String::from_utf8_lossy(&out.stdout);
    Ok(RollupStep {
        ran: true,
        note: said.lines().last().unwrap_or("done").trim().to_owned(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Rows and bytes of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableSize {
    /// Table.
    pub table: String,
    /// `COUNT(*)`.
    pub rows: u64,
    /// `DATA_LENGTH`.
    pub data_bytes: u64,
    /// `INDEX_LENGTH`.
    pub index_bytes: u64,
}

impl TableSize {
    /// Data and indexes.
    pub fn bytes(&self) -> u64 {
        self.data_bytes + self.index_bytes
    }
}

/// Every table of the database.
pub async fn tables(conn: &mut MySqlConnection) -> anyhow::Result<Vec<String>> {
    let rows = conn.fetch_all("SHOW TABLES").await?;
    rows.iter()
        .map(|r| {
            // Some servers answer SHOW TABLES as binary; take the bytes either way.
            let raw: Vec<u8> = r.try_get_unchecked(0)?;
            Ok(String::from_utf8_lossy(&raw).into_owned())
        })
        .collect()
}

/// `ANALYZE TABLE` on every table, so the sizes below are current.
pub async fn analyze(conn: &mut MySqlConnection) -> anyhow::Result<()> {
    for t in tables(conn).await? {
        conn.fetch_all(format!("ANALYZE TABLE `{t}`").as_str())
            .await
            .with_context(|| format!("ANALYZE TABLE {t}"))?;
    }
    Ok(())
}

/// Rows (counted) and bytes (after [`analyze`]) of every table.
pub async fn sizes(conn: &mut MySqlConnection) -> anyhow::Result<Vec<TableSize>> {
    let mut out = Vec::new();
    for t in tables(conn).await? {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{t}`"))
            .fetch_one(&mut *conn)
            .await?;
        let (data, index): (u64, u64) = sqlx::query_as(
            "SELECT CAST(COALESCE(DATA_LENGTH, 0) AS UNSIGNED), \
                    CAST(COALESCE(INDEX_LENGTH, 0) AS UNSIGNED) \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(&t)
        .fetch_one(&mut *conn)
        .await?;
        out.push(TableSize {
            table: t,
            rows: u64::try_from(rows).unwrap_or(0),
            data_bytes: data,
            index_bytes: index,
        });
    }
    Ok(out)
}

/// The CO2 readings' rollup tables, by name (`co2_emissions_<tier>`,
/// `co2_rollup_<tier>`, `rollup_co2_<tier>`…). Adapt when the bridge names them.
pub fn is_co2_rollup(table: &str) -> bool {
    let t = table.to_ascii_lowercase();
    t != "co2_emissions"
        && t != "co2_emissions_adopted_conflicts"
        && (t.starts_with("co2_emissions_") || (t.contains("rollup") && t.contains("co2")))
}

/// Whether a database of this name exists on the server of `url`.
pub async fn exists(url: &str, name: &str) -> anyhow::Result<bool> {
    let (server, _) = db::split_url(url)?;
    let mut admin = db::options(&server)?.connect().await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await?;
    admin.close().await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_tables_by_name() {
        assert!(is_co2_rollup("co2_emissions_1h"));
        assert!(is_co2_rollup("co2_rollup_minute"));
        assert!(!is_co2_rollup("co2_emissions"));
        assert!(!is_co2_rollup("co2_emissions_adopted_conflicts"));
        assert!(!is_co2_rollup("readings_rollup_1h"));
        assert!(!is_co2_rollup("bin_levels"));
    }
}
