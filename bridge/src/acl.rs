//! The Mosquitto ACL that fits the configured routes (`co2-bridge acl`).
//!
//! The bridge's user may read every route's topics and publish nothing; a
//! device may publish on each route's topics under its own name: the device
//! level (`{device}`, or the first `+`) becomes Mosquitto's `%u`, the user
//! name. Printed from the same settings the bridge runs with, so the broker's
//! grants cannot drift from the routes. A topic without a device level is
//! granted to no device here: a pattern for it would let every device publish
//! there (and name any device in its payload); it is listed on a
//! `#shared-topic <topic>` comment line instead, for the installer to grant to
//! the devices an operator names.

use std::fmt::Write as _;

use co2_wire::{DeviceId, TopicFilter};

use crate::config::{ConfigError, Settings, DISCOVERY_ROUTE};
use crate::route::CO2_ROUTE;

/// What the broker grants, derived from the routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    bridge_user: String,
    reads: Vec<String>,
    patterns: Vec<String>,
    denies: Vec<String>,
    shared: Vec<String>,
    /// Home Assistant discovery is on: say what else the bridge must read.
    discovery: bool,
}

impl Acl {
    /// The grants for every route the bridge runs: the CO2 route (`mqtt.topics`),
    /// its announcements (`<prefix>/+/events`) and every `[[routes]]` entry.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let user = settings
            .mqtt
            .username
            .as_deref()
            .ok_or(ConfigError::Invalid {
                key: "mqtt.username".to_owned(),
                message: "is not set; the ACL grants the bridge's broker user by name".into(),
            })?;
        // The name is written into ACL lines and topics: keep it to one plain level.
        DeviceId::parse(user).map_err(|e| ConfigError::Invalid {
            key: "mqtt.username".to_owned(),
            message: format!("{user:?} cannot be written into a Mosquitto ACL: {e}"),
        })?;
        let mut acl = Self {
            bridge_user: user.to_owned(),
            reads: Vec::new(),
            patterns: Vec::new(),
            denies: Vec::new(),
            shared: Vec::new(),
            discovery: false,
        };
        // Every route the bridge runs, the built-in ones (CO2, its
        // announcements) included, exactly as it runs them.
        let routes = crate::route::Routes::from_settings(settings)?;
        for route in routes.iter() {
            if route.name() == DISCOVERY_ROUTE {
                acl.add_discovery(route.filters());
                continue;
            }
            for filter in route.filters() {
                acl.add(route.name(), filter.subscription(), filter)?;
            }
        }
        Ok(acl)
    }

    /// Home Assistant discovery: the bridge trusts whoever may publish an
    /// announcement, so the announcement topics are granted to no device
    /// here (a `%u` pattern on their first level would be nonsense); the
    /// accounts that announce (Zigbee2MQTT, each Tasmota) get them by name,
    /// like any shared topic. The state topics the announcements name are
    /// known only at run time: the operator grants the bridge read on them.
    fn add_discovery(&mut self, filters: &[TopicFilter]) {
        for filter in filters {
            push_new(&mut self.reads, filter.subscription().to_owned());
            push_new(&mut self.shared, filter.subscription().to_owned());
        }
        self.discovery = true;
    }

    fn add(&mut self, route: &str, topic: &str, filter: &TopicFilter) -> Result<(), ConfigError> {
        let read = filter.with_device_level("+");
        // Mosquitto reads a line up to its end and expands %u/%c in patterns.
        if read
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '%')
        {
            return Err(bad_topic(
                route,
                topic,
                "whitespace, control characters and '%' cannot appear in a Mosquitto ACL line",
            ));
        }
        push_new(&mut self.reads, read.clone());
        let own = filter.with_device_level("%u");
        if own == read {
            push_new(&mut self.shared, read);
        } else {
            push_new(
                &mut self.denies,
                filter.with_device_level(&self.bridge_user),
            );
            push_new(&mut self.patterns, own);
        }
        Ok(())
    }

    /// Topics without a device level, which no device is granted here.
    #[cfg(test)]
    pub fn shared_topics(&self) -> &[String] {
        &self.shared
    }

    /// The ACL file's text. The same settings always give the same text, so
    /// an installer can compare it with what is installed.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Mosquitto ACL for the bridge's routes, printed by `co2-bridge acl`.\n\
             # Anything not granted here is denied.\n\
             #\n\
             # The bridge reads every route's topics and publishes nothing.\n",
        );
        let _ = writeln!(out, "user {}", self.bridge_user);
        for read in &self.reads {
            let _ = writeln!(out, "topic read {read}");
        }
        if self.discovery {
            out.push_str(
                "# Home Assistant discovery is on: the bridge also needs read access to the\n\
                 # state topics the announcements name (e.g. `topic read zigbee2mqtt/#`,\n\
                 # `topic read tele/#`); grant them in a file of your own (docs/discovery.md).\n",
            );
        }
        if !self.denies.is_empty() {
            out.push_str("# The device patterns below would let it publish under its own name.\n");
            for deny in &self.denies {
                let _ = writeln!(out, "topic deny {deny}");
            }
        }
        out.push_str(
            "\n# Every other user is a device: it may publish on each route's topics with\n\
             # its own user name as the device level, and nowhere else.\n",
        );
        for pattern in &self.patterns {
            let _ = writeln!(out, "pattern write {pattern}");
        }
        if !self.shared.is_empty() {
            out.push_str(
                "\n# Topics without a device level: a pattern would let every device publish\n\
                 # there, so no device may until it is granted one by name\n\
                 # (`user <name>` + `topic write <topic>`, e.g. by ops/add-device.sh --shared-topic).\n",
            );
            for topic in &self.shared {
                let _ = writeln!(out, "#shared-topic {topic}");
            }
        }
        out
    }
}

