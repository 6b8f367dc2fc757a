//! Batched JSON: devices and gateways that buffer send many readings in one
//! message, as a top-level array (`[{"time": …, "co2": …}, …]`) or as one
//! member of an object (`{"device": "gw-1", "readings": [ … ]}`). A route
//! that opts in (`json.batch`) takes each element as one reading.
//!
//! The split only finds the elements: each is then decoded alone, exactly as
//! a single object would be, so every rule of the JSON route (bounds, time,
//! device) holds per element. Elements are kept as the bytes they were sent
//! as, so a refused one becomes a dead letter of its own that replays as a
//! single object. The element count is bounded while the array is read: a
//! hostile array costs one rejection at the element too many, never a large
//! list in memory.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::scalar::Leaf;
use crate::model::Reason;

/// Elements one message may hold unless the route says otherwise.
pub const DEFAULT_MAX_ELEMENTS: usize = 1000;

/// How a route finds the elements of a batch.
#[derive(Debug, Clone)]
pub struct BatchShape {
    /// The member of a top-level object holding the array; `None`: only a
    /// top-level array is a batch.
    pub field: Option<String>,
    /// Most elements accepted.
    pub max_elements: usize,
    /// The enclosing object's member an element without a time inherits.
    pub time_field: String,
    /// The enclosing object's member an element without a device inherits.
    pub device_field: Option<String>,
}

/// What a payload is, for a batching route.
#[derive(Debug, PartialEq)]
pub enum Split<'p> {
    /// Not a batch: one object (or something the object decoder refuses).
    One,
    /// Elements, each the bytes of one JSON value, in order.
    Many(Elements<'p>),
}

/// The elements of a batch and what its enclosing object gives them all.
#[derive(Debug, Default, PartialEq)]
pub struct Elements<'p> {
    /// Each element as sent.
    pub items: Vec<&'p [u8]>,
    /// The enclosing object's time, for elements without one.
    pub time: Option<Leaf>,
    /// The enclosing object's device, for elements without one.
    pub device: Option<Leaf>,
}

/// Finds the elements of `payload`. Rejections: `too_many_elements`,
/// `bad_batch` (the batch member is not an array), `bad_json`,
/// `duplicate_field` (a member of the enclosing object given twice).
pub fn split<'p>(payload: &'p [u8], shape: &BatchShape) -> Result<Split<'p>, Reason> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Ok(Split::Many(Elements {
            items: elements(payload, shape.max_elements)?,
            ..Elements::default()
        })),
        Some(b'{') if shape.field.is_some() => enclosed(payload, shape),
        _ => Ok(Split::One),
    }
}

/// The array member of an object, and the members its elements inherit.
fn enclosed<'p>(payload: &'p [u8], shape: &BatchShape) -> Result<Split<'p>, Reason> {
    let Some(field) = shape.field.as_deref() else {
        return Ok(Split::One);
    };
    let wanted = [
        Some(field),
        Some(shape.time_field.as_str()),
        shape.device_field.as_deref(),
    ];
    let [array, time, device] = members(payload, wanted)?;
    let Some(array) = array else {
        // A device that sends one reading alone sends an object of fields.
        return Ok(Split::One);
    };
    if !array.get().trim_start().starts_with('[') {
        return Err(Reason::BadBatch);
    }
    Ok(Split::Many(Elements {
        items: elements(array.get().as_bytes(), shape.max_elements)?,
        time: time.map(leaf),
        device: device.map(leaf),
    }))
}

/// A member's value as a leaf (an object or array is `Nested`).
fn leaf(raw: &RawValue) -> Leaf {
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) | Err(_) => Leaf::Null,
        Ok(serde_json::Value::Bool(b)) => Leaf::Bool(b),
        Ok(serde_json::Value::Number(n)) => Leaf::Number(n),
        Ok(serde_json::Value::String(s)) => Leaf::Text(s),
        Ok(_) => Leaf::Nested,
    }
}

/// The `wanted` members of a top-level object, unparsed (the others are
/// skipped), refusing one given twice.
fn members<'p>(
    payload: &'p [u8],
    wanted: [Option<&str>; 3],
) -> Result<[Option<&'p RawValue>; 3], Reason> {
    let repeated = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = de
        .deserialize_map(MembersVisitor {
            wanted,
            repeated: &repeated,
        })
        .and_then(|members| de.end().map(|()| members));
    match parsed {
        Ok(members) => Ok(members),
        Err(_) if repeated.get() => Err(Reason::DuplicateField),
        Err(_) => Err(Reason::BadJson),
    }
}

/// The elements of a JSON array, unparsed, at most `max`.
fn elements(array: &[u8], max: usize) -> Result<Vec<&[u8]>, Reason> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(array);
    let parsed = de
        .deserialize_seq(ElementsVisitor { max, over: &over })
        .and_then(|items| de.end().map(|()| items));
    match parsed {
        Ok(items) if items.is_empty() => Err(Reason::NoStorableFields),
        Ok(items) => Ok(items),
        Err(_) if over.get() => Err(Reason::TooManyElements),
        Err(_) => Err(Reason::BadJson),
    }
}

struct ElementsVisitor<'f> {
    max: usize,
    over: &'f Cell<bool>,
}

impl<'de> Visitor<'de> for ElementsVisitor<'_> {
    type Value = Vec<&'de [u8]>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(raw) = seq.next_element_seed(Raw)? {
            if items.len() == self.max {
                self.over.set(true);
                return Err(de::Error::custom("too many elements"));
            }
            items.push(raw.get().as_bytes());
        }
        Ok(items)
    }
}

struct MembersVisitor<'w, 'f> {
    wanted: [Option<&'w str>; 3],
    repeated: &'f Cell<bool>,
}

impl<'de> Visitor<'de> for MembersVisitor<'_, '_> {
    type Value = [Option<&'de RawValue>; 3];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; 3];
        while let Some(name) = map.next_key::<String>()? {
            if !self.wanted.contains(&Some(name.as_str())) {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let raw = map.next_value_seed(Raw)?;
            // The same name may be wanted twice (a time field that is also
            // the device field): every slot naming it gets the value.
            for (slot, w) in found.iter_mut().zip(self.wanted) {
                if w == Some(name.as_str()) {
                    if slot.is_some() {
                        self.repeated.set(true);
                        return Err(de::Error::custom("repeated member"));
                    }
                    *slot = Some(raw);
                }
            }
        }
        Ok(found)
    }
}

/// Reads one value without building it, borrowing its text.
struct Raw;

impl<'de> DeserializeSeed<'de> for Raw {
    type Value = &'de RawValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        serde::Deserialize::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests;
