//! The JSON decoder in both modes, with the device from the topic or a key.
#![no_main]

use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[routes]]
name = "dht11"
topics = ["sensors/{device}/dht11"]
decoder = "json"
[routes.json]
mode = "long"
time_field = "time"

[[routes]]
name = "keyed"
topics = ["keyed"]
decoder = "json"
[routes.json]
device_field = "m_id"
time_field = "datetime"
time_unit = "ms"

[[routes]]
name = "mapped"
topics = ["mapped/{device}"]
decoder = "json"
table = "mapped"
[routes.json]
mode = "columns"
fields = { temp = "temperature", hum = "humidity" }
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    deliver(routes, b"sensors/pi/dht11", data);
    deliver(routes, b"keyed", data);
    deliver(routes, b"mapped/pi", data);
});
