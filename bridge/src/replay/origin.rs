//! Where a stored dead letter came from, worked out from its `topic` column,
//! and the route and device today's routes give it.
//!
//! The pipeline names a delivery in a dead letter as follows:
//! - MQTT: the topic as received;
//! - Kafka: `kafka:<topic>/<partition>@<offset>` ([`KafkaOrigin::locator`]);
//!   a Kafka topic name has no `/` or `@`, so the locator reads back whole.
//!   The record key is not kept;
//! - HTTP ingest: the route's first topic filter with the token's device in
//!   its `{device}` level, which reads back like an MQTT topic; or, when that
//!   filter has another wildcard, `http/ingest/<route>`, which keeps no device.

use std::sync::Arc;

use bytes::Bytes;
use co2_wire::DeviceId;

use crate::config::{Settings, SourceSettings};
use crate::model::KafkaOrigin;
use crate::model::Origin;
use crate::model::RouteId;
use crate::route::Routes;

/// Characters of `rejected_messages.topic` (VARCHAR(255)): a topic that fills
/// it may have been cut.
const TOPIC_CHARS: usize = 255;

/// Why a stored dead letter cannot be fed through the routes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unreplayable {
    /// Sent to `POST /ingest/<route>` on a route whose first topic filter
    /// cannot name the device: the device was the bearer token's, and the
    /// letter does not keep it.
    HttpToken,
    /// A Kafka record on a topic that names no device, read by a source with
    /// `device_from_key`: the device was the record key, which the letter
    /// does not keep.
    KafkaKey,
    /// The topic fills its column (255 characters), so it may have been cut.
    TopicCut,
    /// It crashed the bridge twice (`crashed_bridge`): replayed only when
    /// `--reason crashed_bridge` names it.
    CrashedBridge,
}

impl Unreplayable {
    /// A short name for the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpToken => "http_token",
            Self::KafkaKey => "kafka_key",
            Self::TopicCut => "topic_cut",
            Self::CrashedBridge => "crashed_bridge",
        }
    }

    /// Why, in a sentence.
    pub fn explain(self) -> &'static str {
        match self {
            Self::HttpToken => {
                "HTTP ingest letters whose device came from the bearer token, which is not stored"
            }
            Self::KafkaKey => {
                "Kafka letters whose device came from the record key, which is not stored"
            }
            Self::TopicCut => "the topic fills its 255-character column and may have been cut",
            Self::CrashedBridge => {
                "they crashed the bridge twice; name --reason crashed_bridge to try them"
            }
        }
    }
}

/// A stored letter's origin (or why it has none that can be replayed), and
/// the route and device its topic gives today.
#[derive(Debug, Clone)]
pub struct Located {
    /// What to feed the routes with.
    pub origin: Result<Origin, Unreplayable>,
    /// The first route whose filters match the topic (for HTTP letters, the
    /// route they were sent to).
    pub route: Option<RouteId>,
    /// The topic's `{device}` level, when it has one.
    pub device: Option<DeviceId>,
}

/// The Kafka topics whose records take their device from the key today.
#[derive(Debug, Clone, Default)]
pub struct KeyedTopics(Vec<String>);

impl KeyedTopics {
    /// The topics of every Kafka source with `device_from_key = true`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self(
            settings
                .sources
                .iter()
                .map(|s| match s {
                    SourceSettings::Kafka(k) => k,
                })
                .filter(|k| k.device_from_key)
                .flat_map(|k| k.topics.iter().cloned())
                .collect(),
        )
    }

    fn contains(&self, topic: &str) -> bool {
        self.0.iter().any(|t| t == topic)
    }
}

/// Works out where the letter stored with `topic` came from.
pub fn locate(topic: &str, routes: &Routes, keyed: &KeyedTopics) -> Located {
    if let Some(name) = topic
        .strip_prefix("http/ingest/")
        .or_else(|| (topic == "http").then_some(""))
    {
        return Located {
            origin: Err(Unreplayable::HttpToken),
            route: routes.by_name(name).map(|(id, _)| id),
            device: None,
        };
    }
    let cut = topic.chars().nth(TOPIC_CHARS - 1).is_some();
    let kafka = kafka_locator(topic);
    let name = kafka.as_ref().map_or(topic, |k| &*k.topic);
    let (route, device, names_device) = match_topic(name, routes);
    let origin = match kafka {
        _ if cut => Err(Unreplayable::TopicCut),
        Some(k) if !names_device && keyed.contains(&k.topic) => Err(Unreplayable::KafkaKey),
        Some(k) => Ok(Origin::Kafka(k)),
        None => Ok(Origin::Mqtt(Bytes::copy_from_slice(topic.as_bytes()))),
    };
    Located {
        origin,
        route,
        device,
    }
}

/// The first route matching `topic` as the bridge finds it, the device its
/// `{device}` level names (if valid), and whether the filter has such a level.
fn match_topic(topic: &str, routes: &Routes) -> (Option<RouteId>, Option<DeviceId>, bool) {
    routes
        .iter()
        .enumerate()
        .find_map(|(id, r)| {
            let matched = r.filters().iter().find_map(|f| f.matches(topic))?;
            let named = matched.device();
            Some((
                Some(id),
                named.and_then(|d| DeviceId::parse(d).ok()),
                named.is_some(),
            ))
        })
        .unwrap_or((None, None, false))
}

