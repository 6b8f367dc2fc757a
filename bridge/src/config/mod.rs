//! Settings: a TOML file overridden by `CO2_BRIDGE__<SECTION>__<KEY>` environment
//! variables, checked once at start so a bad value fails early and by name.

mod batch;
mod co2;
mod completeness;
mod database;
mod dead_letters;
mod devices;
mod discovery;
mod error;
mod http;
mod influx;
mod kafka;
mod load;
mod masking;
mod metrics;
mod mqtt;
mod retention;
mod rollups;
pub mod routes;
mod secret;
mod sinks;
mod state;
mod status;
#[cfg(test)]
mod tests;
mod wire;

pub use batch::BatchSettings;
pub use co2::Co2Settings;
pub use completeness::CompletenessSettings;
pub use database::DatabaseSettings;
pub use dead_letters::DeadLetterSettings;
pub use devices::DeviceSettings;
pub use discovery::{DiscoverySettings, DISCOVERY_ROUTE};
pub use error::ConfigError;
pub use http::HttpSettings;
pub use influx::{InfluxSettings, Precision};
pub use kafka::{KafkaSettings, OffsetReset, SecurityProtocol};
pub use metrics::MetricsSettings;
pub use mqtt::{MqttSettings, Protocol, TlsSettings};
pub use retention::{RetentionSettings, RETAINED_TABLES};
pub use rollups::{RollupSettings, Tier, DEFAULT_TIERS};
pub use routes::{RouteSettings, CO2_ROUTE, DEFAULT_SINK, EVENTS_ROUTE};
pub use sinks::{sink_name, SinkSettings};
pub use state::StateSettings;
pub use status::StatusSettings;
pub use wire::WireSettings;

pub(crate) use error::invalid;
pub(crate) use masking::mask;
pub use secret::Secret;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "CO2_BRIDGE";

/// Everything the bridge can be told.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The broker and what to subscribe to.
    pub mqtt: MqttSettings,
    /// Where the readings go: the MySQL sink called `mysql`, every route's default.
    pub database: DatabaseSettings,
    /// More sinks by name (`[sinks.<name>]`, `kind = "mysql"`, ...).
    pub sinks: BTreeMap<String, SinkSettings>,
    /// The built-in CO2 route.
    pub co2: Co2Settings,
    /// Where dead letters are kept.
    pub dead_letters: DeadLetterSettings,
    /// The `/metrics`, `/healthz` and `/readyz` listener.
    pub http: HttpSettings,
    /// When a batch is written.
    pub batch: BatchSettings,
    /// What payloads are accepted.
    pub wire: WireSettings,
    /// Limits on metric cardinality.
    pub metrics: MetricsSettings,
    /// Where the bridge keeps its own small state.
    pub state: StateSettings,
    /// The completeness accounting of numbered readings.
    pub completeness: CompletenessSettings,
    /// The status page at `/` on the operator listener.
    pub status: StatusSettings,
    /// The aggregates kept beside the raw rows in MySQL.
    pub rollups: RollupSettings,
    /// How long raw rows and rollups are kept.
    pub retention: RetentionSettings,
    /// More streams besides CO2 (`[[routes]]`).
    pub routes: Vec<RouteSettings>,
    /// More sources besides `[mqtt]` (`[[sources]]`, `kind = "kafka"`).
    pub sources: Vec<SourceSettings>,
    /// Settings of single devices or patterns of them (`[[devices]]`).
    pub devices: Vec<DeviceSettings>,
    /// Home Assistant MQTT discovery (`[discovery]`, off by default).
    pub discovery: DiscoverySettings,
}

/// `[[sources]]`: where else deliveries come from, by kind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSettings {
    /// A Kafka consumer group.
    Kafka(KafkaSettings),
}

impl Settings {
    /// Checks every value that can be checked without a network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_mqtt()?;
        self.rollups.tiers()?;
        self.retention.validate(&self.rollups)?;
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                SourceSettings::Kafka(kafka) => kafka.validate(&format!("sources.{i}"))?,
            }
        }
        for (key, sink) in self.sink_settings() {
            match sink {
                SinkSettings::Mysql(db) => db.validate(&key)?,
                SinkSettings::Influxdb(influx) => influx.validate(&key)?,
            }
        }
        if self.sinks.contains_key(DEFAULT_SINK) {
            return Err(invalid(
                "sinks.mysql",
                "`mysql` is the name of the sink [database] configures; give this one another name",
            ));
        }
        self.validate_http()?;
        self.batch.validate()?;
        self.zone_setting()?;
        self.co2_zone()?;
        self.device_zones()?;
        self.wire.validate()?;
        self.completeness.validate()?;
        self.status.validate()?;
        self.discovery.validate(self.mqtt.connections)?;
        let known: Vec<String> = self
            .sink_settings()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        self.dead_letters.validate(&known)?;
        Ok(())
    }
}
