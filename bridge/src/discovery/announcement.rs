//! One Home Assistant discovery announcement, parsed: which sensor, where its
//! state arrives, how to read it, what it measures, of which device.
//!
//! The payload is JSON; keys may be Home Assistant's abbreviations
//! (`stat_t`, `val_tpl`, `unit_of_meas`, `dev_cla`, `uniq_id`, `dev`, `ids`,
//! `pl_on`, `pl_off`), as Tasmota sends them, and `~` in a topic stands for
//! the announcement's base topic (`"~": "tasmota01/tele/"`,
//! `"stat_t": "~SENSOR"`). Pure: no I/O, no panics on any input.

use serde_json::{Map, Value as Json};

use super::template::{Template, Unsupported};

/// Longest topic accepted (a dead letter's topic column holds 255).
pub const MAX_TOPIC_BYTES: usize = 255;
/// Longest field name: `<field>.device_class` must still be a tag name
/// (64 characters at most, as the sinks' tag names are).
pub const MAX_FIELD_CHARS: usize = 50;
/// Longest unit or device class kept (a tag value holds 64 characters).
pub const MAX_TAG_CHARS: usize = 64;

/// The components whose state is a value to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// A measured value (number or text).
    Sensor,
    /// An on/off state, stored as a boolean.
    BinarySensor,
}

/// Where an announcement was published: `<prefix>/<component>/[<node_id>/]<object_id>/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTopic<'t> {
    /// The component level (`sensor`, `binary_sensor`, `light`, ...).
    pub component: &'t str,
    /// The optional node id level.
    pub node_id: Option<&'t str>,
    /// The object id level.
    pub object_id: &'t str,
}

impl<'t> ConfigTopic<'t> {
    /// Splits `topic` if it is an announcement topic under `prefix`.
    pub fn parse(prefix: &str, topic: &'t str) -> Option<Self> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
        let rest = rest.strip_suffix("/config")?;
        let levels: Vec<&str> = rest.split('/').collect();
        if levels.iter().any(|l| l.is_empty()) {
            return None;
        }
        match levels.as_slice() {
            [component, object_id] => Some(Self {
                component,
                node_id: None,
                object_id,
            }),
            [component, node_id, object_id] => Some(Self {
                component,
                node_id: Some(node_id),
                object_id,
            }),
            _ => None,
        }
    }

    /// The component, if it is one whose state the bridge stores.
    pub fn stored_component(&self) -> Option<Component> {
        match self.component {
            "sensor" => Some(Component::Sensor),
            "binary_sensor" => Some(Component::BinarySensor),
            _ => None,
        }
    }
}

/// A usable announcement.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// Sensor or binary sensor.
    pub component: Component,
    /// The device, from `device.identifiers` (or the node id).
    pub device: String,
    /// The field its values are stored under.
    pub field: String,
    /// Where its state is published (a plain topic).
    pub state_topic: String,
    /// How to read the state, or why the template is refused (kept, so the
    /// state messages can be dead-lettered saying so).
    pub template: Result<Template, Unsupported>,
    /// The template as announced, for the status page and the logs.
    pub template_text: Option<String>,
    /// `unit_of_measurement`.
    pub unit: Option<String>,
    /// `device_class`.
    pub device_class: Option<String>,
    /// `unique_id`.
    pub unique_id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// For binary sensors: the state meaning on (default `ON`) and off (`OFF`).
    pub payload_on: Json,
    /// See `payload_on`.
    pub payload_off: Json,
}

/// Why an announcement cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Larger than `discovery.max_announcement_bytes`.
    #[error("the announcement is larger than {0} bytes")]
    TooLarge(usize),
    /// Not a JSON object.
    #[error("the announcement is not a JSON object")]
    NotAnObject,
    /// No state topic, or one that is empty, holds a wildcard or is too long.
    #[error("state_topic {0}")]
    BadStateTopic(&'static str),
    /// Neither `device.identifiers` nor a node id gives a device id.
    #[error("no usable device id in device.identifiers or the topic's node id")]
    NoDevice,
    /// The object id cannot be a field name.
    #[error("the object id cannot be a field name (1-50 characters, no control characters)")]
    BadField,
}

