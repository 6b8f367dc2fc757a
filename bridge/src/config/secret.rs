//! Secrets given inline or in a file.

use std::path::PathBuf;

use secrecy::SecretString;

use super::ConfigError;

pub(crate) fn secret(
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.to_owned(),
        path: path.clone(),
        source,
    })?;
    // Files written by `echo` or editors end in a newline that is not part of the secret.
    Ok(Some(SecretString::from(
        text.trim_end_matches(['\n', '\r']),
    )))
}
