//! Loading, overriding, validating and masking the whole settings.

use std::path::Path;

use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_valid_and_match_the_design() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.mqtt.topics, ["co2/+/emissions", "co2/emissions"]);
    assert_eq!(s.http.listen, "127.0.0.1:9464");
    assert_eq!((s.batch.max_rows, s.batch.max_delay_ms), (1000, 50));
    assert_eq!(s.database.url, "mysql://co2_bridge@127.0.0.1:3306/co2");
}

#[test]
fn environment_overrides_nested_keys() {
    let s = Settings::load_from(
        None,
        env(&[
            ("CO2_BRIDGE__DATABASE__URL", "mysql://u@db:3306/x"),
            ("CO2_BRIDGE__BATCH__MAX_ROWS", "250"),
            ("CO2_BRIDGE__MQTT__TOPICS", "a/+/b,c"),
            ("CO2_BRIDGE__MQTT__RECEIVE_MAXIMUM", "100"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(s.database.url, "mysql://u@db:3306/x");
    assert_eq!(s.batch.max_rows, 250);
    assert_eq!(s.mqtt.topics, ["a/+/b", "c"]);
    assert_eq!(s.mqtt.receive_maximum, 100);
}

#[test]
fn cluster_nodes_come_from_hosts_or_the_single_host() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    let single = s.mqtt_endpoints().unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].to_string(), "127.0.0.1:1883");
    assert_eq!(
        s.database.endpoints("database").unwrap()[0].to_string(),
        "127.0.0.1:3306"
    );
    let s = Settings::load_from(
        None,
        env(&[
            ("CO2_BRIDGE__MQTT__HOSTS", "a:1884,b"),
            ("CO2_BRIDGE__DATABASE__URL", "mysql://u@db:3307/x"),
            ("CO2_BRIDGE__DATABASE__HOSTS", "db1,db2:3308"),
        ]),
    )
    .unwrap();
    let mqtt: Vec<String> = s
        .mqtt_endpoints()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(mqtt, ["a:1884", "b:1883"]);
    let db: Vec<String> = s
        .database
        .endpoints("database")
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(db, ["db1:3307", "db2:3308"]);
    let err = Settings::load_from(None, env(&[("CO2_BRIDGE__MQTT__HOSTS", "a:0")])).unwrap_err();
    assert!(err.to_string().contains("mqtt.hosts"), "{err}");
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("CO2_BRIDGE__BATCH__MAX_ROWS", "0", "batch.max_rows"),
        (
            "CO2_BRIDGE__WIRE__TIME_ZONE",
            "Mars/Olympus",
            "wire.time_zone",
        ),
        ("CO2_BRIDGE__MQTT__TOPICS", "co2/x+/y", "mqtt.topics"),
        (
            "CO2_BRIDGE__DATABASE__URL",
            "postgres://x/y",
            "database.url",
        ),
        ("CO2_BRIDGE__HTTP__LISTEN", "localhost", "http.listen"),
        (
            "CO2_BRIDGE__MQTT__DEFAULT_DEVICE",
            "a b",
            "mqtt.default_device",
        ),
        (
            "CO2_BRIDGE__MQTT__SESSION_EXPIRY_S",
            "0",
            "mqtt.session_expiry_s",
        ),
        (
            "CO2_BRIDGE__MQTT__READ_LINGER_MS",
            "101",
            "mqtt.read_linger_ms",
        ),
    ];
    for (key, value, named) in cases {
        let err = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
        assert!(err.to_string().contains(named), "{key}={value}: {err}");
    }
}

#[test]
fn unknown_and_mistyped_keys_are_refused() {
    let err = Settings::load_from(None, env(&[("CO2_BRIDGE__DATABSE__URL", "x")])).unwrap_err();
    assert!(err.to_string().contains("databse"), "{err}");
    let err =
        Settings::load_from(None, env(&[("CO2_BRIDGE__BATCH__MAX_ROWS", "many")])).unwrap_err();
    assert!(err.to_string().contains("max_rows"), "{err}");
}

#[test]
fn secrets_come_from_files_and_are_masked() {
    let dir = std::env::temp_dir().join(format!("co2-bridge-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let s = Settings::load_from(
        None,
        env(&[
            (
                "CO2_BRIDGE__DATABASE__PASSWORD_FILE",
                file.to_str().unwrap(),
            ),
            ("CO2_BRIDGE__MQTT__PASSWORD", "hunter2"),
            ("CO2_BRIDGE__DATABASE__URL", "mysql://u:inline@h/db"),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.database_password().unwrap().unwrap().expose_secret(),
        "s3cret"
    );
    let shown = s.to_masked_toml();
    assert!(
        !shown.contains("hunter2") && !shown.contains("inline"),
        "{shown}"
    );
    assert!(shown.contains("********"), "{shown}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_secret_file_is_named() {
    let s = Settings::load_from(
        None,
        env(&[("CO2_BRIDGE__MQTT__PASSWORD_FILE", "/nonexistent/pw")]),
    )
    .unwrap();
    let err = s.mqtt_password().unwrap_err().to_string();
    assert!(
        err.contains("mqtt.password_file") && err.contains("/nonexistent/pw"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge.example.toml");
    let s = Settings::load_from(Some(&path), env(&[])).unwrap();
    let defaults = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.to_masked_toml(), defaults.to_masked_toml());
}
