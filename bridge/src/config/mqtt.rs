//! `[mqtt]`: the broker, what to subscribe to, and how.

use std::path::PathBuf;

use co2_wire::endpoint::{self, Endpoint};
use co2_wire::{DeviceId, TopicFilter};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::masking::mask;
use super::{invalid, ConfigError, Secret, Settings};

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Connect to the MQTT broker at all (default true); false for a bridge
    /// fed only by `[[sources]]`.
    pub enabled: bool,
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    pub port: u16,
    /// The nodes of a clustered broker, `host:port` each (a bare host takes
    /// `port`); when set, `host` is not used. The bridge stays on a node while
    /// it works and moves to the next on a connection failure, resuming its
    /// persistent session under the same client id, which a broker that
    /// replicates sessions across nodes keeps.
    pub hosts: Vec<String>,
    /// Fixed client id: the broker keeps the persistent session under it.
    pub client_id: String,
    /// Topic filters; the first `+` level names the device. `$share/<group>/...` splits a
    /// stream between several bridges.
    pub topics: Vec<String>,
    /// Device recorded for topics without a `+` level (the legacy `co2/emissions`).
    pub default_device: String,
    /// Broker user name.
    pub username: Option<String>,
    /// Broker password (prefer `password_file`).
    #[serde(serialize_with = "mask")]
    pub password: Option<SecretString>,
    /// File holding the broker password (e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
    /// `v5` (default) or `v311` for brokers without MQTT 5.
    pub protocol: Protocol,
    /// MQTT connections this bridge opens (1..=16). With more than one, they
    /// subscribe in a shared group named after `client_id` and use client ids
    /// `<client_id>-<n>`: a broker that serves each connection in turn (Mosquitto)
    /// then gives the bridge several turns per pass, which keeps a burst from many
    /// devices from overflowing one connection's queue.
    pub connections: u16,
    /// The in-flight window: how many unacknowledged QoS 1 messages the broker may
    /// send. Sent as the v5 receive-maximum; with v3.1.1 the broker decides
    /// (Mosquitto: `max_inflight_messages`), so set it to the broker's value. It
    /// bounds memory and caps a batch, which is written as soon as it fills the window.
    pub receive_maximum: u16,
    /// Seconds between keep-alive pings.
    pub keep_alive_s: u64,
    /// Milliseconds to wait before reading the socket again after a read that
    /// emptied it (0: read as soon as anything arrives). A bridge that keeps
    /// up otherwise wakes for every few messages; waiting lets one read bring
    /// many, for at most this much more latency, rounded up to the timer's
    /// next millisecond tick (0..=100).
    pub read_linger_ms: u64,
    /// How long (seconds) the broker keeps the session, and queues for it, while the
    /// bridge is away.
    pub session_expiry_s: u32,
    /// Longest back-off between reconnect attempts, in milliseconds.
    pub reconnect_max_ms: u64,
    /// TLS; enabled when `ca_file` is set.
    pub tls: Option<TlsSettings>,
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that require one.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

/// Which MQTT version to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 5: the bridge sets the in-flight window (receive-maximum).
    #[default]
    V5,
    /// MQTT 3.1.1: the broker sets the window.
    V311,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 1883,
            hosts: Vec::new(),
            client_id: "co2-bridge".into(),
            topics: vec!["co2/+/emissions".into(), "co2/emissions".into()],
            default_device: "default".into(),
            protocol: Protocol::V5,
            connections: 1,
            username: None,
            password: None,
            password_file: None,
            receive_maximum: u16::MAX,
            keep_alive_s: 30,
            read_linger_ms: 1,
            session_expiry_s: 7 * 24 * 3600,
            reconnect_max_ms: 30_000,
            tls: None,
        }
    }
}

impl MqttSettings {
    /// `password` or `password_file`.
    pub fn password_secret(&self) -> Secret<'_> {
        Secret::new("mqtt", "password", &self.password, &self.password_file)
    }
}

impl Settings {
    /// Checks `[mqtt]`.
    pub(super) fn validate_mqtt(&self) -> Result<(), ConfigError> {
        self.topic_filters()?;
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
        Ok(())
    }

    /// The broker's nodes: `mqtt.hosts`, or the single `mqtt.host:mqtt.port`.
    pub fn mqtt_endpoints(&self) -> Result<Vec<Endpoint>, ConfigError> {
        endpoint::parse_list(&self.mqtt.hosts, &self.mqtt.host, self.mqtt.port)
            .map_err(|e| invalid("mqtt.hosts", e.to_string()))
    }

    /// Client id of connection `link` (the plain `client_id` with one connection).
    pub fn mqtt_client_id(&self, link: usize) -> String {
        if self.mqtt.connections > 1 {
            format!("{}-{link}", self.mqtt.client_id)
        } else {
            self.mqtt.client_id.clone()
        }
    }

    /// What to subscribe to: the routes' filters, inside a shared group named
    /// after `client_id` when the bridge opens several connections.
    pub fn mqtt_subscriptions(&self, filters: Vec<String>) -> Vec<String> {
        if self.mqtt.connections <= 1 {
            return filters;
        }
        filters
            .into_iter()
            .map(|f| {
                if f.starts_with("$share/") {
                    f
                } else {
                    format!("$share/{}/{f}", self.mqtt.client_id)
                }
            })
            .collect()
    }

    /// The parsed topic filters.
    pub fn topic_filters(&self) -> Result<Vec<TopicFilter>, ConfigError> {
        if self.mqtt.topics.is_empty() {
            return Err(invalid("mqtt.topics", "needs at least one topic filter"));
        }
        self.mqtt
            .topics
            .iter()
            .map(|t| {
                TopicFilter::parse(t).map_err(|e| invalid("mqtt.topics", format!("{t:?}: {e}")))
            })
            .collect()
    }

    /// The configured default device id.
    pub fn default_device(&self) -> Result<DeviceId, ConfigError> {
        DeviceId::parse(&self.mqtt.default_device)
            .map_err(|e| invalid("mqtt.default_device", e.to_string()))
    }

    /// The broker password, from `password` or `password_file`.
    pub fn mqtt_password(&self) -> Result<Option<SecretString>, ConfigError> {
        self.mqtt.password_secret().read()
    }
}
