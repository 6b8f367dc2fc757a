//! `[[devices]]`: settings of single devices or patterns of them.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings};
use crate::clocks::{DevicePattern, ZoneSetting};

/// `[[devices]]`: what holds for the devices a pattern matches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    /// A device id, or a pattern with `*` and `?` (`pi-seoul-*`); an exact
    /// id wins over patterns, and the pattern with more literal characters
    /// over one with fewer.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Zone of the device's times sent without an offset: an IANA name, a
    /// fixed offset (`+09:00`) or `auto`; wins over its route's.
    pub time_zone: Option<String>,
}

impl Settings {
    /// The `[[devices]]` entries that set a zone, in file order.
    pub fn device_zones(&self) -> Result<Vec<(DevicePattern, ZoneSetting)>, ConfigError> {
        let mut zones = Vec::new();
        for (i, device) in self.devices.iter().enumerate() {
            let key = |k: &str| format!("devices.{i}.{k}");
            let pattern = DevicePattern::new(&device.pattern).ok_or_else(|| {
                invalid(
                    key("match"),
                    "must be a device id or pattern of 1-64 characters",
                )
            })?;
            if let Some(zone) = &device.time_zone {
                let zone = zone
                    .parse()
                    .map_err(|e: co2_wire::ZoneError| invalid(key("time_zone"), e.to_string()))?;
                zones.push((pattern, zone));
            }
        }
        Ok(zones)
    }
}
