//! Core publish/subscribe behaviour through the real async-nats client (and a few raw-socket
//! wire checks), run against leafd, hubd and nats-server.

use std::collections::HashSet;

use async_nats::HeaderMap;
use bytes::Bytes;
use e2e::{barrier, bounded, drain_ready, next_msg, server_tests, sync, ServerKind, TestServer};
use futures::StreamExt;

server_tests!(
    pub_sub,
    wildcards,
    queue_groups,
    request_reply,
    headers_round_trip,
    headers_on_the_wire,
    no_responders,
    unsubscribe_after,
    unsubscribe_max_on_the_wire,
    unsubscribe_stops_delivery,
    no_echo,
    info_fields,
    wildcard_tokens_in_published_subjects,
);

/// Messages published by one client reach another client's subscription, in order.
async fn pub_sub(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut sub = subscriber.subscribe("greet.joe").await.unwrap();
    sync(&subscriber).await;
    for i in 0..10 {
        publisher
            .publish("greet.joe", format!("hello {i}").into())
            .await
            .unwrap();
    }
    for i in 0..10 {
        let msg = next_msg(&mut sub).await;
        assert_eq!(msg.subject.as_str(), "greet.joe");
        assert_eq!(msg.payload, Bytes::from(format!("hello {i}")));
        assert!(msg.reply.is_none());
    }
    barrier(&publisher, &subscriber).await;
    assert!(
        drain_ready(&mut sub).await.is_empty(),
        "unexpected extra messages"
    );
}

/// `*` matches exactly one token, `>` one or more trailing tokens.
async fn wildcards(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let mut star = client.subscribe("a.*").await.unwrap();
    let mut gt = client.subscribe("a.>").await.unwrap();
    let mut mid = client.subscribe("a.*.c").await.unwrap();
    let mut exact = client.subscribe("a.b.c").await.unwrap();
    let mut all = client.subscribe(">").await.unwrap();
    sync(&client).await;
    for subject in ["a", "a.b", "a.b.c", "a.x.c", "a.b.c.d", "b.x", "a.b.d"] {
        client.publish(subject, subject.into()).await.unwrap();
    }
    barrier(&client, &client).await;

    let subjects = |msgs: Vec<async_nats::Message>| -> Vec<String> {
        msgs.into_iter()
            .map(|m| m.subject.to_string())
            .filter(|s| !s.starts_with("barrier."))
            .collect()
    };
    assert_eq!(subjects(drain_ready(&mut star).await), ["a.b"]);
    assert_eq!(
        subjects(drain_ready(&mut gt).await),
        ["a.b", "a.b.c", "a.x.c", "a.b.c.d", "a.b.d"]
    );
    assert_eq!(subjects(drain_ready(&mut mid).await), ["a.b.c", "a.x.c"]);
    assert_eq!(subjects(drain_ready(&mut exact).await), ["a.b.c"]);
    assert_eq!(
        subjects(drain_ready(&mut all).await),
        ["a", "a.b", "a.b.c", "a.x.c", "a.b.c.d", "b.x", "a.b.d"]
    );
}

/// Each message to a queue group goes to exactly one member; all members get work; a plain
/// subscriber on the same subject sees every message.
async fn queue_groups(kind: ServerKind) {
    const N: usize = 300;
    let server = TestServer::start(kind).await;
    let consumer = server.client().await;
    let publisher = server.client().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(
            consumer
                .queue_subscribe("jobs", "workers".into())
                .await
                .unwrap(),
        );
    }
    let mut plain = consumer.subscribe("jobs").await.unwrap();
    sync(&consumer).await;
    for i in 0..N {
        publisher
            .publish("jobs", i.to_string().into())
            .await
            .unwrap();
    }
    barrier(&publisher, &consumer).await;

    let mut seen = HashSet::new();
    let mut per_member = Vec::new();
    for member in &mut members {
        let msgs = drain_ready(member).await;
        per_member.push(msgs.len());
        for msg in msgs {
            let id = String::from_utf8_lossy(&msg.payload).into_owned();
            assert!(seen.insert(id.clone()), "message {id} delivered twice");
        }
    }
    assert_eq!(seen.len(), N, "queue members got {per_member:?}");
    assert!(
        per_member.iter().all(|&n| n > 0),
        "a queue member got nothing: {per_member:?}"
    );
    let plain_ids: Vec<String> = drain_ready(&mut plain)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(
        plain_ids, expected,
        "plain subscriber must see every message in order"
    );
}

