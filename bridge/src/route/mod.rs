//! Routes: which messages go where. A route is topic filters, a decoder, a
//! sink and, for table sinks, a table and its columns. The CO2 route (`[mqtt]
//! topics`, the `|` payload, `co2_emissions`) is built in and needs no
//! configuration; more come from `[[routes]]`. Every route shares the same
//! durable pipeline: batches, dead letters, acks after the sink has the data.

mod binary;
mod clock;
mod delimited;
mod event;
mod flatten;
mod json;
mod scalar;
mod times;
mod value;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use co2_wire::{ClockOffset, Decoder, DeviceId, Seq, TopicFilter, TopicMatch};

use crate::clocks::{DeviceClocks, Seen, Verdict, ZoneRules, ZoneSetting};
use crate::config::routes::{DecoderKind, FieldKind, JsonMode, RouteSettings};
use crate::config::{ConfigError, Settings};
pub use crate::config::{CO2_ROUTE, DEFAULT_SINK, EVENTS_ROUTE};
use crate::fault::Faults;
use crate::model::Origin;
use crate::model::{Column, Field, Layout, Message, RouteId, Value};
use crate::model::{DeadLetter, Reason, Record};
use crate::tokens::Tokens;
use binary::BinaryDecoder;
pub use clock::ReceiveClock;
use delimited::Delimited;
use event::EventDecoder;
use json::JsonDecoder;
pub use times::MessageTimes;
use value::ValueDecoder;

/// The `route` label of messages no route matched.
pub const UNROUTED: &str = "unrouted";

/// What a decoder sees besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The device named by the topic or token, or the route's default.
    pub device: &'a DeviceId,
    /// True when `device` came from the topic or token rather than the default.
    pub device_from_source: bool,
    /// The route lets the payload name the device when the topic names none.
    pub trust_payload_device: bool,
    /// The reading's number at its source, if it has one.
    pub seq: Option<Seq>,
    /// When the bridge received the message.
    pub now: DateTime<Utc>,
    /// The topic it arrived on.
    pub topic: &'a str,
    /// The named levels of the topic other than `{device}`, checked: the
    /// message's tags.
    pub tags: &'a [(Arc<str>, String)],
    /// The route's id, for [`Context::received`].
    pub route: RouteId,
    /// Where unique receive stamps come from.
    pub clock: &'a ReceiveClock,
    /// How the payload's times are read (in the device's zone) and checked.
    pub times: &'a MessageTimes<'a>,
}

impl Context<'_> {
    /// The message's device, given the one its payload names (if any): a
    /// payload may not name another device than its topic or token does
    /// (`device_mismatch`), and on a topic that names none it is believed
    /// only where the route trusts payloads (`untrusted_device` otherwise).
    pub fn device_named(&self, in_payload: Option<DeviceId>) -> Result<DeviceId, Reason> {
        match in_payload {
            None => Ok(self.device.clone()),
            Some(named) if self.device_from_source => {
                if named == *self.device {
                    Ok(named)
                } else {
                    Err(Reason::DeviceMismatch)
                }
            }
            Some(named) if self.trust_payload_device => Ok(named),
            Some(_) => Err(Reason::UntrustedDevice),
        }
    }

    /// The time to stamp a message that carries none: when it arrived, but
    /// never the same microsecond twice for one device of a route (see
    /// [`ReceiveClock`]).
    pub fn received(&self) -> DateTime<Utc> {
        self.clock
            .stamp((self.route, self.device.as_str()), self.now)
    }
}

/// The field names a numbered reading's number is stored under.
struct SeqFields {
    epoch: Arc<str>,
    n: Arc<str>,
}

/// Longest tag value, in characters (a tag column is `VARCHAR(64)`).
pub const MAX_TAG_CHARS: usize = 64;

#[derive(Debug, Clone)]
enum Decode {
    Pipe(Decoder, Arc<str>),
    Event(EventDecoder),
    Delimited(Delimited),
    Json(JsonDecoder),
    Value(ValueDecoder),
    Binary(BinaryDecoder),
}

