//! The InfluxDB sink: every message is one point, written in line protocol
//! with `POST /write` (InfluxDB 1.x; the v1 API of 2.x and 3.x too).
//!
//! - measurement: the route's `measurement`, else the message's topic (what
//!   the InfluxDB subscribers people run today do);
//! - tags: `device`, then the message's tags (named topic levels), sorted;
//! - fields: the message's fields by type: float, integer (`i`), string,
//!   boolean; nulls are left out, a time field is the point's time when it is
//!   the message's time and an RFC 3339 string otherwise; bytes are refused
//!   (binary routes cannot name an InfluxDB sink);
//! - time: the message's, in the configured precision. A point is keyed by
//!   measurement, tags and time, so a redelivered message overwrites itself:
//!   exactly once, as long as the payload carries its time.
//!
//! A batch is stored once InfluxDB answered 2xx for every request of it.
//! 5xx, timeouts and refused connections are transient (retried, nothing
//! acknowledged); a 400 is the server refusing a point (a field-type
//! conflict, a bad value): the batch is refused with the server's message,
//! and the pipeline splits it down to the point, which becomes a dead letter.
//! The good points of a refused request may be written already; writing them
//! again overwrites them, so nothing is doubled.
//!
//! Dead letters, when this sink keeps them, are points of
//! `dead_letter_measurement` (default `rejected_messages`): tag `reason`,
//! fields `topic`, `payload` (or `payload_base64` when it is not UTF-8),
//! `payload_bytes`, `detail`, at the time they were written (nanoseconds,
//! one apart, so two letters never overwrite each other).

pub mod client;
pub mod line;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Batch, Item, PrepareError, Sink, SinkError, Written};
use crate::config::{ConfigError, InfluxSettings, Precision};
use crate::model::DeadLetter;
use crate::model::{RouteId, Value};
use crate::route::Routes;
use client::{Client, Failure};
use line::{FieldValue, LineError};

/// Bytes of line protocol per request at most (InfluxDB 1.x refuses bodies
/// over 25 MB by default; smaller requests also bound the work a retry repeats).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What a route's points are called.
#[derive(Debug, Clone)]
enum Measurement {
    /// The message's topic.
    Topic,
    /// A fixed name.
    Fixed(Arc<str>),
}

/// Writes batches to one InfluxDB database.
pub struct InfluxSink {
    client: Client,
    /// The measurement of each route that writes here, by route id.
    measurements: Vec<Option<Measurement>>,
    precision: Precision,
    letters: String,
    create_database: bool,
    retry_max: Duration,
    /// The last nanosecond a dead letter was stamped with.
    last_letter: AtomicI64,
}

