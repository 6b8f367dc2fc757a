//! A plausible CO2 signal without hardware: a daily cycle plus noise, per device.

use chrono::{DateTime, Timelike, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Sensor, SensorError};
use crate::config::Profile;

/// A simulated sensor; each device gets its own phase and noise sequence.
#[derive(Debug)]
pub struct Simulated {
    profile: Profile,
    /// Shift of the daily peak, in seconds, derived from the device id.
    phase_s: f64,
    rng: SmallRng,
    /// AR(1) noise state: consecutive readings stay close, as real air does.
    wander: f64,
}

impl Simulated {
    /// A sensor for `device`: the same device id gives the same sequence.
    pub fn new(device: &str, profile: Profile) -> Self {
        let seed = fnv1a(device.as_bytes());
        Self {
            profile,
            phase_s: (seed % 14_400) as f64, // up to 4 h apart
            rng: SmallRng::seed_from_u64(seed),
            wander: 0.0,
        }
    }

    /// The noiseless daily curve at `t`: lowest before dawn, highest mid-afternoon.
    pub fn daily_curve(&self, t: DateTime<Utc>) -> f64 {
        let secs = f64::from(t.num_seconds_from_midnight()) + self.phase_s;
        let day = 86_400.0;
        // Peak at 15:00: cos is 1 there.
        let angle = 2.0 * std::f64::consts::PI * (secs - 15.0 * 3600.0) / day;
        self.profile.base_ppm + self.profile.amplitude_ppm * angle.cos()
    }

    /// The next simulated value at `t`.
    pub fn value_at(&mut self, t: DateTime<Utc>) -> f64 {
        // Uniform in [-1, 1) scaled so the stationary spread is about noise_ppm.
        let kick: f64 = self.rng.random_range(-1.0..1.0);
        self.wander = 0.9 * self.wander + kick * self.profile.noise_ppm * 0.75;
        (self.daily_curve(t) + self.wander).max(0.0)
    }
}

impl Sensor for Simulated {
    fn read(&mut self) -> Result<f64, SensorError> {
        Ok(self.value_at(Utc::now()))
    }

    fn describe(&self) -> String {
        format!(
            "simulated (base {} ppm, ±{} ppm daily, noise {} ppm)",
            self.profile.base_ppm, self.profile.amplitude_ppm, self.profile.noise_ppm
        )
    }
}

/// FNV-1a: a stable hash, so a device's sequence survives a toolchain upgrade
/// (std's `DefaultHasher` promises no such thing).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn values_are_plausible_and_follow_the_day() {
        let mut s = Simulated::new("kitchen", Profile::default());
        for h in 0..24 {
            let v = s.value_at(at(h));
            assert!((300.0..1100.0).contains(&v), "{h}h: {v}");
        }
        let curve: Vec<f64> = (0..24).map(|h| s.daily_curve(at(h))).collect();
        let max = curve.iter().cloned().fold(f64::MIN, f64::max);
        let min = curve.iter().cloned().fold(f64::MAX, f64::min);
        assert!(max - min > 300.0, "a visible daily swing: {min}..{max}");
    }

    #[test]
    fn devices_differ_but_each_is_reproducible() {
        let seq = |d: &str| {
            let mut s = Simulated::new(d, Profile::default());
            (0..5).map(|h| s.value_at(at(h))).collect::<Vec<_>>()
        };
        assert_eq!(seq("a"), seq("a"));
        assert_ne!(seq("a"), seq("b"));
    }
}
