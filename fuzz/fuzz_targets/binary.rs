//! The binary decoder: raw files and base64 inside JSON.
#![no_main]

use co2_bridge::decode::{Record, Value};
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
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    for topic in [&b"camera/cam-1/snapshot"[..], b"camera/snapshot"] {
        for record in deliver(routes, topic, data) {
            let Record::Decoded { message, .. } = record else {
                continue;
            };
            let (Some(Value::Text(kind)), Some(Value::Int(size)), Some(Value::Bytes(bytes))) = (
                message.field("content_type"),
                message.field("size"),
                message.field("data"),
            ) else {
                panic!("unexpected image message {message:?}");
            };
            assert!(kind.starts_with("image/"));
            assert_eq!(*size, bytes.len() as i64);
            assert!(bytes.len() <= 65536);
        }
    }
});
