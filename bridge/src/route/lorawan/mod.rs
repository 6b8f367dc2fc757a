//! What a LoRaWAN network server publishes about a device: The Things Stack
//! v3 (`v3/<app>@<tenant>/devices/<device id>/up`) and ChirpStack v4
//! (`application/<id>/device/<DevEUI>/event/up`). Their JSON field names are
//! the interface; the two readers (`ttn.rs`, `chirpstack.rs`) turn each
//! server's document into one [`Uplink`] or [`Event`], and this file makes
//! the message.
//!
//! An uplink becomes readings: every field of the decoded payload flattened
//! as the `json` decoder flattens it (same bounds, same reasons), stamped with
//! the network server's receive time, plus, with `radio = true`, the best
//! RSSI and SNR, the number of gateways that heard it, its frame counter and
//! port. Its frame counter travels with the message ([`Frame`]) so the MySQL
//! sink can account for lost uplinks. Joins, downlink acks and status reports
//! are device events (`device_events`), not readings.

mod chirpstack;
mod ttn;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use co2_wire::DeviceId;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::flatten::{flatten, Shape, MAX_DEPTH};
use super::json::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_FIELDS};
use super::Context;
use crate::config::routes::{LorawanServer, LorawanSettings};
use crate::model::{Field, Frame, Layout, Message, Reason, Value};

/// The radio metadata's field names (with `radio = true`).
pub const RADIO_FIELDS: [&str; 5] = [
    "lorawan.rssi",
    "lorawan.snr",
    "lorawan.gateways",
    "lorawan.f_cnt",
    "lorawan.f_port",
];

/// Longest payload a LoRaWAN route takes unless it says otherwise: an event
/// is kept whole in `device_events.body`, a `TEXT` of at most 65,535 bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 65_535;

/// Longest event kind kept from a topic level (`device_events.kind` is 64 wide).
const MAX_KIND_CHARS: usize = 32;

/// One uplink as a network server describes it.
#[derive(Debug, Default)]
struct Uplink<'a> {
    /// The device id the payload names (TTN's device id, ChirpStack's DevEUI).
    device: Option<String>,
    /// When the network server received it.
    time: Option<String>,
    /// The session's address, as hex text.
    dev_addr: Option<String>,
    /// The uplink frame counter; absent means 0 (both servers omit zeros).
    f_cnt: Option<u32>,
    /// The port, when the payload gives one.
    f_port: Option<u32>,
    /// The decoded payload (the sensor's fields), as sent.
    decoded: Option<&'a RawValue>,
    /// What each gateway (or antenna) that heard it measured.
    receptions: Vec<Reception>,
}

/// One gateway's (or antenna's) reception of an uplink.
#[derive(Debug, Default)]
struct Reception {
    gateway: Option<String>,
    rssi: Option<f64>,
    snr: Option<f64>,
}

/// A device event (a join, a downlink ack, a status report).
#[derive(Debug)]
struct Event {
    device: Option<String>,
    time: Option<String>,
    /// What happened, e.g. `ttn_join_accept` or `chirpstack_status`.
    kind: String,
}

/// A configured `lorawan` decoder.
#[derive(Debug, Clone)]
pub struct LorawanDecoder {
    server: LorawanServer,
    events: bool,
    radio: bool,
    numeric_strings: bool,
    shape: Shape,
    radio_names: [Arc<str>; 5],
    event_names: [Arc<str>; 3],
}

impl LorawanDecoder {
    /// Builds the decoder.
    pub fn new(settings: &LorawanSettings) -> Self {
        Self {
            server: settings.server,
            events: settings.events,
            radio: settings.radio,
            numeric_strings: settings.numeric_strings,
            shape: Shape {
                max_depth: settings
                    .max_depth
                    .unwrap_or(DEFAULT_MAX_DEPTH)
                    .min(MAX_DEPTH),
                max_fields: settings.max_fields.unwrap_or(DEFAULT_MAX_FIELDS),
                keep_fields: true,
                check_names: true,
            },
            radio_names: RADIO_FIELDS.map(Arc::from),
            event_names: super::event::FIELDS.map(Arc::from),
        }
    }

    /// Uplinks: the `readings` layout; events: `device_events`'.
    pub fn layout(settings: &LorawanSettings) -> Layout {
        if settings.events {
            super::event::EventDecoder::layout()
        } else {
            Layout::readings()
        }
    }

