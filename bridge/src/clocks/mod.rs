//! Device clocks: which zone each device's offset-less times are read in,
//! how far the times its live readings carry are from their arrival, and
//! the offsets learned for `time_zone = "auto"`.
//!
//! Time is the one field every reading has, and a device that sends its
//! local wall-clock time into a bridge that reads it as UTC loses every
//! reading (too far in the future) or stores them hours wrong, with nothing
//! else to show for it. So every reading whose time came from its payload is
//! observed here (see [`watch`] for how live readings are told from a
//! backlog), and what is seen is named where people look: the dead letter's
//! detail, the status page, `co2_device_clock_offset_seconds` and the
//! doctor.
//!
//! This module sits just above the shared vocabulary: it imports no other
//! module of the bridge, so routes write to it and the status page and
//! metrics read it.

mod keeper;
mod setting;
mod store;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use co2_wire::{DeviceId, Zone};

pub use keeper::keep;
pub use setting::{DevicePattern, ZoneRules, ZoneSetting};
use watch::Watch;
pub use watch::{ClockView, Learned, Seen, Verdict};

/// Each watched device's observations.
type Watches = HashMap<DeviceId, Watch, foldhash::fast::RandomState>;

/// Every device's clock, shared by the routes (which observe) and the
/// status page, metrics and persistence (which read).
#[derive(Debug)]
pub struct DeviceClocks {
    /// Looked up once per reading, so foldhash: SipHash over the device id
    /// was over half of the lookup's instructions, and the map is capped at
    /// `max_devices`, so colliding ids cannot grow it without end.
    watches: Mutex<Watches>,
    /// Devices watched at most (`metrics.max_devices`): a flood of made-up
    /// ids cannot grow this without end.
    max_devices: usize,
    /// Learned offsets changed since the last save.
    dirty: AtomicBool,
    /// Where learned offsets are kept across restarts (`None`: nowhere).
    path: Option<PathBuf>,
}

impl Default for DeviceClocks {
    fn default() -> Self {
        Self::new(1000, None)
    }
}

impl DeviceClocks {
    /// Watches up to `max_devices` devices, keeping learned offsets in `path`.
    pub fn new(max_devices: usize, path: Option<PathBuf>) -> Self {
        Self {
            watches: Mutex::new(Watches::default()),
            max_devices,
            dirty: AtomicBool::new(false),
            path,
        }
    }

    /// The same, with the offsets learned before the last restart read back
    /// from `path` (a file that cannot be read is logged and ignored: the
    /// offsets are learned again).
    pub fn load(max_devices: usize, path: PathBuf) -> Self {
        let clocks = Self::new(max_devices, Some(path.clone()));
        match store::read(&path) {
            Ok(learned) => {
                let mut watches = clocks.lock();
                for (device, learned) in learned.into_iter().take(max_devices) {
                    watches.entry(device).or_default().learned = Some(learned);
                }
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "Cannot read the learned time zones; devices with time_zone = \"auto\" learn theirs again"
            ),
        }
        clocks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watches> {
        // A panic elsewhere poisoned the lock; the map itself is still whole.
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The zone learned for `device`, if any.
    pub fn learned(&self, device: &DeviceId) -> Option<Zone> {
        self.lock()
            .get(device)
            .and_then(|w| w.learned)
            .map(|l| l.zone)
    }

    /// Notes one reading of `device` that arrived at `arrival`; `auto` when
    /// its zone is learned. A device beyond the cap is not watched: its
    /// `auto` readings are held, since no offset can be learned for it.
    pub fn observe(
        &self,
        device: &DeviceId,
        route: usize,
        seen: &Seen,
        arrival: DateTime<Utc>,
        auto: bool,
    ) -> Verdict {
        let mut watches = self.lock();
        let full = watches.len() >= self.max_devices;
        let watch = match watches.get_mut(device) {
            Some(watch) => watch,
            None if full => {
                return if auto && !seen.placed {
                    Verdict::Hold(format!(
                        "more than metrics.max_devices ({}) devices are watched, so no \
                         time zone can be learned for this one: set it",
                        self.max_devices
                    ))
                } else {
                    Verdict::Store
                };
            }
            None => watches.entry(device.clone()).or_default(),
        };
        let verdict = watch.observe(route, seen, arrival, auto);
        if let Verdict::Learned(zone) = &verdict {
            self.dirty.store(true, Ordering::Relaxed);
            tracing::info!(
                device = %device,
                zone = %zone,
                "Learned the device's time zone from its live readings (time_zone = \"auto\"); \
                 to pin it, set it in [[devices]]"
            );
        }
        verdict
    }

    /// Every watched device's clock, by device id.
    pub fn views(&self) -> Vec<(DeviceId, ClockView)> {
        let mut views: Vec<_> = self
            .lock()
            .iter()
            .map(|(device, watch)| (device.clone(), watch.view()))
            .collect();
        views.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        views
    }

    /// Writes the learned offsets if they changed since the last write;
    /// true when it wrote.
    pub fn save_if_changed(&self) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let learned: Vec<(DeviceId, Learned)> = self
            .lock()
            .iter()
            .filter_map(|(d, w)| w.learned.map(|l| (d.clone(), l)))
            .collect();
        store::write(path, &learned).inspect_err(|_| {
            // Try again next time.
            self.dirty.store(true, Ordering::Relaxed);
        })?;
        Ok(true)
    }
}

/// Where the learned offsets are kept, inside the bridge's state directory.
pub fn state_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("learned-time-zones.json")
}

