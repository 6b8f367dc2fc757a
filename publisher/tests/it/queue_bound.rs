//! With the broker unreachable and a tiny bound, the oldest readings are
//! dropped and counted, and the newest kept; once the broker is back, the
//! drop is announced with exactly the numbers dropped.

use std::sync::Arc;
use std::time::Duration;

use co2_publisher::app;
use co2_publisher::config::Settings;
use co2_publisher::spool::{Bounds, Options, Spool};
use co2_publisher::store::Kind;
use co2_publisher::uplink::Stats;
use co2_testkit::{free_port, unique, wait_until, Broker};
use co2_wire::{DropCause, EventKind, SeqRange};

use crate::support::Listener;
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
    // The five readings, and the announcements that the queue reached 80 %
    // and 95 % of its bound (waiting for a broker, like the readings).
    assert_eq!(summary.left_in_queue, 7);

    // The five kept are the five newest: the last five of the 42 queue ids
    // a fresh queue gave (40 readings; the announcements took ids 5 and 7).
    let spool = Spool::open(
        &queue,
        Options::new(Bounds {
            max_rows: 5,
            max_age: None,
        }),
    )
    .unwrap();
    let all = spool.next_after(0, 100).unwrap();
    let (kept, events): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.kind == Kind::Reading);
    let ids: Vec<i64> = kept.iter().map(|e| e.id).collect();
    assert_eq!(ids, (38..=42).collect::<Vec<_>>());
    let event_ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(event_ids, [5, 7]);
    let times: Vec<String> = kept
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[tokio::test]
async fn an_overflow_while_the_broker_is_away_is_announced_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubbound");
    let mut broker = Broker::start("").await.unwrap();
    let listener = Listener::start(broker.port(), &prefix).await;
    broker.stop().await.unwrap();
    let (stats, task) = start_away(&dir, broker.port(), &prefix, "bound-b", 40, 5);
    let all_queued = wait_until(Duration::from_secs(20), || {
        let stats = Arc::clone(&stats);
        async move { Stats::get(&stats.queued) == 40 }
    })
    .await;
    assert!(all_queued);
    broker.resume().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("publisher did not deliver and stop")
        .unwrap()
        .unwrap();
    assert_eq!((summary.dropped, summary.left_in_queue), (35, 0));

    let heard = wait_until(Duration::from_secs(10), || async {
        let events = listener.events("bound-b");
        listener.readings("bound-b").len() >= 5
            && events
                .iter()
                .any(|e| matches!(e.kind, EventKind::ReadingsDropped { .. }))
    })
    .await;
    assert!(heard, "heard only {:?}", listener.heard());
    let numbers: Vec<_> = listener
        .readings("bound-b")
        .iter()
        .map(|(_, _, s)| s.unwrap())
        .collect();
    let epoch = numbers[0].epoch();
    let ns: Vec<u64> = numbers.iter().map(|s| s.n()).collect();
    assert_eq!(ns, [36, 37, 38, 39, 40], "the five newest were kept");
    let events = listener.events("bound-b");
    let (drops, levels): (Vec<_>, Vec<_>) = events
        .iter()
        .map(|e| e.kind.clone())
        .partition(|k| matches!(k, EventKind::ReadingsDropped { .. }));
    assert_eq!(
        drops,
        [EventKind::ReadingsDropped {
            cause: DropCause::MaxRows,
            count: 35,
            unnumbered: 0,
            ranges: vec![SeqRange::new(epoch, 1, 35).unwrap()],
        }],
        "{events:?}"
    );
    // Filling, the queue was announced at 80 % (4 of 5) and at 95 % (full),
    // once each, though it stayed full for 35 more readings.
    let level = |percent, readings| EventKind::QueueFilling {
        bound: DropCause::MaxRows,
        percent,
        readings,
    };
    assert_eq!(levels, [level(80, 4), level(100, 5)]);
}

#[tokio::test]
async fn a_queue_nearing_its_bound_is_announced_before_anything_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("publevel");
    let mut broker = Broker::start("").await.unwrap();
    let listener = Listener::start(broker.port(), &prefix).await;
    broker.stop().await.unwrap();
    // 17 readings into a queue of 20: 85 %, past the first level only.
    let (stats, task) = start_away(&dir, broker.port(), &prefix, "level", 17, 20);
    let announced = wait_until(Duration::from_secs(20), || {
        let stats = Arc::clone(&stats);
        async move { Stats::get(&stats.queued) == 17 && Stats::get(&stats.events_queued) >= 1 }
    })
    .await;
    assert!(announced, "queued {}", Stats::get(&stats.queued));
    broker.resume().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("publisher did not deliver and stop")
        .unwrap()
        .unwrap();
    assert_eq!((summary.dropped, summary.left_in_queue), (0, 0));
    let heard = wait_until(Duration::from_secs(10), || async {
        listener.readings("level").len() >= 17 && !listener.events("level").is_empty()
    })
    .await;
    assert!(heard, "heard only {:?}", listener.heard());
    let kinds: Vec<EventKind> = listener
        .events("level")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // One announcement, when the 16th reading took it to 80 %.
    assert_eq!(
        kinds,
        [EventKind::QueueFilling {
            bound: DropCause::MaxRows,
            percent: 80,
            readings: 16,
        }]
    );
}

/// A publisher of `device` sending `readings` readings every 5 ms into a
/// queue of `max_rows`, to the broker on `port` (stopped by the caller, so
/// that they queue); its stats, and its task, which ends once all are delivered.
fn start_away(
    dir: &tempfile::TempDir,
    port: u16,
    prefix: &str,
    device: &str,
    readings: u64,
    max_rows: u64,
) -> (
    Arc<Stats>,
    tokio::task::JoinHandle<Result<app::Summary, app::AppError>>,
) {
    let settings = Settings::from_toml(&format!(
        "device = \"{device}\"\ninterval_ms = 5\nmax_readings = {readings}\n\
         [mqtt]\nport = {port}\ntopic_prefix = \"{prefix}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 100\n\
         [queue]\npath = {:?}\nmax_rows = {max_rows}\n[clock]\nrequire_sync = false\n\
         [status]\npath = {:?}\n",
        dir.path().join("q.sqlite3").display().to_string(),
        dir.path().join("status.json").display().to_string()
    ))
    .unwrap();
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(app::run_with_stats(
        settings,
        CancellationToken::new(),
        Arc::clone(&stats),
    ));
    (stats, task)
}
