//! The measured scenarios, and the suite that runs them back to back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::account::{account, Sent};
use crate::bridge::{BridgeProcess, BridgeSpec};
use crate::broker::{BrokerKind, TestBroker};
use crate::db::{self, ScratchDb};
use crate::load::{self, Load, LoadSpec};
use crate::report::{BridgeUsage, Environment, Figure, OthersCpu, RunReport, SuiteReport};
use crate::sink::{clear_session, Endpoint, Naive, NullSubscriber};
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

impl Load {
    /// This load on `target`, as devices `<device_prefix>NNNN`.
    pub fn spec(&self, target: &Target<'_>, device_prefix: &str) -> LoadSpec {
        let mut load = self.clone();
        // The provisioned ACL lets a device publish only as itself.
        if target.device_password.is_some() {
            load.connections = load.devices;
        }
        LoadSpec {
            load,
            host: target.host.clone(),
            port: target.port,
            device_prefix: device_prefix.into(),
            device_password: target.device_password.clone(),
            client_prefix: format!("co2-bench-pub-{:08x}", rand::random::<u32>()),
        }
    }

    fn filter(&self) -> String {
        format!("{}/+/emissions", self.topic_prefix)
    }
}

/// Device ids used on provisioned brokers (they need users made in advance).
pub const DEVICE_PREFIX: &str = "bench";

/// Who takes a burst: `members` subscriptions in one `$share` group (one plain
/// subscription when 1), spread over `bridges` bridge processes.
#[derive(Debug, Clone, Copy)]
struct Consumers {
    members: usize,
    bridges: usize,
}

impl Consumers {
    const ONE: Self = Self {
        members: 1,
        bridges: 1,
    };

    /// The figure's tag, the null subscribers' run label, the bridges' run label.
    fn labels(&self, kind: BrokerKind) -> (String, String, String) {
        let m = self.members;
        match (m, self.bridges) {
            (1, _) => (
                format!("{kind} broker"),
                "null subscriber burst".into(),
                "bridge burst".into(),
            ),
            (_, 1) => (
                format!("{kind} broker, one bridge on {m} connections"),
                format!("{m} null subs ($share) burst"),
                format!("bridge, {m} connections, burst"),
            ),
            _ => (
                format!("{kind} broker, {m} in a $share group"),
                format!("{m} null subs ($share) burst"),
                format!("{m} bridges ($share) burst"),
            ),
        }
    }
}

/// Paths and URLs the scenarios need.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Database server URL.
    pub db_url: String,
    /// The bridge binary.
    pub bridge_bin: PathBuf,
    /// Extra `CO2_BRIDGE__...` settings for every bridge started.
    pub bridge_env: Vec<(String, String)>,
    /// Query parameters appended to the bridge's database URL (e.g.
    /// `statement-cache-capacity=8`).
    pub bridge_db_params: Option<String>,
}

/// Samples the CPU time of the broker, this process and the database server.
struct CpuMeter {
    broker: Option<u32>,
    database: Option<u32>,
    start: [f64; 3],
}

fn cpu_of(pid: Option<u32>) -> f64 {
    pid.and_then(|p| crate::bridge::proc_stats(p).ok())
        .map_or(0.0, |s| s.cpu_s)
}

fn database_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        matches!(comm.trim(), "mariadbd" | "mysqld").then_some(pid)
    })
}

impl CpuMeter {
    fn start(target: &Target<'_>) -> Self {
        let broker = target.owned.and_then(TestBroker::pid);
        let database = database_pid();
        let me = Some(std::process::id());
        Self {
            broker,
            database,
            start: [cpu_of(broker), cpu_of(me), cpu_of(database)],
        }
    }

    fn stop(&self) -> OthersCpu {
        let me = Some(std::process::id());
        OthersCpu {
            broker: cpu_of(self.broker) - self.start[0],
            generator: cpu_of(me) - self.start[1],
            database: cpu_of(self.database) - self.start[2],
        }
    }
}

fn consumer_endpoint(target: &Target<'_>, client_id: &str, load: &Load) -> Endpoint {
    Endpoint {
        host: target.host.clone(),
        port: target.port,
        client_id: client_id.into(),
        filter: load.filter(),
        credentials: target.consumer.clone(),
    }
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
        db_url: match &paths.bridge_db_params {
            Some(q) => format!("{}?{q}", db.url()),
            None => db.url(),
        },
        mqtt_port: target.port,
        client_id: client_id.into(),
        topics: load.filter(),
        credentials: target.consumer.clone(),
        extra_env: paths.bridge_env.clone(),
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
    bridges_run(label, paths, target, load, 1).await
}

