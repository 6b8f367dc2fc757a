//! The last hour of each device's readings, one value a minute, for the
//! status page's sparklines. Kept in memory for the devices that have
//! metric series (so it is capped like them); it starts empty at start-up.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use co2_wire::DeviceId;

/// Minutes kept per device.
pub const MINUTES: usize = 60;

/// The newest value of each minute, per device.
#[derive(Default)]
pub struct History {
    devices: Mutex<HashMap<DeviceId, VecDeque<(i64, f64)>>>,
}

impl History {
    /// Records `value` measured at `unix_time` (seconds); a reading older than
    /// the newest minute kept (a redelivery) changes nothing.
    pub fn record(&self, device: &DeviceId, value: f64, unix_time: f64) {
        if !unix_time.is_finite() {
            return;
        }
        let minute = (unix_time / 60.0).floor() as i64;
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let points = devices.entry(device.clone()).or_default();
        match points.back_mut() {
            Some((last, v)) if *last == minute => *v = value,
            Some((last, _)) if *last > minute => {}
            _ => {
                points.push_back((minute, value));
                while points.len() > MINUTES {
                    points.pop_front();
                }
            }
        }
    }

    /// `device`'s points of the hour before `now` (unix seconds): (minute start, value), oldest first.
    pub fn last_hour(&self, device: &str, now: f64) -> Vec<(i64, f64)> {
        let from = ((now - 3600.0) / 60.0).floor() as i64;
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        DeviceId::parse(device)
            .ok()
            .and_then(|id| devices.get(&id))
            .map(|points| {
                points
                    .iter()
                    .filter(|(m, _)| *m >= from)
                    .map(|(m, v)| (m * 60, *v))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_a_minute_the_newest_wins_and_old_ones_age_out() {
        let h = History::default();
        let pi = DeviceId::parse("pi").unwrap();
        h.record(&pi, 400.0, 60.0);
        h.record(&pi, 410.0, 100.0);
        h.record(&pi, 999.0, 30.0); // a redelivery from an earlier minute
        h.record(&pi, 420.0, 130.0);
        assert_eq!(h.last_hour("pi", 200.0), [(60, 410.0), (120, 420.0)]);
        assert!(h.last_hour("pi", 60.0 + 4000.0).is_empty());
        assert!(h.last_hour("other", 200.0).is_empty());
        for minute in 0..(MINUTES as i64 + 10) {
            h.record(&pi, 1.0, 600.0 + minute as f64 * 60.0);
        }
        assert_eq!(h.last_hour("pi", 1e9).len(), 0);
        assert_eq!(h.last_hour("pi", 600.0 + 70.0 * 60.0).len(), MINUTES);
    }
}
