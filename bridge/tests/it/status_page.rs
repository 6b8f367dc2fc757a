//! The status page at `/` as a person sees it, in headless Chromium: a live
//! device, one gone stale, one numbering its readings with one missing,
//! dead letters (one trying to inject markup), and counts that equal
//! `/metrics` and the table. Runs in about 20 s.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use co2_testkit::{chromium, http_get, metric_value, unique, wait_until, Database, Publisher};
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_devices_staleness_dead_letters_and_counts_in_chromium() {
    let db = Database::create("status").await.unwrap();
    let prefix = unique("status");
    let mut env = bridge_env(&db.url(), 1883, &prefix, 0);
    env.push(("CO2_BRIDGE__STATUS__STALE_AFTER_S".into(), "4".into()));
    // Longer than a Chromium run: the page must not reload under the test.
    env.push(("CO2_BRIDGE__STATUS__REFRESH_S".into(), "60".into()));
    // A missing number counts as lost two seconds after the scan saw it.
    env.push((
        "CO2_BRIDGE__COMPLETENESS__SCAN_INTERVAL_S".into(),
        "1".into(),
    ));
    env.push(("CO2_BRIDGE__COMPLETENESS__LATE_AFTER_S".into(), "2".into()));
    let bridge = InProcess::start(env).await;
    let publisher = Arc::new(Publisher::connect(1883, &unique("pub")));
    let topic = |device: &str| format!("{prefix}/{device}/emissions");

    // The device that goes quiet.
    publisher
        .publish(&topic("pi-stale"), payload(Utc::now(), 612.5))
        .await
        .unwrap();
    // The last hour of the live one, one reading every ten minutes.
    for (i, minutes_ago) in [50, 40, 30, 20, 10].into_iter().enumerate() {
        let at = Utc::now() - chrono::Duration::minutes(minutes_ago);
        publisher
            .publish(&topic("pi-live"), payload(at, 420.0 + 15.0 * i as f64))
            .await
            .unwrap();
    }
    publisher
        .publish(&topic("pi-live"), "not a reading")
        .await
        .unwrap();
    publisher
        .publish(
            &topic("pi-live"),
            b"<script>alert(1)</script>|\xff".to_vec(),
        )
        .await
        .unwrap();
    // A device that numbers its readings (as co2-publisher does); number 3 never comes.
    let numbered = V5::connect(1883, "00000000000000a7");
    for n in [1u64, 2, 4, 5] {
        let at = Utc::now() - chrono::Duration::seconds(10 - n as i64);
        numbered
            .publish(&topic("pi-num"), payload(at, 700.0 + n as f64), Some(n))
            .await;
    }
    // ...and the live one keeps reporting while the browser looks.
    let live = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (publisher, live, topic) = (publisher.clone(), live.clone(), topic("pi-live"));
        tokio::spawn(async move {
            let mut sent = 0u64;
            while live.load(Ordering::Relaxed) {
                publisher
                    .publish(&topic, payload(Utc::now(), 500.0))
                    .await
                    .unwrap();
                sent += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            sent
        })
    };

    let went_stale = wait_until(Duration::from_secs(30), || async {
        let json = status_json(bridge.http).await;
        let stale = |id: &str| device(&json, id).map(|d| d["stale"] == Value::Bool(true));
        let lost = json["completeness"]["items"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["device"] == "pi-num"))
            .map(|c| c["lost"].clone());
        stale("pi-stale") == Some(true)
            && stale("pi-live") == Some(false)
            && json["dead_letters"]["items"].as_array().map(Vec::len) == Some(2)
            && lost == Some(Value::from(1))
    })
    .await;
    assert!(
        went_stale,
        "pi-stale never went stale: {}",
        status_json(bridge.http).await
    );

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&out).unwrap();
    let url = format!("http://{}/", bridge.http);
    let dom = chromium(&out, &["--dump-dom", &url]).await.unwrap();
    let row = |id: &str| {
        dom.split("<tr")
            .find(|r| r.contains(&format!("id=\"device-{id}\"")))
            .unwrap_or_else(|| panic!("no row for {id}:\n{dom}"))
            .to_owned()
    };
    let stale = row("pi-stale");
    assert!(
        stale.contains("class=\"stale\"") && stale.contains("STALE") && stale.contains("612.50"),
        "{stale}"
    );
    let fresh = row("pi-live");
    assert!(
        fresh.contains("class=\"fresh\"") && !fresh.contains("STALE"),
        "{fresh}"
    );
    assert!(
        fresh.contains("<svg") && fresh.contains("<polyline"),
        "pi-live's last hour has a sparkline: {fresh}"
    );
    let letters = dom
        .split("id=\"dead-letters\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no dead letters table:\n{dom}"));
    assert!(
        letters.contains("missing_separator") && letters.contains("not a reading"),
        "{letters}"
    );
    assert!(
        letters.contains("&lt;script&gt;alert(1)&lt;/script&gt;|\\xff"),
        "the hostile payload is shown escaped: {letters}"
    );
    assert!(
        !dom.contains("<script>"),
        "no markup from a payload reached the page"
    );
    assert!(dom.contains("<span class=\"ok\">ready</span>"), "{dom}");
    let complete = dom
        .split("<tr")
        .find(|r| r.contains("data-device=\"pi-num\""))
        .unwrap_or_else(|| panic!("no completeness row for pi-num:\n{dom}"));
    // Expected 5, stored 4, none dropped at the source, 1 lost, 0 pending, 0 unnumbered.
    assert!(
        complete.contains(
            "<td class=\"n\">5</td><td class=\"n\">4</td><td class=\"n\">0</td><td class=\"n\">1</td>"
        ) && complete.contains("80.0 %"),
        "{complete}"
    );
    assert!(
        row("pi-num").contains("lost: 1"),
        "the device row shows co2_device_readings_missing_total"
    );
    assert!(dom.contains("[database]"), "the effective config is shown");

    let shot = out.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &out,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1400",
            &url,
        ],
    )
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    eprintln!("screenshot: {}", shot.display());

    // Quiet now: the page's figures equal /metrics and the table.
    live.store(false, Ordering::Relaxed);
    let fed = feeder.await.unwrap();
    let published = 1 + 5 + 2 + fed; // by the v3.1.1 publisher, besides pi-num's 4
    assert!(
        publisher
            .wait_acked(published, Duration::from_secs(20))
            .await
    );
    let rows = (published - 2 + 4) as i64;
    assert_eq!(
        wait_for_rows(&db, rows, Duration::from_secs(20)).await,
        rows
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            status_json(bridge.http).await["pending"]["messages"] == 0
        })
        .await
    );
    let json = status_json(bridge.http).await;
    let scrape = bridge.scrape().await;
    let co2 = json["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "co2"))
        .unwrap_or_else(|| panic!("no co2 route: {json}"));
    let metric = |series: &str| metric_value(&scrape, series).unwrap_or(-1.0);
    assert_eq!(
        co2["received"].as_f64(),
        Some(metric(r#"co2_bridge_messages_received_total{route="co2"}"#))
    );
    assert_eq!(
        co2["stored"].as_f64(),
        Some(metric(
            r#"co2_bridge_rows_written_total{route="co2",sink="mysql"}"#
        ))
    );
    assert_eq!(co2["stored"].as_i64(), Some(rows));
    assert_eq!(co2["received"].as_u64(), Some(published + 4));
    assert_eq!(
        co2["rejected"]["missing_separator"].as_f64(),
        Some(metric(
            r#"co2_bridge_messages_rejected_total{reason="missing_separator",route="co2"}"#
        ))
    );
    for id in ["pi-live", "pi-stale"] {
        let d = device(&json, id).unwrap();
        assert_eq!(
            d["latest"].as_f64(),
            Some(metric(&format!("co2_emissions_latest{{device=\"{id}\"}}"))),
            "{id}"
        );
    }
    let completeness = json["completeness"]["items"].as_array().unwrap().clone();
    let live_row = completeness
        .iter()
        .find(|c| c["device"] == "pi-live")
        .unwrap_or_else(|| panic!("{json}"));
    // The v3.1.1 test publisher sends no numbers: stored unnumbered, never a gap.
    assert_eq!(live_row["unnumbered"].as_i64(), Some(rows - 1 - 4));
    assert_eq!(live_row["lost"].as_i64(), Some(0));
    assert_eq!(
        device(&json, "pi-num").unwrap()["missing"]["lost"].as_f64(),
        Some(metric(
            r#"co2_device_readings_missing_total{cause="lost",device="pi-num"}"#
        ))
    );

    Arc::try_unwrap(publisher)
        .ok()
        .expect("the feeder is done")
        .disconnect()
        .await;
    bridge.stop().await;
}

async fn status_json(http: std::net::SocketAddr) -> Value {
    let (status, body) = http_get(http, "/status.json").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn device<'a>(json: &'a Value, id: &str) -> Option<&'a Value> {
    json["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == id)
}