/// A responder answers requests; every reply reaches the right requester.
async fn request_reply(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let responder = server.client().await;
    let requester = server.client().await;
    let mut service = responder.subscribe("svc.upper").await.unwrap();
    sync(&responder).await;
    let task = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(msg) = service.next().await {
                if let Some(reply) = msg.reply {
                    let upper = String::from_utf8_lossy(&msg.payload).to_uppercase();
                    responder.publish(reply, upper.into()).await.unwrap();
                }
            }
        }
    });
    let requests = (0..20).map(|i| {
        let requester = requester.clone();
        async move {
            let reply = requester
                .request("svc.upper", format!("hi {i}").into())
                .await
                .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
            assert_eq!(reply.payload, Bytes::from(format!("HI {i}")));
        }
    });
    bounded("20 requests", futures::future::join_all(requests)).await;
    task.abort();
}

/// Headers (several names, a name with several values) survive a round trip.
async fn headers_round_trip(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let mut sub = client.subscribe("hdr").await.unwrap();
    sync(&client).await;
    let mut headers = HeaderMap::new();
    headers.insert("X-Single", "one");
    headers.insert("X-Multi", "first");
    headers.append("X-Multi", "second");
    headers.append("X-Multi", "third");
    headers.insert("Content-Type", "text/plain");
    client
        .publish_with_headers("hdr", headers, "body".into())
        .await
        .unwrap();
    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.payload, Bytes::from("body"));
    let got = msg.headers.expect("message has no headers");
    assert_eq!(got.get("X-Single").map(|v| v.as_str()), Some("one"));
    assert_eq!(
        got.get("Content-Type").map(|v| v.as_str()),
        Some("text/plain")
    );
    let multi: Vec<&str> = got.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(multi, ["first", "second", "third"]);

    // A header-only message with an empty payload.
    let mut headers = HeaderMap::new();
    headers.insert("X-Only", "yes");
    client
        .publish_with_headers("hdr", headers, Bytes::new())
        .await
        .unwrap();
    let msg = next_msg(&mut sub).await;
    assert!(msg.payload.is_empty());
    assert_eq!(
        msg.headers
            .and_then(|h| h.get("X-Only").map(|v| v.to_string())),
        Some("yes".to_owned())
    );
}

/// A raw `HPUB` with a reply subject is delivered as an `HMSG` with the header block
/// byte-for-byte intact.
async fn headers_on_the_wire(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    assert_eq!(raw.info()["headers"], true);
    let block = "NATS/1.0\r\nA: 1\r\nA: 2\r\nB-Key: value with spaces\r\n\r\n";
    let payload = "payload";
    raw.send(format!(
        "SUB h.wire 7\r\nHPUB h.wire reply.to {} {}\r\n{block}{payload}\r\n",
        block.len(),
        block.len() + payload.len()
    ))
    .await;
    let msg = raw.next_msg().await;
    assert_eq!(msg.subject, "h.wire");
    assert_eq!(msg.sid, "7");
    assert_eq!(msg.reply.as_deref(), Some("reply.to"));
    assert_eq!(msg.headers.as_deref(), Some(block.as_bytes()));
    assert_eq!(msg.payload, payload.as_bytes());
    raw.ping().await;
}

/// A request to a subject nobody listens on fails fast with "no responders".
async fn no_responders(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let err = bounded("request", client.request("nobody.home", "ping".into()))
        .await
        .expect_err("request without responders must fail");
    assert_eq!(
        err.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "got {err:?}"
    );
}

/// `unsubscribe_after(3)` delivers exactly three messages, then the subscription ends.
async fn unsubscribe_after(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let subscriber = server.client().await;
    let publisher = server.client().await;
    let mut sub = subscriber.subscribe("limited").await.unwrap();
    sub.unsubscribe_after(3).await.unwrap();
    sync(&subscriber).await;
    for i in 0..10 {
        publisher
            .publish("limited", i.to_string().into())
            .await
            .unwrap();
    }
    let got: Vec<Bytes> = bounded("subscription end", sub.map(|m| m.payload).collect()).await;
    assert_eq!(got, ["0", "1", "2"].map(Bytes::from));
}

/// On the wire, `UNSUB <sid> 3` makes the server itself stop after three deliveries.
async fn unsubscribe_max_on_the_wire(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    raw.send("SUB limited 1\r\nUNSUB 1 3\r\nSUB marker 2\r\n")
        .await;
    raw.ping().await;
    let publisher = server.client().await;
    for i in 0..10 {
        publisher
            .publish("limited", i.to_string().into())
            .await
            .unwrap();
    }
    publisher.publish("marker", "end".into()).await.unwrap();
    let mut limited = Vec::new();
    loop {
        let msg = raw.next_msg().await;
        if msg.sid == "2" {
            break;
        }
        assert_eq!(msg.sid, "1");
        limited.push(String::from_utf8_lossy(&msg.payload).into_owned());
    }
    assert_eq!(limited, ["0", "1", "2"]);
    // The subscription is gone: a later UNSUB of it is harmless and the connection stays up.
    raw.ping().await;
}

