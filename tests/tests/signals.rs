//! Process conventions (issue 23): signals, `--signal`, the pid file, the log file and lame
//! duck mode, against leafd, hubd and nats-server 2.9 with the same steps.
//!
//! * SIGUSR1 with `-l FILE`: the file is renamed (logrotate), SIGUSR1 makes the server log to
//!   a new file at the old path, and the server lives on; without a log file SIGUSR1 is
//!   ignored (it used to kill leafd and hubd).
//! * `--pid FILE` is written at start (and removed at a clean exit by ours; nats-server 2.9
//!   leaves it); `--signal reload|reopen|ldm|quit[=PID|=PIDFILE]` reach the right process.
//! * Lame duck mode (SIGUSR2): clients get an INFO with `ldm` (async-nats reports it as an
//!   event, a raw client reads it), new connections are refused, the remaining ones are
//!   closed after the grace period and the process exits.
//! * A hub cluster member in lame duck mode: its leaves (leafd with an uplink each) move to
//!   the other member before it exits and every uplink's hub stream ends with each message
//!   exactly once; the other member stops announcing its URLs.
//!
//! `lame_duck_duration` cannot be below 30 s (nats-server's minimum); with few connections
//! they are closed at most a second apart after the grace period, so the tests use a short
//! grace period and finish in seconds. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::async_nats::{jetstream, Event};
use e2e::serde_json::{json, Value};
use e2e::{
    bounded_for, free_port, http_get, run_command_to_exit, sync, wait_for_log, ServerKind,
    StoreDir, TestServer,
};
use futures::StreamExt;

/// Polls `check` every 50 ms until it holds, for at most `limit`.
async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    bounded_for(limit, what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Runs `kind`'s binary with `args` (a `--signal` command, a start that must fail) to its end.
fn run_binary(kind: ServerKind, args: &[&str]) -> std::process::Output {
    run_command_to_exit(Command::new(kind.binary_path()).args(args))
}

/// What each server logs when it reloads its configuration.
fn reload_line(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::NatsServer => "Reloaded server configuration",
        _ => "SIGHUP received",
    }
}

// ---- SIGUSR1 ----------------------------------------------------------------------------

