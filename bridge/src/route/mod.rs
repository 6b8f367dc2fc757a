//! Routes: which messages go where. A route is topic filters, a decoder, a
//! target table and its columns. The CO2 route (`[mqtt] topics`, the `|`
//! payload, `co2_emissions`) is built in and needs no configuration; more come
//! from `[[routes]]`. Every route shares the same durable pipeline: batches,
//! dead letters, acks after commit.

mod binary;
mod delimited;
mod json;
pub mod settings;
pub mod target;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use co2_wire::{Decoder, DeviceId, Reading, TopicFilter, TopicMatch};

use crate::config::{ConfigError, Settings};
use crate::fault::Faults;
use binary::BinaryDecoder;
use delimited::Delimited;
use json::JsonDecoder;
use settings::{DecoderKind, FieldKind, RouteSettings};
pub use target::{Row, Target, Value};

/// Name of the built-in CO2 route.
pub const CO2_ROUTE: &str = "co2";

/// The `route` label of messages no route matched.
pub const UNROUTED: &str = "unrouted";

/// What one message becomes in the database.
#[derive(Debug, Clone)]
pub enum Record {
    /// Rows for a route's table; topic and payload are kept in case the
    /// database refuses them and the message must be dead-lettered after all.
    Rows {
        /// The route's name.
        route: Arc<str>,
        /// Where the rows go.
        target: Arc<Target>,
        /// The rows (JSON `long` makes several of one message).
        rows: Vec<Row>,
        /// The device the message is about.
        device: DeviceId,
        /// The CO2 reading, for the CO2-specific metrics.
        reading: Option<Reading>,
        /// Where it came from.
        topic: String,
        /// The raw payload.
        payload: Bytes,
    },
    /// A message that cannot be stored as rows.
    Rejected {
        /// The route's name ([`UNROUTED`] when none matched).
        route: Arc<str>,
        /// The dead letter.
        letter: DeadLetter,
    },
}

/// A row for `rejected_messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic, truncated to the column.
    pub topic: String,
    /// The first bytes of the payload.
    pub payload: Vec<u8>,
    /// The payload's real length.
    pub payload_bytes: u32,
    /// A snake_case reason (a metric label too).
    pub reason: &'static str,
}

/// Characters of topic kept in a dead letter (`rejected_messages.topic` is VARCHAR(255)).
const DEAD_LETTER_TOPIC_CHARS: usize = 255;

impl DeadLetter {
    /// A dead letter keeping at most `max_payload` bytes of the payload.
    pub fn new(topic: &str, payload: &[u8], reason: &'static str, max_payload: usize) -> Self {
        Self {
            topic: topic.chars().take(DEAD_LETTER_TOPIC_CHARS).collect(),
            payload: payload[..payload.len().min(max_payload)].to_vec(),
            payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            reason,
        }
    }
}

/// Where a delivery came from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An MQTT topic, as the broker sent it: kept as bytes that share the
    /// packet's buffer, since deliveries wait in the pipeline by the thousand.
    Mqtt(Bytes),
    /// `POST /ingest/<route>` by an authenticated device.
    Http {
        /// Index of the route in [`Routes`].
        route: usize,
        /// The device the bearer token belongs to.
        device: DeviceId,
    },
}

/// What a decoder sees besides the payload.
pub struct Context<'a> {
    /// The device named by the topic or token, or the route's default.
    pub device: &'a DeviceId,
    /// True when `device` came from the topic or token rather than the default.
    pub device_from_source: bool,
    /// The topic (for HTTP, the route's topic with the device filled in).
    pub topic: &'a str,
    /// When the bridge received the message.
    pub now: DateTime<Utc>,
}

/// A decoder's output.
#[derive(Debug)]
pub struct Decoded {
    /// Rows in the target's column order.
    pub rows: Vec<Row>,
    /// The device the rows are about.
    pub device: DeviceId,
    /// The CO2 reading, for the pipe decoder.
    pub reading: Option<Reading>,
}

#[derive(Debug, Clone)]
enum Decode {
    Pipe(Decoder),
    Delimited(Delimited),
    Json(JsonDecoder),
    Binary(BinaryDecoder),
}

