use super::*;
use crate::route::{MessageTimes, ReceiveClock};
use chrono::NaiveDate;
use co2_wire::Decoder;
use proptest::prelude::*;

/// The servers' documented examples, byte for byte (see the fixtures' README).
const TTN_UPLINK: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/ttn_uplink.json");
const TTN_UPLINK_2025: &[u8] =
    include_bytes!("../../../tests/fixtures/lorawan/ttn_uplink_2025.json");
const TTN_JOIN: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/ttn_join.json");
const TTN_ACK: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/ttn_downlink_ack.json");
const CS_UP: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/chirpstack_up.json");
const CS_JOIN: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/chirpstack_join.json");
const CS_ACK: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/chirpstack_ack.json");
const CS_TXACK: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/chirpstack_txack.json");
const CS_STATUS: &[u8] = include_bytes!("../../../tests/fixtures/lorawan/chirpstack_status.json");

const CS_DEVICE: &str = "0101010101010101";

fn settings(server: LorawanServer, events: bool, radio: bool) -> LorawanSettings {
    LorawanSettings {
        server,
        events,
        radio,
        numeric_strings: true,
        max_depth: None,
        max_fields: None,
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn decode(
    settings: &LorawanSettings,
    topic: &str,
    device: &str,
    payload: &[u8],
) -> Result<Message, &'static str> {
    let device = DeviceId::parse(device).unwrap();
    let decoder = Decoder::default();
    let times = MessageTimes::new(&decoder, Some(decoder.zone()), now());
    let ctx = Context {
        device: &device,
        device_from_source: true,
        trust_payload_device: false,
        seq: None,
        now: now(),
        topic,
        tags: &[],
        route: 0,
        clock: &ReceiveClock::default(),
        times: &times,
    };
    LorawanDecoder::new(settings)
        .decode(payload, &ctx)
        .map_err(Reason::as_str)
}

fn ttn(radio: bool, payload: &[u8]) -> Result<Message, &'static str> {
    decode(
        &settings(LorawanServer::Ttn, false, radio),
        "v3/app1@ttn/devices/dev1/up",
        "dev1",
        payload,
    )
}

fn chirpstack(radio: bool, payload: &[u8]) -> Result<Message, &'static str> {
    decode(
        &settings(LorawanServer::Chirpstack, false, radio),
        &format!("application/17c82e96/device/{CS_DEVICE}/event/up"),
        CS_DEVICE,
        payload,
    )
}

fn fields(m: &Message) -> Vec<(&str, &Value)> {
    m.fields.iter().map(|f| (&*f.name, &f.value)).collect()
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> chrono::NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|d| d.and_hms_milli_opt(h, mi, s, ms))
        .unwrap()
}

#[test]
fn the_things_stack_uplink_example_is_its_decoded_fields_at_the_network_servers_time() {
    let m = ttn(false, TTN_UPLINK).unwrap();
    assert_eq!(m.device.as_str(), "dev1");
    // uplink_message.received_at (the Network Server's), not the top-level
    // received_at (the Application Server's, 225 ms later).
    assert_eq!(m.time, at(2020, 2, 12, 15, 15, 45, 789));
    assert_eq!(
        fields(&m),
        [
            ("temperature", &Value::Float(1.0)),
            ("luminosity", &Value::Float(0.64)),
        ]
    );
    assert_eq!(
        m.frame,
        Some(Frame {
            dev_addr: 0x00BC_B929,
            f_cnt: 1
        })
    );
}

#[test]
fn the_things_stack_radio_metadata_is_fields_when_asked_for() {
    let m = ttn(true, TTN_UPLINK).unwrap();
    assert_eq!(
        fields(&m),
        [
            ("temperature", &Value::Float(1.0)),
            ("luminosity", &Value::Float(0.64)),
            ("lorawan.rssi", &Value::Float(-35.0)),
            ("lorawan.snr", &Value::Float(5.0)),
            ("lorawan.gateways", &Value::Int(1)),
            ("lorawan.f_cnt", &Value::Int(1)),
        ]
    );
}

