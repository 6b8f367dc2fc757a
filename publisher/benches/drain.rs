//! Drain benchmark: a backlog of queued readings (default 100,000) is
//! published to a test-owned Mosquitto after an "outage", and the time until
//! every one is PUBACKed and deleted from the queue is measured.
//!
//! `cargo bench -p co2-publisher --bench drain` (release profile).
//! Env: DRAIN_READINGS (default 100000), DRAIN_WINDOWS (max_inflight values
//! to try, default "100,1000"), DRAIN_RUNS (per window, default 3),
//! DRAIN_PROTOCOL (`v5`, the default, or `v311`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use co2_publisher::app::timing;
use co2_publisher::config::Settings;
use co2_publisher::link::{mqtt_options, RumqttLink};
use co2_publisher::queue::{Queue, QueueHandle};
use co2_publisher::spool::{Bounds, NewEntry, Options, Spool};
use co2_publisher::uplink::{Signals, Stats, Uplink};
use co2_testkit::Broker;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills a fresh queue with `n` canonical payloads, 10,000 per transaction.
fn backlog(path: &std::path::Path, n: usize) -> Spool {
    let mut spool = Spool::open(
        path,
        Options::new(Bounds {
            max_rows: 10_000_000,
            max_age: None,
        }),
    )
    .unwrap();
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let entries: Vec<NewEntry> = chunk
            .iter()
            .map(|i| {
                let t = start + chrono::Duration::milliseconds(*i as i64);
                NewEntry::reading(
                    "bench/pi-bench/emissions",
                    format!(
                        "{}|{:.2}",
                        t.format("%Y-%m-%d %H:%M:%S%.3f"),
                        400.0 + (*i % 500) as f64
                    )
                    .into_bytes(),
                    t.timestamp_millis(),
                )
            })
            .collect();
        spool
            .append(&entries, chrono::Utc::now().timestamp_millis())
            .unwrap();
    }
    spool
}

async fn drain_once(broker: &Broker, n: usize, window: u16) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    let spool = backlog(&path, n);
    assert_eq!(spool.len(), n as u64);
    let protocol = std::env::var("DRAIN_PROTOCOL").unwrap_or_else(|_| "v5".into());
    let settings = Settings::from_toml(&format!(
        "device = \"pi-bench\"\n[mqtt]\nport = {}\nmax_inflight = {window}\nprotocol = \"{protocol}\"\n\
         [clock]\nrequire_sync = false\n",
        broker.port()
    ))
    .unwrap();
    let spool = QueueHandle::new(Queue::for_tests(spool));
    let stats = Arc::new(Stats::default());
    let signals = Signals::default();
    // Nothing more will be sampled: deliver the backlog, then stop.
    signals.input_done.store(true, Ordering::Release);
    let uplink = Uplink::new(
        RumqttLink::start(mqtt_options(&settings).unwrap()),
        spool.clone(),
        Arc::clone(&stats),
        signals,
        timing(&settings),
    );
    let started = Instant::now();
    uplink.run().await.unwrap();
    let elapsed = started.elapsed();
    assert!(spool.is_empty(), "{} left", spool.len());
    (elapsed, Stats::get(&stats.acked))
}

fn main() {
    let n: usize = env_or("DRAIN_READINGS", 100_000);
    let runs: usize = env_or("DRAIN_RUNS", 3);
    let windows: Vec<u16> = std::env::var("DRAIN_WINDOWS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start("").await.unwrap();
        println!("drain of {n} queued readings to a local Mosquitto (QoS 1, no subscriber)");
        for window in windows {
            for run in 1..=runs {
                let (elapsed, acked) = drain_once(&broker, n, window).await;
                println!(
                    "max_inflight={window:>5} run={run} acked={acked} time={:.3}s rate={:.0} readings/s",
                    elapsed.as_secs_f64(),
                    acked as f64 / elapsed.as_secs_f64()
                );
            }
        }
    });
}
