//! Counters and notes shared by the sampler, the queue and the uplink: the
//! journal's `Stats` line, the status file and the tests read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Counters (monotonic) and the latest notes.
#[derive(Debug, Default)]
pub struct Stats {
    /// Readings stamped and queued (on disk or in memory).
    pub queued: AtomicU64,
    /// Sensor reads that failed (or gave an unusable value).
    pub sensor_errors: AtomicU64,
    /// Readings that could be queued nowhere (the queue worker itself failed).
    pub queue_errors: AtomicU64,
    /// Oldest readings dropped because the disk queue was full (`queue.max_rows`).
    pub dropped_over_rows: AtomicU64,
    /// Readings dropped for being older than `queue.max_age_s`.
    pub dropped_too_old: AtomicU64,
    /// Oldest readings dropped because the memory queue was full (`queue.memory_max_rows`).
    pub dropped_memory: AtomicU64,
    /// Device events queued.
    pub events_queued: AtomicU64,
    /// Device events dropped by their own bound.
    pub events_dropped: AtomicU64,
    /// Readings copied out of damaged queue files.
    pub salvaged: AtomicU64,
    /// Damaged queue files moved aside.
    pub corrupt_files: AtomicU64,
    /// Times the queue went to memory because the disk could not be written.
    pub memory_mode_entries: AtomicU64,
    /// Clock jumps detected.
    pub clock_jumps: AtomicU64,
    /// Publishes sent (republished ones count again).
    pub published: AtomicU64,
    /// PUBACKs received for queued messages.
    pub acked: AtomicU64,
    /// PUBACKs that refused the message (MQTT v5 reason code >= 0x80); it stays queued.
    pub refused: AtomicU64,
    /// Connections made.
    pub connects: AtomicU64,
    /// Connections given up because no PUBACK came within `mqtt.ack_timeout_s`.
    pub ack_timeouts: AtomicU64,
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Writing the status file failed (said once).
    pub status_write_failed: AtomicBool,
    notes: Mutex<Notes>,
}

/// The latest of a few things, for the status file.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// When the last PUBACK arrived.
    pub last_puback: Option<DateTime<Utc>>,
    /// The last error a person should know about, and when.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// The last damaged-queue recovery, in words.
    pub last_recovery: Option<String>,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Readings dropped by any bound.
    pub fn dropped(&self) -> u64 {
        Self::get(&self.dropped_over_rows)
            + Self::get(&self.dropped_too_old)
            + Self::get(&self.dropped_memory)
    }

    /// A copy of the notes.
    pub fn notes(&self) -> Notes {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Changes the notes.
    pub fn note(&self, f: impl FnOnce(&mut Notes)) {
        if let Ok(mut n) = self.notes.lock() {
            f(&mut n);
        }
    }

    /// Records an error a person should see in `status`.
    pub fn note_error(&self, message: impl Into<String>) {
        let message = message.into();
        self.note(|n| n.last_error = Some((Utc::now(), message)));
    }
}
