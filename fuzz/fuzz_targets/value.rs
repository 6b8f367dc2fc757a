//! The bare-value decoder (ESPHome, Shelly): any payload, with the field
//! named by a `{field}` level or by the topic's last level.
#![no_main]

use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[routes]]
name = "shelly"
topics = ["shellies/{device}/relay/{channel}/{field}"]
decoder = "value"

[[routes]]
name = "plain"
topics = ["plain/{device}/temperature"]
decoder = "value"
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    deliver(routes, b"shellies/sh-1/relay/0/power", data);
    deliver(routes, b"plain/esp-1/temperature", data);
});