/// One configured route.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    filters: Vec<TopicFilter>,
    default_device: DeviceId,
    /// The payload limits its times are checked against.
    times: Decoder,
    /// Its own `time_zone`, if it has one.
    zone: Option<ZoneSetting>,
    decode: Decode,
    table: String,
    layout: Layout,
    /// The layout's columns as named in the table (after `columns` renames).
    column_names: Vec<String>,
    max_payload: usize,
    sink: String,
    trust_payload_device: bool,
    measurement: Option<Arc<str>>,
    tokens_file: Option<PathBuf>,
    tokens: Option<Tokens>,
}

impl Route {
    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the sink its messages go to.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Its measurement, for InfluxDB sinks (`None`: each message's topic).
    pub fn measurement(&self) -> Option<&str> {
        self.measurement.as_deref()
    }

    /// Its table, for table sinks.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How its messages become rows, for table sinks.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The layout's columns as the table names them.
    pub fn column_names(&self) -> &[String] {
        &self.column_names
    }

    /// Its topic filters.
    pub fn filters(&self) -> &[TopicFilter] {
        &self.filters
    }

    /// Longest accepted payload.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// True for routes whose payloads are files (images).
    pub fn is_binary(&self) -> bool {
        matches!(self.decode, Decode::Binary(_))
    }

    /// The device a bearer token belongs to, when HTTP ingest is on for this route.
    pub fn device_for_token(&self, token: &str) -> Option<&DeviceId> {
        self.tokens.as_ref()?.device_for(token)
    }

    /// True when `POST /ingest/<name>` is enabled.
    pub fn accepts_http(&self) -> bool {
        self.tokens_file.is_some()
    }

    fn decode(&self, payload: &Bytes, ctx: &Context<'_>) -> Result<Message, Reason> {
        if payload.len() > self.max_payload {
            return Err(Reason::Oversized);
        }
        match &self.decode {
            Decode::Pipe(decoder, field) => {
                let (time, value) = decoder.split(payload)?;
                let time = ctx.times.read_text(time)?;
                let reading = decoder.finish(time, value)?;
                let mut fields = vec![Field {
                    name: field.clone(),
                    value: Value::Float(reading.emissions()),
                }];
                // The number travels with the reading, so completeness can be
                // proven from the table over any time range.
                if let Some(seq) = ctx.seq {
                    if let Ok(n) = i64::try_from(seq.n()) {
                        let names = seq_fields();
                        fields.push(Field {
                            name: names.epoch,
                            value: Value::Text(seq.epoch().to_string()),
                        });
                        fields.push(Field {
                            name: names.n,
                            value: Value::Int(n),
                        });
                    }
                }
                Ok(Message {
                    device: ctx.device.clone(),
                    time: reading.time().naive_utc(),
                    tags: ctx.tags.to_vec(),
                    fields,
                    reading: Some(reading),
                })
            }
            Decode::Event(d) => d.decode(payload, ctx),
            Decode::Delimited(d) => d.decode(payload, ctx),
            Decode::Json(d) => d.decode(payload, ctx),
            Decode::Value(d) => d.decode(payload, ctx),
            Decode::Binary(d) => d.decode(payload, ctx),
        }
    }
}

/// Every route, in match order (the first matching route wins).
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Route>,
    dead_letter_bytes: usize,
    faults: Faults,
    clock: ReceiveClock,
    /// Which zone each device's offset-less times are read in.
    zones: ZoneRules,
    /// What the devices' clocks look like, and the offsets learned.
    clocks: Arc<DeviceClocks>,
}

/// A delivery no route can take: the route it matched (if any), and why.
struct Unresolved {
    route: Option<RouteId>,
    topic: String,
    reason: Reason,
}

/// A delivery matched to its route, before decoding.
struct Resolved<'r> {
    id: RouteId,
    route: &'r Route,
    device: DeviceId,
    device_from_source: bool,
    topic: String,
    tags: Vec<(Arc<str>, String)>,
}

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

fn seq_fields() -> SeqFields {
    SeqFields {
        epoch: Arc::from("seq_epoch"),
        n: Arc::from("seq"),
    }
}

