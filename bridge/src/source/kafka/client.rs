//! The librdkafka consumer: its configuration from [`KafkaSettings`], and the
//! context whose callbacks see rebalances, commit results and whether any
//! broker is reachable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use secrecy::ExposeSecret;

use super::offsets::{Offsets, Partition};
use crate::config::ConfigError;
use crate::config::{KafkaSettings, OffsetReset};
use crate::health::Health;
use crate::metrics::Metrics;

/// The consumer of one Kafka source.
pub type KafkaConsumer = rdkafka::consumer::StreamConsumer<SourceContext>;

/// What librdkafka calls back into: rebalances, commit results, its log.
pub struct SourceContext {
    /// The source's name in logs (`sources.<n>`).
    pub(super) name: String,
    pub(super) offsets: Mutex<Offsets>,
    /// True while the source holds off fetching; partitions assigned
    /// meanwhile are paused as they come.
    pub(super) paused: AtomicBool,
    pub(super) metrics: Arc<Metrics>,
    /// The source's position in `[[sources]]`, its index in [`Health`].
    pub(super) index: usize,
    /// Where whether a broker is reachable goes (`/readyz`, the status page).
    pub(super) health: Arc<Health>,
}

/// How often librdkafka reports its brokers' states (the statistics
/// callback): how long `/readyz` may say ready after the last broker went.
const STATISTICS_INTERVAL_MS: u32 = 1_000;

/// True when librdkafka's statistics show a connection to some broker.
/// Bootstrap (`configured`) and metadata (`learned`) brokers count; its
/// internal and logical (coordinator alias) ones are not connections.
fn any_broker_up(statistics: &Statistics) -> bool {
    statistics
        .brokers
        .values()
        .any(|b| matches!(b.source.as_str(), "configured" | "learned") && b.state == "UP")
}

impl SourceContext {
    pub(super) fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// librdkafka's settings for `settings`, with the fetch queue bounded by the
/// pipeline's window (`window` records, `budget_bytes` bytes): librdkafka
/// prefetches up to that much more while the pipeline holds its share.
pub fn client_config(
    settings: &KafkaSettings,
    key: &str,
    window: usize,
    budget_bytes: usize,
) -> Result<ClientConfig, ConfigError> {
    let mut config = ClientConfig::new();
    let heartbeat = (settings.session_timeout_ms / 3).clamp(100, 3_000);
    config
        .set("bootstrap.servers", settings.bootstrap_servers.join(","))
        .set("group.id", &settings.group_id)
        .set("client.id", "co2-bridge")
        // Offsets are committed by the bridge once records are durable, never
        // on a timer (which loses or repeats what lies between commit and crash).
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match settings.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        )
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("heartbeat.interval.ms", heartbeat.to_string())
        .set(
            "queued.min.messages",
            window.clamp(1, 10_000_000).to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            (budget_bytes / 1024).clamp(1, 2_097_151).to_string(),
        )
        .set("security.protocol", settings.security_protocol.as_str())
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(mechanism) = &settings.sasl_mechanism {
        config.set("sasl.mechanism", mechanism);
    }
    if let Some(user) = &settings.username {
        config.set("sasl.username", user);
    }
    if let Some(password) = settings.password(key)? {
        config.set("sasl.password", password.expose_secret());
    }
    if let Some(tls) = &settings.tls {
        for (name, path) in [
            ("ca_file", Some(&tls.ca_file)),
            ("client_cert_file", tls.client_cert_file.as_ref()),
            ("client_key_file", tls.client_key_file.as_ref()),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(ConfigError::Invalid {
                        key: format!("{key}.tls.{name}"),
                        message: format!("{} is not a readable file", path.display()),
                    });
                }
            }
        }
        config.set("ssl.ca.location", tls.ca_file.to_string_lossy());
        if let Some(cert) = &tls.client_cert_file {
            config.set("ssl.certificate.location", cert.to_string_lossy());
        }
        if let Some(key) = &tls.client_key_file {
            config.set("ssl.key.location", key.to_string_lossy());
        }
    }
    Ok(config)
}

