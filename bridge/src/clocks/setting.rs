//! Which zone a device's offset-less times are read in: `wire.time_zone` for
//! every route, a route's own `time_zone`, and `[[devices]]` entries that
//! name a device or a pattern of devices, the most specific winning.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use co2_wire::{Zone, ZoneError};

/// A configured zone: a fixed rule, or learned from the device's live readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSetting {
    /// Read offset-less times in this zone.
    Zone(Zone),
    /// Learn each device's offset from its live readings (`"auto"`).
    Auto,
}

impl FromStr for ZoneSetting {
    type Err = ZoneError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(ZoneSetting::Auto);
        }
        text.parse().map(ZoneSetting::Zone)
    }
}

impl fmt::Display for ZoneSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneSetting::Zone(zone) => zone.fmt(f),
            ZoneSetting::Auto => f.write_str("auto"),
        }
    }
}

/// Where a device's [`ZoneSetting`] came from, for the status page and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneSource {
    /// `wire.time_zone`.
    Wire,
    /// The route's own `time_zone`.
    Route(String),
    /// A `[[devices]]` entry, by its `match`.
    Device(String),
}

impl fmt::Display for ZoneSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneSource::Wire => f.write_str("wire.time_zone"),
            ZoneSource::Route(name) => write!(f, "route {name}"),
            ZoneSource::Device(pattern) => write!(f, "[[devices]] match = {pattern:?}"),
        }
    }
}

/// A device pattern: an exact id, or a glob with `*` (any run) and `?` (one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePattern {
    text: String,
}

impl DevicePattern {
    /// A pattern from its text; `None` when empty or over 64 characters.
    pub fn new(text: &str) -> Option<Self> {
        (!text.is_empty() && text.chars().count() <= 64).then(|| Self {
            text: text.to_owned(),
        })
    }

    /// True when the pattern has no wildcard.
    pub fn is_exact(&self) -> bool {
        !self.text.contains(['*', '?'])
    }

    /// How specific the pattern is: its literal characters.
    fn literals(&self) -> usize {
        self.text
            .chars()
            .filter(|c| !matches!(c, '*' | '?'))
            .count()
    }

    /// True when `device` matches.
    pub fn matches(&self, device: &str) -> bool {
        glob(self.text.as_bytes(), device.as_bytes())
    }
}

/// Glob matching without recursion: the classic two-pointer walk with one
/// backtrack point, linear in practice and never deeper than the stack.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || text.get(t) == Some(&c) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Every zone rule of a configuration, resolved per message.
#[derive(Debug, Clone)]
pub struct ZoneRules {
    wire: ZoneSetting,
    /// Per route id: its own setting and name, if it has one.
    routes: Vec<Option<(ZoneSetting, String)>>,
    exact: HashMap<String, ZoneSetting>,
    /// Wildcard patterns, most specific first (file order among equals).
    patterns: Vec<(DevicePattern, ZoneSetting)>,
}

impl ZoneRules {
    /// Rules from `wire.time_zone`, each route's own setting (by route id)
    /// and the `[[devices]]` entries in file order (an exact id twice: the first).
    pub fn new(
        wire: ZoneSetting,
        routes: Vec<Option<(ZoneSetting, String)>>,
        devices: Vec<(DevicePattern, ZoneSetting)>,
    ) -> Self {
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        for (pattern, setting) in devices {
            if pattern.is_exact() {
                exact.entry(pattern.text).or_insert(setting);
            } else {
                patterns.push((pattern, setting));
            }
        }
        // Stable: equals keep their file order.
        patterns.sort_by_key(|(p, _)| std::cmp::Reverse(p.literals()));
        Self {
            wire,
            routes,
            exact,
            patterns,
        }
    }

    /// Only `wire.time_zone`, for every route and device.
    pub fn uniform(wire: ZoneSetting) -> Self {
        Self::new(wire, Vec::new(), Vec::new())
    }

