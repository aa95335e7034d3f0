//! systemd integration for `leafd` running as a `Type=notify` service with a watchdog
//! (`leaf/systemd/leafd.service`).
//!
//! The service manager hands the process two things through its environment:
//! * `$NOTIFY_SOCKET`: a Unix datagram socket (a path, or an abstract name written with a
//!   leading `@`) that receives newline-separated `KEY=VALUE` state updates such as `READY=1`
//!   (start-up finished), `STATUS=...` (a line shown by `systemctl status`), `STOPPING=1`
//!   (shutdown began) and `WATCHDOG=1` (still alive);
//! * `$WATCHDOG_USEC` (and `$WATCHDOG_PID`): the watchdog timeout. Without a `WATCHDOG=1` within
//!   that time systemd kills and (with `Restart=`) restarts the service.
//!
//! This is the small part of `sd_notify(3)` and `sd_watchdog_enabled(3)` a server needs,
//! written against the standard library (no libsystemd). Everything is best effort: outside
//! systemd (no `$NOTIFY_SOCKET`) every call is a cheap no-op, and a failed send is logged at
//! debug level, never an error for the caller, never a panic.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::debug;

/// The environment variable naming the notification socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The environment variable holding the watchdog timeout, in microseconds.
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog is meant for.
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an abstract name (`@name`); systemd's
    /// `vsock:` addresses are not supported.
    #[error("unsupported notification socket address {0:?}")]
    UnsupportedAddress(OsString),
    /// The datagram socket could not be created, addressed or written to.
    #[error("cannot send to the notification socket {socket:?}: {source}")]
    Io {
        /// The socket address, as given in `$NOTIFY_SOCKET`.
        socket: OsString,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel accepted only part of the datagram.
    #[error("short write to the notification socket {socket:?}: {sent} of {len} bytes")]
    ShortWrite {
        /// The socket address, as given in `$NOTIFY_SOCKET`.
        socket: OsString,
        /// Bytes sent.
        sent: usize,
        /// Bytes in the message.
        len: usize,
    },
}

/// Sends `state` (newline-separated assignments, e.g. `"READY=1\nSTATUS=serving"`) to the
/// service manager through `$NOTIFY_SOCKET`.
///
/// Returns whether the message was sent: `false` when the variable is unset (not started by
/// systemd, or by a unit that is not `Type=notify`) or when sending failed (logged at debug
/// level). Never blocks and never panics.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return false;
    };
    match notify_to(&socket, state) {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "systemd notification not sent");
            false
        }
    }
}

/// Tells the service manager that start-up is complete (`READY=1`), with `status` as the
/// service's status line. Call it once clients can connect.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// Tells the service manager that the service is shutting down (`STOPPING=1`).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=shutting down");
}

/// Sets the status line `systemctl status` shows (`STATUS=...`).
pub fn status(text: &str) {
    notify(&format!("STATUS={}", one_line(text)));
}

/// How often to send `WATCHDOG=1`: half the timeout in `$WATCHDOG_USEC`, as
/// `sd_watchdog_enabled(3)` recommends. `None` when the watchdog is off: the variable is unset,
/// not a positive integer, or `$WATCHDOG_PID` is set to another process's id.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os(WATCHDOG_USEC).as_deref(),
        std::env::var_os(WATCHDOG_PID).as_deref(),
        std::process::id(),
    )
}

/// Starts the watchdog task when systemd asked for one ([`watchdog_interval`] is `Some`) and
/// `$NOTIFY_SOCKET` is set: every interval it calls `health` and sends `WATCHDOG=1` only when
/// `health` returns `true`. A server that is wedged (its runtime stuck, or `health` failing)
/// therefore stops pinging and is restarted by systemd.
///
/// Returns the task's handle (abort it, or drop the runtime, to stop it), or `None` when the
/// watchdog is off or no tokio runtime is running on this thread.
pub fn spawn_watchdog(
    health: impl Fn() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    let socket = std::env::var_os(NOTIFY_SOCKET)?;
    spawn_watchdog_to(socket, interval, health)
}

/// [`spawn_watchdog`] with the socket and interval given rather than read from the
/// environment.
fn spawn_watchdog_to(
    socket: OsString,
    interval: Duration,
    health: impl Fn() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime,
        Err(e) => {
            debug!(error = %e, "systemd watchdog not started: no tokio runtime");
            return None;
        }
    };
    debug!(?interval, "systemd watchdog enabled");
    Some(runtime.spawn(async move {
        // The first ping one interval from now: after READY=1, which the caller sends next.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !health() {
                debug!("health check failed: systemd watchdog not pinged");
                continue;
            }
            if let Err(e) = notify_to(&socket, "WATCHDOG=1") {
                debug!(error = %e, "systemd watchdog ping not sent");
            }
        }
    }))
}

