//! `[status]`: the status page.

use serde::{Deserialize, Serialize};

/// `[status]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// A device whose newest reading is older than this many seconds is marked stale.
    pub stale_after_s: u64,
    /// Seconds between the page's reloads (its `<meta refresh>`).
    pub refresh_s: u64,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            stale_after_s: 300,
            refresh_s: 10,
        }
    }
}
