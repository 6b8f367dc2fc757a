//! Where a route's rows go: a table, its columns, and typed values.

use bytes::Bytes;
use chrono::NaiveDateTime;

/// A table and the columns a route fills, in row order.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Table name (checked: `[A-Za-z_][A-Za-z0-9_]{0,63}`).
    pub table: String,
    /// Column names, same check.
    pub columns: Vec<String>,
    /// `INSERT INTO `t` (`a`, `b`) `, built once.
    pub insert_prefix: String,
}

impl Target {
    /// A target; `table` and `columns` must already be valid identifiers.
    pub fn new(table: &str, columns: Vec<String>) -> Self {
        let quoted: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
        Self {
            insert_prefix: format!("INSERT INTO `{table}` ({}) ", quoted.join(", ")),
            table: table.to_owned(),
            columns,
        }
    }
}

/// True for a plain SQL identifier, safe to quote with backticks.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Binary data.
    Bytes(Bytes),
    /// A UTC date and time.
    Time(NaiveDateTime),
}

impl Value {
    /// Roughly how many bytes the value adds to a statement.
    pub fn weight(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

/// One row, in the target's column order.
pub type Row = Vec<Value>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["bin_levels", "_x", "A1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "a`b", "x;DROP", &"a".repeat(65)] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn insert_prefix_quotes_every_name() {
        let t = Target::new("bin_levels", vec!["bin_id".into(), "level".into()]);
        assert_eq!(
            t.insert_prefix,
            "INSERT INTO `bin_levels` (`bin_id`, `level`) "
        );
    }
}
