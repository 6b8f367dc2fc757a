//! Home Assistant MQTT discovery (`[discovery] homeassistant = true`): the
//! bridge reads the retained announcements Zigbee2MQTT, Tasmota, ESPHome and
//! others publish under `<prefix>/<component>/[<node_id>/]<object_id>/config`
//! and stores each announced sensor's state, arriving on its state topic,
//! into the `readings` table with no route written for it.
//!
//! The announcements are parsed here ([`announcement`], [`template`]) and
//! held, bounded, in a [`registry::Registry`]. The MQTT source learns which
//! state topics to subscribe to from [`Feed`], at run time, as announcements
//! come, change and go. docs/discovery.md says what is stored and why.

pub mod announcement;
mod registry;
pub mod template;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::NaiveDateTime;
use co2_wire::{DeviceId, TopicFilter};
use prometheus::IntGauge;
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::config::DiscoverySettings;
use crate::model::{Field, Message, Reason, Value};
use announcement::{Announcement, Component, ConfigTopic, Refusal};
pub use registry::Outcome;
use registry::Registry;

/// What the MQTT source needs to follow the announcements: the filters that
/// bring them, and the state topics to subscribe to, as they change.
#[derive(Debug, Clone)]
pub struct Feed {
    /// The announcement filters, subscribed on every connection (a
    /// subscription made again re-sends the retained announcements, which
    /// refills the registry after a restart that resumed the session).
    pub filters: Vec<String>,
    /// The state topics to be subscribed to, sorted; changes as announced.
    pub topics: watch::Receiver<Arc<[String]>>,
}

/// One sensor, as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SensorRow {
    /// The device id its values are stored under.
    pub device: String,
    /// Its field.
    pub field: String,
    /// `unit_of_measurement`, if announced.
    pub unit: Option<String>,
    /// `device_class`, if announced.
    pub device_class: Option<String>,
    /// Where its state arrives.
    pub state_topic: String,
    /// The template, when the bridge refuses it (its states are dead letters).
    pub refused_template: Option<String>,
    /// True when a configured route takes this state topic instead.
    pub taken_by_route: bool,
}

/// The discovery state of a running bridge.
#[derive(Debug)]
pub struct Discovery {
    prefix: String,
    max_announcement_bytes: usize,
    max_state_bytes: usize,
    registry: Mutex<Registry>,
    /// The routes' filters: a state topic one of them matches goes to that
    /// route (the route wins), so it is not subscribed for discovery.
    route_filters: Vec<TopicFilter>,
    topics: watch::Sender<Arc<[String]>>,
    sensors_gauge: OnceLock<IntGauge>,
    refusals: AtomicU64,
}

impl Discovery {
    /// Discovery as `settings` configures it, beside routes with `route_filters`.
    pub fn new(settings: &DiscoverySettings, route_filters: Vec<TopicFilter>) -> Self {
        let (topics, _) = watch::channel(Arc::from(Vec::new()));
        Self {
            prefix: settings.prefix.clone(),
            max_announcement_bytes: settings.max_announcement_bytes,
            max_state_bytes: settings.max_state_bytes,
            registry: Mutex::new(Registry::new(
                settings.max_sensors,
                settings.max_sensors_per_topic,
            )),
            route_filters,
            topics,
            sensors_gauge: OnceLock::new(),
            refusals: AtomicU64::new(0),
        }
    }

    /// The announcement filters: with and without a node id level.
    pub fn filters(&self) -> Vec<String> {
        vec![
            format!("{}/+/+/config", self.prefix),
            format!("{}/+/+/+/config", self.prefix),
        ]
    }

    /// What the MQTT source follows.
    pub fn feed(&self) -> Feed {
        Feed {
            filters: self.filters(),
            topics: self.topics.subscribe(),
        }
    }

    /// Sets the gauge of announced sensors (`co2_bridge_discovery_sensors`).
    pub fn attach_gauge(&self, gauge: IntGauge) {
        gauge.set(i64::try_from(self.lock().count()).unwrap_or(i64::MAX));
        let _ = self.sensors_gauge.set(gauge);
    }

