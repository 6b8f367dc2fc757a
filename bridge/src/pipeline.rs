//! Deliveries in, batches written, acknowledgements out, in arrival order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use co2_wire::DeviceId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::acks::{AckToken, Acker};
use crate::batch::Batcher;
use crate::fault::Faults;
use crate::health::{Health, Stage};
use crate::ingress::Delivery;
use crate::metrics::Metrics;
use crate::quarantine::{fingerprint, Quarantine, Verdict};
use crate::route::{Record, Routes, Source};
use crate::supervisor::Supervisor;
use crate::writer::{lag_seconds, WriteError, Writer};

/// Supervisor name of the batching and decoding task.
pub const INTAKE_TASK: &str = "intake";
/// Supervisor name of the writing and acknowledging task.
pub const COMMIT_TASK: &str = "commit";

/// The task between ingress and the database.
pub struct Pipeline {
    /// Deliveries from the ingress task.
    pub rx: mpsc::Receiver<Delivery>,
    /// Decodes each delivery.
    pub routes: Arc<Routes>,
    /// Writes batches.
    pub writer: Writer,
    /// Acknowledges written batches.
    pub acker: Acker,
    /// Where per-batch figures go.
    pub metrics: Arc<Metrics>,
    /// Flush at this many deliveries...
    pub max_rows: usize,
    /// ...or when the oldest has waited this long.
    pub max_delay: Duration,
    /// How long a shutdown may keep retrying a failing database.
    pub shutdown_timeout: Duration,
    /// Where each stage says which batch it holds, for readiness.
    pub health: Arc<Health>,
    /// Messages that crashed the bridge before.
    pub quarantine: Arc<Quarantine>,
    /// The messages each stage holds, for the quarantine should it crash.
    pub in_flight: Arc<InFlight>,
    /// Injected faults (test builds).
    pub faults: Faults,
}

/// Fingerprints of the messages each stage holds right now: if that stage's
/// task dies, these are the suspects the quarantine remembers.
#[derive(Debug, Default)]
pub struct InFlight {
    intake: Mutex<Arc<[u64]>>,
    commit: Mutex<Arc<[u64]>>,
}

impl InFlight {
    /// What the task called `task` held (empty for tasks that hold no messages).
    pub fn held_by(&self, task: &str) -> Arc<[u64]> {
        let slot = match task {
            INTAKE_TASK => &self.intake,
            COMMIT_TASK => &self.commit,
            _ => return Arc::from([]),
        };
        slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, stage: Stage, fingerprints: Arc<[u64]>) {
        let slot = match stage {
            Stage::Intake => &self.intake,
            Stage::Commit => &self.commit,
        };
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = fingerprints;
    }
}

/// The two tasks of a running pipeline.
pub struct PipelineTasks {
    /// Batching and decoding; ends once its input is closed and drained.
    pub intake: JoinHandle<()>,
    /// Writing and acknowledging; ends after the last batch intake handed over.
    pub commit: JoinHandle<()>,
}

/// A decoded batch on its way to the database: records, the acks they
/// release and the messages' fingerprints, in arrival order.
struct Decoded {
    records: Vec<Record>,
    tokens: Vec<AckToken>,
    fingerprints: Arc<[u64]>,
    /// When its first message arrived.
    opened: Instant,
}

