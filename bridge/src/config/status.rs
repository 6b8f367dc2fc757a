//! `[status]`: the status page.

use serde::{Deserialize, Serialize};
use url::Url;

use super::error::{invalid, ConfigError};

/// `[status]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// A device whose newest reading is older than this many seconds is marked stale.
    pub stale_after_s: u64,
    /// Seconds between the page's reloads (its `<meta refresh>`).
    pub refresh_s: u64,
    /// Alertmanager's base URL (`http://127.0.0.1:9093`): the page lists what
    /// fires there. Unset: the page has no alerts section.
    pub alertmanager_url: Option<String>,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            stale_after_s: 300,
            refresh_s: 10,
            alertmanager_url: None,
        }
    }
}

impl StatusSettings {
    /// Checks the section: Alertmanager's URL, if set, is http(s).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.alertmanager().map(|_| ())
    }

    /// Alertmanager's base URL, if one is set.
    pub fn alertmanager(&self) -> Result<Option<Url>, ConfigError> {
        let Some(raw) = self.alertmanager_url.as_deref() else {
            return Ok(None);
        };
        let key = "status.alertmanager_url";
        let url = Url::parse(raw).map_err(|e| {
            invalid(
                key,
                format!("{e}: give a URL such as http://127.0.0.1:9093"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                key,
                "must be an http:// or https:// URL with a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                key,
                "must not hold credentials (the page shows the effective configuration); put Alertmanager behind a proxy on loopback instead",
            ));
        }
        Ok(Some(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(url: &str) -> StatusSettings {
        StatusSettings {
            alertmanager_url: Some(url.to_owned()),
            ..StatusSettings::default()
        }
    }

    #[test]
    fn alertmanager_url_is_optional_and_http() {
        assert!(StatusSettings::default().validate().is_ok());
        assert!(with("http://127.0.0.1:9093").validate().is_ok());
        assert!(with("https://am.example:9093/prefix/").validate().is_ok());
        for bad in [
            "127.0.0.1:9093",
            "ftp://x",
            "http://user:pw@127.0.0.1:9093",
            "not a url",
        ] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("status.alertmanager_url"), "{bad}: {e}");
        }
    }
}
