//! End-to-end test harness: starts the real `leafd`, `hubd` and `nats-server` binaries and
//! talks to them with the real `async-nats` client and with raw sockets.
//!
//! The same behavioural test runs against all three servers (see [`server_tests!`]), so the
//! suite proves wire compatibility with nats-server rather than self-consistency.
//!
//! Layout:
//! - [`ServerKind`] and binary lookup ([`ServerKind::binary_path`]);
//! - [`TestServer`] / [`ServerBuilder`]: one server process on a free 127.0.0.1 port, with an
//!   optional config file, killed and reaped on drop, its output printed if the test panics;
//! - [`RawConn`]: a line-oriented raw protocol connection for wire-level assertions;
//! - small helpers for bounded waits ([`bounded`], [`next_msg`]), ordering barriers
//!   ([`barrier`], [`sync`]) and draining already-delivered messages ([`drain_ready`]).
//!
//! Every wait is bounded by [`WAIT`] unless a test passes its own bound.
//!
//! Note: async-nats 0.51's `Client::flush` only writes the client's socket buffer; it does
//! not wait for the server's `PONG`, so it does not make a subscription effective. Tests use
//! [`sync`] / [`barrier`] (a marker message round trip) instead.
//!
//! Run: `cargo build --bins && cargo test -p e2e` (or `scripts/test`); one server only:
//! `cargo test -p e2e leafd` / `hubd` / `nats_server`.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub use async_nats;
pub use serde_json;

/// The default bound for any single wait in a test (a message, a line, a connect).
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a server may take to accept a connection and send its `INFO` line.
const STARTUP: Duration = Duration::from_secs(10);

/// How long a server gets to exit after SIGTERM before it is sent SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many ports are tried when a freshly chosen port turns out to be taken.
const START_ATTEMPTS: usize = 5;

/// Ports handed out by this process, so two servers of one test binary never race for one.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A process-wide counter that makes temp directories and subjects unique.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which server implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// Our edge server, `leafd` (crate `leaf`).
    Leafd,
    /// Our hub server, `hubd` (crate `hub`).
    Hubd,
    /// The reference implementation, `nats-server` (found on `PATH`).
    NatsServer,
}

impl ServerKind {
    /// All three kinds, in the order tests are generated.
    pub const ALL: [ServerKind; 3] = [ServerKind::Leafd, ServerKind::Hubd, ServerKind::NatsServer];

    /// The executable's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            ServerKind::Leafd => "leafd",
            ServerKind::Hubd => "hubd",
            ServerKind::NatsServer => "nats-server",
        }
    }

    /// The config file name handed to `-c`: ours read JSON when the name ends in `.json`,
    /// nats-server reads the same JSON text as its `.conf` format.
    pub fn config_file_name(self) -> &'static str {
        match self {
            ServerKind::Leafd | ServerKind::Hubd => "server.json",
            ServerKind::NatsServer => "server.conf",
        }
    }

    /// Locates the executable.
    ///
    /// `leafd`/`hubd`: `$LEAF_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else
    /// `<workspace root>/target/debug`. `nats-server`: `$NATS_SERVER_BIN`, else `PATH`, else
    /// `/usr/sbin` and `/usr/bin` (where Debian installs it).
    ///
    /// # Panics
    /// When the binary does not exist: run `cargo build --bins` (ours) or install the
    /// `nats-server` package. A missing server is a test failure, never a skip.
    pub fn binary_path(self) -> PathBuf {
        match self {
            ServerKind::Leafd | ServerKind::Hubd => {
                let path = our_bin_dir().join(self.binary_name());
                assert!(
                    path.is_file(),
                    "{} not found at {}: run `cargo build --bins` first \
                     (or point LEAF_BIN_DIR at the directory holding it)",
                    self.binary_name(),
                    path.display()
                );
                path
            }
            ServerKind::NatsServer => find_nats_server().unwrap_or_else(|| {
                panic!(
                    "nats-server not found on PATH, /usr/sbin or /usr/bin: install it \
                     (`apt-get install -y nats-server`) or set NATS_SERVER_BIN"
                )
            }),
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

/// The directory holding our built binaries (see [`ServerKind::binary_path`]).
fn our_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LEAF_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("debug");
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("debug")
}

/// Finds `nats-server`: `$NATS_SERVER_BIN`, then each `PATH` entry, then Debian's locations.
fn find_nats_server() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(bin));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// Generates three `#[tokio::test]`s from each `async fn name(server: ServerKind)`.
///
/// `server_tests!(pub_sub, wildcards);` expands to modules `pub_sub` and `wildcards`, each with
/// tests `leafd`, `hubd` and `nats_server` (full names such as `pub_sub::leafd`), so
/// `cargo test leafd` or `cargo test nats_server` selects one server. The tests use the
/// multi-threaded runtime with 2 workers.
#[macro_export]
macro_rules! server_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn leafd() {
                    super::$name($crate::ServerKind::Leafd).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hubd() {
                    super::$name($crate::ServerKind::Hubd).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats_server() {
                    super::$name($crate::ServerKind::NatsServer).await
                }
            }
        )+
    };
}

