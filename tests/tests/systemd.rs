//! leafd as a systemd service: the unit file (`leaf/systemd/leafd.service`) passes
//! `systemd-analyze verify`, `scripts/install` installs and removes it under a `--root`, and the
//! `leafd` binary speaks the notify protocol (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) to a
//! `$NOTIFY_SOCKET` the test binds, as systemd would.
//!
//! No systemd is needed (nor running) for any of this: `systemd-analyze verify` only reads
//! files, the install script is only run with `--root`, and the notification socket is an
//! ordinary Unix datagram socket.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{bounded, bounded_for, free_port, ServerKind, WAIT};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixDatagram};

/// Where `systemd-analyze` is installed (Debian's `systemd` package).
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// The binary path the unit file names in `ExecStart=`.
const UNIT_BINARY: &str = "/usr/local/bin/leafd";

/// The workspace root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "leaf-e2e-systemd-{what}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `systemd-analyze verify` on `unit` (which must sit in a directory of its own: verify
/// also reads the `<unit>.d/` drop-ins next to it) and asserts it passes without a warning.
///
/// verify checks that `ExecStart=`'s program exists, and the unit names the installed path
/// `/usr/local/bin/leafd`, which does not exist on a build machine. So the unit is verified as
/// a copy in `dir` whose `ExecStart=` names the freshly built binary instead; every other line
/// (the hardening, the device rules, `ExecReload=/bin/kill`) is verified as written.
fn verify_unit(unit_text: &str, dir: &Path) {
    verify_unit_of(ServerKind::Leafd, unit_text, dir)
}

/// [`verify_unit`] for the unit of `kind` (leafd or hubd), which starts
/// `/usr/local/bin/<kind>`.
fn verify_unit_of(kind: ServerKind, unit_text: &str, dir: &Path) {
    let binary = kind.binary_path();
    let unit_binary = format!("/usr/local/bin/{}", kind.binary_name());
    let from = format!("ExecStart={unit_binary} ");
    assert!(
        unit_text.lines().any(|l| l.starts_with(&from)),
        "the unit should start {unit_binary}:\n{unit_text}"
    );
    let copy = unit_text.replace(&from, &format!("ExecStart={} ", binary.display()));
    let path = dir.join(format!("{}.service", kind.binary_name()));
    fs::write(&path, copy).expect("write the unit copy");
    let out = Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SYSTEMD_ANALYZE} (install systemd): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown keys and bad values are warnings, not failures: none are allowed either.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let text = fs::read_to_string(repo().join("leaf/systemd/leafd.service"))
        .expect("leaf/systemd/leafd.service");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/leafd -c /etc/leafd/leafd.toml",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "StateDirectory=leafd",
        "User=leafd",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        // Resource limits a 512 MB - 1 GB board lives with (issue 16).
        "MemoryHigh=192M",
        "MemoryMax=256M",
        "TasksMax=128",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    // The limits are documented where an operator looks, with the values the unit has.
    let readme = fs::read_to_string(repo().join("README.md")).expect("README.md");
    for limit in ["MemoryHigh=192M", "MemoryMax=256M", "TasksMax=128"] {
        assert!(
            readme.contains(limit),
            "README.md does not document {limit}"
        );
    }
    let dir = TempDir::new("verify");
    verify_unit(&text, dir.path());
}

