//! Running a doctor (`co2-bridge doctor`, `co2-publisher doctor`) in tests,
//! reading its report, and varying the environment it runs with.

use std::path::Path;

use anyhow::Context;

/// The variables that point a binary at a config file: cleared, so that a
/// doctor sees only the environment its test gives it.
const CONFIG_VARIABLES: [&str; 2] = ["CO2_BRIDGE_CONFIG", "CO2_PUBLISHER_CONFIG"];

/// Runs `<bin> doctor` with `env` (inside the network namespace `netns`,
/// when given, through `ip netns exec`), logging at `warn`; returns its exit
/// code (-1 when killed by a signal) and stdout. Both outputs are printed,
/// for a failing test's report.
pub async fn run(
    bin: &Path,
    netns: Option<&str>,
    env: &[(String, String)],
) -> anyhow::Result<(i32, String)> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => tokio::process::Command::new(bin),
    };
    command.arg("doctor");
    for key in CONFIG_VARIABLES {
        command.env_remove(key);
    }
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn");
    let out = command
        .output()
        .await
        .with_context(|| format!("cannot run {} doctor", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), stdout))
}

/// `env` with `key` set to `value` (replacing any earlier value).
pub fn with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
    env
}

/// The failing hop's line and its fix, or a panic naming what was printed.
pub fn failure<'a>(out: &'a str, hop: &str) -> &'a str {
    let Some(start) = out.find(&format!("FAIL  {hop} ")) else {
        panic!("hop {hop:?} did not fail:\n{out}");
    };
    assert!(
        out.contains(&format!("The path fails at: {hop}\n")),
        "{out}"
    );
    out.get(start..).unwrap_or_default()
}
