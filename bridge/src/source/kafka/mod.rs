//! The Kafka side: one consumer per `[[sources]]` entry of `kind = "kafka"`,
//! in a consumer group, handing records to the same pipeline as MQTT.
//!
//! Offsets are never committed on a timer: a record's offset counts as done
//! once the pipeline has stored it (or dead-lettered it), and each batch's
//! acks commit, per partition, the highest contiguous durable offset (see
//! `offsets`). A bridge killed at any moment therefore loses nothing; what it
//! had stored past its last commit is read again and is a no-op in the sinks.
//!
//! Back-pressure: records go into the pipeline's bounded channel and hold
//! their bytes against the byte budget. When either is full, the consumer
//! pauses every assigned partition (librdkafka stops fetching) but keeps
//! polling, at least once a second, so that it stays in the group: no
//! rebalance while a sink is down, however long. librdkafka's own prefetch
//! queue is bounded to the same window (see `client`).

mod client;
mod offsets;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::config::KafkaSettings;
pub use client::{client_config, KafkaConsumer, SourceContext};
pub use offsets::Partition;

use super::budget::ByteBudget;
use super::handoff::Handoff;
use super::{Ack, Delivery};
use crate::config::ConfigError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::{KafkaOrigin, Origin};
use offsets::Offsets;

/// What marks one record durable later.
#[derive(Debug, Clone)]
pub struct AckToken {
    source: usize,
    partition: Partition,
    generation: u64,
    offset: i64,
}

/// Why a Kafka source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// Its settings are unusable (a secret file, a TLS file).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka refused its configuration or the subscription.
    #[error("source {source_key}: {error}; check its settings")]
    Client {
        /// `sources.<n>`.
        source_key: String,
        /// What librdkafka said.
        error: rdkafka::error::KafkaError,
    },
}

/// A started Kafka source: its consumer, and the task that reads it.
pub struct KafkaSource {
    consumer: Arc<KafkaConsumer>,
    ingress: Ingress,
}

/// How often the consumer is polled even when nothing arrives: librdkafka
/// leaves the group if the application does not poll within
/// `max.poll.interval.ms`, paused or not.
const POLL_EVERY: Duration = Duration::from_secs(1);

impl KafkaSource {
    /// Creates the consumer of `sources.<index>` and subscribes it.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: &KafkaSettings,
        index: usize,
        window: usize,
        tx: mpsc::Sender<Delivery>,
        budget: Arc<ByteBudget>,
        health: Arc<Health>,
    ) -> Result<Self, KafkaSourceError> {
        let metrics = health.metrics().clone();
        let key = format!("sources.{index}");
        let config = client_config(settings, &key, window, budget.limit())?;
        let client = |error| KafkaSourceError::Client {
            source_key: key.clone(),
            error,
        };
        let context = SourceContext {
            name: key.clone(),
            offsets: Mutex::new(Offsets::default()),
            paused: Default::default(),
            metrics: metrics.clone(),
            index,
            health,
        };
        let consumer: KafkaConsumer = config.create_with_context(context).map_err(client)?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(client)?;
        tracing::info!(source = %key, topics = ?settings.topics, group = %settings.group_id, "Joining the Kafka consumer group");
        let consumer = Arc::new(consumer);
        let ingress = Ingress {
            consumer: consumer.clone(),
            index,
            handoff: Handoff::new(tx, metrics.clone()),
            budget,
            metrics,
            device_from_key: settings.device_from_key,
            paused: false,
        };
        Ok(Self { consumer, ingress })
    }

    /// The consumer, for the [`Acker`] and the final commit.
    pub fn consumer(&self) -> Arc<KafkaConsumer> {
        self.consumer.clone()
    }

    /// Reads records into the pipeline until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        self.ingress.run(stop).await;
    }
}

/// Commits durable offsets through each source's consumer.
#[derive(Default, Clone)]
pub struct Acker {
    consumers: Vec<Arc<KafkaConsumer>>,
}

impl Acker {
    /// An acker over the consumers of every Kafka source, in source order.
    pub fn new(consumers: Vec<Arc<KafkaConsumer>>) -> Self {
        Self { consumers }
    }

    /// Marks a stored record durable; false if its partition was taken away
    /// since (its new owner reads it again).
    pub fn done(&self, token: &AckToken) -> bool {
        self.consumers.get(token.source).is_some_and(|c| {
            c.context()
                .offsets()
                .done(&token.partition, token.generation, token.offset)
        })
    }

