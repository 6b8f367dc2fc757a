//! Settings: a TOML file overridden by `CO2_BRIDGE__<SECTION>__<KEY>` environment
//! variables, checked once at start so a bad value fails early and by name.

mod kafka;
mod mqtt;
pub mod routes;

pub use kafka::{KafkaSettings, OffsetReset, SecurityProtocol};
pub use mqtt::Protocol;
pub use routes::{RouteSettings, CO2_ROUTE, DEFAULT_SINK, EVENTS_ROUTE};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use co2_wire::endpoint::{self, Endpoint};
use co2_wire::{DeviceId, Limits, TopicFilter};

use crate::clocks::{DevicePattern, ZoneSetting};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

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
    /// More streams besides CO2 (`[[routes]]`).
    pub routes: Vec<RouteSettings>,
    /// More sources besides `[mqtt]` (`[[sources]]`, `kind = "kafka"`).
    pub sources: Vec<SourceSettings>,
    /// Settings of single devices or patterns of them (`[[devices]]`).
    pub devices: Vec<DeviceSettings>,
}

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

/// `[[sources]]`: where else deliveries come from, by kind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSettings {
    /// A Kafka consumer group.
    Kafka(KafkaSettings),
}

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

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `mysql://user@host:port/database`; put the password in `password_file`.
    #[serde(serialize_with = "mask_url")]
    pub url: String,
    /// The nodes of a clustered database (Galera, InnoDB Cluster), `host:port`
    /// each (a bare host takes the URL's port); when set, the URL's host and
    /// port are not used. Writes go to one node at a time; when it fails (its
    /// connections break, or it says it is not part of the primary component)
    /// the sink moves to the next and retries there.
    pub hosts: Vec<String>,
    /// Database password (prefer `password_file`).
    #[serde(serialize_with = "mask")]
    pub password: Option<SecretString>,
    /// File holding the database password.
    pub password_file: Option<PathBuf>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Apply pending migrations at start (skipped, with a log line, if the account may not).
    pub migrate_on_start: bool,
    /// Seconds to wait for a connection before counting the attempt as failed.
    pub connect_timeout_s: u64,
    /// Longest back-off between write retries, in milliseconds.
    pub retry_max_ms: u64,
}

/// `[sinks.<name>]`: a store, by kind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkSettings {
    /// A MySQL-protocol database, with the keys of `[database]`.
    Mysql(DatabaseSettings),
    /// An InfluxDB (1.x `/write`, or the v1 API of 2.x and 3.x).
    Influxdb(InfluxSettings),
}

/// `[sinks.<name>]` with `kind = "influxdb"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxSettings {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`.
    #[serde(serialize_with = "mask_url")]
    pub url: String,
    /// The database (2.x: the database of a DBRP mapping; 3.x: the database).
    pub database: String,
    /// Retention policy to write into (default: the database's default).
    pub retention_policy: Option<String>,
    /// User name (InfluxDB 1.x authentication, sent as HTTP Basic auth).
    pub username: Option<String>,
    /// Password of `username` (prefer `password_file`).
    #[serde(serialize_with = "mask")]
    pub password: Option<SecretString>,
    /// File holding the password of `username`.
    pub password_file: Option<PathBuf>,
    /// API token (2.x, 3.x; sent as `Authorization: Token ...`; prefer `token_file`).
    #[serde(serialize_with = "mask")]
    pub token: Option<SecretString>,
    /// File holding the API token.
    pub token_file: Option<PathBuf>,
    /// Unit of the timestamps written: `ns`, `us` (default), `ms` or `s`. Readings
    /// of one device closer together than this overwrite each other; messages
    /// without a time of their own are stamped 1 µs apart, so `ms` or `s` can
    /// merge a burst of them.
    pub precision: Precision,
    /// Create the database at start when it is missing (needs an admin account on 1.x).
    pub create_database: bool,
    /// Measurement that keeps dead letters when this sink keeps them.
    pub dead_letter_measurement: String,
    /// Compress request bodies with gzip (only those large enough for it to pay).
    pub gzip: bool,
    /// Seconds to wait for a connection.
    pub connect_timeout_s: u64,
    /// Seconds a write (or any request) may take before it counts as failed.
    pub request_timeout_s: u64,
    /// Longest back-off between write retries, in milliseconds.
    pub retry_max_ms: u64,
}

/// The unit of InfluxDB timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    #[default]
    Ms,
    /// Seconds.
    S,
}

