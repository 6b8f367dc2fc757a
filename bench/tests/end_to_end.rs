//! A small load through the real bridge binary, judged by the bench's own report.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

fn run_load(extra: &[&str]) -> serde_json::Value {
    let bin = co2_testkit::bridge_bin();
    assert!(
        bin.exists(),
        "no bridge binary at {} (cargo build --workspace --bins, or set CO2_BRIDGE_BIN)",
        bin.display()
    );
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(env!("CARGO_BIN_EXE_co2-bench"))
        .args([
            "load",
            "--own-bridge",
            "--json",
            "--repo",
            repo,
            "--bridge-bin",
        ])
        .arg(&bin)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "co2-bench load failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let runs: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    runs[0].clone()
}

#[test]
fn five_thousand_readings_through_the_bridge_arrive_once_each() {
    let r = run_load(&[
        "--own-broker",
        "stock",
        "--devices",
        "20",
        "--connections",
        "4",
        "--readings",
        "5000",
        "--wait-s",
        "60",
    ]);
    assert_eq!(r["published"], 5000, "{r:#}");
    assert_eq!(r["stored"], 5000, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["duplicates"], 0, "{r:#}");
    assert_eq!(r["unexpected"], 0, "{r:#}");
    assert!(r["rows_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(r["bridge"]["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r:#}");
}

#[test]
fn the_provisioned_broker_config_runs_with_per_device_users() {
    // provisioning/mosquitto rendered for a test broker: users, ACL, persistence.
    let r = run_load(&[
        "--own-broker",
        "provisioned",
        "--devices",
        "10",
        "--readings",
        "1000",
        "--rate",
        "2000",
        "--wait-s",
        "60",
    ]);
    assert_eq!(
        (r["stored"].as_u64(), r["lost"].as_u64()),
        (Some(1000), Some(0)),
        "{r:#}"
    );
    let p99 = r["latency"]["p99_ms"].as_i64().unwrap();
    assert!((0..5000).contains(&p99), "{r:#}");
}
