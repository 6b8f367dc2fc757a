//! Wiring: sensor -> sampler -> queue -> uplink, the housekeeper (disk
//! retries, age bound, drop announcements, the status file), and the
//! `read-once` command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use co2_wire::{Limits, Reading};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::{ClockGate, CommandProbe, Phase, SyncState, SystemClock, Timekeeper, WallClock};
use crate::config::{ConfigError, Protocol, SensorKind, Settings};
use crate::link::{mqtt_options, LinkError, RumqttLink};
use crate::queue::{Queue, QueueConfig, QueueHandle, Store};
use crate::sensor::{self, Sensor, SensorError};
use crate::spool::SpoolError;
use crate::status::{self, Status};
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
    /// Readings dropped by the queue bounds (full, too old, memory full).
    pub dropped: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Readings and announcements still queued at exit.
    pub left_in_queue: u64,
    /// Readings salvaged from damaged queue files.
    pub salvaged: u64,
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
    queue: QueueHandle,
    stats: Arc<Stats>,
    signals: Signals,
    clock: Arc<Timekeeper>,
    interval: Duration,
    max_readings: Option<u64>,
}

impl Sampler {
    async fn run(self, sensor: Box<dyn Sensor>, gate: ClockGate<CommandProbe>) {
        if gate.wait(&self.signals.shutdown).await {
            self.clock.start();
            self.sample(sensor, &gate).await;
        }
        self.signals.input_done.store(true, Ordering::Release);
        self.signals.spool_grew.notify_one();
    }

    async fn sample(&self, mut sensor: Box<dyn Sensor>, gate: &ClockGate<CommandProbe>) {
        let limits = Limits::default();
        let mut stamper = Stamper::default();
        let mut ticks = tokio::time::interval(self.interval);
        // After a slow read, keep the spacing rather than bursting to catch up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut taken = 0u64;
        let mut last_probe: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.signals.shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (back, value) = read_blocking(sensor).await;
            sensor = back;
            // In holdover, ask the system (at most every poll) whether its clock is synchronised now.
            let synced = if self.clock.phase() == Phase::Holdover
                && gate.require_sync()
                && last_probe.is_none_or(|t| t.elapsed() >= gate.poll())
            {
                last_probe = Some(Instant::now());
                Some(gate.probe().await == SyncState::Synced)
            } else {
                None
            };
            let (now, clock_event) = self.clock.reading_time(synced, gate.floor());
            if let Some(event) = clock_event {
                self.announce_clock(event).await;
            }
            let reading = match value {
                Ok(v) => Reading::new(stamper.stamp(now), v, &limits)
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

    async fn announce_clock(&self, event: co2_wire::EventKind) {
        match &event {
            co2_wire::EventKind::ClockJump {
                by_ms,
                wall,
                expected,
            } => {
                Stats::add(&self.stats.clock_jumps, 1);
                self.stats.note_error(format!(
                    "clock jumped {by_ms:+} ms (said {wall}, expected {expected})"
                ));
                tracing::error!(by_ms, %wall, %expected, "Clock jumped; stamping readings from the last trusted time plus elapsed time until it is trustworthy again");
            }
            co2_wire::EventKind::ClockResync { offset_ms } => {
                tracing::warn!(
                    offset_ms,
                    "Clock trusted again; stamping readings from the system clock"
                );
            }
            _ => {}
        }
        if let Err(e) = self.queue.with(move |q| q.push_event(event)).await {
            tracing::error!(error = %e, "Cannot queue the clock announcement");
        }
        self.signals.spool_grew.notify_one();
    }

    async fn queue(&self, reading: Reading) {
        let payload = reading.to_payload();
        let stamped_ms = reading.time().timestamp_millis();
        match self
            .queue
            .with(move |q| q.push_reading(payload, stamped_ms))
            .await
        {
            Ok(queued) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                // What tests (and a person with RUST_LOG=debug) count as "queued":
                // written after the commit to disk (or the append to memory).
                let seq = queued.seq.map(|s| s.to_string()).unwrap_or_default();
                let store = match queued.store {
                    Store::Disk => "disk",
                    Store::Memory => "memory",
                };
                // `reading` stays the last field: tests read the line up to its end.
                tracing::debug!(queue_id = queued.id, store = %store, seq = %seq, reading = %reading, "Reading queued");
                self.signals.spool_grew.notify_one();
            }
            Err(e) => {
                self.stats.queue_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, reading = %reading, "Cannot queue reading; it is lost");
            }
        }
    }
}

