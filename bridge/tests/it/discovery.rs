//! Home Assistant discovery through a test-owned Mosquitto into MariaDB:
//! the announcements Zigbee2MQTT and Tasmota publish (retained; which are
//! recorded byte for byte and which are built is said, with sources, in
//! tests/fixtures/discovery.rs), then their state messages,
//! stored with no route written; announcements changed and withdrawn at run
//! time; and hostile announcements refused with a reason while the CO2
//! route keeps landing and `/readyz` stays truthful.

use std::time::Duration;

use co2_testkit::{http_get, metric_value, unique, wait_until, Broker, Database, Publisher};

use crate::support::*;

#[path = "../fixtures/discovery.rs"]
#[allow(dead_code)]
mod fixtures;
use fixtures::*;

const WAIT: Duration = Duration::from_secs(30);

/// Device, topic, field, value, unit, device class (from the row's tags).
type Row = (
    String,
    String,
    String,
    Option<f64>,
    Option<String>,
    Option<String>,
);

async fn readings(db: &Database) -> Vec<Row> {
    sqlx::query_as(
        "SELECT CAST(device AS CHAR), topic, CAST(field AS CHAR), `value`,
                CAST(JSON_VALUE(tags, CONCAT('$.\"', field, '.unit\"')) AS CHAR),
                CAST(JSON_VALUE(tags, CONCAT('$.\"', field, '.device_class\"')) AS CHAR)
           FROM readings ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

fn row(
    device: &str,
    topic: &str,
    field: &str,
    value: f64,
    unit: Option<&str>,
    class: Option<&str>,
) -> Row {
    (
        device.into(),
        topic.into(),
        field.into(),
        Some(value),
        unit.map(Into::into),
        class.map(Into::into),
    )
}

/// Waits until the bridge's gauges say `sensors` are held and `topics`
/// state topics are subscribed.
async fn wait_discovered(bridge: &InProcess, sensors: f64, topics: f64) {
    let ok = wait_until(WAIT, || async {
        let scrape = bridge.scrape().await;
        metric_value(&scrape, "co2_bridge_discovery_sensors") == Some(sensors)
            && metric_value(&scrape, "co2_bridge_discovery_state_topics") == Some(topics)
    })
    .await;
    let scrape = bridge.scrape().await;
    assert!(
        ok,
        "wanted {sensors} sensors on {topics} topics; have {:?} on {:?}",
        metric_value(&scrape, "co2_bridge_discovery_sensors"),
        metric_value(&scrape, "co2_bridge_discovery_state_topics")
    );
}

async fn wait_rows(db: &Database, table: &str, n: i64) {
    let ok = wait_until(WAIT, || async { db.count(table).await.unwrap_or(0) >= n }).await;
    assert!(
        ok,
        "{table}: wanted {n} rows, have {:?}",
        db.count(table).await
    );
}

fn discovery_env(db: &Database, broker: &Broker, name: &str) -> Vec<(String, String)> {
    let mut env = bridge_env(&db.url(), broker.port(), &unique(name), http_port());
    env.push(("CO2_BRIDGE__DISCOVERY__HOMEASSISTANT".into(), "true".into()));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee2mqtt_and_tasmota_sensors_are_stored_and_follow_their_announcements() {
    let db = Database::create("discovery").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let device = Publisher::connect(broker.port(), &unique("announcer"));
    let announcements = [
        Z2M_AIR_CO2,
        Z2M_AIR_TEMPERATURE,
        Z2M_AIR_HUMIDITY,
        Z2M_WEATHER_TEMPERATURE,
        Z2M_WEATHER_HUMIDITY,
        TASMOTA_MHZ19B_CO2,
        TASMOTA_MHZ19B_TEMPERATURE,
        TASMOTA_PM25,
        TASMOTA_PM10,
    ];
    // Retained before the bridge starts, as they are in real life.
    for (topic, payload) in announcements {
        device.publish_retained(topic, payload).await.unwrap();
    }
    assert!(device.wait_acked(9, WAIT).await);
    let bridge = InProcess::start(discovery_env(&db, &broker, "discovery")).await;
    wait_discovered(&bridge, 9.0, 4.0).await;

    for (topic, payload) in [
        Z2M_AIR_STATE,
        Z2M_WEATHER_STATE,
        TASMOTA_MHZ19B_STATE,
        TASMOTA_PM_STATE,
    ] {
        device.publish(topic, payload).await.unwrap();
    }
    wait_rows(&db, "readings", 9).await;
    let (air, weather) = (
        "zigbee2mqtt_0x0c4314fffe84e0a4",
        "zigbee2mqtt_0x0017880104e45522",
    );
    let (air_t, weather_t) = (
        "zigbee2mqtt/0x0c4314fffe84e0a4",
        "zigbee2mqtt/weather_sensor",
    );
    let (mhz_t, pm_t) = ("tele/sonoff-71C254/SENSOR", "dom_PM2_2F8183/tele/SENSOR");
    assert_eq!(
        readings(&db).await,
        [
            row(
                air,
                air_t,
                "co2",
                359.0,
                Some("ppm"),
                Some("carbon_dioxide")
            ),
            row(
                air,
                air_t,
                "temperature",
                21.1,
                Some("°C"),
                Some("temperature")
            ),
            row(air, air_t, "humidity", 62.3, Some("%"), Some("humidity")),
            row(
                weather,
                weather_t,
                "temperature",
                21.4,
                Some("°C"),
                Some("temperature")
            ),
            row(
                weather,
                weather_t,
                "humidity",
                40.5,
                Some("%"),
                Some("humidity")
            ),
            row("71C254", mhz_t, "MHZ19B_CarbonDioxide", 836.0, None, None),
            row(
                "71C254",
                mhz_t,
                "MHZ19B_Temperature",
                21.0,
                Some("°C"),
                Some("temperature")
            ),
            row("2F8183", pm_t, "SDS0X1_PM2.5", 7.3, None, None),
            row("2F8183", pm_t, "SDS0X1_PM10", 10.1, None, None),
        ]
    );

    // Changed at run time: a new template, a new state topic; one withdrawn.
    let rounded = Z2M_WEATHER_TEMPERATURE.1.replace(
        r#"{{ value_json[\"temperature\"] }}"#,
        r#"{{ value_json.temperature | round(0) }}"#,
    );
    assert_ne!(rounded, Z2M_WEATHER_TEMPERATURE.1);
    let moved = TASMOTA_MHZ19B_CO2
        .1
        .replace(r#""stat_t":"~SENSOR""#, r#""stat_t":"~SENSOR2""#);
    assert_ne!(moved, TASMOTA_MHZ19B_CO2.1);
    device
        .publish_retained(Z2M_WEATHER_TEMPERATURE.0, rounded)
        .await
        .unwrap();
    device
        .publish_retained(TASMOTA_MHZ19B_CO2.0, moved)
        .await
        .unwrap();
    device
        .publish_retained(Z2M_WEATHER_HUMIDITY.0, "")
        .await
        .unwrap();
    wait_discovered(&bridge, 8.0, 5.0).await;
    device
        .publish(Z2M_WEATHER_STATE.0, Z2M_WEATHER_STATE.1)
        .await
        .unwrap();
    device
        .publish("tele/sonoff-71C254/SENSOR2", TASMOTA_MHZ19B_STATE.1)
        .await
        .unwrap();
    device.publish(mhz_t, TASMOTA_MHZ19B_STATE.1).await.unwrap();
    wait_rows(&db, "readings", 12).await;
    let after = readings(&db).await;
    assert_eq!(
        after[9..],
        [
            row(
                weather,
                weather_t,
                "temperature",
                21.0,
                Some("°C"),
                Some("temperature")
            ),
            row(
                "71C254",
                "tele/sonoff-71C254/SENSOR2",
                "MHZ19B_CarbonDioxide",
                836.0,
                None,
                None
            ),
            row(
                "71C254",
                mhz_t,
                "MHZ19B_Temperature",
                21.0,
                Some("°C"),
                Some("temperature")
            ),
        ]
    );
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);

    // The status page lists them.
    let (status, page) = http_get(bridge.http, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("Discovered sensors"), "{page}");
    assert!(page.contains("carbon_dioxide") && page.contains("zigbee2mqtt/0x0c4314fffe84e0a4"));
    bridge.stop().await;
    device.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_zigbee2mqtt_1_x_announcements_are_stored() {
    let db = Database::create("discovery_recorded").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let device = Publisher::connect(broker.port(), &unique("announcer"));
    for (topic, payload) in [Z2M_1_2_1_TEMPERATURE, Z2M_1_1_1_HUMIDITY] {
        device.publish_retained(topic, payload).await.unwrap();
    }
    assert!(device.wait_acked(2, WAIT).await);
    let bridge = InProcess::start(discovery_env(&db, &broker, "discrecorded")).await;
    wait_discovered(&bridge, 2.0, 2.0).await;

    let (temperature_t, humidity_t) = (
        "zigbee2mqtt/temperatures2xiaomi",
        "zigbee2mqtt/0x00158d0002c77517",
    );
    for topic in [temperature_t, humidity_t] {
        device
            .publish(topic, Z2M_WEATHER_RECORDED_STATE)
            .await
            .unwrap();
    }
    wait_rows(&db, "readings", 2).await;
    assert_eq!(
        readings(&db).await,
        [
            row(
                "zigbee2mqtt_0x00158d0002725756",
                temperature_t,
                "temperature",
                24.59,
                Some("°C"),
                Some("temperature")
            ),
            row(
                "zigbee2mqtt_0x00158d0002c77517",
                humidity_t,
                "humidity",
                36.56,
                Some("%"),
                Some("humidity")
            ),
        ]
    );
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);
    bridge.stop().await;
    device.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_announcements_are_refused_while_co2_readings_keep_landing() {
    const FLOOD: usize = 5_000;
    const MAX: usize = 100;
    let db = Database::create("discovery_hostile").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("dischostile");
    let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
    env.push(("CO2_BRIDGE__DISCOVERY__HOMEASSISTANT".into(), "true".into()));
    env.push(("CO2_BRIDGE__DISCOVERY__MAX_SENSORS".into(), MAX.to_string()));
    let bridge = InProcess::start(env).await;
    let attacker = Publisher::connect(broker.port(), &unique("attacker"));
    let pi = Publisher::connect(broker.port(), &unique("pi"));

    let looping = r#"{"stat_t":"loop/state","dev":{"ids":["evil"]},"val_tpl":"{% for i in range(1000000000) %}{{ i }}{% endfor %}"}"#;
    let hostile = [
        ("homeassistant/sensor/evil/loop/config", looping.to_owned()),
        (
            "homeassistant/sensor/evil/all/config",
            r##"{"stat_t":"#","dev":{"ids":["evil"]}}"##.to_owned(),
        ),
        (
            "homeassistant/sensor/evil/plus/config",
            r#"{"stat_t":"a/+/b","dev":{"ids":["evil"]}}"#.to_owned(),
        ),
        (
            "homeassistant/sensor/evil/big/config",
            format!(
                r#"{{"stat_t":"big","dev":{{"ids":["evil"]}},"pad":"{}"}}"#,
                "x".repeat(64 * 1024)
            ),
        ),
    ];
    for (topic, payload) in &hostile {
        attacker.publish(topic, payload.as_bytes()).await.unwrap();
    }
    // A publisher flooding announcements, while the Pi keeps sending CO2.
    let co2 = 200;
    for i in 0..FLOOD {
        let topic = format!("homeassistant/sensor/flood{i}/v/config");
        let payload = format!(r#"{{"stat_t":"flood/{i}","dev":{{"ids":["flood{i}"]}}}}"#);
        attacker.publish(&topic, payload).await.unwrap();
        if i % (FLOOD / co2) == 0 {
            let n = i / (FLOOD / co2);
            let reading = format!("2024-05-01 10:{:02}:{:02}|{}", n / 60, n % 60, 400 + n);
            pi.publish(&format!("{prefix}/pi-1/emissions"), reading)
                .await
                .unwrap();
        }
        if i % 1000 == 0 {
            let (status, _) = http_get(bridge.http, "/readyz").await.unwrap();
            assert_eq!(status, 200, "not ready during the flood");
        }
    }
    assert!(
        attacker
            .wait_acked((FLOOD + hostile.len()) as u64, WAIT)
            .await
    );
    assert!(pi.wait_acked(co2 as u64, WAIT).await);
    wait_rows(&db, "co2_emissions", co2 as i64).await;
    let refused = (FLOOD - (MAX - 1)) + 3;
    wait_rows(&db, "rejected_messages", refused as i64 + 1).await;
    wait_discovered(&bridge, MAX as f64, MAX as f64).await;
    // The looping template's state is a dead letter, never evaluated.
    attacker.publish("loop/state", "1").await.unwrap();
    wait_rows(&db, "rejected_messages", refused as i64 + 2).await;

    let reasons: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, COUNT(*) FROM rejected_messages GROUP BY reason ORDER BY reason",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        reasons,
        [
            ("bad_announcement".to_owned(), 3),
            ("too_many_sensors".to_owned(), (FLOOD - (MAX - 1)) as i64),
            ("unsupported_template".to_owned(), 2),
        ]
    );
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM rejected_messages WHERE topic = 'homeassistant/sensor/evil/all/config'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(detail.contains("wildcard"), "{detail}");
    assert_eq!(db.count("co2_emissions").await.unwrap(), co2 as i64);
    assert_eq!(db.count("readings").await.unwrap(), 0);
    let (status, _) = http_get(bridge.http, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    let scrape = bridge.scrape().await;
    assert_eq!(
        metric_value(
            &scrape,
            r#"co2_bridge_messages_rejected_total{reason="too_many_sensors",route="discovery"}"#
        ),
        Some((FLOOD - (MAX - 1)) as f64)
    );
    bridge.stop().await;
    attacker.disconnect().await;
    pi.disconnect().await;
}
