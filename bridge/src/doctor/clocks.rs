//! The doctor's `device clocks` hop: do the readings that arrived lately
//! carry the time they arrived at?
//!
//! A device that sends its local wall-clock time without an offset, read
//! in another zone than its own, is whole hours off: ahead, every reading
//! is dead-lettered `too_far_in_future`; behind, every reading is stored
//! that much early without a word. Both show in the last 15 minutes of a
//! MySQL sink: stored rows carry `date_time` (as stored, after the zone)
//! and `received_at` (when the row was written, a batch delay after the
//! arrival); dead letters keep the payload and their arrival.
//!
//! Per device the offset is the largest `time − received_at` of its
//! recent rows: a backlog a device replays after an outage is older than
//! its arrival by more than the live readings around it, so the largest
//! is the live one.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use co2_wire::doctor::{fail, unproven, Failure, Outcome};
use co2_wire::{explain_offset, ClockOffset, Decoder, Limits, WallTime, Zone};
use sqlx::MySqlPool;

use crate::clocks::ZoneSetting;
use crate::model::Column;
use crate::route::{Routes, EVENTS_ROUTE};

/// How far back the hop looks, by arrival.
const WINDOW_MIN: u32 = 15;

/// Newest rows read per table. `received_at` has no index on the route
/// tables, so the scan is bounded by the primary key instead: the newest
/// rows are the ones that arrived last. 5,000 rows are 15 minutes of 55
/// devices at 10 s; a larger fleet is judged on a shorter stretch.
const NEWEST_ROWS: u32 = 5000;

/// Fewest rows in the window a device is judged on: a single old row
/// (a reading replayed late) says nothing about its clock.
const MIN_ROWS: i64 = 3;

/// Devices named in a failure at most; the rest are counted.
const MAX_NAMED: usize = 10;

/// Payload bytes read of a dead letter: a datetime and its `|` fit.
const LETTER_PREFIX: u32 = 64;

/// What to do about a device whose clock or zone is wrong.
const FIX: &str = "set the time zone of that device or of its route in the bridge's config \
     (wire.time_zone for every route), or make the device send its offset (Z, +09:00); a clock \
     minutes off: synchronise the device (timedatectl set-ntp true, or chrony). Then repair \
     what came meanwhile: `co2-bridge dead-letters replay` stores the dead-lettered readings, \
     `co2-bridge retime` moves the rows stored at the wrong time";

/// A table a route of the sink writes, with the columns that hold the
/// device and the reading's time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    route: String,
    name: String,
    device: String,
    time: String,
}

/// One device's recent rows in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rows {
    device: String,
    count: i64,
    offset: ClockOffset,
}

/// A dead letter refused as `too_far_in_future`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Letter {
    topic: String,
    arrived: DateTime<Utc>,
    payload: Vec<u8>,
}

/// A time's offset from its arrival, and its wall clock's when it had no
/// offset of its own (see [`explain_offset`]).
type Offsets = (ClockOffset, Option<ClockOffset>);

/// What the hop found, before it is put into words.
#[derive(Debug, Default)]
struct Findings {
    /// Zone-like offsets of stored rows, and every topic with future dead letters.
    wrong: Vec<String>,
    /// Devices judged.
    judged: usize,
    /// Devices with too few recent rows to judge.
    too_few: usize,
    /// The judged device farthest from its arrival, and how far.
    farthest: Option<(String, ClockOffset)>,
    /// Tables not read (no `id` or `received_at` column).
    unread: Vec<String>,
}

/// The hop for the MySQL sink `sink`.
pub async fn check(pool: &MySqlPool, sink: &str, routes: &Routes) -> Outcome {
    match findings(pool, sink, routes).await {
        Ok(found) => verdict(found),
        Err(f) => Outcome::Fail(f),
    }
}