/// Sends one datagram holding `state` to `socket` (an absolute path, or `@` followed by an
/// abstract socket name). The socket is non-blocking: a full queue is an error, not a stall.
fn notify_to(socket: &OsStr, state: &str) -> Result<(), NotifyError> {
    let io_err = |source| NotifyError::Io {
        socket: socket.to_owned(),
        source,
    };
    let bytes = socket.as_bytes();
    let sender = UnixDatagram::unbound().map_err(io_err)?;
    sender.set_nonblocking(true).map_err(io_err)?;
    let sent = match bytes.split_first() {
        Some((b'/', _)) => sender.send_to(state.as_bytes(), socket),
        Some((b'@', name)) => {
            abstract_address(name).and_then(|addr| sender.send_to_addr(state.as_bytes(), &addr))
        }
        _ => return Err(NotifyError::UnsupportedAddress(socket.to_owned())),
    }
    .map_err(io_err)?;
    if sent != state.len() {
        return Err(NotifyError::ShortWrite {
            socket: socket.to_owned(),
            sent,
            len: state.len(),
        });
    }
    Ok(())
}

/// The address of the abstract Unix socket `name` (Linux only).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

/// Abstract Unix sockets exist only on Linux.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names are Linux-only",
    ))
}

/// [`watchdog_interval`] from the variables' values and this process's id.
fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    my_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != my_pid {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// `text` with line breaks replaced by spaces, so a status line cannot add assignments.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A notification socket bound in a fresh temp dir (kept alive with it).
    fn listener() -> (tempfile::TempDir, UnixDatagram, OsString) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, sock, path.into_os_string())
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let (_dir, sock, path) = listener();
        notify_to(&path, "READY=1\nSTATUS=up").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=up");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!(
            "leaf-test-notify-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let addr = abstract_address(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn bad_addresses_are_errors_not_panics() {
        assert!(matches!(
            notify_to(OsStr::new("relative/path"), "READY=1"),
            Err(NotifyError::UnsupportedAddress(_))
        ));
        assert!(matches!(
            notify_to(OsStr::new(""), "READY=1"),
            Err(NotifyError::UnsupportedAddress(_))
        ));
        assert!(matches!(
            notify_to(OsStr::new("vsock:2:1234"), "READY=1"),
            Err(NotifyError::UnsupportedAddress(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens");
        let err = notify_to(missing.as_os_str(), "READY=1").unwrap_err();
        assert!(matches!(err, NotifyError::Io { .. }), "{err}");
        assert!(err.to_string().contains("nobody-listens"), "{err}");
    }

    #[test]
    fn a_full_queue_does_not_block() {
        let (_dir, _sock, path) = listener();
        // Nobody reads: the receive queue fills up and sending fails instead of blocking.
        let big = "X".repeat(16 * 1024);
        let failed = (0..10_000).any(|_| notify_to(&path, &big).is_err());
        assert!(failed, "a never-read socket accepted everything");
    }

    #[test]
    fn status_lines_stay_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout() {
        let us = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval_from(us("30000000"), None, 42),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(us("400000"), us("42"), 42),
            Some(Duration::from_millis(200))
        );
        assert_eq!(watchdog_interval_from(us("400000"), us("43"), 42), None);
        assert_eq!(watchdog_interval_from(us("400000"), us("x"), 42), None);
        assert_eq!(watchdog_interval_from(None, us("42"), 42), None);
        assert_eq!(watchdog_interval_from(us("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(us("-5"), None, 42), None);
        assert_eq!(watchdog_interval_from(us("soon"), None, 42), None);
    }

    #[test]
    fn without_a_runtime_no_watchdog_is_spawned() {
        let (_dir, _sock, path) = listener();
        assert!(spawn_watchdog_to(path, Duration::from_millis(10), || true).is_none());
    }

    #[tokio::test]
    async fn watchdog_pings_only_while_healthy() {
        let (_dir, sock, path) = listener();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let task = spawn_watchdog_to(path, Duration::from_millis(20), move || {
            flag.load(Ordering::SeqCst)
        })
        .unwrap();
        let sock = tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(recv(&sock), "WATCHDOG=1");
            }
            sock
        })
        .await
        .unwrap();
        healthy.store(false, Ordering::SeqCst);
        // Let a ping that was already under way land, then expect silence.
        tokio::time::sleep(Duration::from_millis(50)).await;
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while sock.recv(&mut buf).is_ok() {}
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            sock.recv(&mut buf).is_err(),
            "pinged while the health check failed"
        );
        task.abort();
    }
}
