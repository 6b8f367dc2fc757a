//! Why settings cannot be used, each error naming its key.

use std::path::PathBuf;

/// Why the settings cannot be used. Each variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong type.
    #[error("cannot load the configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is present but unusable.
    #[error("`{key}`: {message}")]
    Invalid {
        /// The offending key, as written in the TOML file.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A `[[routes]]` entry is unusable.
    #[error("route {route:?}: `{key}`: {message}")]
    Route {
        /// The route's name.
        route: String,
        /// The key inside the route.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A `*_file` secret could not be read.
    #[error("`{key}`: cannot read {path}: {source}")]
    SecretFile {
        /// The `*_file` key.
        key: String,
        /// The path it names.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
}

/// A [`ConfigError::Invalid`] for `key`.
pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}