/// The built-in CO2 route's layout: a pipe route's, plus the reading's number
/// (`seq_epoch`, `seq`; NULL for readings that come unnumbered).
fn co2_layout() -> Layout {
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
            faults: Faults::default(),
            clock: ReceiveClock::default(),
            zones,
            clocks: Arc::new(DeviceClocks::new(settings.metrics.max_devices, None)),
        })
    }

    /// The same routes observing device clocks into `clocks` (the bridge's
    /// one, which keeps learned offsets across restarts).
    pub fn with_clocks(self, clocks: Arc<DeviceClocks>) -> Self {
        Self { clocks, ..self }
    }

    /// The device clocks these routes observe.
    pub fn clocks(&self) -> &Arc<DeviceClocks> {
        &self.clocks
    }

    /// The zone rules (for the status page: where a device's zone comes from).
    pub fn zones(&self) -> &ZoneRules {
        &self.zones
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

    /// The same routes with `faults` armed (test builds; see [`crate::fault`]).
    pub fn with_faults(self, faults: Faults) -> Self {
        Self { faults, ..self }
    }

    /// The routes, in order; a route's position is its [`RouteId`].
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The route `id`.
    pub fn get(&self, id: RouteId) -> Option<&Route> {
        self.routes.get(id)
    }

    /// The `route` label of `id`: its name, or [`UNROUTED`].
    pub fn label(&self, id: Option<RouteId>) -> &str {
        id.and_then(|id| self.routes.get(id))
            .map_or(UNROUTED, |r| &*r.name)
    }

    /// Every `route` label value: the routes' names plus [`UNROUTED`].
    pub fn labels(&self) -> Vec<&str> {
        self.routes
            .iter()
            .map(|r| r.name())
            .chain([UNROUTED])
            .collect()
    }

    /// The route called `name`, with its id.
    pub fn by_name(&self, name: &str) -> Option<(RouteId, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| &*r.name == name)
    }

    /// Every filter to subscribe to.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for filter in self.routes.iter().flat_map(|r| &r.filters) {
            if !out.iter().any(|s| s == filter.subscription()) {
                out.push(filter.subscription().to_owned());
            }
        }
        out
    }

    /// Turns one delivery into a record. Never panics: a decoder that panics
    /// anyway costs this one message a dead letter (`decoder_panic`).
    pub fn record(
        &self,
        origin: &Origin,
        payload: Bytes,
        seq: Option<Seq>,
        now: DateTime<Utc>,
    ) -> Record {
        let resolved = match self.resolve(origin) {
            Ok(resolved) => resolved,
            Err(u) => return self.reject(u.route, &u.topic, &payload, u.reason),
        };
        let Resolved {
            id,
            route,
            device,
            device_from_source,
            topic,
            tags,
        } = resolved;
        let setting = self.zones.setting(id, device.as_str());
        let attempt = |zone| {
            let times = MessageTimes::new(&route.times, zone, now);
            let ctx = Context {
                device: &device,
                device_from_source,
                trust_payload_device: route.trust_payload_device,
                seq,
                now,
                topic: &topic,
                tags: &tags,
                route: id,
                clock: &self.clock,
                times: &times,
            };
            let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.faults.at_decode(&payload);
                route.decode(&payload, &ctx)
            }));
            (decoded, times.seen())
        };
        let zone = match setting {
            ZoneSetting::Zone(zone) => Some(zone),
            ZoneSetting::Auto => self.clocks.learned(&device),
        };
        let (mut decoded, seen) = attempt(zone);
        let mut detail = None;
        if let Some(seen) = seen {
            match self
                .clocks
                .observe(&device, id, &seen, now, setting == ZoneSetting::Auto)
            {
                Verdict::Store => {}
                // This very reading taught it: read it again in its zone.
                Verdict::Learned(zone) => decoded = attempt(Some(zone)).0,
                Verdict::Hold(why) => {
                    if matches!(decoded, Ok(Ok(_)) | Ok(Err(Reason::TimeZoneUnknown))) {
                        decoded = Ok(Err(Reason::TimeZoneUnknown));
                        detail = Some(why);
                    }
                }
            }
            if matches!(decoded, Ok(Err(Reason::TooFarInFuture))) {
                detail = Some(ahead_of_arrival(&seen, now, &route.name));
            }
        }
        match decoded {
            Ok(Ok(message)) => Record::Decoded {
                route: id,
                message,
                topic,
                payload,
            },
            Ok(Err(reason)) => {
                let mut letter = self.dead_letter(&letter_topic(origin, &topic), &payload, reason);
                if let Some(detail) = detail {
                    letter = letter.with_detail(&detail);
                }
                Record::Rejected {
                    route: Some(id),
                    letter,
                }
            }
            Err(panic) => {
                tracing::error!(
                    route = %route.name,
                    topic = %topic,
                    panic = %crate::supervisor::panic_message(panic.as_ref()),
                    "A decoder panicked on this message; it is dead-lettered as decoder_panic \
                     and the other messages go on (please report this as a bug)"
                );
                self.reject(
                    Some(id),
                    &letter_topic(origin, &topic),
                    &payload,
                    Reason::DecoderPanic,
                )
            }
        }
    }

    /// A dead letter for a delivery, labelled with its route (if any matches)
    /// but not decoded: for messages that must not be handled (see the quarantine).
    pub fn refuse(&self, origin: &Origin, payload: &[u8], reason: Reason) -> Record {
        match self.resolve(origin) {
            Ok(r) => self.reject(Some(r.id), &letter_topic(origin, &r.topic), payload, reason),
            Err(u) => self.reject(u.route, &u.topic, payload, reason),
        }
    }

    /// The dead letter for `payload`.
    pub fn dead_letter(&self, topic: &str, payload: &[u8], reason: Reason) -> DeadLetter {
        DeadLetter::new(topic, payload, reason, self.dead_letter_bytes)
    }

    fn reject(
        &self,
        route: Option<RouteId>,
        topic: &str,
        payload: &[u8],
        reason: Reason,
    ) -> Record {
        Record::Rejected {
            route,
            letter: self.dead_letter(topic, payload, reason),
        }
    }

    /// Finds the route and device of a delivery, or says why there is none.
    fn resolve(&self, origin: &Origin) -> Result<Resolved<'_>, Unresolved> {
        match origin {
            Origin::Mqtt(raw) => {
                // UTF-8 by the MQTT spec; a broker that breaks it gets the
                // replacement character in the dead letter, not a panic.
                let topic = String::from_utf8_lossy(raw);
                self.resolve_topic(&topic, None, || topic.clone().into_owned())
            }
            Origin::Kafka(record) => {
                self.resolve_topic(&record.topic, record.key.as_deref(), || record.locator())
            }
            Origin::Http { route: id, device } => {
                let Some(route) = self.routes.get(*id) else {
                    return Err(Unresolved {
                        route: None,
                        topic: "http".to_owned(),
                        reason: Reason::NoRoute,
                    });
                };
                let topic = route
                    .filters
                    .first()
                    .and_then(|f| f.topic_for(device))
                    .unwrap_or_else(|| format!("http/ingest/{}", route.name));
                Ok(Resolved {
                    id: *id,
                    route,
                    device: device.clone(),
                    device_from_source: true,
                    topic,
                    tags: Vec::new(),
                })
            }
        }
    }
}

