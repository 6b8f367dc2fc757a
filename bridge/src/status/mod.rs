//! The status page (`/`) and its data (`/status.json`) on the operator
//! listener: what a person checks first. Counts, gauges and device values
//! come from the metrics registry (so they equal `/metrics`); states and
//! last errors from [`Health`]; completeness and dead letters from the
//! tables, read when the page is asked for.

mod alerts;
mod clocks;
pub(crate) mod html;
pub(crate) mod page;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::MySqlPool;

use crate::clocks::{DeviceClocks, ZoneRules};
use crate::discovery::{Discovery, SensorRow};
use crate::health::{Health, Track};
use crate::metrics::Metrics;
use crate::sink::mysql::completeness::{self, DeviceCompleteness};
use crate::sink::{Sinks, StoredLetter};
pub use alerts::{Alertmanager, FiringAlert};
pub use clocks::ClockRow;

/// Dead letters the page lists.
const DEAD_LETTERS: u32 = 20;

/// The longest a page waits for a table before it says it could not read it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the status page reads.
pub struct Status {
    /// The metrics (the page's counts are theirs).
    pub metrics: Arc<Metrics>,
    /// Connection and sink states.
    pub health: Arc<Health>,
    /// The sinks (the dead-letter one lists the newest dead letters).
    pub sinks: Arc<Sinks>,
    /// Every route label and the sink it writes to.
    pub routes: Vec<(String, String)>,
    /// The CO2 route's MySQL pool, when completeness is tracked there.
    pub completeness: Option<MySqlPool>,
    /// The effective configuration, secrets masked.
    pub config: String,
    /// When the bridge started.
    pub started: Instant,
    /// A device whose newest reading is older than this is stale.
    pub stale_after: Duration,
    /// How often the page reloads.
    pub refresh: Duration,
    /// Messages the brokers may send unacknowledged (receive maximum × connections).
    pub window: u64,
    /// `batch.max_inflight_bytes`.
    pub max_inflight_bytes: u64,
    /// The devices' clocks, and the rules that set their zones.
    pub clocks: (Arc<DeviceClocks>, ZoneRules),
    /// Where firing alerts are read (`status.alertmanager_url`).
    pub alertmanager: Option<Alertmanager>,
    /// Home Assistant discovery, when it is on.
    pub discovery: Option<Arc<Discovery>>,
}

/// What the page shows, as `/status.json` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The bridge's version.
    pub version: &'static str,
    /// When this snapshot was taken (RFC 3339, UTC).
    pub generated_at: String,
    /// Seconds since the bridge started.
    pub uptime_s: u64,
    /// Why `/readyz` fails; empty when ready.
    pub not_ready: Vec<String>,
    /// Each MQTT connection.
    pub mqtt: Vec<Component>,
    /// Each Kafka source.
    pub sources: Vec<Component>,
    /// Each sink.
    pub sinks: Vec<Component>,
    /// Messages and bytes held unacknowledged, against their bounds.
    pub pending: Pending,
    /// Per route.
    pub routes: Vec<RouteFigures>,
    /// Per device, newest first.
    pub devices: Vec<DeviceRow>,
    /// Per device seen, its clock (those with a hint first).
    pub clocks: Vec<ClockRow>,
    /// Seconds after which a device counts as stale.
    pub stale_after_s: u64,
    /// Seconds between reloads of the page.
    pub refresh_s: u64,
    /// Completeness per device over the last hour (from the tables).
    pub completeness: Section<Vec<CompletenessRow>>,
    /// The newest dead letters (from the dead-letter sink).
    pub dead_letters: Section<Vec<Letter>>,
    /// What fires in Alertmanager (at most [`alerts::MAX_LISTED`]).
    pub alerts: Section<Vec<FiringAlert>>,
    /// How many fire in all (more than listed when the list was cut).
    pub alerts_firing: usize,
    /// The sensors Home Assistant discovery announced (`None`: discovery is off).
    pub discovered: Option<Vec<SensorRow>>,
    /// The effective configuration as TOML, secrets masked.
    pub config: String,
}

/// A connection or a sink.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// Its name (`mqtt 0`, `sources.0`, a sink's name).
    pub name: String,
    /// `mqtt`, `kafka`, `mysql`, `influxdb`.
    pub kind: String,
    /// Up (`None`: not known yet).
    pub up: Option<bool>,
    /// MQTT only: every subscription granted.
    pub subscribed: Option<bool>,
    /// Since when it is in that state (RFC 3339).
    pub since: Option<String>,
    /// The last error and when (RFC 3339), kept after it recovered.
    pub last_error: Option<(String, String)>,
}

