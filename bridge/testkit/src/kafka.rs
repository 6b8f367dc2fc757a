//! A private Kafka-protocol broker: `tansu` with in-memory storage on a free
//! loopback port (ops/services.sh installs it), and a producer for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::process::ChildProcess;
use crate::{free_port, port_open, unique, wait_until, TcpProxy};

/// A test-owned `tansu broker` on 127.0.0.1; its data lives in memory and
/// goes with it.
pub struct KafkaBroker {
    /// Where it listens.
    port: u16,
    /// What it tells clients to connect to: `port`, or a proxy in front of it.
    advertised: u16,
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
        Self::start_on(port, port).await
    }

    /// Starts a broker behind a [`TcpProxy`] that every client goes
    /// through (bootstrap and advertised address alike): cutting the proxy
    /// makes the broker unreachable without losing its in-memory data.
    pub async fn start_behind_proxy() -> anyhow::Result<(Self, TcpProxy)> {
        let port = free_port()?;
        let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let broker = Self::start_on(port, proxy.port()).await?;
        Ok((broker, proxy))
    }

    async fn start_on(port: u16, advertised: u16) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("co2-kafka"));
        std::fs::create_dir_all(&dir)?;
        let mut command = std::process::Command::new(tansu());
        // Both listener and advertised address: the default listens on 0.0.0.0.
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
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
            advertised,
            dir,
            _process: process,
        })
    }

    /// `127.0.0.1:<port>`, for `bootstrap_servers` (the proxy's, if any).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
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
