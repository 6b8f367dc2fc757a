//! The pipeline core, the only place that knows about ordering: deliveries
//! in from every source, batched and decoded ([`Intake`]), written through
//! the sinks with retries, splitting and dead letters ([`commit`]), and
//! acknowledged in arrival order once stored.

pub(crate) mod batch;
mod commit;
pub(crate) mod quarantine;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::fault::Faults;
use crate::health::{Health, Stage};
use crate::metrics::Metrics;
use crate::model::Origin;
use crate::model::RouteId;
use crate::model::{Reason, Record};
use crate::route::Routes;
use crate::sink::Sinks;
use crate::source::budget::Held;
use crate::source::{Ack, Acker, Delivery};
use crate::supervisor::Supervisor;
use batch::Batcher;
// The offline benchmark and co2-bridge import build sink batches the same way.
pub(crate) use commit::batch_of;
use commit::Committer;
use quarantine::{fingerprint, Quarantine, Verdict};

/// Supervisor name of the batching and decoding task.
pub const INTAKE_TASK: &str = "intake";
/// Supervisor name of the writing and acknowledging task.
pub const COMMIT_TASK: &str = "commit";

/// The tasks between the sources and the sinks.
pub struct Pipeline {
    /// Deliveries from every source.
    pub rx: mpsc::Receiver<Delivery>,
    /// Decodes each delivery.
    pub routes: Arc<Routes>,
    /// Where batches are written.
    pub sinks: Arc<Sinks>,
    /// Acknowledges stored batches.
    pub acker: Acker,
    /// Where per-batch figures go.
    pub metrics: Arc<Metrics>,
    /// Flush at this many deliveries...
    pub max_rows: usize,
    /// ...or this many payload bytes...
    pub max_bytes: usize,
    /// ...or when the oldest has waited this long.
    pub max_delay: Duration,
    /// How long a shutdown may keep retrying a failing sink.
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

/// A decoded batch on its way to the sinks: records, the acks they release
/// and the messages' fingerprints, in arrival order.
struct Decoded {
    records: Vec<Record>,
    /// How many of `records` each delivery made, in order (a batched JSON
    /// message makes one per element).
    parts: Vec<u32>,
    tokens: Vec<Ack>,
    /// The deliveries' bytes, released once they are acknowledged.
    held: Vec<Held>,
    fingerprints: Arc<[u64]>,
    /// When its first message arrived.
    opened: Instant,
}

impl Pipeline {
    /// Starts intake and commit under `supervisor`. They run until `stop`
    /// fires and everything already received is stored and acknowledged (or
    /// the shutdown timeout passes; unacked messages are then delivered again
    /// to the next session).
    ///
    /// Decoding runs in intake while the commit task writes and acks the
    /// previous batch, so the store does not wait for the decoder
    /// (BENCHMARKS.md: the drain went from 72k–99k to 100k–109k rows/s). One
    /// batch at most waits between the two: batches still reach the sinks,
    /// and their acks the sources, in arrival order.
    pub fn spawn(self, supervisor: &Supervisor, stop: CancellationToken) -> PipelineTasks {
        let Pipeline {
            rx,
            routes,
            sinks,
            acker,
            metrics,
            max_rows,
            max_bytes,
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
            routes: routes.clone(),
            sinks,
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
            max_bytes,
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
    max_bytes: usize,
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
        let mut batcher = Batcher::new(self.max_rows, self.max_bytes, self.max_delay);
        // Deliveries are taken as many as are queued (up to the batch's
        // room) per wake-up, not one per wake-up: at a few thousand a second
        // the task otherwise wakes once per message.
        let mut arrived = Vec::with_capacity(self.max_rows.max(1));
        let mut stopping = false;
        loop {
            let deadline = batcher.deadline();
            tokio::select! {
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
                }
                n = self.rx.recv_many(&mut arrived, batcher.room()) => {
                    if n == 0 {
                        self.hand_over(batcher.take(), to_commit).await;
                        return;
                    }
                    let now = Instant::now();
                    for delivery in arrived.drain(..) {
                        if batcher.is_empty() {
                            self.health.busy(Stage::Intake, now.into_std());
                        }
                        let bytes = delivery.payload.len();
                        if batcher.push(delivery, bytes, now) {
                            self.hand_over(batcher.take(), to_commit).await;
                        }
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.hand_over(batcher.take(), to_commit).await;
                }
            }
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
            .map(|d| fingerprint(&source_key(&d.origin), &d.payload))
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
                    let record = self.routes.refuse(
                        &delivery.origin,
                        &delivery.payload,
                        Reason::CrashedBridge,
                    );
                    let before = std::mem::take(&mut run);
                    let before_fps = std::mem::take(&mut run_fps);
                    self.decode_and_send(before, before_fps.into(), opened, to_commit)
                        .await;
                    let batch = Decoded {
                        records: vec![record],
                        parts: vec![1],
                        tokens: vec![delivery.ack],
                        held: vec![delivery.held],
                        fingerprints: Arc::from([fp]),
                        opened,
                    };
                    self.send(batch, to_commit).await;
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
        let mut parts = Vec::with_capacity(deliveries.len());
        let mut tokens = Vec::with_capacity(deliveries.len());
        let mut held = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let n = self
                .routes
                .record_into(&mut records, &d.origin, d.payload, d.seq, received);
            parts.push(u32::try_from(n).unwrap_or(u32::MAX));
            tokens.push(d.ack);
            held.push(d.held);
        }
        let batch = Decoded {
            records,
            parts,
            tokens,
            held,
            fingerprints,
            opened,
        };
        self.send(batch, to_commit).await;
    }

    async fn send(&self, batch: Decoded, to_commit: &mpsc::Sender<Decoded>) {
        self.count_received(&batch.records, &batch.parts);
        if let Err(mpsc::error::SendError(lost)) = to_commit.send(batch).await {
            // The commit task is gone (it panicked): nothing is acked, the
            // broker redelivers.
            abandon(&self.metrics, lost.tokens);
        }
        self.in_flight.set(Stage::Intake, Arc::from([]));
    }

    /// Messages per route (a batch is one message), counted once per batch.
    fn count_received(&self, records: &[Record], parts: &[u32]) {
        let mut counts: Vec<(Option<RouteId>, u64)> = Vec::new();
        for record in per_delivery(records, parts).filter_map(|d| d.first()) {
            let route = match record {
                Record::Decoded { route, .. } | Record::Absorbed { route } => Some(*route),
                Record::Rejected { route, .. } => *route,
            };
            match counts.iter_mut().find(|(r, _)| *r == route) {
                Some((_, n)) => *n += 1,
                None => counts.push((route, 1)),
            }
        }
        for (route, n) in counts {
            self.metrics
                .messages_received
                .with_label_values(&[self.routes.label(route)])
                .inc_by(n);
        }
    }
}

/// What identifies where a delivery came from, for its fingerprint.
fn source_key(origin: &Origin) -> std::borrow::Cow<'_, [u8]> {
    match origin {
        Origin::Mqtt(topic) => std::borrow::Cow::Borrowed(topic.as_ref()),
        Origin::Kafka(k) => std::borrow::Cow::Owned(k.locator().into_bytes()),
        Origin::Http { route, device } => {
            std::borrow::Cow::Owned(format!("http/{route}/{device}").into_bytes())
        }
    }
}

/// Gives up on a batch without acking it (HTTP callers are told to retry).
/// The records of each delivery, in order, given how many each made.
fn per_delivery<'r>(records: &'r [Record], parts: &'r [u32]) -> impl Iterator<Item = &'r [Record]> {
    let mut rest = records;
    parts.iter().map(move |n| {
        let (mine, after) = rest.split_at((*n as usize).min(rest.len()));
        rest = after;
        mine
    })
}

fn abandon(metrics: &Metrics, tokens: Vec<Ack>) {
    metrics.pending_messages.sub(tokens.len() as i64);
    tokens.into_iter().for_each(Ack::abandon);
}
