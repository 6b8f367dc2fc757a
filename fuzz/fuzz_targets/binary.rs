//! The binary decoder: raw files and base64 inside JSON.
#![no_main]

use co2_bridge::route::{Record, Value};
use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[routes]]
name = "camera"
topics = ["camera/{device}/snapshot", "camera/snapshot"]
decoder = "binary"
max_payload_bytes = 65536
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::route::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    for topic in [&b"camera/cam-1/snapshot"[..], b"camera/snapshot"] {
        if let Record::Rows { rows, .. } = deliver(routes, topic, data) {
            let [_, _, Value::Text(kind), Value::Int(size), Value::Bytes(bytes)] = rows[0].as_slice()
            else {
                panic!("unexpected image row {:?}", rows[0]);
            };
            assert!(kind.starts_with("image/"));
            assert_eq!(*size, bytes.len() as i64);
            assert!(bytes.len() <= 65536);
        }
    }
});
