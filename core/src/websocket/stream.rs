//! A WebSocket connection as a byte stream: [`WsStream`] reads the payloads of the peer's
//! data frames (binary or text, as nats-server takes both) and writes every write as one
//! binary message, so the NATS protocol code runs over it unchanged.
//!
//! tokio-websockets does the framing: it masks what a client sends and requires masked
//! frames from a client (and none from a server), answers pings with pongs and a close with
//! a close, and refuses a frame or a message (fragments put together) larger than the limit
//! it was given before buffering it ([`message_limit`]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_websockets::{Config, Limits, Message, WebSocketStream};

/// The largest outgoing frame: a larger write is sent as fragments of this size.
pub const FRAME_SIZE: usize = 64 * 1024;

/// The stream a WebSocket connection runs on (plain or TLS, one type for both), and the
/// type the connection over it is boxed as in turn (see [`crate::tls::BoxedIo`]).
pub use crate::tls::{BoxedIo, Io};

/// The largest message (all its fragments) a peer may send: room for one whole NATS
/// message of `max_payload` with its control line, twice, so a client that batches a few
/// operations into one message still fits; beyond it the connection is closed (close code
/// 1009). This and the connection's read buffer bound what one peer can make us hold.
pub fn message_limit(max_payload: usize, max_control_line: usize) -> usize {
    2 * (max_payload + max_control_line + 2)
}

/// The frame settings of both directions: writes fragmented at [`FRAME_SIZE`], reads
/// bounded by `limit` bytes per message.
pub(crate) fn settings(limit: usize) -> (Config, Limits) {
    (
        Config::default().frame_size(FRAME_SIZE),
        Limits::default().max_payload_len(Some(limit)),
    )
}

/// A WebSocket connection read and written as bytes.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// What is left of the last data message read.
    pending: Bytes,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<S> WsStream<S> {
    /// Wraps a WebSocket connection whose handshake is done.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        WsStream {
            inner,
            pending: Bytes::new(),
        }
    }
}

fn io_error(e: tokio_websockets::Error) -> io::Error {
    match e {
        tokio_websockets::Error::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                // The peer closed (after its close frame, or the transport ended).
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Some(Ok(msg)) if msg.is_binary() || msg.is_text() => {
                    self.pending = msg.into_payload().into();
                }
                Some(Ok(msg)) if msg.is_close() => return Poll::Ready(Ok(())),
                // Pings (answered by tokio-websockets) and pongs.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut self.inner)
            .start_send(Message::binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(io_error)
    }
}
