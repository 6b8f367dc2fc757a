use super::*;
use crate::config::routes::TimeUnit;
use crate::route::{MessageTimes, ReceiveClock};
use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use co2_wire::Decoder;
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn decode_with(
    settings: &JsonSettings,
    times: Decoder,
    payload: &str,
    topic_device: bool,
) -> Result<Message, &'static str> {
    let device = DeviceId::parse("from-topic").unwrap();
    let tags = [(Arc::from("room"), "hall".to_owned())];
    let times = MessageTimes::new(&times, Some(times.zone()), now());
    let ctx = Context {
        device: &device,
        device_from_source: topic_device,
        trust_payload_device: true,
        seq: None,
        now: now(),
        topic: "sensors/from-topic/hall/dht11",
        tags: &tags,
        route: 0,
        clock: &ReceiveClock::default(),
        times: &times,
    };
    JsonDecoder::new(settings)
        .decode(payload.as_bytes(), &ctx)
        .map_err(Reason::as_str)
}

fn decode(
    settings: &JsonSettings,
    payload: &str,
    topic_device: bool,
) -> Result<Message, &'static str> {
    decode_with(settings, Decoder::default(), payload, topic_device)
}

fn fields(m: &Message) -> Vec<(&str, &Value)> {
    m.fields.iter().map(|f| (&*f.name, &f.value)).collect()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|d| d.and_hms_opt(h, mi, s))
        .unwrap()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

#[test]
fn every_value_is_kept_with_its_type() {
    let d = decode(
        &JsonSettings::default(),
        r#"{"temp": 21.5, "humidity": 40, "label": "kitchen", "ok": true, "gone": null,
            "nested": {"x": 1}, "list": [1, "two"], "time": "2024-05-01T10:00:00Z"}"#,
        true,
    )
    .unwrap();
    assert_eq!(
        fields(&d),
        [
            ("temp", &Value::Float(21.5)),
            ("humidity", &Value::Float(40.0)),
            ("label", &text("kitchen")),
            ("ok", &Value::Bool(true)),
            ("nested.x", &Value::Float(1.0)),
            ("list.0", &Value::Float(1.0)),
            ("list.1", &text("two")),
        ]
    );
    assert_eq!(d.time, utc(2024, 5, 1, 10, 0, 0));
    assert_eq!(d.tags, [(Arc::from("room"), "hall".to_owned())]);
}

#[test]
fn the_python_dht11_producer_that_stringifies_everything() {
    let s = JsonSettings {
        device_field: Some("m_id".into()),
        time_field: Some("datetime".into()),
        ..Default::default()
    };
    let payload = r#"{"m_id": "0", "datetime": "2024-05-01 10:00:00", "temp": "21.0"}"#;
    let d = decode(&s, payload, false).unwrap();
    assert_eq!(d.device.as_str(), "0");
    assert_eq!(d.time, utc(2024, 5, 1, 10, 0, 0));
    assert_eq!(fields(&d), [("temp", &Value::Float(21.0))]);
    let as_text = JsonSettings {
        numeric_strings: false,
        ..s
    };
    let d = decode(&as_text, payload, false).unwrap();
    assert_eq!(fields(&d), [("temp", &text("21.0"))]);
}

