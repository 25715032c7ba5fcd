//! Certificates a test makes for itself: a CA, a server certificate for
//! `localhost`, a client certificate, and a second CA that signed nothing
//! of these (to test that a wrong CA is refused). PEM files in a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair};

pub struct Pki {
    dir: tempfile::TempDir,
    /// DER of the server certificate and its key (for in-process servers).
    pub server_der: Vec<u8>,
    pub server_key_der: Vec<u8>,
}

/// Every certificate has a distinct subject: OpenSSL (librdkafka) takes a
/// certificate whose subject equals its issuer's for self-signed.
fn named(sans: Vec<String>, cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(sans).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = named(vec![], cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

impl Pki {
    /// The server certificate names `server_names` (DNS names or IPs).
    /// Files: `ca.pem`, `other-ca.pem`, `server.pem`/`server.key`,
    /// `client.pem`/`client.key`.
    pub fn new(server_names: &[&str]) -> Pki {
        let ca = ca("jq test CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).expect("write pem");
        let mut server = (vec![], vec![]);
        for (name, sans) in [
            (
                "server",
                server_names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ),
            ("client", vec!["worker-1".to_string()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = named(sans, &format!("jq test {name}"))
                .signed_by(&key, &ca)
                .expect("sign");
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}.key"), &key.serialize_pem());
            if name == "server" {
                server = (cert.der().to_vec(), key.serialize_der());
            }
        }
        write("ca.pem", &ca.pem());
        write("other-ca.pem", &self::ca("jq test other CA").pem());
        Pki {
            dir,
            server_der: server.0,
            server_key_der: server.1,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `path` as a string, for configuration values.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).expect("read pem")
    }

    /// A rustls server configuration with the server certificate.
    pub fn rustls_server(&self) -> std::sync::Arc<rustls::ServerConfig> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(self.server_der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into()),
            )
            .expect("server certificate");
        std::sync::Arc::new(cfg)
    }
}
