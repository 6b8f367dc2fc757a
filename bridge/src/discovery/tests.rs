//! The registry and the state decoding, with the published announcements.
use super::*;
use crate::config::DiscoverySettings;

/// The published announcements (each test uses some).
#[allow(dead_code)]
mod fixtures {
    include!("../../tests/fixtures/discovery.rs");
}
use fixtures::*;

fn discovery(max_sensors: usize) -> Discovery {
    let settings = DiscoverySettings {
        homeassistant: true,
        max_sensors,
        ..DiscoverySettings::default()
    };
    let routes = vec![TopicFilter::parse("co2/+/emissions").unwrap()];
    Discovery::new(&settings, routes)
}

fn announce(d: &Discovery, (topic, payload): (&str, &str)) -> Result<Outcome, (Reason, String)> {
    d.announce(topic, payload.as_bytes())
}

fn time() -> NaiveDateTime {
    chrono::DateTime::from_timestamp(1_800_000_000, 0)
        .unwrap()
        .naive_utc()
}

fn fields(m: &Message) -> Vec<(String, Value)> {
    m.fields
        .iter()
        .map(|f| (f.name.to_string(), f.value.clone()))
        .collect()
}

#[test]
fn zigbee2mqtt_sensors_of_one_device_become_one_message() {
    let d = discovery(1000);
    let feed = d.feed();
    for a in [Z2M_AIR_CO2, Z2M_AIR_TEMPERATURE, Z2M_AIR_HUMIDITY] {
        assert_eq!(announce(&d, a), Ok(Outcome::Added));
    }
    assert_eq!(announce(&d, Z2M_AIR_CO2), Ok(Outcome::Unchanged));
    assert_eq!(
        &*feed.topics.borrow().clone(),
        ["zigbee2mqtt/0x0c4314fffe84e0a4".to_owned()]
    );
    let (topic, state) = Z2M_AIR_STATE;
    let m = d.decode(topic, state.as_bytes(), time()).unwrap();
    assert_eq!(m.device.as_str(), "zigbee2mqtt_0x0c4314fffe84e0a4");
    assert_eq!(
        fields(&m),
        [
            ("co2".to_owned(), Value::Float(359.0)),
            ("temperature".to_owned(), Value::Float(21.1)),
            ("humidity".to_owned(), Value::Float(62.3)),
        ]
    );
    assert_eq!(m.tag("co2.unit"), Some("ppm"));
    assert_eq!(m.tag("co2.device_class"), Some("carbon_dioxide"));
    assert_eq!(m.tag("temperature.unit"), Some("°C"));
    assert_eq!(m.tag("humidity.device_class"), Some("humidity"));
}

#[test]
fn recorded_zigbee2mqtt_1_x_sensors_read_a_recorded_state() {
    let d = discovery(1000);
    assert_eq!(announce(&d, Z2M_1_2_1_TEMPERATURE), Ok(Outcome::Added));
    assert_eq!(announce(&d, Z2M_1_1_1_HUMIDITY), Ok(Outcome::Added));
    let state = Z2M_WEATHER_RECORDED_STATE.as_bytes();
    let t = d
        .decode("zigbee2mqtt/temperatures2xiaomi", state, time())
        .unwrap();
    assert_eq!(t.device.as_str(), "zigbee2mqtt_0x00158d0002725756");
    // Only the announced property: linkquality, pressure and the rest are
    // not announced here.
    assert_eq!(
        fields(&t),
        [("temperature".to_owned(), Value::Float(24.59))]
    );
    assert_eq!(t.tag("temperature.unit"), Some("°C"));
    assert_eq!(t.tag("temperature.device_class"), Some("temperature"));
    let h = d
        .decode("zigbee2mqtt/0x00158d0002c77517", state, time())
        .unwrap();
    assert_eq!(h.device.as_str(), "zigbee2mqtt_0x00158d0002c77517");
    assert_eq!(fields(&h), [("humidity".to_owned(), Value::Float(36.56))]);
    assert_eq!(h.tag("humidity.unit"), Some("%"));
    assert_eq!(h.tag("humidity.device_class"), Some("humidity"));
}

