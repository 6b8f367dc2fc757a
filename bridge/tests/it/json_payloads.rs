//! JSON as people send it, against the real broker and MariaDB: every payload
//! of issue 13 exactly as written, through the shipped routes example (a
//! test-owned Mosquitto, since the shipped topics carry no test prefix); the
//! columns mode from the example's commented-out route; the migration that
//! adopts an existing `readings` table; and a kill -9 mid-stream in each
//! layout (long, columns, document, bare value).

use std::time::Duration;

use co2_testkit::{metric_value, unique, wait_until, Database, Publisher};
use sqlx::Executor;

use crate::support::*;

const TOKEN: (&str, &str) = ("cam-1", "cam-1-token-0123456789abcdef");

/// The payloads of issue 13, exactly as written, on the shipped topics.
const PYTHON: &str = r#"{"m_id": "0", "datetime": "2024-05-01 10:00:00", "temp": "21.0"}"#;
const ZZERII: &str = r#"{"name": "zzerii"}"#;
const TASMOTA: &str = r#"{"Time":"2024-05-01T10:00:00","AM2301":{"Temperature":21.5,"Humidity":40.1},"TempUnit":"C"}"#;
const ZIGBEE: &str =
    r#"{"temperature":21.5,"humidity":40,"battery":97,"contact":true,"linkquality":120}"#;
const SHELLY: &str = "12.5";

/// A `readings` row as text: device, topic, time (or "recent" for a receive
/// time), field, value, text_value, kind, tags.
type Row = (
    String,
    String,
    String,
    String,
    Option<f64>,
    Option<String>,
    String,
    Option<String>,
);

