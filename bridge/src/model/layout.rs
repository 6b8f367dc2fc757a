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
    /// The tag (named topic level) of this name (NULL when the message has none).
    Tag(Arc<str>),
    /// Every tag, as one JSON object (NULL when the message has none).
    Tags,
    /// What tells the message's tag set apart, for a unique key: empty without
    /// tags, else a digest of them (a JSON column cannot be part of a key).
    TagsKey,
    /// A digest of the message's tags and fields: the same content gives the
    /// same key, so a redelivered document is a no-op while a different one
    /// stamped in the same microsecond is a row of its own.
    ContentKey,
    /// In a long layout: the field's name.
    FieldName,
    /// In a long layout: the field's value as a number (booleans as 0/1;
    /// NULL for text).
    FieldNumber,
    /// In a long layout: the field's text (NULL for numbers and booleans).
    FieldText,
    /// In a long layout: the field's kind (`number`, `bool`, `text`).
    FieldKind,
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

    /// The long `readings` table: a row per field of
    /// `(device, topic, time, field, value, text_value, kind, tags, tags_key)`.
    pub fn readings() -> Self {
        Layout::Long(
            [
                ("device", Column::Device),
                ("topic", Column::Topic),
                ("time", Column::Time),
                ("field", Column::FieldName),
                ("value", Column::FieldNumber),
                ("text_value", Column::FieldText),
                ("kind", Column::FieldKind),
                ("tags", Column::Tags),
                ("tags_key", Column::TagsKey),
            ]
            .map(|(n, c)| (n.to_owned(), c))
            .into(),
        )
    }

    /// The same layout with a column per tag appended (wide layouts only: a
    /// long layout keeps its tags in `tags`).
    pub fn with_tag_columns<'a>(self, tags: impl IntoIterator<Item = &'a str>) -> Self {
        match self {
            Layout::Wide(mut columns) => {
                for tag in tags {
                    if !columns
                        .iter()
                        .any(|(_, c)| matches!(c, Column::Tag(t) if &**t == tag))
                    {
                        columns.push((tag.to_owned(), Column::Tag(Arc::from(tag))));
                    }
                }
                Layout::Wide(columns)
            }
            long @ Layout::Long(_) => long,
        }
    }
}
