//! Certificates made at test time with rcgen, as PEM files in a temporary directory: a CA
//! (`ca.pem`), a server certificate for `127.0.0.1` and `localhost` signed by it (`hub.pem`,
//! `hub-key.pem`), a client certificate with the common name `leaf` (`leaf.pem`,
//! `leaf-key.pem`), an unrelated CA (`other-ca.pem`) and, on demand, more client
//! certificates signed by either CA ([`Certs::client`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::unique;

/// PEM files in a temporary directory, removed on drop.
pub struct Certs {
    /// The directory holding the files.
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    other_ca: Issuer<'static, KeyPair>,
}

/// Who a client certificate names: its subject's attributes (in order) and its subject
/// alternative names.
#[derive(Debug, Default, Clone)]
pub struct Subject {
    /// Distinguished name attributes, in the order they are encoded.
    pub dn: Vec<(DnType, String)>,
    /// Email addresses (rfc822Name).
    pub emails: Vec<String>,
    /// DNS names.
    pub dns: Vec<String>,
}

impl Certs {
    /// Makes the CA, the server certificate, the `leaf` client certificate and an unrelated
    /// CA.
    pub fn new() -> Certs {
        let dir = std::env::temp_dir().join(unique("leaf-tls-certs"));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, ca) = make_ca("leaf e2e CA");
        let (other_pem, other_ca) = make_ca("some other CA");
        let certs = Certs { dir, ca, other_ca };
        certs.write("ca.pem", &ca_pem);
        certs.write("other-ca.pem", &other_pem);

        let mut server = CertificateParams::new(Vec::<String>::new()).unwrap();
        server.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        server.distinguished_name.push(DnType::CommonName, "hub");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        certs.sign("hub", server, false);
        certs.client(
            "leaf",
            &Subject {
                dn: vec![(DnType::CommonName, "leaf".into())],
                ..Subject::default()
            },
            false,
        );
        certs
    }

    /// Writes `<stem>.pem` and `<stem>-key.pem`: a client certificate naming `subject`,
    /// signed by the CA, or by the unrelated CA when `other_ca`.
    pub fn client(&self, stem: &str, subject: &Subject, other_ca: bool) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for (kind, value) in &subject.dn {
            params.distinguished_name.push(kind.clone(), value.as_str());
        }
        params.subject_alt_names = subject
            .emails
            .iter()
            .map(|e| SanType::Rfc822Name(e.as_str().try_into().unwrap()))
            .chain(
                subject
                    .dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(stem, params, other_ca);
    }

    /// Writes `<stem>.pem` and `<stem>-key.pem`: a certificate for a cluster member
    /// (`127.0.0.1` and `localhost`, usable as TLS server and client certificate, as routes
    /// need), signed by the CA, or by the unrelated CA when `other_ca`.
    pub fn member(&self, stem: &str, other_ca: bool) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(stem, params, other_ca);
    }

    /// Signs `params` with a fresh key and writes `<stem>.pem` and `<stem>-key.pem`.
    fn sign(&self, stem: &str, params: CertificateParams, other_ca: bool) {
        let key = KeyPair::generate().unwrap();
        let issuer = if other_ca { &self.other_ca } else { &self.ca };
        let cert = params.signed_by(&key, issuer).unwrap();
        self.write(&format!("{stem}.pem"), &cert.pem());
        self.write(&format!("{stem}-key.pem"), &key.serialize_pem());
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    /// The path of one of the files, as a string for configs.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA: its PEM certificate and the issuer that signs with it.
fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// `GET https://127.0.0.1:<port><path>` trusting only `ca_file`: the status code and the
/// body parsed as JSON (`Value::Null` when it is not JSON); the error when TLS fails. Bounded
/// by [`crate::WAIT`].
pub async fn https_get(
    port: u16,
    path: &str,
    ca_file: &str,
) -> Result<(u16, serde_json::Value), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    crate::bounded(&format!("GET {path} on https port {port}"), async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        // A server may close without close_notify after `Connection: close`.
        if let Err(e) = tls.read_to_end(&mut raw).await {
            if raw.is_empty() {
                return Err(e.to_string());
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP response: {text}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status code: {head}"))?;
        Ok((
            code,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        ))
    })
    .await
}
