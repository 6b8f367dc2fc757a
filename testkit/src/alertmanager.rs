//! A private Alertmanager (Debian's `prometheus-alertmanager`) on a free
//! loopback port, its gossip off, with one receiver that sends nowhere: for
//! tests that read what fires, or post alerts to it themselves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::ChildProcess;
use crate::{free_port, http_request, port_open, unique, wait_until};

/// A test-owned Alertmanager with its own config and data directory.
pub struct Alertmanager {
    port: u16,
    dir: PathBuf,
    _process: ChildProcess,
}

impl Alertmanager {
    /// Starts one whose route sends everything to a receiver with no target.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(unique("co2-alertmanager"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("alertmanager.yml"),
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )?;
        let mut command = std::process::Command::new("prometheus-alertmanager");
        command
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Its gossip listens on 0.0.0.0:9094 unless told not to.
            .arg("--cluster.listen-address=");
        let process = ChildProcess::spawn(command, &dir.join("alertmanager.log")).context(
            "cannot start prometheus-alertmanager (ops/services.sh installs the package)",
        )?;
        if !wait_until(Duration::from_secs(20), || port_open(port)).await {
            bail!(
                "alertmanager did not listen on {port} within 20 s; see {}",
                dir.join("alertmanager.log").display()
            );
        }
        Ok(Self {
            port,
            dir,
            _process: process,
        })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Posts one firing alert with these labels and annotations, as Prometheus would.
    pub async fn fire(
        &self,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
        };
        let body = serde_json::json!([{ "labels": map(labels), "annotations": map(annotations) }]);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let (status, answer) = http_request(
            addr,
            "POST",
            "/api/v2/alerts",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await?;
        if status != 200 {
            bail!(
                "alertmanager refused the alert: HTTP {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