/// What the recent rows and dead letters of the MySQL sink `sink` show.
async fn findings(pool: &MySqlPool, sink: &str, routes: &Routes) -> Result<Findings, Failure> {
    let now = Utc::now();
    let mut found = Findings::default();
    for table in tables(routes, sink) {
        let readable = has_columns(pool, &table)
            .await
            .map_err(|e| read_failed(&table.name, &e))?;
        if !readable {
            found.unread.push(table.name);
            continue;
        }
        let rows = recent_rows(pool, &table)
            .await
            .map_err(|e| read_failed(&table.name, &e))?;
        let zone_of = |device: &str| zone_for(routes, Some(&table.route), Some(device));
        judge_rows(&mut found, &table, rows, zone_of, now);
    }
    let letters = future_letters(pool)
        .await
        .map_err(|e| read_failed("rejected_messages", &e))?;
    judge_letters(&mut found, routes, &letters);
    Ok(found)
}

/// The tables the routes of `sink` write that name a device and a time,
/// each once. Announcements are left out: their time is when something
/// happened on the device, which may be long before they are sent.
fn tables(routes: &Routes, sink: &str) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    for route in routes.iter() {
        if route.sink() != sink || route.name() == EVENTS_ROUTE {
            continue;
        }
        let named = |wanted: &Column| route.column_named(wanted);
        let (Some(device), Some(time)) = (named(&Column::Device), named(&Column::Time)) else {
            continue;
        };
        if tables.iter().any(|t| t.name == route.table()) {
            continue;
        }
        tables.push(Table {
            route: route.name().to_owned(),
            name: route.table().to_owned(),
            device,
            time,
        });
    }
    tables
}

/// True when `table` has the columns the scan needs (an older or
/// hand-made table may lack `received_at` or `id`).
async fn has_columns(pool: &MySqlPool, table: &Table) -> Result<bool, sqlx::Error> {
    let found: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT column_name) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? \
           AND column_name IN ('id', 'received_at', ?, ?)",
    )
    .bind(&table.name)
    .bind(&table.device)
    .bind(&table.time)
    .fetch_one(pool)
    .await?;
    Ok(found == 4)
}

/// Per device: its rows among the table's newest that arrived in the
/// window, and the largest `time − received_at` of them (µs).
async fn recent_rows(pool: &MySqlPool, table: &Table) -> Result<Vec<Rows>, sqlx::Error> {
    // Names are checked identifiers (route config), so quoting them is safe.
    let sql = format!(
        "SELECT CAST(device AS CHAR), COUNT(*), MAX(TIMESTAMPDIFF(MICROSECOND, received_at, t)) \
         FROM (SELECT `{}` AS device, `{}` AS t, received_at FROM `{}` \
               ORDER BY id DESC LIMIT ?) AS newest \
         WHERE received_at >= UTC_TIMESTAMP(3) - INTERVAL ? MINUTE AND device IS NOT NULL \
         GROUP BY device",
        table.device, table.time, table.name
    );
    let rows: Vec<(Option<String>, i64, Option<i64>)> = sqlx::query_as(&sql)
        .bind(NEWEST_ROWS)
        .bind(WINDOW_MIN)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(device, count, micros)| {
            Some(Rows {
                device: device?,
                count,
                offset: ClockOffset::from_millis(micros?.div_euclid(1000)),
            })
        })
        .collect())
}

/// The dead letters refused as `too_far_in_future` in the window, newest
/// first (the `(reason, received_at)` index finds them).
async fn future_letters(pool: &MySqlPool) -> Result<Vec<Letter>, sqlx::Error> {
    let rows: Vec<(String, NaiveDateTime, Vec<u8>)> = sqlx::query_as(
        "SELECT topic, received_at, LEFT(payload, ?) FROM rejected_messages \
         WHERE reason = 'too_far_in_future' \
           AND received_at >= UTC_TIMESTAMP(3) - INTERVAL ? MINUTE \
         ORDER BY received_at DESC LIMIT ?",
    )
    .bind(LETTER_PREFIX)
    .bind(WINDOW_MIN)
    .bind(NEWEST_ROWS)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, received_at, payload)| Letter {
            topic,
            arrived: received_at.and_utc(),
            payload,
        })
        .collect())
}