/// Awaits `fut` for at most [`WAIT`].
///
/// # Panics
/// On timeout, naming `what` was being waited for.
pub async fn bounded<F: std::future::IntoFuture>(what: &str, fut: F) -> F::Output {
    bounded_for(WAIT, what, fut).await
}

/// Awaits `fut` for at most `limit`.
///
/// # Panics
/// On timeout, naming `what` was being waited for.
pub async fn bounded_for<F: std::future::IntoFuture>(
    limit: Duration,
    what: &str,
    fut: F,
) -> F::Output {
    match tokio::time::timeout(limit, fut.into_future()).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A subject (or other name) unique within this test process: `<prefix>.<n>.<random>`.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}.{n}.{}", fastrand::u32(..))
}

/// Builds a [`TestServer`]: a config file, extra command-line arguments.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    /// Which binary to start.
    kind: ServerKind,
    /// Config text written to [`ServerKind::config_file_name`] and passed with `-c`.
    config: Option<String>,
    /// Extra arguments after `-a 127.0.0.1 -p PORT [-c FILE]`.
    args: Vec<String>,
    /// A fixed client port (a restart on the same port); picked freely when `None`.
    port: Option<u16>,
    /// The address to listen on and connect to (default 127.0.0.1).
    host: String,
    /// A network namespace to run the server in (`ip netns exec`).
    netns: Option<String>,
    /// Environment variables set (`Some`) or removed (`None`) for the server.
    env: Vec<(String, Option<String>)>,
    /// The config is in nats-server's own format: written to `server.conf` for all three.
    nats_format: bool,
    /// More files written next to the config (`include`d ones), by name.
    files: Vec<(String, String)>,
}

impl ServerBuilder {
    /// Uses `config` (JSON text, e.g. a `serde_json::Value`) as the server's config file.
    /// The same text is given to all three servers.
    pub fn config(mut self, config: impl fmt::Display) -> Self {
        self.config = Some(config.to_string());
        self
    }

    /// Uses `text`, in nats-server's own configuration format, as the config file of any of
    /// the three servers (written to `server.conf`, which ours read in that format too).
    pub fn nats_conf(mut self, text: impl fmt::Display) -> Self {
        self.config = Some(text.to_string());
        self.nats_format = true;
        self
    }

    /// Writes `text` to file `name` next to the config file (e.g. one it `include`s).
    pub fn file(mut self, name: &str, text: impl fmt::Display) -> Self {
        self.files.push((name.to_string(), text.to_string()));
        self
    }

    /// Listens on `port` instead of a freshly picked one (to restart a server where its
    /// clients and leaves expect it). No retry on another port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs the server inside network namespace `netns`, listening on `host` (an address of
    /// that namespace reachable from the test's namespace).
    pub fn in_netns(mut self, netns: &str, host: &str) -> Self {
        self.netns = Some(netns.to_string());
        self.host = host.to_string();
        self
    }

    /// Sets (`Some`) or removes (`None`) an environment variable of the server's process.
    pub fn env(mut self, name: &str, value: Option<&str>) -> Self {
        self.env.push((name.to_string(), value.map(str::to_string)));
        self
    }