async fn readings(db: &Database) -> Vec<Row> {
    sqlx::query_as(
        "SELECT CAST(device AS CHAR), topic,
                IF(TIMESTAMPDIFF(SECOND, `time`, UTC_TIMESTAMP(3)) BETWEEN -5 AND 600, 'recent',
                   DATE_FORMAT(`time`, '%Y-%m-%d %H:%i:%s')),
                CAST(field AS CHAR), `value`, text_value, CAST(kind AS CHAR), CAST(tags AS CHAR)
           FROM readings ORDER BY topic, id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// A `climate` row: device, room, time (hh:mm), temperature, humidity, unit, redeliveries.
type ClimateRow = (
    String,
    String,
    String,
    Option<f64>,
    Option<f64>,
    Option<String>,
    u32,
);

/// A `readings` row after the migration: device, field, value, text_value,
/// kind, tags, tags_key, redeliveries.
type AdoptedRow = (
    String,
    String,
    Option<f64>,
    Option<String>,
    String,
    Option<String>,
    Vec<u8>,
    u32,
);

/// A stored value: a number, a boolean (stored as 0/1) or text.
enum V {
    N(f64),
    B(f64),
    T(&'static str),
}

fn row(device: &str, topic: &str, time: &str, field: &str, value: V, tags: Option<&str>) -> Row {
    let (value, text, kind) = match value {
        V::N(v) => (Some(v), None, "number"),
        V::B(v) => (Some(v), None, "bool"),
        V::T(t) => (None, Some(t.to_owned()), "text"),
    };
    (
        device.into(),
        topic.into(),
        time.into(),
        field.into(),
        value,
        text,
        kind.into(),
        tags.map(Into::into),
    )
}

async fn reasons(db: &Database) -> Vec<String> {
    let mut reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM rejected_messages")
        .fetch_all(db.pool())
        .await
        .unwrap();
    reasons.sort();
    reasons
}

async fn publish_all(publisher: &Publisher, messages: &[(&str, &str)]) {
    for (topic, payload) in messages {
        publisher.publish(topic, payload.as_bytes()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_of_the_issue_is_stored_as_written() {
    let s = route_rig("jsonshapes", TOKEN, str::to_owned).await;
    let bridge = InProcess::start_with(s.env.clone(), Some(&s.config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("shapes"));
    let timed = [
        ("temp_test", PYTHON),
        ("tele/tasmota-1/SENSOR", TASMOTA),
        (
            "sensors/pi-1/kitchen/dht11",
            r#"{"temp": 21.5, "humidity": 40, "time": "2024-05-01T10:00:00Z"}"#,
        ),
        ("documents/doc-1", PYTHON),
    ];
    let untimed = [
        ("test", ZZERII),
        ("zigbee2mqtt/contact-1", ZIGBEE),
        ("shellies/shelly-1/relay/0/power", SHELLY),
        ("esphome/node-1/sensor/temperature/state", "21.5"),
        ("esphome/node-1/sensor/status/state", "online"),
    ];
    let refused = [
        ("test", r#"{"gone": null}"#),
        ("test", "temp=19"),
        ("shellies/shelly-1/relay/0/power", r#"{"power": 1}"#),
        ("sensors/pi-1//dht11", r#"{"temp": 1}"#),
        (
            "zigbee2mqtt/deep",
            &*format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40)),
        ),
        ("zigbee2mqtt/twice", r#"{"battery": 97, "battery": 98}"#),
    ];
    publish_all(&publisher, &timed).await;
    publish_all(&publisher, &untimed).await;
    publish_all(&publisher, &refused).await;
    // Redeliveries of the payloads that carry their time: no new rows.
    publish_all(&publisher, &timed).await;
    let total = (2 * timed.len() + untimed.len() + refused.len()) as u64;
    assert!(publisher.wait_acked(total, Duration::from_secs(20)).await);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.db.count("rejected_messages").await.unwrap_or(0) >= refused.len() as i64
                && s.db.count("documents").await.unwrap_or(0) >= 1
        })
        .await
    );

    let t = "2024-05-01 10:00:00";
    let recent = "recent";
    assert_eq!(
        readings(&s.db).await,
        [
            row(
                "node-1",
                "esphome/node-1/sensor/status/state",
                recent,
                "status",
                V::T("online"),
                None
            ),
            row(
                "node-1",
                "esphome/node-1/sensor/temperature/state",
                recent,
                "temperature",
                V::N(21.5),
                None
            ),
            row(
                "pi-1",
                "sensors/pi-1/kitchen/dht11",
                t,
                "temp",
                V::N(21.5),
                Some(r#"{"room": "kitchen"}"#)
            ),
            row(
                "pi-1",
                "sensors/pi-1/kitchen/dht11",
                t,
                "humidity",
                V::N(40.0),
                Some(r#"{"room": "kitchen"}"#)
            ),
            row(
                "shelly-1",
                "shellies/shelly-1/relay/0/power",
                recent,
                "power",
                V::N(12.5),
                Some(r#"{"channel": "0"}"#)
            ),
            row(
                "tasmota-1",
                "tele/tasmota-1/SENSOR",
                t,
                "AM2301.Temperature",
                V::N(21.5),
                None
            ),
            row(
                "tasmota-1",
                "tele/tasmota-1/SENSOR",
                t,
                "AM2301.Humidity",
                V::N(40.1),
                None
            ),
            row(
                "tasmota-1",
                "tele/tasmota-1/SENSOR",
                t,
                "TempUnit",
                V::T("C"),
                None
            ),
            row("0", "temp_test", t, "temp", V::N(21.0), None),
            row("default", "test", recent, "name", V::T("zzerii"), None),
            row(
                "contact-1",
                "zigbee2mqtt/contact-1",
                recent,
                "temperature",
                V::N(21.5),
                None
            ),
            row(
                "contact-1",
                "zigbee2mqtt/contact-1",
                recent,
                "humidity",
                V::N(40.0),
                None
            ),
            row(
                "contact-1",
                "zigbee2mqtt/contact-1",
                recent,
                "battery",
                V::N(97.0),
                None
            ),
            row(
                "contact-1",
                "zigbee2mqtt/contact-1",
                recent,
                "contact",
                V::B(1.0),
                None
            ),
            row(
                "contact-1",
                "zigbee2mqtt/contact-1",
                recent,
                "linkquality",
                V::N(120.0),
                None
            ),
        ]
        .map(normalise_tags)
    );
    assert_eq!(
        reasons(&s.db).await,
        [
            "bad_json",
            "bad_tag",
            "duplicate_field",
            "no_storable_fields",
            "not_a_value",
            "too_deep"
        ]
    );

    // The document, whole, queryable the way a Grafana panel would.
    let (device, time, temp, tags, rows): (String, String, String, Option<String>, i64) =
        sqlx::query_as(
            "SELECT CAST(device AS CHAR), DATE_FORMAT(`time`, '%Y-%m-%d %H:%i:%s'),
                    CAST(JSON_VALUE(document, '$.temp') AS CHAR), CAST(tags AS CHAR),
                    (SELECT COUNT(*) FROM documents)
               FROM documents",
        )
        .fetch_one(s.db.pool())
        .await
        .unwrap();
    assert_eq!(
        (device.as_str(), time.as_str(), temp.as_str(), tags, rows),
        ("doc-1", t, "21.0", None, 1),
        "the topic names the device; m_id stays in the document"
    );
    let m_id: String = sqlx::query_scalar(
        "SELECT CAST(JSON_UNQUOTE(JSON_EXTRACT(document, '$.m_id')) AS CHAR) FROM documents",
    )
    .fetch_one(s.db.pool())
    .await
    .unwrap();
    assert_eq!(m_id, "0");

    let scrape = bridge.scrape().await;
    for (route, duplicates) in [
        ("python", 1.0),
        ("tasmota", 3.0),
        ("dht11", 2.0),
        ("documents", 1.0),
    ] {
        let series = format!("co2_bridge_duplicates_total{{route=\"{route}\",sink=\"mysql\"}}");
        assert_eq!(metric_value(&scrape, &series), Some(duplicates), "{series}");
    }
    let rejected = |reason: &str| {
        let series =
            format!("co2_bridge_messages_rejected_total{{reason=\"{reason}\",route=\"python\"}}");
        metric_value(&scrape, &series)
    };
    assert_eq!(rejected("no_storable_fields"), Some(1.0));
    assert_eq!(
        rejected("no_numeric_fields"),
        Some(0.0),
        "the old reason stays registered for dashboards and alerts that name it"
    );
    publisher.disconnect().await;
    bridge.stop().await;
}

/// MariaDB returns a JSON column's text as stored, MySQL its own form
/// (`{"a": "b"}`): compare without the space.
fn normalise_tags(mut r: Row) -> Row {
    r.7 = r.7.map(|t| t.replace(": ", ":"));
    r
}

/// The example's commented-out `climate` route, uncommented: the route and
/// its CREATE TABLE are tested as shipped.
fn with_climate(example: &str) -> String {
    let start = example
        .find("# [[routes]]\n# name = \"climate\"")
        .expect("the example's climate route");
    let (before, block) = example.split_at(start);
    let mut out = before.to_owned();
    let mut lines = block.lines();
    for line in lines.by_ref() {
        match line.strip_prefix("# ") {
            Some(code) => {
                out.push_str(code);
                out.push('\n');
            }
            None => {
                out.push_str(line);
                out.push('\n');
                break;
            }
        }
    }
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The example's `CREATE TABLE climate (...)`, from its comment.
fn climate_table() -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.example.toml"))
            .unwrap();
    let sql: Vec<&str> = example
        .lines()
        .skip_while(|l| !l.contains("CREATE TABLE climate"))
        .map(|l| l.trim_start_matches('#').trim())
        .scan(false, |done, l| {
            if *done {
                return None;
            }
            *done = l.ends_with(");");
            Some(l)
        })
        .collect();
    assert!(!sql.is_empty(), "the example's CREATE TABLE climate");
    sql.join(" ")
}

async fn climate_rig(name: &str) -> RouteRig {
    let rig = route_rig(name, TOKEN, with_climate).await;
    rig.db
        .pool()
        .execute(climate_table().as_str())
        .await
        .unwrap();
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_mode_maps_nested_fields_and_named_levels_to_columns() {
    let s = climate_rig("jsoncolumns").await;
    let bridge = InProcess::start_with(s.env.clone(), Some(&s.config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("climate"));
    let messages = [
        ("climate/tas-1/attic", TASMOTA),
        ("climate/tas-1/attic", TASMOTA),  // a redelivery
        ("climate/tas-1/cellar", TASMOTA), // same time, another room: a row of its own
        (
            "climate/tas-2/hall",
            r#"{"Time":"2024-05-01T10:05:00","AM2301":{"Temperature":"19.5"}}"#,
        ),
        (
            "climate/tas-2/hall",
            r#"{"Time":"2024-05-01T10:06:00","Other":1}"#,
        ),
    ];
    publish_all(&publisher, &messages).await;
    assert!(publisher.wait_acked(5, Duration::from_secs(20)).await);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.db.count("rejected_messages").await.unwrap_or(0) >= 1
        })
        .await
    );
    let rows: Vec<ClimateRow> = sqlx::query_as(
        "SELECT device, room, DATE_FORMAT(`time`, '%H:%i'), temperature, humidity, unit,
                    redeliveries
               FROM climate ORDER BY device, room",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "tas-1".into(),
                "attic".into(),
                "10:00".into(),
                Some(21.5),
                Some(40.1),
                Some("C".into()),
                1
            ),
            (
                "tas-1".into(),
                "cellar".into(),
                "10:00".into(),
                Some(21.5),
                Some(40.1),
                Some("C".into()),
                0
            ),
            (
                "tas-2".into(),
                "hall".into(),
                "10:05".into(),
                Some(19.5),
                None,
                None,
                0
            ),
        ]
    );
    assert_eq!(reasons(&s.db).await, ["no_storable_fields"]);
    publisher.disconnect().await;
    bridge.stop().await;
}

/// Runs migrations 1..=5 (the schema before issue 13) on `db`.
async fn migrate_to_before_json_values(db: &Database) {
    let dir = tempfile::tempdir().unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "20260101000006" {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    assert_eq!(migrator.iter().count(), 5);
    migrator.run(db.pool()).await.unwrap();
}

async fn migrate(db: &Database) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
        .arg("migrate")
        .env("CO2_BRIDGE__DATABASE__URL", db.url())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_migration_adopts_existing_readings_and_keeps_redeliveries_a_noop() {
    let db = Database::create("jsonadopt").await.unwrap();
    migrate_to_before_json_values(&db).await;
    db.pool()
        .execute(
            "INSERT INTO readings (device, topic, `time`, field, `value`, redeliveries) VALUES
               ('d1', 'sensors/d1/dht11', '2024-05-01 10:00:00', 'temp', 21.5, 2),
               ('d1', 'sensors/d1/dht11', '2024-05-01 10:00:00', 'humidity', 40, 0),
               ('d2', 'sensors/d2/dht11', '2024-05-01 10:00:00', 'temp', 19, 0)",
        )
        .await
        .unwrap();
    migrate(&db).await;
    migrate(&db).await; // idempotent

    let rows: Vec<AdoptedRow> = sqlx::query_as(
        "SELECT CAST(device AS CHAR), CAST(field AS CHAR), `value`, text_value, CAST(kind AS CHAR),
                    CAST(tags AS CHAR), tags_key, redeliveries FROM readings ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let adopted = |d: &str, f: &str, v: f64, r: u32| {
        (
            d.to_owned(),
            f.to_owned(),
            Some(v),
            None,
            "number".to_owned(),
            None,
            Vec::new(),
            r,
        )
    };
    assert_eq!(
        rows,
        [
            adopted("d1", "temp", 21.5, 2),
            adopted("d1", "humidity", 40.0, 0),
            adopted("d2", "temp", 19.0, 0),
        ]
    );
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(index_name AS CHAR), CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index) AS CHAR)
           FROM information_schema.statistics
          WHERE table_schema = DATABASE() AND table_name = 'readings' AND non_unique = 0
          GROUP BY index_name ORDER BY index_name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            // (id, time): time partitions need the time in every unique key (issue 29).
            ("PRIMARY".into(), "id,time".into()),
            (
                "uq_device_field_time_tags".into(),
                "device,field,time,tags_key".into()
            )
        ]
    );

    // A legacy inserter's row (no new columns) is a redelivery of the adopted one.
    let legacy = "INSERT INTO readings (device, topic, `time`, field, `value`)
                  VALUES ('d1', 't', '2024-05-01 10:00:00', 'temp', 21.5)
                  ON DUPLICATE KEY UPDATE redeliveries = redeliveries + 1";
    db.pool().execute(legacy).await.unwrap();
    // Another tag set, another case, a trailing space: three new fields, no conflict.
    db.pool()
        .execute(
            "INSERT INTO readings (device, topic, `time`, field, `value`, tags, tags_key) VALUES
               ('d1', 't', '2024-05-01 10:00:00', 'temp', 22, '{\"room\":\"hall\"}', 'k1'),
               ('d1', 't', '2024-05-01 10:00:00', 'Temp', 23, NULL, ''),
               ('d1', 't', '2024-05-01 10:00:00', 'temp ', 24, NULL, '')",
        )
        .await
        .unwrap();
    assert_eq!(db.count("readings").await.unwrap(), 6);
    let redeliveries: u32 = sqlx::query_scalar(
        "SELECT redeliveries FROM readings WHERE field = 'temp' AND tags_key = '' AND device = 'd1'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(redeliveries, 3);
    assert_eq!(db.count("documents").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_in_long_mode_with_text_and_nesting() {
    let drill = Drill {
        rig: route_rig("killlong", TOKEN, str::to_owned).await,
        table: "readings",
        message: |i| {
            let json = format!(
                r#"{{"Time":"{}","AM2301":{{"Temperature":{},"Humidity":"{}"}},"TempUnit":"C"}}"#,
                minute(i).replace(' ', "T"),
                i % 40,
                i % 90
            );
            (format!("tele/tas-{}/SENSOR", i % 3), json.into_bytes())
        },
        messages: 3000,
        rows: 9000,
        kill_at: 2000,
        distinct: "SELECT COUNT(DISTINCT device, field, `time`) FROM readings",
        exact: true,
    };
    let (rig, _) = sigkill_drill("killlong", drill).await;
    let texts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM readings WHERE kind = 'text' AND text_value = 'C'",
    )
    .fetch_one(rig.db.pool())
    .await
    .unwrap();
    assert_eq!(texts, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_in_columns_mode() {
    let drill = Drill {
        rig: climate_rig("killcolumns").await,
        table: "climate",
        message: |i| {
            let json = format!(
                r#"{{"Time":"{}","AM2301":{{"Temperature":{}.5,"Humidity":40}},"TempUnit":"C"}}"#,
                minute(i),
                i % 30
            );
            (
                format!("climate/tas-{}/room-{}", i % 3, i % 2),
                json.into_bytes(),
            )
        },
        messages: 3000,
        rows: 3000,
        kill_at: 700,
        distinct: "SELECT COUNT(DISTINCT device, room, `time`) FROM climate",
        exact: true,
    };
    sigkill_drill("killcolumns", drill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_in_document_mode() {
    let drill = Drill {
        rig: route_rig("killdocs", TOKEN, str::to_owned).await,
        table: "documents",
        message: |i| {
            let json = format!(
                r#"{{"m_id": "x", "datetime": "{}", "n": {i}, "nested": {{"list": [1, "two", true, null]}}}}"#,
                minute(i)
            );
            (format!("documents/doc-{}", i % 4), json.into_bytes())
        },
        messages: 3000,
        rows: 3000,
        kill_at: 700,
        distinct: "SELECT COUNT(DISTINCT JSON_VALUE(document, '$.n')) FROM documents",
        exact: true,
    };
    sigkill_drill("killdocs", drill).await;
}

/// Bare values carry no time: a redelivery after the kill is a new row, but
/// none may be lost, though every message comes from one device in bursts
/// (one receive time per batch would make all but one of a batch look like
/// redeliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_on_bare_values() {
    let drill = Drill {
        rig: route_rig("killvalue", TOKEN, str::to_owned).await,
        table: "readings",
        message: |i| {
            let topic = format!("shellies/sh-1/relay/{}/power", i % 4);
            (topic, format!("{i}.5").into_bytes())
        },
        messages: 3000,
        rows: 3000,
        kill_at: 700,
        distinct: "SELECT COUNT(DISTINCT `value`, tags_key) FROM readings",
        exact: false,
    };
    let (rig, doubled) = sigkill_drill("killvalue", drill).await;
    eprintln!("bare values: {doubled} redelivered after the kill stored twice");
    let channels: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT tags) FROM readings")
        .fetch_one(rig.db.pool())
        .await
        .unwrap();
    assert_eq!(channels, 4);
}
