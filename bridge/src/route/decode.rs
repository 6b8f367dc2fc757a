//! A delivery at run time: its route and device resolved from where it came
//! from, its payload decoded in its device's zone with the device's clock
//! watched, and a record made of it, a message for the sink or a dead letter.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use co2_wire::{ClockOffset, DeviceId, Seq, TopicMatch};

use super::{Context, MessageTimes, Parts, Route, Routes, MAX_TAG_CHARS};
use crate::clocks::{Seen, Verdict, ZoneSetting};
use crate::config::RETAINED_TABLES;
use crate::model::{DeadLetter, Origin, Reason, Record, RouteId};

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

impl Routes {
    /// Turns one delivery into its records, pushed onto `out`: one, or one
    /// per element of a batch (see [`super::batch`]); returns how many.
    /// Never panics: a decoder that panics anyway costs this delivery a
    /// dead letter (`decoder_panic`).
    pub fn record_into(
        &self,
        out: &mut Vec<Record>,
        origin: &Origin,
        payload: Bytes,
        seq: Option<Seq>,
        now: DateTime<Utc>,
    ) -> usize {
        let resolved = match self.resolve(origin) {
            Ok(resolved) => resolved,
            Err(u) => {
                out.push(self.reject(u.route, &u.topic, &payload, u.reason));
                return 1;
            }
        };
        if let Some(record) = self.announcement(&resolved, &payload) {
            out.push(record);
            return 1;
        }
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
                    if let Ok(parts) = &mut decoded {
                        if parts.hold() {
                            detail = Some(why);
                        }
                    }
                }
            }
            if let Ok(parts) = &decoded {
                if parts.any(|r| matches!(r, Err(Reason::TooFarInFuture))) {
                    detail = Some(ahead_of_arrival(&seen, now, &route.name));
                }
            }
        }
        if let (Ok(parts), Some(max_age)) = (&mut decoded, self.max_age) {
            if RETAINED_TABLES.contains(&route.table()) {
                let cutoff = now.naive_utc() - max_age;
                let beyond = |message: &crate::model::Message| {
                    format!(
                        "stamped {}, before the {} days raw rows are kept (retention.raw_days); \
                         raise it and replay this dead letter to store it",
                        message.time.format("%Y-%m-%d %H:%M:%S"),
                        max_age.num_days()
                    )
                };
                parts.for_each(|result| {
                    if let Ok(message) = result {
                        if message.time < cutoff {
                            detail = Some(beyond(message));
                            *result = Err(Reason::BeyondRetention);
                        }
                    }
                });
            }
        }
        let letter_topic = letter_topic(origin, &topic);
        let letter = |bytes: &[u8], reason: Reason, at: Option<(usize, usize)>| {
            let mut letter = self.dead_letter(&letter_topic, bytes, reason);
            let detail = match (at, &detail) {
                (Some((i, n)), Some(d)) => Some(format!("element {} of {n}: {d}", i + 1)),
                (Some((i, n)), None) => Some(format!("element {} of {n}", i + 1)),
                (None, d) => d.clone(),
            };
            if let Some(detail) = detail {
                letter = letter.with_detail(&detail);
            }
            Record::Rejected {
                route: Some(id),
                letter,
            }
        };
        match decoded {
            Ok(Parts::One(Ok(message))) => out.push(Record::Decoded {
                route: id,
                message,
                topic,
                payload,
            }),
            Ok(Parts::One(Err(reason))) => out.push(letter(&payload, reason, None)),
            Ok(Parts::Many(parts)) => {
                let n = parts.len();
                out.reserve(n);
                for (i, (result, bytes)) in parts.into_iter().enumerate() {
                    out.push(match result {
                        Ok(message) => Record::Decoded {
                            route: id,
                            message,
                            topic: topic.clone(),
                            payload: part_of(&payload, bytes),
                        },
                        Err(reason) => letter(bytes, reason, Some((i, n))),
                    });
                }
                return n;
            }
            Err(panic) => {
                tracing::error!(
                    route = %route.name,
                    topic = %topic,
                    panic = %crate::supervisor::panic_message(panic.as_ref()),
                    "A decoder panicked on this message; it is dead-lettered as decoder_panic \
                     and the other messages go on (please report this as a bug)"
                );
                out.push(self.reject(Some(id), &letter_topic, &payload, Reason::DecoderPanic));
            }
        }
        1
    }

    /// The one record of a delivery that is not a batch (tests).
    #[cfg(test)]
    pub(crate) fn record(
        &self,
        origin: &Origin,
        payload: Bytes,
        seq: Option<Seq>,
        now: DateTime<Utc>,
    ) -> Record {
        let mut records = self.records(origin, payload, seq, now);
        assert_eq!(records.len(), 1, "one delivery, one record");
        records.remove(0)
    }

    /// The records of one delivery (see [`Routes::record_into`]).
    pub fn records(
        &self,
        origin: &Origin,
        payload: Bytes,
        seq: Option<Seq>,
        now: DateTime<Utc>,
    ) -> Vec<Record> {
        let mut out = Vec::with_capacity(1);
        self.record_into(&mut out, origin, payload, seq, now);
        out
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
            return match &self.discovery {
                Some((id, d)) if d.has_state_topic(topic) => self.discovered(*id, topic),
                _ => Err(unresolved(None, Reason::NoRoute)),
            };
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

impl Routes {
    /// A discovered sensor's state topic, on the discovery route: the device
    /// is the announcement's, set by its decoder.
    fn discovered(&self, id: RouteId, topic: &str) -> Result<Resolved<'_>, Unresolved> {
        let route = self.routes.get(id).ok_or_else(|| Unresolved {
            route: None,
            topic: topic.to_owned(),
            reason: Reason::NoRoute,
        })?;
        Ok(Resolved {
            id,
            route,
            device: route.default_device.clone(),
            device_from_source: false,
            topic: topic.to_owned(),
            tags: Vec::new(),
        })
    }

    /// An announcement on the discovery route, taken: nothing to store
    /// (absorbed), or a dead letter saying why it is refused. `None` for
    /// every other message.
    fn announcement(&self, resolved: &Resolved<'_>, payload: &[u8]) -> Option<Record> {
        let (id, discovery) = self.discovery.as_ref()?;
        if resolved.id != *id || !discovery.is_announcement(&resolved.topic) {
            return None;
        }
        Some(match discovery.announce(&resolved.topic, payload) {
            Ok(_) => Record::Absorbed { route: *id },
            Err((reason, detail)) => Record::Rejected {
                route: Some(*id),
                letter: self
                    .dead_letter(&resolved.topic, payload, reason)
                    .with_detail(&detail),
            },
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

/// The bytes of `part`, a slice of `payload`, without a copy where it is one.
fn part_of(payload: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).checked_sub(payload.as_ptr() as usize);
    match start {
        Some(start) if start + part.len() <= payload.len() => {
            payload.slice(start..start + part.len())
        }
        _ => Bytes::copy_from_slice(part),
    }
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
