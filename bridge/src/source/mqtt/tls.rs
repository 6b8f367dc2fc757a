//! TLS to the broker: the transport every MQTT connection of the bridge uses.

use crate::config::{ConfigError, Settings};

/// The TLS transport `mqtt.tls` asks for (`None`: plain TCP).
pub(crate) fn transport(settings: &Settings) -> Result<Option<rumqttc::Transport>, ConfigError> {
    let Some(tls) = &settings.mqtt.tls else {
        return Ok(None);
    };
    let read = |key: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ConfigError::SecretFile {
            key: key.to_owned(),
            path: path.to_owned(),
            source,
        })
    };
    let ca = read("mqtt.tls.ca_file", &tls.ca_file)?;
    let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some((
            read("mqtt.tls.client_cert_file", cert)?,
            read("mqtt.tls.client_key_file", key)?,
        )),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid {
                key: "mqtt.tls.client_cert_file".to_owned(),
                message: "client_cert_file and client_key_file go together".into(),
            })
        }
    };
    Ok(Some(rumqttc::Transport::tls(ca, client_auth, None)))
}
