//! `[dead_letters]`: where dead letters are kept, and for how long.

use serde::{Deserialize, Serialize};

/// `[dead_letters]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSettings {
    /// The sink that keeps dead letters: default `mysql` when any route writes
    /// there, else the first sink a route uses. Nothing is acknowledged before
    /// its dead letter is stored there.
    pub sink: Option<String>,
    /// Days dead letters are kept (0: forever).
    pub retention_days: u32,
    /// Seconds between retention passes.
    pub prune_interval_s: u64,
}

impl Default for DeadLetterSettings {
    fn default() -> Self {
        Self {
            sink: None,
            retention_days: 30,
            prune_interval_s: 3600,
        }
    }
}
