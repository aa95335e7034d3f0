//! What the interoperability tests share: a nats-server child process with a client port and a
//! second listener, and a raw connection with a read buffer.
//!
//! The tests need the `nats-server` binary (`$NATS_SERVER`, else `nats-server` on `PATH`, else
//! `/usr/sbin` or `/usr/bin`) and fail if it is missing. A server is killed (by its own handle)
//! when the test ends, panics included.

#![allow(dead_code)] // each test file uses part of it

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any expected event may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Finds the nats-server binary, or fails the test.
pub fn nats_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server is not installed (set NATS_SERVER or put it on PATH)")
}

/// A nats-server child process, killed and reaped on drop (panics included), with its
/// scratch directory.
pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    /// The client port.
    pub client_port: u16,
    /// The port of the second listener (leafnode or cluster).
    pub other_port: u16,
}

impl NatsServer {
    /// Starts nats-server with a client port and a second listener: `second(port)` is the
    /// configuration block that opens it (a `leafnodes` or `cluster` block, say).
    pub fn start(name: &str, second: impl Fn(u16) -> String) -> NatsServer {
        // Hold both listeners at once so the two ports differ; nats-server binds them right
        // after they are released.
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client_port = a.local_addr().expect("addr").port();
        let other_port = b.local_addr().expect("addr").port();
        drop((a, b));

        let dir = std::env::temp_dir().join(format!(
            "{name}-interop-{}-{client_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("server.conf");
        std::fs::write(
            &conf,
            format!("listen: 127.0.0.1:{client_port}\n{}\n", second(other_port)),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        let server = NatsServer {
            child,
            dir,
            client_port,
            other_port,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        for port in [self.client_port, self.other_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < TIMEOUT,
                    "nats-server did not listen on {port}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("nats-server log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection with a read buffer.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not consumed yet.
    pub buf: Vec<u8>,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads more bytes into the buffer; `false` on timeout. Panics at EOF.
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Client side: reads until the buffer contains `needle`, then drops everything up to and
    /// including it.
    pub fn wait_bytes(&mut self, needle: &[u8]) {
        let start = Instant::now();
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                self.buf.drain(..at + needle.len());
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.buf)
            );
            self.fill();
        }
    }
}

/// Checks that `bin` is a nats-server 2.x, and says which.
pub fn check_server_version(bin: &Path) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("nats-server --version");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("v2."),
        "unexpected nats-server version: {text}"
    );
    eprintln!("interop with {}", text.trim());
}
