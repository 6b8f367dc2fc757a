//! Settings: a TOML file overridden by `CO2_PUBLISHER__SECTION__KEY` variables,
//! validated once at start so a bad value fails naming its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use co2_wire::endpoint::{self, Endpoint};
use co2_wire::DeviceId;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "CO2_PUBLISHER";

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment could not be read or deserialized.
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A value is present but not acceptable; `key` names it.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `mqtt.port`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Everything the publisher can be told.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Device id: the `<device>` level of the topic and the `device` column.
    /// Required by `run`; `read-once` and `check-config` work without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Milliseconds between readings.
    #[serde(default = "defaults::interval_ms")]
    pub interval_ms: u64,
    /// Stop sampling after this many readings, deliver them, exit (tests, batch jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_readings: Option<u64>,
    /// Where readings come from.
    #[serde(default)]
    pub sensor: SensorSettings,
    /// The broker.
    #[serde(default)]
    pub mqtt: MqttSettings,
    /// The on-disk queue.
    #[serde(default)]
    pub queue: QueueSettings,
    /// When the clock may be trusted.
    #[serde(default)]
    pub clock: ClockSettings,
    /// The state file `co2-publisher status` reads.
    #[serde(default)]
    pub status: StatusSettings,
}

/// Kinds of CO2 source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// A made-up daily cycle plus noise.
    Simulated,
    /// Winsen MH-Z19B on a UART.
    Mhz19,
    /// Sensirion SCD40/SCD41 on I²C.
    Scd4x,
    /// An external program printing a number.
    Command,
}

/// `[sensor]`: the kind, and a sub-table of settings per kind.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSettings {
    /// Which source; unset means `simulated`, except on a Raspberry Pi, where it must be set.
    #[serde(default)]
    pub kind: Option<SensorKind>,
    /// `[sensor.simulated]`.
    #[serde(default)]
    pub simulated: SimulatedSettings,
    /// `[sensor.mhz19]`.
    #[serde(default)]
    pub mhz19: Mhz19Settings,
    /// `[sensor.scd4x]`.
    #[serde(default)]
    pub scd4x: Scd4xSettings,
    /// `[sensor.command]`.
    #[serde(default)]
    pub command: CommandSettings,
}

/// Shape of the simulated signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Mean level in ppm.
    pub base_ppm: f64,
    /// Half the peak-to-peak daily swing in ppm.
    pub amplitude_ppm: f64,
    /// Standard deviation of the slowly wandering noise in ppm.
    pub noise_ppm: f64,
}

impl Default for Profile {
    /// Roughly an occupied office: 400–900 ppm over a day.
    fn default() -> Self {
        Self {
            base_ppm: 650.0,
            amplitude_ppm: 200.0,
            noise_ppm: 15.0,
        }
    }
}

/// `[sensor.simulated]`: shape of the simulated signal.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedSettings {
    /// Mean level in ppm.
    pub base_ppm: f64,
    /// Half the daily swing in ppm.
    pub amplitude_ppm: f64,
    /// Noise in ppm.
    pub noise_ppm: f64,
}

impl Default for SimulatedSettings {
    fn default() -> Self {
        let p = Profile::default();
        Self {
            base_ppm: p.base_ppm,
            amplitude_ppm: p.amplitude_ppm,
            noise_ppm: p.noise_ppm,
        }
    }
}

/// `[sensor.mhz19]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mhz19Settings {
    /// Serial device; `/dev/serial0` is the header's UART on every Pi model.
    pub uart: PathBuf,
}

impl Default for Mhz19Settings {
    fn default() -> Self {
        Self {
            uart: PathBuf::from("/dev/serial0"),
        }
    }
}

/// The SCD4x's fixed I²C address.
pub const SCD4X_ADDRESS: u8 = 0x62;

/// `[sensor.scd4x]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scd4xSettings {
    /// I²C bus number (`/dev/i2c-<bus>`); 1 on the Pi's header.
    pub bus: u8,
    /// 7-bit address; the SCD4x is always 0x62 (98).
    pub address: u8,
}

impl Default for Scd4xSettings {
    fn default() -> Self {
        Self {
            bus: 1,
            address: SCD4X_ADDRESS,
        }
    }
}

