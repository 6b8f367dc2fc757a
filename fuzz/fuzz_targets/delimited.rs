//! The delimited decoder: the shipped bin-level route and one with every field type.
#![no_main]

use co2_fuzz::{deliver, routes};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[[routes]]
name = "bins"
topics = ["bins/level"]
decoder = "delimited"
table = "bin_levels"
[routes.delimited]
fields = [
  { column = "level", type = "number", flag_word = "FULL", flag_column = "full" },
  { column = "bin_id", type = "device" },
  { column = "measured_at", type = "datetime", span = 2 },
]

[[routes]]
name = "csv"
topics = ["csv/{device}"]
decoder = "delimited"
table = "csv_rows"
[routes.delimited]
separator = ","
fields = [
  { column = "n", type = "integer" },
  { type = "skip" },
  { column = "label", type = "text" },
  { column = "at", type = "datetime" },
  { column = "x", type = "number" },
]
"#;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<co2_bridge::decode::Routes> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| routes(CONFIG));
    deliver(routes, b"bins/level", data);
    deliver(routes, b"csv/dev-1", data);
});
