//! Helpers: publisher settings for a test, and reading what a publisher logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

/// Environment for a publisher binary: `device` on 127.0.0.1:`port`, topics
/// under `prefix`, queue at `queue`, fast interval, no clock-sync wait.
pub fn publisher_env(device: &str, port: u16, prefix: &str, queue: &Path) -> Vec<(String, String)> {
    [
        ("CO2_PUBLISHER__DEVICE", device.to_owned()),
        ("CO2_PUBLISHER__INTERVAL_MS", "20".to_owned()),
        ("CO2_PUBLISHER__MQTT__PORT", port.to_string()),
        ("CO2_PUBLISHER__MQTT__TOPIC_PREFIX", prefix.to_owned()),
        ("CO2_PUBLISHER__MQTT__RECONNECT_MIN_MS", "100".to_owned()),
        ("CO2_PUBLISHER__MQTT__RECONNECT_MAX_MS", "500".to_owned()),
        ("CO2_PUBLISHER__QUEUE__PATH", queue.display().to_string()),
        ("CO2_PUBLISHER__CLOCK__REQUIRE_SYNC", "false".to_owned()),
        ("RUST_LOG", "info,co2_publisher=debug".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The publisher binary of this package.
pub fn publisher_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_co2-publisher"))
}

/// Every reading a publisher log says it queued: epoch ms -> value in cents.
/// The line is written after the queue commit, so each is durable.
pub fn queued_readings(log: &str) -> BTreeMap<i64, i64> {
    log.lines()
        .filter(|l| l.contains("Reading queued"))
        .filter_map(|l| l.split("reading=").nth(1))
        .map(|payload| {
            let (time, value) = payload.trim().split_once('|').unwrap();
            let time = NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S%.f")
                .unwrap()
                .and_utc();
            let cents = (value.parse::<f64>().unwrap() * 100.0).round() as i64;
            (time.timestamp_millis(), cents)
        })
        .collect()
}
