//! The queue's disk fills up (a 2 MiB tmpfs the test mounts, then fills):
//! the publisher holds readings in memory and keeps delivering them, the
//! memory bound holds while the broker is also away, the readings it had to
//! drop are announced with their numbers, and when space returns it moves
//! back to disk and delivers what waited there. Real broker, bridge, MariaDB.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use co2_publisher::queue::Store;
use co2_publisher::status::{self, Status};
use co2_testkit::{unique, wait_until, Broker, Database};
use co2_wire::{DropCause, EventKind, SeqRange};

use crate::support::{
    log_of, queued_lines, spawn_publisher, start_bridge, stored, wait_rows, Listener,
};

const MEMORY_MAX: u64 = 100;

/// A tmpfs of `size` mounted on `dir`; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0xa5u8; 4096];
        loop {
            if let Err(e) = f.write_all(&block).and_then(|_| f.sync_data()) {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                return path;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there: detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Runs `co2-publisher status` with the publisher's environment: (exit 0, output).
fn status_command(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(crate::support::publisher_bin());
    cmd.arg("status").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Reads the status file, checking the memory bound every time.
fn status_of(path: &Path) -> Option<Status> {
    let s = status::read(path).ok()?;
    if let Some(m) = &s.queue.memory {
        assert!(
            m.readings <= MEMORY_MAX && m.high_water <= MEMORY_MAX,
            "memory bound broken: {m:?}"
        );
    }
    Some(s)
}

async fn wait_status(path: &Path, what: &str, check: impl Fn(&Status) -> bool) -> Status {
    let ok = wait_until(Duration::from_secs(30), || async {
        status_of(path).is_some_and(|s| check(&s))
    })
    .await;
    let s = status_of(path);
    assert!(ok, "status never showed {what}: {s:#?}");
    s.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_sends_readings_through_memory_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubfull");
    let mut broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_full").await.unwrap();
    let _bridge = start_bridge(dir.path(), broker.port(), &prefix, &db).await;
    let listener = Listener::start(broker.port(), &prefix).await;
    let disk = Tmpfs::mount(&dir.path().join("disk"), "2m");
    let device = "full-a";
    let queue = disk.0.join("queue.sqlite3");
    let status_file = dir.path().join("status.json");
    let env = [
        ("CO2_PUBLISHER__QUEUE__PATH", queue.to_str().unwrap()),
        ("CO2_PUBLISHER__QUEUE__MEMORY_MAX_ROWS", "100"),
        ("CO2_PUBLISHER__QUEUE__RETRY_S", "1"),
        ("CO2_PUBLISHER__STATUS__PATH", status_file.to_str().unwrap()),
        ("CO2_PUBLISHER__STATUS__INTERVAL_MS", "200"),
    ];
    let port = broker.port();
    let spawn = |args: &[&str]| spawn_publisher(dir.path(), device, port, &prefix, args, &env);

    let mut publisher = spawn(&["run"]);
    assert!(
        wait_rows(&db, device, 20, Duration::from_secs(20)).await,
        "{}",
        log_of(dir.path(), device)
    );

    // The card fills up, and the broker goes away too: memory must hold the line.
    let filler = disk.fill();
    wait_status(&status_file, "memory mode", |s| {
        s.queue.store == Store::Memory
    })
    .await;
    broker.stop().await.unwrap();
    wait_status(&status_file, "drops by the memory bound", |s| {
        s.dropped.memory_bound >= 2 * MEMORY_MAX
    })
    .await;

    // What a person on the Pi sees: the running service's state, no second instance.
    let (ok, text) = status_command(&env);
    assert!(
        ok && text.contains("IN MEMORY") && text.contains("NOT connected"),
        "{text}"
    );

    // The broker is back, the disk still full: readings arrive from memory.
    broker.resume().await.unwrap();
    let rows_before = stored(&db, device).await.len();
    assert!(wait_rows(&db, device, rows_before + 100, Duration::from_secs(30)).await);
    let s = status_of(&status_file).unwrap();
    assert_eq!(
        s.queue.store,
        Store::Memory,
        "still in memory while delivering"
    );

    // Space returns: back to disk.
    std::fs::remove_file(&filler).unwrap();
    let back = wait_status(&status_file, "disk mode again", |s| {
        s.queue.store == Store::Disk
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(publisher
        .terminate(Duration::from_secs(20))
        .await
        .unwrap()
        .success());
    // A clean run delivers whatever waited on disk.
    let mut last = spawn(&["run", "--count", "3"]);
    let finished = last.wait(Duration::from_secs(60)).await;
    let (ok, text) = status_command(&env);
    assert!(
        !ok && text.contains("stopped") && text.contains("on disk"),
        "{text}"
    );
    let log = log_of(dir.path(), device);
    if !finished.as_ref().is_ok_and(|s| s.success()) {
        std::fs::write("/tmp/disk_full.log", &log).unwrap();
        panic!("last run: {finished:?}");
    }
    assert!(log.contains("left_in_queue=0"), "{log}");

    // Announcements: to memory and back, and the drops with their numbers.
    let events = listener.events(device);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert!(
        kinds.contains(&"memory_mode") && kinds.contains(&"disk_mode"),
        "{kinds:?}"
    );
    let mut dropped_ranges: Vec<SeqRange> = Vec::new();
    let mut announced = 0;
    for e in &events {
        if let EventKind::ReadingsDropped {
            cause,
            count,
            ranges,
            ..
        } = &e.kind
        {
            assert_eq!(*cause, DropCause::MemoryBound);
            announced += count;
            dropped_ranges.extend(ranges);
        }
    }
    assert_eq!(
        announced, back.dropped.memory_bound,
        "every drop announced, exactly"
    );

    // Rows: every reading reported queued is a row, unless announced as dropped.
    let lines = queued_lines(&log);
    assert!(lines.iter().any(|l| l.store == "memory") && lines.iter().any(|l| l.store == "disk"));
    assert!(
        wait_rows(
            &db,
            device,
            lines.len() - announced as usize,
            Duration::from_secs(30)
        )
        .await
    );
    let rows: std::collections::BTreeSet<(i64, i64)> =
        stored(&db, device).await.into_iter().collect();
    let is_dropped = |l: &crate::support::QueuedLine| {
        l.seq
            .is_some_and(|s| dropped_ranges.iter().any(|r| r.contains(s)))
    };
    let lost: Vec<_> = lines
        .iter()
        .filter(|l| !is_dropped(l) && !rows.contains(&(l.ms, l.cents)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} readings neither stored nor announced, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    let dropped_lines = lines.iter().filter(|l| is_dropped(l)).count() as u64;
    assert_eq!(
        dropped_lines, announced,
        "the ranges name exactly the dropped readings"
    );
    // A reading in flight when the broker stopped may have reached it before
    // memory gave up on it: announced as dropped, stored all the same.
    let arrived_anyway = lines
        .iter()
        .filter(|l| is_dropped(l) && rows.contains(&(l.ms, l.cents)))
        .count();
    assert!(arrived_anyway <= 100, "{arrived_anyway}");
    eprintln!(
        "{} readings queued ({} in memory), {} rows, {announced} dropped by the memory bound and announced \
         ({arrived_anyway} of them had reached the broker), events {kinds:?}",
        lines.len(),
        lines.iter().filter(|l| l.store == "memory").count(),
        rows.len()
    );
    drop(last);
    drop(publisher);
}
