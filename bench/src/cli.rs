//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::broker::BrokerKind;

/// Measure the co2-telemetry pipeline: throughput, loss, latency, and the
/// ceilings of the broker and the database it runs against. Everything talks
/// to 127.0.0.1 only.
#[derive(Debug, Parser)]
#[command(name = "co2-bench", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish readings and wait until each is a row: published, stored, lost,
    /// duplicates, rows/s, latency.
    Load(LoadArgs),
    /// The broker's QoS 1 delivery rate to a subscriber that stores nothing, and
    /// the database's multi-row insert rate for the same rows.
    Ceilings(CeilingArgs),
    /// The usual consumer (one INSERT and one commit per message) on the same load.
    Naive(NaiveArgs),
    /// The Kafka source (1, 3, ... bridges in a consumer group) against a
    /// null consumer of the same private tansu, draining the same backlog.
    Kafka(KafkaArgs),
    /// The whole suite BENCHMARKS.md reports, on test-owned brokers (stock and
    /// provisioned) and throwaway databases, with the release bridge.
    All(AllArgs),
    /// Every MySQL panel of grafana/dashboards as Grafana sends it, for 1 h to
    /// 1 year, on a synthetic dataset loaded in bulk into a throwaway database:
    /// latency per panel and range, rows and bytes per table, bytes per reading.
    Dashboards(DashboardsArgs),
    /// `co2-bridge export` of the synthetic dataset to a file, CSV and NDJSON:
    /// rows/s, bytes, peak memory of the export process.
    Export(crate::export::ExportArgs),
    /// `co2-bridge import` of a generated CSV file (rollups on) against
    /// MariaDB's multi-row INSERT ceiling for the same rows: rows/s and the ratio.
    Import(crate::import::ImportArgs),
}

/// Where things are.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Broker host (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub mqtt_host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// Start a test-owned broker of this kind instead of using --mqtt-host/--mqtt-port.
    #[arg(long, value_enum)]
    pub own_broker: Option<BrokerKind>,
    /// Database URL. With a throwaway database (--own-bridge, ceilings, naive, all)
    /// only its server part is used.
    #[arg(
        long,
        default_value = "mysql://root@127.0.0.1:3306/co2",
        env = "CO2_BENCH_DB_URL"
    )]
    pub db_url: String,
    /// The co2-bridge binary (default: $CO2_BRIDGE_BIN, else next to co2-bench).
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
    /// Repository root (for provisioning/mosquitto templates).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Extra bridge settings, KEY=VALUE with KEY a CO2_BRIDGE__ variable (repeatable).
    #[arg(long = "bridge-env", value_parser = parse_key_value)]
    pub bridge_env: Vec<(String, String)>,
    /// Query parameters for the bridge's database URL, e.g. statement-cache-capacity=8.
    #[arg(long)]
    pub bridge_db_params: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The shape of the load.
#[derive(Debug, Clone, Args)]
pub struct Shape {
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// MQTT connections they share (default: one per device).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Readings in all.
    #[arg(long, default_value_t = 200_000)]
    pub readings: usize,
    /// Readings per second in all; 0 = flat out (one burst).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// QoS of the publishes (0 or 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Unacknowledged publishes per connection.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Topics are <prefix>/<device>/emissions.
    #[arg(long, default_value = "co2")]
    pub topic_prefix: String,
    /// Seconds to wait for the last row once publishing is done.
    #[arg(long, default_value_t = 120)]
    pub wait_s: u64,
}

/// `load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    /// Where.
    pub common: Common,
    #[command(flatten)]
    /// What.
    pub shape: Shape,
    /// Start the bridge binary on a throwaway database for this run (otherwise a
    /// bridge must already be writing into --db-url).
    #[arg(long)]
    pub own_bridge: bool,
    /// With --own-bridge: this many bridges in one shared-subscription group.
    #[arg(long, default_value_t = 1)]
    pub bridges: usize,
    /// Device ids are <prefix>NNNN (default: random, so runs do not mix).
    #[arg(long)]
    pub device_prefix: Option<String>,
}

