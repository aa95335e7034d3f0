//! TLS on leafnode links (rustls with the ring provider), both sides.
//!
//! As in nats-server 2.9, TLS starts in the middle of the handshake: the accepting side (hub)
//! sends its INFO in plain text with `tls_required: true`, then waits for the TLS handshake;
//! the soliciting side (leaf) reads that INFO, starts TLS as the client, and sends CONNECT
//! inside TLS. With `handshake_first` (nats-server 2.10) TLS starts right after the TCP
//! connect instead and the INFO travels inside TLS; both sides must agree.
//!
//! * [`ClientTls`]: a remote's settings (`leafnodes.remotes[i].tls`, or a `tls://` URL):
//!   the CA the hub's certificate must chain to, an optional client certificate;
//! * [`ServerTls`]: the listener's settings (`leafnodes.tls`): its certificate and, with
//!   `verify`, the CA that leaves' client certificates must chain to.
//!
//! Certificates and keys are PEM files, read once when the server starts; errors name the
//! config key (`leafnodes.remotes[0].tls.ca_file: cannot read ...`). The PEM loading and the
//! server side's rustls configuration are shared with the client port ([`crate::tls`]).

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;

use super::RemoteUrl;
use crate::config::{LeafNodes, LeafTls, Remote, RemoteTls};
pub(crate) use crate::tls::FlushingWriter;
pub use crate::tls::TlsError;
use crate::tls::{TlsAcceptor, TlsStream};
// What only the `tls` feature's code uses.
#[cfg(feature = "tls")]
use {
    crate::config::DEFAULT_TLS_TIMEOUT,
    crate::tls::{cert_and_key, load_roots, provider, read, ListenerFiles},
    rustls::pki_types::pem::PemObject,
    rustls::pki_types::{CertificateDer, ServerName},
    rustls::{ClientConfig, RootCertStore},
    std::path::PathBuf,
    std::sync::Arc,
    tokio_rustls::TlsConnector,
};

#[cfg(feature = "tls")]
/// Where the system's CA bundle is looked for when a remote has no `ca_file` (after the
/// `SSL_CERT_FILE` environment variable): Debian/Ubuntu/Alpine, Fedora/RHEL, others.
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[cfg(feature = "tls")]
/// The system's CA bundle: `SSL_CERT_FILE`, else the first of [`SYSTEM_CA_BUNDLES`] that
/// exists. Certificates that do not parse are skipped.
fn system_roots(key: &str) -> Result<RootCertStore, TlsError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let path = from_env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| TlsError::Missing {
            key: key.to_owned(),
            what: format!(
                "not set, and no system CA bundle was found (SSL_CERT_FILE, {}): \
                 set ca_file to the hub's CA certificate",
                SYSTEM_CA_BUNDLES.join(", ")
            ),
        })?;
    let pem = read(key, &path)?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    if roots.is_empty() {
        return Err(TlsError::Pem {
            key: key.to_owned(),
            path,
            what: "the system CA bundle holds no usable certificate; set ca_file".into(),
        });
    }
    Ok(roots)
}

/// The soliciting side's TLS settings for one remote.
pub struct ClientTls {
    #[cfg(feature = "tls")]
    connector: TlsConnector,
    /// `server_name` from the config; otherwise each URL's host.
    #[cfg(feature = "tls")]
    server_name: Option<ServerName<'static>>,
    /// Without the `tls` feature no `ClientTls` can be built.
    #[cfg(not(feature = "tls"))]
    never: crate::tls::Never,
    /// Time limit of the TLS handshake.
    pub timeout: Duration,
    /// TLS right after the TCP connect, before the hub's INFO.
    pub handshake_first: bool,
    /// A client certificate is configured.
    pub has_client_cert: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientTls");
        #[cfg(feature = "tls")]
        d.field("server_name", &self.server_name);
        d.field("timeout", &self.timeout)
            .field("handshake_first", &self.handshake_first)
            .field("has_client_cert", &self.has_client_cert)
            .finish()
    }
}