    /// True when `topic` is an announcement topic under the prefix.
    pub fn is_announcement(&self, topic: &str) -> bool {
        ConfigTopic::parse(&self.prefix, topic).is_some()
    }

    /// True when `topic` is some announced sensor's state topic.
    pub fn has_state_topic(&self, topic: &str) -> bool {
        self.lock().has_state_topic(topic)
    }

    /// Takes one announcement: a new or changed sensor, a withdrawal (empty
    /// payload), or another component (ignored). `Err` is the dead letter's
    /// reason and detail: the announcement is refused, and a sensor it
    /// replaces is withdrawn unless a bound refused it.
    pub fn announce(&self, topic: &str, payload: &[u8]) -> Result<Outcome, (Reason, String)> {
        let Some(config) = ConfigTopic::parse(&self.prefix, topic) else {
            return Ok(Outcome::NotKnown);
        };
        let Some(component) = config.stored_component() else {
            tracing::debug!(
                topic,
                component = config.component,
                "Ignoring an announcement of a component that carries no values"
            );
            return Ok(Outcome::NotKnown);
        };
        let mut registry = self.lock();
        // Whether the registry changed: only then are the wanted topics
        // worked out again (that costs a pass over every sensor, too much
        // to pay for each announcement of a flood that is refused).
        let changed;
        let result = if payload.is_empty() {
            let outcome = registry.remove(topic);
            changed = outcome == Outcome::Removed;
            Ok(outcome)
        } else {
            match announcement::parse(&config, component, payload, self.max_announcement_bytes) {
                Ok(a) => {
                    let refused = a.template.as_ref().err().map(|e| e.to_string());
                    let summary = (a.device.clone(), a.field.clone(), a.state_topic.clone());
                    let put = registry.put(topic, a);
                    changed = matches!(put, Ok(Outcome::Added | Outcome::Changed));
                    match put {
                        // Kept, so its states are dead-lettered saying why.
                        Ok(_) if refused.is_some() => {
                            Err((Reason::UnsupportedTemplate, refused.unwrap_or_default()))
                        }
                        Ok(outcome) => {
                            if matches!(outcome, Outcome::Added | Outcome::Changed) {
                                let (device, field, state_topic) = summary;
                                tracing::info!(
                                    topic,
                                    device,
                                    field,
                                    state_topic,
                                    ?outcome,
                                    "Discovered a sensor"
                                );
                            }
                            Ok(outcome)
                        }
                        Err(registry::Full::Conflict(why)) => Err((Reason::BadAnnouncement, why)),
                        Err(full) => Err((Reason::TooManySensors, full.to_string())),
                    }
                }
                Err(refusal) => {
                    changed = registry.remove(topic) == Outcome::Removed;
                    Err((refusal_reason(&refusal), refusal.to_string()))
                }
            }
        };
        if changed {
            self.publish(&registry);
        }
        drop(registry);
        match &result {
            Ok(Outcome::Removed) => tracing::info!(topic, "A sensor was withdrawn"),
            Err((reason, detail)) => self.log_refusal(topic, *reason, detail),
            Ok(_) => {}
        }
        result
    }

