//! `[[routes]]`: extra streams besides the CO2 one, configured, not coded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the built-in CO2 route.
pub const CO2_ROUTE: &str = "co2";

/// Name of the built-in route of device announcements (`<prefix>/<device>/events`).
pub const EVENTS_ROUTE: &str = "events";

/// The name of the sink `[database]` configures, and the default of every route.
pub const DEFAULT_SINK: &str = "mysql";

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Unique name: the `route` metric label and the HTTP path `/ingest/<name>`.
    pub name: String,
    /// Topic filters; `{device}` names the device level (e.g. `bins/{device}/level`).
    pub topics: Vec<String>,
    /// How payloads are read.
    pub decoder: DecoderKind,
    /// The sink its messages go to (default `mysql`, the one `[database]` configures).
    pub sink: Option<String>,
    /// For an InfluxDB sink: the measurement of its points (default: the topic).
    pub measurement: Option<String>,
    /// Target table (default: `co2_emissions` for `pipe`, `readings` for `json`
    /// and `value`, `documents` for `json` in document mode, `images` for
    /// `binary`; required for `delimited`).
    pub table: Option<String>,
    /// Device for messages that name none (default: `mqtt.default_device`).
    pub default_device: Option<String>,
    /// Zone of this route's times sent without an offset: an IANA name, a
    /// fixed offset (`+09:00`) or `auto` (default: `wire.time_zone`);
    /// `[[devices]]` entries override it per device.
    pub time_zone: Option<String>,
    /// Allow this route's topics to overlap an earlier route's (the earlier wins).
    #[serde(default)]
    pub allow_overlap: bool,
    /// Let the payload name the device (a JSON key, a delimited `device` field)
    /// on a topic that names none. A payload never overrides the device its
    /// topic or HTTP token names. What it gives up: any device allowed to
    /// publish on the topic can write in every device's name.
    #[serde(default)]
    pub trust_payload_device: bool,
    /// Longest accepted payload (default 256 B for `pipe`, 64 KiB for `delimited`,
    /// `json` and `value`, 4 MiB for `binary`).
    pub max_payload_bytes: Option<usize>,
    /// Column names for the decoder's fixed fields, e.g. `{ time = "measured_at" }`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Settings of the `delimited` decoder.
    pub delimited: Option<DelimitedSettings>,
    /// Settings of the `json` decoder.
    pub json: Option<JsonSettings>,
    /// Settings of the `binary` decoder.
    pub binary: Option<BinarySettings>,
    /// Settings of the `lorawan` decoder.
    pub lorawan: Option<LorawanSettings>,
    /// Accept this route over HTTP too (`POST /ingest/<name>`).
    pub http: Option<HttpIngestSettings>,
}

/// The decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// `datetime|value` (the CO2 format).
    Pipe,
    /// Separated fields at fixed positions.
    Delimited,
    /// A JSON object of fields.
    Json,
    /// One bare value per topic (`12.5`, `true`, `on`), the field named by the
    /// topic's `{field}` level or else its last level (ESPHome, Shelly).
    Value,
    /// A file (JPEG/PNG/...), raw or base64 inside JSON.
    Binary,
    /// A LoRaWAN network server's JSON (The Things Stack v3, ChirpStack v4):
    /// uplinks as readings, or joins, acks and status as device events.
    Lorawan,
}

/// `[routes.delimited]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DelimitedSettings {
    /// Field separator; a single space splits on any run of whitespace.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// The fields, in payload order.
    pub fields: Vec<FieldSettings>,
}

fn default_separator() -> String {
    " ".into()
}

/// One delimited field.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSettings {
    /// Target column (not needed for `skip`).
    pub column: Option<String>,
    /// How the field is read.
    #[serde(rename = "type")]
    pub kind: FieldKind,
    /// For `datetime`: how many separated parts it spans (`2020-07-13 22:43:23` is 2).
    #[serde(default = "one")]
    pub span: usize,
    /// For `number`: a word accepted instead of a number (e.g. `FULL`); the
    /// number column is then NULL and `flag_column` is 1.
    pub flag_word: Option<String>,
    /// For `number` with `flag_word`: the 0/1 column.
    pub flag_column: Option<String>,
}

fn one() -> usize {
    1
}

/// Field types of the delimited decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// A decimal number.
    Number,
    /// A whole number.
    Integer,
    /// Text, at most 255 characters.
    Text,
    /// The device id (`[A-Za-z0-9_-]{1,64}`).
    Device,
    /// A date and time, read like the CO2 payload's.
    Datetime,
    /// Ignored.
    Skip,
}

