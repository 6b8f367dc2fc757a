//! `[sinks.<name>]` with `kind = "influxdb"`.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::masking::{mask, mask_url};
use super::{invalid, ConfigError, Secret};

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
        let password = self.password_secret(key);
        let token = self.token_secret(key);
        password.validate()?;
        token.validate()?;
        let has_password = password.is_set();
        let has_token = token.is_set();
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
        self.password_secret(key).read()
    }

    /// The API token, from `token` or `token_file`.
    pub fn token(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        self.token_secret(key).read()
    }

    /// `password` or `password_file`; `key` is `sinks.<name>`.
    pub fn password_secret<'a>(&'a self, key: &'a str) -> Secret<'a> {
        Secret::new(key, "password", &self.password, &self.password_file)
    }

    /// `token` or `token_file`; `key` is `sinks.<name>`.
    pub fn token_secret<'a>(&'a self, key: &'a str) -> Secret<'a> {
        Secret::new(key, "token", &self.token, &self.token_file)
    }
}
