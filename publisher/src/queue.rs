//! The queue the rest of the publisher sees: one active [`QueueStore`], the
//! disk queue ([`Spool`]) when the disk works, the bounded [`MemoryQueue`]
//! when it does not, and the moves between them. No disk failure stops the
//! publisher:
//!
//! - a damaged file (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, a failed integrity
//!   check), at start or later, is moved aside and salvaged into a fresh
//!   queue ([`salvage`]), announced as `queue_corrupt`;
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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use co2_wire::{EventKind, Seq};

use crate::clock::Timekeeper;
use crate::config::Settings;
use crate::event::{self, short};
use crate::ledger::Numbering;
use crate::memory::MemoryQueue;
use crate::salvage::{self, Retention, Topics};
use crate::spool::{Bounds, Extras, Options, Spool};
use crate::stats::Stats;
use crate::store::{Appended, Dropped, Entry, Failure, NewEntry, QueueStore, SpoolError};

/// Announce drops without waiting for the broker once this many ranges pile up.
const ANNOUNCE_RANGES: usize = 4 * co2_wire::MAX_RANGES;
/// Between age-bound passes of an idle queue.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// What the queue needs from the settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The disk queue's file.
    pub path: PathBuf,
    /// Its bounds and `synchronous`.
    pub options: Options,
    /// Readings held in memory at most.
    pub memory_max_rows: u64,
    /// Between attempts to get back to the disk.
    pub retry: Duration,
    /// Damaged files kept.
    pub retention: Retention,
    /// Where readings and events go.
    pub topics: Topics,
}

impl QueueConfig {
    /// The queue `[queue]` and `[mqtt]` describe.
    pub fn from_settings(settings: &Settings) -> Self {
        let q = &settings.queue;
        Self {
            path: q.path.clone(),
            options: Options {
                bounds: Bounds {
                    max_rows: q.max_rows,
                    max_age: (q.max_age_s > 0).then(|| Duration::from_secs(q.max_age_s)),
                },
                synchronous: q.synchronous,
            },
            memory_max_rows: q.memory_max_rows,
            retry: Duration::from_secs(q.retry_s),
            retention: Retention {
                files: q.keep_corrupt_files,
                bytes: q.keep_corrupt_bytes,
            },
            topics: Topics {
                readings: settings.topic(),
                events: settings.events_topic(),
            },
        }
    }
}

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

/// The publisher's queue (see the module docs).
pub struct Queue {
    cfg: QueueConfig,
    active: Active,
    generation: u64,
    stats: Arc<Stats>,
    clock: Arc<Timekeeper>,
    last_trim: Instant,
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
        self.push(entry)
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

    /// Handles a disk failure: salvage a damaged file, or go to memory.
    fn disk_failed(&mut self, e: SpoolError) {
        self.stats.note_error(format!("queue: {e}"));
        match e.failure() {
            Failure::Corrupt => self.recover(e.reason()),
            // Read-only or failing: reopen from scratch when retrying.
            Failure::Unwritable | Failure::Locked => {
                self.enter_memory(e.reason(), is_disk_full(&e))
            }
        }
    }

    /// Moves the damaged file aside and continues on a fresh one.
    fn recover(&mut self, reason: String) {
        if let Active::Disk(_) = self.active {
            // The connection must be closed before its file is renamed.
            self.active = Active::Closed;
        }
        if self.recovering {
            // The fresh file failed at once, while announcing the first one: stop trying.
            self.enter_memory(format!("fresh queue failed right away: {reason}"), false);
            return;
        }
        self.recovering = true;
        match self.replace_damaged(reason) {
            Ok((spool, r)) => {
                self.switch(Active::Disk(spool));
                self.push_event(r.event());
            }
            Err(e) => {
                self.enter_memory(format!("damaged queue could not be replaced: {e}"), false);
            }
        }
        self.recovering = false;
    }

