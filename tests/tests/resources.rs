//! Resource exhaustion (issue 16): what remote input can make a server hold is bounded, and
//! the server lives on. Subscriptions per connection and per leafnode link, payloads before
//! authentication, the leafnode listener's connections, JetStream's queues (API requests,
//! stream ingest) measured as the server's peak RSS, and the default `max_pending`; where
//! nats-server has the limit, the same steps run against it and it behaves the same way (or
//! ours is stricter).

use std::time::Duration;

use bytes::Bytes;
use e2e::async_nats::jetstream;
use e2e::serde_json::{json, Value};
use e2e::{
    bounded, bounded_for, free_port, next_msg, server_tests, sync, wait_for_log, RawConn,
    ServerKind, StoreDir, TestServer,
};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

server_tests!(
    max_subscriptions_per_connection,
    payload_before_connect_with_auth,
    payload_before_connect_without_auth,
    payload_before_leaf_connect,
    api_request_flood,
    stream_ingest_flood,
);

/// A connection holding `max_subscriptions` gets nats-server's -ERR for the next SUB and
/// stays usable: its subscriptions still deliver, and an UNSUB makes room again.
async fn max_subscriptions_per_connection(kind: ServerKind) {
    let server = TestServer::with_config(kind, json!({ "max_subscriptions": 10 })).await;
    let mut raw = server.raw_connected().await;
    for i in 0..10 {
        raw.send(format!("SUB s.{i} {i}\r\n")).await;
    }
    raw.ping().await;
    raw.send("SUB s.10 10\r\n").await;
    raw.expect_line("-ERR 'maximum subscriptions exceeded'")
        .await;
    raw.ping().await;
    raw.send("PUB s.3 2\r\nhi\r\n").await;
    let msg = raw.next_msg().await;
    assert_eq!((msg.subject.as_str(), msg.sid.as_str()), ("s.3", "3"));
    raw.send("UNSUB 0\r\nSUB s.10 10\r\nPUB s.10 2\r\nok\r\n")
        .await;
    let msg = raw.next_msg().await;
    assert_eq!((msg.sid.as_str(), &msg.payload[..]), ("10", &b"ok"[..]));
    // Other connections are not affected.
    let client = server.client().await;
    let mut sub = client.subscribe("other").await.unwrap();
    sync(&client).await;
    client.publish("other", "x".into()).await.unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, Bytes::from("x"));
}

/// With authentication required, a PUB before CONNECT is refused at once, before its
/// payload is read: nats-server answers 'Authorization Violation' at the op's first byte.
/// (Before, ours waited for the declared megabyte until the 10 s auth timeout.)
async fn payload_before_connect_with_auth(kind: ServerKind) {
    let config = json!({ "authorization": { "user": "u", "password": "p", "timeout": 10 } });
    let server = TestServer::with_config(kind, config).await;
    let mut raw = server.raw().await;
    raw.send("PUB x 1000000\r\n").await;
    let lines = raw.expect_closed_within(Duration::from_secs(5)).await;
    assert_eq!(lines, ["-ERR 'Authorization Violation'"], "{kind}");
}

/// Without authentication, a connection that has not sent CONNECT may publish at most
/// 4 KiB: a larger PUB is refused before its payload is read ('Maximum Payload Violation')
/// and the connection closed. nats-server allows up to max_payload there: ours is stricter.
async fn payload_before_connect_without_auth(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let mut sub = client.subscribe("pre").await.unwrap();
    sync(&client).await;
    let mut raw = server.raw().await;
    // Small payloads before CONNECT work everywhere (telnet sessions).
    raw.send("PUB pre 5\r\nsmall\r\nPING\r\n").await;
    pong_skipping_ok(&mut raw).await;
    assert_eq!(next_msg(&mut sub).await.payload, Bytes::from("small"));
    raw.send("PUB pre 100000\r\n").await;
    if kind == ServerKind::NatsServer {
        raw.send(vec![b'x'; 100_000]).await;
        raw.send("\r\nPING\r\n").await;
        pong_skipping_ok(&mut raw).await;
        assert_eq!(next_msg(&mut sub).await.payload.len(), 100_000);
        return;
    }
    let lines = raw.expect_closed_within(Duration::from_secs(5)).await;
    assert_eq!(lines, ["-ERR 'Maximum Payload Violation'"], "{kind}");
    // After CONNECT the whole max_payload is allowed.
    let mut raw = server.raw_connected().await;
    raw.send(format!(
        "PUB pre 100000\r\n{}\r\nPING\r\n",
        "y".repeat(100_000)
    ))
    .await;
    raw.expect_line("PONG").await;
    assert_eq!(next_msg(&mut sub).await.payload.len(), 100_000);
}

