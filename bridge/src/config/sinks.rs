//! `[sinks.<name>]`: the stores besides `[database]`, by kind.

use serde::{Deserialize, Serialize};

use super::{DatabaseSettings, InfluxSettings, Settings, DEFAULT_SINK};

/// `[sinks.<name>]`: a store, by kind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkSettings {
    /// A MySQL-protocol database, with the keys of `[database]`.
    Mysql(DatabaseSettings),
    /// An InfluxDB (1.x `/write`, or the v1 API of 2.x and 3.x).
    Influxdb(InfluxSettings),
}

/// The sink name of a config key: `database` is the sink `mysql`, `sinks.x` is `x`.
pub fn sink_name(key: &str) -> &str {
    key.strip_prefix("sinks.").unwrap_or(DEFAULT_SINK)
}

impl Settings {
    /// Every configured sink with its config key: `database` (the sink called
    /// `mysql`) first, then `sinks.<name>` in name order.
    pub fn sink_settings(&self) -> Vec<(String, SinkSettings)> {
        let mut sinks = vec![(
            "database".to_owned(),
            SinkSettings::Mysql(self.database.clone()),
        )];
        sinks.extend(
            self.sinks
                .iter()
                .map(|(name, s)| (format!("sinks.{name}"), s.clone())),
        );
        sinks
    }
}
