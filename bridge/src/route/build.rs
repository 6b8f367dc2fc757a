//! Building the routes from the settings, and every check a configured
//! route must pass before it runs: names, topics, tables, columns, decoder
//! settings, zones, overlaps. Errors name the route and the key.

mod decoders;

use std::collections::HashMap;
use std::sync::Arc;

use co2_wire::{Decoder, DeviceId, TopicFilter};

use super::binary::BinaryDecoder;
use super::delimited::Delimited;
use super::event::{self, EventDecoder};
use super::json::JsonDecoder;
use super::lorawan::{self, LorawanDecoder};
use super::value::ValueDecoder;
use super::{seq_fields, Decode, ReceiveClock, Route, Routes};
use crate::clocks::{DeviceClocks, ZoneRules, ZoneSetting};
use crate::config::routes::{DecoderKind, FieldKind, JsonMode, RouteSettings};
use crate::config::{ConfigError, Settings, CO2_ROUTE, DEFAULT_SINK, EVENTS_ROUTE};
use crate::fault::Faults;
use crate::model::{Column, Layout};
use crate::tokens::Tokens;
use decoders::{check_lorawan, json_decoder};

/// A `pipe` route's layout: `co2_emissions (device, date_time, emissions)`.
fn pipe_layout() -> Layout {
    Layout::wide([
        ("device", Column::Device),
        ("date_time", Column::Time),
        ("emissions", Column::Field(Arc::from("emissions"))),
    ])
}

/// The announcement topics beside the CO2 topics: `<x>/emissions` -> `<x>/events`.
fn events_filters(settings: &Settings) -> Result<Vec<TopicFilter>, ConfigError> {
    settings
        .mqtt
        .topics
        .iter()
        .filter_map(|t| t.strip_suffix("emissions"))
        .filter(|prefix| prefix.is_empty() || prefix.ends_with('/'))
        .map(|prefix| {
            let topic = format!("{prefix}{}", co2_wire::EVENTS_TOPIC_LEVEL);
            TopicFilter::parse(&topic)
                .map_err(|e| invalid(EVENTS_ROUTE, "topics", format!("{topic:?}: {e}")))
        })
        .collect()
}

/// The built-in CO2 route's layout: a pipe route's, plus the reading's number
/// (`seq_epoch`, `seq`; NULL for readings that come unnumbered).
pub(super) fn co2_layout() -> Layout {
    let names = seq_fields();
    let mut columns = pipe_layout().columns().to_vec();
    columns.push(("seq_epoch".to_owned(), Column::Field(names.epoch)));
    columns.push(("seq".to_owned(), Column::Field(names.n)));
    Layout::Wide(columns)
}

