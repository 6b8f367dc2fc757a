//! A throwaway database on the local MariaDB/MySQL.

use anyhow::Context;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::Executor;

use crate::unique;

/// Where the test server is; override with `CO2_TEST_MYSQL_URL` (no database part).
fn server_url() -> String {
    std::env::var("CO2_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A uniquely named, empty database, dropped when this value is (kept if the
/// test panicked, so its rows can be inspected).
pub struct Database {
    name: String,
    pool: MySqlPool,
}

impl Database {
    /// Creates `co2t_<prefix>_<pid>_<random>`.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let name = unique(&format!("co2t_{prefix}"));
        let admin = MySqlPool::connect(&server_url()).await.with_context(|| {
            format!("cannot reach the test database server at {}", server_url())
        })?;
        admin
            .execute(format!("CREATE DATABASE `{name}`").as_str())
            .await?;
        admin.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .connect(&format!("{}/{name}", server_url()))
            .await?;
        Ok(Self { name, pool })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the bridge (`database.url`).
    pub fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }

    /// A URL through another host:port (e.g. a [`crate::TcpProxy`]).
    pub fn url_via(&self, port: u16) -> String {
        let server = server_url();
        let credentials = server
            .trim_start_matches("mysql://")
            .split('@')
            .next()
            .unwrap_or("root");
        format!("mysql://{credentials}@127.0.0.1:{port}/{}", self.name)
    }

    /// A pool on it, for assertions.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// `SELECT COUNT(*) FROM <table>`.
    pub async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{table}`"))
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping database {} for inspection", self.name);
            return;
        }
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a private one on a thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = MySqlPool::connect(&server_url()).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}
