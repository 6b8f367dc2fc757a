use super::*;
use crate::config::Settings;
use crate::model::{Origin, Record, Value};
use crate::route::Routes;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use proptest::prelude::*;

fn shape(field: Option<&str>, max: usize) -> BatchShape {
    BatchShape {
        field: field.map(str::to_owned),
        max_elements: max,
        time_field: "time".to_owned(),
        device_field: Some("device".to_owned()),
    }
}

fn items<'p>(split: &Split<'p>) -> Vec<&'p str> {
    match split {
        Split::One => Vec::new(),
        Split::Many(e) => e
            .items
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect(),
    }
}

#[test]
fn a_top_level_array_is_split_into_its_elements_as_sent() {
    let payload = br#" [ {"co2": 400, "time": 1}, {"co2":401} ,"x", [1] ] "#;
    let split = split(payload, &shape(None, 10)).unwrap();
    assert_eq!(
        items(&split),
        [
            r#"{"co2": 400, "time": 1}"#,
            r#"{"co2":401}"#,
            r#""x""#,
            "[1]"
        ]
    );
}

#[test]
fn an_object_is_one_reading_unless_it_holds_the_batch_member() {
    assert_eq!(split(br#"{"co2": 1}"#, &shape(None, 10)), Ok(Split::One));
    assert_eq!(
        split(br#"{"co2": 1}"#, &shape(Some("r"), 10)),
        Ok(Split::One)
    );
    assert_eq!(split(b"400", &shape(None, 10)), Ok(Split::One));
    assert_eq!(split(b"", &shape(None, 10)), Ok(Split::One));
    assert_eq!(
        split(br#"{"r": {"co2": 1}}"#, &shape(Some("r"), 10)),
        Err(Reason::BadBatch)
    );
}

#[test]
fn an_enclosing_object_gives_its_time_and_device() {
    let payload =
        br#"{"gw": {"deep": [1]}, "device": "gw-1", "time": 1700000000, "r": [{"co2": 1}]}"#;
    let Ok(Split::Many(e)) = split(payload, &shape(Some("r"), 10)) else {
        panic!("not a batch");
    };
    assert_eq!(e.items, [br#"{"co2": 1}"#.as_slice()]);
    assert_eq!(e.device, Some(Leaf::Text("gw-1".to_owned())));
    assert!(matches!(e.time, Some(Leaf::Number(_))));
}

#[test]
fn bounds_and_broken_batches_are_refused_whole() {
    let over = format!("[{}]", ["{}"; 11].join(","));
    assert_eq!(
        split(over.as_bytes(), &shape(None, 10)),
        Err(Reason::TooManyElements)
    );
    let full = format!("[{}]", ["{}"; 10].join(","));
    assert_eq!(
        items(&split(full.as_bytes(), &shape(None, 10)).unwrap()).len(),
        10
    );
    assert_eq!(
        split(b"[]", &shape(None, 10)),
        Err(Reason::NoStorableFields)
    );
    assert_eq!(split(b"[{}", &shape(None, 10)), Err(Reason::BadJson));
    assert_eq!(split(b"[{}] x", &shape(None, 10)), Err(Reason::BadJson));
    assert_eq!(
        split(br#"{"r": [], "r": [{}]}"#, &shape(Some("r"), 10)),
        Err(Reason::DuplicateField)
    );
    // Members the batch does not use may repeat: they are not read.
    assert!(split(br#"{"x": 1, "x": 2, "r": [{}]}"#, &shape(Some("r"), 10)).is_ok());
}

#[test]
fn a_hostile_array_is_refused_at_the_element_too_many() {
    // 4 MiB of elements: refused after the bound, never a 2-million-entry list.
    let mut payload = b"[".to_vec();
    payload.extend(std::iter::repeat_n(b"0,".as_slice(), 2_000_000).flatten());
    payload.extend(b"0]");
    assert_eq!(
        split(&payload, &shape(None, 1000)),
        Err(Reason::TooManyElements)
    );
}

proptest! {
    #[test]
    fn split_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = split(&payload, &shape(None, 4));
        let _ = split(&payload, &shape(Some("r"), 4));
    }

    #[test]
    fn every_element_comes_back_as_sent(
        values in proptest::collection::vec((any::<i32>(), "[a-z]{0,6}"), 1..20)
    ) {
        let elements: Vec<String> = values
            .iter()
            .map(|(n, s)| format!(r#"{{"n": {n}, "s": "{s}"}}"#))
            .collect();
        let payload = format!("[{}]", elements.join(" , "));
        let split = split(payload.as_bytes(), &shape(None, 20)).unwrap();
        prop_assert_eq!(items(&split), elements.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

// Through the routes: one record per element, each element's own bytes.

const ROUTES: &str = r#"
[[routes]]
name = "buffered"
topics = ["buffered/{device}"]
decoder = "json"
[routes.json]
batch = true
max_elements = 3

[[routes]]
name = "gateway"
topics = ["gateway"]
decoder = "json"
trust_payload_device = true
[routes.json]
batch_field = "readings"
device_field = "device"
time_field = "ts"
"#;

fn routes() -> Routes {
    let settings: Settings = toml::from_str(ROUTES).unwrap();
    Routes::from_settings(&settings).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn deliver(routes: &Routes, topic: &'static str, payload: &'static str) -> Vec<Record> {
    routes.records(
        &Origin::Mqtt(Bytes::from_static(topic.as_bytes())),
        Bytes::from_static(payload.as_bytes()),
        None,
        now(),
    )
}

#[test]
fn each_element_is_a_record_and_a_bad_one_a_dead_letter_of_its_own() {
    let routes = routes();
    let records = deliver(
        &routes,
        "buffered/pi",
        r#"[{"time": 1799999000, "co2": 400}, {"time": "yesterday", "co2": 401}, {"co2": 402}]"#,
    );
    assert_eq!(records.len(), 3);
    let Record::Decoded {
        message, payload, ..
    } = &records[0]
    else {
        panic!("{:?}", records[0]);
    };
    assert_eq!(message.device.as_str(), "pi");
    assert_eq!(message.time.and_utc().timestamp(), 1_799_999_000);
    assert_eq!(message.field("co2"), Some(&Value::Float(400.0)));
    assert_eq!(&payload[..], br#"{"time": 1799999000, "co2": 400}"#);
    let Record::Rejected { letter, .. } = &records[1] else {
        panic!("{:?}", records[1]);
    };
    assert_eq!(letter.reason, Reason::BadDatetime);
    assert_eq!(letter.payload, br#"{"time": "yesterday", "co2": 401}"#);
    assert_eq!(letter.detail.as_deref(), Some("element 2 of 3"));
    // Without a time, stamped when received, a microsecond apart.
    let Record::Decoded { message, .. } = &records[2] else {
        panic!("{:?}", records[2]);
    };
    assert_eq!(message.time.and_utc().timestamp(), now().timestamp());
}

#[test]
fn a_batch_over_the_bound_is_one_dead_letter() {
    let records = deliver(&routes(), "buffered/pi", "[{}, {}, {}, {}]");
    assert_eq!(records.len(), 1);
    assert!(
        matches!(&records[0], Record::Rejected { letter, .. } if letter.reason == Reason::TooManyElements)
    );
}

#[test]
fn elements_inherit_the_gateways_device_and_time_and_may_name_their_own() {
    let records = deliver(
        &routes(),
        "gateway",
        r#"{"device": "gw-1", "ts": 1799990000, "readings": [{"co2": 1}, {"co2": 2, "device": "s-2", "ts": 1799990060}]}"#,
    );
    let seen: Vec<(String, i64)> = records
        .iter()
        .map(|r| match r {
            Record::Decoded { message, .. } => (
                message.device.as_str().to_owned(),
                message.time.and_utc().timestamp(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("gw-1".to_owned(), 1_799_990_000),
            ("s-2".to_owned(), 1_799_990_060)
        ]
    );
}

#[test]
fn a_route_without_batch_still_refuses_an_array() {
    let settings: Settings = toml::from_str(
        "[[routes]]\nname = \"plain\"\ntopics = [\"plain/{device}\"]\ndecoder = \"json\"\n",
    )
    .unwrap();
    let routes = Routes::from_settings(&settings).unwrap();
    let records = deliver(&routes, "plain/pi", r#"[{"co2": 1}]"#);
    assert!(
        matches!(&records[..], [Record::Rejected { letter, .. }] if letter.reason == Reason::NotAnObject)
    );
}
