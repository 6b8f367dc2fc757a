//! How a route's messages become rows, for sinks that store tables (MySQL):
//! the logical columns of the route's decoder, each filled from one part of
//! the message. The route's `columns` setting renames them; the sink does the
//! rest.

use std::sync::Arc;

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// The message's device id.
    Device,
    /// The message's time.
    Time,
    /// The topic it arrived on.
    Topic,
    /// The field of this name (NULL when the message has none).
    Field(Arc<str>),
    /// In a long layout: the field's name.
    FieldName,
    /// In a long layout: the field's value.
    FieldValue,
}

/// The shape of a route's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One row per message.
    Wide(Vec<(String, Column)>),
    /// One row per field of the message (the long `readings` table).
    Long(Vec<(String, Column)>),
}

impl Layout {
    /// The logical columns, in row order.
    pub fn columns(&self) -> &[(String, Column)] {
        match self {
            Layout::Wide(c) | Layout::Long(c) => c,
        }
    }

    /// A wide layout of `(column, source)` pairs.
    pub fn wide<'a>(columns: impl IntoIterator<Item = (&'a str, Column)>) -> Self {
        Layout::Wide(
            columns
                .into_iter()
                .map(|(n, c)| (n.to_owned(), c))
                .collect(),
        )
    }
}
