//! TLS pieces every TLS listener and link uses (rustls with the ring provider only):
//! PEM loading with errors naming the config key, the server side's rustls configuration,
//! and [`FlushingWriter`] for the write half of a TLS stream.
//!
//! The leafnode links (`crate::leafnode::tls`), the client listener (`crate::server::tls`),
//! the monitoring port's `https_port` and hubd's routes ([`mutual`]) build on these; [`names`] reads the names a client
//! certificate carries for `verify_and_map`.
//!
//! Cargo feature `tls` (leaf-core's default, always on in hubd, on by default in leafd). Without
//! it rustls is not linked: [`TlsError::NotBuilt`] refuses every TLS setting by its key, and
//! the acceptor and stream types are stand-ins that cannot be built (`off`). `names`, the
//! [`Io`]/[`BoxedIo`] stream type and [`FlushingWriter`] stay (authorization and WebSocket use
//! them).

#[cfg(feature = "tls")]
pub mod mutual;
pub mod names;
#[cfg(not(feature = "tls"))]
mod off;
#[cfg(not(feature = "tls"))]
pub(crate) use off::{accept, Never, TlsAcceptor, TlsStream};
#[cfg(feature = "tls")]
pub(crate) use tokio_rustls::{TlsAcceptor, TlsStream};

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
// What only the `tls` feature's code uses.
#[cfg(feature = "tls")]
use {
    rustls::crypto::CryptoProvider,
    rustls::pki_types::pem::PemObject,
    rustls::pki_types::{CertificateDer, PrivateKeyDer},
    rustls::server::WebPkiClientVerifier,
    rustls::{RootCertStore, ServerConfig},
    std::path::Path,
    std::sync::Arc,
    std::time::Duration,
    tokio::net::TcpStream,
};

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
    /// TLS is configured but this binary was built without the `tls` feature.
    #[error("{key}: built without TLS support (cargo feature `tls`)")]
    NotBuilt {
        /// The config key (`tls`, `leafnodes.remotes[0].tls`, `https_port`).
        key: String,
    },
}

#[cfg(feature = "tls")]
/// The crypto provider: ring, as the only one compiled in.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(feature = "tls")]
/// Reads `path` (named by config key `key`).
pub(crate) fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_owned(),
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(feature = "tls")]
/// Every certificate in the PEM file `path`; at least one.
pub(crate) fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

#[cfg(feature = "tls")]
/// The first private key in the PEM file `path`.
pub(crate) fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
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

#[cfg(feature = "tls")]
/// A root store holding every certificate of the PEM file `path`.
pub(crate) fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsError> {
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

#[cfg(feature = "tls")]
/// `cert_file` and `key_file`, both or neither (`prefix` is the `tls` table's key).
pub(crate) fn cert_and_key(
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

#[cfg(feature = "tls")]
/// The rustls configuration of a TLS listener whose `tls` table is `prefix`: its certificate
/// and key (both required), and with `client_ca` the CA every client certificate must chain
/// to (a client without one is refused). Reads every file now; errors name the key.
pub(crate) fn server_config(
    prefix: &str,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let missing = |key: &str| TlsError::Missing {
        key: format!("{prefix}.{key}"),
        what: "missing: a TLS listener needs cert_file and key_file".into(),
    };
    let (certs, key) = match (cert_file, key_file) {
        (None, _) => return Err(missing("cert_file")),
        (Some(_), None) => return Err(missing("key_file")),
        (cert, key) => cert_and_key(prefix, cert, key)?.ok_or_else(|| missing("cert_file"))?,
    };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls {
            key: prefix.to_owned(),
            what: e.to_string(),
        })?;
    let builder = match client_ca {
        Some(ca_file) => {
            let ca_key = format!("{prefix}.ca_file");
            let roots = load_roots(&ca_key, ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls {
                    key: ca_key,
                    what: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls {
            key: format!("{prefix}.key_file"),
            what: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

#[cfg(feature = "tls")]
/// What a TLS listener's table (`prefix`) says: its certificate and key, and, when a key asks
/// for client certificates (`verify`, `verify_and_map`), the CA they must chain to.
pub(crate) struct ListenerFiles<'a> {
    /// `cert_file`.
    pub cert_file: Option<&'a Path>,
    /// `key_file`.
    pub key_file: Option<&'a Path>,
    /// `ca_file`.
    pub ca_file: Option<&'a Path>,
    /// The handshake's time limit (`timeout`).
    pub timeout: Duration,
    /// The key asking for client certificates, when one does.
    pub verify: Option<&'static str>,
    /// Whose certificates `ca_file` checks, for the error (`leaves'`, `clients'`).
    pub peers: &'static str,
}

#[cfg(feature = "tls")]
impl ListenerFiles<'_> {
    /// The listener's acceptor; reads every file now. Errors name the key under `prefix`.
    pub(crate) fn acceptor(&self, prefix: &str) -> Result<TlsAcceptor, TlsError> {
        if self.timeout.is_zero() {
            return Err(TlsError::Refused {
                key: format!("{prefix}.timeout"),
                what: "must be greater than zero".into(),
            });
        }
        let client_ca = match self.verify {
            Some(flag) => Some(self.ca_file.ok_or_else(|| TlsError::Missing {
                key: format!("{prefix}.ca_file"),
                what: format!(
                    "missing: {prefix}.{flag} needs the CA that {} certificates chain to",
                    self.peers
                ),
            })?),
            None => None,
        };
        let config = server_config(prefix, self.cert_file, self.key_file, client_ca)?;
        Ok(TlsAcceptor::from(config))
    }
}

#[cfg(feature = "tls")]
/// Runs the server side of the TLS handshake on `tcp` within `timeout`. The error is a
/// sentence for the log naming the `peer` (`the leaf`, `a client`).
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    timeout: Duration,
    tcp: TcpStream,
    peer: &str,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake with {peer} failed: {e}")),
        Err(_) => Err(format!(
            "TLS handshake with {peer} timed out after {timeout:?}"
        )),
    }
}

/// Anything a connection runs on besides plain TCP: TLS over TCP, a WebSocket.
pub trait Io: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The one stream type of every connection that is not plain TCP (client or leafnode link,
/// over TLS or WebSocket). The connection code is generic over its read and write halves:
/// with one boxed type it is built once for all of them, not once per kind of stream (a
/// WebSocket-only copy of the client and link code cost leafd about 400 KB); the dynamic
/// call per read or write is nothing next to TLS or framing. Plain TCP keeps its own halves.
pub type BoxedIo = Box<dyn Io>;

/// The write half of a TLS link: a write completes only once its bytes have left for the
/// socket.
///
/// tokio-rustls may accept bytes into its record buffer and return before they reach the
/// socket (when the socket is full); a writer that then waits for new data would leave them
/// there. Here a write first puts its bytes into the TLS session, then flushes the session,
/// and reports the count only after the flush. The caller must repeat a write that returned
/// `Pending` with the same bytes (as `write_all` and the link writer do).
pub struct FlushingWriter<W> {
    inner: W,
    /// Bytes taken by a write whose flush is still pending.
    accepted: Option<usize>,
}

impl<W> FlushingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
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
