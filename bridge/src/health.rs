//! Readiness: what `/readyz` reports, and `/healthz` once a task has died.
//!
//! Ready means readings are flowing, not only that sockets are open: every
//! MQTT connection is up and subscribed, every Kafka source reaches a broker,
//! every sink answers, no supervised
//! task has ended, and no batch has waited longer than `batch.stall_timeout_s`
//! to be written. The state lives here and drives the `mqtt_connected`,
//! `kafka_connected`, `db_up` and `sink_up` gauges.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::Metrics;

/// Connection, subscription and pipeline state.
pub struct Health {
    metrics: Arc<Metrics>,
    connected: Vec<AtomicBool>,
    subscribed: Vec<AtomicBool>,
    /// (name, up) of every `[[sources]]` entry.
    sources: Vec<(String, AtomicBool)>,
    /// (name, kind, up) of every sink.
    sinks: Vec<(String, &'static str, AtomicBool)>,
    failed: Mutex<Option<String>>,
    epoch: Instant,
    stall_timeout: Duration,
    /// Milliseconds since `epoch` (plus one, so 0 means idle) at which the
    /// batch intake holds was opened.
    intake_since: AtomicU64,
    /// The same for the batch the commit task is writing.
    commit_since: AtomicU64,
    /// Since when each connection and sink is in its state, and its last error (the status page).
    history: Mutex<Changes>,
}

/// When a connection or a sink last changed state, and what last went wrong with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Up or down; `None` until first known.
    pub up: Option<bool>,
    /// When it entered that state.
    pub since: Option<SystemTime>,
    /// The last error and when it happened (kept after recovery: it says what happened).
    pub last_error: Option<(SystemTime, String)>,
}

impl Track {
    fn set(&mut self, up: bool) {
        if self.up != Some(up) {
            self.up = Some(up);
            self.since = Some(SystemTime::now());
        }
    }
}

#[derive(Debug, Default)]
struct Changes {
    mqtt: Vec<Track>,
    sources: Vec<Track>,
    sinks: Vec<Track>,
}

/// A sink as the status page shows it.
#[derive(Debug, Clone)]
pub struct SinkState {
    /// Its name.
    pub name: String,
    /// Its kind (`mysql`, `influxdb`).
    pub kind: &'static str,
    /// Its state and last error.
    pub track: Track,
}

/// A `[[sources]]` entry as the status page shows it.
#[derive(Debug, Clone)]
pub struct SourceState {
    /// Its name (`sources.<n>`).
    pub name: String,
    /// Its kind (`kafka`).
    pub kind: &'static str,
    /// Whether it reaches a broker, and its last error.
    pub track: Track,
}

/// An MQTT connection as the status page shows it.
#[derive(Debug, Clone)]
pub struct LinkState {
    /// Subscriptions granted.
    pub subscribed: bool,
    /// Its state and last error.
    pub track: Track,
}

/// Which stage of the pipeline holds a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Batching and decoding.
    Intake,
    /// Writing and acknowledging.
    Commit,
}

