//! The queue's state as the status file shows it.

use std::path::PathBuf;
use std::time::Instant;

use super::{Active, Queue, Store};

/// The queue's state, for the status file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// Where new readings go.
    pub store: Store,
    /// The disk queue's file.
    pub path: PathBuf,
    /// Readings waiting (in the current store, plus any stranded on disk).
    pub readings: u64,
    /// Events waiting.
    pub events: u64,
    /// When the oldest waiting reading was stamped (Unix ms).
    pub oldest_reading_ms: Option<i64>,
    /// The epoch new readings are numbered in.
    pub epoch: Option<String>,
    /// The last number given in it.
    pub last_seq: Option<u64>,
    /// Drops not yet announced.
    pub drops_pending: u64,
    /// Memory mode, when in it.
    pub memory: Option<MemorySnapshot>,
}

/// Memory mode, for the status file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemorySnapshot {
    /// Why the disk was left.
    pub reason: String,
    /// Seconds in memory mode.
    pub for_s: u64,
    /// Readings held.
    pub readings: u64,
    /// The bound.
    pub max_readings: u64,
    /// Most held at once.
    pub high_water: u64,
    /// Readings left on disk until it works again.
    pub stranded: Option<u64>,
    /// Seconds to the next disk attempt.
    pub next_retry_s: u64,
}

impl Queue {
    /// The state, for the status file (reads the disk for the oldest reading).
    pub fn snapshot(&self) -> QueueSnapshot {
        let numbering = self.numbering();
        let (readings, events, oldest, drops) = match self.active.store() {
            Some(s) => (
                s.readings() + self.stranded(),
                s.len().saturating_sub(s.readings()),
                s.oldest_reading_ms().ok().flatten(),
                s.pending_drops().total(),
            ),
            None => (0, 0, None, 0),
        };
        let memory = match &self.active {
            Active::Memory(m) => Some(MemorySnapshot {
                reason: m.reason.clone(),
                for_s: m.since.elapsed().as_secs(),
                readings: m.queue.readings(),
                max_readings: m.queue.max_readings(),
                high_water: m.queue.high_water(),
                stranded: m.stranded,
                next_retry_s: m
                    .next_retry
                    .saturating_duration_since(Instant::now())
                    .as_secs(),
            }),
            Active::Disk(_) | Active::Closed => None,
        };
        QueueSnapshot {
            store: self.store(),
            path: self.cfg.path.clone(),
            readings,
            events,
            oldest_reading_ms: oldest,
            epoch: numbering.map(|n| n.epoch.to_string()),
            last_seq: numbering.and_then(|n| n.last()),
            drops_pending: drops,
            memory,
        }
    }
}