/// `-l FILE`: the log goes there (not to stderr); the file is renamed as logrotate does and
/// SIGUSR1 makes the server write a new file at the old path; the server lives on.
async fn sigusr1_reopens_the_log_file(kind: ServerKind) {
    let dir = StoreDir::new();
    let log = Path::new(dir.path()).join("server.log");
    let mut server = TestServer::builder(kind)
        .arg("-D")
        .arg("-l")
        .arg(log.to_str().unwrap())
        .start()
        .await;
    until(Duration::from_secs(5), "lines in the log file", || {
        file_len(&log) > 0
    })
    .await;
    let rotated = Path::new(dir.path()).join("server.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGUSR1);
    until(Duration::from_secs(5), "a new log file", || log.exists()).await;
    let before = file_len(&log);
    let client = server.client().await;
    client.flush().await.unwrap();
    until(
        Duration::from_secs(5),
        "fresh lines in the new log file",
        || file_len(&log) > before,
    )
    .await;
    assert!(server.is_running(), "{kind} died on SIGUSR1");
    assert!(
        file_len(&rotated) > 0,
        "the rotated file keeps the old lines"
    );
    let stderr = server.log();
    assert!(
        !stderr.contains("client") && !stderr.contains("Client"),
        "{kind} logged to stderr despite -l: {stderr}"
    );
}

/// Without a log file SIGUSR1 is logged and ignored: the server keeps serving.
async fn sigusr1_without_a_log_file_is_ignored(kind: ServerKind) {
    let mut server = TestServer::start(kind).await;
    server.signal(libc::SIGUSR1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.is_running(), "{kind} died on SIGUSR1");
    let client = server.client().await;
    client.flush().await.unwrap();
    if kind != ServerKind::NatsServer {
        wait_for_log(&server, "no log file to reopen", 1).await;
    }
}

// ---- the pid file and --signal ------------------------------------------------------------

/// `--pid FILE` holds the process id; `--signal reload`, `reopen` and `quit`, with
/// `=PIDFILE`, `=PID` or (ours) `--pid FILE` or the configuration's `pid_file`, reach that
/// process; an unknown name (and, ours, a missing process id) is refused with exit code 1.
async fn the_pid_file_and_signal_commands(kind: ServerKind) {
    let dir = StoreDir::new();
    let pid_file: PathBuf = Path::new(dir.path()).join("server.pid");
    let pid_arg = pid_file.to_str().unwrap().to_owned();
    // A configuration file (empty), so that nats-server can reload.
    let mut server = TestServer::builder(kind)
        .config(json!({}))
        .arg("--pid")
        .arg(&pid_arg)
        .start()
        .await;
    until(Duration::from_secs(5), "the pid file", || pid_file.exists()).await;
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), server.pid().to_string(), "{kind} pid file");

    // reload through the pid file.
    let out = run_binary(kind, &["--signal", &format!("reload={pid_arg}")]);
    assert!(out.status.success(), "{kind}: {out:?}");
    wait_for_log(&server, reload_line(kind), 1).await;
    // reopen to the explicit process id (and, ours, through --pid).
    let out = run_binary(kind, &["--signal", &format!("reopen={}", server.pid())]);
    assert!(out.status.success(), "{kind}: {out:?}");
    if kind != ServerKind::NatsServer {
        wait_for_log(&server, "SIGUSR1 received", 1).await;
        let out = run_binary(kind, &["--signal", "reopen", "--pid", &pid_arg]);
        assert!(out.status.success(), "{kind}: {out:?}");
        wait_for_log(&server, "SIGUSR1 received", 2).await;
        // A log file or pid file that cannot be written stops the start, naming the key.
        for (flag, message) in [
            ("-l", "log_file: cannot open"),
            ("-P", "pid_file: cannot write"),
        ] {
            let out = run_binary(kind, &["-p", "0", flag, "/nonexistent/dir/x"]);
            assert_eq!(out.status.code(), Some(1), "{kind}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(message), "{kind}: {err}");
        }
        // No process id anywhere: a clear error.
        let out = run_binary(kind, &["--signal", "reload"]);
        assert_eq!(out.status.code(), Some(1), "{kind}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no process id"), "{kind}: {err}");
        // The pid file of the configuration.
        let conf = Path::new(dir.path()).join("c.json");
        std::fs::write(&conf, json!({ "pid_file": pid_arg }).to_string()).unwrap();
        let out = run_binary(kind, &["-c", conf.to_str().unwrap(), "--signal", "reload"]);
        assert!(out.status.success(), "{kind}: {out:?}");
        wait_for_log(&server, reload_line(kind), 2).await;
    }
    assert!(server.is_running(), "{kind} died");
    // Unknown signals are refused.
    let out = run_binary(kind, &["--signal", &format!("bogus={}", server.pid())]);
    assert_eq!(out.status.code(), Some(1), "{kind}: {out:?}");
    assert!(server.is_running());
    // quit: SIGINT, the server exits.
    let out = run_binary(kind, &["--signal", &format!("quit={pid_arg}")]);
    assert!(out.status.success(), "{kind}: {out:?}");
    let status = server
        .exited_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{kind} still runs after --signal quit"));
    assert!(status.success(), "{kind} exit status {status}");
    if kind != ServerKind::NatsServer {
        // Ours remove the pid file at a clean exit (nats-server 2.9 leaves it behind).
        assert!(!pid_file.exists(), "{kind} left its pid file");
    }
}

