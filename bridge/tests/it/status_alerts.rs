//! The status page's "Alerts firing" section against a real Alertmanager:
//! what fires is listed, the most severe first, escaped; and an Alertmanager
//! that never answers costs the page one line, not the page, the readiness
//! or a reading.

use std::time::{Duration, Instant};

use chrono::Utc;
use co2_testkit::{http_get, unique, wait_for_rows, wait_until, Alertmanager, Database, Publisher};
use serde_json::Value;

use crate::support::*;

async fn status_json(bridge: &InProcess) -> Value {
    let (code, body) = http_get(bridge.http, "/status.json").await.unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_lists_what_fires_in_alertmanager_most_severe_first() {
    let am = Alertmanager::start().await.unwrap();
    am.fire(
        &[
            ("alertname", "CO2DeviceSilent"),
            ("severity", "warning"),
            ("device", "pi-kitchen"),
        ],
        &[(
            "summary",
            "pi-kitchen sent nothing for 12 minutes; last reading <b>641</b> ppm",
        )],
    )
    .await
    .unwrap();
    am.fire(
        &[
            ("alertname", "CO2BridgeDatabaseDown"),
            ("severity", "critical"),
        ],
        &[("description", "the database does not answer")],
    )
    .await
    .unwrap();

    let db = Database::create("status_alerts").await.unwrap();
    let mut env = bridge_env(&db.url(), 1883, &unique("stalerts"), 0);
    env.push(("CO2_BRIDGE__STATUS__ALERTMANAGER_URL".into(), am.url()));
    let bridge = InProcess::start(env).await;

    let listed = wait_until(Duration::from_secs(10), || async {
        status_json(&bridge).await["alerts_firing"] == 2
    })
    .await;
    let status = status_json(&bridge).await;
    assert!(listed, "{:#}", status["alerts"]);
    assert_eq!(status["alerts"]["available"], true);
    assert_eq!(status["alerts"]["error"], Value::Null);
    let items = status["alerts"]["items"].as_array().unwrap();
    assert_eq!(items[0]["name"], "CO2BridgeDatabaseDown");
    assert_eq!(items[0]["summary"], "the database does not answer");
    assert_eq!(items[1]["name"], "CO2DeviceSilent");
    assert_eq!(items[1]["device"], "pi-kitchen");

    let (_, page) = http_get(bridge.http, "/").await.unwrap();
    let section = page
        .split("<h2>Alerts firing</h2>")
        .nth(1)
        .expect("the page has an alerts section");
    let section = section.split("<h2>").next().unwrap();
    assert!(section.contains("id=\"alerts\""), "{section}");
    assert!(section.contains("pi-kitchen"), "{section}");
    assert!(
        section.contains("last reading &lt;b&gt;641&lt;/b&gt; ppm"),
        "{section}"
    );
    // The alerts come before everything else a person reads.
    assert!(page.find("Alerts firing") < page.find("Connections and sinks"));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_that_never_answers_costs_the_page_one_line_not_the_page() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });

    let db = Database::create("status_alerts_silent").await.unwrap();
    let prefix = unique("stsilent");
    let mut env = bridge_env(&db.url(), 1883, &prefix, 0);
    env.push((
        "CO2_BRIDGE__STATUS__ALERTMANAGER_URL".into(),
        format!("http://{silent_addr}"),
    ));
    let bridge = InProcess::start(env).await;

    // Several pages at once, each waiting on the silent Alertmanager.
    let started = Instant::now();
    let pages: Vec<_> = (0..4)
        .map(|_| {
            let addr = bridge.http;
            tokio::spawn(async move { http_get(addr, "/").await.unwrap() })
        })
        .collect();
    // Meanwhile readings land and the bridge stays ready.
    let publisher = Publisher::connect(1883, &unique("pub"));
    for i in 0..5 {
        let at = Utc::now() - chrono::Duration::seconds(10 - i);
        publisher
            .publish(
                &format!("{prefix}/pi-1/emissions"),
                payload(at, 400.0 + i as f64),
            )
            .await
            .unwrap();
    }
    assert_eq!(wait_for_rows(&db, 5, Duration::from_secs(10)).await, 5);
    let (ready, _) = http_get(bridge.http, "/readyz").await.unwrap();
    assert_eq!(ready, 200);
    for page in pages {
        let (code, body) = page.await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("id=\"alerts-error\""), "{body}");
        assert!(
            body.contains("Connections and sinks"),
            "the rest of the page is there"
        );
    }
    // A bound against a hang, not a speed target: the page waits 2 s for Alertmanager.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let status = status_json(&bridge).await;
    let error = status["alerts"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no answer within") || error.contains("did not answer"),
        "{error}"
    );
    bridge.stop().await;
    held.abort();
}
