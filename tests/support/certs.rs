//! Test certificates made with rcgen: a CA, a server certificate for `localhost` and
//! 127.0.0.1 signed by it, and a second, unrelated CA for the "wrong CA" case.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use super::ServerTls;

/// PEM files in a temporary directory (removed on drop).
pub struct TestPki {
    /// The CA that signed the server certificate.
    pub ca: PathBuf,
    /// The server certificate (for `localhost` and 127.0.0.1).
    pub server_cert: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub server_key: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail the TLS handshake.
    pub other_ca: PathBuf,
    dir: TempDir,
}

impl TestPki {
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("ferry-pki-")
            .tempdir()
            .unwrap();
        let ca = make_ca("ferry test CA");
        let other = make_ca("ferry unrelated CA");

        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();

        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", cert.pem()),
            server_key: write("server.key", key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
            dir,
        }
    }

    /// The server certificate and key, for a broker's TLS listener.
    pub fn server_tls(&self) -> ServerTls {
        ServerTls {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
        }
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ferry tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}