impl Health {
    /// Readiness for `connections` MQTT connections (none with `[mqtt]` off),
    /// the Kafka `sources` (by name, in `[[sources]]` order) and the `sinks`
    /// (name, kind), calling the pipeline stalled once a batch waits longer
    /// than `stall_timeout`.
    pub fn new(
        metrics: Arc<Metrics>,
        connections: usize,
        sources: Vec<String>,
        sinks: Vec<(String, &'static str)>,
        stall_timeout: Duration,
    ) -> Self {
        let n = connections;
        let history = Changes {
            mqtt: vec![Track::default(); n],
            sources: vec![Track::default(); sources.len()],
            sinks: vec![Track::default(); sinks.len()],
        };
        // No Kafka source, or `[mqtt]` off: nothing to wait for (an empty
        // `all` is true). Left at 0, the gauge would fire the MQTT alert on a
        // bridge that only reads Kafka.
        metrics.kafka_connected.set(i64::from(sources.is_empty()));
        metrics.mqtt_connected.set(i64::from(n == 0));
        Self {
            metrics,
            connected: (0..n).map(|_| AtomicBool::new(false)).collect(),
            subscribed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            sources: sources
                .into_iter()
                .map(|name| (name, AtomicBool::new(false)))
                .collect(),
            sinks: sinks
                .into_iter()
                .map(|(name, kind)| (name, kind, AtomicBool::new(false)))
                .collect(),
            failed: Mutex::new(None),
            epoch: Instant::now(),
            stall_timeout,
            intake_since: AtomicU64::new(0),
            commit_since: AtomicU64::new(0),
            history: Mutex::new(history),
        }
    }

    /// The metrics whose gauges this drives.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn changes(&self) -> std::sync::MutexGuard<'_, Changes> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records whether connection `link` is up.
    pub fn set_connected(&self, link: usize, connected: bool) {
        if let Some(flag) = self.connected.get(link) {
            flag.store(connected, Ordering::Release);
        }
        if let Some(track) = self.changes().mqtt.get_mut(link) {
            track.set(connected);
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

    /// Records whether Kafka source `index` reaches at least one of its brokers.
    pub fn set_source_up(&self, index: usize, up: bool) {
        if let Some((_, flag)) = self.sources.get(index) {
            flag.store(up, Ordering::Release);
        }
        if let Some(track) = self.changes().sources.get_mut(index) {
            track.set(up);
        }
        let all = self.sources.iter().all(|(_, f)| f.load(Ordering::Acquire));
        self.metrics.kafka_connected.set(i64::from(all));
    }

    /// Records the last error of Kafka source `index` (librdkafka's errors carry no secrets).
    pub fn source_error(&self, index: usize, error: String) {
        if let Some(track) = self.changes().sources.get_mut(index) {
            track.last_error = Some((SystemTime::now(), error));
        }
    }

    /// Records whether sink `index` answered its last request.
    pub fn set_sink_up(&self, index: usize, up: bool) {
        if let Some((name, _, flag)) = self.sinks.get(index) {
            flag.store(up, Ordering::Release);
            self.metrics
                .sink_up
                .with_label_values(&[name.as_str()])
                .set(i64::from(up));
        }
        if let Some(track) = self.changes().sinks.get_mut(index) {
            track.set(up);
        }
        let all = self.sinks.iter().all(|(_, _, f)| f.load(Ordering::Acquire));
        self.metrics.db_up.set(i64::from(all));
    }

    /// Records the last error of MQTT connection `link` (no secrets: broker errors carry none).
    pub fn mqtt_error(&self, link: usize, error: String) {
        if let Some(track) = self.changes().mqtt.get_mut(link) {
            track.last_error = Some((SystemTime::now(), error));
        }
    }

    /// Records the last error of sink `index`.
    pub fn sink_error(&self, index: usize, error: String) {
        if let Some(track) = self.changes().sinks.get_mut(index) {
            track.last_error = Some((SystemTime::now(), error));
        }
    }

    /// Every MQTT connection's state, in link order.
    pub fn links(&self) -> Vec<LinkState> {
        let changes = self.changes();
        changes
            .mqtt
            .iter()
            .zip(&self.subscribed)
            .map(|(track, subscribed)| LinkState {
                subscribed: subscribed.load(Ordering::Acquire),
                track: track.clone(),
            })
            .collect()
    }

    /// Every Kafka source's state, in `[[sources]]` order.
    pub fn source_states(&self) -> Vec<SourceState> {
        let changes = self.changes();
        self.sources
            .iter()
            .zip(&changes.sources)
            .map(|((name, _), track)| SourceState {
                name: name.clone(),
                kind: "kafka",
                track: track.clone(),
            })
            .collect()
    }

    /// Every sink's state, in sink order.
    pub fn sink_states(&self) -> Vec<SinkState> {
        let changes = self.changes();
        self.sinks
            .iter()
            .zip(&changes.sinks)
            .map(|((name, kind, _), track)| SinkState {
                name: name.clone(),
                kind,
                track: track.clone(),
            })
            .collect()
    }

    /// Records that a task the bridge cannot work without has ended; from now
    /// on neither `/readyz` nor `/healthz` reports success.
    pub fn set_failed(&self, why: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert(why);
    }

    /// Why the bridge has failed, if it has.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `stage` has taken a batch (its first message arrived `at`), unless it already holds one.
    pub fn busy(&self, stage: Stage, at: Instant) {
        let stamp = u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        let _ = self
            .slot(stage)
            .compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire);
    }

    /// `stage` has handed its batch on.
    pub fn idle(&self, stage: Stage) {
        self.slot(stage).store(0, Ordering::Release);
    }

    fn slot(&self, stage: Stage) -> &AtomicU64 {
        match stage {
            Stage::Intake => &self.intake_since,
            Stage::Commit => &self.commit_since,
        }
    }

    /// How long the oldest batch in the pipeline has waited, if any is waiting.
    pub fn oldest_batch_age(&self) -> Option<Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        [&self.intake_since, &self.commit_since]
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .filter(|stamp| *stamp != 0)
            .map(|stamp| Duration::from_millis(now.saturating_sub(stamp - 1)))
            .max()
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if let Some(why) = self.failure() {
            reasons.push(format!(
                "failed: {why}; exiting so the service manager restarts the bridge"
            ));
        }
        if !self.connected.iter().all(|c| c.load(Ordering::Acquire)) {
            reasons.push("not connected to the MQTT broker".to_owned());
        } else if !self.subscribed.iter().all(|s| s.load(Ordering::Acquire)) {
            reasons.push("MQTT subscriptions not (yet) granted".to_owned());
        }
        for (name, up) in &self.sources {
            if !up.load(Ordering::Acquire) {
                reasons.push(format!("Kafka source {name}: no broker reachable"));
            }
        }
        for (name, kind, up) in &self.sinks {
            if !up.load(Ordering::Acquire) {
                reasons.push(match *kind {
                    "mysql" => format!("database unreachable (sink {name})"),
                    kind => format!("sink {name} ({kind}) unreachable"),
                });
            }
        }
        if let Some(age) = self.oldest_batch_age().filter(|a| *a > self.stall_timeout) {
            reasons.push(format!(
                "pipeline stalled: a batch has waited {} s to be written (batch.stall_timeout_s = {})",
                age.as_secs(),
                self.stall_timeout.as_secs()
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(stall: Duration) -> Health {
        let metrics = Arc::new(Metrics::new(10, &[("co2", "mysql")], &["mysql"]).unwrap());
        let h = Health::new(
            metrics,
            1,
            vec!["sources.0".into()],
            vec![("mysql".into(), "mysql")],
            stall,
        );
        h.set_source_up(0, true);
        h.set_connected(0, true);
        h.set_subscribed(0, true);
        h.set_sink_up(0, true);
        h
    }

    #[test]
    fn a_batch_older_than_the_bound_makes_it_not_ready() {
        let h = health(Duration::from_secs(30));
        assert_eq!(h.readiness(), Ok(()));
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(45))
            .unwrap_or_else(Instant::now);
        // Before `epoch` counts as at `epoch`: build one whose epoch is older.
        let h = Health {
            epoch: long_ago,
            ..h
        };
        h.busy(Stage::Commit, long_ago);
        let reasons = h.readiness().unwrap_err();
        assert!(reasons[0].starts_with("pipeline stalled"), "{reasons:?}");
        h.idle(Stage::Commit);
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn a_fresh_batch_is_not_a_stall_and_busy_keeps_the_first_stamp() {
        let h = health(Duration::from_secs(30));
        let t = Instant::now();
        h.busy(Stage::Intake, t);
        h.busy(Stage::Intake, t + Duration::from_secs(5));
        assert!(h.oldest_batch_age().unwrap() < Duration::from_secs(1));
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn state_changes_are_dated_and_the_last_error_is_kept() {
        let h = health(Duration::from_secs(30));
        let since = h.sink_states()[0].track.since;
        h.set_sink_up(0, true);
        assert_eq!(
            h.sink_states()[0].track.since,
            since,
            "no change, same since"
        );
        h.sink_error(0, "connection refused".into());
        h.set_sink_up(0, false);
        h.set_sink_up(0, true);
        let sink = &h.sink_states()[0];
        assert_eq!(sink.track.up, Some(true));
        assert_eq!(
            sink.track.last_error.as_ref().map(|e| e.1.as_str()),
            Some("connection refused")
        );
        h.mqtt_error(0, "refused".into());
        h.set_connected(0, false);
        let link = &h.links()[0];
        assert_eq!((link.track.up, link.subscribed), (Some(false), true));
    }

    #[test]
    fn without_mqtt_or_kafka_their_gauges_say_connected() {
        let metrics = Arc::new(Metrics::new(10, &[("co2", "mysql")], &["mysql"]).unwrap());
        let kafka_only = Health::new(
            metrics.clone(),
            0,
            vec!["sources.0".into()],
            vec![("mysql".into(), "mysql")],
            Duration::from_secs(30),
        );
        assert_eq!(kafka_only.metrics.mqtt_connected.get(), 1);
        assert_eq!(kafka_only.metrics.kafka_connected.get(), 0);
        let mqtt_only = Health::new(
            metrics,
            1,
            Vec::new(),
            vec![("mysql".into(), "mysql")],
            Duration::from_secs(30),
        );
        assert_eq!(mqtt_only.metrics.mqtt_connected.get(), 0);
        assert_eq!(mqtt_only.metrics.kafka_connected.get(), 1);
    }

    #[test]
    fn a_kafka_source_without_a_broker_is_not_ready_until_it_has_one() {
        let h = health(Duration::from_secs(30));
        h.source_error(0, "all brokers down".into());
        h.set_source_up(0, false);
        assert_eq!(
            h.readiness(),
            Err(vec![
                "Kafka source sources.0: no broker reachable".to_owned()
            ])
        );
        assert_eq!(h.metrics.kafka_connected.get(), 0);
        h.set_source_up(0, true);
        assert_eq!(h.readiness(), Ok(()));
        assert_eq!(h.metrics.kafka_connected.get(), 1);
        let source = &h.source_states()[0];
        assert_eq!(source.track.up, Some(true));
        assert_eq!(
            source.track.last_error.as_ref().map(|e| e.1.as_str()),
            Some("all brokers down")
        );
    }

    #[test]
    fn a_failed_task_is_named_and_stays() {
        let h = health(Duration::from_secs(30));
        h.set_failed("task \"commit\" panicked: boom".into());
        h.set_failed("later".into());
        let reasons = h.readiness().unwrap_err();
        assert!(
            reasons[0].contains("\"commit\" panicked: boom"),
            "{reasons:?}"
        );
    }
}