/// The Kafka record a `kafka:<topic>/<partition>@<offset>` locator names;
/// `None` for anything else (an MQTT topic may start with `kafka:` too).
fn kafka_locator(text: &str) -> Option<KafkaOrigin> {
    let rest = text.strip_prefix("kafka:")?;
    let (rest, offset) = rest.rsplit_once('@')?;
    let (topic, partition) = rest.rsplit_once('/')?;
    // Kafka's own rule for topic names.
    let valid = !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return None;
    }
    Some(KafkaOrigin {
        topic: Arc::from(topic),
        partition: partition.parse().ok()?,
        offset: offset.parse().ok()?,
        key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(toml: &str) -> (Routes, KeyedTopics) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(&file, toml).unwrap();
        let settings = Settings::load_from(Some(&file), Vec::<(String, String)>::new()).unwrap();
        (
            Routes::from_settings(&settings).unwrap(),
            KeyedTopics::from_settings(&settings),
        )
    }

    const CONFIG: &str = r#"
[http]
device_listen = "127.0.0.1:0"

[[sources]]
kind = "kafka"
bootstrap_servers = ["127.0.0.1:9092"]
topics = ["plant.readings", "plant.by-topic"]
device_from_key = true

[[routes]]
name = "plant"
topics = ["plant.readings"]
decoder = "value"

[[routes]]
name = "lines"
topics = ["plant.by-topic", "lines/{device}/value"]
decoder = "value"

[[routes]]
name = "camera"
topics = ["cameras/+/{device}/image"]
decoder = "binary"
[routes.http]
tokens_file = "/nonexistent/tokens"
"#;

    fn name(routes: &Routes, located: &Located) -> &'static str {
        match routes.label(located.route) {
            "co2" => "co2",
            "plant" => "plant",
            "lines" => "lines",
            "camera" => "camera",
            _ => "unrouted",
        }
    }

    #[test]
    fn mqtt_topics_are_replayed_as_they_are() {
        let (routes, keyed) = routes(CONFIG);
        let l = locate("co2/pi-7/emissions", &routes, &keyed);
        match &l.origin {
            Ok(Origin::Mqtt(t)) => assert_eq!(&t[..], b"co2/pi-7/emissions"),
            other => panic!("{other:?}"),
        }
        assert_eq!(name(&routes, &l), "co2");
        assert_eq!(l.device.as_ref().map(DeviceId::as_str), Some("pi-7"));
        // No route today: still an origin (the routes refuse it as no_route).
        let l = locate("nowhere/at/all", &routes, &keyed);
        assert!(matches!(l.origin, Ok(Origin::Mqtt(_))));
        assert_eq!((l.route, l.device), (None, None));
        // A device level that is not a valid id: the route, no device.
        let l = locate("co2/a b/emissions", &routes, &keyed);
        assert_eq!((name(&routes, &l), l.device), ("co2", None));
    }

    #[test]
    fn kafka_locators_are_records_without_their_key() {
        let (routes, keyed) = routes(CONFIG);
        let l = locate("kafka:lines.x/3@42", &routes, &keyed);
        match &l.origin {
            Ok(Origin::Kafka(k)) => {
                assert_eq!((&*k.topic, k.partition, k.offset), ("lines.x", 3, 42));
                assert!(k.key.is_none());
                assert_eq!(k.locator(), "kafka:lines.x/3@42", "reads back whole");
            }
            other => panic!("{other:?}"),
        }
        // Keyed source, topic without a device level: the device is lost.
        let l = locate("kafka:plant.readings/0@7", &routes, &keyed);
        assert_eq!(l.origin.as_ref().unwrap_err(), &Unreplayable::KafkaKey);
        assert_eq!(name(&routes, &l), "plant");
        // Without device_from_key the bridge used the route's default device,
        // and so does the replay.
        let (plain, none) = routes_without_keys();
        assert!(matches!(
            locate("kafka:plant.readings/0@7", &plain, &none).origin,
            Ok(Origin::Kafka(_))
        ));
        // Not locators: MQTT topics that happen to start with "kafka:".
        for text in [
            "kafka:",
            "kafka:t/1",
            "kafka:t@1",
            "kafka:/1@2",
            "kafka:a/b/1@2",
            "kafka:t/x@2",
            "kafka:t/1@y",
            "kafka:t é/1@2",
        ] {
            assert!(
                matches!(locate(text, &routes, &keyed).origin, Ok(Origin::Mqtt(_))),
                "{text}"
            );
        }
    }

    fn routes_without_keys() -> (Routes, KeyedTopics) {
        routes(&CONFIG.replace("device_from_key = true", "device_from_key = false"))
    }

    #[test]
    fn http_letters_without_a_device_cannot_be_replayed() {
        let (routes, keyed) = routes(CONFIG);
        let l = locate("http/ingest/camera", &routes, &keyed);
        assert_eq!(l.origin.as_ref().unwrap_err(), &Unreplayable::HttpToken);
        assert_eq!(name(&routes, &l), "camera");
        let l = locate("http", &routes, &keyed);
        assert_eq!(l.origin.as_ref().unwrap_err(), &Unreplayable::HttpToken);
        assert_eq!(l.route, None);
        // Where the route's first filter names the device, the letter's topic
        // is an ordinary topic with the token's device in it.
        let l = locate("lines/press-2/value", &routes, &keyed);
        assert!(matches!(l.origin, Ok(Origin::Mqtt(_))));
        assert_eq!(name(&routes, &l), "lines");
        assert_eq!(l.device.as_ref().map(DeviceId::as_str), Some("press-2"));
    }

    #[test]
    fn a_topic_that_fills_its_column_may_be_cut() {
        let (routes, keyed) = routes(CONFIG);
        let full = format!("co2/{}/emissions", "d".repeat(TOPIC_CHARS - 14));
        assert_eq!(full.chars().count(), TOPIC_CHARS);
        assert_eq!(
            locate(&full, &routes, &keyed).origin.unwrap_err(),
            Unreplayable::TopicCut
        );
        let shorter = format!("co2/{}/emissions", "d".repeat(TOPIC_CHARS - 15));
        assert!(locate(&shorter, &routes, &keyed).origin.is_ok());
    }
}