    /// Appends one command-line argument (e.g. `--user`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the server and waits (at most 10 s) until a TCP connect receives `INFO `.
    ///
    /// # Panics
    /// When the binary is missing, cannot be spawned, exits early on every port tried, or
    /// never becomes ready; the panic message includes the server's output.
    pub async fn start(self) -> TestServer {
        let binary = self.kind.binary_path();
        let dir = std::env::temp_dir().join(format!(
            "leaf-e2e-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        ));
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", dir.display()));
        for (name, text) in &self.files {
            let path = dir.join(name);
            fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        let config_name = if self.nats_format {
            "server.conf"
        } else {
            self.kind.config_file_name()
        };
        let config_path = self.config.as_ref().map(|text| {
            let path = dir.join(config_name);
            fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            path
        });
        let log_path = dir.join("server.log");

        let mut last_failure = String::new();
        let attempts = if self.port.is_some() {
            1
        } else {
            START_ATTEMPTS
        };
        for attempt in 1..=attempts {
            let port = self.port.unwrap_or_else(pick_port);
            let mut child = self.spawn(&binary, port, config_path.as_deref(), &log_path);
            match wait_ready(&mut child, &self.host, port).await {
                Ok(()) => {
                    return TestServer {
                        kind: self.kind,
                        config_name,
                        host: self.host.clone(),
                        port,
                        child: Some(child),
                        dir,
                        log_path,
                    };
                }
                Err(reason) => {
                    stop_child(&mut child);
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    last_failure = format!(
                        "attempt {attempt} on port {port}: {reason}\n---- {} output ----\n{log}",
                        self.kind
                    );
                    // Only an early exit (most likely a port conflict) is worth a retry.
                    if !reason.starts_with("exited") {
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!(
            "{} ({}) did not start: {last_failure}",
            self.kind,
            binary.display()
        );
    }

    /// Spawns the binary with its output appended to `log_path`.
    fn spawn(&self, binary: &Path, port: u16, config: Option<&Path>, log_path: &Path) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("-a")
            .arg(&self.host)
            .arg("-p")
            .arg(port.to_string());
        if let Some(config) = config {
            cmd.arg("-c").arg(config);
        }
        for (name, value) in &self.env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()))
    }
}

/// Publishes `payload` to `subject` through JetStream and waits (bounded) for the PubAck:
/// the stored sequence.
///
/// # Panics
/// When the publish is not acknowledged.
pub async fn js_publish(js: &async_nats::jetstream::Context, subject: &str, payload: &str) -> u64 {
    bounded(
        "publish ack",
        js.publish(subject.to_string(), bytes::Bytes::from(payload.to_string()))
            .await
            .expect("publish sent"),
    )
    .await
    .expect("publish acknowledged")
    .sequence
}

/// Sends a raw JetStream API request (`$JS.API.…`) with a JSON body and returns the JSON
/// answer.
///
/// # Panics
/// When no answer comes within [`WAIT`] or it is not JSON.
pub async fn js_api(
    client: &async_nats::Client,
    subject: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let reply = bounded(
        "api request",
        client.request(subject.to_string(), bytes::Bytes::from(body.to_string())),
    )
    .await
    .expect("api answer");
    serde_json::from_slice(&reply.payload).expect("json answer")
}

/// Runs `cmd` (a server that should exit at once: a bad configuration, `check-config`) to
/// completion with its output captured, within [`WAIT`].
///
/// # Panics
/// When it cannot be spawned, or is still running after [`WAIT`] (it is killed first).
pub fn run_command_to_exit(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect output");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("collect output");
    panic!(
        "{cmd:?} did not exit within {WAIT:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free port on 127.0.0.1 for a second listener (a leafnode port, say), never handed out
/// twice by this process (see [`pick_port`]).
pub fn free_port() -> u16 {
    pick_port()
}

/// Waits (bounded by [`WAIT`], polling) until `server`'s output contains `needle` at least
/// `times` times; returns the whole output.
///
/// # Panics
/// On timeout, with the output.
pub async fn wait_for_log(server: &TestServer, needle: &str, times: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = server.log();
        if log.matches(needle).count() >= times {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {times}x {needle:?} in the {} log:\n{log}",
            server.kind()
        );
        // Polling a log file: there is nothing to synchronise on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Chooses a port that is free now and was not handed out before by this process.
///
/// Ports come from 20000..32000, below Linux's ephemeral range, so outgoing client sockets
/// never occupy them.
fn pick_port() -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let port = fastrand::u16(20000..32000);
        if used.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
}

/// Waits until `port` answers a TCP connect with an `INFO ` line while `child` is alive.
///
/// Returns `Err("exited ...")` when the child exits first, `Err("not ready ...")` on timeout.
async fn wait_ready(child: &mut Child, host: &str, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {STARTUP:?}"));
        }
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect((host, port))).await
        {
            let mut line = String::new();
            let mut reader = BufReader::new(stream);
            let read =
                tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
            if matches!(read, Ok(Ok(n)) if n > 0) && line.starts_with("INFO ") {
                // Make sure it is our child that answered, not a stranger on the same port.
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited early with {status}"));
                }
                return Ok(());
            }
        }
        // Polling for readiness, not synchronising messages.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Stops `child`: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; always reaps it.
/// Returns the exit status, and whether the process exited by itself before SIGKILL.
fn stop_child(child: &mut Child) -> (Option<std::process::ExitStatus>, bool) {
    let mut graceful = true;
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: `kill` has no memory-safety preconditions. The pid is our own child,
            // which has not been reaped yet, so it cannot have been reused by another process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Ok(None) = child.try_wait() {
            graceful = false;
            let _ = child.kill();
        }
    }
    (child.wait().ok(), graceful)
}

/// A running server process on `127.0.0.1:<port>`.
///
/// Dropping it stops (SIGTERM, then SIGKILL) and reaps its own child process by PID, prints
/// the server's output if the thread is panicking (a failing test), and removes its temp
/// directory.
#[derive(Debug)]
pub struct TestServer {
    /// Which binary runs.
    kind: ServerKind,
    /// The config file's name in `dir`.
    config_name: &'static str,
    /// The address it listens on.
    host: String,
    /// The client port it listens on.
    port: u16,
    /// The child process; `None` only during drop.
    child: Option<Child>,
    /// Temp directory with the config file and the log.
    dir: PathBuf,
    /// File receiving the server's stdout and stderr.
    log_path: PathBuf,
}

impl TestServer {
    /// A builder for a server of `kind` (for config files and extra arguments).
    pub fn builder(kind: ServerKind) -> ServerBuilder {
        ServerBuilder {
            kind,
            config: None,
            args: Vec::new(),
            port: None,
            host: "127.0.0.1".to_string(),
            netns: None,
            env: Vec::new(),
            nats_format: false,
            files: Vec::new(),
        }
    }

    /// Starts a server of `kind` with default settings.
    pub async fn start(kind: ServerKind) -> TestServer {
        Self::builder(kind).start().await
    }

    /// Starts a server of `kind` with `config` (JSON text) as its config file.
    pub async fn with_config(kind: ServerKind, config: impl fmt::Display) -> TestServer {
        Self::builder(kind).config(config).start().await
    }

    /// Which implementation this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// `nats://<host>:<port>` (host 127.0.0.1 unless the server runs in a namespace).
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The config file the server was started with (`-c`), whether or not it had one.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(self.config_name)
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the server process.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: `kill` has no memory-safety preconditions; the pid is our own
                // unreaped child, so it cannot have been reused.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
        }
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Connect options used by [`TestServer::client`]: bounded connect and requests, and no
    /// discovered servers.
    pub fn options() -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .ignore_discovered_servers()
    }

