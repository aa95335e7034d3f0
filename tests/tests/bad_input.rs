//! Raw-socket robustness: garbage, oversize lines, fragmented and batched input, invalid
//! subjects, idle half-open sockets and clients that stop answering PINGs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::{next_msg, serde_json::json, server_tests, sync, ServerKind, TestServer};

server_tests!(
    garbage_gets_err,
    oversize_control_line,
    pub_split_into_single_bytes,
    several_ops_in_one_write,
    invalid_subject_in_sub,
    half_open_connections,
    stale_connection,
);

/// How long the server may take to close a connection after a fatal protocol error.
const CLOSE: Duration = Duration::from_secs(5);

/// Round-trips one message through a fresh async-nats client: the server still serves.
async fn assert_serves(server: &TestServer) {
    let client = server.client().await;
    let subject = e2e::unique("alive");
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    sync(&client).await;
    client.publish(subject, "alive".into()).await.unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, Bytes::from("alive"));
}

/// Garbage bytes get `-ERR 'Unknown Protocol Operation'`; the server keeps serving others.
async fn garbage_gets_err(kind: ServerKind) {
    let server = TestServer::start(kind).await;

    // Before CONNECT.
    let mut raw = server.raw().await;
    let _ = raw.try_send(b"\x00\xff\xfegarbage\r\n").await;
    let lines = raw.expect_closed_within(CLOSE).await;
    assert_eq!(
        lines.first().map(String::as_str),
        Some("-ERR 'Unknown Protocol Operation'"),
        "lines: {lines:?}"
    );

    // After a valid CONNECT.
    let mut raw = server.raw_connected().await;
    let _ = raw.try_send("HELLO WORLD\r\n").await;
    let lines = raw.expect_closed_within(CLOSE).await;
    assert_eq!(
        lines.first().map(String::as_str),
        Some("-ERR 'Unknown Protocol Operation'"),
        "lines: {lines:?}"
    );

    assert_serves(&server).await;
}

/// A control line longer than 4096 bytes without a newline gets
/// `-ERR 'Maximum Control Line Exceeded'` (nats-server 2.9 spells it in lower case).
async fn oversize_control_line(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    let mut line = b"PUB ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 5000));
    let _ = raw.try_send(&line).await;
    let lines = raw.expect_closed_within(CLOSE).await;
    let first = lines.first().map(String::as_str).unwrap_or_default();
    assert!(
        first.eq_ignore_ascii_case("-ERR 'Maximum Control Line Exceeded'"),
        "lines: {lines:?}"
    );
    assert_serves(&server).await;
}

/// A `PUB` (and an `HPUB`) written one byte at a time is delivered intact.
async fn pub_split_into_single_bytes(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let mut sub = client.subscribe("split.test").await.unwrap();
    sync(&client).await;

    let mut raw = server.raw_connected().await;
    let block = "NATS/1.0\r\nX-Split: yes\r\n\r\n";
    let input = format!(
        "PUB split.test 11\r\nhello world\r\nHPUB split.test {} {}\r\n{block}hdr\r\n",
        block.len(),
        block.len() + 3
    );
    for byte in input.as_bytes() {
        raw.send([*byte]).await;
    }
    raw.ping().await;
    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.payload, Bytes::from("hello world"));
    assert!(msg.headers.is_none());
    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.payload, Bytes::from("hdr"));
    let split = msg
        .headers
        .and_then(|h| h.get("X-Split").map(|v| v.to_string()));
    assert_eq!(split.as_deref(), Some("yes"));
}

/// Several operations in a single write are all executed, in order.
async fn several_ops_in_one_write(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw().await;
    let connect = json!({ "verbose": false, "pedantic": false, "headers": true, "protocol": 1 });
    raw.send(format!(
        "CONNECT {connect}\r\nSUB m 1\r\nPUB m 2\r\nhi\r\nPUB m reply 5\r\nthere\r\n\
         SUB n 2\r\nPUB n 0\r\n\r\nUNSUB 1\r\nPUB m 4\r\ngone\r\nPING\r\n"
    ))
    .await;
    raw.expect_line("MSG m 1 2").await;
    raw.expect_line("hi").await;
    raw.expect_line("MSG m 1 reply 5").await;
    raw.expect_line("there").await;
    raw.expect_line("MSG n 2 0").await;
    raw.expect_line("").await;
    raw.expect_line("PONG").await;
}

/// `SUB` with an invalid subject gets `-ERR 'Invalid Subject'`; the connection stays up.
async fn invalid_subject_in_sub(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    for (sid, subject) in [(1, "foo..bar"), (2, ".foo"), (3, "foo.")] {
        raw.send(format!("SUB {subject} {sid}\r\n")).await;
        raw.expect_line("-ERR 'Invalid Subject'").await;
        raw.ping().await;
    }
    raw.send("SUB ok 9\r\nPUB ok 2\r\nok\r\n").await;
    let msg = raw.next_msg().await;
    assert_eq!(
        (msg.sid.as_str(), msg.payload.as_slice()),
        ("9", &b"ok"[..])
    );
}

/// 20 sockets that send nothing or half a `CONNECT` and never read do not block others.
async fn half_open_connections(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut idle = Vec::new();
    for i in 0..20 {
        let stream = e2e::bounded(
            "connect",
            tokio::net::TcpStream::connect(("127.0.0.1", server.port())),
        )
        .await
        .unwrap();
        if i % 2 == 1 {
            let written = e2e::bounded("half CONNECT", async {
                stream.writable().await?;
                stream.try_write(b"CONNECT {\"verbose\":fal")
            })
            .await
            .unwrap();
            assert!(written > 0);
        }
        idle.push(stream);
    }
    assert_serves(&server).await;
    let mut raw = server.raw_connected().await;
    raw.ping().await;
    drop(idle);
    assert_serves(&server).await;
}

/// With `ping_interval` 1 s and `ping_max` 2, a client that never answers PINGs is
/// disconnected (`-ERR 'Stale Connection'` or EOF) within about 3 s, while a client that
/// answers stays connected.
async fn stale_connection(kind: ServerKind) {
    let server =
        TestServer::with_config(kind, json!({ "ping_interval": "1s", "ping_max": 2 })).await;
    let mut silent = server.raw_connected().await;
    let mut polite = server.raw_connected().await;
    let polite_task = tokio::spawn(async move {
        // Answers PINGs until told to stop; counts them.
        let mut pings = 0;
        loop {
            match polite.next_line_within(Duration::from_millis(200)).await {
                Ok(Some(line)) if line == "PING" => {
                    pings += 1;
                    polite.send("PONG\r\n").await;
                }
                Ok(Some(line)) => panic!("polite client got {line:?}"),
                Ok(None) => panic!("polite client was disconnected"),
                Err(_) if pings >= 4 => return polite,
                Err(_) => {}
            }
        }
    });

    let started = Instant::now();
    let lines = silent.expect_closed_within(Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(
        lines.iter().any(|l| l == "PING"),
        "server never sent PING before closing: {lines:?}"
    );
    let others: Vec<&String> = lines.iter().filter(|l| *l != "PING").collect();
    assert!(
        others.is_empty() || others == ["-ERR 'Stale Connection'"],
        "unexpected lines from server: {lines:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(1500),
        "disconnected too early ({elapsed:?})"
    );

    let mut polite = e2e::bounded("polite client", polite_task).await.unwrap();
    polite.ping().await;
}
