//! The queue the rest of the publisher sees: one active [`QueueStore`], the
//! disk queue ([`Spool`]) when the disk works, the bounded [`MemoryQueue`]
//! when it does not, and the moves between them. No disk failure stops the
//! publisher:
//!
//! - a damaged file (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, a failed integrity
//!   check), at start or later, is moved aside and salvaged into a fresh
//!   queue ([`salvage`](crate::salvage)), announced as `queue_corrupt`;
//! - a disk that cannot be written (full, read-only, I/O error) sends new
//!   readings to memory, announced as `memory_mode`; every `queue.retry_s`
//!   the disk is tried again, and when it takes memory's readings (one
//!   transaction) the queue is back on disk, announced as `disk_mode`;
//! - drops by the bounds are recorded with their numbers and announced as
//!   `readings_dropped` once the broker is reachable (or when many pile up).
//!
//! Every switch of store starts a new *generation*: ids of one store mean
//! nothing in another, so the uplink starts over from the new store's oldest
//! entry (a few republished readings, which the bridge deduplicates).

use std::sync::Arc;
use std::time::{Duration, Instant};

use co2_wire::{DropCause, EventKind, Seq};

use crate::clock::Timekeeper;
use crate::config::Settings;
use crate::event;
use crate::ledger::Numbering;
use crate::memory::MemoryQueue;
use crate::spool::Spool;
use crate::stats::Stats;
use crate::store::{Appended, Dropped, Entry, Failure, NewEntry, QueueStore, SpoolError};

/// Announce drops without waiting for the broker once this many ranges pile up.
const ANNOUNCE_RANGES: usize = 4 * co2_wire::MAX_RANGES;
/// Between age-bound passes of an idle queue.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Which store holds new readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// The disk queue.
    Disk,
    /// The memory queue (the disk cannot be written).
    Memory,
}

/// Where an appended message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Its id in that store.
    pub id: i64,
    /// Its number (readings).
    pub seq: Option<Seq>,
    /// The store.
    pub store: Store,
}

/// What a fetch returned.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The generation the entries belong to.
    pub generation: u64,
    /// Entries after the cursor, oldest first; empty when `stale`.
    pub entries: Vec<Entry>,
    /// The caller's generation is over: start again from the oldest entry.
    pub stale: bool,
}

/// The store new readings go to.
enum Active {
    /// The disk queue.
    Disk(Spool),
    /// Memory, while the disk cannot be written.
    Memory(Memory),
    /// Neither: before the first store is open, and while a damaged file is
    /// moved aside (its connection must be closed first).
    Closed,
}

impl Active {
    fn store(&self) -> Option<&dyn QueueStore> {
        match self {
            Active::Disk(disk) => Some(disk),
            Active::Memory(m) => Some(&m.queue),
            Active::Closed => None,
        }
    }

    fn store_mut(&mut self) -> Option<&mut dyn QueueStore> {
        match self {
            Active::Disk(disk) => Some(disk),
            Active::Memory(m) => Some(&mut m.queue),
            Active::Closed => None,
        }
    }
}

/// Memory mode: the memory queue, and why and since when it is used.
struct Memory {
    queue: MemoryQueue,
    since: Instant,
    reason: String,
    next_retry: Instant,
    /// Readings left in the disk queue (known when the failure happened).
    stranded: Option<u64>,
    /// The disk's connection, kept when the disk was merely full (retried as is).
    full_disk: Option<Spool>,
}

/// The publisher's queue (see the module docs).
pub struct Queue {
    cfg: QueueConfig,
    active: Active,
    generation: u64,
    stats: Arc<Stats>,
    clock: Arc<Timekeeper>,
    last_trim: Instant,
    /// The levels of a bound announced since the queue was last nearly empty.
    levels: LevelWatch,
    /// A recovery is under way (its announcement must not start another).
    recovering: bool,
}