    /// Commits, without waiting, every partition whose durable progress moved.
    pub fn commit(&self) {
        for consumer in &self.consumers {
            commit(consumer, CommitMode::Async);
        }
    }

    /// Commits what is durable and waits for the answer (at shutdown), then
    /// leaves the groups.
    pub async fn finish(self) {
        let consumers = self.consumers;
        let closing = tokio::task::spawn_blocking(move || {
            for consumer in consumers {
                commit(&consumer, CommitMode::Sync);
                consumer.unsubscribe();
                // Dropping the last handle closes the consumer: it leaves the
                // group now instead of after the session timeout.
                drop(consumer);
            }
        });
        if tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .is_err()
        {
            tracing::warn!("Kafka consumers did not close within 10 s; the group gives their partitions away after the session timeout");
        }
    }
}

fn commit(consumer: &KafkaConsumer, mode: CommitMode) {
    let due = consumer.context().offsets().take_due();
    if due.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in &due {
        if list
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&list, mode) {
        consumer
            .context()
            .metrics
            .kafka_commits
            .with_label_values(&["failed"])
            .inc();
        tracing::warn!(source = %consumer.context().name, error = %e, "Could not commit offsets; the next batch's commit covers them");
    }
}

/// The task that reads one consumer.
struct Ingress {
    consumer: Arc<KafkaConsumer>,
    index: usize,
    handoff: Handoff,
    budget: Arc<ByteBudget>,
    metrics: Arc<Metrics>,
    device_from_key: bool,
    paused: bool,
}

impl Ingress {
    async fn run(mut self, stop: CancellationToken) {
        // A handle of its own: a record borrows the consumer while `self` changes.
        let consumer = self.consumer.clone();
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            self.handoff.forward();
            if self.handoff.is_closed() {
                break;
            }
            self.pause_or_resume();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.budget.wait_until_available(), if self.paused && self.budget.spent() => {}
                _ = self.handoff.wait_for_room(POLL_EVERY), if self.handoff.is_waiting() => {}
                // Cancel safe: a record is taken from librdkafka only when
                // this future completes. Polled even while paused: that is
                // what keeps the consumer in its group.
                message = consumer.recv() => match message {
                    Ok(m) => {
                        failing = false;
                        self.on_message(&m);
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(source = self.index, error = %e, "Kafka consumer error; librdkafka reconnects by itself");
                        }
                        failing = true;
                    }
                },
            }
        }
        self.handoff.let_go();
        self.set_paused(false);
    }

    fn on_message(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let partition: Partition = (Arc::from(m.topic()), m.partition());
        let offset = m.offset();
        let Some(generation) = self
            .consumer
            .context()
            .offsets()
            .received(&partition, offset)
        else {
            // Its partition was revoked a moment ago; its new owner reads it.
            return;
        };
        let payload = Bytes::copy_from_slice(m.payload().unwrap_or_default());
        let key = self
            .device_from_key
            .then(|| m.key().map(Bytes::copy_from_slice))
            .flatten();
        self.handoff.push(Delivery {
            held: self.budget.hold(payload.len()),
            origin: Origin::Kafka(KafkaOrigin {
                topic: partition.0.clone(),
                partition: partition.1,
                offset,
                key,
            }),
            payload,
            seq: None,
            ack: Ack::Kafka(AckToken {
                source: self.index,
                partition,
                generation,
                offset,
            }),
        });
    }

    /// Pauses fetching while the pipeline is full (records wait in the
    /// overflow queue, or the byte budget is spent); resumes once there is
    /// room again. Re-pausing also catches partitions assigned meanwhile.
    fn pause_or_resume(&mut self) {
        let full = self.handoff.is_waiting() || self.budget.spent();
        if full {
            self.set_paused(true);
        } else if self.paused && self.handoff.has_resume_room() {
            self.set_paused(false);
        }
    }

    fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        let context = self.consumer.context();
        // Set first: a rebalance between here and the pause pauses its new
        // partitions itself.
        context.paused.store(paused, Ordering::Release);
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(source = self.index, error = %e, "Cannot read the Kafka assignment");
                return;
            }
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = paused;
                self.metrics.kafka_paused.set(i64::from(paused));
                if paused {
                    tracing::debug!(
                        source = self.index,
                        partitions = assignment.count(),
                        "Pipeline full; paused fetching (the consumer stays in its group)"
                    );
                } else {
                    tracing::debug!(source = self.index, "Pipeline has room; resumed fetching");
                }
            }
            Err(e) => {
                tracing::warn!(source = self.index, error = %e, "Cannot pause or resume Kafka partitions")
            }
        }
    }
}