/// `--signal ldm=PIDFILE` puts the server in lame duck mode (without connections, it ends at
/// once).
async fn signal_ldm_reaches_the_server(kind: ServerKind) {
    let dir = StoreDir::new();
    let pid_file = Path::new(dir.path()).join("server.pid");
    let pid_arg = pid_file.to_str().unwrap().to_owned();
    let mut server = TestServer::builder(kind)
        .arg("-P")
        .arg(&pid_arg)
        .start()
        .await;
    until(Duration::from_secs(5), "the pid file", || pid_file.exists()).await;
    let out = run_binary(kind, &["--signal", &format!("ldm={pid_arg}")]);
    assert!(out.status.success(), "{kind}: {out:?}");
    let status = server
        .exited_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{kind} still runs after --signal ldm"));
    if kind != ServerKind::NatsServer {
        assert!(status.success(), "{kind} exit status {status}");
        assert!(!pid_file.exists(), "{kind} left its pid file");
    }
}

// ---- lame duck mode ------------------------------------------------------------------------

/// The lame duck settings of the tests: 1 s grace period (30 s is the shortest duration).
fn lame_duck_settings(grace: &str) -> Value {
    json!({ "lame_duck_duration": "30s", "lame_duck_grace_period": grace })
}

/// SIGUSR2: an async-nats client reports lame duck mode, a raw client reads an INFO with
/// `ldm: true`, new connections are refused, both are closed after the grace period and the
/// process exits.
async fn lame_duck_mode_ends_the_server(kind: ServerKind) {
    let mut server = TestServer::with_config(kind, lame_duck_settings("1s")).await;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = server
        .client_with(TestServer::options().event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        }))
        .await;
    client.flush().await.unwrap();
    let mut raw = server.raw_connected().await;
    server.signal(libc::SIGUSR2);
    let info = bounded_for(Duration::from_secs(5), "the lame duck INFO", async {
        loop {
            let line = raw.next_line().await.expect("connection open");
            if let Some(json) = line.strip_prefix("INFO ") {
                let info: Value = e2e::serde_json::from_str(json).unwrap();
                if info["ldm"] == json!(true) {
                    return info;
                }
            }
        }
    })
    .await;
    assert!(
        info["connect_urls"]
            .as_array()
            .is_none_or(|urls| urls.is_empty()),
        "a lone server in lame duck mode lists no URL: {info}"
    );
    bounded_for(Duration::from_secs(5), "the lame duck event", async {
        loop {
            if let Some(Event::LameDuckMode) = events.recv().await {
                return;
            }
        }
    })
    .await;
    // The listener is closed: new clients are refused.
    let port = server.port();
    bounded_for(Duration::from_secs(5), "new connections refused", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(server.is_running(), "{kind} must wait for the grace period");
    raw.expect_closed_within(Duration::from_secs(10)).await;
    let status = server
        .exited_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{kind} still runs after lame duck mode"));
    if kind != ServerKind::NatsServer {
        assert!(status.success(), "{kind} exit status {status}");
        wait_for_log(&server, "lame duck mode: every connection closed", 1).await;
    }
}

/// A second SIGUSR2 during the grace period ends lame duck mode at once (ours; nats-server
/// ignores it and finishes its schedule).
async fn a_second_sigusr2_ends_lame_duck_mode_at_once(kind: ServerKind) {
    let mut server = TestServer::with_config(kind, lame_duck_settings("20s")).await;
    let _raw = server.raw_connected().await;
    server.signal(libc::SIGUSR2);
    wait_for_log(&server, "entering lame duck mode", 1).await;
    server.signal(libc::SIGTERM);
    let status = server
        .exited_within(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("{kind} still runs: SIGTERM in lame duck mode"));
    assert!(status.success(), "{kind} exit status {status}");
    let mut server = TestServer::with_config(kind, lame_duck_settings("20s")).await;
    let _raw = server.raw_connected().await;
    server.signal(libc::SIGUSR2);
    wait_for_log(&server, "entering lame duck mode", 1).await;
    server.signal(libc::SIGUSR2);
    server
        .exited_within(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("{kind} still runs: second SIGUSR2"));
}

// ---- clusters --------------------------------------------------------------------------------

