//! `co2-pipeline-cost`: runs a fixed set of readings through the bridge's
//! decode → batch → row-building path (`co2_bridge::offline`) once, with no
//! broker and no database, for `valgrind --tool=callgrind` to count
//! (bench/callgrind.sh). The input depends only on the arguments, so the
//! count repeats exactly for the same binary.
//!
//! ```text
//! co2-pipeline-cost [--readings N] [--kind co2|json]
//! ```

use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use co2_bridge::offline::Offline;
use co2_bridge::Settings;

/// Devices the readings come from, in turn.
const DEVICES: usize = 100;

/// The JSON route of the shipped routes example (a DHT11 producer that
/// sends every value as a string, the device in `m_id`).
const JSON_ROUTE: &str = r#"
[[routes]]
name = "python"
topics = ["temp_test"]
decoder = "json"
trust_payload_device = true
[routes.json]
device_field = "m_id"
time_field = "datetime"
numeric_strings = true
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("co2-pipeline-cost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut readings = 10_000usize;
    let mut kind = "co2".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--readings" => readings = value.parse().context("--readings")?,
            "--kind" => kind = value,
            other => bail!("unknown argument {other}; see the doc comment of this binary"),
        }
    }
    let base = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .context("base time")?;
    let (config, deliveries) = match kind.as_str() {
        "co2" => ("", co2(readings, base)),
        "json" => (JSON_ROUTE, json(readings, base)),
        other => bail!("--kind {other}: co2 or json"),
    };
    let settings: Settings = toml::from_str(config).context("the benchmark's routes")?;
    let offline = Offline::new(&settings)?;
    let received = base + Duration::days(1);
    let tally = offline.run(&deliveries, received)?;
    if tally.rows != readings || tally.rejected != 0 {
        bail!("expected {readings} rows and no rejection, got {tally:?}");
    }
    println!(
        "{kind}: {} readings, {} batches, {} rows",
        readings, tally.batches, tally.rows
    );
    Ok(())
}

/// Reading `i` of device `i % DEVICES`, one second apart per device.
fn time_of(base: DateTime<Utc>, i: usize) -> DateTime<Utc> {
    base + Duration::milliseconds(((i / DEVICES) * 1000 + i % DEVICES) as i64)
}

fn co2(n: usize, base: DateTime<Utc>) -> Vec<(Bytes, Bytes)> {
    (0..n)
        .map(|i| {
            let topic = format!("co2/dev{}/emissions", i % DEVICES);
            let payload = format!(
                "{}|{}.25",
                time_of(base, i).format("%Y-%m-%d %H:%M:%S%.3f"),
                400 + i % 2000
            );
            (Bytes::from(topic), Bytes::from(payload))
        })
        .collect()
}

fn json(n: usize, base: DateTime<Utc>) -> Vec<(Bytes, Bytes)> {
    let topic = Bytes::from_static(b"temp_test");
    (0..n)
        .map(|i| {
            let payload = format!(
                r#"{{"m_id": "{}", "datetime": "{}", "temp": "{}.5"}}"#,
                i % DEVICES,
                time_of(base, i).format("%Y-%m-%d %H:%M:%S%.3f"),
                15 + i % 20
            );
            (topic.clone(), Bytes::from(payload))
        })
        .collect()
}