/// Parses the announcement `payload` published on `topic`.
pub fn parse(
    topic: &ConfigTopic<'_>,
    component: Component,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Announcement, Refusal> {
    if payload.len() > max_bytes {
        return Err(Refusal::TooLarge(max_bytes));
    }
    let Ok(Json::Object(map)) = serde_json::from_slice::<Json>(payload) else {
        return Err(Refusal::NotAnObject);
    };
    let base = text(&map, "~", "~");
    let state_topic = text(&map, "state_topic", "stat_t")
        .map(|t| expand_base(t, base))
        .ok_or(Refusal::BadStateTopic("is missing"))?;
    check_state_topic(&state_topic)?;
    let template_text = text(&map, "value_template", "val_tpl").map(str::to_owned);
    let template = match &template_text {
        Some(t) => Template::parse(t),
        None => Ok(Template::default()),
    };
    let device = device_id(&map, topic.node_id).ok_or(Refusal::NoDevice)?;
    let field = field_name(topic.object_id, &device).ok_or(Refusal::BadField)?;
    let tag = |full: &str, short: &str| {
        text(&map, full, short)
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.chars().nth(MAX_TAG_CHARS).is_none())
            .filter(|t| !t.chars().any(char::is_control))
            .map(str::to_owned)
    };
    Ok(Announcement {
        component,
        unit: tag("unit_of_measurement", "unit_of_meas"),
        device_class: tag("device_class", "dev_cla"),
        unique_id: tag("unique_id", "uniq_id"),
        name: tag("name", "name"),
        payload_on: any(&map, "payload_on", "pl_on").unwrap_or_else(|| Json::from("ON")),
        payload_off: any(&map, "payload_off", "pl_off").unwrap_or_else(|| Json::from("OFF")),
        device,
        field,
        state_topic,
        template,
        template_text,
    })
}

/// The value of `full` or its abbreviation `short`.
fn any(map: &Map<String, Json>, full: &str, short: &str) -> Option<Json> {
    map.get(full).or_else(|| map.get(short)).cloned()
}

/// The string value of `full` or its abbreviation `short`.
fn text<'m>(map: &'m Map<String, Json>, full: &str, short: &str) -> Option<&'m str> {
    map.get(full).or_else(|| map.get(short))?.as_str()
}

/// Home Assistant's `~` rule: a topic starting with `~` starts with the base
/// topic, one ending with `~` ends with it.
fn expand_base(topic: &str, base: Option<&str>) -> String {
    match base {
        Some(base) => {
            if let Some(rest) = topic.strip_prefix('~') {
                format!("{base}{rest}")
            } else if let Some(rest) = topic.strip_suffix('~') {
                format!("{rest}{base}")
            } else {
                topic.to_owned()
            }
        }
        None => topic.to_owned(),
    }
}

/// A state topic is one plain topic: subscribing to a filter (`#`, `+`)
/// would take in everything below it.
fn check_state_topic(topic: &str) -> Result<(), Refusal> {
    if topic.is_empty() {
        return Err(Refusal::BadStateTopic("is empty"));
    }
    if topic.contains(['#', '+']) {
        return Err(Refusal::BadStateTopic("holds a wildcard (# or +)"));
    }
    if topic.starts_with('$') {
        return Err(Refusal::BadStateTopic("is a broker topic ($...)"));
    }
    if topic.len() > MAX_TOPIC_BYTES || topic.contains('\0') {
        return Err(Refusal::BadStateTopic(
            "is longer than 255 bytes or holds NUL",
        ));
    }
    Ok(())
}

/// The device id: the first of `device.identifiers` (a list or one string,
/// abbreviated `dev.ids`) that makes an id, else the topic's node id. Bytes
/// a device id cannot hold (`[A-Za-z0-9_-]`) become `_`.
fn device_id(map: &Map<String, Json>, node_id: Option<&str>) -> Option<String> {
    let device = map.get("device").or_else(|| map.get("dev"));
    let ids = device
        .and_then(|d| d.get("identifiers").or_else(|| d.get("ids")))
        .map(|ids| match ids {
            Json::Array(items) => items.iter().filter_map(Json::as_str).collect(),
            Json::String(s) => vec![s.as_str()],
            _ => Vec::new(),
        })
        .unwrap_or_default();
    ids.into_iter()
        .chain(node_id)
        .map(sanitize)
        .find(|id| co2_wire::DeviceId::parse(id).is_ok())
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The field: the object id, without a leading `<device>_` (Tasmota names
/// its objects `<MAC>_<sensor>_<value>`, and the MAC is the device already).
fn field_name(object_id: &str, device: &str) -> Option<String> {
    let field = object_id
        .strip_prefix(device)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(object_id);
    let ok = !field.is_empty()
        && field.chars().nth(MAX_FIELD_CHARS).is_none()
        && !field.chars().any(char::is_control)
        && field.trim() == field;
    ok.then(|| field.to_owned())
}

#[cfg(test)]
mod tests;
