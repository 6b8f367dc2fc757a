//! Clock sanity: a Pi has no RTC and can boot with a clock in the past, so
//! nothing is stamped until the time is plausible (not before a floor) and,
//! if required, the system says it is synchronised.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::ClockSettings;

/// When this program was built (Unix seconds, from build.rs): no real reading is older.
pub fn build_time() -> DateTime<Utc> {
    env!("CO2_PUBLISHER_BUILD_EPOCH")
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// What a synchronisation probe found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// The system says its clock is synchronised.
    Synced,
    /// The system says it is not (yet).
    NotSynced,
    /// The probe could not tell (no timedatectl, no systemd, ...).
    Unknown(String),
}

/// Asks the system whether its clock is synchronised; pluggable for tests.
pub trait SyncProbe: Send + Sync {
    /// One check.
    fn probe(&self) -> impl Future<Output = SyncState> + Send;
}

/// Runs a program (default `timedatectl show -p NTPSynchronized --value`)
/// that prints `yes`/`true`/`1` when synchronised and `no`/`false`/`0` when not.
#[derive(Debug, Clone)]
pub struct CommandProbe {
    argv: Vec<String>,
}

impl CommandProbe {
    /// A probe running `argv[0]` with the rest as arguments.
    pub fn new(argv: Vec<String>) -> Self {
        Self { argv }
    }
}

/// Reads a probe's output.
pub fn parse_sync_output(output: &str) -> SyncState {
    match output.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "synced" => SyncState::Synced,
        "no" | "false" | "0" | "unsynced" => SyncState::NotSynced,
        other => SyncState::Unknown(format!("unexpected output {other:?}")),
    }
}

impl SyncProbe for CommandProbe {
    async fn probe(&self) -> SyncState {
        let Some((program, args)) = self.argv.split_first() else {
            return SyncState::Unknown("no sync command configured".into());
        };
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(5), child).await {
            Err(_) => SyncState::Unknown(format!("{program} did not answer within 5 s")),
            Ok(Err(e)) => SyncState::Unknown(format!("cannot run {program}: {e}")),
            Ok(Ok(out)) if !out.status.success() => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                SyncState::Unknown(format!(
                    "{program} exited with {}: {}",
                    out.status,
                    stderr.lines().next().unwrap_or("").trim()
                ))
            }
            Ok(Ok(out)) => parse_sync_output(&String::from_utf8_lossy(&out.stdout)),
        }
    }
}

/// Whether readings may be stamped now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stamp away.
    Plausible,
    /// The clock reads earlier than the floor: it cannot be right.
    BeforeFloor {
        /// What the clock says.
        now: DateTime<Utc>,
        /// The floor.
        floor: DateTime<Utc>,
    },
    /// The system reports its clock unsynchronised.
    NotSynced,
}

/// Decides when the clock may be trusted; [`ClockGate::wait`] blocks until it may.
pub struct ClockGate<P> {
    floor: DateTime<Utc>,
    require_sync: bool,
    poll: Duration,
    probe: P,
    now: fn() -> DateTime<Utc>,
}

impl ClockGate<CommandProbe> {
    /// The gate `[clock]` describes.
    pub fn from_settings(settings: &ClockSettings) -> Self {
        Self::new(
            settings.min_time.unwrap_or_else(build_time),
            settings.require_sync,
            Duration::from_secs(settings.poll_s),
            CommandProbe::new(settings.sync_command.clone()),
        )
    }
}

impl<P: SyncProbe> ClockGate<P> {
    /// A gate with a floor, a sync requirement and a probe, reading the system clock.
    pub fn new(floor: DateTime<Utc>, require_sync: bool, poll: Duration, probe: P) -> Self {
        Self {
            floor,
            require_sync,
            poll,
            probe,
            now: Utc::now,
        }
    }