    /// Connects an `async-nats` client with [`TestServer::options`].
    ///
    /// # Panics
    /// When the connection fails or takes longer than [`WAIT`].
    pub async fn client(&self) -> async_nats::Client {
        self.client_with(Self::options()).await
    }

    /// Connects an `async-nats` client with `options`.
    ///
    /// # Panics
    /// When the connection fails or takes longer than [`WAIT`].
    pub async fn client_with(&self, options: async_nats::ConnectOptions) -> async_nats::Client {
        match self.try_client_with(options).await {
            Ok(client) => client,
            Err(e) => panic!("{} client connect failed: {e}", self.kind),
        }
    }

    /// Tries to connect an `async-nats` client with `options` (bounded by [`WAIT`]).
    pub async fn try_client_with(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        bounded("async-nats connect", options.connect(self.url())).await
    }

    /// Opens a raw socket and reads the `INFO` line; sends nothing.
    pub async fn raw(&self) -> RawConn {
        RawConn::open(self.port).await
    }

    /// Opens a raw socket and completes a handshake: `CONNECT` (non-verbose, headers on),
    /// then `PING`, expecting `PONG`.
    pub async fn raw_connected(&self) -> RawConn {
        let mut conn = self.raw().await;
        conn.handshake(serde_json::json!({})).await;
        conn
    }
}

