//! Routes: which messages go where. A route is topic filters, a decoder, a
//! sink and, for table sinks, a table and its columns. The CO2 route (`[mqtt]
//! topics`, the `|` payload, `co2_emissions`) is built in and needs no
//! configuration; more come from `[[routes]]`. Every route shares the same
//! durable pipeline: batches, dead letters, acks after the sink has the data.

mod batch;
mod binary;
mod build;
mod clock;
mod decode;
mod delimited;
mod discovered;
mod event;
mod flatten;
mod json;
mod lorawan;
mod scalar;
mod times;
mod value;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use co2_wire::{Decoder, DeviceId, Seq, TopicFilter};

use crate::clocks::{DeviceClocks, ZoneRules, ZoneSetting};
pub use crate::config::{CO2_ROUTE, DEFAULT_SINK, EVENTS_ROUTE};
use crate::discovery::Discovery;
use crate::fault::Faults;
use crate::model::{Field, Layout, Message, Reason, RouteId, Value};
use crate::tokens::Tokens;
use binary::BinaryDecoder;
#[cfg(test)]
use build::is_identifier;
pub use clock::ReceiveClock;
use delimited::Delimited;
use event::EventDecoder;
use json::JsonDecoder;
use lorawan::LorawanDecoder;
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

/// What a route's decoder made of one delivery: one message, or the
/// elements of a batch, each with the bytes it was sent as.
enum Parts<'p> {
    One(Result<Message, Reason>),
    Many(Vec<(Result<Message, Reason>, &'p [u8])>),
}

impl Parts<'_> {
    /// Holds every message read (a device whose zone is not known yet):
    /// each becomes `time_zone_unknown`; true if any did.
    fn hold(&mut self) -> bool {
        let mut held = false;
        self.for_each(|result| {
            if matches!(result, Ok(_) | Err(Reason::TimeZoneUnknown)) {
                *result = Err(Reason::TimeZoneUnknown);
                held = true;
            }
        });
        held
    }

    /// True if any part's result passes `test`.
    fn any(&self, test: impl Fn(&Result<Message, Reason>) -> bool) -> bool {
        match self {
            Parts::One(result) => test(result),
            Parts::Many(parts) => parts.iter().any(|(result, _)| test(result)),
        }
    }

    /// Calls `f` on every part's result.
    fn for_each(&mut self, mut f: impl FnMut(&mut Result<Message, Reason>)) {
        match self {
            Parts::One(result) => f(result),
            Parts::Many(parts) => parts.iter_mut().for_each(|(result, _)| f(result)),
        }
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
    Lorawan(LorawanDecoder),
    /// The sensors Home Assistant discovery announced (`[discovery]`).
    Discovery(Arc<Discovery>),
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

    /// The table's name of the layout's `wanted` column, if it has one.
    pub fn column_named(&self, wanted: &crate::model::Column) -> Option<String> {
        self.layout()
            .columns()
            .iter()
            .zip(self.column_names())
            .find(|((_, column), _)| column == wanted)
            .map(|(_, name)| name.clone())
    }

    /// Its topic filters.
    pub fn filters(&self) -> &[TopicFilter] {
        &self.filters
    }

    /// Longest accepted payload.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// True for routes that read the devices' `time|value` payload (the
    /// CO2 route's decoder), the payload an import builds from a row.
    pub fn takes_pipe_payload(&self) -> bool {
        matches!(self.decode, Decode::Pipe(..))
    }

    /// True for routes that read a LoRaWAN network server's JSON, whose
    /// times are the server's receive times (UTC), never a device's clock.
    pub fn is_lorawan(&self) -> bool {
        matches!(self.decode, Decode::Lorawan(_))
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

    fn decode<'p>(&self, payload: &'p Bytes, ctx: &Context<'_>) -> Parts<'p> {
        if payload.len() > self.max_payload {
            return Parts::One(Err(Reason::Oversized));
        }
        match &self.decode {
            Decode::Json(d) => d.decode_parts(payload, ctx),
            _ => Parts::One(self.decode_one(payload, ctx)),
        }
    }

    fn decode_one(&self, payload: &Bytes, ctx: &Context<'_>) -> Result<Message, Reason> {
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
                    frame: None,
                })
            }
            Decode::Event(d) => d.decode(payload, ctx),
            Decode::Delimited(d) => d.decode(payload, ctx),
            Decode::Json(d) => d.decode(payload, ctx),
            Decode::Value(d) => d.decode(payload, ctx),
            Decode::Binary(d) => d.decode(payload, ctx),
            Decode::Lorawan(d) => d.decode(payload, ctx),
            Decode::Discovery(d) => d.decode(ctx.topic, payload, ctx.received().naive_utc()),
        }
    }
}

/// Every route, in match order (the first matching route wins).
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Route>,
    dead_letter_bytes: usize,
    /// Readings older than this are refused on routes into retained tables.
    max_age: Option<chrono::TimeDelta>,
    faults: Faults,
    clock: ReceiveClock,
    /// Which zone each device's offset-less times are read in.
    zones: ZoneRules,
    /// What the devices' clocks look like, and the offsets learned.
    clocks: Arc<DeviceClocks>,
    /// Home Assistant discovery, when it is on, and its route's id.
    discovery: Option<(RouteId, Arc<Discovery>)>,
}

fn seq_fields() -> SeqFields {
    SeqFields {
        epoch: Arc::from("seq_epoch"),
        n: Arc::from("seq"),
    }
}

impl Routes {
    /// The same routes observing device clocks into `clocks` (the bridge's
    /// one, which keeps learned offsets across restarts).
    pub fn with_clocks(self, clocks: Arc<DeviceClocks>) -> Self {
        Self { clocks, ..self }
    }

    /// The same routes reading every offset-less time by `zones` (an import
    /// whose file says in which zone it was written).
    pub fn with_zones(self, zones: ZoneRules) -> Self {
        Self { zones, ..self }
    }

    /// The device clocks these routes observe.
    pub fn clocks(&self) -> &Arc<DeviceClocks> {
        &self.clocks
    }

    /// Home Assistant discovery, when `[discovery] homeassistant` is on.
    pub fn discovery(&self) -> Option<&Arc<Discovery>> {
        self.discovery.as_ref().map(|(_, d)| d)
    }

    /// The zone rules (for the status page: where a device's zone comes from).
    pub fn zones(&self) -> &ZoneRules {
        &self.zones
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

    /// Every filter to subscribe to. Discovery's are not among them: the
    /// MQTT source subscribes to those itself, on every connection.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let discovery = self.discovery.as_ref().map(|(id, _)| *id);
        let routes = self
            .routes
            .iter()
            .enumerate()
            .filter(|(id, _)| Some(*id) != discovery);
        for filter in routes.flat_map(|(_, r)| &r.filters) {
            if !out.iter().any(|s| s == filter.subscription()) {
                out.push(filter.subscription().to_owned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
