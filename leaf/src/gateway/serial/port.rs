//! An open serial device as an async byte stream: the `serialport` crate opens and
//! configures it (termios: baud, data bits, parity, stop bits, flow control; exclusive
//! access), then the descriptor is switched to non-blocking and driven by tokio's reactor.
//!
//! [`SerialPort`] implements tokio's `AsyncRead`/`AsyncWrite` (what tokio-modbus needs)
//! and embedded-io-async's `Read` (what the `leaf-frames` decoders are written against).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gateway::config::serial::{FlowControl, Parity, PortSettings, Rs485};

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The device does not exist (unplugged, or the path is wrong).
    #[error("{}: no such device", path.display())]
    Missing {
        /// The device path.
        path: PathBuf,
    },
    /// The device exists but could not be opened or configured.
    #[error("{}: {message}", path.display())]
    Open {
        /// The device path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// An open, configured serial device.
#[derive(Debug)]
pub struct SerialPort {
    fd: AsyncFd<serialport::TTYPort>,
    path: PathBuf,
}

impl SerialPort {
    /// Opens `path` with `settings` (the device in `settings` is ignored: the caller has
    /// resolved it to `path`). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PortError::Missing`] when nothing is at `path`, [`PortError::Open`] otherwise.
    pub fn open(path: &Path, settings: &PortSettings) -> Result<SerialPort, PortError> {
        let fail = |message: String| PortError::Open {
            path: path.to_owned(),
            message,
        };
        if !path.exists() {
            return Err(PortError::Missing {
                path: path.to_owned(),
            });
        }
        let data_bits = match settings.data_bits {
            5 => serialport::DataBits::Five,
            6 => serialport::DataBits::Six,
            7 => serialport::DataBits::Seven,
            _ => serialport::DataBits::Eight,
        };
        let parity = match settings.parity {
            Parity::None => serialport::Parity::None,
            Parity::Odd => serialport::Parity::Odd,
            Parity::Even => serialport::Parity::Even,
        };
        let stop_bits = match settings.stop_bits {
            2 => serialport::StopBits::Two,
            _ => serialport::StopBits::One,
        };
        let flow_control = match settings.flow_control {
            FlowControl::None => serialport::FlowControl::None,
            FlowControl::Software => serialport::FlowControl::Software,
            FlowControl::Hardware => serialport::FlowControl::Hardware,
        };
        let port = serialport::new(path.to_string_lossy(), settings.baud)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(flow_control)
            .open_native()
            .map_err(|e| match e.kind() {
                serialport::ErrorKind::NoDevice => PortError::Missing {
                    path: path.to_owned(),
                },
                serialport::ErrorKind::Io(io::ErrorKind::NotFound) => PortError::Missing {
                    path: path.to_owned(),
                },
                _ => fail(e.to_string()),
            })?;
        let raw = port.as_raw_fd();
        set_nonblocking(raw).map_err(|e| fail(format!("cannot make it non-blocking: {e}")))?;
        if let Some(rs485) = settings.rs485.as_ref().filter(|r| r.enabled) {
            set_rs485(raw, rs485).map_err(|e| {
                fail(format!(
                    "RS-485 mode refused by the driver (TIOCSRS485): {e}"
                ))
            })?;
        }
        // Bytes that arrived while nobody read belong to no frame we can place.
        // SAFETY: `raw` is the open descriptor owned by `port`.
        unsafe { libc::tcflush(raw, libc::TCIFLUSH) };
        // SAFETY: `TTYPort` owns its descriptor, closes it only when dropped and always
        // returns the same one from `as_raw_fd`; the `AsyncFd` owns the port.
        let fd = unsafe { AsyncFd::register(port) }
            .map_err(|e| fail(format!("cannot register: {e}")))?;
        Ok(SerialPort {
            fd,
            path: path.to_owned(),
        })
    }

    /// The device path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops bytes received and not yet read (Modbus: stale bytes before a request).
    pub fn discard_input(&self) {
        // SAFETY: the descriptor is open for as long as `self` lives.
        unsafe { libc::tcflush(self.fd.get_ref().as_raw_fd(), libc::TCIFLUSH) };
    }

    fn poll_read_bytes(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            match guard.try_io(|inner| read_fd(inner.get_ref().as_raw_fd(), buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `read(2)`: a hung-up terminal (EIO, the other end of a PTY closed or a USB adapter
/// unplugged) reads as end of file.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is open.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(n.unsigned_abs());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EIO) {
        return Ok(0);
    }
    Err(err)
}

fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is open.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n >= 0 {
        Ok(n.unsigned_abs())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on an open descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The kernel's `struct serial_rs485` (include/uapi/linux/serial.h).
#[repr(C)]
#[derive(Default)]
struct SerialRs485 {
    flags: u32,
    delay_rts_before_send: u32,
    delay_rts_after_send: u32,
    padding: [u32; 5],
}

const SER_RS485_ENABLED: u32 = 1;
const SER_RS485_RTS_ON_SEND: u32 = 1 << 1;
const SER_RS485_RTS_AFTER_SEND: u32 = 1 << 2;

fn set_rs485(fd: RawFd, cfg: &Rs485) -> io::Result<()> {
    let millis = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let mut conf = SerialRs485 {
        flags: SER_RS485_ENABLED
            | if cfg.rts_on_send {
                SER_RS485_RTS_ON_SEND
            } else {
                SER_RS485_RTS_AFTER_SEND
            },
        delay_rts_before_send: millis(cfg.delay_before_send),
        delay_rts_after_send: millis(cfg.delay_after_send),
        ..SerialRs485::default()
    };
    // SAFETY: TIOCSRS485 takes a pointer to a `struct serial_rs485`, which `conf` is.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSRS485, &mut conf as *mut SerialRs485) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsyncRead for SerialPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self.poll_read_bytes(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SerialPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| write_fd(inner.get_ref().as_raw_fd(), buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl embedded_io_async::ErrorType for SerialPort {
    type Error = io::Error;
}

impl embedded_io_async::Read for SerialPort {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_bytes(cx, buf)).await
    }
}
