//! [`DeviceEvent`]: what a publisher announces about itself, as JSON on
//! `co2/<device>/events`, so that a loss at the source is never silent.
//!
//! Every event is one JSON object with the common fields `v` (schema version,
//! 1), `id` (16 lowercase hex digits, unique per event: a redelivery repeats
//! it), `kind`, and `at` (RFC 3339 UTC with milliseconds, or `null` when the
//! device's clock was not trusted), plus the fields of its kind:
//!
//! | `kind` | fields |
//! |---|---|
//! | `queue_corrupt` | `reason`, `moved_to`, `salvaged`, `lost` (null: unknown), `old_epoch`, `old_last_seq` (null: unknown), `lost_ranges`, `new_epoch` |
//! | `readings_dropped` | `cause` (`max_rows`, `max_age`, `memory_bound`), `count`, `unnumbered`, `ranges` |
//! | `queue_filling` | `bound` (as `cause`), `percent`, `readings` |
//! | `memory_mode` | `reason`, `from_epoch`, `from_last_seq` (null: unknown), `epoch`, `stranded` (null: unknown) |
//! | `disk_mode` | `epoch`, `moved`, `memory_s` |
//! | `clock_jump` | `by_ms`, `wall`, `expected` |
//! | `clock_resync` | `offset_ms` |
//!
//! A range is `{"epoch": "<16 hex>", "first": n, "last": n}` (inclusive).
//! Decoding is total: any bytes give an event or an [`EventError`], never a
//! panic. Unknown fields are ignored and an unknown `kind` decodes as
//! [`EventKind::Unknown`], so a newer publisher does not break an older bridge.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::sequence::{Epoch, SeqRange};

/// The schema version this crate writes and reads.
pub const EVENT_VERSION: u64 = 1;
/// Longest accepted event payload in bytes.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// Most ranges in one event; a publisher splits longer lists into several events.
pub const MAX_RANGES: usize = 64;
/// The last topic level of the events topic: `<prefix>/<device>/events`.
pub const EVENTS_TOPIC_LEVEL: &str = "events";

/// An event's unique id (random 64 bits), 16 lowercase hex digits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u64);

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Same text form as an epoch: one parser for both.
        Epoch::new(self.0).fmt(f)
    }
}

/// One announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// Unique per event; a redelivered event carries the same id.
    pub id: EventId,
    /// When it happened by the device's clock; `None` when that clock was not trusted.
    pub at: Option<DateTime<Utc>>,
    /// What happened.
    pub kind: EventKind,
}

/// Why readings were dropped at the source; also the bound a queue nears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// The on-disk queue held `queue.max_rows`; the oldest made room.
    MaxRows,
    /// Older than `queue.max_age_s`.
    MaxAge,
    /// The in-memory queue (disk unusable) held `queue.memory_max_rows`; the oldest made room.
    MemoryBound,
}

impl DropCause {
    /// Every cause.
    pub const ALL: [DropCause; 3] = [
        DropCause::MaxRows,
        DropCause::MaxAge,
        DropCause::MemoryBound,
    ];