impl Pipeline {
    /// Starts intake and commit under `supervisor`. They run until `stop`
    /// fires and everything already received is written and acknowledged (or
    /// the shutdown timeout passes; unacked messages are then delivered again
    /// to the next session).
    ///
    /// Decoding runs in intake while the commit task writes and acks the
    /// previous batch, so the database does not wait for the decoder
    /// (BENCHMARKS.md: the drain went from 72k–99k to 100k–109k rows/s). One
    /// batch at most waits between the two: batches still reach the database,
    /// and their acks the broker, in arrival order.
    pub fn spawn(self, supervisor: &Supervisor, stop: CancellationToken) -> PipelineTasks {
        let Pipeline {
            rx,
            routes,
            writer,
            acker,
            metrics,
            max_rows,
            max_delay,
            shutdown_timeout,
            health,
            quarantine,
            in_flight,
            faults,
        } = self;
        let give_up = CancellationToken::new();
        let (to_commit, decoded) = mpsc::channel(1);
        let committer = Committer {
            writer,
            acker,
            metrics: metrics.clone(),
            health: health.clone(),
            quarantine: quarantine.clone(),
            in_flight: in_flight.clone(),
            faults,
        };
        let commit = supervisor.spawn(COMMIT_TASK, committer.run(decoded, give_up.clone()));
        let mut intake = Intake {
            rx,
            routes,
            metrics,
            max_rows,
            max_delay,
            shutdown_timeout,
            health,
            quarantine,
            in_flight,
        };
        let intake = supervisor.spawn(INTAKE_TASK, async move {
            intake.take_in(&stop, &give_up, &to_commit).await;
        });
        PipelineTasks { intake, commit }
    }
}

/// Takes deliveries in, batches and decodes them.
struct Intake {
    rx: mpsc::Receiver<Delivery>,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    max_rows: usize,
    max_delay: Duration,
    shutdown_timeout: Duration,
    health: Arc<Health>,
    quarantine: Arc<Quarantine>,
    in_flight: Arc<InFlight>,
}

