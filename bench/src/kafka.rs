//! The Kafka source against the same broker's null consumer, back to back:
//! a backlog of CO2 readings in a private tansu, drained once by a consumer
//! that stores nothing (the broker's own delivery rate to one member) and
//! then by 1, 3, ... bridges in one consumer group writing a throwaway
//! database. Each run gets a fresh topic with the same records. The bridges'
//! group settles on the empty topic before the records are produced (else
//! a rebalance falls inside the drain); production (~0.2 s for 30,000) then
//! overlaps the drain's start. The rate runs from the first record taken (or
//! row stored) to the last; the join is reported apart.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use co2_testkit::KafkaBroker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde::Serialize;

use crate::bridge::{BridgeProcess, BridgeSpec};
use crate::db::{self, ScratchDb};

/// The shape of a Kafka run.
#[derive(Debug, Clone)]
pub struct KafkaLoad {
    /// Records in the backlog.
    pub records: usize,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Devices (record keys), spread round-robin over the partitions.
    pub devices: usize,
}

/// One measured drain.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaRun {
    /// `null consumer` or `N bridge(s)`.
    pub consumer: String,
    /// Records in the backlog.
    pub records: usize,
    /// Distinct records taken (null) or rows stored (bridges).
    pub done: u64,
    /// From start to the first record taken (null consumer) or to the group
    /// holding every partition (bridges), seconds: the join.
    pub join_s: f64,
    /// From the first record or row to the last, seconds.
    pub drain_s: f64,
    /// Records (rows) per second over the drain.
    pub per_s: f64,
    /// CPU seconds the bridges used for the drain, per 1,000 rows.
    pub cpu_ms_per_1000: Option<f64>,
}

const PREFIX: &str = "kb";

fn device(d: usize) -> String {
    format!("{PREFIX}{d:04}")
}

/// Fills a fresh topic with `load.records` readings; returns its name.
async fn backlog(kafka: &KafkaBroker, load: &KafkaLoad) -> anyhow::Result<String> {
    let topic = new_topic(kafka, load).await?;
    produce(kafka, &topic, load).await?;
    Ok(topic)
}

/// A fresh, empty topic of `load.partitions` partitions.
async fn new_topic(kafka: &KafkaBroker, load: &KafkaLoad) -> anyhow::Result<String> {
    let topic = format!("co2bench_{:08x}", rand::random::<u32>());
    kafka.create_topic(&topic, load.partitions).await?;
    Ok(topic)
}

/// Waits until the bridges' group holds every partition of the topic and
/// each bridge that can have one holds one: the group has settled.
async fn group_settled(running: &[BridgeProcess], partitions: u32) -> anyhow::Result<()> {
    let want_each = usize::from(running.len() <= partitions as usize);
    let settled = co2_testkit::wait_until(Duration::from_secs(60), || async {
        let mut total = 0.0;
        let mut holding = 0;
        for bridge in running {
            let held = match co2_testkit::http_get(bridge.http, "/metrics").await {
                Ok((200, scrape)) => {
                    co2_testkit::metric_value(&scrape, "co2_bridge_kafka_partitions_assigned")
                        .unwrap_or(0.0)
                }
                _ => 0.0,
            };
            total += held;
            holding += usize::from(held >= 1.0);
        }
        total == f64::from(partitions) && holding >= running.len() * want_each
    })
    .await;
    if !settled {
        bail!("the bridges' consumer group did not settle within 60 s");
    }
    Ok(())
}

/// Produces `load.records` CO2 readings to `topic`, device `d` keyed
/// `device(d)` on partition `d % partitions`.
async fn produce(kafka: &KafkaBroker, topic: &str, load: &KafkaLoad) -> anyhow::Result<()> {
    let producer = kafka.producer()?;
    let base = chrono::DateTime::from_timestamp(1_767_225_600, 0).context("base time")?;
    let started = Instant::now();
    for chunk in (0..load.records).collect::<Vec<_>>().chunks(2000) {
        let sends = chunk.iter().map(|&i| {
            let d = i % load.devices;
            let time = base + chrono::Duration::milliseconds(i as i64);
            let payload = format!("{}|{}.25", time.format("%Y-%m-%d %H:%M:%S%.3f"), i % 90_000);
            let partition = (d % load.partitions as usize) as i32;
            let producer = &producer;
            async move {
                producer
                    .send(topic, Some(partition), Some(&device(d)), payload.as_bytes())
                    .await
            }
        });
        for sent in futures_util::future::join_all(sends).await {
            sent?;
        }
    }
    tracing::info!(
        records = load.records,
        s = started.elapsed().as_secs_f64(),
        "backlog produced"
    );
    Ok(())
}

