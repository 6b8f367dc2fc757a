//! Proof of completeness end to end: the real publisher numbers its readings,
//! a test-owned Mosquitto carries them, the real bridge stores them and its
//! completeness scan accounts for every number: stored, announced dropped by
//! the publisher, or lost on the way.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use co2_testkit::{unique, wait_until, Broker, ChildProcess, Database};

use crate::support::{spawn_publisher, start_bridge_with};

/// A scan every second; a missing number is final after 3 s.
const FAST_SCAN: [(&str, &str); 2] = [
    ("CO2_BRIDGE__COMPLETENESS__SCAN_INTERVAL_S", "1"),
    ("CO2_BRIDGE__COMPLETENESS__LATE_AFTER_S", "3"),
];

async fn bridge(dir: &Path, broker: &Broker, prefix: &str, db: &Database) -> ChildProcess {
    start_bridge_with(dir, broker.port(), prefix, db, &FAST_SCAN).await
}

/// The numbers stored for `device`, and their epochs.
async fn numbers(db: &Database, device: &str) -> (BTreeSet<u64>, BTreeSet<String>) {
    let rows: Vec<(Option<String>, Option<u64>)> =
        sqlx::query_as("SELECT CAST(seq_epoch AS CHAR), seq FROM co2_emissions WHERE device = ?")
            .bind(device)
            .fetch_all(db.pool())
            .await
            .unwrap();
    let epochs = rows.iter().filter_map(|(e, _)| e.clone()).collect();
    let seqs = rows.iter().filter_map(|(_, n)| *n).collect();
    (seqs, epochs)
}

/// (first, last, announced) of every final gap of `device`, once the scan
/// has read every row and event and no gap is open any more.
async fn settled_gaps(db: &Database, device: &str) -> Vec<(u64, u64, u64)> {
    let settled = wait_until(Duration::from_secs(30), || async {
        let behind: i64 = sqlx::query_scalar(
            "SELECT CAST((SELECT COALESCE(MAX(id), 0) FROM co2_emissions) AS SIGNED) \
                  - CAST(COALESCE((SELECT last_id FROM completeness_progress WHERE name = 'readings'), 0) AS SIGNED) \
                  + CAST((SELECT COALESCE(MAX(id), 0) FROM device_events) AS SIGNED) \
                  - CAST(COALESCE((SELECT last_id FROM completeness_progress WHERE name = 'events'), 0) AS SIGNED)",
        )
        .fetch_one(db.pool())
        .await
        .unwrap_or(1);
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM reading_gaps WHERE device = ? AND state = 'open'",
        )
        .bind(device)
        .fetch_one(db.pool())
        .await
        .unwrap_or(1);
        behind == 0 && open == 0
    })
    .await;
    assert!(settled, "gaps of {device} still open after 30 s");
    sqlx::query_as(
        "SELECT first_seq, last_seq, announced FROM reading_gaps \
         WHERE device = ? AND state = 'final' ORDER BY first_seq",
    )
    .bind(device)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// What the dashboard's completeness query says for `device`: stored / (stored + missing).
async fn complete_fraction(db: &Database, device: &str) -> f64 {
    let stored: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM co2_emissions WHERE device = ? AND seq IS NOT NULL",
    )
    .bind(device)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let missing: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(last_seq - first_seq + 1), 0) AS SIGNED) FROM reading_gaps \
         WHERE device = ? AND state = 'final'",
    )
    .bind(device)
    .fetch_one(db.pool())
    .await
    .unwrap();
    stored as f64 / (stored + missing) as f64
}