impl Routes {
    /// Finds the route of a topic and the device: the topic's device level,
    /// else the record key (Kafka, when the source takes the device from it),
    /// else the route's default (which a trusted payload may override).
    /// `letter` names the delivery in a dead letter.
    fn resolve_topic(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        letter: impl Fn() -> String,
    ) -> Result<Resolved<'_>, Unresolved> {
        let found = self.routes.iter().enumerate().find_map(|(id, r)| {
            r.filters
                .iter()
                .find_map(|f| f.matches(topic))
                .map(|m| (id, r, m))
        });
        let unresolved = |route, reason| Unresolved {
            route,
            topic: letter(),
            reason,
        };
        let Some((id, route, matched)) = found else {
            return Err(unresolved(None, Reason::NoRoute));
        };
        let named = matched.device().map(|t| t.as_bytes()).or(key);
        let (device, device_from_source) = match named {
            Some(bytes) => match std::str::from_utf8(bytes).ok().map(DeviceId::parse) {
                Some(Ok(device)) => (device, true),
                _ => return Err(unresolved(Some(id), Reason::BadDevice)),
            },
            None => (route.default_device.clone(), false),
        };
        let tags = match tags_of(&matched) {
            Ok(tags) => tags,
            Err(reason) => return Err(unresolved(Some(id), reason)),
        };
        Ok(Resolved {
            id,
            route,
            device,
            device_from_source,
            topic: topic.to_owned(),
            tags,
        })
    }
}

