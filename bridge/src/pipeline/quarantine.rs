//! The crash quarantine: a message that crashed the bridge must not crash it
//! again forever on redelivery.
//!
//! Nothing is acknowledged before it is stored, so a message whose handling
//! panics the commit or intake task comes back after the restart, and would
//! crash the bridge again, and again. When one of those tasks panics, the
//! supervisor records the fingerprints of the messages it held (one strike
//! each) in a small file that survives the restart. Then:
//! - a message with one strike is written in a batch of its own, so that if
//!   it crashes the bridge again, it alone gets the second strike;
//! - a message with two strikes is not decoded or written at all: it becomes a
//!   dead letter (`crashed_bridge`) and is acknowledged;
//! - a quarantined message that is stored (as rows or as a dead letter) leaves
//!   the quarantine.
//!
//! So a poison message costs at most two restarts, and the innocent messages
//! of its batch are stored normally. A file that cannot be read or written
//! only disables the quarantine, with a warning: it never stops the bridge.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Strikes after which a message is dead-lettered without being handled.
const REFUSE_AT: u8 = 2;

/// Fingerprints kept at most, so a crash loop cannot grow the file without bound.
const MAX_ENTRIES: usize = 100_000;

/// What to do with a message, given its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never involved in a crash: handle it normally.
    Clear,
    /// In a batch that crashed the bridge once: handle it alone.
    Isolate,
    /// Crashed the bridge on its own: dead-letter it unhandled.
    Refuse,
}

/// Fingerprints of messages that were in flight when the bridge crashed.
#[derive(Debug)]
pub struct Quarantine {
    path: Option<PathBuf>,
    strikes: Mutex<HashMap<u64, u8>>,
    /// Entries, readable without the lock: the common case is an empty quarantine.
    len: AtomicUsize,
}

/// A stable 64-bit fingerprint (FNV-1a) of where a message came from and its payload.
pub fn fingerprint(source: &[u8], payload: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    // FNV-1a. The length separates source from payload: ("ab", "c") is not
    // ("a", "bc"). One loop per part: a chained iterator made this a fifth of
    // the intake's work per reading.
    let len = (source.len() as u64).to_le_bytes();
    [len.as_slice(), source, payload]
        .into_iter()
        .fold(OFFSET, |hash, part| {
            part.iter()
                .fold(hash, |h, &byte| (h ^ u64::from(byte)).wrapping_mul(PRIME))
        })
}

impl Quarantine {
    /// The quarantine kept in `path` (created on the first crash). A file that
    /// cannot be read is set aside with a warning and the quarantine starts empty.
    pub fn load(path: PathBuf) -> Self {
        let strikes = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Cannot read the crash quarantine; starting with an empty one");
                HashMap::new()
            }
        };
        if !strikes.is_empty() {
            let refused = strikes.values().filter(|s| **s >= REFUSE_AT).count();
            tracing::warn!(
                path = %path.display(),
                messages = strikes.len(),
                refused,
                "The bridge crashed last time: messages it held are handled one at a time, \
                 and those that crashed it twice are dead-lettered as crashed_bridge"
            );
        }
        Self {
            len: AtomicUsize::new(strikes.len()),
            path: Some(path),
            strikes: Mutex::new(strikes),
        }
    }

    /// The verdict for a message with this fingerprint.
    pub fn verdict(&self, fingerprint: u64) -> Verdict {
        if self.len.load(Ordering::Acquire) == 0 {
            return Verdict::Clear;
        }
        match self.lock().get(&fingerprint) {
            None => Verdict::Clear,
            Some(s) if *s >= REFUSE_AT => Verdict::Refuse,
            Some(_) => Verdict::Isolate,
        }
    }

    /// True when no message is quarantined.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Gives every message of a crashed batch one more strike, and saves.
    pub fn record_crash(&self, fingerprints: &[u64]) {
        if fingerprints.is_empty() {
            return;
        }
        let mut strikes = self.lock();
        for fp in fingerprints {
            if strikes.len() >= MAX_ENTRIES && !strikes.contains_key(fp) {
                break;
            }
            let s = strikes.entry(*fp).or_insert(0);
            *s = s.saturating_add(1);
        }
        self.len.store(strikes.len(), Ordering::Release);
        self.save(&strikes, true);
    }

    /// Forgets messages that were stored; saves if that changed anything.
    pub fn release(&self, fingerprints: &[u64]) {
        if self.is_empty() {
            return;
        }
        let mut strikes = self.lock();
        let before = strikes.len();
        for fp in fingerprints {
            strikes.remove(fp);
        }
        if strikes.len() != before {
            self.len.store(strikes.len(), Ordering::Release);
            self.save(&strikes, false);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u8>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.strikes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, strikes: &HashMap<u64, u8>, sync: bool) {
        let Some(path) = &self.path else { return };
        if let Err(e) = write_atomically(path, &render(strikes), sync) {
            tracing::warn!(path = %path.display(), error = %e, "Cannot save the crash quarantine; a poison message could crash the bridge again after a restart");
        }
    }
}

fn render(strikes: &HashMap<u64, u8>) -> String {
    let mut text = String::from("# co2-bridge crash quarantine: <fingerprint> <strikes>\n");
    for (fp, s) in strikes {
        text.push_str(&format!("{fp:016x} {s}\n"));
    }
    text
}

fn parse(text: &str) -> HashMap<u64, u8> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (fp, strikes) = line.split_once(' ')?;
            Some((
                u64::from_str_radix(fp, 16).ok()?,
                strikes.trim().parse().ok()?,
            ))
        })
        .take(MAX_ENTRIES)
        .collect()
}

/// Writes `text` next to `path` and renames it over, so a crash while writing
/// leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str, sync: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_strikes_and_out_and_stored_messages_leave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quarantine");
        let q = Quarantine::load(path.clone());
        assert_eq!(q.verdict(1), Verdict::Clear);
        q.record_crash(&[1, 2, 3]);
        let q = Quarantine::load(path.clone());
        assert_eq!(
            [q.verdict(1), q.verdict(2), q.verdict(4)],
            [Verdict::Isolate, Verdict::Isolate, Verdict::Clear]
        );
        q.release(&[2, 3]);
        q.record_crash(&[1]);
        let q = Quarantine::load(path.clone());
        assert_eq!(
            [q.verdict(1), q.verdict(2)],
            [Verdict::Refuse, Verdict::Clear]
        );
        q.release(&[1]);
        assert!(Quarantine::load(path).is_empty());
    }

    #[test]
    fn a_damaged_file_means_an_empty_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quarantine");
        std::fs::write(&path, b"\xff\xfe garbage\nzz 9\n0000000000000001 x\n").unwrap();
        assert!(Quarantine::load(path).is_empty());
    }

    #[test]
    fn fingerprints_separate_source_and_payload() {
        assert_ne!(fingerprint(b"ab", b"c"), fingerprint(b"a", b"bc"));
        assert_eq!(fingerprint(b"t", b"p"), fingerprint(b"t", b"p"));
    }

    /// Fingerprints outlive the process in the quarantine file: they must
    /// not change between releases. Values computed by the first version.
    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(b"", b""), 0xa8c7_f832_281a_39c5);
        assert_eq!(
            fingerprint(b"co2/dev-01/emissions", b"2020-07-13 22:43:23|3500.00"),
            0x6961_6d0e_443e_bccf
        );
    }
}
