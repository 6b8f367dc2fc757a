//! `[[sources]]` with `kind = "kafka"`: a consumer group reading Kafka topics
//! into the same routes as MQTT.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, TlsSettings};

/// One Kafka source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port` of one or more brokers to bootstrap from.
    pub bootstrap_servers: Vec<String>,
    /// Topics to consume; each record goes to the route whose topic filter
    /// matches its topic name (e.g. a route with `topics = ["temp_test"]`).
    pub topics: Vec<String>,
    /// The consumer group: bridges with the same id split the partitions.
    pub group_id: String,
    /// Where a group without a committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: OffsetReset,
    /// The record key names the device (when the topic names none); a key
    /// that is not a valid device id dead-letters the record as `bad_device`.
    pub device_from_key: bool,
    /// How long the group waits for a silent member before giving its
    /// partitions to the others, in milliseconds. tansu also waits about half
    /// of it before answering a join, so it bounds how long a start takes.
    pub session_timeout_ms: u32,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with `sasl_*` protocols.
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    pub username: Option<String>,
    /// SASL password (prefer `password_file`).
    #[serde(serialize_with = "crate::config::mask")]
    pub password: Option<SecretString>,
    /// File holding the SASL password.
    pub password_file: Option<PathBuf>,
    /// CA and client certificate for `ssl` and `sasl_ssl`.
    pub tls: Option<TlsSettings>,
}

/// Where to start without a committed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest record the broker keeps.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// How the connection to the brokers is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// Neither TLS nor SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: Vec::new(),
            topics: Vec::new(),
            group_id: "co2-bridge".to_owned(),
            auto_offset_reset: OffsetReset::Earliest,
            device_from_key: false,
            session_timeout_ms: 10_000,
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            username: None,
            password: None,
            password_file: None,
            tls: None,
        }
    }
}

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaSettings {
    /// Checks what can be checked without a network; `key` is `sources.<n>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| ConfigError::Invalid {
            key: format!("{key}.{field}"),
            message: message.to_owned(),
        };
        if self.bootstrap_servers.is_empty()
            || self.bootstrap_servers.iter().any(|s| {
                s.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            })
        {
            return Err(invalid(
                "bootstrap_servers",
                "needs one or more host:port, e.g. [\"127.0.0.1:9092\"]",
            ));
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err(invalid("topics", "needs at least one topic name"));
        }
        if self.group_id.is_empty() {
            return Err(invalid(
                "group_id",
                "must be non-empty: the group keeps the committed offsets under it",
            ));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(invalid("session_timeout_ms", "must be 1000..=300000"));
        }
        self.password_secret(key).validate()?;
        match (&self.sasl_mechanism, self.security_protocol.sasl()) {
            (Some(m), true) if MECHANISMS.contains(&m.as_str()) => {}
            (None, false) => {}
            (Some(_), false) => {
                return Err(invalid(
                    "sasl_mechanism",
                    "needs security_protocol = \"sasl_plaintext\" or \"sasl_ssl\"",
                ))
            }
            _ => {
                return Err(invalid(
                    "sasl_mechanism",
                    "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with a sasl_* security_protocol",
                ))
            }
        }
        if self.tls.is_some()
            && !matches!(
                self.security_protocol,
                SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
            )
        {
            return Err(invalid(
                "tls",
                "is used only with security_protocol = \"ssl\" or \"sasl_ssl\"",
            ));
        }
        Ok(())
    }

    /// The SASL password, from `password` or `password_file`.
    pub fn password(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        self.password_secret(key).read()
    }

    /// `password` or `password_file`; `key` is `sources.<n>`.
    pub fn password_secret<'a>(&'a self, key: &'a str) -> Secret<'a> {
        Secret::new(key, "password", &self.password, &self.password_file)
    }
}