/// Reads up to a PONG, skipping the +OKs nats-server sends before CONNECT (it is verbose
/// until a CONNECT says otherwise).
async fn pong_skipping_ok(raw: &mut RawConn) {
    loop {
        match raw.next_line().await.as_deref() {
            Some("+OK") => continue,
            Some("PONG") => return,
            other => panic!("expected PONG, got {other:?}"),
        }
    }
}

/// A peer on the leafnode port may send nothing but CONNECT until it has authenticated: an
/// LMSG is refused with 'Authorization Violation' before its payload is read, and the
/// connection closed, as nats-server does. (Before, ours buffered up to 64 MiB for it until
/// the auth timeout.)
async fn payload_before_leaf_connect(kind: ServerKind) {
    let leaf_port = free_port();
    let config = json!({
        "leafnodes": {
            "listen": format!("127.0.0.1:{leaf_port}"),
            "authorization": { "timeout": 10 },
        }
    });
    let _server = TestServer::with_config(kind, config).await;
    let mut raw = RawConn::open(leaf_port).await;
    assert!(raw.info()["leafnode_urls"].is_array(), "{}", raw.info());
    raw.send("LMSG x 1000000\r\n").await;
    let lines = raw.expect_closed_within(Duration::from_secs(5)).await;
    assert_eq!(lines, ["-ERR 'Authorization Violation'"], "{kind}");
}

/// The server's resident set: (current, peak) in KiB, from /proc.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Most the peak RSS of our servers may grow during a flood of 400 one-megabyte API
/// requests. Generous: the API queue's bound is 8 MiB, plus read buffers and the allocator's
/// slack; measured 11-20 MiB (debug build). With the unbounded queue it grew 128 MiB (hubd)
/// and 256 MiB (leafd).
const API_FLOOD_RSS_GROWTH_KIB: u64 = 64 * 1024;
/// Most the peak RSS of our servers may grow during a flood of 400 one-megabyte publishes to
/// a stream. Generous: the stream's ingest is bounded by 32 MiB, and the store holds a group
/// being written plus its page cache (32 MiB); measured about 140 MiB (debug build). When
/// every append in flight held its message it grew 408-438 MiB.
const INGEST_FLOOD_RSS_GROWTH_KIB: u64 = 256 * 1024;
/// Messages in a flood, each of [`FLOOD_MSG_BYTES`].
const FLOOD_MSGS: usize = 400;
/// The size of one flood message (under the default max_payload of 1 MiB).
const FLOOD_MSG_BYTES: usize = 1_000_000;

/// Publishes [`FLOOD_MSGS`] times `payload` to `subject` with replies to one inbox, as fast as
/// the connection takes them, and waits until every one is answered; returns the answers.
async fn flood(client: &e2e::async_nats::Client, subject: &str, payload: Bytes) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.unwrap();
    sync(client).await;
    for i in 0..FLOOD_MSGS {
        client
            .publish_with_reply(subject.to_string(), format!("{inbox}.{i}"), payload.clone())
            .await
            .unwrap();
    }
    let mut answers = Vec::with_capacity(FLOOD_MSGS);
    bounded_for(
        Duration::from_secs(120),
        "an answer to every request",
        async {
            while answers.len() < FLOOD_MSGS {
                let msg = replies.next().await.expect("inbox subscription ended");
                answers.push(e2e::serde_json::from_slice(&msg.payload).unwrap_or(Value::Null));
            }
        },
    )
    .await;
    answers
}

