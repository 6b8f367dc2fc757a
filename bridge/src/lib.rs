//! co2-bridge: sensor readings from MQTT (and HTTP) into MySQL, at least
//! once end to end and exactly once in the table, with Prometheus metrics.
//!
//! The layers, each importing only those below it (docs/architecture.md
//! walks one reading through them; `ops/checks/56-module-layers.sh` fails on
//! an import cycle):
//! - `app`: build, run, ordered shutdown; beside it the commands `replay`,
//!   `retime`, `export`, `import`, `doctor` and `acl`;
//! - `http`, `status`: the operator and device listeners, the status page;
//! - `pipeline`: intake, batches, commit, splitting, dead letters, acks in
//!   arrival order, the crash quarantine;
//! - `source` (MQTT, HTTP, Kafka in) and `sink` (MySQL, InfluxDB out);
//! - `route`: routes and decoders, payload bytes to the model;
//! - `discovery`: Home Assistant discovery, the announced sensors the MQTT
//!   source subscribes to and the discovery route decodes;
//! - `config`: every section's settings, validated without I/O;
//! - `clocks`: device zones and clock offsets;
//! - `model`: the shared vocabulary (reasons, records, messages, layouts,
//!   origins).
//!
//! `health` and `metrics` are read by every layer and import only the
//! model; `supervisor`, `fault`, `tokens`, `web_client` and `status_line` are leaves. `tooling` (feature
//! `tooling`) holds the benchmark's and the fuzzer's entry points.

pub mod acl;
mod app;
mod clocks;
pub mod config;
pub mod discovery;
pub mod doctor;
pub mod export;
mod fault;
mod health;
mod http;
pub mod import;
mod metrics;
mod model;
mod pipeline;
pub mod replay;
pub mod retime;
pub mod rollups;
mod route;
mod sink;
mod source;
mod status;
mod status_line;
pub mod storage;
mod supervisor;
mod tokens;
#[cfg(feature = "tooling")]
mod tooling;
mod web_client;

#[cfg(feature = "tooling")]
pub use tooling::offline;

pub use app::{check, migrate, Bridge, MigrateError, RunError};
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
