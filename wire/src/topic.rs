//! Topic filters and the device id carried in a topic.
//!
//! `bins/{device}/level` names the device level explicitly (it subscribes as
//! `+`); without a `{device}` level, the first `+` is the device
//! (`co2/+/emissions`). A filter with neither (the legacy `co2/emissions`)
//! carries no device, and the configured default is used.
//!
//! Any other named level (`sensors/{device}/{room}/dht11`) is a capture: it
//! subscribes as `+` too, and a match reports the level's text under its
//! name, which the bridge keeps as a tag of the message.

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
    /// The named levels other than `{device}`: (index, name), in level order.
    named: Vec<(usize, String)>,
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
    /// A `{...}` level that is not a name, or a name used twice.
    #[error(
        "a named level is '{{device}}' or '{{name}}' with a name of 1-64 letters, digits and \
         '_' not starting with a digit, filling the whole level, each name once"
    )]
    Capture,
    /// `$share/<group>/<filter>` is missing its group or filter.
    #[error("a shared subscription is written '$share/<group>/<filter>'")]
    Share,
}

/// What a topic says when it matches a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMatch<'a> {
    device: Option<&'a str>,
    named: Vec<(&'a str, &'a str)>,
}

impl<'a> TopicMatch<'a> {
    /// The text of the device level (still to be validated as a [`DeviceId`]);
    /// `None` when the filter has none and the configured default applies.
    pub fn device(&self) -> Option<&'a str> {
        self.device
    }

    /// `(name, text)` of every named level other than `{device}`, in level order.
    pub fn named(&self) -> &[(&'a str, &'a str)] {
        &self.named
    }
}

/// Longest name of a named level (a column name in MySQL).
const MAX_NAME_LEN: usize = 64;

