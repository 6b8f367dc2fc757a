//! TLS (mqtt.tls.ca_file) and username + password_file against a test-owned
//! Mosquitto with a TLS listener and a password file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use co2_publisher::app;
use co2_publisher::config::Settings;
use co2_publisher::uplink::Stats;
use co2_testkit::{free_port, make_certs, password_file, wait_until, Broker, ServerCert};
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate for 127.0.0.1, plus a password file.
fn credentials(dir: &Path) {
    make_certs(
        dir,
        &[ServerCert {
            name: "server",
            days: 2,
            san: "IP:127.0.0.1",
        }],
    )
    .unwrap();
    password_file(dir, &[("pi-tls", "right-password")]).unwrap();
    // mosquitto (running as root here, see co2-testkit) must read the files.
    std::fs::write(dir.join("good-password"), "right-password\n").unwrap();
    std::fs::write(dir.join("bad-password"), "wrong-password\n").unwrap();
}

fn settings(dir: &Path, port: u16, password_file: &str) -> Settings {
    Settings::from_toml(&format!(
        "device = \"pi-tls\"\ninterval_ms = 10\nmax_readings = 20\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"pi-tls\"\n\
         password_file = {pw:?}\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\
         [mqtt.tls]\nca_file = {ca:?}\n\
         [queue]\npath = {queue:?}\n[clock]\nrequire_sync = false\n\
         [status]\npath = {status:?}\n",
        pw = dir.join(password_file).display().to_string(),
        ca = dir.join("ca.crt").display().to_string(),
        queue = dir
            .join(format!("{password_file}.sqlite3"))
            .display()
            .to_string(),
        status = dir
            .join(format!("{password_file}.status.json"))
            .display()
            .to_string(),
    ))
    .unwrap()
}

#[tokio::test]
async fn tls_with_password_file_delivers_and_a_wrong_password_keeps_readings_queued() {
    let dir = tempfile::tempdir().unwrap();
    credentials(dir.path());
    let tls_port = free_port().unwrap();
    let d = dir.path().display();
    let _broker = Broker::start(&format!(
        "password_file {d}/passwd\n\
         listener {tls_port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
    ))
    .await
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || co2_testkit::port_open(tls_port)).await,
        "TLS listener not up"
    );

    // Right password: all 20 readings delivered, then a clean exit.
    let good = tokio::time::timeout(
        Duration::from_secs(30),
        app::run(
            settings(dir.path(), tls_port, "good-password"),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("publisher did not finish")
    .unwrap();
    assert_eq!((good.queued, good.acked, good.left_in_queue), (20, 20, 0));

    // Wrong password: the broker refuses; every reading stays queued.
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app::run_with_stats(
        settings(dir.path(), tls_port, "bad-password"),
        stop.clone(),
        Arc::clone(&stats),
    ));
    let queued = wait_until(Duration::from_secs(20), || {
        let stats = Arc::clone(&stats);
        async move { Stats::get(&stats.queued) == 20 }
    })
    .await;
    assert!(queued);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let bad = task.await.unwrap().unwrap();
    assert_eq!((bad.acked, bad.left_in_queue), (0, 20));
    assert_eq!(Stats::get(&stats.connects), 0);
}
