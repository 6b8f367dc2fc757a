//! Settings: a TOML file overridden by `CO2_BRIDGE__<SECTION>__<KEY>` environment
//! variables, checked once at start so a bad value fails early and by name.

mod batch;
mod co2;
mod completeness;
mod database;
mod dead_letters;
mod devices;
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

use co2_wire::DeviceId;
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
        self.topic_filters()?;
        self.rollups.tiers()?;
        self.retention.validate(&self.rollups)?;
        DeviceId::parse(&self.mqtt.default_device)
            .map_err(|e| invalid("mqtt.default_device", e.to_string()))?;
        if self.mqtt.host.is_empty() && self.mqtt.hosts.is_empty() {
            return Err(invalid("mqtt.host", "must not be empty"));
        }
        self.mqtt_endpoints()?;
        if self.mqtt.client_id.is_empty() {
            return Err(invalid(
                "mqtt.client_id",
                "must be fixed and non-empty: the broker keeps the session under it",
            ));
        }
        if !(1..=16).contains(&self.mqtt.connections) {
            return Err(invalid("mqtt.connections", "must be 1..=16"));
        }
        if self.mqtt.receive_maximum == 0 {
            return Err(invalid("mqtt.receive_maximum", "must be 1..=65535"));
        }
        if self.mqtt.keep_alive_s < 5 {
            return Err(invalid("mqtt.keep_alive_s", "must be at least 5 seconds"));
        }
        if self.mqtt.read_linger_ms > 100 {
            return Err(invalid(
                "mqtt.read_linger_ms",
                "must be 0..=100 (it adds up to that much latency to every reading)",
            ));
        }
        if self.mqtt.session_expiry_s == 0 {
            return Err(invalid(
                "mqtt.session_expiry_s",
                "0 ends the session at every disconnect, and the broker would drop \
                 everything published while the bridge is away; use e.g. 604800",
            ));
        }
        self.mqtt.password_secret().validate()?;
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
        self.http_listen()?;
        let device_listen = self.device_listen()?;
        for (key, value) in [
            (
                "http.header_read_timeout_s",
                self.http.header_read_timeout_s,
            ),
            ("http.body_timeout_s", self.http.body_timeout_s),
            ("http.request_timeout_s", self.http.request_timeout_s),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1 second"));
            }
        }
        if self.http.max_connections == 0 || self.http.max_ingest_requests == 0 {
            return Err(invalid(
                "http.max_connections",
                "http.max_connections and http.max_ingest_requests must be at least 1",
            ));
        }
        if device_listen.is_none() {
            if let Some(route) = self.routes.iter().find(|r| r.http.is_some()) {
                return Err(invalid(
                    format!("routes.{}.http", route.name),
                    "HTTP ingest is served on the device listener: set http.device_listen \
                     (e.g. \"0.0.0.0:9465\" behind a TLS proxy)",
                ));
            }
        }
        if self.http.images_public && self.http.viewer_tokens_file.is_some() {
            return Err(invalid(
                "http.images_public",
                "set images_public or viewer_tokens_file, not both",
            ));
        }
        // Each row binds 3 values and MySQL allows 65535 placeholders per statement.
        if !(1..=20_000).contains(&self.batch.max_rows) {
            return Err(invalid("batch.max_rows", "must be 1..=20000"));
        }
        if self.batch.max_bytes == 0 || self.batch.max_inflight_bytes == 0 {
            return Err(invalid(
                "batch.max_inflight_bytes",
                "batch.max_bytes and batch.max_inflight_bytes must be at least 1",
            ));
        }
        if self.batch.stall_timeout_s == 0 {
            return Err(invalid(
                "batch.stall_timeout_s",
                "must be at least 1 second",
            ));
        }
        self.zone_setting()?;
        self.co2_zone()?;
        self.device_zones()?;
        if self
            .wire
            .min_emissions
            .partial_cmp(&self.wire.max_emissions)
            != Some(std::cmp::Ordering::Less)
        {
            return Err(invalid(
                "wire.min_emissions",
                "must be smaller than wire.max_emissions",
            ));
        }
        let known: Vec<String> = self
            .sink_settings()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        if self.completeness.scan_interval_s == 0 {
            return Err(invalid(
                "completeness.scan_interval_s",
                "must be at least 1 second",
            ));
        }
        if self.dead_letters.prune_interval_s == 0 {
            return Err(invalid(
                "dead_letters.prune_interval_s",
                "must be at least 1 second",
            ));
        }
        if let Some(sink) = &self.dead_letters.sink {
            if !known.iter().any(|k| sink_name(k) == sink) {
                return Err(invalid(
                    "dead_letters.sink",
                    format!("no sink {sink:?}; sinks are {known:?}"),
                ));
            }
        }
        if self.wire.dead_letter_payload_bytes > 1024 {
            return Err(invalid(
                "wire.dead_letter_payload_bytes",
                "must be at most 1024 (the width of rejected_messages.payload)",
            ));
        }
        Ok(())
    }
}
