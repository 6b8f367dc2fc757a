//! A damaged queue file never stops the publisher: random bytes, a truncated
//! file and a valid database with one page overwritten each start, keep
//! publishing, deliver what could be salvaged (rows in MariaDB through the
//! real bridge) and announce the rest; sequence numbers survive restarts and
//! a replaced queue starts a new epoch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use co2_publisher::spool::{Bounds, NewEntry, Options, Spool};
use co2_testkit::{unique, Broker, Database};
use co2_wire::{Epoch, EventKind, Limits, Reading, Seq, SeqRange};

use crate::support::{
    log_of, queued_lines, spawn_publisher, start_bridge, stored, wait_rows, Listener,
};

/// How a test damages a queue file.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// `head -c 8192 /dev/urandom > queue.sqlite3`.
    RandomBytes,
    /// The last 40 % cut off.
    Truncated,
    /// The page holding reading 150 overwritten with noise.
    CorruptPage,
}

/// A closed queue at `path` with `n` readings stamped in the last hour;
/// returns its epoch and the readings (epoch ms -> cents).
fn queue_with(path: &Path, topic: &str, n: i64) -> (Epoch, BTreeMap<i64, i64>) {
    let mut spool = Spool::open(
        path,
        Options::new(Bounds {
            max_rows: 1_000_000,
            max_age: None,
        }),
    )
    .unwrap();
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut readings = BTreeMap::new();
    let entries: Vec<NewEntry> = (1..=n)
        .map(|i| {
            let r = Reading::new(
                start + chrono::Duration::milliseconds(i * 250),
                400.0 + (i % 700) as f64 + 0.25,
                &Limits::default(),
            )
            .unwrap();
            readings.insert(
                r.time().timestamp_millis(),
                (r.emissions() * 100.0).round() as i64,
            );
            NewEntry::reading(topic, r.to_payload(), r.time().timestamp_millis())
        })
        .collect();
    spool.append(&entries, 0).unwrap();
    (spool.numbering().epoch, readings)
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift: reproducible noise without a dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn damage(path: &Path, how: Damage, needle: &[u8]) {
    match how {
        Damage::RandomBytes => std::fs::write(path, noise(8192, 0x5eed)).unwrap(),
        Damage::Truncated => {
            let len = std::fs::metadata(path).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len * 6 / 10 / 4096 * 4096).unwrap();
        }
        Damage::CorruptPage => {
            let mut bytes = std::fs::read(path).unwrap();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("reading 150 is in the file");
            let page = at / 4096;
            bytes[page * 4096..(page + 1) * 4096].copy_from_slice(&noise(4096, 0xbad));
            std::fs::write(path, bytes).unwrap();
        }
    }
}

