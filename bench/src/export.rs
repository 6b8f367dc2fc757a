//! `co2-bench export`: how fast `co2-bridge export` writes stored readings
//! to a file, CSV and NDJSON, on the synthetic dataset of the dashboards
//! benchmark loaded in bulk into a throwaway database (dropped afterwards,
//! as is the file).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::bridge::{default_bridge_bin, proc_stats};
use crate::dashboards::scratch::{self, Scratch};
use crate::dashboards::synthetic;

/// `export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The database server and the bridge binary.
    #[command(flatten)]
    pub server: crate::cli::Scratchpad,
    /// CO2 readings to load and export, e.g. 2M.
    #[arg(long, default_value = "2M", value_parser = crate::cli::parse_count)]
    pub readings: u64,
    /// Devices they come from (a reading a minute each).
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// Timed runs per format; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Where the export files go (deleted after each run).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
    /// Keep the database instead of dropping it.
    #[arg(long)]
    pub keep: bool,
}

/// One format's best run.
#[derive(Debug, Serialize)]
pub struct ExportRun {
    /// `csv` or `ndjson`.
    pub format: String,
    /// Rows written.
    pub rows: u64,
    /// Wall seconds of the export process.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Peak resident set of the export process, KiB.
    pub peak_rss_kib: u64,
    /// CPU seconds of the export process.
    pub cpu_s: f64,
}

/// Loads the dataset, exports it in each format `repeat` times, prints the best.
pub async fn run(a: &ExportArgs) -> anyhow::Result<Vec<ExportRun>> {
    let bin = a
        .server
        .bridge_bin
        .clone()
        .unwrap_or_else(default_bridge_bin);
    if !bin.exists() {
        bail!(
            "{} not found: build co2-bridge or pass --bridge-bin",
            bin.display()
        );
    }
    let db = Scratch::create(&a.server.db_url).await?;
    let result = measure(a, &bin, &db).await;
    if a.keep {
        eprintln!("co2-bench export: kept database {}", db.name);
    } else {
        db.drop_now().await?;
    }
    let runs = result?;
    println!("| format | rows | seconds | rows/s | file MB | peak RSS MiB | CPU s |");
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} |",
            r.format,
            r.rows,
            r.seconds,
            r.rows_per_s,
            r.bytes as f64 / 1e6,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu_s
        );
    }
    Ok(runs)
}

async fn measure(
    a: &ExportArgs,
    bin: &std::path::Path,
    db: &Scratch,
) -> anyhow::Result<Vec<ExportRun>> {
    eprintln!(
        "co2-bench export: {}",
        scratch::migrate(db, Some(bin)).await?
    );
    let per_device = (a.readings / a.devices.max(1)).max(1);
    let now = chrono::Utc::now().timestamp();
    let shape = synthetic::Shape {
        devices: a.devices.max(1),
        interval_s: 60,
        per_device,
        end: now - now.rem_euclid(60),
    };
    let mut conn = db.connect().await?;
    synthetic::load(&mut conn, &shape).await?;
    scratch::analyze(&mut conn).await?;
    let rows = shape.readings();
    let mut runs = Vec::new();
    for format in ["csv", "ndjson"] {
        let mut best: Option<ExportRun> = None;
        for _ in 0..a.repeat.max(1) {
            let run = once(bin, &db.url(), format, &a.dir, rows)?;
            eprintln!(
                "co2-bench export: {format}: {} rows in {:.2} s ({:.0} rows/s)",
                run.rows, run.seconds, run.rows_per_s
            );
            if best.as_ref().is_none_or(|b| run.seconds < b.seconds) {
                best = Some(run);
            }
        }
        runs.extend(best);
    }
    Ok(runs)
}

/// One `co2-bridge export --format <format> -o <file>` of the whole table.
fn once(
    bin: &std::path::Path,
    url: &str,
    format: &str,
    dir: &std::path::Path,
    rows: u64,
) -> anyhow::Result<ExportRun> {
    let file = dir.join(format!(
        "co2bench-export-{:08x}.{format}",
        rand::random::<u32>()
    ));
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["export", "--format", format, "-o"])
        .arg(&file)
        .env("CO2_BRIDGE__DATABASE__URL", url)
        .env_remove("CO2_BRIDGE_CONFIG")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    // VmHWM only grows: the last sample before the exit is the peak.
    let (mut peak, mut cpu) = (0, 0.0);
    let status = loop {
        if let Ok(stats) = proc_stats(child.id()) {
            peak = peak.max(stats.vm_hwm_kib);
            cpu = stats.cpu_s;
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    if !status.success() {
        bail!("co2-bridge export --format {format} failed: {status}");
    }
    Ok(ExportRun {
        format: format.to_owned(),
        rows,
        seconds,
        rows_per_s: rows as f64 / seconds.max(1e-9),
        bytes,
        peak_rss_kib: peak,
        cpu_s: cpu,
    })
}
