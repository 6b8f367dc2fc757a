//! Where a delivery came from: what routes resolve and dead letters name.

use std::sync::Arc;

use bytes::Bytes;
use co2_wire::DeviceId;

use super::RouteId;

/// Where a delivery came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An MQTT topic, as the broker sent it: kept as bytes that share the
    /// packet's buffer, since deliveries wait in the pipeline by the thousand.
    Mqtt(Bytes),
    /// A Kafka record.
    Kafka(KafkaOrigin),
    /// `POST /ingest/<route>` by an authenticated device.
    Http {
        /// The route the request named.
        route: RouteId,
        /// The device the bearer token belongs to.
        device: DeviceId,
    },
}

/// Where one Kafka record came from.
#[derive(Debug, Clone)]
pub struct KafkaOrigin {
    /// Its topic: routes match it like an MQTT topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, when the source takes the device from it.
    pub key: Option<Bytes>,
}

impl KafkaOrigin {
    /// How a dead letter names it: `kafka:<topic>/<partition>@<offset>`.
    pub fn locator(&self) -> String {
        format!("kafka:{}/{}@{}", self.topic, self.partition, self.offset)
    }
}
