//! A child process that is signalled like an operator would: SIGTERM, SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A spawned process whose output goes to a log file; killed when dropped.
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot spawn {command:?}"))?;
        Ok(Self { child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        self.wait(timeout).await
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.wait(Duration::from_secs(10)).await?;
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                bail!("process {} still running after {timeout:?}", self.pid());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("cannot send {signal} to {pid}"))
    }

    pub(crate) fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Another of the workspace's binaries, for a test of one crate that runs a
/// program of another: `$env_var` if set, else `name` in the target
/// directory of the running test (`<target>/<profile>/deps/it-*` ->
/// `<target>/<profile>/`), which `cargo build --workspace --bins` fills
/// (ops/test.sh does, and exports the variables).
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    let path = std::env::var_os(env_var).map(PathBuf::from).or_else(|| {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.join(name))
    });
    match path {
        Some(path) if path.is_file() => path,
        other => panic!(
            "{name} not found at {other:?}: run `cargo build --workspace --bins` or set {env_var}"
        ),
    }
}