impl Default for InfluxSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8086".into(),
            database: "co2".into(),
            retention_policy: None,
            username: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            precision: Precision::Us,
            create_database: true,
            dead_letter_measurement: "rejected_messages".into(),
            gzip: true,
            connect_timeout_s: 5,
            request_timeout_s: 30,
            retry_max_ms: 10_000,
        }
    }
}

impl InfluxSettings {
    /// Checks what can be checked without a network; `key` is `sinks.<name>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.url(key)?;
        if self.database.is_empty() {
            return Err(invalid(format!("{key}.database"), "must not be empty"));
        }
        if self.retention_policy.as_deref() == Some("") {
            return Err(invalid(
                format!("{key}.retention_policy"),
                "must not be empty; leave it out for the database's default",
            ));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(invalid(
                format!("{key}.password"),
                "set password or password_file, not both",
            ));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(invalid(
                format!("{key}.token"),
                "set token or token_file, not both",
            ));
        }
        let has_password = self.password.is_some() || self.password_file.is_some();
        let has_token = self.token.is_some() || self.token_file.is_some();
        if has_password && self.username.is_none() {
            return Err(invalid(
                format!("{key}.username"),
                "a password needs a username",
            ));
        }
        if has_token && (self.username.is_some() || has_password) {
            return Err(invalid(
                format!("{key}.token_file"),
                "use a token or a username and password, not both",
            ));
        }
        if self.dead_letter_measurement.is_empty() {
            return Err(invalid(
                format!("{key}.dead_letter_measurement"),
                "must not be empty",
            ));
        }
        if self.connect_timeout_s == 0 || self.request_timeout_s == 0 {
            return Err(invalid(
                format!("{key}.request_timeout_s"),
                "timeouts must be at least 1 second",
            ));
        }
        Ok(())
    }

    /// The base URL, parsed; `key` names the section in errors.
    pub fn url(&self, key: &str) -> Result<url::Url, ConfigError> {
        let name = format!("{key}.url");
        let url = url::Url::parse(&self.url)
            .map_err(|e| invalid(name.clone(), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(name, "must start with http:// or https://"));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(invalid(
                name,
                "must name a host, e.g. http://127.0.0.1:8086",
            ));
        }
        Ok(url)
    }

    /// The password of `username`, from `password` or `password_file`.
    pub fn password(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        secret(
            &self.password,
            &self.password_file,
            &format!("{key}.password_file"),
        )
    }

    /// The API token, from `token` or `token_file`.
    pub fn token(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        secret(&self.token, &self.token_file, &format!("{key}.token_file"))
    }
}

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

/// `[dead_letters]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSettings {
    /// The sink that keeps dead letters: default `mysql` when any route writes
    /// there, else the first sink a route uses. Nothing is acknowledged before
    /// its dead letter is stored there.
    pub sink: Option<String>,
    /// Days dead letters are kept (0: forever).
    pub retention_days: u32,
    /// Seconds between retention passes.
    pub prune_interval_s: u64,
}

impl Default for DeadLetterSettings {
    fn default() -> Self {
        Self {
            sink: None,
            retention_days: 30,
            prune_interval_s: 3600,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// The operator listener (`/metrics`, `/healthz`, `/readyz`); keep it on
    /// loopback or an internal network.
    pub listen: String,
    /// The device listener (`POST /ingest/<route>`, `/images`); off unless set.
    pub device_listen: Option<String>,
    /// Seconds a client has to send a request head (and, on a kept-alive
    /// connection, to start the next one) before it is disconnected.
    pub header_read_timeout_s: u64,
    /// Seconds a client has to send a whole request body.
    pub body_timeout_s: u64,
    /// Seconds a request may take to be answered (ingest: to be stored).
    pub request_timeout_s: u64,
    /// Connections each listener serves at once; more are answered 503.
    pub max_connections: usize,
    /// Ingest requests in flight at once; more are answered 503 with Retry-After.
    pub max_ingest_requests: usize,
    /// File of viewer tokens (a line each) that may open `/images`.
    pub viewer_tokens_file: Option<PathBuf>,
    /// Serve `/images` without a token (only on a trusted network).
    pub images_public: bool,
}

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

/// `[state]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// Directory for the crash quarantine (see the README). Default: `$STATE_DIRECTORY`
    /// (systemd's `StateDirectory=`), else `co2-bridge-<client_id>` in the temp dir.
    pub dir: Option<PathBuf>,
}

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

/// `[status]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// A device whose newest reading is older than this many seconds is marked stale.
    pub stale_after_s: u64,
    /// Seconds between the page's reloads (its `<meta refresh>`).
    pub refresh_s: u64,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            stale_after_s: 300,
            refresh_s: 10,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Devices that get their own series; later ones are counted in
    /// `co2_bridge_devices_overflow_total` instead.
    pub max_devices: usize,
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

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "mysql://co2_bridge@127.0.0.1:3306/co2".into(),
            hosts: Vec::new(),
            password: None,
            password_file: None,
            max_connections: 4,
            migrate_on_start: true,
            connect_timeout_s: 5,
            retry_max_ms: 10_000,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            device_listen: None,
            header_read_timeout_s: 10,
            body_timeout_s: 30,
            request_timeout_s: 30,
            max_connections: 256,
            max_ingest_requests: 64,
            viewer_tokens_file: None,
            images_public: false,
        }
    }
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

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { max_devices: 1000 }
    }
}

