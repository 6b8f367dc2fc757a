//! Every metric the bridge exports, defined in one place. The names are an
//! interface: dashboards and alert rules use them.

pub(crate) mod history;
pub(crate) mod pending;
pub(crate) mod samples;
pub(crate) mod storage;
pub(crate) mod tls;

use std::collections::HashSet;
use std::sync::Mutex;

use co2_wire::DeviceId;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::Reason;
use history::History;
pub use pending::{Arrival, PendingAges};
use samples::Samples;
pub use storage::Storage;
pub use tls::TlsExpiry;

/// The bridge's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    /// Messages taken in (valid or not), by route.
    pub messages_received: IntCounterVec,
    /// Rows newly stored, by route and sink.
    pub rows_written: IntCounterVec,
    /// Rows that were already stored (redeliveries), by route and sink.
    pub duplicates: IntCounterVec,
    /// Messages dead-lettered, by reason and route.
    pub rejected: IntCounterVec,
    /// Messages per written batch.
    pub batch_rows: Histogram,
    /// Time to write one batch, by sink.
    pub db_write_seconds: HistogramVec,
    /// Now minus the reading's own time, observed when it is committed.
    pub ingest_lag_seconds: Histogram,
    /// Messages received and not yet acknowledged.
    pub pending_messages: IntGauge,
    /// When each pending message arrived, for the oldest one's age.
    pub pending_ages: PendingAges,
    /// Seconds the oldest pending message has waited, set from
    /// `pending_ages` whenever the metrics are read.
    oldest_pending_age: IntGauge,
    /// Payload bytes received and not yet acknowledged.
    pub inflight_bytes: IntGauge,
    /// 1 while connected to the broker.
    pub mqtt_connected: IntGauge,
    /// 1 while every sink answered its last request.
    pub db_up: IntGauge,
    /// 1 while this sink answered its last request, by sink.
    pub sink_up: IntGaugeVec,
    /// Write attempts that failed transiently and were retried, by sink.
    pub db_retries: IntCounterVec,
    /// Moves of a sink to another node of its database, by sink.
    pub db_failovers: IntCounterVec,
    /// Connections established to the broker.
    pub mqtt_connections: IntCounter,
    /// Kafka partitions this bridge holds in its consumer groups.
    pub kafka_partitions: IntGauge,
    /// 1 while every Kafka source reaches at least one of its brokers.
    pub kafka_connected: IntGauge,
    /// 1 while the Kafka sources have paused fetching (the pipeline is full).
    pub kafka_paused: IntGauge,
    /// Offset commits sent to Kafka, by result (`ok`, `failed`).
    pub kafka_commits: IntCounterVec,
    /// Sessions established on another broker node than the one before.
    pub mqtt_failovers: IntCounter,
    /// HTTP connections and requests refused by a limit, by listener and why.
    pub http_refused: IntCounterVec,
    /// Dead letters deleted by retention.
    pub dead_letters_pruned: IntCounter,
    /// Dead letters kept (the store's estimate, after the last retention pass).
    pub dead_letters_stored: IntGauge,
    /// Sensors Home Assistant discovery announced and the bridge holds.
    pub discovery_sensors: IntGauge,
    /// Discovered state topics the broker confirmed subscriptions to.
    pub discovery_state_topics: IntGauge,
    /// What the tables with retention hold.
    pub storage: Storage,
    /// When the TLS certificates the bridge uses end.
    pub tls_expiry: TlsExpiry,
    devices: DeviceSeries,
}

/// Per-device series, capped so a flood of fake ids cannot blow up Prometheus.
struct DeviceSeries {
    latest: GaugeVec,
    last_seen: GaugeVec,
    clock_offset: GaugeVec,
    missing: IntCounterVec,
    late: IntCounterVec,
    unnumbered: IntCounterVec,
    queue_filling: IntCounterVec,
    overflow: IntCounter,
    known: Mutex<HashSet<DeviceId>>,
    max: usize,
    history: History,
}

