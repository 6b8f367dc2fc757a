//! Following Home Assistant discovery on one MQTT connection: which state
//! topics the registry wants now against those this connection asked for,
//! so announcements that come, change and go become SUBSCRIBE and
//! UNSUBSCRIBE requests at run time, without a restart.

use crate::discovery::Feed;

/// The discovery subscriptions of one connection.
pub struct Following {
    feed: Feed,
    /// The state topics asked for on this connection.
    subscribed: Vec<String>,
}

impl Following {
    /// Follows `feed`.
    pub fn new(feed: Feed) -> Self {
        Self {
            feed,
            subscribed: Vec::new(),
        }
    }

    /// What a new connection subscribes to: the announcement filters (again
    /// on a resumed session too, so the broker re-sends the retained
    /// announcements and a restarted bridge learns its sensors back) and
    /// every state topic wanted now.
    pub fn on_connected(&mut self) -> Vec<String> {
        let wanted = self.feed.topics.borrow_and_update().to_vec();
        let mut all = self.feed.filters.clone();
        all.extend(wanted.iter().cloned());
        self.subscribed = wanted;
        all
    }

    /// The state topics to subscribe to and to unsubscribe from since the
    /// last call; `None` when nothing changed.
    pub fn changes(&mut self) -> Option<(Vec<String>, Vec<String>)> {
        if !self.feed.topics.has_changed().unwrap_or(false) {
            return None;
        }
        // Both lists are sorted (the registry keeps its topics in order).
        let wanted = self.feed.topics.borrow_and_update().to_vec();
        let new: Vec<String> = wanted
            .iter()
            .filter(|t| self.subscribed.binary_search(t).is_err())
            .cloned()
            .collect();
        let gone: Vec<String> = self
            .subscribed
            .iter()
            .filter(|t| wanted.binary_search(t).is_err())
            .cloned()
            .collect();
        self.subscribed = wanted;
        Some((new, gone))
    }

    /// State topics asked for on this connection.
    pub fn subscribed(&self) -> usize {
        self.subscribed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiscoverySettings;
    use crate::discovery::Discovery;

    fn announce(d: &Discovery, object: &str, state_topic: &str) {
        let topic = format!("homeassistant/sensor/dev/{object}/config");
        let payload = format!(r#"{{"stat_t":"{state_topic}","dev":{{"ids":["dev"]}}}}"#);
        d.announce(&topic, payload.as_bytes()).unwrap();
    }

    #[test]
    fn a_connection_asks_for_what_changed_since_it_last_asked() {
        let d = Discovery::new(&DiscoverySettings::default(), Vec::new());
        let mut following = Following::new(d.feed());
        announce(&d, "a", "s/1");
        // A new connection asks for the filters and every topic wanted now.
        assert_eq!(
            following.on_connected(),
            [
                "homeassistant/+/+/config",
                "homeassistant/+/+/+/config",
                "s/1"
            ]
        );
        assert_eq!(following.changes(), None);
        announce(&d, "b", "s/2");
        announce(&d, "c", "s/0");
        assert_eq!(
            following.changes(),
            Some((vec!["s/0".to_owned(), "s/2".to_owned()], vec![]))
        );
        d.announce("homeassistant/sensor/dev/a/config", b"")
            .unwrap();
        announce(&d, "c", "s/3");
        assert_eq!(
            following.changes(),
            Some((
                vec!["s/3".to_owned()],
                vec!["s/0".to_owned(), "s/1".to_owned()]
            ))
        );
        assert_eq!(following.subscribed(), 2);
    }
}