fn push_new(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn bad_topic(route: &str, topic: &str, why: impl std::fmt::Display) -> ConfigError {
    let key = if route == CO2_ROUTE {
        "mqtt.topics"
    } else {
        "topics"
    };
    ConfigError::Route {
        route: route.to_owned(),
        key: key.to_owned(),
        message: format!("{topic:?}: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn settings(pairs: &[(&str, &str)], file: Option<&Path>) -> Settings {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(file, env).unwrap()
    }

    #[test]
    fn the_shipped_routes_give_each_device_its_own_topics() {
        let routes = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.example.toml");
        let s = settings(
            &[("CO2_BRIDGE__MQTT__USERNAME", "co2-bridge")],
            Some(&routes),
        );
        let text = Acl::from_settings(&s).unwrap().render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("# ") && *l != "#")
            .collect();
        assert_eq!(
            lines,
            [
                "user co2-bridge",
                "topic read co2/+/emissions",
                "topic read co2/emissions",
                "topic read co2/+/events",
                "topic read co2/events",
                "topic read bins/level",
                "topic read sensors/+/dht11",
                "topic read sensors/+/+/dht11",
                "topic read temp_test",
                "topic read test",
                "topic read tele/+/SENSOR",
                "topic read zigbee2mqtt/+",
                "topic read buffered/+",
                "topic read shellies/+/relay/+/+",
                "topic read esphome/+/sensor/+/state",
                "topic read documents/+",
                "topic read camera/+/snapshot",
                "topic read camera/snapshot",
                "topic read v3/+/devices/+/up",
                "topic read v3/+/devices/+/join",
                "topic read v3/+/devices/+/down/ack",
                "topic read v3/+/devices/+/down/nack",
                "topic read v3/+/devices/+/down/sent",
                "topic read v3/+/devices/+/down/failed",
                "topic read v3/+/devices/+/service/data",
                "topic read v3/+/devices/+/location/solved",
                "topic read application/+/device/+/event/up",
                "topic read application/+/device/+/event/join",
                "topic read application/+/device/+/event/ack",
                "topic read application/+/device/+/event/txack",
                "topic read application/+/device/+/event/status",
                "topic read application/+/device/+/event/log",
                "topic read application/+/device/+/event/location",
                "topic deny co2/co2-bridge/emissions",
                "topic deny co2/co2-bridge/events",
                "topic deny sensors/co2-bridge/dht11",
                "topic deny sensors/co2-bridge/+/dht11",
                "topic deny tele/co2-bridge/SENSOR",
                "topic deny zigbee2mqtt/co2-bridge",
                "topic deny buffered/co2-bridge",
                "topic deny shellies/co2-bridge/relay/+/+",
                "topic deny esphome/co2-bridge/sensor/+/state",
                "topic deny documents/co2-bridge",
                "topic deny camera/co2-bridge/snapshot",
                "topic deny v3/+/devices/co2-bridge/up",
                "topic deny v3/+/devices/co2-bridge/join",
                "topic deny v3/+/devices/co2-bridge/down/ack",
                "topic deny v3/+/devices/co2-bridge/down/nack",
                "topic deny v3/+/devices/co2-bridge/down/sent",
                "topic deny v3/+/devices/co2-bridge/down/failed",
                "topic deny v3/+/devices/co2-bridge/service/data",
                "topic deny v3/+/devices/co2-bridge/location/solved",
                "topic deny application/+/device/co2-bridge/event/up",
                "topic deny application/+/device/co2-bridge/event/join",
                "topic deny application/+/device/co2-bridge/event/ack",
                "topic deny application/+/device/co2-bridge/event/txack",
                "topic deny application/+/device/co2-bridge/event/status",
                "topic deny application/+/device/co2-bridge/event/log",
                "topic deny application/+/device/co2-bridge/event/location",
                "",
                "pattern write co2/%u/emissions",
                "pattern write co2/%u/events",
                "pattern write sensors/%u/dht11",
                "pattern write sensors/%u/+/dht11",
                "pattern write tele/%u/SENSOR",
                "pattern write zigbee2mqtt/%u",
                "pattern write buffered/%u",
                "pattern write shellies/%u/relay/+/+",
                "pattern write esphome/%u/sensor/+/state",
                "pattern write documents/%u",
                "pattern write camera/%u/snapshot",
                "pattern write v3/+/devices/%u/up",
                "pattern write v3/+/devices/%u/join",
                "pattern write v3/+/devices/%u/down/ack",
                "pattern write v3/+/devices/%u/down/nack",
                "pattern write v3/+/devices/%u/down/sent",
                "pattern write v3/+/devices/%u/down/failed",
                "pattern write v3/+/devices/%u/service/data",
                "pattern write v3/+/devices/%u/location/solved",
                "pattern write application/+/device/%u/event/up",
                "pattern write application/+/device/%u/event/join",
                "pattern write application/+/device/%u/event/ack",
                "pattern write application/+/device/%u/event/txack",
                "pattern write application/+/device/%u/event/status",
                "pattern write application/+/device/%u/event/log",
                "pattern write application/+/device/%u/event/location",
                "",
                "#shared-topic co2/emissions",
                "#shared-topic co2/events",
                "#shared-topic bins/level",
                "#shared-topic temp_test",
                "#shared-topic test",
                "#shared-topic camera/snapshot",
            ],
            "{text}"
        );
    }

    #[test]
    fn shared_subscriptions_and_repeats_are_granted_once_without_the_group() {
        let s = settings(
            &[
                ("CO2_BRIDGE__MQTT__USERNAME", "b"),
                (
                    "CO2_BRIDGE__MQTT__TOPICS",
                    "$share/g/co2/+/emissions,site/+/{device}/#",
                ),
            ],
            None,
        );
        let acl = Acl::from_settings(&s).unwrap();
        // The announcements beside the CO2 topic share its group.
        assert_eq!(acl.reads, ["co2/+/emissions", "site/+/+/#", "co2/+/events"]);
        assert_eq!(
            acl.patterns,
            ["co2/%u/emissions", "site/+/%u/#", "co2/%u/events"]
        );
        assert_eq!(
            acl.denies,
            ["co2/b/emissions", "site/+/b/#", "co2/b/events"]
        );
        assert!(acl.shared_topics().is_empty());
        assert!(!acl.render().contains("#shared-topic"));
    }

    #[test]
    fn discovery_announcements_are_read_by_the_bridge_and_granted_by_name_only() {
        let s = settings(
            &[
                ("CO2_BRIDGE__MQTT__USERNAME", "co2-bridge"),
                ("CO2_BRIDGE__DISCOVERY__HOMEASSISTANT", "true"),
            ],
            None,
        );
        let text = Acl::from_settings(&s).unwrap().render();
        for line in [
            "topic read homeassistant/+/+/config",
            "topic read homeassistant/+/+/+/config",
            "#shared-topic homeassistant/+/+/config",
            "#shared-topic homeassistant/+/+/+/config",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // No device may announce by its own name: no pattern on the prefix.
        assert!(!text.contains("pattern write homeassistant"), "{text}");
        assert!(text.contains("state topics the announcements name"));
    }

    #[test]
    fn the_bridge_user_must_be_named_and_plain() {
        let s = settings(&[], None);
        let err = Acl::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("mqtt.username"), "{err}");
        for bad in ["a b", "x/#", "u\ntopic readwrite #"] {
            let s = settings(&[("CO2_BRIDGE__MQTT__USERNAME", bad)], None);
            let err = Acl::from_settings(&s).unwrap_err().to_string();
            assert!(err.contains("mqtt.username"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn topics_that_cannot_be_acl_lines_are_refused_by_route() {
        for bad in ["co2/+/a b", "co2/%c/x", "co2/+/x\ntopic readwrite x"] {
            let s = settings(
                &[
                    ("CO2_BRIDGE__MQTT__USERNAME", "b"),
                    ("CO2_BRIDGE__MQTT__TOPICS", bad),
                ],
                None,
            );
            let err = Acl::from_settings(&s).unwrap_err().to_string();
            assert!(
                err.contains("co2") && err.contains("mqtt.topics"),
                "{bad:?}: {err}"
            );
        }
    }
}
