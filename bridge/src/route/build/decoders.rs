//! The JSON and LoRaWAN decoders' settings, checked: bounds within what the
//! tables and MariaDB take, keys that belong to the mode, nothing empty.

use super::super::flatten;
use super::super::json::JsonDecoder;
use super::invalid;
use crate::config::routes::JsonMode;
use crate::config::ConfigError;
use crate::route::Decode;

/// Most elements a route may let one batch hold.
const MAX_ELEMENTS: usize = 100_000;

/// The JSON decoder of a route, its settings checked.
pub(super) fn json_decoder(
    name: &str,
    j: &crate::config::routes::JsonSettings,
) -> Result<Decode, ConfigError> {
    if j.mode == JsonMode::Columns && j.fields.is_empty() {
        return Err(invalid(
            name,
            "json.fields",
            "mode = \"columns\" needs fields",
        ));
    }
    if j.mode != JsonMode::Columns && !j.fields.is_empty() {
        return Err(invalid(
            name,
            "json.fields",
            "is for mode = \"columns\" only",
        ));
    }
    if j.max_depth
        .is_some_and(|d| !(1..=flatten::MAX_DEPTH).contains(&d))
    {
        return Err(invalid(
            name,
            "json.max_depth",
            format!(
                "must be 1..={} (a MariaDB JSON column holds 31 levels)",
                flatten::MAX_DEPTH
            ),
        ));
    }
    if j.max_fields == Some(0) {
        return Err(invalid(name, "json.max_fields", "must be at least 1"));
    }
    if j.max_elements.is_some() && !j.batch && j.batch_field.is_none() {
        return Err(invalid(
            name,
            "json.max_elements",
            "is for batches only (json.batch = true or json.batch_field)",
        ));
    }
    if j.max_elements
        .is_some_and(|n| !(1..=MAX_ELEMENTS).contains(&n))
    {
        return Err(invalid(
            name,
            "json.max_elements",
            format!("must be 1..={MAX_ELEMENTS} (one batch is written in one transaction)"),
        ));
    }
    for (key, value) in [
        ("json.time_field", &j.time_field),
        ("json.device_field", &j.device_field),
        ("json.batch_field", &j.batch_field),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(name, key, "must not be empty"));
        }
    }
    Ok(Decode::Json(JsonDecoder::new(j)))
}

/// The `lorawan` decoder's bounds, as the `json` decoder's are checked.
pub(super) fn check_lorawan(
    name: &str,
    l: &crate::config::routes::LorawanSettings,
) -> Result<(), ConfigError> {
    if l.max_depth
        .is_some_and(|d| !(1..=flatten::MAX_DEPTH).contains(&d))
    {
        return Err(invalid(
            name,
            "lorawan.max_depth",
            format!("must be 1..={}", flatten::MAX_DEPTH),
        ));
    }
    if l.max_fields == Some(0) {
        return Err(invalid(name, "lorawan.max_fields", "must be at least 1"));
    }
    Ok(())
}
