//! A publisher's announcement (`<prefix>/<device>/events`): any bytes are an
//! event or a named refusal; an accepted event re-encodes to JSON that
//! decodes to the same event, and a drop announcement's count is exactly the
//! numbers it names plus the unnumbered ones.
#![no_main]

use co2_wire::{DeviceEvent, EventKind, SeqRange, MAX_RANGES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = DeviceEvent::decode(data) else {
        return;
    };
    assert_eq!(DeviceEvent::decode(&event.encode()), Ok(event.clone()));
    match &event.kind {
        EventKind::ReadingsDropped {
            count,
            unnumbered,
            ranges,
            ..
        } => {
            assert!(ranges.len() <= MAX_RANGES);
            let numbered: u64 = ranges.iter().map(SeqRange::len).sum();
            assert_eq!(numbered + unnumbered, *count);
        }
        EventKind::QueueCorrupt { lost_ranges, .. } => assert!(lost_ranges.len() <= MAX_RANGES),
        EventKind::Unknown { kind } => assert!(!kind.is_empty() && kind.len() <= 64),
        _ => {}
    }
});