impl Queue {
    /// Opens the disk queue, salvaging a damaged one, or starts in memory
    /// when the disk cannot be written. Fails only when another process
    /// holds the queue file.
    pub fn open(
        cfg: QueueConfig,
        stats: Arc<Stats>,
        clock: Arc<Timekeeper>,
    ) -> Result<Self, SpoolError> {
        let mut q = Self::new(cfg, Active::Closed, stats, clock);
        match Spool::open(&q.cfg.path, q.cfg.options) {
            Ok(spool) => {
                if spool.fresh_numbering() {
                    tracing::info!(epoch = %spool.numbering().epoch, queue = %q.cfg.path.display(), "Queue numbers readings in a new epoch");
                }
                q.active = Active::Disk(spool);
            }
            Err(e) if e.failure() == Failure::Locked => return Err(e),
            Err(e) => q.disk_failed(e),
        }
        Ok(q)
    }

    /// A queue over an already open spool (benchmarks, tests); its path is
    /// only used if the disk fails.
    pub fn with_spool(
        spool: Spool,
        cfg: QueueConfig,
        stats: Arc<Stats>,
        clock: Arc<Timekeeper>,
    ) -> Self {
        Self::new(cfg, Active::Disk(spool), stats, clock)
    }

    fn new(cfg: QueueConfig, active: Active, stats: Arc<Stats>, clock: Arc<Timekeeper>) -> Self {
        Self {
            cfg,
            active,
            generation: 1,
            stats,
            clock,
            last_trim: Instant::now(),
            levels: LevelWatch::default(),
            recovering: false,
        }
    }

    /// A queue over `spool` with default settings and the system clock (tests).
    pub fn for_tests(spool: Spool) -> Self {
        let settings = Settings::default_for_tests();
        let clock = Timekeeper::new(Arc::new(crate::clock::SystemClock), Duration::from_secs(2));
        clock.start();
        let cfg = QueueConfig {
            path: spool.path().to_owned(),
            ..QueueConfig::from_settings(&settings)
        };
        Self::with_spool(spool, cfg, Arc::new(Stats::default()), Arc::new(clock))
    }

    /// The current generation (see the module docs).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where new readings go.
    pub fn store(&self) -> Store {
        match self.active {
            Active::Memory(_) => Store::Memory,
            Active::Disk(_) | Active::Closed => Store::Disk,
        }
    }

    /// Readings left on the disk while in memory.
    fn stranded(&self) -> u64 {
        match &self.active {
            Active::Memory(m) => m.stranded.unwrap_or(0),
            Active::Disk(_) | Active::Closed => 0,
        }
    }

