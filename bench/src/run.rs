//! The measured scenarios, and the suite that runs them back to back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::account::{account, Sent};
use crate::bridge::{BridgeProcess, BridgeSpec};
use crate::broker::{BrokerKind, TestBroker};
use crate::db::{self, ScratchDb};
use crate::load::{self, LoadSpec};
use crate::report::{BridgeUsage, Environment, Figure, RunReport, SuiteReport};
use crate::sink::{Endpoint, Naive, NullSubscriber};
use crate::stats::Spread;

/// A broker to run against: test-owned or given.
pub struct Target<'a> {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// "stock", "provisioned" or "external".
    pub label: String,
    /// Consumer credentials.
    pub consumer: Option<(String, String)>,
    /// Device password (per-device users).
    pub device_password: Option<String>,
    /// The owned broker, if any.
    pub owned: Option<&'a TestBroker>,
}

impl<'a> Target<'a> {
    /// A test-owned broker.
    pub fn owned(broker: &'a TestBroker) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: broker.port(),
            label: broker.kind.to_string(),
            consumer: broker.consumer_credentials(),
            device_password: broker.device_password(),
            owned: Some(broker),
        }
    }

    /// A broker someone else runs, anonymous access.
    pub fn external(host: &str, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            label: "external".into(),
            consumer: None,
            device_password: None,
            owned: None,
        }
    }
}

/// The shape of one load.
#[derive(Debug, Clone)]
pub struct Load {
    /// Devices.
    pub devices: usize,
    /// Connections.
    pub connections: usize,
    /// Readings.
    pub readings: usize,
    /// Total rate; `None` = flat out.
    pub rate: Option<f64>,
    /// QoS.
    pub qos: u8,
    /// In flight per connection.
    pub inflight: u16,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Wait for rows at most this long after publishing.
    pub wait: Duration,
}

impl Load {
    fn spec(&self, target: &Target<'_>, device_prefix: &str) -> LoadSpec {
        LoadSpec {
            host: target.host.clone(),
            port: target.port,
            devices: self.devices,
            connections: if target.device_password.is_some() {
                self.devices
            } else {
                self.connections
            },
            readings: self.readings,
            rate: self.rate,
            qos: self.qos,
            inflight: self.inflight,
            topic_prefix: self.topic_prefix.clone(),
            device_prefix: device_prefix.into(),
            device_password: target.device_password.clone(),
            client_prefix: format!("co2-bench-pub-{:08x}", rand::random::<u32>()),
            ack_timeout: self.wait,
        }
    }

    fn filter(&self) -> String {
        format!("{}/+/emissions", self.topic_prefix)
    }
}

/// Device ids used on provisioned brokers (they need users made in advance).
pub const DEVICE_PREFIX: &str = "bench";

/// Paths and URLs the scenarios need.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Database server URL.
    pub db_url: String,
    /// The bridge binary.
    pub bridge_bin: PathBuf,
}

fn unique_client(tag: &str) -> String {
    format!("co2-bench-{tag}-{:08x}", rand::random::<u32>())
}

fn bridge_spec(
    paths: &Paths,
    target: &Target<'_>,
    db: &ScratchDb,
    load: &Load,
    client_id: &str,
) -> BridgeSpec {
    BridgeSpec {
        bin: paths.bridge_bin.clone(),
        db_url: db.url(),
        mqtt_port: target.port,
        client_id: client_id.into(),
        topics: load.filter(),
        credentials: target.consumer.clone(),
        extra_env: Vec::new(),
        log: std::env::temp_dir().join(format!("{client_id}.log")),
    }
}

/// Bridge end to end: publish, wait for every row, account from the table.
pub async fn bridge_run(
    label: &str,
    paths: &Paths,
    target: &Target<'_>,
    load: &Load,
) -> anyhow::Result<RunReport> {
    let db = ScratchDb::create(&paths.db_url, "bridge").await?;
    let client_id = unique_client("bridge");
    let bridge = BridgeProcess::start(&bridge_spec(paths, target, &db, load, &client_id)).await?;
    let before = bridge.stats()?;
    let spec = load.spec(target, DEVICE_PREFIX);
    let outcome = load::run(&spec).await?;
    let n = outcome.sent.len() as u64;
    db::wait_for_rows(
        &db.pool,
        DEVICE_PREFIX,
        n,
        Duration::from_secs(15),
        load.wait,
    )
    .await?;
    let after = bridge.stats()?;
    let rows = db::rows(&db.pool, DEVICE_PREFIX).await?;
    let a = account(&outcome.sent, &rows);
    let mut report = RunReport::from_accounting(
        label,
        &target.label,
        "bridge",
        &a,
        outcome.first_publish.timestamp_millis(),
    );
    report.publish = Some(outcome.figures());
    report.bridge = Some(BridgeUsage::between(before, after, a.stored));
    bridge.stop().await?;
    db.drop_now().await?;
    Ok(report)
}