/// The name inside a `{name}` level, if `level` is one.
fn level_name(level: &str) -> Option<&str> {
    let name = level.strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
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
        let mut named: Vec<(usize, String)> = Vec::new();
        for (i, level) in levels.iter().enumerate() {
            if let Some(name) = level_name(level) {
                if name == "device" {
                    if capture.replace(i).is_some() {
                        return Err(TopicFilterError::Capture);
                    }
                } else if named.iter().any(|(_, n)| n == name) {
                    return Err(TopicFilterError::Capture);
                } else {
                    named.push((i, name.to_owned()));
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
        if capture.is_some() || !named.is_empty() {
            for i in capture.iter().chain(named.iter().map(|(i, _)| i)) {
                if let Some(level) = levels.get_mut(*i) {
                    "+".clone_into(level);
                }
            }
            let prefix = &filter[..filter.len() - matched.len()];
            subscription = format!("{prefix}{}", levels.join("/"));
        }
        Ok(Self {
            subscription,
            levels,
            device_level,
            named,
        })
    }

    /// The names of the named levels other than `{device}`, in level order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(_, n)| n.as_str())
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
    pub fn matches<'a>(&'a self, topic: &'a str) -> Option<TopicMatch<'a>> {
        let mut device = None;
        let mut named = Vec::with_capacity(self.named.len());
        let mut names = self.named.iter().peekable();
        let mut topic_levels = levels(topic);
        for (i, level) in self.levels.iter().enumerate() {
            if level == "#" {
                break;
            }
            let got = topic_levels.next()?;
            if level == "+" {
                if Some(i) == self.device_level {
                    device = Some(got);
                } else if let Some((_, name)) = names.next_if(|(at, _)| *at == i) {
                    named.push((name.as_str(), got));
                }
            } else if level != got {
                return None;
            }
        }
        if self.levels.last().is_some_and(|l| l != "#") && topic_levels.next().is_some() {
            return None;
        }
        Some(TopicMatch { device, named })
    }
}

/// The levels of `topic`. Split byte by byte: `str::split` with a `char`
/// pattern was most of the cost of matching a topic, which happens for every
/// message. `/` is ASCII, so every cut is at a character boundary.
fn levels(topic: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(topic);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.bytes().position(|b| b == b'/') {
            Some(at) => {
                rest = text.get(at + 1..);
                text.get(..at)
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_split_like_str_split() {
        for topic in [
            "",
            "/",
            "a",
            "a/b",
            "/a/",
            "a//b",
            "é/ü/🦀",
            "co2/dev-01/emissions",
        ] {
            assert_eq!(
                levels(topic).collect::<Vec<_>>(),
                topic.split('/').collect::<Vec<_>>(),
                "{topic:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn levels_split_any_text_like_str_split(topic in r"[a/é+#]{0,12}|\PC{0,30}") {
            proptest::prop_assert_eq!(
                levels(&topic).collect::<Vec<_>>(),
                topic.split('/').collect::<Vec<_>>()
            );
        }
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// `Some(device level)` when `topic` matches, `None` when it does not.
    fn device<'a>(f: &'a TopicFilter, topic: &'a str) -> Option<Option<&'a str>> {
        f.matches(topic).map(|m| m.device())
    }

    #[test]
    fn device_comes_from_the_plus_level() {
        let f = filter("co2/+/emissions");
        assert_eq!(device(&f, "co2/pi-1/emissions"), Some(Some("pi-1")));
        assert_eq!(f.matches("co2/pi-1/temperature"), None);
        assert_eq!(f.matches("co2/pi-1/emissions/extra"), None);
        assert_eq!(f.matches("co2/emissions"), None);
        assert!(f.matches("co2/pi-1/emissions").unwrap().named().is_empty());
    }

    #[test]
    fn legacy_topic_has_no_device() {
        let f = filter("co2/emissions");
        assert_eq!(device(&f, "co2/emissions"), Some(None));
        assert_eq!(f.matches("co2/x/emissions"), None);
    }

    #[test]
    fn shared_subscription_matches_the_inner_filter() {
        let f = filter("$share/bridges/co2/+/emissions");
        assert_eq!(f.subscription(), "$share/bridges/co2/+/emissions");
        assert_eq!(device(&f, "co2/a/emissions"), Some(Some("a")));
        assert_eq!(
            TopicFilter::parse("$share//x"),
            Err(TopicFilterError::Share)
        );
        assert_eq!(TopicFilter::parse("$share/g"), Err(TopicFilterError::Share));
    }

    #[test]
    fn hash_matches_the_rest() {
        let f = filter("sensors/+/#");
        assert_eq!(device(&f, "sensors/d/a/b"), Some(Some("d")));
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
        assert_eq!(device(&f, "bins/b7/level"), Some(Some("b7")));
        let f = filter("$share/g/site/+/{device}/temp");
        assert_eq!(f.subscription(), "$share/g/site/+/+/temp");
        assert_eq!(device(&f, "site/x/d1/temp"), Some(Some("d1")));
        assert_eq!(
            TopicFilter::parse("a/{device}/{device}"),
            Err(TopicFilterError::Capture)
        );
        for bad in [
            "a/{1bin}/x",
            "a/{}/x",
            "a/{bin-id}/x",
            "a/x{bin}/x",
            "a/{bin}x/x",
            "a/{bin}/{bin}",
            "a/{b}}/x",
        ] {
            assert_eq!(
                TopicFilter::parse(bad),
                Err(TopicFilterError::Capture),
                "{bad}"
            );
        }
        let longest = format!("a/{{{}}}", "n".repeat(64));
        assert!(TopicFilter::parse(&longest).is_ok());
        let too_long = format!("a/{{{}}}", "n".repeat(65));
        assert_eq!(
            TopicFilter::parse(&too_long),
            Err(TopicFilterError::Capture)
        );
    }

    #[test]
    fn other_named_levels_are_captures() {
        let f = filter("shellies/{device}/relay/{channel}/{field}");
        assert_eq!(f.subscription(), "shellies/+/relay/+/+");
        assert_eq!(f.names().collect::<Vec<_>>(), ["channel", "field"]);
        let m = f.matches("shellies/abc/relay/0/power").unwrap();
        assert_eq!(m.device(), Some("abc"));
        assert_eq!(m.named(), [("channel", "0"), ("field", "power")]);
        assert_eq!(f.matches("shellies/abc/relay/0"), None);
        assert_eq!(f.matches("shellies/abc/meter/0/power"), None);

        // Without {device}, the first plain `+` is still the device; named
        // levels are never taken for it.
        let f = filter("sensors/{room}/+/dht11");
        let m = f.matches("sensors/kitchen/pi-1/dht11").unwrap();
        assert_eq!(m.device(), Some("pi-1"));
        assert_eq!(m.named(), [("room", "kitchen")]);
        let f = filter("$share/g/sensors/{device}/{room}/dht11");
        assert_eq!(f.subscription(), "$share/g/sensors/+/+/dht11");
        let m = f.matches("sensors/pi/hall/dht11").unwrap();
        assert_eq!(
            (m.device(), m.named()),
            (Some("pi"), &[("room", "hall")][..])
        );
        // Only {device} is the device; a named level with no {device} and no `+`.
        let f = filter("site/{room}/temp");
        let m = f.matches("site/attic/temp").unwrap();
        assert_eq!((m.device(), m.named()), (None, &[("room", "attic")][..]));
        // A plain `+` besides {device} is a wildcard, not a capture.
        let f = filter("x/+/{device}/{k}");
        let m = f.matches("x/any/d/v").unwrap();
        assert_eq!((m.device(), m.named()), (Some("d"), &[("k", "v")][..]));
    }

    #[test]
    fn named_levels_are_wildcards_for_acls_and_overlaps() {
        let f = filter("sensors/{device}/{room}/dht11");
        assert_eq!(f.with_device_level("%u"), "sensors/%u/+/dht11");
        assert!(f.overlaps(&filter("sensors/+/kitchen/dht11")));
        assert!(!f.overlaps(&filter("sensors/{device}/dht11")));
        let pi = DeviceId::parse("pi").unwrap();
        assert_eq!(
            f.topic_for(&pi),
            None,
            "a tag level has no value to fill in"
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Level {
            Literal(String),
            Plus,
            Named,
            Device,
        }

        fn level() -> impl Strategy<Value = Level> {
            prop_oneof![
                "[a-z0-9]{1,6}".prop_map(Level::Literal),
                Just(Level::Plus),
                Just(Level::Named),
                Just(Level::Device),
            ]
        }

        /// A filter's levels (at most one `{device}`), whether it ends in `#`,
        /// and the text each level of a matching topic holds.
        fn case() -> impl Strategy<Value = (Vec<Level>, bool, Vec<String>, Vec<String>)> {
            (
                proptest::collection::vec(level(), 1..8),
                any::<bool>(),
                proptest::collection::vec("[A-Za-z0-9 é_-]{0,8}", 8),
                proptest::collection::vec("[a-z]{0,4}", 0..3),
            )
                .prop_map(|(mut levels, hash, values, rest)| {
                    let mut seen_device = false;
                    for l in &mut levels {
                        if matches!(l, Level::Device) {
                            if seen_device {
                                *l = Level::Plus;
                            }
                            seen_device = true;
                        }
                    }
                    (levels, hash, values, rest)
                })
        }

        proptest! {
            #[test]
            fn captures_are_the_topic_levels_they_name((levels, hash, values, rest) in case()) {
                let mut filter: Vec<String> = Vec::new();
                let mut topic: Vec<String> = Vec::new();
                let mut subscription: Vec<String> = Vec::new();
                let mut want_named = Vec::new();
                let mut named_device = None;
                let mut first_plus = None;
                for (i, l) in levels.iter().enumerate() {
                    let value = values[i].clone();
                    match l {
                        Level::Literal(w) => {
                            filter.push(w.clone());
                            subscription.push(w.clone());
                            topic.push(w.clone());
                            continue;
                        }
                        Level::Plus => {
                            filter.push("+".into());
                            first_plus.get_or_insert(value.clone());
                        }
                        Level::Named => {
                            let name = format!("t{i}");
                            filter.push(format!("{{{name}}}"));
                            want_named.push((name, value.clone()));
                        }
                        Level::Device => {
                            filter.push("{device}".into());
                            named_device = Some(value.clone());
                        }
                    }
                    subscription.push("+".into());
                    topic.push(value);
                }
                if hash {
                    filter.push("#".into());
                    subscription.push("#".into());
                    topic.extend(rest.iter().cloned());
                }
                let f = TopicFilter::parse(&filter.join("/")).unwrap();
                prop_assert_eq!(f.subscription(), subscription.join("/"));
                let topic_text = topic.join("/");
                let m = f.matches(&topic_text);
                prop_assert!(m.is_some(), "{} does not match {}", topic_text, f);
                let m = m.unwrap();
                let want_device = named_device.or(first_plus);
                prop_assert_eq!(m.device(), want_device.as_deref());
                let got: Vec<(String, String)> = m
                    .named()
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect();
                prop_assert_eq!(got, want_named);

                // A literal level changed, or (without `#`) one level more: no match.
                if let Some(i) = levels.iter().position(|l| matches!(l, Level::Literal(_))) {
                    let mut other = topic.clone();
                    other[i].push('x');
                    prop_assert!(f.matches(&other.join("/")).is_none());
                }
                if !hash {
                    let longer = format!("{topic_text}/more");
                    prop_assert!(f.matches(&longer).is_none());
                }
            }

            #[test]
            fn any_filter_and_topic_match_without_panic(
                filter in r"[a-z{}+#/$]{0,12}(device)?[a-z{}+#/]{0,12}",
                topic in r"[a-z/é]{0,24}",
            ) {
                if let Ok(f) = TopicFilter::parse(&filter) {
                    let plain = !f.subscription().contains(['{', '}'])
                        || f.subscription().starts_with("$share/");
                    prop_assert!(plain, "subscription {}", f.subscription());
                    if let Some(m) = f.matches(&topic) {
                        for (_, v) in m.named() {
                            prop_assert!(!v.contains('/'));
                        }
                        prop_assert!(m.device().is_none_or(|d| !d.contains('/')));
                    }
                }
            }
        }
    }
}