pub mod certs;
pub mod copy;
pub mod creds;
pub mod linearizable;
pub mod netns;
pub mod partition;
pub mod proxy;
pub mod pty;
pub mod uplink;

/// `GET http://127.0.0.1:<port><path>` (a server's monitoring port): the status code and the
/// body parsed as JSON (`Value::Null` when it is not JSON).
///
/// # Panics
/// When the port does not answer with an HTTP response within [`WAIT`].
pub async fn http_get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get_raw(port, path).await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The first remote in the `/leafz` of the leaf whose monitoring port is `port`.
pub async fn leafz_remote(port: u16) -> serde_json::Value {
    let (_, leafz) = http_get(port, "/leafz").await;
    leafz["remotes"][0].clone()
}

/// `GET path` on the monitoring port: the body of a 200 response as text (`/metrics`).
///
/// # Panics
/// On any other status, or as [`http_get`].
pub async fn http_get_text(port: u16, path: &str) -> String {
    let (code, body) = http_get_raw(port, path).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// `GET path` on the monitoring port: the status code and the body, within [`WAIT`].
async fn http_get_raw(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(&format!("GET {path} on port {port}"), async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("monitoring port {port}: {e}"));
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("monitoring port {port}: {e}"));
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .unwrap_or_else(|e| panic!("monitoring port {port}: {e}"));
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status code: {head}"));
        (code, body.to_owned())
    })
    .await
}

/// A fresh JetStream store directory under the system's temporary directory, removed when
/// dropped (after the server using it, so declare it before the server).
#[derive(Debug)]
pub struct StoreDir(PathBuf);

