//! Wiring: sensor -> sampler -> spool -> uplink, and the `read-once` command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use co2_wire::{Limits, Reading};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::ClockGate;
use crate::config::{ConfigError, SensorKind, Settings};
use crate::link::{mqtt_options, LinkError, RumqttLink};
use crate::sensor::{self, Sensor, SensorError};
use crate::spool::{Bounds, NewEntry, Spool, SpoolError, SpoolHandle};
use crate::uplink::{Signals, Stats, Timing, Uplink};

/// Why the publisher could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The sensor could not be opened or read.
    #[error("sensor: {0}")]
    Sensor(#[from] SensorError),
    /// The queue failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The MQTT settings could not be applied.
    #[error("mqtt: {0}")]
    Link(#[from] LinkError),
    /// A value the sensor gave cannot be stored.
    #[error("reading refused: {0}")]
    Reading(#[from] co2_wire::Rejection),
}

/// What a run did, for the exit log and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Readings stamped and queued.
    pub queued: u64,
    /// Failed sensor reads.
    pub sensor_errors: u64,
    /// Readings dropped by the queue bounds (full or too old).
    pub dropped: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Readings still queued at exit.
    pub left_in_queue: u64,
}

/// The configured sensor kind; unset means simulated, except on a Pi, where
/// publishing made-up data by accident would be worse than not starting.
pub fn sensor_kind(settings: &Settings) -> Result<SensorKind, ConfigError> {
    match settings.sensor.kind {
        Some(kind) => Ok(kind),
        None if sensor::on_raspberry_pi() => Err(ConfigError::Invalid {
            key: "sensor.kind",
            reason: "must be set on a Raspberry Pi: mhz19, scd4x, command or simulated".into(),
        }),
        None => Ok(SensorKind::Simulated),
    }
}

fn open_sensor(settings: &Settings) -> Result<Box<dyn Sensor>, AppError> {
    let mut sensor_settings = settings.sensor.clone();
    sensor_settings.kind = Some(sensor_kind(settings)?);
    Ok(sensor::open(
        &sensor_settings,
        settings.device_or_default(),
    )?)
}

/// Reads the sensor once on a blocking thread, handing it back for the next time.
async fn read_blocking(mut sensor: Box<dyn Sensor>) -> (Box<dyn Sensor>, Result<f64, SensorError>) {
    let joined = tokio::task::spawn_blocking(move || {
        let value = sensor.read();
        (sensor, value)
    })
    .await;
    match joined {
        Ok(pair) => pair,
        // The read panicked: the sensor went with it; report it as a bus failure.
        Err(e) => (
            Box::new(Broken(e.to_string())),
            Err(SensorError::Bus(format!("sensor read panicked: {e}"))),
        ),
    }
}

/// Stands in for a sensor whose driver panicked.
struct Broken(String);

impl Sensor for Broken {
    fn read(&mut self) -> Result<f64, SensorError> {
        Err(SensorError::Bus(format!(
            "sensor unusable after panic: {}",
            self.0
        )))
    }
    fn describe(&self) -> String {
        "broken sensor".into()
    }
}

/// `read-once`: one reading from the configured sensor, stamped now.
pub async fn read_once(settings: &Settings) -> Result<(String, Reading), AppError> {
    let sensor = open_sensor(settings)?;
    let description = sensor.describe();
    let (_, value) = read_blocking(sensor).await;
    let reading = Reading::new(Utc::now(), value?, &Limits::default())?;
    Ok((description, reading))
}

/// Stamps readings: strictly increasing milliseconds, because (device,
/// date_time) is the table's unique key and a repeat would be taken for a
/// redelivery and dropped. A clock stepped back by a second or more is
/// believed (freezing time for an hour would be worse).
#[derive(Debug, Default)]
pub struct Stamper {
    last_ms: i64,
}

impl Stamper {
    /// The stamp for a reading taken at `now`.
    pub fn stamp(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now_ms = now.timestamp_millis();
        let ms = if now_ms > self.last_ms || self.last_ms - now_ms >= 1000 {
            now_ms
        } else {
            self.last_ms + 1
        };
        self.last_ms = ms;
        DateTime::from_timestamp_millis(ms).unwrap_or(now)
    }
}

struct Sampler {
    spool: SpoolHandle,
    stats: Arc<Stats>,
    signals: Signals,
    topic: String,
    interval: Duration,
    max_readings: Option<u64>,
}

impl Sampler {
    async fn run(self, sensor: Box<dyn Sensor>, gate: ClockGate<crate::clock::CommandProbe>) {
        if gate.wait(&self.signals.shutdown).await {
            self.sample(sensor).await;
        }
        self.signals.input_done.store(true, Ordering::Release);
        self.signals.spool_grew.notify_one();
    }

    async fn sample(&self, mut sensor: Box<dyn Sensor>) {
        let limits = Limits::default();
        let mut stamper = Stamper::default();
        let mut ticks = tokio::time::interval(self.interval);
        // After a slow read, keep the spacing rather than bursting to catch up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut taken = 0u64;
        loop {
            tokio::select! {
                _ = self.signals.shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (back, value) = read_blocking(sensor).await;
            sensor = back;
            let reading = match value {
                Ok(v) => Reading::new(stamper.stamp(Utc::now()), v, &limits)
                    .map_err(|e| SensorError::Frame(format!("value {v}: {e}"))),
                Err(e) => Err(e),
            };
            let reading = match reading {
                Ok(r) => r,
                Err(e) => {
                    self.stats.sensor_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, errors_total = Stats::get(&self.stats.sensor_errors), "Sensor read failed; trying again next interval");
                    continue;
                }
            };
            self.queue(reading).await;
            taken += 1;
            if self.max_readings.is_some_and(|max| taken >= max) {
                tracing::info!(readings = taken, "Reached max_readings; sampling stops");
                return;
            }
        }
    }

    async fn queue(&self, reading: Reading) {
        let entry = NewEntry {
            topic: self.topic.clone(),
            payload: reading.to_payload(),
            stamped_ms: reading.time().timestamp_millis(),
        };
        let now_ms = Utc::now().timestamp_millis();
        match self.spool.with(move |s| s.append(&[entry], now_ms)).await {
            Ok((ids, dropped)) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(queue_id = ids.first().copied().unwrap_or_default(), reading = %reading, "Reading queued");
                if dropped.total() > 0 {
                    self.stats
                        .dropped_over_rows
                        .fetch_add(dropped.over_rows, Ordering::Relaxed);
                    self.stats
                        .dropped_too_old
                        .fetch_add(dropped.too_old, Ordering::Relaxed);
                    tracing::warn!(
                        over_rows = dropped.over_rows,
                        too_old = dropped.too_old,
                        dropped_total = Stats::get(&self.stats.dropped_over_rows)
                            + Stats::get(&self.stats.dropped_too_old),
                        "Queue bound reached; dropped the oldest readings"
                    );
                }
                self.signals.spool_grew.notify_one();
            }
            Err(e) => {
                self.stats.queue_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, reading = %reading, "Cannot queue reading; it is lost");
            }
        }
    }
}

