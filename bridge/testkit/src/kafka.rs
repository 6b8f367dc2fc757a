//! A private Kafka-protocol broker: `tansu` with in-memory storage on a free
//! loopback port (ops/services.sh installs it), and a producer for it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::process::ChildProcess;
use crate::{free_port, port_open, unique, wait_until};

/// A test-owned `tansu broker` on 127.0.0.1; its data lives in memory and
/// goes with it.
pub struct KafkaBroker {
    port: u16,
    dir: PathBuf,
    _process: ChildProcess,
}

/// The tansu binary: `$TANSU`, else `tansu` on the PATH.
fn tansu() -> String {
    std::env::var("TANSU").unwrap_or_else(|_| "tansu".to_owned())
}

impl KafkaBroker {
    /// Starts a broker on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(unique("co2-kafka"));
        std::fs::create_dir_all(&dir)?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = std::process::Command::new(tansu());
        // Both listener and advertised address: the default listens on 0.0.0.0.
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .current_dir(&dir);
        let process = ChildProcess::spawn(command, &dir.join("tansu.log"))
            .context("cannot start tansu (run ops/services.sh, or set TANSU to its path)")?;
        if !wait_until(Duration::from_secs(10), || port_open(port)).await {
            bail!(
                "tansu did not listen on {port} within 10 s; see {}",
                dir.join("tansu.log").display()
            );
        }
        Ok(Self {
            port,
            dir,
            _process: process,
        })
    }

    /// `127.0.0.1:<port>`, for `bootstrap_servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let status = tokio::process::Command::new(tansu())
            .args(["topic", "create", topic, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .status()
            .await
            .context("cannot run tansu topic create")?;
        if !status.success() {
            bail!("tansu topic create {topic} failed: {status}");
        }
        Ok(())
    }

    /// A producer that waits for the broker's acknowledgement of every record.
    pub fn producer(&self) -> anyhow::Result<KafkaProducer> {
        let inner: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()?;
        Ok(KafkaProducer { inner })
    }

    /// The offsets `group` has committed for partitions `0..partitions` of
    /// `topic` (-1 where it has none), read without joining the group.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        Ok((0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect())
    }

    /// The end offset of each partition `0..partitions` of `topic`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()?;
        (0..partitions)
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
                Ok(high)
            })
            .collect()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Produces records to a [`KafkaBroker`].
pub struct KafkaProducer {
    inner: FutureProducer,
}

impl KafkaProducer {
    /// Sends one record (to `partition`, else by key) and waits for the
    /// broker's acknowledgement; returns its partition and offset.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&str>,
        payload: &[u8],
    ) -> anyhow::Result<(i32, i64)> {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let delivered = self
            .inner
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce to {topic} failed: {e}"))?;
        Ok((delivered.partition, delivered.offset))
    }
}