#[test]
fn tasmota_sensors_are_read_through_their_base_topic() {
    let d = discovery(1000);
    announce(&d, TASMOTA_MHZ19B_CO2).unwrap();
    announce(&d, TASMOTA_MHZ19B_TEMPERATURE).unwrap();
    let (topic, state) = TASMOTA_MHZ19B_STATE;
    let m = d.decode(topic, state.as_bytes(), time()).unwrap();
    assert_eq!(m.device.as_str(), "71C254");
    assert_eq!(
        fields(&m),
        [
            ("MHZ19B_CarbonDioxide".to_owned(), Value::Float(836.0)),
            ("MHZ19B_Temperature".to_owned(), Value::Float(21.0)),
        ]
    );
    assert_eq!(m.tag("MHZ19B_CarbonDioxide.unit"), None);
    announce(&d, TASMOTA_PM25).unwrap();
    announce(&d, TASMOTA_PM10).unwrap();
    let (topic, state) = TASMOTA_PM_STATE;
    let m = d.decode(topic, state.as_bytes(), time()).unwrap();
    assert_eq!(
        fields(&m),
        [
            ("SDS0X1_PM2.5".to_owned(), Value::Float(7.3)),
            ("SDS0X1_PM10".to_owned(), Value::Float(10.1)),
        ]
    );
}

#[test]
fn changes_and_withdrawals_move_the_subscriptions() {
    let d = discovery(1000);
    let mut feed = d.feed();
    announce(&d, Z2M_WEATHER_TEMPERATURE).unwrap();
    announce(&d, Z2M_WEATHER_HUMIDITY).unwrap();
    assert!(feed.topics.has_changed().unwrap());
    assert_eq!(feed.topics.borrow_and_update().len(), 1);
    let moved = Z2M_WEATHER_HUMIDITY
        .1
        .replace("zigbee2mqtt/weather_sensor", "zigbee2mqtt/elsewhere");
    assert_eq!(
        announce(&d, (Z2M_WEATHER_HUMIDITY.0, &moved)),
        Ok(Outcome::Changed)
    );
    assert_eq!(
        &*feed.topics.borrow_and_update().clone(),
        [
            "zigbee2mqtt/elsewhere".to_owned(),
            "zigbee2mqtt/weather_sensor".to_owned()
        ]
    );
    assert_eq!(
        announce(&d, (Z2M_WEATHER_HUMIDITY.0, "")),
        Ok(Outcome::Removed)
    );
    assert_eq!(
        announce(&d, (Z2M_WEATHER_HUMIDITY.0, "")),
        Ok(Outcome::NotKnown)
    );
    assert_eq!(
        &*feed.topics.borrow_and_update().clone(),
        ["zigbee2mqtt/weather_sensor".to_owned()]
    );
    assert_eq!(
        d.decode("zigbee2mqtt/elsewhere", b"{}", time()),
        Err(Reason::NoRoute)
    );
    let rounded = Z2M_WEATHER_TEMPERATURE.1.replace(
        r#"{{ value_json[\"temperature\"] }}"#,
        r#"{{ value_json.temperature | round(0) }}"#,
    );
    assert_eq!(
        announce(&d, (Z2M_WEATHER_TEMPERATURE.0, &rounded)),
        Ok(Outcome::Changed)
    );
    let (topic, state) = Z2M_WEATHER_STATE;
    let m = d.decode(topic, state.as_bytes(), time()).unwrap();
    assert_eq!(fields(&m), [("temperature".to_owned(), Value::Float(21.0))]);
}

