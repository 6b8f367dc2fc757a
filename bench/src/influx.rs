//! The InfluxDB sink: the bridge writing a burst to a private influxd, and
//! that influxd's own ceiling for the same points, back to back.
//!
//! The bridge run publishes the burst to a provisioned broker and waits until
//! `SELECT count(emissions)` reaches what was sent; rows/s is readings over
//! first publish to that moment (polled every 50 ms). The ceiling writes the
//! same number of points of the same series, 10,000 lines per request, one
//! request after another, straight to `/write`.

use std::time::{Duration, Instant};

use co2_testkit::Influx;

use crate::account::Sent;
use crate::bridge::{BridgeProcess, BridgeSpec};
use crate::load::{self, Load};
use crate::run::{Paths, Target, DEVICE_PREFIX};
use crate::sink::{clear_session, Endpoint};

/// Lines per request of the ceiling run.
pub const CEILING_BATCH: usize = 10_000;

/// What one bridge run stored.
#[derive(Debug, Clone, Copy)]
pub struct SinkRun {
    /// Readings published.
    pub sent: u64,
    /// Points counted in the measurement afterwards.
    pub stored: u64,
    /// sent / seconds from the first publish until every point was counted.
    pub rows_per_s: f64,
}

/// The bridge (CO2 route and dead letters to an InfluxDB sink) taking `load`.
pub async fn bridge_run(
    paths: &Paths,
    target: &Target<'_>,
    influx: &Influx,
    load: &Load,
) -> anyhow::Result<SinkRun> {
    let db = influx.create_database("bench").await?;
    let client_id = format!("co2-bench-influx-{:08x}", rand::random::<u32>());
    let mut extra_env = paths.bridge_env.clone();
    extra_env.extend(
        [
            ("CO2_BRIDGE__SINKS__INFLUX__KIND", "influxdb".to_owned()),
            ("CO2_BRIDGE__SINKS__INFLUX__URL", influx.url()),
            ("CO2_BRIDGE__SINKS__INFLUX__DATABASE", db.clone()),
            ("CO2_BRIDGE__CO2__SINK", "influx".to_owned()),
            ("CO2_BRIDGE__CO2__MEASUREMENT", "co2".to_owned()),
            ("CO2_BRIDGE__DEAD_LETTERS__SINK", "influx".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let spec = BridgeSpec {
        bin: paths.bridge_bin.clone(),
        // Not used: no route writes to MySQL.
        db_url: "mysql://root@127.0.0.1:1/unused".into(),
        mqtt_port: target.port,
        client_id: client_id.clone(),
        topics: format!("{}/+/emissions", load.topic_prefix),
        credentials: target.consumer.clone(),
        extra_env,
        log: std::env::temp_dir().join(format!("{client_id}.log")),
    };
    let bridge = BridgeProcess::start(&spec).await?;
    let outcome = load::run(&load.spec(target, DEVICE_PREFIX)).await?;
    let sent = outcome.sent.len() as u64;
    let q = "SELECT count(emissions) FROM co2";
    let deadline = Instant::now() + load.wait;
    while (influx.scalar(&db, q).await? as u64) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = (chrono::Utc::now() - outcome.first_publish).num_milliseconds() as f64 / 1000.0;
    // Settle, then count again: a point stored twice would not show (it
    // overwrites), a lost one would.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = influx.scalar(&db, q).await? as u64;
    if stored != sent {
        tracing::warn!(sent, stored, log = %bridge.log_tail(), "InfluxDB bridge run incomplete");
    }
    bridge.stop().await?;
    clear_session(&Endpoint {
        host: target.host.clone(),
        port: target.port,
        client_id,
        filter: spec.topics.clone(),
        credentials: target.consumer.clone(),
    })
    .await?;
    influx.execute(&format!("DROP DATABASE \"{db}\"")).await?;
    Ok(SinkRun {
        sent,
        stored,
        rows_per_s: sent as f64 / seconds.max(0.001),
    })
}

/// influxd's own ceiling: the points of `sent` as line protocol, in requests
/// of [`CEILING_BATCH`] lines; returns points per second.
pub async fn ceiling_run(influx: &Influx, sent: &[Sent]) -> anyhow::Result<f64> {
    let db = influx.create_database("ceiling").await?;
    let bodies: Vec<String> = sent
        .chunks(CEILING_BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "co2,device={} emissions={}.{:02} {}\n",
                        s.device,
                        400 + i % 1600,
                        i % 100,
                        s.stamp_ms
                    )
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for body in bodies {
        let (status, text) = influx.write(&db, body, "ms").await?;
        anyhow::ensure!(status == 204, "ceiling write answered {status}: {text}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let stored = influx
        .scalar(&db, "SELECT count(emissions) FROM co2")
        .await? as usize;
    anyhow::ensure!(
        stored == sent.len(),
        "ceiling stored {stored} of {}",
        sent.len()
    );
    influx.execute(&format!("DROP DATABASE \"{db}\"")).await?;
    Ok(sent.len() as f64 / seconds.max(0.001))
}