    /// Everything waiting: the current store's readings and events, plus readings stranded on disk.
    pub fn len(&self) -> u64 {
        self.active.store().map_or(0, |s| s.len()) + self.stranded()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The numbering new readings get.
    pub fn numbering(&self) -> Option<Numbering> {
        self.active.store().map(|s| s.numbering())
    }

    /// Queues a reading (never fails: disk, else memory).
    pub fn push_reading(&mut self, payload: Vec<u8>, stamped_ms: i64) -> Queued {
        let entry = NewEntry::reading(self.cfg.topics.readings.clone(), payload, stamped_ms);
        let queued = self.push(entry);
        // The count is known without asking the disk: checked at every reading.
        self.announce_level(None);
        queued
    }

    /// Queues an announcement.
    pub fn push_event(&mut self, kind: EventKind) -> Queued {
        let entry = self.event_entry(kind);
        let queued = self.push(entry);
        Stats::add(&self.stats.events_queued, 1);
        queued
    }

    fn event_entry(&self, kind: EventKind) -> NewEntry {
        event::entry(&self.cfg.topics.events, self.clock.now(), kind)
    }

    fn now_ms(&self) -> i64 {
        // 0 (no trusted time) skips the age bound.
        self.clock.now().map_or(0, |t| t.timestamp_millis())
    }

    fn push(&mut self, entry: NewEntry) -> Queued {
        self.retry_disk(false);
        // Two tries on disk: after a checkpoint freed the WAL's space, or
        // after a damaged file was replaced by a fresh one.
        for attempt in 0..2 {
            let now_ms = self.now_ms();
            let Active::Disk(disk) = &mut self.active else {
                break;
            };
            match disk.append(std::slice::from_ref(&entry), now_ms) {
                Ok(out) => return self.queued(&out, Store::Disk),
                Err(e) if attempt == 0 && is_disk_full(&e) && disk.checkpoint().is_ok() => {
                    tracing::debug!("Disk full; checkpointed the queue's WAL to make room");
                }
                Err(e) => self.disk_failed(e),
            }
        }
        self.enter_memory("the disk queue failed twice in a row".into(), false);
        let now_ms = self.now_ms();
        let out = match self.active.store_mut().map(|s| s.append(&[entry], now_ms)) {
            Some(Ok(out)) => out,
            // Unreachable: the queue is in memory now, and memory does not fail.
            Some(Err(_)) | None => Appended::default(),
        };
        self.queued(&out, Store::Memory)
    }

    /// Where the one entry of `out` went; counts what the bounds dropped for it.
    fn queued(&self, out: &Appended, store: Store) -> Queued {
        self.count_drops(&out.dropped);
        Queued {
            id: out.ids.first().copied().unwrap_or_default(),
            seq: out.seqs.first().copied().flatten(),
            store,
        }
    }

    fn count_drops(&self, d: &Dropped) {
        if d.total() > 0 {
            Stats::add(&self.stats.dropped_over_rows, d.over_rows);
            Stats::add(&self.stats.dropped_too_old, d.too_old);
            tracing::warn!(
                over_rows = d.over_rows,
                too_old = d.too_old,
                dropped_total = self.stats.dropped(),
                "Queue bound reached; dropped the oldest readings (announced once the broker is reachable)"
            );
        }
        if d.memory_bound > 0 {
            Stats::add(&self.stats.dropped_memory, d.memory_bound);
            tracing::warn!(
                dropped = d.memory_bound,
                max = self.cfg.memory_max_rows.max(1),
                dropped_total = Stats::get(&self.stats.dropped_memory),
                "Memory queue full; dropped the oldest readings (announced once the broker is reachable)"
            );
        }
        if d.events > 0 {
            Stats::add(&self.stats.events_dropped, d.events);
            tracing::warn!(
                dropped = d.events,
                "Too many announcements queued; dropped the oldest"
            );
        }
    }

    /// Entries after `after` for generation `generation`, oldest first.
    pub fn fetch(&mut self, generation: u64, after: i64, limit: usize) -> Fetched {
        if generation != self.generation {
            return Fetched {
                generation: self.generation,
                entries: Vec::new(),
                stale: true,
            };
        }
        let entries = match self.active.store().map(|s| s.next_after(after, limit)) {
            Some(Ok(entries)) => entries,
            Some(Err(e)) => {
                self.disk_failed(e);
                Vec::new()
            }
            None => Vec::new(),
        };
        Fetched {
            stale: generation != self.generation,
            generation: self.generation,
            entries,
        }
    }

    /// Deletes acknowledged entries of `generation` (acks of an older one
    /// mean nothing now: those entries are sent again).
    pub fn ack(&mut self, generation: u64, ids: &[i64]) -> u64 {
        if generation != self.generation || ids.is_empty() {
            return 0;
        }
        match self.active.store_mut().map(|s| s.ack(ids)) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                self.disk_failed(e);
                0
            }
            None => 0,
        }
    }

    /// Periodic work: retry the disk when due, age out old readings, and
    /// announce drops (when `connected`, or when many pile up). Returns
    /// whether it queued something for the uplink.
    pub fn housekeeping(&mut self, connected: bool) -> bool {
        let mut grew = self.retry_disk(false);
        let now_ms = self.now_ms();
        if self.last_trim.elapsed() >= TRIM_EVERY && now_ms > 0 {
            self.last_trim = Instant::now();
            if let Some(max_age) = self.cfg.options.bounds.max_age {
                match self.active.store_mut().map(|s| s.trim(now_ms, max_age)) {
                    Some(Ok(d)) => self.count_drops(&d),
                    Some(Err(e)) => self.disk_failed(e),
                    None => {}
                }
            }
        }
        grew |= self.announce_level(Some(now_ms));
        let ranges = self
            .active
            .store()
            .map_or(0, |s| s.pending_drops().range_count());
        if connected || ranges >= ANNOUNCE_RANGES {
            grew |= self.announce_pending();
        }
        grew
    }

    /// Announces a new level of the bound the queue is nearest to, if it
    /// reached one; the age bound only with `now_ms` (it costs a query: at
    /// housekeeping, not for every reading). Returns whether it did.
    fn announce_level(&mut self, now_ms: Option<i64>) -> bool {
        let Some(kind) = self
            .fill(now_ms)
            .and_then(|f| f.announcement(&mut self.levels))
        else {
            return false;
        };
        if let EventKind::QueueFilling {
            bound,
            percent,
            readings,
        } = &kind
        {
            tracing::warn!(
                bound = bound.as_str(),
                percent,
                readings,
                "Queue nearing its bound; readings are dropped when it is reached (announced)"
            );
        }
        self.push_event(kind);
        true
    }

    /// What the queue holds against its bounds (`None` while no store is
    /// open); the age only with `now_ms`.
    fn fill(&mut self, now_ms: Option<i64>) -> Option<Fill> {
        let store = self.active.store()?;
        let readings = store.readings();
        let count_bound = match &self.active {
            Active::Memory(m) => (DropCause::MemoryBound, m.queue.max_readings()),
            Active::Disk(_) | Active::Closed => {
                (DropCause::MaxRows, self.cfg.options.bounds.max_rows)
            }
        };
        // The age needs a trusted clock and a reading to be old.
        let max_age = self
            .cfg
            .options
            .bounds
            .max_age
            .zip(now_ms)
            .filter(|(_, now_ms)| *now_ms > 0 && readings > 0);
        let oldest = match max_age.map(|_| store.oldest_reading_ms()) {
            Some(Ok(oldest)) => oldest,
            Some(Err(e)) => {
                self.disk_failed(e);
                return None;
            }
            None => None,
        };
        let age = oldest.zip(max_age).map(|(oldest, (max_age, now_ms))| {
            let ms = u64::try_from(now_ms.saturating_sub(oldest)).unwrap_or(0);
            (Duration::from_millis(ms), max_age)
        });
        Some(Fill {
            readings,
            count_bound,
            age,
        })
    }

    /// Announces pending drops now, if there are any; returns whether it queued events.
    pub fn announce_pending(&mut self) -> bool {
        let pending = self
            .active
            .store()
            .is_some_and(|s| !s.pending_drops().is_empty());
        pending && self.announce_drops()
    }

    /// Turns pending drops into `readings_dropped` events.
    fn announce_drops(&mut self) -> bool {
        let now_ms = self.now_ms();
        let at = self.clock.now();
        let topic = self.cfg.topics.events.clone();
        let Some(store) = self.active.store_mut() else {
            return false;
        };
        let readings = store.pending_drops().total();
        let result = store.announce_drops(now_ms, &mut |ledger| {
            ledger
                .announcements()
                .into_iter()
                .map(|kind| event::entry(&topic, at, kind))
                .collect()
        });
        match result {
            Ok(out) => {
                let n = out.ids.len();
                self.count_drops(&out.dropped);
                Stats::add(&self.stats.events_queued, n as u64);
                tracing::info!(events = n, readings, "Announcing dropped readings");
                n > 0
            }
            Err(e) => {
                self.disk_failed(e);
                false
            }
        }
    }
}

mod config;
mod failover;
mod handle;
mod level;
mod snapshot;

pub use config::QueueConfig;
use failover::is_disk_full;
pub use handle::QueueHandle;
use level::{Fill, LevelWatch};
pub use snapshot::{MemorySnapshot, QueueSnapshot};

#[cfg(test)]
mod tests;
