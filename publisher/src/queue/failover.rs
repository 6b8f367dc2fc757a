//! The moves between stores: a damaged file salvaged into a fresh one, an
//! unwritable disk left for memory, and back to the disk when it works.
//! Every move goes through `switch`, which starts a new generation.

use std::time::Instant;

use co2_wire::EventKind;

use super::{Active, Memory, Queue};
use crate::event::short;
use crate::ledger::Numbering;
use crate::memory::MemoryQueue;
use crate::salvage;
use crate::spool::{Extras, Spool};
use crate::stats::Stats;
use crate::store::{Failure, SpoolError};

impl Queue {
    /// Handles a disk failure: salvage a damaged file, or go to memory.
    pub(super) fn disk_failed(&mut self, e: SpoolError) {
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
    pub(super) fn enter_memory(&mut self, reason: String, keep_disk: bool) {
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
}

pub(super) fn is_disk_full(e: &SpoolError) -> bool {
    match e {
        SpoolError::Sqlite { source, .. } => {
            source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        }
        SpoolError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}
