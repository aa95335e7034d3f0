//! NATS over WebSocket, end to end (issue 23): the `websocket` listener of leafd, hubd and
//! nats-server 2.9 with the same config file, a real WebSocket NATS client (async-nats with
//! its `websockets` feature), and leafnode links over `ws://`/`wss://` between our servers
//! and nats-server.
//!
//! * clients: pub/sub, request/reply and a JetStream publish over `ws://`; `wss://` with the
//!   test CA; `/connz` marks them `websocket`, `/varz` has the `websocket` block;
//! * the upgrade: an origin not allowed gets 403; the block's own `authorization` is
//!   enforced (the client port stays as configured);
//! * hostile frames: an unmasked client frame, a frame announcing an enormous length, garbage
//!   after the upgrade: that connection closes, the server serves the next client;
//! * leaves: leafd's uplink over `ws://` to a nats-server hub and to hubd replays exactly
//!   once; a nats-server leaf over `ws://` to hubd; leafd over `wss://`;
//! * configuration: `websocket` without TLS and without `no_tls` is refused by all three;
//!   `compression` is refused by ours by name (not supported yet).
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::time::Duration;

use e2e::async_nats::{self, jetstream};
use e2e::certs::Certs;
use e2e::serde_json::{json, Value};
use e2e::uplink::{await_hub_count, check_hub_stream, leafd_config, publish_range, HUB_STREAM};
use e2e::{
    bounded, free_port, http_get, next_msg, run_to_exit, server_tests, unique, wait_for_log,
    ServerKind, StoreDir, TestServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain `ws://` websocket block on `port`, with `extra` merged in.
fn ws_block(port: u16, extra: Value) -> Value {
    let mut block = json!({ "port": port, "no_tls": true });
    if let (Some(b), Some(e)) = (block.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    block
}

/// A `wss://` websocket block on `port` with the test certificate for 127.0.0.1.
fn wss_block(certs: &Certs, port: u16) -> Value {
    json!({
        "port": port,
        "tls": { "cert_file": certs.path("hub.pem"), "key_file": certs.path("hub-key.pem") },
    })
}

/// Connects async-nats to `url` (ws:// or wss://) with `options`.
async fn ws_client_with(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    bounded("websocket connect", options.connect(url)).await
}

async fn ws_client(url: &str) -> async_nats::Client {
    ws_client_with(url, TestServer::options())
        .await
        .unwrap_or_else(|e| panic!("websocket client to {url}: {e}"))
}

/// Pub/sub, request/reply and a JetStream publish over `ws://`, with a TCP client on the other
/// end; the connection is listed as `websocket` in `/connz` and `/varz` shows the block.
async fn clients_over_ws(kind: ServerKind) {
    let (ws_port, http_port) = (free_port(), free_port());
    let store = StoreDir::new();
    let server = TestServer::with_config(
        kind,
        json!({
            "http_port": http_port,
            "jetstream": { "store_dir": store.path() },
            "websocket": ws_block(ws_port, json!({})),
        }),
    )
    .await;
    let url = format!("ws://127.0.0.1:{ws_port}");
    let ws = ws_client(&url).await;
    let tcp = server.client().await;

    // Pub/sub both ways between the WebSocket client and a TCP client, a large message too.
    let subject = unique("ws.sub");
    let mut on_ws = ws.subscribe(subject.clone()).await.unwrap();
    e2e::sync(&ws).await;
    let mut on_tcp = tcp.subscribe(subject.clone()).await.unwrap();
    e2e::sync(&tcp).await;
    for i in 0..20 {
        tcp.publish(subject.clone(), format!("t{i}").into())
            .await
            .unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            next_msg(&mut on_ws).await.payload,
            format!("t{i}").as_bytes()
        );
        assert_eq!(
            next_msg(&mut on_tcp).await.payload,
            format!("t{i}").as_bytes()
        );
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    ws.publish(subject.clone(), big.clone().into())
        .await
        .unwrap();
    assert!(
        next_msg(&mut on_tcp).await.payload == big,
        "300 kB from ws to tcp"
    );
    assert!(
        next_msg(&mut on_ws).await.payload == big,
        "its own message back"
    );

    // Request/reply: a TCP responder answers a WebSocket requester, and the other way.
    let service = unique("ws.svc");
    let mut requests = tcp.subscribe(service.clone()).await.unwrap();
    e2e::sync(&tcp).await;
    let responder = tcp.clone();
    let answering = tokio::spawn(async move {
        let req = next_msg(&mut requests).await;
        let reply = req.reply.expect("a reply subject");
        responder.publish(reply, "pong".into()).await.unwrap();
        responder.flush().await.unwrap();
    });
    let answer = bounded(
        "request over ws",
        ws.request(service.clone(), "ping".into()),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.payload, "pong".as_bytes());
    answering.await.unwrap();

    // JetStream over the WebSocket: create a stream, publish, the ack has the sequence.
    let js = jetstream::new(ws.clone());
    let stream = unique("WS").replace('.', "_");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        ..Default::default()
    })
    .await
    .expect("create a stream over ws");
    let ack = bounded(
        "JetStream ack over ws",
        js.publish(format!("{stream}.a"), "stored".into())
            .await
            .unwrap(),
    )
    .await
    .expect("PubAck");
    assert_eq!((ack.stream.as_str(), ack.sequence), (stream.as_str(), 1));

    // Monitoring: the block in /varz, the client's type in /connz.
    let (code, varz) = http_get(http_port, "/varz").await;
    assert_eq!(code, 200);
    assert_eq!(
        varz["websocket"]["port"],
        json!(ws_port),
        "{}",
        varz["websocket"]
    );
    assert_eq!(varz["websocket"]["no_tls"], json!(true));
    let (_, connz) = http_get(http_port, "/connz").await;
    let types: Vec<&str> = connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(types.contains(&"websocket"), "{connz}");
    assert!(types.contains(&"nats"), "{connz}");
}

