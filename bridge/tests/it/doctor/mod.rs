//! `co2-bridge doctor` against real servers, each hop broken for real: a
//! closed broker port, a firewall that drops packets (iptables in a network
//! namespace), a certificate from another CA, one for another host name and
//! an expired one, a wrong broker password, an ACL that denies reading the
//! readings (which Mosquitto still grants the subscription for: only traffic
//! shows it, so the hop is unproven), a closed database port, a wrong
//! database password, a missing grant, migrations not applied, a config
//! that does not parse. Each run checks the failing hop is named with its
//! fix, the hops that need it are skipped, the others still run, and the
//! exit status. About 40 s in all. A fresh install and several failures in
//! one run: `every_hop`; the devices' clocks: `clocks`.

mod clocks;
mod every_hop;

use std::process::Command;

use co2_testkit::doctor::{failure, ok, skipped, summary, unproven, with};
use co2_testkit::{
    free_port, make_certs, password_file, unique, wait_until, Broker, Database, ServerCert,
};
use tokio::task::JoinHandle;

/// A device publishing on `topic` every 200 ms (with mosquitto_pub, as a
/// person would) until aborted: the ACL hop passes only when messages arrive.
fn feed(port: u16, topic: String, login: Option<(&str, &str)>) -> JoinHandle<()> {
    let login: Vec<String> = login
        .map(|(u, p)| vec!["-u".to_owned(), u.to_owned(), "-P".to_owned(), p.to_owned()])
        .unwrap_or_default();
    tokio::spawn(async move {
        loop {
            let at = chrono::Utc::now().format("%F %T%.3f");
            let _ = tokio::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-q",
                    "1",
                    "-t",
                    &topic,
                ])
                .args(&login)
                .args(["-m", &format!("{at}|420.5")])
                .status()
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// Runs the real binary's doctor with `env`; returns (exit code, stdout).
async fn doctor(env: &[(String, String)]) -> (i32, String) {
    doctor_in(None, env).await
}

async fn doctor_in(netns: Option<&str>, env: &[(String, String)]) -> (i32, String) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_co2-bridge"));
    co2_testkit::doctor::run(bin, netns, env).await.unwrap()
}

fn env(mqtt_port: u16, db_url: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("CO2_BRIDGE__MQTT__PORT", mqtt_port.to_string()),
        ("CO2_BRIDGE__MQTT__CLIENT_ID", format!("{prefix}-bridge")),
        ("CO2_BRIDGE__MQTT__TOPICS", format!("{prefix}/+/emissions")),
        ("CO2_BRIDGE__DATABASE__URL", db_url.to_owned()),
        ("CO2_BRIDGE__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn migrated(db: &Database) {
    let status = Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
        .arg("migrate")
        .env("CO2_BRIDGE__DATABASE__URL", db.url())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_passes_on_a_working_setup_and_closed_ports_are_named() {
    let db = Database::create("doctor").await.unwrap();
    let prefix = unique("doctor");
    let base = env(1883, &db.url(), &prefix);
    let feeder = feed(1883, format!("{prefix}/pi/emissions"), None);

    let (code, out) = doctor(&base).await;
    let f = failure(&out, "mysql migrations");
    // Every migration the bridge ships is pending on an empty database.
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    assert!(
        f.contains(&format!("{shipped} migration(s) not applied"))
            && f.contains("co2-bridge migrate"),
        "{f}"
    );
    // The hops beside it still run; the device clocks need the tables.
    ok(&out, "mysql grants");
    ok(&out, "mysql clock");
    skipped(&out, "mysql device clocks", "mysql migrations");
    assert_eq!(code, 1);

    migrated(&db).await;
    let (code, out) = doctor(&base).await;
    assert_eq!(code, 0, "{out}");
    for hop in [
        "config",
        "broker dns",
        "broker tcp",
        "broker auth",
        "broker acl",
        "mysql tcp",
        "mysql auth",
        "mysql grants",
        "mysql migrations",
        "mysql clock",
    ] {
        ok(&out, hop);
    }
    // The feeder's readings reach no table (no bridge runs): nothing to judge.
    assert!(
        unproven(&out, "mysql device clocks").contains("no readings received in the last 15 min"),
        "{out}"
    );
    assert_eq!(
        summary(&out),
        "10 ok, 1 unproven (mysql device clocks), 0 failed",
        "{out}"
    );

    let closed = free_port().unwrap();
    let (code, out) = doctor(&with(
        base.clone(),
        "CO2_BRIDGE__MQTT__PORT",
        &closed.to_string(),
    ))
    .await;
    let f = failure(&out, "broker tcp");
    assert!(
        f.contains("refused the connection") && f.contains("start the broker"),
        "{f}"
    );
    skipped(&out, "broker auth", "broker tcp");
    skipped(&out, "broker acl", "broker tcp");
    ok(&out, "mysql migrations");
    assert_eq!(code, 1);

    let url = db.url().replace(":3306/", &format!(":{closed}/"));
    let (code, out) = doctor(&with(base.clone(), "CO2_BRIDGE__DATABASE__URL", &url)).await;
    ok(&out, "broker acl");
    let f = failure(&out, "mysql tcp");
    assert!(
        f.contains("refused the connection") && f.contains("start the database"),
        "{f}"
    );
    for hop in ["auth", "grants", "migrations", "clock", "device clocks"] {
        skipped(&out, &format!("mysql {hop}"), "mysql tcp");
    }
    assert_eq!(
        summary(&out),
        "5 ok, 0 unproven, 1 failed (mysql tcp), 5 skipped"
    );
    assert_eq!(code, 1);

    let (code, out) = doctor(&with(base, "CO2_BRIDGE__BATCH__MAX_ROWS", "many")).await;
    let f = failure(&out, "config");
    assert!(f.contains("max_rows"), "{f}");
    assert_eq!(code, 1);
    feeder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_database_password_and_a_missing_grant_are_named() {
    let db = Database::create("doctordb").await.unwrap();
    migrated(&db).await;
    let prefix = unique("doctordb");
    let user = format!("doc{:08x}", rand::random::<u32>());
    let admin = db.pool();
    sqlx::query(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'right-pw'"
    ))
    .execute(admin)
    .await
    .unwrap();
    sqlx::query(&format!(
        "GRANT SELECT, INSERT ON `{}`.* TO '{user}'@'127.0.0.1'",
        db.name()
    ))
    .execute(admin)
    .await
    .unwrap();
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name());
    let base = with(
        env(1883, &url, &prefix),
        "CO2_BRIDGE__DATABASE__PASSWORD",
        "wrong-pw",
    );

    // No device publishes: the password is named, not the quiet ACL.
    let (code, out) = doctor(&base).await;
    let f = failure(&out, "mysql auth");
    assert!(
        f.contains(&format!("refused {user}")) && f.contains("password"),
        "{f}"
    );
    for hop in ["broker dns", "broker tcp", "broker auth"] {
        ok(&out, hop);
    }
    unproven(&out, "broker acl");
    for hop in ["grants", "migrations", "clock", "device clocks"] {
        skipped(&out, &format!("mysql {hop}"), "mysql auth");
    }
    assert_eq!(
        summary(&out),
        "5 ok, 1 unproven (broker acl), 1 failed (mysql auth), 4 skipped"
    );
    assert_eq!(code, 1);

    // A missing grant hides neither the migrations nor the clocks.
    let right = with(base, "CO2_BRIDGE__DATABASE__PASSWORD", "right-pw");
    let (code, out) = doctor(&right).await;
    let f = failure(&out, "mysql grants");
    assert!(
        f.contains("lacks UPDATE, DELETE") && f.contains("GRANT UPDATE, DELETE ON"),
        "{f}"
    );
    ok(&out, "mysql migrations");
    ok(&out, "mysql clock");
    unproven(&out, "mysql device clocks");
    assert_eq!(code, 1);

    sqlx::query(&format!(
        "GRANT UPDATE, DELETE ON `{}`.* TO '{user}'@'127.0.0.1'",
        db.name()
    ))
    .execute(admin)
    .await
    .unwrap();
    let (code, out) = doctor(&right).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        summary(&out),
        "9 ok, 2 unproven (broker acl, mysql device clocks), 0 failed"
    );
    sqlx::query(&format!("DROP USER '{user}'@'127.0.0.1'"))
        .execute(admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_acl_denial_and_bad_certificates_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("doctormq");
    password_file(
        d,
        &[
            ("bridge", "right-pw"),
            ("reader", "right-pw"),
            ("pi", "pi-pw"),
        ],
    )
    .unwrap();
    let ip = "IP:127.0.0.1";
    make_certs(
        d,
        &[
            ServerCert {
                name: "good",
                days: 2,
                san: ip,
            },
            ServerCert {
                name: "wrong",
                days: 2,
                san: "DNS:mqtt.example.invalid",
            },
            ServerCert {
                name: "expired",
                days: -1,
                san: ip,
            },
        ],
    )
    .unwrap();
    // `reader` may read only the announcements, not the readings.
    std::fs::write(
        d.join("acl"),
        format!(
            "user bridge\ntopic read {prefix}/+/emissions\ntopic read {prefix}/+/events\n\
             user reader\ntopic read {prefix}/+/events\n\
             user pi\ntopic write {prefix}/pi/emissions\n"
        ),
    )
    .unwrap();
    let (tls, wrong_name, expired) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let p = d.display();
    let broker = Broker::start(&format!(
        "allow_anonymous false\npassword_file {p}/passwd\nacl_file {p}/acl\n\
         listener {tls} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/good.crt\nkeyfile {p}/good.key\n\
         listener {wrong_name} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/wrong.crt\nkeyfile {p}/wrong.key\n\
         listener {expired} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/expired.crt\nkeyfile {p}/expired.key\n"
    ))
    .await
    .unwrap();
    for port in [tls, wrong_name, expired] {
        assert!(
            wait_until(std::time::Duration::from_secs(10), || {
                co2_testkit::port_open(port)
            })
            .await
        );
    }
    let db = Database::create("doctormq").await.unwrap();
    migrated(&db).await;
    let base = with(
        env(broker.port(), &db.url(), &prefix),
        "CO2_BRIDGE__MQTT__USERNAME",
        "bridge",
    );
    let feeder = feed(
        broker.port(),
        format!("{prefix}/pi/emissions"),
        Some(("pi", "pi-pw")),
    );

    let (code, out) = doctor(&with(
        base.clone(),
        "CO2_BRIDGE__MQTT__PASSWORD",
        "wrong-pw",
    ))
    .await;
    let f = failure(&out, "broker auth");
    assert!(
        f.contains("refused the login") && f.contains("mqtt.password_file"),
        "{f}"
    );
    skipped(&out, "broker acl", "broker auth");
    ok(&out, "mysql migrations");
    assert_eq!(code, 1);

    let right = with(base, "CO2_BRIDGE__MQTT__PASSWORD", "right-pw");
    // A quiet topic proves nothing either way: unproven, with what to do
    // if devices are publishing.
    let (code, out) = doctor(&with(right.clone(), "CO2_BRIDGE__MQTT__USERNAME", "reader")).await;
    let u = unproven(&out, "broker acl");
    assert!(
        u.contains(&format!("nothing arrived on {prefix}/+/emissions"))
            && u.contains("grant reader read")
            && u.contains("co2-bridge acl"),
        "{u}"
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = doctor(&right).await;
    assert!(
        ok(&out, "broker acl").contains(&format!("bridge receives: co2 ({prefix}/pi/emissions)")),
        "{out}"
    );
    assert_eq!(code, 0, "{out}");

    let tls_env = |port: u16, ca: &str| {
        let e = with(right.clone(), "CO2_BRIDGE__MQTT__PORT", &port.to_string());
        with(e, "CO2_BRIDGE__MQTT__TLS__CA_FILE", &format!("{p}/{ca}"))
    };
    let (code, out) = doctor(&tls_env(tls, "ca.crt")).await;
    ok(&out, "broker tls");
    assert_eq!(code, 0, "{out}");
    let (code, out) = doctor(&tls_env(tls, "other-ca.crt")).await;
    let f = failure(&out, "broker tls");
    assert!(f.contains("not signed by mqtt.tls.ca_file"), "{f}");
    assert_eq!(code, 1);
    let (code, out) = doctor(&tls_env(wrong_name, "ca.crt")).await;
    let f = failure(&out, "broker tls");
    assert!(f.contains("does not name mqtt.host"), "{f}");
    assert_eq!(code, 1);
    let (code, out) = doctor(&tls_env(expired, "ca.crt")).await;
    let f = failure(&out, "broker tls");
    assert!(
        f.contains("certificate has expired") && f.contains("fix: renew the broker's certificate"),
        "{f}"
    );
    skipped(&out, "broker auth", "broker tls");
    skipped(&out, "broker acl", "broker tls");
    assert_eq!(code, 1);
    feeder.abort();
}

/// A firewall that drops packets looks like a timeout, not a refusal: a
/// network namespace with its own loopback and an iptables DROP rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewall_that_drops_packets_is_named_as_a_timeout() {
    let ns = format!("co2doc{}", std::process::id());
    let setup = Command::new("sh")
        .args([
            "-ec",
            &format!(
                "ip netns add {ns}; ip netns exec {ns} ip link set lo up; \
                 ip netns exec {ns} iptables -A INPUT -p tcp --dport 1883 -j DROP"
            ),
        ])
        .output()
        .unwrap();
    if !setup.status.success() {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        panic!(
            "cannot make a network namespace with an iptables rule (needs root, iproute2, iptables; ops/services.sh installs them): {}",
            String::from_utf8_lossy(&setup.stderr)
        );
    }
    let prefix = unique("doctorfw");
    let (code, out) = doctor_in(
        Some(&ns),
        &env(1883, "mysql://root@127.0.0.1:3306/unused", &prefix),
    )
    .await;
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let f = failure(&out, "broker tcp");
    assert!(
        f.contains("did not answer within 5 s") && f.contains("firewall"),
        "{f}"
    );
    skipped(&out, "broker acl", "broker tcp");
    assert_eq!(code, 1);
}
