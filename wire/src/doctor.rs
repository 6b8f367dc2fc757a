//! What `co2-bridge doctor` and `co2-publisher doctor` share: the report of
//! the hops checked (the first failure ends the walk, named with what to do),
//! how a TLS error names the certificate problem, and (feature `net`) the
//! DNS and TCP hops to a server, so both programs diagnose the same path
//! in the same words.

use std::fmt::Write as _;
use std::time::Duration;

#[cfg(feature = "net")]
mod net;
#[cfg(feature = "net")]
pub use net::{broker_reachable, resolve, tcp};

/// How long one network step may take before it counts as timed out.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// What one hop found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The hop, e.g. `broker tcp`.
    pub name: String,
    /// What it found.
    pub outcome: Outcome,
}

/// What a hop found: proven working, not proven either way yet, proven
/// broken, or not run because a hop it needs failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It works: what proves it.
    Ok(String),
    /// Nothing proves it works or fails yet (no failure): what was seen and
    /// what would prove it.
    Unproven(Unproven),
    /// It fails: what happened and what to do.
    Fail(Failure),
    /// Not run: it needs the named hop, which failed.
    Skipped(String),
}

impl Outcome {
    /// True for [`Outcome::Fail`].
    pub fn is_fail(&self) -> bool {
        matches!(self, Self::Fail(_))
    }

    /// True when the hops that need this one can run: it works, or nothing
    /// says it does not.
    pub fn lets_through(&self) -> bool {
        matches!(self, Self::Ok(_) | Self::Unproven(_))
    }
}

impl From<Result<String, Failure>> for Outcome {
    fn from(result: Result<String, Failure>) -> Self {
        match result {
            Ok(detail) => Self::Ok(detail),
            Err(f) => Self::Fail(f),
        }
    }
}

impl From<Unproven> for Outcome {
    fn from(u: Unproven) -> Self {
        Self::Unproven(u)
    }
}

/// A hop nothing proves yet: what was seen and what would prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unproven {
    /// What was seen (or not).
    pub what: String,
    /// What would prove the hop.
    pub proof: String,
}

/// An [`Unproven`]: what was seen and what would prove the hop.
pub fn unproven(what: impl Into<String>, proof: impl Into<String>) -> Unproven {
    Unproven {
        what: what.into(),
        proof: proof.into(),
    }
}

/// A failed hop: what happened and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub what: String,
    /// What to do.
    pub fix: String,
}

/// A [`Failure`]: what happened and what to do.
pub fn fail(what: impl Into<String>, fix: impl Into<String>) -> Failure {
    Failure {
        what: what.into(),
        fix: fix.into(),
    }
}

/// The hops checked so far; the first failure ends the walk.
#[derive(Debug, Default)]
pub struct Report {
    /// Every hop checked, in order.
    pub hops: Vec<Hop>,
}

impl Report {
    /// Records a hop; true when it passed (and the walk goes on).
    pub fn hop(&mut self, name: impl Into<String>, outcome: impl Into<Outcome>) -> bool {
        let outcome = outcome.into();
        let passed = !outcome.is_fail();
        self.hops.push(Hop {
            name: name.into(),
            outcome,
        });
        passed
    }

    /// The report of a configuration that did not even load.
    pub fn config_failed(error: &str, fix: &str) -> Self {
        let mut r = Self::default();
        r.hop("config", Err(fail(error, fix)));
        r
    }

    /// Records the hops a successful MQTT login proves: the TLS handshake
    /// (when `tls`) and the authentication of `user`.
    pub fn logged_in(&mut self, tls: bool, user: Option<&str>) {
        if tls {
            self.hop(
                "broker tls",
                Ok("certificate chain, host name and dates valid".into()),
            );
        }
        let user = user.unwrap_or("(anonymous)");
        self.hop("broker auth", Ok(format!("logged in as {user}")));
    }

    /// True when every hop passed.
    pub fn passed(&self) -> bool {
        !self.hops.iter().any(|h| h.outcome.is_fail())
    }