/// Member `name` of cluster `C` (routes to every port of `routes`), with a leafnode listener
/// on `leaf_port` and a monitoring port.
fn member(name: &str, route_port: u16, routes: &[u16], leaf_port: u16, http: u16) -> Value {
    let mut config = json!({
        "server_name": name,
        "http_port": http,
        "cluster": {
            "name": "C",
            "listen": format!("127.0.0.1:{route_port}"),
            "routes": routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>(),
        },
        "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
    });
    if let (Some(c), Some(l)) = (config.as_object_mut(), lame_duck_settings("3s").as_object()) {
        c.extend(l.clone());
    }
    config
}

/// The config of gateway `i`: an uplink of `site<i>.>` (its own subjects: the gateways share
/// the hub's subject space) into hub stream `S<i>` (domain `hub`) under prefix `g<i>`,
/// through the hub leafnode URL `hub_url`.
fn gateway(i: usize, store: &StoreDir, hub_url: &str) -> Value {
    json!({
        "server_name": format!("gw{i}"),
        "jetstream": { "store_dir": store.path() },
        "leafnodes": { "remotes": [{ "url": hub_url }], "reconnect": "250ms" },
        "uplinks": [{
            "name": "sensors",
            "subjects": [format!("site{i}.>")],
            "hub_stream": format!("S{i}"),
            "hub_domain": "hub",
            "subject_prefix": format!("g{i}"),
            "create_hub_stream": true,
        }],
    })
}

/// Publishes readings `from..to` (header `Reading`) on gateway `i`'s subject `site<i>.r`
/// through `client`'s JetStream (its uplink's buffer), waiting for every PubAck.
async fn publish_readings(client: &e2e::async_nats::Client, i: usize, from: u64, to: u64) {
    let js = jetstream::new(client.clone());
    let mut acks = Vec::new();
    for n in from..to {
        let mut headers = e2e::async_nats::HeaderMap::new();
        headers.insert("Reading", n.to_string().as_str());
        let ack = js
            .publish_with_headers(format!("site{i}.r"), headers, n.to_string().into())
            .await
            .expect("publish to leafd");
        acks.push(ack);
        if acks.len() == 500 {
            for a in acks.drain(..) {
                a.await.expect("leafd PubAck");
            }
        }
    }
    for a in acks {
        a.await.expect("leafd PubAck");
    }
}

/// The number of leaves connected to the server with monitoring port `http`.
async fn leaves(http: u16) -> u64 {
    let (code, body) = http_get(http, "/leafz").await;
    assert_eq!(code, 200, "{body}");
    body["leafnodes"].as_u64().unwrap_or(0)
}

/// The readings (header `Reading`) of hub stream `stream`, in order; checks that no message
/// id is stored twice.
async fn readings(hub: &e2e::async_nats::Client, stream: &str) -> Vec<u64> {
    let js = jetstream::new(hub.clone());
    let mut s = js.get_stream(stream).await.expect("hub stream");
    let total = s.info().await.expect("stream info").state.messages;
    let consumer = s
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .expect("messages");
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for _ in 0..total {
        let msg = bounded_for(Duration::from_secs(30), "a hub message", messages.next())
            .await
            .expect("stream ended early")
            .expect("message");
        let headers = msg.headers.clone().expect("headers");
        let id = headers.get("Nats-Msg-Id").expect("msg id").to_string();
        assert!(
            ids.insert(id.clone()),
            "{stream}: message id {id} stored twice"
        );
        let reading = headers
            .get("Reading")
            .expect("Reading")
            .as_str()
            .parse()
            .unwrap();
        out.push(reading);
    }
    out
}

