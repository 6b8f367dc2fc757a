//! What fires in Alertmanager (`status.alertmanager_url`), for the status
//! page: the alerts that are active and neither silenced nor inhibited, read
//! from its v2 API when the page is asked for. A slow, absent or garbled
//! Alertmanager costs the page one line saying so, never the page.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// The longest an answer may be; a page of firing alerts is a few KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The most alerts the page lists; the rest are counted.
pub const MAX_LISTED: usize = 50;

/// One firing alert, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringAlert {
    /// `alertname`.
    pub name: String,
    /// The `severity` label (`critical`, `warning`, …), empty if none.
    pub severity: String,
    /// The `device` label, for per-device alerts.
    pub device: Option<String>,
    /// The `summary` annotation, else `description`, else empty.
    pub summary: String,
    /// When it started firing (Alertmanager's `startsAt`, RFC 3339).
    pub since: String,
}

/// Why the firing alerts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// No answer, or not a 200.
    #[error("Alertmanager at {url} did not answer: {message}")]
    Unreachable {
        /// Where it was asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An answer that is not Alertmanager's list of alerts.
    #[error("Alertmanager at {url} answered something else: {message}")]
    Garbled {
        /// Where it was asked.
        url: String,
        /// What was wrong with it.
        message: String,
    },
}

/// Asks one Alertmanager.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    http: reqwest::Client,
    alerts: Url,
}

/// The part of Alertmanager's `gettableAlert` the page needs.
#[derive(Deserialize)]
struct Gettable {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: String,
}

impl Alertmanager {
    /// A client for the Alertmanager at `base`, each question bounded by `timeout`.
    pub fn new(base: &Url, timeout: Duration) -> Result<Self, String> {
        let mut base = base.clone();
        // A path prefix (behind a proxy) keeps its last segment only with a slash.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut alerts = base
            .join("api/v2/alerts")
            .map_err(|e| format!("cannot form the alerts URL: {e}"))?;
        alerts
            .query_pairs_mut()
            .append_pair("active", "true")
            .append_pair("silenced", "false")
            .append_pair("inhibited", "false");
        let http = crate::web_client::build(timeout, timeout)?;
        Ok(Self { http, alerts })
    }

    /// The alerts firing now, the most severe and oldest first.
    pub async fn firing(&self) -> Result<Vec<FiringAlert>, AlertsError> {
        let url = self.alerts.as_str().to_owned();
        let unreachable = |message: String| AlertsError::Unreachable {
            url: url.clone(),
            message,
        };
        let mut answer = self
            .http
            .get(self.alerts.clone())
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !answer.status().is_success() {
            return Err(unreachable(format!("HTTP {}", answer.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| unreachable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(AlertsError::Garbled {
                    url,
                    message: format!("more than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body).map_err(|message| AlertsError::Garbled { url, message })
    }
}

/// Alertmanager's answer as the page's rows, sorted.
fn parse(body: &[u8]) -> Result<Vec<FiringAlert>, String> {
    let gettable: Vec<Gettable> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut firing: Vec<FiringAlert> = gettable
        .into_iter()
        .map(|mut a| FiringAlert {
            name: a.labels.remove("alertname").unwrap_or_default(),
            severity: a.labels.remove("severity").unwrap_or_default(),
            device: a.labels.remove("device"),
            summary: a
                .annotations
                .remove("summary")
                .or_else(|| a.annotations.remove("description"))
                .unwrap_or_default(),
            since: a.starts_at,
        })
        .collect();
    firing.sort_by(|a, b| {
        rank(&a.severity)
            .cmp(&rank(&b.severity))
            .then_with(|| a.since.cmp(&b.since))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.device.cmp(&b.device))
    });
    Ok(firing)
}

/// Critical first, then warning, then the rest.
fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 0,
        "warning" => 1,
        "info" => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_severe_and_oldest_come_first() {
        let body = br#"[
          {"labels":{"alertname":"CO2DeviceSilent","device":"pi-kitchen","severity":"warning"},
           "annotations":{"summary":"pi-kitchen sent nothing for 12 minutes"},
           "startsAt":"2026-12-07T10:14:00Z","status":{"state":"active"}},
          {"labels":{"alertname":"CO2BridgeDown","severity":"critical"},
           "annotations":{"description":"no scrape"},"startsAt":"2026-12-07T10:20:00Z"},
          {"labels":{"alertname":"CO2DeviceSilent","device":"pi-lab","severity":"warning"},
           "startsAt":"2026-12-07T10:02:00Z"}
        ]"#;
        let firing = parse(body).unwrap();
        let order: Vec<(&str, Option<&str>)> = firing
            .iter()
            .map(|a| (a.name.as_str(), a.device.as_deref()))
            .collect();
        assert_eq!(
            order,
            [
                ("CO2BridgeDown", None),
                ("CO2DeviceSilent", Some("pi-lab")),
                ("CO2DeviceSilent", Some("pi-kitchen")),
            ]
        );
        assert_eq!(firing[0].summary, "no scrape");
        assert_eq!(firing[2].summary, "pi-kitchen sent nothing for 12 minutes");
        assert_eq!(firing[1].summary, "");
    }

    #[test]
    fn anything_but_a_list_of_alerts_is_an_error() {
        for body in [&b"{}"[..], b"<html>", b"", b"[1]"] {
            assert!(parse(body).is_err(), "{body:?}");
        }
        assert_eq!(parse(b"[]").unwrap(), []);
    }

    #[test]
    fn a_path_prefix_is_kept() {
        let base = Url::parse("http://127.0.0.1:9093/am").unwrap();
        let am = Alertmanager::new(&base, Duration::from_secs(1)).unwrap();
        assert_eq!(
            am.alerts.as_str(),
            "http://127.0.0.1:9093/am/api/v2/alerts?active=true&silenced=false&inhibited=false"
        );
    }
}
