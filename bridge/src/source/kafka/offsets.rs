//! Which offsets of each assigned partition are durable, and so what may be
//! committed: the highest contiguous durable offset, never past a record that
//! is still on its way to a sink.
//!
//! The pipeline acknowledges in arrival order, and one partition's records
//! arrive in offset order, so acks of a partition normally come in order;
//! this keeps the outstanding offsets in a set anyway, so that a gap (an
//! offset the broker skipped, a compacted topic) or an ack out of order can
//! never commit past a record that is not stored. A partition taken away by
//! a rebalance is forgotten: acks still on their way for it carry an older
//! generation and are ignored, and its new owner starts from the last commit
//! (what this bridge held for it is delivered again; the sinks' unique keys
//! make the second write a no-op).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A topic and partition.
pub type Partition = (Arc<str>, i32);

/// Durable progress of every assigned partition.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<Partition, State>,
    generation: u64,
}

#[derive(Debug)]
struct State {
    generation: u64,
    /// Received and not yet durable.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset received; None before the first record.
    next: Option<i64>,
    /// The offset last handed out to commit (at first, the first received).
    committed: Option<i64>,
}

impl Offsets {
    /// The partition was assigned: tracked from now on, under a new generation.
    pub fn assign(&mut self, partition: Partition) {
        self.generation += 1;
        self.partitions.insert(
            partition,
            State {
                generation: self.generation,
                outstanding: BTreeSet::new(),
                next: None,
                committed: None,
            },
        );
    }

    /// The partition was revoked; returns the offset to commit for it first,
    /// if its durable progress is ahead of the last commit.
    pub fn revoke(&mut self, partition: &Partition) -> Option<i64> {
        let mut state = self.partitions.remove(partition)?;
        state.take_due()
    }

    /// A record was received; returns its generation, or None if its
    /// partition is not assigned (a record of a partition just revoked).
    pub fn received(&mut self, partition: &Partition, offset: i64) -> Option<u64> {
        let state = self.partitions.get_mut(partition)?;
        // The first record's offset is where the group's commit (or the
        // reset) already stands: nothing to commit until past it.
        state.committed.get_or_insert(offset);
        state.outstanding.insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(state.generation)
    }

    /// A record is durable; false if it belongs to an earlier assignment.
    pub fn done(&mut self, partition: &Partition, generation: u64, offset: i64) -> bool {
        match self.partitions.get_mut(partition) {
            Some(state) if state.generation == generation => {
                state.outstanding.remove(&offset);
                true
            }
            _ => false,
        }
    }

    /// The offsets to commit now (the next offset to read, Kafka's
    /// convention), for every partition whose durable progress moved.
    pub fn take_due(&mut self) -> Vec<(Partition, i64)> {
        self.partitions
            .iter_mut()
            .filter_map(|(p, state)| state.take_due().map(|o| (p.clone(), o)))
            .collect()
    }
}

impl State {
    fn take_due(&mut self) -> Option<i64> {
        let durable = self.outstanding.first().copied().or(self.next)?;
        if self.committed.is_some_and(|c| c >= durable) {
            return None;
        }
        self.committed = Some(durable);
        Some(durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("temp_test"), n)
    }

    #[test]
    fn commits_the_highest_contiguous_durable_offset_once() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let g = (10..15)
            .map(|off| o.received(&p(0), off))
            .last()
            .flatten()
            .unwrap();
        assert!(o.take_due().is_empty(), "nothing durable yet");
        assert!(o.done(&p(0), g, 10));
        assert!(o.done(&p(0), g, 11));
        // 13 is durable but 12 is not: commit stops before 12.
        assert!(o.done(&p(0), g, 13));
        assert_eq!(o.take_due(), vec![(p(0), 12)]);
        assert!(o.take_due().is_empty(), "no progress, no commit");
        assert!(o.done(&p(0), g, 12));
        assert!(o.done(&p(0), g, 14));
        assert_eq!(o.take_due(), vec![(p(0), 15)]);
    }

    #[test]
    fn a_gap_in_offsets_does_not_hold_commits_back() {
        let mut o = Offsets::default();
        o.assign(p(1));
        let g = o.received(&p(1), 3).unwrap();
        o.received(&p(1), 7);
        o.done(&p(1), g, 3);
        assert_eq!(o.take_due(), vec![(p(1), 7)]);
        o.done(&p(1), g, 7);
        assert_eq!(o.take_due(), vec![(p(1), 8)]);
    }

    #[test]
    fn acks_from_before_a_rebalance_are_ignored() {
        let mut o = Offsets::default();
        o.assign(p(0));
        let old = o.received(&p(0), 0).unwrap();
        o.received(&p(0), 1);
        o.done(&p(0), old, 0);
        assert_eq!(
            o.revoke(&p(0)),
            Some(1),
            "the durable part is committed on revoke"
        );
        assert_eq!(o.received(&p(0), 1), None, "not ours any more");
        o.assign(p(0));
        assert!(!o.done(&p(0), old, 1), "an ack of the old assignment");
        assert!(o.take_due().is_empty());
        let new = o.received(&p(0), 1).unwrap();
        assert!(o.done(&p(0), new, 1));
        assert_eq!(o.take_due(), vec![(p(0), 2)]);
    }

    #[test]
    fn partitions_are_tracked_apart() {
        let mut o = Offsets::default();
        o.assign(p(0));
        o.assign(p(1));
        let g0 = o.received(&p(0), 5).unwrap();
        let _g1 = o.received(&p(1), 9).unwrap();
        o.done(&p(0), g0, 5);
        assert_eq!(o.take_due(), vec![(p(0), 6)]);
    }
}
