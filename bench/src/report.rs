//! Reports: one row per measured run, printed as a table or as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::account::Accounting;
use crate::bridge::ProcStats;
use crate::load::PublishFigures;
use crate::stats::{Latency, Spread};

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// What was measured, e.g. "bridge burst".
    pub label: String,
    /// "stock", "provisioned" or "external".
    pub broker: String,
    /// "bridge", "null-subscriber", "naive" or "db-insert".
    pub consumer: String,
    /// Readings published (distinct).
    pub published: u64,
    /// Readings stored (or delivered, for the null subscriber).
    pub stored: u64,
    /// Readings missing.
    pub lost: u64,
    /// Extra copies (rows, or deliveries for the null subscriber).
    pub duplicates: u64,
    /// Rows nobody published.
    pub unexpected: u64,
    /// First publish → last row (or last delivery), seconds.
    pub wall_s: f64,
    /// `stored / wall_s`.
    pub rows_per_s: f64,
    /// Reading time → `received_at`.
    pub latency: Option<Latency>,
    /// The publishers' side.
    pub publish: Option<PublishFigures>,
    /// The bridge process, when one ran.
    pub bridge: Option<BridgeUsage>,
    /// CPU seconds the other processes used during the run (broker, load
    /// generator with any in-process consumer, database server).
    pub others_cpu_s: Option<OthersCpu>,
}

/// CPU seconds of the other processes on the box during a run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OthersCpu {
    /// mosquitto.
    pub broker: f64,
    /// co2-bench itself (publishers, and the null or naive consumer if any).
    pub generator: f64,
    /// mariadbd / mysqld.
    pub database: f64,
}

/// What the bridge process used during a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BridgeUsage {
    /// VmHWM at the end of the run, MiB.
    pub peak_rss_mib: f64,
    /// utime + stime spent during the run, seconds.
    pub cpu_s: f64,
    /// CPU milliseconds per 10,000 readings stored.
    pub cpu_ms_per_10k: f64,
}

impl BridgeUsage {
    /// From /proc readings before and after a run that stored `stored` readings.
    pub fn between(before: ProcStats, after: ProcStats, stored: u64) -> Self {
        let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
        Self {
            peak_rss_mib: after.vm_hwm_kib as f64 / 1024.0,
            cpu_s,
            cpu_ms_per_10k: if stored == 0 {
                0.0
            } else {
                cpu_s * 1000.0 * 10_000.0 / stored as f64
            },
        }
    }
}

impl RunReport {
    /// A report from accounting; wall time runs from `first_publish_ms` to the
    /// last stored row's `received_at`.
    pub fn from_accounting(
        label: &str,
        broker: &str,
        consumer: &str,
        a: &Accounting,
        first_publish_ms: i64,
    ) -> Self {
        let wall_s = a
            .last_received_ms
            .map_or(0.0, |l| (l - first_publish_ms).max(1) as f64 / 1000.0);
        Self {
            label: label.into(),
            broker: broker.into(),
            consumer: consumer.into(),
            published: a.published,
            stored: a.stored,
            lost: a.lost,
            duplicates: a.duplicates,
            unexpected: a.unexpected,
            wall_s,
            rows_per_s: if wall_s > 0.0 {
                a.stored as f64 / wall_s
            } else {
                0.0
            },
            latency: a.latency,
            publish: None,
            bridge: None,
            others_cpu_s: None,
        }
    }
}

/// A compared figure over repeats: e.g. bridge rows/s as % of the ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// Unit.
    pub unit: String,
    /// Median and range.
    pub spread: Spread,
}

/// The whole suite's output.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// Machine, versions, date.
    pub environment: Environment,
    /// Every run, in order.
    pub runs: Vec<RunReport>,
    /// Derived figures (medians of ratios of back-to-back pairs).
    pub figures: Vec<Figure>,
}

/// Where the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// UTC date and time of the run.
    pub date: String,
    /// CPUs online.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// MemTotal, MiB.
    pub memory_mib: u64,
    /// `mosquitto -h` first line.
    pub mosquitto: String,
    /// `SELECT VERSION()`.
    pub database: String,
    /// `co2-bridge --version`.
    pub bridge: String,
    /// Kernel release.
    pub kernel: String,
}

impl Environment {
    /// Reads /proc and the tools' versions.
    pub fn probe(database: String, bridge: String) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_owned()),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            mosquitto: crate::broker::mosquitto_version(),
            database,
            bridge,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        }
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The runs as a fixed-width table.
pub fn table(runs: &[RunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:<11} {:>8} {:>8} {:>6} {:>5} {:>7} {:>9} {:>6} {:>6} {:>6} {:>7} {:>9} {:>16}",
        "run",
        "broker",
        "publ.",
        "stored",
        "lost",
        "dup",
        "wall s",
        "rows/s",
        "p50ms",
        "p95ms",
        "p99ms",
        "RSS MiB",
        "CPUms/10k",
        "CPU s brk/gen/db"
    );
    for r in runs {
        let l = r.latency;
        let (rss, cpu) = r.bridge.map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |b| {
                (
                    format!("{:.1}", b.peak_rss_mib),
                    format!("{:.0}", b.cpu_ms_per_10k),
                )
            },
        );
        let _ = writeln!(
            out,
            "{:<34} {:<11} {:>8} {:>8} {:>6} {:>5} {:>7.2} {:>9.0} {:>6} {:>6} {:>6} {:>7} {:>9} {:>16}",
            r.label,
            r.broker,
            r.published,
            r.stored,
            r.lost,
            r.duplicates,
            r.wall_s,
            r.rows_per_s,
            opt(l.map(|l| l.p50_ms)),
            opt(l.map(|l| l.p95_ms)),
            opt(l.map(|l| l.p99_ms)),
            rss,
            cpu,
            r.others_cpu_s.map_or_else(
                || "-".to_owned(),
                |o| format!("{:.2}/{:.2}/{:.2}", o.broker, o.generator, o.database)
            )
        );
    }
    out
}

/// Derived figures as lines.
pub fn figures(figures: &[Figure]) -> String {
    let mut out = String::new();
    for f in figures {
        let s = f.spread;
        let _ = writeln!(
            out,
            "{:<64} {:>10.1} {:<6} (min {:.1}, max {:.1}, {} runs)",
            f.name, s.median, f.unit, s.min, s.max, s.runs
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_runs_to_the_last_row() {
        let a = crate::account::account(
            &[crate::account::Sent {
                device: "d".into(),
                stamp_ms: 1000,
            }],
            &[crate::account::Row {
                device: "d".into(),
                date_time_ms: 1000,
                received_at_ms: Some(3000),
            }],
        );
        let r = RunReport::from_accounting("x", "stock", "bridge", &a, 1000);
        assert_eq!((r.wall_s, r.rows_per_s), (2.0, 0.5));
        assert!(table(&[r]).contains("stock"));
    }

    #[test]
    fn cpu_per_ten_thousand() {
        let u = BridgeUsage::between(
            ProcStats {
                vm_hwm_kib: 2048,
                cpu_s: 1.0,
            },
            ProcStats {
                vm_hwm_kib: 4096,
                cpu_s: 3.0,
            },
            200_000,
        );
        assert_eq!(u.peak_rss_mib, 4.0);
        assert!((u.cpu_ms_per_10k - 100.0).abs() < 1e-9);
    }
}
