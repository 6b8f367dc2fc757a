//! Readiness: what `/readyz` reports. Connected and DB state live in the
//! metrics gauges (one source of truth); the subscription state lives here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

/// The parts of readiness that are not metrics.
pub struct Health {
    metrics: Arc<Metrics>,
    subscribed: AtomicBool,
}

impl Health {
    /// Readiness derived from `metrics` plus the subscription flag.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            subscribed: AtomicBool::new(false),
        }
    }

    /// Records whether the broker granted every subscription.
    pub fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if self.metrics.mqtt_connected.get() != 1 {
            reasons.push("not connected to the MQTT broker");
        } else if !self.subscribed.load(Ordering::Acquire) {
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
