//! What a decoder makes of one message, whatever the store: a device, a
//! time, and named fields with typed values. Every sink maps from this
//! (MySQL columns or the long `readings` table; InfluxDB measurement, tags,
//! fields and time), so a decoder knows nothing about where its output goes.

use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDateTime;
use co2_wire::{DeviceId, Reading};

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The device the message is about.
    pub device: DeviceId,
    /// When it was measured (UTC): the payload's time, or when it arrived.
    pub time: NaiveDateTime,
    /// Named levels of the topic and other labels (InfluxDB tags), in order.
    pub tags: Vec<(Arc<str>, String)>,
    /// Named values, in the order the decoder found them.
    pub fields: Vec<Field>,
    /// The CO2 reading, for the CO2-specific metrics.
    pub reading: Option<Reading>,
    /// A LoRaWAN uplink's frame counter, for the completeness accounting.
    pub frame: Option<Frame>,
}

/// Where a LoRaWAN uplink sits in its device's stream of frames: the
/// session's address and the uplink frame counter (FCntUp), which the network
/// server numbers from 0 after every join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The session's device address (DevAddr); 0 when the message names none.
    pub dev_addr: u32,
    /// The uplink frame counter.
    pub f_cnt: u32,
}

/// A named value of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Its name: a column name for fixed layouts, the JSON key for JSON.
    pub name: Arc<str>,
    /// Its value.
    pub value: Value,
}

impl Message {
    /// The value of field `name`, if the message has one.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| &*f.name == name)
            .map(|f| &f.value)
    }

    /// The value of tag `name`, if the message has one.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Roughly how many bytes the message adds to a write.
    pub fn weight(&self) -> usize {
        32 + self
            .tags
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
            + self.fields.iter().map(|f| f.value.weight()).sum::<usize>()
    }
}

/// A typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (SQL NULL; skipped where a store has no null).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Binary data (an image).
    Bytes(Bytes),
    /// A UTC date and time that fits a `DATETIME(3)` column.
    Time(NaiveDateTime),
}

impl Value {
    /// What kind of value it is, as the long `readings` table's `kind` column
    /// says it: `number` (integers too), `bool`, `text`, `bytes`, `time` or `null`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Time(_) => "time",
        }
    }

    /// Roughly how many bytes the value adds to a statement.
    pub fn weight(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}
