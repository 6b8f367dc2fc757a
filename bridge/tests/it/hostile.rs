//! Hostile input against the real `co2-bridge` binary, a test-owned Mosquitto
//! and MariaDB: after every hostile message (MQTT or HTTP ingest), a good
//! reading must be stored within a bounded time, the process must be alive
//! and ready, and the hostile message must be in `rejected_messages` with its
//! reason. Then a bridge whose pipeline is made to fail (the debug-build
//! fault hook) must turn `/readyz` 503, exit non-zero, and not crash forever
//! on the redelivered message.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use co2_testkit::{http_get, http_request, unique, wait_until, Broker, Database, Publisher};

use crate::support::*;

const TOKEN: &str = "hostile-device-token-0123456789";
/// A good reading must be stored within this long after a hostile message.
const LANDS_WITHIN: Duration = Duration::from_secs(15);

/// Extra routes on top of the shipped example: JSON with a large size limit
/// (so 65,000 keys reach the decoder), times in seconds and in milliseconds,
/// and HTTP ingest on the JSON and camera routes.
fn config(dir: &std::path::Path) -> PathBuf {
    let base = routes_config(&[("cam-1", TOKEN)]);
    let tokens = dir.join("json.tokens");
    std::fs::write(&tokens, format!("dev-1 {TOKEN}\n")).unwrap();
    let extra = format!(
        r#"
[[routes]]
name = "hostile_json"
topics = ["hostile/{{device}}/json"]
decoder = "json"
max_payload_bytes = 2097152
[routes.http]
tokens_file = {tokens:?}

[[routes]]
name = "json_s"
topics = ["hostile/{{device}}/seconds"]
decoder = "json"
[routes.json]
time_unit = "s"

[[routes]]
name = "json_ms"
topics = ["hostile/{{device}}/millis"]
decoder = "json"
[routes.json]
time_unit = "ms"
"#,
        tokens = tokens.display().to_string()
    );
    let mut text = std::fs::read_to_string(&base).unwrap();
    text.push_str(&extra);
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// How a hostile message arrives.
enum Via {
    Mqtt(String),
    /// `POST /ingest/<route>`, answered with this status.
    Http(&'static str, u16),
}

struct Case {
    what: String,
    via: Via,
    payload: Vec<u8>,
    /// The dead-letter reason; `None` for a value that is valid after all (`-0`).
    reason: Option<&'static str>,
}

fn mqtt(what: &str, topic: &str, payload: impl Into<Vec<u8>>, reason: &'static str) -> Case {
    Case {
        what: what.to_owned(),
        via: Via::Mqtt(topic.to_owned()),
        payload: payload.into(),
        reason: Some(reason),
    }
}

fn http(
    what: &str,
    route: &'static str,
    payload: impl Into<Vec<u8>>,
    status: u16,
    reason: Option<&'static str>,
) -> Case {
    Case {
        what: what.to_owned(),
        via: Via::Http(route, status),
        payload: payload.into(),
        reason,
    }
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn many_keys(n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
    format!("{{{}}}", fields.join(","))
}

fn cases(prefix: &str) -> Vec<Case> {
    let co2 = format!("{prefix}/pi-1/emissions");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
    let ttn_up = "v3/app1@ttn/devices/pi-1/up";
    let mut cases = vec![
        mqtt(
            "a TTN uplink whose decoded payload is 10,000 levels deep",
            ttn_up,
            format!(
                r#"{{"uplink_message": {{"decoded_payload": {}}}}}"#,
                nested(10_000)
            ),
            "too_deep",
        ),
        mqtt(
            "a TTN uplink with 3,000 decoded fields",
            ttn_up,
            format!(
                r#"{{"uplink_message": {{"decoded_payload": {}}}}}"#,
                many_keys(3_000)
            ),
            "too_many_fields",
        ),
        mqtt(
            "a ChirpStack frame counter beyond 32 bits",
            "application/1/device/pi-1/event/up",
            r#"{"fCnt": 4294967296, "object": {"co2": 400}}"#,
            "bad_json",
        ),
        mqtt(
            "a ChirpStack join that is an array",
            "application/1/device/pi-1/event/join",
            "[1, 2, 3]",
            "not_an_object",
        ),
        mqtt(
            "non-ASCII in a four-digit offset (the panic of issue 11)",
            &co2,
            "2020-07-13 22:43:23+1é1|400",
            "bad_datetime",
        ),
        mqtt(
            "non-ASCII in an hh:mm offset",
            &co2,
            "2020-07-13 22:43:23+é1:00|400",
            "bad_datetime",
        ),
        mqtt(
            "non-ASCII in a two-digit offset",
            &co2,
            "2020-07-13T22:43:23-€|400",
            "bad_datetime",
        ),
        mqtt("year 0", &co2, "0000-01-01 00:00:00|1", "time_out_of_range"),
        mqtt(
            "year 999",
            &co2,
            "999-12-31 23:59:59|1",
            "time_out_of_range",
        ),
        mqtt(
            "year 10000",
            &co2,
            "10000-01-01 00:00:00|1",
            "time_out_of_range",
        ),
        mqtt(
            "an offset that moves the time before the year 1000",
            &co2,
            "1000-01-01 00:30:00+01:00|1",
            "time_out_of_range",
        ),
        mqtt("NaN", &co2, "2020-07-13 22:43:23|NaN", "not_finite"),
        mqtt("inf", &co2, "2020-07-13 22:43:23|inf", "not_finite"),
        mqtt("1e400", &co2, "2020-07-13 22:43:23|1e400", "not_finite"),
        mqtt("an empty payload", &co2, "", "missing_separator"),
        mqtt("10 MiB", &co2, vec![b'7'; 10 * 1024 * 1024], "oversized"),
        mqtt("invalid UTF-8", &co2, &b"\xff\xfe\xfd|1"[..], "not_utf8"),
        mqtt(
            "SQL text as the value",
            &co2,
            "2020-07-13 22:43:23|1); DROP TABLE co2_emissions; --",
            "bad_number",
        ),
        mqtt(
            "a device id of 65 characters",
            &format!("{prefix}/{}/emissions", "d".repeat(65)),
            "2020-07-13 22:43:23|1",
            "bad_device",
        ),
        mqtt(
            "a device id '..'",
            &format!("{prefix}/../emissions"),
            "2020-07-13 22:43:23|1",
            "bad_device",
        ),
        mqtt(
            "a non-ASCII device id",
            &format!("{prefix}/dévice/emissions"),
            "2020-07-13 22:43:23|1",
            "bad_device",
        ),
        Case {
            // The bridge subscribes to `<prefix>/+/emissions`, so the broker
            // never delivers it: nothing to dead-letter, and nothing breaks.
            what: "a device id with '/' (no subscription matches)".into(),
            via: Via::Mqtt(format!("{prefix}/a/b/emissions")),
            payload: b"2020-07-13 22:43:23|1".to_vec(),
            reason: None,
        },
        mqtt(
            "a JSON array",
            "hostile/dev-1/json",
            "[1,2,3]",
            "not_an_object",
        ),
        mqtt("JSON null", "hostile/dev-1/json", "null", "not_an_object"),
        // Refused at the 17th level (json.max_depth), before serde_json's
        // own limit of 128 (which said bad_json before issue 13).
        mqtt(
            "JSON nested 10,000 deep",
            "hostile/dev-1/json",
            nested(10_000),
            "too_deep",
        ),
        mqtt(
            "JSON arrays nested 10,000 deep",
            "hostile/dev-1/json",
            format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000)),
            "too_deep",
        ),
        mqtt(
            "a JSON array of 100,000 values",
            "hostile/dev-1/json",
            format!("{{\"a\":[{}]}}", vec!["1"; 100_000].join(",")),
            "too_many_fields",
        ),
        mqtt(
            "a JSON key of 65 characters",
            "hostile/dev-1/json",
            format!("{{\"{}\": 1}}", "k".repeat(65)),
            "bad_field_name",
        ),
        mqtt(
            "a JSON key given twice",
            "hostile/dev-1/json",
            r#"{"temp": 1, "temp": 2}"#,
            "duplicate_field",
        ),
        mqtt(
            "a JSON object of nulls only",
            "hostile/dev-1/json",
            r#"{"a": null, "b": {}, "c": []}"#,
            "no_storable_fields",
        ),
        mqtt(
            "an empty topic level named as a tag",
            "sensors/pi//dht11",
            r#"{"temp": 1}"#,
            "bad_tag",
        ),
        mqtt(
            "a JSON object as a bare value",
            "shellies/sh-1/relay/0/power",
            r#"{"power": 1}"#,
            "not_a_value",
        ),
        mqtt(
            "JSON with 65,000 keys",
            "hostile/dev-1/json",
            many_keys(65_000),
            "too_many_fields",
        ),
        mqtt(
            "a JSON number 1e400",
            "hostile/dev-1/json",
            r#"{"temp": 1e400}"#,
            "bad_json",
        ),
        mqtt(
            "a JSON NaN",
            "hostile/dev-1/json",
            r#"{"temp": NaN}"#,
            "bad_json",
        ),
        mqtt(
            "a JSON time of -99999999999 (auto: seconds)",
            "hostile/dev-1/json",
            r#"{"temp": 1, "time": -99999999999}"#,
            "time_out_of_range",
        ),
        mqtt(
            "a JSON time of 1e18 seconds",
            "hostile/dev-1/seconds",
            r#"{"temp": 1, "time": 1e18}"#,
            "time_out_of_range",
        ),
        mqtt(
            "a JSON time of -1e18 seconds",
            "hostile/dev-1/seconds",
            r#"{"temp": 1, "time": -1e18}"#,
            "time_out_of_range",
        ),
        mqtt(
            "a JSON time of 1e18 ms",
            "hostile/dev-1/millis",
            r#"{"temp": 1, "time": 1e18}"#,
            "time_out_of_range",
        ),
        mqtt(
            "a JSON time of -1e18 ms",
            "hostile/dev-1/millis",
            r#"{"temp": 1, "time": -1e18}"#,
            "time_out_of_range",
        ),
        mqtt(
            "a JSON time of 3e15 ms (year 97,000)",
            "hostile/dev-1/millis",
            r#"{"temp": 1, "time": 3000000000000000}"#,
            "time_out_of_range",
        ),
        mqtt(
            "a JSON datetime in the year 999",
            "hostile/dev-1/json",
            r#"{"temp": 1, "time": "0999-01-01 00:00:00"}"#,
            "time_out_of_range",
        ),
        mqtt(
            "base64 that is not an image",
            "camera/snapshot",
            format!(r#"{{"m_id": "cam", "photo": "{}"}}"#, b64(b"hello world")),
            "not_an_image",
        ),
        mqtt(
            "base64 that is not base64",
            "camera/snapshot",
            r#"{"m_id": "cam", "photo": "***"}"#,
            "bad_base64",
        ),
        mqtt(
            "an image stamped in the year -1200",
            "camera/snapshot",
            format!(
                r#"{{"m_id": "cam", "datetime": -99999999999, "photo": "{}"}}"#,
                b64(&jpeg)
            ),
            "time_out_of_range",
        ),
        mqtt(
            "raw bytes that are not an image",
            "camera/cam/snapshot",
            vec![0u8; 4096],
            "not_an_image",
        ),
        mqtt(
            "a bin level that is a word",
            "bins/level",
            "lots bin-7 2020-07-13 22:43:23",
            "bad_number",
        ),
        mqtt(
            "a bin level in the year 999",
            "bins/level",
            "1 bin-7 0999-01-01 00:00:00",
            "time_out_of_range",
        ),
        mqtt(
            "a bin level with non-ASCII in its offset",
            "bins/level",
            "1 bin-7 2020-07-13 22:43:23+1é1",
            "bad_datetime",
        ),
        http(
            "HTTP: JSON nested 10,000 deep",
            "hostile_json",
            nested(10_000),
            400,
            Some("too_deep"),
        ),
        http(
            "HTTP: invalid UTF-8",
            "hostile_json",
            &b"\xff\xfe{}"[..],
            400,
            Some("bad_json"),
        ),
        http(
            "HTTP: a JSON time of 1e300",
            "hostile_json",
            r#"{"temp": 1, "time": 1e300}"#,
            400,
            Some("time_out_of_range"),
        ),
        http(
            "HTTP: 65,000 keys",
            "hostile_json",
            many_keys(65_000),
            400,
            Some("too_many_fields"),
        ),
        http(
            "HTTP: not an image",
            "camera",
            "GIF? no, text",
            400,
            Some("not_an_image"),
        ),
        http(
            "HTTP: an image stamped in the year 10000",
            "camera",
            format!(
                r#"{{"datetime": "10000-01-01 00:00:00", "photo": "{}"}}"#,
                b64(&jpeg)
            ),
            400,
            Some("time_out_of_range"),
        ),
        http(
            "HTTP: 10 MiB to the camera route",
            "camera",
            vec![0xFF; 10 * 1024 * 1024],
            413,
            None,
        ),
    ];
    cases.push(Case {
        what: "-0 (a valid value)".into(),
        via: Via::Mqtt(co2),
        payload: b"2020-07-13 22:43:24|-0".to_vec(),
        reason: None,
    });
    cases
}

/// Every accepted datetime form with a multi-byte character replacing, and
/// inserted before, each of its characters.
fn every_position() -> Vec<String> {
    let mut out = Vec::new();
    for form in [
        "2020-07-13 22:43:23",
        "2020-7-3 2:4:5",
        "2020-07-13T22:43:23.123",
        "2020-07-13T22:43:23Z",
        "2020-07-13T22:43:23+02:00",
        "2020-07-13T22:43:23-0530",
        "2020-07-13T22:43:23+02",
    ] {
        for (i, _) in form.char_indices() {
            for (n, odd) in ["é", "🦀"].iter().enumerate() {
                let mut text = form.to_owned();
                if n == 0 {
                    text.replace_range(i..i + 1, odd);
                } else {
                    text.insert_str(i, odd);
                }
                out.push(format!("{text}|400"));
            }
        }
    }
    out
}

struct Rig {
    db: Database,
    broker: Broker,
    env: Vec<(String, String)>,
    prefix: String,
    _dir: tempfile::TempDir,
}

async fn rig(name: &str, faults: Option<&str>) -> Rig {
    let db = Database::create(name).await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique(name);
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
    env.push((
        "CO2_BRIDGE_CONFIG".into(),
        config(dir.path()).display().to_string(),
    ));
    env.push(device_listener());
    env.push((
        "CO2_BRIDGE__STATE__DIR".into(),
        dir.path().join("state").display().to_string(),
    ));
    if let Some(faults) = faults {
        env.push(("CO2_BRIDGE_FAULTS".into(), faults.to_owned()));
    }
    Rig {
        db,
        broker,
        env,
        prefix,
        _dir: dir,
    }
}

async fn last_dead_letter(db: &Database) -> u64 {
    sqlx::query_scalar::<_, Option<u64>>("SELECT MAX(id) FROM rejected_messages")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .unwrap_or(0)
}

/// (reason, topic, payload_bytes) of every dead letter after `after`.
async fn dead_letters_since(db: &Database, after: u64) -> Vec<(String, String, u32)> {
    sqlx::query_as(
        "SELECT reason, topic, payload_bytes FROM rejected_messages WHERE id > ? ORDER BY id",
    )
    .bind(after)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// A good reading of device `good`, distinct per call.
fn good(n: usize) -> (DateTime<Utc>, String) {
    let t =
        Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(n as i64);
    (t, payload(t, 400.0 + n as f64))
}

async fn stored_at(db: &Database, device: &str, t: DateTime<Utc>) -> bool {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM co2_emissions WHERE device = ? AND date_time = ?")
            .bind(device)
            .bind(t.naive_utc())
            .fetch_one(db.pool())
            .await
            .unwrap_or(0);
    n == 1
}

/// Publishes good reading `n` and waits until it is a row.
async fn a_good_reading_lands(rig: &Rig, publisher: &Publisher, n: usize) -> bool {
    let (t, body) = good(n);
    publisher
        .publish(&format!("{}/good/emissions", rig.prefix), body)
        .await
        .unwrap();
    wait_until(LANDS_WITHIN, || stored_at(&rig.db, "good", t)).await
}

/// Sends every case; after each, checks the good reading, liveness,
/// readiness and the dead letter.
async fn run_suite(rig: &Rig, bridge: &mut BridgeProcess, publisher: &Publisher) {
    let mut n = 0;
    for case in cases(&rig.prefix) {
        let before = last_dead_letter(&rig.db).await;
        match &case.via {
            Via::Mqtt(topic) => publisher
                .publish(topic, case.payload.clone())
                .await
                .unwrap(),
            Via::Http(route, status) => {
                let auth = format!("Bearer {TOKEN}");
                let (got, body) = http_request(
                    bridge.device.expect("the device listener is on"),
                    "POST",
                    &format!("/ingest/{route}"),
                    &[("Authorization", &auth)],
                    &case.payload,
                )
                .await
                .unwrap();
                assert_eq!(
                    got,
                    *status,
                    "{}: {}",
                    case.what,
                    String::from_utf8_lossy(&body)
                );
                if let Some(reason) = case.reason {
                    assert_eq!(
                        String::from_utf8_lossy(&body),
                        format!("rejected: {reason}\n"),
                        "{}",
                        case.what
                    );
                }
            }
        }
        n += 1;
        assert!(
            a_good_reading_lands(rig, publisher, n).await,
            "after {}: a good reading was not stored within {LANDS_WITHIN:?}; log: {}",
            case.what,
            bridge.log_text()
        );
        assert!(
            bridge.process.is_running(),
            "after {}: the bridge exited",
            case.what
        );
        let (status, body) = http_get(bridge.http, "/readyz").await.unwrap();
        assert_eq!(status, 200, "after {}: {body}", case.what);
        let letters = dead_letters_since(&rig.db, before).await;
        match (case.reason, &case.via) {
            (Some(reason), _) => {
                assert_eq!(letters.len(), 1, "after {}: {letters:?}", case.what);
                assert_eq!(letters[0].0, reason, "{}", case.what);
                assert_eq!(
                    letters[0].2 as usize,
                    case.payload.len(),
                    "{}: payload_bytes",
                    case.what
                );
                if let Via::Mqtt(topic) = &case.via {
                    let kept: String = topic.chars().take(255).collect();
                    assert_eq!(letters[0].1, kept, "{}: topic", case.what);
                }
            }
            (None, Via::Mqtt(_)) => assert!(letters.is_empty(), "{}: {letters:?}", case.what),
            // Refused before it was read (413): nothing to store.
            (None, Via::Http(..)) => assert!(letters.is_empty(), "{}: {letters:?}", case.what),
        }
    }

    // Non-ASCII at every position of every datetime form, in one burst.
    let before = last_dead_letter(&rig.db).await;
    let forms = every_position();
    let topic = format!("{}/pi-2/emissions", rig.prefix);
    for payload in &forms {
        publisher.publish(&topic, payload.as_bytes()).await.unwrap();
    }
    n += 1;
    assert!(
        a_good_reading_lands(rig, publisher, n).await,
        "{}",
        bridge.log_text()
    );
    let letters = dead_letters_since(&rig.db, before).await;
    assert_eq!(letters.len(), forms.len());
    assert!(letters.iter().all(|l| l.0 == "bad_datetime"), "{letters:?}");
    assert_eq!(http_get(bridge.http, "/readyz").await.unwrap().0, 200);

    // Only the valid -0 and the good readings are rows.
    let rows = rig.db.count("co2_emissions").await.unwrap();
    assert_eq!(rows, n as i64 + 1, "rows besides the good readings and -0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hostile_message_stops_the_bridge_or_stalls_it() {
    let rig = rig("hostile", None).await;
    let mut bridge = spawn_binary(&rig.env, "bridge-hostile");
    bridge.wait_ready().await;
    let publisher = Publisher::connect(rig.broker.port(), &unique("hostile-pub"));
    run_suite(&rig, &mut bridge, &publisher).await;
    let status = bridge
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(status.success(), "{status}: {}", bridge.log_text());
    assert!(
        !bridge.log_text().contains("Panic"),
        "{}",
        bridge.log_text()
    );
}

/// Waits until the process exits; returns its status and whether `/readyz`
/// was seen answering 503 on the way.
async fn exits_after_503(bridge: &mut BridgeProcess) -> (std::process::ExitStatus, Option<String>) {
    let mut seen = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = bridge.process.try_status() {
            return (status, seen);
        }
        if let Ok((503, body)) = http_get(bridge.http, "/readyz").await {
            seen.get_or_insert(body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {}",
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pipeline_turns_unready_exits_and_does_not_crash_forever() {
    let rig = rig(
        "faulty",
        Some("decode-panic=DECODE-BOOM,commit-panic=COMMIT-BOOM"),
    )
    .await;
    let mut bridge = spawn_binary(&rig.env, "bridge-faulty");
    bridge.wait_ready().await;
    let publisher = Publisher::connect(rig.broker.port(), &unique("faulty-pub"));

    // The armed hooks change nothing for other messages: the whole suite passes.
    run_suite(&rig, &mut bridge, &publisher).await;

    // A decoder that panics costs one dead letter; the bridge stays ready.
    let before = last_dead_letter(&rig.db).await;
    publisher
        .publish(
            &format!("{}/pi-1/emissions", rig.prefix),
            "2020-07-13 22:43:23|DECODE-BOOM",
        )
        .await
        .unwrap();
    assert!(a_good_reading_lands(&rig, &publisher, 10_000).await);
    let letters = dead_letters_since(&rig.db, before).await;
    assert_eq!(
        letters.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["decoder_panic"]
    );
    assert_eq!(http_get(bridge.http, "/readyz").await.unwrap().0, 200);

    // The commit task panics on a batch holding the marker: 503 naming it, exit 1.
    let marker = r#"{"temp": 21.5, "note": "COMMIT-BOOM", "time": "2026-02-02T00:00:00Z"}"#;
    let json_topic = "hostile/dev-1/json";
    for i in 0..5 {
        let (_, body) = good(20_000 + i);
        publisher
            .publish(&format!("{}/good/emissions", rig.prefix), body)
            .await
            .unwrap();
    }
    publisher.publish(json_topic, marker).await.unwrap();
    for i in 5..10 {
        let (_, body) = good(20_000 + i);
        publisher
            .publish(&format!("{}/good/emissions", rig.prefix), body)
            .await
            .unwrap();
    }
    let (status, seen) = exits_after_503(&mut bridge).await;
    assert!(!status.success(), "exit status {status}");
    let seen = seen.expect("/readyz never answered 503 before the exit");
    assert!(
        seen.contains("\"commit\" panicked: injected fault: commit-panic"),
        "{seen}"
    );

    // Restarted: the messages of the crashed batch are written one at a time;
    // the marker crashes it once more, alone.
    let log_first = bridge.log_text();
    let mut bridge = spawn_binary(&rig.env, "bridge-faulty-2");
    let (status, _) = exits_after_503(&mut bridge).await;
    assert!(
        !status.success(),
        "second run: {status}; {}",
        bridge.log_text()
    );
    assert!(
        bridge.log_text().contains("in a batch of its own"),
        "{}",
        bridge.log_text()
    );

    // Third start: the marker is dead-lettered unhandled and everything else flows.
    let before = last_dead_letter(&rig.db).await;
    let bridge = spawn_binary(&rig.env, "bridge-faulty-3");
    bridge.wait_ready().await;
    assert!(
        a_good_reading_lands(&rig, &publisher, 30_000).await,
        "{}",
        bridge.log_text()
    );
    let letters = dead_letters_since(&rig.db, before).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].0.as_str(), letters[0].1.as_str()),
        ("crashed_bridge", json_topic)
    );
    for i in 0..10 {
        let (t, _) = good(20_000 + i);
        assert!(
            stored_at(&rig.db, "good", t).await,
            "good reading {i} of the crashed burst; first run: {log_first}"
        );
    }
    let marker_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM readings WHERE device = 'dev-1'")
            .fetch_one(rig.db.pool())
            .await
            .unwrap();
    assert_eq!(
        marker_rows, 0,
        "the poison message must not be stored as rows"
    );
    assert_eq!(http_get(bridge.http, "/readyz").await.unwrap().0, 200);
}
