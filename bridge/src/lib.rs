//! co2-bridge: MQTT → MySQL for CO2 readings, at-least-once end to end and
//! exactly-once in the table, with Prometheus metrics.
//!
//! Data flow: [`ingress`] polls the broker and hands deliveries to the
//! [`pipeline`], which decodes them ([`route`]), batches them ([`batch`]),
//! writes each batch in one transaction ([`writer`]) and only then
//! acknowledges it, in arrival order ([`acks`]). [`http`] serves `/metrics`,
//! `/healthz` and `/readyz`. [`app`] wires it together.

pub mod acks;
pub mod acl;
pub mod app;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod db;
pub mod fault;
pub mod health;
pub mod http;
pub mod ingress;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod quarantine;
pub mod route;
pub mod supervisor;
pub mod writer;

pub use app::{Bridge, RunError};
pub use config::Settings;