/// What to fix for the errors that retrying never cures: the broker
/// refused the bridge's credentials or the bridge refused the broker's
/// certificate.
fn configuration_hint(code: RDKafkaErrorCode) -> Option<&'static str> {
    match code {
        RDKafkaErrorCode::Authentication => Some(
            "check username, password_file and sasl_mechanism against the broker's users",
        ),
        RDKafkaErrorCode::SSL => Some(
            "check [sources.tls] ca_file (it must have signed the broker's certificate) and the client certificate",
        ),
        _ => None,
    }
}

fn partition_of(topic: &str, partition: i32) -> Partition {
    (Arc::from(topic), partition)
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(source = %self.name, facility = fac, message, "librdkafka")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(source = %self.name, facility = fac, message, "librdkafka")
            }
            _ => tracing::debug!(source = %self.name, facility = fac, message, "librdkafka"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if let Some(fix) = code.and_then(configuration_hint) {
            tracing::error!(source = %self.name, error = %error, reason, fix, "Kafka broker refused the connection; librdkafka retries, but this takes a configuration change");
            self.health
                .source_error(self.index, format!("{error}: {reason} ({fix})"));
        } else if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            tracing::warn!(source = %self.name, error = %error, reason, "Kafka client error; librdkafka retries by itself");
            // It follows the error that says why (a refused certificate or
            // password, a refused connection); the status page keeps that.
            let known = self
                .health
                .source_states()
                .get(self.index)
                .is_some_and(|s| s.track.last_error.is_some());
            if !known {
                self.health
                    .source_error(self.index, format!("{error}: {reason}"));
            }
        } else {
            tracing::warn!(source = %self.name, error = %error, reason, "Kafka client error; librdkafka retries by itself");
            self.health
                .source_error(self.index, format!("{error}: {reason}"));
        }
        // Said at once; the next statistics say when a broker is back.
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_source_up(self.index, false);
        }
    }

    fn stats(&self, statistics: Statistics) {
        let up = any_broker_up(&statistics);
        let was = self
            .health
            .source_states()
            .get(self.index)
            .and_then(|s| s.track.up);
        if was != Some(up) {
            if up {
                tracing::info!(source = %self.name, "Kafka broker reachable");
            } else {
                tracing::warn!(source = %self.name, "No Kafka broker reachable; /readyz fails until one is (check bootstrap_servers and that the brokers run)");
            }
        }
        self.health.set_source_up(self.index, up);
    }
}

impl ConsumerContext for SourceContext {
    /// Before partitions go: commit what is durable of them, then forget
    /// them. What the pipeline still holds of them is not waited for; it is
    /// stored anyway, but its acks are ignored, and the partitions' new owner
    /// reads it again from the commit (a no-op in the sinks).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut offsets = self.offsets();
            for e in revoked.elements() {
                if let Some(offset) = offsets.revoke(&partition_of(e.topic(), e.partition())) {
                    let _ = commit.add_partition_offset(
                        e.topic(),
                        e.partition(),
                        Offset::Offset(offset),
                    );
                }
            }
            self.metrics.kafka_partitions.sub(revoked.count() as i64);
        }
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(source = %self.name, error = %e, "Could not commit revoked partitions; their new owner reads them again from the last commit");
            }
        }
        tracing::info!(source = %self.name, partitions = revoked.count(), committed = commit.count(), "Partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                {
                    let mut offsets = self.offsets();
                    for e in assigned.elements() {
                        offsets.assign(partition_of(e.topic(), e.partition()));
                    }
                    self.metrics.kafka_partitions.add(assigned.count() as i64);
                }
                if self.paused.load(Ordering::Acquire) {
                    if let Err(e) = consumer.pause(assigned) {
                        tracing::warn!(source = %self.name, error = %e, "Could not pause newly assigned partitions");
                    }
                }
                let list: Vec<String> = assigned
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!(source = %self.name, partitions = ?list, "Partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(source = %self.name, error = %e, "Rebalance failed; the group retries")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.metrics.kafka_commits.with_label_values(&["ok"]).inc(),
            Err(e) => {
                self.metrics
                    .kafka_commits
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(source = %self.name, error = %e, partitions = offsets.count(), "An offset commit failed; the next one covers it (until then a restart reads those records again)");
            }
        }
    }
}