/// The dead letter's words for a reading stamped too far ahead of its
/// arrival: how far, and, when that is a whole zone offset, which zone the
/// device seems to live in and what to set.
fn ahead_of_arrival(seen: &Seen, arrival: DateTime<Utc>, route: &str) -> String {
    let error = ClockOffset::between(seen.time, arrival);
    let wall = seen
        .wall
        .map(|w| ClockOffset::between(w.and_utc(), arrival));
    co2_wire::explain_offset(error, wall, &format!("route {route} or of this device"))
}

/// How a dead letter names where a delivery came from: its topic, or for a
/// Kafka record its topic, partition and offset.
fn letter_topic<'t>(origin: &Origin, topic: &'t str) -> std::borrow::Cow<'t, str> {
    match origin {
        Origin::Kafka(record) => std::borrow::Cow::Owned(record.locator()),
        _ => std::borrow::Cow::Borrowed(topic),
    }
}

/// The tags of a match: each named level's text, refused (`bad_tag`) when
/// empty, longer than [`MAX_TAG_CHARS`] or holding a control character.
fn tags_of(matched: &TopicMatch<'_>) -> Result<Vec<(Arc<str>, String)>, Reason> {
    matched
        .named()
        .iter()
        .map(|(name, text)| {
            let bad = text.is_empty()
                || text.chars().nth(MAX_TAG_CHARS).is_some()
                || text.chars().any(char::is_control);
            if bad {
                Err(Reason::BadTag)
            } else {
                Ok((Arc::from(*name), (*text).to_owned()))
            }
        })
        .collect()
}

fn invalid(route: &str, key: &str, message: impl std::fmt::Display) -> ConfigError {
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
    let max_payload = s.max_payload_bytes.unwrap_or(match s.decoder {
        DecoderKind::Pipe => settings.wire.max_payload_bytes,
        DecoderKind::Delimited | DecoderKind::Json | DecoderKind::Value => 64 * 1024,
        DecoderKind::Binary => 4 * 1024 * 1024,
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

/// The JSON decoder of a route, its settings checked.
fn json_decoder(
    name: &str,
    j: &crate::config::routes::JsonSettings,
) -> Result<Decode, ConfigError> {
    if j.mode == JsonMode::Columns && j.fields.is_empty() {
        return Err(invalid(
            name,
            "json.fields",
            "mode = \"columns\" needs fields",
        ));
    }
    if j.mode != JsonMode::Columns && !j.fields.is_empty() {
        return Err(invalid(
            name,
            "json.fields",
            "is for mode = \"columns\" only",
        ));
    }
    if j.max_depth
        .is_some_and(|d| !(1..=flatten::MAX_DEPTH).contains(&d))
    {
        return Err(invalid(
            name,
            "json.max_depth",
            format!(
                "must be 1..={} (a MariaDB JSON column holds 31 levels)",
                flatten::MAX_DEPTH
            ),
        ));
    }
    if j.max_fields == Some(0) {
        return Err(invalid(name, "json.max_fields", "must be at least 1"));
    }
    for (key, value) in [
        ("json.time_field", &j.time_field),
        ("json.device_field", &j.device_field),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(name, key, "must not be empty"));
        }
    }
    Ok(Decode::Json(JsonDecoder::new(j)))
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

#[cfg(test)]
mod tests;