/// A flood of JetStream API requests with one-megabyte bodies (`STREAM.MSG.GET` with
/// padding, valid JSON) faster than they are served: every request is answered, the
/// server's memory stays bounded and it serves on. nats-server 2.9 queues them all and
/// answers each; ours holds at most 8 MiB of them and answers the rest at once with 429
/// "too many requests" (10167). Before, ours copied every request into an unbounded queue.
async fn api_request_flood(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "FLOOD".into(),
        subjects: vec!["flood".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    bounded(
        "publish ack",
        js.publish("flood", "stored".into()).await.unwrap(),
    )
    .await
    .unwrap();
    let mut body = br#"{"seq":1}"#.to_vec();
    body.resize(FLOOD_MSG_BYTES, b' ');
    let (before, _) = rss_kib(server.pid());
    let answers = flood(&client, "$JS.API.STREAM.MSG.GET.FLOOD", body.into()).await;
    let (_, peak) = rss_kib(server.pid());
    let served = answers
        .iter()
        .filter(|a| a["message"]["seq"] == json!(1))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a["error"]["err_code"] == json!(10167))
        .count();
    eprintln!(
        "{kind}: API flood: {served} served, {refused} refused, RSS {before} -> peak {peak} KiB"
    );
    assert_eq!(
        served + refused,
        FLOOD_MSGS,
        "{kind}: {:?}",
        answers.first()
    );
    assert!(served > 0, "{kind}: some requests are served");
    if kind != ServerKind::NatsServer {
        assert!(
            peak.saturating_sub(before) < API_FLOOD_RSS_GROWTH_KIB,
            "{kind}: peak RSS grew from {before} KiB to {peak} KiB ({served} served, \
             {refused} refused)"
        );
    }
    // It serves on.
    let info = bounded("stream info", js.get_stream("FLOOD"))
        .await
        .unwrap();
    assert_eq!(info.cached_info().state.messages, 1);
}

/// A publisher that does not wait for PubAcks floods a stream with one-megabyte messages
/// faster than the store writes them: every publish is acknowledged or refused with 429
/// "too many requests" (nats-server's PubAck error when its ingest queue is full), and our
/// server's memory stays bounded (a publishing connection is slowed to the store's pace past
/// 4 MiB in flight). Before, the appends in flight held every message until its commit.
async fn stream_ingest_flood(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "INGEST".into(),
        subjects: vec!["ingest".into()],
        // The disk holds at most 64 MiB of the flood.
        max_bytes: 64 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let (before, _) = rss_kib(server.pid());
    let answers = flood(&client, "ingest", vec![7u8; FLOOD_MSG_BYTES].into()).await;
    let (_, peak) = rss_kib(server.pid());
    let acked = answers
        .iter()
        .filter(|a| a["stream"] == json!("INGEST") && a["seq"].as_u64().is_some_and(|s| s > 0))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a["error"]["err_code"] == json!(10167))
        .count();
    eprintln!(
        "{kind}: ingest flood: {acked} acked, {refused} refused, RSS {before} -> peak {peak} KiB"
    );
    assert_eq!(acked + refused, FLOOD_MSGS, "{kind}: {:?}", answers.last());
    assert!(acked > 0, "{kind}: some publishes are stored");
    if kind != ServerKind::NatsServer {
        assert!(
            peak.saturating_sub(before) < INGEST_FLOOD_RSS_GROWTH_KIB,
            "{kind}: peak RSS grew from {before} KiB to {peak} KiB ({acked} acked, \
             {refused} refused)"
        );
    }
    let ack = bounded(
        "publish ack",
        js.publish("ingest", "after".into()).await.unwrap(),
    )
    .await
    .unwrap();
    assert!(ack.sequence > 0);
}

/// A hub whose `max_subscriptions` is 20 and a leafd leaf whose clients subscribe 30
/// subjects: the hub refuses the leaf's interest with nats-server's -ERR 'maximum
/// subscriptions exceeded' (nats-server keeps the link and ignores the rest, ours closes it:
/// stricter), which the leaf reports; the hub serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_announcing_too_many_subscriptions_is_refused() {
    for hub_kind in ServerKind::ALL {
        let leaf_port = free_port();
        let hub = TestServer::with_config(
            hub_kind,
            json!({
                "max_subscriptions": 20,
                "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
            }),
        )
        .await;
        let leaf = TestServer::with_config(
            ServerKind::Leafd,
            json!({ "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{leaf_port}") }] } }),
        )
        .await;
        wait_for_log(&leaf, "leafnode link established", 1).await;
        let leaf_client = leaf.client().await;
        let mut subs = Vec::new();
        for i in 0..30 {
            subs.push(leaf_client.subscribe(format!("many.{i}")).await.unwrap());
        }
        sync(&leaf_client).await;
        wait_for_log(&leaf, "maximum subscriptions exceeded", 1).await;
        if hub_kind != ServerKind::NatsServer {
            let log = wait_for_log(&hub, "maximum subscriptions exceeded", 1).await;
            assert!(
                log.contains("more than 20 subscriptions"),
                "{hub_kind} names the limit:\n{log}"
            );
            // The leaf waits 30 s before it tries again, as after a loop.
            wait_for_log(&leaf, "reconnecting in 30s", 1).await;
        }
        // The hub serves on.
        let hub_client = hub.client().await;
        let mut sub = hub_client.subscribe("alive").await.unwrap();
        sync(&hub_client).await;
        hub_client.publish("alive", "yes".into()).await.unwrap();
        assert_eq!(
            next_msg(&mut sub).await.payload,
            Bytes::from("yes"),
            "{hub_kind}"
        );
    }
}

