//! The real `co2-bridge` binary as a child process: its environment, started
//! with it, ready when `/readyz` says so, and its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::{http_get, unique, wait_until, workspace_binary, ChildProcess};

/// The workspace's `co2-bridge` (`CO2_BRIDGE_BIN`, else beside the running
/// test's target directory), for tests of another crate; the bridge's own
/// tests use `env!("CARGO_BIN_EXE_co2-bridge")`.
pub fn bridge_bin() -> PathBuf {
    workspace_binary("co2-bridge", "CO2_BRIDGE_BIN")
}

/// Environment for a bridge writing into `db_url`, subscribed to
/// `<prefix>/+/emissions` on the broker at 127.0.0.1:`mqtt_port` as
/// `<prefix>-bridge`, its operator listener on 127.0.0.1:`http_port`.
pub fn bridge_base_env(
    db_url: &str,
    mqtt_port: u16,
    prefix: &str,
    http_port: u16,
) -> Vec<(String, String)> {
    [
        ("CO2_BRIDGE__DATABASE__URL", db_url.to_owned()),
        ("CO2_BRIDGE__MQTT__PORT", mqtt_port.to_string()),
        ("CO2_BRIDGE__MQTT__CLIENT_ID", format!("{prefix}-bridge")),
        ("CO2_BRIDGE__MQTT__TOPICS", format!("{prefix}/+/emissions")),
        ("CO2_BRIDGE__HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// [`bridge_base_env`] as the bridge's own tests run it: database retries
/// and broker reconnects at most 1 s apart, and readings up to 300 s ahead
/// accepted (they are stamped in the past; lag is not under test).
pub fn bridge_env(
    db_url: &str,
    mqtt_port: u16,
    prefix: &str,
    http_port: u16,
) -> Vec<(String, String)> {
    let mut env = bridge_base_env(db_url, mqtt_port, prefix, http_port);
    env.extend(
        [
            ("CO2_BRIDGE__DATABASE__RETRY_MAX_MS", "1000"),
            ("CO2_BRIDGE__MQTT__RECONNECT_MAX_MS", "1000"),
            ("CO2_BRIDGE__WIRE__MAX_FUTURE_S", "300"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

/// A running `co2-bridge run`; killed when dropped.
pub struct BridgeProcess {
    /// The process, for signals and its exit status.
    pub process: ChildProcess,
    /// Its operator listener (`/readyz`, `/metrics`).
    pub http: SocketAddr,
    /// The device listener (ingest, images), when the environment turns it on.
    pub device: Option<SocketAddr>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// The port of the listener `key` names in `env`, if it is there.
fn port_of(env: &[(String, String)], key: &str) -> Option<u16> {
    env.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
}

impl BridgeProcess {
    /// Runs `<bin> run` with `env` (applied in order over the test's own
    /// environment), logging to `log`. `env` must set
    /// `CO2_BRIDGE__HTTP__LISTEN` to a port on 127.0.0.1: that is where
    /// readiness is asked.
    pub fn spawn(bin: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<Self> {
        let http_port = port_of(env, "CO2_BRIDGE__HTTP__LISTEN")
            .context("the environment sets no CO2_BRIDGE__HTTP__LISTEN port")?;
        let device = port_of(env, "CO2_BRIDGE__HTTP__DEVICE_LISTEN")
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let mut command = Command::new(bin);
        command.arg("run");
        for (k, v) in env {
            command.env(k, v);
        }
        let process = ChildProcess::spawn(command, log)?;
        Ok(Self {
            process,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            device,
            log: log.to_owned(),
        })
    }

    /// As tests run it: [`BridgeProcess::spawn`] logging at
    /// `info,co2_bridge=debug` (unless `env` says otherwise) to a fresh file
    /// in the temporary directory named after `log_name`.
    pub fn spawn_logged(
        bin: &Path,
        env: &[(String, String)],
        log_name: &str,
    ) -> anyhow::Result<Self> {
        let mut full = vec![("RUST_LOG".to_owned(), "info,co2_bridge=debug".to_owned())];
        full.extend_from_slice(env);
        let log = std::env::temp_dir().join(format!("{}.log", unique(log_name)));
        Self::spawn(bin, &full, &log)
    }

    /// True once `/readyz` answers 200, false if it did not within `timeout`.
    pub async fn ready_within(&self, timeout: Duration) -> bool {
        let http = self.http;
        wait_until(timeout, || async move {
            matches!(http_get(http, "/readyz").await, Ok((200, _)))
        })
        .await
    }

    /// Waits up to 30 s for `/readyz` to answer 200; panics with the log if
    /// it does not (for tests).
    pub async fn wait_ready(&self) {
        let ready = self.ready_within(Duration::from_secs(30)).await;
        assert!(ready, "bridge binary not ready; log: {}", self.log_text());
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines it logged.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(n)..)
            .unwrap_or_default()
            .join("\n")
    }
}