#[test]
fn the_current_things_stack_docs_uplink_example_is_not_json() {
    // A comma is missing after "attributes" in the docs since 2025-01-29.
    assert_eq!(ttn(false, TTN_UPLINK_2025).unwrap_err(), "bad_json");
}

#[test]
fn the_chirpstack_uplink_example_is_its_radio_metadata_at_the_network_servers_time() {
    // No codec, so no `object`: without radio fields there is nothing to store.
    assert_eq!(chirpstack(false, CS_UP).unwrap_err(), "no_storable_fields");
    let m = chirpstack(true, CS_UP).unwrap();
    assert_eq!(m.device.as_str(), CS_DEVICE);
    assert_eq!(m.time, at(2022, 7, 18, 9, 34, 15, 775));
    assert_eq!(
        fields(&m),
        [
            ("lorawan.rssi", &Value::Float(-36.0)),
            ("lorawan.snr", &Value::Float(10.5)),
            ("lorawan.gateways", &Value::Int(1)),
            ("lorawan.f_cnt", &Value::Int(0)),
            ("lorawan.f_port", &Value::Int(1)),
        ]
    );
    // fCnt is left out when it is 0 (the Protocol Buffers JSON mapping).
    assert_eq!(
        m.frame,
        Some(Frame {
            dev_addr: 0x0018_9440,
            f_cnt: 0
        })
    );
}

#[test]
fn a_chirpstack_object_is_flattened_like_a_json_route() {
    let payload = String::from_utf8(CS_UP.to_vec()).unwrap().replace(
        "\"fPort\": 1,",
        "\"fPort\": 1, \"fCnt\": 7, \"object\": {\"co2\": 612, \"climate\": {\"temperature\": \"21.5\", \"ok\": true}, \"label\": \"room 1\", \"none\": null},",
    );
    let m = chirpstack(false, payload.as_bytes()).unwrap();
    assert_eq!(
        fields(&m),
        [
            ("co2", &Value::Float(612.0)),
            ("climate.temperature", &Value::Float(21.5)),
            ("climate.ok", &Value::Bool(true)),
            ("label", &Value::Text("room 1".into())),
        ]
    );
    assert_eq!(m.frame.map(|f| f.f_cnt), Some(7));
}

#[test]
fn the_payloads_device_must_be_the_topics() {
    let s = settings(LorawanServer::Ttn, false, false);
    assert_eq!(
        decode(&s, "v3/app1@ttn/devices/dev2/up", "dev2", TTN_UPLINK).unwrap_err(),
        "device_mismatch"
    );
    let s = settings(LorawanServer::Chirpstack, false, true);
    assert_eq!(
        decode(
            &s,
            "application/1/device/0202020202020202/event/up",
            "0202020202020202",
            CS_UP
        )
        .unwrap_err(),
        "device_mismatch"
    );
    // ChirpStack's EUIs are read in lower case, as its topics write them.
    let upper = String::from_utf8(CS_UP.to_vec())
        .unwrap()
        .replace(CS_DEVICE, "00AB00AB00AB00AB");
    let m = decode(
        &s,
        "application/1/device/00ab00ab00ab00ab/event/up",
        "00ab00ab00ab00ab",
        upper.as_bytes(),
    )
    .unwrap();
    assert_eq!(m.device.as_str(), "00ab00ab00ab00ab");
}