impl Intake {
    /// Batches deliveries until the channel closes (at shutdown).
    async fn take_in(
        &mut self,
        stop: &CancellationToken,
        give_up: &CancellationToken,
        to_commit: &mpsc::Sender<Decoded>,
    ) {
        let mut batcher = Batcher::new(self.max_rows, self.max_delay);
        let mut stopping = false;
        loop {
            let deadline = batcher.deadline();
            let batch = tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    // Take what is already queued, refuse the rest: it stays
                    // unacknowledged at the broker.
                    self.rx.close();
                    let give_up = give_up.clone();
                    let timeout = self.shutdown_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        give_up.cancel();
                    });
                    continue;
                }
                delivery = self.rx.recv() => match delivery {
                    Some(delivery) => {
                        let now = Instant::now();
                        if batcher.is_empty() {
                            self.health.busy(Stage::Intake, now.into_std());
                        }
                        if !batcher.push(delivery, now) {
                            continue;
                        }
                        batcher.take()
                    }
                    None => {
                        self.hand_over(batcher.take(), to_commit).await;
                        return;
                    }
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    batcher.take()
                }
            };
            self.hand_over(batch, to_commit).await;
        }
    }

    /// Decodes a batch and queues it for the commit task. A message the
    /// quarantine has seen crash the bridge goes in a batch of its own (or, if
    /// it crashed it twice, is dead-lettered undecoded).
    async fn hand_over(&self, deliveries: Vec<Delivery>, to_commit: &mpsc::Sender<Decoded>) {
        if deliveries.is_empty() {
            return;
        }
        let opened = Instant::now();
        let fingerprints: Vec<u64> = deliveries
            .iter()
            .map(|d| fingerprint(&source_key(&d.source), &d.payload))
            .collect();
        if self.quarantine.is_empty() {
            self.decode_and_send(deliveries, fingerprints.into(), opened, to_commit)
                .await;
        } else {
            self.hand_over_quarantined(deliveries, fingerprints, opened, to_commit)
                .await;
        }
        self.health.idle(Stage::Intake);
    }

    async fn hand_over_quarantined(
        &self,
        deliveries: Vec<Delivery>,
        fingerprints: Vec<u64>,
        opened: Instant,
        to_commit: &mpsc::Sender<Decoded>,
    ) {
        let mut run: Vec<Delivery> = Vec::new();
        let mut run_fps: Vec<u64> = Vec::new();
        for (delivery, fp) in deliveries.into_iter().zip(fingerprints) {
            match self.quarantine.verdict(fp) {
                Verdict::Clear => {
                    run.push(delivery);
                    run_fps.push(fp);
                }
                Verdict::Isolate => {
                    tracing::warn!(
                        fingerprint = format_args!("{fp:016x}"),
                        "Writing a message that was in flight when the bridge crashed in a batch of its own"
                    );
                    let before = std::mem::take(&mut run);
                    let before_fps = std::mem::take(&mut run_fps);
                    self.decode_and_send(before, before_fps.into(), opened, to_commit)
                        .await;
                    self.decode_and_send(vec![delivery], Arc::from([fp]), opened, to_commit)
                        .await;
                }
                Verdict::Refuse => {
                    tracing::error!(
                        fingerprint = format_args!("{fp:016x}"),
                        "A message crashed the bridge twice; dead-lettering it as crashed_bridge without handling it"
                    );
                    let record =
                        self.routes
                            .refuse(&delivery.source, &delivery.payload, "crashed_bridge");
                    let before = std::mem::take(&mut run);
                    let before_fps = std::mem::take(&mut run_fps);
                    self.decode_and_send(before, before_fps.into(), opened, to_commit)
                        .await;
                    self.send(
                        vec![record],
                        vec![delivery.ack],
                        Arc::from([fp]),
                        opened,
                        to_commit,
                    )
                    .await;
                }
            }
        }
        self.decode_and_send(run, run_fps.into(), opened, to_commit)
            .await;
    }

    async fn decode_and_send(
        &self,
        deliveries: Vec<Delivery>,
        fingerprints: Arc<[u64]>,
        opened: Instant,
        to_commit: &mpsc::Sender<Decoded>,
    ) {
        if deliveries.is_empty() {
            return;
        }
        self.in_flight.set(Stage::Intake, fingerprints.clone());
        let received = Utc::now();
        let mut records = Vec::with_capacity(deliveries.len());
        let mut tokens = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            records.push(self.routes.record(&d.source, d.payload, received));
            tokens.push(d.ack);
        }
        self.send(records, tokens, fingerprints, opened, to_commit)
            .await;
    }

    async fn send(
        &self,
        records: Vec<Record>,
        tokens: Vec<AckToken>,
        fingerprints: Arc<[u64]>,
        opened: Instant,
        to_commit: &mpsc::Sender<Decoded>,
    ) {
        self.count_received(&records);
        let batch = Decoded {
            records,
            tokens,
            fingerprints,
            opened,
        };
        if let Err(mpsc::error::SendError(lost)) = to_commit.send(batch).await {
            // The commit task is gone (it panicked): nothing is acked, the
            // broker redelivers.
            abandon(&self.metrics, lost.tokens);
        }
        self.in_flight.set(Stage::Intake, Arc::from([]));
    }

    /// Messages per route, counted once per batch.
    fn count_received(&self, records: &[Record]) {
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for record in records {
            let route = match record {
                Record::Rows { route, .. } | Record::Rejected { route, .. } => &**route,
            };
            match counts.iter_mut().find(|(r, _)| *r == route) {
                Some((_, n)) => *n += 1,
                None => counts.push((route, 1)),
            }
        }
        for (route, n) in counts {
            self.metrics
                .messages_received
                .with_label_values(&[route])
                .inc_by(n);
        }
    }
}

/// Writes decoded batches one at a time, in order, and acks each once committed.
struct Committer {
    writer: Writer,
    acker: Acker,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    quarantine: Arc<Quarantine>,
    in_flight: Arc<InFlight>,
    faults: Faults,
}

