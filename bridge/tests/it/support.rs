//! Shared helpers: start a bridge (in process or as the real binary), publish
//! numbered readings, and read back what the table holds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use co2_bridge::{Bridge, Settings};
use co2_testkit::{free_port, http_get, unique, wait_until, ChildProcess, Database, Publisher};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Environment for a bridge talking to `db_url` and 127.0.0.1:`mqtt_port`,
/// subscribed to `<prefix>/+/emissions`.
pub fn bridge_env(
    db_url: &str,
    mqtt_port: u16,
    prefix: &str,
    http_port: u16,
) -> Vec<(String, String)> {
    [
        ("CO2_BRIDGE__DATABASE__URL", db_url.to_owned()),
        ("CO2_BRIDGE__MQTT__PORT", mqtt_port.to_string()),
        ("CO2_BRIDGE__MQTT__CLIENT_ID", format!("{prefix}-bridge")),
        ("CO2_BRIDGE__MQTT__TOPICS", format!("{prefix}/+/emissions")),
        ("CO2_BRIDGE__HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
        ("CO2_BRIDGE__DATABASE__RETRY_MAX_MS", "1000".to_owned()),
        ("CO2_BRIDGE__MQTT__RECONNECT_MAX_MS", "1000".to_owned()),
        // Readings in these tests are stamped in the past; lag is not under test.
        ("CO2_BRIDGE__WIRE__MAX_FUTURE_S", "300".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A bridge running inside the test process.
pub struct InProcess {
    pub http: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), co2_bridge::RunError>>,
}

impl InProcess {
    pub async fn start(env: Vec<(String, String)>) -> Self {
        let mut env = env;
        env.retain(|(k, _)| k != "CO2_BRIDGE__HTTP__LISTEN");
        env.push(("CO2_BRIDGE__HTTP__LISTEN".into(), "127.0.0.1:0".into()));
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info,co2_bridge=debug")
            .try_init();
        let settings = Settings::load_from(None, env).unwrap();
        let bridge = Bridge::build(settings).await.unwrap();
        let http = bridge.http_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(bridge.run_until_stopped(stop.clone()));
        let me = Self { http, stop, task };
        me.wait_ready().await;
        me
    }

    pub async fn wait_ready(&self) {
        let http = self.http;
        let ready = wait_until(Duration::from_secs(30), || async move {
            matches!(http_get(http, "/readyz").await, Ok((200, _)))
        })
        .await;
        assert!(ready, "bridge not ready within 30 s");
    }

    pub async fn scrape(&self) -> String {
        http_get(self.http, "/metrics").await.unwrap().1
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("bridge did not stop within 30 s");
        result.unwrap().unwrap();
    }
}

/// The real `co2-bridge` binary, for kill -9 and exit-code tests.
pub struct Binary {
    pub process: ChildProcess,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl Binary {
    pub fn spawn(env: &[(String, String)], log_name: &str) -> Self {
        let http_port = env
            .iter()
            .find(|(k, _)| k == "CO2_BRIDGE__HTTP__LISTEN")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"));
        command.arg("run").env("RUST_LOG", "info,co2_bridge=debug");
        for (k, v) in env {
            command.env(k, v);
        }
        let log = std::env::temp_dir().join(format!("{}.log", unique(log_name)));
        let process = ChildProcess::spawn(command, &log).unwrap();
        Self {
            process,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            log,
        }
    }

    pub async fn wait_ready(&self) {
        let http = self.http;
        let ready = wait_until(Duration::from_secs(30), || async move {
            matches!(http_get(http, "/readyz").await, Ok((200, _)))
        })
        .await;
        assert!(ready, "bridge binary not ready; log: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A free port for a bridge's HTTP listener.
pub fn http_port() -> u16 {
    free_port().unwrap()
}

/// Reading `i` of device `d`: a distinct millisecond time and a value derived
/// from both, so every row can be checked.
pub fn reading(d: usize, i: usize) -> (String, DateTime<Utc>, f64) {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let time = base + chrono::Duration::milliseconds((i * 1000 + d * 7) as i64);
    let value = ((i * 13 + d * 101) % 99_000) as f64 + 0.25;
    (format!("dev{d}"), time, value)
}

/// The canonical payload of a reading.
pub fn payload(time: DateTime<Utc>, value: f64) -> String {
    format!("{}|{value:.2}", time.format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// Publishes readings `range` of `devices` devices to `<prefix>/devN/emissions`.
pub async fn publish_range(
    publisher: &Publisher,
    prefix: &str,
    devices: usize,
    range: std::ops::Range<usize>,
) {
    for i in range {
        for d in 0..devices {
            let (device, time, value) = reading(d, i);
            publisher
                .publish(
                    &format!("{prefix}/{device}/emissions"),
                    payload(time, value),
                )
                .await
                .unwrap();
        }
    }
}

/// Every (device, epoch ms, value in cents) we expect for `devices` × `count`.
pub fn expected(devices: usize, count: usize) -> BTreeSet<(String, i64, i64)> {
    (0..count)
        .flat_map(|i| (0..devices).map(move |d| reading(d, i)))
        .map(|(device, time, value)| {
            (
                device,
                time.timestamp_millis(),
                (value * 100.0).round() as i64,
            )
        })
        .collect()
}

/// What `co2_emissions` holds, in the same shape, plus the raw row count.
pub async fn stored(db: &Database) -> (BTreeSet<(String, i64, i64)>, i64) {
    let rows: Vec<(String, DateTime<Utc>, f64)> =
        sqlx::query_as("SELECT CAST(device AS CHAR), date_time, emissions FROM co2_emissions")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let count = rows.len() as i64;
    let set = rows
        .into_iter()
        .map(|(device, time, value)| {
            (
                device,
                time.timestamp_millis(),
                (value * 100.0).round() as i64,
            )
        })
        .collect();
    (set, count)
}

/// Waits until the table holds `n` rows (or `timeout` passes); returns the count.
pub async fn wait_for_rows(db: &Database, n: i64, timeout: Duration) -> i64 {
    wait_until(timeout, || async {
        db.count("co2_emissions").await.unwrap_or(0) >= n
    })
    .await;
    db.count("co2_emissions").await.unwrap()
}

/// Asserts the table holds exactly the expected readings, each once.
pub async fn assert_exactly_once(db: &Database, devices: usize, count: usize) {
    let want = expected(devices, count);
    let (got, rows) = stored(db).await;
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} readings missing, e.g. {missing:?}",
        want.difference(&got).count()
    );
    assert!(extra.is_empty(), "unexpected rows, e.g. {extra:?}");
    assert_eq!(
        rows,
        want.len() as i64,
        "some reading is stored more than once"
    );
}
