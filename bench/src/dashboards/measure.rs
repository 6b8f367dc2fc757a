//! Runs each panel's SQL as Grafana sends it, over the text protocol as
//! Grafana's driver does, with a server-side time limit per statement.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::mysql::MySqlDatabaseError;
use sqlx::{Executor, MySqlConnection};

/// MariaDB's "max_statement_time exceeded" and MySQL's "maximum statement
/// execution time exceeded".
const TIMEOUT_ERRORS: [u16; 2] = [1969, 3024];

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Milliseconds until the last row was read, and the rows.
    Done {
        /// Wall time in ms.
        ms: f64,
        /// Rows returned.
        rows: u64,
    },
    /// Stopped by the time limit.
    TimedOut,
    /// The database refused it.
    Failed(String),
}

/// Runs statements on one connection with a time limit.
pub struct Runner {
    conn: MySqlConnection,
    timeout: Duration,
    mariadb: bool,
}

impl Runner {
    /// On `conn`, each statement limited to `timeout`.
    pub async fn new(mut conn: MySqlConnection, timeout: Duration) -> anyhow::Result<Self> {
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut conn)
            .await?;
        let mariadb = version.contains("MariaDB");
        if !mariadb {
            // MySQL limits SELECTs per session instead of per statement.
            conn.execute(
                format!("SET SESSION max_execution_time = {}", timeout.as_millis()).as_str(),
            )
            .await?;
        }
        Ok(Self {
            conn,
            timeout,
            mariadb,
        })
    }

    /// Runs `sql` once, reading every row.
    pub async fn run(&mut self, sql: &str) -> Outcome {
        let sql = if self.mariadb {
            format!(
                "SET STATEMENT max_statement_time = {} FOR {sql}",
                self.timeout.as_secs_f64()
            )
        } else {
            sql.to_owned()
        };
        // The server stops the statement; this only guards against a server that does not.
        let guard = self.timeout + Duration::from_secs(30);
        let conn = &mut self.conn;
        let started = Instant::now();
        // A `&str` with no arguments goes as COM_QUERY (text protocol), as Grafana's.
        let work = async {
            let mut rows = 0u64;
            let mut stream = conn.fetch(sql.as_str());
            while stream.try_next().await?.is_some() {
                rows += 1;
            }
            Ok::<u64, sqlx::Error>(rows)
        };
        match tokio::time::timeout(guard, work).await {
            Ok(Ok(rows)) => Outcome::Done {
                ms: started.elapsed().as_secs_f64() * 1000.0,
                rows,
            },
            Ok(Err(e)) => {
                let number = e
                    .as_database_error()
                    .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
                    .map(MySqlDatabaseError::number);
                if number.is_some_and(|n| TIMEOUT_ERRORS.contains(&n)) {
                    Outcome::TimedOut
                } else {
                    Outcome::Failed(e.to_string())
                }
            }
            Err(_) => Outcome::TimedOut,
        }
    }
}

/// One panel over one range: the first run and the best of the repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// The first run (caches as the previous panels left them).
    pub first: Outcome,
    /// Each repeat, in ms.
    pub repeats_ms: Vec<f64>,
    /// The fastest repeat, when every repeat finished.
    pub best_ms: Option<f64>,
    /// Rows the query returned.
    pub rows: u64,
    /// A repeat timed out.
    pub timed_out: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The first run, then `repeat` more unless it timed out or failed.
pub async fn time(runner: &mut Runner, sql: &str, repeat: usize) -> Timing {
    let first = runner.run(sql).await;
    let mut t = Timing {
        first: first.clone(),
        repeats_ms: Vec::new(),
        best_ms: None,
        rows: 0,
        timed_out: false,
        error: None,
    };
    match first {
        Outcome::Done { rows, .. } => t.rows = rows,
        Outcome::TimedOut => {
            t.timed_out = true;
            return t;
        }
        Outcome::Failed(e) => {
            t.error = Some(e);
            return t;
        }
    }
    for _ in 0..repeat {
        match runner.run(sql).await {
            Outcome::Done { ms, .. } => t.repeats_ms.push(ms),
            Outcome::TimedOut => {
                t.timed_out = true;
                return t;
            }
            Outcome::Failed(e) => {
                t.error = Some(e);
                return t;
            }
        }
    }
    t.best_ms = t.repeats_ms.iter().copied().reduce(f64::min);
    if repeat == 0 {
        if let Outcome::Done { ms, .. } = t.first {
            t.best_ms = Some(ms);
        }
    }
    t
}