impl Committer {
    async fn run(self, mut decoded: mpsc::Receiver<Decoded>, give_up: CancellationToken) {
        while let Some(batch) = decoded.recv().await {
            self.health.busy(Stage::Commit, batch.opened.into_std());
            self.in_flight
                .set(Stage::Commit, batch.fingerprints.clone());
            let fingerprints = batch.fingerprints.clone();
            if self.commit(batch, &give_up).await && !self.quarantine.is_empty() {
                self.quarantine.release(&fingerprints);
            }
            self.in_flight.set(Stage::Commit, Arc::from([]));
            self.health.idle(Stage::Commit);
        }
    }

    /// Writes and acks one batch; false if it was given up (not written).
    async fn commit(&self, batch: Decoded, give_up: &CancellationToken) -> bool {
        let Decoded {
            records, tokens, ..
        } = batch;
        self.faults
            .at_commit(records.iter().filter_map(|r| match r {
                Record::Rows { payload, .. } => Some(payload.as_ref()),
                Record::Rejected { .. } => None,
            }));
        let count = records.len();
        match self.writer.write(&records, give_up).await {
            Ok(outcome) => {
                let m = &self.metrics;
                m.batch_rows.observe(count as f64);
                for (route, n) in &outcome.inserted {
                    m.rows_written.with_label_values(&[route]).inc_by(*n);
                }
                for (route, n) in &outcome.duplicates {
                    m.duplicates.with_label_values(&[route]).inc_by(*n);
                }
                for (route, reason) in &outcome.rejected {
                    m.reject(route, reason);
                }
                self.observe_readings(&records, &outcome.refused);
                let reasons: Vec<Option<&'static str>> = records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| match r {
                        Record::Rejected { letter, .. } => Some(letter.reason),
                        Record::Rows { .. } if outcome.refused.contains(&i) => Some("db_rejected"),
                        Record::Rows { .. } => None,
                    })
                    .collect();
                let report = self.acker.ack(tokens.into_iter().zip(reasons));
                m.pending_messages.sub(count as i64);
                tracing::debug!(
                    messages = count,
                    inserted = outcome.total_inserted(),
                    duplicates = outcome.total_duplicates(),
                    rejected = outcome.rejected.len(),
                    acked = report.sent,
                    not_acked = report.dropped,
                    "Batch committed"
                );
                true
            }
            Err(WriteError::Abandoned) => {
                abandon(&self.metrics, tokens);
                tracing::warn!(
                    messages = count,
                    "Shutting down while the database is failing; the broker will redeliver these messages"
                );
                false
            }
        }
    }

    /// Lag per reading; latest value per device once per batch.
    fn observe_readings(&self, records: &[Record], refused: &[usize]) {
        let now = Utc::now();
        let mut newest: HashMap<&DeviceId, (f64, f64)> = HashMap::new();
        for (i, record) in records.iter().enumerate() {
            let Record::Rows {
                device,
                reading: Some(reading),
                ..
            } = record
            else {
                continue;
            };
            if refused.contains(&i) {
                continue;
            }
            self.metrics
                .ingest_lag_seconds
                .observe(lag_seconds(reading, now));
            let t = reading.time().timestamp_millis() as f64 / 1000.0;
            let entry = newest.entry(device).or_insert((t, reading.emissions()));
            if t >= entry.0 {
                *entry = (t, reading.emissions());
            }
        }
        for (device, (t, value)) in newest {
            self.metrics.observe_device(device, value, t);
        }
    }
}

/// What identifies where a delivery came from, for its fingerprint.
fn source_key(source: &Source) -> std::borrow::Cow<'_, [u8]> {
    match source {
        Source::Mqtt(topic) => std::borrow::Cow::Borrowed(topic.as_ref()),
        Source::Http { route, device } => {
            std::borrow::Cow::Owned(format!("http/{route}/{device}").into_bytes())
        }
    }
}

/// Gives up on a batch without acking it (HTTP callers are told to retry).
fn abandon(metrics: &Metrics, tokens: Vec<AckToken>) {
    metrics.pending_messages.sub(tokens.len() as i64);
    tokens.into_iter().for_each(AckToken::abandon);
}