#[test]
fn decoded_payloads_keep_the_json_routes_bounds_and_reasons() {
    let with = |decoded: &str| {
        let payload = format!(
            r#"{{"end_device_ids": {{"device_id": "dev1"}}, "uplink_message": {{"f_cnt": 3, "decoded_payload": {decoded}, "received_at": "2024-05-01T10:00:00Z"}}}}"#
        );
        ttn(false, payload.as_bytes())
    };
    let many: Vec<String> = (0..65).map(|i| format!("\"f{i}\": {i}")).collect();
    assert_eq!(
        with(&format!("{{{}}}", many.join(","))).unwrap_err(),
        "too_many_fields"
    );
    assert_eq!(
        with(&format!("{}1{}", "{\"a\":".repeat(17), "}".repeat(17))).unwrap_err(),
        "too_deep"
    );
    assert_eq!(with("[1, 2]").unwrap_err(), "not_an_object");
    assert_eq!(with(r#"{"a": 1, "a": 2}"#).unwrap_err(), "duplicate_field");
    assert_eq!(with(r#"{"x": null}"#).unwrap_err(), "no_storable_fields");
    assert_eq!(with(r#"{"x": "1e400"}"#).unwrap_err(), "not_finite");
    // A decoded field named like a radio field makes the message ambiguous.
    let payload = br#"{"uplink_message": {"decoded_payload": {"lorawan": {"rssi": 1}}, "rx_metadata": [{"rssi": -40}]}}"#;
    assert_eq!(ttn(true, payload).unwrap_err(), "duplicate_field");
}

#[test]
fn what_is_not_an_uplink_is_refused_with_a_reason() {
    for (payload, reason) in [
        (&b"not json"[..], "bad_json"),
        (b"[1, 2]", "not_an_object"),
        (b"42", "not_an_object"),
        (b"", "bad_json"),
        (br#"{"uplink_message": {"f_cnt": -1}}"#, "bad_json"),
        (br#"{"uplink_message": {"f_cnt": 4294967296}}"#, "bad_json"),
        (br#"{"end_device_ids": {"device_id": 7}, "uplink_message": {}}"#, "bad_json"),
        (br#"{"end_device_ids": {"device_id": "dev1"}}"#, "no_storable_fields"),
        (br#"{"end_device_ids": {"device_id": "a b"}, "uplink_message": {"decoded_payload": {"x": 1}}}"#, "bad_device"),
        (br#"{"uplink_message": {"decoded_payload": {"x": 1}, "received_at": "yesterday"}}"#, "bad_datetime"),
    ] {
        assert_eq!(ttn(true, payload).unwrap_err(), reason, "{}", String::from_utf8_lossy(payload));
    }
}

#[test]
fn best_signal_and_distinct_gateways_over_every_reception() {
    let payload = br#"{"uplink_message": {"decoded_payload": {"co2": 500},
        "rx_metadata": [
            {"gateway_ids": {"gateway_id": "a"}, "rssi": -110, "snr": -3.5},
            {"gateway_ids": {"gateway_id": "a"}, "rssi": -90, "snr": -7},
            {"gateway_ids": {"gateway_id": "b"}, "rssi": -100, "snr": 2.25},
            {"rssi": -120}
        ]}}"#;
    let m = ttn(true, payload).unwrap();
    assert_eq!(m.field("lorawan.rssi"), Some(&Value::Float(-90.0)));
    assert_eq!(m.field("lorawan.snr"), Some(&Value::Float(2.25)));
    assert_eq!(m.field("lorawan.gateways"), Some(&Value::Int(3)));
    // Without a time of its own, the bridge's receive stamp.
    assert_eq!(m.time.and_utc().timestamp(), now().timestamp());
    assert_eq!(
        m.frame,
        Some(Frame {
            dev_addr: 0,
            f_cnt: 0
        })
    );
}

fn event(server: LorawanServer, topic: &str, device: &str, payload: &[u8]) -> Message {
    decode(&settings(server, true, false), topic, device, payload).unwrap()
}

fn kind_of(m: &Message) -> &str {
    match m.field("kind") {
        Some(Value::Text(k)) => k,
        other => panic!("no kind: {other:?}"),
    }
}

#[test]
fn the_things_stack_join_and_downlink_ack_examples_are_device_events() {
    let join = event(
        LorawanServer::Ttn,
        "v3/app1@ttn/devices/dev1/join",
        "dev1",
        TTN_JOIN,
    );
    assert_eq!(kind_of(&join), "ttn_join_accept");
    assert_eq!(join.time, at(2020, 2, 17, 7, 49, 9, 935));
    assert_eq!(join.frame, None);
    assert_eq!(
        join.field("body"),
        Some(&Value::Text(String::from_utf8(TTN_JOIN.to_vec()).unwrap()))
    );
    let ack = event(
        LorawanServer::Ttn,
        "v3/app1@ttn/devices/dev1/down/ack",
        "dev1",
        TTN_ACK,
    );
    assert_eq!(kind_of(&ack), "ttn_downlink_ack");
    assert_eq!(ack.time, at(2020, 2, 17, 10, 32, 24, 590));
    // The id is the payload's digest: a redelivery is the same event.
    assert_ne!(join.field("event_id"), ack.field("event_id"));
    let again = event(
        LorawanServer::Ttn,
        "v3/app1@ttn/devices/dev1/join",
        "dev1",
        TTN_JOIN,
    );
    assert_eq!(join.field("event_id"), again.field("event_id"));
    match join.field("event_id") {
        Some(Value::Text(id)) => assert_eq!(id.len(), 16),
        other => panic!("{other:?}"),
    }
}

#[test]
fn chirpstack_join_ack_txack_and_status_examples_are_device_events() {
    for (level, payload, time) in [
        ("join", CS_JOIN, at(2022, 7, 18, 9, 33, 28, 823)),
        ("ack", CS_ACK, at(2022, 7, 18, 9, 38, 49, 235)),
        ("txack", CS_TXACK, at(2022, 7, 18, 9, 37, 48, 929)),
        ("status", CS_STATUS, at(2022, 7, 18, 9, 35, 6, 927)),
    ] {
        let topic = format!("application/17c82e96/device/{CS_DEVICE}/event/{level}");
        let m = event(LorawanServer::Chirpstack, &topic, CS_DEVICE, payload);
        assert_eq!(kind_of(&m), format!("chirpstack_{level}"));
        assert_eq!(m.time, time, "{level}");
        assert_eq!(m.device.as_str(), CS_DEVICE);
    }
    let s = settings(LorawanServer::Chirpstack, true, false);
    assert_eq!(
        decode(
            &s,
            "application/1/device/0202020202020202/event/join",
            "0202020202020202",
            CS_JOIN
        )
        .unwrap_err(),
        "device_mismatch"
    );
}

#[test]
fn an_event_kind_is_a_plain_word_or_other() {
    assert_eq!(kind("ttn", "join_accept"), "ttn_join_accept");
    assert_eq!(kind("chirpstack", "Weird Level"), "chirpstack_other");
    assert_eq!(kind("chirpstack", ""), "chirpstack_other");
    assert_eq!(kind("chirpstack", &"x".repeat(33)), "chirpstack_other");
}

proptest! {
    /// Whatever the decoded payload and frame counter, the uplink decodes to
    /// that counter and to fields named only from the payload, or is refused
    /// with a reason; never a panic.
    #[test]
    fn any_decoded_payload_is_stored_or_refused(
        f_cnt in any::<u32>(),
        keys in proptest::collection::vec("[a-z]{1,8}", 0..6),
        values in proptest::collection::vec(-1e6f64..1e6, 0..6),
        chirp in any::<bool>(),
    ) {
        let object: Vec<String> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        let object = format!("{{{}}}", object.join(", "));
        let result = if chirp {
            let payload = format!(
                r#"{{"deviceInfo": {{"devEui": "{CS_DEVICE}"}}, "time": "2024-05-01T10:00:00Z", "fCnt": {f_cnt}, "object": {object}}}"#
            );
            chirpstack(false, payload.as_bytes())
        } else {
            let payload = format!(
                r#"{{"end_device_ids": {{"device_id": "dev1"}}, "uplink_message": {{"f_cnt": {f_cnt}, "decoded_payload": {object}, "received_at": "2024-05-01T10:00:00Z"}}}}"#
            );
            ttn(false, payload.as_bytes())
        };
        match result {
            Ok(m) => {
                prop_assert_eq!(m.frame.map(|f| f.f_cnt), Some(f_cnt));
                prop_assert!(!m.fields.is_empty());
                for f in &m.fields {
                    prop_assert!(keys.iter().any(|k| **k == *f.name));
                }
            }
            Err(reason) => prop_assert!(
                ["duplicate_field", "no_storable_fields"].contains(&reason),
                "{}", reason
            ),
        }
    }

    /// Arbitrary bytes never panic either decoder, in either mode.
    #[test]
    fn any_bytes_are_decoded_or_refused(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        for server in [LorawanServer::Ttn, LorawanServer::Chirpstack] {
            for events in [false, true] {
                let _ = decode(&settings(server, events, true), "x/dev1/up", "dev1", &payload);
            }
        }
    }
}
