//! TLS on the client port (the top-level `tls` table, nats-server's `--tls*` flags) and the
//! certificate of the monitoring port's `https_port`.
//!
//! As in nats-server 2.9, a client listener with `tls` requires TLS of every client: the
//! server writes its INFO in plain text with `tls_required: true` (and `tls_verify` when it
//! wants client certificates), then runs the server side of the TLS handshake within
//! `timeout`; the client's CONNECT and everything after travel inside TLS. A client that does
//! not start TLS, or whose certificate does not chain to `ca_file` with `verify`, fails the
//! handshake: the server logs why (`TLS handshake with a client failed: ...`) and closes the
//! connection. With `verify_and_map` the certificate also says who the client is: the first
//! of its names (see [`crate::tls::names`]) that is a configured user logs it in as that
//! user, with that user's permissions and account, whatever CONNECT says.
//!
//! `https_port` serves the monitoring pages with the same certificate; client certificates
//! are never asked for there (as nats-server: browsers).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpStream;
#[cfg(feature = "tls")]
use tokio_rustls::server::TlsStream;

use crate::config::value;
#[cfg(not(feature = "tls"))]
use crate::tls::TlsStream;
#[cfg(feature = "tls")]
use crate::tls::{server_config, ListenerFiles};
use crate::tls::{TlsAcceptor, TlsError};

/// Default time limit of the TLS handshake (nats-server's 2 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The top-level `tls` table: the client listener's certificate and how clients' certificates
/// are checked (nats-server 2.9's `tls { ... }`). Files are PEM, read when the server starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM); required.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1); required.
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) clients' certificates must chain to; needed by `verify` and
    /// `verify_and_map`.
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate from every client, verified against `ca_file`.
    pub verify: bool,
    /// As `verify`, and the certificate names the user the client logs in as (in
    /// `authorization.users` or an account's users; such a user needs no password).
    pub verify_and_map: bool,
    /// Time limit of the TLS handshake (seconds, or a string such as `"500ms"`; default 2 s).
    #[serde(deserialize_with = "value::de_duration")]
    pub timeout: Duration,
    /// nats-server 2.10's TLS before INFO: parsed so that it is refused by name.
    pub handshake_first: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            ca_file: None,
            verify: false,
            verify_and_map: false,
            timeout: DEFAULT_TIMEOUT,
            handshake_first: false,
        }
    }
}

impl TlsSettings {
    /// Whether clients must present a certificate.
    pub fn verifies(&self) -> bool {
        self.verify || self.verify_and_map
    }
}

/// The client listener's TLS, ready to accept.
pub struct ListenerTls {
    acceptor: TlsAcceptor,
    /// Time limit of the handshake.
    pub timeout: Duration,
    /// Clients must present a certificate signed by `ca_file` (INFO's `tls_verify`).
    pub verify: bool,
    /// Clients log in as the user their certificate names.
    pub map: bool,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("timeout", &self.timeout)
            .field("verify", &self.verify)
            .field("map", &self.map)
            .finish()
    }
}

impl ListenerTls {
    /// Builds the listener's TLS from the `tls` table (`prefix` is its key, used in errors).
    /// Reads every file now.
    #[cfg(not(feature = "tls"))]
    pub fn from_settings(_cfg: &TlsSettings, prefix: &str) -> Result<ListenerTls, TlsError> {
        Err(TlsError::NotBuilt {
            key: prefix.to_owned(),
        })
    }

    /// Builds the listener's TLS from the `tls` table (`prefix` is its key, used in errors).
    /// Reads every file now.
    #[cfg(feature = "tls")]
    pub fn from_settings(cfg: &TlsSettings, prefix: &str) -> Result<ListenerTls, TlsError> {
        if cfg.handshake_first {
            return Err(TlsError::Refused {
                key: format!("{prefix}.handshake_first"),
                what: "not supported on the client port (nats-server 2.10's option; \
                       clients start TLS after the INFO, as with nats-server 2.9)"
                    .into(),
            });
        }
        let files = ListenerFiles {
            cert_file: cfg.cert_file.as_deref(),
            key_file: cfg.key_file.as_deref(),
            ca_file: cfg.ca_file.as_deref(),
            timeout: cfg.timeout,
            verify: if cfg.verify_and_map {
                Some("verify_and_map")
            } else {
                cfg.verify.then_some("verify")
            },
            peers: "clients'",
        };
        Ok(ListenerTls {
            acceptor: files.acceptor(prefix)?,
            timeout: cfg.timeout,
            verify: cfg.verifies(),
            map: cfg.verify_and_map,
        })
    }

    /// Runs the server side of the TLS handshake on `tcp` within the time limit. The error
    /// is a sentence for the log.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        crate::tls::accept(&self.acceptor, self.timeout, tcp, "a client").await
    }
}

/// The names of a client's TLS certificate (none without one).
#[cfg(not(feature = "tls"))]
pub fn peer_identities(stream: &TlsStream<TcpStream>) -> crate::tls::names::CertNames {
    match stream.0 {}
}

/// The names of a client's TLS certificate (none without one).
#[cfg(feature = "tls")]
pub fn peer_identities(stream: &TlsStream<TcpStream>) -> crate::tls::names::CertNames {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(|cert| crate::tls::names::identities(cert))
        .unwrap_or_default()
}

/// The rustls configuration of the monitoring port's `https_port`: the `tls` table's
/// certificate, never asking for a client certificate.
#[cfg(not(feature = "tls"))]
pub fn https_acceptor(_cfg: &TlsSettings, _prefix: &str) -> Result<TlsAcceptor, TlsError> {
    Err(TlsError::NotBuilt {
        key: "https_port".to_owned(),
    })
}

/// The rustls configuration of the monitoring port's `https_port`: the `tls` table's
/// certificate, never asking for a client certificate.
#[cfg(feature = "tls")]
pub fn https_acceptor(cfg: &TlsSettings, prefix: &str) -> Result<TlsAcceptor, TlsError> {
    server_config(
        prefix,
        cfg.cert_file.as_deref(),
        cfg.key_file.as_deref(),
        None,
    )
    .map(TlsAcceptor::from)
}

/// The listener's TLS of `settings` (the `tls` table), if any, shared.
pub fn listener(settings: Option<&TlsSettings>) -> Result<Option<Arc<ListenerTls>>, TlsError> {
    settings
        .map(|cfg| ListenerTls::from_settings(cfg, "tls").map(Arc::new))
        .transpose()
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let e = ListenerTls::from_settings(&TlsSettings::default(), "tls").unwrap_err();
        assert!(e.to_string().starts_with("tls.cert_file: missing"), "{e}");
        let first = TlsSettings {
            handshake_first: true,
            ..TlsSettings::default()
        };
        let e = ListenerTls::from_settings(&first, "tls").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tls.handshake_first: not supported"),
            "{e}"
        );
        let map = TlsSettings {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            verify_and_map: true,
            ..TlsSettings::default()
        };
        let e = ListenerTls::from_settings(&map, "tls").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tls.ca_file: missing: tls.verify_and_map needs"),
            "{e}"
        );
        let Err(e) = https_acceptor(&map, "tls") else {
            panic!("https without a readable certificate");
        };
        assert!(
            e.to_string()
                .starts_with("tls.cert_file: cannot read /nonexistent/cert.pem"),
            "{e}"
        );
    }
}
