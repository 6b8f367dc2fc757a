//! InfluxDB line protocol, the encoding half: one point is one line,
//! `measurement,tag=v field=1,other="text" 1700000000000`.
//!
//! Escaping follows what InfluxDB 1.x's parser undoes (checked against
//! influxd 1.6.7): `,` and space in a measurement; `,`, `=` and space in tag
//! keys, tag values and field keys (plus `"` in field keys); `\` and `"` in
//! string values, where a line break may stand as it is. What that parser
//! cannot carry exactly is refused here rather than stored altered or split
//! into a second point: a line break in a name or tag (there is no escape for
//! it outside string values), a `\` before a character it would then escape
//! or at the end, a measurement starting with `#` (a comment line) or with a
//! tab or NUL (skipped as leading whitespace), and empty names.

use std::fmt::Write as _;

use chrono::NaiveDateTime;

use crate::config::Precision;

/// Why a point cannot be written as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A name or tag that line protocol cannot carry exactly.
    #[error("{part} {text:?} cannot be written in InfluxDB line protocol: {why}")]
    Unrepresentable {
        /// Which part of the point (`measurement`, `tag key`, ...).
        part: &'static str,
        /// The text (its first 64 characters).
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A time outside InfluxDB's range.
    #[error("time {0} is outside what InfluxDB can store (1677-09-21 to 2262-04-11 UTC)")]
    TimeOutOfRange(NaiveDateTime),
    /// Nothing left to write once null fields are skipped.
    #[error("no field to write: InfluxDB needs at least one (null fields are skipped)")]
    NoFields,
    /// A field whose value InfluxDB has no type for.
    #[error("field {0:?} holds binary data, which InfluxDB cannot store")]
    Binary(String),
    /// NaN or infinity, which line protocol has no literal for.
    #[error("field {0:?} is not a finite number")]
    NotFinite(String),
}

/// A field value with one of InfluxDB's field types.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// A float (`1.5`).
    Float(f64),
    /// A signed integer (`3i`).
    Int(i64),
    /// A string (`"text"`).
    Text(&'a str),
    /// A boolean (`true`).
    Bool(bool),
}

/// Where in a point a name stands; each place has its own escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The measurement.
    Measurement,
    /// A tag key.
    TagKey,
    /// A tag value.
    TagValue,
    /// A field key.
    FieldKey,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
        }
    }

    /// Characters the parser reads as separators here, written with a `\`.
    fn escaped(self, c: char) -> bool {
        match self {
            Part::Measurement => matches!(c, ',' | ' '),
            Part::TagKey | Part::TagValue => matches!(c, ',' | ' ' | '='),
            Part::FieldKey => matches!(c, ',' | ' ' | '=' | '"'),
        }
    }
}

/// Checks that `text` can stand as `part` of a point, exactly as it is.
pub fn check(part: Part, text: &str) -> Result<(), LineError> {
    let refuse = |why| {
        Err(LineError::Unrepresentable {
            part: part.label(),
            text: text.chars().take(64).collect(),
            why,
        })
    };
    let mut chars = text.chars().peekable();
    match chars.peek() {
        None => return refuse("it is empty"),
        Some('#') if part == Part::Measurement => {
            return refuse("a line starting with # is a comment")
        }
        Some('\t' | '\0') if matches!(part, Part::Measurement | Part::FieldKey) => {
            return refuse("a leading tab or NUL is dropped as whitespace")
        }
        Some(_) => {}
    }
    while let Some(c) = chars.next() {
        match c {
            '\n' => return refuse("a line break ends the point and cannot be escaped here"),
            '\\' => match chars.peek() {
                None => return refuse("a trailing backslash would escape the separator after it"),
                Some(&next) if next == '\\' || part.escaped(next) => {
                    return refuse(
                        "a backslash before a separator or another backslash is read as an escape",
                    )
                }
                Some(_) => {}
            },
            _ => {}
        }
    }
    Ok(())
}

