//! The real `co2-bridge` binary as a child process, and what the kernel says
//! it used (/proc/<pid>/status VmHWM, /proc/<pid>/stat utime + stime).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use co2_testkit::free_port;
use serde::Serialize;

/// How to run a bridge.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// The binary.
    pub bin: PathBuf,
    /// `database.url`.
    pub db_url: String,
    /// Broker port on 127.0.0.1.
    pub mqtt_port: u16,
    /// `mqtt.client_id`.
    pub client_id: String,
    /// `mqtt.topics` (comma separated).
    pub topics: String,
    /// Broker user and password.
    pub credentials: Option<(String, String)>,
    /// Extra `CO2_BRIDGE__...` variables.
    pub extra_env: Vec<(String, String)>,
    /// Where its log goes.
    pub log: PathBuf,
}

/// A running bridge.
pub struct BridgeProcess {
    bridge: co2_testkit::BridgeProcess,
    /// Its `/metrics` address.
    pub http: SocketAddr,
}

/// CPU and memory of a process, read from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcStats {
    /// Peak resident set (VmHWM), KiB.
    pub vm_hwm_kib: u64,
    /// User + system CPU, seconds.
    pub cpu_s: f64,
}

impl BridgeProcess {
    /// Spawns the bridge and waits until `/readyz` answers 200.
    pub async fn start(spec: &BridgeSpec) -> anyhow::Result<Self> {
        if !spec.bin.exists() {
            bail!(
                "no bridge binary at {} (cargo build --release -p co2-bridge, or pass --bridge-bin)",
                spec.bin.display()
            );
        }
        let http_port = free_port()?;
        let mut env: Vec<(String, String)> = [
            ("RUST_LOG", "info".to_owned()),
            ("CO2_BRIDGE__DATABASE__URL", spec.db_url.clone()),
            ("CO2_BRIDGE__MQTT__HOST", "127.0.0.1".to_owned()),
            ("CO2_BRIDGE__MQTT__PORT", spec.mqtt_port.to_string()),
            ("CO2_BRIDGE__MQTT__CLIENT_ID", spec.client_id.clone()),
            ("CO2_BRIDGE__MQTT__TOPICS", spec.topics.clone()),
            ("CO2_BRIDGE__HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        if let Some((user, password)) = &spec.credentials {
            env.push(("CO2_BRIDGE__MQTT__USERNAME".into(), user.clone()));
            env.push(("CO2_BRIDGE__MQTT__PASSWORD".into(), password.clone()));
        }
        env.extend(spec.extra_env.iter().cloned());
        let bridge = co2_testkit::BridgeProcess::spawn(&spec.bin, &env, &spec.log)?;
        let me = Self {
            http: bridge.http,
            bridge,
        };
        if !me.bridge.ready_within(Duration::from_secs(60)).await {
            bail!(
                "bridge not ready within 60 s; log {}:\n{}",
                me.bridge.log.display(),
                me.log_tail()
            );
        }
        Ok(me)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.bridge.process.pid()
    }

    /// CPU and peak memory so far.
    pub fn stats(&self) -> anyhow::Result<ProcStats> {
        proc_stats(self.pid())
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.bridge.log_tail(20)
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = self
            .bridge
            .process
            .terminate(Duration::from_secs(30))
            .await?;
        if !status.success() {
            bail!("bridge exited with {status}; log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// SIGKILL.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.bridge.process.kill().await
    }
}

/// Reads VmHWM and utime + stime of `pid`.
pub fn proc_stats(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc(&status, &stat, clock_ticks())
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// Parses /proc/<pid>/status and /proc/<pid>/stat text.
pub fn parse_proc(status: &str, stat: &str, ticks_per_s: f64) -> anyhow::Result<ProcStats> {
    let vm_hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/<pid>/status")?;
    // Fields after the command name (which may contain spaces) in parentheses;
    // utime and stime are fields 14 and 15, i.e. 12th and 13th after ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/<pid>/stat")
    };
    let cpu_s = (ticks(11)? + ticks(12)?) as f64 / ticks_per_s;
    Ok(ProcStats { vm_hwm_kib, cpu_s })
}

/// The bridge binary: `CO2_BRIDGE_BIN`, else `co2-bridge` next to this executable.
pub fn default_bridge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CO2_BRIDGE_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("co2-bridge")))
        .unwrap_or_else(|| PathBuf::from("target/release/co2-bridge"))
}

/// `<bin> --version`, or "unknown".
pub fn bridge_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsing() {
        let status = "Name:\tco2-bridge\nVmPeak:\t  99 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n";
        let stat = "4242 (co2 bridge) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 5";
        let s = parse_proc(status, stat, 100.0).unwrap();
        assert_eq!(s.vm_hwm_kib, 12345);
        assert!((s.cpu_s - 3.0).abs() < 1e-9);
        assert!(parse_proc("", stat, 100.0).is_err());
        assert!(parse_proc(status, "garbage", 100.0).is_err());
    }

    #[test]
    fn own_process_stats_are_readable() {
        let s = proc_stats(std::process::id()).unwrap();
        assert!(s.vm_hwm_kib > 0);
    }
}
