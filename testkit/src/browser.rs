//! Headless Chromium (Debian's `chromium`, installed by ops/services.sh),
//! started as the machine docs describe: no sandbox (tests run as root), no
//! GPU, no network of its own besides the page, a fresh profile each time.

use std::path::Path;

use anyhow::{bail, Context};

/// Runs `chromium --headless` with `args` (e.g. `--dump-dom <url>`,
/// `--screenshot=<png> <url>`) and a throwaway profile under `work_dir`;
/// returns its stdout.
pub async fn chromium(work_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let profile = work_dir.join(crate::unique("profile"));
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .await
        .context("cannot start chromium (ops/services.sh installs Debian's chromium)")?;
    let _ = std::fs::remove_dir_all(&profile);
    if !out.status.success() {
        bail!(
            "chromium failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
