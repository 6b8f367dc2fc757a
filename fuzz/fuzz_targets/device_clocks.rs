//! Device clocks and zones: any sequence of deliveries, from devices whose
//! zone is learned (`auto`), an IANA zone across DST or a fixed offset, at
//! any arrival times (backwards too, as a stepped clock does), gives records
//! that keep the invariants against *their* arrival; and the zone and offset
//! vocabulary takes any text or number without a panic.
#![no_main]

use bytes::Bytes;
use co2_bridge::decode::{Origin, Reason, Record, Routes};
use co2_fuzz::{now, routes};
use co2_wire::{ClockOffset, WallTime, Zone};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[wire]
time_zone = "auto"

[[devices]]
match = "pi-b*"
time_zone = "Europe/Berlin"

[[devices]]
match = "pi-f"
time_zone = "+05:45"
"#;

const DEVICES: [&[u8]; 4] = [b"pi-auto", b"pi-berlin", b"pi-f", b"pi-other"];

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    // One set of routes for every run, as in the bridge: the clocks it
    // learned from earlier inputs are part of what is fuzzed.
    let routes = ROUTES.get_or_init(|| routes(CONFIG));

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(zone) = text.parse::<Zone>() {
            assert_eq!(zone.to_string().parse::<Zone>(), Ok(zone));
        }
    }
    if let Some(bytes) = data.get(..8) {
        let millis = i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
        let offset = ClockOffset::from_millis(millis);
        let _ = (offset.nearest_zone(), offset.to_string());
        let _ = co2_wire::explain_offset(offset, Some(offset), "x");
    }

    // Deliveries: [device, arrival step (i16, ms × 100), length, payload…]…
    let mut arrival = now();
    let mut rest = data;
    while let [device, a, b, len, tail @ ..] = rest {
        let step = i64::from(i16::from_le_bytes([*a, *b])) * 100;
        arrival += chrono::Duration::milliseconds(step);
        let (payload, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let device = DEVICES[usize::from(*device) % DEVICES.len()];
        let topic = [b"co2/", device, b"/emissions"].concat();
        let records = routes.records(
            &Origin::Mqtt(Bytes::from(topic)),
            Bytes::copy_from_slice(payload),
            None,
            arrival,
        );
        // The CO2 route reads one reading a message: never a batch.
        assert_eq!(records.len(), 1, "one CO2 message, one record");
        for record in records {
            match record {
                Record::Rejected { letter, .. } => {
                    assert!(Reason::ALL.contains(&letter.reason));
                    assert!(letter
                        .detail
                        .as_ref()
                        .is_none_or(|d| d.chars().count() <= 255));
                }
                Record::Decoded { message, .. } => {
                    let at = message.time.and_utc();
                    assert!(
                        at <= arrival + chrono::Duration::seconds(300),
                        "{at} after {arrival}"
                    );
                }
                Record::Absorbed { .. } => {}
            }
        }
        // What a payload's time text reads as in every kind of zone.
        if let Some(text) = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.split('|').next())
        {
            if let Ok(wall) = WallTime::parse(text.trim()) {
                for zone in [
                    Zone::UTC,
                    Zone::Named(chrono_tz::Europe::Berlin),
                    Zone::Named(chrono_tz::Asia::Kolkata),
                ] {
                    let _ = wall.place(zone, arrival);
                }
            }
        }
    }
});
