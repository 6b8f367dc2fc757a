//! Writing a decoded batch through the sinks, then acknowledging it.
//!
//! Each message goes to its route's sink and each dead letter to the sink
//! that keeps them (the dead-letter sink), the others first, so that what they
//! refuse can still become a dead letter. Transient failures are retried with
//! capped exponential back-off while nothing is acknowledged; a part of the
//! batch a sink refuses is split in two until the message it refuses is
//! found, which is dead-lettered with what the sink said while the rest is
//! stored. Only when every part is stored is the batch acknowledged, in
//! arrival order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use co2_wire::{DeviceId, Reading};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{abandon, per_delivery, Decoded, InFlight};
use crate::fault::Faults;
use crate::health::{Health, Stage};
use crate::metrics::Metrics;
use crate::model::{Reason, Record};
use crate::pipeline::quarantine::Quarantine;
use crate::route::Routes;
use crate::sink::{Batch, Item, SinkError, Sinks, Written};
use crate::source::{Ack, Acker};
use co2_wire::backoff::Backoff;

/// Writes decoded batches one at a time, in order, and acks each once stored.
pub(super) struct Committer {
    pub(super) routes: Arc<Routes>,
    pub(super) sinks: Arc<Sinks>,
    pub(super) acker: Acker,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) quarantine: Arc<Quarantine>,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) faults: Faults,
}

/// Shutdown came while a sink was failing: the batch stays unacknowledged and
/// its sources deliver it again later.
struct Abandoned;

impl Committer {
    pub(super) async fn run(
        self,
        mut decoded: mpsc::Receiver<Decoded>,
        give_up: CancellationToken,
    ) {
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
        // `_held` releases the batch's bytes when this returns: after the acks.
        let Decoded {
            records,
            parts,
            tokens,
            held: _held,
            ..
        } = batch;
        let (mut records, parts, tokens) = self.claim(records, parts, tokens);
        self.faults
            .at_commit(records.iter().filter_map(|r| match r {
                Record::Decoded { payload, .. } => Some(payload.as_ref()),
                Record::Absorbed { .. } | Record::Rejected { .. } => None,
            }));
        let count = tokens.len();
        let written = match self.write(&mut records, give_up).await {
            Ok(written) => written,
            Err(Abandoned) => {
                abandon(&self.metrics, tokens);
                tracing::warn!(
                    messages = count,
                    "Shutting down while a sink is failing; these messages will be delivered again"
                );
                return false;
            }
        };
        let m = &self.metrics;
        m.batch_rows.observe(records.len() as f64);
        let (mut inserted, mut duplicates, mut rejected) = (0, 0, 0);
        for (sink, w) in &written {
            let sink = self.sinks.name(*sink);
            for (route, n) in &w.inserted {
                m.rows_written
                    .with_label_values(&[self.routes.label(Some(*route)), sink])
                    .inc_by(*n);
                inserted += n;
            }
            for (route, n) in &w.duplicates {
                m.duplicates
                    .with_label_values(&[self.routes.label(Some(*route)), sink])
                    .inc_by(*n);
                duplicates += n;
            }
        }
        for record in &records {
            if let Record::Rejected { route, letter } = record {
                m.reject(self.routes.label(*route), letter.reason);
                rejected += 1;
            }
        }
        // A delivery is answered stored when anything of it was (the
        // elements of a batch that were refused are dead letters of their own).
        let reasons: Vec<Option<Reason>> = per_delivery(&records, &parts)
            .map(|mine| {
                let stored = mine
                    .iter()
                    .any(|r| matches!(r, Record::Decoded { .. } | Record::Absorbed { .. }));
                match mine.first() {
                    Some(Record::Rejected { letter, .. }) if !stored => Some(letter.reason),
                    _ => None,
                }
            })
            .collect();
        self.observe_readings(&records);
        let report = self.acker.ack(tokens.into_iter().zip(reasons));
        m.pending_messages.sub(count as i64);
        tracing::debug!(
            messages = count,
            inserted,
            duplicates,
            rejected,
            acked = report.sent,
            not_acked = report.dropped,
            "Batch stored"
        );
        true
    }