#[test]
fn bounds_refuse_with_a_reason_and_keep_what_is_held() {
    let d = discovery(2);
    let one = |i: usize| {
        (
            format!("homeassistant/sensor/n{i}/t/config"),
            format!(r#"{{"stat_t":"flood/{i}","dev":{{"ids":["n{i}"]}}}}"#),
        )
    };
    for i in 0..2 {
        let (t, p) = one(i);
        assert_eq!(d.announce(&t, p.as_bytes()), Ok(Outcome::Added));
    }
    for i in 2..500 {
        let (t, p) = one(i);
        assert!(matches!(
            d.announce(&t, p.as_bytes()),
            Err((Reason::TooManySensors, _))
        ));
    }
    assert_eq!(d.sensors().len(), 2);
    // A known sensor may still change.
    let (t, _) = one(0);
    let changed = r#"{"stat_t":"flood/x","dev":{"ids":["n0"]}}"#;
    assert_eq!(d.announce(&t, changed.as_bytes()), Ok(Outcome::Changed));
    let hash = r##"{"stat_t":"#","dev":{"ids":["n0"]}}"##;
    assert!(matches!(
        d.announce(&t, hash.as_bytes()),
        Err((Reason::BadAnnouncement, _))
    ));
    // The refused replacement withdrew the sensor it replaced.
    assert_eq!(d.sensors().len(), 1);
}

#[test]
fn an_unsupported_template_dead_letters_its_states() {
    let d = discovery(10);
    let looping = r#"{"stat_t":"loop/state","dev":{"ids":["x"]},"val_tpl":"{% for i in range(1000000000) %}{{ i }}{% endfor %}"}"#;
    let refused = d.announce("homeassistant/sensor/x/loop/config", looping.as_bytes());
    assert!(matches!(refused, Err((Reason::UnsupportedTemplate, _))));
    assert!(d.has_state_topic("loop/state"));
    assert_eq!(
        d.decode("loop/state", b"1", time()),
        Err(Reason::UnsupportedTemplate)
    );
    assert!(d.sensors()[0].refused_template.is_some());
}

#[test]
fn a_topic_a_route_matches_is_not_subscribed() {
    let d = discovery(10);
    let feed = d.feed();
    let p = r#"{"stat_t":"co2/dev-1/emissions","dev":{"ids":["dev-1"]}}"#;
    assert_eq!(
        d.announce("homeassistant/sensor/dev-1/co2/config", p.as_bytes()),
        Ok(Outcome::Added)
    );
    assert!(feed.topics.borrow().is_empty());
    assert!(d.sensors()[0].taken_by_route);
}

#[test]
fn binary_sensors_store_booleans_and_other_components_are_ignored() {
    let d = discovery(10);
    let contact = r#"{"state_topic":"zigbee2mqtt/door","value_template":"{{ value_json.contact }}","payload_on":false,"payload_off":true,"device_class":"door","device":{"identifiers":["zigbee2mqtt_0x1"]}}"#;
    d.announce(
        "homeassistant/binary_sensor/0x1/contact/config",
        contact.as_bytes(),
    )
    .unwrap();
    let m = d
        .decode("zigbee2mqtt/door", br#"{"contact":true}"#, time())
        .unwrap();
    assert_eq!(fields(&m), [("contact".to_owned(), Value::Bool(false))]);
    let light = r#"{"state_topic":"x","device":{"identifiers":["l"]}}"#;
    assert_eq!(
        d.announce("homeassistant/light/0x1/light/config", light.as_bytes()),
        Ok(Outcome::NotKnown)
    );
    assert!(!d.has_state_topic("x"));
}

#[test]
fn a_flood_of_announced_sensors_holds_max_sensors() {
    // 250,000 keeps the unit tests quick in a debug build; each refusal
    // costs the same whatever the count (no pass over the held sensors).
    let d = discovery(1000);
    let mut refused = 0;
    for i in 0..250_000u32 {
        let topic = format!("homeassistant/sensor/n{i}/v/config");
        let payload = format!(r#"{{"stat_t":"flood/{i}","dev":{{"ids":["n{i}"]}}}}"#);
        if let Err((reason, _)) = d.announce(&topic, payload.as_bytes()) {
            assert_eq!(reason, Reason::TooManySensors);
            refused += 1;
        }
    }
    assert_eq!(refused, 249_000);
    assert_eq!(d.sensors().len(), 1000);
    assert_eq!(d.feed().topics.borrow().len(), 1000);
}
