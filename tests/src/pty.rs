//! Real pseudo-terminal pairs for serial tests, made by `socat` (Debian package `socat`).
//!
//! `socat pty,link=A,raw,echo=0 pty,link=B,raw,echo=0` creates two PTYs whose traffic it
//! copies both ways; `A` and `B` are symlinks to the `/dev/pts/N` devices. leafd opens one
//! end as its serial device; the test opens the other and plays the device. Killing socat
//! removes both links and hangs up both ends: an unplug. Starting it again with the same
//! link names: a replug.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A socat PTY pair: `device` is for leafd, `peer` for the test. Killed on drop.
pub struct PtyPair {
    child: Option<Child>,
    dir: PathBuf,
    device: PathBuf,
    peer: PathBuf,
}

impl PtyPair {
    /// Starts a pair with links in a fresh temporary directory and waits (bounded) until
    /// both links exist.
    ///
    /// # Panics
    /// When socat is missing (`apt-get install -y socat`) or the links do not appear in 10 s.
    pub fn new() -> PtyPair {
        let dir = std::env::temp_dir().join(crate::unique("pty"));
        std::fs::create_dir_all(&dir).expect("create pty dir");
        let device = dir.join("ttyLEAF");
        let peer = dir.join("ttyDEV");
        let mut pair = PtyPair {
            child: None,
            dir,
            device,
            peer,
        };
        pair.plug();
        pair
    }

    /// The device path leafd opens.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The test's end.
    pub fn peer_path(&self) -> &Path {
        &self.peer
    }

    /// (Re)starts socat with the same link names: the device appears.
    ///
    /// # Panics
    /// As [`PtyPair::new`].
    pub fn plug(&mut self) {
        assert!(self.child.is_none(), "already plugged");
        let arg = |p: &Path| format!("pty,link={},raw,echo=0", p.display());
        let child = Command::new("socat")
            .arg(arg(&self.device))
            .arg(arg(&self.peer))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat not found: install it (`apt-get install -y socat`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.device.exists() && self.peer.exists()) {
            assert!(Instant::now() < deadline, "socat links did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills socat (by its PID) and waits until the links are gone: the device vanishes.
    pub fn unplug(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // socat removes its links on SIGTERM, not on SIGKILL: remove them ourselves.
        let _ = std::fs::remove_file(&self.device);
        let _ = std::fs::remove_file(&self.peer);
    }

    /// Opens the test's end for reading and writing (raw mode is set by socat).
    ///
    /// # Panics
    /// When the peer cannot be opened.
    pub fn open_peer(&self) -> PtyPeer {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.peer)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.peer.display()));
        PtyPeer { file }
    }
}

impl Default for PtyPair {
    fn default() -> Self {
        PtyPair::new()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.unplug();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test's end of a PTY pair: blocking reads with a bound, plain writes.
pub struct PtyPeer {
    file: std::fs::File,
}

impl PtyPeer {
    /// Writes all of `bytes`.
    ///
    /// # Panics
    /// On a write error.
    pub fn write(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).expect("write to pty");
        self.file.flush().expect("flush pty");
    }

    /// Reads what arrives within `limit` (at least one byte unless the time runs out).
    /// Returns an empty vector on timeout.
    pub fn read_within(&mut self, limit: Duration) -> Vec<u8> {
        let fd = self.file.as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return Vec::new();
        }
        let mut buf = vec![0u8; 4096];
        match self.file.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                buf
            }
            Err(_) => Vec::new(),
        }
    }

    /// Reads until at least `n` bytes arrived or `limit` passed (then fewer).
    pub fn read_exact_within(&mut self, n: usize, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            out.extend(self.read_within(left));
        }
        out
    }
}
