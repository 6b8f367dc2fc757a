//! `[co2]`: the built-in CO2 route.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings, DEFAULT_SINK};
use crate::clocks::ZoneSetting;

/// `[co2]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Co2Settings {
    /// The sink the CO2 readings go to (default `mysql`, i.e. `[database]`).
    pub sink: String,
    /// Also take the publishers' announcements (`<prefix>/<device>/events`
    /// beside each `<prefix>/+/emissions` topic) into `device_events`.
    pub events: bool,
    /// For an InfluxDB sink: the measurement (default: the topic).
    pub measurement: Option<String>,
    /// Zone of CO2 times sent without an offset (default: `wire.time_zone`).
    pub time_zone: Option<String>,
}

impl Default for Co2Settings {
    fn default() -> Self {
        Self {
            sink: DEFAULT_SINK.to_owned(),
            events: true,
            measurement: None,
            time_zone: None,
        }
    }
}

impl Settings {
    /// `co2.time_zone`, the CO2 route's own zone, if set.
    pub fn co2_zone(&self) -> Result<Option<ZoneSetting>, ConfigError> {
        self.co2
            .time_zone
            .as_deref()
            .map(|z| {
                z.parse()
                    .map_err(|e: co2_wire::ZoneError| invalid("co2.time_zone", e.to_string()))
            })
            .transpose()
    }
}
