//! The checks between routes and sinks, done once where the sinks are
//! built for the routes: each route names a sink that exists, an InfluxDB
//! sink gets measurement names it can write and no files.

use crate::config::{sink_name, ConfigError, Settings, SinkSettings, CO2_ROUTE};
use crate::route::Routes;

/// Refuses a configuration whose routes and sinks do not fit together,
/// naming the key to fix.
pub fn routes_fit_sinks(settings: &Settings, routes: &Routes) -> Result<(), ConfigError> {
    let sinks = settings.sink_settings();
    let known: Vec<String> = sinks.iter().map(|(k, _)| k.clone()).collect();
    let key_of = |route: &str, key: &str| {
        if route == CO2_ROUTE {
            format!("co2.{key}")
        } else {
            format!("routes.{route}.{key}")
        }
    };
    for route in routes.iter() {
        let key = key_of(route.name(), "sink");
        let Some((_, sink)) = sinks.iter().find(|(k, _)| sink_name(k) == route.sink()) else {
            return Err(invalid(
                key,
                format!("no sink {:?}; sinks are {known:?}", route.sink()),
            ));
        };
        if let (SinkSettings::Influxdb(_), Some(measurement)) = (sink, route.measurement()) {
            super::influx::line::check(super::influx::line::Part::Measurement, measurement)
                .map_err(|e| invalid(key_of(route.name(), "measurement"), e.to_string()))?;
        }
        if matches!(sink, SinkSettings::Influxdb(_)) && route.is_binary() {
            return Err(invalid(
                key,
                format!(
                    "sink {:?} is an InfluxDB, which stores no files; send the binary route {:?} \
                     to a MySQL sink",
                    route.sink(),
                    route.name()
                ),
            ));
        }
    }
    Ok(())
}

fn invalid(key: String, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}
