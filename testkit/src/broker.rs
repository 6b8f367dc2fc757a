//! A private Mosquitto, with persistence, that a test may stop and restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::ChildProcess;
use crate::{free_port, port_open, unique, wait_until};

/// A test-owned `mosquitto` on 127.0.0.1 with its own config and data directory.
pub struct Broker {
    port: u16,
    dir: PathBuf,
    process: Option<ChildProcess>,
}

impl Broker {
    /// Starts a broker with anonymous access, persistence and generous queues,
    /// plus any `extra` config lines.
    pub async fn start(extra: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(unique("co2-broker"));
        std::fs::create_dir_all(&dir)?;
        // Started as root, mosquitto switches to the `mosquitto` user, which could
        // not write this directory (log, persistence); stay who we are instead.
        let user = if nix::unistd::geteuid().is_root() {
            "user root\n"
        } else {
            ""
        };
        let config = format!(
            "{user}listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             max_queued_messages 1000000\n\
             max_queued_bytes 0\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\n{extra}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), config)?;
        let mut broker = Self {
            port,
            dir,
            process: None,
        };
        broker.resume().await?;
        Ok(broker)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data and log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops it gracefully (SIGTERM: it saves its persistence file first).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10)).await?;
        }
        Ok(())
    }

    /// Starts it again on the same port with the same data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("mosquitto.conf");
        let mut command = std::process::Command::new("mosquitto");
        command.arg("-c").arg(&config);
        let process = ChildProcess::spawn(command, &self.dir.join("stdout.log"))
            .context("cannot start mosquitto (is the mosquitto package installed?)")?;
        self.process = Some(process);
        let port = self.port;
        if !wait_until(Duration::from_secs(10), || port_open(port)).await {
            bail!(
                "mosquitto did not listen on {port} within 10 s; see {}",
                self.dir.join("mosquitto.log").display()
            );
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill_now();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
