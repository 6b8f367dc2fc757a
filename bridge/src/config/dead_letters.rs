//! `[dead_letters]`: where dead letters are kept, and for how long.

use serde::{Deserialize, Serialize};

use super::{invalid, sink_name, ConfigError};

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

impl DeadLetterSettings {
    /// Checks `[dead_letters]`; `known` are the configured sinks' keys.
    pub(super) fn validate(&self, known: &[String]) -> Result<(), ConfigError> {
        if self.prune_interval_s == 0 {
            return Err(invalid(
                "dead_letters.prune_interval_s",
                "must be at least 1 second",
            ));
        }
        if let Some(sink) = &self.sink {
            if !known.iter().any(|k| sink_name(k) == sink) {
                return Err(invalid(
                    "dead_letters.sink",
                    format!("no sink {sink:?}; sinks are {known:?}"),
                ));
            }
        }
        Ok(())
    }
}
