//! The state file: the running publisher rewrites it atomically every
//! `status.interval_ms` (a temporary file renamed over the old one), and
//! `co2-publisher status` reads it. No second instance, no lock on the queue.
//! By default it lives in `/run` (RAM): it costs the SD card nothing and
//! still works when the card is full or read-only.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{ClockSnapshot, Phase};
use crate::queue::{QueueSnapshot, Store};

/// Version of the file's layout.
pub const STATUS_VERSION: u32 = 1;

/// Everything `co2-publisher status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_VERSION`].
    pub version: u32,
    /// The publisher's process id.
    pub pid: u32,
    /// Its device id.
    pub device: String,
    /// When it started (system clock).
    pub started_at: DateTime<Utc>,
    /// When this was written (system clock).
    pub written_at: DateTime<Utc>,
    /// Milliseconds between rewrites: older than a few of these means stale.
    pub interval_ms: u64,
    /// False in the last write, at exit.
    pub running: bool,
    /// The broker connection.
    pub broker: BrokerStatus,
    /// The queue.
    pub queue: QueueSnapshot,
    /// Readings dropped by the bounds, by cause.
    pub dropped: DroppedStatus,
    /// Damaged queue files.
    pub salvage: SalvageStatus,
    /// Times the queue went to memory.
    pub memory_mode_entries: u64,
    /// The clock.
    pub clock: ClockSnapshot,
    /// Counters since start.
    pub counters: Counters,
    /// The last error a person should know about.
    pub last_error: Option<ErrorNote>,
}

/// The broker connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// `host:port`.
    pub address: String,
    /// `v5` or `v311`.
    pub protocol: String,
    /// Connected now.
    pub connected: bool,
    /// When the last PUBACK arrived.
    pub last_puback: Option<DateTime<Utc>>,
}

/// Readings dropped since start, by cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedStatus {
    /// `queue.max_rows`.
    pub max_rows: u64,
    /// `queue.max_age_s`.
    pub max_age: u64,
    /// `queue.memory_max_rows`.
    pub memory_bound: u64,
}

/// Damaged queue files since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageStatus {
    /// Files moved aside.
    pub corrupt_files: u64,
    /// Readings salvaged from them.
    pub salvaged: u64,
    /// The last recovery, in words.
    pub last: Option<String>,
}

/// Counters since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Readings queued.
    pub queued: u64,
    /// Publishes sent.
    pub published: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Publishes the broker refused.
    pub refused: u64,
    /// Failed sensor reads.
    pub sensor_errors: u64,
    /// Connections made.
    pub connects: u64,
    /// Connections given up for want of a PUBACK (absent in files of older versions).
    #[serde(default)]
    pub ack_timeouts: u64,
    /// Announcements queued.
    pub events_queued: u64,
    /// Announcements dropped by their own bound.
    pub events_dropped: u64,
}

/// An error and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNote {
    /// When (system clock).
    pub at: DateTime<Utc>,
    /// What.
    pub message: String,
}

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No file: the publisher never ran with this configuration (or `/run` was cleared by a reboot).
    #[error(
        "no status file at {0}: is co2-publisher running with this configuration (status.path)?"
    )]
    Missing(PathBuf),
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a status file of this version.
    #[error("{path} is not a status file this version understands: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Writes `status` to `path` atomically: readers see the old or the new file, never half of one.
pub fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    // Readable by anyone on the Pi (no secrets in it), whatever the service's umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    // No fsync: it lives in RAM by default, and a torn file after a power
    // cut is rewritten within one interval anyway.
    std::fs::rename(&tmp, path)
}

/// Reads the state file.
pub fn read(path: &Path) -> Result<Status, StatusError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => StatusError::Missing(path.to_owned()),
        _ => StatusError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StatusError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Whether process `pid` exists.
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // It exists, but belongs to another user (the service's dynamic user).
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// How the file's writer is doing, judged from the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running and rewriting the file.
    Running,
    /// The process exists but has not rewritten the file for a while.
    Stale,
    /// It stopped (cleanly: the file says so; or not: the process is gone).
    Stopped,
}

