//! What check-config shows: the settings with their secrets masked.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

use super::Settings;

pub(crate) fn mask<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) if !v.expose_secret().is_empty() => s.serialize_str("********"),
        _ => s.serialize_none(),
    }
}

pub(super) fn mask_url<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    match url::Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("********"));
            s.serialize_str(url.as_str())
        }
        _ => s.serialize_str(value),
    }
}

impl Settings {
    /// The effective settings as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
