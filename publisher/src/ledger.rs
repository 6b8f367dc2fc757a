//! The numbers a queue gives its readings ([`Numbering`]) and those it had to
//! drop before they were delivered ([`DropLedger`]), waiting to be announced.
//! Pure: the stores persist them (the disk queue in its `meta` table).

use std::num::NonZeroU64;

use co2_wire::{DropCause, Epoch, EventKind, Seq, SeqRange, MAX_RANGES};
use serde_json::{json, Value};

/// The next number of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    /// The epoch numbers are given in.
    pub epoch: Epoch,
    /// The next number to give (from 1).
    pub next: u64,
}

impl Numbering {
    /// A new epoch (random 64 bits, never 0), starting at 1.
    pub fn fresh() -> Self {
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        Self {
            epoch: Epoch::new(id),
            next: 1,
        }
    }

    /// Gives the next number.
    pub fn take(&mut self) -> Seq {
        let n = NonZeroU64::new(self.next).unwrap_or(NonZeroU64::MIN);
        self.next = n.get().saturating_add(1);
        Seq::from_nonzero(self.epoch, n)
    }

    /// The last number given, if any.
    pub fn last(&self) -> Option<u64> {
        self.next.checked_sub(1).filter(|n| *n > 0)
    }
}

/// Readings dropped for one cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CauseDrops {
    /// Why.
    pub cause: DropCause,
    /// Dropped readings that had no number (queued by a version without numbers).
    pub unnumbered: u64,
    /// The numbers dropped.
    pub ranges: Vec<SeqRange>,
}

impl CauseDrops {
    /// How many readings, numbered or not.
    pub fn count(&self) -> u64 {
        self.ranges
            .iter()
            .fold(self.unnumbered, |n, r| n.saturating_add(r.len()))
    }
}

/// Drops not yet announced, per cause, with the numbers compacted into ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropLedger {
    causes: Vec<CauseDrops>,
}

impl DropLedger {
    /// Records that readings numbered `seqs` (`None`: unnumbered) were dropped for `cause`.
    pub fn add(&mut self, cause: DropCause, seqs: impl IntoIterator<Item = Option<Seq>>) {
        let entry = self.entry(cause);
        for seq in seqs {
            match seq {
                None => entry.unnumbered = entry.unnumbered.saturating_add(1),
                Some(seq) => {
                    let next = SeqRange::single(seq);
                    // Drops come oldest first, so the last range usually continues.
                    if !entry.ranges.iter_mut().rev().any(|r| r.extend(&next)) {
                        entry.ranges.push(next);
                    }
                }
            }
        }
        self.causes.retain(|c| c.count() > 0);
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &DropLedger) {
        for c in &other.causes {
            let entry = self.entry(c.cause);
            entry.unnumbered = entry.unnumbered.saturating_add(c.unnumbered);
            for r in &c.ranges {
                if !entry.ranges.iter_mut().rev().any(|mine| mine.extend(r)) {
                    entry.ranges.push(*r);
                }
            }
        }
        self.causes.retain(|c| c.count() > 0);
    }

    fn entry(&mut self, cause: DropCause) -> &mut CauseDrops {
        let at = match self.causes.iter().position(|c| c.cause == cause) {
            Some(at) => at,
            None => {
                self.causes.push(CauseDrops {
                    cause,
                    unnumbered: 0,
                    ranges: Vec::new(),
                });
                self.causes.len() - 1
            }
        };
        &mut self.causes[at]
    }

    /// Nothing waits to be announced.
    pub fn is_empty(&self) -> bool {
        self.causes.is_empty()
    }

    /// Readings waiting to be announced as dropped.
    pub fn total(&self) -> u64 {
        self.causes
            .iter()
            .fold(0u64, |n, c| n.saturating_add(c.count()))
    }

    /// Ranges held (a large number means it is time to announce).
    pub fn range_count(&self) -> usize {
        self.causes.iter().map(|c| c.ranges.len()).sum()
    }

    /// Per cause.
    pub fn causes(&self) -> &[CauseDrops] {
        &self.causes
    }

    /// The announcements for everything held: one `readings_dropped` per
    /// cause and per [`MAX_RANGES`] ranges.
    pub fn announcements(&self) -> Vec<EventKind> {
        let mut out = Vec::new();
        for c in &self.causes {
            let mut chunks: Vec<&[SeqRange]> = c.ranges.chunks(MAX_RANGES).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (i, ranges) in chunks.into_iter().enumerate() {
                // The unnumbered ones ride with the first chunk.
                let unnumbered = if i == 0 { c.unnumbered } else { 0 };
                let count = ranges
                    .iter()
                    .fold(unnumbered, |n, r| n.saturating_add(r.len()));
                out.push(EventKind::ReadingsDropped {
                    cause: c.cause,
                    count,
                    unnumbered,
                    ranges: ranges.to_vec(),
                });
            }
        }
        out
    }