/// Judges liveness at `now`, given whether the pid still exists.
pub fn liveness(status: &Status, now: DateTime<Utc>, alive: bool) -> Liveness {
    let age_ms = (now - status.written_at).num_milliseconds();
    let stale_after = i64::try_from(status.interval_ms.saturating_mul(3))
        .unwrap_or(i64::MAX)
        .saturating_add(5_000);
    if !status.running || !alive {
        Liveness::Stopped
    } else if age_ms > stale_after {
        Liveness::Stale
    } else {
        Liveness::Running
    }
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds();
    match s {
        s if s < 0 => format!("{} s in the future", -s),
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

fn at(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), ago(now, t))
}

/// The human-readable form `co2-publisher status` prints.
pub fn render(s: &Status, now: DateTime<Utc>, alive: bool) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("{label:<11} {text}\n"));
    };
    let state = match liveness(s, now, alive) {
        Liveness::Running => format!("running (pid {})", s.pid),
        Liveness::Stale => format!(
            "NOT RESPONDING (pid {} exists, but the status is {} old)",
            s.pid,
            ago(now, s.written_at)
        ),
        Liveness::Stopped if s.running => format!(
            "NOT RUNNING (pid {} is gone; it did not stop cleanly)",
            s.pid
        ),
        Liveness::Stopped => "stopped".to_owned(),
    };
    line(
        "publisher",
        format!(
            "{} {state}; status written {}",
            s.device,
            at(now, s.written_at)
        ),
    );
    let q = &s.queue;
    let oldest = q
        .oldest_reading_ms
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| format!("; oldest {}", at(now, t)))
        .unwrap_or_default();
    let store = match q.store {
        Store::Disk => format!("on disk ({})", q.path.display()),
        Store::Memory => "IN MEMORY (the disk cannot be written)".to_owned(),
    };
    line(
        "queue",
        format!(
            "{} readings, {} announcements waiting {store}{oldest}",
            q.readings, q.events
        ),
    );
    if let Some(m) = &q.memory {
        line(
            "",
            format!(
                "memory mode for {} s: {}; {}/{} held (most {}); {} stranded on disk; disk retried in {} s",
                m.for_s,
                m.reason,
                m.readings,
                m.max_readings,
                m.high_water,
                m.stranded.map_or("unknown".to_owned(), |n| n.to_string()),
                m.next_retry_s
            ),
        );
    }
    let b = &s.broker;
    line(
        "broker",
        format!(
            "{} {} (MQTT {}); last PUBACK {}",
            if b.connected {
                "connected to"
            } else {
                "NOT connected to"
            },
            b.address,
            b.protocol,
            b.last_puback.map_or("never".to_owned(), |t| at(now, t))
        ),
    );
    line(
        "numbering",
        match (&q.epoch, q.last_seq) {
            (Some(e), Some(n)) => format!("epoch {e}, last number {n}"),
            (Some(e), None) => format!("epoch {e}, nothing numbered yet"),
            _ => "unknown".to_owned(),
        },
    );
    let d = &s.dropped;
    line(
        "dropped",
        format!(
            "{} by queue.max_rows, {} by queue.max_age_s, {} by queue.memory_max_rows; {} not announced yet",
            d.max_rows, d.max_age, d.memory_bound, q.drops_pending
        ),
    );
    line(
        "salvaged",
        format!(
            "{} readings from {} damaged queue files; memory mode entered {} times{}",
            s.salvage.salvaged,
            s.salvage.corrupt_files,
            s.memory_mode_entries,
            s.salvage
                .last
                .as_ref()
                .map(|l| format!("; last: {l}"))
                .unwrap_or_default()
        ),
    );
    let c = &s.clock;
    let jump = c
        .last_jump
        .as_ref()
        .map(|j| {
            format!(
                "; last jump {:+} ms (clock said {}, expected {})",
                j.by_ms,
                j.wall.format("%Y-%m-%d %H:%M:%S"),
                j.expected.format("%Y-%m-%d %H:%M:%S")
            )
        })
        .unwrap_or_default();
    line(
        "clock",
        match c.phase {
            Phase::Waiting => "waiting for a plausible, synchronised clock: nothing is stamped yet".to_owned(),
            Phase::Trusted => format!("trusted; {} jumps{jump}", c.jumps),
            Phase::Holdover => format!(
                "JUMPED: stamping from the last trusted time (system clock is {:+} ms off); {} jumps{jump}",
                c.offset_ms, c.jumps
            ),
        },
    );
    let k = &s.counters;
    line(
        "counters",
        format!(
            "{} queued, {} published, {} acked, {} refused, {} sensor errors, {} connections, {} PUBACK timeouts",
            k.queued, k.published, k.acked, k.refused, k.sensor_errors, k.connects, k.ack_timeouts
        ),
    );
    line(
        "last error",
        s.last_error.as_ref().map_or("none".to_owned(), |e| {
            format!("{} at {}", e.message, at(now, e.at))
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Status {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        Status {
            version: STATUS_VERSION,
            pid: std::process::id(),
            device: "pi-kitchen".into(),
            started_at: t,
            written_at: t,
            interval_ms: 2000,
            running: true,
            broker: BrokerStatus {
                address: "10.0.0.5:1883".into(),
                protocol: "v5".into(),
                connected: false,
                last_puback: Some(t - chrono::Duration::seconds(30)),
            },
            queue: QueueSnapshot {
                store: Store::Memory,
                path: "/var/lib/co2-publisher/queue.sqlite3".into(),
                readings: 12,
                events: 1,
                oldest_reading_ms: Some((t - chrono::Duration::minutes(3)).timestamp_millis()),
                epoch: Some("3f9a0c11d2e4b5a6".into()),
                last_seq: Some(1042),
                drops_pending: 2,
                memory: Some(crate::queue::MemorySnapshot {
                    reason: "database or disk is full".into(),
                    for_s: 40,
                    readings: 12,
                    max_readings: 20000,
                    high_water: 12,
                    stranded: Some(300),
                    next_retry_s: 20,
                }),
            },
            dropped: DroppedStatus {
                max_rows: 0,
                max_age: 0,
                memory_bound: 2,
            },
            salvage: SalvageStatus {
                corrupt_files: 0,
                salvaged: 0,
                last: None,
            },
            memory_mode_entries: 1,
            clock: ClockSnapshot {
                phase: Phase::Trusted,
                jumps: 0,
                last_jump: None,
                offset_ms: 0,
            },
            counters: Counters {
                queued: 1042,
                published: 1030,
                acked: 1029,
                refused: 0,
                sensor_errors: 1,
                connects: 2,
                ack_timeouts: 0,
                events_queued: 1,
                events_dropped: 0,
            },
            last_error: Some(ErrorNote {
                at: t - chrono::Duration::seconds(40),
                message: "queue: database or disk is full".into(),
            }),
        }
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/status.json");
        let s = sample();
        write(&path, &s).unwrap();
        assert_eq!(read(&path).unwrap(), s);
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(matches!(
            read(&dir.path().join("none")),
            Err(StatusError::Missing(_))
        ));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(read(&path), Err(StatusError::Invalid { .. })));
    }

    #[test]
    fn the_human_form_says_what_matters() {
        let s = sample();
        let text = render(&s, s.written_at + chrono::Duration::seconds(1), true);
        for want in [
            "pi-kitchen running",
            "12 readings, 1 announcements waiting IN MEMORY",
            "12/20000 held",
            "300 stranded on disk",
            "NOT connected to 10.0.0.5:1883",
            "last PUBACK 2026-03-01 11:59:30 UTC (31 s ago)",
            "epoch 3f9a0c11d2e4b5a6, last number 1042",
            "2 by queue.memory_max_rows; 2 not announced yet",
            "oldest 2026-03-01 11:57:00 UTC",
            "clock       trusted",
            "queue: database or disk is full",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let later = s.written_at + chrono::Duration::seconds(60);
        assert_eq!(liveness(&s, later, true), Liveness::Stale);
        assert!(render(&s, later, false).contains("NOT RUNNING"));
        assert!(process_alive(std::process::id()));
    }
}