impl InfluxSink {
    /// A sink for the routes of `routes` that name sink `name`, configured by `s` under `key`.
    pub fn new(
        s: &InfluxSettings,
        key: &str,
        routes: &Routes,
        name: &str,
    ) -> Result<Self, ConfigError> {
        let measurements = routes
            .iter()
            .map(|r| {
                (r.sink() == name).then(|| match r.measurement() {
                    Some(m) => Measurement::Fixed(Arc::from(m)),
                    None => Measurement::Topic,
                })
            })
            .collect();
        line::check(line::Part::Measurement, &s.dead_letter_measurement).map_err(|e| {
            ConfigError::Invalid {
                key: format!("{key}.dead_letter_measurement"),
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            client: Client::new(s, key)?,
            measurements,
            precision: s.precision,
            letters: s.dead_letter_measurement.clone(),
            create_database: s.create_database,
            retry_max: Duration::from_millis(s.retry_max_ms),
            last_letter: AtomicI64::new(0),
        })
    }

    async fn prepare_database(&self) -> Result<(), PrepareError> {
        if !self.client.ping(Duration::from_secs(5)).await {
            return Err(PrepareError::Unavailable(format!(
                "no answer from {}ping",
                self.client.base()
            )));
        }
        let db = self.client.database();
        let mut may_not_create = None;
        if self.create_database {
            let statement = format!("CREATE DATABASE \"{}\"", influxql_escape(db));
            match self.client.execute(&statement).await {
                Ok(()) => {}
                Err(Failure::Unreachable { message, .. }) => {
                    return Err(PrepareError::Unavailable(message))
                }
                // No admin rights, or a 2.x/3.x server without InfluxQL DDL:
                // fine if the database exists, which the write below tells.
                Err(Failure::Status { message, .. }) => may_not_create = Some(message),
            }
        }
        // An empty write checks that the database exists and that this account
        // may write to it, and stores nothing.
        match self.client.write(String::new(), None).await {
            Ok(()) => Ok(()),
            Err(Failure::Unreachable { message, .. }) => Err(PrepareError::Unavailable(message)),
            Err(Failure::Status {
                status: 404,
                message,
            }) => Err(PrepareError::Fatal(format!(
                "database {db:?} does not exist ({message}){}; create it as an admin \
                 (InfluxDB 1.x: influx -execute 'CREATE DATABASE \"{db}\"'; 2.x: a bucket and a \
                 DBRP mapping for it), or let the bridge create it with an admin account \
                 (create_database = true)",
                may_not_create
                    .map(|m| format!(" and the bridge may not create it: {m}"))
                    .unwrap_or_default()
            ))),
            Err(Failure::Status {
                status: status @ (401 | 403),
                message,
            }) => Err(PrepareError::Unavailable(format!(
                "InfluxDB refused this account ({status}: {message}); check username and \
                 password_file (or token_file), and that the account may write to {db:?}"
            ))),
            Err(e) => Err(PrepareError::Unavailable(e.to_string())),
        }
    }

    /// Line protocol for the messages of `batch`, in requests of at most
    /// [`MAX_BODY_BYTES`], and the points per route.
    fn encode_items(&self, batch: &Batch<'_>) -> Result<(Vec<String>, Written), SinkError> {
        let mut bodies = vec![String::new()];
        let mut points: Vec<(RouteId, u64)> = Vec::new();
        for item in &batch.items {
            let Some(measurement) = self.measurements.get(item.route).and_then(Option::as_ref)
            else {
                return Err(SinkError::Refused(format!(
                    "route {} has no measurement in this sink (a bug: routes are checked at start)",
                    item.route
                )));
            };
            let measurement = match measurement {
                Measurement::Topic => item.topic,
                Measurement::Fixed(m) => m,
            };
            let body = match bodies.last_mut() {
                Some(b) if b.len() < MAX_BODY_BYTES => b,
                _ => {
                    bodies.push(String::new());
                    bodies
                        .last_mut()
                        .ok_or_else(|| SinkError::Refused("no body".into()))?
                }
            };
            encode_message(body, measurement, item, self.precision)
                .map_err(|e| SinkError::Refused(e.to_string()))?;
            match points.iter_mut().find(|(r, _)| *r == item.route) {
                Some((_, n)) => *n += 1,
                None => points.push((item.route, 1)),
            }
        }
        bodies.retain(|b| !b.is_empty());
        Ok((
            bodies,
            Written {
                inserted: points,
                duplicates: Vec::new(),
            },
        ))
    }

    /// Line protocol (nanosecond timestamps) for dead letters.
    fn encode_letters(&self, letters: &[&DeadLetter]) -> Result<String, SinkError> {
        let mut body = String::new();
        let first = self.stamp_letters(letters.len());
        for (letter, time) in letters.iter().zip(first..) {
            encode_letter(&mut body, &self.letters, letter, time)
                .map_err(|e| SinkError::Refused(e.to_string()))?;
        }
        Ok(body)
    }

    /// The first of `n` consecutive nanoseconds, now or after the last one used.
    fn stamp_letters(&self, n: usize) -> i64 {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let n = i64::try_from(n).unwrap_or(i64::MAX / 2);
        let mut first = now;
        let _ = self
            .last_letter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                first = now.max(last.saturating_add(1));
                Some(first.saturating_add(n).saturating_sub(1))
            });
        first
    }

    async fn send(&self, body: String, precision: Option<&str>) -> Result<(), SinkError> {
        self.client
            .write(body, precision)
            .await
            .map_err(|failure| match failure {
                Failure::Status {
                    status: 400 | 413,
                    message,
                } => SinkError::Refused(message),
                other => SinkError::Transient(other.to_string()),
            })
    }
}