/// The broker's ceiling: the same load to a subscriber that acks at once and stores nothing.
pub async fn null_run(label: &str, target: &Target<'_>, load: &Load) -> anyhow::Result<RunReport> {
    let endpoint = Endpoint {
        host: target.host.clone(),
        port: target.port,
        client_id: unique_client("null"),
        filter: load.filter(),
        credentials: target.consumer.clone(),
    };
    let sub = NullSubscriber::connect(&endpoint).await?;
    let spec = load.spec(target, DEVICE_PREFIX);
    let outcome = load::run(&spec).await?;
    let n = outcome.sent.len() as u64;
    let f = sub.wait_for(n, Duration::from_secs(10)).await;
    sub.disconnect().await;
    let wall_s = (f.last_ms - outcome.first_publish.timestamp_millis()).max(1) as f64 / 1000.0;
    Ok(RunReport {
        label: label.into(),
        broker: target.label.clone(),
        consumer: "null-subscriber".into(),
        published: n,
        stored: f.distinct,
        lost: n.saturating_sub(f.distinct),
        duplicates: f.received.saturating_sub(f.distinct),
        unexpected: 0,
        wall_s,
        rows_per_s: f.distinct as f64 / wall_s,
        latency: None,
        publish: Some(outcome.figures()),
        bridge: None,
    })
}

/// Readings shaped like a burst of `load` (stamps 1 ms apart per device).
pub fn synthetic_readings(load: &Load) -> Vec<Sent> {
    let base = Utc::now().timestamp_millis();
    (0..load.readings)
        .map(|j| Sent {
            device: load::device_id(DEVICE_PREFIX, j % load.devices),
            stamp_ms: base + (j / load.devices) as i64,
        })
        .collect()
}

/// The database's ceiling: the same rows, multi-row INSERTs of `batch`, over
/// 1 and 2 connections; a fresh table each.
pub async fn db_runs(
    label: &str,
    paths: &Paths,
    load: &Load,
    batch: usize,
) -> anyhow::Result<Vec<RunReport>> {
    let readings = synthetic_readings(load);
    let mut out = Vec::new();
    for connections in [1, 2] {
        let db = ScratchDb::create(&paths.db_url, "ceiling").await?;
        let rate = db::insert_ceiling(&db.url(), &readings, batch, connections).await?;
        let stored = db::count(&db.pool, DEVICE_PREFIX).await?;
        db.drop_now().await?;
        let n = readings.len() as u64;
        out.push(RunReport {
            label: format!("{label} ({connections} conn, {batch}/INSERT)"),
            broker: "-".into(),
            consumer: "db-insert".into(),
            published: n,
            stored,
            lost: n.saturating_sub(stored),
            duplicates: 0,
            unexpected: 0,
            wall_s: n as f64 / rate,
            rows_per_s: rate,
            latency: None,
            publish: None,
            bridge: None,
        });
    }
    Ok(out)
}

/// The naive consumer end to end.
pub async fn naive_run(
    label: &str,
    paths: &Paths,
    target: &Target<'_>,
    load: &Load,
    sub_qos: u8,
) -> anyhow::Result<RunReport> {
    let db = ScratchDb::create(&paths.db_url, "naive").await?;
    let endpoint = Endpoint {
        host: target.host.clone(),
        port: target.port,
        client_id: unique_client("naive"),
        filter: load.filter(),
        credentials: target.consumer.clone(),
    };
    let naive = Naive::start(&endpoint, sub_qos, &db.url()).await?;
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let n = outcome.sent.len() as u64;
    naive.wait_for(n, Duration::from_secs(10)).await;
    let fig = naive.stop().await;
    let rows = db::rows(&db.pool, DEVICE_PREFIX).await?;
    let a = account(&outcome.sent, &rows);
    let mut report = RunReport::from_accounting(
        label,
        &target.label,
        "naive",
        &a,
        outcome.first_publish.timestamp_millis(),
    );
    report.publish = Some(outcome.figures());
    tracing::info!(?fig, "naive consumer");
    db.drop_now().await?;
    Ok(report)
}

