//! Faults a test can inject into a debug build, to prove what happens when a
//! decoder or the pipeline panics after all.
//!
//! `CO2_BRIDGE_FAULTS="decode-panic=<marker>,commit-panic=<marker>"` makes the
//! decoder panic on any message whose payload contains `<marker>`, and the
//! commit task panic on any batch holding such a message that is to be
//! stored as rows (a dead letter of it is written normally, which is how the
//! crash quarantine ends the loop). Only debug builds (`cargo build`, what the tests run) read it; a
//! release build ignores it and says so, so no configuration can make a
//! production bridge panic on purpose.

/// The environment variable that arms the faults.
pub const ENV: &str = "CO2_BRIDGE_FAULTS";

/// Which faults are armed; none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    decode_panic: Option<String>,
    commit_panic: Option<String>,
}

impl Faults {
    /// The faults armed by [`ENV`], in a debug build; none otherwise.
    pub fn from_env() -> Self {
        let Ok(spec) = std::env::var(ENV) else {
            return Self::default();
        };
        if !cfg!(debug_assertions) {
            tracing::warn!(
                "{ENV} is set but this is a release build, which ignores injected faults"
            );
            return Self::default();
        }
        let faults = Self::parse(&spec);
        tracing::warn!(?faults, "Injected faults are armed (test build)");
        faults
    }

    /// Parses `kind=marker` pairs separated by commas; unknown kinds are ignored.
    pub fn parse(spec: &str) -> Self {
        let mut faults = Self::default();
        for (kind, marker) in spec.split(',').filter_map(|p| p.split_once('=')) {
            let marker = Some(marker.to_owned()).filter(|m| !m.is_empty());
            match kind.trim() {
                "decode-panic" => faults.decode_panic = marker,
                "commit-panic" => faults.commit_panic = marker,
                _ => {}
            }
        }
        faults
    }

    /// Panics if the decode fault is armed and `payload` carries its marker.
    pub fn at_decode(&self, payload: &[u8]) {
        if contains(payload, self.decode_panic.as_deref()) {
            panic!("injected fault: decode-panic");
        }
    }

    /// Panics if the commit fault is armed and any of the rows' payloads carries its marker.
    pub fn at_commit<'a>(&self, mut payloads: impl Iterator<Item = &'a [u8]>) {
        if self.commit_panic.is_some()
            && payloads.any(|p| contains(p, self.commit_panic.as_deref()))
        {
            panic!("injected fault: commit-panic");
        }
    }
}

fn contains(haystack: &[u8], needle: Option<&str>) -> bool {
    needle.is_some_and(|n| haystack.windows(n.len()).any(|w| w == n.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_ignores_the_rest() {
        let f = Faults::parse("decode-panic=BOOM, commit-panic=CRASH,other=x,junk");
        assert_eq!(f.decode_panic.as_deref(), Some("BOOM"));
        assert_eq!(f.commit_panic.as_deref(), Some("CRASH"));
        assert_eq!(Faults::parse(""), Faults::default());
    }

    #[test]
    fn only_a_payload_with_the_marker_trips_it() {
        let f = Faults::parse("decode-panic=BOOM");
        f.at_decode(b"2020-01-01 00:00:00|1");
        f.at_commit([&b"BOOM"[..]].into_iter());
        assert!(std::panic::catch_unwind(|| f.at_decode(b"xxBOOMxx")).is_err());
    }
}
