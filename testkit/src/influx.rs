//! A private InfluxDB 1.x (`influxd` of Debian's `influxdb` package) that a
//! test may stop and restart, and the queries to read back what it stores.
//!
//! Never the system service the package may start on :8086 (bound to every
//! interface): each one has its own config and data directory, with its HTTP
//! API and its RPC (backup) port on free loopback ports, usage reporting off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::process::ChildProcess;
use crate::{free_port, port_open, unique, wait_until};

/// A test-owned `influxd` on 127.0.0.1.
pub struct Influx {
    port: u16,
    dir: PathBuf,
    process: Option<ChildProcess>,
    http: reqwest::Client,
}

/// One series of a query result.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// The measurement.
    pub name: String,
    /// The GROUP BY tags, if any.
    pub tags: Vec<(String, String)>,
    /// Column names (`time` first).
    pub columns: Vec<String>,
    /// Rows, as JSON values.
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// The values of column `name`, row by row (Null where missing).
    pub fn column(&self, name: &str) -> Vec<Value> {
        let Some(i) = self.columns.iter().position(|c| c == name) else {
            return vec![Value::Null; self.values.len()];
        };
        self.values
            .iter()
            .map(|row| row.get(i).cloned().unwrap_or(Value::Null))
            .collect()
    }
}

impl Influx {
    /// Starts a fresh server and waits until `/ping` answers.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let rpc = free_port()?;
        let dir = std::env::temp_dir().join(unique("co2-influx"));
        std::fs::create_dir_all(&dir)?;
        // Everything not set here keeps influxd's default, under which the
        // graphite, collectd, opentsdb and UDP listeners are off.
        let config = format!(
            "reporting-enabled = false\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{dir}/meta\"\n  logging-enabled = false\n\
             [data]\n  dir = \"{dir}/data\"\n  wal-dir = \"{dir}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("influxdb.conf"), config)?;
        // reqwest is built with rustls but without a provider (the bridge hands
        // its own in); the test client uses the process default, so install it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut influx = Self {
            port,
            dir,
            process: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        influx.resume().await?;
        Ok(influx)
    }

    /// Its HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its base URL (`sinks.<name>.url`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its data and log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops it gracefully (SIGTERM).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// Starts it again on the same port with the same data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let mut command = std::process::Command::new("influxd");
        command
            .arg("-config")
            .arg(self.dir.join("influxdb.conf"))
            .env("INFLUXDB_REPORTING_DISABLED", "true");
        let process = ChildProcess::spawn(command, &self.dir.join("influxd.log"))
            .context("cannot start influxd (is the influxdb package installed? ops/services.sh)")?;
        self.process = Some(process);
        let port = self.port;
        let ping = format!("{}/ping", self.url());
        let http = self.http.clone();
        let up = wait_until(Duration::from_secs(30), || {
            let (ping, http) = (ping.clone(), http.clone());
            async move {
                port_open(port).await
                    && matches!(http.get(&ping).send().await, Ok(r) if r.status().is_success())
            }
        })
        .await;
        if !up {
            bail!(
                "influxd did not answer on 127.0.0.1:{port} within 30 s; see {}",
                self.dir.join("influxd.log").display()
            );
        }
        Ok(())
    }

    /// Creates a uniquely named database `co2t_<prefix>_...` and returns its name.
    pub async fn create_database(&self, prefix: &str) -> anyhow::Result<String> {
        let name = unique(&format!("co2t_{prefix}"));
        self.execute(&format!("CREATE DATABASE \"{name}\"")).await?;
        Ok(name)
    }

    /// Runs a statement that changes something.
    pub async fn execute(&self, statement: &str) -> anyhow::Result<()> {
        let response: Value = self
            .http
            .post(format!("{}/query", self.url()))
            .query(&[("q", statement)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some(error) = response.pointer("/results/0/error") {
            bail!("{statement}: {error}");
        }
        Ok(())
    }

    /// Writes line protocol (`precision` as `/write` takes it); returns the status and body.
    pub async fn write(
        &self,
        database: &str,
        body: impl Into<reqwest::Body>,
        precision: &str,
    ) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .post(format!("{}/write", self.url()))
            .query(&[("db", database), ("precision", precision)])
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Runs an InfluxQL query with times in epoch milliseconds; returns every series.
    pub async fn query(&self, database: &str, q: &str) -> anyhow::Result<Vec<Series>> {
        let response: Value = self
            .http
            .get(format!("{}/query", self.url()))
            .query(&[("db", database), ("q", q), ("epoch", "ms")])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some(error) = response.pointer("/results/0/error") {
            bail!("{q}: {error}");
        }
        let series = response
            .pointer("/results/0/series")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(series
            .into_iter()
            .map(|s| Series {
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                tags: s["tags"]
                    .as_object()
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                columns: s["columns"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
                values: s["values"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|r| r.as_array().cloned().unwrap_or_default())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The single number a query such as `SELECT count(x) FROM m` returns (0 without rows).
    pub async fn scalar(&self, database: &str, q: &str) -> anyhow::Result<f64> {
        let series = self.query(database, q).await?;
        Ok(series
            .first()
            .and_then(|s| s.values.first())
            .and_then(|row| row.get(1))
            .and_then(Value::as_f64)
            .unwrap_or(0.0))
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill_now();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