/// Drains a backlog with a consumer that stores nothing.
pub async fn null_run(kafka: &KafkaBroker, load: &KafkaLoad) -> anyhow::Result<KafkaRun> {
    let topic = backlog(kafka, load).await?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set(
            "group.id",
            format!("co2bench-null-{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let started = Instant::now();
    let mut seen = std::collections::HashSet::with_capacity(load.records);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while seen.len() < load.records {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("the null consumer waited 60 s for a record")??;
        use rdkafka::Message;
        seen.insert((message.partition(), message.offset()));
        last = Instant::now();
        first.get_or_insert(last);
    }
    let first = first.unwrap_or(started);
    let drain_s = (last - first).as_secs_f64().max(0.001);
    Ok(KafkaRun {
        consumer: "null consumer".into(),
        records: load.records,
        done: seen.len() as u64,
        join_s: (first - started).as_secs_f64(),
        drain_s,
        per_s: seen.len() as f64 / drain_s,
        cpu_ms_per_1000: None,
    })
}

/// Drains a backlog with `bridges` bridges in one consumer group.
pub async fn bridges_run(
    kafka: &KafkaBroker,
    load: &KafkaLoad,
    bridges: usize,
    bin: &std::path::Path,
    db_url: &str,
    extra_env: &[(String, String)],
) -> anyhow::Result<KafkaRun> {
    // The group settles on an empty topic first: with the backlog already
    // there, the first member to join would drain part of it alone and the
    // rest would wait out a rebalance, which measures the join, not the drain.
    let topic = new_topic(kafka, load).await?;
    let scratch = ScratchDb::create(db_url, "kafka").await?;
    let dir = std::env::temp_dir();
    let config = dir.join(format!("co2bench-kafka-{:08x}.toml", rand::random::<u32>()));
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nenabled = false\n\n[[sources]]\nkind = \"kafka\"\nbootstrap_servers = [\"{}\"]\n\
             topics = [\"{topic}\"]\ngroup_id = \"co2bench-{:08x}\"\ndevice_from_key = true\n\
             session_timeout_ms = 6000\n",
            kafka.bootstrap(),
            rand::random::<u32>()
        ),
    )?;
    let started = Instant::now();
    let mut running = Vec::new();
    for b in 0..bridges {
        let mut env = extra_env.to_vec();
        env.push(("CO2_BRIDGE_CONFIG".into(), config.display().to_string()));
        let spec = BridgeSpec {
            bin: bin.to_path_buf(),
            db_url: scratch.url(),
            mqtt_port: 1,
            client_id: format!("co2bench-kafka-{b}-{:08x}", rand::random::<u32>()),
            topics: topic.clone(),
            credentials: None,
            extra_env: env,
            log: dir.join(format!("co2bench-kafka-bridge-{b}.log")),
        };
        running.push(BridgeProcess::start(&spec).await?);
    }
    group_settled(&running, load.partitions).await?;
    let settled_at = Instant::now();
    produce(kafka, &topic, load).await?;
    let cpu_before: f64 = running
        .iter()
        .filter_map(|b| b.stats().ok())
        .map(|s| s.cpu_s)
        .sum();
    let n = load.records as u64;
    let mut first: Option<Instant> = None;
    let mut last_change = (0u64, Instant::now());
    let stored = loop {
        let stored = db::count(&scratch.pool, PREFIX).await?;
        let now = Instant::now();
        if stored > 0 {
            first.get_or_insert(now);
        }
        if stored != last_change.0 {
            last_change = (stored, now);
        }
        if stored >= n {
            break stored;
        }
        if now - last_change.1 > Duration::from_secs(60) {
            bail!(
                "bridges stalled at {stored} of {n} rows; see {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done_at = Instant::now();
    let cpu_after: f64 = running
        .iter()
        .filter_map(|b| b.stats().ok())
        .map(|s| s.cpu_s)
        .sum();
    for bridge in running {
        bridge.stop().await?;
    }
    scratch.drop_now().await?;
    let _ = std::fs::remove_file(&config);
    let first = first.unwrap_or(started);
    let drain_s = (done_at - first).as_secs_f64().max(0.001);
    Ok(KafkaRun {
        consumer: format!("{bridges} bridge{}", if bridges == 1 { "" } else { "s" }),
        records: load.records,
        done: stored,
        join_s: (settled_at - started).as_secs_f64(),
        drain_s,
        per_s: stored as f64 / drain_s,
        cpu_ms_per_1000: Some((cpu_after - cpu_before) * 1000.0 / (stored.max(1) as f64 / 1000.0)),
    })
}

/// The table of a series of runs.
pub fn table(runs: &[KafkaRun]) -> String {
    let mut out = String::from(
        "consumer         records    done   join_s  drain_s      per_s  cpu_ms/1000\n",
    );
    for r in runs {
        out.push_str(&format!(
            "{:<15} {:>8} {:>7} {:>8.1} {:>8.2} {:>10.0} {:>12}\n",
            r.consumer,
            r.records,
            r.done,
            r.join_s,
            r.drain_s,
            r.per_s,
            r.cpu_ms_per_1000.map_or("-".into(), |c| format!("{c:.1}")),
        ));
    }
    out
}
