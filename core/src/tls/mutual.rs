//! Mutual TLS between servers of one cluster (hubd's routes, `cluster.tls`).
//!
//! As nats-server 2.9 does on routes, TLS starts right after the TCP connect, before any
//! INFO, and both sides verify each other: the dialling server checks the accepting one's
//! certificate against `ca_file` and the name it dialled (a host name, or an IP address the
//! certificate must list), and presents the same certificate as its client certificate,
//! which the accepting server checks against the same `ca_file`. A route certificate
//! therefore needs both uses (TLS server and client authentication) when it restricts them.
//! There is no way to turn verification off (nats-server's `insecure` is refused where the
//! settings are read).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::{cert_and_key, load_roots, provider, server_config, TlsError};

/// A connection after the handshake, either side.
pub type MutualStream = TlsStream<TcpStream>;

/// A `tls` table of a cluster: every file is required.
#[derive(Debug, Clone, Copy)]
pub struct MutualFiles<'a> {
    /// This server's certificate chain (PEM), presented on both sides.
    pub cert_file: Option<&'a Path>,
    /// Its private key (PEM).
    pub key_file: Option<&'a Path>,
    /// The CA (PEM) every member's certificate chains to.
    pub ca_file: Option<&'a Path>,
    /// Time limit of the handshake.
    pub timeout: Duration,
}

/// Both sides of mutual TLS, ready to accept and to dial.
pub struct MutualTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// Time limit of the handshake.
    pub timeout: Duration,
}

impl fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutualTls")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl MutualTls {
    /// Reads the files of the table at `prefix` (`cluster.tls`, used in errors) and builds
    /// both sides.
    pub fn from_files(files: &MutualFiles<'_>, prefix: &str) -> Result<MutualTls, TlsError> {
        if files.timeout.is_zero() {
            return Err(TlsError::Refused {
                key: format!("{prefix}.timeout"),
                what: "must be greater than zero".into(),
            });
        }
        let ca_key = format!("{prefix}.ca_file");
        let ca_file = files.ca_file.ok_or_else(|| TlsError::Missing {
            key: ca_key.clone(),
            what: "missing: the members of a cluster verify each other's certificates \
                   against this CA"
                .into(),
        })?;
        let server = server_config(prefix, files.cert_file, files.key_file, Some(ca_file))?;
        let (certs, key) =
            cert_and_key(prefix, files.cert_file, files.key_file)?.ok_or_else(|| {
                TlsError::Missing {
                    key: format!("{prefix}.cert_file"),
                    what: "missing: a cluster's TLS needs cert_file and key_file".into(),
                }
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls {
                key: prefix.to_owned(),
                what: e.to_string(),
            })?
            .with_root_certificates(load_roots(&ca_key, ca_file)?)
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError::Rustls {
                key: format!("{prefix}.key_file"),
                what: e.to_string(),
            })?;
        Ok(MutualTls {
            acceptor: TlsAcceptor::from(server),
            connector: TlsConnector::from(Arc::new(client)),
            timeout: files.timeout,
        })
    }

    /// Runs the accepting side of the handshake within the time limit. The error is a
    /// sentence for the log naming `peer`.
    pub async fn accept(&self, tcp: TcpStream, peer: &str) -> Result<TlsStream<TcpStream>, String> {
        super::accept(&self.acceptor, self.timeout, tcp, peer)
            .await
            .map(TlsStream::from)
    }

    /// Runs the dialling side of the handshake, checking the peer's certificate against
    /// `name` (a host name or an IP address), within the time limit. The error is a sentence
    /// for the log naming `peer`.
    pub async fn connect(
        &self,
        name: &str,
        tcp: TcpStream,
        peer: &str,
    ) -> Result<TlsStream<TcpStream>, String> {
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| format!("`{name}` cannot be checked against a certificate: {e}"))?;
        match tokio::time::timeout(self.timeout, self.connector.connect(server_name, tcp)).await {
            Ok(Ok(stream)) => Ok(TlsStream::from(stream)),
            Ok(Err(e)) => Err(format!("TLS handshake with {peer} failed: {e}")),
            Err(_) => Err(format!(
                "TLS handshake with {peer} timed out after {:?}",
                self.timeout
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_required_and_named_in_the_error() {
        let files = |ca: Option<&'static str>| MutualFiles {
            cert_file: Some(Path::new("/nonexistent/route.pem")),
            key_file: Some(Path::new("/nonexistent/route-key.pem")),
            ca_file: ca.map(Path::new),
            timeout: Duration::from_secs(2),
        };
        let no_ca = MutualTls::from_files(&files(None), "cluster.tls").unwrap_err();
        assert!(
            no_ca
                .to_string()
                .starts_with("cluster.tls.ca_file: missing"),
            "{no_ca}"
        );
        let unreadable =
            MutualTls::from_files(&files(Some("/nonexistent/ca.pem")), "cluster.tls").unwrap_err();
        assert!(
            unreadable.to_string().starts_with("cluster.tls."),
            "{unreadable}"
        );
        let zero = MutualFiles {
            timeout: Duration::ZERO,
            ..files(Some("/nonexistent/ca.pem"))
        };
        let zero = MutualTls::from_files(&zero, "cluster.tls").unwrap_err();
        assert!(
            zero.to_string().starts_with("cluster.tls.timeout"),
            "{zero}"
        );
    }
}
