//! Whole deliveries to the shipped routes: any topic, any payload.
#![no_main]

use co2_fuzz::{deliver, routes, split_delivery};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes =
        ROUTES.get_or_init(|| routes(include_str!("../../bridge/routes.example.toml")));
    let (topic, payload) = split_delivery(data);
    deliver(routes, topic, payload);
});
