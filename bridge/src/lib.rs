//! co2-bridge: sensor readings from MQTT (and HTTP) into MySQL, at least
//! once end to end and exactly once in the table, with Prometheus metrics.
//!
//! The shape is sources → pipeline → sinks:
//! - `source`: where deliveries come from and how each is acknowledged
//!   (MQTT PUBACKs in arrival order, HTTP ingest answers);
//! - `pipeline`: the only place that knows about ordering: batches, decodes
//!   through the routes (`route`), writes through the sinks with retries,
//!   splitting and dead letters, then acknowledges;
//! - `sink`: where batches are stored (MySQL, InfluxDB).
//!
//! Around them: `config` (a leaf: validation does no I/O), `replay` (dead
//! letters fed through today's routes and sinks again), `health`
//! (`/readyz`), `metrics`, `http` (the operator listener), `status` (the
//! status page it serves at `/`), `supervisor`
//! (every task supervised; a dead one stops the bridge) and `app`, which
//! wires it all together. `retime` repairs stored times after the fact.

pub mod acl;
mod app;
mod clocks;
pub mod config;
pub mod doctor;
mod fault;
mod health;
mod http;
mod metrics;
mod model;
mod pipeline;
pub mod replay;
pub mod retime;
mod route;
mod sink;
mod source;
mod status;
mod supervisor;
mod tokens;
#[cfg(feature = "tooling")]
mod tooling;

#[cfg(feature = "tooling")]
pub use tooling::offline;

pub use app::{migrate, Bridge, MigrateError, RunError};
pub use clocks::learned_note;
pub use config::{ConfigError, Settings};
pub use supervisor::install_panic_hook;

/// The decoding half of the pipeline, public for the fuzz targets: a
/// delivery's bytes in, a record (a message for a sink, or a dead letter) out.
pub mod decode {
    pub use crate::model::{DeadLetter, Field, Message, Origin, Reason, Record, Value};
    pub use crate::route::Routes;
}

/// The bridge's HTTP listeners without sockets, public for the HTTP fuzz target.
#[cfg(feature = "tooling")]
pub mod http_exchange {
    pub use crate::tooling::exchange::{Exchange, ExchangeError};
}

/// The InfluxDB line-protocol encoder, public for its fuzz target.
pub mod line_protocol {
    /// The test-side reader the fuzz target checks the encoder with.
    #[cfg(fuzzing)]
    pub use crate::sink::influx::line::parse;
    pub use crate::sink::influx::line::{check, push_point, FieldValue, LineError, Part};
}