    /// Claims every message for writing, and drops those whose HTTP request
    /// gave up waiting (they were told "not stored" and must not be written).
    fn claim(
        &self,
        records: Vec<Record>,
        parts: Vec<u32>,
        tokens: Vec<Ack>,
    ) -> (Vec<Record>, Vec<u32>, Vec<Ack>) {
        if tokens.iter().all(Ack::claim) {
            return (records, parts, tokens);
        }
        let (mut kept_records, mut kept_parts, mut kept_tokens) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut records = records.into_iter();
        for (n, token) in parts.into_iter().zip(tokens) {
            let mine = records.by_ref().take(n as usize);
            if token.claim() {
                kept_records.extend(mine);
                kept_parts.push(n);
                kept_tokens.push(token);
            } else {
                mine.for_each(drop);
                self.metrics.pending_messages.dec();
            }
        }
        (kept_records, kept_parts, kept_tokens)
    }

    /// Writes every record durably, each through its sink; returns what each sink stored.
    async fn write(
        &self,
        records: &mut [Record],
        give_up: &CancellationToken,
    ) -> Result<Vec<(usize, Written)>, Abandoned> {
        let dead_letters = self.sinks.dead_letters();
        let mut by_sink: Vec<Vec<usize>> = vec![Vec::new(); self.sinks.len()];
        for (i, record) in records.iter().enumerate() {
            let sink = match record {
                Record::Decoded { route, .. } => self.sink_of(*route),
                Record::Rejected { .. } => dead_letters,
                // Nothing to write; acked with the batch.
                Record::Absorbed { .. } => continue,
            };
            if let Some(list) = by_sink.get_mut(sink) {
                list.push(i);
            }
        }
        let mut written = Vec::new();
        for sink in (0..self.sinks.len()).filter(|s| *s != dead_letters) {
            let part = std::mem::take(&mut by_sink[sink]);
            let (stored, refused) = self.write_split(sink, records, part, give_up).await?;
            written.push((sink, stored));
            // Refused messages are dead letters now, for the dead-letter sink.
            if let Some(list) = by_sink.get_mut(dead_letters) {
                list.extend(refused);
            }
        }
        if let Some(mut part) = by_sink.get_mut(dead_letters).map(std::mem::take) {
            part.sort_unstable();
            let (stored, _) = self
                .write_split(dead_letters, records, part, give_up)
                .await?;
            written.push((dead_letters, stored));
        }
        Ok(written)
    }

    /// The sink position of `route` (checked at start to exist).
    fn sink_of(&self, route: usize) -> usize {
        self.routes
            .get(route)
            .and_then(|r| self.sinks.position(r.sink()))
            .unwrap_or_else(|| self.sinks.dead_letters())
    }