impl Sink for InfluxSink {
    fn prepare(&self) -> BoxFuture<'_, Result<(), PrepareError>> {
        self.prepare_database().boxed()
    }

    fn write<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<Written, SinkError>> {
        async move {
            // Encoded before anything is sent: a point that cannot be written
            // refuses the batch without a request, and the split finds it.
            let (bodies, written) = self.encode_items(batch)?;
            let letters = if batch.letters.is_empty() {
                None
            } else {
                Some(self.encode_letters(&batch.letters)?)
            };
            for body in bodies {
                self.send(body, self.precision.query_value()).await?;
            }
            if let Some(body) = letters {
                self.send(body, Precision::Ns.query_value()).await?;
            }
            Ok(written)
        }
        .boxed()
    }

    fn probe(&self) -> BoxFuture<'_, bool> {
        self.client.ping(Duration::from_secs(2)).boxed()
    }

    fn kind(&self) -> &'static str {
        "influxdb"
    }

    fn retry_max(&self) -> Duration {
        self.retry_max
    }
}

/// Appends the point of one message.
fn encode_message(
    out: &mut String,
    measurement: &str,
    item: &Item<'_>,
    precision: Precision,
) -> Result<(), LineError> {
    let message = item.message;
    let mut tags: Vec<(&str, &str)> = message
        .tags
        .iter()
        .map(|(k, v)| (&**k, v.as_str()))
        .filter(|(k, _)| *k != "device")
        .collect();
    tags.push(("device", message.device.as_str()));
    // InfluxDB sorts tags into the series key itself; sorted input saves it the work.
    tags.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut times = Vec::new();
    for field in &message.fields {
        if let Value::Time(t) = &field.value {
            if *t != message.time {
                times.push(
                    t.and_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                );
            }
        }
    }
    let mut fields = Vec::with_capacity(message.fields.len());
    let mut next_time = times.iter();
    for field in &message.fields {
        let value = match &field.value {
            Value::Null => continue,
            Value::Bool(v) => FieldValue::Bool(*v),
            Value::Int(v) => FieldValue::Int(*v),
            Value::Float(v) => FieldValue::Float(*v),
            Value::Text(v) => FieldValue::Text(v),
            Value::Time(t) if *t == message.time => continue,
            Value::Time(_) => match next_time.next() {
                Some(text) => FieldValue::Text(text),
                None => continue,
            },
            Value::Bytes(_) => return Err(LineError::Binary(field.name.to_string())),
        };
        fields.push((&*field.name, value));
    }
    let timestamp = line::timestamp(message.time, precision)?;
    line::push_point(out, measurement, tags, fields, timestamp)
}

/// Appends the point of one dead letter at nanosecond `time`.
fn encode_letter(
    out: &mut String,
    measurement: &str,
    letter: &DeadLetter,
    time: i64,
) -> Result<(), LineError> {
    let payload = std::str::from_utf8(&letter.payload);
    let encoded;
    let payload_field = match payload {
        Ok(text) => ("payload", FieldValue::Text(text)),
        Err(_) => {
            encoded = base64::engine::general_purpose::STANDARD.encode(&letter.payload);
            ("payload_base64", FieldValue::Text(&encoded))
        }
    };
    let mut fields = vec![
        ("topic", FieldValue::Text(&letter.topic)),
        payload_field,
        (
            "payload_bytes",
            FieldValue::Int(i64::from(letter.payload_bytes)),
        ),
    ];
    if let Some(detail) = &letter.detail {
        fields.push(("detail", FieldValue::Text(detail)));
    }
    line::push_point(
        out,
        measurement,
        [("reason", letter.reason.as_str())],
        fields,
        time,
    )
}