/// Why the metrics could not be set up (only on a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric; `max_devices` caps per-device
    /// series; `routes` (each with its sink) and `sinks` are pre-created so
    /// rate() sees a 0 before the first event.
    pub fn new(
        max_devices: usize,
        routes: &[(&str, &str)],
        sinks: &[&str],
    ) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, MetricsError> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };

        let by_route = |name: &str, help: &str| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(Opts::new(name, help), &["route"])?;
            registry.register(Box::new(c.clone()))?;
            for (route, _) in routes {
                c.with_label_values(&[route]);
            }
            Ok(c)
        };
        let by_route_and_sink = |name: &str, help: &str| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(Opts::new(name, help), &["route", "sink"])?;
            registry.register(Box::new(c.clone()))?;
            for (route, sink) in routes {
                c.with_label_values(&[route, sink]);
            }
            Ok(c)
        };
        let by_sink = |name: &str, help: &str| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(Opts::new(name, help), &["sink"])?;
            registry.register(Box::new(c.clone()))?;
            for sink in sinks {
                c.with_label_values(&[sink]);
            }
            Ok(c)
        };
        let rejected = IntCounterVec::new(
            Opts::new(
                "co2_bridge_messages_rejected_total",
                "Messages dead-lettered into rejected_messages, by reason and route.",
            ),
            &["reason", "route"],
        )?;
        registry.register(Box::new(rejected.clone()))?;
        for reason in Reason::ALL {
            for (route, _) in routes {
                rejected.with_label_values(&[reason.as_str(), route]);
            }
        }
        let db_write_seconds = HistogramVec::new(
            HistogramOpts::new(
                "co2_bridge_db_write_seconds",
                "Time to write one batch to a sink, retries excluded.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["sink"],
        )?;
        registry.register(Box::new(db_write_seconds.clone()))?;
        let sink_up = IntGaugeVec::new(
            Opts::new(
                "co2_bridge_sink_up",
                "1 while the sink answered its last request.",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sink_up.clone()))?;
        for sink in sinks {
            db_write_seconds.with_label_values(&[sink]);
            sink_up.with_label_values(&[sink]);
        }

        let latest = GaugeVec::new(
            Opts::new(
                "co2_emissions_latest",
                "Latest stored CO2 reading of each device (ppm).",
            ),
            &["device"],
        )?;
        registry.register(Box::new(latest.clone()))?;
        let last_seen = GaugeVec::new(
            Opts::new(
                "co2_device_last_seen_timestamp_seconds",
                "Unix time of the latest stored reading of each device.",
            ),
            &["device"],
        )?;
        registry.register(Box::new(last_seen.clone()))?;
        let clock_offset = GaugeVec::new(
            Opts::new(
                "co2_device_clock_offset_seconds",
                "Steady difference between the time a device's live readings carry (as stored, \
                 UTC) and their arrival; positive is ahead. Set once several live readings \
                 agree; hours long means a device that sends local time read in another zone.",
            ),
            &["device"],
        )?;
        registry.register(Box::new(clock_offset.clone()))?;

        let missing = IntCounterVec::new(
            Opts::new(
                "co2_device_readings_missing_total",
                "Numbered readings missing from co2_emissions once the grace period passed, by device and \
                 cause: announced (the publisher said it dropped them) or lost (it did not). Devices past \
                 metrics.max_devices count as device=\"_overflow\".",
            ),
            &["device", "cause"],
        )?;
        registry.register(Box::new(missing.clone()))?;
        let late = IntCounterVec::new(
            Opts::new(
                "co2_device_readings_late_total",
                "Numbered readings that arrived after their successors (within the grace period, so not missing).",
            ),
            &["device"],
        )?;
        registry.register(Box::new(late.clone()))?;
        let unnumbered = IntCounterVec::new(
            Opts::new(
                "co2_device_readings_unnumbered_total",
                "Readings stored without a number (third-party publishers, MQTT 3.1.1): never counted as gaps.",
            ),
            &["device"],
        )?;
        registry.register(Box::new(unnumbered.clone()))?;
        let queue_filling = IntCounterVec::new(
            Opts::new(
                "co2_device_queue_filling_total",
                "Announcements by a publisher that its queue passed 80 % or 95 % of a bound (max_rows, \
                 max_age, memory_bound), by device and bound; counted once each, by the completeness scan.",
            ),
            &["device", "bound"],
        )?;
        registry.register(Box::new(queue_filling.clone()))?;

        let build_info = IntGaugeVec::new(
            Opts::new(
                "co2_bridge_build_info",
                "Always 1; labelled with the version.",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        Ok(Self {
            messages_received: by_route(
                "co2_bridge_messages_received_total",
                "Messages taken in (MQTT or HTTP), valid or not, by route.",
            )?,
            rows_written: by_route_and_sink(
                "co2_bridge_rows_written_total",
                "Rows newly stored, by route and sink.",
            )?,
            duplicates: by_route_and_sink(
                "co2_bridge_duplicates_total",
                "Rows received again after they were stored (redeliveries); not stored twice.",
            )?,
            rejected,
            batch_rows: histogram(
                "co2_bridge_batch_rows",
                "Messages per written batch.",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0],
            )?,
            db_write_seconds,
            ingest_lag_seconds: histogram(
                "co2_bridge_ingest_lag_seconds",
                "Commit time minus the reading's own time.",
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0,
                ],
            )?,
            pending_messages: gauge(
                "co2_bridge_pending_messages",
                "Messages received and not yet acknowledged to the broker.",
            )?,
            pending_ages: PendingAges::new(),
            oldest_pending_age: gauge(
                "co2_bridge_oldest_pending_age_seconds",
                "Seconds the oldest message received and not yet acknowledged has waited (0: none waits).",
            )?,
            inflight_bytes: gauge(
                "co2_bridge_inflight_bytes",
                "Payload bytes received and not yet acknowledged (against batch.max_inflight_bytes).",
            )?,
            mqtt_connected: gauge(
                "co2_bridge_mqtt_connected",
                "1 while every MQTT connection of the bridge is up (1 with [mqtt] off).",
            )?,
            db_up: gauge(
                "co2_bridge_db_up",
                "1 while every sink answered its last request.",
            )?,
            sink_up,
            db_retries: by_sink(
                "co2_bridge_db_retries_total",
                "Batch writes that failed transiently and were retried, by sink.",
            )?,
            db_failovers: by_sink(
                "co2_bridge_db_failovers_total",
                "Moves of a sink to the next node of its database's hosts after a node failed, by sink.",
            )?,
            http_refused: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "co2_bridge_http_refused_total",
                        "HTTP connections and requests refused by a limit (connections, ingest_busy, body_timeout), by listener.",
                    ),
                    &["listener", "why"],
                )?;
                registry.register(Box::new(c.clone()))?;
                for listener in ["operator", "device"] {
                    for why in ["connections", "ingest_busy", "body_timeout"] {
                        c.with_label_values(&[listener, why]);
                    }
                }
                c
            },
            dead_letters_pruned: counter(
                "co2_bridge_dead_letters_pruned_total",
                "Dead letters deleted because they were older than dead_letters.retention_days.",
            )?,
            dead_letters_stored: gauge(
                "co2_bridge_dead_letters_stored",
                "Dead letters kept in the dead-letter sink (its estimate, after the last retention pass).",
            )?,
            discovery_sensors: gauge(
                "co2_bridge_discovery_sensors",
                "Sensors announced by Home Assistant discovery and held (at most discovery.max_sensors).",
            )?,
            discovery_state_topics: gauge(
                "co2_bridge_discovery_state_topics",
                "State topics of discovered sensors the bridge is subscribed to (the broker granted them).",
            )?,
            mqtt_connections: counter(
                "co2_bridge_mqtt_connections_total",
                "Connections established to the broker (the first one and every reconnect).",
            )?,
            kafka_partitions: gauge(
                "co2_bridge_kafka_partitions_assigned",
                "Kafka partitions assigned to this bridge by its consumer groups.",
            )?,
            kafka_connected: gauge(
                "co2_bridge_kafka_connected",
                "1 while every Kafka source reaches at least one of its brokers (1 without Kafka sources).",
            )?,
            kafka_paused: gauge(
                "co2_bridge_kafka_paused",
                "1 while the Kafka sources have paused fetching because the pipeline is full (sink slow or down).",
            )?,
            kafka_commits: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "co2_bridge_kafka_commits_total",
                        "Kafka offset commits, by result (ok, failed); a failed one is covered by the next.",
                    ),
                    &["result"],
                )?;
                registry.register(Box::new(c.clone()))?;
                for result in ["ok", "failed"] {
                    c.with_label_values(&[result]);
                }
                c
            },
            mqtt_failovers: counter(
                "co2_bridge_mqtt_failovers_total",
                "Reconnects that landed on another node of mqtt.hosts than the connection lost.",
            )?,
            storage: Storage::new(&registry)?,
            tls_expiry: TlsExpiry::new(&registry)?,
            devices: DeviceSeries {
                latest,
                last_seen,
                clock_offset,
                missing,
                late,
                unnumbered,
                queue_filling,
                overflow: counter(
                    "co2_bridge_devices_overflow_total",
                    "Readings of devices beyond metrics.max_devices, which get no series of their own.",
                )?,
                known: Mutex::new(HashSet::new()),
                max: max_devices,
                history: History::default(),
            },
            registry,
        })
    }

    /// Records a device's newest stored reading (once per batch, not per message).
    pub fn observe_device(&self, device: &DeviceId, emissions: f64, unix_time: f64) {
        let d = &self.devices;
        let tracked = match d.known.lock() {
            Ok(mut known) => {
                known.contains(device) || (known.len() < d.max && known.insert(device.clone()))
            }
            // A panic elsewhere poisoned the lock; the set itself is still usable.
            Err(poisoned) => poisoned.into_inner().contains(device),
        };
        if !tracked {
            d.overflow.inc();
            return;
        }
        d.history.record(device, emissions, unix_time);
        let label = [device.as_str()];
        let seen: Gauge = d.last_seen.with_label_values(&label);
        // Redelivered old readings must not replace a newer value.
        if unix_time >= seen.get() {
            seen.set(unix_time);
            d.latest.with_label_values(&label).set(emissions);
        }
    }

    /// Sets a device's clock offset in seconds (`None`: not steady, no series).
    /// Devices past `metrics.max_devices` get no series.
    pub fn clock_offset(&self, device: &DeviceId, seconds: Option<f64>) {
        let d = &self.devices;
        let tracked = {
            let mut known = d.known.lock().unwrap_or_else(|p| p.into_inner());
            known.contains(device) || (known.len() < d.max && known.insert(device.clone()))
        };
        if !tracked {
            return;
        }
        match seconds {
            Some(s) => d.clock_offset.with_label_values(&[device.as_str()]).set(s),
            None => {
                let _ = d.clock_offset.remove_label_values(&[device.as_str()]);
            }
        }
    }

    /// Adds `n` to a device's completeness count: `announced`, `lost`, `late` or `unnumbered`.
    pub fn completeness(&self, device: &str, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        let d = &self.devices;
        let label = self.device_label(device);
        match kind {
            "late" => d.late.with_label_values(&[label]).inc_by(n),
            "unnumbered" => d.unnumbered.with_label_values(&[label]).inc_by(n),
            cause => d.missing.with_label_values(&[label, cause]).inc_by(n),
        }
    }

    /// Counts one announcement that `device`'s queue neared `bound`.
    pub fn queue_filling(&self, device: &str, bound: &str) {
        let label = self.device_label(device);
        self.devices
            .queue_filling
            .with_label_values(&[label, bound])
            .inc();
    }

    /// `device` itself while under the cap, else `_overflow`.
    fn device_label<'a>(&self, device: &'a str) -> &'a str {
        let d = &self.devices;
        let tracked = DeviceId::parse(device).is_ok_and(|id| {
            let mut known = d.known.lock().unwrap_or_else(|p| p.into_inner());
            known.contains(&id) || (known.len() < d.max && known.insert(id))
        });
        if tracked {
            device
        } else {
            "_overflow"
        }
    }

    /// Counts one refusal by an HTTP limit.
    pub fn http_refused(&self, listener: &str, why: &str) {
        self.http_refused.with_label_values(&[listener, why]).inc();
    }

    /// Counts one dead-lettered message.
    pub fn reject(&self, route: &str, reason: Reason) {
        self.rejected
            .with_label_values(&[reason.as_str(), route])
            .inc();
    }

    /// Sets the values computed when read rather than when they change.
    fn refresh(&self) {
        let age = self.pending_ages.oldest().as_secs();
        self.oldest_pending_age
            .set(i64::try_from(age).unwrap_or(i64::MAX));
    }

    /// Every metric's current value, as `/metrics` would render it now.
    pub fn samples(&self) -> Samples {
        self.refresh();
        Samples::new(self.registry.gather())
    }

    /// A device's last hour, one value a minute (see [`History`]).
    pub fn device_history(&self, device: &str, now: f64) -> Vec<(i64, f64)> {
        self.devices.history.last_hour(device, now)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "Cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_designed_metric_is_exported_with_help() {
        let m = Metrics::new(10, &[("co2", "mysql")], &["mysql"]).unwrap();
        m.observe_device(&DeviceId::parse("pi").unwrap(), 420.0, 1.0);
        m.batch_rows.observe(1.0);
        let text = m.render();
        for name in [
            "co2_bridge_messages_received_total",
            "co2_bridge_rows_written_total",
            "co2_bridge_duplicates_total",
            "co2_bridge_messages_rejected_total",
            "co2_bridge_batch_rows",
            "co2_bridge_db_write_seconds",
            "co2_bridge_ingest_lag_seconds",
            "co2_bridge_pending_messages",
            "co2_bridge_mqtt_connected",
            "co2_bridge_db_up",
            "co2_emissions_latest",
            "co2_device_last_seen_timestamp_seconds",
            "co2_bridge_build_info",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} missing");
        }
        assert!(text.contains(
            r#"co2_bridge_messages_rejected_total{reason="out_of_range",route="co2"} 0"#
        ));
        assert!(text.contains(r#"co2_bridge_rows_written_total{route="co2",sink="mysql"} 0"#));
        assert!(text.contains(r#"co2_bridge_sink_up{sink="mysql"} 0"#));
    }

    #[test]
    fn device_series_are_capped_and_overflow_is_counted() {
        let m = Metrics::new(2, &[("co2", "mysql")], &["mysql"]).unwrap();
        for id in ["a", "b", "c", "d", "a"] {
            m.observe_device(&DeviceId::parse(id).unwrap(), 1.0, 1.0);
        }
        let text = m.render();
        assert!(text.contains(r#"co2_emissions_latest{device="a"}"#));
        assert!(text.contains(r#"co2_emissions_latest{device="b"}"#));
        assert!(!text.contains(r#"device="c""#));
        assert!(text.contains("co2_bridge_devices_overflow_total 2"));
    }

    #[test]
    fn last_seen_never_goes_backwards() {
        let m = Metrics::new(2, &[("co2", "mysql")], &["mysql"]).unwrap();
        let pi = DeviceId::parse("pi").unwrap();
        m.observe_device(&pi, 1.0, 200.0);
        m.observe_device(&pi, 2.0, 100.0);
        assert!(m
            .render()
            .contains(r#"co2_device_last_seen_timestamp_seconds{device="pi"} 200"#));
    }
}
