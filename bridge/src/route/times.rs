//! How one message's times are read: in the zone chosen for its device
//! (see [`crate::clocks`]), checked against the column and the future bound,
//! and noted for the device's clock watch.

use std::cell::Cell;

use chrono::{DateTime, Utc};
use co2_wire::{Decoder, UnixUnit, WallTime, Zone};

use crate::clocks::Seen;
use crate::model::Reason;

/// The time reader of one message.
#[derive(Debug)]
pub struct MessageTimes<'a> {
    /// The route's limits (its zone is not used: `zone` is).
    decoder: &'a Decoder,
    /// Where offset-less times are read; `None` while an `auto` device's
    /// offset is still being learned.
    zone: Option<Zone>,
    /// When the message arrived.
    now: DateTime<Utc>,
    /// The newest time read from the payload, for the clock watch (a
    /// batch's oldest elements may be a backlog; its newest is the clock's
    /// best word on now).
    seen: Cell<Option<Seen>>,
}

impl<'a> MessageTimes<'a> {
    /// Reads times with `decoder`'s limits in `zone`, for a message that arrived at `now`.
    pub fn new(decoder: &'a Decoder, zone: Option<Zone>, now: DateTime<Utc>) -> Self {
        Self {
            decoder,
            zone,
            now,
            seen: Cell::new(None),
        }
    }

    /// A payload's datetime text (lenient forms; offset-less ones in the
    /// device's zone), checked.
    pub fn read_text(&self, text: &str) -> Result<DateTime<Utc>, Reason> {
        let wall = WallTime::parse(text)?;
        let offsetless = wall.offset.is_none();
        // Unknown zone: the wall clock read as UTC, for the watch to learn from.
        let zone = self.zone.unwrap_or(Zone::UTC);
        let placed = !offsetless || self.zone.is_some();
        let time = wall.place(zone, self.now)?;
        self.note(Seen {
            time,
            wall: offsetless.then_some(wall.local),
            placed,
        });
        if !placed {
            return Err(Reason::TimeZoneUnknown);
        }
        Ok(self.decoder.check_time(time, self.now)?)
    }

    /// A Unix time (seconds or a finer `unit`), checked.
    pub fn read_unix(&self, value: f64, unit: UnixUnit) -> Result<DateTime<Utc>, Reason> {
        let time = unit.to_datetime(value).ok_or(Reason::TimeOutOfRange)?;
        self.note(Seen {
            time,
            wall: None,
            placed: true,
        });
        Ok(self.decoder.check_time(time, self.now)?)
    }

    /// A time the payload gave as an instant, checked but not noted (a
    /// device's announcements are not readings).
    pub fn check(&self, time: DateTime<Utc>) -> Result<DateTime<Utc>, Reason> {
        Ok(self.decoder.check_time(time, self.now)?)
    }

    /// What was read, if anything.
    pub fn seen(&self) -> Option<Seen> {
        self.seen.get()
    }

    fn note(&self, seen: Seen) {
        if self.seen.get().is_none_or(|s| s.time < seen.time) {
            self.seen.set(Some(seen));
        }
    }
}
