//! The JSON decoder in every mode: long (numbers, strings, booleans, nesting,
//! named levels as tags), with a device key and nested time, with numeric
//! strings kept as text, columns mode with nested keys, and document mode.
#![no_main]

use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[routes]]
name = "dht11"
topics = ["sensors/{device}/{room}/dht11"]
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
name = "nested"
topics = ["tele/{device}/SENSOR"]
decoder = "json"
[routes.json]
time_field = "StatusSNS.Time"
device_field = "meta.id"
numeric_strings = false
time_zone = "Europe/Berlin"
max_depth = 4
max_fields = 8

[[routes]]
name = "mapped"
topics = ["mapped/{device}/{room}"]
decoder = "json"
table = "mapped"
[routes.json]
mode = "columns"
fields = { temp = "temperature", hum = "humidity", "AM2301.Temperature" = "t2", "v.0" = "first" }

[[routes]]
name = "documents"
topics = ["documents/{device}"]
decoder = "json"
[routes.json]
mode = "document"
device_field = "m_id"
time_field = "datetime"
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    deliver(routes, b"sensors/pi/kitchen/dht11", data);
    deliver(routes, b"keyed", data);
    deliver(routes, b"tele/pi/SENSOR", data);
    deliver(routes, b"mapped/pi/hall", data);
    deliver(routes, b"documents/pi", data);
});
