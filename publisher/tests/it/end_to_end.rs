//! End to end: 3 publisher binaries -> test-owned Mosquitto (stopped for 10 s
//! mid-run) -> the real bridge binary -> MariaDB, with one publisher killed
//! (SIGKILL) and restarted. Every reading a publisher queued must be stored
//! exactly once, in time order per device. And: its readings say they are
//! UTC, so a bridge set to read other devices' local times stores them at
//! their instant.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use co2_testkit::{unique, wait_until, Broker, ChildProcess, Database};

use crate::support::{
    queued_readings, spawn_publisher as spawn, start_bridge, start_bridge_with, stored,
};

fn spawn_publisher(dir: &Path, device: &str, port: u16, prefix: &str, count: u64) -> ChildProcess {
    spawn(
        dir,
        device,
        port,
        prefix,
        &["run", "--count", &count.to_string()],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_kill_lose_nothing_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pube2e");
    let mut broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_e2e").await.unwrap();
    let _bridge = start_bridge(dir.path(), broker.port(), &prefix, &db).await;

    // 3 devices at 20 ms: 1000 readings each is ~20 s of sampling.
    let devices = ["e2e-a", "e2e-b", "e2e-c"];
    let mut pubs: Vec<ChildProcess> = devices
        .iter()
        .map(|d| spawn_publisher(dir.path(), d, broker.port(), &prefix, 1000))
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.resume().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill one publisher mid-flight, then start it again on the same queue.
    pubs[0].kill().await.unwrap();
    pubs[0] = spawn_publisher(dir.path(), devices[0], broker.port(), &prefix, 200);

    for (p, d) in pubs.iter_mut().zip(devices) {
        let status = p.wait(Duration::from_secs(120)).await.unwrap();
        let log = std::fs::read_to_string(dir.path().join(format!("{d}.log"))).unwrap();
        assert!(status.success(), "{d} exited with {status}: {log}");
        assert!(
            log.contains("left_in_queue=0"),
            "{d} left readings queued: {log}"
        );
    }

    for d in devices {
        let log = std::fs::read_to_string(dir.path().join(format!("{d}.log"))).unwrap();
        let produced: BTreeMap<i64, i64> = queued_readings(&log);
        // The killed one produced part of its 1000, then 200 more after the restart.
        let (min, max) = if d == devices[0] {
            (201, 1199)
        } else {
            (1000, 1000)
        };
        assert!(
            (min..=max).contains(&produced.len()),
            "{d}: {} readings logged",
            produced.len()
        );
        // The outage must have been noticed, or this test proves nothing.
        assert!(
            log.contains("Connection to the broker lost"),
            "{d} never lost the broker: {log}"
        );
        let want = produced.len();
        let all_in = wait_until(Duration::from_secs(60), || {
            let db = &db;
            async move { stored(db, d).await.len() >= want }
        })
        .await;
        let rows = stored(&db, d).await;
        let stored_map: BTreeMap<i64, i64> = rows.iter().copied().collect();
        let missing: Vec<_> = produced
            .iter()
            .filter(|(t, v)| stored_map.get(t) != Some(v))
            .take(5)
            .collect();
        assert!(
            all_in && missing.is_empty(),
            "{d}: {} of {} queued readings missing or different, e.g. {missing:?}",
            produced
                .iter()
                .filter(|(t, v)| stored_map.get(t) != Some(v))
                .count(),
            produced.len()
        );
        assert_eq!(stored_map.len(), rows.len(), "{d}: a reading stored twice");
        // A reading committed to the queue in the instant before SIGKILL may
        // have no log line yet: at most that one row is not in the log.
        let unlogged = rows.len() - produced.len();
        let allowed = usize::from(d == devices[0]);
        assert!(
            unlogged <= allowed,
            "{d}: {unlogged} stored readings were never logged"
        );
        assert!(
            rows.windows(2).all(|w| w[0].0 < w[1].0),
            "{d}: rows not stored in time order"
        );
        eprintln!(
            "{d}: {} readings queued, {} rows stored, {} connections",
            produced.len(),
            rows.len(),
            log.matches("Connected to the broker").count()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_reading_local_times_of_seoul_stores_its_readings_at_their_instant() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubzone");
    let broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_zone").await.unwrap();
    // As a bridge for Pis that send Seoul's wall-clock time without an offset.
    let _bridge = start_bridge_with(
        dir.path(),
        broker.port(),
        &prefix,
        &db,
        &[("CO2_BRIDGE__WIRE__TIME_ZONE", "Asia/Seoul")],
    )
    .await;
    let device = "zone-a";
    let mut publisher = spawn_publisher(dir.path(), device, broker.port(), &prefix, 20);
    let status = publisher.wait(Duration::from_secs(60)).await.unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("{device}.log"))).unwrap();
    assert!(status.success(), "exited with {status}: {log}");
    let produced = queued_readings(&log);
    assert_eq!(produced.len(), 20, "{log}");
    let db = &db;
    let all_in = wait_until(Duration::from_secs(30), || async move {
        stored(db, device).await.len() >= 20
    })
    .await;
    assert!(all_in, "{:?}", stored(db, device).await);
    let rows: BTreeMap<i64, i64> = stored(db, device).await.into_iter().collect();
    assert_eq!(rows, produced);
}