/// `[routes.json]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSettings {
    /// `long`: a `readings` row per field; `columns`: `fields` maps keys to
    /// columns of one row; `document`: one row holding the whole object.
    #[serde(default)]
    pub mode: JsonMode,
    /// Key holding the reading's time (default `time`; a dotted path such as
    /// `StatusSNS.Time` for a nested one); the receive time is used when the
    /// key is absent or null.
    pub time_field: Option<String>,
    /// Key holding the device id (a dotted path for a nested one), for topics without one.
    pub device_field: Option<String>,
    /// Unit of a numeric time: `auto` (by magnitude), `s`, `ms`, `us` or `ns`.
    #[serde(default)]
    pub time_unit: TimeUnit,
    /// The route's zone, as `time_zone` beside `decoder` (its older name, kept working).
    pub time_zone: Option<String>,
    /// Read a string that is a plain decimal number (`"21.0"`, `" 40 "`,
    /// `"1e-05"`) as that number (default true); false keeps it as text.
    #[serde(default = "yes")]
    pub numeric_strings: bool,
    /// Deepest nesting accepted, the object itself being 1 (default 16, at
    /// most 31, what a MariaDB JSON column holds); deeper is one rejection
    /// (`too_deep`).
    pub max_depth: Option<usize>,
    /// Most fields (values other than null, after flattening) one message may
    /// have (default 64; 1024 in document mode); more is one rejection
    /// (`too_many_fields`), not thousands of rows.
    pub max_fields: Option<usize>,
    /// For `columns` mode: field (a dotted path for a nested one) -> column.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Take a top-level array of objects as one reading per element (a lone
    /// object is still one reading); default false, when an array is
    /// refused (`not_an_object`).
    #[serde(default)]
    pub batch: bool,
    /// The member of a top-level object holding the batch's array (implies
    /// `batch`); the object's time and device members are the elements'
    /// when they have none.
    pub batch_field: Option<String>,
    /// Most elements one batch may hold (default 1000); more is one
    /// rejection (`too_many_elements`).
    pub max_elements: Option<usize>,
}

fn yes() -> bool {
    true
}

impl Default for JsonSettings {
    fn default() -> Self {
        Self {
            mode: JsonMode::default(),
            time_field: None,
            device_field: None,
            time_unit: TimeUnit::default(),
            time_zone: None,
            numeric_strings: true,
            max_depth: None,
            max_fields: None,
            fields: BTreeMap::new(),
            batch: false,
            batch_field: None,
            max_elements: None,
        }
    }
}

/// The JSON layouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonMode {
    /// One row per field.
    #[default]
    Long,
    /// One row, mapped columns.
    Columns,
    /// One row, the whole object in a JSON column.
    Document,
}

/// `[routes.lorawan]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LorawanSettings {
    /// Which network server's JSON the route reads.
    pub server: LorawanServer,
    /// Store the messages as device events (`device_events`: joins, downlink
    /// acks, status) instead of uplinks as readings.
    #[serde(default)]
    pub events: bool,
    /// Store each uplink's radio metadata too: the best RSSI and SNR, how
    /// many gateways heard it, its frame counter and port (`lorawan.*` fields).
    #[serde(default)]
    pub radio: bool,
    /// Read a decoded string that is a plain decimal number as that number
    /// (default true), as the `json` decoder does.
    #[serde(default = "yes")]
    pub numeric_strings: bool,
    /// Deepest nesting of the decoded payload, itself being 1 (default 16, at most 31).
    pub max_depth: Option<usize>,
    /// Most fields of the decoded payload (default 64); more is one
    /// rejection (`too_many_fields`).
    pub max_fields: Option<usize>,
}

/// The network servers whose JSON the `lorawan` decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LorawanServer {
    /// The Things Stack v3 (The Things Network): `v3/<app>@<tenant>/devices/<device id>/up`.
    Ttn,
    /// ChirpStack v4: `application/<id>/device/<DevEUI>/event/up`.
    Chirpstack,
}

/// `[routes.binary]`: for base64-in-JSON payloads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySettings {
    /// Key of the device id (default `m_id`).
    #[serde(default = "default_device_field")]
    pub device_field: String,
    /// Key of the time (default `datetime`).
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// Key of the base64 data (default `photo`).
    #[serde(default = "default_data_field")]
    pub data_field: String,
    /// Unit of a numeric time: `auto` (by magnitude), `s`, `ms`, `us` or `ns`.
    #[serde(default)]
    pub time_unit: TimeUnit,
}

/// How a numeric time field is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// By magnitude: seconds below 1e11, then ms, us, ns (each from the year 5138 of the unit before).
    #[default]
    Auto,
    /// Unix seconds.
    S,
    /// Unix milliseconds.
    Ms,
    /// Unix microseconds.
    Us,
    /// Unix nanoseconds.
    Ns,
}

impl From<TimeUnit> for co2_wire::UnixUnit {
    fn from(unit: TimeUnit) -> Self {
        match unit {
            TimeUnit::Auto => Self::Auto,
            TimeUnit::S => Self::Seconds,
            TimeUnit::Ms => Self::Millis,
            TimeUnit::Us => Self::Micros,
            TimeUnit::Ns => Self::Nanos,
        }
    }
}

impl Default for BinarySettings {
    fn default() -> Self {
        Self {
            device_field: default_device_field(),
            time_field: default_time_field(),
            data_field: default_data_field(),
            time_unit: TimeUnit::Auto,
        }
    }
}

fn default_device_field() -> String {
    "m_id".into()
}
fn default_time_field() -> String {
    "datetime".into()
}
fn default_data_field() -> String {
    "photo".into()
}

/// `[routes.http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestSettings {
    /// File of `<device> <token>` lines (`#` starts a comment): each device's bearer token.
    pub tokens_file: PathBuf,
}