impl Routes {
    /// Builds and checks the CO2 route plus every `[[routes]]` entry, without
    /// I/O: token files are read by [`Routes::load_tokens`]. Errors name the
    /// route and the key.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let times = Decoder::new(co2_wire::Zone::UTC, settings.limits());
        let co2_zone = settings.co2_zone()?;
        let default_device = settings.default_device()?;
        let mut routes = Vec::new();
        if !settings.mqtt.topics.is_empty() {
            let layout = co2_layout();
            let filters = settings.topic_filters()?;
            refuse_tags(
                CO2_ROUTE,
                "mqtt.topics",
                &tag_names(&filters),
                "co2_emissions",
            )?;
            routes.push(Route {
                name: Arc::from(CO2_ROUTE),
                filters,
                default_device: default_device.clone(),
                times: times.clone(),
                zone: co2_zone,
                decode: Decode::Pipe(times.clone(), Arc::from("emissions")),
                table: "co2_emissions".to_owned(),
                column_names: layout.columns().iter().map(|(c, _)| c.clone()).collect(),
                layout,
                max_payload: settings.wire.max_payload_bytes,
                sink: settings.co2.sink.clone(),
                trust_payload_device: false,
                measurement: settings.co2.measurement.as_deref().map(Arc::from),
                tokens_file: None,
                tokens: None,
            });
            let events = events_filters(settings)?;
            if settings.co2.events && !events.is_empty() {
                let layout = EventDecoder::layout();
                routes.push(Route {
                    name: Arc::from(EVENTS_ROUTE),
                    filters: events,
                    default_device: default_device.clone(),
                    times: times.clone(),
                    zone: co2_zone,
                    decode: Decode::Event(EventDecoder::new()),
                    table: "device_events".to_owned(),
                    column_names: layout.columns().iter().map(|(c, _)| c.clone()).collect(),
                    layout,
                    max_payload: event::MAX_PAYLOAD,
                    sink: settings.co2.sink.clone(),
                    trust_payload_device: false,
                    measurement: Some(Arc::from("device_events")),
                    tokens_file: None,
                    tokens: None,
                });
            }
        }
        for route in &settings.routes {
            routes.push(build(route, &times, &default_device, settings)?);
        }
        check_names_and_overlaps(&routes, &settings.routes)?;
        let discovery = super::discovered::route(settings, &mut routes, &default_device, &times)?;
        let zones = ZoneRules::new(
            settings.zone_setting()?,
            routes
                .iter()
                .map(|r| r.zone.map(|z| (z, r.name.to_string())))
                .collect(),
            settings.device_zones()?,
        );
        Ok(Self {
            routes,
            dead_letter_bytes: settings.wire.dead_letter_payload_bytes,
            max_age: settings.retention.max_age(),
            faults: Faults::default(),
            clock: ReceiveClock::default(),
            zones,
            clocks: Arc::new(DeviceClocks::new(settings.metrics.max_devices, None)),
            discovery,
        })
    }

    /// Reads every route's HTTP tokens file (at start, so a typo fails then).
    pub fn load_tokens(&mut self) -> Result<(), ConfigError> {
        for route in &mut self.routes {
            if let Some(path) = &route.tokens_file {
                let tokens =
                    Tokens::load(path).map_err(|e| invalid(&route.name, "http.tokens_file", e))?;
                route.tokens = Some(tokens);
            }
        }
        Ok(())
    }
}

pub(super) fn invalid(route: &str, key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Route {
        route: route.to_owned(),
        key: key.to_owned(),
        message: message.to_string(),
    }
}

