//! The `value_template`s the bridge evaluates: the few Jinja forms that
//! Zigbee2MQTT, Tasmota, ESPHome and most firmware announce. A template is
//! parsed once, when its announcement arrives, into a path and filters; a
//! state message is then read by walking that path. Nothing else is ever
//! evaluated: a template of any other form is refused when it is announced,
//! so no publisher can make the bridge run a program (a loop, a macro).
//!
//! Accepted, with any spaces between the parts:
//! `{{ value }}`, `{{ value_json.a }}`, `{{ value_json.a.b }}`,
//! `{{ value_json['a'] }}`, `{{ value_json["a"]['b'].c }}`, each optionally
//! followed by `| float`, `| int` and `| round(n)` (0 ≤ n ≤ 10), in any order.

use serde_json::Value as Json;

use crate::model::Value;

/// Longest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 256;
/// Most path steps (`value_json.a.b` is two).
pub const MAX_PATH: usize = 8;
/// Most filters after the path.
pub const MAX_FILTERS: usize = 4;
/// Longest text value kept (the `text_value` column holds 16,383 characters).
const MAX_TEXT_CHARS: usize = 16_383;

/// A parsed value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `None` for `value` (the payload as it is), else the `value_json` path.
    path: Option<Vec<String>>,
    filters: Vec<Filter>,
}

/// A Jinja filter the bridge applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `| float`: a number.
    Float,
    /// `| int`: a number truncated to an integer.
    Int,
    /// `| round(n)`: rounded half away from zero to `n` decimals.
    Round(u8),
}

