//! The in-memory queue that holds readings while the disk cannot be written
//! (full, read-only, failing). Bounded: beyond `max_readings` the oldest
//! readings are dropped, and their numbers recorded so the drop is announced.
//! It numbers readings in an epoch of its own: the disk's numbering cannot be
//! continued safely without writing it down.

use std::collections::VecDeque;
use std::time::Duration;

use co2_wire::DropCause;

use crate::ledger::{DropLedger, Numbering};
use crate::store::{Appended, Dropped, Entry, Kind, NewEntry, QueueStore, SpoolError};

/// Most events held in memory; beyond it the oldest go (counted).
pub const MAX_MEMORY_EVENTS: usize = 1_000;

/// What an append to memory did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryAppended {
    /// The entries appended, with their ids and numbers.
    pub entries: Vec<Entry>,
    /// Readings dropped to stay within the bound.
    pub dropped: u64,
    /// Events dropped to stay within [`MAX_MEMORY_EVENTS`].
    pub events_dropped: u64,
}

/// The bounded in-memory queue.
#[derive(Debug)]
pub struct MemoryQueue {
    entries: VecDeque<Entry>,
    next_id: i64,
    max_readings: u64,
    readings: u64,
    events: u64,
    numbering: Numbering,
    ledger: DropLedger,
    high_water: u64,
}

impl MemoryQueue {
    /// An empty queue holding at most `max_readings` readings, numbering in `numbering`.
    pub fn new(max_readings: u64, numbering: Numbering) -> Self {
        Self {
            entries: VecDeque::new(),
            next_id: 1,
            max_readings: max_readings.max(1),
            readings: 0,
            events: 0,
            numbering,
            ledger: DropLedger::default(),
            high_water: 0,
        }
    }

    /// Readings and events held.
    pub fn len(&self) -> u64 {
        self.readings + self.events
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Readings held.
    pub fn readings(&self) -> u64 {
        self.readings
    }

    /// The bound.
    pub fn max_readings(&self) -> u64 {
        self.max_readings
    }

    /// Most readings held at once.
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// The numbering: the next reading gets `numbering().next`.
    pub fn numbering(&self) -> Numbering {
        self.numbering
    }

    /// Drops not yet announced.
    pub fn pending_drops(&self) -> &DropLedger {
        &self.ledger
    }

    /// Takes the drops for announcing.
    pub fn take_drops(&mut self) -> DropLedger {
        std::mem::take(&mut self.ledger)
    }

    /// When the oldest held reading was stamped (Unix ms).
    pub fn oldest_reading_ms(&self) -> Option<i64> {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::Reading)
            .map(|e| e.stamped_ms)
            .min()
    }

    /// Appends, numbering readings without a number, then drops the oldest
    /// beyond the bounds.
    pub fn append(&mut self, new: Vec<NewEntry>) -> MemoryAppended {
        let mut out = MemoryAppended::default();
        for e in new {
            let seq = match (e.kind, e.seq) {
                (_, Some(seq)) => Some(seq),
                (Kind::Reading, None) => Some(self.numbering.take()),
                (Kind::Event, None) => None,
            };
            let entry = Entry {
                id: self.next_id,
                kind: e.kind,
                topic: e.topic,
                payload: e.payload,
                seq,
                stamped_ms: e.stamped_ms,
            };
            self.next_id += 1;
            match entry.kind {
                Kind::Reading => self.readings += 1,
                Kind::Event => self.events += 1,
            }
            out.entries.push(entry.clone());
            self.entries.push_back(entry);
        }
        while self.readings > self.max_readings {
            let Some(seq) = self.remove_oldest(Kind::Reading) else {
                break;
            };
            self.ledger.add(DropCause::MemoryBound, [seq]);
            out.dropped += 1;
        }
        while self.events as usize > MAX_MEMORY_EVENTS {
            if self.remove_oldest(Kind::Event).is_none() {
                break;
            }
            out.events_dropped += 1;
        }
        self.high_water = self.high_water.max(self.readings);
        out
    }

    /// Removes the oldest entry of `kind`; returns its number.
    fn remove_oldest(&mut self, kind: Kind) -> Option<Option<co2_wire::Seq>> {
        let at = self.entries.iter().position(|e| e.kind == kind)?;
        let e = self.entries.remove(at)?;
        match e.kind {
            Kind::Reading => self.readings -= 1,
            Kind::Event => self.events -= 1,
        }
        Some(e.seq)
    }

