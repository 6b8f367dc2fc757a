//! One device's clock as the bridge sees it: how far the times its live
//! readings carry are from when they arrive, and, for `time_zone = "auto"`,
//! the fixed offset its wall clock keeps.
//!
//! **Live or backlog.** Only live readings say anything about a clock: a
//! reading drained from a publisher's queue or a broker's after an outage
//! arrived late, not early, and a burst of them would teach any offset at
//! all. A reading counts as live when it is *paced like its arrival*: the
//! time it carries moved on from the device's previous reading by about as
//! much as the arrival did (between half and twice as much). A backlog
//! drains much faster than its readings were taken, so none of it is paced,
//! and neither is a reading whose time jumped (a device that changed zone,
//! or one that alternates between offsets).
//!
//! **Steady.** An offset is reported once [`STEADY_SAMPLES`] live readings in
//! a row agree on it within the zone tolerance; the largest of them is the
//! figure (the one that waited least on the way).

use std::collections::VecDeque;

use chrono::{DateTime, NaiveDateTime, Utc};
use co2_wire::{ClockOffset, Zone, ZONE_TOLERANCE_S};

/// Live readings in a row that must agree before an offset is reported or learned.
pub const STEADY_SAMPLES: usize = 3;

/// Readings whose pacing is remembered, to tell an unsteady device.
const REMEMBERED: u32 = 16;

/// Jumps among the remembered readings that make a device unsteady.
const UNSTEADY_JUMPS: u32 = 3;

/// What a decoder read of one reading's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The time as it would be stored: in the device's zone, or, when that
    /// zone is still unknown, its wall-clock time read as UTC.
    pub time: DateTime<Utc>,
    /// The wall-clock time the payload wrote, when it gave no offset.
    pub wall: Option<NaiveDateTime>,
    /// False when the time had no offset and the device's zone is not
    /// known yet (`auto`, still learning): `time` is only the wall clock.
    pub placed: bool,
}

/// What to do with the reading just observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it as decoded.
    Store,
    /// The device's offset was just learned (or changed): read the reading
    /// again in this zone.
    Learned(Zone),
    /// Do not store it with the time it would get; why, in words.
    Hold(String),
}

/// A learned offset and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// The fixed zone the device's wall clock keeps.
    pub zone: Zone,
    /// When it was learned.
    pub since: DateTime<Utc>,
}

/// One device's observations.
#[derive(Debug, Default, Clone)]
pub struct Watch {
    /// The previous reading's carried time (its wall clock when it had one)
    /// and arrival, in milliseconds.
    last: Option<(i64, i64)>,
    /// Live readings' stored time − arrival, newest last.
    errors: VecDeque<i64>,
    /// Live offset-less readings' wall clock (read as UTC) − arrival.
    walls: VecDeque<i64>,
    /// One bit per remembered reading, newest lowest: its time jumped by a
    /// zone-like step against its arrival.
    jumps: u32,
    /// The learned offset (`auto` only).
    pub learned: Option<Learned>,
    /// The route of its newest observed reading.
    route: usize,
}

/// What the status page and metrics show of a device's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockView {
    /// The steady offset of its live readings' stored times, if there is one.
    pub offset: Option<ClockOffset>,
    /// The steady offset of its wall clock, for offset-less readings.
    pub wall: Option<ClockOffset>,
    /// Its learned zone (`auto`).
    pub learned: Option<Learned>,
    /// Live readings seen in a row, up to what is kept.
    pub live: usize,
    /// Its times jump between readings: it is never learned.
    pub unsteady: bool,
    /// The route of its newest reading (where its zone setting comes from).
    pub route: usize,
    /// For `auto` devices still learning: why nothing is learned yet.
    pub learning: Option<String>,
}

