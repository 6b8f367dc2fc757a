//! A route's table in MySQL: its columns, and the values of one message's
//! rows in column order.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};

use crate::model::{Column, Layout, Message, Value};
use crate::route::Route;

/// Where one route's rows go.
#[derive(Debug)]
pub struct Target {
    /// `INSERT INTO `t` (`a`, `b`) `, built once.
    insert_prefix: String,
    /// What fills each column, in column order.
    sources: Vec<Column>,
    /// One row per field (long layout) instead of one per message.
    long: bool,
}

/// One value to bind.
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    /// Text (the device id, the topic, a field name, a tag).
    Str(&'a str),
    /// The message's time.
    Time(NaiveDateTime),
    /// A field's value.
    Value(&'a Value),
    /// Text made from the message (its tags as JSON).
    Text(String),
    /// Bytes made from the message (a key digest).
    Binary(Vec<u8>),
}

const NULL: Value = Value::Null;
const FALSE: Value = Value::Int(0);
const TRUE: Value = Value::Int(1);

/// What a target that derives nothing derives.
static NOTHING_DERIVED: Derived = Derived {
    tags: None,
    tags_key: Vec::new(),
    content_key: Vec::new(),
};

/// What some columns compute from the whole message, once per message.
#[derive(Debug, Default)]
struct Derived {
    /// The tags as a JSON object with sorted keys; `None` without tags.
    tags: Option<String>,
    /// Empty without tags, else the SHA-256 of `tags`.
    tags_key: Vec<u8>,
    /// SHA-256 of the tags and every field.
    content_key: Vec<u8>,
}

impl Target {
    /// The target of `route`: its table, its (renamed) columns, its layout.
    pub fn new(route: &Route) -> Self {
        let quoted: Vec<String> = route
            .column_names()
            .iter()
            .map(|c| format!("`{c}`"))
            .collect();
        let (sources, long) = match route.layout() {
            Layout::Wide(c) => (c, false),
            Layout::Long(c) => (c, true),
        };
        Self {
            // Names are checked identifiers (route config), so quoting them is safe.
            insert_prefix: format!("INSERT INTO `{}` ({}) ", route.table(), quoted.join(", ")),
            sources: sources.iter().map(|(_, s)| s.clone()).collect(),
            long,
        }
    }

    /// The statement's start, up to `VALUES`.
    pub fn insert_prefix(&self) -> &str {
        &self.insert_prefix
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.sources.len()
    }

    /// How many rows `message` becomes.
    pub fn rows(&self, message: &Message) -> usize {
        if self.long {
            message.fields.len()
        } else {
            1
        }
    }

    /// The values of `message`'s rows, row after row, in column order.
    pub fn cells<'a>(
        &'a self,
        message: &'a Message,
        topic: &'a str,
    ) -> impl Iterator<Item = Cell<'a>> {
        // This runs for every reading: most targets derive nothing, and then
        // nothing here allocates.
        let derived = self.derive(message).map(Arc::new);
        let (rows, long) = (self.rows(message), self.long);
        (0..rows).flat_map(move |row| {
            let (field, derived) = (long.then_some(row), derived.clone());
            self.sources.iter().map(move |source| {
                let derived = derived.as_deref().unwrap_or(&NOTHING_DERIVED);
                cell(source, message, topic, field, derived)
            })
        })
    }

    /// Computes only what this target's columns use; `None` if they use nothing.
    fn derive(&self, message: &Message) -> Option<Derived> {
        let uses = |c: &Column| self.sources.contains(c);
        let (tags_key, content_key) = (uses(&Column::TagsKey), uses(&Column::ContentKey));
        if !(uses(&Column::Tags) || tags_key || content_key) {
            return None;
        }
        let tags = tags_json(message);
        Some(Derived {
            tags_key: match (&tags, tags_key) {
                (Some(json), true) => Sha256::digest(json.as_bytes()).to_vec(),
                _ => Vec::new(),
            },
            content_key: if content_key {
                content_digest(tags.as_deref(), message)
            } else {
                Vec::new()
            },
            tags,
        })
    }

    /// A wide target of `width` columns, for tests.
    #[cfg(test)]
    pub fn test_wide(width: usize) -> Self {
        Self {
            insert_prefix: String::new(),
            sources: (0..width)
                .map(|_| Column::Field(std::sync::Arc::from("x")))
                .collect(),
            long: false,
        }
    }
}