/// `[sensor.command]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandSettings {
    /// Program to run (absolute path, or found on PATH).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Killed (with its children) after this many milliseconds; 0 means the default 5000.
    pub timeout_ms: u64,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 usually for TLS).
    pub port: u16,
    /// The nodes of a clustered broker, `host:port` each (a bare host takes
    /// `port`); when set, `host` is not used. The publisher stays on a node
    /// while it works and tries the next after a connection failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Client id; default `co2-publisher-<device>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// First topic level: readings go to `<topic_prefix>/<device>/emissions`.
    pub topic_prefix: String,
    /// User name, if the broker wants one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (prefer `password_file`).
    #[serde(serialize_with = "mask", skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
    /// File holding the password (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// MQTT version: `v5` (default; readings carry their sequence number as a
    /// user property) or `v311` for brokers without v5 (readings go unnumbered).
    pub protocol: Protocol,
    /// Only 1 is supported: QoS 0 loses readings, QoS 2 buys nothing the bridge's dedup does not.
    pub qos: u8,
    /// MQTT keep-alive in seconds.
    pub keep_alive_s: u64,
    /// Publishes awaiting PUBACK at once (the window); bounds memory and sets throughput.
    pub max_inflight: u16,
    /// First reconnect delay in milliseconds; doubles per failure, with jitter.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
    /// On shutdown, wait at most this long for outstanding PUBACKs.
    pub drain_timeout_ms: u64,
    /// Publishes outstanding and no PUBACK for this many seconds: the
    /// connection is taken for dead and made again (0: wait for ever).
    pub ack_timeout_s: u64,
    /// `[mqtt.tls]`; TLS is on when `ca_file` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            hosts: Vec::new(),
            client_id: None,
            topic_prefix: "co2".into(),
            username: None,
            password: None,
            password_file: None,
            protocol: Protocol::V5,
            qos: 1,
            keep_alive_s: 30,
            max_inflight: 100,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            drain_timeout_ms: 10_000,
            ack_timeout_s: 30,
            tls: None,
        }
    }
}

/// Which MQTT version to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 5: each reading carries its number in the `co2-seq` user property.
    #[default]
    V5,
    /// MQTT 3.1.1 (e.g. NATS): no properties, so readings go unnumbered.
    V311,
}

/// `[mqtt.tls]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

/// `[queue]`: the on-disk spool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// SQLite file (created with its directory's permissions).
    pub path: PathBuf,
    /// Most readings kept; beyond it the oldest are dropped (and counted).
    pub max_rows: u64,
    /// Readings older than this many seconds are dropped (and counted); 0 keeps all.
    pub max_age_s: u64,
    /// When a commit reaches the card: `full` (each appended reading is on
    /// the card before it is published) or `normal` (fewer syncs; a power
    /// cut may lose the last appends).
    pub synchronous: Synchronous,
    /// Readings held in memory while the disk cannot be written; beyond it
    /// the oldest are dropped (and announced).
    pub memory_max_rows: u64,
    /// Seconds between attempts to get back to the disk while in memory mode.
    pub retry_s: u64,
    /// Damaged queue files (`<path>.corrupt-<time>`) kept for a post-mortem, newest first.
    pub keep_corrupt_files: u32,
    /// ... and at most this many bytes of them (the newest is always kept).
    pub keep_corrupt_bytes: u64,
}