    /// True when some rule says `auto`.
    pub fn any_auto(&self) -> bool {
        self.wire == ZoneSetting::Auto
            || self
                .routes
                .iter()
                .flatten()
                .any(|(s, _)| *s == ZoneSetting::Auto)
            || self.exact.values().any(|s| *s == ZoneSetting::Auto)
            || self.patterns.iter().any(|(_, s)| *s == ZoneSetting::Auto)
    }

    /// The setting for `device` on route `route`: its `[[devices]]` entry
    /// (an exact id, else the pattern with the most literal characters),
    /// else the route's own, else `wire.time_zone`.
    pub fn setting(&self, route: usize, device: &str) -> ZoneSetting {
        if self.exact.is_empty() && self.patterns.is_empty() {
            return match self.routes.get(route) {
                Some(Some((setting, _))) => *setting,
                _ => self.wire,
            };
        }
        self.resolve(route, device).0
    }

    /// The setting and where it came from (for the status page).
    pub fn resolve(&self, route: usize, device: &str) -> (ZoneSetting, ZoneSource) {
        if let Some(setting) = self.exact.get(device) {
            return (*setting, ZoneSource::Device(device.to_owned()));
        }
        if let Some((pattern, setting)) = self.patterns.iter().find(|(p, _)| p.matches(device)) {
            return (*setting, ZoneSource::Device(pattern.text.clone()));
        }
        match self.routes.get(route) {
            Some(Some((setting, name))) => (*setting, ZoneSource::Route(name.clone())),
            _ => (self.wire, ZoneSource::Wire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(text: &str) -> ZoneSetting {
        text.parse().unwrap()
    }

    fn pattern(text: &str) -> DevicePattern {
        DevicePattern::new(text).unwrap()
    }

    #[test]
    fn globs_match_like_a_shell() {
        for (p, device, want) in [
            ("pi-*", "pi-kitchen", true),
            ("pi-*", "pi-", true),
            ("pi-*", "ps-kitchen", false),
            ("*-seoul", "pi-seoul", true),
            ("*-seoul", "pi-seoul-2", false),
            ("pi-?", "pi-1", true),
            ("pi-?", "pi-12", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("**", "", true),
            ("kitchen", "kitchen", true),
            ("kitchen", "kitchen2", false),
        ] {
            assert_eq!(pattern(p).matches(device), want, "{p} {device}");
        }
        // A pathological pattern stays linear-ish and does not recurse.
        let long = "*a".repeat(30);
        assert!(!pattern(&long).matches(&"a".repeat(29)));
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rules = ZoneRules::new(
            setting("UTC"),
            vec![None, Some((setting("Europe/Berlin"), "bins".into()))],
            vec![
                (pattern("pi-*"), setting("America/New_York")),
                (pattern("pi-seoul-*"), setting("Asia/Seoul")),
                (pattern("pi-auto"), setting("auto")),
                (pattern("pi-auto"), setting("UTC")),
            ],
        );
        assert_eq!(rules.setting(0, "other"), setting("UTC"));
        assert_eq!(rules.setting(1, "other"), setting("Europe/Berlin"));
        assert_eq!(rules.setting(1, "pi-x"), setting("America/New_York"));
        assert_eq!(rules.setting(0, "pi-seoul-2"), setting("Asia/Seoul"));
        assert_eq!(rules.setting(0, "pi-auto"), ZoneSetting::Auto);
        assert_eq!(
            rules.resolve(1, "other").1,
            ZoneSource::Route("bins".into())
        );
        assert_eq!(
            rules.resolve(0, "pi-seoul-2").1,
            ZoneSource::Device("pi-seoul-*".into())
        );
        assert!(rules.any_auto());
        assert!(!ZoneRules::uniform(setting("UTC")).any_auto());
    }

    #[test]
    fn settings_parse_and_print() {
        assert_eq!(setting("auto"), ZoneSetting::Auto);
        assert_eq!(setting("AUTO").to_string(), "auto");
        assert_eq!(setting("+05:30").to_string(), "UTC+05:30");
        assert!("Mars/Base".parse::<ZoneSetting>().is_err());
        assert!(DevicePattern::new("").is_none());
        assert!(DevicePattern::new(&"x".repeat(65)).is_none());
    }
}
