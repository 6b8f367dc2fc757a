//! A route's table in MySQL: its columns, and the values of one message's
//! rows in column order.

use chrono::NaiveDateTime;

use crate::route::{Column, Layout, Message, Route, Value};

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
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// Text (the device id, the topic, a field name).
    Str(&'a str),
    /// The message's time.
    Time(NaiveDateTime),
    /// A field's value.
    Value(&'a Value),
}

const NULL: Value = Value::Null;

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
        let rows: Box<dyn Iterator<Item = Option<usize>> + 'a> = if self.long {
            Box::new((0..message.fields.len()).map(Some))
        } else {
            Box::new(std::iter::once(None))
        };
        rows.flat_map(move |field| {
            self.sources
                .iter()
                .map(move |source| cell(source, message, topic, field))
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

fn cell<'a>(
    source: &'a Column,
    message: &'a Message,
    topic: &'a str,
    field: Option<usize>,
) -> Cell<'a> {
    let field = field.and_then(|i| message.fields.get(i));
    match source {
        Column::Device => Cell::Str(message.device.as_str()),
        Column::Time => Cell::Time(message.time),
        Column::Topic => Cell::Str(topic),
        Column::Field(name) => Cell::Value(message.field(name).unwrap_or(&NULL)),
        Column::FieldName => field.map_or(Cell::Value(&NULL), |f| Cell::Str(&f.name)),
        Column::FieldValue => Cell::Value(field.map_or(&NULL, |f| &f.value)),
    }
}
