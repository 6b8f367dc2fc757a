//! The HTTP side of the InfluxDB sink: `/write`, `/query` and `/ping` of
//! the 1.x API (which 2.x's v1 compatibility API and 3.x serve too), over
//! the shared [`crate::web_client`].

use std::time::Duration;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::{ConfigError, InfluxSettings};

/// Bodies at least this large are gzipped (when `gzip` is on): smaller ones
/// fit a packet anyway, and compressing them costs more than it saves.
const GZIP_MIN_BYTES: usize = 1500;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer: refused, reset, timed out, or not HTTP.
    #[error("no answer from InfluxDB at {url}: {message}")]
    Unreachable {
        /// The server's base URL (no credentials).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error status.
    #[error("InfluxDB answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's error message.
        message: String,
    },
}

enum Auth {
    None,
    Basic(String, Option<SecretString>),
    Token(SecretString),
}

/// A client for one server and database.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    database: String,
    retention_policy: Option<String>,
    auth: Auth,
    gzip: bool,
}

impl Client {
    /// A client for the sink configured by `s` under `key` (reads secret files; no I/O otherwise).
    pub fn new(s: &InfluxSettings, key: &str) -> Result<Self, ConfigError> {
        let base = s.url(key)?;
        let auth = match (&s.username, s.token(key)?) {
            (_, Some(token)) => Auth::Token(token),
            (Some(user), None) => Auth::Basic(user.clone(), s.password(key)?),
            (None, None) => Auth::None,
        };
        let invalid = |message: String| ConfigError::Invalid {
            key: format!("{key}.url"),
            message,
        };
        let http = crate::web_client::build(
            Duration::from_secs(s.connect_timeout_s),
            Duration::from_secs(s.request_timeout_s),
        )
        .map_err(invalid)?;
        Ok(Self {
            http,
            base,
            database: s.database.clone(),
            retention_policy: s.retention_policy.clone(),
            auth,
            gzip: s.gzip,
        })
    }

    /// The server's base URL, without credentials, for messages.
    pub fn base(&self) -> String {
        let mut url = self.base.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.to_string()
    }

    /// The database written to.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn endpoint(&self, name: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(name);
        }
        url
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(
                user,
                password.as_ref().map(|p| p.expose_secret().to_owned()),
            ),
            Auth::Token(token) => request.header(
                reqwest::header::AUTHORIZATION,
                format!("Token {}", token.expose_secret()),
            ),
        }
    }

    /// Writes `body` (line protocol) with timestamps in `precision` (`None`:
    /// nanoseconds); Ok once the server answered 2xx, i.e. the points are durable.
    pub async fn write(&self, body: String, precision: Option<&str>) -> Result<(), Failure> {
        let mut url = self.endpoint("write");
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("db", &self.database);
            if let Some(rp) = &self.retention_policy {
                query.append_pair("rp", rp);
            }
            if let Some(precision) = precision {
                query.append_pair("precision", precision);
            }
        }
        let mut request = self
            .authorize(self.http.post(url))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if self.gzip && body.len() >= GZIP_MIN_BYTES {
            request = request
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(gzip(body.as_bytes()));
        } else {
            request = request.body(body);
        }
        self.send(request).await.map(|_| ())
    }

    /// Runs one InfluxQL statement that changes something (`POST /query`).
    pub async fn execute(&self, statement: &str) -> Result<(), Failure> {
        let mut url = self.endpoint("query");
        url.query_pairs_mut().append_pair("q", statement);
        let body = self.send(self.authorize(self.http.post(url))).await?;
        // A statement error comes back as 200 with {"results":[{"error": ...}]}.
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/results/0/error")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned)
            });
        match error {
            Some(message) => Err(Failure::Status {
                status: 200,
                message,
            }),
            None => Ok(()),
        }
    }

    /// True when `/ping` answers 2xx within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let request = self.http.get(self.endpoint("ping")).timeout(timeout);
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Bytes, Failure> {
        let unreachable = |e: &reqwest::Error| Failure::Unreachable {
            url: self.base(),
            message: chain(e),
        };
        let response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| unreachable(&e))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(Failure::Status {
            status: status.as_u16(),
            message: error_message(&body),
        })
    }
}

/// The `error` of InfluxDB's JSON error body, else the body's start.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

/// An error with its causes, which reqwest keeps apart ("error sending request": why?).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    // The fastest level: line protocol shrinks ~10x even so, and the bridge
    // shares its CPU with the broker and often the database.
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_json_body_or_the_text() {
        assert_eq!(
            error_message(br#"{"error":"partial write: field type conflict dropped=1"}"#),
            "partial write: field type conflict dropped=1"
        );
        assert_eq!(error_message(b"bad gateway"), "bad gateway");
    }

    #[test]
    fn endpoints_keep_a_path_prefix_and_credentials_never_show() {
        let s = InfluxSettings {
            url: "https://u:secret@example.invalid:8086/influx/".into(),
            ..InfluxSettings::default()
        };
        let client = Client::new(&s, "sinks.x").unwrap();
        assert_eq!(
            client.endpoint("write").as_str(),
            "https://u:secret@example.invalid:8086/influx/write"
        );
        assert!(!client.base().contains("secret"), "{}", client.base());
    }

    #[test]
    fn gzip_reads_back() {
        use std::io::Read;
        let text = "m,device=d v=1 1\n".repeat(200);
        let packed = gzip(text.as_bytes());
        assert!(packed.len() < text.len() / 5);
        let mut out = String::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, text);
    }
}
