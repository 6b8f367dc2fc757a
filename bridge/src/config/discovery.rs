//! `[discovery]`: Home Assistant MQTT discovery, opt-in. With it on, the
//! bridge reads the retained announcements under `prefix` and stores each
//! announced sensor's state without a route written for it.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::DEFAULT_SINK;

/// The name of the route discovered sensors are counted under (metrics,
/// dead letters, the status page).
pub const DISCOVERY_ROUTE: &str = "discovery";

/// `[discovery]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// Read Home Assistant discovery announcements (`<prefix>/<component>/
    /// [<node_id>/]<object_id>/config`) and store the sensors they announce.
    pub homeassistant: bool,
    /// The discovery prefix Home Assistant, Zigbee2MQTT and Tasmota use.
    pub prefix: String,
    /// Most sensors held at once; announcements beyond it are refused
    /// (`too_many_sensors`), so a flooding publisher cannot grow the bridge.
    pub max_sensors: usize,
    /// Most sensors sharing one state topic (each is a field of its messages).
    pub max_sensors_per_topic: usize,
    /// Longest announcement accepted, in bytes (Zigbee2MQTT's are ~1 KiB).
    pub max_announcement_bytes: usize,
    /// Longest state message accepted, in bytes.
    pub max_state_bytes: usize,
    /// The sink whose `readings` table holds the values (the default sink).
    pub sink: String,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            homeassistant: false,
            prefix: "homeassistant".to_owned(),
            max_sensors: 1000,
            max_sensors_per_topic: 64,
            max_announcement_bytes: 16 * 1024,
            max_state_bytes: 64 * 1024,
            sink: DEFAULT_SINK.to_owned(),
        }
    }
}

impl DiscoverySettings {
    /// Checks the section without I/O: a prefix that is a plain topic (no
    /// wildcards, no empty level) and bounds that are neither 0 nor huge.
    pub fn validate(&self, mqtt_connections: u16) -> Result<(), ConfigError> {
        if !self.homeassistant {
            return Ok(());
        }
        let prefix = &self.prefix;
        if prefix.is_empty()
            || prefix.split('/').any(str::is_empty)
            || prefix.contains(['+', '#', '\0'])
            || prefix.starts_with('$')
        {
            return Err(invalid(
                "discovery.prefix",
                "must be a topic without wildcards or empty levels, such as \"homeassistant\"",
            ));
        }
        if !(1..=100_000).contains(&self.max_sensors) {
            return Err(invalid("discovery.max_sensors", "must be 1..=100000"));
        }
        if !(1..=256).contains(&self.max_sensors_per_topic) {
            return Err(invalid(
                "discovery.max_sensors_per_topic",
                "must be 1..=256",
            ));
        }
        if !(256..=1024 * 1024).contains(&self.max_announcement_bytes) {
            return Err(invalid(
                "discovery.max_announcement_bytes",
                "must be 256..=1048576",
            ));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.max_state_bytes) {
            return Err(invalid("discovery.max_state_bytes", "must be 1..=16777216"));
        }
        // A shared subscription gets no retained messages (MQTT 5, 4.8.2), and
        // the announcements are retained: with several connections the bridge
        // would never see them.
        if mqtt_connections > 1 {
            return Err(invalid(
                "discovery.homeassistant",
                "needs mqtt.connections = 1: shared subscriptions receive no retained announcements",
            ));
        }
        Ok(())
    }
}