fn damaged_files(dir: &Path, device: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("{device}.sqlite3.corrupt-")) && !name.ends_with("-wal")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_queue_is_salvaged_and_publishing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubdmg");
    let broker = Broker::start("").await.unwrap();
    let db = Database::create("pub_dmg").await.unwrap();
    let _bridge = start_bridge(dir.path(), broker.port(), &prefix, &db).await;
    let listener = Listener::start(broker.port(), &prefix).await;

    const OLD: i64 = 2000;
    const NEW: usize = 20;
    let cases = [
        ("dmg-random", Damage::RandomBytes),
        ("dmg-truncated", Damage::Truncated),
        ("dmg-page", Damage::CorruptPage),
    ];
    let mut before = BTreeMap::new();
    let mut pubs = Vec::new();
    for (device, how) in cases {
        let path = dir.path().join(format!("{device}.sqlite3"));
        let topic = format!("{prefix}/{device}/emissions");
        let (epoch, readings) = queue_with(&path, &topic, OLD);
        let (&t150, &v150) = readings.iter().nth(149).unwrap();
        let needle = Reading::new(
            chrono::DateTime::from_timestamp_millis(t150).unwrap(),
            v150 as f64 / 100.0,
            &Limits::default(),
        )
        .unwrap()
        .to_payload();
        damage(&path, how, &needle);
        before.insert(device, (epoch, readings));
        pubs.push(spawn_publisher(
            dir.path(),
            device,
            broker.port(),
            &prefix,
            &["run", "--count", &NEW.to_string()],
            &[],
        ));
    }

    for (p, (device, how)) in pubs.iter_mut().zip(cases) {
        let status = p.wait(Duration::from_secs(60)).await.unwrap();
        let log = log_of(dir.path(), device);
        assert!(status.success(), "{device} exited with {status}: {log}");
        assert!(log.contains("Damaged queue moved aside"), "{device}: {log}");
        assert!(log.contains("left_in_queue=0"), "{device}: {log}");
        assert_eq!(
            damaged_files(dir.path(), device),
            1,
            "{device}: the damaged file is kept"
        );

        let (old_epoch, old) = &before[device];
        let events = listener.events(device);
        let corrupt: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::QueueCorrupt {
                    salvaged,
                    lost,
                    old_epoch,
                    lost_ranges,
                    new_epoch,
                    ..
                } => Some((
                    *salvaged,
                    *lost,
                    *old_epoch,
                    lost_ranges.clone(),
                    *new_epoch,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(corrupt.len(), 1, "{device}: one announcement: {events:?}");
        let (salvaged, lost, announced_old_epoch, lost_ranges, new_epoch) = corrupt[0].clone();

        // What the table holds: the salvaged old readings, unchanged, and the new ones.
        let new_lines = queued_lines(&log);
        assert_eq!(new_lines.len(), NEW, "{device}");
        let want = salvaged as usize + NEW;
        let all_in = wait_rows(&db, device, want, Duration::from_secs(30)).await;
        let rows = stored(&db, device).await;
        assert!(all_in, "{device}: {} rows, want {want}", rows.len());
        assert_eq!(
            rows.len(),
            want,
            "{device}: rows {} want {want}",
            rows.len()
        );
        let old_stored = rows.iter().filter(|(t, _)| old.contains_key(t)).count();
        assert_eq!(old_stored as u64, salvaged, "{device}");
        assert!(
            rows.iter()
                .filter(|(t, _)| old.contains_key(t))
                .all(|(t, v)| old[t] == *v),
            "{device}: a salvaged reading changed"
        );
        for line in &new_lines {
            assert!(
                rows.contains(&(line.ms, line.cents)),
                "{device}: {line:?} not stored"
            );
            // New readings are numbered from 1 in the fresh queue's epoch.
            assert_eq!(line.seq.map(|s| s.epoch()), Some(new_epoch), "{device}");
        }
        let new_numbers: Vec<u64> = new_lines
            .iter()
            .filter_map(|l| l.seq)
            .map(|s| s.n())
            .collect();
        assert_eq!(
            new_numbers,
            (1..=NEW as u64).collect::<Vec<_>>(),
            "{device}"
        );
        assert_ne!(new_epoch, *old_epoch);

        // Salvaged readings keep their old numbers, which the lost ranges do not cover.
        let heard_old: Vec<Seq> = listener
            .readings(device)
            .into_iter()
            .filter(|(t, _, _)| old.contains_key(t))
            .filter_map(|(_, _, s)| s)
            .collect();
        assert!(
            heard_old.iter().all(|s| s.epoch() == *old_epoch),
            "{device}"
        );
        assert!(
            heard_old
                .iter()
                .all(|s| !lost_ranges.iter().any(|r| r.contains(*s))),
            "{device}"
        );
        match how {
            Damage::RandomBytes => {
                assert_eq!(
                    (salvaged, lost, announced_old_epoch),
                    (0, None, None),
                    "{device}"
                );
            }
            Damage::Truncated | Damage::CorruptPage => {
                assert!(
                    salvaged > 0 && salvaged < OLD as u64,
                    "{device}: {salvaged}"
                );
                assert_eq!(lost, Some(OLD as u64 - salvaged), "{device}");
                assert_eq!(announced_old_epoch, Some(*old_epoch), "{device}");
                let covered: u64 = lost_ranges.iter().map(SeqRange::len).sum();
                assert_eq!(covered, OLD as u64 - salvaged, "{device}: {lost_ranges:?}");
            }
        }
        eprintln!(
            "{device} ({how:?}): {salvaged} of {OLD} salvaged, lost {lost:?} in {} ranges; {} rows",
            lost_ranges.len(),
            rows.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_survive_restarts_and_a_replaced_queue_starts_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubseq");
    let broker = Broker::start("").await.unwrap();
    let listener = Listener::start(broker.port(), &prefix).await;
    let device = "seq-a";
    let run = |count: u64| {
        spawn_publisher(
            dir.path(),
            device,
            broker.port(),
            &prefix,
            &["run", "--count", &count.to_string()],
            &[],
        )
    };
    for count in [10, 10] {
        let mut p = run(count);
        assert!(p.wait(Duration::from_secs(30)).await.unwrap().success());
    }
    let heard = listener.readings(device);
    let seqs: Vec<Seq> = heard.iter().filter_map(|(_, _, s)| *s).collect();
    assert_eq!(
        seqs.len(),
        20,
        "every reading carries its number: {heard:?}"
    );
    let epoch = seqs[0].epoch();
    assert!(
        seqs.iter().all(|s| s.epoch() == epoch),
        "one epoch across the restart"
    );
    let mut numbers: Vec<u64> = seqs.iter().map(Seq::n).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());

    std::fs::write(dir.path().join(format!("{device}.sqlite3")), noise(8192, 1)).unwrap();
    let mut p = run(5);
    assert!(p.wait(Duration::from_secs(30)).await.unwrap().success());
    let later: Vec<Seq> = listener
        .readings(device)
        .iter()
        .filter_map(|(_, _, s)| *s)
        .filter(|s| s.epoch() != epoch)
        .collect();
    let numbers: Vec<u64> = later.iter().map(Seq::n).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5], "a new epoch from 1: {later:?}");
    let events = listener.events(device);
    assert!(
        events.iter().any(|e| matches!(e.kind, EventKind::QueueCorrupt { new_epoch, .. } if new_epoch == later[0].epoch())),
        "{events:?}"
    );
    // The payload itself stayed the two-field form.
    let h = listener.heard();
    let reading = h.iter().find(|h| h.topic.ends_with("/emissions")).unwrap();
    assert_eq!(
        std::str::from_utf8(&reading.payload)
            .unwrap()
            .split('|')
            .count(),
        2
    );
}