impl Watch {
    /// Notes one reading that arrived at `arrival`; `auto` when the device's
    /// zone is learned rather than set.
    pub fn observe(
        &mut self,
        route: usize,
        seen: &Seen,
        arrival: DateTime<Utc>,
        auto: bool,
    ) -> Verdict {
        self.route = route;
        let carried = seen
            .wall
            .map_or(seen.time, |w| w.and_utc())
            .timestamp_millis();
        let arrived = arrival.timestamp_millis();
        let (paced, jump) = match self.last {
            Some((c0, a0)) => {
                let (dc, da) = (carried.saturating_sub(c0), arrived.saturating_sub(a0));
                let paced = dc > 0 && da.saturating_mul(2) >= dc && da <= dc.saturating_mul(2);
                (
                    paced,
                    ClockOffset::from_millis(dc.saturating_sub(da)).is_zone_like(),
                )
            }
            None => (false, false),
        };
        self.last = Some((carried, arrived));
        self.jumps = (self.jumps << 1 | u32::from(jump)) & ((1 << REMEMBERED) - 1);
        if paced {
            if seen.placed {
                push(
                    &mut self.errors,
                    seen.time.timestamp_millis().saturating_sub(arrived),
                );
            }
            if seen.wall.is_some() {
                push(&mut self.walls, carried.saturating_sub(arrived));
            }
        }
        if !auto || seen.wall.is_none() {
            return Verdict::Store;
        }
        let steady_zone = self.steady_wall().and_then(ClockOffset::as_zone);
        match (self.learned, steady_zone) {
            (learned, Some(zone)) if learned.map(|l| l.zone) != Some(zone) => {
                self.learned = Some(Learned {
                    zone,
                    since: arrival,
                });
                Verdict::Learned(zone)
            }
            (None, _) => Verdict::Hold(self.learning_progress()),
            (Some(learned), _) => {
                let error = ClockOffset::between(seen.time, arrival);
                // Ahead of its arrival is impossible for a right clock; an
                // hour behind is a backlog unless the reading is live.
                if error.is_zone_like() && (error.millis() > 0 || paced) {
                    Verdict::Hold(format!(
                        "{} read at the learned {}: the device's offset seems to have \
                         changed (daylight saving, or it moved); relearning from its next \
                         live readings",
                        co2_wire::arrival_words(error),
                        learned.zone
                    ))
                } else {
                    Verdict::Store
                }
            }
        }
    }

    /// What the status page and metrics show.
    pub fn view(&self) -> ClockView {
        ClockView {
            offset: steady(&self.errors),
            wall: self.steady_wall(),
            learned: self.learned,
            live: self.errors.len().max(self.walls.len()),
            unsteady: self.is_unsteady(),
            route: self.route,
            learning: self.learned.is_none().then(|| self.learning_progress()),
        }
    }

    fn steady_wall(&self) -> Option<ClockOffset> {
        steady(&self.walls)
    }

    fn is_unsteady(&self) -> bool {
        self.jumps.count_ones() >= UNSTEADY_JUMPS
    }

    fn learning_progress(&self) -> String {
        if self.is_unsteady() {
            return "its times jump between readings by zone-like steps, so no offset \
                    is learned: set its time zone"
                .to_owned();
        }
        let agreeing = self.walls.len().min(STEADY_SAMPLES);
        match self.steady_wall() {
            Some(wall) if wall.as_zone().is_none() => format!(
                "its clock is {wall} of arrival, which is no zone's offset: fix its \
                 clock or set its time zone"
            ),
            _ => format!(
                "learning its time zone (time_zone = \"auto\"): {agreeing} of \
                 {STEADY_SAMPLES} live readings so far; replay these later with \
                 `co2-bridge dead-letters replay --reason time_zone_unknown`"
            ),
        }
    }
}

/// Keeps the newest [`STEADY_SAMPLES`] samples.
fn push(samples: &mut VecDeque<i64>, value: i64) {
    if samples.len() == STEADY_SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value);
}

