//! The commands a user runs first: check-config and read-once.

use std::process::Command;

use crate::support::publisher_bin;

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(publisher_bin());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_masks_secrets_and_applies_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("publisher.toml");
    std::fs::write(
        &file,
        "device = \"pi-1\"\n[mqtt]\nusername = \"pi-1\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run(
        &["--config", file.to_str().unwrap(), "check-config"],
        &[("CO2_PUBLISHER__MQTT__HOST", "broker.example")],
    );
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("password = \"********\""), "{stdout}");
    assert!(stdout.contains("host = \"broker.example\""), "{stdout}");
    assert!(stdout.contains("# topic: co2/pi-1/emissions"), "{stdout}");
}

#[test]
fn a_bad_config_fails_naming_the_key() {
    let (ok, _, stderr) = run(
        &["check-config"],
        &[("CO2_PUBLISHER__MQTT__MAX_INFLIGHT", "lots")],
    );
    assert!(!ok);
    assert!(stderr.contains("mqtt.max_inflight"), "{stderr}");
    let (ok, _, stderr) = run(&["check-config"], &[("CO2_PUBLISHER__MQTT__QOS", "0")]);
    assert!(!ok);
    assert!(stderr.contains("mqtt.qos"), "{stderr}");
}

#[test]
fn read_once_prints_one_payload() {
    let (ok, stdout, stderr) = run(
        &["read-once"],
        &[("CO2_PUBLISHER__SENSOR__KIND", "simulated")],
    );
    assert!(ok, "{stderr}");
    let line = stdout.trim();
    let reading = co2_wire::Decoder::default()
        .decode(line.as_bytes(), chrono::Utc::now())
        .unwrap();
    assert!((200.0..2000.0).contains(&reading.emissions()), "{line}");
}

#[test]
fn read_once_with_a_command_sensor() {
    let (ok, stdout, stderr) = run(
        &["read-once"],
        &[
            ("CO2_PUBLISHER__SENSOR__KIND", "command"),
            ("CO2_PUBLISHER__SENSOR__COMMAND__PROGRAM", "echo"),
        ],
    );
    // `echo` with no arguments prints no number: a clear error, not a panic.
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("no number"), "{stderr}");
}