/// `wss://`: the websocket block's certificate, the client trusting the test CA; plain
/// `ws://` to that port does not work.
async fn clients_over_wss(kind: ServerKind) {
    let certs = Certs::new();
    let ws_port = free_port();
    let server = TestServer::with_config(
        kind,
        json!({
            "websocket": wss_block(&certs, ws_port),
        }),
    )
    .await;
    let options = TestServer::options().add_root_certificates(certs.path("ca.pem").into());
    let wss = ws_client_with(&format!("wss://127.0.0.1:{ws_port}"), options)
        .await
        .expect("wss client");
    let tcp = server.client().await;
    let subject = unique("wss");
    let mut sub = wss.subscribe(subject.clone()).await.unwrap();
    e2e::sync(&wss).await;
    tcp.publish(subject.clone(), "over tls".into())
        .await
        .unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, "over tls".as_bytes());
    let plain = ws_client_with(&format!("ws://127.0.0.1:{ws_port}"), TestServer::options()).await;
    assert!(
        plain.is_err(),
        "a plain ws:// client got through the wss:// port"
    );
}

/// Sends an upgrade request for `path` with `headers` to `port`; returns the stream and
/// the response head (up to the blank line).
async fn upgrade(port: u16, path: &str, headers: &str) -> (TcpStream, String) {
    let mut tcp = bounded("connect", TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    bounded("the upgrade response", async {
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await;
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

/// An origin not in `allowed_origins` gets 403; an allowed one, and a request without
/// `Origin` (not a browser), are upgraded.
async fn origins_are_checked(kind: ServerKind) {
    let ws_port = free_port();
    let server = TestServer::with_config(
        kind,
        json!({
            "websocket": ws_block(ws_port, json!({
                "allowed_origins": ["http://panel.local:8080"],
            })),
        }),
    )
    .await;
    let (_, refused) = upgrade(ws_port, "/", "Origin: http://evil.example:8080\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let (_, wrong_port) = upgrade(ws_port, "/", "Origin: http://panel.local:9090\r\n").await;
    assert!(wrong_port.starts_with("HTTP/1.1 403"), "{wrong_port}");
    let (_, allowed) = upgrade(ws_port, "/", "Origin: http://panel.local:8080\r\n").await;
    assert!(allowed.starts_with("HTTP/1.1 101"), "{allowed}");
    assert!(
        allowed.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the RFC's accept key: {allowed}"
    );
    let (_, no_origin) = upgrade(ws_port, "/", "").await;
    assert!(no_origin.starts_with("HTTP/1.1 101"), "{no_origin}");
    if kind != ServerKind::NatsServer {
        wait_for_log(&server, "websocket upgrade refused", 2).await;
    }
    // The server still serves WebSocket clients.
    let ws = ws_client(&format!("ws://127.0.0.1:{ws_port}")).await;
    e2e::sync(&ws).await;
}

/// `websocket.authorization`: WebSocket clients need the block's user and password; the
/// client port keeps its own (open) settings.
async fn ws_authorization_is_enforced(kind: ServerKind) {
    let ws_port = free_port();
    let server = TestServer::with_config(
        kind,
        json!({
            "websocket": ws_block(ws_port, json!({
                "authorization": { "user": "panel", "password": "s3cret-panel" },
            })),
        }),
    )
    .await;
    let url = format!("ws://127.0.0.1:{ws_port}");
    let anonymous = ws_client_with(&url, TestServer::options()).await;
    assert!(
        anonymous.is_err(),
        "a websocket client without credentials got in"
    );
    let wrong = ws_client_with(
        &url,
        TestServer::options().user_and_password("panel".into(), "wrong".into()),
    )
    .await;
    assert!(wrong.is_err(), "a wrong password got in");
    let panel = ws_client_with(
        &url,
        TestServer::options().user_and_password("panel".into(), "s3cret-panel".into()),
    )
    .await
    .expect("the block's user logs in");
    e2e::sync(&panel).await;
    // The client port is not affected.
    e2e::sync(&server.client().await).await;
}

/// One client frame: FIN, `opcode`, masked with `mask` unless `None`.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads until the server closes the connection (a close frame may come first); panics if it
/// stays open past the bound.
async fn expect_closed(tcp: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    bounded(what, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// An upgraded raw connection that sent a valid CONNECT and PING (masked).
async fn raw_ws(port: u16) -> TcpStream {
    let (mut tcp, head) = upgrade(port, "/", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let connect = frame(
        2,
        b"CONNECT {\"verbose\":false}\r\nPING\r\n",
        Some([1, 2, 3, 4]),
    );
    tcp.write_all(&connect).await.unwrap();
    tcp
}

/// Hostile frames close their own connection only.
async fn bad_frames_close_that_connection(kind: ServerKind, huge: bool) {
    let ws_port = free_port();
    let server =
        TestServer::with_config(kind, json!({ "websocket": ws_block(ws_port, json!({})) })).await;
    let url = format!("ws://127.0.0.1:{ws_port}");
    let bystander = ws_client(&url).await;
    let subject = unique("still");
    let mut sub = bystander.subscribe(subject.clone()).await.unwrap();
    e2e::sync(&bystander).await;

    // A client frame without a mask (RFC 6455 §5.1).
    let mut unmasked = raw_ws(ws_port).await;
    unmasked
        .write_all(&frame(2, b"PING\r\n", None))
        .await
        .unwrap();
    expect_closed(&mut unmasked, "the unmasked frame's connection to close").await;

    // Garbage that is no frame at all (reserved bits and opcode).
    let mut garbage = raw_ws(ws_port).await;
    garbage.write_all(&[0x7f, 0xff, 0xff, 0xff]).await.unwrap();
    expect_closed(&mut garbage, "the garbage's connection to close").await;

    if huge {
        // A frame announcing 1 TiB: refused from its header, nothing is buffered.
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 40).to_be_bytes());
        head.extend_from_slice(&[9, 9, 9, 9]);
        let mut oversized = raw_ws(ws_port).await;
        oversized.write_all(&head).await.unwrap();
        expect_closed(&mut oversized, "the oversized frame's connection to close").await;
    }

    // The server and its other client are fine.
    let other = ws_client(&url).await;
    other
        .publish(subject.clone(), "alive".into())
        .await
        .unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, "alive".as_bytes());
    e2e::sync(&server.client().await).await;
}

async fn bad_frames(kind: ServerKind) {
    // nats-server reads a frame's payload as it comes, without a size limit: the
    // oversized frame applies to ours only.
    bad_frames_close_that_connection(kind, kind != ServerKind::NatsServer).await;
}

/// A client that does not finish its upgrade request within `handshake_timeout` is cut off;
/// the port serves the next one.
async fn slow_upgrade_is_cut_off(kind: ServerKind) {
    let ws_port = free_port();
    let _server = TestServer::with_config(
        kind,
        json!({ "websocket": ws_block(ws_port, json!({ "handshake_timeout": "500ms" })) }),
    )
    .await;
    let mut slow = bounded("connect", TcpStream::connect(("127.0.0.1", ws_port)))
        .await
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    expect_closed(&mut slow, "the slow upgrade to be cut off").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    let ws = ws_client(&format!("ws://127.0.0.1:{ws_port}")).await;
    e2e::sync(&ws).await;
}

server_tests!(
    slow_upgrade_is_cut_off,
    clients_over_ws,
    clients_over_wss,
    origins_are_checked,
    ws_authorization_is_enforced,
    bad_frames
);

/// A hub of `kind` with JetStream (domain `hub`), a leafnode listener and the websocket
/// block `ws`.
async fn start_ws_hub(kind: ServerKind, store: &StoreDir, ws: Value) -> TestServer {
    let config = json!({
        "jetstream": { "store_dir": store.path(), "domain": "hub" },
        "leafnodes": { "listen": format!("127.0.0.1:{}", free_port()) },
        "websocket": ws,
    });
    TestServer::with_config(kind, config).await
}

/// leafd's uplink over a `ws://` leafnode remote: a backlog published while the hub is down
/// is replayed when it starts, then live traffic follows; the hub stream holds each message
/// exactly once, in order.
async fn uplink_over_ws(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let ws_port = free_port();
    let url = format!("ws://127.0.0.1:{ws_port}");
    let leafd = TestServer::with_config(
        ServerKind::Leafd,
        leafd_config(&leaf_store, &url, &json!({})),
    )
    .await;
    let leaf_client = leafd.client().await;
    publish_range(&leaf_client, 0, 1000).await;
    let hub = start_ws_hub(kind, &hub_store, ws_block(ws_port, json!({}))).await;
    let hub_client = hub.client().await;
    await_hub_count(&hub_client, 1000, Duration::from_secs(60)).await;
    publish_range(&leaf_client, 1000, 2000).await;
    await_hub_count(&hub_client, 2000, Duration::from_secs(60)).await;
    check_hub_stream(&hub_client, 2000).await;
    let js = jetstream::new(hub_client.clone());
    let info = js
        .get_stream(HUB_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 2000, "exactly once");
    let log = leafd.log();
    assert!(
        log.contains("ws://127.0.0.1"),
        "the link names its ws:// URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_uplink_over_ws_to_nats_server() {
    uplink_over_ws(ServerKind::NatsServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_uplink_over_ws_to_hubd() {
    uplink_over_ws(ServerKind::Hubd).await;
}

/// A nats-server leaf dials hubd's websocket port (`ws://`, path `/leafnode`): messages
/// both ways; hubd lists the leaf in `/leafz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_leaf_over_ws_to_hubd() {
    let (ws_port, http_port) = (free_port(), free_port());
    let hub = TestServer::with_config(
        ServerKind::Hubd,
        json!({
            "http_port": http_port,
            "leafnodes": { "listen": format!("127.0.0.1:{}", free_port()) },
            "websocket": ws_block(ws_port, json!({})),
        }),
    )
    .await;
    let leaf = TestServer::with_config(
        ServerKind::NatsServer,
        json!({
            "leafnodes": {
                "remotes": [{ "urls": [format!("ws://127.0.0.1:{ws_port}")] }],
                "reconnect": 1,
            },
        }),
    )
    .await;
    let hc = hub.client().await;
    let lc = leaf.client().await;
    e2e::pub_sub_both_ways(&hc, &lc).await;
    let (_, leafz) = http_get(http_port, "/leafz").await;
    assert_eq!(leafz["leafnodes"], json!(1), "{leafz}");
}

/// leafd over `wss://` (the remote's `tls.ca_file`) to a hub of `kind`: messages both ways.
async fn leafd_over_wss(kind: ServerKind) {
    let certs = Certs::new();
    let ws_port = free_port();
    let hub = TestServer::with_config(
        kind,
        json!({
            "leafnodes": { "listen": format!("127.0.0.1:{}", free_port()) },
            "websocket": wss_block(&certs, ws_port),
        }),
    )
    .await;
    let leaf = TestServer::with_config(
        ServerKind::Leafd,
        json!({
            "leafnodes": {
                "remotes": [{
                    "url": format!("wss://127.0.0.1:{ws_port}"),
                    "tls": { "ca_file": certs.path("ca.pem") },
                }],
                "reconnect": 1,
            },
        }),
    )
    .await;
    let hc = hub.client().await;
    let lc = leaf.client().await;
    e2e::pub_sub_both_ways(&hc, &lc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_over_wss_to_nats_server() {
    leafd_over_wss(ServerKind::NatsServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_over_wss_to_hubd() {
    leafd_over_wss(ServerKind::Hubd).await;
}

/// `websocket` without `tls` and without `no_tls` is refused by all three (nats-server:
/// "websocket requires TLS configuration"); `compression` by ours, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_settings_are_checked() {
    let dir = StoreDir::new();
    let no_tls = json!({ "websocket": { "port": free_port() } });
    for kind in ServerKind::ALL {
        let (ok, out) = run_to_exit(kind, std::path::Path::new(dir.path()), &no_tls);
        assert!(!ok, "{kind} started a websocket port without TLS: {out}");
        assert!(out.contains("TLS"), "{kind}: {out}");
    }
    let compression = json!({
        "websocket": { "port": free_port(), "no_tls": true, "compression": true },
    });
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let (ok, out) = run_to_exit(kind, std::path::Path::new(dir.path()), &compression);
        assert!(!ok, "{kind} started with websocket compression: {out}");
        assert!(
            out.contains("websocket.compression: not supported yet"),
            "{kind}: {out}"
        );
    }
}
