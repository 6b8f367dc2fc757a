//! co2-bench: how fast the co2-telemetry pipeline is, and where its limit is.
//!
//! [`load`] publishes readings as simulated devices; [`account`] matches what
//! was published against the rows in `co2_emissions`; [`sink`] holds the
//! consumers the bridge is compared with (a null subscriber for the broker's
//! ceiling, the naive one-INSERT-per-message consumer); [`db`] measures the
//! database's multi-row insert ceiling; [`broker`] and [`bridge`] run
//! test-owned Mosquittos and the real bridge binary; [`run`] puts them
//! together back to back; [`influx`] measures the InfluxDB sink against
//! influxd's own ceiling; [`kafka`] the Kafka source against a null consumer
//! of the same tansu; [`dashboards`] what the Grafana dashboards cost as
//! the stored rows grow; [`export`] how fast `co2-bridge export` writes them out,
//! [`import`] how fast `co2-bridge import` stores a file against the INSERT ceiling.

pub mod account;
pub mod bridge;
pub mod broker;
pub mod cli;
pub mod dashboards;
pub mod db;
pub mod export;
pub mod import;
pub mod influx;
pub mod kafka;
pub mod load;
pub mod report;
pub mod run;
pub mod sink;
pub mod stats;
