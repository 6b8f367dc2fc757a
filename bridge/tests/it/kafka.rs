//! The Kafka source against a real Kafka-protocol broker (a private in-memory
//! tansu per test): records reach the CO2 route with the device from their
//! key, offsets are committed only once stored, a poison record is
//! dead-lettered with its topic, partition and offset, a SIGKILL or a sink
//! outage loses nothing, bridges in one group split the partitions and
//! survive losing a member, an unreachable broker fails `/readyz` until it
//! is back, and the DHT11 and camera producers' JSON goes through the
//! shipped routes unchanged; `auto_offset_reset` decides where a new group
//! starts. Each test takes 15-40 s, mostly the group joins
//! (tansu answers a join after about half the session timeout, 6 s here).

use std::path::PathBuf;
use std::time::Duration;

use co2_testkit::{http_get, metric_value, unique, wait_until, Database, KafkaBroker, TcpProxy};
use tokio::task::JoinHandle;

use crate::support::*;

/// A bridge config reading `topic` in `group` into the CO2 route, MQTT off.
fn write_config(kafka: &KafkaBroker, topic: &str, group: &str) -> PathBuf {
    write_config_with(kafka, topic, group, "")
}

/// As [`write_config`], with `source` (TOML) appended to the Kafka source.
pub(crate) fn write_config_with(
    kafka: &KafkaBroker,
    topic: &str,
    group: &str,
    source: &str,
) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("kafka-bridge")));
    let config = format!(
        r#"[mqtt]
enabled = false
topics = ["{topic}"]

[[sources]]
kind = "kafka"
bootstrap_servers = ["{bootstrap}"]
topics = ["{topic}"]
group_id = "{group}"
device_from_key = true
session_timeout_ms = 6000
{source}"#,
        bootstrap = kafka.bootstrap()
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// The environment of a Kafka-fed bridge writing to `db_url`.
pub(crate) fn kafka_env(
    db_url: &str,
    config: &std::path::Path,
    name: &str,
) -> Vec<(String, String)> {
    [
        ("CO2_BRIDGE_CONFIG", config.display().to_string()),
        ("CO2_BRIDGE__DATABASE__URL", db_url.to_owned()),
        (
            "CO2_BRIDGE__HTTP__LISTEN",
            format!("127.0.0.1:{}", http_port()),
        ),
        ("CO2_BRIDGE__DATABASE__RETRY_MAX_MS", "1000".to_owned()),
        // The bridge keeps its state (the crash quarantine) under the client id.
        ("CO2_BRIDGE__MQTT__CLIENT_ID", unique(name)),
        ("CO2_BRIDGE__WIRE__MAX_FUTURE_S", "300".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A broker with a fresh topic of `partitions` partitions and a group name.
async fn kafka_with_topic(name: &str, partitions: u32) -> (KafkaBroker, String, String) {
    let kafka = KafkaBroker::start().await.unwrap();
    let topic = unique(name);
    kafka.create_topic(&topic, partitions).await.unwrap();
    (kafka, topic, unique(&format!("{name}-group")))
}

/// Produces readings `0..per_device` of `devices` devices, device `d` keyed
/// `devd` on partition `d % partitions`, a round at a time with `pause`.
pub(crate) fn spawn_kafka_stream(
    kafka: &KafkaBroker,
    topic: &str,
    partitions: i32,
    devices: usize,
    per_device: usize,
    pause: Duration,
) -> JoinHandle<()> {
    let producer = kafka.producer().unwrap();
    let topic = topic.to_owned();
    tokio::spawn(async move {
        for i in 0..per_device {
            let round = (0..devices).map(|d| {
                let (device, time, value) = reading(d, i);
                let payload = payload(time, value);
                let partition = (d as i32) % partitions;
                let topic = topic.clone();
                let producer = &producer;
                async move {
                    producer
                        .send(&topic, Some(partition), Some(&device), payload.as_bytes())
                        .await
                        .unwrap();
                }
            });
            futures_util::future::join_all(round).await;
            tokio::time::sleep(pause).await;
        }
    })
}

/// Produces readings `range` of device 0 (key `dev0`) to partition 0.
async fn produce_range(kafka: &KafkaBroker, topic: &str, range: std::ops::Range<usize>) {
    let producer = kafka.producer().unwrap();
    for i in range {
        let (device, time, value) = reading(0, i);
        producer
            .send(
                topic,
                Some(0),
                Some(&device),
                payload(time, value).as_bytes(),
            )
            .await
            .unwrap();
    }
}

async fn metric(bridge: &BridgeProcess, name: &str) -> f64 {
    match http_get(bridge.http, "/metrics").await {
        Ok((200, scrape)) => scrape
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
        _ => 0.0,
    }
}

/// Waits until `group` has committed the end of every partition of `topic`.
pub(crate) async fn assert_committed_to_the_end(
    kafka: &KafkaBroker,
    group: &str,
    topic: &str,
    partitions: i32,
) {
    let end = kafka.end_offsets(topic, partitions).unwrap();
    assert_committed(kafka, group, topic, &end).await;
}

/// Waits until `group` has committed `offsets` (one per partition) of `topic`.
pub(crate) async fn assert_committed(
    kafka: &KafkaBroker,
    group: &str,
    topic: &str,
    offsets: &[i64],
) {
    let partitions = i32::try_from(offsets.len()).unwrap();
    let caught_up = wait_until(Duration::from_secs(20), || async {
        kafka
            .committed(group, topic, partitions)
            .unwrap_or_default()
            == offsets
    })
    .await;
    assert!(
        caught_up,
        "committed {:?}, expected {offsets:?}",
        kafka
            .committed(group, topic, partitions)
            .unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_record_is_dead_lettered_with_its_offset_and_the_partition_moves_on() {
    let db = Database::create("kpoison").await.unwrap();
    let (kafka, topic, group) = kafka_with_topic("kpoison", 1).await;
    let producer = kafka.producer().unwrap();
    let (_, t0, v0) = reading(0, 0);
    let (_, t1, v1) = reading(0, 1);
    producer
        .send(&topic, Some(0), Some("dev0"), payload(t0, v0).as_bytes())
        .await
        .unwrap();
    let (_, poison) = producer
        .send(&topic, Some(0), Some("dev0"), b"not a reading")
        .await
        .unwrap();
    producer
        .send(
            &topic,
            Some(0),
            Some("bad device!"),
            payload(t1, v1).as_bytes(),
        )
        .await
        .unwrap();
    producer
        .send(&topic, Some(0), Some("dev0"), payload(t1, v1).as_bytes())
        .await
        .unwrap();

    let config = write_config(&kafka, &topic, &group);
    let bridge = spawn_binary(&kafka_env(&db.url(), &config, "kpoison"), "kpoison-bridge");
    bridge.wait_ready().await;
    assert_eq!(
        wait_for_rows(&db, 2, Duration::from_secs(30)).await,
        2,
        "{}",
        bridge.log_text()
    );
    let letters: Vec<(String, String)> =
        sqlx::query_as("SELECT topic, reason FROM rejected_messages ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].0, format!("kafka:{topic}/0@{poison}"));
    assert_eq!(
        letters[1],
        (
            format!("kafka:{topic}/0@{}", poison + 1),
            "bad_device".to_owned()
        )
    );
    // Dead letters are durable too: the commit passes them.
    assert_committed_to_the_end(&kafka, &group, &topic, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bridge_sigkilled_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let db = Database::create("kkill").await.unwrap();
    let (kafka, topic, group) = kafka_with_topic("kkill", 3).await;
    let config = write_config(&kafka, &topic, &group);
    let env = kafka_env(&db.url(), &config, "kkill");
    let mut bridge = spawn_binary(&env, "kkill-bridge");
    bridge.wait_ready().await;

    let (devices, per_device) = (3, 2000);
    let total = (devices * per_device) as i64;
    let stream = spawn_kafka_stream(
        &kafka,
        &topic,
        3,
        devices,
        per_device,
        Duration::from_millis(2),
    );
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 1500
        })
        .await,
        "{}",
        bridge.log_text()
    );
    bridge.process.kill().await.unwrap();
    let at_kill = db.count("co2_emissions").await.unwrap();
    assert!(
        at_kill < total,
        "stream ended before the kill; make it longer"
    );
    stream.await.unwrap();

    // Restarted in the same group, it resumes from the last commit: what it had
    // stored past it is read again (a no-op), nothing is skipped.
    let restarted = spawn_binary(&env, "kkill-bridge-restarted");
    restarted.wait_ready().await;
    assert_restart_completes(&db, &restarted, devices, per_device).await;
    assert_committed_to_the_end(&kafka, &group, &topic, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_down_ten_seconds_pauses_fetching_loses_nothing_and_keeps_the_group() {
    let db = Database::create("kcut").await.unwrap();
    let proxy = TcpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], 3306)))
        .await
        .unwrap();
    let (kafka, topic, group) = kafka_with_topic("kcut", 3).await;
    let config = write_config(&kafka, &topic, &group);
    let mut env = kafka_env(&db.url_via(proxy.port()), &config, "kcut");
    // A small window, so that the outage fills it and fetching must pause.
    env.push(("CO2_BRIDGE__MQTT__RECEIVE_MAXIMUM".into(), "100".into()));
    env.push(("CO2_BRIDGE__BATCH__MAX_ROWS".into(), "100".into()));
    let bridge = spawn_binary(&env, "kcut-bridge");
    bridge.wait_ready().await;

    let (devices, per_device) = (3, 1000);
    let stream = spawn_kafka_stream(
        &kafka,
        &topic,
        3,
        devices,
        per_device,
        Duration::from_millis(10),
    );
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 300
        })
        .await,
        "{}",
        bridge.log_text()
    );
    proxy.cut();
    let paused = wait_until(Duration::from_secs(8), || async {
        metric(&bridge, "co2_bridge_kafka_paused").await == 1.0
    })
    .await;
    assert!(paused, "fetching did not pause while the sink was down");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    assert_eq!(metric_value(&scrape, "co2_bridge_db_up"), Some(0.0));
    assert_eq!(
        metric_value(&scrape, "co2_bridge_kafka_partitions_assigned"),
        Some(3.0),
        "the bridge lost its partitions during the outage"
    );
    proxy.restore().await.unwrap();

    stream.await.unwrap();
    let total = (devices * per_device) as i64;
    assert_eq!(
        wait_for_rows(&db, total, Duration::from_secs(60)).await,
        total,
        "{}",
        bridge.log_text()
    );
    assert_exactly_once(&db, devices, per_device).await;
    assert_committed_to_the_end(&kafka, &group, &topic, 3).await;
    let log = bridge.log_text();
    assert_eq!(
        log.matches("Partitions assigned").count(),
        1,
        "a rebalance happened during the outage:\n{log}"
    );
    assert!(!log.contains("Partitions revoked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kafka_bridges_split_the_partitions_and_a_sigkilled_one_loses_nothing() {
    let db = Database::create("kgroup").await.unwrap();
    let (kafka, topic, group) = kafka_with_topic("kgroup", 6).await;
    let config = write_config(&kafka, &topic, &group);
    let mut bridges: Vec<BridgeProcess> = (0..3)
        .map(|i| {
            let env = kafka_env(&db.url(), &config, &format!("kgroup{i}"));
            spawn_binary(&env, &format!("kgroup-bridge-{i}"))
        })
        .collect();
    for b in &bridges {
        b.wait_ready().await;
    }
    // Until every member holds partitions, records would go to whoever joined first.
    for (i, b) in bridges.iter().enumerate() {
        let holds = wait_until(Duration::from_secs(40), || async {
            metric(b, "co2_bridge_kafka_partitions_assigned").await >= 1.0
        })
        .await;
        assert!(holds, "bridge {i} got no partitions:\n{}", b.log_text());
    }

    let (devices, per_device) = (6, 1500);
    let total = (devices * per_device) as i64;
    let stream = spawn_kafka_stream(
        &kafka,
        &topic,
        6,
        devices,
        per_device,
        Duration::from_millis(3),
    );
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 1500
        })
        .await
    );
    for (i, b) in bridges.iter().enumerate() {
        assert!(
            metric(b, "co2_bridge_messages_received_total").await > 0.0,
            "bridge {i} received nothing:\n{}",
            b.log_text()
        );
    }
    bridges[1].process.kill().await.unwrap();
    let at_kill = db.count("co2_emissions").await.unwrap();
    assert!(
        at_kill < total,
        "stream ended before the kill; make it longer"
    );
    stream.await.unwrap();

    // No restart: the group hands the dead member's partitions to the others
    // once its session times out, and they resume from its last commits.
    let rows = wait_for_rows(&db, total, Duration::from_secs(60)).await;
    assert_eq!(rows, total, "{}", bridges[0].log_text());
    assert_exactly_once(&db, devices, per_device).await;
    assert_committed_to_the_end(&kafka, &group, &topic, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_unreachable_fails_readyz_and_the_bridge_resumes_when_it_is_back() {
    let db = Database::create("kdown").await.unwrap();
    let (kafka, proxy) = KafkaBroker::start_behind_proxy().await.unwrap();
    let topic = unique("kdown");
    kafka.create_topic(&topic, 1).await.unwrap();
    let group = unique("kdown-group");
    let config = write_config(&kafka, &topic, &group);
    let bridge = spawn_binary(&kafka_env(&db.url(), &config, "kdown"), "kdown-bridge");
    bridge.wait_ready().await;
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    assert_eq!(
        metric_value(&scrape, "co2_bridge_kafka_connected"),
        Some(1.0)
    );
    // MQTT is off here: its gauge must not fire CO2BridgeMqttDisconnected.
    assert_eq!(
        metric_value(&scrape, "co2_bridge_mqtt_connected"),
        Some(1.0)
    );

    spawn_kafka_stream(&kafka, &topic, 1, 1, 100, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(wait_for_rows(&db, 100, Duration::from_secs(30)).await, 100);

    proxy.cut();
    let said = wait_until(Duration::from_secs(15), || async {
        matches!(
            http_get(bridge.http, "/readyz").await,
            Ok((503, body)) if body.contains("Kafka source sources.0: no broker reachable")
        )
    })
    .await;
    assert!(
        said,
        "/readyz: {:?}\n{}",
        http_get(bridge.http, "/readyz").await,
        bridge.log_text()
    );
    let status = http_get(bridge.http, "/status.json").await.unwrap().1;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["sources"][0]["name"], "sources.0");
    assert_eq!(status["sources"][0]["up"], false);
    assert!(
        status["sources"][0]["last_error"][1].is_string(),
        "{status:#}"
    );
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    assert_eq!(
        metric_value(&scrape, "co2_bridge_kafka_connected"),
        Some(0.0)
    );

    // Back: ready again by itself, and what was produced meanwhile lands.
    proxy.restore().await.unwrap();
    let back = wait_until(Duration::from_secs(30), || async {
        matches!(http_get(bridge.http, "/readyz").await, Ok((200, _)))
    })
    .await;
    assert!(back, "{}", bridge.log_text());
    produce_range(&kafka, &topic, 100..200).await;
    assert_eq!(
        wait_for_rows(&db, 200, Duration::from_secs(30)).await,
        200,
        "{}",
        bridge.log_text()
    );
    assert_exactly_once(&db, 1, 200).await;
    assert_committed_to_the_end(&kafka, &group, &topic, 1).await;
}

/// A group without a committed offset starts where `auto_offset_reset`
/// says: `latest` skips what the topic held before it joined and stores
/// what comes after; a second group with `earliest` then reads the topic
/// from the start (what the first stored counts as duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_latest_starts_at_the_end_and_earliest_at_the_start() {
    let db = Database::create("kreset").await.unwrap();
    let (kafka, topic, group) = kafka_with_topic("kreset", 1).await;
    produce_range(&kafka, &topic, 0..10).await;

    let config = write_config_with(&kafka, &topic, &group, "auto_offset_reset = \"latest\"\n");
    let mut latest = spawn_binary(&kafka_env(&db.url(), &config, "kreset"), "kreset-latest");
    latest.wait_ready().await;
    let assigned = wait_until(Duration::from_secs(30), || async {
        metric(&latest, "co2_bridge_kafka_partitions_assigned").await >= 1.0
    })
    .await;
    assert!(assigned, "{}", latest.log_text());
    // The start offset is looked up once fetching begins, just after the
    // assignment; records produced before that would count as "before".
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce_range(&kafka, &topic, 10..20).await;
    assert_eq!(
        wait_for_rows(&db, 10, Duration::from_secs(30)).await,
        10,
        "{}",
        latest.log_text()
    );
    assert_committed(&kafka, &group, &topic, &[20]).await;
    let (stored, rows) = stored_in(db.pool()).await;
    let after: std::collections::BTreeSet<_> = expected(1, 20)
        .difference(&expected(1, 10))
        .cloned()
        .collect();
    assert_eq!(
        (stored, rows),
        (after, 10),
        "only what came after it joined"
    );
    let status = latest
        .process
        .terminate(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(status.success(), "{status}: {}", latest.log_text());

    let other_group = unique("kreset-earliest");
    let config = write_config_with(
        &kafka,
        &topic,
        &other_group,
        "auto_offset_reset = \"earliest\"\n",
    );
    let earliest = spawn_binary(&kafka_env(&db.url(), &config, "kreset"), "kreset-earliest");
    earliest.wait_ready().await;
    assert_eq!(
        wait_for_rows(&db, 20, Duration::from_secs(30)).await,
        20,
        "{}",
        earliest.log_text()
    );
    assert_committed(&kafka, &other_group, &topic, &[20]).await;
    assert_exactly_once(&db, 1, 20).await;
}

/// The issue's DHT11 producer (string values, device in `m_id`) and camera
/// producer (a base64 image in `photo`), on their own topics, through the
/// shipped routes with only the camera route's topic list extended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dht11_and_camera_json_land_through_the_shipped_routes() {
    use base64::Engine;

    let db = Database::create("kjson").await.unwrap();
    let kafka = KafkaBroker::start().await.unwrap();
    kafka.create_topic("temp_test", 1).await.unwrap();
    kafka.create_topic("imgtest", 1).await.unwrap();
    let config = routes_config_with(&[], |example| {
        let edited = example.replace(
            r#"topics = ["camera/{device}/snapshot", "camera/snapshot"]"#,
            r#"topics = ["camera/{device}/snapshot", "camera/snapshot", "imgtest"]"#,
        );
        assert_ne!(edited, example, "the example's camera topics changed");
        format!(
            "{edited}\n[[sources]]\nkind = \"kafka\"\nbootstrap_servers = [\"{}\"]\n\
             topics = [\"temp_test\", \"imgtest\"]\ngroup_id = \"my-group\"\n\
             auto_offset_reset = \"earliest\"\nsession_timeout_ms = 6000\n",
            kafka.bootstrap()
        )
    });
    let mut env = kafka_env(&db.url(), &config, "kjson");
    env.push(("CO2_BRIDGE__MQTT__ENABLED".into(), "false".into()));
    // The shipped camera route also takes HTTP uploads, served there.
    env.push(device_listener());

    // Produced before the bridge joins: `earliest` reads them.
    let producer = kafka.producer().unwrap();
    let image = png(4, 3, [200, 10, 10]);
    let photo = base64::engine::general_purpose::STANDARD.encode(&image);
    producer
        .send(
            "temp_test",
            None,
            None,
            br#"{"m_id": "0", "datetime": "2024-05-01 10:00:00", "temp": "21.0"}"#,
        )
        .await
        .unwrap();
    producer
        .send(
            "imgtest",
            None,
            None,
            format!(r#"{{"m_id": "0", "datetime": "2024-05-01 10:00:05", "photo": "{photo}"}}"#)
                .as_bytes(),
        )
        .await
        .unwrap();

    let bridge = spawn_binary(&env, "kjson-bridge");
    bridge.wait_ready().await;
    let landed = wait_until(Duration::from_secs(30), || async {
        db.count("readings").await.unwrap_or(0) == 1 && db.count("images").await.unwrap_or(0) == 1
    })
    .await;
    assert!(landed, "{}", bridge.log_text());
    let reading: (String, String, String, String, f64) = sqlx::query_as(
        "SELECT CAST(device AS CHAR), topic, DATE_FORMAT(`time`, '%Y-%m-%d %H:%i:%s'),
                CAST(field AS CHAR), `value` FROM readings",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        reading,
        (
            "0".into(),
            "temp_test".into(),
            "2024-05-01 10:00:00".into(),
            "temp".into(),
            21.0
        )
    );
    let stored: (String, String, String, Vec<u8>) = sqlx::query_as(
        "SELECT CAST(device AS CHAR), DATE_FORMAT(`time`, '%Y-%m-%d %H:%i:%s'), CAST(content_type AS CHAR), data FROM images",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "0".into(),
            "2024-05-01 10:00:05".into(),
            "image/png".into(),
            image
        )
    );
    assert_committed_to_the_end(&kafka, "my-group", "temp_test", 1).await;
    assert_committed_to_the_end(&kafka, "my-group", "imgtest", 1).await;
}
