//! Batched JSON: a top-level array of readings, and an array inside an
//! object whose time and device the elements inherit. Beyond the invariants
//! every record keeps, a batch never makes more records than its bound, and
//! every refused element keeps its own bytes as its dead letter's payload.
#![no_main]

use co2_bridge::decode::Record;
use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const MAX_ELEMENTS: usize = 8;

const CONFIG: &str = r#"
[[routes]]
name = "buffered"
topics = ["buffered/{device}"]
decoder = "json"
[routes.json]
batch = true
max_elements = 8
max_fields = 4

[[routes]]
name = "gateway"
topics = ["gateway"]
decoder = "json"
trust_payload_device = true
[routes.json]
batch_field = "readings"
device_field = "device"
time_field = "ts"
max_elements = 8
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    for topic in [&b"buffered/pi"[..], b"gateway"] {
        let records = deliver(routes, topic, data);
        assert!(
            records.len() <= MAX_ELEMENTS,
            "{} records from one delivery",
            records.len()
        );
        if records.len() > 1 {
            for record in &records {
                if let Record::Decoded { payload, .. } = record {
                    assert!(
                        payload.len() < data.len(),
                        "an element is the whole payload"
                    );
                }
            }
        }
    }
});