/// An identifier for a double-quoted InfluxQL name.
fn influxql_escape(name: &str) -> String {
    name.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::line::parse::{lines, point, ParsedValue};
    use super::*;
    use crate::model::Reason;
    use crate::model::{Field, Message};
    use co2_wire::DeviceId;

    fn message(fields: Vec<Field>, tags: Vec<(Arc<str>, String)>) -> Message {
        Message {
            device: DeviceId::parse("pi-1").unwrap(),
            time: chrono::DateTime::from_timestamp(1_594_680_203, 456_000_000)
                .unwrap()
                .naive_utc(),
            tags,
            fields,
            reading: None,
            frame: None,
        }
    }

    fn field(name: &str, value: Value) -> Field {
        Field {
            name: Arc::from(name),
            value,
        }
    }

    #[test]
    fn a_message_becomes_one_point_with_typed_fields_and_tags() {
        let measured = chrono::DateTime::from_timestamp(1_594_680_203, 456_000_000)
            .unwrap()
            .naive_utc();
        let other = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let m = message(
            vec![
                field("temp", Value::Float(21.5)),
                field("count", Value::Int(3)),
                field("name", Value::Text("a \"b\"".into())),
                field("ok", Value::Bool(false)),
                field("gone", Value::Null),
                field("measured_at", Value::Time(measured)),
                field("calibrated", Value::Time(other)),
            ],
            vec![
                (Arc::from("room"), "lab 2".to_owned()),
                (Arc::from("device"), "spoofed".to_owned()),
            ],
        );
        let item = Item {
            route: 0,
            message: &m,
            topic: "sensors/pi-1/dht11",
        };
        let mut out = String::new();
        encode_message(&mut out, "sensors/pi-1/dht11", &item, Precision::Ms).unwrap();
        let points = lines(&out);
        assert_eq!(points.len(), 1);
        let p = point(points[0]).unwrap();
        assert_eq!(p.measurement, "sensors/pi-1/dht11");
        assert_eq!(
            p.tags,
            [
                ("device".to_owned(), "pi-1".to_owned()),
                ("room".to_owned(), "lab 2".to_owned())
            ]
        );
        assert_eq!(
            p.fields,
            [
                ("temp".to_owned(), ParsedValue::Float(21.5)),
                ("count".to_owned(), ParsedValue::Int(3)),
                ("name".to_owned(), ParsedValue::Text("a \"b\"".into())),
                ("ok".to_owned(), ParsedValue::Bool(false)),
                (
                    "calibrated".to_owned(),
                    ParsedValue::Text("1970-01-01T00:00:00Z".into())
                ),
            ]
        );
        assert_eq!(p.timestamp, 1_594_680_203_456);
    }

    #[test]
    fn bytes_and_empty_points_are_refused() {
        let m = message(
            vec![field("data", Value::Bytes(bytes::Bytes::new()))],
            vec![],
        );
        let item = Item {
            route: 0,
            message: &m,
            topic: "t",
        };
        assert!(matches!(
            encode_message(&mut String::new(), "t", &item, Precision::Ms),
            Err(LineError::Binary(_))
        ));
        let m = message(vec![field("x", Value::Null)], vec![]);
        let item = Item {
            route: 0,
            message: &m,
            topic: "t",
        };
        assert_eq!(
            encode_message(&mut String::new(), "t", &item, Precision::Ms),
            Err(LineError::NoFields)
        );
    }

    #[test]
    fn dead_letters_keep_reason_topic_payload_and_detail() {
        let letter = DeadLetter::new("co2/pi/emissions", b"x|1", Reason::DbRejected, 1024)
            .with_detail("partial write: field type conflict");
        let binary = DeadLetter::new("camera/x", &[0xff, 0x00], Reason::NotUtf8, 1024);
        let mut out = String::new();
        encode_letter(&mut out, "rejected_messages", &letter, 10).unwrap();
        encode_letter(&mut out, "rejected_messages", &binary, 11).unwrap();
        let points: Vec<_> = lines(&out).into_iter().map(|l| point(l).unwrap()).collect();
        assert_eq!(points.len(), 2);
        assert_eq!(
            points[0].tags,
            [("reason".to_owned(), "db_rejected".to_owned())]
        );
        assert_eq!(
            points[0].fields,
            [
                (
                    "topic".to_owned(),
                    ParsedValue::Text("co2/pi/emissions".into())
                ),
                ("payload".to_owned(), ParsedValue::Text("x|1".into())),
                ("payload_bytes".to_owned(), ParsedValue::Int(3)),
                (
                    "detail".to_owned(),
                    ParsedValue::Text("partial write: field type conflict".into())
                ),
            ]
        );
        assert_eq!(
            points[1].fields[1],
            (
                "payload_base64".to_owned(),
                ParsedValue::Text("/wA=".into())
            )
        );
    }

    #[test]
    fn influxql_names_are_quoted_safely() {
        assert_eq!(influxql_escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    /// The tag path against a real influxd (named topic levels reach it once
    /// a decoder sets tags): awkward tag values read back intact, and one with
    /// a line break refuses its batch without writing anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn awkward_tags_read_back_from_a_real_influxd_and_a_line_break_adds_no_point() {
        let influx = co2_testkit::Influx::start().await.unwrap();
        let db = influx.create_database("ixtags").await.unwrap();
        let mut settings = crate::config::Settings::default();
        settings.co2.sink = "influx".into();
        settings.co2.measurement = Some("co2".into());
        let s = InfluxSettings {
            url: influx.url(),
            database: db.clone(),
            ..InfluxSettings::default()
        };
        settings.sinks.insert(
            "influx".into(),
            crate::config::SinkSettings::Influxdb(s.clone()),
        );
        let routes = Routes::from_settings(&settings).unwrap();
        let sink = InfluxSink::new(&s, "sinks.influx", &routes, "influx").unwrap();
        sink.prepare().await.unwrap();

        let awkward = "a b,c=d \"q\"\t\r é \\x";
        let good = message(
            vec![field("emissions", Value::Float(1.5))],
            vec![(Arc::from("room name"), awkward.to_owned())],
        );
        let mut evil = good.clone();
        evil.time += chrono::Duration::seconds(1);
        evil.tags = vec![(
            Arc::from("room"),
            "x\nco2,device=pi-1 emissions=666".to_owned(),
        )];
        let item = |m| Item {
            route: 0,
            message: m,
            topic: "co2/pi-1/emissions",
        };
        let both = Batch {
            items: vec![item(&good), item(&evil)],
            letters: Vec::new(),
            settles: Vec::new(),
            checkpoint: None,
        };
        match sink.write(&both).await {
            Err(SinkError::Refused(why)) => assert!(why.contains("line break"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(influx
            .query(&db, "SELECT * FROM co2")
            .await
            .unwrap()
            .is_empty());
        let one = Batch {
            items: vec![item(&good)],
            letters: Vec::new(),
            settles: Vec::new(),
            checkpoint: None,
        };
        let written = sink.write(&one).await.unwrap();
        assert_eq!(written.inserted, [(0, 1)]);
        let rows = influx
            .query(&db, r#"SELECT "emissions", "device", "room name" FROM co2"#)
            .await
            .unwrap();
        assert_eq!(
            rows[0].values,
            [vec![
                serde_json::Value::from(1_594_680_203_456_i64),
                1.5.into(),
                "pi-1".into(),
                awkward.into()
            ]]
        );
        let values = influx
            .query(&db, r#"SHOW TAG VALUES FROM co2 WITH KEY = "room name""#)
            .await
            .unwrap();
        assert_eq!(
            values[0].values,
            [vec![serde_json::Value::from("room name"), awkward.into()]]
        );
        // A batch of only the bad one is refused too, and nothing was added.
        let bad = Batch {
            items: vec![item(&evil)],
            letters: Vec::new(),
            settles: Vec::new(),
            checkpoint: None,
        };
        assert!(matches!(sink.write(&bad).await, Err(SinkError::Refused(_))));
        assert_eq!(
            influx
                .scalar(&db, "SELECT count(emissions) FROM co2")
                .await
                .unwrap(),
            1.0
        );
    }
}
