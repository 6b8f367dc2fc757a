//! `[database]` and `[sinks.<name>]` with `kind = "mysql"`: a MySQL-protocol store.

use std::path::PathBuf;

use co2_wire::endpoint::{self, Endpoint};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::masking::{mask, mask_url};
use super::{invalid, ConfigError, Secret, Settings};

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

impl DatabaseSettings {
    /// Checks what can be checked without a network; `key` is `database` or `sinks.<name>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.password_secret(key).validate()?;
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
        self.password_secret(key).read()
    }

    /// `password` or `password_file`; `key` names the section.
    pub fn password_secret<'a>(&'a self, key: &'a str) -> Secret<'a> {
        Secret::new(key, "password", &self.password, &self.password_file)
    }
}

impl Settings {
    /// The password of `[database]`, from `password` or `password_file`.
    #[cfg(test)]
    pub fn database_password(&self) -> Result<Option<SecretString>, ConfigError> {
        self.database.password("database")
    }
}
