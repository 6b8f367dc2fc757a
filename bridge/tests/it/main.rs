//! Integration tests against real Mosquitto, MariaDB and InfluxDB. One binary, so the
//! helpers compile once. Each test owns its database and topic prefix; tests
//! that stop a broker own that broker too.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod ack_batching;
mod batches;
mod completeness;
mod crashes_and_outages;
mod dead_letter_replay;
mod dead_letter_replay_auto_zone;
mod delivery;
mod discovery;
mod doctor;
mod export;
mod hostile;
mod import;
mod influx;
mod json_payloads;
mod kafka;
mod kafka_auth;
mod limits;
mod lorawan;
mod observability;
mod retention;
mod retime;
mod retime_collisions;
mod rollups;
mod routes;
mod scale_out;
mod schema;
mod status_alerts;
mod status_page;
mod support;
mod time_zones;
mod tls_certificates;