/// After `UNSUB`, nothing more is delivered for that sid, other subscriptions keep working.
async fn unsubscribe_stops_delivery(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    raw.send("SUB x 1\r\nSUB x 2\r\nPUB x 1\r\na\r\nUNSUB 1\r\nPUB x 1\r\nb\r\n")
        .await;
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in 0..3 {
        let msg = raw.next_msg().await;
        got.push((msg.sid, msg.payload));
    }
    raw.ping().await;
    got.sort();
    assert_eq!(
        got,
        [
            ("1".to_owned(), b"a".to_vec()),
            ("2".to_owned(), b"a".to_vec()),
            ("2".to_owned(), b"b".to_vec())
        ]
    );
}

/// With `no_echo`, a client does not receive its own messages but does receive others'.
async fn no_echo(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let quiet = server.client_with(TestServer::options().no_echo()).await;
    let other = server.client().await;
    let mut quiet_sub = quiet.subscribe("echo").await.unwrap();
    let mut other_sub = other.subscribe("echo").await.unwrap();
    // `quiet` never hears itself, so it is synced through `other`.
    barrier(&other, &quiet).await;
    sync(&other).await;
    quiet.publish("echo", "from-quiet".into()).await.unwrap();
    // Once `other` has the marker, the server has handled "from-quiet" (and would have
    // queued an echo to `quiet` before "from-other" below).
    barrier(&quiet, &other).await;
    other.publish("echo", "from-other".into()).await.unwrap();
    barrier(&other, &quiet).await;
    let payloads = |msgs: Vec<async_nats::Message>| -> Vec<Bytes> {
        msgs.into_iter().map(|m| m.payload).collect()
    };
    assert_eq!(payloads(drain_ready(&mut quiet_sub).await), ["from-other"]);
    // `other` hears both; its own echo may still be in flight after the barrier, so wait for
    // each one (bounded) instead of taking only what is ready.
    let mut others = vec![
        next_msg(&mut other_sub).await.payload,
        next_msg(&mut other_sub).await.payload,
    ];
    others.sort();
    assert!(drain_ready(&mut other_sub).await.is_empty());
    assert_eq!(others, ["from-other", "from-quiet"]);
}

/// The `INFO` line carries the fields clients rely on.
async fn info_fields(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let first = server.raw().await;
    let second = server.raw().await;
    let info = first.info();
    let server_id = info["server_id"].as_str().unwrap_or_default();
    assert!(!server_id.is_empty(), "server_id missing: {info}");
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "version missing: {info}"
    );
    assert!(
        info["proto"].as_u64().is_some_and(|p| p >= 1),
        "proto missing or < 1: {info}"
    );
    assert_eq!(info["headers"], true, "headers: {info}");
    assert!(
        info["max_payload"].as_u64().is_some_and(|m| m > 0),
        "max_payload missing: {info}"
    );
    let id1 = info["client_id"].as_u64();
    let id2 = second.info()["client_id"].as_u64();
    assert!(id1.is_some() && id2.is_some(), "client_id missing: {info}");
    assert_ne!(id1, id2, "two connections got the same client_id");
    assert_eq!(
        second.info()["server_id"].as_str(),
        Some(server_id),
        "server_id changed between connections"
    );
}

/// A published subject may contain `*` and `>` tokens (nats-server without `pedantic` routes
/// them as ordinary tokens; async-nats relies on it for consumer filters in API subjects):
/// wildcard subscriptions match them, literal ones do not.
async fn wildcard_tokens_in_published_subjects(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    raw.send(
        "SUB wc.> 1\r\nSUB wc.a 2\r\nSUB wc.* 3\r\nPUB wc.* 2\r\nhi\r\nPUB wc.a.> 2\r\nho\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = raw.next_msg().await;
        got.push((msg.subject, msg.sid));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("wc.*".to_owned(), "1".to_owned()),
            ("wc.*".to_owned(), "3".to_owned()),
            ("wc.a.>".to_owned(), "1".to_owned()),
        ]
    );
    // Nothing else arrives (`wc.a` did not match `wc.*`): the next line is the PONG.
    raw.ping().await;
}