/// `ceilings`.
#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    #[command(flatten)]
    /// Where.
    pub common: Common,
    #[command(flatten)]
    /// What.
    pub shape: Shape,
    /// Rows per INSERT for the database ceiling (the bridge's batch.max_rows).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Null subscribers in one shared-subscription group (1: a plain subscription).
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
}

/// `naive`.
#[derive(Debug, Clone, Args)]
pub struct NaiveArgs {
    #[command(flatten)]
    /// Where.
    pub common: Common,
    #[command(flatten)]
    /// What.
    pub shape: Shape,
    /// QoS of the naive consumer's subscription.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub sub_qos: u8,
}

/// `kafka`.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    #[command(flatten)]
    /// Where.
    pub common: Common,
    /// Records in each backlog.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// Devices (record keys).
    #[arg(long, default_value_t = 60)]
    pub devices: usize,
    /// Bridge counts to run, each in its own group (comma list).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub bridges: Vec<usize>,
    /// Repeats of the whole series.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
}

/// `all`.
#[derive(Debug, Clone, Args)]
pub struct AllArgs {
    #[command(flatten)]
    /// Where.
    pub common: Common,
    /// Readings per burst.
    #[arg(long, default_value_t = 200_000)]
    pub readings: usize,
    /// Devices (one connection each, as real devices connect).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Repeats of every compared pair.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Readings for the naive consumer comparison.
    #[arg(long, default_value_t = 10_000)]
    pub naive_readings: usize,
    /// Seconds of the steady 1,000 readings/s latency run.
    #[arg(long, default_value_t = 20)]
    pub steady_s: u64,
    /// Also write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these parts (comma list of: burst, db, latency, backlog, naive).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Where a benchmark of one command makes its throwaway databases, and the
/// bridge binary it runs (`export`, `import`).
#[derive(Debug, Clone, Args)]
pub struct Scratchpad {
    /// Database server URL (throwaway databases are created on it).
    #[arg(
        long,
        default_value = "mysql://root@127.0.0.1:3306",
        env = "CO2_BENCH_DB_URL"
    )]
    pub db_url: String,
    /// The co2-bridge binary (default: $CO2_BRIDGE_BIN, else next to co2-bench).
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
}

