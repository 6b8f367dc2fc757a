//! Deliveries in, batches written, acknowledgements out, in arrival order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use co2_wire::DeviceId;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::acks::Acker;
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

impl Pipeline {
    /// Runs until `stop` fires and everything already received is written and
    /// acknowledged (or the shutdown timeout passes; unacked messages are then
    /// delivered again to the next session).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batcher = Batcher::new(self.max_rows, self.max_delay);
        let give_up = CancellationToken::new();
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
                delivery = self.rx.recv() => match delivery {
                    Some(delivery) => {
                        if batcher.push(delivery, Instant::now()) {
                            self.flush(batcher.take(), &give_up).await;
                        }
                    }
                    None => {
                        self.flush(batcher.take(), &give_up).await;
                        break;
                    }
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.flush(batcher.take(), &give_up).await;
                }
            }
        }
    }

    async fn flush(&self, deliveries: Vec<Delivery>, give_up: &CancellationToken) {
        if deliveries.is_empty() {
            return;
        }
        let count = deliveries.len();
        let received = Utc::now();
        let mut payloads = Vec::with_capacity(count);
        let mut tokens = Vec::with_capacity(count);
        for d in deliveries {
            payloads.push((d.source, d.payload));
            tokens.push(d.ack);
        }
        let records: Vec<Record> = payloads
            .into_iter()
            .map(|(source, payload)| self.routes.record(&source, payload, received))
            .collect();
        self.count_received(&records);
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
                    stale = report.stale,
                    "Batch committed"
                );
            }
            Err(WriteError::Abandoned) => {
                self.metrics.pending_messages.sub(count as i64);
                tokens.into_iter().for_each(crate::acks::AckToken::abandon);
                tracing::warn!(
                    messages = count,
                    "Shutting down while the database is failing; the broker will redeliver these messages"
                );
            }
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
