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
//! config key (`leafnodes.remotes[0].tls.ca_file: cannot read ...`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::RemoteUrl;
use crate::config::{LeafNodes, LeafTls, Remote, RemoteTls, DEFAULT_TLS_TIMEOUT};

/// Where the system's CA bundle is looked for when a remote has no `ca_file` (after the
/// `SSL_CERT_FILE` environment variable): Debian/Ubuntu/Alpine, Fedora/RHEL, others.
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why TLS settings cannot be used. Every variant names the config key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The config key (`leafnodes.tls.cert_file`).
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not valid PEM, or holds nothing of the expected kind.
    #[error("{key}: {}: {what}", path.display())]
    Pem {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong (`no PEM certificate found`, a decoding error).
        what: String,
    },
    /// A required key is missing, or keys that go together are not given together.
    #[error("{key}: {what}")]
    Missing {
        /// The config key.
        key: String,
        /// What is needed.
        what: String,
    },
    /// A value is refused (`insecure = true`, an invalid `server_name`).
    #[error("{key}: {what}")]
    Refused {
        /// The config key.
        key: String,
        /// Why.
        what: String,
    },
    /// rustls refused the certificates or key (a key that does not match its certificate,
    /// an unusable CA).
    #[error("{key}: {what}")]
    Rustls {
        /// The config key.
        key: String,
        /// rustls's message.
        what: String,
    },
}

/// The crypto provider: ring, as the only one compiled in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `path` (named by config key `key`).
fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_owned(),
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in the PEM file `path`; at least one.
fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let pem_error = |what: String| TlsError::Pem {
        key: key.to_owned(),
        path: path.to_path_buf(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// The first private key in the PEM file `path`.
fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        key: key.to_owned(),
        path: path.to_path_buf(),
        what: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key found (PKCS#8, PKCS#1 or SEC1; encrypted keys are not supported)"
                    .into()
            }
            e => format!("invalid PEM: {e}"),
        },
    })
}

/// A root store holding every certificate of the PEM file `path`.
fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            key: key.to_owned(),
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

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

/// `cert_file` and `key_file`, both or neither (`prefix` is the `tls` table's key).
fn cert_and_key(
    prefix: &str,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => Ok(Some((
            load_certs(&format!("{prefix}.cert_file"), cert)?,
            load_key(&format!("{prefix}.key_file"), key)?,
        ))),
        (Some(_), None) => Err(TlsError::Missing {
            key: format!("{prefix}.key_file"),
            what: format!("missing: {prefix}.cert_file needs its private key"),
        }),
        (None, Some(_)) => Err(TlsError::Missing {
            key: format!("{prefix}.cert_file"),
            what: format!("missing: {prefix}.key_file needs its certificate"),
        }),
        (None, None) => Ok(None),
    }
}

/// The soliciting side's TLS settings for one remote.
pub struct ClientTls {
    connector: TlsConnector,
    /// `server_name` from the config; otherwise each URL's host.
    server_name: Option<ServerName<'static>>,
    /// Time limit of the TLS handshake.
    pub timeout: Duration,
    /// TLS right after the TCP connect, before the hub's INFO.
    pub handshake_first: bool,
    /// A client certificate is configured.
    pub has_client_cert: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("timeout", &self.timeout)
            .field("handshake_first", &self.handshake_first)
            .field("has_client_cert", &self.has_client_cert)
            .finish()
    }
}

impl ClientTls {
    /// Builds the settings of a remote's `tls` table; `prefix` is its key
    /// (`leafnodes.remotes[0].tls`), used in errors. Reads every file now.
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
    pub fn from_config(cfg: &LeafTls, prefix: &str) -> Result<ServerTls, TlsError> {
        let (certs, key) = match (cfg.cert_file.as_deref(), cfg.key_file.as_deref()) {
            (None, _) => {
                return Err(TlsError::Missing {
                    key: format!("{prefix}.cert_file"),
                    what: "missing: a TLS listener needs cert_file and key_file".into(),
                })
            }
            (Some(_), None) => {
                return Err(TlsError::Missing {
                    key: format!("{prefix}.key_file"),
                    what: "missing: a TLS listener needs cert_file and key_file".into(),
                })
            }
            (cert, key) => cert_and_key(prefix, cert, key)?.ok_or_else(|| TlsError::Missing {
                key: format!("{prefix}.cert_file"),
                what: "missing".into(),
            })?,
        };
        if cfg.timeout.is_zero() {
            return Err(TlsError::Refused {
                key: format!("{prefix}.timeout"),
                what: "must be greater than zero".into(),
            });
        }
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls {
                key: prefix.to_owned(),
                what: e.to_string(),
            })?;
        let builder = if cfg.verify {
            let ca_key = format!("{prefix}.ca_file");
            let Some(ca_file) = cfg.ca_file.as_deref() else {
                return Err(TlsError::Missing {
                    key: ca_key,
                    what: format!(
                        "missing: {prefix}.verify needs the CA that leaves' certificates chain to"
                    ),
                });
            };
            let roots = load_roots(&ca_key, ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls {
                    key: ca_key,
                    what: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Rustls {
                key: format!("{prefix}.key_file"),
                what: e.to_string(),
            })?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            timeout: cfg.timeout,
            handshake_first: cfg.handshake_first,
            verify: cfg.verify,
        })
    }

    /// Runs the server side of the TLS handshake on `tcp` within the time limit. The error
    /// is a sentence for the log.
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(TlsStream::from(stream)),
            Ok(Err(e)) => Err(format!("TLS handshake with the leaf failed: {e}")),
            Err(_) => Err(format!(
                "TLS handshake with the leaf timed out after {:?}",
                self.timeout
            )),
        }
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

/// The write half of a TLS link: a write completes only once its bytes have left for the
/// socket.
///
/// tokio-rustls may accept bytes into its record buffer and return before they reach the
/// socket (when the socket is full); a writer that then waits for new data would leave them
/// there. Here a write first puts its bytes into the TLS session, then flushes the session,
/// and reports the count only after the flush. The caller must repeat a write that returned
/// `Pending` with the same bytes (as `write_all` and the link writer do).
pub(crate) struct FlushingWriter<W> {
    inner: W,
    /// Bytes taken by a write whose flush is still pending.
    accepted: Option<usize>,
}

impl<W> FlushingWriter<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        FlushingWriter {
            inner,
            accepted: None,
        }
    }
}

impl<W: AsyncWrite + Unpin> FlushingWriter<W> {
    /// Flushes, then reports the bytes taken.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let flushed = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        let accepted = self.accepted.take().unwrap_or(0);
        Poll::Ready(flushed.map(|()| accepted))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FlushingWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.accepted.is_none() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            this.accepted = Some(n);
        }
        this.finish(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.accepted.is_none() {
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
            this.accepted = Some(n);
        }
        this.finish(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
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

    /// A writer that takes at most 3 bytes per write and is `Pending` on every other flush.
    struct Slow {
        data: Vec<u8>,
        flushes: usize,
    }

    impl AsyncWrite for Slow {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(3);
            this.data.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.flushes += 1;
            if this.flushes % 2 == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn flushing_writer_writes_each_byte_once() {
        use tokio::io::AsyncWriteExt;
        let mut w = FlushingWriter::new(Slow {
            data: Vec::new(),
            flushes: 0,
        });
        w.write_all(b"hello, world").await.unwrap();
        assert_eq!(w.inner.data, b"hello, world");
        assert!(w.inner.flushes >= 8);
    }
}
