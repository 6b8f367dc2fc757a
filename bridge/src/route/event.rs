//! Device announcements (`<prefix>/<device>/events`, JSON): what a publisher
//! says about readings it lost or could not number (a damaged queue moved
//! aside, readings dropped by a bound, a clock jump). Stored as they are in
//! `device_events`; the completeness accounting reads them from there.

use std::sync::Arc;

use co2_wire::{DeviceEvent, MAX_EVENT_BYTES};

use super::Context;
use crate::model::Reason;
use crate::model::{Column, Layout};
use crate::model::{Field, Message, Value};

/// The fields of an event message, which are also its columns.
pub(super) const FIELDS: [&str; 3] = ["event_id", "kind", "body"];

/// Longest announcement accepted (the publisher never sends more).
pub const MAX_PAYLOAD: usize = MAX_EVENT_BYTES;

/// Decodes announcements.
#[derive(Debug, Clone)]
pub struct EventDecoder {
    names: [Arc<str>; 3],
}

impl EventDecoder {
    /// A decoder checking event times like any other.
    pub fn new() -> Self {
        Self {
            names: FIELDS.map(Arc::from),
        }
    }

    /// `device_events (device, time, event_id, kind, body)`.
    pub fn layout() -> Layout {
        let mut columns = vec![("device", Column::Device), ("time", Column::Time)];
        columns.extend(FIELDS.map(|f| (f, Column::Field(Arc::from(f)))));
        Layout::wide(columns)
    }

    /// Decodes one announcement; its time is the device's, else when it arrived.
    pub fn decode(&self, payload: &[u8], ctx: &Context<'_>) -> Result<Message, Reason> {
        let event = DeviceEvent::decode(payload).map_err(|_| Reason::BadEvent)?;
        let time = match event.at {
            Some(at) => ctx.times.check(at)?,
            None => ctx.now,
        };
        let body = std::str::from_utf8(payload).map_err(|_| Reason::NotUtf8)?;
        let [id, kind, text] = self.names.clone();
        Ok(Message {
            device: ctx.device.clone(),
            time: time.naive_utc(),
            tags: Vec::new(),
            fields: vec![
                Field {
                    name: id,
                    value: Value::Text(event.id.to_string()),
                },
                Field {
                    name: kind,
                    value: Value::Text(event.kind.name().to_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::MessageTimes;
    use chrono::DateTime;
    use co2_wire::{DeviceId, DropCause, Epoch, EventId, EventKind, SeqRange};

    static CLOCK: std::sync::LazyLock<crate::route::ReceiveClock> =
        std::sync::LazyLock::new(Default::default);

    static DECODER: std::sync::LazyLock<co2_wire::Decoder> =
        std::sync::LazyLock::new(Default::default);

    fn ctx<'a>(device: &'a DeviceId, times: &'a MessageTimes<'a>) -> Context<'a> {
        Context {
            device,
            device_from_source: true,
            trust_payload_device: false,
            seq: None,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            topic: "co2/pi/events",
            tags: &[],
            route: 0,
            clock: &CLOCK,
            times,
        }
    }

    #[test]
    fn an_announcement_is_kept_whole_with_its_id_and_kind() {
        let event = DeviceEvent {
            id: EventId(0xabc),
            at: DateTime::from_timestamp(1_799_999_000, 0),
            kind: EventKind::ReadingsDropped {
                cause: DropCause::MaxRows,
                count: 35,
                unnumbered: 0,
                ranges: vec![SeqRange::new(Epoch::new(7), 1, 35).unwrap()],
            },
        };
        let payload = event.encode();
        let device = DeviceId::parse("pi").unwrap();
        let times = MessageTimes::new(
            &DECODER,
            None,
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        );
        let m = EventDecoder::new()
            .decode(&payload, &ctx(&device, &times))
            .unwrap();
        assert_eq!(
            m.field("event_id"),
            Some(&Value::Text("0000000000000abc".into()))
        );
        assert_eq!(
            m.field("kind"),
            Some(&Value::Text("readings_dropped".into()))
        );
        assert_eq!(
            m.field("body"),
            Some(&Value::Text(String::from_utf8(payload).unwrap()))
        );
        assert_eq!(m.time.and_utc().timestamp(), 1_799_999_000);
    }

    #[test]
    fn what_is_not_an_announcement_is_refused() {
        let device = DeviceId::parse("pi").unwrap();
        let times = MessageTimes::new(
            &DECODER,
            None,
            DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        );
        let d = EventDecoder::new();
        for payload in [
            &b"{}"[..],
            b"not json",
            b"\xff",
            br#"{"v": 1, "kind": "x"}"#,
        ] {
            assert_eq!(
                d.decode(payload, &ctx(&device, &times)).unwrap_err(),
                Reason::BadEvent,
                "{payload:?}"
            );
        }
    }
}
