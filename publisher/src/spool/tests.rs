use super::*;
use co2_wire::{DropCause, Epoch, Seq};

const HOUR_MS: i64 = 3_600_000;

fn entry(n: i64) -> NewEntry {
    NewEntry::reading("co2/a/emissions", format!("p{n}").into_bytes(), n * 1000)
}

fn payloads(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect()
}

fn unbounded() -> Bounds {
    Bounds {
        max_rows: 1_000_000,
        max_age: None,
    }
}

#[test]
fn append_ack_and_replay_in_order() {
    let mut s = Spool::open_in_memory(unbounded()).unwrap();
    let out = s
        .append(&(1..=5).map(entry).collect::<Vec<_>>(), 0)
        .unwrap();
    assert_eq!(out.dropped, Dropped::default());
    let ids = out.ids;
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let first = s.next_after(0, 3).unwrap();
    assert_eq!(payloads(&first), ["p1", "p2", "p3"]);
    let rest = s.next_after(first[2].id, 10).unwrap();
    assert_eq!(payloads(&rest), ["p4", "p5"]);
    // Acks may arrive out of order; what is left replays oldest first.
    assert_eq!(s.ack(&[ids[1], ids[3]]).unwrap(), 2);
    assert_eq!(s.ack(&[ids[1]]).unwrap(), 0, "an ack counts once");
    assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p1", "p3", "p5"]);
    assert_eq!(s.len(), 3);
}

#[test]
fn readings_are_numbered_from_one_and_events_are_not() {
    let mut s = Spool::open_in_memory(unbounded()).unwrap();
    let epoch = s.numbering().epoch;
    assert!(s.fresh_numbering());
    let out = s
        .append(
            &[
                entry(1),
                NewEntry::event("co2/a/events", b"{}".to_vec(), 0),
                entry(2),
            ],
            0,
        )
        .unwrap();
    let ns: Vec<Option<u64>> = out.seqs.iter().map(|s| s.map(|s| s.n())).collect();
    assert_eq!(ns, [Some(1), None, Some(2)]);
    assert!(out.seqs.iter().flatten().all(|s| s.epoch() == epoch));
    let stored = s.next_after(0, 10).unwrap();
    assert_eq!(stored[0].seq, out.seqs[0]);
    assert_eq!(stored[1].kind, Kind::Event);
    assert_eq!((s.readings(), s.events()), (2, 1));
    // A number it already has is kept (moved from memory, salvaged).
    let moved = NewEntry {
        seq: Seq::new(Epoch::new(5), 77),
        ..entry(3)
    };
    let out = s.append(&[moved], 0).unwrap();
    assert_eq!(out.seqs[0], Seq::new(Epoch::new(5), 77));
    assert_eq!(
        s.numbering().next,
        3,
        "the queue's own numbering did not move"
    );
}

#[test]
fn ids_are_not_reused_after_everything_is_acked() {
    let mut s = Spool::open_in_memory(unbounded()).unwrap();
    let ids = s.append(&[entry(1)], 0).unwrap().ids;
    s.ack(&ids).unwrap();
    let again = s.append(&[entry(2)], 0).unwrap().ids;
    assert!(again[0] > ids[0]);
}

#[test]
fn row_bound_drops_the_oldest_counts_them_and_keeps_their_numbers_for_announcing() {
    let mut s = Spool::open_in_memory(Bounds {
        max_rows: 3,
        max_age: None,
    })
    .unwrap();
    let epoch = s.numbering().epoch;
    let mut dropped = 0;
    for n in 1..=10 {
        dropped += s.append(&[entry(n)], 0).unwrap().dropped.over_rows;
    }
    assert_eq!(dropped, 7);
    assert_eq!(s.len(), 3);
    assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p8", "p9", "p10"]);
    let pending = s.pending_drops().causes();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].cause, DropCause::MaxRows);
    assert_eq!(
        pending[0].ranges,
        [co2_wire::SeqRange::new(epoch, 1, 7).unwrap()]
    );
    // Events are never dropped by the reading bounds.
    s.append(&[NewEntry::event("e", b"{}".to_vec(), 0)], 0)
        .unwrap();
    let out = s
        .append(&(11..=15).map(entry).collect::<Vec<_>>(), 0)
        .unwrap();
    assert_eq!(out.dropped.over_rows, 5);
    let left = s.next_after(0, 10).unwrap();
    assert_eq!(payloads(&left), ["{}", "p13", "p14", "p15"]);
    assert_eq!(s.pending_drops().total(), 12);
}

