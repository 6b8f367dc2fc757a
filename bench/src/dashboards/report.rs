//! The text report: panel × range latencies, rows and bytes per table, bytes
//! per stored CO2 reading, load rate; and how they grow across sizes.
//! Tables are Markdown so they paste into BENCHMARKS.md.

use std::fmt::Write;

use chrono::DateTime;

use super::measure::{Outcome, Timing};
use super::SizeReport;

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency: `0.8 ms`, `33 ms`, `4.9 s`.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1} ms")
    } else if v < 1000.0 {
        format!("{v:.0} ms")
    } else {
        format!("{:.1} s", v / 1000.0)
    }
}

fn timed_out(limit_s: f64) -> String {
    format!("> {limit_s:.0} s")
}

/// The best repeat, or what stopped it.
fn best(t: &Timing, limit_s: f64) -> String {
    match (&t.best_ms, t.timed_out, &t.error) {
        (Some(v), _, _) => ms(*v),
        (None, true, _) => timed_out(limit_s),
        (None, _, Some(_)) => "error".into(),
        (None, _, None) => "-".into(),
    }
}

fn first(t: &Timing, limit_s: f64) -> String {
    match &t.first {
        Outcome::Done { ms: v, .. } => ms(*v),
        Outcome::TimedOut => timed_out(limit_s),
        Outcome::Failed(_) => "error".into(),
    }
}

fn date(epoch: i64) -> String {
    DateTime::from_timestamp(epoch, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| epoch.to_string())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

fn header(out: &mut String, first: &str, columns: &[String]) {
    let _ = writeln!(out, "| {first} | {} |", columns.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns.len()));
}

fn latency_table(out: &mut String, r: &SizeReport, limit_s: f64, cell: fn(&Timing, f64) -> String) {
    header(out, "panel", &r.ranges);
    for p in &r.panels {
        let own = p
            .time_from_s
            .map(|s| {
                format!(
                    " (own range {})",
                    super::grafana::interval_text(s as u64 * 1000)
                )
            })
            .unwrap_or_default();
        let cells: Vec<String> = p.ranges.iter().map(|x| cell(&x.timing, limit_s)).collect();
        let _ = writeln!(out, "| {}{own} | {} |", p.panel, cells.join(" | "));
    }
}

