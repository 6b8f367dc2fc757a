//! Clock sanity for the whole run.
//!
//! At start ([`ClockGate`]): a Pi has no RTC and can boot with a clock in the
//! past, so nothing is stamped until the time is plausible (not before a
//! floor) and, if required, the system says it is synchronised.
//!
//! Then ([`Timekeeper`]): between two readings the wall clock must advance
//! like the monotonic clock (within `clock.max_jump_ms`). A clock that steps
//! backwards, or forwards further than time passed (a wrong manual set, an
//! NTP step the gate did not wait for), is a jump: it is logged and
//! announced, and readings are stamped in *holdover*, from the last trusted
//! time plus the monotonic time elapsed, never with the jumped time. Holdover
//! ends when the wall clock agrees with the held-over time again, or, with
//! `clock.require_sync`, when the system reports its clock synchronised
//! (then the wall clock is the better one, and it is believed).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use co2_wire::EventKind;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::ClockSettings;

/// The wall clock; tests inject one that jumps.
pub trait WallClock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

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
    clock: Arc<dyn WallClock>,
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
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The floor: no plausible time is earlier.
    pub fn floor(&self) -> DateTime<Utc> {
        self.floor
    }

    /// Between checks while waiting.
    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// Whether the probe's word is needed to trust the clock.
    pub fn require_sync(&self) -> bool {
        self.require_sync
    }

    /// Asks the probe (see [`SyncProbe`]).
    pub async fn probe(&self) -> SyncState {
        self.probe.probe().await
    }

    /// One check. A probe that cannot tell does not block: the floor still
    /// applies, and [`ClockGate::wait`] logs that sync could not be checked.
    pub async fn check(&self) -> (Verdict, Option<String>) {
        let now = self.clock.now();
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
                        tracing::info!(now = %self.clock.now(), "Clock is plausible now; stamping readings");
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

/// Where the [`Timekeeper`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The start gate has not passed: nothing is stamped.
    Waiting,
    /// Stamping from the wall clock.
    Trusted,
    /// Stamping from the last trusted time plus monotonic time, after a jump.
    Holdover,
}

/// The last jump seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jump {
    /// Wall clock minus the expected time, in ms (positive: forward).
    pub by_ms: i64,
    /// What the wall clock said.
    pub wall: DateTime<Utc>,
    /// What it should have said.
    pub expected: DateTime<Utc>,
}

/// The clock's state, for the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSnapshot {
    /// Waiting, trusted or holdover.
    pub phase: Phase,
    /// Jumps detected in this run.
    pub jumps: u64,
    /// The last one.
    pub last_jump: Option<Jump>,
    /// Wall clock minus the time readings get now, in ms (0 unless in holdover).
    pub offset_ms: i64,
}

#[derive(Debug)]
struct Keeper {
    phase: Phase,
    /// The last trusted wall time and the monotonic instant it was read at.
    anchor: Option<(DateTime<Utc>, Instant)>,
    jumps: u64,
    last_jump: Option<Jump>,
}

/// The time readings are stamped with, checked against the monotonic clock
/// at every reading (see the module docs).
pub struct Timekeeper {
    wall: Arc<dyn WallClock>,
    max_jump: chrono::Duration,
    state: Mutex<Keeper>,
}

impl Timekeeper {
    /// A keeper reading `wall`, allowing `max_jump` between wall and monotonic time.
    pub fn new(wall: Arc<dyn WallClock>, max_jump: Duration) -> Self {
        Self {
            wall,
            max_jump: chrono::Duration::from_std(max_jump).unwrap_or(chrono::Duration::MAX),
            state: Mutex::new(Keeper {
                phase: Phase::Waiting,
                anchor: None,
                jumps: 0,
                last_jump: None,
            }),
        }
    }

