//! Test support shared by the co2-telemetry integration tests.
//!
//! Everything binds to 127.0.0.1 and is owned by the test that made it: a
//! [`Broker`] is a private `mosquitto` on a free port (so a test may stop it),
//! a [`Database`] is a uniquely named database dropped afterwards (kept when
//! the test panics, for a post-mortem), a [`TcpProxy`] can cut a connection,
//! an [`Influx`] is a private `influxd` on free loopback ports, a
//! [`KafkaBroker`] a private `tansu` (in memory, or on PostgreSQL with SCRAM
//! users and stunnel's TLS in front), and a [`GaleraCluster`] and
//! a [`NatsCluster`] are private three-node clusters whose nodes a drill may
//! SIGKILL; an [`Alertmanager`] is a private one to post alerts to;
//! [`chromium`] opens a page in headless Chromium.
//!
//! The workspace's own programs run as tests run them everywhere: a
//! [`BridgeProcess`] is `co2-bridge run` with its environment
//! ([`bridge_env`]), [`spawn_device`] starts `co2-publisher` as a device
//! ([`device_env`]), [`doctor::run`] runs either's doctor, and
//! [`wait_for_rows`] waits for the bridge to store readings.
//!
//! The back-ends with heavy clients are features: `kafka` (librdkafka),
//! `influx` (reqwest) and `clusters` (Galera, NATS); a crate turns on those
//! its tests use.

mod alertmanager;
mod bridge;
mod broker;
mod browser;
mod certs;
mod database;
mod device;
pub mod doctor;
#[cfg(feature = "clusters")]
mod galera;
mod http;
#[cfg(feature = "influx")]
mod influx;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "clusters")]
mod nats;
mod process;
mod proxy;
mod publisher;
mod readings;
mod rows;

use std::future::Future;
use std::time::{Duration, Instant};

pub use alertmanager::Alertmanager;
pub use bridge::{bridge_base_env, bridge_bin, bridge_env, BridgeProcess};
pub use broker::Broker;
pub use browser::chromium;
pub use certs::{make_certs, password_file, ServerCert};
pub use database::Database;
pub use device::{device_env, device_log, publisher_bin, queue_path, spawn_device, status_path};
#[cfg(feature = "clusters")]
pub use galera::GaleraCluster;
pub use http::{dechunk, http_get, http_request, metric_value};
#[cfg(feature = "influx")]
pub use influx::{Influx, Series};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBroker, KafkaProducer, KafkaSecurity};
#[cfg(feature = "clusters")]
pub use nats::NatsCluster;
pub use process::{workspace_binary, ChildProcess};
pub use proxy::TcpProxy;
pub use publisher::Publisher;
pub use readings::{
    assert_exactly_once, assert_exactly_once_in, expected, payload, publish_range, reading,
    stored_in,
};
pub use rows::{wait_for_device_rows, wait_for_rows};

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A short random suffix for names that must not collide between tests.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