    /// Moves the damaged file aside and opens a fresh one with what could be
    /// salvaged; logs and counts it.
    fn replace_damaged(
        &mut self,
        reason: String,
    ) -> Result<(Spool, salvage::Recovery), SpoolError> {
        let path = self.cfg.path.clone();
        tracing::error!(queue = %path.display(), %reason, "Queue file is damaged; moving it aside and salvaging what can be read");
        let result = salvage::recover(
            &path,
            self.cfg.options,
            reason.clone(),
            &self.cfg.topics,
            self.cfg.retention,
        );
        let (spool, r) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "Cannot replace the damaged queue");
                self.stats
                    .note_error(format!("queue: cannot replace the damaged file: {e}"));
                return Err(e);
            }
        };
        Stats::add(&self.stats.corrupt_files, 1);
        Stats::add(&self.stats.salvaged, r.salvaged);
        let lost = r.lost.map_or("unknown".to_owned(), |n| n.to_string());
        tracing::warn!(
            moved_to = %r.moved_to.display(),
            salvaged = r.salvaged,
            salvaged_events = r.salvaged_events,
            %lost,
            old_epoch = %r.old_epoch.map(|e| e.to_string()).unwrap_or_default(),
            new_epoch = %r.new_epoch,
            pruned = r.pruned.len(),
            "Damaged queue moved aside; a fresh queue starts a new epoch"
        );
        self.stats.note(|n| {
            n.last_recovery = Some(format!(
                "{}: {} readings salvaged, {} lost ({})",
                r.moved_to.display(),
                r.salvaged,
                lost,
                reason
            ))
        });
        Ok((spool, r))
    }

    /// Makes `to` the active store. Every switch starts a new generation.
    fn switch(&mut self, to: Active) {
        self.active = to;
        self.generation += 1;
    }

    /// Switches to memory (if not there yet), announcing it; keeps the
    /// disk's connection for the retries when `keep_disk` (merely full).
    fn enter_memory(&mut self, reason: String, keep_disk: bool) {
        let (from, stranded, full_disk) = match std::mem::replace(&mut self.active, Active::Closed)
        {
            Active::Memory(m) => {
                self.active = Active::Memory(m);
                return;
            }
            Active::Disk(disk) => (
                Some(disk.numbering()),
                Some(disk.len()),
                keep_disk.then_some(disk),
            ),
            Active::Closed => (None, None, None),
        };
        let numbering = Numbering::fresh();
        tracing::error!(
            %reason,
            queue = %self.cfg.path.display(),
            max_in_memory = self.cfg.memory_max_rows,
            retry_s = self.cfg.retry.as_secs(),
            epoch = %numbering.epoch,
            stranded = stranded.unwrap_or(0),
            "Queue cannot be written; holding readings in memory and retrying the disk"
        );
        Stats::add(&self.stats.memory_mode_entries, 1);
        self.switch(Active::Memory(Memory {
            queue: MemoryQueue::new(self.cfg.memory_max_rows, numbering),
            since: Instant::now(),
            reason: reason.clone(),
            next_retry: Instant::now() + self.cfg.retry,
            stranded,
            full_disk,
        }));
        self.push_event(EventKind::MemoryMode {
            reason: short(&reason),
            from_epoch: from.map(|n| n.epoch),
            from_last_seq: from.and_then(|n| n.last()),
            epoch: numbering.epoch,
            stranded,
        });
    }

    /// In memory mode, when due (or `now`), tries to move memory's contents
    /// to the disk and continue there. Returns whether it did.
    pub fn retry_disk(&mut self, now: bool) -> bool {
        let Active::Memory(m) = &mut self.active else {
            return false;
        };
        if !now && Instant::now() < m.next_retry {
            return false;
        }
        m.next_retry = Instant::now() + self.cfg.retry;
        let mut recovered = None;
        let mut spool = match m.full_disk.take() {
            Some(s) => s,
            None => match Spool::open(&self.cfg.path, self.cfg.options) {
                Ok(s) => s,
                Err(e) if e.failure() == Failure::Corrupt => match self.replace_damaged(e.reason())
                {
                    Ok((s, r)) => {
                        recovered = Some(r);
                        s
                    }
                    Err(_) => return false,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "Disk queue still unusable");
                    return false;
                }
            },
        };
        let Active::Memory(m) = &self.active else {
            return false;
        };
        let mut entries = m.queue.contents();
        let moved = m.queue.readings();
        let memory_s = m.since.elapsed().as_secs();
        let numbering = m.queue.numbering();
        if let Some(r) = &recovered {
            entries.push(self.event_entry(r.event()));
        }
        entries.push(self.event_entry(EventKind::DiskMode {
            epoch: numbering.epoch,
            moved,
            memory_s,
        }));
        let extras = Extras {
            numbering: Some(numbering),
            drops: Some(m.queue.pending_drops()),
            clear_drops: false,
        };
        // On a full disk the WAL may be what fills it: fold it into the file first.
        let _ = spool.checkpoint();
        match spool.write(&entries, 0, extras) {
            Ok(_) => {
                tracing::info!(
                    moved,
                    memory_s,
                    epoch = %numbering.epoch,
                    queue = %self.cfg.path.display(),
                    "Disk queue writable again; readings held in memory moved to it"
                );
                Stats::add(
                    &self.stats.events_queued,
                    1 + u64::from(recovered.is_some()),
                );
                self.switch(Active::Disk(spool));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "Disk queue still cannot be written");
                if let (true, Active::Memory(m)) = (is_disk_full(&e), &mut self.active) {
                    m.full_disk = Some(spool);
                }
                false
            }
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
        let ranges = self
            .active
            .store()
            .map_or(0, |s| s.pending_drops().range_count());
        if connected || ranges >= ANNOUNCE_RANGES {
            grew |= self.announce_pending();
        }
        grew
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

    /// At shutdown in memory mode: one last try to keep memory's readings on disk.
    pub fn shutdown(&mut self) {
        let Active::Memory(m) = &self.active else {
            return;
        };
        if m.queue.is_empty() || self.retry_disk(true) {
            return;
        }
        if let Active::Memory(m) = &self.active {
            tracing::error!(
                readings = m.queue.readings(),
                epoch = %m.queue.numbering().epoch,
                "The disk still cannot be written: readings held in memory are lost at exit"
            );
        }
    }

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

fn is_disk_full(e: &SpoolError) -> bool {
    match e {
        SpoolError::Sqlite { source, .. } => {
            source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        }
        SpoolError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

/// A [`Queue`] shared by async tasks; every call runs on a blocking thread.
#[derive(Clone)]
pub struct QueueHandle(Arc<std::sync::Mutex<Queue>>);

impl QueueHandle {
    /// Shares `queue`.
    pub fn new(queue: Queue) -> Self {
        Self(Arc::new(std::sync::Mutex::new(queue)))
    }

    /// Runs `f` with the queue on a blocking thread.
    pub async fn with<R, F>(&self, f: F) -> Result<R, SpoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Queue) -> R + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let mut queue = inner
                .lock()
                .map_err(|_| SpoolError::Worker("queue lock poisoned".into()))?;
            Ok(f(&mut queue))
        })
        .await
        .map_err(|e| SpoolError::Worker(e.to_string()))?
    }

    /// Everything waiting (no disk access; may wait for a running queue call).
    pub fn len(&self) -> u64 {
        self.0.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
