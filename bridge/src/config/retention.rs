//! `[retention]`: how long raw rows and each rollup tier are kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, RollupSettings};

/// The raw tables retention applies to: those with rollups, so what is
/// dropped stays summed up.
pub const RETAINED_TABLES: [&str; 3] = ["co2_emissions", "readings", "bin_levels"];

/// `[retention]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Days raw rows of co2_emissions, readings and bin_levels (and the
    /// LoRaWAN frames of lorawan_frames) are kept
    /// (0: forever). Readings older than that are dead-lettered
    /// (`beyond_retention`), so a rollup is never recomputed without them.
    pub raw_days: u32,
    /// Days each rollup tier is kept, by tier (`"1m" = 90`); a tier not
    /// named is kept forever.
    pub tiers: BTreeMap<String, u32>,
    /// Seconds between maintenance passes (partitions added ahead, old ones dropped).
    pub interval_s: u64,
    /// Days of partitions kept ready ahead of today.
    pub ahead_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            raw_days: 0,
            tiers: BTreeMap::new(),
            interval_s: 3600,
            ahead_days: 7,
        }
    }
}

impl RetentionSettings {
    /// Checks the tiers named exist and the intervals are sane.
    pub fn validate(&self, rollups: &RollupSettings) -> Result<(), ConfigError> {
        for label in self.tiers.keys() {
            if !rollups.tiers.iter().any(|t| t == label) {
                return Err(invalid(
                    "retention.tiers",
                    format!("{label:?} is not one of rollups.tiers {:?}", rollups.tiers),
                ));
            }
        }
        if self.interval_s == 0 {
            return Err(invalid("retention.interval_s", "must be at least 1"));
        }
        if !(1..=366).contains(&self.ahead_days) {
            return Err(invalid("retention.ahead_days", "must be 1..=366"));
        }
        Ok(())
    }

    /// How old a reading for a retained table may be, if raw rows expire.
    pub fn max_age(&self) -> Option<chrono::TimeDelta> {
        (self.raw_days > 0).then(|| chrono::TimeDelta::days(i64::from(self.raw_days)))
    }

    /// Days `tier` is kept (0: forever).
    pub fn tier_days(&self, tier: &str) -> u32 {
        self.tiers.get(tier).copied().unwrap_or(0)
    }
}