/// One configured route.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    filters: Vec<TopicFilter>,
    default_device: DeviceId,
    decode: Decode,
    target: Arc<Target>,
    max_payload: usize,
    tokens: Option<Tokens>,
}

impl Route {
    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The target table.
    pub fn target(&self) -> &Target {
        &self.target
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
        self.tokens.is_some()
    }

    fn decode(&self, payload: &Bytes, ctx: &Context<'_>) -> Result<Decoded, &'static str> {
        if payload.len() > self.max_payload {
            return Err("oversized");
        }
        match &self.decode {
            Decode::Pipe(decoder) => {
                let reading = decoder.decode(payload, ctx.now).map_err(|r| r.reason())?;
                Ok(Decoded {
                    rows: vec![vec![
                        Value::Text(ctx.device.as_str().to_owned()),
                        Value::Time(reading.time().naive_utc()),
                        Value::Float(reading.emissions()),
                    ]],
                    device: ctx.device.clone(),
                    reading: Some(reading),
                })
            }
            Decode::Delimited(d) => d.decode(payload, ctx),
            Decode::Json(d) => d.decode(payload, ctx),
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
}

/// A delivery no route can take: the label to count it under, and why.
struct Unresolved<'a> {
    route: &'a str,
    topic: String,
    reason: &'static str,
}

/// A delivery matched to its route, before decoding.
struct Resolved<'r> {
    route: &'r Route,
    device: DeviceId,
    device_from_source: bool,
    topic: String,
}

impl Routes {
    /// Builds and checks the CO2 route plus every `[[routes]]` entry. Errors
    /// name the route and the key.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let zone = settings.time_zone()?;
        let times = Decoder::new(zone, settings.limits());
        let default_device = settings.default_device()?;
        let mut routes = Vec::new();
        if !settings.mqtt.topics.is_empty() {
            routes.push(Route {
                name: Arc::from(CO2_ROUTE),
                filters: settings.topic_filters()?,
                default_device: default_device.clone(),
                decode: Decode::Pipe(times.clone()),
                target: Arc::new(Target::new(
                    "co2_emissions",
                    ["device", "date_time", "emissions"]
                        .map(String::from)
                        .into(),
                )),
                max_payload: settings.wire.max_payload_bytes,
                tokens: None,
            });
        }
        for route in &settings.routes {
            routes.push(build(route, &times, &default_device, settings)?);
        }
        check_names_and_overlaps(&routes, &settings.routes)?;
        Ok(Self {
            routes,
            dead_letter_bytes: settings.wire.dead_letter_payload_bytes,
            faults: Faults::default(),
        })
    }

    /// The same routes with `faults` armed (test builds; see [`crate::fault`]).
    pub fn with_faults(self, faults: Faults) -> Self {
        Self { faults, ..self }
    }

    /// The routes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Every `route` label value: the routes' names plus [`UNROUTED`].
    pub fn labels(&self) -> Vec<&str> {
        self.routes
            .iter()
            .map(|r| r.name())
            .chain([UNROUTED])
            .collect()
    }