/// Why a template is refused (the announcement's dead letter says it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported value_template: {0}")]
pub struct Unsupported(pub &'static str);

impl Default for Template {
    /// No template: the payload as it is (`{{ value }}`).
    fn default() -> Self {
        Self {
            path: None,
            filters: Vec::new(),
        }
    }
}

impl Template {
    /// Parses `text`, or says why its form is not one the bridge evaluates.
    pub fn parse(text: &str) -> Result<Self, Unsupported> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(Unsupported("longer than 256 bytes"));
        }
        let inner = text
            .trim()
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .ok_or(Unsupported("not a single {{ expression }}"))?;
        let mut p = Cursor { rest: inner };
        p.skip_spaces();
        let path = match p.ident() {
            Some("value") => None,
            Some("value_json") => Some(p.path()?),
            _ => return Err(Unsupported("reads neither value nor value_json")),
        };
        let mut filters = Vec::new();
        loop {
            p.skip_spaces();
            if p.rest.is_empty() {
                break;
            }
            if !p.eat('|') {
                return Err(Unsupported("an expression other than a path and filters"));
            }
            p.skip_spaces();
            let filter = match p.ident() {
                Some("float") => Filter::Float,
                Some("int") => Filter::Int,
                Some("round") => Filter::Round(p.round_digits()?),
                _ => return Err(Unsupported("a filter other than float, int, round(n)")),
            };
            filters.push(filter);
            if filters.len() > MAX_FILTERS {
                return Err(Unsupported("more than 4 filters"));
            }
        }
        Ok(Self { path, filters })
    }

    /// True for `{{ value }}` forms, which read the payload as text.
    pub fn reads_raw(&self) -> bool {
        self.path.is_none()
    }

    /// The value the template gives for a state message: `json` is the
    /// payload parsed once for every sensor of the topic (`None` when it is
    /// not JSON), `raw` its text. `None` when the path is absent or a filter
    /// cannot apply (Home Assistant leaves the state unchanged then).
    pub fn apply(&self, json: Option<&Json>, raw: &str) -> Option<Value> {
        let value = match &self.path {
            None => text_or_number(raw.trim()),
            Some(path) => {
                let mut at = json?;
                for key in path {
                    at = match at {
                        Json::Object(map) => map.get(key)?,
                        Json::Array(items) => items.get(key.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                leaf(at)
            }
        };
        self.filters.iter().try_fold(value?, |v, f| filter(*f, v))
    }
}

/// A JSON leaf as a value: numbers, numeric strings as numbers, other
/// strings, booleans; objects, arrays and null give nothing.
fn leaf(json: &Json) -> Option<Value> {
    match json {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(Value::Float),
        Json::String(s) => text_or_number(s),
        Json::Bool(b) => Some(Value::Bool(*b)),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

/// A number if `text` is a plain finite decimal, else the text (bounded).
fn text_or_number(text: &str) -> Option<Value> {
    if let Some(n) = number(text) {
        return Some(Value::Float(n));
    }
    if text.is_empty() || text.chars().nth(MAX_TEXT_CHARS).is_some() {
        return None;
    }
    Some(Value::Text(text.to_owned()))
}

/// `text` as a finite number, if it is a plain decimal (not `inf`, `nan`, hex).
fn number(text: &str) -> Option<f64> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !plain {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn filter(f: Filter, v: Value) -> Option<Value> {
    let n = match v {
        Value::Float(n) => n,
        Value::Int(i) => i as f64,
        Value::Bool(b) => f64::from(u8::from(b)),
        Value::Text(ref t) => number(t.trim())?,
        _ => return None,
    };
    match f {
        Filter::Float => Some(Value::Float(n)),
        // Saturates at i64's bounds; the readings table stores a DOUBLE anyway.
        Filter::Int => Some(Value::Int(n.trunc() as i64)),
        Filter::Round(digits) => {
            let scale = 10f64.powi(i32::from(digits));
            let rounded = (n * scale).round() / scale;
            rounded.is_finite().then_some(Value::Float(rounded))
        }
    }
}

/// A small reader over the template's inside.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`, if one starts here.
    fn ident(&mut self) -> Option<&'a str> {
        let end = self
            .rest
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit()))
            })
            .map_or(self.rest.len(), |(i, _)| i);
        if end == 0 {
            return None;
        }
        let (ident, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(ident)
    }

    /// The steps after `value_json`: `.name`, `['key']`, `["key"]`, `[0]`.
    fn path(&mut self) -> Result<Vec<String>, Unsupported> {
        let mut path = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat('.') {
                self.skip_spaces();
                let name = self
                    .ident()
                    .or_else(|| self.digits())
                    .ok_or(Unsupported("a '.' not followed by a name"))?;
                path.push(name.to_owned());
            } else if self.eat('[') {
                self.skip_spaces();
                let key = match self.rest.chars().next() {
                    Some(q @ ('\'' | '"')) => {
                        let (key, rest) = self
                            .rest
                            .strip_prefix(q)
                            .and_then(|r| r.split_once(q))
                            .ok_or(Unsupported("an unterminated string"))?;
                        if key.contains('\\') {
                            return Err(Unsupported("an escape in a key"));
                        }
                        self.rest = rest;
                        key
                    }
                    _ => self
                        .digits()
                        .ok_or(Unsupported("a subscript other than a string or index"))?,
                };
                self.skip_spaces();
                if !self.eat(']') {
                    return Err(Unsupported("a subscript without ']'"));
                }
                path.push(key.to_owned());
            } else {
                break;
            }
            if path.len() > MAX_PATH {
                return Err(Unsupported("a path of more than 8 steps"));
            }
        }
        if path.is_empty() {
            return Err(Unsupported("value_json without a path"));
        }
        Ok(path)
    }

    fn digits(&mut self) -> Option<&'a str> {
        let end = self
            .rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if end == 0 || end > 9 {
            return None;
        }
        let (digits, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(digits)
    }

    /// `(n)` after `round`, with `n` in 0..=10 (`round` alone is `round(0)`).
    fn round_digits(&mut self) -> Result<u8, Unsupported> {
        self.skip_spaces();
        if !self.eat('(') {
            return Ok(0);
        }
        self.skip_spaces();
        let n = self
            .digits()
            .and_then(|d| d.parse::<u8>().ok())
            .filter(|n| *n <= 10)
            .ok_or(Unsupported("round() other than round(0..=10)"))?;
        self.skip_spaces();
        if !self.eat(')') {
            return Err(Unsupported("round( without ')'"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
