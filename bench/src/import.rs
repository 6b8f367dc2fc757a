//! `co2-bench import`: how fast `co2-bridge import` stores a CSV file of
//! readings (through the CO2 route and the MySQL sink, rollups on, as the
//! bridge writes live ones), against MariaDB's own multi-row `INSERT`
//! ceiling for the same rows (the same table, no rollups; [`db::insert_ceiling`])
//! measured in the same run. Two throwaway databases, dropped afterwards,
//! as is the file.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::account::Sent;
use crate::bridge::default_bridge_bin;
use crate::dashboards::scratch::{self, Scratch};
use crate::db;

/// `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The database server and the bridge binary.
    #[command(flatten)]
    pub server: crate::cli::Scratchpad,
    /// Readings in the file, e.g. 1M.
    #[arg(long, default_value = "1M", value_parser = crate::cli::parse_count)]
    pub readings: u64,
    /// Devices they come from.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// Seconds between two readings of a device (the publisher's default
    /// interval is 10 s; 60 puts one reading in each 1-minute rollup bucket,
    /// the rollups' worst case).
    #[arg(long, default_value_t = 10)]
    pub interval_s: u64,
    /// Rows per write, for the import (its --chunk-rows) and the INSERT ceiling alike.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Where the CSV file goes (deleted afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub dir: PathBuf,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct ImportRun {
    /// Rows in the file and stored.
    pub rows: u64,
    /// Bytes of the CSV file.
    pub bytes: u64,
    /// Wall seconds of `co2-bridge import`.
    pub import_s: f64,
    /// Its rows per second.
    pub import_rows_per_s: f64,
    /// MariaDB's multi-row INSERT ceiling for the same rows, rows per second.
    pub insert_rows_per_s: f64,
    /// import / ceiling.
    pub ratio: f64,
}

/// Writes the file, imports it, measures the ceiling, prints both.
pub async fn run(a: &ImportArgs) -> anyhow::Result<ImportRun> {
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
    let sent = readings(a.readings, a.devices.max(1), a.interval_s.max(1));
    let file = a
        .dir
        .join(format!("co2bench-import-{:08x}.csv", rand::random::<u32>()));
    let result = measure(a, &bin, &sent, &file).await;
    let _ = std::fs::remove_file(&file);
    let run = result?;
    println!("| rows | interval s | file MB | import s | import rows/s | INSERT ceiling rows/s | ratio |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
        run.rows,
        a.interval_s,
        run.bytes as f64 / 1e6,
        run.import_s,
        run.import_rows_per_s,
        run.insert_rows_per_s,
        run.ratio
    );
    Ok(run)
}

/// `n` readings of `devices` devices, `interval` seconds apart per device
/// (devices a few seconds apart from each other), ending a minute ago.
fn readings(n: u64, devices: u64, interval: u64) -> Vec<Sent> {
    let now = chrono::Utc::now().timestamp();
    let end = now - now.rem_euclid(60) - 60;
    let per_device = n.div_ceil(devices);
    (0..n)
        .map(|i| {
            let back = (per_device - 1 - i / devices) * interval + (i % devices) * 7 % interval;
            Sent {
                device: format!("bench-{:03}", i % devices),
                stamp_ms: (end - back as i64) * 1000,
            }
        })
        .collect()
}

async fn measure(
    a: &ImportArgs,
    bin: &std::path::Path,
    sent: &[Sent],
    file: &std::path::Path,
) -> anyhow::Result<ImportRun> {
    write_csv(file, sent)?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);

    let import_db = Scratch::create(&a.server.db_url).await?;
    let imported = import(a, bin, &import_db, file, sent.len() as u64).await;
    import_db.drop_now().await?;
    let import_s = imported?;

    let insert_db = Scratch::create(&a.server.db_url).await?;
    let ceiling = async {
        scratch::migrate(&insert_db, Some(bin)).await?;
        db::insert_ceiling(&insert_db.url(), sent, a.batch, 1).await
    }
    .await;
    insert_db.drop_now().await?;
    let insert_rows_per_s = ceiling?;

    let rows = sent.len() as u64;
    let import_rows_per_s = rows as f64 / import_s.max(1e-9);
    Ok(ImportRun {
        rows,
        bytes,
        import_s,
        import_rows_per_s,
        insert_rows_per_s,
        ratio: import_rows_per_s / insert_rows_per_s.max(1e-9),
    })
}

/// The readings as the export writes `co2_emissions`' main columns.
fn write_csv(path: &std::path::Path, sent: &[Sent]) -> anyhow::Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
    out.write_all(b"device,date_time,emissions\r\n")?;
    for (i, s) in sent.iter().enumerate() {
        let t = chrono::DateTime::from_timestamp_millis(s.stamp_ms).unwrap_or_default();
        write!(
            out,
            "{},{},{}\r\n",
            s.device,
            t.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            400 + i % 1600
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `co2-bridge import` of `file` into a freshly migrated `db`; its wall seconds.
async fn import(
    a: &ImportArgs,
    bin: &std::path::Path,
    db: &Scratch,
    file: &std::path::Path,
    rows: u64,
) -> anyhow::Result<f64> {
    eprintln!(
        "co2-bench import: {}",
        scratch::migrate(db, Some(bin)).await?
    );
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["import", "--chunk-rows", &a.batch.to_string()])
        .arg(file)
        .env("CO2_BRIDGE__DATABASE__URL", db.url())
        .env_remove("CO2_BRIDGE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "co2-bridge import failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut conn = db.connect().await?;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM co2_emissions")
        .fetch_one(&mut conn)
        .await?;
    let rolled: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(n) AS SIGNED) FROM co2_emissions_1m")
            .fetch_one(&mut conn)
            .await?;
    anyhow::ensure!(
        stored as u64 == rows && rolled.unwrap_or(0) as u64 == rows,
        "co2-bridge import stored {stored} rows ({rolled:?} in the 1m rollup) of {rows}"
    );
    eprintln!(
        "co2-bench import: {rows} rows in {seconds:.2} s ({:.0} rows/s), rollups exact",
        rows as f64 / seconds
    );
    Ok(seconds)
}