    /// Its wire name (also a metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            DropCause::MaxRows => "max_rows",
            DropCause::MaxAge => "max_age",
            DropCause::MemoryBound => "memory_bound",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What an event says, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The queue file failed its check; it was moved aside and a fresh one started.
    QueueCorrupt {
        /// What was wrong (SQLite's words).
        reason: String,
        /// File name the damaged queue was renamed to.
        moved_to: String,
        /// Readings read back from the damaged file into the fresh queue.
        salvaged: u64,
        /// Readings the damaged file held that could not be read; `None`: unknown.
        lost: Option<u64>,
        /// The damaged queue's epoch, if it could be read.
        old_epoch: Option<Epoch>,
        /// The last number that epoch had assigned, if it could be read.
        old_last_seq: Option<u64>,
        /// Numbers that were in the unreadable part (some may have been
        /// delivered before; those not stored anywhere are lost).
        lost_ranges: Vec<SeqRange>,
        /// The fresh queue's epoch.
        new_epoch: Epoch,
    },
    /// Readings dropped by a bound.
    ReadingsDropped {
        /// Which bound.
        cause: DropCause,
        /// How many, numbered or not.
        count: u64,
        /// How many of them had no number (queued by a version without numbers).
        unnumbered: u64,
        /// Exactly the numbers dropped.
        ranges: Vec<SeqRange>,
    },
    /// The queue passed a warning level (80 or 95 %) of one of its bounds:
    /// readings will be dropped if it goes on filling.
    QueueFilling {
        /// The bound it is nearest to.
        bound: DropCause,
        /// How full, in percent of that bound.
        percent: u64,
        /// Readings waiting then.
        readings: u64,
    },
    /// The disk queue cannot be written; readings are held in memory.
    MemoryMode {
        /// What the disk said.
        reason: String,
        /// The disk queue's epoch, if known.
        from_epoch: Option<Epoch>,
        /// The last number the disk queue assigned, if known.
        from_last_seq: Option<u64>,
        /// The epoch of readings numbered in memory (starts at 1).
        epoch: Epoch,
        /// Readings left in the disk queue until the disk works again, if known.
        stranded: Option<u64>,
    },
    /// The disk works again; memory's readings moved into the disk queue.
    DiskMode {
        /// The epoch the disk queue numbers in from now on (memory's epoch, continued).
        epoch: Epoch,
        /// Readings moved from memory to disk.
        moved: u64,
        /// Seconds spent in memory mode.
        memory_s: u64,
    },
    /// The wall clock jumped against the monotonic clock between two readings.
    ClockJump {
        /// Wall clock minus expected time, in ms (positive: forward).
        by_ms: i64,
        /// What the wall clock said.
        wall: DateTime<Utc>,
        /// The last trusted time plus monotonic time elapsed: what readings are stamped with.
        expected: DateTime<Utc>,
    },
    /// Stamping from the system clock resumed after a jump.
    ClockResync {
        /// System clock minus the held-over time at that moment, in ms.
        offset_ms: i64,
    },
    /// A kind this version does not know (from a newer publisher).
    Unknown {
        /// Its `kind` field.
        kind: String,
    },
}

impl EventKind {
    /// The `kind` field.
    pub fn name(&self) -> &str {
        match self {
            EventKind::QueueCorrupt { .. } => "queue_corrupt",
            EventKind::ReadingsDropped { .. } => "readings_dropped",
            EventKind::QueueFilling { .. } => "queue_filling",
            EventKind::MemoryMode { .. } => "memory_mode",
            EventKind::DiskMode { .. } => "disk_mode",
            EventKind::ClockJump { .. } => "clock_jump",
            EventKind::ClockResync { .. } => "clock_resync",
            EventKind::Unknown { kind } => kind,
        }
    }
}

/// Why an event payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Longer than [`MAX_EVENT_BYTES`].
    #[error("event is larger than {MAX_EVENT_BYTES} bytes")]
    Oversized,
    /// Not a JSON object.
    #[error("event is not a JSON object: {0}")]
    NotJson(String),
    /// A schema version this crate cannot read.
    #[error("event schema version {0} is not supported (this reader knows {EVENT_VERSION})")]
    UnsupportedVersion(u64),
    /// A required field is missing or has the wrong type or value.
    #[error("event field {field}: {why}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl EventError {
    /// A short, stable, snake_case name (a metric label, a dead-letter reason).
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Oversized => "event_oversized",
            EventError::NotJson(_) => "event_not_json",
            EventError::UnsupportedVersion(_) => "event_unsupported_version",
            EventError::BadField { .. } => "event_bad_field",
        }
    }
}

fn bad(field: &'static str, why: &'static str) -> EventError {
    EventError::BadField { field, why }
}

