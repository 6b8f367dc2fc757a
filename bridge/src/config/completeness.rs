//! `[completeness]`: the accounting of numbered readings.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `[completeness]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletenessSettings {
    /// Scan for missing numbered readings (needs the CO2 route on a MySQL sink).
    pub enabled: bool,
    /// Seconds between scans.
    pub scan_interval_s: u64,
    /// Seconds a missing reading may still arrive late before it counts as missing.
    pub late_after_s: u64,
}

impl Default for CompletenessSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            scan_interval_s: 10,
            late_after_s: 300,
        }
    }
}

impl CompletenessSettings {
    /// Checks `[completeness]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.scan_interval_s == 0 {
            return Err(invalid(
                "completeness.scan_interval_s",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}
