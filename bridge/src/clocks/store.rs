//! The learned offsets on disk: a small JSON file in the state directory,
//! replaced whole (written beside it, then renamed) so a crash mid-write
//! leaves the previous file.

use std::io::Write;
use std::path::Path;

use chrono::DateTime;
use co2_wire::{DeviceId, Zone};
use serde::{Deserialize, Serialize};

use super::watch::Learned;

/// Entries read at most: the file is ours, but a damaged one must not cost memory.
const MAX_ENTRIES: usize = 100_000;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    devices: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    device: String,
    /// The fixed zone, as `UTC+09:00`.
    zone: String,
    /// RFC 3339, UTC.
    learned_at: String,
}

/// Reads the learned offsets; a missing file holds none.
pub fn read(path: &Path) -> std::io::Result<Vec<(DeviceId, Learned)>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let file: File = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(file
        .devices
        .into_iter()
        .take(MAX_ENTRIES)
        .filter_map(|e| {
            let device = DeviceId::parse(&e.device).ok()?;
            let zone = e.zone.parse::<Zone>().ok()?;
            let since = DateTime::parse_from_rfc3339(&e.learned_at).ok()?.to_utc();
            Some((device, Learned { zone, since }))
        })
        .collect())
}

/// Replaces the file with `learned`.
pub fn write(path: &Path, learned: &[(DeviceId, Learned)]) -> std::io::Result<()> {
    let file = File {
        version: 1,
        devices: learned
            .iter()
            .map(|(device, l)| Entry {
                device: device.as_str().to_owned(),
                zone: l.zone.to_string(),
                learned_at: l.since.to_rfc3339(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("json.partial");
    let mut out = std::fs::File::create(&partial)?;
    out.write_all(&json)?;
    out.sync_all()?;
    std::fs::rename(&partial, path)
}