/// A hub cluster of two members, `a` (no JetStream) and `b` (JetStream, domain `hub`), with
/// three gateways attached to `a`, each forwarding its readings into its own stream on `b`
/// through `a`'s route. SIGUSR2 on `a` in the middle of the traffic: all three gateways move
/// to `b` (before `a` exits when `a` is hubd, which tells its leaves; nats-server 2.9 does
/// not, and closes them when it exits), and every stream ends with each reading exactly
/// once, in order.
async fn a_lame_duck_member_hands_its_leaves_over(kinds: [ServerKind; 2]) {
    const N: u64 = 2_000;
    let routes = [free_port(), free_port()];
    let leaf_ports = [free_port(), free_port()];
    let http = [free_port(), free_port()];
    let hub_store = StoreDir::new();
    let mut config_b = member("b", routes[1], &routes, leaf_ports[1], http[1]);
    config_b["jetstream"] = json!({ "store_dir": hub_store.path(), "domain": "hub" });
    let mut a = TestServer::with_config(
        kinds[0],
        member("a", routes[0], &routes, leaf_ports[0], http[0]),
    )
    .await;
    let b = TestServer::with_config(kinds[1], config_b).await;
    let hub = b.client().await;
    // The route is up (b's interest reaches a) before the gateways connect to a.
    {
        let ca = a.client().await;
        let mut probe = hub.subscribe("ldm.probe").await.unwrap();
        sync(&hub).await;
        e2e::await_interest(&ca, "ldm.probe", &mut probe).await;
    }
    // b's JetStream is up: its meta group (b alone, a runs no JetStream) has a leader. A
    // hubd member that never saw a keeps expecting it (the routes list it), and every stream,
    // R1 ones included, is the meta group's (hub/JETSTREAM-CLUSTER.md, "Bootstrap").
    until_async(
        Duration::from_secs(20),
        "b's meta group has a leader",
        || async {
            let (code, body) = http_get(http[1], "/jsz").await;
            assert_eq!(code, 200, "{body}");
            u64::from(body["meta_cluster"]["leader"] == "b")
        },
        1,
    )
    .await;
    let stores: Vec<StoreDir> = (0..3).map(|_| StoreDir::new()).collect();
    let mut gateways = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let url = format!("nats-leaf://127.0.0.1:{}", leaf_ports[0]);
        gateways.push(TestServer::with_config(ServerKind::Leafd, gateway(i, store, &url)).await);
    }
    let clients = futures::future::join_all(gateways.iter().map(|g| g.client())).await;
    until_async(
        Duration::from_secs(20),
        "three leaves on a",
        || leaves(http[0]),
        3,
    )
    .await;
    let publish = |from: u64, to: u64| {
        futures::future::join_all(
            clients
                .iter()
                .enumerate()
                .map(move |(i, c)| publish_readings(c, i, from, to)),
        )
    };
    publish(0, N / 2).await;
    a.signal(libc::SIGUSR2);
    if kinds[0] == ServerKind::NatsServer {
        // nats-server 2.9 tells leaves nothing (no `ldm` on leafnode links) and, with no
        // client, shuts down at once: the gateways move when their links close.
        a.exited_within(Duration::from_secs(30))
            .await
            .expect("nats-server still runs after lame duck mode");
    }
    // Every gateway is on b; a hubd in lame duck mode told them (INFO ldm) and still runs (its
    // grace period is 3 s).
    until_async(
        Duration::from_secs(20),
        "three leaves on b",
        || leaves(http[1]),
        3,
    )
    .await;
    if kinds[0] == ServerKind::Hubd {
        assert!(a.is_running(), "a exited before its leaves moved");
        wait_for_log(&a, "entering lame duck mode", 1).await;
        for g in &gateways {
            wait_for_log(g, "leafnode hub entered lame duck mode", 1).await;
        }
    }
    publish(N / 2, N).await;
    if kinds[0] == ServerKind::Hubd {
        let status = a
            .exited_within(Duration::from_secs(30))
            .await
            .expect("hubd still runs after lame duck mode");
        assert!(status.success(), "a's exit status {status}");
    }
    for i in 0..3 {
        let stream = format!("S{i}");
        let js = jetstream::new(hub.clone());
        bounded_for(
            Duration::from_secs(120),
            &format!("{N} messages in {stream}"),
            async {
                loop {
                    let count = match js.get_stream(&stream).await {
                        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                        Err(_) => 0,
                    };
                    if count >= N {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        )
        .await;
        let got = readings(&hub, &stream).await;
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "{stream}: each reading once, in order"
        );
    }
}

/// Polls `probe` until it returns at least `want`, for at most `limit`.
async fn until_async<F, Fut>(limit: Duration, what: &str, probe: F, want: u64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    bounded_for(limit, what, async {
        while probe().await < want {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Reads `conn`'s lines (for at most `limit`) until an INFO for which `wanted` holds.
async fn await_info(
    conn: &mut e2e::RawConn,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) {
    bounded_for(limit, what, async {
        loop {
            let line = conn.next_line().await.expect("connection open");
            if let Some(json) = line.strip_prefix("INFO ") {
                if wanted(&e2e::serde_json::from_str(json).unwrap()) {
                    return;
                }
            }
        }
    })
    .await
}

/// Whether INFO `info` lists `url` in its array `key`.
fn lists(info: &Value, key: &str, url: &str) -> bool {
    info[key]
        .as_array()
        .is_some_and(|u| u.iter().any(|u| u.as_str() == Some(url)))
}

/// A member whose route peer enters lame duck mode stops announcing the peer's client URL to
/// its clients, and (hubd) its leafnode URL to its leaves, while the peer still runs (held by
/// a client of its own in the grace period).
async fn a_peer_stops_announcing_a_lame_duck_member(kinds: [ServerKind; 2]) {
    let routes = [free_port(), free_port()];
    let leaf_ports = [free_port(), free_port()];
    let http = [free_port(), free_port()];
    let mut a = TestServer::with_config(
        kinds[0],
        member("a", routes[0], &routes, leaf_ports[0], http[0]),
    )
    .await;
    let b = TestServer::with_config(
        kinds[1],
        member("b", routes[1], &routes, leaf_ports[1], http[1]),
    )
    .await;
    let a_url = format!("127.0.0.1:{}", a.port());
    let a_leaf_url = format!("127.0.0.1:{}", leaf_ports[0]);
    let mut client_at_b = b.raw_connected().await;
    if !lists(client_at_b.info(), "connect_urls", &a_url) {
        await_info(
            &mut client_at_b,
            Duration::from_secs(10),
            "a's URL announced by b",
            |i| lists(i, "connect_urls", &a_url),
        )
        .await;
    }
    // A raw leaf on b (hubd), told a's leafnode URL.
    let mut leaf_at_b = None;
    if kinds[1] == ServerKind::Hubd {
        let mut leaf = e2e::RawConn::open(leaf_ports[1]).await;
        assert!(
            lists(leaf.info(), "leafnode_urls", &a_leaf_url),
            "{}",
            leaf.info()
        );
        leaf.send("CONNECT {\"name\":\"raw-leaf\",\"headers\":true}\r\n")
            .await;
        leaf_at_b = Some(leaf);
    }
    let _held = a.raw_connected().await;
    a.signal(libc::SIGUSR2);
    let limit = Duration::from_secs(3);
    await_info(
        &mut client_at_b,
        limit,
        "b's client INFO without a's URL",
        |i| !lists(i, "connect_urls", &a_url),
    )
    .await;
    if let Some(leaf) = &mut leaf_at_b {
        await_info(leaf, limit, "b's leaf INFO without a's URL", |i| {
            i["leafnode_urls"].is_array() && !lists(i, "leafnode_urls", &a_leaf_url)
        })
        .await;
    }
    assert!(a.is_running(), "a is in its grace period still");
}

/// A nats-server leaf attached to a hubd member in lame duck mode: it takes the lame duck
/// INFO harmlessly (nats-server 2.9 ignores `ldm` and keeps the new `leafnode_urls`: the other
/// member only), is closed after the grace period, reconnects to the other member and its
/// traffic flows again.
async fn a_nats_server_leaf_survives_a_lame_duck_hub(kind: ServerKind) {
    let routes = [free_port(), free_port()];
    let leaf_ports = [free_port(), free_port()];
    let http = [free_port(), free_port()];
    let mut a = TestServer::with_config(
        kind,
        member("a", routes[0], &routes, leaf_ports[0], http[0]),
    )
    .await;
    let b = TestServer::with_config(
        kind,
        member("b", routes[1], &routes, leaf_ports[1], http[1]),
    )
    .await;
    let hub = b.client().await;
    {
        let ca = a.client().await;
        let mut probe = hub.subscribe("nl.probe").await.unwrap();
        sync(&hub).await;
        e2e::await_interest(&ca, "nl.probe", &mut probe).await;
    }
    let mut leaf = TestServer::with_config(
        ServerKind::NatsServer,
        json!({ "leafnodes": { "remotes": [
            { "url": format!("nats-leaf://127.0.0.1:{}", leaf_ports[0]) }
        ] } }),
    )
    .await;
    let lc = leaf.client().await;
    let mut at_leaf = lc.subscribe("nl.x").await.unwrap();
    sync(&lc).await;
    e2e::await_interest(&hub, "nl.x", &mut at_leaf).await;
    until_async(
        Duration::from_secs(10),
        "the leaf on a",
        || leaves(http[0]),
        1,
    )
    .await;
    a.signal(libc::SIGUSR2);
    let status = a
        .exited_within(Duration::from_secs(20))
        .await
        .expect("a still runs after lame duck mode");
    assert!(status.success(), "a's exit status {status}");
    until_async(
        Duration::from_secs(20),
        "the leaf on b",
        || leaves(http[1]),
        1,
    )
    .await;
    e2e::await_interest(&hub, "nl.x", &mut at_leaf).await;
    assert!(leaf.is_running(), "the nats-server leaf died");
    let log = leaf.log();
    assert!(!log.contains("Parser ERROR"), "{log}");
}

/// One test per set of server kinds of `$name(kinds)`:
/// `for_kinds!(name: leafd => Leafd, hubd_hubd => [Hubd, Hubd])`.
macro_rules! for_kinds {
    ($name:ident: $($test:ident => $kinds:expr),+) => {
        mod $name {
            #[allow(unused_imports)]
            use e2e::ServerKind::{Hubd, Leafd, NatsServer};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$name($kinds).await
                }
            )+
        }
    };
}

for_kinds!(sigusr1_reopens_the_log_file: leafd => Leafd, hubd => Hubd, nats_server => NatsServer);
for_kinds!(sigusr1_without_a_log_file_is_ignored: leafd => Leafd, hubd => Hubd, nats_server => NatsServer);
for_kinds!(the_pid_file_and_signal_commands: leafd => Leafd, hubd => Hubd, nats_server => NatsServer);
for_kinds!(signal_ldm_reaches_the_server: leafd => Leafd, hubd => Hubd, nats_server => NatsServer);
for_kinds!(lame_duck_mode_ends_the_server: leafd => Leafd, hubd => Hubd, nats_server => NatsServer);
for_kinds!(a_second_sigusr2_ends_lame_duck_mode_at_once: leafd => Leafd, hubd => Hubd);
for_kinds!(a_nats_server_leaf_survives_a_lame_duck_hub: hubd => Hubd);

// nats-server as the member in lame duck mode has hubd as the stream's member: nats-server
// 2.9's JetStream in a cluster of two stops answering when a member leaves (no meta group
// quorum), which would test that rather than the leaves.
for_kinds!(a_lame_duck_member_hands_its_leaves_over:
    hubd_hubd => [Hubd, Hubd], nats_server_hubd => [NatsServer, Hubd]);
for_kinds!(a_peer_stops_announcing_a_lame_duck_member:
    hubd_hubd => [Hubd, Hubd],
    nats_server_hubd => [NatsServer, Hubd],
    nats_server_nats_server => [NatsServer, NatsServer]);
