//! One row of an import made into the delivery a device would have sent,
//! and decoded by the route like a live one ([`Routes::record`]): the topic
//! of its device on the route (`co2/<device>/emissions`) and the payload
//! `time|value`. So an imported reading is checked, zoned and refused
//! exactly as a live one: a time without an offset is read in the zone the
//! bridge would use for that device and route (`[[devices]]`, the route's,
//! `co2.time_zone`, `wire.time_zone`; a learned `auto` zone when the bridge
//! learned one), a time too far ahead of now is `too_far_in_future`.
//!
//! A refused row's dead letter is labelled for the import: topic
//! `import/<route>`, the line as payload, and a detail that starts with
//! where it is (`kitchen.csv:17: bad_datetime`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use co2_wire::{DeviceId, Epoch, Seq};

use crate::model::{Origin, Reason, Record, RouteId};
use crate::route::Routes;

/// Devices whose topic is kept; past it the cache starts again (a file of
/// a million made-up device names costs no more memory than this).
const TOPICS_KEPT: usize = 10_000;

/// One row's fields, as text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading<'a> {
    /// Its device, when the row names one.
    pub device: Option<&'a str>,
    /// Its time, as the device would send it.
    pub time: &'a str,
    /// Its value.
    pub value: &'a str,
    /// Its number (`seq_epoch`, `seq`), when the row has one.
    pub seq: Option<(&'a str, &'a str)>,
}

/// Where a row is: the input's name and the line (or key) in it.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    /// The file's name, `stdin`, or the legacy table's.
    pub source: &'a str,
    /// The line number, or the row's key.
    pub line: u64,
}

/// Makes rows into records of one route.
pub struct Mapper {
    routes: Arc<Routes>,
    route: RouteId,
    /// Devices' topics on the route, as the MQTT origin holds them.
    topics: HashMap<DeviceId, Bytes, foldhash::fast::RandomState>,
    /// `--topic`: every row arrives on it.
    topic: Option<Bytes>,
    /// `--device`: rows that name no device are this one's.
    device: Option<DeviceId>,
    /// `import/<route>`, the dead letters' topic.
    letter_topic: String,
    /// Payloads are cut from one buffer: no allocation per row.
    payloads: BytesMut,
}

impl Mapper {
    /// Rows for `route`, of `device` when they name none, on `topic` if given.
    pub fn new(
        routes: Arc<Routes>,
        route: RouteId,
        device: Option<DeviceId>,
        topic: Option<&str>,
    ) -> Self {
        let letter_topic = format!("import/{}", routes.label(Some(route)));
        Self {
            routes,
            route,
            topics: HashMap::default(),
            topic: topic.map(|t| Bytes::copy_from_slice(t.as_bytes())),
            device,
            letter_topic,
            payloads: BytesMut::with_capacity(1 << 16),
        }
    }

    /// The record of a row read as fields (CSV, NDJSON, a legacy table).
    pub fn reading(
        &mut self,
        at: Location<'_>,
        raw: &[u8],
        reading: &Reading<'_>,
        now: DateTime<Utc>,
    ) -> Record {
        let seq = match reading.seq {
            None | Some(("", "")) => None,
            Some((epoch, n)) => match epoch.parse::<Epoch>().ok().zip(n.parse::<u64>().ok()) {
                Some((epoch, n)) => Seq::new(epoch, n),
                None => {
                    return self.refuse(
                        at,
                        raw,
                        Reason::BadNumber,
                        "seq_epoch/seq is not a reading's number",
                    )
                }
            },
        };
        let origin = match self.origin(reading.device) {
            Ok(origin) => origin,
            Err(why) => return self.refuse(at, raw, Reason::BadDevice, why),
        };
        self.payloads
            .reserve(reading.time.len() + 1 + reading.value.len());
        self.payloads.extend_from_slice(reading.time.as_bytes());
        self.payloads.extend_from_slice(b"|");
        self.payloads.extend_from_slice(reading.value.as_bytes());
        let payload = self.payloads.split().freeze();
        let records = self.routes.records(&origin, payload, seq, now);
        self.labelled(at, raw, records)
    }

    /// The record of a line that is a device's payload itself (`lines`).
    pub fn payload(&mut self, at: Location<'_>, line: &[u8], now: DateTime<Utc>) -> Record {
        let origin = match self.origin(None) {
            Ok(origin) => origin,
            Err(why) => return self.refuse(at, line, Reason::BadDevice, why),
        };
        self.payloads.extend_from_slice(line);
        let payload = self.payloads.split().freeze();
        let records = self.routes.records(&origin, payload, None, now);
        self.labelled(at, line, records)
    }

    /// The topic of the import's dead letters (`import/<route>`).
    pub fn letter_topic(&self) -> &str {
        &self.letter_topic
    }

    /// A dead letter for the row at `at`: `raw` as its payload, `why` after where it is.
    pub fn refuse(&self, at: Location<'_>, raw: &[u8], reason: Reason, why: &str) -> Record {
        let letter = self
            .routes
            .dead_letter(&self.letter_topic, raw, reason)
            .with_detail(&format!("{}:{}: {why}", at.source, at.line));
        Record::Rejected {
            route: Some(self.route),
            letter,
        }
    }

