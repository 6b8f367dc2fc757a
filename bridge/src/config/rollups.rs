//! `[rollups]`: the per-minute, per-hour and per-day aggregates the MySQL
//! sink keeps beside the raw rows, so dashboards read what they draw.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// `[rollups]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollupSettings {
    /// Keep rollups of the shipped numeric tables in the write transaction.
    pub enabled: bool,
    /// The tiers, finest first: `"1m"`, `"1h"`, `"1d"` (a number and m, h or d).
    pub tiers: Vec<String>,
}

impl Default for RollupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tiers: DEFAULT_TIERS.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

/// The tiers the shipped dashboards read.
///
/// A panel reads the coarsest tier whose length divides its `$__interval`,
/// and Grafana's intervals are 1, 2, 5, 10, 15, 20 and 30 minutes, 1, 2, 3,
/// 6 and 12 hours, and days: with these six, each range from an hour to a
/// year reads a few ten thousand rows for 20 devices (BENCHMARKS.md).
pub const DEFAULT_TIERS: [&str; 6] = ["1m", "5m", "30m", "1h", "6h", "1d"];

/// One rollup tier: its buckets are `seconds` long and aligned to the Unix
/// epoch (so a day is a UTC day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// As configured (`1m`): the suffix of its tables' names.
    pub label: String,
    /// Bucket length.
    pub seconds: u32,
}

impl Tier {
    /// Parses `"<n>m"`, `"<n>h"` or `"<n>d"`.
    pub fn parse(label: &str) -> Option<Self> {
        let unit = match label.as_bytes().last()? {
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            _ => return None,
        };
        let digits = label.get(..label.len() - 1)?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        Some(Self {
            label: label.to_owned(),
            seconds: n.checked_mul(unit)?,
        })
    }
}

impl RollupSettings {
    /// The configured tiers, finest first, checked: each a whole multiple of
    /// the one before (a tier is computed from the one below it) and at most
    /// a day (coarser buckets would not nest in UTC days).
    pub fn tiers(&self) -> Result<Vec<Tier>, ConfigError> {
        let mut tiers: Vec<Tier> = Vec::with_capacity(self.tiers.len());
        for label in &self.tiers {
            let tier = Tier::parse(label).ok_or_else(|| {
                invalid(
                    "rollups.tiers",
                    format!("{label:?} is not a tier; write a number and m, h or d, e.g. \"1m\", \"1h\", \"1d\""),
                )
            })?;
            if tier.seconds > 86_400 || 86_400 % tier.seconds != 0 {
                return Err(invalid(
                    "rollups.tiers",
                    format!("{label:?} does not divide a day; a tier is at most \"1d\""),
                ));
            }
            if let Some(finer) = tiers.last() {
                if tier.seconds <= finer.seconds || tier.seconds % finer.seconds != 0 {
                    return Err(invalid(
                        "rollups.tiers",
                        format!(
                            "{label:?} must be a whole multiple of {:?} before it (finest first)",
                            finer.label
                        ),
                    ));
                }
            }
            tiers.push(tier);
        }
        if self.enabled && tiers.is_empty() {
            return Err(invalid(
                "rollups.tiers",
                "needs at least one tier, or set rollups.enabled = false",
            ));
        }
        Ok(tiers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(labels: &[&str]) -> Result<Vec<u32>, ConfigError> {
        let settings = RollupSettings {
            enabled: true,
            tiers: labels.iter().map(|l| (*l).to_owned()).collect(),
        };
        Ok(settings.tiers()?.iter().map(|t| t.seconds).collect())
    }

    #[test]
    fn the_default_tiers_nest_from_a_minute_to_a_day() {
        let defaults = RollupSettings::default();
        assert_eq!(
            tiers(
                &defaults
                    .tiers
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            )
            .unwrap(),
            [60, 300, 1800, 3600, 21_600, 86_400]
        );
    }

    #[test]
    fn tiers_nest_finest_first_and_divide_a_day() {
        assert_eq!(tiers(&["5m", "15m", "6h"]).unwrap(), [300, 900, 21_600]);
        for bad in [
            &["1h", "1m"][..],
            &["10m", "15m"],
            &["7m"],
            &["2d"],
            &["1w"],
            &["m"],
            &["01m"],
            &["-1m"],
            &["1.5h"],
            &[""],
            &["99999999999d"],
        ] {
            assert!(tiers(bad).is_err(), "{bad:?}");
        }
        assert!(tiers(&[]).is_err());
    }
}