impl StoreDir {
    /// Creates an empty, uniquely named directory.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new() -> StoreDir {
        let dir = std::env::temp_dir().join(format!(
            "leaf-e2e-js-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create store dir {}: {e}", dir.display()));
        StoreDir(dir)
    }

    /// The directory, as a command-line argument.
    ///
    /// # Panics
    /// When the temporary directory's path is not UTF-8.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl TestServer {
    /// Starts a server of `kind` with JetStream on, storing in `dir` (`-js -sd DIR`, the same
    /// flags for all three servers).
    pub async fn start_jetstream(kind: ServerKind, dir: &StoreDir) -> TestServer {
        Self::builder(kind)
            .arg("-js")
            .arg("-sd")
            .arg(dir.path())
            .start()
            .await
    }

    /// Kills the process with SIGKILL (no chance to flush or say goodbye) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: `kill` has no memory-safety preconditions; the pid is our own
                // unreaped child, so it cannot have been reused.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }

    /// Waits (at most `limit`) for the process to exit by itself (it is reaped then): its exit
    /// status, or `None` when it still runs (or was stopped already).
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's temp directory (its config file and output; removed with it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit. Returns its exit status, or
    /// `None` when it had to be killed because it did not exit within the grace period.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        match stop_child(&mut child) {
            (status, true) => status,
            (_, false) => None,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} output (port {}, log {}) ----\n{}---- end of {} output ----",
                self.kind,
                self.port,
                self.log_path.display(),
                self.log(),
                self.kind
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One `MSG` or `HMSG` as read by [`RawConn::next_msg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg {
    /// The subject it was published to.
    pub subject: String,
    /// The subscription id it was delivered for.
    pub sid: String,
    /// The reply subject, if any.
    pub reply: Option<String>,
    /// The raw header block (`NATS/1.0\r\n...\r\n\r\n`) of an `HMSG`; `None` for `MSG`.
    pub headers: Option<Vec<u8>>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What [`RawConn::until_pong`] read.
#[derive(Debug, Default)]
pub struct UntilPong {
    /// The lines before the `PONG` (or before the end of the connection).
    pub lines: Vec<String>,
    /// The server closed the connection before it answered the `PING`.
    pub closed: bool,
}

/// A raw protocol connection for wire-level assertions. Lines are returned without `\r\n`.
#[derive(Debug)]
pub struct RawConn {
    /// Buffered read half.
    reader: BufReader<OwnedReadHalf>,
    /// Write half; every send is flushed.
    writer: OwnedWriteHalf,
    /// The server's `INFO` JSON.
    info: serde_json::Value,
}

impl RawConn {
    /// Connects to `127.0.0.1:<port>` and reads the `INFO` line.
    ///
    /// # Panics
    /// When the connect fails or the first line is not a valid `INFO`.
    pub async fn open(port: u16) -> RawConn {
        let stream = bounded("raw connect", TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|e| panic!("raw connect to port {port} failed: {e}"));
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let mut conn = RawConn {
            reader: BufReader::new(read),
            writer,
            info: serde_json::Value::Null,
        };
        let line = conn
            .next_line()
            .await
            .unwrap_or_else(|| panic!("connection closed before INFO"));
        let json = line
            .strip_prefix("INFO ")
            .unwrap_or_else(|| panic!("first line is not INFO: {line:?}"));
        conn.info = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("INFO is not valid JSON ({e}): {json}"));
        conn
    }

    /// The server's `INFO` JSON.
    pub fn info(&self) -> &serde_json::Value {
        &self.info
    }

    /// Writes and flushes `data`.
    ///
    /// # Panics
    /// When the write fails (e.g. the server closed the connection) or blocks past [`WAIT`].
    pub async fn send(&mut self, data: impl AsRef<[u8]>) {
        if let Err(e) = self.try_send(data).await {
            panic!("raw write failed: {e}");
        }
    }

    /// Writes and flushes `data`, reporting write errors (bounded by [`WAIT`]).
    pub async fn try_send(&mut self, data: impl AsRef<[u8]>) -> std::io::Result<()> {
        let data = data.as_ref();
        bounded("raw write", async {
            self.writer.write_all(data).await?;
            self.writer.flush().await
        })
        .await
    }

    /// Sends `CONNECT` with `{"verbose":false,"pedantic":false,"headers":true,
    /// "no_responders":true,"protocol":1,...}` merged with the fields of `extra` (e.g. `user`).
    pub async fn send_connect(&mut self, extra: serde_json::Value) {
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": false,
            "headers": true,
            "no_responders": true,
            "protocol": 1,
            "lang": "raw",
            "version": "0.0.0",
            "name": "e2e-raw",
        });
        if let (Some(base), serde_json::Value::Object(extra)) = (connect.as_object_mut(), extra) {
            base.extend(extra);
        }
        self.send(format!("CONNECT {connect}\r\n")).await;
    }

    /// [`RawConn::send_connect`] then [`RawConn::ping`].
    pub async fn handshake(&mut self, extra: serde_json::Value) {
        self.send_connect(extra).await;
        self.ping().await;
    }

    /// Reads one line, waiting at most [`WAIT`]; `None` on EOF or a connection reset.
    ///
    /// # Panics
    /// On timeout.
    pub async fn next_line(&mut self) -> Option<String> {
        match self.next_line_within(WAIT).await {
            Ok(line) => line,
            Err(_) => panic!("timed out after {WAIT:?} waiting for a line from the server"),
        }
    }

    /// Reads one line, waiting at most `limit`: `Ok(None)` on EOF or reset, `Err` on timeout.
    pub async fn next_line_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<String>, tokio::time::error::Elapsed> {
        tokio::time::timeout(limit, async {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    Some(String::from_utf8_lossy(&buf).into_owned())
                }
            }
        })
        .await
    }

    /// Reads one line and asserts it equals `expected`.
    ///
    /// # Panics
    /// On a different line, EOF or timeout.
    pub async fn expect_line(&mut self, expected: &str) {
        let line = self.next_line().await;
        assert_eq!(
            line.as_deref(),
            Some(expected),
            "unexpected line from server"
        );
    }

    /// Sends `PING` and reads until `PONG`, answering server `PING`s.
    ///
    /// # Panics
    /// On any other line (an `-ERR`, a message), EOF or timeout.
    pub async fn ping(&mut self) {
        self.send("PING\r\n").await;
        loop {
            match self.next_line().await.as_deref() {
                Some("PONG") => return,
                Some("PING") => self.send("PONG\r\n").await,
                Some(other) => panic!("expected PONG, got {other:?}"),
                None => panic!("expected PONG, got EOF"),
            }
        }
    }

    /// Sends `PING` and reads up to the `PONG`, answering server `PING`s: the other lines,
    /// and whether the server closed the connection first (then no `PONG` came).
    pub async fn until_pong(&mut self) -> UntilPong {
        let mut read = UntilPong::default();
        if self.try_send("PING\r\n").await.is_err() {
            read.closed = true;
            return read;
        }
        loop {
            match self.next_line().await {
                Some(line) if line == "PONG" => return read,
                Some(line) if line == "PING" => {
                    let _ = self.try_send("PONG\r\n").await;
                }
                Some(line) => read.lines.push(line),
                None => {
                    read.closed = true;
                    return read;
                }
            }
        }
    }

    /// Reads the next `MSG`/`HMSG` with its payload, answering server `PING`s.
    ///
    /// # Panics
    /// On any other line, a malformed header line, EOF or timeout.
    pub async fn next_msg(&mut self) -> RawMsg {
        loop {
            let line = self
                .next_line()
                .await
                .unwrap_or_else(|| panic!("expected MSG, got EOF"));
            if line == "PING" {
                self.send("PONG\r\n").await;
                continue;
            }
            return self.read_msg_body(&line).await;
        }
    }

    /// Parses a `MSG`/`HMSG` line and reads its body.
    async fn read_msg_body(&mut self, line: &str) -> RawMsg {
        let parts: Vec<&str> = line.split(' ').collect();
        let parse = |s: &str| -> usize {
            s.parse()
                .unwrap_or_else(|_| panic!("bad size {s:?} in {line:?}"))
        };
        let (subject, sid, reply, header_len, total_len) = match parts.as_slice() {
            ["MSG", subject, sid, len] => (*subject, *sid, None, None, parse(len)),
            ["MSG", subject, sid, reply, len] => (*subject, *sid, Some(*reply), None, parse(len)),
            ["HMSG", subject, sid, hlen, len] => {
                (*subject, *sid, None, Some(parse(hlen)), parse(len))
            }
            ["HMSG", subject, sid, reply, hlen, len] => {
                (*subject, *sid, Some(*reply), Some(parse(hlen)), parse(len))
            }
            _ => panic!("expected MSG or HMSG, got {line:?}"),
        };
        let mut body = vec![0u8; total_len + 2];
        bounded("message body", self.reader.read_exact(&mut body))
            .await
            .unwrap_or_else(|e| panic!("reading body of {line:?}: {e}"));
        assert_eq!(
            body.split_off(total_len),
            b"\r\n",
            "payload of {line:?} not followed by CRLF"
        );
        let headers = header_len.map(|h| {
            assert!(h <= total_len, "header size > total size in {line:?}");
            let payload = body.split_off(h);
            std::mem::replace(&mut body, payload)
        });
        RawMsg {
            subject: subject.to_owned(),
            sid: sid.to_owned(),
            reply: reply.map(str::to_owned),
            headers,
            payload: body,
        }
    }

    /// Reads lines until the server closes the connection, within `limit`; returns them.
    ///
    /// # Panics
    /// When the connection is still open after `limit`.
    pub async fn expect_closed_within(&mut self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_line_within(left).await {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => return lines,
                Err(_) => {
                    panic!("connection still open after {limit:?}; lines received: {lines:?}")
                }
            }
        }
    }
}

