//! Whole deliveries to the shipped routes with raw rows kept 30 days: any
//! topic, any payload, and a reading stamped before the window never
//! reaches a table whose old partitions are dropped (it is dead-lettered
//! as `beyond_retention`, or refused for another reason).
#![no_main]

use co2_bridge::config::RETAINED_TABLES;
use co2_bridge::decode::Record;
use co2_fuzz::{deliver, now, routes, split_delivery};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        routes(concat!(
            include_str!("../../bridge/routes.example.toml"),
            "\n[retention]\nraw_days = 30\n"
        ))
    });
    let (topic, payload) = split_delivery(data);
    for record in deliver(routes, topic, payload) {
        let Record::Decoded { route, message, .. } = record else {
            continue;
        };
        let table = routes.get(route).map_or("", |r| r.table());
        let cutoff = now().naive_utc() - chrono::TimeDelta::days(30);
        assert!(
            !RETAINED_TABLES.contains(&table) || message.time >= cutoff,
            "a reading of {} reached {table}, before the 30-day window",
            message.time
        );
    }
});
