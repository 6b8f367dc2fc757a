//! SIGKILL at random moments, 200 times, while the publisher samples every
//! 20 ms and publishes through the real broker and bridge into MariaDB: after
//! each restart the queue opens (never moved aside as damaged), and every
//! reading the publisher reported as queued (its "Reading queued" line,
//! written after the commit) ends up as exactly one row. The numbering
//! continues across all restarts in one epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use co2_testkit::{unique, Broker, Database};
use rand::Rng;

use crate::support::{log_of, queued_lines, spawn_publisher, start_bridge, stored, wait_rows};

const KILLS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubkill");
    let broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_kill").await.unwrap();
    let _bridge = start_bridge(dir.path(), broker.port(), &prefix, &db).await;
    let device = "kill-a";
    let spawn =
        |args: &[&str]| spawn_publisher(dir.path(), device, broker.port(), &prefix, args, &[]);

    let started = std::time::Instant::now();
    for _ in 0..KILLS {
        let mut p = spawn(&["run"]);
        // Anywhere from start-up (queue not yet open) to well into publishing.
        let ms = rand::rng().random_range(5..500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        p.kill().await.unwrap();
    }
    let killing = started.elapsed();
    // One clean run delivers whatever the last kill left queued.
    let mut last = spawn(&["run", "--count", "3"]);
    let status = last.wait(Duration::from_secs(60)).await.unwrap();
    let log = log_of(dir.path(), device);
    assert!(status.success(), "last run exited with {status}");
    assert!(
        log.contains("left_in_queue=0"),
        "the last run left readings queued"
    );

    let runs = log.matches("Publisher starting").count();
    assert!(
        runs > KILLS / 2,
        "only {runs} of {} runs got as far as the queue",
        KILLS + 1
    );
    assert!(!log.contains("damaged"), "a kill left the queue damaged");
    let corrupt = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(corrupt, 0);

    let lines = queued_lines(&log);
    let logged: BTreeMap<i64, i64> = lines.iter().map(|l| (l.ms, l.cents)).collect();
    assert_eq!(
        logged.len(),
        lines.len(),
        "two logged readings share a time"
    );
    assert!(wait_rows(&db, device, logged.len(), Duration::from_secs(60)).await);
    let rows = stored(&db, device).await;
    let by_time: BTreeMap<i64, i64> = rows.iter().copied().collect();
    assert_eq!(by_time.len(), rows.len(), "a reading stored twice");
    let missing: Vec<_> = logged
        .iter()
        .filter(|(t, v)| by_time.get(t) != Some(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} readings reported queued are not rows, e.g. {:?}",
        missing.len(),
        logged.len(),
        &missing[..missing.len().min(5)]
    );
    let unreported = rows.len() - logged.len();

    // One epoch throughout and increasing numbers. A number no line reports
    // belongs to a reading committed just before a kill cut off its line (two
    // kills in a row can cut off two): it was delivered all the same, so the
    // numbers no line reports are exactly the extra rows.
    let seqs: Vec<_> = lines.iter().map(|l| l.seq.expect("numbered")).collect();
    assert!(
        seqs.iter().all(|s| s.epoch() == seqs[0].epoch()),
        "the epoch changed"
    );
    let backwards: Vec<_> = seqs
        .windows(2)
        .filter(|w| w[1].n() <= w[0].n())
        .map(|w| (w[0].n(), w[1].n()))
        .collect();
    assert!(backwards.is_empty(), "numbers out of order: {backwards:?}");
    let skipped = seqs[0].n() - 1
        + seqs
            .windows(2)
            .map(|w| w[1].n() - w[0].n() - 1)
            .sum::<u64>();
    assert_eq!(
        unreported as u64, skipped,
        "rows never reported queued vs numbers no line reports"
    );
    eprintln!(
        "{KILLS} kills in {:.0} s, {runs} runs opened the queue: {} readings reported queued, \
         {} rows ({unreported} unreported, as many numbers unreported)",
        killing.as_secs_f64(),
        logged.len(),
        rows.len()
    );
}
