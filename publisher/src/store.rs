//! What the queue's stores hold and hand back: entries (readings and
//! device events), what an append did, and how a store fails.

use std::time::Duration;

use co2_wire::Seq;

use crate::ledger::{DropLedger, Numbering};

mod error;

pub use error::{Failure, SpoolError};

/// One store interface over the two places the queue holds messages: the
/// disk ([`Spool`](crate::spool::Spool)) and memory
/// ([`MemoryQueue`](crate::memory::MemoryQueue)). The queue keeps whichever
/// is active and switches between them; only the disk fails, so memory's
/// calls always succeed.
pub trait QueueStore {
    /// Readings and events held.
    fn len(&self) -> u64;
    /// Whether nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Readings held.
    fn readings(&self) -> u64;
    /// The numbering: the next reading gets `numbering().next`.
    fn numbering(&self) -> Numbering;
    /// Drops not yet announced.
    fn pending_drops(&self) -> &DropLedger;
    /// When the oldest held reading was stamped (Unix ms).
    fn oldest_reading_ms(&self) -> Result<Option<i64>, SpoolError>;
    /// Appends `entries`, numbering readings that have no number, then
    /// applies the bounds (`now_ms` for age; 0 skips the age bound).
    fn append(&mut self, entries: &[NewEntry], now_ms: i64) -> Result<Appended, SpoolError>;
    /// Up to `limit` entries with an id greater than `after`, oldest first.
    fn next_after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, SpoolError>;
    /// Removes acknowledged entries; returns how many were held.
    fn ack(&mut self, ids: &[i64]) -> Result<u64, SpoolError>;
    /// Drops readings stamped more than `max_age` before `now_ms`.
    fn trim(&mut self, now_ms: i64, max_age: Duration) -> Result<Dropped, SpoolError>;
    /// Turns the pending drops into events (`make` builds them from the
    /// ledger), queues them and clears the ledger, all or nothing.
    fn announce_drops(
        &mut self,
        now_ms: i64,
        make: &mut dyn FnMut(&DropLedger) -> Vec<NewEntry>,
    ) -> Result<Appended, SpoolError>;
}

/// What a queued message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A reading (`<prefix>/<device>/emissions`).
    Reading,
    /// A device event (`<prefix>/<device>/events`).
    Event,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Queue position: larger is newer; never reused within one store.
    pub id: i64,
    /// Reading or event.
    pub kind: Kind,
    /// MQTT topic it goes to.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// The reading's number (`None` for events and readings queued before numbering).
    pub seq: Option<Seq>,
    /// When it was stamped, in Unix milliseconds.
    pub stamped_ms: i64,
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Reading or event.
    pub kind: Kind,
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// When it was stamped, in Unix milliseconds (for the age bound).
    pub stamped_ms: i64,
    /// A number it already has (moved from memory, salvaged); a reading
    /// without one is numbered by the queue.
    pub seq: Option<Seq>,
}

impl NewEntry {
    /// A new reading, to be numbered by the queue.
    pub fn reading(topic: impl Into<String>, payload: Vec<u8>, stamped_ms: i64) -> Self {
        Self {
            kind: Kind::Reading,
            topic: topic.into(),
            payload,
            stamped_ms,
            seq: None,
        }
    }

    /// A device event.
    pub fn event(topic: impl Into<String>, payload: Vec<u8>, stamped_ms: i64) -> Self {
        Self {
            kind: Kind::Event,
            topic: topic.into(),
            payload,
            stamped_ms,
            seq: None,
        }
    }
}

impl From<Entry> for NewEntry {
    fn from(e: Entry) -> Self {
        Self {
            kind: e.kind,
            topic: e.topic,
            payload: e.payload,
            stamped_ms: e.stamped_ms,
            seq: e.seq,
        }
    }
}

/// What the bounds dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Oldest readings dropped because the queue held more than `max_rows`.
    pub over_rows: u64,
    /// Readings dropped because they were older than `max_age`.
    pub too_old: u64,
    /// Oldest readings dropped because memory held more than its bound.
    pub memory_bound: u64,
    /// Oldest events dropped because the store held more than it keeps
    /// ([`MAX_EVENTS`](crate::spool::MAX_EVENTS) on disk).
    pub events: u64,
}

impl Dropped {
    /// Readings dropped by the disk's bounds, both causes together.
    pub fn total(&self) -> u64 {
        self.over_rows + self.too_old
    }
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// The new ids, in order.
    pub ids: Vec<i64>,
    /// The number each entry has now.
    pub seqs: Vec<Option<Seq>>,
    /// What the bounds dropped to make room.
    pub dropped: Dropped,
}