    /// The first hop that failed, if one did.
    pub fn failed_hop(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| h.outcome.is_fail())
    }

    /// One line per hop, the failure with its fix.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for hop in &self.hops {
            let _ = match &hop.outcome {
                Outcome::Ok(detail) => writeln!(out, "ok    {:<20} {detail}", hop.name),
                Outcome::Fail(f) => writeln!(
                    out,
                    "FAIL  {:<20} {}\n      fix: {}",
                    hop.name, f.what, f.fix
                ),
                // No walk records these yet.
                Outcome::Unproven(u) => writeln!(
                    out,
                    "?     {:<20} {}\n      to prove: {}",
                    hop.name, u.what, u.proof
                ),
                Outcome::Skipped(after) => {
                    writeln!(out, "skip  {:<20} needs {after}", hop.name)
                }
            };
        }
        let _ = match self.failed_hop() {
            Some(h) => writeln!(out, "\nThe path fails at: {}", h.name),
            None => writeln!(out, "\nEvery hop passed."),
        };
        out
    }
}

/// Names what a TLS error says is wrong with the broker's certificate
/// (both programs name the broker `mqtt.host` and its CA `mqtt.tls.ca_file`).
pub fn tls_problem(error: &str) -> String {
    // rustls names some problems by variant, others in words.
    let e = error.to_ascii_lowercase();
    let what = if e.contains("expired") {
        "the broker's certificate has expired"
    } else if e.contains("notvalidyet") || e.contains("not valid yet") {
        "the broker's certificate is not valid yet (or this clock is behind)"
    } else if e.contains("notvalidforname") || e.contains("not valid for name") {
        "the broker's certificate does not name mqtt.host"
    } else if e.contains("unknownissuer") || e.contains("badsignature") {
        "the broker's certificate is not signed by mqtt.tls.ca_file"
    } else {
        "the TLS handshake failed"
    };
    format!("{what}: {error}")
}

/// What to do about a TLS failure [`tls_problem`] named.
pub fn tls_fix(problem: &str) -> &'static str {
    if problem.starts_with("the broker's certificate has expired") {
        "renew the broker's certificate (and check this machine's clock: timedatectl)"
    } else if problem.starts_with("the broker's certificate is not valid yet") {
        "set this machine's clock (timedatectl set-ntp true), or wait for the certificate's start date"
    } else if problem.starts_with("the broker's certificate does not name") {
        "connect with the name the certificate carries (mqtt.host), or reissue it with that name in subjectAltName"
    } else if problem.starts_with("the broker's certificate is not signed") {
        "point mqtt.tls.ca_file at the CA that signed the broker's certificate"
    } else {
        "check [mqtt.tls] and that mqtt.port is the broker's TLS listener"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_name_the_certificate_problem() {
        assert!(tls_problem("invalid peer certificate: Expired").contains("expired"));
        assert!(tls_problem("invalid peer certificate: UnknownIssuer").contains("ca_file"));
        assert!(tls_problem("invalid peer certificate: NotValidForName").contains("mqtt.host"));
        assert!(tls_problem(
            "invalid peer certificate: certificate not valid for name \"127.0.0.1\""
        )
        .contains("does not name mqtt.host"));
        let expired =
            tls_problem("invalid peer certificate: certificate expired: verification time");
        assert!(expired.contains("has expired"));
        assert!(tls_fix(&expired).starts_with("renew"));
        assert!(tls_fix("the TLS handshake failed: eof").contains("[mqtt.tls]"));
    }

    #[test]
    fn the_report_names_the_failing_hop_and_its_fix() {
        let mut r = Report::default();
        assert!(r.hop("config", Ok("valid".into())));
        assert!(!r.hop("broker tcp", Err(fail("refused", "start it"))));
        let text = r.render();
        assert!(!r.passed());
        assert_eq!(r.failed_hop().map(|h| h.name.as_str()), Some("broker tcp"));
        assert!(text.contains("FAIL  broker tcp"), "{text}");
        assert!(text.contains("fix: start it"), "{text}");
        assert!(text.ends_with("The path fails at: broker tcp\n"), "{text}");
    }
}
