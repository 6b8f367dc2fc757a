//! TLS material and Mosquitto password files for tests, made with the
//! `openssl` and `mosquitto_passwd` command lines (ops/services.sh installs
//! both): a CA, a second CA nothing is signed by (a "wrong CA"), and server
//! certificates signed by the first, valid, for another name, or expired.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// A server certificate to make: `<name>.crt` and `<name>.key`.
pub struct ServerCert<'a> {
    /// File stem.
    pub name: &'a str,
    /// Validity in days from now; -1 ended a day ago (openssl takes it).
    pub days: i32,
    /// Its subjectAltName, e.g. `IP:127.0.0.1` or `DNS:mqtt.example.invalid`.
    pub san: &'a str,
}

/// Writes `ca.crt`/`ca.key`, `other-ca.crt` and every one of `servers`
/// (signed by `ca.crt`) into `dir`.
pub fn make_certs(dir: &Path, servers: &[ServerCert<'_>]) -> anyhow::Result<()> {
    for (stem, cn) in [("ca", "test-ca"), ("other-ca", "other-ca")] {
        run(
            dir,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{stem}.key"),
                "-out",
                &format!("{stem}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
            ],
        )?;
    }
    for s in servers {
        let (key, csr, crt, ext) = (
            format!("{}.key", s.name),
            format!("{}.csr", s.name),
            format!("{}.crt", s.name),
            format!("{}.ext", s.name),
        );
        std::fs::write(dir.join(&ext), format!("subjectAltName={}\n", s.san))?;
        run(
            dir,
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=test-server",
            ],
        )?;
        run(
            dir,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                &s.days.to_string(),
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(())
}

/// Writes `dir/passwd`, a Mosquitto password file of `users` (name, password).
pub fn password_file(dir: &Path, users: &[(&str, &str)]) -> anyhow::Result<()> {
    for (i, (user, password)) in users.iter().enumerate() {
        let mut args = vec!["-b"];
        if i == 0 {
            args.push("-c");
        }
        args.extend(["passwd", user, password]);
        run(dir, "mosquitto_passwd", &args)?;
    }
    Ok(())
}

fn run(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {program} (run ops/services.sh)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