/// The next message of `sub`, waiting at most [`WAIT`].
///
/// # Panics
/// On timeout or when the subscription ended.
pub async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    bounded("a message", sub.next())
        .await
        .unwrap_or_else(|| panic!("subscription ended while waiting for a message"))
}

/// Every message already delivered to `sub` and waiting in its queue, without waiting.
///
/// Use after [`barrier`] to assert that nothing more than expected arrived. Polling runs
/// outside tokio's cooperative budget, which would otherwise report "not ready" after about
/// 128 messages even though more are queued.
pub async fn drain_ready(sub: &mut async_nats::Subscriber) -> Vec<async_nats::Message> {
    tokio::task::unconstrained(async {
        let mut out = Vec::new();
        while let Some(Some(msg)) = sub.next().now_or_never() {
            out.push(msg);
        }
        out
    })
    .await
}

/// An ordering barrier between two clients, on a fresh subject.
///
/// See [`barrier_on`]. `publisher` and `subscriber` may be the same client unless it was
/// connected with `no_echo`.
///
/// # Panics
/// When any step fails or takes longer than [`WAIT`].
pub async fn barrier(publisher: &async_nats::Client, subscriber: &async_nats::Client) {
    barrier_on(publisher, subscriber, &unique("barrier")).await;
}

/// An ordering barrier between two clients, using `subject` (which must be fresh and
/// allowed: `subscriber` subscribes to it, `publisher` publishes to it).
///
/// `subscriber` subscribes to `subject`, then `publisher` publishes a marker there until
/// one arrives (a marker can be lost only if it overtakes the `SUB`; each wait is short and
/// the whole barrier is bounded by [`WAIT`]). When this returns:
/// - the server has processed everything `subscriber` sent before the call (its `SUB` for
///   the marker was processed, and one connection's operations are processed in order);
/// - every message `publisher` published before the call that routes to `subscriber` is
///   already queued in its subscriptions, because NATS keeps one publisher's messages in
///   order towards one subscriber connection and async-nats hands them to subscriptions in
///   order (see [`drain_ready`]).
///
/// This replaces `Client::flush`, which in async-nats 0.51 only writes the socket buffer and
/// does not wait for the server's `PONG`.
///
/// # Panics
/// When any step fails or takes longer than [`WAIT`].
pub async fn barrier_on(
    publisher: &async_nats::Client,
    subscriber: &async_nats::Client,
    subject: &str,
) {
    let mut sub = bounded(
        "barrier subscribe",
        subscriber.subscribe(subject.to_owned()),
    )
    .await
    .unwrap_or_else(|e| panic!("barrier subscribe to {subject} failed: {e}"));
    bounded("barrier marker", async {
        loop {
            publisher
                .publish(subject.to_owned(), "barrier".into())
                .await
                .unwrap_or_else(|e| panic!("barrier publish to {subject} failed: {e}"));
            match tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
                Ok(Some(_)) => return,
                Ok(None) => panic!("barrier subscription to {subject} ended"),
                Err(_) => {}
            }
        }
    })
    .await;
}