/// A query on `table` that failed.
fn read_failed(table: &str, e: &sqlx::Error) -> Failure {
    fail(
        format!("cannot read {table}: {e}"),
        "check the account (it needs SELECT on the database)",
    )
}

/// Judges each device's stored rows: a zone-like offset is wrong.
fn judge_rows(
    found: &mut Findings,
    table: &Table,
    rows: Vec<Rows>,
    zone_of: impl Fn(&str) -> Zone,
    now: DateTime<Utc>,
) {
    for row in rows {
        if row.count < MIN_ROWS {
            found.too_few += 1;
            continue;
        }
        found.judged += 1;
        let farther = found.farthest.as_ref().is_none_or(|(_, far)| {
            row.offset.millis().unsigned_abs() > far.millis().unsigned_abs()
        });
        if farther {
            found.farthest = Some((row.device.clone(), row.offset));
        }
        if !row.offset.is_zone_like() {
            continue;
        }
        // Stored times were read in the device's zone: its own wall clock
        // is that far further east.
        let east_ms = i64::from(zone_of(&row.device).offset_at(now).local_minus_utc()) * 1000;
        let wall = ClockOffset::from_millis(row.offset.millis().saturating_add(east_ms));
        found.wrong.push(format!(
            "device {} in {}: {}",
            row.device,
            table.name,
            explain_offset(row.offset, Some(wall), &subject(Some(&table.route)))
        ));
    }
}

/// Every topic with future dead letters is wrong: their readings are not
/// stored. Named with the offset of the farthest one whose time can be read.
fn judge_letters(found: &mut Findings, routes: &Routes, letters: &[Letter]) {
    let mut by_topic: BTreeMap<&str, (u64, Option<Offsets>)> = BTreeMap::new();
    for letter in letters {
        let (count, farthest) = by_topic.entry(&letter.topic).or_default();
        *count += 1;
        let (route, device) = route_of(routes, &letter.topic);
        let decoder = Decoder::new(zone_for(routes, route, device), Limits::default());
        let Some(read) = letter_offsets(&decoder, &letter.payload, letter.arrived) else {
            continue;
        };
        if farthest.is_none_or(|(far, _)| read.0 > far) {
            *farthest = Some(read);
        }
    }
    for (topic, (count, farthest)) in by_topic {
        let (route, device) = route_of(routes, topic);
        let who = match device {
            Some(device) => format!("device {device} (topic {topic})"),
            None => format!("topic {topic}"),
        };
        let words = match farthest {
            Some((offset, wall)) => explain_offset(offset, wall, &subject(route)),
            None => "their time is not a `datetime|value` payload's".to_owned(),
        };
        found.wrong.push(format!(
            "{who}: {count} reading(s) dead-lettered too_far_in_future, {words}"
        ));
    }
}

/// A pipe payload's offset from its arrival (its time read as the bridge
/// reads it), and its wall clock's when the time has no offset; `None` when
/// the payload is not `datetime|value`.
fn letter_offsets(decoder: &Decoder, payload: &[u8], arrived: DateTime<Utc>) -> Option<Offsets> {
    // The prefix may end inside a character: only the part before `|` matters.
    let text = String::from_utf8_lossy(payload);
    let (time, _) = text.split_once('|')?;
    let wall = WallTime::parse(time.trim()).ok()?;
    let carried = decoder.place(&wall, arrived).ok()?;
    let own = wall
        .offset
        .is_none()
        .then(|| ClockOffset::between(wall.local.and_utc(), arrived));
    Some((ClockOffset::between(carried, arrived), own))
}

