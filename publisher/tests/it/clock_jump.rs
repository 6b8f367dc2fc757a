//! The wall clock jumps mid-run (a day forward, an hour back): no reading is
//! stamped with the jumped time, every reading still arrives as a row (real
//! broker, bridge, MariaDB), in time order, and each jump is announced.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use co2_publisher::app;
use co2_publisher::clock::WallClock;
use co2_publisher::config::Settings;
use co2_publisher::uplink::Stats;
use co2_testkit::{unique, wait_until, Broker, Database};
use co2_wire::EventKind;
use tokio_util::sync::CancellationToken;

use crate::support::{start_bridge, stored, wait_rows, Listener};

/// The system clock plus an offset the test moves: the test hook.
#[derive(Default)]
struct Jumpy(AtomicI64);

impl WallClock for Jumpy {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.0.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jumped_clock_never_stamps_a_reading() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubclk");
    let broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_clk").await.unwrap();
    let _bridge = start_bridge(dir.path(), broker.port(), &prefix, &db).await;
    let listener = Listener::start(broker.port(), &prefix).await;
    let device = "clk-a";
    const READINGS: u64 = 80;
    let settings = Settings::from_toml(&format!(
        "device = \"{device}\"\ninterval_ms = 50\nmax_readings = {READINGS}\n\
         [mqtt]\nport = {}\ntopic_prefix = \"{prefix}\"\n\
         [queue]\npath = {:?}\n[status]\npath = {:?}\n\
         [clock]\nrequire_sync = false\nmax_jump_ms = 1000\n",
        broker.port(),
        dir.path().join("q.sqlite3").display().to_string(),
        dir.path().join("status.json").display().to_string(),
    ))
    .unwrap();
    let wall = Arc::new(Jumpy::default());
    let stats = Arc::new(Stats::default());
    let started = Utc::now();
    let task = tokio::spawn(app::run_with(
        settings,
        CancellationToken::new(),
        Arc::clone(&stats),
        wall.clone(),
    ));
    let queued = |n: u64| {
        let stats = Arc::clone(&stats);
        async move {
            assert!(
                wait_until(Duration::from_secs(20), || {
                    let stats = Arc::clone(&stats);
                    async move { Stats::get(&stats.queued) >= n }
                })
                .await,
                "only {} queued",
                Stats::get(&stats.queued)
            );
        }
    };
    // Forward a day, back to normal, back an hour, back to normal.
    for (after, offset) in [(15, 86_400_000), (30, 0), (45, -3_600_000), (60, 0)] {
        queued(after).await;
        wall.0.store(offset, Ordering::SeqCst);
    }
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("publisher did not finish")
        .unwrap()
        .unwrap();
    let finished = Utc::now();
    assert_eq!((summary.queued, summary.left_in_queue), (READINGS, 0));

    assert!(wait_rows(&db, device, READINGS as usize, Duration::from_secs(20)).await);
    let rows = stored(&db, device).await;
    assert_eq!(rows.len(), READINGS as usize);
    let (lo, hi) = (
        (started - chrono::Duration::seconds(1)).timestamp_millis(),
        (finished + chrono::Duration::seconds(1)).timestamp_millis(),
    );
    let bad: Vec<_> = rows.iter().filter(|(t, _)| *t < lo || *t > hi).collect();
    assert!(bad.is_empty(), "stamped with a jumped time: {bad:?}");
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "not in time order"
    );

    let events = listener.events(device);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::ClockJump { by_ms, .. } => {
                format!("jump {}", (*by_ms as f64 / 3.6e6).round())
            }
            other => other.name().to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["jump 24", "clock_resync", "jump -1", "clock_resync"],
        "{events:?}"
    );
    // Each announcement is stamped with a trusted time, never the jumped one.
    assert!(events.iter().all(|e| e
        .at
        .is_some_and(|t| t.timestamp_millis() >= lo && t.timestamp_millis() <= hi)));
    assert_eq!(Stats::get(&stats.clock_jumps), 2);
}