/// The tags as a JSON object with sorted keys (so a tag set has one text and
/// one digest whatever the filter's order); `None` without tags.
fn tags_json(message: &Message) -> Option<String> {
    if message.tags.is_empty() {
        return None;
    }
    let sorted: BTreeMap<&str, &str> = message
        .tags
        .iter()
        .map(|(n, v)| (&**n, v.as_str()))
        .collect();
    serde_json::to_string(&sorted).ok()
}

/// SHA-256 over the tags and every field's name, kind and value, each
/// length-prefixed so that no two different messages encode alike.
fn content_digest(tags: Option<&str>, message: &Message) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(tags.unwrap_or_default().as_bytes());
    for field in &message.fields {
        part(field.name.as_bytes());
        part(field.value.kind().as_bytes());
        match &field.value {
            Value::Null => part(&[]),
            Value::Bool(b) => part(&[u8::from(*b)]),
            Value::Int(v) => part(&v.to_le_bytes()),
            Value::Float(v) => part(&v.to_bits().to_le_bytes()),
            Value::Text(s) => part(s.as_bytes()),
            Value::Bytes(b) => part(b),
            Value::Time(t) => part(&t.and_utc().timestamp_millis().to_le_bytes()),
        }
    }
    hash.finalize().to_vec()
}

