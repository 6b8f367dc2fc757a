//! Reading a doctor's report (`co2-bridge doctor`, `co2-publisher doctor`)
//! in tests, and varying the environment it runs with.

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