/// Reads one line from a raw connection, bounded.
async fn line_of(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match bounded("a line", reader.read_line(&mut line)).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}

/// The leafnode listener serves at most `leafnodes.max_connections` connections,
/// handshakes included: one more is refused with -ERR 'maximum connections exceeded', and
/// once a connection ends there is room again. (Not a nats-server key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leafnode_listener_caps_its_connections() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let leaf_port = free_port();
        let server = TestServer::with_config(
            kind,
            json!({
                "leafnodes": {
                    "listen": format!("127.0.0.1:{leaf_port}"),
                    "max_connections": 2,
                    "authorization": { "timeout": 30 },
                }
            }),
        )
        .await;
        let first = RawConn::open(leaf_port).await;
        let second = RawConn::open(leaf_port).await;
        let third = TcpStream::connect(("127.0.0.1", leaf_port)).await.unwrap();
        let mut third = BufReader::new(third);
        assert_eq!(
            line_of(&mut third).await.as_deref(),
            Some("-ERR 'maximum connections exceeded'"),
            "{kind}"
        );
        assert_eq!(
            line_of(&mut third).await,
            None,
            "{kind}: closed after the error"
        );
        wait_for_log(&server, "maximum leafnode connections exceeded", 1).await;
        drop(first);
        // The slot is given back once the server sees the connection end.
        bounded("room for a new leafnode connection", async {
            loop {
                let stream = TcpStream::connect(("127.0.0.1", leaf_port)).await.unwrap();
                let mut reader = BufReader::new(stream);
                if line_of(&mut reader)
                    .await
                    .is_some_and(|l| l.starts_with("INFO "))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        drop(second);
    }
}

/// A client that stops reading: a subscriber whose pending data passes the default
/// `max_pending` (8 MiB, sized for a 1 GB board) is cut off as a slow consumer, well before
/// nats-server's 64 MiB. Before, 24 MiB queued for it were held. (A long `write_deadline`,
/// so that only `max_pending` can cut it within the test.) The server closes the connection
/// at once, without waiting for the subscriber's next op or ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_max_pending_cuts_a_stalled_subscriber_at_8_mib() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let server = TestServer::with_config(kind, json!({ "write_deadline": "120s" })).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket
            .connect(([127, 0, 0, 1], server.port()).into())
            .await
            .unwrap();
        stalled
            .write_all(b"CONNECT {\"verbose\":false}\r\nSUB big 1\r\nPING\r\n")
            .await
            .unwrap();
        let publisher = server.client().await;
        // The SUB is in place once a message published after it reaches a second subscriber.
        let watcher = server.client().await;
        let mut seen = watcher.subscribe("big").await.unwrap();
        sync(&watcher).await;
        let payload = Bytes::from(vec![b'z'; 1 << 20]);
        for _ in 0..24 {
            publisher.publish("big", payload.clone()).await.unwrap();
            next_msg(&mut seen).await;
        }
        wait_for_log(&server, "slow consumer detected", 1).await;
        // Torn down at once: what reached the socket drains, then the connection ends, long
        // before the write deadline or the next ping (2 min). Before, the server kept the
        // connection (and its queue) until then.
        bounded_for(
            Duration::from_secs(10),
            "the slow consumer's connection closed",
            async {
                let mut chunk = vec![0u8; 1 << 16];
                while matches!(stalled.read(&mut chunk).await, Ok(1..)) {}
            },
        )
        .await;
    }
}