/// Backlog: the bridge's session exists, the bridge is stopped, `load` is
/// queued at the broker, then the bridge starts and drains it. Wall time runs
/// from the bridge's spawn to the last row.
pub async fn backlog_bridge_run(
    label: &str,
    paths: &Paths,
    target: &Target<'_>,
    load: &Load,
) -> anyhow::Result<RunReport> {
    let db = ScratchDb::create(&paths.db_url, "backlog").await?;
    let client_id = unique_client("backlog");
    let spec = bridge_spec(paths, target, &db, load, &client_id);
    BridgeProcess::start(&spec).await?.stop().await?;
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let n = outcome.sent.len() as u64;
    let spawned = Utc::now().timestamp_millis();
    let bridge = BridgeProcess::start(&spec).await?;
    let before = bridge.stats()?;
    db::wait_for_rows(
        &db.pool,
        DEVICE_PREFIX,
        n,
        Duration::from_secs(15),
        load.wait,
    )
    .await?;
    let after = bridge.stats()?;
    let rows = db::rows(&db.pool, DEVICE_PREFIX).await?;
    let a = account(&outcome.sent, &rows);
    let mut report = RunReport::from_accounting(label, &target.label, "bridge", &a, spawned);
    // Latency here is how long readings waited in the queue: not a pipeline figure.
    report.latency = None;
    report.publish = Some(outcome.figures());
    report.bridge = Some(BridgeUsage::between(before, after, a.stored));
    bridge.stop().await?;
    db.drop_now().await?;
    Ok(report)
}

/// Backlog for the null subscriber: the broker's own drain rate.
pub async fn backlog_null_run(
    label: &str,
    target: &Target<'_>,
    load: &Load,
) -> anyhow::Result<RunReport> {
    let endpoint = Endpoint {
        host: target.host.clone(),
        port: target.port,
        client_id: unique_client("null-backlog"),
        filter: load.filter(),
        credentials: target.consumer.clone(),
    };
    NullSubscriber::connect(&endpoint).await?.disconnect().await;
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let n = outcome.sent.len() as u64;
    let connected = Utc::now().timestamp_millis();
    let sub = NullSubscriber::connect(&endpoint).await?;
    let f = sub.wait_for(n, Duration::from_secs(10)).await;
    sub.disconnect().await;
    let wall_s = (f.last_ms - connected).max(1) as f64 / 1000.0;
    Ok(RunReport {
        label: label.into(),
        broker: target.label.clone(),
        consumer: "null-subscriber".into(),
        published: n,
        stored: f.distinct,
        lost: n.saturating_sub(f.distinct),
        duplicates: f.received.saturating_sub(f.distinct),
        unexpected: 0,
        wall_s,
        rows_per_s: f.distinct as f64 / wall_s,
        latency: None,
        publish: Some(outcome.figures()),
        bridge: None,
    })
}

fn ratio_figure(name: &str, pairs: &[(f64, f64)]) -> Option<Figure> {
    let ratios: Vec<f64> = pairs
        .iter()
        .filter(|(_, d)| *d > 0.0)
        .map(|(n, d)| n / d * 100.0)
        .collect();
    Some(Figure {
        name: name.into(),
        unit: "%".into(),
        spread: Spread::of(&ratios)?,
    })
}

fn value_figure(name: &str, unit: &str, values: &[f64]) -> Option<Figure> {
    Some(Figure {
        name: name.into(),
        unit: unit.into(),
        spread: Spread::of(values)?,
    })
}

