//! A publisher back online with a backlog says so, and says once when it is
//! delivered: the first run queues 200 readings with nothing listening, the
//! second delivers them. About 3 s.

use std::time::Duration;

use co2_testkit::{free_port, unique, wait_until, Broker};

use crate::support::{log_of, queued_lines, spawn_publisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_reported_while_it_drains_and_once_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("backlog");
    // A window of 10: a backlog is more than 20 readings.
    let extra = [
        ("CO2_PUBLISHER__INTERVAL_MS", "2"),
        ("CO2_PUBLISHER__MQTT__MAX_INFLIGHT", "10"),
    ];
    let mut offline = spawn_publisher(
        d,
        "pi",
        free_port().unwrap(),
        &prefix,
        &["run", "--count", "200"],
        &extra,
    );
    assert!(
        wait_until(Duration::from_secs(20), || async {
            queued_lines(&log_of(d, "pi")).len() >= 200
        })
        .await,
        "{}",
        log_of(d, "pi")
    );
    offline.terminate(Duration::from_secs(10)).await.unwrap();
    let before = log_of(d, "pi").len();
    assert!(!log_of(d, "pi").contains("Delivering a backlog"));

    let broker = Broker::start("").await.unwrap();
    let mut online = spawn_publisher(
        d,
        "pi",
        broker.port(),
        &prefix,
        &["run", "--count", "1"],
        &extra,
    );
    let status = online.wait(Duration::from_secs(20)).await.unwrap();
    let log = log_of(d, "pi");
    let second = log.get(before..).unwrap_or_default();
    assert!(status.success(), "{second}");
    let started = second
        .lines()
        .find(|l| l.contains("Delivering a backlog"))
        .unwrap_or_else(|| panic!("no backlog line:\n{second}"));
    assert!(started.contains("queued=20"), "{started}");
    let drained: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("Backlog delivered"))
        .collect();
    assert_eq!(drained.len(), 1, "{second}");
    assert!(
        drained[0].contains(" delivered=") && drained[0].contains(" took_ms="),
        "{drained:?}"
    );
    eprintln!("{started}\n{}", drained[0]);
}
