//! `[batch]`: when a batch is written.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `[batch]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Write when this many messages are waiting.
    pub max_rows: usize,
    /// ...or when the oldest waiting message is this old (milliseconds).
    pub max_delay_ms: u64,
    /// Seconds a shutdown may spend flushing before it gives up (unacked messages are
    /// redelivered by the broker later, so nothing is lost).
    pub shutdown_timeout_s: u64,
    /// Seconds a batch may wait to be written before `/readyz` calls the pipeline
    /// stalled (a database that is down or too slow, or a wedged stage).
    pub stall_timeout_s: u64,
    /// ...or when the waiting messages' payloads add up to this many bytes.
    pub max_bytes: usize,
    /// Payload bytes in flight (received, not yet acknowledged) at most; beyond
    /// it MQTT stops reading the broker and HTTP ingest answers 503.
    pub max_inflight_bytes: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 1000,
            max_delay_ms: 50,
            shutdown_timeout_s: 10,
            stall_timeout_s: 30,
            max_bytes: 8 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
        }
    }
}

impl BatchSettings {
    /// Checks `[batch]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        // Each row binds 3 values and MySQL allows 65535 placeholders per statement.
        if !(1..=20_000).contains(&self.max_rows) {
            return Err(invalid("batch.max_rows", "must be 1..=20000"));
        }
        if self.max_bytes == 0 || self.max_inflight_bytes == 0 {
            return Err(invalid(
                "batch.max_inflight_bytes",
                "batch.max_bytes and batch.max_inflight_bytes must be at least 1",
            ));
        }
        if self.stall_timeout_s == 0 {
            return Err(invalid(
                "batch.stall_timeout_s",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}
