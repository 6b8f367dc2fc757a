//! The InfluxDB line-protocol encoder: any measurement, tag, field key and
//! string value. A point that is accepted is exactly one line, and reading
//! it back the way influxd 1.x does gives the same values; a point that is
//! refused leaves the output as it was. Nothing can add a second point.
#![no_main]

use co2_bridge::line_protocol::parse::{lines, point, ParsedValue};
use co2_bridge::line_protocol::{check, push_point, FieldValue, Part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Eight bytes of numbers first, then five texts separated by 0xff
    // (never part of UTF-8, so every byte of text can be fuzzed).
    let (number, rest) = match data.split_at_checked(8) {
        Some((n, rest)) => (i64::from_le_bytes(n.try_into().unwrap_or_default()), rest),
        None => (0, data),
    };
    let mut parts = rest.split(|b| *b == 0xff).map(String::from_utf8_lossy);
    let mut next = || parts.next().unwrap_or_default().into_owned();
    let (measurement, tag_key, tag_value, field_key, text) = (next(), next(), next(), next(), next());
    let float = f64::from_bits(number.rotate_left(17) as u64);
    let float = if float.is_finite() { float } else { 0.5 };
    let fields = [
        (field_key.as_str(), FieldValue::Text(&text)),
        ("n", FieldValue::Int(number)),
        ("f", FieldValue::Float(float)),
        ("b", FieldValue::Bool(number < 0)),
    ];
    let mut out = String::from("kept 1\n");
    let result = push_point(
        &mut out,
        &measurement,
        [(tag_key.as_str(), tag_value.as_str())],
        fields,
        number,
    );
    let tag_written = !tag_key.is_empty() && !tag_value.is_empty();
    let acceptable = check(Part::Measurement, &measurement).is_ok()
        && check(Part::FieldKey, &field_key).is_ok()
        && (!tag_written
            || (check(Part::TagKey, &tag_key).is_ok() && check(Part::TagValue, &tag_value).is_ok()));
    assert_eq!(result.is_ok(), acceptable, "{result:?}");
    let Some(written) = out.strip_prefix("kept 1\n") else {
        panic!("the output before the point changed: {out:?}");
    };
    if result.is_err() {
        assert_eq!(written, "", "a refused point left text behind");
        return;
    }
    let found = lines(written);
    assert_eq!(found.len(), 1, "{written:?} is not one line");
    let parsed = point(found[0]).unwrap_or_else(|e| panic!("{written:?}: {e}"));
    assert_eq!(parsed.measurement, measurement);
    let tags = if tag_written {
        vec![(tag_key.clone(), tag_value.clone())]
    } else {
        Vec::new()
    };
    assert_eq!(parsed.tags, tags);
    assert_eq!(
        parsed.fields,
        [
            (field_key, ParsedValue::Text(text)),
            ("n".to_owned(), ParsedValue::Int(number)),
            ("f".to_owned(), ParsedValue::Float(float)),
            ("b".to_owned(), ParsedValue::Bool(number < 0)),
        ]
    );
    assert_eq!(parsed.timestamp, number);
});
