//! Records when the crate was built: the clock check's default floor (a Pi
//! without an RTC boots in the past; no reading can be older than its program).

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    // Reproducible builds set SOURCE_DATE_EPOCH; otherwise "now" at build time.
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=CO2_PUBLISHER_BUILD_EPOCH={epoch}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
