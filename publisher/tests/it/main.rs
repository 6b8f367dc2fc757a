//! Integration tests of co2-publisher: the real binary against test-owned
//! Mosquitto brokers, and end to end through the bridge into MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backlog;
mod cli;
mod clock_jump;
mod cluster;
mod completeness;
mod corrupt_queue;
mod disk_full;
mod doctor;
mod end_to_end;
mod half_open;
mod power_loss;
mod queue_bound;
mod support;
mod tls_auth;