/// Makes sure the server has processed everything `client` sent so far (subscriptions in
/// particular): a [`barrier`] from `client` to itself. Not for `no_echo` clients: use
/// [`barrier`] with another client as publisher.
///
/// # Panics
/// When any step fails or takes longer than [`WAIT`].
pub async fn sync(client: &async_nats::Client) {
    barrier(client, client).await;
}

/// Publishes probes on `subject` from `publisher` until one reaches `sub` (interest crossed a
/// leafnode link: it propagates asynchronously), then an end marker, reading up to it so no
/// probe is left in flight. Plain (non-queue) subscriptions only.
pub async fn await_interest(
    publisher: &async_nats::Client,
    subject: &str,
    sub: &mut async_nats::Subscriber,
) {
    bounded(&format!("interest in {subject} across the link"), async {
        loop {
            publisher
                .publish(subject.to_owned(), "probe".into())
                .await
                .expect("publish a probe");
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                return;
            }
        }
    })
    .await;
    publisher
        .publish(subject.to_owned(), "end-probe".into())
        .await
        .expect("publish the end marker");
    while &next_msg(sub).await.payload[..] != b"end-probe" {}
}

/// 20 messages each way between a hub client `hc` and a leaf client `lc`, each direction on
/// its own fresh subject, received in order.
pub async fn pub_sub_both_ways(hc: &async_nats::Client, lc: &async_nats::Client) {
    for (name, publisher, subscriber) in [("l2h", lc, hc), ("h2l", hc, lc)] {
        let subject = unique(name);
        let mut sub = subscriber
            .subscribe(subject.clone())
            .await
            .expect("subscribe");
        await_interest(publisher, &subject, &mut sub).await;
        for i in 0..20 {
            publisher
                .publish(subject.clone(), format!("m{i}").into())
                .await
                .expect("publish");
        }
        for i in 0..20 {
            let msg = next_msg(&mut sub).await;
            assert_eq!(
                msg.payload,
                format!("m{i}").as_bytes(),
                "{name} message {i}"
            );
        }
    }
}

/// Runs `kind` with `config` (written into `dir`) and waits (bounded) for it to exit: whether
/// it exited successfully, and its output. For servers expected to refuse their config.
pub fn run_to_exit(kind: ServerKind, dir: &Path, config: &serde_json::Value) -> (bool, String) {
    let path = dir.join(format!("{}.json", unique("config")));
    std::fs::write(&path, config.to_string()).expect("run_to_exit");
    let out = dir.join(format!("{}.log", unique("out")));
    let log = std::fs::File::create(&out).expect("run_to_exit");
    let mut child = Command::new(kind.binary_path())
        .arg("-a")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(free_port().to_string())
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("run_to_exit")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("run_to_exit");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("run_to_exit") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("{kind} did not exit: {output}"));
    (status.success(), output)
}
