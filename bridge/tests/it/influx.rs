//! The InfluxDB sink against a real influxd (Debian's 1.6.7), each test with
//! its own server on free loopback ports, its own database and topic prefix.
//! Every test reads back what influxd stores.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use co2_testkit::{http_get, metric_value, unique, wait_until, Broker, Influx, Publisher};
use serde_json::Value;

use crate::support::*;

/// What an Influx-only bridge needs: a private influxd, a database, a broker.
struct Setup {
    influx: Influx,
    db: String,
    broker: Broker,
    prefix: String,
    dir: PathBuf,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let influx = Influx::start().await.unwrap();
        let db = influx.create_database(name).await.unwrap();
        let broker = Broker::start("").await.unwrap();
        let prefix = unique(name);
        let dir = std::env::temp_dir().join(unique("co2-influx-cfg"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            influx,
            db,
            broker,
            prefix,
            dir,
        }
    }

    /// A config where everything goes to the sink `influx`: the CO2 route
    /// (measurement `co2_measurement`, or the topic), the dead letters, and
    /// `extra` routes. `[database]` points at a closed port: nothing may use it.
    fn config(&self, co2_measurement: Option<&str>, extra: &str) -> PathBuf {
        let measurement = co2_measurement
            .map(|m| format!("measurement = {m:?}\n"))
            .unwrap_or_default();
        let text = format!(
            r#"
[mqtt]
port = {port}
client_id = "{prefix}-bridge"
topics = ["{prefix}/+/emissions"]
reconnect_max_ms = 1000

[database]
url = "mysql://root@127.0.0.1:1/unused"

[sinks.influx]
kind = "influxdb"
url = "{url}"
database = "{db}"
retry_max_ms = 1000
request_timeout_s = 5

[co2]
sink = "influx"
{measurement}
[dead_letters]
sink = "influx"

[wire]
max_future_s = 300
{extra}
"#,
            port = self.broker.port(),
            prefix = self.prefix,
            url = self.influx.url(),
            db = self.db,
        );
        let path = self.dir.join("bridge.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Environment for the real binary with that config on `http_port`.
    fn binary_env(&self, config: &std::path::Path, http_port: u16) -> Vec<(String, String)> {
        vec![
            ("CO2_BRIDGE_CONFIG".to_owned(), config.display().to_string()),
            (
                "CO2_BRIDGE__HTTP__LISTEN".to_owned(),
                format!("127.0.0.1:{http_port}"),
            ),
        ]
    }

    async fn count(&self, q: &str) -> u64 {
        self.influx.scalar(&self.db, q).await.unwrap_or(0.0) as u64
    }

    async fn wait_count(&self, q: &str, n: u64, timeout: Duration) -> u64 {
        wait_until(timeout, || async { self.count(q).await >= n }).await;
        self.count(q).await
    }

    /// Every (device, epoch ms, value in cents) of measurement `co2`, and how many points.
    async fn stored(&self) -> (BTreeSet<(String, i64, i64)>, usize) {
        let series = self
            .influx
            .query(&self.db, r#"SELECT "device", "emissions" FROM "co2""#)
            .await
            .unwrap();
        let mut set = BTreeSet::new();
        let mut n = 0;
        for s in series {
            for row in &s.values {
                n += 1;
                set.insert((
                    row[1].as_str().unwrap().to_owned(),
                    row[0].as_i64().unwrap(),
                    (row[2].as_f64().unwrap() * 100.0).round() as i64,
                ));
            }
        }
        (set, n)
    }

    async fn assert_exactly_once(&self, devices: usize, per_device: usize) {
        let want = expected(devices, per_device);
        let (got, n) = self.stored().await;
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        assert!(
            missing.is_empty(),
            "{} readings missing, e.g. {missing:?}",
            want.difference(&got).count()
        );
        assert!(extra.is_empty(), "unexpected points, e.g. {extra:?}");
        assert_eq!(n, want.len(), "some reading is stored twice");
    }

    /// Dead letters as (reason, topic, payload, detail).
    async fn dead_letters(&self) -> Vec<(String, String, String, String)> {
        let series = self
            .influx
            .query(&self.db, "SELECT * FROM rejected_messages")
            .await
            .unwrap();
        let Some(s) = series.first() else {
            return Vec::new();
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let (reason, topic, payload, detail) = (
            s.column("reason"),
            s.column("topic"),
            s.column("payload"),
            s.column("detail"),
        );
        (0..s.values.len())
            .map(|i| {
                (
                    text(&reason[i]),
                    text(&topic[i]),
                    text(&payload[i]),
                    text(&detail[i]),
                )
            })
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const ROUTES: &str = r#"
[[routes]]
name = "env"
topics = ["PREFIX/{device}/env"]
decoder = "json"
sink = "influx"
measurement = "env"
[routes.json]
time_field = "time"

[[routes]]
name = "bins"
topics = ["PREFIX/bins/level"]
decoder = "delimited"
table = "bin_levels"
sink = "influx"
trust_payload_device = true
[routes.delimited]
fields = [
  { column = "level", type = "number", flag_word = "FULL", flag_column = "full" },
  { column = "bin_id", type = "device" },
  { column = "measured_at", type = "datetime", span = 2 },
]
"#;

fn field_types(series: &[co2_testkit::Series]) -> Vec<(String, String)> {
    series
        .first()
        .map(|s| {
            s.values
                .iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_points_read_back_with_their_values_types_tags_and_times() {
    let s = Setup::new("ixgood").await;
    let config = s.config(Some("co2"), &ROUTES.replace("PREFIX", &s.prefix));
    let bridge = InProcess::start_with(Vec::new(), Some(&config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("pub"));
    let p = &s.prefix;
    let co2 = [
        ("pi-1", "2026-01-01 00:00:00.250|412.50"),
        ("pi-2", "2026-01-01 00:00:01|3500"),
    ];
    for (device, body) in co2 {
        publisher
            .publish(&format!("{p}/{device}/emissions"), body)
            .await
            .unwrap();
    }
    publisher
        .publish(
            &format!("{p}/pi-1/env"),
            r#"{"temp": 21.5, "humidity": 40, "time": "2026-01-01T00:00:02Z"}"#,
        )
        .await
        .unwrap();
    publisher
        .publish(&format!("{p}/bins/level"), "37.5 bin-7 2026-01-01 00:00:03")
        .await
        .unwrap();
    publisher
        .publish(&format!("{p}/bins/level"), "FULL bin-8 2026-01-01 00:00:04")
        .await
        .unwrap();
    assert!(publisher.wait_acked(5, Duration::from_secs(30)).await);
    let bins = format!("\"{p}/bins/level\"");
    assert_eq!(
        s.wait_count(
            &format!("SELECT count(full) FROM {bins}"),
            2,
            Duration::from_secs(30)
        )
        .await,
        2
    );
    assert_eq!(s.count(r#"SELECT count(emissions) FROM co2"#).await, 2);

    let co2 = s
        .influx
        .query(&s.db, r#"SELECT "device", "emissions" FROM "co2""#)
        .await
        .unwrap();
    assert_eq!(
        co2[0].values,
        [
            vec![
                Value::from(1_767_225_600_250_i64),
                "pi-1".into(),
                412.5.into()
            ],
            vec![
                Value::from(1_767_225_601_000_i64),
                "pi-2".into(),
                3500.into()
            ],
        ]
    );
    let tags = s
        .influx
        .query(&s.db, r#"SHOW TAG KEYS FROM "co2""#)
        .await
        .unwrap();
    assert_eq!(tags[0].values, [vec![Value::from("device")]]);
    let types = field_types(
        &s.influx
            .query(&s.db, r#"SHOW FIELD KEYS FROM "co2""#)
            .await
            .unwrap(),
    );
    assert_eq!(types, [("emissions".to_owned(), "float".to_owned())]);

    let env = s
        .influx
        .query(&s.db, r#"SELECT "device", "humidity", "temp" FROM "env""#)
        .await
        .unwrap();
    assert_eq!(
        env[0].values,
        [vec![
            Value::from(1_767_225_602_000_i64),
            "pi-1".into(),
            40.into(),
            21.5.into()
        ]]
    );

    // Delimited: a float, a string, an integer; the datetime is the point's
    // time, and FULL leaves the level out (null) and sets full = 1.
    let types = field_types(
        &s.influx
            .query(&s.db, &format!("SHOW FIELD KEYS FROM {bins}"))
            .await
            .unwrap(),
    );
    assert_eq!(
        types,
        [
            ("bin_id".to_owned(), "string".to_owned()),
            ("full".to_owned(), "integer".to_owned()),
            ("level".to_owned(), "float".to_owned()),
        ]
    );
    let rows = s
        .influx
        .query(
            &s.db,
            &format!(r#"SELECT "device", "bin_id", "full", "level" FROM {bins}"#),
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0].values,
        [
            vec![
                Value::from(1_767_225_603_000_i64),
                "bin-7".into(),
                "bin-7".into(),
                0.into(),
                37.5.into()
            ],
            vec![
                Value::from(1_767_225_604_000_i64),
                "bin-8".into(),
                "bin-8".into(),
                1.into(),
                Value::Null
            ],
        ]
    );

    // A redelivered reading (same device and time) overwrites its point.
    publisher
        .publish(&format!("{p}/pi-1/emissions"), co2_first())
        .await
        .unwrap();
    assert!(publisher.wait_acked(6, Duration::from_secs(30)).await);
    let scrape = bridge.scrape().await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            metric_value(
                &bridge.scrape().await,
                r#"co2_bridge_rows_written_total{route="co2",sink="influx"}"#,
            ) == Some(3.0)
        })
        .await,
        "{scrape}"
    );
    assert_eq!(s.count(r#"SELECT count(emissions) FROM co2"#).await, 2);
    assert!(s.dead_letters().await.is_empty());
    publisher.disconnect().await;
    bridge.stop().await;
}

fn co2_first() -> &'static str {
    "2026-01-01 00:00:00.250|412.50"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_and_doubles_nothing() {
    let s = Setup::new("ixkill").await;
    let config = s.config(Some("co2"), "");
    let env = s.binary_env(&config, http_port());
    let mut bridge = spawn_binary(&env, "ixkill-bridge");
    bridge.wait_ready().await;

    let (devices, per_device) = (4, 5000);
    let total = (devices * per_device) as u64;
    let stream = spawn_stream(s.broker.port(), &s.prefix, devices, per_device, None);
    let q = "SELECT count(emissions) FROM co2";
    s.wait_count(q, 2000, Duration::from_secs(60)).await;
    bridge.process.kill().await.unwrap();
    let at_kill = s.count(q).await;
    assert!(
        (2000..total).contains(&at_kill),
        "killed at {at_kill} points; make the stream longer"
    );

    let restarted = spawn_binary(&env, "ixkill-bridge-2");
    restarted.wait_ready().await;
    stream.await.unwrap();
    assert_eq!(
        s.wait_count(q, total, Duration::from_secs(120)).await,
        total,
        "{}",
        restarted.log_text()
    );
    s.assert_exactly_once(devices, per_device).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxd_stopped_for_ten_seconds_loses_nothing_and_readyz_names_the_sink() {
    let mut s = Setup::new("ixstop").await;
    let config = s.config(Some("co2"), "");
    let env = s.binary_env(&config, http_port());
    let mut bridge = spawn_binary(&env, "ixstop-bridge");
    bridge.wait_ready().await;

    let (devices, per_device) = (3, 1000);
    let stream = spawn_stream(
        s.broker.port(),
        &s.prefix,
        devices,
        per_device,
        Some(Duration::from_millis(10)),
    );
    let q = "SELECT count(emissions) FROM co2";
    assert!(s.wait_count(q, 300, Duration::from_secs(30)).await >= 300);
    s.influx.stop().await.unwrap();
    let http = bridge.http;
    let unready = wait_until(Duration::from_secs(8), || async move {
        matches!(http_get(http, "/readyz").await,
            Ok((503, body)) if body.contains("sink influx (influxdb) unreachable"))
    })
    .await;
    assert!(
        unready,
        "/readyz did not name the sink: {:?}",
        http_get(http, "/readyz").await
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        bridge.process.is_running(),
        "bridge exited while influxd was down:\n{}",
        bridge.log_text()
    );
    let scrape = http_get(http, "/metrics").await.unwrap().1;
    assert_eq!(
        metric_value(&scrape, r#"co2_bridge_sink_up{sink="influx"}"#),
        Some(0.0)
    );
    s.influx.resume().await.unwrap();

    stream.await.unwrap();
    let total = (devices * per_device) as u64;
    assert_eq!(
        s.wait_count(q, total, Duration::from_secs(60)).await,
        total,
        "{}",
        bridge.log_text()
    );
    s.assert_exactly_once(devices, per_device).await;
    bridge.wait_ready().await;
    let scrape = http_get(http, "/metrics").await.unwrap().1;
    assert!(
        metric_value(&scrape, r#"co2_bridge_db_retries_total{sink="influx"}"#).unwrap_or(0.0)
            >= 1.0,
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_type_conflict_dead_letters_that_point_with_the_servers_message() {
    let s = Setup::new("ixconflict").await;
    // Measurement = topic: device `bad` already has a string `emissions`, in
    // the shard of the readings (field types are kept per shard).
    let config = s.config(None, "");
    let p = &s.prefix;
    let (status, body) = s
        .influx
        .write(
            &s.db,
            format!("{p}/bad/emissions,device=bad emissions=\"text\" 1767225630"),
            "s",
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let bridge = InProcess::start_with(Vec::new(), Some(&config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("pub"));
    let devices = ["ok1", "bad", "ok2"];
    for i in 0..20 {
        for device in devices {
            let (_, time, value) = reading(0, i);
            publisher
                .publish(&format!("{p}/{device}/emissions"), payload(time, value))
                .await
                .unwrap();
        }
    }
    assert!(publisher.wait_acked(60, Duration::from_secs(30)).await);
    let letters_q = "SELECT count(payload_bytes) FROM rejected_messages";
    assert_eq!(
        s.wait_count(letters_q, 20, Duration::from_secs(30)).await,
        20
    );
    for device in ["ok1", "ok2"] {
        assert_eq!(
            s.count(&format!(
                r#"SELECT count(emissions) FROM "{p}/{device}/emissions""#
            ))
            .await,
            20,
            "{device}"
        );
    }
    let letters = s.dead_letters().await;
    assert_eq!(letters.len(), 20);
    for (reason, topic, payload, detail) in &letters {
        assert_eq!(reason, "db_rejected");
        assert_eq!(topic, &format!("{p}/bad/emissions"));
        assert!(payload.starts_with("2026-01-01"), "{payload}");
        assert!(detail.contains("field type conflict"), "{detail}");
    }
    // Only the seeded string is in the bad device's measurement.
    let bad = s
        .influx
        .query(&s.db, &format!(r#"SELECT * FROM "{p}/bad/emissions""#))
        .await
        .unwrap();
    assert_eq!(bad[0].values.len(), 1);
    let scrape = bridge.scrape().await;
    assert_eq!(
        metric_value(
            &scrape,
            r#"co2_bridge_messages_rejected_total{reason="db_rejected",route="co2"}"#
        ),
        Some(20.0),
        "{scrape}"
    );
    publisher.disconnect().await;
    bridge.stop().await;
}

/// Spaces, commas, `=`, quotes and backslashes in a topic, which becomes the
/// measurement. (Mosquitto refuses line breaks and tabs in topics; tags with
/// those are tested against a real influxd next to the sink's code.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_topics_become_measurements_intact() {
    let s = Setup::new("ixescape").await;
    let route = format!(
        r#"
[[routes]]
name = "lab"
topics = ["{p}lab/{{device}}/#"]
decoder = "json"
sink = "influx"
"#,
        p = s.prefix
    );
    let config = s.config(None, &route);
    let bridge = InProcess::start_with(Vec::new(), Some(&config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("pub"));
    let p = &s.prefix;
    let awkward = [
        format!("{p}lab/pi-1/a b,c=d \"q\" \\w x=1"),
        format!("{p}lab/pi-1/ lead,=trail ,"),
    ];
    for (i, topic) in awkward.iter().enumerate() {
        publisher
            .publish(
                topic,
                format!(r#"{{"v": {i}.5, "time": "2026-01-01T00:00:0{i}Z"}}"#),
            )
            .await
            .unwrap();
    }
    assert!(publisher.wait_acked(2, Duration::from_secs(30)).await);
    let http = bridge.http;
    assert!(
        wait_until(Duration::from_secs(30), || async move {
            let scrape = http_get(http, "/metrics")
                .await
                .map(|r| r.1)
                .unwrap_or_default();
            metric_value(
                &scrape,
                r#"co2_bridge_rows_written_total{route="lab",sink="influx"}"#,
            ) == Some(2.0)
        })
        .await
    );
    let measurements = s.influx.query(&s.db, "SHOW MEASUREMENTS").await.unwrap();
    let mut names: Vec<&str> = measurements[0]
        .values
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut want: Vec<&str> = awkward.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(names, want);
    for (i, topic) in awkward.iter().enumerate() {
        let quoted = topic.replace('\\', "\\\\").replace('"', "\\\"");
        let rows = s
            .influx
            .query(&s.db, &format!(r#"SELECT "device", "v" FROM "{quoted}""#))
            .await
            .unwrap();
        assert_eq!(
            rows[0].values,
            [vec![
                Value::from(1_767_225_600_000_i64 + 1000 * i as i64),
                "pi-1".into(),
                (i as f64 + 0.5).into()
            ]],
            "{topic:?}"
        );
    }
    assert!(s.dead_letters().await.is_empty());
    publisher.disconnect().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_influx_only_setup_stores_readings_json_and_dead_letters_without_mysql() {
    let s = Setup::new("ixonly").await;
    let config = s.config(None, &ROUTES.replace("PREFIX", &s.prefix));
    let bridge = InProcess::start_with(Vec::new(), Some(&config)).await;
    let (status, ready) = http_get(bridge.http, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{ready}");
    let publisher = Publisher::connect(s.broker.port(), &unique("pub"));
    let p = &s.prefix;
    for i in 0..50 {
        let (_, time, value) = reading(1, i);
        publisher
            .publish(&format!("{p}/pi-1/emissions"), payload(time, value))
            .await
            .unwrap();
        publisher
            .publish(
                &format!("{p}/pi-1/env"),
                format!(r#"{{"temp": {i}.5, "time": "{}"}}"#, time.to_rfc3339()),
            )
            .await
            .unwrap();
    }
    publisher
        .publish(&format!("{p}/pi-1/emissions"), "no separator")
        .await
        .unwrap();
    publisher
        .publish(&format!("{p}/pi-1/env"), "{not json")
        .await
        .unwrap();
    publisher
        .publish(&format!("{p}/pi-1/emissions"), vec![0xff, 0xfe, b'|'])
        .await
        .unwrap();
    assert!(publisher.wait_acked(103, Duration::from_secs(30)).await);
    let letters_q = "SELECT count(payload_bytes) FROM rejected_messages";
    assert_eq!(s.wait_count(letters_q, 3, Duration::from_secs(30)).await, 3);
    assert_eq!(
        s.count(&format!(
            r#"SELECT count(emissions) FROM "{p}/pi-1/emissions""#
        ))
        .await,
        50
    );
    assert_eq!(s.count("SELECT count(temp) FROM env").await, 50);
    let mut reasons: Vec<String> = s.dead_letters().await.into_iter().map(|l| l.0).collect();
    reasons.sort();
    assert_eq!(reasons, ["bad_json", "missing_separator", "not_utf8"]);
    let binary = s
        .influx
        .query(
            &s.db,
            "SELECT payload_base64 FROM rejected_messages WHERE reason = 'not_utf8'",
        )
        .await
        .unwrap();
    assert_eq!(binary[0].values[0][1], Value::from("//58"));
    let scrape = bridge.scrape().await;
    assert_eq!(
        metric_value(&scrape, r#"co2_bridge_sink_up{sink="influx"}"#),
        Some(1.0)
    );
    assert!(
        !scrape.contains(r#"sink="mysql""#),
        "a MySQL sink was built"
    );
    publisher.disconnect().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_acknowledged_only_once_influx_stored_it() {
    let mut s = Setup::new("ixletter").await;
    let config = s.config(Some("co2"), "");
    let env = s.binary_env(&config, http_port());
    let bridge = spawn_binary(&env, "ixletter-bridge");
    bridge.wait_ready().await;
    s.influx.stop().await.unwrap();
    let publisher = Publisher::connect(s.broker.port(), &unique("pub"));
    let p = &s.prefix;
    publisher
        .publish(&format!("{p}/pi-1/emissions"), "2026-13-45 99:99:99|1")
        .await
        .unwrap();
    let (_, time, value) = reading(0, 0);
    publisher
        .publish(&format!("{p}/pi-1/emissions"), payload(time, value))
        .await
        .unwrap();
    assert!(publisher.wait_acked(2, Duration::from_secs(30)).await);
    // The bridge has both and retries; were the dead letter acknowledged
    // before it is stored, the kill would lose it.
    let http = bridge.http;
    assert!(
        wait_until(Duration::from_secs(10), || async move {
            let scrape = http_get(http, "/metrics")
                .await
                .map(|r| r.1)
                .unwrap_or_default();
            metric_value(&scrape, r#"co2_bridge_db_retries_total{sink="influx"}"#).unwrap_or(0.0)
                >= 1.0
        })
        .await,
        "{}",
        bridge.log_text()
    );
    let mut bridge = bridge;
    bridge.process.kill().await.unwrap();
    s.influx.resume().await.unwrap();
    assert_eq!(
        s.count("SELECT count(payload_bytes) FROM rejected_messages")
            .await,
        0
    );

    let restarted = spawn_binary(&env, "ixletter-bridge-2");
    restarted.wait_ready().await;
    let letters_q = "SELECT count(payload_bytes) FROM rejected_messages";
    assert_eq!(
        s.wait_count(letters_q, 1, Duration::from_secs(30)).await,
        1,
        "{}",
        restarted.log_text()
    );
    assert_eq!(s.count("SELECT count(emissions) FROM co2").await, 1);
    let letters = s.dead_letters().await;
    assert_eq!(letters[0].0, "bad_datetime");
    assert_eq!(letters[0].2, "2026-13-45 99:99:99|1");
    publisher.disconnect().await;
}