impl DeviceEvent {
    /// The JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Map::new();
        o.insert("v".into(), EVENT_VERSION.into());
        o.insert("id".into(), self.id.to_string().into());
        o.insert("kind".into(), self.kind.name().into());
        o.insert("at".into(), self.at.map(time_text).into());
        match &self.kind {
            EventKind::QueueCorrupt {
                reason,
                moved_to,
                salvaged,
                lost,
                old_epoch,
                old_last_seq,
                lost_ranges,
                new_epoch,
            } => {
                o.insert("reason".into(), reason.as_str().into());
                o.insert("moved_to".into(), moved_to.as_str().into());
                o.insert("salvaged".into(), (*salvaged).into());
                o.insert("lost".into(), (*lost).into());
                o.insert("old_epoch".into(), old_epoch.map(|e| e.to_string()).into());
                o.insert("old_last_seq".into(), (*old_last_seq).into());
                o.insert("lost_ranges".into(), ranges_json(lost_ranges));
                o.insert("new_epoch".into(), new_epoch.to_string().into());
            }
            EventKind::ReadingsDropped {
                cause,
                count,
                unnumbered,
                ranges,
            } => {
                o.insert("cause".into(), cause.as_str().into());
                o.insert("count".into(), (*count).into());
                o.insert("unnumbered".into(), (*unnumbered).into());
                o.insert("ranges".into(), ranges_json(ranges));
            }
            EventKind::QueueFilling {
                bound,
                percent,
                readings,
            } => {
                o.insert("bound".into(), bound.as_str().into());
                o.insert("percent".into(), (*percent).into());
                o.insert("readings".into(), (*readings).into());
            }
            EventKind::MemoryMode {
                reason,
                from_epoch,
                from_last_seq,
                epoch,
                stranded,
            } => {
                o.insert("reason".into(), reason.as_str().into());
                o.insert(
                    "from_epoch".into(),
                    from_epoch.map(|e| e.to_string()).into(),
                );
                o.insert("from_last_seq".into(), (*from_last_seq).into());
                o.insert("epoch".into(), epoch.to_string().into());
                o.insert("stranded".into(), (*stranded).into());
            }
            EventKind::DiskMode {
                epoch,
                moved,
                memory_s,
            } => {
                o.insert("epoch".into(), epoch.to_string().into());
                o.insert("moved".into(), (*moved).into());
                o.insert("memory_s".into(), (*memory_s).into());
            }
            EventKind::ClockJump {
                by_ms,
                wall,
                expected,
            } => {
                o.insert("by_ms".into(), (*by_ms).into());
                o.insert("wall".into(), time_text(*wall).into());
                o.insert("expected".into(), time_text(*expected).into());
            }
            EventKind::ClockResync { offset_ms } => {
                o.insert("offset_ms".into(), (*offset_ms).into());
            }
            EventKind::Unknown { .. } => {}
        }
        // Serializing a map of strings and numbers cannot fail.
        serde_json::to_vec(&Value::Object(o)).unwrap_or_default()
    }

    /// Reads an event payload. Total: never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::Oversized);
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(e.to_string()))?;
        let Value::Object(o) = value else {
            return Err(EventError::NotJson("not an object".into()));
        };
        let f = Fields(&o);
        let v = f.u64("v")?;
        if v != EVENT_VERSION {
            return Err(EventError::UnsupportedVersion(v));
        }
        let id = EventId(f.epoch("id")?.get());
        let at = f.opt_time("at")?;
        let kind_name = f.str("kind")?;
        let kind = match kind_name {
            "queue_corrupt" => EventKind::QueueCorrupt {
                reason: f.str("reason")?.to_owned(),
                moved_to: f.str("moved_to")?.to_owned(),
                salvaged: f.u64("salvaged")?,
                lost: f.opt_u64("lost")?,
                old_epoch: f.opt_epoch("old_epoch")?,
                old_last_seq: f.opt_u64("old_last_seq")?,
                lost_ranges: f.ranges("lost_ranges")?,
                new_epoch: f.epoch("new_epoch")?,
            },
            "readings_dropped" => {
                let cause =
                    DropCause::parse(f.str("cause")?).ok_or(bad("cause", "unknown cause"))?;
                let count = f.u64("count")?;
                let unnumbered = f.u64("unnumbered")?;
                let ranges = f.ranges("ranges")?;
                let numbered = ranges
                    .iter()
                    .try_fold(0u64, |sum, r| sum.checked_add(r.len()))
                    .ok_or(bad("ranges", "cover more than 2^64 numbers"))?;
                if numbered.checked_add(unnumbered) != Some(count) {
                    return Err(bad("count", "is not unnumbered plus the numbers in ranges"));
                }
                EventKind::ReadingsDropped {
                    cause,
                    count,
                    unnumbered,
                    ranges,
                }
            }
            "queue_filling" => EventKind::QueueFilling {
                bound: DropCause::parse(f.str("bound")?).ok_or(bad("bound", "unknown bound"))?,
                percent: f.u64("percent")?,
                readings: f.u64("readings")?,
            },
            "memory_mode" => EventKind::MemoryMode {
                reason: f.str("reason")?.to_owned(),
                from_epoch: f.opt_epoch("from_epoch")?,
                from_last_seq: f.opt_u64("from_last_seq")?,
                epoch: f.epoch("epoch")?,
                stranded: f.opt_u64("stranded")?,
            },
            "disk_mode" => EventKind::DiskMode {
                epoch: f.epoch("epoch")?,
                moved: f.u64("moved")?,
                memory_s: f.u64("memory_s")?,
            },
            "clock_jump" => EventKind::ClockJump {
                by_ms: f.i64("by_ms")?,
                wall: f.time("wall")?,
                expected: f.time("expected")?,
            },
            "clock_resync" => EventKind::ClockResync {
                offset_ms: f.i64("offset_ms")?,
            },
            other => {
                let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
                if other.is_empty() || other.len() > 64 || !other.bytes().all(plain) {
                    return Err(bad("kind", "is not 1-64 of a-z 0-9 _"));
                }
                EventKind::Unknown {
                    kind: other.to_owned(),
                }
            }
        };
        Ok(DeviceEvent { id, at, kind })
    }
}