/// `dashboards`.
#[derive(Debug, Clone, Args)]
pub struct DashboardsArgs {
    /// Database server URL (a throwaway database is created on it).
    #[arg(
        long,
        default_value = "mysql://root@127.0.0.1:3306",
        env = "CO2_BENCH_DB_URL"
    )]
    pub db_url: String,
    /// The co2-bridge binary for `migrate` and `rollup rebuild` (default:
    /// $CO2_BRIDGE_BIN, else next to co2-bench; without one the bench applies
    /// the same migrations itself and fills no rollups).
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
    /// Repository root (its grafana/dashboards are measured).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Devices.
    #[arg(long, default_value_t = 20)]
    pub devices: u64,
    /// Seconds between two readings of a device.
    #[arg(long, default_value_t = 60)]
    pub interval_s: u64,
    /// Days of readings, ending now (ignored with --readings or --sizes).
    #[arg(long, default_value_t = 365.0)]
    pub days: f64,
    /// CO2 readings in all, e.g. 1M, 10M (the days follow).
    #[arg(long, value_parser = parse_count)]
    pub readings: Option<u64>,
    /// Run the whole thing for each of these reading counts, e.g. 1M,10M.
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    pub sizes: Vec<u64>,
    /// Ranges, each ending at the newest reading (units m h d w y).
    #[arg(long, value_delimiter = ',', default_value = "1h,24h,7d,30d,1y")]
    pub ranges: Vec<String>,
    /// Timed runs after the first; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Time limit per query, seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
    /// Points a panel draws when it does not set maxDataPoints (Grafana uses
    /// the panel's width in pixels).
    #[arg(long, default_value_t = 1000)]
    pub max_data_points: u64,
    /// Keep the database(s) instead of dropping them.
    #[arg(long)]
    pub keep: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `1000`, `500k`, `1M`, `2.5M`, `1G`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (number, factor) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t.as_str(), 1.0),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a count such as 500k, 1M, 10M"))?;
    if !(v.is_finite() && v >= 1.0) {
        return Err(format!("{s:?}: must be at least 1"));
    }
    Ok((v * factor).round() as u64)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    if !k.starts_with("CO2_BRIDGE__") {
        return Err(format!("{k:?}: bridge settings start with CO2_BRIDGE__"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

impl Shape {
    /// `None` for flat out.
    pub fn rate(&self) -> Option<f64> {
        (self.rate > 0.0).then_some(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("co2-bench").chain(args.iter().copied()))
    }

    #[test]
    fn load_defaults_are_loopback_and_the_issue_burst() {
        let Command::Load(a) = parse(&["load"]).unwrap().command else {
            panic!("not load");
        };
        assert_eq!(a.common.mqtt_host, "127.0.0.1");
        assert_eq!(a.common.mqtt_port, 1883);
        assert_eq!(a.common.db_url, "mysql://root@127.0.0.1:3306/co2");
        assert_eq!(
            (a.shape.devices, a.shape.readings, a.shape.qos),
            (100, 200_000, 1)
        );
        assert_eq!(a.shape.rate(), None);
        assert!(!a.own_bridge && !a.common.json);
    }

    #[test]
    fn load_flags() {
        let Command::Load(a) = parse(&[
            "load",
            "--devices",
            "10",
            "--connections",
            "2",
            "--readings",
            "5000",
            "--rate",
            "1000",
            "--qos",
            "0",
            "--own-broker",
            "provisioned",
            "--own-bridge",
            "--json",
        ])
        .unwrap()
        .command
        else {
            panic!("not load");
        };
        assert_eq!((a.shape.devices, a.shape.connections), (10, Some(2)));
        assert_eq!(a.shape.rate(), Some(1000.0));
        assert_eq!(a.shape.qos, 0);
        assert_eq!(a.common.own_broker, Some(BrokerKind::Provisioned));
        assert!(a.own_bridge && a.common.json);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["load", "--qos", "2"]).is_err());
        assert!(parse(&["load", "--own-broker", "cluster"]).is_err());
        assert!(parse(&["load", "--readings", "-1"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["load", "--bridge-env", "PATH=/x"]).is_err());
        assert!(parse(&["load", "--bridge-env", "CO2_BRIDGE__BATCH__MAX_ROWS"]).is_err());
    }

    #[test]
    fn dashboards_flags() {
        let Command::Dashboards(a) = parse(&["dashboards"]).unwrap().command else {
            panic!("not dashboards");
        };
        assert_eq!((a.devices, a.interval_s, a.days), (20, 60, 365.0));
        assert_eq!(a.ranges, ["1h", "24h", "7d", "30d", "1y"]);
        assert_eq!((a.readings, a.repeat, a.timeout_s), (None, 3, 60));
        let Command::Dashboards(a) = parse(&[
            "dashboards",
            "--readings",
            "1M",
            "--sizes",
            "1M,10M,2.5k",
            "--keep",
        ])
        .unwrap()
        .command
        else {
            panic!("not dashboards");
        };
        assert_eq!(a.readings, Some(1_000_000));
        assert_eq!(a.sizes, [1_000_000, 10_000_000, 2_500]);
        assert!(a.keep);
        assert!(parse(&["dashboards", "--readings", "lots"]).is_err());
        assert!(parse(&["dashboards", "--readings", "0"]).is_err());
        assert_eq!(parse_count("100M"), Ok(100_000_000));
        assert_eq!(parse_count("1_000"), Ok(1000));
    }

    #[test]
    fn all_only_is_a_list() {
        let Command::All(a) = parse(&["all", "--only", "burst,db", "--repeat", "1"])
            .unwrap()
            .command
        else {
            panic!("not all");
        };
        assert_eq!(a.only, ["burst", "db"]);
        assert_eq!(a.repeat, 1);
    }
}
