//! The LoRaWAN decoder for both network servers, uplinks (with radio
//! metadata, and a tight bound on the decoded payload) and events: any bytes
//! as The Things Stack's and ChirpStack's JSON, on their topics.
#![no_main]

use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[routes]]
name = "ttn"
topics = ["v3/+/devices/{device}/up"]
decoder = "lorawan"
[routes.lorawan]
server = "ttn"
radio = true
max_depth = 4
max_fields = 8

[[routes]]
name = "ttn-events"
topics = ["v3/+/devices/{device}/join"]
decoder = "lorawan"
[routes.lorawan]
server = "ttn"
events = true

[[routes]]
name = "chirpstack"
topics = ["application/+/device/{device}/event/up"]
decoder = "lorawan"
[routes.lorawan]
server = "chirpstack"
numeric_strings = false

[[routes]]
name = "chirpstack-events"
topics = ["application/+/device/{device}/event/status"]
decoder = "lorawan"
[routes.lorawan]
server = "chirpstack"
events = true
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    deliver(routes, b"v3/app1@ttn/devices/dev1/up", data);
    deliver(routes, b"v3/app1@ttn/devices/dev1/join", data);
    deliver(
        routes,
        b"application/1/device/0101010101010101/event/up",
        data,
    );
    deliver(
        routes,
        b"application/1/device/0101010101010101/event/status",
        data,
    );
});
