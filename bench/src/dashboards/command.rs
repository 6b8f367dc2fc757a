//! `co2-bench dashboards`: the command line turned into [`Options`], each
//! size run in turn, the report printed.

use std::time::Duration;

use anyhow::{bail, Context};

use super::{panels, report, run_size, Options, SizeReport};
use crate::cli::DashboardsArgs;

/// Options from the command line.
pub fn options(a: &DashboardsArgs) -> anyhow::Result<Options> {
    let ranges = a
        .ranges
        .iter()
        .map(|r| {
            panels::relative_s(r)
                .map(|s| (r.clone(), s))
                .with_context(|| format!("--ranges: {r:?} is not a range such as 1h, 7d, 1y"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if ranges.is_empty() {
        bail!("--ranges: give at least one");
    }
    let bin = a
        .bridge_bin
        .clone()
        .unwrap_or_else(crate::bridge::default_bridge_bin);
    if a.bridge_bin.is_some() && !bin.exists() {
        bail!("--bridge-bin {}: no such file", bin.display());
    }
    Ok(Options {
        db_url: a.db_url.clone(),
        bridge_bin: bin.exists().then_some(bin),
        dashboards: a.repo.join("grafana/dashboards"),
        devices: a.devices,
        interval_s: a.interval_s,
        days: a.days,
        ranges,
        repeat: a.repeat,
        timeout: Duration::from_secs(a.timeout_s.max(1)),
        max_data_points: a.max_data_points.max(1),
        keep: a.keep,
    })
}

/// Runs every size (or the one `--readings`/`--days` gives) and prints the report.
pub async fn run(a: &DashboardsArgs) -> anyhow::Result<Vec<SizeReport>> {
    let opts = options(a)?;
    let sizes: Vec<Option<u64>> = if a.sizes.is_empty() {
        vec![a.readings]
    } else {
        a.sizes.iter().copied().map(Some).collect()
    };
    let limit_s = opts.timeout.as_secs_f64();
    let mut reports = Vec::new();
    for readings in sizes {
        let r = run_size(&opts, readings).await?;
        if !a.json {
            // Each size as soon as it is done: a long run shows what it has.
            println!("{}", report::size(&r, limit_s, opts.repeat));
        }
        reports.push(r);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if reports.len() > 1 {
        println!("{}", report::growth(&reports, limit_s));
    }
    Ok(reports)
}