/// SQLite's `synchronous` for appends (deletes after PUBACK always use `normal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync at each append's commit.
    #[default]
    Full,
    /// fsync only at checkpoints.
    Normal,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/co2-publisher/queue.sqlite3"),
            // ~115 days at one reading per 10 s, ~60 MB on disk.
            max_rows: 1_000_000,
            max_age_s: 30 * 24 * 3600,
            synchronous: Synchronous::Full,
            // ~55 hours at one reading per 10 s, a few MB of memory.
            memory_max_rows: 20_000,
            retry_s: 30,
            keep_corrupt_files: 3,
            keep_corrupt_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[status]`: the state file the running publisher rewrites for `co2-publisher status`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// Where; default `/run/co2-publisher/<device>.status.json`: in RAM, so
    /// it costs the SD card nothing and still works when the card is full
    /// or read-only, and per device, so several publishers on one machine
    /// (a lab, a test) do not share one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Milliseconds between rewrites.
    pub interval_ms: u64,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            path: None,
            interval_ms: 2_000,
        }
    }
}

/// `[clock]`: when the system clock is trusted enough to stamp readings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSettings {
    /// Also wait until `sync_command` reports the clock synchronised.
    pub require_sync: bool,
    /// Never stamp before this time (RFC 3339); default: when this program was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_time: Option<DateTime<Utc>>,
    /// Program + arguments printing `yes`/`true`/`1` when the clock is synchronised.
    pub sync_command: Vec<String>,
    /// Seconds between checks while waiting.
    pub poll_s: u64,
    /// Between two readings the wall clock may drift from the monotonic
    /// clock by this many milliseconds; more is a jump: readings are then
    /// stamped from the last trusted time plus monotonic time elapsed.
    pub max_jump_ms: u64,
}

impl Default for ClockSettings {
    fn default() -> Self {
        Self {
            require_sync: true,
            min_time: None,
            sync_command: ["timedatectl", "show", "-p", "NTPSynchronized", "--value"]
                .map(String::from)
                .to_vec(),
            poll_s: 5,
            max_jump_ms: 2_000,
        }
    }
}

mod defaults {
    pub fn interval_ms() -> u64 {
        10_000
    }
}

fn mask<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("********"),
        None => s.serialize_none(),
    }
}

impl Settings {
    /// Reads `file` (if given) and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__"),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validated()
    }

    /// Parses a TOML string (tests, embedded defaults); no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        settings.validated()
    }

    /// Every default, device `test` (tests and benchmarks).
    pub fn default_for_tests() -> Self {
        // Defaults alone always validate.
        Self::from_toml("device = \"test\"").unwrap_or_else(|_| Self {
            device: Some("test".into()),
            interval_ms: defaults::interval_ms(),
            max_readings: None,
            sensor: SensorSettings::default(),
            mqtt: MqttSettings::default(),
            queue: QueueSettings::default(),
            clock: ClockSettings::default(),
            status: StatusSettings::default(),
        })
    }

    /// Checks every value and resolves `password_file`.
    fn validated(mut self) -> Result<Self, ConfigError> {
        if let Some(device) = &self.device {
            DeviceId::parse(device).map_err(|e| invalid("device", e.to_string()))?;
        }
        if self.interval_ms == 0 {
            return Err(invalid("interval_ms", "must be at least 1"));
        }
        if self.max_readings == Some(0) {
            return Err(invalid("max_readings", "must be at least 1 when set"));
        }
        if self.sensor.command.timeout_ms == 0 {
            self.sensor.command.timeout_ms = 5_000;
        }
        if self.sensor.kind == Some(SensorKind::Command) && self.sensor.command.program.is_empty() {
            return Err(invalid(
                "sensor.command.program",
                "must be set when sensor.kind = \"command\"",
            ));
        }
        self.mqtt_endpoints()?;
        let m = &mut self.mqtt;
        if m.host.is_empty() && m.hosts.is_empty() {
            return Err(invalid("mqtt.host", "must not be empty"));
        }
        if m.port == 0 {
            return Err(invalid("mqtt.port", "must not be 0"));
        }
        if m.qos != 1 {
            return Err(invalid(
                "mqtt.qos",
                format!("{} is not supported; only 1 (at least once) is", m.qos),
            ));
        }
        if m.max_inflight == 0 {
            return Err(invalid("mqtt.max_inflight", "must be at least 1"));
        }
        if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#', '\0']) {
            return Err(invalid(
                "mqtt.topic_prefix",
                "must be non-empty, without '+', '#' or NUL",
            ));
        }
        if m.reconnect_min_ms == 0 || m.reconnect_max_ms < m.reconnect_min_ms {
            return Err(invalid(
                "mqtt.reconnect_max_ms",
                "need 0 < reconnect_min_ms <= reconnect_max_ms",
            ));
        }
        if m.ack_timeout_s > 3600 {
            return Err(invalid(
                "mqtt.ack_timeout_s",
                "must be at most 3600 (an hour); 0 waits for ever",
            ));
        }
        if m.keep_alive_s != 0 && m.keep_alive_s < 5 {
            return Err(invalid(
                "mqtt.keep_alive_s",
                "must be 0 (off) or at least 5",
            ));
        }
        if let Some(path) = &m.password_file {
            if m.password.is_some() {
                return Err(invalid(
                    "mqtt.password_file",
                    "set either mqtt.password or mqtt.password_file, not both",
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("mqtt.password_file", format!("{}: {e}", path.display())))?;
            m.password = Some(SecretString::from(text.trim_end_matches(['\r', '\n'])));
        }
        if m.password.is_some() && m.username.is_none() {
            return Err(invalid(
                "mqtt.username",
                "must be set when a password is given",
            ));
        }
        if let Some(tls) = &m.tls {
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                return Err(invalid(
                    "mqtt.tls.client_key_file",
                    "client_cert_file and client_key_file go together",
                ));
            }
        }
        if self.queue.max_rows == 0 {
            return Err(invalid("queue.max_rows", "must be at least 1"));
        }
        if self.queue.memory_max_rows == 0 {
            return Err(invalid("queue.memory_max_rows", "must be at least 1"));
        }
        if self.queue.retry_s == 0 {
            return Err(invalid("queue.retry_s", "must be at least 1"));
        }
        if self.status.interval_ms < 100 {
            return Err(invalid("status.interval_ms", "must be at least 100"));
        }
        if self.clock.max_jump_ms < 100 {
            return Err(invalid("clock.max_jump_ms", "must be at least 100"));
        }
        if self.clock.require_sync && self.clock.sync_command.is_empty() {
            return Err(invalid(
                "clock.sync_command",
                "must name a program when clock.require_sync = true",
            ));
        }
        if self.clock.poll_s == 0 {
            return Err(invalid("clock.poll_s", "must be at least 1"));
        }
        Ok(self)
    }

    /// The device id; an error if unset (`run` needs one).
    pub fn device_id(&self) -> Result<DeviceId, ConfigError> {
        let device = self
            .device
            .as_deref()
            .ok_or_else(|| invalid("device", "must be set, e.g. device = \"pi-kitchen\""))?;
        DeviceId::parse(device).map_err(|e| invalid("device", e.to_string()))
    }

    /// The device id, or `default` (the bridge's default device) when unset.
    pub fn device_or_default(&self) -> &str {
        self.device.as_deref().unwrap_or("default")
    }

    /// `<topic_prefix>/<device>/emissions`.
    pub fn topic(&self) -> String {
        format!(
            "{}/{}/emissions",
            self.mqtt.topic_prefix,
            self.device_or_default()
        )
    }

    /// `<topic_prefix>/<device>/events`: where the publisher announces what it lost.
    pub fn events_topic(&self) -> String {
        format!(
            "{}/{}/{}",
            self.mqtt.topic_prefix,
            self.device_or_default(),
            co2_wire::EVENTS_TOPIC_LEVEL
        )
    }

    /// The state file: `status.path`, or `/run/co2-publisher/<device>.status.json`.
    pub fn status_path(&self) -> PathBuf {
        self.status.path.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "/run/co2-publisher/{}.status.json",
                self.device_or_default()
            ))
        })
    }

    /// The broker's nodes: `mqtt.hosts`, or the single `mqtt.host:mqtt.port`.
    pub fn mqtt_endpoints(&self) -> Result<Vec<Endpoint>, ConfigError> {
        endpoint::parse_list(&self.mqtt.hosts, &self.mqtt.host, self.mqtt.port)
            .map_err(|e| invalid("mqtt.hosts", e.to_string()))
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("co2-publisher-{}", self.device_or_default()))
    }

    /// Time between readings.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The effective settings as TOML, secrets masked (`check-config`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The resolved password, for the MQTT client only.
    pub fn password(&self) -> Option<&str> {
        self.mqtt.password.as_ref().map(|p| p.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let s = Settings::from_toml("device = \"kitchen\"").unwrap();
        assert_eq!(s.interval_ms, 10_000);
        assert_eq!(s.topic(), "co2/kitchen/emissions");
        assert_eq!(s.client_id(), "co2-publisher-kitchen");
        assert_eq!(s.mqtt.qos, 1);
        assert_eq!(s.mqtt.protocol, Protocol::V5);
        assert_eq!(s.events_topic(), "co2/kitchen/events");
        assert_eq!(s.queue.synchronous, Synchronous::Full);
        assert_eq!(
            s.status_path(),
            Path::new("/run/co2-publisher/kitchen.status.json")
        );
        assert!(s.clock.require_sync);
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../publisher.example.toml");
        let s = Settings::from_toml(text).unwrap();
        assert_eq!(s.device.as_deref(), Some("pi-kitchen"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Settings::from_toml("device = \"a\"\n[mqtt]\nhots = \"x\"").unwrap_err();
        assert!(err.to_string().contains("hots"), "{err}");
        let err = Settings::from_toml("device = \"a\"\nintervall_ms = 5").unwrap_err();
        assert!(err.to_string().contains("intervall_ms"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("device = \"no spaces\"", "device"),
            ("device = \"a\"\n[mqtt]\nqos = 0", "mqtt.qos"),
            ("device = \"a\"\n[mqtt]\nport = \"x\"", "mqtt.port"),
            ("device = \"a\"\n[queue]\nmax_rows = 0", "queue.max_rows"),
            (
                "device = \"a\"\n[queue]\nmemory_max_rows = 0",
                "queue.memory_max_rows",
            ),
            (
                "device = \"a\"\n[queue]\nsynchronous = \"off\"",
                "queue.synchronous",
            ),
            ("device = \"a\"\n[mqtt]\nprotocol = \"v4\"", "mqtt.protocol"),
            (
                "device = \"a\"\n[clock]\nmax_jump_ms = 0",
                "clock.max_jump_ms",
            ),
            (
                "device = \"a\"\n[sensor]\nkind = \"command\"",
                "sensor.command.program",
            ),
            ("device = \"a\"\n[sensor]\nkind = \"bme280\"", "sensor.kind"),
            ("device = \"a\"\n[mqtt]\npassword = \"p\"", "mqtt.username"),
            (
                "device = \"a\"\n[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"",
                "mqtt.password_file",
            ),
        ] {
            let err = Settings::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?}: {err}");
        }
    }

    #[test]
    fn password_file_is_read_and_masked() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let toml = format!(
            "device = \"a\"\n[mqtt]\nusername = \"u\"\npassword_file = {:?}",
            pw.display().to_string()
        );
        let s = Settings::from_toml(&toml).unwrap();
        assert_eq!(s.password(), Some("s3cret"));
        let shown = s.to_masked_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("********"), "{shown}");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