    /// The route called `name`, with its index.
    pub fn by_name(&self, name: &str) -> Option<(usize, &Route)> {
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
    pub fn record(&self, source: &Source, payload: Bytes, now: DateTime<Utc>) -> Record {
        let resolved = match self.resolve(source) {
            Ok(resolved) => resolved,
            Err(u) => return self.reject(u.route, &u.topic, &payload, u.reason),
        };
        let Resolved {
            route,
            device,
            device_from_source,
            topic,
        } = resolved;
        let ctx = Context {
            device: &device,
            device_from_source,
            topic: &topic,
            now,
        };
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.faults.at_decode(&payload);
            route.decode(&payload, &ctx)
        }));
        match decoded {
            Ok(Ok(decoded)) => Record::Rows {
                route: route.name.clone(),
                target: route.target.clone(),
                rows: decoded.rows,
                device: decoded.device,
                reading: decoded.reading,
                topic,
                payload,
            },
            Ok(Err(reason)) => self.reject(&route.name, &topic, &payload, reason),
            Err(panic) => {
                tracing::error!(
                    route = %route.name,
                    topic = %topic,
                    panic = %crate::supervisor::panic_message(panic.as_ref()),
                    "A decoder panicked on this message; it is dead-lettered as decoder_panic \
                     and the other messages go on (please report this as a bug)"
                );
                self.reject(&route.name, &topic, &payload, "decoder_panic")
            }
        }
    }

    /// A dead letter for a delivery, labelled with its route (if any matches)
    /// but not decoded: for messages that must not be handled (see `quarantine`).
    pub fn refuse(&self, source: &Source, payload: &[u8], reason: &'static str) -> Record {
        match self.resolve(source) {
            Ok(r) => self.reject(&r.route.name, &r.topic, payload, reason),
            Err(u) => self.reject(u.route, &u.topic, payload, reason),
        }
    }

    /// Finds the route and device of a delivery, or the dead letter saying why there is none.
    fn resolve(&self, source: &Source) -> Result<Resolved<'_>, Unresolved<'_>> {
        match source {
            Source::Mqtt(raw) => {
                // UTF-8 by the MQTT spec; a broker that breaks it gets the
                // replacement character in the dead letter, not a panic.
                let topic = String::from_utf8_lossy(raw);
                let found = self.routes.iter().find_map(|r| {
                    r.filters
                        .iter()
                        .find_map(|f| f.matches(&topic))
                        .map(|m| (r, m))
                });
                let unresolved = |route, reason| Unresolved {
                    route,
                    topic: topic.clone().into_owned(),
                    reason,
                };
                let Some((route, matched)) = found else {
                    return Err(unresolved(UNROUTED, "no_route"));
                };
                let (device, device_from_source) = match matched {
                    TopicMatch::Device(id) => match DeviceId::parse(id) {
                        Ok(device) => (device, true),
                        Err(_) => return Err(unresolved(&route.name, "bad_device")),
                    },
                    TopicMatch::NoDevice => (route.default_device.clone(), false),
                };
                Ok(Resolved {
                    route,
                    device,
                    device_from_source,
                    topic: topic.into_owned(),
                })
            }
            Source::Http { route, device } => {
                let Some(route) = self.routes.get(*route) else {
                    return Err(Unresolved {
                        route: UNROUTED,
                        topic: "http".to_owned(),
                        reason: "no_route",
                    });
                };
                let topic = route
                    .filters
                    .first()
                    .and_then(|f| f.topic_for(device))
                    .unwrap_or_else(|| format!("http/ingest/{}", route.name));
                Ok(Resolved {
                    route,
                    device: device.clone(),
                    device_from_source: true,
                    topic,
                })
            }
        }
    }

    /// The dead letter for `payload`.
    pub fn dead_letter(&self, topic: &str, payload: &[u8], reason: &'static str) -> DeadLetter {
        DeadLetter::new(topic, payload, reason, self.dead_letter_bytes)
    }

    fn reject(&self, route: &str, topic: &str, payload: &[u8], reason: &'static str) -> Record {
        Record::Rejected {
            route: Arc::from(route),
            letter: self.dead_letter(topic, payload, reason),
        }
    }
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
    let (decode, logical, default_table, default_max): (Decode, Vec<String>, Option<&str>, usize) =
        match s.decoder {
            DecoderKind::Pipe => (
                Decode::Pipe(times.clone()),
                ["device", "date_time", "emissions"]
                    .map(String::from)
                    .into(),
                Some("co2_emissions"),
                settings.wire.max_payload_bytes,
            ),
            DecoderKind::Delimited => {
                let d = s.delimited.as_ref().ok_or_else(|| missing("delimited"))?;
                check_delimited(name, d)?;
                (
                    Decode::Delimited(Delimited::new(d, times.clone())),
                    Delimited::columns(d),
                    None,
                    64 * 1024,
                )
            }
            DecoderKind::Json => {
                let j = s.json.clone().unwrap_or_default();
                if j.mode == settings::JsonMode::Columns && j.fields.is_empty() {
                    return Err(invalid(
                        name,
                        "json.fields",
                        "mode = \"columns\" needs fields",
                    ));
                }
                (
                    Decode::Json(JsonDecoder::new(&j, times.clone())),
                    JsonDecoder::columns(&j),
                    Some("readings"),
                    64 * 1024,
                )
            }
            DecoderKind::Binary => (
                // Replaced below once the size limit is known.
                Decode::Pipe(times.clone()),
                BinaryDecoder::columns(),
                Some("images"),
                4 * 1024 * 1024,
            ),
        };
    let max_payload = s.max_payload_bytes.unwrap_or(default_max);
    if max_payload == 0 || max_payload > 16 * 1024 * 1024 {
        return Err(invalid(
            name,
            "max_payload_bytes",
            "must be 1..=16777216 (a MEDIUMBLOB holds 16 MiB)",
        ));
    }
    let decode = match s.decoder {
        DecoderKind::Binary => Decode::Binary(BinaryDecoder::new(
            &s.binary.clone().unwrap_or_default(),
            max_payload,
            times.clone(),
        )),
        _ => decode,
    };
    let table = match (&s.table, default_table) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => return Err(invalid(name, "table", "is required for this decoder")),
    };
    if !target::is_identifier(&table) {
        return Err(invalid(
            name,
            "table",
            "must be a plain SQL name ([A-Za-z_][A-Za-z0-9_]*)",
        ));
    }
    for key in s.columns.keys() {
        if !logical.contains(key) {
            return Err(invalid(
                name,
                &format!("columns.{key}"),
                format!("no such field; fields are {logical:?}"),
            ));
        }
    }
    let columns: Vec<String> = logical
        .iter()
        .map(|c| s.columns.get(c).cloned().unwrap_or_else(|| c.clone()))
        .collect();
    for c in &columns {
        if !target::is_identifier(c) {
            return Err(invalid(
                name,
                "columns",
                format!("{c:?} is not a plain SQL name"),
            ));
        }
    }
    let tokens = match &s.http {
        Some(http) => Some(
            Tokens::load(&http.tokens_file).map_err(|e| invalid(name, "http.tokens_file", e))?,
        ),
        None => None,
    };
    Ok(Route {
        name: Arc::from(name.as_str()),
        filters,
        default_device,
        decode,
        target: Arc::new(Target::new(&table, columns)),
        max_payload,
        tokens,
    })
}

