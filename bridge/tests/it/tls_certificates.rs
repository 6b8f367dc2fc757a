//! TLS to the broker with a client certificate: readings arrive over it, and
//! the end dates of the broker's certificate and of the bridge's own are
//! exported for the expiry alert (CO2TlsCertificateExpiring). A broker whose
//! certificate has expired shows a date in the past while the bridge stays
//! unready, which is when the alert matters most.

use std::time::Duration;

use chrono::Utc;
use co2_testkit::{
    free_port, http_get, make_certs, metric_value, unique, wait_until, Broker, Database, Publisher,
    ServerCert,
};

use crate::support::{
    assert_exactly_once, bridge_env, http_port, publish_range, spawn_binary, wait_for_rows,
};

const DAY: f64 = 86_400.0;

/// The exported end date of `certificate` for `host`, in days from now.
fn days_left(scrape: &str, source: &str, certificate: &str, host: &str) -> Option<f64> {
    let series = format!(
        "co2_bridge_tls_certificate_expiry_timestamp_seconds{{certificate=\"{certificate}\",host=\"{host}\",source=\"{source}\"}}"
    );
    metric_value(scrape, &series).map(|end| (end - Utc::now().timestamp() as f64) / DAY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_over_mutual_tls_and_both_end_dates_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(
        d,
        &[
            ServerCert {
                name: "broker",
                days: 20,
                san: "IP:127.0.0.1",
            },
            ServerCert {
                name: "bridge",
                days: 45,
                san: "DNS:co2-bridge",
            },
            ServerCert {
                name: "expired",
                days: -1,
                san: "IP:127.0.0.1",
            },
        ],
    )
    .unwrap();
    let (tls, expired) = (free_port().unwrap(), free_port().unwrap());
    let p = d.display();
    // The TLS listener demands a certificate signed by the CA: without the
    // bridge's own, the handshake fails.
    let broker = Broker::start(&format!(
        "listener {tls} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/broker.crt\nkeyfile {p}/broker.key\n\
         require_certificate true\n\
         listener {expired} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/expired.crt\nkeyfile {p}/expired.key\n"
    ))
    .await
    .unwrap();
    for port in [tls, expired] {
        assert!(wait_until(Duration::from_secs(10), || co2_testkit::port_open(port)).await);
    }
    let db = Database::create("tlsexp").await.unwrap();
    let prefix = unique("tlsexp");
    let with_tls = |port: u16| {
        let mut env = bridge_env(&db.url(), port, &prefix, http_port());
        env.extend(
            [
                ("CO2_BRIDGE__MQTT__HOST", "127.0.0.1".to_owned()),
                ("CO2_BRIDGE__MQTT__TLS__CA_FILE", format!("{p}/ca.crt")),
                (
                    "CO2_BRIDGE__MQTT__TLS__CLIENT_CERT_FILE",
                    format!("{p}/bridge.crt"),
                ),
                (
                    "CO2_BRIDGE__MQTT__TLS__CLIENT_KEY_FILE",
                    format!("{p}/bridge.key"),
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env
    };

    let bridge = spawn_binary(&with_tls(tls), "tlsexp-bridge");
    bridge.wait_ready().await;
    // Devices publish on the plain listener; the bridge reads over TLS.
    let publisher = Publisher::connect(broker.port(), &unique("pub"));
    publish_range(&publisher, &prefix, 2, 0..50).await;
    assert_eq!(
        wait_for_rows(&db, 100, Duration::from_secs(30)).await,
        100,
        "{}",
        bridge.log_text()
    );
    assert_exactly_once(&db, 2, 50).await;
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let broker_left = days_left(&scrape, "mqtt", "broker", "127.0.0.1");
    let own_left = days_left(&scrape, "mqtt", "client", "");
    assert!(
        broker_left.is_some_and(|d| (19.0..=20.01).contains(&d)),
        "broker certificate: {broker_left:?} days\n{scrape}"
    );
    assert!(
        own_left.is_some_and(|d| (44.0..=45.01).contains(&d)),
        "client certificate: {own_left:?} days\n{scrape}"
    );
    drop(bridge);

    // An expired broker certificate: refused, reported, and the bridge says so.
    let mut bridge = spawn_binary(&with_tls(expired), "tlsexp-expired");
    let http = bridge.http;
    let reported = wait_until(Duration::from_secs(20), || async move {
        let scrape = http_get(http, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        days_left(&scrape, "mqtt", "broker", "127.0.0.1").is_some_and(|d| d < 0.0)
    })
    .await;
    assert!(reported, "{}", bridge.log_text());
    let (status, body) = http_get(http, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(bridge.process.is_running(), "{}", bridge.log_text());
}
