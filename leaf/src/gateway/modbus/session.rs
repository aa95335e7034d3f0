//! One Modbus RTU session on an open serial port: every request under a timeout, the
//! inter-frame gap kept, and the tokio-modbus client context thrown away after any
//! timeout or transport error.
//!
//! A request cut short by a timeout leaves the client's framing state undefined (bytes of
//! a late answer, a half-decoded frame: tokio-modbus issues #60 and #183), so the context
//! is dropped and the next request gets a fresh one, over the same open device, with the
//! stale input discarded. Only an error of the device itself (a hang-up, an unplug) makes
//! the caller close and reopen the port.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_modbus::client::{rtu, Client, Context as ModbusContext};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use crate::gateway::serial::port::SerialPort;

/// How a request failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No complete answer within the timeout. `garbled` is true when bytes did arrive (a
    /// corrupted or cut-off frame, e.g. a bad CRC), false when the slave stayed silent.
    #[error("{}", if *garbled { "no valid answer in time (garbled or incomplete frame)" } else { "no answer in time" })]
    Timeout {
        /// Whether any bytes arrived.
        garbled: bool,
    },
    /// The slave answered with a Modbus exception; the session is fine.
    #[error("exception: {0}")]
    Exception(ExceptionCode),
    /// A frame that decodes but does not fit (bad CRC after resynchronising, wrong slave,
    /// wrong function, wrong length).
    #[error("bad response: {0}")]
    Protocol(String),
    /// The device failed (hung up, unplugged): the port must be reopened.
    #[error("device error: {0}")]
    Device(io::Error),
}

/// The open port, shared between the session and the client context it currently lends
/// it to, so a context can be thrown away without closing the device.
type SharedPort = Arc<Mutex<SerialPort>>;

/// The transport handed to tokio-modbus: the shared port, counting the bytes it reads.
struct Link {
    port: SharedPort,
    received: Arc<AtomicU64>,
}

fn poisoned() -> io::Error {
    io::Error::other("serial port lock poisoned")
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let Ok(mut port) = self.port.lock() else {
            return Poll::Ready(Err(poisoned()));
        };
        let result = Pin::new(&mut *port).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Ok(mut port) = self.port.lock() else {
            return Poll::Ready(Err(poisoned()));
        };
        Pin::new(&mut *port).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let Ok(mut port) = self.port.lock() else {
            return Poll::Ready(Err(poisoned()));
        };
        Pin::new(&mut *port).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let Ok(mut port) = self.port.lock() else {
            return Poll::Ready(Err(poisoned()));
        };
        Pin::new(&mut *port).poll_shutdown(cx)
    }
}

/// A Modbus master on one open port.
pub struct Session {
    port: SharedPort,
    received: Arc<AtomicU64>,
    client: Option<ModbusContext>,
    timeout: Duration,
    gap: Duration,
    /// When the last transaction ended (answer, error or timeout).
    last_end: Instant,
}

impl Session {
    /// A session on `port`: `timeout` per request, `gap` of silence between transactions.
    pub fn new(port: SerialPort, timeout: Duration, gap: Duration) -> Session {
        Session {
            port: Arc::new(Mutex::new(port)),
            received: Arc::new(AtomicU64::new(0)),
            client: None,
            timeout,
            gap,
            last_end: Instant::now(),
        }
    }

    /// Sends `request` to `slave` and waits (at most the timeout) for its answer.
    ///
    /// Before the request the gap since the previous transaction is kept and unread
    /// input (a late answer) is discarded. After a timeout or any error other than an
    /// exception the client context is dropped; the next call makes a new one.
    ///
    /// # Errors
    /// [`CallError`]; only [`CallError::Device`] asks for the port to be reopened.
    pub async fn call(&mut self, slave: u8, request: Request<'_>) -> Result<Response, CallError> {
        tokio::time::sleep_until(self.last_end + self.gap).await;
        if let Ok(port) = self.port.lock() {
            port.discard_input();
        }
        let client = self.client.get_or_insert_with(|| {
            rtu::attach_slave(
                Link {
                    port: self.port.clone(),
                    received: self.received.clone(),
                },
                Slave(slave),
            )
        });
        client.set_slave(Slave(slave));
        self.received.store(0, Ordering::Relaxed);
        let result = tokio::time::timeout(self.timeout, client.call(request)).await;
        self.last_end = Instant::now();
        let outcome = match result {
            Err(_elapsed) => Err(CallError::Timeout {
                garbled: self.received.load(Ordering::Relaxed) > 0,
            }),
            Ok(Ok(Ok(response))) => return Ok(response),
            Ok(Ok(Err(exception))) => return Err(CallError::Exception(exception)),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(CallError::Protocol(e.to_string())),
            // The decoder gives up on garbage with InvalidData; the device is fine.
            Ok(Err(tokio_modbus::Error::Transport(e)))
                if e.kind() == io::ErrorKind::InvalidData =>
            {
                Err(CallError::Protocol(e.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(CallError::Device(e)),
        };
        // The context may hold half a frame or wait for one that will never come.
        self.client = None;
        outcome
    }

    /// Throws the client context away (after an answer that did not fit the request).
    pub fn reset(&mut self) {
        self.client = None;
    }
}