/// Why the settings cannot be used. Each variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong type.
    #[error("cannot load the configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is present but unusable.
    #[error("`{key}`: {message}")]
    Invalid {
        /// The offending key, as written in the TOML file.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A `[[routes]]` entry is unusable.
    #[error("route {route:?}: `{key}`: {message}")]
    Route {
        /// The route's name.
        route: String,
        /// The key inside the route.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A `*_file` secret could not be read.
    #[error("`{key}`: cannot read {path}: {source}")]
    SecretFile {
        /// The `*_file` key.
        key: String,
        /// The path it names.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Loads defaults, then `file` (if given), then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment passed in (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("mqtt.topics")
                .with_list_parse_key("mqtt.hosts")
                .with_list_parse_key("database.hosts")
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that can be checked without a network.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if self.mqtt.password.is_some() && self.mqtt.password_file.is_some() {
            return Err(invalid(
                "mqtt.password",
                "set password or password_file, not both",
            ));
        }
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
        let routes = crate::route::Routes::from_settings(self)?;
        let sinks = self.sink_settings();
        let known: Vec<String> = sinks.iter().map(|(k, _)| k.clone()).collect();
        for route in routes.iter() {
            let key = if route.name() == crate::route::CO2_ROUTE {
                "co2.sink".to_owned()
            } else {
                format!("routes.{}.sink", route.name())
            };
            let Some((_, sink)) = sinks.iter().find(|(k, _)| sink_name(k) == route.sink()) else {
                return Err(invalid(
                    key,
                    format!("no sink {:?}; sinks are {known:?}", route.sink()),
                ));
            };
            if let (SinkSettings::Influxdb(_), Some(measurement)) = (sink, route.measurement()) {
                crate::sink::influx::line::check(
                    crate::sink::influx::line::Part::Measurement,
                    measurement,
                )
                .map_err(|e| {
                    invalid(
                        if route.name() == crate::route::CO2_ROUTE {
                            "co2.measurement".to_owned()
                        } else {
                            format!("routes.{}.measurement", route.name())
                        },
                        e.to_string(),
                    )
                })?;
            }
            if matches!(sink, SinkSettings::Influxdb(_)) && route.is_binary() {
                return Err(invalid(
                    key,
                    format!(
                        "sink {:?} is an InfluxDB, which stores no files; send the binary route {:?} \
                         to a MySQL sink",
                        route.sink(),
                        route.name()
                    ),
                ));
            }
        }
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

    /// Where the bridge keeps its state (see [`StateSettings::dir`]).
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state.dir {
            return dir.clone();
        }
        // systemd may list several directories separated by ':'; the first is ours.
        match std::env::var_os("STATE_DIRECTORY") {
            Some(dirs) if !dirs.is_empty() => {
                let dirs = dirs.to_string_lossy().into_owned();
                PathBuf::from(dirs.split(':').next().unwrap_or_default())
            }
            _ => std::env::temp_dir().join(format!("co2-bridge-{}", self.mqtt.client_id)),
        }
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

    /// Every configured sink with its config key: `database` (the sink called
    /// `mysql`) first, then `sinks.<name>` in name order.
    pub fn sink_settings(&self) -> Vec<(String, SinkSettings)> {
        let mut sinks = vec![(
            "database".to_owned(),
            SinkSettings::Mysql(self.database.clone()),
        )];
        sinks.extend(
            self.sinks
                .iter()
                .map(|(name, s)| (format!("sinks.{name}"), s.clone())),
        );
        sinks
    }

    /// The database URL of `[database]`, parsed.
    pub fn database_url(&self) -> Result<url::Url, ConfigError> {
        self.database.url("database")
    }

    /// The HTTP listen address, parsed.
    pub fn http_listen(&self) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(&self.http.listen)
            .map_err(|e| invalid("http.listen", format!("{:?}: {e}", self.http.listen)))
    }

    /// The device listener's address, if it is on.
    pub fn device_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.http
            .device_listen
            .as_deref()
            .filter(|a| !a.is_empty())
            .map(|a| {
                SocketAddr::from_str(a)
                    .map_err(|e| invalid("http.device_listen", format!("{a:?}: {e}")))
            })
            .transpose()
    }

    /// `wire.time_zone`: the zone of offset-less datetimes where nothing more specific is set.
    pub fn zone_setting(&self) -> Result<ZoneSetting, ConfigError> {
        self.wire
            .time_zone
            .parse()
            .map_err(|e: co2_wire::ZoneError| invalid("wire.time_zone", e.to_string()))
    }

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

    /// The payload limits.
    pub fn limits(&self) -> Limits {
        Limits {
            min_emissions: self.wire.min_emissions,
            max_emissions: self.wire.max_emissions,
            max_future: Duration::from_secs(self.wire.max_future_s),
            max_payload_bytes: self.wire.max_payload_bytes,
        }
    }

    /// The broker password, from `password` or `password_file`.
    pub fn mqtt_password(&self) -> Result<Option<SecretString>, ConfigError> {
        secret(
            &self.mqtt.password,
            &self.mqtt.password_file,
            "mqtt.password_file",
        )
    }

    /// The password of `[database]`, from `password` or `password_file`.
    pub fn database_password(&self) -> Result<Option<SecretString>, ConfigError> {
        self.database.password("database")
    }

    /// The effective settings as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The sink name of a config key: `database` is the sink `mysql`, `sinks.x` is `x`.
pub fn sink_name(key: &str) -> &str {
    key.strip_prefix("sinks.").unwrap_or(DEFAULT_SINK)
}

impl DatabaseSettings {
    /// Checks what can be checked without a network; `key` is `database` or `sinks.<name>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.password.is_some() && self.password_file.is_some() {
            return Err(invalid(
                format!("{key}.password"),
                "set password or password_file, not both",
            ));
        }
        self.endpoints(key)?;
        if self.max_connections == 0 {
            return Err(invalid(
                format!("{key}.max_connections"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The URL, parsed; `key` names the section in errors.
    pub fn url(&self, key: &str) -> Result<url::Url, ConfigError> {
        let name = format!("{key}.url");
        let url = url::Url::parse(&self.url)
            .map_err(|e| invalid(name.clone(), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "mysql" | "mariadb") {
            return Err(invalid(name, "must start with mysql://"));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(invalid(
                name,
                "must name the database, e.g. mysql://co2_bridge@127.0.0.1:3306/co2",
            ));
        }
        Ok(url)
    }

    /// The nodes: `hosts`, or the URL's host and port.
    pub fn endpoints(&self, key: &str) -> Result<Vec<Endpoint>, ConfigError> {
        let url = self.url(key)?;
        let host = url.host_str().unwrap_or("localhost");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        endpoint::parse_list(&self.hosts, host, url.port().unwrap_or(3306))
            .map_err(|e| invalid(format!("{key}.hosts"), e.to_string()))
    }

    /// The password, from `password` or `password_file`; `key` names the section in errors.
    pub fn password(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        secret(
            &self.password,
            &self.password_file,
            &format!("{key}.password_file"),
        )
    }
}

pub(crate) fn secret(
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_owned(),
        path: path.clone(),
        source,
    })?;
    // Files written by `echo` or editors end in a newline that is not part of the secret.
    Ok(Some(SecretString::from(
        text.trim_end_matches(['\n', '\r']),
    )))
}

pub(crate) fn mask<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) if !v.expose_secret().is_empty() => s.serialize_str("********"),
        _ => s.serialize_none(),
    }
}