/// RFC 3339, UTC, milliseconds: `2026-01-01T00:00:00.000Z`.
fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ranges_json(ranges: &[SeqRange]) -> Value {
    Value::Array(
        ranges
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("epoch".into(), r.epoch().to_string().into());
                o.insert("first".into(), r.first().into());
                o.insert("last".into(), r.last().into());
                Value::Object(o)
            })
            .collect(),
    )
}

/// Typed access to an event's fields, each error naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, field: &'static str) -> Result<&Value, EventError> {
        self.0.get(field).ok_or(bad(field, "missing"))
    }

    fn str(&self, field: &'static str) -> Result<&str, EventError> {
        self.get(field)?.as_str().ok_or(bad(field, "not a string"))
    }

    fn u64(&self, field: &'static str) -> Result<u64, EventError> {
        self.get(field)?
            .as_u64()
            .ok_or(bad(field, "not an integer from 0 to 2^64-1"))
    }

    fn i64(&self, field: &'static str) -> Result<i64, EventError> {
        self.get(field)?
            .as_i64()
            .ok_or(bad(field, "not an integer from -2^63 to 2^63-1"))
    }

    fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, EventError> {
        match self.get(field)? {
            Value::Null => Ok(None),
            v => v
                .as_u64()
                .map(Some)
                .ok_or(bad(field, "not null or an integer from 0 to 2^64-1")),
        }
    }

    fn epoch(&self, field: &'static str) -> Result<Epoch, EventError> {
        self.str(field)?
            .parse()
            .map_err(|_| bad(field, "not 16 lowercase hex digits"))
    }

    fn opt_epoch(&self, field: &'static str) -> Result<Option<Epoch>, EventError> {
        match self.get(field)? {
            Value::Null => Ok(None),
            _ => self.epoch(field).map(Some),
        }
    }

    fn time(&self, field: &'static str) -> Result<DateTime<Utc>, EventError> {
        let t = DateTime::parse_from_rfc3339(self.str(field)?)
            .map_err(|_| bad(field, "not an RFC 3339 time"))?;
        // Milliseconds are the wire's precision: finer digits are dropped, so
        // that what decodes re-encodes to the same event.
        DateTime::from_timestamp_millis(t.timestamp_millis())
            .ok_or(bad(field, "not an RFC 3339 time"))
    }

    fn opt_time(&self, field: &'static str) -> Result<Option<DateTime<Utc>>, EventError> {
        match self.get(field)? {
            Value::Null => Ok(None),
            _ => self.time(field).map(Some),
        }
    }

    fn ranges(&self, field: &'static str) -> Result<Vec<SeqRange>, EventError> {
        let items = self
            .get(field)?
            .as_array()
            .ok_or(bad(field, "not a list"))?;
        if items.len() > MAX_RANGES {
            return Err(bad(field, "has more ranges than MAX_RANGES"));
        }
        items
            .iter()
            .map(|item| {
                let o = item.as_object().ok_or(bad(field, "holds a non-object"))?;
                let f = Fields(o);
                let range = bad(field, "holds a range that is not 1 <= first <= last");
                let epoch = f
                    .epoch("epoch")
                    .map_err(|_| bad(field, "holds a bad epoch"))?;
                let first = f.u64("first").map_err(|_| range.clone())?;
                let last = f.u64("last").map_err(|_| range.clone())?;
                SeqRange::new(epoch, first, last).map_err(|_| range)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(678)
    }

    #[test]
    fn a_drop_announcement_on_the_wire() {
        let e = Epoch::new(0xab);
        let event = DeviceEvent {
            id: EventId(0x1234),
            at: Some(at()),
            kind: EventKind::ReadingsDropped {
                cause: DropCause::MaxRows,
                count: 12,
                unnumbered: 2,
                ranges: vec![
                    SeqRange::new(e, 1, 5).unwrap(),
                    SeqRange::new(e, 8, 12).unwrap(),
                ],
            },
        };
        let bytes = event.encode();
        // Compared as JSON values: key order is not part of the format.
        let want: Value = serde_json::from_str(
            r#"{"v":1,"id":"0000000000001234","kind":"readings_dropped","at":"2026-01-02T03:04:05.678Z",
                "cause":"max_rows","count":12,"unnumbered":2,
                "ranges":[{"epoch":"00000000000000ab","first":1,"last":5},
                          {"epoch":"00000000000000ab","first":8,"last":12}]}"#,
        )
        .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), want);
        assert_eq!(DeviceEvent::decode(&bytes), Ok(event));
    }

    #[test]
    fn a_filling_queue_on_the_wire() {
        let event = DeviceEvent {
            id: EventId(0x99),
            at: None,
            kind: EventKind::QueueFilling {
                bound: DropCause::MaxAge,
                percent: 83,
                readings: 21_500,
            },
        };
        let want: Value = serde_json::from_str(
            r#"{"v":1,"id":"0000000000000099","kind":"queue_filling","at":null,
                "bound":"max_age","percent":83,"readings":21500}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&event.encode()).unwrap(),
            want
        );
        assert_eq!(DeviceEvent::decode(&event.encode()), Ok(event));
        let odd = br#"{"v":1,"id":"0000000000000099","kind":"queue_filling","at":null,"bound":"disk","percent":1,"readings":1}"#;
        assert_eq!(
            DeviceEvent::decode(odd).map_err(|e| e.reason()),
            Err("event_bad_field")
        );
    }

    #[test]
    fn a_count_that_disagrees_with_its_ranges_is_refused() {
        let text = r#"{"v":1,"id":"0000000000000001","kind":"readings_dropped","at":null,
            "cause":"max_age","count":3,"unnumbered":0,"ranges":[{"epoch":"00000000000000ab","first":1,"last":5}]}"#;
        assert_eq!(
            DeviceEvent::decode(text.as_bytes()),
            Err(bad("count", "is not unnumbered plus the numbers in ranges"))
        );
    }

    #[test]
    fn unknown_kinds_and_fields_pass_for_forward_compatibility() {
        let text = r#"{"v":1,"id":"00000000000000ff","kind":"battery_low","at":null,"volts":3.1}"#;
        let event = DeviceEvent::decode(text.as_bytes()).unwrap();
        assert_eq!(
            event.kind,
            EventKind::Unknown {
                kind: "battery_low".into()
            }
        );
        assert_eq!(event.at, None);
    }

    #[test]
    fn times_are_read_to_the_millisecond_in_utc() {
        let text = r#"{"v":1,"id":"0000000000000001","kind":"clock_resync","at":"2026-01-02T05:04:05.678999+02:00","offset_ms":1}"#;
        let event = DeviceEvent::decode(text.as_bytes()).unwrap();
        assert_eq!(event.at, Some(at()));
        assert_eq!(DeviceEvent::decode(&event.encode()), Ok(event));
    }

    #[test]
    fn refusals_name_the_field() {
        for (text, reason) in [
            ("[]", "event_not_json"),
            ("{", "event_not_json"),
            (r#"{"v":2}"#, "event_unsupported_version"),
            (r#"{"v":1,"id":"xyz"}"#, "event_bad_field"),
            (
                r#"{"v":1,"id":"0000000000000001","kind":"Bad Kind","at":null}"#,
                "event_bad_field",
            ),
            (
                r#"{"v":1,"id":"0000000000000001","kind":"clock_resync","at":"yesterday","offset_ms":1}"#,
                "event_bad_field",
            ),
        ] {
            let err = DeviceEvent::decode(text.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), reason, "{text}: {err}");
        }
        let huge = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(DeviceEvent::decode(&huge), Err(EventError::Oversized));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn time() -> impl Strategy<Value = DateTime<Utc>> {
            (0i64..4_102_444_800_000).prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
        }

        fn range() -> impl Strategy<Value = SeqRange> {
            (any::<u64>(), 1u64..1_000_000, 0u64..1000).prop_map(|(e, first, len)| {
                SeqRange::new(Epoch::new(e), first, first + len).unwrap()
            })
        }

        fn ranges() -> impl Strategy<Value = Vec<SeqRange>> {
            proptest::collection::vec(range(), 0..=MAX_RANGES)
        }

        fn epoch() -> impl Strategy<Value = Epoch> {
            any::<u64>().prop_map(Epoch::new)
        }

        fn kind() -> impl Strategy<Value = EventKind> {
            let cause = proptest::sample::select(DropCause::ALL.to_vec());
            prop_oneof![
                (
                    "\\PC{0,80}",
                    "\\PC{0,80}",
                    any::<u64>(),
                    proptest::option::of(any::<u64>()),
                    proptest::option::of(epoch()),
                    proptest::option::of(any::<u64>()),
                    ranges(),
                    epoch(),
                )
                    .prop_map(
                        |(
                            reason,
                            moved_to,
                            salvaged,
                            lost,
                            old_epoch,
                            old_last_seq,
                            lost_ranges,
                            new_epoch,
                        )| {
                            EventKind::QueueCorrupt {
                                reason,
                                moved_to,
                                salvaged,
                                lost,
                                old_epoch,
                                old_last_seq,
                                lost_ranges,
                                new_epoch,
                            }
                        }
                    ),
                (cause, 0u64..1000, ranges()).prop_map(|(cause, unnumbered, ranges)| {
                    let count = unnumbered + ranges.iter().map(SeqRange::len).sum::<u64>();
                    EventKind::ReadingsDropped {
                        cause,
                        count,
                        unnumbered,
                        ranges,
                    }
                }),
                (
                    "\\PC{0,80}",
                    proptest::option::of(epoch()),
                    proptest::option::of(any::<u64>()),
                    epoch(),
                    proptest::option::of(any::<u64>()),
                )
                    .prop_map(
                        |(reason, from_epoch, from_last_seq, epoch, stranded)| {
                            EventKind::MemoryMode {
                                reason,
                                from_epoch,
                                from_last_seq,
                                epoch,
                                stranded,
                            }
                        }
                    ),
                (epoch(), any::<u64>(), any::<u64>()).prop_map(|(epoch, moved, memory_s)| {
                    EventKind::DiskMode {
                        epoch,
                        moved,
                        memory_s,
                    }
                }),
                (any::<i64>(), time(), time()).prop_map(|(by_ms, wall, expected)| {
                    EventKind::ClockJump {
                        by_ms,
                        wall,
                        expected,
                    }
                }),
                any::<i64>().prop_map(|offset_ms| EventKind::ClockResync { offset_ms }),
                (
                    proptest::sample::select(DropCause::ALL.to_vec()),
                    any::<u64>(),
                    any::<u64>()
                )
                    .prop_map(|(bound, percent, readings)| {
                        EventKind::QueueFilling {
                            bound,
                            percent,
                            readings,
                        }
                    }),
                "[a-z][a-z0-9_]{0,30}"
                    .prop_filter("a known kind", |k| !matches!(
                        k.as_str(),
                        "queue_corrupt"
                            | "readings_dropped"
                            | "memory_mode"
                            | "disk_mode"
                            | "clock_jump"
                            | "clock_resync"
                            | "queue_filling"
                    ))
                    .prop_map(|kind| EventKind::Unknown { kind }),
            ]
        }

        fn event() -> impl Strategy<Value = DeviceEvent> {
            (any::<u64>(), proptest::option::of(time()), kind()).prop_map(|(id, at, kind)| {
                DeviceEvent {
                    id: EventId(id),
                    at,
                    kind,
                }
            })
        }

        proptest! {
            #[test]
            fn encode_then_decode_round_trips(event in event()) {
                let bytes = event.encode();
                prop_assert!(bytes.len() <= MAX_EVENT_BYTES, "{} bytes", bytes.len());
                prop_assert_eq!(DeviceEvent::decode(&bytes), Ok(event));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = DeviceEvent::decode(&bytes);
            }

            #[test]
            fn mangled_events_never_panic(event in event(), cut in any::<prop::sample::Index>(), junk in "\\PC{0,8}") {
                let text = String::from_utf8(event.encode()).unwrap();
                let at = cut.index(text.len() + 1);
                let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                let mangled = format!("{}{}{}", &text[..at], junk, &text[at..]);
                let _ = DeviceEvent::decode(mangled.as_bytes());
                let _ = DeviceEvent::decode(&text.as_bytes()[..at]);
            }

            #[test]
            fn fields_of_the_wrong_type_never_panic(
                event in event(),
                field in "[a-z_]{1,12}",
                value in prop_oneof![
                    Just(Value::Null),
                    any::<bool>().prop_map(Value::from),
                    any::<i64>().prop_map(Value::from),
                    any::<f64>().prop_map(Value::from),
                    "\\PC{0,20}".prop_map(Value::from),
                    Just(serde_json::json!([{"epoch": "00", "first": -1}])),
                    Just(serde_json::json!({})),
                ],
            ) {
                let mut v: Value = serde_json::from_slice(&event.encode()).unwrap();
                let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                let key = keys.iter().find(|k| k.starts_with(&field[..1])).cloned().unwrap_or(field);
                v[key.as_str()] = value;
                let _ = DeviceEvent::decode(&serde_json::to_vec(&v).unwrap());
            }
        }
    }
}
