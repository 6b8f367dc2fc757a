//! Any other sensor (or a camera + OCR pipeline): run a program, read a number.
//!
//! The program runs in its own process group so that a timeout kills it and
//! everything it started (a shell script's children too), not just the shell.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};

use super::{Sensor, SensorError};

/// Output beyond this is ignored: a reading is a few bytes, a runaway program is not.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs `program args...` once per reading.
#[derive(Debug, Clone)]
pub struct CommandSensor {
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

impl CommandSensor {
    /// A sensor that runs `program` with `args`, allowing it `timeout`.
    pub fn new(program: String, args: Vec<String>, timeout: Duration) -> Self {
        Self {
            program,
            args,
            timeout,
        }
    }

    fn run(&self) -> Result<String, SensorError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| SensorError::Command(format!("cannot start {}: {e}", self.program)))?;
        let pid = Pid::from_child(&child);
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(SensorError::Command("no pipes to the child".into()));
        };
        // Pipes are read on a helper thread so this one can wait with a
        // timeout (std has no wait-with-timeout; polling would spin).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let out_res = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut out);
            let _ = (&mut stderr).take(MAX_OUTPUT).read_to_end(&mut err);
            let _ = tx.send(out_res.map(|_| (out, err)));
        });
        let output = rx.recv_timeout(self.timeout);
        if output.is_err() {
            // Timed out (or the reader died): kill the whole group, then reap.
            let _ = kill_process_group(pid, Signal::KILL);
            let _ = child.wait();
            return Err(SensorError::Timeout(self.timeout));
        }
        let status = child
            .wait()
            .map_err(|e| SensorError::Command(format!("wait: {e}")))?;
        let (out, err) = match output {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(SensorError::Command(format!("reading output: {e}"))),
            Err(_) => return Err(SensorError::Timeout(self.timeout)),
        };
        if !status.success() {
            let stderr = String::from_utf8_lossy(&err);
            let first_line = stderr.lines().next().unwrap_or("").chars().take(200);
            return Err(SensorError::Command(format!(
                "{} exited with {status}: {}",
                self.program,
                first_line.collect::<String>()
            )));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The first token of `output` that is a finite decimal number; tokens are
/// split on whitespace and `=:,;` so `co2=612 ppm` and `612` both work.
pub fn first_number(output: &str) -> Option<f64> {
    output
        .split(|c: char| c.is_whitespace() || "=:,;".contains(c))
        .filter(|t| t.bytes().any(|b| b.is_ascii_digit()))
        .find_map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite()))
}

impl Sensor for CommandSensor {
    fn read(&mut self) -> Result<f64, SensorError> {
        let output = self.run()?;
        first_number(&output).ok_or_else(|| {
            let shown: String = output.trim().chars().take(80).collect();
            SensorError::Command(format!("no number in output {shown:?}"))
        })
    }

    fn describe(&self) -> String {
        format!("command {} {:?}", self.program, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str, timeout_ms: u64) -> CommandSensor {
        CommandSensor::new(
            "sh".into(),
            vec!["-c".into(), script.into()],
            Duration::from_millis(timeout_ms),
        )
    }

    #[test]
    fn parses_common_output_shapes() {
        assert_eq!(first_number("612\n"), Some(612.0));
        assert_eq!(first_number("co2=612.5 ppm"), Some(612.5));
        assert_eq!(first_number("CO2: 700, T: 21.3"), Some(700.0));
        assert_eq!(first_number("sensor warming up"), None);
        assert_eq!(first_number("inf NaN 5"), Some(5.0));
    }

    #[test]
    fn reads_a_number_from_a_program() {
        assert_eq!(sh("echo 'co2=612'", 5000).read().unwrap(), 612.0);
    }

    #[test]
    fn failing_program_and_garbage_are_errors() {
        let err = sh("echo broken >&2; exit 3", 5000).read().unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        let err = sh("echo hello", 5000).read().unwrap_err();
        assert!(err.to_string().contains("no number"), "{err}");
        let err = CommandSensor::new("/nonexistent/x".into(), vec![], Duration::from_secs(1))
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
    }

    #[test]
    fn timeout_kills_the_program_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // The grandchild would write the marker if it outlived the timeout.
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let err = sh(&script, 200).read().unwrap_err();
        assert!(matches!(err, SensorError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "a child of the timed-out program survived"
        );
    }
}