impl ClientTls {
    /// Builds the settings of a remote's `tls` table; `prefix` is its key
    /// (`leafnodes.remotes[0].tls`), used in errors. Reads every file now.
    #[cfg(not(feature = "tls"))]
    pub fn from_config(_cfg: &RemoteTls, prefix: &str) -> Result<ClientTls, TlsError> {
        Err(TlsError::NotBuilt {
            key: prefix.to_owned(),
        })
    }

    /// Runs the client side of the TLS handshake (never: no `ClientTls` exists without TLS).
    #[cfg(not(feature = "tls"))]
    pub async fn connect(
        &self,
        _url: &RemoteUrl,
        _tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        match self.never {}
    }

    /// Builds the settings of a remote's `tls` table; `prefix` is its key
    /// (`leafnodes.remotes[0].tls`), used in errors. Reads every file now.
    #[cfg(feature = "tls")]
    pub fn from_config(cfg: &RemoteTls, prefix: &str) -> Result<ClientTls, TlsError> {
        if cfg.insecure {
            return Err(TlsError::Refused {
                key: format!("{prefix}.insecure"),
                what: "not supported: the hub's certificate is always verified \
                       (give its CA in ca_file instead)"
                    .into(),
            });
        }
        let ca_key = format!("{prefix}.ca_file");
        let roots = match &cfg.ca_file {
            Some(path) => load_roots(&ca_key, path)?,
            None => system_roots(&ca_key)?,
        };
        let server_name = cfg
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|e| TlsError::Refused {
                    key: format!("{prefix}.server_name"),
                    what: format!("`{name}` is not a valid server name: {e}"),
                })
            })
            .transpose()?;
        let rustls_error = |key: String| {
            move |e: rustls::Error| TlsError::Rustls {
                key,
                what: e.to_string(),
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error(prefix.to_owned()))?
            .with_root_certificates(roots);
        let identity = cert_and_key(prefix, cfg.cert_file.as_deref(), cfg.key_file.as_deref())?;
        let has_client_cert = identity.is_some();
        let config = match identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(rustls_error(format!("{prefix}.key_file")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            timeout: cfg.timeout.unwrap_or(DEFAULT_TLS_TIMEOUT),
            handshake_first: cfg.handshake_first,
            has_client_cert,
        })
    }

    /// Runs the client side of the TLS handshake on `tcp`, checking the hub's certificate
    /// against `server_name` or `url`'s host, within the time limit. The error is a sentence
    /// for the log and the link status.
    #[cfg(feature = "tls")]
    pub async fn connect(
        &self,
        url: &RemoteUrl,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(url.host.clone()).map_err(|e| {
                format!(
                    "`{}` cannot be checked against a certificate: {e}; set tls.server_name",
                    url.host
                )
            })?,
        };
        match tokio::time::timeout(self.timeout, self.connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(TlsStream::from(stream)),
            Ok(Err(e)) => Err(format!("TLS handshake with the hub failed: {e}")),
            Err(_) => Err(format!(
                "TLS handshake with the hub timed out after {:?}",
                self.timeout
            )),
        }
    }
}

/// The accepting side's TLS settings (`leafnodes.tls`).
pub struct ServerTls {
    acceptor: TlsAcceptor,
    /// Time limit of the TLS handshake.
    pub timeout: Duration,
    /// TLS right after the TCP connect, before our INFO.
    pub handshake_first: bool,
    /// Leaves must present a certificate signed by `ca_file`.
    pub verify: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("timeout", &self.timeout)
            .field("handshake_first", &self.handshake_first)
            .field("verify", &self.verify)
            .finish()
    }
}

impl ServerTls {
    /// Builds the listener's settings from `leafnodes.tls`; `prefix` is its key, used in
    /// errors. Reads every file now.
    #[cfg(not(feature = "tls"))]
    pub fn from_config(_cfg: &LeafTls, prefix: &str) -> Result<ServerTls, TlsError> {
        Err(TlsError::NotBuilt {
            key: prefix.to_owned(),
        })
    }

