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

/// The entry of `hop` in a report, when its status is `status`: its line
/// and the fix or proof line under it. The columns are those
/// `co2_wire::doctor::Report::render` prints: the status in 9, the hop in 20.
pub fn entry<'a>(out: &'a str, status: &str, hop: &str) -> Option<&'a str> {
    let prefix = format!("{status:<9}{hop:<20} ");
    let start = if out.starts_with(&prefix) {
        0
    } else {
        out.find(&format!("\n{prefix}"))? + 1
    };
    let rest = out.get(start..)?;
    // The entry ends before the next line that is not indented.
    let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
    while let Some(next) = rest.get(end..) {
        if !next.starts_with("         ") {
            break;
        }
        end += next.find('\n').map_or(next.len(), |i| i + 1);
    }
    rest.get(..end)
}

/// The report's last line: how many hops were ok, unproven, failed, skipped.
pub fn summary(out: &str) -> &str {
    out.trim_end().lines().last().unwrap_or_default()
}

/// What an `ok` hop says, or a panic naming what was printed.
pub fn ok<'a>(out: &'a str, hop: &str) -> &'a str {
    match entry(out, "ok", hop) {
        Some(e) => e,
        None => panic!("hop {hop:?} is not ok:\n{out}"),
    }
}

/// The failing hop's line and its fix, or a panic naming what was printed;
/// the summary must name it among the failed.
pub fn failure<'a>(out: &'a str, hop: &str) -> &'a str {
    let Some(e) = entry(out, "FAIL", hop) else {
        panic!("hop {hop:?} did not fail:\n{out}");
    };
    let line = summary(out);
    let failed = line.split(" failed (").nth(1).unwrap_or_default();
    let failed = failed.split(')').next().unwrap_or_default();
    assert!(
        failed.split(", ").any(|h| h == hop),
        "{hop} not in {line:?}:\n{out}"
    );
    e
}

/// The unproven hop's line and what would prove it, or a panic naming what
/// was printed; the summary must name it among the unproven.
pub fn unproven<'a>(out: &'a str, hop: &str) -> &'a str {
    let Some(e) = entry(out, "unproven", hop) else {
        panic!("hop {hop:?} is not unproven:\n{out}");
    };
    let line = summary(out);
    let named = line.split(" unproven (").nth(1).unwrap_or_default();
    let named = named.split(')').next().unwrap_or_default();
    assert!(
        named.split(", ").any(|h| h == hop),
        "{hop} not in {line:?}:\n{out}"
    );
    e
}

/// Asserts `hop` was skipped behind the failed hop `after`.
pub fn skipped(out: &str, hop: &str, after: &str) {
    let e = entry(out, "skipped", hop);
    let expected = format!("not run: needs {after}, which failed");
    assert!(
        e.is_some_and(|e| e.contains(&expected)),
        "hop {hop:?} not skipped behind {after}:\n{out}"
    );
}
