//! Deliveries in, batches written, acknowledgements out, in arrival order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use co2_wire::DeviceId;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::acks::{AckToken, Acker};
use crate::batch::Batcher;
use crate::ingress::Delivery;
use crate::metrics::Metrics;
use crate::route::{Record, Routes};
use crate::writer::{lag_seconds, WriteError, Writer};

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
}

/// A decoded batch on its way to the database: records and the acks they
/// release, in arrival order.
struct Decoded {
    records: Vec<Record>,
    tokens: Vec<AckToken>,
}

impl Pipeline {
    /// Runs until `stop` fires and everything already received is written and
    /// acknowledged (or the shutdown timeout passes; unacked messages are then
    /// delivered again to the next session).
    ///
    /// Decoding runs here while a second task writes and acks the previous
    /// batch, so the database does not wait for the decoder (BENCHMARKS.md:
    /// the drain went from 72k–99k to 100k–109k rows/s). One batch at most
    /// waits between the two: batches still reach the database, and their acks
    /// the broker, in arrival order.
    pub async fn run(self, stop: CancellationToken) {
        let Pipeline {
            rx,
            routes,
            writer,
            acker,
            metrics,
            max_rows,
            max_delay,
            shutdown_timeout,
        } = self;
        let give_up = CancellationToken::new();
        let (to_commit, decoded) = mpsc::channel(1);
        let committer = Committer {
            writer,
            acker,
            metrics: metrics.clone(),
        };
        let committing = tokio::spawn(committer.run(decoded, give_up.clone()));
        let mut intake = Intake {
            rx,
            routes,
            metrics,
            max_rows,
            max_delay,
            shutdown_timeout,
        };
        intake.take_in(&stop, &give_up, &to_commit).await;
        drop(to_commit);
        if let Err(e) = committing.await {
            tracing::error!(error = %e, "The commit task failed; unacknowledged messages will be redelivered");
        }
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
                        if !batcher.push(delivery, Instant::now()) {
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

    /// Decodes a batch and queues it for the commit task.
    async fn hand_over(&self, deliveries: Vec<Delivery>, to_commit: &mpsc::Sender<Decoded>) {
        if deliveries.is_empty() {
            return;
        }
        let received = Utc::now();
        let mut records = Vec::with_capacity(deliveries.len());
        let mut tokens = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            records.push(self.routes.record(&d.source, d.payload, received));
            tokens.push(d.ack);
        }
        self.count_received(&records);
        if let Err(mpsc::error::SendError(lost)) = to_commit.send(Decoded { records, tokens }).await
        {
            // The commit task is gone (it panicked): nothing is acked, the
            // broker redelivers.
            abandon(&self.metrics, lost.tokens);
        }
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
}

impl Committer {
    async fn run(self, mut decoded: mpsc::Receiver<Decoded>, give_up: CancellationToken) {
        while let Some(batch) = decoded.recv().await {
            self.commit(batch, &give_up).await;
        }
    }

    async fn commit(&self, Decoded { records, tokens }: Decoded, give_up: &CancellationToken) {
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
            }
            Err(WriteError::Abandoned) => {
                abandon(&self.metrics, tokens);
                tracing::warn!(
                    messages = count,
                    "Shutting down while the database is failing; the broker will redeliver these messages"
                );
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

/// Gives up on a batch without acking it (HTTP callers are told to retry).
fn abandon(metrics: &Metrics, tokens: Vec<AckToken>) {
    metrics.pending_messages.sub(tokens.len() as i64);
    tokens.into_iter().for_each(AckToken::abandon);
}
