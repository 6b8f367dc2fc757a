//! Readiness: what `/readyz` reports. The database state lives in the
//! `db_up` gauge; the state of each MQTT connection lives here and drives the
//! `mqtt_connected` gauge (1 only while every connection is up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

/// Connection and subscription state of each MQTT connection.
pub struct Health {
    metrics: Arc<Metrics>,
    connected: Vec<AtomicBool>,
    subscribed: Vec<AtomicBool>,
}

impl Health {
    /// Readiness for `connections` MQTT connections (at least one).
    pub fn new(metrics: Arc<Metrics>, connections: usize) -> Self {
        let n = connections.max(1);
        Self {
            metrics,
            connected: (0..n).map(|_| AtomicBool::new(false)).collect(),
            subscribed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Records whether connection `link` is up.
    pub fn set_connected(&self, link: usize, connected: bool) {
        if let Some(flag) = self.connected.get(link) {
            flag.store(connected, Ordering::Release);
        }
        let all = self.connected.iter().all(|c| c.load(Ordering::Acquire));
        self.metrics.mqtt_connected.set(i64::from(all));
    }

    /// Records whether the broker granted every subscription of connection `link`.
    pub fn set_subscribed(&self, link: usize, subscribed: bool) {
        if let Some(flag) = self.subscribed.get(link) {
            flag.store(subscribed, Ordering::Release);
        }
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if !self.connected.iter().all(|c| c.load(Ordering::Acquire)) {
            reasons.push("not connected to the MQTT broker");
        } else if !self.subscribed.iter().all(|s| s.load(Ordering::Acquire)) {
            reasons.push("MQTT subscriptions not (yet) granted");
        }
        if self.metrics.db_up.get() != 1 {
            reasons.push("database unreachable");
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}
