//! `[http]`: the operator and device listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Settings};

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
    /// Seconds a `/export` client may take no bytes before its export is
    /// dropped (it holds no database connection meanwhile, but a slot).
    pub export_idle_timeout_s: u64,
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
            export_idle_timeout_s: 60,
        }
    }
}

impl Settings {
    /// Checks `[http]`, and that routes with HTTP ingest have the device listener.
    pub(super) fn validate_http(&self) -> Result<(), ConfigError> {
        self.http_listen()?;
        let device_listen = self.device_listen()?;
        for (key, value) in [
            (
                "http.header_read_timeout_s",
                self.http.header_read_timeout_s,
            ),
            ("http.body_timeout_s", self.http.body_timeout_s),
            ("http.request_timeout_s", self.http.request_timeout_s),
            (
                "http.export_idle_timeout_s",
                self.http.export_idle_timeout_s,
            ),
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
        Ok(())
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
}
