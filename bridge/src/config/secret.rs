//! Secrets given inline or in a file.

use std::path::PathBuf;

use secrecy::SecretString;

use super::{invalid, ConfigError};

/// A secret a section takes as `<name> = "..."` or, better, from a file as
/// `<name>_file = "..."` (e.g. a systemd credential), never both: a view of
/// the two keys, so every section checks and reads them the same way.
#[derive(Debug, Clone, Copy)]
pub struct Secret<'a> {
    /// The section, e.g. `mqtt` or `sinks.influx`.
    section: &'a str,
    /// The key of the inline value, e.g. `password`.
    name: &'a str,
    value: &'a Option<SecretString>,
    file: &'a Option<PathBuf>,
}

impl<'a> Secret<'a> {
    /// The keys `<section>.<name>` and `<section>.<name>_file`.
    pub fn new(
        section: &'a str,
        name: &'a str,
        value: &'a Option<SecretString>,
        file: &'a Option<PathBuf>,
    ) -> Self {
        Self {
            section,
            name,
            value,
            file,
        }
    }

    /// Whether either key is set.
    pub fn is_set(&self) -> bool {
        self.value.is_some() || self.file.is_some()
    }

    /// Refuses both keys at once: which one wins would be a guess.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.value.is_some() && self.file.is_some() {
            let name = self.name;
            return Err(invalid(
                format!("{}.{name}", self.section),
                format!("set {name} or {name}_file, not both"),
            ));
        }
        Ok(())
    }

    /// The secret: the inline value, else the file's text; `None` when neither is set.
    pub fn read(&self) -> Result<Option<SecretString>, ConfigError> {
        if let Some(value) = self.value {
            return Ok(Some(value.clone()));
        }
        let Some(path) = self.file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
            key: format!("{}.{}_file", self.section, self.name),
            path: path.clone(),
            source,
        })?;
        // Files written by `echo` or editors end in a newline that is not part of the secret.
        Ok(Some(SecretString::from(
            text.trim_end_matches(['\n', '\r']),
        )))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn both_keys_are_refused_by_name() {
        let value = Some(SecretString::from("inline"));
        let file = Some(PathBuf::from("/run/credentials/token"));
        let err = Secret::new("sinks.influx", "token", &value, &file)
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "`sinks.influx.token`: set token or token_file, not both"
        );
        assert!(Secret::new("mqtt", "password", &value, &None)
            .validate()
            .is_ok());
    }

    #[test]
    fn the_inline_value_or_the_file_without_its_newline_is_read() {
        let dir = std::env::temp_dir().join(format!("co2-bridge-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "from-file\r\n").unwrap();
        let file = Some(path);
        let read = Secret::new("database", "password", &None, &file).read();
        assert_eq!(read.unwrap().unwrap().expose_secret(), "from-file");
        let value = Some(SecretString::from("inline"));
        let read = Secret::new("database", "password", &value, &None).read();
        assert_eq!(read.unwrap().unwrap().expose_secret(), "inline");
        let none = Secret::new("database", "password", &None, &None);
        assert!(!none.is_set() && none.read().unwrap().is_none());
        let gone = Some(dir.join("missing"));
        let err = Secret::new("sources.0", "password", &None, &gone)
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sources.0.password_file`"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