/// The refresh of every panel for each range: the sum of the best runs, or
/// "> …" when one did not finish.
fn refresh_row(out: &mut String, r: &SizeReport) {
    let cells: Vec<String> = (0..r.ranges.len())
        .map(|i| {
            let mut sum = 0.0;
            let mut partial = false;
            for p in &r.panels {
                match p.ranges.get(i).and_then(|x| x.timing.best_ms) {
                    Some(v) => sum += v,
                    None => partial = true,
                }
            }
            if partial {
                format!("> {}", ms(sum))
            } else {
                ms(sum)
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "| **all panels, one refresh** | {} |",
        cells.join(" | ")
    );
}

/// One size's report.
pub fn size(r: &SizeReport, limit_s: f64, repeat: usize) -> String {
    let mut out = String::new();
    let s = &r.shape;
    let _ = writeln!(
        out,
        "## {} CO2 readings: {} devices, one every {} s, {:.1} days ({} to {} UTC)\n",
        thousands(r.readings),
        s.devices,
        s.interval_s,
        r.days,
        date(s.start()),
        date(s.end)
    );
    let _ = writeln!(
        out,
        "Database {} ({}); schema by {}.",
        r.database,
        if r.dropped { "dropped" } else { "kept" },
        r.schema
    );
    let all_rows: u64 = r.load.iter().map(|l| l.rows).sum();
    let mut load = format!(
        "Load: {} rows in {:.1} s ({} rows/s)",
        thousands(all_rows),
        r.load_seconds,
        thousands((all_rows as f64 / r.load_seconds.max(1e-9)) as u64)
    );
    for l in &r.load {
        let _ = write!(
            load,
            "; {} {} in {:.1} s ({}/s)",
            l.table,
            thousands(l.rows),
            l.seconds,
            thousands((l.rows as f64 / l.seconds.max(1e-9)) as u64)
        );
    }
    let _ = writeln!(out, "{load}.");
    let _ = writeln!(
        out,
        "Rollups: {}{}.",
        r.rollups.note,
        if r.rollups.ran {
            format!(" ({:.1} s)", r.rollups.seconds)
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "{}.\n", r.interval_rule);
    let _ = writeln!(
        out,
        "Best of {repeat} after a first run, ranges ending at the newest reading, $device = All:\n"
    );
    latency_table(&mut out, r, limit_s, best);
    refresh_row(&mut out, r);
    let _ = writeln!(
        out,
        "\nFirst run of each (as the panels before it left the caches):\n"
    );
    latency_table(&mut out, r, limit_s, first);
    let errors: Vec<String> = r
        .panels
        .iter()
        .flat_map(|p| {
            p.ranges.iter().filter_map(move |x| {
                x.timing
                    .error
                    .as_ref()
                    .map(|e| format!("- {} [{}]: {e}", p.panel, x.range))
            })
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nErrors:\n{}", errors.join("\n"));
    }
    let _ = writeln!(out);
    header(
        &mut out,
        "table",
        &["rows", "data MiB", "index MiB", "bytes/row"].map(String::from),
    );
    for t in &r.tables {
        let per_row = if t.rows > 0 {
            format!("{:.1}", t.bytes() as f64 / t.rows as f64)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {per_row} |",
            t.table,
            thousands(t.rows),
            mib(t.data_bytes),
            mib(t.index_bytes)
        );
    }
    let per = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    let with = if r.rollup_tables.is_empty() {
        "no rollup tables".to_owned()
    } else {
        format!(
            "{} with its rollup tables ({})",
            per(r.bytes_per_co2_reading_with_rollups),
            r.rollup_tables.join(", ")
        )
    };
    let _ = writeln!(
        out,
        "\nBytes per stored CO2 reading (co2_emissions data + indexes / rows): {}; {with}.",
        per(r.bytes_per_co2_reading)
    );
    out
}

/// Across sizes: each panel's best at the longest range, bytes per reading, load rate.
pub fn growth(reports: &[SizeReport], limit_s: f64) -> String {
    let mut out = String::new();
    let Some(last_range) = reports.first().and_then(|r| r.ranges.last()).cloned() else {
        return out;
    };
    let columns: Vec<String> = reports
        .iter()
        .map(|r| format!("{} readings", thousands(r.readings)))
        .collect();
    let _ = writeln!(out, "## Growth: each panel over {last_range}\n");
    header(&mut out, "panel", &columns);
    if let Some(first) = reports.first() {
        for (i, p) in first.panels.iter().enumerate() {
            let cells: Vec<String> = reports
                .iter()
                .map(|r| {
                    r.panels
                        .get(i)
                        .and_then(|p| p.ranges.last())
                        .map_or_else(|| "-".into(), |x| best(&x.timing, limit_s))
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", p.panel, cells.join(" | "));
        }
    }
    let bytes: Vec<String> = reports
        .iter()
        .map(|r| {
            r.bytes_per_co2_reading
                .map_or("-".into(), |v| format!("{v:.1}"))
        })
        .collect();
    let _ = writeln!(out, "| bytes per CO2 reading | {} |", bytes.join(" | "));
    let rates: Vec<String> = reports
        .iter()
        .map(|r| {
            let rows: u64 = r.load.iter().map(|l| l.rows).sum();
            thousands((rows as f64 / r.load_seconds.max(1e-9)) as u64)
        })
        .collect();
    let _ = writeln!(out, "| load, rows/s | {} |", rates.join(" | "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_512_000), "10,512,000");
        assert_eq!(ms(0.84), "0.8 ms");
        assert_eq!(ms(33.4), "33 ms");
        assert_eq!(ms(4_930.0), "4.9 s");
    }
}