fn check_delimited(name: &str, d: &settings::DelimitedSettings) -> Result<(), ConfigError> {
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

/// Bearer tokens of one route: `<device> <token>` lines.
#[derive(Debug)]
struct Tokens(Vec<(Vec<u8>, DeviceId)>);

impl Tokens {
    fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (device, token) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: expected '<device> <token>'", n + 1))?;
            let device = DeviceId::parse(device).map_err(|e| format!("line {}: {e}", n + 1))?;
            let token = token.trim();
            if token.len() < 16 {
                return Err(format!(
                    "line {}: tokens must be at least 16 characters",
                    n + 1
                ));
            }
            tokens.push((token.as_bytes().to_vec(), device));
        }
        Ok(Self(tokens))
    }

    /// Compares against every token in constant time per token, so timing does
    /// not reveal how much of a guess was right.
    fn device_for(&self, token: &str) -> Option<&DeviceId> {
        let mut found = None;
        for (candidate, device) in &self.0 {
            if constant_time_eq(candidate, token.as_bytes()) {
                found = Some(device);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "co2-routes-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bridge.toml");
        std::fs::write(&file, extra).unwrap();
        let s = Settings::load_from(Some(&file), Vec::<(String, String)>::new());
        std::fs::remove_dir_all(dir).unwrap();
        s
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    const BINS: &str = r#"
[[routes]]
name = "bins"
topics = ["bins/level"]
decoder = "delimited"
table = "bin_levels"
[routes.delimited]
fields = [
  { column = "level", type = "number", flag_word = "FULL", flag_column = "full" },
  { column = "bin_id", type = "device" },
  { column = "measured_at", type = "datetime", span = 2 },
]
"#;

    #[test]
    fn the_co2_route_needs_no_configuration() {
        let routes = Routes::from_settings(&settings("").unwrap()).unwrap();
        assert_eq!(routes.subscriptions(), ["co2/+/emissions", "co2/emissions"]);
        match routes.record(
            &Source::Mqtt(Bytes::from_static(b"co2/pi/emissions")),
            Bytes::from_static(b"2020-07-13 22:43:23|3500"),
            now(),
        ) {
            Record::Rows {
                route,
                target,
                device,
                reading,
                ..
            } => {
                assert_eq!(
                    (&*route, target.table.as_str(), device.as_str()),
                    ("co2", "co2_emissions", "pi")
                );
                assert!(reading.is_some());
            }
            other => panic!("{other:?}"),
        }
        match routes.record(
            &Source::Mqtt(Bytes::from_static(b"elsewhere")),
            Bytes::new(),
            now(),
        ) {
            Record::Rejected { letter, .. } => assert_eq!(letter.reason, "no_route"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_shipped_bin_example_routes_to_bin_levels() {
        let routes = Routes::from_settings(&settings(BINS).unwrap()).unwrap();
        assert_eq!(
            routes.subscriptions(),
            ["co2/+/emissions", "co2/emissions", "bins/level"]
        );
        match routes.record(
            &Source::Mqtt(Bytes::from_static(b"bins/level")),
            Bytes::from_static(b"FULL bin-3 2020-07-13 22:43:23"),
            now(),
        ) {
            Record::Rows {
                route,
                target,
                device,
                rows,
                ..
            } => {
                assert_eq!(&*route, "bins");
                assert_eq!(target.columns, ["level", "bin_id", "measured_at", "full"]);
                assert_eq!(device.as_str(), "bin-3");
                assert_eq!(rows[0][3], Value::Int(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_routes_are_named_with_the_key() {
        let cases = [
            (
                BINS.replace("table = \"bin_levels\"\n", ""),
                "route \"bins\": `table`",
            ),
            (
                BINS.replace("bin_levels", "bin levels"),
                "route \"bins\": `table`",
            ),
            (
                BINS.replace("bins/level", "co2/#"),
                "route \"bins\": `topics`",
            ),
            (
                BINS.replace("span = 2", "span = 0"),
                "route \"bins\": `delimited.fields[2]`",
            ),
            (
                BINS.replace("decoder = \"delimited\"", "decoder = \"xml\""),
                "decoder",
            ),
            (
                BINS.replace("name = \"bins\"", "name = \"co2\""),
                "route \"co2\": `name`",
            ),
            (
                format!("{BINS}[routes.columns]\nnope = \"x\"\n"),
                "route \"bins\": `columns.nope`",
            ),
        ];
        for (toml, want) in cases {
            let err = settings(&toml).and_then(|s| Routes::from_settings(&s).map(|_| ()));
            let err = err.expect_err(want).to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        let overlap_ok = BINS
            .replace("bins/level", "co2/#")
            .replace("name = \"bins\"", "name = \"bins\"\nallow_overlap = true");
        assert!(Routes::from_settings(&settings(&overlap_ok).unwrap()).is_ok());
    }

    #[test]
    fn a_panicking_decoder_costs_one_dead_letter() {
        let routes = Routes::from_settings(&settings(BINS).unwrap())
            .unwrap()
            .with_faults(Faults::parse("decode-panic=BOOM"));
        let record = |payload: &'static [u8]| {
            routes.record(
                &Source::Mqtt(Bytes::from_static(b"co2/pi/emissions")),
                Bytes::from_static(payload),
                now(),
            )
        };
        match record(b"2020-07-13 22:43:23|BOOM") {
            Record::Rejected { route, letter } => {
                assert_eq!((&*route, letter.reason), ("co2", "decoder_panic"));
                assert_eq!(letter.payload, b"2020-07-13 22:43:23|BOOM");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            record(b"2020-07-13 22:43:23|1"),
            Record::Rows { .. }
        ));
    }

    #[test]
    fn refused_messages_keep_their_route_label() {
        let routes = Routes::from_settings(&settings(BINS).unwrap()).unwrap();
        let refused = |topic: &'static [u8]| match routes.refuse(
            &Source::Mqtt(Bytes::from_static(topic)),
            b"x",
            "crashed_bridge",
        ) {
            Record::Rejected { route, letter } => (route.to_string(), letter.reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(b"bins/level"), ("bins".into(), "crashed_bridge"));
        assert_eq!(refused(b"nowhere"), ("unrouted".into(), "crashed_bridge"));
    }

    #[test]
    fn tokens_are_matched_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