/// Unacknowledged work against its bounds.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// `co2_bridge_pending_messages`.
    pub messages: u64,
    /// The in-flight window.
    pub window: u64,
    /// `co2_bridge_inflight_bytes`.
    pub bytes: u64,
    /// `batch.max_inflight_bytes`.
    pub max_bytes: u64,
}

/// One route's counts (as in `/metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct RouteFigures {
    /// The `route` label.
    pub route: String,
    /// The sink it writes to.
    pub sink: String,
    /// `co2_bridge_messages_received_total`.
    pub received: u64,
    /// `co2_bridge_rows_written_total`.
    pub stored: u64,
    /// `co2_bridge_duplicates_total`.
    pub duplicates: u64,
    /// `co2_bridge_messages_rejected_total` by reason (only reasons seen).
    pub rejected: BTreeMap<String, u64>,
}

/// One device (as in `/metrics`), with its last hour.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    /// The device id.
    pub device: String,
    /// `co2_emissions_latest`.
    pub latest: f64,
    /// `co2_device_last_seen_timestamp_seconds`.
    pub last_seen: f64,
    /// Seconds since its newest reading was measured.
    pub age_s: f64,
    /// Older than `stale_after_s`.
    pub stale: bool,
    /// One value a minute over the last hour: (unix minute start, value).
    pub history: Vec<(i64, f64)>,
    /// `co2_device_readings_missing_total` by cause, since the bridge started.
    pub missing: BTreeMap<String, u64>,
}

/// A device's completeness over the window, with the derived figures.
#[derive(Debug, Clone, Serialize)]
pub struct CompletenessRow {
    /// The counts.
    #[serde(flatten)]
    pub counts: DeviceCompleteness,
    /// Stored plus missing.
    pub expected: u64,
    /// Stored out of expected, percent.
    pub percent: Option<f64>,
}

/// A dead letter, its payload escaped for display.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// Where it came from.
    pub topic: String,
    /// The rejection reason.
    pub reason: String,
    /// What the decoder or store said.
    pub detail: Option<String>,
    /// The first payload bytes, escaped (`\xNN` for anything not printable ASCII).
    pub preview: String,
    /// The payload's real size.
    pub payload_bytes: u64,
}

/// Data read from a store: what it held, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Section<T> {
    /// Whether this bridge's configuration has such a store.
    pub available: bool,
    /// Why it could not be read this time.
    pub error: Option<String>,
    /// What it held.
    pub items: T,
}