    /// Text form for the disk queue's `meta` table.
    pub fn to_json(&self) -> String {
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|c| {
                let ranges: Vec<Value> = c
                    .ranges
                    .iter()
                    .map(|r| json!([r.epoch().to_string(), r.first(), r.last()]))
                    .collect();
                json!({"cause": c.cause.as_str(), "unnumbered": c.unnumbered, "ranges": ranges})
            })
            .collect();
        Value::Array(causes).to_string()
    }

    /// Reads [`DropLedger::to_json`]; `None` if the text is not that.
    pub fn from_json(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        let mut ledger = DropLedger::default();
        for c in value.as_array()? {
            let name = c.get("cause")?.as_str()?;
            let cause = DropCause::ALL.into_iter().find(|k| k.as_str() == name)?;
            let mut ranges = Vec::new();
            for r in c.get("ranges")?.as_array()? {
                let epoch: Epoch = r.get(0)?.as_str()?.parse().ok()?;
                let range = SeqRange::new(epoch, r.get(1)?.as_u64()?, r.get(2)?.as_u64()?).ok()?;
                ranges.push(range);
            }
            let entry = ledger.entry(cause);
            entry.unnumbered = c.get("unnumbered")?.as_u64()?;
            entry.ranges = ranges;
        }
        ledger.causes.retain(|c| c.count() > 0);
        Some(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(e: u64, n: u64) -> Option<Seq> {
        Seq::new(Epoch::new(e), n)
    }

    #[test]
    fn numbering_starts_at_one_and_counts_up() {
        let mut n = Numbering::fresh();
        assert_ne!(n.epoch.get(), 0);
        assert_eq!(n.last(), None);
        assert_eq!(n.take().n(), 1);
        assert_eq!(n.take().n(), 2);
        assert_eq!(n.last(), Some(2));
        assert_ne!(Numbering::fresh().epoch, n.epoch);
    }

    #[test]
    fn drops_compact_into_ranges_and_announce_exactly() {
        let mut l = DropLedger::default();
        l.add(DropCause::MaxRows, (1..=5).map(|n| seq(9, n)));
        l.add(DropCause::MaxRows, [seq(9, 6), None, seq(9, 10), seq(7, 1)]);
        l.add(DropCause::MaxAge, [seq(9, 20)]);
        assert_eq!(l.total(), 10);
        assert_eq!(l.range_count(), 4);
        let events = l.announcements();
        assert_eq!(events.len(), 2);
        let EventKind::ReadingsDropped {
            cause,
            count,
            unnumbered,
            ranges,
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!((*cause, *count, *unnumbered), (DropCause::MaxRows, 9, 1));
        assert_eq!(
            ranges,
            &[
                SeqRange::new(Epoch::new(9), 1, 6).unwrap(),
                SeqRange::new(Epoch::new(9), 10, 10).unwrap(),
                SeqRange::new(Epoch::new(7), 1, 1).unwrap(),
            ]
        );
        // Each announcement is a valid event on the wire.
        for kind in events {
            let e = co2_wire::DeviceEvent {
                id: co2_wire::EventId(1),
                at: None,
                kind,
            };
            assert_eq!(co2_wire::DeviceEvent::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn many_ranges_split_into_several_announcements() {
        let mut l = DropLedger::default();
        l.add(DropCause::MemoryBound, (1..=200).map(|n| seq(1, n * 2)));
        let events = l.announcements();
        assert_eq!(events.len(), 200usize.div_ceil(MAX_RANGES));
        let total: u64 = events
            .iter()
            .map(|e| match e {
                EventKind::ReadingsDropped { count, .. } => *count,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 200);
    }

    #[test]
    fn persists_and_merges() {
        let mut a = DropLedger::default();
        a.add(DropCause::MaxRows, [seq(3, 1), seq(3, 2), None]);
        let back = DropLedger::from_json(&a.to_json()).unwrap();
        assert_eq!(back, a);
        assert_eq!(DropLedger::from_json("[]"), Some(DropLedger::default()));
        assert_eq!(DropLedger::from_json("{nonsense"), None);
        let mut b = DropLedger::default();
        b.add(DropCause::MaxRows, [seq(3, 3)]);
        b.add(DropCause::MemoryBound, [seq(4, 1)]);
        a.merge(&b);
        assert_eq!(a.total(), 5);
        assert_eq!(a.range_count(), 2, "3:1-3 merged, plus 4:1");
    }
}
