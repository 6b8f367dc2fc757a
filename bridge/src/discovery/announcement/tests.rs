use super::*;
use proptest::prelude::*;

/// The published announcements (each test uses some).
#[allow(dead_code)]
mod fixtures {
    include!("../../../tests/fixtures/discovery.rs");
}
use fixtures::*;

fn parse_at((topic, payload): (&str, &str)) -> Result<Announcement, Refusal> {
    let config = ConfigTopic::parse("homeassistant", topic).expect("an announcement topic");
    let component = config.stored_component().expect("a sensor");
    parse(&config, component, payload.as_bytes(), 16 * 1024)
}

#[test]
fn zigbee2mqtt_announcements_are_read_as_published() {
    let a = parse_at(Z2M_AIR_CO2).unwrap();
    assert_eq!(a.device, "zigbee2mqtt_0x0c4314fffe84e0a4");
    assert_eq!(a.field, "co2");
    assert_eq!(a.state_topic, "zigbee2mqtt/0x0c4314fffe84e0a4");
    assert_eq!(a.unit.as_deref(), Some("ppm"));
    assert_eq!(a.device_class.as_deref(), Some("carbon_dioxide"));
    assert_eq!(
        a.unique_id.as_deref(),
        Some("0x0c4314fffe84e0a4_co2_zigbee2mqtt")
    );
    assert!(a.template.is_ok());
    let t = parse_at(Z2M_WEATHER_TEMPERATURE).unwrap();
    assert_eq!(
        (t.field.as_str(), t.unit.as_deref()),
        ("temperature", Some("°C"))
    );
    assert_eq!(t.device, "zigbee2mqtt_0x0017880104e45522");
}

#[test]
fn recorded_zigbee2mqtt_1_x_announcements_are_read() {
    // Older Zigbee2MQTT: `identifiers` one string, `availability_topic`,
    // unsorted keys, a dotted template.
    let t = parse_at(Z2M_1_2_1_TEMPERATURE).unwrap();
    assert_eq!(t.device, "zigbee2mqtt_0x00158d0002725756");
    assert_eq!(t.field, "temperature");
    assert_eq!(t.state_topic, "zigbee2mqtt/temperatures2xiaomi");
    assert_eq!(
        (t.unit.as_deref(), t.device_class.as_deref()),
        (Some("°C"), Some("temperature"))
    );
    assert_eq!(
        t.unique_id.as_deref(),
        Some("0x00158d0002725756_temperature_zigbee2mqtt")
    );
    assert_eq!(
        t.template_text.as_deref(),
        Some("{{ value_json.temperature }}")
    );
    assert!(t.template.is_ok());
    let h = parse_at(Z2M_1_1_1_HUMIDITY).unwrap();
    assert_eq!(h.device, "zigbee2mqtt_0x00158d0002c77517");
    assert_eq!(h.field, "humidity");
    assert_eq!(h.state_topic, "zigbee2mqtt/0x00158d0002c77517");
    assert_eq!(
        (h.unit.as_deref(), h.device_class.as_deref()),
        (Some("%"), Some("humidity"))
    );
    assert!(h.template.is_ok());
}

#[test]
fn recorded_tasmota_6_announcement_without_a_device_is_refused() {
    // Tasmota 6.3 sent no `device` block and the topic has no node id, so
    // nothing names the device: refused, not guessed from the object id.
    assert_eq!(
        parse_at(TASMOTA_6_3_AM2301_TEMPERATURE),
        Err(Refusal::NoDevice)
    );
    // With a node id level, the same payload is read.
    let (_, payload) = TASMOTA_6_3_AM2301_TEMPERATURE;
    let a = parse_at((
        "homeassistant/sensor/3D698E/AM2301_Temperature/config",
        payload,
    ))
    .unwrap();
    assert_eq!(
        (a.device.as_str(), a.field.as_str()),
        ("3D698E", "AM2301_Temperature")
    );
    assert_eq!(a.state_topic, "testsonoff/tele/SENSOR");
    assert_eq!((a.unit, a.device_class), (None, None));
    assert!(a.template.is_ok());
}

#[test]
fn tasmota_abbreviations_and_base_topic_are_expanded() {
    let a = parse_at(TASMOTA_PM25).unwrap();
    assert_eq!(a.state_topic, "dom_PM2_2F8183/tele/SENSOR");
    assert_eq!(a.device, "2F8183");
    // The MAC prefix of the object id is the device already.
    assert_eq!(a.field, "SDS0X1_PM2.5");
    assert_eq!(a.unique_id.as_deref(), Some("2F8183_SDS0X1_PM2.5"));
    assert!(a.template.is_ok());
    let pm10 = parse_at(TASMOTA_PM10).unwrap();
    // A unit of " " (Tasmota's trick for a graph) is no unit.
    assert_eq!(pm10.unit, None);
    let t = parse_at(TASMOTA_MHZ19B_TEMPERATURE).unwrap();
    assert_eq!(t.state_topic, "tele/sonoff-71C254/SENSOR");
    assert_eq!(
        (t.unit.as_deref(), t.device_class.as_deref()),
        (Some("°C"), Some("temperature"))
    );
    assert_eq!(t.field, "MHZ19B_Temperature");
    let short = r#"{"stat_t":"x/~","~":"base","dev":{"ids":"abc"},"dev_cla":"co2","unit_of_meas":"ppm","uniq_id":"u"}"#;
    let a = parse_at(("homeassistant/sensor/node/co2/config", short)).unwrap();
    assert_eq!(a.state_topic, "x/base");
    assert_eq!((a.device.as_str(), a.field.as_str()), ("abc", "co2"));
}