fn cell<'a>(
    source: &'a Column,
    message: &'a Message,
    topic: &'a str,
    field: Option<usize>,
    derived: &Derived,
) -> Cell<'a> {
    let field = field.and_then(|i| message.fields.get(i));
    let null = Cell::Value(&NULL);
    match source {
        Column::Device => Cell::Str(message.device.as_str()),
        Column::Time => Cell::Time(message.time),
        Column::Topic => Cell::Str(topic),
        Column::Field(name) => Cell::Value(message.field(name).unwrap_or(&NULL)),
        Column::Tag(name) => message.tag(name).map_or(null, Cell::Str),
        Column::Tags => derived.tags.clone().map_or(null, Cell::Text),
        Column::TagsKey => Cell::Binary(derived.tags_key.clone()),
        Column::ContentKey => Cell::Binary(derived.content_key.clone()),
        Column::FieldName => field.map_or(null, |f| Cell::Str(&f.name)),
        Column::FieldNumber => match field.map(|f| &f.value) {
            Some(v @ (Value::Float(_) | Value::Int(_))) => Cell::Value(v),
            Some(Value::Bool(b)) => Cell::Value(if *b { &TRUE } else { &FALSE }),
            _ => null,
        },
        Column::FieldText => match field.map(|f| &f.value) {
            Some(Value::Text(s)) => Cell::Str(s),
            _ => null,
        },
        Column::FieldKind => field.map_or(null, |f| Cell::Str(f.value.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Field;
    use co2_wire::DeviceId;

    fn message(tags: &[(&str, &str)], fields: Vec<(&str, Value)>) -> Message {
        Message {
            device: DeviceId::parse("d").unwrap(),
            time: chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc(),
            tags: tags
                .iter()
                .map(|(n, v)| (Arc::from(*n), (*v).to_owned()))
                .collect(),
            fields: fields
                .into_iter()
                .map(|(n, value)| Field {
                    name: Arc::from(n),
                    value,
                })
                .collect(),
            reading: None,
            frame: None,
        }
    }

    fn target(columns: Vec<Column>, long: bool) -> Target {
        Target {
            insert_prefix: String::new(),
            sources: columns,
            long,
        }
    }

    fn readings() -> Target {
        match Layout::readings() {
            Layout::Long(c) => target(c.into_iter().map(|(_, c)| c).collect(), true),
            Layout::Wide(_) => unreachable!(),
        }
    }

    /// The cells as text, for comparing rows.
    fn rows(t: &Target, m: &Message) -> Vec<Vec<String>> {
        let cells: Vec<String> = t
            .cells(m, "topic")
            .map(|c| match c {
                Cell::Str(s) => format!("'{s}'"),
                Cell::Time(_) => "time".into(),
                Cell::Value(Value::Null) => "NULL".into(),
                Cell::Value(Value::Float(v)) => format!("{v}"),
                Cell::Value(Value::Int(v)) => format!("{v}i"),
                Cell::Value(other) => format!("{other:?}"),
                Cell::Text(s) => format!("json {s}"),
                Cell::Binary(b) if b.is_empty() => "''".into(),
                Cell::Binary(b) => format!("{} bytes", b.len()),
            })
            .collect();
        cells.chunks(t.width()).map(<[String]>::to_vec).collect()
    }

    #[test]
    fn the_long_table_keeps_numbers_booleans_and_text_with_their_kind() {
        let m = message(
            &[("room", "hall"), ("channel", "0")],
            vec![
                ("t", Value::Float(21.5)),
                ("contact", Value::Bool(true)),
                ("off", Value::Bool(false)),
                ("unit", Value::Text("C".into())),
            ],
        );
        let tags = r#"json {"channel":"0","room":"hall"}"#;
        assert_eq!(
            rows(&readings(), &m),
            [
                ["'d'", "'topic'", "time", "'t'", "21.5", "NULL", "'number'", tags, "32 bytes"],
                [
                    "'d'",
                    "'topic'",
                    "time",
                    "'contact'",
                    "1i",
                    "NULL",
                    "'bool'",
                    tags,
                    "32 bytes"
                ],
                ["'d'", "'topic'", "time", "'off'", "0i", "NULL", "'bool'", tags, "32 bytes"],
                ["'d'", "'topic'", "time", "'unit'", "NULL", "'C'", "'text'", tags, "32 bytes"],
            ]
        );
        let untagged = message(&[], vec![("t", Value::Float(1.0))]);
        assert_eq!(
            rows(&readings(), &untagged)[0][7..],
            ["NULL".to_owned(), "''".to_owned()],
            "no tags: NULL tags and the empty key existing rows were adopted with"
        );
    }

    #[test]
    fn a_tag_set_has_one_key_whatever_its_order() {
        let t = target(vec![Column::TagsKey, Column::Tag("room".into())], false);
        let key = |tags: &[(&str, &str)]| match t.cells(&message(tags, vec![]), "x").next() {
            Some(Cell::Binary(b)) => b,
            other => panic!("{other:?}"),
        };
        let a = key(&[("room", "hall"), ("channel", "0")]);
        assert_eq!(a, key(&[("channel", "0"), ("room", "hall")]));
        assert_ne!(a, key(&[("room", "hall"), ("channel", "1")]));
        assert_ne!(a, key(&[("room", "hall")]));
        // A wide table's tag column, NULL when the message has no such tag.
        let m = message(&[("room", "hall")], vec![]);
        assert_eq!(rows(&t, &m)[0][1], "'hall'");
        assert_eq!(rows(&t, &message(&[], vec![]))[0], ["''", "NULL"]);
    }

    #[test]
    fn the_content_key_tells_documents_apart() {
        let t = target(vec![Column::ContentKey], false);
        let key = |tags: &[(&str, &str)], doc: &str| match t
            .cells(
                &message(tags, vec![("document", Value::Text(doc.into()))]),
                "x",
            )
            .next()
        {
            Some(Cell::Binary(b)) => b,
            other => panic!("{other:?}"),
        };
        let a = key(&[], r#"{"a":1}"#);
        assert_eq!(a.len(), 32);
        assert_eq!(a, key(&[], r#"{"a":1}"#), "a redelivery is the same key");
        assert_ne!(a, key(&[], r#"{"a":2}"#));
        assert_ne!(a, key(&[("k", "v")], r#"{"a":1}"#));
        // Length prefixes: moving bytes between parts changes the key.
        let t2 = target(vec![Column::ContentKey], false);
        let two = |x: &str, y: &str| match t2
            .cells(&message(&[], vec![(x, Value::Text(y.into()))]), "x")
            .next()
        {
            Some(Cell::Binary(b)) => b,
            other => panic!("{other:?}"),
        };
        assert_ne!(two("ab", "c"), two("a", "bc"));
    }
}
