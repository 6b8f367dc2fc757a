//! The sensors announced so far, by announcement topic and by state topic,
//! bounded: at most `max_sensors` in all and `max_per_topic` on one state
//! topic, so a publisher that floods announcements costs dead letters, not
//! memory. Pure state; `Discovery` wraps it in a lock.

use std::collections::{BTreeMap, HashMap};

use super::announcement::Announcement;

/// What an announcement did to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new sensor.
    Added,
    /// A known sensor announced differently (another topic, template, unit).
    Changed,
    /// The same announcement again (a retained copy after a reconnect).
    Unchanged,
    /// A sensor withdrawn (an empty announcement).
    Removed,
    /// A withdrawal of a sensor that was not known.
    NotKnown,
}

/// Why an announcement is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// `max_sensors` are held already.
    #[error("{0} sensors are announced already (discovery.max_sensors)")]
    Sensors(usize),
    /// `max_per_topic` sensors share this state topic already.
    #[error("{0} sensors share this state topic already (discovery.max_sensors_per_topic)")]
    Topic(usize),
    /// The state topic belongs to another device's sensors, or another
    /// sensor of it has the same field.
    #[error("{0}")]
    Conflict(String),
}

/// The announced sensors.
#[derive(Debug, Default)]
pub struct Registry {
    by_config: HashMap<String, Announcement>,
    /// State topic -> announcement topics, in the order they were announced.
    by_state: BTreeMap<String, Vec<String>>,
    max_sensors: usize,
    max_per_topic: usize,
}

impl Registry {
    /// An empty registry with its bounds.
    pub fn new(max_sensors: usize, max_per_topic: usize) -> Self {
        Self {
            max_sensors,
            max_per_topic,
            ..Self::default()
        }
    }

    /// Sensors held.
    pub fn count(&self) -> usize {
        self.by_config.len()
    }

    /// Takes the announcement published on `config_topic`, replacing the one
    /// before it; refused (and the one before it kept) when a bound is hit.
    pub fn put(&mut self, config_topic: &str, a: Announcement) -> Result<Outcome, Full> {
        let before = self.by_config.get(config_topic);
        if before == Some(&a) {
            return Ok(Outcome::Unchanged);
        }
        if before.is_none() && self.by_config.len() >= self.max_sensors {
            return Err(Full::Sensors(self.max_sensors));
        }
        let sharing: Vec<&Announcement> = self
            .by_state
            .get(&a.state_topic)
            .into_iter()
            .flatten()
            .filter(|t| t.as_str() != config_topic)
            .filter_map(|t| self.by_config.get(t))
            .collect();
        if sharing.len() >= self.max_per_topic {
            return Err(Full::Topic(self.max_per_topic));
        }
        if let Some(other) = sharing.iter().find(|o| o.device != a.device) {
            return Err(Full::Conflict(format!(
                "state topic {} carries device {} already",
                a.state_topic, other.device
            )));
        }
        if sharing.iter().any(|o| o.field == a.field) {
            return Err(Full::Conflict(format!(
                "another sensor on {} is stored as field {} already",
                a.state_topic, a.field
            )));
        }
        let outcome = match self.remove(config_topic) {
            Outcome::Removed => Outcome::Changed,
            _ => Outcome::Added,
        };
        self.by_state
            .entry(a.state_topic.clone())
            .or_default()
            .push(config_topic.to_owned());
        self.by_config.insert(config_topic.to_owned(), a);
        Ok(outcome)
    }

    /// Withdraws the sensor announced on `config_topic`.
    pub fn remove(&mut self, config_topic: &str) -> Outcome {
        let Some(old) = self.by_config.remove(config_topic) else {
            return Outcome::NotKnown;
        };
        if let Some(list) = self.by_state.get_mut(&old.state_topic) {
            list.retain(|t| t != config_topic);
            if list.is_empty() {
                self.by_state.remove(&old.state_topic);
            }
        }
        Outcome::Removed
    }

    /// The sensors whose state arrives on `state_topic`, in announcement order.
    pub fn on(&self, state_topic: &str) -> Vec<&Announcement> {
        self.by_state
            .get(state_topic)
            .into_iter()
            .flatten()
            .filter_map(|t| self.by_config.get(t))
            .collect()
    }

    /// True when some sensor's state arrives on `state_topic`.
    pub fn has_state_topic(&self, state_topic: &str) -> bool {
        self.by_state.contains_key(state_topic)
    }

    /// Every state topic, sorted.
    pub fn state_topics(&self) -> impl Iterator<Item = &str> {
        self.by_state.keys().map(String::as_str)
    }

    /// Every sensor with its announcement topic, by state topic.
    pub fn sensors(&self) -> impl Iterator<Item = (&str, &Announcement)> {
        self.by_state
            .values()
            .flatten()
            .filter_map(|t| self.by_config.get(t).map(|a| (t.as_str(), a)))
    }
}