    /// Reads one state message of the sensors on `topic`, stamped `time`:
    /// one field per sensor whose template gives a value.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        time: NaiveDateTime,
    ) -> Result<Message, Reason> {
        if payload.len() > self.max_state_bytes {
            return Err(Reason::Oversized);
        }
        let registry = self.lock();
        let sensors = registry.on(topic);
        let Some(first) = sensors.first() else {
            // Withdrawn between the message's arrival and now.
            return Err(Reason::NoRoute);
        };
        let device = DeviceId::parse(&first.device).map_err(|_| Reason::BadDevice)?;
        let raw = std::str::from_utf8(payload).map_err(|_| Reason::NotUtf8)?;
        let needs_json = sensors
            .iter()
            .any(|s| matches!(&s.template, Ok(t) if !t.reads_raw()));
        let json: Option<Json> = if needs_json {
            serde_json::from_str(raw).ok()
        } else {
            None
        };
        let mut fields = Vec::with_capacity(sensors.len());
        let mut tags = Vec::new();
        let mut usable = 0;
        for sensor in &sensors {
            let Ok(template) = &sensor.template else {
                continue;
            };
            usable += 1;
            let value = template
                .apply(json.as_ref(), raw)
                .and_then(|v| match sensor.component {
                    Component::Sensor => Some(v),
                    Component::BinarySensor => on_off(&v, sensor).map(Value::Bool),
                });
            let Some(value) = value else { continue };
            fields.push(Field {
                name: Arc::from(sensor.field.as_str()),
                value,
            });
            for (what, tag) in [
                ("unit", &sensor.unit),
                ("device_class", &sensor.device_class),
            ] {
                if let Some(tag) = tag {
                    tags.push((Arc::from(format!("{}.{what}", sensor.field)), tag.clone()));
                }
            }
        }
        drop(registry);
        if usable == 0 {
            return Err(Reason::UnsupportedTemplate);
        }
        if fields.is_empty() {
            return Err(if needs_json && json.is_none() {
                Reason::BadJson
            } else {
                Reason::NoStorableFields
            });
        }
        Ok(Message {
            device,
            time,
            tags,
            fields,
            reading: None,
            frame: None,
        })
    }

    /// Every sensor, for the status page.
    pub fn sensors(&self) -> Vec<SensorRow> {
        let registry = self.lock();
        registry
            .sensors()
            .map(|(_, a)| SensorRow {
                device: a.device.clone(),
                field: a.field.clone(),
                unit: a.unit.clone(),
                device_class: a.device_class.clone(),
                state_topic: a.state_topic.clone(),
                refused_template: a
                    .template
                    .is_err()
                    .then(|| a.template_text.clone().unwrap_or_default()),
                taken_by_route: self.taken_by_route(&a.state_topic),
            })
            .collect()
    }

    fn taken_by_route(&self, topic: &str) -> bool {
        self.route_filters
            .iter()
            .any(|f| f.matches(topic).is_some())
    }

    /// Tells the MQTT source the state topics now wanted, if they changed.
    fn publish(&self, registry: &Registry) {
        if let Some(gauge) = self.sensors_gauge.get() {
            gauge.set(i64::try_from(registry.count()).unwrap_or(i64::MAX));
        }
        let wanted: Vec<String> = registry
            .state_topics()
            .filter(|t| !self.taken_by_route(t))
            .map(str::to_owned)
            .collect();
        self.topics.send_if_modified(|current| {
            if current.as_ref() == wanted.as_slice() {
                false
            } else {
                *current = Arc::from(wanted);
                true
            }
        });
    }

    /// Warns of the first refusals and then of every power of two, so a
    /// flood of bad announcements cannot flood the log (each is a dead letter).
    fn log_refusal(&self, topic: &str, reason: Reason, detail: &str) {
        let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 10 || n.is_power_of_two() {
            tracing::warn!(
                topic,
                reason = reason.as_str(),
                detail,
                refused_so_far = n,
                "Refused a discovery announcement; it is dead-lettered"
            );
        } else {
            tracing::debug!(
                topic,
                reason = reason.as_str(),
                detail,
                "Refused a discovery announcement"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere poisoned it; the map itself is still consistent
        // (every change is made whole under the lock).
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refusal_reason(refusal: &Refusal) -> Reason {
    match refusal {
        Refusal::TooLarge(_)
        | Refusal::NotAnObject
        | Refusal::BadStateTopic(_)
        | Refusal::NoDevice
        | Refusal::BadField => Reason::BadAnnouncement,
    }
}

/// A binary sensor's state: on when the value reads like `payload_on`, off
/// like `payload_off`, else unknown (no field).
fn on_off(value: &Value, sensor: &Announcement) -> Option<bool> {
    let text = match value {
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Text(t) => t.clone(),
        _ => return None,
    };
    let same = |j: &Json| match j {
        Json::String(s) => *s == text,
        Json::Bool(b) => b.to_string() == text,
        Json::Number(n) => n.as_f64().map(|f| f.to_string()) == Some(text.clone()),
        _ => false,
    };
    if same(&sensor.payload_on) {
        Some(true)
    } else if same(&sensor.payload_off) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