fn build(
    s: &RouteSettings,
    times: &Decoder,
    default_device: &DeviceId,
    settings: &Settings,
) -> Result<Route, ConfigError> {
    let name = &s.name;
    if s.name.is_empty() || DeviceId::parse(&s.name).is_err() {
        return Err(invalid(name, "name", "must be 1-64 of A-Z a-z 0-9 _ -"));
    }
    if s.topics.is_empty() {
        return Err(invalid(name, "topics", "needs at least one topic filter"));
    }
    let filters = s
        .topics
        .iter()
        .map(|t| TopicFilter::parse(t).map_err(|e| invalid(name, "topics", format!("{t:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let default_device = match &s.default_device {
        Some(d) => DeviceId::parse(d).map_err(|e| invalid(name, "default_device", e))?,
        None => default_device.clone(),
    };
    let missing = |key: &str| {
        invalid(
            name,
            key,
            format!("decoder = {:?} needs [routes.{key}]", s.decoder),
        )
    };
    let batches = s
        .json
        .as_ref()
        .is_some_and(|j| j.batch || j.batch_field.is_some());
    let max_payload = s.max_payload_bytes.unwrap_or(match s.decoder {
        DecoderKind::Pipe => settings.wire.max_payload_bytes,
        // A thousand readings of a few fields each.
        DecoderKind::Json if batches => 1024 * 1024,
        DecoderKind::Delimited | DecoderKind::Json | DecoderKind::Value => 64 * 1024,
        DecoderKind::Binary => 4 * 1024 * 1024,
        DecoderKind::Lorawan => lorawan::DEFAULT_MAX_PAYLOAD,
    });
    if max_payload == 0 || max_payload > 16 * 1024 * 1024 {
        return Err(invalid(
            name,
            "max_payload_bytes",
            "must be 1..=16777216 (a MEDIUMBLOB holds 16 MiB)",
        ));
    }
    let tags = tag_names(&filters);
    let (decode, layout, default_table): (Decode, Layout, Option<&str>) = match s.decoder {
        DecoderKind::Pipe => {
            refuse_tags(name, "topics", &tags, "co2_emissions")?;
            (
                Decode::Pipe(times.clone(), Arc::from("emissions")),
                pipe_layout(),
                Some("co2_emissions"),
            )
        }
        DecoderKind::Delimited => {
            let d = s.delimited.as_ref().ok_or_else(|| missing("delimited"))?;
            check_delimited(name, d)?;
            (
                Decode::Delimited(Delimited::new(d)),
                Delimited::layout(d).with_tag_columns(tags.iter().copied()),
                None,
            )
        }
        DecoderKind::Json => {
            let j = s.json.clone().unwrap_or_default();
            let decoder = json_decoder(name, &j)?;
            let layout = JsonDecoder::layout(&j);
            match j.mode {
                JsonMode::Long => (decoder, layout, Some("readings")),
                JsonMode::Columns => (decoder, layout.with_tag_columns(tags.iter().copied()), None),
                JsonMode::Document => (decoder, layout, Some("documents")),
            }
        }
        DecoderKind::Value => (
            Decode::Value(ValueDecoder),
            ValueDecoder::layout(),
            Some("readings"),
        ),
        DecoderKind::Binary => {
            refuse_tags(name, "topics", &tags, "images")?;
            (
                Decode::Binary(BinaryDecoder::new(
                    &s.binary.clone().unwrap_or_default(),
                    max_payload,
                )),
                BinaryDecoder::layout(),
                Some("images"),
            )
        }
        DecoderKind::Lorawan => {
            let l = s.lorawan.as_ref().ok_or_else(|| missing("lorawan"))?;
            check_lorawan(name, l)?;
            if l.events {
                refuse_tags(name, "topics", &tags, "device_events")?;
            }
            (
                Decode::Lorawan(LorawanDecoder::new(l)),
                LorawanDecoder::layout(l),
                Some(if l.events {
                    "device_events"
                } else {
                    "readings"
                }),
            )
        }
    };
    let table = match (&s.table, default_table) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => return Err(invalid(name, "table", "is required for this decoder")),
    };
    if !is_identifier(&table) {
        return Err(invalid(
            name,
            "table",
            "must be a plain SQL name ([A-Za-z_][A-Za-z0-9_]*)",
        ));
    }
    let logical: Vec<&str> = layout.columns().iter().map(|(c, _)| c.as_str()).collect();
    for (i, column) in logical.iter().enumerate() {
        if logical[..i].contains(column) {
            return Err(invalid(
                name,
                "topics",
                format!("the level {{{column}}} is also a column of this route; name it otherwise"),
            ));
        }
    }
    for key in s.columns.keys() {
        if !logical.contains(&key.as_str()) {
            return Err(invalid(
                name,
                &format!("columns.{key}"),
                format!("no such field; fields are {logical:?}"),
            ));
        }
    }
    let column_names: Vec<String> = logical
        .iter()
        .map(|c| {
            s.columns
                .get(*c)
                .cloned()
                .unwrap_or_else(|| (*c).to_owned())
        })
        .collect();
    for c in &column_names {
        if !is_identifier(c) {
            return Err(invalid(
                name,
                "columns",
                format!("{c:?} is not a plain SQL name"),
            ));
        }
    }
    Ok(Route {
        name: Arc::from(name.as_str()),
        filters,
        default_device,
        times: times.clone(),
        zone: route_zone(s)?,
        decode,
        table,
        layout,
        column_names,
        max_payload,
        sink: s.sink.clone().unwrap_or_else(|| DEFAULT_SINK.to_owned()),
        trust_payload_device: s.trust_payload_device,
        measurement: s.measurement.as_deref().map(Arc::from),
        tokens_file: s.http.as_ref().map(|h| h.tokens_file.clone()),
        tokens: None,
    })
}

/// A route's own `time_zone` (or, as before it existed, `json.time_zone`).
fn route_zone(s: &RouteSettings) -> Result<Option<ZoneSetting>, ConfigError> {
    let json = s.json.as_ref().and_then(|j| j.time_zone.as_ref());
    let (key, text) = match (&s.time_zone, json) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &s.name,
                "time_zone",
                "set it once: time_zone, or json.time_zone (its older name), not both",
            ))
        }
        (Some(text), None) => ("time_zone", text),
        (None, Some(text)) => ("json.time_zone", text),
        (None, None) => return Ok(None),
    };
    text.parse().map(Some).map_err(|e| invalid(&s.name, key, e))
}

