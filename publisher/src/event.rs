//! Device events as the queue carries them: an announcement as an entry,
//! and what it may say.

use chrono::{DateTime, Utc};
use co2_wire::{DeviceEvent, EventId, EventKind};

use crate::store::NewEntry;

/// `kind` as an entry for `topic`, stamped `at` (`None`: no trusted time).
pub fn entry(topic: &str, at: Option<DateTime<Utc>>, kind: EventKind) -> NewEntry {
    let event = DeviceEvent {
        id: EventId(rand::random()),
        at,
        kind,
    };
    NewEntry::event(
        topic,
        event.encode(),
        at.map_or(0, |t| t.timestamp_millis()),
    )
}

/// An error text cut to what an announcement carries (events are bounded in size).
pub(crate) fn short(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(short("disk full"), "disk full");
        let long = "é".repeat(400);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), 303);
        assert!(cut.ends_with("..."));
    }
}
