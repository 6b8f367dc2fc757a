//! The real `co2-publisher` binary as a device: its environment and
//! starting it with its log beside its queue.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{workspace_binary, ChildProcess};

/// The workspace's `co2-publisher` (`CO2_PUBLISHER_BIN`, else beside the
/// running test's target directory), for tests of another crate; the
/// publisher's own tests use `env!("CARGO_BIN_EXE_co2-publisher")`.
pub fn publisher_bin() -> PathBuf {
    workspace_binary("co2-publisher", "CO2_PUBLISHER_BIN")
}

/// Environment for a publisher that is `device`, with its queue at `queue`
/// (its status file beside it, [`status_path`]), a reading every 20 ms and
/// no wait for a synchronised clock. Where it publishes is the caller's.
pub fn device_env(device: &str, queue: &Path) -> Vec<(String, String)> {
    [
        ("CO2_PUBLISHER__DEVICE", device.to_owned()),
        ("CO2_PUBLISHER__INTERVAL_MS", "20".to_owned()),
        ("CO2_PUBLISHER__QUEUE__PATH", queue.display().to_string()),
        (
            "CO2_PUBLISHER__STATUS__PATH",
            status_path(queue).display().to_string(),
        ),
        ("CO2_PUBLISHER__CLOCK__REQUIRE_SYNC", "false".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Where [`device_env`] puts the status file of the queue at `queue`.
pub fn status_path(queue: &Path) -> PathBuf {
    queue.with_extension("status.json")
}

/// The queue of `device` under `dir`: `<dir>/<device>.sqlite3`.
pub fn queue_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.sqlite3"))
}

/// The log of `device` under `dir`: `<dir>/<device>.log`.
pub fn device_log(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.log"))
}

/// Runs `<bin> <args>` with `env` (applied in order over the test's own
/// environment), logging to [`device_log`] of `device` in `dir`.
pub fn spawn_device<A, K, V>(
    bin: &Path,
    dir: &Path,
    device: &str,
    args: impl IntoIterator<Item = A>,
    env: impl IntoIterator<Item = (K, V)>,
) -> anyhow::Result<ChildProcess>
where
    A: AsRef<OsStr>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut command = Command::new(bin);
    command.args(args).envs(env);
    ChildProcess::spawn(command, &device_log(dir, device))
}
