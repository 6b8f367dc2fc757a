use super::build::co2_layout;
use super::*;
use crate::config::{ConfigError, Settings};
use crate::model::{Origin, Record};

fn settings(extra: &str) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "co2-routes-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bridge.toml");
    std::fs::write(&file, extra).unwrap();
    let s = Settings::load_from(Some(&file), Vec::<(String, String)>::new());
    std::fs::remove_dir_all(dir).unwrap();
    s
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

const BINS: &str = r#"
[[routes]]
name = "bins"
topics = ["bins/level"]
decoder = "delimited"
table = "bin_levels"
trust_payload_device = true
[routes.delimited]
fields = [
  { column = "level", type = "number", flag_word = "FULL", flag_column = "full" },
  { column = "bin_id", type = "device" },
  { column = "measured_at", type = "datetime", span = 2 },
]
"#;

#[test]
fn the_co2_route_needs_no_configuration() {
    let routes = Routes::from_settings(&settings("").unwrap()).unwrap();
    assert_eq!(
        routes.subscriptions(),
        [
            "co2/+/emissions",
            "co2/emissions",
            "co2/+/events",
            "co2/events"
        ]
    );
    match routes.record(
        &Origin::Mqtt(Bytes::from_static(b"co2/pi/emissions")),
        Bytes::from_static(b"2020-07-13 22:43:23|3500"),
        None,
        now(),
    ) {
        Record::Decoded { route, message, .. } => {
            let r = routes.get(route).unwrap();
            assert_eq!(
                (r.name(), r.table(), r.sink(), message.device.as_str()),
                ("co2", "co2_emissions", DEFAULT_SINK, "pi")
            );
            assert!(message.reading.is_some());
        }
        other => panic!("{other:?}"),
    }
    match routes.record(
        &Origin::Mqtt(Bytes::from_static(b"elsewhere")),
        Bytes::new(),
        None,
        now(),
    ) {
        Record::Rejected { letter, route } => {
            assert_eq!(
                (letter.reason, routes.label(route)),
                (Reason::NoRoute, UNROUTED)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_shipped_bin_example_routes_to_bin_levels() {
    let routes = Routes::from_settings(&settings(BINS).unwrap()).unwrap();
    assert_eq!(
        routes.subscriptions(),
        [
            "co2/+/emissions",
            "co2/emissions",
            "co2/+/events",
            "co2/events",
            "bins/level"
        ]
    );
    match routes.record(
        &Origin::Mqtt(Bytes::from_static(b"bins/level")),
        Bytes::from_static(b"FULL bin-3 2020-07-13 22:43:23"),
        None,
        now(),
    ) {
        Record::Decoded { route, message, .. } => {
            let r = routes.get(route).unwrap();
            assert_eq!(r.name(), "bins");
            assert_eq!(r.column_names(), ["level", "bin_id", "measured_at", "full"]);
            assert_eq!(message.device.as_str(), "bin-3");
            assert_eq!(message.field("full"), Some(&Value::Int(1)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_routes_are_named_with_the_key() {
    let cases = [
        (
            BINS.replace("table = \"bin_levels\"\n", ""),
            "route \"bins\": `table`",
        ),
        (
            BINS.replace("bin_levels", "bin levels"),
            "route \"bins\": `table`",
        ),
        (
            BINS.replace("bins/level", "co2/#"),
            "route \"bins\": `topics`",
        ),
        (
            BINS.replace("span = 2", "span = 0"),
            "route \"bins\": `delimited.fields[2]`",
        ),
        (
            BINS.replace("decoder = \"delimited\"", "decoder = \"xml\""),
            "decoder",
        ),
        (
            BINS.replace("name = \"bins\"", "name = \"co2\""),
            "route \"co2\": `name`",
        ),
        (
            format!("{BINS}[routes.columns]\nnope = \"x\"\n"),
            "route \"bins\": `columns.nope`",
        ),
    ];
    for (toml, want) in cases {
        let err = settings(&toml).and_then(|s| Routes::from_settings(&s).map(|_| ()));
        let err = err.expect_err(want).to_string();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    let overlap_ok = BINS
        .replace("bins/level", "co2/#")
        .replace("name = \"bins\"", "name = \"bins\"\nallow_overlap = true");
    assert!(Routes::from_settings(&settings(&overlap_ok).unwrap()).is_ok());
}

#[test]
fn a_panicking_decoder_costs_one_dead_letter() {
    let routes = Routes::from_settings(&settings(BINS).unwrap())
        .unwrap()
        .with_faults(Faults::parse("decode-panic=BOOM"));
    let record = |payload: &'static [u8]| {
        routes.record(
            &Origin::Mqtt(Bytes::from_static(b"co2/pi/emissions")),
            Bytes::from_static(payload),
            None,
            now(),
        )
    };
    match record(b"2020-07-13 22:43:23|BOOM") {
        Record::Rejected { route, letter } => {
            assert_eq!(
                (routes.label(route), letter.reason),
                ("co2", Reason::DecoderPanic)
            );
            assert_eq!(letter.payload, b"2020-07-13 22:43:23|BOOM");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        record(b"2020-07-13 22:43:23|1"),
        Record::Decoded { .. }
    ));
}

#[test]
fn refused_messages_keep_their_route_label() {
    let routes = Routes::from_settings(&settings(BINS).unwrap()).unwrap();
    let refused = |topic: &'static [u8]| match routes.refuse(
        &Origin::Mqtt(Bytes::from_static(topic)),
        b"x",
        Reason::CrashedBridge,
    ) {
        Record::Rejected { route, letter } => (routes.label(route).to_owned(), letter.reason),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(b"bins/level"),
        ("bins".into(), Reason::CrashedBridge)
    );
    assert_eq!(
        refused(b"nowhere"),
        ("unrouted".into(), Reason::CrashedBridge)
    );
}

const TAGGED: &str = r#"
[[routes]]
name = "rooms"
topics = ["sensors/{device}/{room}/dht11", "sensors/{device}/dht11"]
decoder = "json"

[[routes]]
name = "mapped"
topics = ["mapped/{device}/{room}/{floor}"]
decoder = "json"
table = "climate"
[routes.json]
mode = "columns"
fields = { temp = "temperature" }

[[routes]]
name = "shelly"
topics = ["shellies/{device}/relay/{channel}/{field}"]
decoder = "value"

[[routes]]
name = "docs"
topics = ["docs/{device}/{kind}"]
decoder = "json"
[routes.json]
mode = "document"
"#;

fn decoded(routes: &Routes, topic: &'static str, payload: &'static str) -> (String, Message) {
    match routes.record(
        &Origin::Mqtt(Bytes::from_static(topic.as_bytes())),
        Bytes::from_static(payload.as_bytes()),
        None,
        now(),
    ) {
        Record::Decoded { route, message, .. } => (routes.label(Some(route)).to_owned(), message),
        other => panic!("{topic}: {other:?}"),
    }
}

fn tags(message: &Message) -> Vec<(&str, &str)> {
    message
        .tags
        .iter()
        .map(|(n, v)| (&**n, v.as_str()))
        .collect()
}

#[test]
fn named_levels_become_tags() {
    let routes = Routes::from_settings(&settings(TAGGED).unwrap()).unwrap();
    let (route, m) = decoded(&routes, "sensors/pi/kitchen/dht11", r#"{"temp": 21}"#);
    assert_eq!((route.as_str(), m.device.as_str()), ("rooms", "pi"));
    assert_eq!(tags(&m), [("room", "kitchen")]);
    let (_, m) = decoded(&routes, "sensors/pi/dht11", r#"{"temp": 21}"#);
    assert!(m.tags.is_empty(), "the other filter has no room level");
    let r = routes.by_name("rooms").unwrap().1;
    assert_eq!((r.table(), r.layout()), ("readings", &Layout::readings()));

    let (_, m) = decoded(&routes, "mapped/pi/attic/2", r#"{"temp": 21}"#);
    assert_eq!(tags(&m), [("room", "attic"), ("floor", "2")]);
    let r = routes.by_name("mapped").unwrap().1;
    assert_eq!(
        r.column_names(),
        ["device", "time", "temperature", "room", "floor"]
    );

    let (_, m) = decoded(&routes, "shellies/sh-1/relay/0/power", "12.5");
    assert_eq!(tags(&m), [("channel", "0")]);
    assert_eq!(m.field("power"), Some(&Value::Float(12.5)));
    assert_eq!(routes.by_name("shelly").unwrap().1.table(), "readings");

    let (_, m) = decoded(&routes, "docs/pi/event", r#"{"a": [1, 2]}"#);
    assert_eq!(tags(&m), [("kind", "event")]);
    let r = routes.by_name("docs").unwrap().1;
    assert_eq!(r.table(), "documents");
    assert_eq!(
        r.column_names(),
        ["device", "topic", "time", "tags", "document", "content_key"]
    );
}

#[test]
fn a_bad_tag_is_a_dead_letter_of_its_route() {
    let routes = Routes::from_settings(&settings(TAGGED).unwrap()).unwrap();
    let long = format!("sensors/pi/{}/dht11", "r".repeat(65));
    let sixty_four = format!("sensors/pi/{}/dht11", "r".repeat(64));
    for (topic, want) in [
        ("sensors/pi//dht11".to_owned(), Some(Reason::BadTag)),
        ("sensors/pi/a\u{7}b/dht11".to_owned(), Some(Reason::BadTag)),
        (long, Some(Reason::BadTag)),
        (sixty_four, None),
        ("sensors/pi/Küche im 1. Stock/dht11".to_owned(), None),
    ] {
        let record = routes.record(
            &Origin::Mqtt(Bytes::from(topic.clone().into_bytes())),
            Bytes::from_static(br#"{"t": 1}"#),
            None,
            now(),
        );
        match (record, want) {
            (Record::Rejected { route, letter }, Some(reason)) => {
                assert_eq!(
                    (routes.label(route), letter.reason),
                    ("rooms", reason),
                    "{topic}"
                )
            }
            (Record::Decoded { .. }, None) => {}
            (other, _) => panic!("{topic}: {other:?}"),
        }
    }
}

#[test]
fn tags_that_a_table_cannot_keep_are_refused_at_start() {
    let cases = [
        (
            "[mqtt]\ntopics = [\"co2/{device}/{room}/emissions\"]\n".to_owned(),
            "route \"co2\": `mqtt.topics`: the level {room}",
        ),
        (
            "[[routes]]\nname = \"cam\"\ntopics = [\"cam/{device}/{angle}\"]\ndecoder = \"binary\"\n"
                .to_owned(),
            "route \"cam\": `topics`: the level {angle}",
        ),
        (
            TAGGED.replace("mapped/{device}/{room}/{floor}", "mapped/{device}/{time}"),
            "route \"mapped\": `topics`: the level {time} is also a column",
        ),
        (
            TAGGED.replace("mode = \"columns\"", "mode = \"columns\"\nmax_depth = 32"),
            "route \"mapped\": `json.max_depth`",
        ),
        (
            TAGGED.replace("mode = \"document\"", "mode = \"document\"\ntime_zone = \"Mars/Olympus\""),
            "route \"docs\": `json.time_zone`",
        ),
        (
            TAGGED.replace("mode = \"document\"", "mode = \"document\"\nfields = { a = \"b\" }"),
            "route \"docs\": `json.fields`",
        ),
        (
            TAGGED.replace("mode = \"document\"", "mode = \"document\"\nmax_fields = 0"),
            "route \"docs\": `json.max_fields`",
        ),
        (
            TAGGED.replace("{channel}/{field}", "{channel}/{channel}"),
            "route \"shelly\": `topics`",
        ),
    ];
    for (toml, want) in cases {
        let err = settings(&toml).and_then(|s| Routes::from_settings(&s).map(|_| ()));
        let err = err.expect_err(want).to_string();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

#[test]
fn a_payload_cannot_speak_for_another_device() {
    let pi = DeviceId::parse("pi").unwrap();
    let other = DeviceId::parse("other").unwrap();
    let clock = ReceiveClock::default();
    let decoder = Decoder::default();
    let times = MessageTimes::new(&decoder, Some(co2_wire::Zone::UTC), now());
    let ctx = |from_source, trust| Context {
        device: &pi,
        device_from_source: from_source,
        trust_payload_device: trust,
        seq: None,
        now: now(),
        topic: "t",
        tags: &[],
        route: 0,
        clock: &clock,
        times: &times,
    };
    // The topic or token names `pi`.
    for trust in [false, true] {
        assert_eq!(ctx(true, trust).device_named(None), Ok(pi.clone()));
        assert_eq!(
            ctx(true, trust).device_named(Some(pi.clone())),
            Ok(pi.clone())
        );
        assert_eq!(
            ctx(true, trust).device_named(Some(other.clone())),
            Err(Reason::DeviceMismatch)
        );
    }
    // A topic without a device level: the default, or the payload's if trusted.
    assert_eq!(ctx(false, false).device_named(None), Ok(pi.clone()));
    assert_eq!(
        ctx(false, false).device_named(Some(other.clone())),
        Err(Reason::UntrustedDevice)
    );
    assert_eq!(
        ctx(false, true).device_named(Some(other.clone())),
        Ok(other)
    );
}

#[test]
fn a_numbered_reading_keeps_its_number_and_announcements_have_their_route() {
    let routes = Routes::from_settings(&settings("").unwrap()).unwrap();
    let seq: Seq = "00000000000000ab:42".parse().unwrap();
    match routes.record(
        &Origin::Mqtt(Bytes::from_static(b"co2/pi/emissions")),
        Bytes::from_static(b"2020-07-13 22:43:23|3500"),
        Some(seq),
        now(),
    ) {
        Record::Decoded { message, .. } => {
            assert_eq!(
                message.field("seq_epoch"),
                Some(&Value::Text("00000000000000ab".into()))
            );
            assert_eq!(message.field("seq"), Some(&Value::Int(42)));
        }
        other => panic!("{other:?}"),
    }
    match routes.record(
        &Origin::Mqtt(Bytes::from_static(b"co2/pi/events")),
        Bytes::from_static(b"garbage"),
        None,
        now(),
    ) {
        Record::Rejected { route, letter } => {
            assert_eq!(
                (routes.label(route), letter.reason),
                (EVENTS_ROUTE, Reason::BadEvent)
            )
        }
        other => panic!("{other:?}"),
    }
    let layout = co2_layout();
    let columns: Vec<&str> = layout.columns().iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        columns,
        ["device", "date_time", "emissions", "seq_epoch", "seq"]
    );
}

#[test]
fn identifiers() {
    for ok in ["bin_levels", "_x", "A1"] {
        assert!(is_identifier(ok), "{ok}");
    }
    for bad in ["", "1a", "a-b", "a b", "a`b", "x;DROP", &"a".repeat(65)] {
        assert!(!is_identifier(bad), "{bad}");
    }
}
