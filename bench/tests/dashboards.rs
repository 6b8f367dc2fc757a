//! `co2-bench dashboards` on a tiny dataset against the real MariaDB: every
//! panel of the shipped dashboards runs for every range, and the throwaway
//! database is gone afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

use co2_bench::dashboards::{panels, scratch};

const DB_URL: &str = "mysql://root@127.0.0.1:3306";

#[tokio::test]
async fn every_panel_runs_for_every_range_and_the_database_is_dropped() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let expected = panels::load(&std::path::Path::new(repo).join("grafana/dashboards")).unwrap();
    let bin = co2_testkit::bridge_bin();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_co2-bench"));
    cmd.args(["dashboards", "--json", "--devices", "2", "--days", "1"])
        .args(["--repeat", "1", "--ranges", "1h,24h,7d", "--repo", repo])
        .args(["--db-url", DB_URL]);
    // With the bridge binary the schema comes from its own `migrate`.
    if bin.exists() {
        cmd.arg("--bridge-bin").arg(&bin);
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "co2-bench dashboards failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let reports: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let r = &reports[0];

    assert_eq!(r["readings"], 2 * 1440, "{r}");
    let panels = r["panels"].as_array().unwrap();
    assert_eq!(panels.len(), expected.len(), "one result per MySQL query");
    for (p, q) in panels.iter().zip(&expected) {
        assert_eq!(p["panel"], q.label());
        let ranges = p["ranges"].as_array().unwrap();
        assert_eq!(ranges.len(), 3, "{p}");
        for x in ranges {
            let t = &x["timing"];
            assert!(
                t["error"].is_null(),
                "{} [{}]: {}",
                p["panel"],
                x["range"],
                t["error"]
            );
            assert_eq!(t["timed_out"], false, "{}", p["panel"]);
            assert!(t["best_ms"].as_f64().unwrap() >= 0.0, "{}", p["panel"]);
            assert!(!x["sql"].as_str().unwrap().contains("$__"), "{}", x["sql"]);
        }
    }
    // The panels read non-empty data: the CO2 series over 24 h has points.
    let series = panels
        .iter()
        .zip(&expected)
        .find(|(_, q)| q.raw_sql.contains("AVG(emissions)"))
        .map(|(p, _)| p)
        .unwrap();
    assert!(
        series["ranges"][1]["timing"]["rows"].as_u64().unwrap() > 100,
        "{series}"
    );

    let tables = r["tables"].as_array().unwrap();
    let rows = |name: &str| {
        tables
            .iter()
            .find(|t| t["table"] == name)
            .and_then(|t| t["rows"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(rows("co2_emissions"), 2 * 1440);
    assert!(rows("readings") > 0 && rows("bin_levels") > 0 && rows("rejected_messages") > 0);
    assert!(r["bytes_per_co2_reading"].as_f64().unwrap() > 20.0);

    assert_eq!(r["dropped"], true);
    let name = r["database"].as_str().unwrap();
    assert!(name.starts_with("co2bench_dash_"));
    assert!(
        !scratch::exists(DB_URL, name).await.unwrap(),
        "{name} still exists"
    );
}
