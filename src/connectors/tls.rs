//! One rustls client configuration builder for every connector, so TLS behaves the same
//! whatever the protocol: system roots or a custom CA, optional client certificate, and
//! verification that can only be turned off explicitly (and then says so in the log).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

/// Installs ring as rustls' one crypto provider. Mixing providers panics at run time, so this
/// runs once, first thing, in every entry point.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the client configuration `tls` describes.
pub fn client_config(tls: &Tls, connection: &str) -> anyhow::Result<Arc<ClientConfig>> {
    install_crypto_provider();
    let builder = ClientConfig::builder();
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(
            connection,
            "TLS certificate verification is OFF (insecure_skip_verify: true): anyone on the path can impersonate the server"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
    } else {
        match &tls.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).with_context(|| {
                        format!("{}: not a usable CA certificate", ca.display())
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            None => {
                let verifier = SystemRoots::new(builder.crypto_provider().clone());
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
            }
        }
    };
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .context("client certificate and key do not match")?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

pub(crate) fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
}

pub(crate) fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{}: not a PEM private key file", path.display()))?
        .with_context(|| format!("{}: no private key in it", path.display()))
}

/// rustls' own verifier with the system's root certificates, as `with_root_certificates`
/// makes it, but built at the first handshake: an SSE or HTTP connection to an `http://` URL
/// builds a TLS configuration too (its requests may be redirected, a handshake URL may be
/// absolute), and the system's store is some hundred certificates (about 66 KB parsed) held
/// for the daemon's life by a connection that may never use them.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
}

impl SystemRoots {
    fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> SystemRoots {
        SystemRoots {
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        let made = self.verifier.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            // Unreadable or unusable entries are skipped, as they always were: a server whose
            // root is among them fails its handshake as an unknown issuer.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("the system's root certificates: {e}")))
        });
        made.as_deref().map_err(Clone::clone)
    }
}

impl rustls::client::danger::ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    // Asked before any certificate arrives: what the provider verifies, as rustls' verifier
    // answers, without reading the roots yet.
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts any server certificate. Only reachable through `insecure_skip_verify: true`.
#[derive(Debug)]
struct NoVerification;

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    use super::*;

    fn system_roots() -> SystemRoots {
        SystemRoots::new(Arc::new(rustls::crypto::ring::default_provider()))
    }

    #[test]
    fn the_system_roots_are_read_at_the_first_handshake_only() {
        let verifier = system_roots();
        assert!(
            verifier.verifier.get().is_none(),
            "read before any handshake"
        );
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let verdict =
            verifier.verify_server_cert(cert.cert.der(), &[], &name, &[], UnixTime::now());
        // A certificate no system root signed is refused, as rustls' own verifier refuses it.
        assert!(
            matches!(
                verdict,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{verdict:?}"
        );
        assert!(verifier.verifier.get().is_some());
    }
}
