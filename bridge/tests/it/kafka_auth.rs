//! The Kafka source's TLS and SASL settings against a real broker: tansu on
//! PostgreSQL storage (its only engine with SCRAM users) with a SCRAM user,
//! behind stunnel for TLS. tansu 0.6.0 does not serve TLS itself, so what the
//! TLS tests check is the bridge's client side (the CA check, a client
//! certificate) against a real TLS server with a real Kafka broker behind
//! it. SASL PLAIN is not tested: tansu 0.6.0 does not have it.
//!
//! Each test runs the real binary and checks rows in MySQL: a bridge set up
//! right stores the readings and commits their offsets, one set up wrong
//! (another CA, no client certificate, a wrong password) stores nothing,
//! is not ready, and says why in its log and on the status page. The
//! PostgreSQL engine answers group joins at once, so each takes seconds.

use std::path::Path;
use std::time::Duration;

use co2_testkit::{
    http_get, metric_value, unique, wait_until, Database, KafkaBroker, KafkaSecurity,
};

use crate::kafka::{assert_committed, kafka_env, spawn_kafka_stream, write_config_with};
use crate::support::*;

const READINGS: usize = 20;

/// A broker demanding `security`, with a fresh one-partition topic holding
/// [`READINGS`] readings of one device, produced before any bridge starts
/// (the bridges start from `earliest`).
async fn broker_with_readings(security: KafkaSecurity, name: &str) -> (KafkaBroker, String) {
    let kafka = KafkaBroker::start_secured(security).await.unwrap();
    let topic = unique(name);
    kafka.create_topic(&topic, 1).await.unwrap();
    spawn_kafka_stream(&kafka, &topic, 1, 1, READINGS, Duration::ZERO)
        .await
        .unwrap();
    (kafka, topic)
}