/// hubd's unit (what its Debian package installs, with `/usr/bin/hubd`): reload on SIGHUP,
/// lame duck mode documented (`systemctl kill -s USR2`), sandboxed, and it passes
/// `systemd-analyze verify`.
#[test]
fn hubd_unit_file_passes_systemd_analyze_verify() {
    let text = fs::read_to_string(repo().join("hub/systemd/hubd.service"))
        .expect("hub/systemd/hubd.service");
    for line in [
        "ExecStart=/usr/local/bin/hubd -c /etc/hubd/hubd.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "#   systemctl kill -s USR2 --kill-whom=main hubd",
        "Restart=on-failure",
        "StateDirectory=hubd",
        "User=hubd",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    let leafd = fs::read_to_string(repo().join("leaf/systemd/leafd.service")).unwrap();
    assert!(leafd
        .lines()
        .any(|l| l == "#   systemctl kill -s USR2 --kill-whom=main leafd"));
    let dir = TempDir::new("verify-hubd");
    verify_unit_of(ServerKind::Hubd, &text, dir.path());
}

/// Runs `scripts/install` with `args`, to completion.
fn install(args: &[&str]) -> Output {
    Command::new(repo().join("scripts/install"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/install")
}

/// Runs `scripts/install` with `args` and asserts it succeeds.
fn install_ok(args: &[&str]) -> String {
    let out = install(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/install {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file under `root`, relative to it, with its permission bits and size.
fn tree(root: &Path) -> Vec<(String, u32, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32, u64)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            out.push((rel, meta.permissions().mode() & 0o7777, meta.len()));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The quoted values of every `password = "..."` and `token = "..."` on `text`'s lines.
fn secrets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        for key in ["password = \"", "token = \""] {
            let mut rest = line;
            while let Some(at) = rest.find(key) {
                rest = &rest[at + key.len()..];
                let end = rest.find('"').expect("closing quote");
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

/// The installed configuration is the example with every placeholder secret replaced by a
/// distinct random one (24 base64url characters), and it passes `leafd check-config`.
fn assert_installed_config(config: &Path) {
    let example = fs::read_to_string(repo().join("leaf/leafd.example.toml")).unwrap();
    let installed = fs::read_to_string(config).unwrap();
    let placeholders = secrets(&example);
    let generated = secrets(&installed);
    assert!(placeholders.len() >= 4, "{placeholders:?}");
    assert_eq!(generated.len(), placeholders.len());
    let mut restored = installed.clone();
    for (g, p) in generated.iter().zip(&placeholders) {
        assert_eq!(g.len(), 24, "{g}");
        assert!(g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        restored = restored.replacen(g.as_str(), p, 1);
    }
    assert_eq!(
        restored, example,
        "only the secrets differ from the example"
    );
    let distinct: std::collections::HashSet<&String> = generated.iter().collect();
    assert_eq!(distinct.len(), generated.len(), "{generated:?}");
    assert!(
        !installed.contains("change-me") && !installed.contains("s3cr"),
        "{installed}"
    );
    let out = Command::new(ServerKind::Leafd.binary_path())
        .arg("check-config")
        .arg(config)
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_script_installs_idempotently_and_uninstalls() {
    let root = TempDir::new("install");
    let r = root.path();
    let root_arg = r.to_str().expect("utf-8 temp dir");
    let binary = ServerKind::Leafd.binary_path();
    let binary_arg = binary.to_str().expect("utf-8 binary path");

    // A missing binary is a clear error, and nothing is installed.
    let out = install(&["--root", root_arg, "--binary", "/nonexistent/leafd"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/leafd"), "{stderr}");
    assert!(!r.join("usr/local/bin/leafd").exists());

    install_ok(&["--root", root_arg, "--binary", binary_arg]);
    let bin = r.join("usr/local/bin/leafd");
    let unit = r.join("etc/systemd/system/leafd.service");
    let config = r.join("etc/leafd/leafd.toml");
    let state = r.join("var/lib/leafd");
    assert_eq!(fs::read(&bin).unwrap(), fs::read(&binary).unwrap());
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_to_string(&unit).unwrap(),
        fs::read_to_string(repo().join("leaf/systemd/leafd.service")).unwrap()
    );
    assert_installed_config(&config);
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(state.is_dir());
    // No gpio group in the (empty) target system: no gpio drop-in.
    assert!(!r.join("etc/systemd/system/leafd.service.d").exists());

    // Idempotent: a second run changes nothing.
    let before = tree(r);
    install_ok(&["--root", root_arg, "--binary", binary_arg]);
    assert_eq!(tree(r), before);

    // A user's configuration is never overwritten.
    fs::write(&config, "port = 4333\n").unwrap();
    let stdout = install_ok(&["--root", root_arg, "--binary", binary_arg]);
    assert!(stdout.contains("kept the existing"), "{stdout}");
    assert_eq!(fs::read_to_string(&config).unwrap(), "port = 4333\n");

    // Uninstall removes the binary and the unit, keeps the configuration and the store.
    fs::write(state.join("stream.redb"), "data").unwrap();
    install_ok(&["--root", root_arg, "--uninstall"]);
    assert!(!bin.exists());
    assert!(!unit.exists());
    assert_eq!(fs::read_to_string(&config).unwrap(), "port = 4333\n");
    assert!(state.join("stream.redb").exists());
    // Uninstalling again is fine.
    install_ok(&["--root", root_arg, "--uninstall"]);

    // --purge removes the configuration and the store too.
    install_ok(&["--root", root_arg, "--uninstall", "--purge"]);
    assert!(!r.join("etc/leafd").exists());
    assert!(!state.exists());
}

#[test]
fn install_script_follows_prefix_and_adds_gpio_where_the_group_exists() {
    let root = TempDir::new("install-gpio");
    let r = root.path();
    let root_arg = r.to_str().expect("utf-8 temp dir");
    let binary = ServerKind::Leafd.binary_path();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::write(r.join("etc/group"), "dialout:x:20:\ngpio:x:997:\n").unwrap();

    install_ok(&[
        "--root",
        root_arg,
        "--prefix",
        "/opt/leaf",
        "--binary",
        binary.to_str().expect("utf-8 binary path"),
    ]);
    assert!(r.join("opt/leaf/bin/leafd").is_file());
    let unit = fs::read_to_string(r.join("etc/systemd/system/leafd.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/opt/leaf/bin/leafd -c /etc/leafd/leafd.toml"),
        "{unit}"
    );
    let dropin = r.join("etc/systemd/system/leafd.service.d/10-gpio.conf");
    let dropin_text = fs::read_to_string(&dropin).expect("the gpio drop-in");
    assert!(
        dropin_text.lines().any(|l| l == "SupplementaryGroups=gpio"),
        "{dropin_text}"
    );

    // The installed unit and its drop-in verify together (drop-ins are read from the
    // `leafd.service.d` directory next to the unit).
    let verify = TempDir::new("verify-installed");
    let verify_dropins = verify.path().join("leafd.service.d");
    fs::create_dir_all(&verify_dropins).unwrap();
    fs::copy(&dropin, verify_dropins.join("10-gpio.conf")).unwrap();
    verify_unit(
        &unit.replace(
            "ExecStart=/opt/leaf/bin/leafd ",
            &format!("ExecStart={UNIT_BINARY} "),
        ),
        verify.path(),
    );

    // Without --prefix, uninstall removes the binary the installed unit runs.
    install_ok(&["--root", root_arg, "--uninstall"]);
    assert!(!r.join("opt/leaf/bin/leafd").exists());
    assert!(!dropin.exists());
    assert!(!r.join("etc/systemd/system/leafd.service").exists());
}

/// A leafd process started with a systemd-like environment; killed and reaped on drop.
struct Leafd {
    child: Child,
    log: PathBuf,
}

impl Leafd {
    /// Starts leafd on 127.0.0.1:`port` with `env` added to its environment (and
    /// `$WATCHDOG_PID` removed, so a watchdog request applies to it).
    fn spawn(port: u16, env: &[(&str, &OsStr)], dir: &Path) -> Leafd {
        let log = dir.join("leafd.log");
        let out = fs::File::create(&log).expect("create the log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(ServerKind::Leafd.binary_path());
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("spawn leafd");
        Leafd { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a valid signal number on our own child's pid.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits (bounded by `WAIT`) for the process to exit.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "leafd did not exit within {WAIT:?}:\n{}",
                self.log()
            );
            // Polling a child process: std offers nothing to await.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Leafd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- leafd output ----\n{}", self.log());
        }
    }
}

/// Receives one notification datagram as text.
async fn next_notification(sock: &UnixDatagram, what: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let n = bounded(what, sock.recv(&mut buf))
        .await
        .expect("recv on the notify socket");
    String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned()
}

/// Whether a notification holds the assignment `line` (e.g. `READY=1`).
fn has(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

/// Connects to the client port once (no retry) and reads the `INFO` line's start.
async fn connect_once(port: u16) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut head = [0u8; 5];
    bounded("the INFO line", stream.read_exact(&mut head))
        .await
        .map_err(|e| format!("read INFO: {e}"))?;
    if &head == b"INFO " {
        Ok(())
    } else {
        Err(format!("expected INFO, got {head:?}"))
    }
}

/// leafd tells systemd it is ready only once clients can connect, pings the watchdog at half
/// `$WATCHDOG_USEC`, and says it is stopping on SIGTERM.
///
/// Needs leafd's `app.rs` to call `leaf::systemd::{ready, spawn_watchdog, stopping}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_notifies_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let port = free_port();
    // A 400 ms watchdog timeout: leafd should ping every 200 ms.
    let mut leafd = Leafd::spawn(
        port,
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("400000")),
        ],
        dir.path(),
    );

    // READY=1 comes first (a STATUS= may come before it), and when it comes the client port
    // already accepts: one connect, no retry.
    let ready = loop {
        let msg = next_notification(&sock, "READY=1").await;
        assert!(
            !has(&msg, "WATCHDOG=1") && !has(&msg, "STOPPING=1"),
            "{msg:?} before READY=1"
        );
        if has(&msg, "READY=1") {
            break msg;
        }
    };
    if let Err(e) = connect_once(port).await {
        panic!("READY=1 ({ready:?}) sent before clients can connect: {e}");
    }

    // Watchdog pings, about every 200 ms.
    let mut first = None;
    let mut pings = 0;
    while pings < 5 {
        let msg = next_notification(&sock, "WATCHDOG=1").await;
        if has(&msg, "WATCHDOG=1") {
            pings += 1;
            first.get_or_insert_with(Instant::now);
        }
    }
    let elapsed = first.map(|t| t.elapsed()).unwrap_or_default();
    // 4 intervals of 200 ms after the first ping; generous slack for a loaded machine.
    assert!(
        elapsed >= Duration::from_millis(600),
        "5 watchdog pings in {elapsed:?}: faster than every 200 ms"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    leafd.sigterm();
    bounded_for(WAIT, "STOPPING=1", async {
        loop {
            let msg = next_notification(&sock, "STOPPING=1").await;
            if has(&msg, "STOPPING=1") {
                break;
            }
        }
    })
    .await;
    let status = leafd.wait_exit().await;
    assert!(status.success(), "leafd exited with {status}");
}

/// A notification socket nobody listens on (or none at all) does not stop leafd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_runs_when_the_notify_socket_is_missing() {
    let dir = TempDir::new("notify-missing");
    let port = free_port();
    let missing = dir.path().join("nobody-listens.sock");
    let mut leafd = Leafd::spawn(
        port,
        &[
            ("NOTIFY_SOCKET", missing.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("400000")),
        ],
        dir.path(),
    );
    let deadline = Instant::now() + WAIT;
    while let Err(e) = connect_once(port).await {
        assert!(
            Instant::now() < deadline,
            "leafd never accepted a client: {e}"
        );
        assert!(
            leafd.child.try_wait().expect("try_wait").is_none(),
            "leafd exited"
        );
        // Waiting for a process to bind: there is nothing to synchronise on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long enough for several failed watchdog pings.
    tokio::time::sleep(Duration::from_millis(500)).await;
    connect_once(port).await.expect("still serving");
    leafd.sigterm();
    let status = leafd.wait_exit().await;
    assert!(status.success(), "leafd exited with {status}");
}
