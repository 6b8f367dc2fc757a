//! The HTTP client of every outgoing HTTP call (the InfluxDB sink, the
//! status page's question to Alertmanager): reqwest with rustls and no
//! default features. The ring provider the workspace already builds is
//! handed in explicitly (no aws-lc, no global provider needed, so a client
//! built in a test cannot panic for want of one); certificates are checked
//! by the platform's verifier.

use std::sync::Arc;
use std::time::Duration;

/// A client with these timeouts; the error says what could not be set up.
pub fn build(connect_timeout: Duration, timeout: Duration) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let tls = rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(tls)
        .map_err(|e| format!("TLS setup (system certificates): {e}"))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("co2-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
