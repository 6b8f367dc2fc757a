//! The queue the rest of the publisher sees: the disk queue ([`Spool`]) when
//! the disk works, the bounded [`MemoryQueue`] when it does not, and the
//! moves between them. No disk failure stops the publisher:
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

use co2_wire::{DeviceEvent, EventId, EventKind, Seq};

use crate::clock::Timekeeper;
use crate::config::Settings;
use crate::event::short;
use crate::ledger::Numbering;
use crate::memory::MemoryQueue;
use crate::salvage::{self, Retention, Topics};
use crate::spool::{Bounds, Extras, Failure, Options, Spool, SpoolError};
use crate::stats::Stats;
use crate::store::{Dropped, Entry, NewEntry};

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

/// The memory side, while the disk cannot be written.
struct Memory {
    queue: MemoryQueue,
    since: Instant,
    reason: String,
    next_retry: Instant,
    /// Readings left in the disk queue (known when the failure happened).
    stranded: Option<u64>,
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
    /// In disk mode always `Some`; in memory mode `Some` only when the disk
    /// was merely full (the connection is kept and retried).
    disk: Option<Spool>,
    memory: Option<Memory>,
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
        let mut q = Self::new(cfg, None, stats, clock);
        match Spool::open(&q.cfg.path, q.cfg.options) {
            Ok(spool) => {
                if spool.fresh_numbering() {
                    tracing::info!(epoch = %spool.numbering().epoch, queue = %q.cfg.path.display(), "Queue numbers readings in a new epoch");
                }
                q.disk = Some(spool);
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
        Self::new(cfg, Some(spool), stats, clock)
    }

    fn new(
        cfg: QueueConfig,
        disk: Option<Spool>,
        stats: Arc<Stats>,
        clock: Arc<Timekeeper>,
    ) -> Self {
        Self {
            cfg,
            disk,
            memory: None,
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
        if self.memory.is_some() {
            Store::Memory
        } else {
            Store::Disk
        }
    }

    /// Everything waiting: the current store's readings and events, plus readings stranded on disk.
    pub fn len(&self) -> u64 {
        match &self.memory {
            Some(m) => m.queue.len() + m.stranded.unwrap_or(0),
            None => self.disk.as_ref().map_or(0, Spool::len),
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The numbering new readings get.
    pub fn numbering(&self) -> Option<Numbering> {
        match &self.memory {
            Some(m) => Some(m.queue.numbering()),
            None => self.disk.as_ref().map(Spool::numbering),
        }
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
        let at = self.clock.now();
        let event = DeviceEvent {
            id: EventId(rand::random()),
            at,
            kind,
        };
        NewEntry::event(
            self.cfg.topics.events.clone(),
            event.encode(),
            at.map_or(0, |t| t.timestamp_millis()),
        )
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
            if self.memory.is_some() {
                break;
            }
            let now_ms = self.now_ms();
            let Some(disk) = self.disk.as_mut() else {
                break;
            };
            match disk.append(std::slice::from_ref(&entry), now_ms) {
                Ok(out) => {
                    self.count_disk_drops(&out.dropped);
                    return Queued {
                        id: out.ids.first().copied().unwrap_or_default(),
                        seq: out.seqs.first().copied().flatten(),
                        store: Store::Disk,
                    };
                }
                Err(e) if attempt == 0 && is_disk_full(&e) && disk.checkpoint().is_ok() => {
                    tracing::debug!("Disk full; checkpointed the queue's WAL to make room");
                }
                Err(e) => self.disk_failed(e),
            }
        }
        let stats = Arc::clone(&self.stats);
        let memory = self.memory_mode("the disk queue failed twice in a row".into());
        let out = memory.queue.append(vec![entry]);
        let max = memory.queue.max_readings();
        if out.dropped > 0 {
            Stats::add(&stats.dropped_memory, out.dropped);
            tracing::warn!(
                dropped = out.dropped,
                max,
                dropped_total = Stats::get(&stats.dropped_memory),
                "Memory queue full; dropped the oldest readings (announced once the broker is reachable)"
            );
        }
        if out.events_dropped > 0 {
            Stats::add(&stats.events_dropped, out.events_dropped);
        }
        let e = out.entries.first();
        Queued {
            id: e.map_or(0, |e| e.id),
            seq: e.and_then(|e| e.seq),
            store: Store::Memory,
        }
    }

    fn count_disk_drops(&self, d: &Dropped) {
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
            Failure::Unwritable | Failure::Locked => {
                let stranded = self.disk.as_ref().map(Spool::len);
                let from = self.disk.as_ref().map(Spool::numbering);
                if !is_disk_full(&e) {
                    // Read-only or failing: reopen from scratch when retrying.
                    self.disk = None;
                }
                self.enter_memory(e.reason(), from, stranded);
            }
        }
    }

    /// Moves the damaged file aside and continues on a fresh one.
    fn recover(&mut self, reason: String) {
        if self.recovering {
            // The fresh file failed at once, while announcing the first one: stop trying.
            self.disk = None;
            self.enter_memory(
                format!("fresh queue failed right away: {reason}"),
                None,
                None,
            );
            return;
        }
        self.recovering = true;
        // The connection must be closed before its file is renamed.
        self.disk = None;
        match self.replace_damaged(reason) {
            Ok((spool, r)) => {
                self.disk = Some(spool);
                self.generation += 1;
                self.push_event(r.event());
            }
            Err(e) => {
                self.enter_memory(
                    format!("damaged queue could not be replaced: {e}"),
                    None,
                    None,
                );
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

    /// Switches to memory (if not there yet), announcing it.
    fn enter_memory(&mut self, reason: String, from: Option<Numbering>, stranded: Option<u64>) {
        if self.memory.is_some() {
            return;
        }
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
        self.memory = Some(Memory {
            queue: MemoryQueue::new(self.cfg.memory_max_rows, numbering),
            since: Instant::now(),
            reason: reason.clone(),
            next_retry: Instant::now() + self.cfg.retry,
            stranded,
        });
        self.generation += 1;
        self.push_event(EventKind::MemoryMode {
            reason: short(&reason),
            from_epoch: from.map(|n| n.epoch),
            from_last_seq: from.and_then(|n| n.last()),
            epoch: numbering.epoch,
            stranded,
        });
    }

    /// Memory, entering memory mode if needed.
    fn memory_mode(&mut self, reason: String) -> &mut Memory {
        if self.memory.is_none() {
            let from = self.disk.as_ref().map(Spool::numbering);
            let stranded = self.disk.as_ref().map(Spool::len);
            self.disk = None;
            self.enter_memory(reason, from, stranded);
        }
        // enter_memory always leaves Some; this only keeps the function total.
        let max = self.cfg.memory_max_rows;
        self.memory.get_or_insert_with(|| Memory {
            queue: MemoryQueue::new(max, Numbering::fresh()),
            since: Instant::now(),
            reason: String::new(),
            next_retry: Instant::now(),
            stranded: None,
        })
    }

    /// In memory mode, when due (or `now`), tries to move memory's contents
    /// to the disk and continue there. Returns whether it did.
    pub fn retry_disk(&mut self, now: bool) -> bool {
        let Some(m) = &mut self.memory else {
            return false;
        };
        if !now && Instant::now() < m.next_retry {
            return false;
        }
        m.next_retry = Instant::now() + self.cfg.retry;
        let mut recovered = None;
        let mut spool = match self.disk.take() {
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
        let Some(m) = &self.memory else {
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
                self.disk = Some(spool);
                self.memory = None;
                self.generation += 1;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "Disk queue still cannot be written");
                if is_disk_full(&e) {
                    self.disk = Some(spool);
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
        let entries = if let Some(m) = &self.memory {
            m.queue.next_after(after, limit)
        } else {
            match self.disk.as_ref().map(|d| d.next_after(after, limit)) {
                Some(Ok(entries)) => entries,
                Some(Err(e)) => {
                    self.disk_failed(e);
                    Vec::new()
                }
                None => Vec::new(),
            }
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
        if let Some(m) = &mut self.memory {
            return m.queue.ack(ids);
        }
        match self.disk.as_mut().map(|d| d.ack(ids)) {
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
                if let Some(m) = &mut self.memory {
                    let n = m.queue.trim(now_ms, max_age);
                    Stats::add(&self.stats.dropped_too_old, n);
                } else if let Some(d) = self.disk.as_mut() {
                    match d.trim(now_ms) {
                        Ok(d) => self.count_disk_drops(&d),
                        Err(e) => self.disk_failed(e),
                    }
                }
            }
        }
        let ranges = match &self.memory {
            Some(m) => m.queue.pending_drops().range_count(),
            None => self
                .disk
                .as_ref()
                .map_or(0, |d| d.pending_drops().range_count()),
        };
        if connected || ranges >= ANNOUNCE_RANGES {
            grew |= self.announce_pending();
        }
        grew
    }

    /// Announces pending drops now, if there are any; returns whether it queued events.
    pub fn announce_pending(&mut self) -> bool {
        let pending = match &self.memory {
            Some(m) => !m.queue.pending_drops().is_empty(),
            None => self
                .disk
                .as_ref()
                .is_some_and(|d| !d.pending_drops().is_empty()),
        };
        pending && self.announce_drops()
    }

    /// Turns pending drops into `readings_dropped` events.
    fn announce_drops(&mut self) -> bool {
        if let Some(m) = &mut self.memory {
            let ledger = m.queue.take_drops();
            let kinds = ledger.announcements();
            let n = kinds.len();
            for kind in kinds {
                self.push_event(kind);
            }
            tracing::info!(
                events = n,
                readings = ledger.total(),
                "Announcing dropped readings"
            );
            return n > 0;
        }
        let now_ms = self.now_ms();
        let topic = self.cfg.topics.events.clone();
        let at = self.clock.now();
        let Some(disk) = self.disk.as_mut() else {
            return false;
        };
        let total = disk.pending_drops().total();
        let result = disk.announce_drops(now_ms, |ledger| {
            ledger
                .announcements()
                .into_iter()
                .map(|kind| {
                    let event = DeviceEvent {
                        id: EventId(rand::random()),
                        at,
                        kind,
                    };
                    NewEntry::event(topic.clone(), event.encode(), now_ms)
                })
                .collect()
        });
        match result {
            Ok(n) => {
                Stats::add(&self.stats.events_queued, n as u64);
                tracing::info!(events = n, readings = total, "Announcing dropped readings");
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
        if let Some(m) = &self.memory {
            if m.queue.is_empty() {
                return;
            }
            if !self.retry_disk(true) {
                if let Some(m) = &self.memory {
                    tracing::error!(
                        readings = m.queue.readings(),
                        epoch = %m.queue.numbering().epoch,
                        "The disk still cannot be written: readings held in memory are lost at exit"
                    );
                }
            }
        }
    }

    /// The state, for the status file (reads the disk for the oldest reading).
    pub fn snapshot(&self) -> QueueSnapshot {
        let numbering = self.numbering();
        let (readings, events, oldest, drops) = match &self.memory {
            Some(m) => (
                m.queue.readings() + m.stranded.unwrap_or(0),
                m.queue.len() - m.queue.readings(),
                m.queue.oldest_reading_ms(),
                m.queue.pending_drops().total(),
            ),
            None => match &self.disk {
                Some(d) => (
                    d.readings(),
                    d.events(),
                    d.oldest_reading_ms().ok().flatten(),
                    d.pending_drops().total(),
                ),
                None => (0, 0, None, 0),
            },
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
            memory: self.memory.as_ref().map(|m| MemorySnapshot {
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
