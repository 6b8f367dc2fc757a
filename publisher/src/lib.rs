//! co2-publisher: runs on the Raspberry Pi, reads a CO2 sensor, queues each
//! reading on disk and publishes it (QoS 1) in the `co2-wire` format.
//!
//! sensor (blocking thread) -> [`app`] sampler stamps by the [`clock`] ->
//! [`queue`] (one [`store`] interface: the [`spool`] on disk, [`memory`]
//! while the disk cannot be written; [`salvage`] for a damaged file) ->
//! [`uplink`] state machine over a [`link`] (rumqttc) -> broker; a reading
//! leaves the queue only on PUBACK.
//! What is dropped on the way is recorded in the [`ledger`] and announced;
//! [`status`] is what `co2-publisher status` reads, [`doctor`] what
//! `co2-publisher doctor` checks.

pub mod app;
pub mod backlog;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod event;
pub mod ledger;
pub mod link;
pub mod memory;
pub mod queue;
pub mod salvage;
pub mod sensor;
pub mod spool;
pub mod stats;
pub mod status;
pub mod store;
pub mod uplink;
