//! With the broker unreachable and a tiny bound, the oldest readings are
//! dropped and counted, and the newest kept.

use std::sync::Arc;
use std::time::Duration;

use co2_publisher::app;
use co2_publisher::config::Settings;
use co2_publisher::spool::{Bounds, Options, Spool};
use co2_publisher::uplink::Stats;
use co2_testkit::{free_port, wait_until};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn full_queue_drops_the_oldest_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue.sqlite3");
    // Nothing listens on this port: every connection attempt is refused.
    let dead_port = free_port().unwrap();
    let settings = Settings::from_toml(&format!(
        "device = \"bound-test\"\ninterval_ms = 5\nmax_readings = 40\n\
         [mqtt]\nport = {dead_port}\nreconnect_min_ms = 50\nreconnect_max_ms = 100\n\
         [queue]\npath = {:?}\nmax_rows = 5\n[clock]\nrequire_sync = false\n\
         [status]\npath = {:?}\n",
        queue.display().to_string(),
        dir.path().join("status.json").display().to_string()
    ))
    .unwrap();
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app::run_with_stats(
        settings,
        shutdown.clone(),
        Arc::clone(&stats),
    ));
    let all_queued = wait_until(Duration::from_secs(20), || {
        let stats = Arc::clone(&stats);
        async move { Stats::get(&stats.queued) == 40 }
    })
    .await;
    assert!(all_queued, "queued only {}", Stats::get(&stats.queued));
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.queued, 40);
    assert_eq!(summary.dropped, 35, "{summary:?}");
    assert_eq!(summary.acked, 0);
    assert_eq!(summary.left_in_queue, 5);

    // The five kept are the five newest: queue ids 36..=40 of a fresh queue.
    let spool = Spool::open(
        &queue,
        Options::new(Bounds {
            max_rows: 5,
            max_age: None,
        }),
    )
    .unwrap();
    let kept = spool.next_after(0, 100).unwrap();
    let ids: Vec<i64> = kept.iter().map(|e| e.id).collect();
    assert_eq!(ids, (36..=40).collect::<Vec<_>>());
    let times: Vec<String> = kept
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}
