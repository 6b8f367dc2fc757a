//! The status page's "Device clocks": where each device's offset-less times
//! are read, how far its live readings are from their arrival, and what to
//! do when that looks like a zone mistake.

use co2_wire::{ClockOffset, UtcOffset};
use serde::Serialize;

use crate::clocks::{ClockView, DeviceClocks, ZoneRules, ZoneSetting};

/// One device's clock.
#[derive(Debug, Clone, Serialize)]
pub struct ClockRow {
    /// The device id.
    pub device: String,
    /// The zone its offset-less times are read in, and which setting says so.
    pub zone: String,
    /// The steady offset of its live readings (stored time − arrival), seconds.
    pub offset_s: Option<f64>,
    /// What the offset means and what to do, when it means anything.
    pub hint: Option<String>,
    /// Its times jump between readings (never learned).
    pub unsteady: bool,
}

/// Every watched device, those with something to say first.
pub fn rows(clocks: &DeviceClocks, zones: &ZoneRules) -> Vec<ClockRow> {
    let mut rows: Vec<ClockRow> = clocks
        .views()
        .into_iter()
        .map(|(device, view)| {
            let (setting, source) = zones.resolve(view.route, device.as_str());
            let zone = match (setting, view.learned) {
                (ZoneSetting::Zone(zone), _) => format!("{zone} ({source})"),
                (ZoneSetting::Auto, Some(l)) => format!(
                    "auto ({source}): {} learned {}",
                    l.zone,
                    l.since.format("%Y-%m-%d %H:%M UTC")
                ),
                (ZoneSetting::Auto, None) => format!("auto ({source}): not learned yet"),
            };
            ClockRow {
                hint: hint(device.as_str(), &view, setting),
                offset_s: view.offset.map(ClockOffset::seconds),
                unsteady: view.unsteady,
                device: device.as_str().to_owned(),
                zone,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.hint.is_none());
    rows
}

fn hint(device: &str, view: &ClockView, setting: ZoneSetting) -> Option<String> {
    if view.unsteady {
        return Some(
            "its times jump between readings by zone-like steps (two clocks, or a zone \
             that keeps changing): nothing is learned from them; set its time zone"
                .to_owned(),
        );
    }
    if let Some(offset) = view.offset.filter(|o| o.is_zone_like()) {
        let pin = view
            .wall
            .and_then(ClockOffset::nearest_zone)
            .map(|zone| UtcOffset(zone).to_string());
        let subject = match pin {
            Some(zone) => format!(
                "this device: [[devices]] match = \"{device}\", time_zone = \"{}\" \
                 (or its IANA name)",
                zone.trim_start_matches("UTC")
            ),
            None => "this device".to_owned(),
        };
        return Some(co2_wire::explain_offset(offset, view.wall, &subject));
    }
    match setting {
        ZoneSetting::Auto => view.learning.clone(),
        ZoneSetting::Zone(_) => None,
    }
}