/// Waits until `device` has `n` numbered rows.
async fn wait_numbered(db: &Database, device: &str, n: usize) -> bool {
    wait_until(Duration::from_secs(60), || async {
        numbers(db, device).await.0.len() >= n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_is_complete_and_a_restart_keeps_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("complete");
    let broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_complete").await.unwrap();
    let _bridge = bridge(dir.path(), &broker, &prefix, &db).await;
    let device = "full-1";
    let mut publisher = spawn_publisher(
        dir.path(),
        device,
        broker.port(),
        &prefix,
        &["run", "--count", "400"],
        &[],
    );
    // Killed halfway and started again on the same queue: the numbers go on.
    assert!(wait_numbered(&db, device, 150).await);
    publisher.kill().await.unwrap();
    let mut publisher = spawn_publisher(
        dir.path(),
        device,
        broker.port(),
        &prefix,
        &["run", "--count", "200"],
        &[],
    );
    assert!(publisher
        .wait(Duration::from_secs(60))
        .await
        .unwrap()
        .success());
    let (seqs, epochs) = numbers(&db, device).await;
    assert_eq!(epochs.len(), 1, "one epoch across the restart: {epochs:?}");
    let highest = *seqs.iter().next_back().unwrap();
    assert_eq!(
        seqs,
        (1..=highest).collect(),
        "every number from 1 to {highest} is a row"
    );
    // Let the scan pass over it: no gap, 100 %.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(settled_gaps(&db, device).await, []);
    assert_eq!(complete_fraction(&db, device).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_a_stock_broker_dropped_are_exactly_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("dropped");
    // A broker that keeps at most 100 messages for a session that is away.
    let broker = Broker::start("max_queued_messages 100\n").await.unwrap();
    let db = Database::create("pub_dropped").await.unwrap();
    // The bridge's session exists, then the bridge goes away.
    let mut first = bridge(dir.path(), &broker, &prefix, &db).await;
    first.terminate(Duration::from_secs(20)).await.unwrap();
    let device = "burst-1";
    let mut publisher = spawn_publisher(
        dir.path(),
        device,
        broker.port(),
        &prefix,
        &["run", "--count", "1500"],
        &[("CO2_PUBLISHER__INTERVAL_MS", "5")],
    );
    // About half of the readings are published while no bridge is there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _bridge = bridge(dir.path(), &broker, &prefix, &db).await;
    assert!(publisher
        .wait(Duration::from_secs(60))
        .await
        .unwrap()
        .success());
    assert!(
        wait_until(Duration::from_secs(30), || async {
            numbers(&db, device).await.0.contains(&1500)
        })
        .await
    );
    let (seqs, _) = numbers(&db, device).await;
    let missing: BTreeSet<u64> = (1..=1500).filter(|n| !seqs.contains(n)).collect();
    assert!(
        missing.len() > 100,
        "the broker dropped only {} readings",
        missing.len()
    );
    let gaps = settled_gaps(&db, device).await;
    let in_gaps: BTreeSet<u64> = gaps.iter().flat_map(|(a, b, _)| *a..=*b).collect();
    assert_eq!(
        in_gaps, missing,
        "the gaps are exactly the numbers missing from the table"
    );
    assert!(
        gaps.iter().all(|(_, _, announced)| *announced == 0),
        "nothing of it was announced: {gaps:?}"
    );
    let fraction = complete_fraction(&db, device).await;
    assert!(
        (fraction - seqs.len() as f64 / 1500.0).abs() < 1e-9,
        "{fraction}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_overflowed_is_an_announced_gap_of_exactly_that_many() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("announce");
    let mut broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_announce").await.unwrap();
    let _bridge = bridge(dir.path(), &broker, &prefix, &db).await;
    // The broker is away while the publisher measures 40 readings into a queue of 5.
    broker.stop().await.unwrap();
    let device = "bound-1";
    let mut publisher = spawn_publisher(
        dir.path(),
        device,
        broker.port(),
        &prefix,
        &["run"],
        &[
            ("CO2_PUBLISHER__QUEUE__MAX_ROWS", "5"),
            ("CO2_PUBLISHER__MAX_READINGS", "40"),
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.resume().await.unwrap();
    assert!(wait_numbered(&db, device, 5).await);
    let announced = wait_until(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_events WHERE device = ? AND kind = 'readings_dropped'",
        )
        .bind(device)
        .fetch_one(db.pool())
        .await
        .unwrap_or(0);
        n >= 1
    })
    .await;
    assert!(announced, "no readings_dropped announcement was stored");
    let (seqs, _) = numbers(&db, device).await;
    assert_eq!(seqs, (36..=40).collect(), "the newest five were kept");
    assert_eq!(
        settled_gaps(&db, device).await,
        [(1, 35, 35)],
        "35 missing, all announced"
    );
    let _ = publisher.terminate(Duration::from_secs(20)).await;
}