    /// Decodes one message.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        if self.events {
            self.decode_event(payload, ctx)
        } else {
            self.decode_uplink(payload, ctx)
        }
    }

    fn decode_uplink(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        let up = match self.server {
            LorawanServer::Ttn => ttn::uplink(payload)?,
            LorawanServer::Chirpstack => chirpstack::uplink(payload)?,
        };
        let device = device(up.device.as_deref(), ctx)?;
        let time = time(up.time.as_deref(), ctx)?;
        let mut fields = Vec::new();
        if let Some(decoded) = up.decoded {
            let flat = flatten(decoded.get().as_bytes(), &self.shape, &[])?;
            for (name, leaf) in flat.fields {
                if let Some(value) = leaf.into_value(self.numeric_strings)? {
                    fields.push(Field {
                        name: Arc::from(name),
                        value,
                    });
                }
            }
        }
        let f_cnt = up.f_cnt.unwrap_or(0);
        if self.radio {
            self.add_radio(&mut fields, &up, f_cnt)?;
        }
        if fields.is_empty() {
            return Err(Reason::NoStorableFields);
        }
        Ok(Message {
            device,
            time: time.naive_utc(),
            tags: ctx.tags.to_vec(),
            fields,
            reading: None,
            frame: Some(Frame {
                dev_addr: up.dev_addr.as_deref().and_then(dev_addr).unwrap_or(0),
                f_cnt,
            }),
        })
    }

    /// The radio fields: the best RSSI and SNR over the receptions, the
    /// number of distinct gateways, the frame counter and port. A decoded
    /// field of the same name makes the message ambiguous (`duplicate_field`).
    fn add_radio(
        &self,
        fields: &mut Vec<Field>,
        up: &Uplink<'_>,
        f_cnt: u32,
    ) -> Result<(), Reason> {
        let best = |pick: fn(&Reception) -> Option<f64>| {
            up.receptions
                .iter()
                .filter_map(pick)
                .filter(|v| v.is_finite())
                .reduce(f64::max)
        };
        let [rssi, snr, gateways, counter, port] = self.radio_names.clone();
        let mut radio = Vec::with_capacity(5);
        if let Some(v) = best(|r| r.rssi) {
            radio.push((rssi, Value::Float(v)));
        }
        if let Some(v) = best(|r| r.snr) {
            radio.push((snr, Value::Float(v)));
        }
        radio.push((gateways, Value::Int(gateway_count(&up.receptions))));
        radio.push((counter, Value::Int(i64::from(f_cnt))));
        if let Some(p) = up.f_port {
            radio.push((port, Value::Int(i64::from(p))));
        }
        for (name, value) in radio {
            if fields.iter().any(|f| f.name == name) {
                return Err(Reason::DuplicateField);
            }
            fields.push(Field { name, value });
        }
        Ok(())
    }

    fn decode_event(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        let event = match self.server {
            LorawanServer::Ttn => ttn::event(payload, ctx.topic)?,
            LorawanServer::Chirpstack => chirpstack::event(payload, ctx.topic)?,
        };
        let device = device(event.device.as_deref(), ctx)?;
        let time = time(event.time.as_deref(), ctx)?;
        let body = std::str::from_utf8(payload).map_err(|_| Reason::NotUtf8)?;
        let [id, kind, text] = self.event_names.clone();
        Ok(Message {
            device,
            time: time.naive_utc(),
            tags: Vec::new(),
            fields: vec![
                Field {
                    name: id,
                    value: Value::Text(event_id(payload)),
                },
                Field {
                    name: kind,
                    value: Value::Text(event.kind),
                },
                Field {
                    name: text,
                    value: Value::Text(body.to_owned()),
                },
            ],
            reading: None,
            frame: None,
        })
    }
}

/// The device: the one the payload names must be the topic's (`device_mismatch`
/// otherwise); a payload that names none is the topic's.
fn device(named: Option<&str>, ctx: &Context<'_>) -> Result<DeviceId, Reason> {
    let named = named
        .map(|id| DeviceId::parse(id).map_err(|_| Reason::BadDevice))
        .transpose()?;
    ctx.device_named(named)
}

/// The network server's receive time, read and checked like every payload
/// time; the bridge's own stamp only when the payload has none.
fn time(text: Option<&str>, ctx: &Context<'_>) -> Result<DateTime<Utc>, Reason> {
    match text {
        Some(text) => ctx.times.read_text(text.trim()),
        None => Ok(ctx.received()),
    }
}

/// A DevAddr (8 hex digits), if it is one.
fn dev_addr(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// How many gateways heard an uplink: receptions by one gateway's antennas
/// count once; a reception without a gateway id counts alone.
fn gateway_count(receptions: &[Reception]) -> i64 {
    let mut seen: Vec<&str> = Vec::new();
    let mut anonymous = 0i64;
    for r in receptions {
        match r.gateway.as_deref() {
            Some(id) if !seen.contains(&id) => seen.push(id),
            Some(_) => {}
            None => anonymous += 1,
        }
    }
    i64::try_from(seen.len())
        .unwrap_or(i64::MAX)
        .saturating_add(anonymous)
}

/// An event's id in `device_events`: a digest of the payload, so a
/// redelivered event is a no-op (the table's unique key is the device and this id).
fn event_id(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// An event kind from a name the server gives (`join_accept`, a topic's
/// last level): `<server>_<name>`, the name kept only when it is a short
/// plain word, else `other`.
fn kind(server: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= MAX_KIND_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    format!("{server}_{}", if plain { name } else { "other" })
}

/// The first byte that is not JSON whitespace, to tell "not JSON" from "JSON
/// but not an object" when the envelope does not parse.
fn refusal(payload: &[u8]) -> Reason {
    let first = payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'{') | None => Reason::BadJson,
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() => {
            Reason::NotAnObject
        }
        Some(_) => Reason::BadJson,
    }
}

#[cfg(test)]
mod tests;
