//! co2-publisher: runs on the Raspberry Pi, reads a CO2 sensor, queues each
//! reading on disk and publishes it (QoS 1) in the `co2-wire` format.
//!
//! sensor (blocking thread) -> [`app`] sampler stamps once the [`clock`] is
//! plausible -> [`spool`] (SQLite) -> [`uplink`] state machine over a
//! [`link`] (rumqttc) -> broker; a reading leaves the spool only on PUBACK.

pub mod app;
pub mod clock;
pub mod config;
pub mod link;
pub mod sensor;
pub mod spool;
pub mod uplink;
