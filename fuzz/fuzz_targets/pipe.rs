//! The CO2 payload (`datetime|emissions`) on its built-in route.
#![no_main]

use co2_fuzz::{deliver, now, routes};
use co2_wire::Decoder;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(""));
    if let Ok(reading) = Decoder::default().decode(data, now()) {
        assert_eq!(Decoder::default().decode(&reading.to_payload(), now()), Ok(reading));
    }
    deliver(routes, b"co2/pi-1/emissions", data);
    deliver(routes, b"co2/emissions", data);
});
