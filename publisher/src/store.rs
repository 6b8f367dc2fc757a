//! What the queue's stores hold and hand back: entries (readings and
//! device events), what an append did, and how a store fails.

use co2_wire::Seq;

mod error;

pub use error::{Failure, SpoolError};

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
    /// Oldest events dropped because the queue held more than [`MAX_EVENTS`](crate::spool::MAX_EVENTS).
    pub events: u64,
}

impl Dropped {
    /// Readings dropped, both causes together.
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
