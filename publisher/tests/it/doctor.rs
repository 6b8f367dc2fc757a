//! `co2-publisher doctor` against a test-owned Mosquitto, each hop broken for
//! real: nothing listening on the port, a wrong password, an ACL that denies
//! the device its readings topic, a certificate from another CA and an
//! expired one, in MQTT v5 and 3.1.1 (where a denial proves nothing either
//! way: unproven). Each run checks the failing hop is named with its fix,
//! the hops that need it are skipped, the clock is still checked, and the
//! exit status. About 15 s in all.

use std::time::Duration;

use co2_testkit::doctor::{entry, failure, ok, skipped, summary, unproven, with};
use co2_testkit::{free_port, make_certs, password_file, unique, wait_until, Broker, ServerCert};

use crate::support::publisher_env;

/// The clock hop's entry: ok, or unproven where the system cannot say
/// whether it is synchronised (a machine without systemd).
fn clock(out: &str) -> &str {
    match entry(out, "ok", "clock").or_else(|| entry(out, "unproven", "clock")) {
        Some(e) => e,
        None => panic!("no clock hop, or it failed:\n{out}"),
    }
}

/// Runs the real binary's doctor with `env`; returns (exit code, stdout).
async fn doctor(env: &[(String, String)]) -> (i32, String) {
    co2_testkit::doctor::run(&crate::support::publisher_bin(), None, env)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_passes_and_each_broken_hop_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("pubdoctor");
    password_file(d, &[("pi", "pi-pw"), ("stranger", "stranger-pw")]).unwrap();
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
                name: "expired",
                days: -1,
                san: ip,
            },
        ],
    )
    .unwrap();
    // `stranger` may log in but publish nowhere; a device may read its own
    // readings back, which the MQTT 3.1.1 check needs.
    std::fs::write(
        d.join("acl"),
        format!("pattern write {prefix}/%u/emissions\npattern read {prefix}/%u/emissions\n"),
    )
    .unwrap();
    let (tls, expired) = (free_port().unwrap(), free_port().unwrap());
    let p = d.display();
    let broker = Broker::start(&format!(
        "allow_anonymous false\npassword_file {p}/passwd\nacl_file {p}/acl\n\
         listener {tls} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/good.crt\nkeyfile {p}/good.key\n\
         listener {expired} 127.0.0.1\ncafile {p}/ca.crt\ncertfile {p}/expired.crt\nkeyfile {p}/expired.key\n"
    ))
    .await
    .unwrap();
    for port in [tls, expired] {
        assert!(wait_until(Duration::from_secs(10), || { co2_testkit::port_open(port) }).await);
    }
    let base = publisher_env("pi", broker.port(), &prefix, &d.join("q.sqlite3"));
    let base = with(base, "CO2_PUBLISHER__MQTT__USERNAME", "pi");
    let right = with(base.clone(), "CO2_PUBLISHER__MQTT__PASSWORD", "pi-pw");

    let (code, out) = doctor(&right).await;
    assert_eq!(code, 0, "{out}");
    for hop in [
        "config",
        "broker dns",
        "broker tcp",
        "broker auth",
        "broker acl",
    ] {
        ok(&out, hop);
    }
    assert!(
        out.contains(&format!("pi may publish on {prefix}/pi/emissions")),
        "{out}"
    );
    assert!(
        clock(&out).contains("not compared with the broker's"),
        "{out}"
    );
    // Nothing subscribes on this broker: it would discard the readings.
    let u = unproven(&out, "broker subscribers");
    assert!(
        u.contains(&format!("no client subscribes to {prefix}/pi/emissions"))
            && u.contains("start the bridge once"),
        "{u}"
    );
    assert!(summary(&out).ends_with(", 0 failed"), "{out}");

    let closed = free_port().unwrap();
    let (code, out) = doctor(&with(
        right.clone(),
        "CO2_PUBLISHER__MQTT__PORT",
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
    // The clock needs nothing from the broker.
    clock(&out);
    assert_eq!(code, 1);

    let (code, out) = doctor(&with(base, "CO2_PUBLISHER__MQTT__PASSWORD", "wrong-pw")).await;
    let f = failure(&out, "broker auth");
    assert!(
        f.contains("refused the login") && f.contains("mqtt.password_file"),
        "{f}"
    );
    skipped(&out, "broker acl", "broker auth");
    assert_eq!(code, 1);

    let stranger = with(right.clone(), "CO2_PUBLISHER__MQTT__USERNAME", "stranger");
    let stranger = with(stranger, "CO2_PUBLISHER__MQTT__PASSWORD", "stranger-pw");
    let (code, out) = doctor(&stranger).await;
    let f = failure(&out, "broker acl");
    assert!(
        f.contains(&format!(
            "refused stranger publishing on {prefix}/pi/emissions: NotAuthorized"
        )) && f.contains("grant stranger write"),
        "{f}"
    );
    skipped(&out, "broker subscribers", "broker acl");
    assert_eq!(code, 1);

    // MQTT 3.1.1: a PUBACK either way, so only the probe coming back proves
    // the grant, and a probe that does not come back proves nothing.
    let v311 =
        |env: &[(String, String)]| with(env.to_vec(), "CO2_PUBLISHER__MQTT__PROTOCOL", "v311");
    let (code, out) = doctor(&v311(&right)).await;
    assert!(out.contains("(the probe came back)"), "{out}");
    assert!(
        unproven(&out, "broker subscribers").contains("an MQTT 3.1.1 PUBACK does not say"),
        "{out}"
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = doctor(&v311(&stranger)).await;
    let u = unproven(&out, "broker acl");
    assert!(
        u.contains("did not come back within 5 s")
            && u.contains("to prove: the probe coming back")
            && u.contains("grant stranger write"),
        "{u}"
    );
    assert_eq!(code, 0, "{out}");

    let tls_env = |port: u16, ca: &str| {
        let e = with(
            right.clone(),
            "CO2_PUBLISHER__MQTT__PORT",
            &port.to_string(),
        );
        with(e, "CO2_PUBLISHER__MQTT__TLS__CA_FILE", &format!("{p}/{ca}"))
    };
    let (code, out) = doctor(&tls_env(tls, "ca.crt")).await;
    ok(&out, "broker tls");
    assert_eq!(code, 0, "{out}");
    let (code, out) = doctor(&tls_env(tls, "other-ca.crt")).await;
    let f = failure(&out, "broker tls");
    assert!(
        f.contains("not signed by mqtt.tls.ca_file") && f.contains("fix: point mqtt.tls.ca_file"),
        "{f}"
    );
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

    let (code, out) = doctor(&with(right, "CO2_PUBLISHER__MQTT__PORT", "many")).await;
    let f = failure(&out, "config");
    assert!(f.contains("port"), "{f}");
    assert_eq!(code, 1);
}

/// `mosquitto_sub` on `topic` under the client id `id`: `persistent` leaves
/// a session with the subscription behind (as a bridge that is down does);
/// otherwise the clean session removes the one `id` left.
async fn subscription(id: &str, topic: &str, persistent: bool) {
    let mut command = tokio::process::Command::new("mosquitto_sub");
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        "1883",
        "-q",
        "1",
        "-E",
        "-i",
        id,
        "-t",
        topic,
    ]);
    if persistent {
        command.arg("-c");
    }
    let status = command.status().await.unwrap();
    assert!(status.success(), "mosquitto_sub failed: {status}");
}