/// Opens the queue `[queue]` describes (salvaging, or in memory, as needed).
pub fn open_queue(
    settings: &Settings,
    stats: Arc<Stats>,
    clock: Arc<Timekeeper>,
) -> Result<Queue, SpoolError> {
    Queue::open(QueueConfig::from_settings(settings), stats, clock)
}

/// The uplink timing `[mqtt]` describes.
pub fn timing(settings: &Settings) -> Timing {
    let m = &settings.mqtt;
    Timing {
        window: usize::from(m.max_inflight),
        reconnect_min: Duration::from_millis(m.reconnect_min_ms),
        reconnect_max: Duration::from_millis(m.reconnect_max_ms),
        drain_timeout: Duration::from_millis(m.drain_timeout_ms),
        ack_timeout: (m.ack_timeout_s > 0).then(|| Duration::from_secs(m.ack_timeout_s)),
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
    run_with(settings, shutdown, stats, Arc::new(SystemClock)).await
}

/// [`run_with_stats`], reading the time from `wall` (tests make it jump).
pub async fn run_with(
    settings: Settings,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
    wall: Arc<dyn WallClock>,
) -> Result<Summary, AppError> {
    // rustls needs one crypto provider per process; ring cross-compiles to the Pi
    // without cmake. An error means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let device = settings.device_id()?;
    let options = mqtt_options(&settings)?;
    let sensor = open_sensor(&settings)?;
    let clock = Arc::new(Timekeeper::new(
        Arc::clone(&wall),
        Duration::from_millis(settings.clock.max_jump_ms),
    ));
    let queue = {
        let (settings, stats, clock) = (settings.clone(), Arc::clone(&stats), Arc::clone(&clock));
        tokio::task::spawn_blocking(move || open_queue(&settings, stats, clock))
            .await
            .map_err(|e| SpoolError::Worker(e.to_string()))??
    };
    let queued_at_start = queue.len();
    let store = queue.store();
    let queue = QueueHandle::new(queue);
    let signals = Signals {
        shutdown: shutdown.clone(),
        ..Signals::default()
    };
    tracing::info!(
        %device,
        sensor = %sensor.describe(),
        broker = %format!("{}:{}", settings.mqtt.host, settings.mqtt.port),
        protocol = ?settings.mqtt.protocol,
        tls = settings.mqtt.tls.is_some(),
        topic = %settings.topic(),
        events_topic = %settings.events_topic(),
        queue = %settings.queue.path.display(),
        store = ?store,
        queued = queued_at_start,
        interval_ms = settings.interval_ms,
        "Publisher starting"
    );
    if settings.mqtt.protocol == Protocol::V311 {
        tracing::info!(
            "MQTT 3.1.1 has no message properties: readings are sent without their sequence number"
        );
    }

    let sampler = Sampler {
        queue: queue.clone(),
        stats: Arc::clone(&stats),
        signals: signals.clone(),
        clock: Arc::clone(&clock),
        interval: settings.interval(),
        max_readings: settings.max_readings,
    };
    let gate = ClockGate::from_settings(&settings.clock).with_clock(wall);
    let sampling = tokio::spawn(sampler.run(sensor, gate));
    let started_at = Utc::now();
    let keeper = Housekeeper {
        queue: queue.clone(),
        stats: Arc::clone(&stats),
        clock: Arc::clone(&clock),
        signals: signals.clone(),
        settings: settings.clone(),
        device: device.as_str().to_owned(),
        started_at,
    };
    let housekeeping = tokio::spawn(keeper.clone().run());

    let uplink = Uplink::new(
        RumqttLink::start(options),
        queue.clone(),
        Arc::clone(&stats),
        signals.clone(),
        timing(&settings),
    );
    let result = uplink.run().await;
    // The uplink may finish first (max_readings delivered): stop the rest too.
    shutdown.cancel();
    let _ = sampling.await;
    let _ = housekeeping.await;
    let _ = queue.with(|q| q.shutdown()).await;
    keeper.write_status(false).await;
    result?;

    let summary = Summary {
        queued: Stats::get(&stats.queued),
        sensor_errors: Stats::get(&stats.sensor_errors),
        dropped: stats.dropped(),
        acked: Stats::get(&stats.acked),
        left_in_queue: queue.len(),
        salvaged: Stats::get(&stats.salvaged),
    };
    tracing::info!(
        queued = summary.queued,
        acked = summary.acked,
        dropped = summary.dropped,
        salvaged = summary.salvaged,
        sensor_errors = summary.sensor_errors,
        left_in_queue = summary.left_in_queue,
        "Publisher stopped"
    );
    Ok(summary)
}

/// Periodic work beside sampling and publishing: the queue's housekeeping
/// (disk retries, age bound, drop announcements) every second, the status
/// file every `status.interval_ms`, and one line of counters a minute so a
/// journal shows health without metrics.
#[derive(Clone)]
struct Housekeeper {
    queue: QueueHandle,
    stats: Arc<Stats>,
    clock: Arc<Timekeeper>,
    signals: Signals,
    settings: Settings,
    device: String,
    started_at: DateTime<Utc>,
}

impl Housekeeper {
    async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let status_every = Duration::from_millis(self.settings.status.interval_ms);
        let mut last_status: Option<Instant> = None;
        let mut last_stats = Instant::now();
        loop {
            tokio::select! {
                _ = self.signals.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let connected = self.stats.connected.load(Ordering::Relaxed);
            match self.queue.with(move |q| q.housekeeping(connected)).await {
                Ok(true) => self.signals.spool_grew.notify_one(),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "Queue housekeeping failed"),
            }
            if last_status.is_none_or(|t| t.elapsed() >= status_every) {
                last_status = Some(Instant::now());
                self.write_status(true).await;
            }
            if last_stats.elapsed() >= Duration::from_secs(60) {
                last_stats = Instant::now();
                self.log_stats();
            }
        }
    }

    fn log_stats(&self) {
        let s = &self.stats;
        tracing::info!(
            queued_total = Stats::get(&s.queued),
            published_total = Stats::get(&s.published),
            acked_total = Stats::get(&s.acked),
            dropped_total = s.dropped(),
            sensor_errors_total = Stats::get(&s.sensor_errors),
            queue_errors_total = Stats::get(&s.queue_errors),
            connects_total = Stats::get(&s.connects),
            ack_timeouts_total = Stats::get(&s.ack_timeouts),
            in_queue = self.queue.len(),
            "Stats"
        );
    }

    /// Rewrites the status file; says so once if it cannot.
    async fn write_status(&self, running: bool) {
        let snapshot = match self.queue.with(|q| q.snapshot()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the queue for the status file");
                return;
            }
        };
        let s = &self.stats;
        let notes = s.notes();
        let status = Status {
            version: status::STATUS_VERSION,
            pid: std::process::id(),
            device: self.device.clone(),
            started_at: self.started_at,
            written_at: Utc::now(),
            interval_ms: self.settings.status.interval_ms,
            running,
            broker: status::BrokerStatus {
                address: format!("{}:{}", self.settings.mqtt.host, self.settings.mqtt.port),
                protocol: match self.settings.mqtt.protocol {
                    Protocol::V5 => "v5",
                    Protocol::V311 => "v311",
                }
                .to_owned(),
                connected: running && s.connected.load(Ordering::Relaxed),
                last_puback: notes.last_puback,
            },
            queue: snapshot,
            dropped: status::DroppedStatus {
                max_rows: Stats::get(&s.dropped_over_rows),
                max_age: Stats::get(&s.dropped_too_old),
                memory_bound: Stats::get(&s.dropped_memory),
            },
            salvage: status::SalvageStatus {
                corrupt_files: Stats::get(&s.corrupt_files),
                salvaged: Stats::get(&s.salvaged),
                last: notes.last_recovery,
            },
            memory_mode_entries: Stats::get(&s.memory_mode_entries),
            clock: self.clock.snapshot(),
            counters: status::Counters {
                queued: Stats::get(&s.queued),
                published: Stats::get(&s.published),
                acked: Stats::get(&s.acked),
                refused: Stats::get(&s.refused),
                sensor_errors: Stats::get(&s.sensor_errors),
                connects: Stats::get(&s.connects),
                ack_timeouts: Stats::get(&s.ack_timeouts),
                events_queued: Stats::get(&s.events_queued),
                events_dropped: Stats::get(&s.events_dropped),
            },
            last_error: notes
                .last_error
                .map(|(at, message)| status::ErrorNote { at, message }),
        };
        let path = self.settings.status_path();
        let written = tokio::task::spawn_blocking(move || status::write(&path, &status)).await;
        let failed = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            if !self.stats.status_write_failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %self.settings.status_path().display(), error = %e, "Cannot write the status file; `co2-publisher status` will not see this run (set status.path)");
            }
        }
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
