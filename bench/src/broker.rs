//! Test-owned Mosquitto brokers on free loopback ports: stock (Mosquitto's
//! default limits) or provisioned (this repository's
//! `provisioning/mosquitto/*.conf.in`, rendered as `ops/install-server.sh` does).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use co2_testkit::{free_port, port_open, wait_until, ChildProcess};

/// Which configuration a test broker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// Only a loopback listener and anonymous access: every limit is Mosquitto's
    /// default (max_inflight_messages 20, max_queued_messages 1000, no persistence).
    Stock,
    /// The provisioned config: users, ACL, persistence, the sized queue.
    Provisioned,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Stock => "stock",
            BrokerKind::Provisioned => "provisioned",
        })
    }
}

/// The broker user of the bridge (and of the other consumers) on a provisioned broker.
pub const CONSUMER_USER: &str = "co2-bridge";
/// Password of every user on a provisioned test broker.
pub const PASSWORD: &str = "bench-password";

/// A running test broker; killed and its directory removed when dropped.
pub struct TestBroker {
    /// Its configuration.
    pub kind: BrokerKind,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    process: Option<ChildProcess>,
}

impl TestBroker {
    /// Starts a broker of `kind`. A provisioned one gets a user per device id in
    /// `devices` plus [`CONSUMER_USER`], all with [`PASSWORD`]; `repo` is the
    /// repository root (for the templates).
    pub async fn start(kind: BrokerKind, repo: &Path, devices: &[String]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "co2-bench-broker-{kind}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        // As root, mosquitto would switch to the `mosquitto` user, which cannot
        // write this directory.
        let user = if nix::unistd::geteuid().is_root() {
            "user root\n"
        } else {
            ""
        };
        let head = format!(
            "{user}log_dest file {dir}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            dir = dir.display()
        );
        let config = match kind {
            BrokerKind::Stock => {
                format!("{head}listener {port} 127.0.0.1\nallow_anonymous true\n")
            }
            BrokerKind::Provisioned => {
                let conf_d = dir.join("conf.d");
                std::fs::create_dir_all(&conf_d)?;
                let passwd = dir.join("passwd");
                let acl = dir.join("acl");
                // Every client of the bench uses the bridge's listener, where
                // client ids are kept (several bridges, or one on several
                // connections, need theirs); the device listener, where the
                // id becomes the user name, is rendered on a spare port.
                let port_s = port.to_string();
                let device_port = free_port()?.to_string();
                let rendered = render(
                    &read(repo, "provisioning/mosquitto/co2-telemetry.conf.in")?,
                    &[
                        ("PASSWORD_FILE", &passwd.display().to_string()),
                        ("ACL_FILE", &acl.display().to_string()),
                        ("BRIDGE_PORT", &port_s),
                        ("BRIDGE_BIND", "127.0.0.1"),
                        ("MQTT_PORT", &device_port),
                        ("MQTT_BIND", "127.0.0.1"),
                    ],
                )?;
                std::fs::write(conf_d.join("10-co2-telemetry.conf"), rendered)?;
                std::fs::write(&acl, bridge_acl()?)?;
                let mut plain = format!("{CONSUMER_USER}:{PASSWORD}\n");
                for d in devices {
                    plain.push_str(&format!("{d}:{PASSWORD}\n"));
                }
                std::fs::write(&passwd, plain)?;
                let status = Command::new("mosquitto_passwd")
                    .arg("-U")
                    .arg(&passwd)
                    .status()
                    .context("cannot run mosquitto_passwd (package mosquitto)")?;
                if !status.success() {
                    bail!("mosquitto_passwd -U failed: {status}");
                }
                // A main file like Debian's: persistence location, log, and the drop-ins.
                format!(
                    "{head}persistence_location {dir}/\ninclude_dir {conf_d}\n",
                    dir = dir.display(),
                    conf_d = conf_d.display()
                )
            }
        };
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config)?;
        let mut broker = Self {
            kind,
            port,
            dir,
            config: config_path,
            process: None,
        };
        broker.resume().await?;
        Ok(broker)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Credentials a consumer (bridge, null subscriber, naive) needs, if any.
    pub fn consumer_credentials(&self) -> Option<(String, String)> {
        (self.kind == BrokerKind::Provisioned).then(|| (CONSUMER_USER.into(), PASSWORD.into()))
    }

    /// The password devices use, if the broker wants one.
    pub fn device_password(&self) -> Option<String> {
        (self.kind == BrokerKind::Provisioned).then(|| PASSWORD.into())
    }

    /// The mosquitto process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// Starts (again) with the same config and data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("mosquitto");
        command.arg("-c").arg(&self.config);
        let process = ChildProcess::spawn(command, &self.dir.join("stdout.log"))
            .context("cannot start mosquitto")?;
        self.process = Some(process);
        let port = self.port;
        if !wait_until(Duration::from_secs(10), || port_open(port)).await {
            let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            bail!(
                "mosquitto ({}) did not listen on {port} within 10 s:\n{log}",
                self.kind
            );
        }
        Ok(())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        // ChildProcess kills on drop.
        self.process.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ACL the installer gives the broker: `co2-bridge acl` for the bridge's
/// default routes, with [`CONSUMER_USER`] as its user.
fn bridge_acl() -> anyhow::Result<String> {
    let bin = crate::bridge::default_bridge_bin();
    let out = Command::new(&bin)
        .arg("acl")
        .env_clear()
        .env("CO2_BRIDGE__MQTT__USERNAME", CONSUMER_USER)
        .output()
        .with_context(|| format!("cannot run {} acl (set CO2_BRIDGE_BIN)", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} acl failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read(repo: &Path, rel: &str) -> anyhow::Result<String> {
    let path = repo.join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Replaces every `@KEY@`; fails if a placeholder is left (as `ops/lib/common.sh` does).
pub fn render(template: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = template.to_owned();
    for (k, v) in values {
        out = out.replace(&format!("@{k}@"), v);
    }
    let left: Vec<&str> = out
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    if !left.is_empty() {
        bail!("unreplaced placeholders: {left:?}");
    }
    Ok(out)
}

/// `mosquitto -h`'s first line, e.g. "mosquitto version 2.0.11".
pub fn mosquitto_version() -> String {
    Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_and_refuses_leftovers() {
        assert_eq!(render("a @X@ b", &[("X", "1")]).unwrap(), "a 1 b");
        assert!(render("a @X@ @Y@", &[("X", "1")]).is_err());
        assert_eq!(render("mail me@home", &[]).unwrap(), "mail me@home");
    }
}