    /// The topic a row arrives on: `--topic`, else its device's on the route.
    fn origin(&mut self, device: Option<&str>) -> Result<Origin, &'static str> {
        if let Some(topic) = &self.topic {
            return Ok(Origin::Mqtt(topic.clone()));
        }
        let device = match device.filter(|d| !d.is_empty()) {
            Some(named) => DeviceId::parse(named)
                .map_err(|_| "not a device id ([A-Za-z0-9_-], 1 to 64 characters)")?,
            None => self
                .device
                .clone()
                .ok_or("the row names no device and no --device was given")?,
        };
        if let Some(topic) = self.topics.get(&device) {
            return Ok(Origin::Mqtt(topic.clone()));
        }
        let topic = self
            .routes
            .get(self.route)
            .and_then(|r| r.filters().iter().find_map(|f| f.topic_for(&device)))
            .ok_or("the route has no topic filter that names a device; give --topic")?;
        if self.topics.len() >= TOPICS_KEPT {
            self.topics.clear();
        }
        let topic = Bytes::from(topic);
        self.topics.insert(device, topic.clone());
        Ok(Origin::Mqtt(topic))
    }

    /// A refusal by the route, labelled with where the row is.
    /// The record of a row, its dead letter labelled with where the row is.
    /// A row is one reading: a batch (a JSON array on a batching route) is
    /// refused whole, as the checkpoint counts rows.
    fn labelled(&self, at: Location<'_>, raw: &[u8], mut records: Vec<Record>) -> Record {
        let record = match records.pop() {
            Some(record) if records.is_empty() => record,
            _ => {
                let why = "a batch: an import takes one reading per line; \
                           write each element on a line of its own";
                return self.refuse(at, raw, Reason::NotAnObject, why);
            }
        };
        match record {
            Record::Rejected { letter, .. } => {
                let why = match &letter.detail {
                    Some(detail) => format!("{}: {detail}", letter.reason),
                    None => letter.reason.to_string(),
                };
                self.refuse(at, raw, letter.reason, &why)
            }
            decoded => decoded,
        }
    }

    /// A record the sink refused, as a dead letter labelled with where its row is.
    pub fn refused_by_sink(&self, at: Location<'_>, record: &Record, detail: &str) -> Record {
        let raw = match record {
            Record::Decoded { payload, .. } => payload.as_ref(),
            Record::Rejected { letter, .. } => letter.payload.as_slice(),
            Record::Absorbed { .. } => &[],
        };
        self.refuse(at, raw, Reason::DbRejected, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn mapper(device: Option<&str>) -> Mapper {
        let settings = Settings::load_from(None, Vec::<(String, String)>::new()).unwrap();
        let routes = Arc::new(Routes::from_settings(&settings).unwrap());
        let (id, _) = routes.by_name("co2").unwrap();
        Mapper::new(
            routes,
            id,
            device.map(|d| DeviceId::parse(d).unwrap()),
            None,
        )
    }

    fn at(line: u64) -> Location<'static> {
        Location {
            source: "in.csv",
            line,
        }
    }

    #[test]
    fn a_row_is_decoded_as_its_devices_payload() {
        let mut m = mapper(None);
        let row = Reading {
            device: Some("kitchen"),
            time: "2026-01-05T09:00:00.250Z",
            value: "412.5",
            seq: Some(("00000000000000aa", "7")),
        };
        match m.reading(at(2), b"raw", &row, Utc::now()) {
            Record::Decoded { message, topic, .. } => {
                assert_eq!(message.device.as_str(), "kitchen");
                assert_eq!(topic, "co2/kitchen/emissions");
                assert_eq!(
                    message.time.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                    "2026-01-05 09:00:00.250"
                );
                assert_eq!(message.field("seq"), Some(&crate::model::Value::Int(7)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_name_the_file_and_line() {
        let mut m = mapper(Some("pi"));
        let row = Reading {
            time: "yesterday",
            value: "400",
            ..Reading::default()
        };
        match m.reading(at(17), b"yesterday,400", &row, Utc::now()) {
            Record::Rejected { letter, .. } => {
                assert_eq!(letter.topic, "import/co2");
                assert_eq!(letter.reason, Reason::BadDatetime);
                assert_eq!(letter.payload, b"yesterday,400");
                assert!(
                    letter
                        .detail
                        .as_deref()
                        .unwrap()
                        .starts_with("in.csv:17: bad_datetime"),
                    "{letter:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let mut nobody = mapper(None);
        let row = Reading {
            time: "2026-01-05 09:00:00",
            value: "400",
            ..Reading::default()
        };
        assert!(matches!(
            nobody.reading(at(3), b"", &row, Utc::now()),
            Record::Rejected { letter, .. } if letter.reason == Reason::BadDevice
        ));
        assert!(matches!(
            m.payload(at(4), b"2026-01-05 09:00:00|400", Utc::now()),
            Record::Decoded { .. }
        ));
    }
}