/// `[[sources]]` lines for `[sources.tls]` trusting `ca`, with a client
/// certificate when given.
fn tls_toml(ca: &Path, client: Option<&(std::path::PathBuf, std::path::PathBuf)>) -> String {
    let mut toml = format!("[sources.tls]\nca_file = \"{}\"\n", ca.display());
    if let Some((cert, key)) = client {
        toml.push_str(&format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    toml
}

/// `[[sources]]` lines for SASL over `protocol` with `mechanism`, the
/// broker's user and `password` read from a file.
fn sasl_toml(kafka: &KafkaBroker, protocol: &str, mechanism: &str, password: &str) -> String {
    let file = kafka.dir().join(unique("kafka-password"));
    // A trailing newline, as `echo` writes it: the bridge must not send it.
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!(
        "security_protocol = \"{protocol}\"\nsasl_mechanism = \"{mechanism}\"\n\
         username = \"{}\"\npassword_file = \"{}\"\n",
        KafkaBroker::SCRAM_USER,
        file.display()
    )
}

/// A bridge reading `topic` with `source` settings into its own database
/// and group.
fn spawn_bridge(
    kafka: &KafkaBroker,
    topic: &str,
    db: &Database,
    name: &str,
    source: &str,
) -> (BridgeProcess, String) {
    let group = unique(&format!("{name}-group"));
    let config = write_config_with(kafka, topic, &group, source);
    let bridge = spawn_binary(&kafka_env(&db.url(), &config, name), name);
    (bridge, group)
}

/// The bridge stores all [`READINGS`] exactly once and commits their offsets.
async fn assert_stores_all(
    kafka: &KafkaBroker,
    bridge: &BridgeProcess,
    db: &Database,
    group: &str,
    topic: &str,
) {
    bridge.wait_ready().await;
    let n = READINGS as i64;
    assert_eq!(
        wait_for_rows(db, n, Duration::from_secs(30)).await,
        n,
        "{}",
        bridge.log_text()
    );
    assert_exactly_once(db, 1, READINGS).await;
    // The end of the partition, known from producing: tansu's PostgreSQL
    // engine cannot answer a query for it (its ListOffsets "latest" SQL
    // needs PostgreSQL 16; Debian 12 has 15).
    assert_committed(kafka, group, topic, &[READINGS as i64]).await;
}

/// The bridge cannot get in: its log names `why` (librdkafka's words), the
/// status page shows the source down with it as the last error, `/readyz`
/// fails on the source, and nothing reached its database although the
/// topic holds readings it would read.
async fn assert_refused(bridge: &BridgeProcess, db: &Database, why: &str) {
    let said = wait_until(Duration::from_secs(20), || async {
        bridge.log_text().contains(why)
    })
    .await;
    assert!(said, "log does not name {why:?}:\n{}", bridge.log_text());
    let status = http_get(bridge.http, "/status.json").await.unwrap().1;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["sources"][0]["up"], false, "{status:#}");
    let last_error = status["sources"][0]["last_error"][1].as_str().unwrap_or("");
    assert!(last_error.contains(why), "{status:#}");
    let readyz = http_get(bridge.http, "/readyz").await.unwrap();
    assert_eq!(readyz.0, 503, "{readyz:?}");
    assert!(
        readyz
            .1
            .contains("Kafka source sources.0: no broker reachable"),
        "{readyz:?}"
    );
    assert_eq!(db.count("co2_emissions").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_stores_readings_and_a_bridge_trusting_another_ca_stores_nothing() {
    let security = KafkaSecurity {
        tls: true,
        ..KafkaSecurity::default()
    };
    let (kafka, topic) = broker_with_readings(security, "ktls").await;
    let ssl = "security_protocol = \"ssl\"\n";

    let db = Database::create("ktls").await.unwrap();
    let good = format!("{ssl}{}", tls_toml(&kafka.ca_file(), None));
    let (bridge, group) = spawn_bridge(&kafka, &topic, &db, "ktls", &good);

    let other_db = Database::create("ktlsca").await.unwrap();
    let wrong_ca = format!("{ssl}{}", tls_toml(&kafka.other_ca_file(), None));
    let (refused, _) = spawn_bridge(&kafka, &topic, &other_db, "ktlsca", &wrong_ca);

    assert_stores_all(&kafka, &bridge, &db, &group, &topic).await;
    assert_refused(&refused, &other_db, "certificate verify failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mutual_tls_stores_readings_with_the_client_certificate_and_nothing_without() {
    let security = KafkaSecurity {
        tls: true,
        mutual_tls: true,
        ..KafkaSecurity::default()
    };
    let (kafka, topic) = broker_with_readings(security, "kmtls").await;
    let ssl = "security_protocol = \"ssl\"\n";

    let db = Database::create("kmtls").await.unwrap();
    let with_cert = format!(
        "{ssl}{}",
        tls_toml(&kafka.ca_file(), Some(&kafka.client_cert()))
    );
    let (bridge, group) = spawn_bridge(&kafka, &topic, &db, "kmtls", &with_cert);

    // Proves stunnel really demands the certificate, so that the bridge
    // above got in by presenting its own.
    let bare_db = Database::create("kmtlsbare").await.unwrap();
    let without = format!("{ssl}{}", tls_toml(&kafka.ca_file(), None));
    let (refused, _) = spawn_bridge(&kafka, &topic, &bare_db, "kmtlsbare", &without);

    assert_stores_all(&kafka, &bridge, &db, &group, &topic).await;
    assert_refused(&refused, &bare_db, "certificate required").await;
    // Its own certificate's end date is exported for the expiry alert.
    let scrape = http_get(bridge.http, "/metrics").await.unwrap().1;
    let series = "co2_bridge_tls_certificate_expiry_timestamp_seconds\
                  {certificate=\"client\",host=\"\",source=\"kafka\"}";
    let end = metric_value(&scrape, series).unwrap_or(0.0);
    assert!(
        end > chrono::Utc::now().timestamp() as f64,
        "{series} = {end}\n{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_scram_sha_256_and_512_store_readings_and_a_wrong_password_stores_nothing() {
    let security = KafkaSecurity {
        scram: true,
        ..KafkaSecurity::default()
    };
    let (kafka, topic) = broker_with_readings(security, "kscram").await;
    let password = KafkaBroker::SCRAM_PASSWORD;

    let db256 = Database::create("kscram256").await.unwrap();
    let sha256 = sasl_toml(&kafka, "sasl_plaintext", "SCRAM-SHA-256", password);
    let (bridge256, group256) = spawn_bridge(&kafka, &topic, &db256, "kscram256", &sha256);

    let db512 = Database::create("kscram512").await.unwrap();
    let sha512 = sasl_toml(&kafka, "sasl_plaintext", "SCRAM-SHA-512", password);
    let (bridge512, group512) = spawn_bridge(&kafka, &topic, &db512, "kscram512", &sha512);

    let wrong_db = Database::create("kscrampw").await.unwrap();
    let wrong = sasl_toml(
        &kafka,
        "sasl_plaintext",
        "SCRAM-SHA-256",
        "not-the-password",
    );
    let (refused, _) = spawn_bridge(&kafka, &topic, &wrong_db, "kscrampw", &wrong);

    assert_stores_all(&kafka, &bridge256, &db256, &group256, &topic).await;
    assert_stores_all(&kafka, &bridge512, &db512, &group512, &topic).await;
    assert_refused(&refused, &wrong_db, "SASL SCRAM authentication failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_ssl_scram_through_tls_stores_readings() {
    let security = KafkaSecurity {
        tls: true,
        scram: true,
        ..KafkaSecurity::default()
    };
    let (kafka, topic) = broker_with_readings(security, "ksaslssl").await;
    let db = Database::create("ksaslssl").await.unwrap();
    let source = format!(
        "{}{}",
        sasl_toml(
            &kafka,
            "sasl_ssl",
            "SCRAM-SHA-512",
            KafkaBroker::SCRAM_PASSWORD
        ),
        tls_toml(&kafka.ca_file(), None)
    );
    let (bridge, group) = spawn_bridge(&kafka, &topic, &db, "ksaslssl", &source);
    assert_stores_all(&kafka, &bridge, &db, &group, &topic).await;
}
