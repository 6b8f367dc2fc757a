//! One value as devices send it (a JSON leaf, or a bare payload) made into a
//! field's [`Value`]: numbers stay floating point whatever they look like, so
//! a field sent as `40` and later as `40.5` keeps one type (InfluxDB refuses a
//! field that changes type); strings that are plain decimal numbers are
//! numbers unless the route says otherwise; other text is kept, bounded.

use serde_json::Number;

use crate::model::Reason;
use crate::model::Value;

/// Longest text value kept, in characters: what a MySQL `TEXT` column holds
/// in utf8mb4 (65,535 bytes), and well under InfluxDB's 64 KiB string field.
pub const MAX_TEXT_CHARS: usize = 16_383;

/// A JSON value as the flattening finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// `null`: nothing to store.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as JSON wrote it (an integer keeps its digits, for device ids).
    Number(Number),
    /// A string.
    Text(String),
    /// An object or array where a single value was wanted (a time, a device).
    Nested,
}

impl Leaf {
    /// The field value of this leaf; `None` for null (skipped).
    pub fn into_value(self, numeric_strings: bool) -> Result<Option<Value>, Reason> {
        match self {
            Leaf::Null | Leaf::Nested => Ok(None),
            Leaf::Bool(b) => Ok(Some(Value::Bool(b))),
            // serde_json refuses what is not finite, so every number has an f64.
            Leaf::Number(n) => Ok(n.as_f64().map(Value::Float)),
            Leaf::Text(text) => {
                if numeric_strings {
                    if let Some(number) = plain_number(&text)? {
                        return Ok(Some(Value::Float(number)));
                    }
                }
                text_value(text).map(Some)
            }
        }
    }
}

/// Text as a value, refused when longer than [`MAX_TEXT_CHARS`].
pub fn text_value(text: String) -> Result<Value, Reason> {
    if text.chars().nth(MAX_TEXT_CHARS).is_some() {
        return Err(Reason::FieldTooLong);
    }
    Ok(Value::Text(text))
}

/// The number `text` writes, if it is a plain decimal one: an optional sign,
/// digits with an optional fraction, an optional exponent, and spaces around
/// (`"21.0"`, `" 40 "`, `"-.5"`, `"1e-05"`, what Python's `str()` makes of a
/// float). Anything else (`"0x1F"`, `"1,5"`, `"nan"`, `"inf"`, `""`) is not a
/// number. One that is but overflows (`"1e400"`) is `not_finite`.
pub fn plain_number(text: &str) -> Result<Option<f64>, Reason> {
    let text = text.trim();
    if !is_plain_decimal(text.as_bytes()) {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Err(Reason::NotFinite),
        Err(_) => Ok(None),
    }
}

/// `[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?`
fn is_plain_decimal(bytes: &[u8]) -> bool {
    let digits = |from: usize| {
        bytes.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let whole = digits(at);
    at += whole;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        fraction = digits(at);
        at += fraction;
    }
    if whole == 0 && fraction == 0 {
        return false;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
        let exponent = digits(at);
        if exponent == 0 {
            return false;
        }
        at += exponent;
    }
    at == bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_decimals_are_numbers() {
        for (text, want) in [
            ("21.0", 21.0),
            (" 40 ", 40.0),
            ("-.5", -0.5),
            ("+3.", 3.0),
            ("1e-05", 1e-5),
            ("1E+16", 1e16),
            ("\t007\n", 7.0),
            ("-0", 0.0),
        ] {
            assert_eq!(plain_number(text), Ok(Some(want)), "{text:?}");
        }
    }

    #[test]
    fn other_text_is_not_a_number() {
        for text in [
            "", " ", ".", "-", "+-1", "1.2.3", "0x1F", "1,5", "nan", "NaN", "inf", "-inf",
            "infinity", "1e", "1e+", "e5", "12abc", "1 2", "٣", "1_000", "²",
        ] {
            assert_eq!(plain_number(text), Ok(None), "{text:?}");
        }
        assert_eq!(plain_number("1e400"), Err(Reason::NotFinite));
        assert_eq!(plain_number("-1e400"), Err(Reason::NotFinite));
    }

    #[test]
    fn leaves_become_values() {
        let text = |s: &str| Leaf::Text(s.to_owned());
        assert_eq!(text("21.0").into_value(true), Ok(Some(Value::Float(21.0))));
        assert_eq!(
            text("21.0").into_value(false),
            Ok(Some(Value::Text("21.0".into())))
        );
        assert_eq!(
            text("zzerii").into_value(true),
            Ok(Some(Value::Text("zzerii".into())))
        );
        assert_eq!(
            Leaf::Number(Number::from(40)).into_value(true),
            Ok(Some(Value::Float(40.0))),
            "a JSON integer is a float like any other number"
        );
        assert_eq!(
            Leaf::Bool(true).into_value(true),
            Ok(Some(Value::Bool(true)))
        );
        assert_eq!(Leaf::Null.into_value(true), Ok(None));
        let long = "x".repeat(MAX_TEXT_CHARS);
        assert!(text(&long).into_value(true).is_ok());
        assert_eq!(
            text(&format!("{long}x")).into_value(true),
            Err(Reason::FieldTooLong)
        );
    }

    proptest! {
        /// Every finite float, written the ways programs write it, reads back
        /// as the same number.
        #[test]
        fn written_numbers_read_back(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            for text in [format!("{v}"), format!("{v:e}"), format!(" {v:?} "), format!("{v:.3}")] {
                let got = plain_number(&text).unwrap();
                prop_assert!(got.is_some(), "{} is not read as a number", text);
                let want: f64 = text.trim().parse().unwrap();
                prop_assert_eq!(got, Some(want));
            }
        }

        /// Over the characters a decimal is written with, the rule is Rust's
        /// float grammar exactly (which has no hex, no `_`, no commas), and
        /// what overflows is `not_finite`.
        #[test]
        fn the_rule_is_the_float_grammar(s in r"\s?[0-9eE+\-.]{0,10}\s?") {
            let rust = s.trim().parse::<f64>().ok();
            match plain_number(&s) {
                Ok(v) => prop_assert_eq!(v, rust),
                Err(reason) => {
                    prop_assert_eq!(reason, Reason::NotFinite);
                    prop_assert!(rust.is_some_and(|v| !v.is_finite()));
                }
            }
        }

        /// A letter, a non-ASCII digit or a separator anywhere makes it text.
        #[test]
        fn anything_else_is_text(s in r"[0-9.]{0,4}[a-df-zA-DF-Z٣²_,/][0-9.]{0,4}") {
            prop_assert_eq!(plain_number(&s), Ok(None));
        }
    }
}