    /// Writes `records[i]` for every `i` of `part` to `sink`, splitting what
    /// the sink refuses. Returns what was stored, and the records it refused,
    /// which are dead letters now: stored too if `sink` keeps dead letters,
    /// otherwise left for the dead-letter sink.
    async fn write_split(
        &self,
        sink: usize,
        records: &mut [Record],
        part: Vec<usize>,
        give_up: &CancellationToken,
    ) -> Result<(Written, Vec<usize>), Abandoned> {
        let keeps_letters = sink == self.sinks.dead_letters();
        let mut stored = Written::default();
        let mut refused = Vec::new();
        let mut todo = vec![part];
        while let Some(part) = todo.pop() {
            if part.is_empty() {
                continue;
            }
            let result = {
                let batch = batch_of(records, &part);
                self.write_with_retry(sink, &batch, give_up).await?
            };
            match result {
                Ok(written) => stored.merge(written),
                Err(detail) if part.len() == 1 => {
                    let i = part[0];
                    if let Record::Decoded { .. } = records[i] {
                        tracing::warn!(
                            sink = self.sinks.name(sink),
                            error = %detail,
                            "A sink refused a message; storing it as a dead letter"
                        );
                        self.to_dead_letter(&mut records[i], &detail);
                        refused.push(i);
                        if keeps_letters {
                            todo.push(part);
                        }
                    } else {
                        // A dead letter is built to fit its table; if even that is
                        // refused, retrying is all that is left that loses nothing.
                        tracing::error!(sink = self.sinks.name(sink), error = %detail, "The sink refused a dead letter; retrying");
                        let pause = self
                            .sinks
                            .get(sink)
                            .map_or(Duration::from_secs(10), |s| s.retry_max());
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => todo.push(part),
                            _ = give_up.cancelled() => return Err(Abandoned),
                        }
                    }
                }
                Err(_) => {
                    let (first, second) = part.split_at(part.len() / 2);
                    todo.push(second.to_vec());
                    todo.push(first.to_vec());
                }
            }
        }
        Ok((stored, refused))
    }

    fn to_dead_letter(&self, record: &mut Record, detail: &str) {
        if let Record::Decoded {
            route,
            topic,
            payload,
            ..
        } = record
        {
            let letter = self
                .routes
                .dead_letter(topic, payload, Reason::DbRejected)
                .with_detail(detail);
            *record = Record::Rejected {
                route: Some(*route),
                letter,
            };
        }
    }

    /// Writes `batch`, retrying transient failures. The inner error is a
    /// permanent refusal, with what the sink said.
    async fn write_with_retry(
        &self,
        sink: usize,
        batch: &Batch<'_>,
        give_up: &CancellationToken,
    ) -> Result<Result<Written, String>, Abandoned> {
        let Some(store) = self.sinks.get(sink) else {
            return Ok(Err(format!("no sink at position {sink}")));
        };
        let name = self.sinks.name(sink);
        let mut backoff = Backoff::new(Duration::from_millis(50), store.retry_max());
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let failovers = store.failovers();
            let result = store.write(batch).await;
            let moved = store.failovers().saturating_sub(failovers);
            if moved > 0 {
                self.metrics
                    .db_failovers
                    .with_label_values(&[name])
                    .inc_by(moved);
            }
            match result {
                Ok(written) => {
                    self.metrics
                        .db_write_seconds
                        .with_label_values(&[name])
                        .observe(started.elapsed().as_secs_f64());
                    self.health.set_sink_up(sink, true);
                    if let Some(since) = failing_since {
                        tracing::info!(
                            sink = name,
                            down_for_s = since.elapsed().as_secs_f64(),
                            "Writes succeed again"
                        );
                    }
                    return Ok(Ok(written));
                }
                Err(SinkError::Transient(e)) => {
                    self.metrics.db_retries.with_label_values(&[name]).inc();
                    self.health.sink_error(sink, e.clone());
                    self.health.set_sink_up(sink, false);
                    let delay = backoff.next_delay();
                    if failing_since.is_none() {
                        failing_since = Some(started);
                        tracing::warn!(
                            sink = name,
                            error = %e,
                            messages = batch.items.len() + batch.letters.len(),
                            "Write failed; retrying with back-off, nothing is acknowledged meanwhile"
                        );
                    } else {
                        tracing::debug!(sink = name, error = %e, delay_ms = delay.as_millis() as u64, "Write failed again");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = give_up.cancelled() => return Err(Abandoned),
                    }
                }
                Err(SinkError::Refused(detail)) => {
                    self.health.set_sink_up(sink, true);
                    return Ok(Err(detail));
                }
            }
        }
    }

    /// Lag per reading; each device's newest value of each minute once per
    /// batch (the latest-value gauges and the status page's sparklines).
    fn observe_readings(&self, records: &[Record]) {
        let now = Utc::now();
        // Once per reading: SipHash over the device id was half of this.
        let mut newest: HashMap<(&DeviceId, i64), (f64, f64), foldhash::fast::RandomState> =
            HashMap::default();
        for record in records {
            let Record::Decoded { message, .. } = record else {
                continue;
            };
            let Some(reading) = &message.reading else {
                continue;
            };
            self.metrics
                .ingest_lag_seconds
                .observe(lag_seconds(reading, now));
            let t = reading.time().timestamp_millis() as f64 / 1000.0;
            let minute = reading.time().timestamp().div_euclid(60);
            let entry = newest
                .entry((&message.device, minute))
                .or_insert((t, reading.emissions()));
            if t >= entry.0 {
                *entry = (t, reading.emissions());
            }
        }
        let mut newest: Vec<_> = newest.into_iter().collect();
        newest.sort_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
        for ((device, _), (t, value)) in newest {
            self.metrics.observe_device(device, value, t);
        }
    }
}

/// The sink batch of `records[i]` for every `i` of `part`.
pub(crate) fn batch_of<'a>(records: &'a [Record], part: &[usize]) -> Batch<'a> {
    let mut batch = Batch::default();
    for record in part.iter().filter_map(|i| records.get(*i)) {
        match record {
            Record::Decoded {
                route,
                message,
                topic,
                ..
            } => batch.items.push(Item {
                route: *route,
                message,
                topic,
            }),
            Record::Rejected { letter, .. } => batch.letters.push(letter),
            Record::Absorbed { .. } => {}
        }
    }
    batch
}

/// Store time minus reading time, for the ingest-lag histogram.
pub fn lag_seconds(reading: &Reading, now: DateTime<Utc>) -> f64 {
    (now - reading.time()).num_milliseconds() as f64 / 1000.0
}