fn mask_url<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    match url::Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("********"));
            s.serialize_str(url.as_str())
        }
        _ => s.serialize_str(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.mqtt.topics, ["co2/+/emissions", "co2/emissions"]);
        assert_eq!(s.http.listen, "127.0.0.1:9464");
        assert_eq!((s.batch.max_rows, s.batch.max_delay_ms), (1000, 50));
        assert_eq!(s.database.url, "mysql://co2_bridge@127.0.0.1:3306/co2");
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_from(
            None,
            env(&[
                ("CO2_BRIDGE__DATABASE__URL", "mysql://u@db:3306/x"),
                ("CO2_BRIDGE__BATCH__MAX_ROWS", "250"),
                ("CO2_BRIDGE__MQTT__TOPICS", "a/+/b,c"),
                ("CO2_BRIDGE__MQTT__RECEIVE_MAXIMUM", "100"),
                ("UNRELATED", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url, "mysql://u@db:3306/x");
        assert_eq!(s.batch.max_rows, 250);
        assert_eq!(s.mqtt.topics, ["a/+/b", "c"]);
        assert_eq!(s.mqtt.receive_maximum, 100);
    }

    #[test]
    fn cluster_nodes_come_from_hosts_or_the_single_host() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let single = s.mqtt_endpoints().unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].to_string(), "127.0.0.1:1883");
        assert_eq!(
            s.database.endpoints("database").unwrap()[0].to_string(),
            "127.0.0.1:3306"
        );
        let s = Settings::load_from(
            None,
            env(&[
                ("CO2_BRIDGE__MQTT__HOSTS", "a:1884,b"),
                ("CO2_BRIDGE__DATABASE__URL", "mysql://u@db:3307/x"),
                ("CO2_BRIDGE__DATABASE__HOSTS", "db1,db2:3308"),
            ]),
        )
        .unwrap();
        let mqtt: Vec<String> = s
            .mqtt_endpoints()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(mqtt, ["a:1884", "b:1883"]);
        let db: Vec<String> = s
            .database
            .endpoints("database")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(db, ["db1:3307", "db2:3308"]);
        let err =
            Settings::load_from(None, env(&[("CO2_BRIDGE__MQTT__HOSTS", "a:0")])).unwrap_err();
        assert!(err.to_string().contains("mqtt.hosts"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("CO2_BRIDGE__BATCH__MAX_ROWS", "0", "batch.max_rows"),
            (
                "CO2_BRIDGE__WIRE__TIME_ZONE",
                "Mars/Olympus",
                "wire.time_zone",
            ),
            ("CO2_BRIDGE__MQTT__TOPICS", "co2/x+/y", "mqtt.topics"),
            (
                "CO2_BRIDGE__DATABASE__URL",
                "postgres://x/y",
                "database.url",
            ),
            ("CO2_BRIDGE__HTTP__LISTEN", "localhost", "http.listen"),
            (
                "CO2_BRIDGE__MQTT__DEFAULT_DEVICE",
                "a b",
                "mqtt.default_device",
            ),
            (
                "CO2_BRIDGE__MQTT__SESSION_EXPIRY_S",
                "0",
                "mqtt.session_expiry_s",
            ),
            (
                "CO2_BRIDGE__MQTT__READ_LINGER_MS",
                "101",
                "mqtt.read_linger_ms",
            ),
        ];
        for (key, value, named) in cases {
            let err = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused() {
        let err = Settings::load_from(None, env(&[("CO2_BRIDGE__DATABSE__URL", "x")])).unwrap_err();
        assert!(err.to_string().contains("databse"), "{err}");
        let err =
            Settings::load_from(None, env(&[("CO2_BRIDGE__BATCH__MAX_ROWS", "many")])).unwrap_err();
        assert!(err.to_string().contains("max_rows"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_and_are_masked() {
        let dir = std::env::temp_dir().join(format!("co2-bridge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("db-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "CO2_BRIDGE__DATABASE__PASSWORD_FILE",
                    file.to_str().unwrap(),
                ),
                ("CO2_BRIDGE__MQTT__PASSWORD", "hunter2"),
                ("CO2_BRIDGE__DATABASE__URL", "mysql://u:inline@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.database_password().unwrap().unwrap().expose_secret(),
            "s3cret"
        );
        let shown = s.to_masked_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains("inline"),
            "{shown}"
        );
        assert!(shown.contains("********"), "{shown}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_secret_file_is_named() {
        let s = Settings::load_from(
            None,
            env(&[("CO2_BRIDGE__MQTT__PASSWORD_FILE", "/nonexistent/pw")]),
        )
        .unwrap();
        let err = s.mqtt_password().unwrap_err().to_string();
        assert!(
            err.contains("mqtt.password_file") && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.example.toml");
        let s = Settings::load_from(Some(&path), env(&[])).unwrap();
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.to_masked_toml(), defaults.to_masked_toml());
    }
}