/// Opens the queue `[queue]` describes.
pub fn open_spool(settings: &Settings) -> Result<Spool, SpoolError> {
    Spool::open(
        &settings.queue.path,
        Bounds {
            max_rows: settings.queue.max_rows,
            max_age: (settings.queue.max_age_s > 0)
                .then(|| Duration::from_secs(settings.queue.max_age_s)),
        },
    )
}

/// The uplink timing `[mqtt]` describes.
pub fn timing(settings: &Settings) -> Timing {
    let m = &settings.mqtt;
    Timing {
        window: usize::from(m.max_inflight),
        reconnect_min: Duration::from_millis(m.reconnect_min_ms),
        reconnect_max: Duration::from_millis(m.reconnect_max_ms),
        drain_timeout: Duration::from_millis(m.drain_timeout_ms),
    }
}

/// `run`: sample, queue and publish until `shutdown` (or `max_readings`
/// delivered), then drain and disconnect.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<Summary, AppError> {
    run_with_stats(settings, shutdown, Arc::new(Stats::default())).await
}

/// [`run`], counting into `stats` (tests watch progress through it).
pub async fn run_with_stats(
    settings: Settings,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
) -> Result<Summary, AppError> {
    // rustls needs one crypto provider per process; ring cross-compiles to the Pi
    // without cmake. An error means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let device = settings.device_id()?;
    let options = mqtt_options(&settings)?;
    let sensor = open_sensor(&settings)?;
    let spool = open_spool(&settings)?;
    let queued_at_start = spool.len();
    let spool = SpoolHandle::new(spool);
    let signals = Signals {
        shutdown: shutdown.clone(),
        ..Signals::default()
    };
    tracing::info!(
        %device,
        sensor = %sensor.describe(),
        broker = %format!("{}:{}", settings.mqtt.host, settings.mqtt.port),
        tls = settings.mqtt.tls.is_some(),
        topic = %settings.topic(),
        queue = %settings.queue.path.display(),
        queued = queued_at_start,
        interval_ms = settings.interval_ms,
        "Publisher starting"
    );

    let sampler = Sampler {
        spool: spool.clone(),
        stats: Arc::clone(&stats),
        signals: signals.clone(),
        topic: settings.topic(),
        interval: settings.interval(),
        max_readings: settings.max_readings,
    };
    let sampling = tokio::spawn(sampler.run(sensor, ClockGate::from_settings(&settings.clock)));
    let reporter = tokio::spawn(report_periodically(
        Arc::clone(&stats),
        spool.clone(),
        shutdown.clone(),
    ));

    let uplink = Uplink::new(
        RumqttLink::start(options),
        spool.clone(),
        Arc::clone(&stats),
        signals.clone(),
        timing(&settings),
    );
    let result = uplink.run().await;
    // The uplink may finish first (max_readings delivered): stop the rest too.
    shutdown.cancel();
    let _ = sampling.await;
    let _ = reporter.await;
    result?;

    let summary = Summary {
        queued: Stats::get(&stats.queued),
        sensor_errors: Stats::get(&stats.sensor_errors),
        dropped: Stats::get(&stats.dropped_over_rows) + Stats::get(&stats.dropped_too_old),
        acked: Stats::get(&stats.acked),
        left_in_queue: spool.len(),
    };
    tracing::info!(
        queued = summary.queued,
        acked = summary.acked,
        dropped = summary.dropped,
        sensor_errors = summary.sensor_errors,
        left_in_queue = summary.left_in_queue,
        "Publisher stopped"
    );
    Ok(summary)
}

/// One line of counters a minute, so a journal shows health without metrics.
async fn report_periodically(stats: Arc<Stats>, spool: SpoolHandle, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tracing::info!(
            queued_total = Stats::get(&stats.queued),
            published_total = Stats::get(&stats.published),
            acked_total = Stats::get(&stats.acked),
            dropped_total =
                Stats::get(&stats.dropped_over_rows) + Stats::get(&stats.dropped_too_old),
            sensor_errors_total = Stats::get(&stats.sensor_errors),
            queue_errors_total = Stats::get(&stats.queue_errors),
            connects_total = Stats::get(&stats.connects),
            in_queue = spool.len(),
            "Stats"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn stamps_strictly_increase() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut s = Stamper::default();
        let a = s.stamp(t);
        let b = s.stamp(t);
        let c = s.stamp(t - chrono::Duration::milliseconds(500));
        assert_eq!(a, t);
        assert_eq!(b, t + chrono::Duration::milliseconds(1));
        assert_eq!(c, t + chrono::Duration::milliseconds(2));
        let stepped_back = t - chrono::Duration::hours(1);
        assert_eq!(s.stamp(stepped_back), stepped_back);
    }
}
