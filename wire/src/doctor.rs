//! What `co2-bridge doctor` and `co2-publisher doctor` share: the report of
//! the hops checked (each ok, unproven with what would prove it, failed with
//! what to do, or skipped behind a failed hop it needs),
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

/// The hops of one run, in the order they are printed. A failure does not
/// end the walk: the hops that need the failed one are recorded as
/// skipped, naming it, and every other hop still runs, so one run names
/// every failure.
#[derive(Debug, Default)]
pub struct Report {
    /// Every hop, in order.
    pub hops: Vec<Hop>,
}

/// Width of the status column (`unproven` and a space).
const STATUS_WIDTH: usize = 9;

impl Report {
    /// Records a hop; true when the hops that need it can run (it works, or
    /// nothing says it does not).
    pub fn hop(&mut self, name: impl Into<String>, outcome: impl Into<Outcome>) -> bool {
        let outcome = outcome.into();
        let through = outcome.lets_through();
        self.hops.push(Hop {
            name: name.into(),
            outcome,
        });
        through
    }

    /// Records `names` as not run because `failed`, which they need, failed.
    pub fn skip<S: Into<String>>(&mut self, failed: &str, names: impl IntoIterator<Item = S>) {
        for name in names {
            self.hop(name, Outcome::Skipped(failed.to_owned()));
        }
    }

    /// Records as skipped every hop of `walk` after `failed` (the hops that
    /// needed it), or all of them when `failed` is not in `walk`.
    pub fn skip_after(&mut self, failed: &str, walk: &[&str]) {
        let after = walk.iter().position(|h| *h == failed).map_or(0, |i| i + 1);
        self.skip(
            failed,
            walk.get(after..).unwrap_or_default().iter().copied(),
        );
    }

    /// Appends the hops of `other` (a walk that ran beside this one) after these.
    pub fn append(&mut self, other: Report) {
        self.hops.extend(other.hops);
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

    /// True when no hop failed: unproven hops do not fail a run (and
    /// skipped ones only follow a failure).
    pub fn passed(&self) -> bool {
        !self.hops.iter().any(|h| h.outcome.is_fail())
    }

    /// The names of the hops that failed, in order.
    pub fn failed(&self) -> Vec<&str> {
        self.names(Outcome::is_fail)
    }

    /// The names of the hops nothing proved yet, in order.
    pub fn unproven(&self) -> Vec<&str> {
        self.names(|o| matches!(o, Outcome::Unproven(_)))
    }

    fn names(&self, wanted: impl Fn(&Outcome) -> bool) -> Vec<&str> {
        self.hops
            .iter()
            .filter(|h| wanted(&h.outcome))
            .map(|h| h.name.as_str())
            .collect()
    }

    /// One line: how many hops passed, how many nothing proved yet and how
    /// many failed (those two named), and how many were not run.
    pub fn summary(&self) -> String {
        let named = |names: Vec<&str>, state: &str| match names.len() {
            0 => format!("0 {state}"),
            n => format!("{n} {state} ({})", names.join(", ")),
        };
        let ok = self
            .hops
            .iter()
            .filter(|h| matches!(h.outcome, Outcome::Ok(_)))
            .count();
        let skipped = self
            .hops
            .iter()
            .filter(|h| matches!(h.outcome, Outcome::Skipped(_)))
            .count();
        let mut line = format!(
            "{ok} ok, {}, {}",
            named(self.unproven(), "unproven"),
            named(self.failed(), "failed")
        );
        if skipped > 0 {
            line.push_str(&format!(", {skipped} skipped"));
        }
        line
    }

    /// One line per hop (a failure with its fix, an unproven hop with what
    /// would prove it), then the [`summary`](Self::summary).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let indent = " ".repeat(STATUS_WIDTH);
        for hop in &self.hops {
            let (status, what, then) = match &hop.outcome {
                Outcome::Ok(detail) => ("ok", detail.clone(), None),
                Outcome::Unproven(u) => ("unproven", u.what.clone(), Some(("to prove", &u.proof))),
                Outcome::Fail(f) => ("FAIL", f.what.clone(), Some(("fix", &f.fix))),
                Outcome::Skipped(after) => (
                    "skipped",
                    format!("not run: needs {after}, which failed"),
                    None,
                ),
            };
            let _ = writeln!(out, "{status:<STATUS_WIDTH$}{:<20} {what}", hop.name);
            if let Some((label, text)) = then {
                let _ = writeln!(out, "{indent}{label}: {text}");
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
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
        assert_eq!(r.failed(), ["broker tcp"]);
        assert!(
            text.contains("FAIL     broker tcp           refused\n         fix: start it\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\n\n1 ok, 0 unproven, 1 failed (broker tcp)\n"),
            "{text}"
        );
    }

    #[test]
    fn unproven_hops_pass_and_say_what_would_prove_them() {
        let mut r = Report::default();
        assert!(r.hop("config", Ok("valid".into())));
        assert!(r.hop(
            "broker acl",
            unproven("nothing arrived", "publish and run again")
        ));
        assert!(r.hop("mysql auth", Ok("logged in".into())));
        assert!(r.passed());
        assert_eq!(r.unproven(), ["broker acl"]);
        let text = r.render();
        assert!(
            text.contains(
                "unproven broker acl           nothing arrived\n         to prove: publish and run again\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("\n\n2 ok, 1 unproven (broker acl), 0 failed\n"),
            "{text}"
        );
    }

    #[test]
    fn every_failure_is_named_and_what_needs_it_is_skipped() {
        let mut broker = Report::default();
        assert!(broker.hop("broker dns", Ok("resolved".into())));
        assert!(!broker.hop("broker tcp", Err(fail("refused", "start it"))));
        broker.skip("broker tcp", ["broker auth", "broker acl"]);
        let mut db = Report::default();
        assert!(!db.hop("mysql auth", Err(fail("refused", "check the password"))));
        db.skip("mysql auth", ["mysql grants".to_owned()]);
        let mut r = Report::default();
        assert!(r.hop("config", Ok("valid".into())));
        r.append(broker);
        r.append(db);
        assert!(!r.hop("mysql device clocks", Outcome::Skipped("mysql auth".into())));
        assert!(r.hop("influx", unproven("quiet", "wait")));
        let names: Vec<&str> = r.hops.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config",
                "broker dns",
                "broker tcp",
                "broker auth",
                "broker acl",
                "mysql auth",
                "mysql grants",
                "mysql device clocks",
                "influx"
            ]
        );
        assert!(!r.passed());
        assert_eq!(r.failed(), ["broker tcp", "mysql auth"]);
        assert_eq!(
            r.summary(),
            "2 ok, 1 unproven (influx), 2 failed (broker tcp, mysql auth), 4 skipped"
        );
        let text = r.render();
        assert!(
            text.contains(
                "skipped  broker acl           not run: needs broker tcp, which failed\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("         fix: check the password\n"),
            "{text}"
        );
    }

    #[test]
    fn only_ok_and_unproven_let_the_hops_after_them_run() {
        assert!(Outcome::Ok(String::new()).lets_through());
        assert!(Outcome::from(unproven("", "")).lets_through());
        assert!(!Outcome::from(Err(fail("", ""))).lets_through());
        assert!(!Outcome::Skipped("x".into()).lets_through());
        let r = Report::config_failed("bad", "fix it");
        assert!(!r.passed());
        assert_eq!(r.summary(), "0 ok, 0 unproven, 1 failed (config)");
    }
}