/// The zone the bridge reads `device`'s offset-less times in on `route`
/// (UTC for `auto`: the offsets a running bridge learned are not read here).
fn zone_for(routes: &Routes, route: Option<&str>, device: Option<&str>) -> Zone {
    let id = route
        .and_then(|r| routes.by_name(r))
        .map_or(0, |(id, _)| id);
    match routes.zones().setting(id, device.unwrap_or_default()) {
        ZoneSetting::Zone(zone) => zone,
        ZoneSetting::Auto => Zone::UTC,
    }
}

/// The route a dead letter's topic belongs to, and the device it names.
fn route_of<'a>(routes: &'a Routes, topic: &'a str) -> (Option<&'a str>, Option<&'a str>) {
    for route in routes.iter() {
        if let Some(found) = route.filters().iter().find_map(|f| f.matches(topic)) {
            return (Some(route.name()), found.device());
        }
    }
    (None, None)
}

/// What [`explain_offset`] tells to set the time zone of.
fn subject(route: Option<&str>) -> String {
    match route {
        Some(route) => format!("route {route} or of this device"),
        None => "this device".to_owned(),
    }
}

/// The hop's outcome in words: unproven while no device has enough recent
/// readings to be judged.
fn verdict(found: Findings) -> Outcome {
    if !found.wrong.is_empty() {
        let more = found.wrong.len().saturating_sub(MAX_NAMED);
        let mut what: Vec<String> = found.wrong.into_iter().take(MAX_NAMED).collect();
        if more > 0 {
            what.push(format!("and {more} more"));
        }
        return Outcome::Fail(fail(what.join("; "), FIX));
    }
    let mut text = match &found.farthest {
        Some((device, offset)) => format!(
            "{} device(s) sent readings in the last {WINDOW_MIN} min, none a time zone \
             off (farthest: {device}, {})",
            found.judged,
            co2_wire::arrival_words(*offset)
        ),
        None => {
            format!("no readings received in the last {WINDOW_MIN} min: nothing to judge yet")
        }
    };
    if found.too_few > 0 {
        text.push_str(&format!(
            "; {} device(s) with fewer than {MIN_ROWS} readings not judged",
            found.too_few
        ));
    }
    if !found.unread.is_empty() {
        text.push_str(&format!(
            "; not read (no id or received_at column): {}",
            found.unread.join(", ")
        ));
    }
    if found.farthest.is_none() {
        return Outcome::Unproven(unproven(
            text,
            format!(
                "{MIN_ROWS} or more readings of a device stored in the last {WINDOW_MIN} min: \
                 run again once the devices have published for a while"
            ),
        ));
    }
    Outcome::Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn arrival() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 3, 0, 0).unwrap()
    }

    fn table() -> Table {
        Table {
            route: "co2".into(),
            name: "co2_emissions".into(),
            device: "device".into(),
            time: "date_time".into(),
        }
    }

    fn rows(device: &str, count: i64, seconds: i64) -> Rows {
        Rows {
            device: device.into(),
            count,
            offset: ClockOffset::from_millis(seconds * 1000),
        }
    }

    #[test]
    fn a_device_stored_hours_early_is_named_with_its_zone() {
        let mut found = Findings::default();
        let rows = vec![
            rows("pi-ok", 90, -2),
            rows("pi-ny", 90, -5 * 3600 - 1),
            rows("pi-drift", 90, -7 * 60),
            rows("pi-new", 2, -5 * 3600),
        ];
        judge_rows(&mut found, &table(), rows, |_| Zone::UTC, arrival());
        assert_eq!(
            found.wrong,
            [
                "device pi-ny in co2_emissions: 5 h 00 min behind its arrival: local time of \
              UTC-05:00? set the time zone of route co2 or of this device"
            ]
        );
        assert_eq!((found.judged, found.too_few), (3, 1));
        let Outcome::Fail(f) = verdict(found) else {
            panic!("not a failure")
        };
        assert!(f.what.starts_with("device pi-ny"), "{}", f.what);
        assert!(f.fix.contains("co2-bridge retime"), "{}", f.fix);
    }

    #[test]
    fn stored_times_read_in_a_zone_name_the_devices_own() {
        // Read in Berlin (UTC+1 in January), sent in New York: 6 h early, the device lives at −5.
        let mut found = Findings::default();
        let berlin = Zone::Named(chrono_tz::Europe::Berlin);
        judge_rows(
            &mut found,
            &table(),
            vec![rows("pi-ny", 5, -6 * 3600)],
            |_| berlin,
            arrival(),
        );
        assert_eq!(found.wrong.len(), 1);
        assert!(
            found.wrong[0].contains("6 h 00 min behind") && found.wrong[0].contains("UTC-05:00"),
            "{:?}",
            found.wrong
        );
    }

    #[test]
    fn correct_clocks_pass_and_say_how_far_the_farthest_is() {
        let mut found = Findings::default();
        let rows = vec![rows("pi-a", 90, -1), rows("pi-b", 90, -4)];
        judge_rows(&mut found, &table(), rows, |_| Zone::UTC, arrival());
        assert_eq!(
            verdict(found),
            Outcome::Ok(
                "2 device(s) sent readings in the last 15 min, none a time zone off \
                 (farthest: pi-b, 4 s behind its arrival)"
                    .into()
            )
        );
    }

    #[test]
    fn no_device_to_judge_is_unproven_not_passed() {
        let Outcome::Unproven(u) = verdict(Findings::default()) else {
            panic!("not unproven")
        };
        assert_eq!(
            u.what,
            "no readings received in the last 15 min: nothing to judge yet"
        );
        assert!(
            u.proof.starts_with("3 or more readings of a device"),
            "{}",
            u.proof
        );
        // Devices with too few rows are no proof either.
        let found = Findings {
            too_few: 2,
            ..Findings::default()
        };
        let Outcome::Unproven(u) = verdict(found) else {
            panic!("not unproven")
        };
        assert!(
            u.what
                .ends_with("2 device(s) with fewer than 3 readings not judged"),
            "{}",
            u.what
        );
    }

    #[test]
    fn dead_letters_read_their_time_as_the_bridge_did() {
        let utc = Decoder::new(Zone::UTC, Limits::default());
        let seoul_wall = b"2026-1-15 12:00:00|412.5";
        let (offset, wall) = letter_offsets(&utc, seoul_wall, arrival()).unwrap();
        assert_eq!(offset.millis(), 9 * 3600 * 1000);
        assert_eq!(wall, Some(offset));
        // An explicit offset: no wall clock of its own to suggest a zone by.
        let (offset, wall) =
            letter_offsets(&utc, b"2026-01-15T04:00:00+00:00|1", arrival()).unwrap();
        assert_eq!((offset.millis(), wall), (3600 * 1000, None));
        // The stored prefix cut inside a character after the `|`: read all the same.
        let cut = b"2026-01-15 12:00:00|\xc3";
        assert_eq!(
            letter_offsets(&utc, cut, arrival()).map(|(o, _)| o.millis()),
            Some(9 * 3600 * 1000)
        );
        // No time at all: not read, not a panic.
        assert_eq!(
            letter_offsets(&utc, "2026-01-15 12:00:00é".as_bytes(), arrival()),
            None
        );
        assert_eq!(letter_offsets(&utc, &[0xff, b'|', b'1'], arrival()), None);
        assert_eq!(letter_offsets(&utc, b"", arrival()), None);
    }

    #[test]
    fn many_wrong_devices_are_counted_past_the_named_ones() {
        let found = Findings {
            wrong: (0..12).map(|i| format!("device d{i}")).collect(),
            ..Findings::default()
        };
        let Outcome::Fail(f) = verdict(found) else {
            panic!("not a failure")
        };
        assert!(f.what.ends_with("device d9; and 2 more"), "{}", f.what);
    }
}