/// Appends `text` as `part`, escaped; refuses what cannot be carried exactly.
pub fn push_name(out: &mut String, part: Part, text: &str) -> Result<(), LineError> {
    check(part, text)?;
    for c in text.chars() {
        if part.escaped(c) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(())
}

/// Appends a field value in line protocol.
fn push_value(out: &mut String, key: &str, value: FieldValue<'_>) -> Result<(), LineError> {
    match value {
        FieldValue::Float(v) if !v.is_finite() => return Err(LineError::NotFinite(key.to_owned())),
        // Display is the shortest text that reads back as the same f64, and
        // without a suffix line protocol reads it as a float even when it is `3`.
        FieldValue::Float(v) => {
            let _ = write!(out, "{v}");
        }
        FieldValue::Int(v) => {
            let _ = write!(out, "{v}i");
        }
        FieldValue::Bool(v) => out.push_str(if v { "true" } else { "false" }),
        FieldValue::Text(s) => {
            out.push('"');
            for c in s.chars() {
                if matches!(c, '"' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    Ok(())
}

/// Appends one point and its line break to `out`; on error `out` is left as it was.
///
/// Tags with an empty key or value are left out (InfluxDB has no empty tag);
/// at least one field is needed.
pub fn push_point<'a>(
    out: &mut String,
    measurement: &str,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    fields: impl IntoIterator<Item = (&'a str, FieldValue<'a>)>,
    timestamp: i64,
) -> Result<(), LineError> {
    let start = out.len();
    let result = encode(out, measurement, tags, fields, timestamp);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode<'a>(
    out: &mut String,
    measurement: &str,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    fields: impl IntoIterator<Item = (&'a str, FieldValue<'a>)>,
    timestamp: i64,
) -> Result<(), LineError> {
    push_name(out, Part::Measurement, measurement)?;
    for (key, value) in tags {
        if key.is_empty() || value.is_empty() {
            continue;
        }
        out.push(',');
        push_name(out, Part::TagKey, key)?;
        out.push('=');
        push_name(out, Part::TagValue, value)?;
    }
    let mut separator = ' ';
    for (key, value) in fields {
        out.push(separator);
        separator = ',';
        push_name(out, Part::FieldKey, key)?;
        out.push('=');
        push_value(out, key, value)?;
    }
    if separator == ' ' {
        return Err(LineError::NoFields);
    }
    let _ = writeln!(out, " {timestamp}");
    Ok(())
}

/// Nanoseconds InfluxDB can store on either side of 1970 (its own limits).
const MIN_NS: i64 = i64::MIN + 2;
const MAX_NS: i64 = i64::MAX - 1;

/// `time` (UTC) as a timestamp in `precision`, rounded down.
pub fn timestamp(time: NaiveDateTime, precision: Precision) -> Result<i64, LineError> {
    let ns = time
        .and_utc()
        .timestamp_nanos_opt()
        .filter(|ns| (MIN_NS..=MAX_NS).contains(ns))
        .ok_or(LineError::TimeOutOfRange(time))?;
    Ok(ns.div_euclid(precision.nanos()))
}

impl Precision {
    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// The `precision` parameter of `/write`, as InfluxDB 1.x reads it
    /// (it takes `us` for nanoseconds; nanoseconds are its default).
    pub fn query_value(self) -> Option<&'static str> {
        match self {
            Precision::Ns => None,
            Precision::Us => Some("u"),
            Precision::Ms => Some("ms"),
            Precision::S => Some("s"),
        }
    }
}

#[cfg(any(test, fuzzing))]
pub mod parse {
    //! A small line-protocol reader modelled on InfluxDB 1.x's (models/points.go),
    //! for the tests and the fuzz target only: it splits lines and undoes
    //! escapes the way the server does, so what it reads back is what the
    //! server would store.

    /// One parsed point.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Parsed {
        /// The measurement.
        pub measurement: String,
        /// Tags, in line order.
        pub tags: Vec<(String, String)>,
        /// Fields, in line order.
        pub fields: Vec<(String, ParsedValue)>,
        /// The timestamp, in the write's precision.
        pub timestamp: i64,
    }

    /// A parsed field value.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ParsedValue {
        /// A float.
        Float(f64),
        /// An integer.
        Int(i64),
        /// A string.
        Text(String),
        /// A boolean.
        Bool(bool),
    }

    /// Splits `text` into lines as the server does: at a line break that is
    /// neither escaped nor inside a string value.
    pub fn lines(text: &str) -> Vec<&str> {
        let bytes = text.as_bytes();
        let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
        let (mut quoted, mut in_fields, mut equals, mut commas) = (false, false, 0, 0);
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\\' && i + 2 < bytes.len() {
                i += 2;
                continue;
            }
            if b == b' ' {
                in_fields = true;
            }
            if in_fields && !quoted && b == b'=' {
                equals += 1;
            } else if in_fields && !quoted && b == b',' {
                commas += 1;
            } else if in_fields && b == b'"' && equals > commas {
                quoted = !quoted;
            } else if b == b'\n' && !quoted {
                out.push(&text[start..i]);
                start = i + 1;
                (in_fields, equals, commas) = (false, 0, 0);
            }
            i += 1;
        }
        if start < text.len() {
            out.push(&text[start..]);
        }
        out.into_iter().filter(|l| !l.trim().is_empty()).collect()
    }

    /// Reads `raw` up to the first unescaped `stop` character; returns it
    /// unescaped (only `\` + one of `unescapes`) and the rest from the stop.
    fn take<'a>(raw: &'a str, stops: &[char], unescapes: &[char]) -> (String, &'a str) {
        let mut out = String::new();
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                match chars.peek() {
                    Some(&(_, next)) => {
                        if !unescapes.contains(&next) {
                            out.push('\\');
                        }
                        out.push(next);
                        chars.next();
                    }
                    None => out.push('\\'),
                }
                continue;
            }
            if stops.contains(&c) {
                return (out, &raw[i..]);
            }
            out.push(c);
        }
        (out, "")
    }

    /// Parses one line; `Err` says what the server would refuse.
    pub fn point(line: &str) -> Result<Parsed, String> {
        let line = line.trim_start_matches([' ', '\t', '\0']);
        if line.starts_with('#') {
            return Err("comment".into());
        }
        let (measurement, mut rest) = take(line, &[',', ' '], &[',', ' ']);
        let mut tags = Vec::new();
        while let Some(r) = rest.strip_prefix(',') {
            let (key, r) = take(r, &['=', ',', ' '], &[',', ' ', '=']);
            let r = r.strip_prefix('=').ok_or("tag without =")?;
            let (value, r) = take(r, &[',', ' '], &[',', ' ', '=']);
            tags.push((key, value));
            rest = r;
        }
        let mut rest = rest.trim_start_matches([' ', '\t', '\0']);
        let mut fields = Vec::new();
        loop {
            let (key, r) = take(rest, &['='], &[',', ' ', '=', '"']);
            let r = r.strip_prefix('=').ok_or("field without =")?;
            let (value, r) = if let Some(body) = r.strip_prefix('"') {
                let mut text = String::new();
                let mut chars = body.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, n @ ('"' | '\\'))) => text.push(n),
                            Some((_, n)) => {
                                text.push('\\');
                                text.push(n);
                            }
                            None => text.push('\\'),
                        },
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => text.push(c),
                    }
                }
                let end = end.ok_or("unterminated string")?;
                (ParsedValue::Text(text), &body[end..])
            } else {
                let stop = r.find([',', ' ']).unwrap_or(r.len());
                let text = &r[..stop];
                let value = if let Some(int) = text.strip_suffix('i') {
                    ParsedValue::Int(int.parse().map_err(|_| format!("bad integer {text}"))?)
                } else if matches!(text, "t" | "T" | "true" | "True" | "TRUE") {
                    ParsedValue::Bool(true)
                } else if matches!(text, "f" | "F" | "false" | "False" | "FALSE") {
                    ParsedValue::Bool(false)
                } else {
                    ParsedValue::Float(text.parse().map_err(|_| format!("bad float {text}"))?)
                };
                (value, &r[stop..])
            };
            fields.push((key, value));
            match r.strip_prefix(',') {
                Some(r) => rest = r,
                None => {
                    rest = r;
                    break;
                }
            }
        }
        let timestamp = rest
            .trim()
            .parse()
            .map_err(|_| format!("bad timestamp {rest:?}"))?;
        Ok(Parsed {
            measurement,
            tags,
            fields,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{lines, point, ParsedValue};
    use super::*;
    use proptest::prelude::*;

    fn one(
        measurement: &str,
        tags: &[(&str, &str)],
        fields: &[(&str, FieldValue<'_>)],
    ) -> Result<String, LineError> {
        let mut out = String::new();
        push_point(
            &mut out,
            measurement,
            tags.iter().copied(),
            fields.iter().copied(),
            1_700_000_000_000,
        )?;
        Ok(out)
    }

    #[test]
    fn a_point_has_escaped_names_and_typed_fields() {
        let line = one(
            "co2/pi 1/emissions",
            &[("device", "pi 1"), ("room", "a,b=c")],
            &[
                ("emissions", FieldValue::Float(3.0)),
                ("count", FieldValue::Int(-7)),
                ("ok", FieldValue::Bool(true)),
                ("note", FieldValue::Text("say \"hi\"\\\nbye")),
            ],
        )
        .unwrap();
        assert_eq!(
            line,
            "co2/pi\\ 1/emissions,device=pi\\ 1,room=a\\,b\\=c \
             emissions=3,count=-7i,ok=true,note=\"say \\\"hi\\\"\\\\\nbye\" 1700000000000\n"
        );
        let parsed = point(lines(&line)[0]).unwrap();
        assert_eq!(
            parsed.fields[3].1,
            ParsedValue::Text("say \"hi\"\\\nbye".into())
        );
        assert_eq!(parsed.fields[0].1, ParsedValue::Float(3.0));
    }

    #[test]
    fn what_line_protocol_cannot_carry_is_refused_not_altered() {
        let refused = [
            (Part::TagValue, "a\nb"),
            (Part::TagValue, "ends\\"),
            (Part::TagValue, "a\\,b"),
            (Part::FieldKey, "a\\\"b"),
            (Part::Measurement, "#comment"),
            (Part::Measurement, "\tm"),
            (Part::TagKey, ""),
        ];
        for (part, text) in refused {
            assert!(check(part, text).is_err(), "{part:?} {text:?}");
        }
        for (part, text) in [
            (Part::TagValue, "a\\b"),
            (Part::TagValue, "#x"),
            (Part::Measurement, "m=1"),
            (Part::TagValue, "tab\there\r"),
        ] {
            assert!(check(part, text).is_ok(), "{part:?} {text:?}");
        }
        let mut out = String::from("kept\n");
        let err = push_point(
            &mut out,
            "m",
            [("t", "x\ny")],
            [("v", FieldValue::Int(1))],
            0,
        );
        assert!(err.is_err());
        assert_eq!(out, "kept\n", "a refused point leaves nothing behind");
        assert_eq!(one("m", &[], &[]), Err(LineError::NoFields));
        assert!(matches!(
            one("m", &[], &[("v", FieldValue::Float(f64::NAN))]),
            Err(LineError::NotFinite(_))
        ));
    }

    #[test]
    fn empty_tags_are_left_out() {
        let line = one(
            "m",
            &[("a", ""), ("", "b"), ("c", "d")],
            &[("v", FieldValue::Int(1))],
        )
        .unwrap();
        assert_eq!(line, "m,c=d v=1i 1700000000000\n");
    }

    #[test]
    fn timestamps_round_down_to_the_precision_and_stay_in_range() {
        let t = chrono::DateTime::from_timestamp(-1, 999_999_999)
            .unwrap()
            .naive_utc();
        assert_eq!(timestamp(t, Precision::Ns), Ok(-1));
        assert_eq!(timestamp(t, Precision::Ms), Ok(-1));
        assert_eq!(timestamp(t, Precision::S), Ok(-1));
        let t = chrono::DateTime::from_timestamp(1_594_680_203, 123_456_789)
            .unwrap()
            .naive_utc();
        assert_eq!(timestamp(t, Precision::Us), Ok(1_594_680_203_123_456));
        assert_eq!(timestamp(t, Precision::Ms), Ok(1_594_680_203_123));
        let far = chrono::NaiveDate::from_ymd_opt(9999, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap();
        assert!(matches!(
            timestamp(far, Precision::S),
            Err(LineError::TimeOutOfRange(_))
        ));
    }

    fn text() -> impl Strategy<Value = String> {
        // Mostly the characters that matter, plus anything at all.
        prop_oneof![
            proptest::collection::vec(
                prop_oneof![
                    Just(' '),
                    Just(','),
                    Just('='),
                    Just('"'),
                    Just('\\'),
                    Just('\n'),
                    Just('\r'),
                    Just('\t'),
                    Just('#'),
                    Just('é'),
                    proptest::char::range('a', 'e'),
                ],
                0..12
            )
            .prop_map(|c| c.into_iter().collect()),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Whatever the strings, an accepted point is exactly one line that
        /// reads back to the same values; nothing else is written.
        #[test]
        fn any_point_is_one_line_that_reads_back_the_same(
            measurement in text(),
            tag_key in text(),
            tag_value in text(),
            field_key in text(),
            string in text(),
            number in any::<i64>(),
            float in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            timestamp in any::<i64>(),
        ) {
            let mut out = String::new();
            let fields = [
                (field_key.as_str(), FieldValue::Text(&string)),
                ("n", FieldValue::Int(number)),
                ("f", FieldValue::Float(float)),
                ("b", FieldValue::Bool(number % 2 == 0)),
            ];
            let result = push_point(
                &mut out,
                &measurement,
                [(tag_key.as_str(), tag_value.as_str())],
                fields,
                timestamp,
            );
            let checks_pass = check(Part::Measurement, &measurement).is_ok()
                && check(Part::FieldKey, &field_key).is_ok()
                && (tag_key.is_empty() || tag_value.is_empty()
                    || (check(Part::TagKey, &tag_key).is_ok() && check(Part::TagValue, &tag_value).is_ok()));
            prop_assert_eq!(result.is_ok(), checks_pass);
            if result.is_err() {
                prop_assert_eq!(out, "");
                return Ok(());
            }
            let found = lines(&out);
            prop_assert_eq!(found.len(), 1, "{:?}", out);
            let parsed = point(found[0]).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&parsed.measurement, &measurement);
            let want_tags: Vec<(String, String)> = if tag_key.is_empty() || tag_value.is_empty() {
                Vec::new()
            } else {
                vec![(tag_key.clone(), tag_value.clone())]
            };
            prop_assert_eq!(&parsed.tags, &want_tags);
            prop_assert_eq!(&parsed.fields, &vec![
                (field_key.clone(), ParsedValue::Text(string.clone())),
                ("n".to_owned(), ParsedValue::Int(number)),
                ("f".to_owned(), ParsedValue::Float(float)),
                ("b".to_owned(), ParsedValue::Bool(number % 2 == 0)),
            ]);
            prop_assert_eq!(parsed.timestamp, timestamp);
        }

        /// Names without a line break, a backslash or a leading #/tab/NUL are
        /// always accepted: refusing is for what cannot be carried, nothing more.
        #[test]
        fn plain_names_are_always_accepted(name in "[^\\\\\n#\t\u{0}][^\\\\\n]{0,20}") {
            for part in [Part::Measurement, Part::TagKey, Part::TagValue, Part::FieldKey] {
                prop_assert!(check(part, &name).is_ok(), "{:?} {:?}", part, name);
            }
        }
    }
}
