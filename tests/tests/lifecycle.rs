//! Process-level behaviour of our binaries: graceful shutdown, configuration errors that name
//! the key and the line, flags for features that do not exist yet, `check-config`; and the slow
//! consumer limit, which runs against nats-server too.

use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use e2e::{bounded, next_msg, serde_json::json, server_tests, sync, ServerKind, TestServer};

server_tests!(slow_consumer_is_disconnected);

/// Runs one of our binaries with `args` to completion (they all exit at once here).
fn run(kind: ServerKind, args: &[&str]) -> Output {
    e2e::run_command_to_exit(Command::new(kind.binary_path()).args(args))
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "leaf-e2e-lifecycle-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// SIGTERM: the server stops accepting, delivers what it has, closes the clients and exits 0.
async fn sigterm_exits_cleanly(kind: ServerKind) {
    let mut server = TestServer::start(kind).await;
    let client = server.client().await;
    let mut sub = client.subscribe("bye").await.unwrap();
    sync(&client).await;
    let mut raw = server.raw_connected().await;
    for i in 0..100 {
        raw.send(format!("PUB bye {}\r\n{i:03}\r\n", 3)).await;
    }
    raw.ping().await;
    for i in 0..100 {
        let msg = next_msg(&mut sub).await;
        assert_eq!(msg.payload, Bytes::from(format!("{i:03}")));
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    let status = status.unwrap_or_else(|| panic!("{kind} did not exit after SIGTERM"));
    assert!(
        status.success(),
        "{kind} exited with {status}: {}",
        server.log()
    );
    // The raw client sees its connection closed.
    raw.expect_closed_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_leafd() {
    sigterm_exits_cleanly(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_hubd() {
    sigterm_exits_cleanly(ServerKind::Hubd).await;
}

#[test]
fn bad_toml_config_names_key_and_line() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let path = temp_file(
            "bad.toml",
            "host = \"127.0.0.1\"\nport = 4222\nmax_paylod = 10\n",
        );
        let out = run(kind, &["-c", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind}: {stderr}");
        assert!(
            stderr.contains(":3:"),
            "{kind} should name line 3: {stderr}"
        );
        assert!(
            stderr.contains("max_paylod"),
            "{kind} should name the key: {stderr}"
        );

        let path = temp_file(
            "bad.toml",
            "[authorization]\nusers = [\n  { user = \"a\", password = 5 },\n]\n",
        );
        let out = run(kind, &["-c", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind}: {stderr}");
        assert!(
            stderr.contains(":3:"),
            "{kind} should name line 3: {stderr}"
        );
        assert!(
            stderr.contains("authorization.users[0].password"),
            "{kind} should name the key path: {stderr}"
        );
    }
}

/// hubd has no uplinks or gateways: their keys are refused by name and line, at startup and
/// by `check-config`, rather than read and ignored.
#[test]
fn hubd_refuses_the_gateway_and_uplink_keys() {
    let cases = [
        (
            "port = 4222\n[[serial]]\nname = \"p\"\n",
            ":2: serial: a leafd setting",
        ),
        ("board = \"rpi4\"\n", ":1: board: a leafd setting"),
        ("[[modbus]]\nname = \"m\"\n", ":1: modbus: a leafd setting"),
        ("[[gpio]]\nname = \"g\"\n", ":1: gpio: a leafd setting"),
        (
            "jetstream = true\n\n[[uplinks]]\nname = \"u\"\n",
            ":3: uplinks: a leafd setting",
        ),
    ];
    for (text, want) in cases {
        let path = temp_file("hub.toml", text);
        for args in [
            vec!["-c", path.to_str().unwrap()],
            vec!["check-config", path.to_str().unwrap()],
        ] {
            let out = run(ServerKind::Hubd, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
        }
    }
}

#[test]
fn bad_json_config_names_key_and_line() {
    let path = temp_file(
        "bad.json",
        "{\n  \"port\": 4222,\n  \"ping_max\": \"x\"\n}\n",
    );
    let out = run(ServerKind::Leafd, &["-c", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":3:"), "should name line 3: {stderr}");
    assert!(stderr.contains("ping_max"), "should name the key: {stderr}");
}

#[test]
fn bad_flag_is_refused() {
    let out = run(ServerKind::Leafd, &["--port", "notaport"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--port"), "{stderr}");
}

#[test]
fn check_config_validates_without_starting() {
    let good = temp_file(
        "good.toml",
        "port = 4333\n[authorization]\ntoken = \"s3cret\"\n",
    );
    let out = run(ServerKind::Leafd, &["check-config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = temp_file("bad.toml", "port = \"many\"\n");
    let out = run(ServerKind::Leafd, &["check-config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":1:") && stderr.contains("port"),
        "{stderr}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../leaf/leafd.example.toml");
    let out = run(ServerKind::Leafd, &["check-config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A subscriber that stops reading is cut off once its pending data passes `max_pending`
/// (or a write blocks past `write_deadline`); the publisher and other subscribers carry on,
/// and the server's memory does not follow the backlog.
async fn slow_consumer_is_disconnected(kind: ServerKind) {
    let server = TestServer::with_config(
        kind,
        json!({ "max_payload": 65536, "max_pending": 262144, "write_deadline": "2s" }),
    )
    .await;
    // The slow one: subscribes, then never reads again.
    let mut slow = server.raw_connected().await;
    slow.send("SUB flood 1\r\n").await;
    slow.ping().await;
    // A healthy subscriber that keeps up.
    let fast = server.client().await;
    let mut fast_sub = fast.subscribe("flood").await.unwrap();
    sync(&fast).await;

    let publisher = server.client().await;
    let payload = Bytes::from(vec![b'x'; 16 * 1024]);
    let total = 2_000; // 32 MiB: far more than the socket buffers and max_pending hold
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let msg = next_msg(&mut fast_sub).await;
            assert_eq!(msg.payload.len(), 16 * 1024);
            n += 1;
        }
        n
    });
    for _ in 0..total {
        bounded("publish", publisher.publish("flood", payload.clone()))
            .await
            .unwrap();
    }
    bounded("publisher flush", publisher.flush()).await.unwrap();
    assert_eq!(bounded("fast subscriber", reader).await.unwrap(), total);

    // The slow subscriber's connection was closed by the server: reading it now drains what
    // the kernel buffered and then ends, instead of blocking.
    drain_until_closed(slow, Duration::from_secs(20)).await;
    // The publisher's connection is still served.
    let mut check = publisher.subscribe("after").await.unwrap();
    sync(&publisher).await;
    publisher.publish("after", "ok".into()).await.unwrap();
    assert_eq!(next_msg(&mut check).await.payload, Bytes::from("ok"));
    if kind != ServerKind::NatsServer {
        let rss = rss_kib(server.pid());
        assert!(rss < 64 * 1024, "{kind} RSS {rss} KiB after the flood");
    }
}

async fn drain_until_closed(conn: e2e::RawConn, limit: Duration) {
    let mut conn = conn;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.next_line_within(left).await {
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(_) => panic!("slow consumer still connected after {limit:?}"),
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn version_names_the_binary() {
    for (kind, name) in [(ServerKind::Leafd, "leafd "), (ServerKind::Hubd, "hubd ")] {
        for flag in ["--version", "-v"] {
            let out = run(kind, &[flag]);
            assert!(out.status.success(), "{kind} {flag}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.starts_with(name), "{kind} {flag}: {stdout}");
        }
    }
}
