//! When the TLS certificates the bridge uses end: the one each broker
//! presents and the bridge's own client certificate, so that an alert warns
//! weeks before a missed renewal stops the readings.

use prometheus::{GaugeVec, Opts, Registry};

/// `co2_bridge_tls_certificate_expiry_timestamp_seconds{source, certificate, host}`.
#[derive(Clone)]
pub struct TlsExpiry(GaugeVec);

impl std::fmt::Debug for TlsExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsExpiry")
    }
}

impl TlsExpiry {
    /// Creates and registers the series in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = GaugeVec::new(
            Opts::new(
                "co2_bridge_tls_certificate_expiry_timestamp_seconds",
                "When a TLS certificate the bridge uses ends (Unix seconds): certificate=\"broker\" as \
                 a broker presented it at the last connection (by host), certificate=\"client\" the \
                 bridge's own, read at start (host=\"\"); by source (mqtt, kafka).",
            ),
            &["source", "certificate", "host"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self(gauge))
    }

    /// `certificate` (`broker` or `client`) of `source`, presented by
    /// `host` (empty for the bridge's own), ends at `not_after` (Unix seconds).
    pub fn observe(&self, source: &str, certificate: &str, host: &str, not_after: i64) {
        self.0
            .with_label_values(&[source, certificate, host])
            .set(not_after as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_certificate_is_one_series() {
        let registry = Registry::new();
        let expiry = TlsExpiry::new(&registry).unwrap();
        expiry.observe("mqtt", "broker", "mqtt.example.org", 1_900_000_000);
        expiry.observe("mqtt", "broker", "mqtt.example.org", 1_950_000_000);
        expiry.observe("mqtt", "client", "", 1_800_000_000);
        let families = registry.gather();
        let metrics = families[0].get_metric();
        assert_eq!(metrics.len(), 2);
        let values: Vec<f64> = metrics.iter().map(|m| m.get_gauge().get_value()).collect();
        assert!(values.contains(&1_950_000_000.0) && values.contains(&1_800_000_000.0));
    }
}
