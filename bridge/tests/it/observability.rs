//! What /metrics says matches what the table holds, and passes promtool's lint.

use std::time::Duration;

use co2_testkit::{metric_value, unique, Database, Publisher};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_table_and_pass_promtool() {
    let db = Database::create("metrics").await.unwrap();
    let prefix = unique("metrics");
    let bridge = InProcess::start(bridge_env(&db.url(), 1883, &prefix, 0)).await;
    let publisher = Publisher::connect(1883, &unique("pub"));
    publish_range(&publisher, &prefix, 3, 0..300).await;
    publisher
        .publish(&format!("{prefix}/dev0/emissions"), "nonsense")
        .await
        .unwrap();
    assert!(publisher.wait_acked(901, Duration::from_secs(30)).await);
    assert_eq!(wait_for_rows(&db, 900, Duration::from_secs(30)).await, 900);
    co2_testkit::wait_until(Duration::from_secs(10), || async {
        db.count("rejected_messages").await.unwrap_or(0) == 1
    })
    .await;

    // The pipeline counts a batch just after its commit, which the table
    // shows first: on a busy machine the scrape can come in between.
    let rows = db.count("co2_emissions").await.unwrap() as f64;
    co2_testkit::wait_until(Duration::from_secs(10), || async {
        let scrape = bridge.scrape().await;
        metric_value(
            &scrape,
            "co2_bridge_rows_written_total{route=\"co2\",sink=\"mysql\"}",
        ) == Some(rows)
    })
    .await;
    let scrape = bridge.scrape().await;
    let rejected = db.count("rejected_messages").await.unwrap() as f64;
    assert_eq!(
        metric_value(
            &scrape,
            "co2_bridge_rows_written_total{route=\"co2\",sink=\"mysql\"}"
        ),
        Some(rows)
    );
    assert_eq!(
        metric_value(&scrape, "co2_bridge_messages_received_total{route=\"co2\"}"),
        Some(rows + rejected)
    );
    assert_eq!(
        metric_value(
            &scrape,
            "co2_bridge_messages_rejected_total{reason=\"missing_separator\",route=\"co2\"}"
        ),
        Some(rejected)
    );
    let batches = metric_value(&scrape, "co2_bridge_batch_rows_sum");
    assert_eq!(batches, Some(rows + rejected));
    for d in 0..3 {
        let (device, time, value) = reading(d, 299);
        let latest = metric_value(
            &scrape,
            &format!("co2_emissions_latest{{device=\"{device}\"}}"),
        );
        assert_eq!(latest, Some(value), "{device}");
        let seen = metric_value(
            &scrape,
            &format!("co2_device_last_seen_timestamp_seconds{{device=\"{device}\"}}"),
        );
        assert_eq!(seen, Some(time.timestamp_millis() as f64 / 1000.0));
    }

    // promtool's linter: HELP everywhere, counters end in _total, base units.
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by ops/services.sh");
    use tokio::io::AsyncWriteExt;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .await
        .unwrap();
    let out = promtool.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    publisher.disconnect().await;
    bridge.stop().await;
}