/// `check-config`'s note on the offsets learned and kept in `state_dir`: a
/// block of TOML comments with the lines that would pin each one, empty
/// when none was learned (a missing or unreadable file holds none).
pub fn learned_note(state_dir: &std::path::Path) -> String {
    let learned = store::read(&state_file(state_dir)).unwrap_or_default();
    if learned.is_empty() {
        return String::new();
    }
    let mut note = format!(
        "\n# Time zones learned from live readings (time_zone = \"auto\"), kept in {}.\n\
         # To pin one, add its lines to the configuration:\n",
        state_file(state_dir).display()
    );
    for (device, learned) in learned {
        let zone = learned.zone.to_string();
        note.push_str(&format!(
            "# {device}: {zone} since {}\n#   [[devices]]\n#   match = \"{device}\"\n#   time_zone = \"{}\"\n",
            learned.since.format("%Y-%m-%d %H:%M UTC"),
            zone.trim_start_matches("UTC"),
        ));
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn device(name: &str) -> DeviceId {
        DeviceId::parse(name).unwrap()
    }

    fn live(clocks: &DeviceClocks, name: &str, zone_s: i64, n: i64) -> Vec<Verdict> {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        (0..n)
            .map(|i| {
                let arrival = t0 + Duration::seconds(i);
                let wall = (arrival + Duration::seconds(zone_s)).naive_utc();
                let seen = Seen {
                    time: wall.and_utc(),
                    wall: Some(wall),
                    placed: false,
                };
                clocks.observe(&device(name), 0, &seen, arrival, true)
            })
            .collect()
    }

    #[test]
    fn learned_offsets_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_file(dir.path());
        let clocks = DeviceClocks::load(10, path.clone());
        assert!(matches!(
            live(&clocks, "pi-seoul", 9 * 3600, 4)[3],
            Verdict::Learned(_)
        ));
        assert!(clocks.save_if_changed().unwrap());
        assert!(!clocks.save_if_changed().unwrap(), "nothing changed since");
        let again = DeviceClocks::load(10, path);
        assert_eq!(
            again.learned(&device("pi-seoul")).map(|z| z.to_string()),
            Some("UTC+09:00".to_owned())
        );
        let note = learned_note(dir.path());
        assert!(
            note.contains("#   match = \"pi-seoul\"\n#   time_zone = \"+09:00\""),
            "{note}"
        );
    }

    #[test]
    fn devices_beyond_the_cap_are_not_watched() {
        let clocks = DeviceClocks::new(2, None);
        live(&clocks, "a", 0, 1);
        live(&clocks, "b", 0, 1);
        let verdicts = live(&clocks, "c", 0, 5);
        assert!(verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Hold(why) if why.contains("max_devices"))));
        assert_eq!(clocks.views().len(), 2);
    }

    #[test]
    fn a_file_that_is_not_ours_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_file(dir.path());
        std::fs::write(&path, b"\xff not json").unwrap();
        let clocks = DeviceClocks::load(10, path);
        assert!(clocks.views().is_empty());
    }
}