/// A server with its monitoring port on a free port, and that port.
async fn monitored(kind: ServerKind, config: Value) -> (TestServer, u16) {
    let mport = free_port();
    let server = TestServer::builder(kind)
        .config(config)
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    (server, mport)
}

/// Connects with a tiny receive buffer (so a response cannot hide in socket buffers), sends
/// `GET path` and never reads; after `wait`, reads what arrives: the declared length and
/// the body bytes received before the server closed.
async fn get_without_reading(port: u16, path: &str, wait: Duration) -> (usize, usize) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(wait).await;
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    bounded_for(Duration::from_secs(30), "the rest of the response", async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw);
    let (head, _) = text.split_once("\r\n\r\n").expect("a response head");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    (length, raw.len() - head.len() - 4)
}

/// The monitoring port drops a client that asks for a large page and never reads it after
/// its write timeout (5 s) instead of holding a task for it forever; other requests are
/// served meanwhile. `/connz` is made large (8 MB) by clients with 1 MB names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_client_that_never_reads_is_dropped() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let (server, mport) = monitored(kind, json!({ "max_control_line": 1 << 20 })).await;
        let name = "n".repeat(1_000_000);
        let mut named = Vec::new();
        for _ in 0..8 {
            let mut raw = server.raw().await;
            raw.handshake(json!({ "name": name })).await;
            named.push(raw);
        }
        let reader = tokio::spawn(get_without_reading(mport, "/connz", Duration::from_secs(8)));
        // Served meanwhile.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, _) = e2e::http_get(mport, "/healthz").await;
        assert_eq!(code, 200);
        let (length, received) = reader.await.unwrap();
        assert!(length > 8_000_000, "{kind}: /connz is {length} bytes");
        assert!(
            received < length,
            "{kind}: the client that did not read got all {length} bytes: never dropped"
        );
    }
}

/// The monitoring port serves at most 16 connections at once: with 16 idle ones (a
/// slowloris), the next is answered 503 at once; once the idle ones time out (5 s), pages
/// are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_port_caps_its_connections() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let (_server, mport) = monitored(kind, json!({})).await;
        // Each idle connection sends the start of a request and never finishes it.
        let mut idle = Vec::new();
        for _ in 0..16 {
            let mut s = TcpStream::connect(("127.0.0.1", mport)).await.unwrap();
            s.write_all(b"GET /varz HTTP/1.1\r\n").await.unwrap();
            idle.push(s);
        }
        // Accepted in order: the 17th finds every slot taken.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (code, body) = e2e::http_get(mport, "/healthz").await;
        assert_eq!(code, 503, "{kind}: {body}");
        assert_eq!(body["error"], json!("too many monitoring connections"));
        bounded_for(Duration::from_secs(15), "pages served again", async {
            loop {
                if e2e::http_get(mport, "/healthz").await.0 == 200 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        drop(idle);
    }
}

/// A slowloris on the monitoring port: a request head that trickles in (a header line every
/// half second, never the blank line that ends it) is answered `408 Request Timeout` and
/// dropped once the request deadline (5 s for the whole head, not per read) has passed,
/// instead of holding a connection slot for as long as the client keeps trickling; pages are
/// served on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_slowloris_is_answered_408_and_dropped() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let (_server, mport) = monitored(kind, json!({})).await;
        let stream = TcpStream::connect(("127.0.0.1", mport)).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let started = tokio::time::Instant::now();
        // Trickles for 30 s unless the server closes first.
        let trickle = tokio::spawn(async move {
            wr.write_all(b"GET /varz HTTP/1.1\r\n").await?;
            for i in 0..60 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                wr.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                    .await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut raw = Vec::new();
        bounded_for(
            Duration::from_secs(15),
            "the slowloris answered and closed",
            async {
                let mut chunk = [0u8; 1024];
                while let Ok(n @ 1..) = rd.read(&mut chunk).await {
                    raw.extend_from_slice(&chunk[..n]);
                }
            },
        )
        .await;
        let elapsed = started.elapsed();
        trickle.abort();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 408 "), "{kind}: {text:?}");
        assert!(
            text.contains("request not received in time"),
            "{kind}: {text:?}"
        );
        assert!(
            elapsed >= Duration::from_secs(4),
            "{kind}: answered after {elapsed:?}, before the request deadline"
        );
        assert_eq!(e2e::http_get(mport, "/healthz").await.0, 200, "{kind}");
    }
}
