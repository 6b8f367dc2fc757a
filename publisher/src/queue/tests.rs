use super::*;
use std::path::PathBuf;

use crate::clock::SystemClock;
use crate::config::Synchronous;
use crate::salvage::{Retention, Topics};
use crate::spool::{Bounds, Options};
use co2_wire::{DeviceEvent, DropCause};

fn cfg(path: PathBuf, max_rows: u64, memory_max_rows: u64) -> QueueConfig {
    QueueConfig {
        path,
        options: Options {
            bounds: Bounds {
                max_rows,
                max_age: None,
            },
            synchronous: Synchronous::Full,
        },
        memory_max_rows,
        retry: Duration::from_millis(1),
        retention: Retention {
            files: 3,
            bytes: u64::MAX,
        },
        topics: Topics {
            readings: "co2/a/emissions".into(),
            events: "co2/a/events".into(),
        },
    }
}

fn clock() -> Arc<Timekeeper> {
    let tk = Timekeeper::new(Arc::new(SystemClock), Duration::from_secs(2));
    tk.start();
    Arc::new(tk)
}

fn events(q: &mut Queue) -> Vec<DeviceEvent> {
    q.fetch(q.generation(), 0, 10_000)
        .entries
        .iter()
        .filter(|e| e.kind == crate::spool::Kind::Event)
        .map(|e| DeviceEvent::decode(&e.payload).unwrap())
        .collect()
}

#[test]
fn a_damaged_file_at_start_is_replaced_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let stats = Arc::new(Stats::default());
    let mut q = Queue::open(cfg(path.clone(), 100, 10), Arc::clone(&stats), clock()).unwrap();
    assert_eq!(q.store(), Store::Disk);
    assert_eq!(Stats::get(&stats.corrupt_files), 1);
    let queued = q.push_reading(b"2026-01-01 00:00:00|1.00".to_vec(), 1);
    assert_eq!(queued.store, Store::Disk);
    assert_eq!(queued.seq.map(|s| s.n()), Some(1));
    let ev = events(&mut q);
    assert!(
        matches!(
            ev[0].kind,
            EventKind::QueueCorrupt {
                salvaged: 0,
                lost: None,
                ..
            }
        ),
        "{ev:?}"
    );
    let damaged: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(damaged.len(), 1);
}

#[test]
fn an_unwritable_disk_goes_to_memory_and_back_keeping_numbers_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: SQLite cannot open it.
    let path = dir.path().join("queue.sqlite3");
    std::fs::create_dir(&path).unwrap();
    let stats = Arc::new(Stats::default());
    let mut q = Queue::open(cfg(path.clone(), 100, 3), Arc::clone(&stats), clock()).unwrap();
    assert_eq!(q.store(), Store::Memory);
    let g = q.generation();
    let epoch = q.numbering().unwrap().epoch;
    for i in 0..5 {
        let queued = q.push_reading(format!("2026-01-01 00:00:0{i}|1.00").into_bytes(), 1);
        assert_eq!(queued.store, Store::Memory);
    }
    assert_eq!(Stats::get(&stats.dropped_memory), 2);
    assert_eq!(q.snapshot().memory.unwrap().high_water, 3);
    // The disk comes back.
    std::fs::remove_dir(&path).unwrap();
    assert!(q.retry_disk(true));
    assert_eq!(q.store(), Store::Disk);
    assert_ne!(q.generation(), g);
    let stale = q.fetch(g, 0, 10);
    assert!(stale.stale && stale.entries.is_empty());
    let all = q.fetch(q.generation(), 0, 100).entries;
    let numbers: Vec<u64> = all.iter().filter_map(|e| e.seq).map(|s| s.n()).collect();
    assert_eq!(
        numbers,
        [3, 4, 5],
        "the 3 newest, numbered in memory's epoch"
    );
    assert!(all.iter().filter_map(|e| e.seq).all(|s| s.epoch() == epoch));
    // Memory's numbering continues on disk.
    let next = q.push_reading(b"2026-01-01 00:00:09|1.00".to_vec(), 1);
    assert_eq!(next.seq, Seq::new(epoch, 6));
    // The drops survive the move and are announced exactly.
    assert!(q.housekeeping(true));
    let ev = events(&mut q);
    let kinds: Vec<&str> = ev.iter().map(|e| e.kind.name()).collect();
    // The memory queue (3 readings) was announced full when the third came.
    assert_eq!(
        kinds,
        [
            "memory_mode",
            "queue_filling",
            "disk_mode",
            "readings_dropped"
        ]
    );
    assert_eq!(
        ev[1].kind,
        EventKind::QueueFilling {
            bound: DropCause::MemoryBound,
            percent: 100,
            readings: 3
        }
    );
    assert!(matches!(
        &ev[3].kind,
        EventKind::ReadingsDropped { cause: DropCause::MemoryBound, count: 2, ranges, .. }
            if ranges[0].first() == 1 && ranges[0].last() == 2
    ));
}

#[test]
fn runtime_corruption_replaces_the_file_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    let stats = Arc::new(Stats::default());
    let mut q = Queue::open(cfg(path.clone(), 100, 10), Arc::clone(&stats), clock()).unwrap();
    let first = q.push_reading(b"2026-01-01 00:00:00|1.00".to_vec(), 1);
    let g = q.generation();
    q.disk_failed(SpoolError::Corrupt {
        path: path.clone(),
        reason: "test".into(),
    });
    assert_ne!(q.generation(), g);
    let again = q.push_reading(b"2026-01-01 00:00:01|1.00".to_vec(), 2);
    assert_eq!(again.store, Store::Disk);
    assert_ne!(
        again.seq.unwrap().epoch(),
        first.seq.unwrap().epoch(),
        "a new epoch"
    );
    let entries = q.fetch(q.generation(), 0, 10).entries;
    assert_eq!(
        entries.iter().filter(|e| e.seq == first.seq).count(),
        1,
        "salvaged with its number"
    );
}