/// `n` bridges (n > 1: one `$share/co2-bench/...` group, each its own client id)
/// writing into one database.
pub async fn bridges_run(
    label: &str,
    paths: &Paths,
    target: &Target<'_>,
    load: &Load,
    n: usize,
) -> anyhow::Result<RunReport> {
    let db = ScratchDb::create(&paths.db_url, "bridge").await?;
    let mut bridges = Vec::with_capacity(n);
    let mut client_ids = Vec::with_capacity(n);
    let group = unique_client("group");
    for _ in 0..n.max(1) {
        let client_id = unique_client("bridge");
        let mut spec = bridge_spec(paths, target, &db, load, &client_id);
        if n > 1 {
            spec.topics = format!("$share/{group}/{}", spec.topics);
        }
        bridges.push(BridgeProcess::start(&spec).await?);
        client_ids.push(client_id);
    }
    let before: Vec<_> = bridges
        .iter()
        .map(BridgeProcess::stats)
        .collect::<Result<_, _>>()?;
    let since_id = db::max_id(&db.pool).await?;
    let meter = CpuMeter::start(target);
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let sent = outcome.sent.len() as u64;
    db::wait_for_rows(
        &db.pool,
        DEVICE_PREFIX,
        since_id,
        sent,
        Duration::from_secs(15),
        load.wait,
    )
    .await?;
    let after: Vec<_> = bridges
        .iter()
        .map(BridgeProcess::stats)
        .collect::<Result<_, _>>()?;
    let others = meter.stop();
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
    // Peak RSS is the largest bridge's; CPU is all bridges' together.
    let mut usage = BridgeUsage::between(before[0], after[0], a.stored);
    for (b, e) in before.iter().zip(&after).skip(1) {
        let u = BridgeUsage::between(*b, *e, a.stored);
        usage.peak_rss_mib = usage.peak_rss_mib.max(u.peak_rss_mib);
        usage.cpu_s += u.cpu_s;
        usage.cpu_ms_per_10k += u.cpu_ms_per_10k;
    }
    report.bridge = Some(usage);
    report.others_cpu_s = Some(others);
    for bridge in bridges {
        bridge.stop().await?;
    }
    for id in client_ids {
        clear_session(&consumer_endpoint(target, &id, load)).await?;
    }
    db.drop_now().await?;
    Ok(report)
}