    /// Replaces the clock (tests).
    pub fn with_now(mut self, now: fn() -> DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// One check. A probe that cannot tell does not block: the floor still
    /// applies, and [`ClockGate::wait`] logs that sync could not be checked.
    pub async fn check(&self) -> (Verdict, Option<String>) {
        let now = (self.now)();
        if now < self.floor {
            return (
                Verdict::BeforeFloor {
                    now,
                    floor: self.floor,
                },
                None,
            );
        }
        if !self.require_sync {
            return (Verdict::Plausible, None);
        }
        match self.probe.probe().await {
            SyncState::Synced => (Verdict::Plausible, None),
            SyncState::NotSynced => (Verdict::NotSynced, None),
            SyncState::Unknown(why) => (Verdict::Plausible, Some(why)),
        }
    }

    /// Waits until the clock is plausible; says why once while waiting.
    /// Returns false if cancelled first.
    pub async fn wait(&self, cancel: &CancellationToken) -> bool {
        let mut told = false;
        loop {
            let (verdict, unknown) = self.check().await;
            if let Some(why) = unknown {
                tracing::warn!(
                    reason = %why,
                    "Cannot tell whether the clock is synchronised; trusting it because it is past clock.min_time (set clock.require_sync = false to skip the check)"
                );
            }
            match verdict {
                Verdict::Plausible => {
                    if told {
                        tracing::info!(now = %(self.now)(), "Clock is plausible now; stamping readings");
                    }
                    return true;
                }
                Verdict::BeforeFloor { now, floor } if !told => {
                    tracing::warn!(%now, %floor, "Clock reads earlier than clock.min_time; not stamping readings until it is set");
                    told = true;
                }
                Verdict::NotSynced if !told => {
                    tracing::warn!("Clock is not synchronised yet (clock.sync_command); not stamping readings until it is");
                    told = true;
                }
                _ => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Answers from a script, then repeats the last answer.
    struct Scripted {
        answers: Vec<SyncState>,
        calls: Arc<AtomicUsize>,
    }

    impl SyncProbe for Scripted {
        async fn probe(&self) -> SyncState {
            let i = self.calls.fetch_add(1, Ordering::SeqCst);
            self.answers[i.min(self.answers.len() - 1)].clone()
        }
    }

    fn scripted(answers: Vec<SyncState>) -> (Scripted, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Scripted {
                answers,
                calls: Arc::clone(&calls),
            },
            calls,
        )
    }

    fn y2026() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn boot_in_1970() -> DateTime<Utc> {
        DateTime::UNIX_EPOCH
    }

    #[test]
    fn probe_output_is_read() {
        assert_eq!(parse_sync_output("yes\n"), SyncState::Synced);
        assert_eq!(parse_sync_output("no\n"), SyncState::NotSynced);
        assert!(matches!(parse_sync_output("maybe"), SyncState::Unknown(_)));
    }

    #[test]
    fn build_time_is_recent() {
        assert!(build_time() > y2026() - chrono::Duration::days(3650));
    }

    #[tokio::test]
    async fn a_clock_before_the_floor_is_refused_without_asking_the_probe() {
        let (probe, calls) = scripted(vec![SyncState::Synced]);
        let gate =
            ClockGate::new(y2026(), true, Duration::from_millis(1), probe).with_now(boot_in_1970);
        assert!(matches!(gate.check().await.0, Verdict::BeforeFloor { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn waits_until_synchronised() {
        let (probe, calls) = scripted(vec![
            SyncState::NotSynced,
            SyncState::NotSynced,
            SyncState::Synced,
        ]);
        let gate = ClockGate::new(DateTime::UNIX_EPOCH, true, Duration::from_millis(1), probe);
        assert!(gate.wait(&CancellationToken::new()).await);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn sync_not_required_or_unknown_does_not_block() {
        let (probe, calls) = scripted(vec![SyncState::NotSynced]);
        let gate = ClockGate::new(DateTime::UNIX_EPOCH, false, Duration::from_millis(1), probe);
        assert_eq!(gate.check().await.0, Verdict::Plausible);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let (probe, _) = scripted(vec![SyncState::Unknown("no systemd".into())]);
        let gate = ClockGate::new(DateTime::UNIX_EPOCH, true, Duration::from_millis(1), probe);
        let (verdict, why) = gate.check().await;
        assert_eq!(verdict, Verdict::Plausible);
        assert_eq!(why.as_deref(), Some("no systemd"));
    }

    #[tokio::test]
    async fn waiting_can_be_cancelled() {
        let (probe, _) = scripted(vec![SyncState::NotSynced]);
        let gate = ClockGate::new(DateTime::UNIX_EPOCH, true, Duration::from_secs(60), probe);
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!gate.wait(&cancel).await);
    }

    #[tokio::test]
    async fn command_probe_runs_a_program() {
        let yes = CommandProbe::new(vec!["echo".into(), "yes".into()]);
        assert_eq!(yes.probe().await, SyncState::Synced);
        let missing = CommandProbe::new(vec!["/nonexistent/timedatectl".into()]);
        assert!(matches!(missing.probe().await, SyncState::Unknown(_)));
    }
}
