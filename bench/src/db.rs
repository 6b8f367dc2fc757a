//! Throwaway databases with the bridge's own schema, reading rows back for
//! accounting, and the database's multi-row insert ceiling.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::NaiveDateTime;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Executor, MySql, QueryBuilder};

use crate::account::{Row, Sent};

/// The bridge's migrations, embedded: the bench measures against the same schema.
pub static MIGRATOR: Migrator = sqlx::migrate!("../bridge/migrations");

/// Splits `mysql://user@host:port/db` into the server part and the database name.
pub fn split_url(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let rest = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))
        .with_context(|| format!("{url:?}: a database URL starts with mysql://"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p.split('?').next().unwrap_or("")),
        None => (rest, ""),
    };
    let db = (!path.is_empty()).then(|| path.to_owned());
    Ok((format!("mysql://{authority}"), db))
}

/// Options for `url` with the session in UTC (so `received_at` is UTC, as the bridge's).
pub fn options(url: &str) -> anyhow::Result<MySqlConnectOptions> {
    let o: MySqlConnectOptions = url
        .parse()
        .with_context(|| format!("bad database URL {url:?}"))?;
    Ok(o.timezone(Some("+00:00".to_owned()))
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// A pool of `n` connections on `url`.
pub async fn pool(url: &str, n: u32) -> anyhow::Result<MySqlPool> {
    MySqlPoolOptions::new()
        .max_connections(n)
        .connect_with(options(url)?)
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// A uniquely named database with the bridge's schema, dropped by [`ScratchDb::drop_now`].
pub struct ScratchDb {
    server: String,
    name: String,
    /// A pool on it.
    pub pool: MySqlPool,
}

impl ScratchDb {
    /// Creates `co2bench_<tag>_<random>` on the server of `url` and migrates it.
    pub async fn create(url: &str, tag: &str) -> anyhow::Result<Self> {
        let (server, _) = split_url(url)?;
        let name = format!("co2bench_{tag}_{:08x}", rand::random::<u32>());
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database tag {tag:?} must be [A-Za-z0-9_]");
        }
        let admin = pool(&server, 1).await?;
        admin
            .execute(format!("CREATE DATABASE `{name}`").as_str())
            .await?;
        admin.close().await;
        let pool = pool(&format!("{server}/{name}"), 4).await?;
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the scratch database")?;
        Ok(Self { server, name, pool })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops it.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let admin = pool(&self.server, 1).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS `{}`", self.name).as_str())
            .await?;
        admin.close().await;
        Ok(())
    }
}

/// Rows whose device starts with `device_prefix`.
pub async fn rows(pool: &MySqlPool, device_prefix: &str) -> anyhow::Result<Vec<Row>> {
    let rows: Vec<(String, NaiveDateTime, Option<NaiveDateTime>)> = sqlx::query_as(
        "SELECT CAST(device AS CHAR), date_time, received_at FROM co2_emissions WHERE device LIKE ?",
    )
    .bind(format!("{}%", like_escape(device_prefix)))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(device, t, at)| Row {
            device,
            date_time_ms: t.and_utc().timestamp_millis(),
            received_at_ms: at.map(|a| a.and_utc().timestamp_millis()),
        })
        .collect())
}

/// `COUNT(*)` of the rows whose device starts with `device_prefix`.
pub async fn count(pool: &MySqlPool, device_prefix: &str) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM co2_emissions WHERE device LIKE ?")
        .bind(format!("{}%", like_escape(device_prefix)))
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The highest `co2_emissions.id` so far (0 for an empty table); every row
/// inserted later gets a higher one.
pub async fn max_id(pool: &MySqlPool) -> anyhow::Result<u64> {
    let id: u64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS UNSIGNED) FROM co2_emissions")
            .fetch_one(pool)
            .await?;
    Ok(id)
}

/// Waits until `n` rows with `device_prefix` and an id above `since_id` exist,
/// or nothing new arrived for `idle`, or `limit` passed. Returns the count of
/// rows with `device_prefix`.
///
/// `COUNT(*)` walks the index range, and polled every 20 ms while 200,000 rows
/// arrive it cost MariaDB a good share of the CPU it spent on the inserts being
/// measured. `MAX(id)` is one index lookup, so that is what is polled; the
/// count runs only once enough new ids exist for it to be reached.
pub async fn wait_for_rows(
    pool: &MySqlPool,
    device_prefix: &str,
    since_id: u64,
    n: u64,
    idle: Duration,
    limit: Duration,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut last = (since_id, Instant::now());
    let mut progress = co2_wire::Progress::new(Some(n), Duration::from_secs(5), start);
    loop {
        let top = max_id(pool).await?;
        if let Some(update) = progress.tick(top.saturating_sub(since_id), Instant::now()) {
            tracing::info!(%update, "Waiting for rows");
        }
        let stalled = top == last.0 && last.1.elapsed() > idle;
        if top.saturating_sub(since_id) >= n || stalled || start.elapsed() > limit {
            let got = count(pool, device_prefix).await?;
            if got >= n || stalled || start.elapsed() > limit {
                return Ok(got);
            }
        }
        if top != last.0 {
            last = (top, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inserts `readings` the way the bridge does (multi-row `INSERT ... ON
/// DUPLICATE KEY UPDATE`, one transaction per batch of `batch` rows) over
/// `connections` connections in parallel. Returns rows per second.
pub async fn insert_ceiling(
    url: &str,
    readings: &[Sent],
    batch: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let batch = batch.max(1);
    let connections = connections.max(1);
    let pool = pool(url, connections as u32).await?;
    // Warm the pool so connection set-up is not timed.
    let mut warm = Vec::new();
    for _ in 0..connections {
        warm.push(pool.acquire().await?);
    }
    drop(warm);
    let chunks: Vec<&[Sent]> = readings.chunks(batch).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..connections {
        let pool = pool.clone();
        let mine: Vec<Vec<Sent>> = chunks
            .iter()
            .skip(lane)
            .step_by(connections)
            .map(|c| c.to_vec())
            .collect();
        tasks.push(tokio::spawn(async move {
            for chunk in mine {
                let mut tx = pool.begin().await?;
                let mut q = QueryBuilder::<MySql>::new(
                    "INSERT INTO co2_emissions (device, date_time, emissions) ",
                );
                q.push_values(chunk.iter().enumerate(), |mut row, (i, s)| {
                    let t = chrono::DateTime::from_timestamp_millis(s.stamp_ms)
                        .unwrap_or_default()
                        .naive_utc();
                    row.push_bind(s.device.clone())
                        .push_bind(t)
                        .push_bind(400.0 + (i % 1600) as f64);
                });
                q.push(" ON DUPLICATE KEY UPDATE redeliveries = redeliveries + 1");
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("insert task panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(readings.len() as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_split() {
        assert_eq!(
            split_url("mysql://root@127.0.0.1:3306/co2").unwrap(),
            ("mysql://root@127.0.0.1:3306".into(), Some("co2".into()))
        );
        assert_eq!(
            split_url("mysql://root@127.0.0.1:3306").unwrap(),
            ("mysql://root@127.0.0.1:3306".into(), None)
        );
        assert!(split_url("postgres://x").is_err());
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("a_b%"), "a\\_b\\%");
    }
}
