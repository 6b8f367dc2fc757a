//! A reading's sequence number (the MQTT v5 user property `co2-seq`): any
//! text is a number only in its one canonical form `<16 hex>:<n>`, which
//! formats back to exactly that text.
#![no_main]

use co2_wire::{Seq, MAX_SEQ_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(seq) = text.parse::<Seq>() {
        assert!(seq.n() >= 1);
        assert!(text.len() <= MAX_SEQ_LEN);
        assert_eq!(seq.to_string(), text);
    }
});