/// The names of the named levels (tags) of every filter, each once, in order.
fn tag_names(filters: &[TopicFilter]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for name in filters.iter().flat_map(TopicFilter::names) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Routes into a fixed table (`co2_emissions`, `images`) have nowhere to keep tags.
fn refuse_tags(route: &str, key: &str, tags: &[&str], table: &str) -> Result<(), ConfigError> {
    match tags.first() {
        None => Ok(()),
        Some(tag) => Err(invalid(
            route,
            key,
            format!(
                "the level {{{tag}}} would be a tag, and {table} has no column for tags; \
                 write it as + (or name only {{device}})"
            ),
        )),
    }
}

/// True for a plain SQL identifier, safe to quote with backticks.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_delimited(
    name: &str,
    d: &crate::config::routes::DelimitedSettings,
) -> Result<(), ConfigError> {
    if d.separator.is_empty() {
        return Err(invalid(name, "delimited.separator", "must not be empty"));
    }
    if d.fields.is_empty() {
        return Err(invalid(
            name,
            "delimited.fields",
            "needs at least one field",
        ));
    }
    for (i, f) in d.fields.iter().enumerate() {
        let key = format!("delimited.fields[{i}]");
        if f.kind != FieldKind::Skip && f.column.is_none() {
            return Err(invalid(name, &key, "needs a column"));
        }
        if f.span == 0 || (f.span > 1 && f.kind != FieldKind::Datetime) {
            return Err(invalid(name, &key, "span > 1 is only for datetime fields"));
        }
        if (f.flag_word.is_some() || f.flag_column.is_some()) && f.kind != FieldKind::Number {
            return Err(invalid(
                name,
                &key,
                "flag_word/flag_column are for number fields",
            ));
        }
        if f.flag_word.is_some() != f.flag_column.is_some() {
            return Err(invalid(name, &key, "flag_word and flag_column go together"));
        }
    }
    Ok(())
}

fn check_names_and_overlaps(
    routes: &[Route],
    settings: &[RouteSettings],
) -> Result<(), ConfigError> {
    let configured: HashMap<&str, &RouteSettings> =
        settings.iter().map(|s| (s.name.as_str(), s)).collect();
    for (i, route) in routes.iter().enumerate() {
        for earlier in &routes[..i] {
            if earlier.name == route.name {
                return Err(invalid(&route.name, "name", "is used by another route"));
            }
            let allowed = configured
                .get(&*route.name)
                .is_some_and(|s| s.allow_overlap);
            let overlap = route
                .filters
                .iter()
                .any(|f| earlier.filters.iter().any(|e| e.overlaps(f)));
            if overlap && !allowed {
                return Err(invalid(
                    &route.name,
                    "topics",
                    format!(
                        "overlap route {:?}'s (a topic could match both); set allow_overlap = true \
                         to let the earlier route win",
                        &*earlier.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
