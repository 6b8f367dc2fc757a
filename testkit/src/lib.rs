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
//! SIGKILL; [`chromium`] opens a page in headless Chromium.
//!
//! The back-ends with heavy clients are features: `kafka` (librdkafka),
//! `influx` (reqwest) and `clusters` (Galera, NATS); a crate turns on those
//! its tests use.

mod broker;
mod browser;
mod certs;
mod database;
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

use std::future::Future;
use std::time::{Duration, Instant};

pub use broker::Broker;
pub use browser::chromium;
pub use certs::{make_certs, password_file, ServerCert};
pub use database::Database;
#[cfg(feature = "clusters")]
pub use galera::GaleraCluster;
pub use http::{http_get, http_request, metric_value};
#[cfg(feature = "influx")]
pub use influx::{Influx, Series};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBroker, KafkaProducer, KafkaSecurity};
#[cfg(feature = "clusters")]
pub use nats::NatsCluster;
pub use process::{workspace_binary, ChildProcess};
pub use proxy::TcpProxy;
pub use publisher::Publisher;

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