/// The broker's ceiling: the same load to a subscriber that acks at once and
/// stores nothing (`members` > 1: that many in one shared-subscription group).
pub async fn null_run(
    label: &str,
    target: &Target<'_>,
    load: &Load,
    members: usize,
) -> anyhow::Result<RunReport> {
    let filter = if members > 1 {
        format!("$share/{}/{}", unique_client("group"), load.filter())
    } else {
        load.filter()
    };
    let mut subs = Vec::new();
    for _ in 0..members.max(1) {
        let endpoint = Endpoint {
            host: target.host.clone(),
            port: target.port,
            client_id: unique_client("null"),
            filter: filter.clone(),
            credentials: target.consumer.clone(),
        };
        subs.push(NullSubscriber::connect(&endpoint, false).await?);
    }
    let meter = CpuMeter::start(target);
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let n = outcome.sent.len() as u64;
    // Wait until the members together have everything, or nothing moves for 10 s.
    let mut last = (0, tokio::time::Instant::now());
    loop {
        let got: u64 = subs.iter().map(|s| s.figures().distinct).sum();
        if got >= n || (got == last.0 && last.1.elapsed() > Duration::from_secs(10)) {
            break;
        }
        if got != last.0 {
            last = (got, tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let others = meter.stop();
    let figures: Vec<_> = subs.iter().map(NullSubscriber::figures).collect();
    for sub in subs {
        sub.disconnect().await;
    }
    let distinct: u64 = figures.iter().map(|f| f.distinct).sum();
    let received: u64 = figures.iter().map(|f| f.received).sum();
    let last_ms = figures.iter().map(|f| f.last_ms).max().unwrap_or(0);
    let wall_s = (last_ms - outcome.first_publish.timestamp_millis()).max(1) as f64 / 1000.0;
    Ok(RunReport {
        label: label.into(),
        broker: target.label.clone(),
        consumer: "null-subscriber".into(),
        published: n,
        stored: distinct,
        lost: n.saturating_sub(distinct),
        duplicates: received.saturating_sub(distinct),
        unexpected: 0,
        wall_s,
        rows_per_s: distinct as f64 / wall_s,
        latency: None,
        publish: Some(outcome.figures()),
        bridge: None,
        others_cpu_s: Some(others),
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
            others_cpu_s: None,
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
    let since_id = db::max_id(&db.pool).await?;
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let n = outcome.sent.len() as u64;
    let spawned = Utc::now().timestamp_millis();
    let bridge = BridgeProcess::start(&spec).await?;
    let before = bridge.stats()?;
    let meter = CpuMeter::start(target);
    db::wait_for_rows(
        &db.pool,
        DEVICE_PREFIX,
        since_id,
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
    report.others_cpu_s = Some(meter.stop());
    report.publish = Some(outcome.figures());
    report.bridge = Some(BridgeUsage::between(before, after, a.stored));
    bridge.stop().await?;
    clear_session(&consumer_endpoint(target, &client_id, load)).await?;
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
    NullSubscriber::connect(&endpoint, true)
        .await?
        .disconnect()
        .await;
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let n = outcome.sent.len() as u64;
    let connected = Utc::now().timestamp_millis();
    let sub = NullSubscriber::connect(&endpoint, true).await?;
    let f = sub.wait_for(n, Duration::from_secs(10)).await;
    sub.disconnect().await;
    clear_session(&endpoint).await?;
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
        others_cpu_s: None,
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
            // A stock broker reads one packet per connection per loop turn, so one
            // subscriber's acks fall behind many publishers; a shared group of 3
            // gets 3 turns, whether 3 bridges or one bridge with 3 connections
            // form it. The provisioned queue absorbs the burst either way.
            let shapes: &[Consumers] = match kind {
                BrokerKind::Stock => &[
                    Consumers::ONE,
                    Consumers {
                        members: 3,
                        bridges: 1,
                    },
                    Consumers {
                        members: 3,
                        bridges: 3,
                    },
                ],
                BrokerKind::Provisioned => &[Consumers::ONE],
            };
            for shape in shapes {
                let members = shape.members;
                let (tag, null_label, bridge_label) = shape.labels(kind);
                let mut shape_paths = paths.clone();
                if shape.bridges < members {
                    shape_paths.bridge_env.push((
                        "CO2_BRIDGE__MQTT__CONNECTIONS".into(),
                        (members / shape.bridges).to_string(),
                    ));
                }
                let paths = &shape_paths;
                let mut pairs_ceiling = Vec::new();
                let mut pairs_broker = Vec::new();
                let mut bridge_rates = Vec::new();
                let mut lost = Vec::new();
                let mut null_lost = Vec::new();
                let mut rss = Vec::new();
                let mut cpu = Vec::new();
                for _ in 0..a.repeat {
                    let null = null_run(&null_label, &target, &burst, members).await?;
                    let bridge =
                        bridges_run(&bridge_label, paths, &target, &burst, shape.bridges).await?;
                    pairs_broker.push((bridge.rows_per_s, null.rows_per_s));
                    pairs_ceiling.push((bridge.rows_per_s, null.rows_per_s.min(db_median)));
                    bridge_rates.push(bridge.rows_per_s);
                    lost.push(bridge.lost as f64);
                    null_lost.push(null.lost as f64);
                    if let Some(b) = bridge.bridge {
                        rss.push(b.peak_rss_mib);
                        cpu.push(b.cpu_ms_per_10k);
                    }
                    push(null, &mut runs);
                    push(bridge, &mut runs);
                }
                figures.extend(value_figure(
                    &format!("bridge burst throughput ({tag})"),
                    "rows/s",
                    &bridge_rates,
                ));
                figures.extend(value_figure(
                    &format!("bridge readings lost ({tag})"),
                    "rows",
                    &lost,
                ));
                figures.extend(value_figure(
                    &format!("null subscriber readings lost ({tag})"),
                    "msgs",
                    &null_lost,
                ));
                figures.extend(ratio_figure(
                    &format!("bridge / min(broker, DB) ceiling ({tag})"),
                    &pairs_ceiling,
                ));
                figures.extend(ratio_figure(
                    &format!("bridge / broker ceiling ({tag})"),
                    &pairs_broker,
                ));
                figures.extend(value_figure(
                    &format!("bridge peak RSS ({tag})"),
                    "MiB",
                    &rss,
                ));
                figures.extend(value_figure(
                    &format!("bridge CPU per 10k readings ({tag})"),
                    "ms",
                    &cpu,
                ));
            }
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
    if want("influx") {
        figures.extend(influx_figures(paths, repo, &burst, &devices, a.repeat).await?);
    }
    Ok(SuiteReport {
        environment,
        runs,
        figures,
    })
}

/// The InfluxDB sink's burst and influxd's ceiling for the same points,
/// alternating, `repeat` times, on one private influxd and a provisioned broker.
async fn influx_figures(
    paths: &Paths,
    repo: &std::path::Path,
    burst: &Load,
    devices: &[String],
    repeat: usize,
) -> anyhow::Result<Vec<Figure>> {
    let influx = co2_testkit::Influx::start().await?;
    let broker = TestBroker::start(BrokerKind::Provisioned, repo, devices).await?;
    let target = Target::owned(&broker);
    let (mut sink, mut ceiling, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeat {
        let run = crate::influx::bridge_run(paths, &target, &influx, burst).await?;
        let sent = synthetic_readings(burst);
        let top = crate::influx::ceiling_run(&influx, &sent).await?;
        tracing::info!(
            run = i + 1,
            sent = run.sent,
            stored = run.stored,
            bridge_rows_per_s = run.rows_per_s as u64,
            ceiling_rows_per_s = top as u64,
            "InfluxDB sink vs ceiling"
        );
        anyhow::ensure!(
            run.stored == run.sent,
            "the InfluxDB sink stored {} of {}",
            run.stored,
            run.sent
        );
        sink.push(run.rows_per_s);
        ceiling.push(top);
        pairs.push((run.rows_per_s, top));
    }
    Ok([
        value_figure("InfluxDB sink, burst (provisioned broker)", "rows/s", &sink),
        value_figure(
            "InfluxDB ceiling, /write of 10,000-line batches, 1 connection",
            "rows/s",
            &ceiling,
        ),
        ratio_figure("InfluxDB sink / influxd ceiling", &pairs),
    ]
    .into_iter()
    .flatten()
    .collect())
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
