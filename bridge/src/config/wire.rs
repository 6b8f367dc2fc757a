//! `[wire]`: what payloads are accepted.

use std::time::Duration;

use co2_wire::Limits;
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings};
use crate::clocks::ZoneSetting;

/// `[wire]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WireSettings {
    /// Zone of datetimes sent without an offset, for every route and device
    /// that sets none: an IANA name (`Europe/Berlin`), a fixed offset
    /// (`+09:00`) or `auto` (learned per device). Times are stored in UTC.
    pub time_zone: String,
    /// Smallest accepted value.
    pub min_emissions: f64,
    /// Largest accepted value (the `DOUBLE(7,2)` column holds at most 99999.99).
    pub max_emissions: f64,
    /// Seconds a reading may be stamped ahead of the bridge's clock.
    pub max_future_s: u64,
    /// Longest accepted payload in bytes.
    pub max_payload_bytes: usize,
    /// Bytes of a refused payload kept in `rejected_messages` (at most 1024, the column).
    pub dead_letter_payload_bytes: usize,
}

impl Default for WireSettings {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            time_zone: "UTC".into(),
            min_emissions: limits.min_emissions,
            max_emissions: limits.max_emissions,
            max_future_s: limits.max_future.as_secs(),
            max_payload_bytes: limits.max_payload_bytes,
            dead_letter_payload_bytes: 1024,
        }
    }
}

impl WireSettings {
    /// Checks `[wire]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_emissions.partial_cmp(&self.max_emissions) != Some(std::cmp::Ordering::Less) {
            return Err(invalid(
                "wire.min_emissions",
                "must be smaller than wire.max_emissions",
            ));
        }
        if self.dead_letter_payload_bytes > 1024 {
            return Err(invalid(
                "wire.dead_letter_payload_bytes",
                "must be at most 1024 (the width of rejected_messages.payload)",
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// `wire.time_zone`: the zone of offset-less datetimes where nothing more specific is set.
    pub fn zone_setting(&self) -> Result<ZoneSetting, ConfigError> {
        self.wire
            .time_zone
            .parse()
            .map_err(|e: co2_wire::ZoneError| invalid("wire.time_zone", e.to_string()))
    }

    /// The payload limits.
    pub fn limits(&self) -> Limits {
        Limits {
            min_emissions: self.wire.min_emissions,
            max_emissions: self.wire.max_emissions,
            max_future: Duration::from_secs(self.wire.max_future_s),
            max_payload_bytes: self.wire.max_payload_bytes,
        }
    }
}
