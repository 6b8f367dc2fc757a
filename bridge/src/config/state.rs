//! `[state]`: where the bridge keeps its own small state.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Settings;

/// `[state]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// Directory for the crash quarantine (see docs/guarantees.md). Default: `$STATE_DIRECTORY`
    /// (systemd's `StateDirectory=`), else `co2-bridge-<client_id>` in the temp dir.
    pub dir: Option<PathBuf>,
}

impl Settings {
    /// Where the bridge keeps its state (see [`StateSettings::dir`]).
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state.dir {
            return dir.clone();
        }
        // systemd may list several directories separated by ':'; the first is ours.
        match std::env::var_os("STATE_DIRECTORY") {
            Some(dirs) if !dirs.is_empty() => {
                let dirs = dirs.to_string_lossy().into_owned();
                PathBuf::from(dirs.split(':').next().unwrap_or_default())
            }
            _ => std::env::temp_dir().join(format!("co2-bridge-{}", self.mqtt.client_id)),
        }
    }
}