/// Everything BENCHMARKS.md reports.
pub async fn suite(
    paths: &Paths,
    repo: &std::path::Path,
    a: &crate::cli::AllArgs,
    mut progress: impl FnMut(&RunReport),
) -> anyhow::Result<SuiteReport> {
    let want = |part: &str| a.only.is_empty() || a.only.iter().any(|p| p == part);
    let admin = db::pool(&db::split_url(&paths.db_url)?.0, 1).await?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&admin)
        .await?;
    admin.close().await;
    let environment = Environment::probe(version, crate::bridge::bridge_version(&paths.bridge_bin));
    let devices: Vec<String> = (0..a.devices)
        .map(|d| load::device_id(DEVICE_PREFIX, d))
        .collect();
    let burst = Load {
        devices: a.devices,
        connections: a.devices,
        readings: a.readings,
        rate: None,
        qos: 1,
        inflight: 100,
        topic_prefix: "co2".into(),
        wait: Duration::from_secs(300),
    };
    let mut runs = Vec::new();
    let mut figures = Vec::new();
    let mut push = |r: RunReport, runs: &mut Vec<RunReport>| {
        progress(&r);
        runs.push(r);
    };

    let mut db_ceiling: Vec<f64> = Vec::new();
    if want("db") || want("burst") {
        for i in 0..a.repeat {
            for r in db_runs("db ceiling", paths, &burst, 1000).await? {
                if r.label.contains("(1 conn") {
                    db_ceiling.push(r.rows_per_s);
                }
                push(r, &mut runs);
            }
            tracing::info!(run = i + 1, "db ceiling done");
        }
        if let Some(f) = value_figure(
            "DB ceiling, multi-row INSERT of 1000, 1 connection",
            "rows/s",
            &db_ceiling,
        ) {
            figures.push(f);
        }
    }
    let db_median = Spread::of(&db_ceiling).map_or(f64::INFINITY, |s| s.median);

    if want("burst") {
        for kind in [BrokerKind::Stock, BrokerKind::Provisioned] {
            let broker = TestBroker::start(kind, repo, &devices).await?;
            let target = Target::owned(&broker);
            let mut pairs_ceiling = Vec::new();
            let mut pairs_broker = Vec::new();
            let mut bridge_rates = Vec::new();
            let mut rss = Vec::new();
            let mut cpu = Vec::new();
            for _ in 0..a.repeat {
                let null =
                    null_run("broker ceiling: null subscriber burst", &target, &burst).await?;
                let bridge = bridge_run("bridge burst", paths, &target, &burst).await?;
                pairs_broker.push((bridge.rows_per_s, null.rows_per_s));
                pairs_ceiling.push((bridge.rows_per_s, null.rows_per_s.min(db_median)));
                bridge_rates.push(bridge.rows_per_s);
                if let Some(b) = bridge.bridge {
                    rss.push(b.peak_rss_mib);
                    cpu.push(b.cpu_ms_per_10k);
                }
                push(null, &mut runs);
                push(bridge, &mut runs);
            }
            figures.extend(value_figure(
                &format!("bridge burst throughput ({kind} broker)"),
                "rows/s",
                &bridge_rates,
            ));
            figures.extend(ratio_figure(
                &format!("bridge / min(broker, DB) ceiling ({kind} broker)"),
                &pairs_ceiling,
            ));
            figures.extend(ratio_figure(
                &format!("bridge / broker ceiling ({kind} broker)"),
                &pairs_broker,
            ));
            figures.extend(value_figure(
                &format!("bridge peak RSS ({kind} broker)"),
                "MiB",
                &rss,
            ));
            figures.extend(value_figure(
                &format!("bridge CPU per 10k readings ({kind} broker)"),
                "ms",
                &cpu,
            ));
        }
    }

    let needs_provisioned = want("latency") || want("backlog") || want("naive");
    if needs_provisioned {
        let broker = TestBroker::start(BrokerKind::Provisioned, repo, &devices).await?;
        let target = Target::owned(&broker);
        if want("latency") {
            let steady = Load {
                readings: (1000 * a.steady_s) as usize,
                rate: Some(1000.0),
                ..burst.clone()
            };
            let mut p99 = Vec::new();
            for _ in 0..a.repeat {
                let r = bridge_run("bridge steady 1000/s", paths, &target, &steady).await?;
                if let Some(l) = r.latency {
                    p99.push(l.p99_ms as f64);
                }
                push(r, &mut runs);
            }
            figures.extend(value_figure(
                "p99 reading->row latency at 1000/s (provisioned)",
                "ms",
                &p99,
            ));
        }
        if want("backlog") {
            let mut pairs = Vec::new();
            let mut rates = Vec::new();
            for _ in 0..a.repeat {
                let null =
                    backlog_null_run("backlog drain: null subscriber", &target, &burst).await?;
                let bridge =
                    backlog_bridge_run("backlog drain: bridge", paths, &target, &burst).await?;
                pairs.push((bridge.rows_per_s, null.rows_per_s));
                rates.push(bridge.rows_per_s);
                push(null, &mut runs);
                push(bridge, &mut runs);
            }
            figures.extend(value_figure(
                "bridge backlog drain rate (provisioned)",
                "rows/s",
                &rates,
            ));
            figures.extend(ratio_figure(
                "bridge drain / broker drain (provisioned)",
                &pairs,
            ));
        }
        if want("naive") {
            let small = Load {
                readings: a.naive_readings,
                ..burst.clone()
            };
            let mut pairs = Vec::new();
            for _ in 0..a.repeat {
                let naive = naive_run(
                    "naive consumer (INSERT+COMMIT/msg)",
                    paths,
                    &target,
                    &small,
                    1,
                )
                .await?;
                let bridge =
                    bridge_run("bridge, same load as naive", paths, &target, &small).await?;
                pairs.push((bridge.rows_per_s, naive.rows_per_s));
                push(naive, &mut runs);
                push(bridge, &mut runs);
            }
            let factors: Vec<f64> = pairs
                .iter()
                .filter(|(_, d)| *d > 0.0)
                .map(|(n, d)| n / d)
                .collect();
            figures.extend(value_figure(
                "bridge / naive consumer throughput",
                "times",
                &factors,
            ));
        }
    }
    Ok(SuiteReport {
        environment,
        runs,
        figures,
    })
}

/// Resolves `--bridge-bin`.
pub fn bridge_bin(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = given
        .cloned()
        .unwrap_or_else(crate::bridge::default_bridge_bin);
    if !bin.exists() {
        return Err(anyhow::anyhow!(
            "no bridge binary at {}; build it (cargo build --release -p co2-bridge) or pass --bridge-bin",
            bin.display()
        ))
        .context("--bridge-bin");
    }
    Ok(bin)
}