impl Status {
    /// Takes a snapshot now.
    pub async fn snapshot(&self) -> Snapshot {
        let now = SystemTime::now();
        let now_s = unix(now);
        let (completeness, dead_letters, mut alerts) =
            tokio::join!(self.completeness(), self.dead_letters(), self.alerts());
        let alerts_firing = alerts.items.len();
        alerts.items.truncate(alerts::MAX_LISTED);
        // Gathered after the queries, so nothing counted meanwhile is missing here but in /metrics.
        let samples = self.metrics.samples();
        let routes = self
            .routes
            .iter()
            .map(|(route, sink)| RouteFigures {
                route: route.clone(),
                sink: sink.clone(),
                received: count(
                    samples.sum("co2_bridge_messages_received_total", &[("route", route)]),
                ),
                stored: count(samples.sum("co2_bridge_rows_written_total", &[("route", route)])),
                duplicates: count(samples.sum("co2_bridge_duplicates_total", &[("route", route)])),
                rejected: samples
                    .by(
                        "co2_bridge_messages_rejected_total",
                        "reason",
                        &[("route", route)],
                    )
                    .into_iter()
                    .filter(|(_, n)| *n > 0.0)
                    .map(|(reason, n)| (reason, count(n)))
                    .collect(),
            })
            .collect();
        let latest = samples.by("co2_emissions_latest", "device", &[]);
        let mut devices: Vec<DeviceRow> = samples
            .by("co2_device_last_seen_timestamp_seconds", "device", &[])
            .into_iter()
            .map(|(device, last_seen)| {
                let age_s = (now_s - last_seen).max(0.0);
                DeviceRow {
                    latest: latest.get(&device).copied().unwrap_or(f64::NAN),
                    stale: age_s > self.stale_after.as_secs_f64(),
                    history: self.metrics.device_history(&device, now_s),
                    missing: samples
                        .by(
                            "co2_device_readings_missing_total",
                            "cause",
                            &[("device", &device)],
                        )
                        .into_iter()
                        .map(|(cause, n)| (cause, count(n)))
                        .collect(),
                    device,
                    last_seen,
                    age_s,
                }
            })
            .collect();
        devices.sort_by(|a, b| b.last_seen.total_cmp(&a.last_seen));
        let mqtt = self
            .health
            .links()
            .into_iter()
            .enumerate()
            .map(|(i, link)| {
                component(
                    format!("mqtt {i}"),
                    "mqtt",
                    &link.track,
                    Some(link.subscribed),
                )
            })
            .collect();
        let sources = self
            .health
            .source_states()
            .into_iter()
            .map(|s| component(s.name, s.kind, &s.track, None))
            .collect();
        let sinks = self
            .health
            .sink_states()
            .into_iter()
            .map(|s| component(s.name, s.kind, &s.track, None))
            .collect();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            generated_at: rfc3339(now),
            uptime_s: self.started.elapsed().as_secs(),
            not_ready: self.health.readiness().err().unwrap_or_default(),
            mqtt,
            sources,
            sinks,
            pending: Pending {
                messages: count(samples.sum("co2_bridge_pending_messages", &[])),
                window: self.window,
                bytes: count(samples.sum("co2_bridge_inflight_bytes", &[])),
                max_bytes: self.max_inflight_bytes,
            },
            routes,
            devices,
            clocks: clocks::rows(&self.clocks.0, &self.clocks.1),
            stale_after_s: self.stale_after.as_secs(),
            refresh_s: self.refresh.as_secs(),
            completeness,
            dead_letters,
            alerts,
            alerts_firing,
            discovered: self.discovery.as_ref().map(|d| d.sensors()),
            config: self.config.clone(),
        }
    }

    async fn completeness(&self) -> Section<Vec<CompletenessRow>> {
        let Some(pool) = &self.completeness else {
            return Section::unavailable();
        };
        let read = tokio::time::timeout(
            QUERY_TIMEOUT,
            completeness::summary(pool, Duration::from_secs(3600)),
        )
        .await;
        Section::read(read.map(|r| {
            r.map_err(|e| e.to_string()).map(|rows| {
                rows.into_iter()
                    .map(|counts| CompletenessRow {
                        expected: counts.expected(),
                        percent: counts.percent(),
                        counts,
                    })
                    .collect()
            })
        }))
    }

    async fn alerts(&self) -> Section<Vec<FiringAlert>> {
        let Some(am) = &self.alertmanager else {
            return Section::unavailable();
        };
        let read = tokio::time::timeout(QUERY_TIMEOUT, am.firing()).await;
        Section::read(read.map(|r| r.map_err(|e| e.to_string())))
    }

    async fn dead_letters(&self) -> Section<Vec<Letter>> {
        let Some(sink) = self.sinks.get(self.sinks.dead_letters()) else {
            return Section::unavailable();
        };
        let read =
            tokio::time::timeout(QUERY_TIMEOUT, sink.recent_dead_letters(DEAD_LETTERS)).await;
        Section::read(read.map(|r| r.map(|letters| letters.into_iter().map(letter).collect())))
    }
}

impl<T: Default> Section<T> {
    fn unavailable() -> Self {
        Self {
            available: false,
            error: None,
            items: T::default(),
        }
    }

    fn read(result: Result<Result<T, String>, tokio::time::error::Elapsed>) -> Self {
        let (error, items) = match result {
            Ok(Ok(items)) => (None, items),
            Ok(Err(e)) => (Some(e), T::default()),
            Err(_) => (
                Some(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())),
                T::default(),
            ),
        };
        Self {
            available: true,
            error,
            items,
        }
    }
}

fn component(name: String, kind: &str, track: &Track, subscribed: Option<bool>) -> Component {
    Component {
        name,
        kind: kind.to_owned(),
        up: track.up,
        subscribed,
        since: track.since.map(rfc3339),
        last_error: track
            .last_error
            .as_ref()
            .map(|(at, e)| (rfc3339(*at), e.clone())),
    }
}

fn letter(l: StoredLetter) -> Letter {
    Letter {
        received_at: l
            .received_at
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        topic: l.topic,
        reason: l.reason,
        detail: l.detail,
        preview: escape_bytes(&l.preview),
        payload_bytes: l.payload_bytes,
    }
}

/// Printable ASCII as it is, everything else as `\n`, `\t`, `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// A counter's or gauge's value as a count (they only hold whole, non-negative numbers).
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_previews_escape_what_is_not_printable() {
        assert_eq!(escape_bytes(b"2024-01-01|x"), "2024-01-01|x");
        assert_eq!(escape_bytes(b"a\nb\xff\x00"), "a\\nb\\xff\\x00");
        assert_eq!(escape_bytes("é".as_bytes()), "\\xc3\\xa9");
    }

    #[test]
    fn counts_are_whole_and_never_negative() {
        assert_eq!((count(3.0), count(-1.0), count(f64::NAN)), (3, 0, 0));
    }
}
