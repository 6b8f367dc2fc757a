//! Topic filters and the device id carried in a topic.
//!
//! `bins/{device}/level` names the device level explicitly (it subscribes as
//! `+`); without a `{device}` level, the first `+` is the device
//! (`co2/+/emissions`). A filter with neither (the legacy `co2/emissions`)
//! carries no device, and the configured default is used.

use std::fmt;

/// A device id: 1 to 64 of `[A-Za-z0-9_-]`, safe as a topic level, a metric
/// label and a key column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// Why a string is not a [`DeviceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// Empty or longer than 64 bytes.
    #[error("device id must be 1 to 64 characters long")]
    Length,
    /// Contains a character outside `[A-Za-z0-9_-]`.
    #[error("device id may contain only A-Z, a-z, 0-9, '_' and '-'")]
    Character,
}

impl DeviceId {
    /// Longest accepted id, in bytes; also the width of the `device` column.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`.
    pub fn parse(id: &str) -> Result<Self, DeviceIdError> {
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(DeviceIdError::Length);
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(DeviceIdError::Character);
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A subscription filter such as `co2/+/emissions` or
/// `$share/bridges/co2/+/emissions`, used to find the device in a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    /// What the broker is asked for, including any `$share/<group>/` prefix.
    subscription: String,
    /// The filter levels that published topics are matched against.
    levels: Vec<String>,
    /// Index of the level that holds the device id (the first `+`), if any.
    device_level: Option<usize>,
}

/// Why a string is not a usable [`TopicFilter`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicFilterError {
    /// The filter is empty.
    #[error("topic filter is empty")]
    Empty,
    /// A wildcard shares a level with other characters, or `#` is not last.
    #[error("'+' and '#' must fill a whole level, and '#' must be the last level")]
    Wildcard,
    /// More than one `{device}` level, or `{...}` naming something else.
    #[error("a filter may name one level '{{device}}' and no other '{{...}}'")]
    Capture,
    /// `$share/<group>/<filter>` is missing its group or filter.
    #[error("a shared subscription is written '$share/<group>/<filter>'")]
    Share,
}

/// What a topic says when it matches a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicMatch<'a> {
    /// The device level holds this text (still to be validated as a [`DeviceId`]).
    Device(&'a str),
    /// The filter has no device level: use the configured default device.
    NoDevice,
}

