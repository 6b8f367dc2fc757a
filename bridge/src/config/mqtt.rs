//! `[mqtt]`'s protocol choice (the rest of the section is in the module root).

use serde::{Deserialize, Serialize};

/// Which MQTT version to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 5: the bridge sets the in-flight window (receive-maximum).
    #[default]
    V5,
    /// MQTT 3.1.1: the broker sets the window.
    V311,
}
