//! TLS to the broker: the transport every MQTT connection of the bridge uses.
//!
//! The rustls configuration is built here rather than by rumqttc so that the
//! server certificate verifier can be wrapped: the standard WebPKI checks
//! decide as before, and the wrapper records the end date of the leaf
//! certificate each broker presents (`co2_bridge_tls_certificate_expiry_timestamp_seconds`,
//! `certificate="broker"`), an expired one included. The bridge's own client
//! certificate is read once, here. Unusable files are configuration errors
//! at start, named by their key, instead of a failed handshake on every
//! reconnect.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{ConfigError, Settings};
use crate::metrics::TlsExpiry;
use crate::source::certificate;

/// The TLS transport `mqtt.tls` asks for (`None`: plain TCP); with `expiry`,
/// the certificates' end dates are reported there.
pub(crate) fn transport(
    settings: &Settings,
    expiry: Option<&TlsExpiry>,
) -> Result<Option<rumqttc::Transport>, ConfigError> {
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
    let config = client_config(&ca, client_auth.as_ref(), expiry)?;
    Ok(Some(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    )))
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// What rumqttc would build from the same files, with the reporting verifier.
fn client_config(
    ca: &[u8],
    client_auth: Option<&(Vec<u8>, Vec<u8>)>,
    expiry: Option<&TlsExpiry>,
) -> Result<ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(ca)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("mqtt.tls.ca_file", format!("not a PEM file: {e}")))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(invalid(
            "mqtt.tls.ca_file",
            "holds no usable PEM certificate (BEGIN CERTIFICATE); give the CA that signed the broker's certificate",
        ));
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid("mqtt.tls.ca_file", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match expiry {
        Some(expiry) => Arc::new(Reporting {
            inner: webpki,
            expiry: expiry.clone(),
        }),
        None => webpki,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("mqtt.tls", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let Some((cert, key)) = client_auth else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("mqtt.tls.client_cert_file", format!("not a PEM file: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(
            "mqtt.tls.client_cert_file",
            "holds no PEM certificate (BEGIN CERTIFICATE)",
        ));
    };
    if let (Some(expiry), Some(end)) = (expiry, certificate::not_after(leaf)) {
        expiry.observe("mqtt", "client", "", end);
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        invalid(
            "mqtt.tls.client_key_file",
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid("mqtt.tls.client_key_file", e.to_string()))
}

/// The WebPKI verifier, recording the end date of what it is shown.
#[derive(Debug)]
struct Reporting {
    inner: Arc<WebPkiServerVerifier>,
    expiry: TlsExpiry,
}

impl ServerCertVerifier for Reporting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Recorded before the verdict: an expired certificate is exactly the
        // one the alert must show.
        if let Some(end) = certificate::not_after(end_entity) {
            self.expiry
                .observe("mqtt", "broker", &server_name.to_str(), end);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(ca: &[u8], client: Option<(&[u8], &[u8])>) -> String {
        let client = client.map(|(c, k)| (c.to_vec(), k.to_vec()));
        match client_config(ca, client.as_ref(), None) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unusable_files_are_named() {
        assert!(error(b"", None).contains("mqtt.tls.ca_file"));
        assert!(error(b"garbage", None).contains("no usable PEM certificate"));
    }
}