#[test]
fn the_device_comes_from_identifiers_then_the_node_id() {
    let a = parse_at((
        "homeassistant/sensor/node-7/t/config",
        r#"{"state_topic":"s"}"#,
    ))
    .unwrap();
    assert_eq!(a.device, "node-7");
    let a = parse_at((
        "homeassistant/sensor/node-7/t/config",
        r#"{"state_topic":"s","device":{"identifiers":["aa:bb:cc"]}}"#,
    ))
    .unwrap();
    assert_eq!(a.device, "aa_bb_cc");
    assert_eq!(
        parse_at(("homeassistant/sensor/t/config", r#"{"state_topic":"s"}"#)),
        Err(Refusal::NoDevice)
    );
}

#[test]
fn bad_state_topics_are_refused() {
    for topic in ["#", "a/+/b", "", "a/#", "$SYS/x"] {
        let payload = format!(r#"{{"state_topic":"{topic}","dev":{{"ids":["d"]}}}}"#);
        assert!(
            matches!(
                parse_at(("homeassistant/sensor/d/x/config", &payload)),
                Err(Refusal::BadStateTopic(_))
            ),
            "{topic}"
        );
    }
    assert!(matches!(
        parse_at((
            "homeassistant/sensor/d/x/config",
            r#"{"dev":{"ids":["d"]}}"#
        )),
        Err(Refusal::BadStateTopic(_))
    ));
    assert_eq!(
        parse_at(("homeassistant/sensor/d/x/config", "[1]")),
        Err(Refusal::NotAnObject)
    );
    let config = ConfigTopic::parse("homeassistant", "homeassistant/sensor/d/x/config").unwrap();
    let big = format!(r#"{{"state_topic":"s","pad":"{}"}}"#, "x".repeat(20_000));
    assert_eq!(
        parse(&config, Component::Sensor, big.as_bytes(), 16 * 1024),
        Err(Refusal::TooLarge(16 * 1024))
    );
}

#[test]
fn an_unsupported_template_is_kept_refused_not_run() {
    let payload = r#"{"state_topic":"s","dev":{"ids":["d"]},"val_tpl":"{% for i in range(10**9) %}{% endfor %}"}"#;
    let a = parse_at(("homeassistant/sensor/d/x/config", payload)).unwrap();
    assert!(a.template.is_err());
}

#[test]
fn announcement_topics_are_recognised() {
    let t = ConfigTopic::parse("homeassistant", "homeassistant/binary_sensor/n/o/config").unwrap();
    assert_eq!(
        (t.component, t.node_id, t.object_id),
        ("binary_sensor", Some("n"), "o")
    );
    assert_eq!(t.stored_component(), Some(Component::BinarySensor));
    assert_eq!(
        ConfigTopic::parse("homeassistant", "homeassistant/light/o/config")
            .and_then(|t| t.stored_component()),
        None
    );
    for topic in [
        "homeassistant/sensor/config",
        "homeassistant/sensor//x/config",
        "homeassistant/sensor/a/b/c/config",
        "homeassistantx/sensor/a/config",
        "homeassistant/sensor/a/state",
    ] {
        assert!(
            ConfigTopic::parse("homeassistant", topic).is_none(),
            "{topic}"
        );
    }
}

proptest! {
    #[test]
    fn any_payload_is_parsed_or_refused_without_panic(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let config = ConfigTopic::parse("homeassistant", "homeassistant/sensor/n/o/config").unwrap();
        let _ = parse(&config, Component::Sensor, &payload, 16 * 1024);
    }

    #[test]
    fn a_parsed_state_topic_is_a_plain_topic(topic in "[a-z/#+~$]{0,20}", base in "[a-z/#+]{0,10}") {
        let payload = serde_json::json!({"stat_t": topic, "~": base, "dev": {"ids": ["d"]}}).to_string();
        let config = ConfigTopic::parse("homeassistant", "homeassistant/sensor/n/o/config").unwrap();
        if let Ok(a) = parse(&config, Component::Sensor, payload.as_bytes(), 16 * 1024) {
            prop_assert!(!a.state_topic.is_empty());
            prop_assert!(!a.state_topic.contains(['#', '+']));
        }
    }

    #[test]
    fn any_config_topic_is_split_or_ignored(topic in "[a-z/]{0,40}") {
        if let Some(t) = ConfigTopic::parse("ha", &topic) {
            prop_assert!(!t.component.is_empty() && !t.object_id.is_empty());
        }
    }
}
