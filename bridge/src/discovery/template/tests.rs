use super::*;
use proptest::prelude::*;
use serde_json::json;

fn apply(template: &str, payload: &str) -> Option<Value> {
    let t = Template::parse(template).expect("supported");
    let json = serde_json::from_str::<Json>(payload).ok();
    t.apply(json.as_ref(), payload)
}

#[test]
fn the_common_forms_are_read() {
    let z2m = r#"{"co2":359,"formaldehyd":1,"humidity":62.3,"linkquality":84,"temperature":21.1,"voc":14}"#;
    // Zigbee2MQTT writes subscripts with double quotes.
    assert_eq!(
        apply(r#"{{ value_json["co2"] }}"#, z2m),
        Some(Value::Float(359.0))
    );
    assert_eq!(
        apply("{{ value_json.humidity }}", z2m),
        Some(Value::Float(62.3))
    );
    assert_eq!(
        apply("{{value_json['temperature']}}", z2m),
        Some(Value::Float(21.1))
    );
    let tasmota = r#"{"Time":"2019-02-05T22:32:49","MHZ19B":{"CarbonDioxide":836,"Temperature":21.0},"TempUnit":"C"}"#;
    assert_eq!(
        apply("{{value_json['MHZ19B']['CarbonDioxide']}}", tasmota),
        Some(Value::Float(836.0))
    );
    assert_eq!(
        apply("{{value_json['MHZ19B'].Temperature}}", tasmota),
        Some(Value::Float(21.0))
    );
    assert_eq!(
        apply("{{ value_json.MHZ19B.Temperature }}", tasmota),
        Some(Value::Float(21.0))
    );
    assert_eq!(
        apply("{{ value_json.TempUnit }}", tasmota),
        Some(Value::Text("C".into()))
    );
    assert_eq!(apply("{{ value }}", " 21.5 "), Some(Value::Float(21.5)));
    assert_eq!(apply("{{ value }}", "on"), Some(Value::Text("on".into())));
    assert_eq!(
        apply("{{ value_json.values[1] }}", r#"{"values":[1,2]}"#),
        Some(Value::Float(2.0))
    );
}

#[test]
fn filters_apply_in_order() {
    assert_eq!(
        apply("{{ value | float }}", "21.5"),
        Some(Value::Float(21.5))
    );
    assert_eq!(apply("{{ value | int }}", "21.9"), Some(Value::Int(21)));
    assert_eq!(apply("{{ value | int }}", "-21.9"), Some(Value::Int(-21)));
    assert_eq!(
        apply("{{ value_json.t | round(1) }}", r#"{"t":21.46}"#),
        Some(Value::Float(21.5))
    );
    assert_eq!(
        apply("{{ value_json.t|float|round( 2 ) }}", r#"{"t":"21.456"}"#),
        Some(Value::Float(21.46))
    );
    assert_eq!(
        apply("{{ value_json.t | round }}", r#"{"t":2.5}"#),
        Some(Value::Float(3.0))
    );
    assert_eq!(
        apply("{{ value_json.on | int }}", r#"{"on":true}"#),
        Some(Value::Int(1))
    );
    // A filter that cannot apply leaves no value, as Home Assistant keeps the state.
    assert_eq!(apply("{{ value | float }}", "n/a"), None);
}

#[test]
fn absent_paths_give_nothing() {
    assert_eq!(apply("{{ value_json.co2 }}", r#"{"temperature":1}"#), None);
    assert_eq!(apply("{{ value_json.a.b }}", r#"{"a":3}"#), None);
    assert_eq!(apply("{{ value_json.a }}", r#"{"a":null}"#), None);
    assert_eq!(apply("{{ value_json.a }}", r#"{"a":{"b":1}}"#), None);
    assert_eq!(apply("{{ value_json.a }}", "not json"), None);
}

#[test]
fn everything_else_is_refused_never_run() {
    for t in [
        "{% for i in range(1000000000) %}{{ i }}{% endfor %}",
        "{{ value_json.a }}{{ value_json.b }}",
        "{{ value_json.a + 1 }}",
        "{{ value_json.a | default(0) }}",
        "{{ value_json.a | float(0) }}",
        "{{ value_json.a | round(11) }}",
        "{{ value_json.a | round(1 }}",
        "{{ value_json }}",
        "{{ value_json[value_json.k] }}",
        "{{ value_json['a\\'b'] }}",
        "{{ value_json['a }}",
        "{{ states('sensor.x') }}",
        "{{ value_json.a if value_json.a else 0 }}",
        "{{ 'x' * 1000000000 }}",
        "{{ value_json.a.b.c.d.e.f.g.h.i }}",
        "{{ value | float | float | float | float | float }}",
        "value_json.a",
        "",
    ] {
        assert!(Template::parse(t).is_err(), "{t} was accepted");
    }
    assert!(Template::parse(&format!("{{{{ value_json.{} }}}}", "a".repeat(300))).is_err());
}

#[test]
fn spaces_do_not_matter() {
    let forms = [
        "{{value_json.a}}",
        "{{ value_json.a }}",
        "  {{  value_json . a  }}  ",
        "{{ value_json [ 'a' ] }}",
    ];
    for f in forms {
        assert_eq!(
            Template::parse(f),
            Template::parse("{{ value_json.a }}"),
            "{f}"
        );
    }
    assert_eq!(
        Template::parse("{{ value_json.a|float|round(1) }}"),
        Template::parse("{{ value_json.a | float | round(1) }}")
    );
}

proptest! {
    #[test]
    fn parsing_any_text_never_panics(text in ".{0,300}") {
        let _ = Template::parse(&text);
    }

    #[test]
    fn a_generated_path_reads_what_it_names(
        keys in proptest::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,8}", 1..5),
        quoted in proptest::collection::vec(0u8..3, 5),
        value in -1.0e6f64..1.0e6,
    ) {
        let mut template = String::from("{{ value_json");
        for (key, q) in keys.iter().zip(&quoted) {
            match q {
                0 => template.push_str(&format!(".{key}")),
                1 => template.push_str(&format!("['{key}']")),
                _ => template.push_str(&format!("[\"{key}\"]")),
            }
        }
        template.push_str(" }}");
        let mut doc = json!(value);
        for key in keys.iter().rev() {
            let mut map = serde_json::Map::new();
            map.insert(key.clone(), doc);
            doc = Json::Object(map);
        }
        let t = Template::parse(&template).unwrap();
        let got = t.apply(Some(&doc), &doc.to_string());
        prop_assert_eq!(got, Some(Value::Float(value)));
    }

    #[test]
    fn applying_to_any_payload_never_panics(payload in ".{0,200}", template in prop::sample::select(vec![
        "{{ value }}", "{{ value | int }}", "{{ value | round(3) }}", "{{ value_json.a.b }}", "{{ value_json[0] }}",
    ])) {
        let t = Template::parse(template).unwrap();
        let json = serde_json::from_str::<Json>(&payload).ok();
        let _ = t.apply(json.as_ref(), &payload);
    }
}
