//! A TLS certificate's end date, for `co2_bridge_tls_certificate_expiry_timestamp_seconds`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_cert::der::Decode;

/// When the DER certificate `der` stops being valid, in Unix seconds;
/// `None` when it does not parse (the TLS handshake reports that itself).
pub fn not_after(der: &[u8]) -> Option<i64> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let end = cert.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(end.as_secs()).ok()
}

/// The end date of the first certificate of a PEM file (a client
/// certificate file starts with the leaf, followed by its chain).
pub fn pem_not_after(pem: &[u8]) -> Option<i64> {
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    not_after(&first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec -days 3650 -subj /CN=fixture`, made 2026-12-07.
    const FIXTURE: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBejCCAR+gAwIBAgIUZCc8Ij2g/wfoNs94tCZuLMjwRh4wCgYIKoZIzj0EAwIw\n\
EjEQMA4GA1UEAwwHZml4dHVyZTAeFw0yNjEyMDcyMTUzMDhaFw0zNjEyMDQyMTUz\n\
MDhaMBIxEDAOBgNVBAMMB2ZpeHR1cmUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n\
AARlPcvcp8kcDG9aTvFsn9HUK50KkTtmjrZzHN12BI6prD4FHU2+UTHcpmyMKRL0\n\
2vDtPHCaIBUDN0CeehuMl0jBo1MwUTAdBgNVHQ4EFgQUQzpFICbnz44SK2ZmxWLx\n\
1k2Sc9UwHwYDVR0jBBgwFoAUQzpFICbnz44SK2ZmxWLx1k2Sc9UwDwYDVR0TAQH/\n\
BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAxtzJaLWk4XBzYTGzYlzM5hgYgOXG\n\
lIsmPprB/eeAehwCIQDBCuRSZcEXT9QC/UBs5nhGHTZfLNslvhz0n4X2iiyNaA==\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn the_end_date_is_read_from_pem_and_der() {
        // notAfter=Dec  4 21:53:08 2036 GMT
        assert_eq!(pem_not_after(FIXTURE.as_bytes()), Some(2_112_040_388));
        let der = CertificateDer::from_pem_slice(FIXTURE.as_bytes()).unwrap();
        assert_eq!(not_after(&der), Some(2_112_040_388));
        // A key or other blocks before it are skipped.
        let mixed =
            format!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{FIXTURE}");
        assert_eq!(pem_not_after(mixed.as_bytes()), Some(2_112_040_388));
    }

    #[test]
    fn garbage_has_no_end_date() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff, 0xff, 0]), None);
        assert_eq!(pem_not_after(b"not a certificate"), None);
        assert_eq!(
            pem_not_after(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            None
        );
    }
}