    /// Builds the listener's settings from `leafnodes.tls`; `prefix` is its key, used in
    /// errors. Reads every file now.
    #[cfg(feature = "tls")]
    pub fn from_config(cfg: &LeafTls, prefix: &str) -> Result<ServerTls, TlsError> {
        let files = ListenerFiles {
            cert_file: cfg.cert_file.as_deref(),
            key_file: cfg.key_file.as_deref(),
            ca_file: cfg.ca_file.as_deref(),
            timeout: cfg.timeout,
            verify: cfg.verify.then_some("verify"),
            peers: "leaves'",
        };
        Ok(ServerTls {
            acceptor: files.acceptor(prefix)?,
            timeout: cfg.timeout,
            handshake_first: cfg.handshake_first,
            verify: cfg.verify,
        })
    }

    /// Runs the server side of the TLS handshake on `tcp` within the time limit. The error
    /// is a sentence for the log.
    #[cfg_attr(not(feature = "tls"), allow(clippy::useless_conversion))]
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        crate::tls::accept(&self.acceptor, self.timeout, tcp, "the leaf")
            .await
            .map(TlsStream::from)
    }
}

/// The TLS settings of remote number `index`: from its `tls` table, or the defaults (the
/// system's CA bundle) when only a `tls://` URL asks for TLS; `None` for a plain remote.
pub fn remote_tls(remote: &Remote, index: usize) -> Result<Option<ClientTls>, TlsError> {
    let tls_url = remote
        .urls
        .iter()
        .any(|u| RemoteUrl::parse(u).is_ok_and(|u| u.tls));
    let prefix = format!("leafnodes.remotes[{index}].tls");
    match &remote.tls {
        Some(cfg) => ClientTls::from_config(cfg, &prefix).map(Some),
        None if tls_url => ClientTls::from_config(&RemoteTls::default(), &prefix).map(Some),
        None => Ok(None),
    }
}

/// The listener's TLS settings (`leafnodes.tls`), if any.
pub fn listener_tls(leafnodes: &LeafNodes) -> Result<Option<ServerTls>, TlsError> {
    leafnodes
        .tls
        .as_ref()
        .map(|cfg| ServerTls::from_config(cfg, "leafnodes.tls"))
        .transpose()
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    fn remote(ca: Option<&str>) -> RemoteTls {
        RemoteTls {
            ca_file: ca.map(PathBuf::from),
            ..RemoteTls::default()
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = ClientTls::from_config(
            &remote(Some("/nonexistent/ca.pem")),
            "leafnodes.remotes[0].tls",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("leafnodes.remotes[0].tls.ca_file: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let insecure = RemoteTls {
            insecure: true,
            ..remote(Some("/nonexistent/ca.pem"))
        };
        let e = ClientTls::from_config(&insecure, "r.tls").unwrap_err();
        assert!(
            e.to_string().starts_with("r.tls.insecure: not supported"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("leaf-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = ClientTls::from_config(&remote(junk.to_str()), "r.tls").unwrap_err();
        assert!(e.to_string().contains("no PEM certificate found"), "{e}");
        let half = RemoteTls {
            cert_file: Some(junk.clone()),
            ..remote(None)
        };
        // The CA comes first: without a system bundle that error may come first; with one,
        // the missing key is reported.
        let e = ClientTls::from_config(&half, "r.tls").unwrap_err();
        assert!(
            e.to_string().starts_with("r.tls.key_file: missing")
                || e.to_string().starts_with("r.tls.ca_file"),
            "{e}"
        );

        let listener = LeafTls::default();
        let e = ServerTls::from_config(&listener, "leafnodes.tls").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("leafnodes.tls.cert_file: missing"),
            "{e}"
        );
        let listener = LeafTls {
            cert_file: Some(junk.clone()),
            key_file: Some(junk.clone()),
            ..LeafTls::default()
        };
        let e = ServerTls::from_config(&listener, "leafnodes.tls").unwrap_err();
        assert!(
            e.to_string().starts_with("leafnodes.tls.cert_file: ")
                && e.to_string().contains("no PEM certificate found"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