/// The largest sample, when all agree within twice the zone tolerance.
fn steady(samples: &VecDeque<i64>) -> Option<ClockOffset> {
    if samples.len() < STEADY_SAMPLES {
        return None;
    }
    let max = samples.iter().copied().max()?;
    let min = samples.iter().copied().min()?;
    (max.saturating_sub(min) <= 2 * ZONE_TOLERANCE_S * 1000).then(|| ClockOffset::from_millis(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
    }

    /// A reading whose wall clock shows `arrival + zone_s`, taken `delay_ms` before it arrived.
    fn local(arrival: DateTime<Utc>, zone_s: i64, delay_ms: i64) -> Seen {
        let wall =
            (arrival + Duration::seconds(zone_s) - Duration::milliseconds(delay_ms)).naive_utc();
        Seen {
            time: wall.and_utc(),
            wall: Some(wall),
            placed: false,
        }
    }

    fn read_in(seen: Seen, zone: Zone, arrival: DateTime<Utc>) -> Seen {
        let time = seen
            .wall
            .and_then(|w| zone.localize(w, arrival).ok())
            .unwrap_or(seen.time);
        Seen {
            time,
            placed: true,
            ..seen
        }
    }

    #[test]
    fn a_live_device_in_seoul_shows_nine_hours_ahead() {
        let mut w = Watch::default();
        for i in 0..4 {
            let arrival = t0() + Duration::seconds(10 * i);
            let mut seen = local(arrival, 9 * 3600, 40);
            seen.placed = true; // read in UTC: stored (or refused) 9 h ahead
            assert_eq!(w.observe(0, &seen, arrival, false), Verdict::Store);
        }
        let view = w.view();
        assert_eq!(
            view.offset
                .and_then(|o| o.nearest_zone())
                .map(|z| z.local_minus_utc()),
            Some(32_400)
        );
        assert!(!view.unsteady);
    }

    #[test]
    fn auto_learns_after_three_live_readings_and_holds_before() {
        let mut w = Watch::default();
        let mut verdicts = Vec::new();
        for i in 0..5 {
            let arrival = t0() + Duration::seconds(i);
            let seen = match w.learned {
                Some(l) => read_in(local(arrival, -5 * 3600, 30), l.zone, arrival),
                None => local(arrival, -5 * 3600, 30),
            };
            verdicts.push(w.observe(0, &seen, arrival, true));
        }
        // The first has no predecessor, so three paced ones are readings 2..4.
        assert!(matches!(verdicts[0], Verdict::Hold(_)));
        assert!(matches!(verdicts[1], Verdict::Hold(_)));
        assert!(matches!(verdicts[2], Verdict::Hold(_)));
        let ny: Zone = "-05:00".parse().unwrap();
        assert_eq!(verdicts[3], Verdict::Learned(ny));
        assert_eq!(verdicts[4], Verdict::Store);
    }

    #[test]
    fn a_backlog_drain_teaches_nothing() {
        let mut w = Watch::default();
        // 600 readings taken every 10 s over the last 100 minutes, drained in 0.6 s.
        let drained = t0();
        for i in 0..600 {
            let arrival = drained + Duration::milliseconds(i);
            let taken = drained - Duration::seconds(6000) + Duration::seconds(10 * i);
            let seen = Seen {
                time: taken,
                wall: Some(taken.naive_utc()),
                placed: false,
            };
            assert!(matches!(
                w.observe(0, &seen, arrival, true),
                Verdict::Hold(_)
            ));
        }
        assert_eq!(w.learned, None);
        assert_eq!(w.view().live, 0);
    }

    #[test]
    fn alternating_offsets_are_flagged_and_never_learned() {
        let mut w = Watch::default();
        for i in 0..40 {
            let arrival = t0() + Duration::seconds(i);
            let zone = if i % 2 == 0 { 9 * 3600 } else { 0 };
            let verdict = w.observe(0, &local(arrival, zone, 20), arrival, true);
            assert!(matches!(verdict, Verdict::Hold(_)), "{i}: {verdict:?}");
        }
        assert_eq!(w.learned, None);
        assert!(w.view().unsteady);
        let Verdict::Hold(why) = w.observe(
            0,
            &local(t0() + Duration::seconds(41), 0, 20),
            t0() + Duration::seconds(41),
            true,
        ) else {
            panic!("learned an alternating device");
        };
        assert!(why.contains("jump"), "{why}");
    }

    #[test]
    fn a_dst_switch_is_held_then_relearned() {
        let mut w = Watch::default();
        let cet: Zone = "+01:00".parse().unwrap();
        let cest: Zone = "+02:00".parse().unwrap();
        let mut clock = t0();
        let mut step = |w: &mut Watch, zone_s: i64| {
            clock += Duration::seconds(10);
            let seen = local(clock, zone_s, 30);
            let seen = match w.learned {
                Some(l) => read_in(seen, l.zone, clock),
                None => seen,
            };
            w.observe(0, &seen, clock, true)
        };
        for _ in 0..5 {
            step(&mut w, 3600);
        }
        assert_eq!(w.learned.map(|l| l.zone), Some(cet));
        // Spring forward: an hour ahead of arrival is held, never stored.
        let after: Vec<Verdict> = (0..4).map(|_| step(&mut w, 7200)).collect();
        assert!(
            after[..3].iter().all(|v| matches!(v, Verdict::Hold(_))),
            "{after:?}"
        );
        assert_eq!(after[3], Verdict::Learned(cest));
        assert_eq!(step(&mut w, 7200), Verdict::Store);
        // Fall back: the live readings an hour behind are held too, then relearned.
        let back: Vec<Verdict> = (0..4).map(|_| step(&mut w, 3600)).collect();
        assert!(
            matches!(back[0], Verdict::Store),
            "the jump itself looks like backlog: {back:?}"
        );
        assert!(
            back[1..3].iter().all(|v| matches!(v, Verdict::Hold(_))),
            "{back:?}"
        );
        assert_eq!(back[3], Verdict::Learned(cet));
    }

    #[test]
    fn a_device_that_sends_offsets_is_never_held() {
        let mut w = Watch::default();
        for i in 0..5 {
            let arrival = t0() + Duration::seconds(i);
            let seen = Seen {
                time: arrival - Duration::milliseconds(25),
                wall: None,
                placed: true,
            };
            assert_eq!(w.observe(0, &seen, arrival, true), Verdict::Store);
        }
        let offset = w.view().offset.map(ClockOffset::millis);
        assert_eq!(offset, Some(-25));
    }
}
