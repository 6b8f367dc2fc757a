//! What one delivery becomes in the pipeline: a decoded message bound for its
//! route's sink, or a dead letter.

use bytes::Bytes;

use super::Reason;
use crate::model::{Message, RouteId};

/// One delivery, decoded or refused.
#[derive(Debug, Clone)]
pub enum Record {
    /// A message for its route's sink; topic and payload are kept in case the
    /// sink refuses it and it must be dead-lettered after all.
    Decoded {
        /// The route that decoded it.
        route: RouteId,
        /// What the decoder made of it.
        message: Message,
        /// Where it came from.
        topic: String,
        /// The raw payload.
        payload: Bytes,
    },
    /// A message that changes what the bridge knows and stores nothing
    /// itself (a Home Assistant discovery announcement); acknowledged with
    /// its batch like any other.
    Absorbed {
        /// The route that took it.
        route: RouteId,
    },
    /// A message that cannot be stored as it is.
    Rejected {
        /// The route it matched; `None` when none did.
        route: Option<RouteId>,
        /// The dead letter.
        letter: DeadLetter,
    },
}

/// A row for the dead letters (`rejected_messages` in MySQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic, truncated to the column.
    pub topic: String,
    /// The first bytes of the payload.
    pub payload: Vec<u8>,
    /// The payload's real length.
    pub payload_bytes: u32,
    /// Why it was refused.
    pub reason: Reason,
    /// What the store said, when it was the store that refused it.
    pub detail: Option<String>,
}

/// Characters of topic kept in a dead letter (`rejected_messages.topic` is VARCHAR(255)).
const TOPIC_CHARS: usize = 255;

/// Characters of a store's message kept (`rejected_messages.detail` is VARCHAR(255)).
const DETAIL_CHARS: usize = 255;

impl DeadLetter {
    /// A dead letter keeping at most `max_payload` bytes of the payload.
    pub fn new(topic: &str, payload: &[u8], reason: Reason, max_payload: usize) -> Self {
        Self {
            topic: topic.chars().take(TOPIC_CHARS).collect(),
            payload: payload.get(..max_payload).unwrap_or(payload).to_vec(),
            payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            reason,
            detail: None,
        }
    }

    /// The same letter with what the store said about it.
    pub fn with_detail(mut self, detail: &str) -> Self {
        self.detail = Some(detail.chars().take(DETAIL_CHARS).collect());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_bounded() {
        let topic = "t".repeat(300);
        let d = DeadLetter::new(&topic, &[7u8; 2000], Reason::Oversized, 1024)
            .with_detail(&"x".repeat(400));
        assert_eq!(d.topic.chars().count(), 255);
        assert_eq!(d.payload.len(), 1024);
        assert_eq!(d.payload_bytes, 2000);
        assert_eq!(d.detail.map(|s| s.len()), Some(255));
        // Truncation counts characters, so a multi-byte topic is never cut mid-character.
        let d = DeadLetter::new(&"é".repeat(300), b"", Reason::BadJson, 0);
        assert_eq!(d.topic.chars().count(), 255);
    }
}
