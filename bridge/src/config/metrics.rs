//! `[metrics]`: limits on metric cardinality.

use serde::{Deserialize, Serialize};

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Devices that get their own series; later ones are counted in
    /// `co2_bridge_devices_overflow_total` instead.
    pub max_devices: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { max_devices: 1000 }
    }
}