    /// The wall clock it reads.
    pub fn wall(&self) -> Arc<dyn WallClock> {
        Arc::clone(&self.wall)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keeper> {
        // A panic elsewhere while holding the lock leaves consistent data: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The start gate passed: trust the wall clock from now on.
    pub fn start(&self) {
        let mut k = self.lock();
        k.phase = Phase::Trusted;
        k.anchor = Some((self.wall.now(), Instant::now()));
    }

    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    fn expected(k: &Keeper, mono: Instant) -> Option<DateTime<Utc>> {
        let (wall, at) = k.anchor?;
        let elapsed = chrono::Duration::from_std(mono.saturating_duration_since(at)).ok()?;
        wall.checked_add_signed(elapsed)
    }

    /// The best time now (for events and the age bound): the wall clock
    /// when it agrees with the monotonic clock, the held-over time when not,
    /// `None` before the start gate passed. Changes nothing: only a reading
    /// ([`Timekeeper::reading_time`]) declares a jump.
    pub fn now(&self) -> Option<DateTime<Utc>> {
        let k = self.lock();
        let wall = self.wall.now();
        let expected = Self::expected(&k, Instant::now());
        match (k.phase, expected) {
            (Phase::Waiting, _) | (_, None) => None,
            (Phase::Trusted, Some(e)) if (wall - e).abs() <= self.max_jump => Some(wall),
            (_, Some(e)) => Some(e),
        }
    }

    /// The time for a reading taken now, and the event to announce if the
    /// clock jumped or came back. `synced`: the system's word on its clock,
    /// when asked (only needed in holdover). `floor`: no trusted time is earlier.
    pub fn reading_time(
        &self,
        synced: Option<bool>,
        floor: DateTime<Utc>,
    ) -> (DateTime<Utc>, Option<EventKind>) {
        let mut k = self.lock();
        let wall = self.wall.now();
        let mono = Instant::now();
        let Some(expected) = Self::expected(&k, mono) else {
            // Not started (cannot happen once the gate passed): trust, anchor.
            k.phase = Phase::Trusted;
            k.anchor = Some((wall, mono));
            return (wall, None);
        };
        let off = wall - expected;
        let agrees = off.abs() <= self.max_jump && wall >= floor;
        match k.phase {
            Phase::Trusted | Phase::Waiting if agrees => {
                k.phase = Phase::Trusted;
                k.anchor = Some((wall, mono));
                (wall, None)
            }
            Phase::Trusted | Phase::Waiting => {
                k.phase = Phase::Holdover;
                k.jumps += 1;
                let jump = Jump {
                    by_ms: off.num_milliseconds(),
                    wall,
                    expected,
                };
                k.last_jump = Some(jump.clone());
                (
                    expected,
                    Some(EventKind::ClockJump {
                        by_ms: jump.by_ms,
                        wall,
                        expected,
                    }),
                )
            }
            Phase::Holdover if agrees || (synced == Some(true) && wall >= floor) => {
                k.phase = Phase::Trusted;
                k.anchor = Some((wall, mono));
                (
                    wall,
                    Some(EventKind::ClockResync {
                        offset_ms: off.num_milliseconds(),
                    }),
                )
            }
            Phase::Holdover => (expected, None),
        }
    }

    /// The state, for the status file.
    pub fn snapshot(&self) -> ClockSnapshot {
        let k = self.lock();
        let offset_ms = match (k.phase, Self::expected(&k, Instant::now())) {
            (Phase::Holdover, Some(e)) => (self.wall.now() - e).num_milliseconds(),
            _ => 0,
        };
        ClockSnapshot {
            phase: k.phase,
            jumps: k.jumps,
            last_jump: k.last_jump.clone(),
            offset_ms,
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
        let gate = ClockGate::new(y2026(), true, Duration::from_millis(1), probe)
            .with_clock(Arc::new(Fixed(boot_in_1970())));
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

    /// A wall clock at a fixed time.
    struct Fixed(DateTime<Utc>);

    impl WallClock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    /// The system clock plus an offset the test moves.
    #[derive(Default)]
    struct Jumpy(std::sync::atomic::AtomicI64);

    impl WallClock for Jumpy {
        fn now(&self) -> DateTime<Utc> {
            Utc::now() + chrono::Duration::milliseconds(self.0.load(Ordering::SeqCst))
        }
    }

    fn keeper() -> (Arc<Jumpy>, Timekeeper) {
        let wall = Arc::new(Jumpy::default());
        let tk = Timekeeper::new(wall.clone(), Duration::from_millis(500));
        (wall, tk)
    }

    fn near(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        (a - b).abs() < chrono::Duration::milliseconds(200)
    }

    #[test]
    fn a_jump_either_way_is_held_over_and_announced_once() {
        for by in [86_400_000i64, -3_600_000] {
            let (wall, tk) = keeper();
            assert_eq!(tk.now(), None, "nothing before the gate");
            tk.start();
            let (t, event) = tk.reading_time(None, DateTime::UNIX_EPOCH);
            assert!(near(t, Utc::now()) && event.is_none());
            wall.0.store(by, Ordering::SeqCst);
            let (t, event) = tk.reading_time(None, DateTime::UNIX_EPOCH);
            assert!(near(t, Utc::now()), "stamped {t}, not the jumped time");
            assert!(
                matches!(event, Some(EventKind::ClockJump { by_ms, .. }) if (by_ms - by).abs() < 200),
                "{event:?}"
            );
            assert_eq!(tk.phase(), Phase::Holdover);
            assert!(near(tk.now().unwrap(), Utc::now()));
            // Still off: held over, not announced again.
            let (t, event) = tk.reading_time(Some(false), DateTime::UNIX_EPOCH);
            assert!(near(t, Utc::now()) && event.is_none());
            assert_eq!(tk.snapshot().jumps, 1);
            assert!((tk.snapshot().offset_ms - by).abs() < 200);
            // The clock comes back: trusted again, announced.
            wall.0.store(0, Ordering::SeqCst);
            let (t, event) = tk.reading_time(None, DateTime::UNIX_EPOCH);
            assert!(near(t, Utc::now()));
            assert!(
                matches!(event, Some(EventKind::ClockResync { .. })),
                "{event:?}"
            );
            assert_eq!(tk.phase(), Phase::Trusted);
        }
    }

    #[test]
    fn a_synchronised_system_clock_ends_holdover_at_its_time() {
        let (wall, tk) = keeper();
        tk.start();
        wall.0.store(60_000, Ordering::SeqCst);
        assert!(tk.reading_time(None, DateTime::UNIX_EPOCH).1.is_some());
        let (t, event) = tk.reading_time(Some(true), DateTime::UNIX_EPOCH);
        assert!(near(t, Utc::now() + chrono::Duration::seconds(60)));
        assert!(matches!(event, Some(EventKind::ClockResync { offset_ms }) if offset_ms > 59_000));
        // ... but never below the floor.
        let (wall, tk) = keeper();
        tk.start();
        wall.0.store(-86_400_000 * 365, Ordering::SeqCst);
        tk.reading_time(None, DateTime::UNIX_EPOCH);
        let floor = Utc::now() - chrono::Duration::days(30);
        let (t, event) = tk.reading_time(Some(true), floor);
        assert!(near(t, Utc::now()) && event.is_none());
    }

    #[tokio::test]
    async fn command_probe_runs_a_program() {
        let yes = CommandProbe::new(vec!["echo".into(), "yes".into()]);
        assert_eq!(yes.probe().await, SyncState::Synced);
        let missing = CommandProbe::new(vec!["/nonexistent/timedatectl".into()]);
        assert!(matches!(missing.probe().await, SyncState::Unknown(_)));
    }
}
