//! Stand-ins for the TLS types when leaf-core is built without its `tls` feature (no rustls
//! in the binary).
//!
//! Every TLS setting is refused when the configuration is checked
//! ([`super::TlsError::NotBuilt`], naming the key), so no TLS listener, acceptor or stream
//! can exist: the types here hold an uninhabited [`Never`], and the code that would use them
//! compiles unchanged but can never run (`match never {}`).

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A value that cannot exist: what a TLS object holds in a build without TLS.
#[derive(Debug, Clone, Copy)]
pub enum Never {}

/// The server side of a TLS handshake (never built without the `tls` feature).
#[derive(Debug, Clone)]
pub struct TlsAcceptor(Never);

impl TlsAcceptor {
    /// Would run the server side of the handshake.
    pub fn accept(&self, _tcp: TcpStream) -> std::future::Ready<io::Result<TlsStream<TcpStream>>> {
        match self.0 {}
    }
}

/// A TLS stream over `T` (never built without the `tls` feature).
#[derive(Debug)]
pub struct TlsStream<T>(pub(crate) Never, PhantomData<T>);

impl<T: Unpin> AsyncRead for TlsStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0 {}
    }
}

impl<T: Unpin> AsyncWrite for TlsStream<T> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match self.0 {}
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0 {}
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0 {}
    }
}

/// Would run the server side of the TLS handshake (as `crate::tls::accept` with TLS).
pub async fn accept(
    acceptor: &TlsAcceptor,
    _timeout: std::time::Duration,
    _tcp: TcpStream,
    _peer: &str,
) -> Result<TlsStream<TcpStream>, String> {
    match acceptor.0 {}
}

#[cfg(test)]
mod tests {
    use crate::app::unsupported_yet;
    use crate::config::{parse_str, Format};

    /// The error `unsupported_yet` gives for the TOML config `text`.
    fn refusal(text: &str) -> String {
        let cfg = parse_str(text, Format::Toml, "test.toml").expect("the config parses");
        unsupported_yet(&cfg).expect_err("TLS settings must be refused")
    }

    #[test]
    fn every_tls_setting_is_refused_by_its_key() {
        let built = "built without TLS support (cargo feature `tls`)";
        let cases = [
            ("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "tls"),
            ("https_port = 8443\n", "https_port"),
            (
                "[leafnodes]\nport = 7422\n[leafnodes.tls]\ncert_file = \"c.pem\"\n",
                "leafnodes.tls",
            ),
            (
                "[leafnodes]\nremotes = [{ url = \"tls://hub:7422\" }]\n",
                "leafnodes.remotes[0].tls",
            ),
            (
                "[leafnodes]\nremotes = [{ url = \"nats-leaf://hub:7422\", tls = { ca_file = \"ca.pem\" } }]\n",
                "leafnodes.remotes[0].tls",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(refusal(text), format!("{key}: {built}"), "config:\n{text}");
        }
    }

    #[test]
    fn plain_settings_are_accepted() {
        let text =
            "http_port = 8222\n[leafnodes]\nremotes = [{ url = \"nats-leaf://hub:7422\" }]\n";
        let cfg = parse_str(text, Format::Toml, "test.toml").expect("the config parses");
        assert_eq!(unsupported_yet(&cfg), Ok(()));
    }
}