/// The healthy shared broker, anonymous, with nothing else on the device's
/// topic: every hop passes or is unproven (nothing subscribes), exit 0; a
/// subscription left by a client that is gone proves the read side; a
/// closed port beside it fails with the clock still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_broker_with_nothing_to_prove_passes_and_a_closed_port_fails() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pubdocfresh");
    let topic = format!("{prefix}/pi/emissions");
    let base = publisher_env("pi", 1883, &prefix, &dir.path().join("q.sqlite3"));

    let (code, out) = doctor(&base).await;
    assert_eq!(code, 0, "{out}");
    for hop in [
        "config",
        "broker dns",
        "broker tcp",
        "broker auth",
        "broker acl",
    ] {
        ok(&out, hop);
    }
    unproven(&out, "broker subscribers");
    clock(&out);
    assert!(summary(&out).ends_with(", 0 failed"), "{out}");

    let reader = format!("{prefix}-reader");
    subscription(&reader, &format!("{prefix}/+/emissions"), true).await;
    let (code, out) = doctor(&base).await;
    subscription(&reader, &topic, false).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        ok(&out, "broker subscribers").contains(&format!(
            "a subscription covers {topic} (a bridge's session, connected or not)"
        )),
        "{out}"
    );

    let closed = free_port().unwrap();
    let (code, out) = doctor(&with(
        base,
        "CO2_PUBLISHER__MQTT__PORT",
        &closed.to_string(),
    ))
    .await;
    assert_eq!(code, 1, "{out}");
    failure(&out, "broker tcp");
    skipped(&out, "broker acl", "broker tcp");
    skipped(&out, "broker subscribers", "broker tcp");
    clock(&out);
    assert!(
        summary(&out).contains(" failed (broker tcp), 3 skipped"),
        "{out}"
    );
}