    /// Drops readings stamped before `now_ms - max_age`; returns how many.
    pub fn trim(&mut self, now_ms: i64, max_age: Duration) -> u64 {
        let cutoff = now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX));
        let mut dropped = Vec::new();
        self.entries.retain(|e| {
            let old = e.kind == Kind::Reading && e.stamped_ms < cutoff;
            if old {
                dropped.push(e.seq);
            }
            !old
        });
        self.readings -= dropped.len() as u64;
        let n = dropped.len() as u64;
        self.ledger.add(DropCause::MaxAge, dropped);
        n
    }

    /// Up to `limit` entries with an id greater than `after`, oldest first.
    pub fn next_after(&self, after: i64, limit: usize) -> Vec<Entry> {
        // Ids are increasing, so the first one past `after` is found by bisection.
        let start = self.entries.partition_point(|e| e.id <= after);
        self.entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Removes acknowledged entries; returns how many were held.
    pub fn ack(&mut self, ids: &[i64]) -> u64 {
        let mut removed = 0;
        for id in ids {
            let Ok(at) = self.entries.binary_search_by_key(id, |e| e.id) else {
                continue;
            };
            if let Some(e) = self.entries.remove(at) {
                match e.kind {
                    Kind::Reading => self.readings -= 1,
                    Kind::Event => self.events -= 1,
                }
                removed += 1;
            }
        }
        removed
    }

    /// Everything held, oldest first, with its number, for moving to disk.
    pub fn contents(&self) -> Vec<NewEntry> {
        self.entries.iter().cloned().map(NewEntry::from).collect()
    }

    /// Forgets everything (it has been moved to disk).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.readings = 0;
        self.events = 0;
        self.ledger = DropLedger::default();
    }
}

/// Memory's calls never fail.
impl QueueStore for MemoryQueue {
    fn len(&self) -> u64 {
        MemoryQueue::len(self)
    }

    fn readings(&self) -> u64 {
        self.readings
    }

    fn numbering(&self) -> Numbering {
        self.numbering
    }

    fn pending_drops(&self) -> &DropLedger {
        &self.ledger
    }

    fn oldest_reading_ms(&self) -> Result<Option<i64>, SpoolError> {
        Ok(MemoryQueue::oldest_reading_ms(self))
    }

    /// Memory applies its count bound only; its age bound is [`QueueStore::trim`].
    fn append(&mut self, entries: &[NewEntry], _now_ms: i64) -> Result<Appended, SpoolError> {
        let out = MemoryQueue::append(self, entries.to_vec());
        Ok(Appended {
            ids: out.entries.iter().map(|e| e.id).collect(),
            seqs: out.entries.iter().map(|e| e.seq).collect(),
            dropped: Dropped {
                memory_bound: out.dropped,
                events: out.events_dropped,
                ..Dropped::default()
            },
        })
    }

    fn next_after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        Ok(MemoryQueue::next_after(self, after, limit))
    }

    fn ack(&mut self, ids: &[i64]) -> Result<u64, SpoolError> {
        Ok(MemoryQueue::ack(self, ids))
    }

    fn trim(&mut self, now_ms: i64, max_age: Duration) -> Result<Dropped, SpoolError> {
        Ok(Dropped {
            too_old: MemoryQueue::trim(self, now_ms, max_age),
            ..Dropped::default()
        })
    }

    fn announce_drops(
        &mut self,
        now_ms: i64,
        make: &mut dyn FnMut(&DropLedger) -> Vec<NewEntry>,
    ) -> Result<Appended, SpoolError> {
        let ledger = self.take_drops();
        let entries = make(&ledger);
        QueueStore::append(self, &entries, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use co2_wire::{Epoch, SeqRange};

    fn reading(n: i64) -> NewEntry {
        NewEntry::reading("t", format!("r{n}").into_bytes(), n)
    }

    fn numbering() -> Numbering {
        Numbering {
            epoch: Epoch::new(42),
            next: 1,
        }
    }

    #[test]
    fn the_bound_holds_and_drops_are_recorded_with_their_numbers() {
        let mut m = MemoryQueue::new(3, numbering());
        let mut dropped = 0;
        for n in 1..=10 {
            dropped += m.append(vec![reading(n)]).dropped;
            assert!(m.readings() <= 3);
        }
        m.append(vec![NewEntry::event("e", b"{}".to_vec(), 0)]);
        assert_eq!(dropped, 7);
        assert_eq!(m.high_water(), 3);
        let left: Vec<u64> = m
            .next_after(0, 10)
            .iter()
            .filter_map(|e| e.seq.map(|s| s.n()))
            .collect();
        assert_eq!(left, [8, 9, 10]);
        assert_eq!(
            m.pending_drops().causes()[0].ranges,
            [SeqRange::new(Epoch::new(42), 1, 7).unwrap()]
        );
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn fetch_ack_and_hand_over() {
        let mut m = MemoryQueue::new(100, numbering());
        let ids: Vec<i64> = m
            .append((1..=5).map(reading).collect())
            .entries
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(m.next_after(ids[1], 2).len(), 2);
        assert_eq!(m.ack(&[ids[0], ids[2], 999]), 2);
        let rest = m.contents();
        assert_eq!(rest.len(), 3);
        assert_eq!(
            rest[0].seq.map(|s| s.n()),
            Some(2),
            "numbers travel with them"
        );
        assert_eq!(m.oldest_reading_ms(), Some(2));
        assert_eq!(
            m.trim(5, Duration::ZERO),
            2,
            "stamped 2 and 4 are older than 5"
        );
        assert_eq!(m.readings(), 1);
        m.clear();
        assert!(m.is_empty());
    }
}