impl TopicFilter {
    /// Parses and checks a filter.
    pub fn parse(filter: &str) -> Result<Self, TopicFilterError> {
        if filter.is_empty() {
            return Err(TopicFilterError::Empty);
        }
        let matched = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((group, inner)) if !group.is_empty() && !inner.is_empty() => inner,
                _ => return Err(TopicFilterError::Share),
            },
            None => filter,
        };
        let mut levels: Vec<String> = matched.split('/').map(str::to_owned).collect();
        let last = levels.len() - 1;
        let mut capture = None;
        for (i, level) in levels.iter().enumerate() {
            if level == "{device}" {
                if capture.replace(i).is_some() {
                    return Err(TopicFilterError::Capture);
                }
                continue;
            }
            if level.contains(['{', '}']) {
                return Err(TopicFilterError::Capture);
            }
            let has_wildcard = level.contains(['+', '#']);
            let whole = level == "+" || (level == "#" && i == last);
            if has_wildcard && !whole {
                return Err(TopicFilterError::Wildcard);
            }
        }
        let device_level = capture.or_else(|| levels.iter().position(|l| l == "+"));
        let mut subscription = filter.to_owned();
        if let Some(i) = capture {
            levels[i] = "+".to_owned();
            let prefix = &filter[..filter.len() - matched.len()];
            subscription = format!("{prefix}{}", levels.join("/"));
        }
        Ok(Self {
            subscription,
            levels,
            device_level,
        })
    }

    /// Whether some topic matches both filters (shared-subscription prefixes aside).
    pub fn overlaps(&self, other: &TopicFilter) -> bool {
        let (a, b) = (&self.levels, &other.levels);
        for i in 0..a.len().max(b.len()) {
            match (a.get(i).map(String::as_str), b.get(i).map(String::as_str)) {
                (Some("#"), _) | (_, Some("#")) => return true,
                (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
                _ => return false,
            }
        }
        true
    }

    /// The filter with its device level filled in: a topic this filter matches.
    /// `None` when a level is a wildcard other than the device level.
    pub fn topic_for(&self, device: &DeviceId) -> Option<String> {
        let mut out = Vec::with_capacity(self.levels.len());
        for (i, level) in self.levels.iter().enumerate() {
            if Some(i) == self.device_level {
                out.push(device.as_str());
            } else if level == "+" || level == "#" {
                return None;
            } else {
                out.push(level);
            }
        }
        Some(out.join("/"))
    }

    /// The filter that published topics are matched against (no `$share/<group>/`
    /// prefix), its device level, if it has one, written as `text`: `"+"` gives
    /// the plain filter, Mosquitto's `"%u"` an ACL pattern for the user's own topics.
    pub fn with_device_level(&self, text: &str) -> String {
        let mut out = self.levels.clone();
        if let Some(level) = self.device_level.and_then(|i| out.get_mut(i)) {
            text.clone_into(level);
        }
        out.join("/")
    }

    /// The string to subscribe with.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// Matches `topic` against the filter (MQTT rules, without the share prefix).
    pub fn matches<'a>(&self, topic: &'a str) -> Option<TopicMatch<'a>> {
        let mut device = None;
        let mut topic_levels = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            if level == "#" {
                break;
            }
            let got = topic_levels.next()?;
            if level == "+" {
                if Some(i) == self.device_level {
                    device = Some(got);
                }
            } else if level != got {
                return None;
            }
        }
        if self.levels.last().is_some_and(|l| l != "#") && topic_levels.next().is_some() {
            return None;
        }
        Some(device.map_or(TopicMatch::NoDevice, TopicMatch::Device))
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn device_comes_from_the_plus_level() {
        let f = filter("co2/+/emissions");
        assert_eq!(
            f.matches("co2/pi-1/emissions"),
            Some(TopicMatch::Device("pi-1"))
        );
        assert_eq!(f.matches("co2/pi-1/temperature"), None);
        assert_eq!(f.matches("co2/pi-1/emissions/extra"), None);
        assert_eq!(f.matches("co2/emissions"), None);
    }

    #[test]
    fn legacy_topic_has_no_device() {
        let f = filter("co2/emissions");
        assert_eq!(f.matches("co2/emissions"), Some(TopicMatch::NoDevice));
        assert_eq!(f.matches("co2/x/emissions"), None);
    }

    #[test]
    fn shared_subscription_matches_the_inner_filter() {
        let f = filter("$share/bridges/co2/+/emissions");
        assert_eq!(f.subscription(), "$share/bridges/co2/+/emissions");
        assert_eq!(f.matches("co2/a/emissions"), Some(TopicMatch::Device("a")));
        assert_eq!(
            TopicFilter::parse("$share//x"),
            Err(TopicFilterError::Share)
        );
        assert_eq!(TopicFilter::parse("$share/g"), Err(TopicFilterError::Share));
    }

    #[test]
    fn hash_matches_the_rest() {
        let f = filter("sensors/+/#");
        assert_eq!(f.matches("sensors/d/a/b"), Some(TopicMatch::Device("d")));
        assert_eq!(TopicFilter::parse("a/#/b"), Err(TopicFilterError::Wildcard));
        assert_eq!(
            TopicFilter::parse("a/b+/c"),
            Err(TopicFilterError::Wildcard)
        );
    }

    #[test]
    fn named_device_level() {
        let f = filter("bins/{device}/level");
        assert_eq!(f.subscription(), "bins/+/level");
        assert_eq!(f.matches("bins/b7/level"), Some(TopicMatch::Device("b7")));
        let f = filter("$share/g/site/+/{device}/temp");
        assert_eq!(f.subscription(), "$share/g/site/+/+/temp");
        assert_eq!(f.matches("site/x/d1/temp"), Some(TopicMatch::Device("d1")));
        assert_eq!(
            TopicFilter::parse("a/{device}/{device}"),
            Err(TopicFilterError::Capture)
        );
        assert_eq!(
            TopicFilter::parse("a/{bin}/x"),
            Err(TopicFilterError::Capture)
        );
    }

    #[test]
    fn overlap_is_detected() {
        let overlap = |a: &str, b: &str| filter(a).overlaps(&filter(b));
        assert!(overlap("co2/+/emissions", "co2/pi/emissions"));
        assert!(overlap("co2/#", "co2/+/emissions"));
        assert!(overlap("#", "bins/level"));
        assert!(!overlap("co2/+/emissions", "co2/emissions"));
        assert!(!overlap("bins/level", "co2/+/emissions"));
        assert!(!overlap("a/b", "a/b/c"));
    }

    #[test]
    fn topic_for_fills_the_device() {
        let pi = DeviceId::parse("pi").unwrap();
        assert_eq!(
            filter("bins/{device}/level").topic_for(&pi).as_deref(),
            Some("bins/pi/level")
        );
        assert_eq!(
            filter("bins/level").topic_for(&pi).as_deref(),
            Some("bins/level")
        );
        assert_eq!(filter("x/+/{device}").topic_for(&pi), None);
    }

    #[test]
    fn with_device_level_writes_only_the_device_level() {
        let own = |f: &str| filter(f).with_device_level("%u");
        assert_eq!(own("co2/+/emissions"), "co2/%u/emissions");
        assert_eq!(own("sensors/{device}/dht11"), "sensors/%u/dht11");
        assert_eq!(own("site/+/{device}/#"), "site/+/%u/#");
        assert_eq!(
            own("$share/g/camera/{device}/snapshot"),
            "camera/%u/snapshot"
        );
        assert_eq!(own("bins/level"), "bins/level");
        assert_eq!(own("$share/g/raw/#"), "raw/#");
        assert_eq!(filter("$share/g/x/{device}").with_device_level("+"), "x/+");
    }

    #[test]
    fn device_ids_are_checked() {
        assert!(DeviceId::parse("pi_kitchen-01").is_ok());
        assert_eq!(DeviceId::parse(""), Err(DeviceIdError::Length));
        assert_eq!(DeviceId::parse(&"a".repeat(65)), Err(DeviceIdError::Length));
        assert_eq!(DeviceId::parse("a b"), Err(DeviceIdError::Character));
        assert_eq!(
            DeviceId::parse("x'; DROP TABLE"),
            Err(DeviceIdError::Character)
        );
    }
}
