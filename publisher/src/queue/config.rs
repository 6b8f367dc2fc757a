//! What the queue takes from the settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Settings;
use crate::salvage::{Retention, Topics};
use crate::spool::{Bounds, Options};

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