#[test]
fn announcing_drops_queues_events_and_clears_the_ledger() {
    let mut s = Spool::open_in_memory(Bounds {
        max_rows: 1,
        max_age: None,
    })
    .unwrap();
    s.append(&(1..=4).map(entry).collect::<Vec<_>>(), 0)
        .unwrap();
    assert_eq!(s.pending_drops().total(), 3);
    let n = s
        .announce_drops(0, |ledger| {
            ledger
                .announcements()
                .into_iter()
                .map(|_| NewEntry::event("e", b"drop".to_vec(), 0))
                .collect()
        })
        .unwrap();
    assert_eq!(n, 1);
    assert!(s.pending_drops().is_empty());
    assert_eq!(s.events(), 1);
    assert_eq!(s.announce_drops(0, |_| unreachable!()).unwrap(), 0);
}

#[test]
fn age_bound_drops_old_readings() {
    let mut s = Spool::open_in_memory(Bounds {
        max_rows: 100,
        max_age: Some(Duration::from_secs(3600)),
    })
    .unwrap();
    let old = NewEntry {
        stamped_ms: 1,
        ..entry(1)
    };
    let fresh = NewEntry {
        stamped_ms: 2 * HOUR_MS,
        ..entry(2)
    };
    s.append(&[old, fresh], HOUR_MS / 2).unwrap();
    assert_eq!(s.len(), 2, "both young enough when appended");
    let d = s.trim(2 * HOUR_MS).unwrap();
    assert_eq!(d.too_old, 1);
    assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p2"]);
    assert_eq!(s.pending_drops().causes()[0].cause, DropCause::MaxAge);
}

#[test]
fn survives_reopen_with_its_numbering_and_locks_out_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/queue.sqlite3");
    let (epoch, ledger) = {
        let mut s = Spool::open(
            &path,
            Options::new(Bounds {
                max_rows: 3,
                max_age: None,
            }),
        )
        .unwrap();
        s.append(&(1..=5).map(entry).collect::<Vec<_>>(), 0)
            .unwrap();
        let second = Spool::open(&path, Options::new(unbounded()));
        assert!(
            matches!(second, Err(SpoolError::Locked(_))),
            "{:?}",
            second.err()
        );
        (s.numbering().epoch, s.pending_drops().clone())
    };
    let mut s = Spool::open(&path, Options::new(unbounded())).unwrap();
    assert!(!s.fresh_numbering());
    assert_eq!(s.len(), 3);
    assert_eq!(payloads(&s.next_after(0, 10).unwrap()), ["p3", "p4", "p5"]);
    assert_eq!(s.numbering(), Numbering { epoch, next: 6 });
    assert_eq!(
        s.pending_drops(),
        &ledger,
        "unannounced drops survive a restart"
    );
    let out = s.append(&[entry(6)], 0).unwrap();
    assert_eq!(out.seqs[0], Seq::new(epoch, 6));
}

#[test]
fn a_queue_from_before_numbering_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT,
                stamped_ms INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL);
             INSERT INTO readings (stamped_ms, topic, payload) VALUES (1, 't', x'6f6c64');",
        )
        .unwrap();
    }
    let mut s = Spool::open(&path, Options::new(unbounded())).unwrap();
    assert!(s.fresh_numbering());
    let old = s.next_after(0, 10).unwrap();
    assert_eq!(
        (old.len(), old[0].seq, old[0].kind),
        (1, None, Kind::Reading)
    );
    let out = s.append(&[entry(1)], 0).unwrap();
    assert_eq!(out.seqs[0].map(|s| s.n()), Some(1));
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite3");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let err = Spool::open(&path, Options::new(unbounded())).err().unwrap();
    assert_eq!(err.failure(), Failure::Corrupt, "{err}");
}