#[test]
fn a_message_of_text_only_is_stored() {
    let d = decode(&JsonSettings::default(), r#"{"name": "zzerii"}"#, false).unwrap();
    assert_eq!(d.device.as_str(), "from-topic");
    assert_eq!(d.time, now().naive_utc(), "no time: the receive time");
    assert_eq!(fields(&d), [("name", &text("zzerii"))]);
}

#[test]
fn tasmota_nests_and_sends_local_time() {
    let s = JsonSettings {
        time_field: Some("Time".into()),
        ..Default::default()
    };
    let payload = r#"{"Time":"2024-05-01T10:00:00","AM2301":{"Temperature":21.5,"Humidity":40.1},"TempUnit":"C"}"#;
    let d = decode(&s, payload, true).unwrap();
    assert_eq!(
        fields(&d),
        [
            ("AM2301.Temperature", &Value::Float(21.5)),
            ("AM2301.Humidity", &Value::Float(40.1)),
            ("TempUnit", &text("C")),
        ]
    );
    assert_eq!(d.time, utc(2024, 5, 1, 10, 0, 0), "UTC by default");
    let berlin = Decoder::new(chrono_tz::Europe::Berlin, co2_wire::Limits::default());
    let d = decode_with(&s, berlin, payload, true).unwrap();
    assert_eq!(d.time, utc(2024, 5, 1, 8, 0, 0), "CEST is UTC+2 in May");
}

#[test]
fn zigbee2mqtt_numbers_and_booleans() {
    let d = decode(
        &JsonSettings::default(),
        r#"{"temperature":21.5,"humidity":40,"battery":97,"contact":true,"linkquality":120}"#,
        true,
    )
    .unwrap();
    assert_eq!(
        fields(&d),
        [
            ("temperature", &Value::Float(21.5)),
            ("humidity", &Value::Float(40.0)),
            ("battery", &Value::Float(97.0)),
            ("contact", &Value::Bool(true)),
            ("linkquality", &Value::Float(120.0)),
        ]
    );
}

#[test]
fn integers_stay_floats_so_a_field_keeps_one_type() {
    let s = JsonSettings::default();
    let first = decode(&s, r#"{"t": 40}"#, true).unwrap();
    let later = decode(&s, r#"{"t": 40.5}"#, true).unwrap();
    assert_eq!(first.fields[0].value.kind(), later.fields[0].value.kind());
    assert_eq!(first.fields[0].value, Value::Float(40.0));
    let big = decode(&s, r#"{"t": 18446744073709551615}"#, true).unwrap();
    assert_eq!(
        big.fields[0].value,
        Value::Float(18_446_744_073_709_551_615.0)
    );
}

#[test]
fn receive_time_without_a_time_field_and_device_from_a_key() {
    let s = JsonSettings {
        device_field: Some("id".into()),
        ..Default::default()
    };
    let d = decode(&s, r#"{"id": 42, "temp": 20}"#, false).unwrap();
    assert_eq!(d.device.as_str(), "42");
    assert_eq!(d.time, now().naive_utc());
    assert_eq!(d.fields.len(), 1, "the device key is not a reading");
    let d = decode(&s, r#"{"id": null, "temp": 20, "time": null}"#, false).unwrap();
    assert_eq!(
        (d.device.as_str(), d.time),
        ("from-topic", now().naive_utc()),
        "null is absent"
    );
    for bad in [
        r#"{"id": 1.5, "t": 1}"#,
        r#"{"id": true, "t": 1}"#,
        r#"{"id": {"a": 1}, "t": 1}"#,
        r#"{"id": "a b", "t": 1}"#,
    ] {
        assert_eq!(decode(&s, bad, false).unwrap_err(), "bad_device", "{bad}");
    }
    // A key naming the topic's device is fine (and not a field); naming
    // another device is refused.
    let d = decode(&s, r#"{"id": "from-topic", "temp": 20}"#, true).unwrap();
    assert_eq!((d.device.as_str(), d.fields.len()), ("from-topic", 1));
    assert_eq!(
        decode(&s, r#"{"id": "other", "temp": 20}"#, true).unwrap_err(),
        "device_mismatch"
    );
}

#[test]
fn nested_time_and_device_by_dotted_path() {
    let s = JsonSettings {
        time_field: Some("StatusSNS.Time".into()),
        device_field: Some("meta.id".into()),
        ..Default::default()
    };
    let d = decode(
        &s,
        r#"{"StatusSNS":{"Time":"2024-05-01T10:00:00+02:00","SI7021":{"Temperature":20.1}},"meta":{"id":"t-1"}}"#,
        false,
    )
    .unwrap();
    assert_eq!(d.time, utc(2024, 5, 1, 8, 0, 0));
    assert_eq!(d.device.as_str(), "t-1");
    assert_eq!(
        fields(&d),
        [("StatusSNS.SI7021.Temperature", &Value::Float(20.1))]
    );
    assert_eq!(
        decode(&s, r#"{"StatusSNS":{"Time":{"x":1}},"v":1}"#, false).unwrap_err(),
        "bad_datetime"
    );
}

#[test]
fn every_time_form_reads_as_the_same_instant() {
    let want = utc(2024, 5, 1, 10, 0, 0);
    for time in [
        r#""2024-05-01T10:00:00Z""#,
        r#""2024-05-01T12:00:00+02:00""#,
        r#""2024-05-01T06:30:00-0330""#,
        r#""2024-05-01 10:00:00""#,
        r#""2024-05-01T10:00:00.000""#,
        r#"" 2024-5-1 10:0:0 ""#,
        "1714557600",
        "1714557600.0",
        "1714557600000",
        "1714557600000000",
        "1714557600000000000",
        r#""1714557600""#,
        r#"" 1714557600000 ""#,
    ] {
        let payload = format!(r#"{{"t": 1, "time": {time}}}"#);
        let d = decode(&JsonSettings::default(), &payload, true);
        assert_eq!(d.map(|d| d.time), Ok(want), "{time}");
    }
    // A unit set per route overrides the magnitude.
    let ms = JsonSettings {
        time_unit: TimeUnit::Ms,
        ..Default::default()
    };
    let d = decode(&ms, r#"{"t": 1, "time": 1714557600}"#, true).unwrap();
    let want = DateTime::from_timestamp_millis(1_714_557_600)
        .unwrap()
        .naive_utc();
    assert_eq!(d.time, want);
}

#[test]
fn refusals() {
    let s = JsonSettings::default();
    assert_eq!(decode(&s, "temp=20", true).unwrap_err(), "bad_json");
    assert_eq!(decode(&s, "[1,2]", true).unwrap_err(), "not_an_object");
    assert_eq!(decode(&s, "null", true).unwrap_err(), "not_an_object");
    for nothing in [
        "{}",
        r#"{"a": null}"#,
        r#"{"a": {}, "b": []}"#,
        r#"{"time": "2024-05-01T10:00:00Z"}"#,
    ] {
        assert_eq!(
            decode(&s, nothing, true).unwrap_err(),
            "no_storable_fields",
            "{nothing}"
        );
    }
    assert_eq!(
        decode(&s, r#"{"temp": 1, "time": "soon"}"#, true).unwrap_err(),
        "bad_datetime"
    );
    assert_eq!(
        decode(&s, r#"{"temp": 1, "time": true}"#, true).unwrap_err(),
        "bad_datetime"
    );
    assert_eq!(
        decode(&s, r#"{"temp": "1e400"}"#, true).unwrap_err(),
        "not_finite"
    );
    let long = format!(r#"{{"note": "{}"}}"#, "x".repeat(20_000));
    assert_eq!(decode(&s, &long, true).unwrap_err(), "field_too_long");
}

/// Regression (issue 11): numeric times far outside DATETIME's range went
/// on to the writer, where sqlx's `push_bind` panicked the commit task.
#[test]
fn times_the_column_cannot_hold_are_refused_on_the_json_route() {
    let s = JsonSettings::default();
    for time in [
        "-99999999999",
        "3000000000000000000000",
        "1e300",
        "\"0999-01-01 00:00:00\"",
        "\"-99999999999\"",
        "\"1e400\"",
    ] {
        let payload = format!(r#"{{"temp": 1, "time": {time}}}"#);
        assert_eq!(
            decode(&s, &payload, true).unwrap_err(),
            "time_out_of_range",
            "{time}"
        );
    }
    let payload = r#"{"temp": 1, "time": "2099-01-01T00:00:00Z"}"#;
    assert_eq!(decode(&s, payload, true).unwrap_err(), "too_far_in_future");
    // Auto reads 3e15 as microseconds (the year 2065), so it is in the future.
    let payload = r#"{"temp": 1, "time": 3000000000000000}"#;
    assert_eq!(decode(&s, payload, true).unwrap_err(), "too_far_in_future");
    let seconds = JsonSettings {
        time_unit: TimeUnit::S,
        ..Default::default()
    };
    assert_eq!(
        decode(&seconds, payload, true).unwrap_err(),
        "time_out_of_range"
    );
}

#[test]
fn hostile_shapes_are_one_rejection_each() {
    let s = JsonSettings::default();
    let deep = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    assert_eq!(decode(&s, &deep, true).unwrap_err(), "too_deep");
    let keys: Vec<String> = (0..10_000).map(|i| format!("\"f{i}\": {i}")).collect();
    assert_eq!(
        decode(&s, &format!("{{{}}}", keys.join(",")), true).unwrap_err(),
        "too_many_fields"
    );
    let array = format!(r#"{{"values": [{}]}}"#, vec!["0.5"; 100_000].join(","));
    assert_eq!(decode(&s, &array, true).unwrap_err(), "too_many_fields");
    let few: Vec<String> = (0..64).map(|i| format!("\"f{i}\": {i}")).collect();
    assert_eq!(
        decode(&s, &format!("{{{}}}", few.join(",")), true)
            .unwrap()
            .fields
            .len(),
        64
    );
    let k65 = format!(r#"{{"{}": 1}}"#, "k".repeat(65));
    assert_eq!(decode(&s, &k65, true).unwrap_err(), "bad_field_name");
    assert_eq!(
        decode(&s, r#"{"temp": 1, "temp": 2}"#, true).unwrap_err(),
        "duplicate_field"
    );
    assert_eq!(
        decode(&s, r#"{"a.b": 1, "a": {"b": 2}}"#, true).unwrap_err(),
        "duplicate_field"
    );
    // The time key sent twice is just as ambiguous.
    assert_eq!(
        decode(
            &s,
            r#"{"t": 1, "time": 1714557600, "time": 1714557601}"#,
            true
        )
        .unwrap_err(),
        "duplicate_field"
    );
    let bounded = JsonSettings {
        max_depth: Some(2),
        max_fields: Some(2),
        ..Default::default()
    };
    assert!(decode(&bounded, r#"{"a": {"b": 1}, "c": 2}"#, true).is_ok());
    assert_eq!(
        decode(&bounded, r#"{"a": {"b": {"c": 1}}}"#, true).unwrap_err(),
        "too_deep"
    );
    assert_eq!(
        decode(&bounded, r#"{"a": 1, "b": 2, "c": 3}"#, true).unwrap_err(),
        "too_many_fields"
    );
}

fn columns() -> JsonSettings {
    JsonSettings {
        mode: JsonMode::Columns,
        time_field: Some("Time".into()),
        fields: [
            ("AM2301.Temperature".to_owned(), "temperature".to_owned()),
            ("AM2301.Humidity".to_owned(), "humidity".to_owned()),
            ("TempUnit".to_owned(), "unit".to_owned()),
            ("Switch".to_owned(), "switch".to_owned()),
        ]
        .into(),
        ..Default::default()
    }
}

#[test]
fn columns_mode_maps_nested_fields_to_columns() {
    let layout = JsonDecoder::layout(&columns());
    let names: Vec<&str> = layout.columns().iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "device",
            "time",
            "humidity",
            "temperature",
            "switch",
            "unit"
        ]
    );
    let d = decode(
        &columns(),
        r#"{"Time":"2024-05-01T10:00:00","AM2301":{"Temperature":21.5,"Humidity":"40.1"},"Switch":true,"Other":{"deep":[1,2]}}"#,
        true,
    )
    .unwrap();
    assert_eq!(d.field("AM2301.Temperature"), Some(&Value::Float(21.5)));
    assert_eq!(d.field("AM2301.Humidity"), Some(&Value::Float(40.1)));
    assert_eq!(d.field("Switch"), Some(&Value::Bool(true)));
    assert_eq!(d.field("TempUnit"), Some(&Value::Null));
    assert_eq!(d.fields.len(), 4, "unmapped fields are not kept");
    assert_eq!(
        decode(&columns(), r#"{"Other": 1, "TempUnit": null}"#, true).unwrap_err(),
        "no_storable_fields"
    );
    // Names that could not be a `field` value do not matter here.
    let long_key = format!(r#"{{"{}": 1, "Switch": false}}"#, "k".repeat(80));
    assert!(decode(&columns(), &long_key, true).is_ok());
}

fn document() -> JsonSettings {
    JsonSettings {
        mode: JsonMode::Document,
        device_field: Some("m_id".into()),
        time_field: Some("datetime".into()),
        ..Default::default()
    }
}

#[test]
fn document_mode_keeps_the_whole_object_as_sent() {
    let payload = r#"{"m_id": "cam-2", "datetime": "2024-05-01 10:00:00", "temp": "21.0", "nested": {"a": [1, {"b": null}]}}"#;
    let d = decode(&document(), payload, false).unwrap();
    assert_eq!(d.device.as_str(), "cam-2");
    assert_eq!(d.time, utc(2024, 5, 1, 10, 0, 0));
    assert_eq!(fields(&d), [(DOCUMENT_FIELD, &text(payload))]);
    assert_eq!(d.tags.len(), 1);
    // Empty is a document too; depth, size and repeated keys are still bounded.
    assert!(decode(&document(), "{}", false).is_ok());
    let deep = format!("{}1{}", "{\"a\":".repeat(17), "}".repeat(17));
    assert_eq!(decode(&document(), &deep, false).unwrap_err(), "too_deep");
    assert_eq!(
        decode(&document(), r#"{"a": 1, "a": 2}"#, false).unwrap_err(),
        "duplicate_field"
    );
    let many = format!(r#"{{"v": [{}]}}"#, vec!["1"; 1025].join(","));
    assert_eq!(
        decode(&document(), &many, false).unwrap_err(),
        "too_many_fields"
    );
    let layout = JsonDecoder::layout(&document());
    let names: Vec<&str> = layout.columns().iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        names,
        ["device", "topic", "time", "tags", "document", "content_key"]
    );
}

proptest! {
    /// Any instant from 1973 to 2100, sent in any unit as a number or a
    /// numeric string, or as ISO 8601 with any offset, is read as itself
    /// (to the millisecond).
    #[test]
    fn time_detection_finds_the_instant(
        millis in 100_000_000_000i64..4_102_444_800_000,
        offset_minutes in -12i32 * 60..=14 * 60,
    ) {
        let want = DateTime::from_timestamp_millis(millis).unwrap();
        let far = JsonSettings::default();
        let decoder = Decoder::new(
            chrono_tz::UTC,
            co2_wire::Limits { max_future: std::time::Duration::from_secs(u64::MAX / 4), ..Default::default() },
        );
        let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let local = offset.from_utc_datetime(&want.naive_utc());
        let seconds = format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000));
        let forms = [
            seconds.clone(),
            format!("\"{seconds}\""),
            millis.to_string(),
            format!("\"{millis}\""),
            (millis * 1000).to_string(),
            (i128::from(millis) * 1_000_000).to_string(),
            format!("\"{}\"", local.format("%Y-%m-%dT%H:%M:%S%.3f%:z")),
            format!("\"{}\"", want.format("%Y-%m-%d %H:%M:%S%.3f")),
        ];
        for form in forms {
            let payload = format!(r#"{{"v": 1, "time": {form}}}"#);
            let got = decode_with(&far, decoder.clone(), &payload, true).map(|m| m.time);
            prop_assert_eq!(got, Ok(want.naive_utc()), "{}", form);
        }
    }

    /// Whatever the text of a string field, it is a number exactly when the
    /// numeric-string rule says so, and text (itself) otherwise.
    #[test]
    fn string_fields_follow_the_numeric_rule(s in r#"[ 0-9a-z.eE+\-é]{0,12}"#) {
        let payload = serde_json::json!({"v": s}).to_string();
        let got = decode(&JsonSettings::default(), &payload, true);
        match plain_number(&s) {
            Ok(Some(v)) => prop_assert_eq!(got.unwrap().fields[0].value.clone(), Value::Float(v)),
            Ok(None) => prop_assert_eq!(got.unwrap().fields[0].value.clone(), Value::Text(s.clone())),
            Err(reason) => prop_assert_eq!(got.unwrap_err(), reason.as_str()),
        }
        let as_text = JsonSettings { numeric_strings: false, ..Default::default() };
        let got = decode(&as_text, &payload, true).unwrap();
        prop_assert_eq!(got.fields[0].value.clone(), Value::Text(s));
    }
}
