//! JetStream streams through the async-nats client, against leafd, hubd and nats-server:
//! stream management, publish acknowledgements, deduplication, expectations, message gets,
//! purges and limits; and, for our servers, durability across a SIGKILL.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use bytes::Bytes;
use e2e::{bounded, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

server_tests!(
    stream_lifecycle,
    publish_acks_and_dedup,
    expectations,
    message_gets,
    purges_and_deletes,
    limits_discard_old,
    discard_new_refuses,
    pipelined_publishes,
    msg_id_chain,
    account_info,
);

async fn context(server: &TestServer) -> jetstream::Context {
    jetstream::new(server.client().await)
}

fn config(name: &str, subjects: &[&str]) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn publish(
    js: &jetstream::Context,
    subject: &str,
    payload: &str,
) -> jetstream::publish::PublishAck {
    bounded(
        "publish ack",
        js.publish(subject.to_string(), Bytes::from(payload.to_string()))
            .await
            .expect("publish sent"),
    )
    .await
    .expect("publish acknowledged")
}

/// `$JS.API.INFO`: usage, limits and API counters; ours also report the API level (0: the
/// 2.10 feature set) and answer async-nats' `query_account`.
async fn account_info(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    js.create_stream(config("ACC", &["acc.>"])).await.unwrap();
    publish(&js, "acc.1", "hello").await;
    let reply = bounded(
        "account info",
        js.client().request("$JS.API.INFO", Bytes::new()),
    )
    .await
    .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        info["type"], "io.nats.jetstream.api.v1.account_info_response",
        "{info}"
    );
    assert_eq!(info["streams"], 1, "{info}");
    assert!(info["storage"].as_u64().unwrap() > 0, "{info}");
    assert!(info["api"]["total"].as_u64().unwrap() >= 1, "{info}");
    assert_eq!(info["api"]["errors"], 0, "{info}");
    assert!(info["limits"]["max_streams"].is_i64(), "{info}");
    if kind != ServerKind::NatsServer {
        assert_eq!(info["api"]["level"], 0, "{info}");
        let account = bounded("query_account", js.query_account()).await.unwrap();
        assert_eq!(account.streams, 1);
    }
}

async fn stream_lifecycle(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;

    let info = js
        .create_stream(config("ORDERS", &["orders.>"]))
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.name, "ORDERS");
    assert_eq!(info.state.messages, 0);
    // The same configuration again is accepted; a different one is refused (10058).
    js.create_stream(config("ORDERS", &["orders.>"]))
        .await
        .unwrap();
    let e = js
        .create_stream(config("ORDERS", &["other.>"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("10058"), "{e}");
    // Overlapping subjects are refused (10065).
    let e = js
        .create_stream(config("MORE", &["orders.eu"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("10065"), "{e}");
    js.create_stream(config("EVENTS", &["events.*"]))
        .await
        .unwrap();

    let mut names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
    names.sort();
    assert_eq!(names, ["EVENTS", "ORDERS"]);

    // Update: add a subject.
    let mut cfg = config("EVENTS", &["events.*", "alerts.>"]);
    cfg.description = Some("updated".into());
    let updated = js.update_stream(&cfg).await.unwrap();
    assert_eq!(updated.config.subjects.len(), 2);
    publish(&js, "alerts.x.y", "a").await;
    let mut events = js.get_stream("EVENTS").await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 1);

    assert!(js.delete_stream("EVENTS").await.unwrap().success);
    let e = js.get_stream("EVENTS").await.unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    // Its subjects are free again: a publish there has no stream (no responders).
    let e = js
        .publish("alerts.x.y", "b".into())
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::StreamNotFound, "{e}");
}

async fn publish_acks_and_dedup(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    js.create_stream(config("S", &["s.>"])).await.unwrap();

    for i in 1..=5u64 {
        let ack = publish(&js, "s.a", &format!("m{i}")).await;
        assert_eq!(
            (ack.stream.as_str(), ack.sequence, ack.duplicate),
            ("S", i, false)
        );
    }
    let send = |id: &'static str, body: &'static str| {
        let js = js.clone();
        async move {
            bounded(
                "ack",
                js.send_publish(
                    "s.b",
                    PublishMessage::build().payload(body.into()).message_id(id),
                )
                .await
                .unwrap(),
            )
            .await
            .unwrap()
        }
    };
    let first = send("id-1", "x").await;
    assert_eq!((first.sequence, first.duplicate), (6, false));
    let again = send("id-1", "x").await;
    assert_eq!((again.sequence, again.duplicate), (6, true));
    let other = send("id-2", "y").await;
    assert_eq!((other.sequence, other.duplicate), (7, false));
    let mut s = js.get_stream("S").await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 7);
}

async fn expectations(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    js.create_stream(config("E", &["e.>"])).await.unwrap();
    publish(&js, "e.a", "1").await; // seq 1
    publish(&js, "e.b", "2").await; // seq 2

    let send = |subject: &'static str, msg: PublishMessage| {
        let js = js.clone();
        async move { bounded("ack", js.send_publish(subject, msg).await.unwrap()).await }
    };
    let ok = send(
        "e.a",
        PublishMessage::build()
            .payload("3".into())
            .expected_last_sequence(2),
    )
    .await;
    assert_eq!(ok.unwrap().sequence, 3);
    let e = send(
        "e.a",
        PublishMessage::build()
            .payload("x".into())
            .expected_last_sequence(2),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::WrongLastSequence, "{e}");
    // Per subject: e.a was last stored at 3, e.b at 2.
    let ok = send(
        "e.b",
        PublishMessage::build()
            .payload("4".into())
            .expected_last_subject_sequence(2),
    )
    .await;
    assert_eq!(ok.unwrap().sequence, 4);
    let e = send(
        "e.a",
        PublishMessage::build()
            .payload("x".into())
            .expected_last_subject_sequence(1),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), PublishErrorKind::WrongLastSequence, "{e}");
    // 0 means "no message on this subject yet" (KV create).
    let ok = send(
        "e.new",
        PublishMessage::build()
            .payload("5".into())
            .expected_last_subject_sequence(0),
    )
    .await;
    assert_eq!(ok.unwrap().sequence, 5);
    let e = send(
        "e.b",
        PublishMessage::build()
            .payload("x".into())
            .expected_stream("OTHER"),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("expected stream does not match"),
        "{e}"
    );
}

async fn message_gets(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let mut cfg = config("G", &["g.>"]);
    cfg.allow_direct = true;
    js.create_stream(cfg).await.unwrap();
    publish(&js, "g.a", "first").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Kind", "reading");
    bounded(
        "ack",
        js.publish_with_headers("g.b", headers, "second".into())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    publish(&js, "g.a", "third").await;

    let stream = js.get_stream("G").await.unwrap();
    let m = stream.get_raw_message(2).await.unwrap();
    assert_eq!((m.subject.as_str(), m.sequence), ("g.b", 2));
    assert_eq!(m.payload, Bytes::from("second"));
    assert_eq!(m.headers.get("X-Kind").map(|v| v.as_str()), Some("reading"));
    let last = stream.get_last_raw_message_by_subject("g.a").await.unwrap();
    assert_eq!((last.sequence, last.payload), (3, Bytes::from("third")));
    let next = stream
        .raw_message_builder()
        .sequence(2)
        .next_by_subject("g.a")
        .send()
        .await
        .unwrap();
    assert_eq!(next.sequence, 3);
    assert!(stream.get_raw_message(99).await.is_err());

    let direct = stream.direct_get(1).await.unwrap();
    assert_eq!(
        (direct.subject.as_str(), direct.payload),
        ("g.a", Bytes::from("first"))
    );
    let direct = stream.direct_get_last_for_subject("g.b").await.unwrap();
    assert_eq!(direct.sequence, 2);
    assert_eq!(
        direct.headers.get("X-Kind").map(|v| v.as_str()),
        Some("reading")
    );
    assert!(stream.direct_get(99).await.is_err());
}

async fn purges_and_deletes(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    js.create_stream(config("P", &["p.>"])).await.unwrap();
    for i in 0..10 {
        publish(
            &js,
            if i % 2 == 0 { "p.even" } else { "p.odd" },
            &i.to_string(),
        )
        .await;
    }
    let mut stream = js.get_stream("P").await.unwrap();
    // Keep the newest six (5..=10), then drop the odd ones among them (6, 8, 10).
    // (Keep is done first: nats-server 2.9 miscounts `keep` after interior deletes.)
    let purged = stream.purge().keep(6).await.unwrap();
    assert_eq!(purged.purged, 4);
    let purged = stream.purge().filter("p.odd").await.unwrap();
    assert_eq!(purged.purged, 3);
    assert!(stream.delete_message(7).await.unwrap());
    assert!(stream.get_raw_message(7).await.is_err());
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.state.messages, 2);
    assert_eq!(info.state.first_sequence, 5);
    assert_eq!(info.state.last_sequence, 10);
    let purged = stream.purge().await.unwrap();
    assert_eq!(purged.purged, 2);
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    // Sequences go on after a purge.
    assert_eq!(publish(&js, "p.x", "after").await.sequence, 11);
}

async fn limits_discard_old(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let mut cfg = config("L", &["l.>"]);
    cfg.max_messages = 5;
    cfg.max_messages_per_subject = 2;
    js.create_stream(cfg).await.unwrap();
    for i in 0..4 {
        publish(&js, "l.same", &i.to_string()).await;
    }
    for i in 0..10 {
        publish(&js, &format!("l.k{i}"), "v").await;
    }
    let mut stream = js.get_stream("L").await.unwrap();
    // Limits are applied right after the append: poll (bounded) until they took effect.
    bounded("limits applied", async {
        loop {
            let info = stream.info().await.unwrap().clone();
            if info.state.messages == 5 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let first = stream.info().await.unwrap().state.first_sequence;
    assert_eq!(first, 10, "the 5 newest messages are kept");
    // The per-subject limit kept the 2 newest of l.same before they aged out.
    let same = stream.get_last_raw_message_by_subject("l.same").await;
    assert!(same.is_err(), "l.same was pushed out by max_msgs");
}

async fn discard_new_refuses(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let mut cfg = config("N", &["n.>"]);
    cfg.max_messages = 3;
    cfg.discard = stream::DiscardPolicy::New;
    js.create_stream(cfg).await.unwrap();
    for i in 0..3 {
        publish(&js, "n.a", &i.to_string()).await;
    }
    let e = bounded("refusal", js.publish("n.a", "x".into()).await.unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maximum messages exceeded"), "{e}");
}

async fn pipelined_publishes(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    js.create_stream(config("FAST", &["fast.>"])).await.unwrap();
    let mut acks = Vec::new();
    for i in 0..2000 {
        acks.push(
            js.publish(format!("fast.{}", i % 7), Bytes::from(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    let mut seqs = Vec::new();
    for ack in acks {
        seqs.push(bounded("ack", ack).await.unwrap().sequence);
    }
    assert_eq!(
        seqs,
        (1..=2000).collect::<Vec<u64>>(),
        "acks in order, gapless"
    );
    let stream = js.get_stream("FAST").await.unwrap();
    let m = stream.get_raw_message(1234).await.unwrap();
    assert_eq!(m.payload, Bytes::from("1233"));
}

/// A chain of publishes, each expecting the previous one's `Nats-Msg-Id`
/// (`Nats-Expected-Last-Msg-Id`), most without a reply and all sent without waiting (what an
/// uplink does): an acknowledged link proves every earlier link stored, in order; a link whose
/// predecessor is missing is refused, and so is everything chained after it.
async fn msg_id_chain(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(config("CHAIN", &["chain.>"]))
        .await
        .unwrap();
    let link = |i: u64, prev: &str| {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("c-{i}").as_str());
        h.insert("Nats-Expected-Last-Msg-Id", prev);
        h
    };
    let head = js
        .send_publish(
            "chain.x",
            PublishMessage::build()
                .payload("0".into())
                .message_id("c-0"),
        )
        .await
        .unwrap();
    assert_eq!(bounded("head ack", head).await.unwrap().sequence, 1);
    let mut acks = Vec::new();
    for i in 1..=500u64 {
        let prev = format!("c-{}", i - 1);
        if i % 50 == 0 {
            let msg = PublishMessage::build()
                .payload(format!("{i}").into())
                .message_id(format!("c-{i}"))
                .expected_last_message_id(&prev);
            acks.push((i, js.send_publish("chain.x", msg).await.unwrap()));
        } else {
            client
                .publish_with_headers("chain.x", link(i, &prev), format!("{i}").into())
                .await
                .unwrap();
        }
    }
    for (i, ack) in acks {
        assert_eq!(bounded("link ack", ack).await.unwrap().sequence, i + 1);
    }
    // A link whose predecessor was never stored, then one chained to it: both refused.
    client
        .publish_with_headers("chain.x", link(1000, "c-999"), "x".into())
        .await
        .unwrap();
    let broken = PublishMessage::build()
        .payload("y".into())
        .message_id("c-1001")
        .expected_last_message_id("c-1000");
    let e = bounded("refusal", js.send_publish("chain.x", broken).await.unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong last msg ID: c-500"), "{e}");
    // The chain goes on from its real end.
    let next = PublishMessage::build()
        .payload("501".into())
        .message_id("c-501")
        .expected_last_message_id("c-500");
    let ack = bounded("ack", js.send_publish("chain.x", next).await.unwrap()).await;
    assert_eq!(ack.unwrap().sequence, 502);
    let mut stream = js.get_stream("CHAIN").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 502);
    for seq in [1u64, 2, 250, 501, 502] {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.payload, Bytes::from(format!("{}", seq - 1)));
    }
}

/// SIGKILLs our server (no chance to flush anything that was not already durable).
fn sigkill(server: TestServer) {
    // SAFETY: our own child, not yet reaped.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGKILL);
    }
    drop(server);
}

/// Everything acknowledged before a SIGKILL is there after a restart on the same store.
async fn acknowledged_survives_sigkill(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let port = server.port();
    let js = context(&server).await;
    js.create_stream(config("D", &["d.>"])).await.unwrap();
    let mut acks = Vec::new();
    for i in 0..500 {
        acks.push(
            js.publish("d.x", Bytes::from(format!("payload-{i}")))
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        bounded("ack", ack).await.unwrap();
    }
    // SIGKILL: no chance to flush anything that was not already durable.
    sigkill(server);
    let _ = port;
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let mut stream = js.get_stream("D").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.state.messages, 500);
    for seq in [1u64, 250, 500] {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.payload, Bytes::from(format!("payload-{}", seq - 1)));
    }
    // And it keeps going where it left off.
    assert_eq!(publish(&js, "d.x", "next").await.sequence, 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_survives_sigkill_leafd() {
    acknowledged_survives_sigkill(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_survives_sigkill_hubd() {
    acknowledged_survives_sigkill(ServerKind::Hubd).await;
}

/// A SIGKILL while publishes with `Nats-Msg-Id`s are in flight: after the restart every
/// acknowledged message is there once, in order, nothing is stored twice, and publishing
/// any stored id again is answered as a duplicate of its first sequence (the duplicate
/// window survives the restart), while the ids that were lost are stored anew.
async fn dedup_survives_sigkill_mid_publish(kind: ServerKind) {
    const ACKED: u64 = 300;
    const IN_FLIGHT: u64 = 64;
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(config("K", &["k.>"])).await.unwrap();
    let build = |i: u64| {
        PublishMessage::build()
            .payload(format!("p-{i}").into())
            .message_id(format!("m-{i}"))
    };
    let mut acks = Vec::new();
    for i in 0..ACKED {
        acks.push(js.send_publish("k.x", build(i)).await.unwrap());
    }
    for (i, ack) in (0..).zip(acks) {
        let ack = bounded("ack", ack).await.unwrap();
        assert_eq!((ack.sequence, ack.duplicate), (i + 1, false));
    }
    // These reach the server; it is killed before (or while) it stores them.
    let mut unacked = Vec::new();
    for i in ACKED..ACKED + IN_FLIGHT {
        unacked.push(js.send_publish("k.x", build(i)).await.unwrap());
    }
    bounded("flush", client.flush()).await.unwrap();
    sigkill(server);
    drop((unacked, js, client));

    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let mut stream = js.get_stream("K").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let stored = state.messages;
    assert!(
        (ACKED..=ACKED + IN_FLIGHT).contains(&stored),
        "{stored} stored"
    );
    assert_eq!((state.first_sequence, state.last_sequence), (1, stored));
    for seq in 1..=stored {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(
            m.payload,
            Bytes::from(format!("p-{}", seq - 1)),
            "seq {seq}"
        );
    }
    // Every id again, in order: the stored ones are duplicates of their first sequence,
    // the lost ones are stored with the sequences they would have had.
    for i in 0..ACKED + IN_FLIGHT {
        let ack = bounded("ack", js.send_publish("k.x", build(i)).await.unwrap())
            .await
            .unwrap();
        assert_eq!((ack.sequence, ack.duplicate), (i + 1, i < stored), "m-{i}");
    }
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, ACKED + IN_FLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_survives_sigkill_mid_publish_leafd() {
    dedup_survives_sigkill_mid_publish(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_survives_sigkill_mid_publish_hubd() {
    dedup_survives_sigkill_mid_publish(ServerKind::Hubd).await;
}

/// After a SIGKILL the stream's last `Nats-Msg-Id` is the one stored last: a chain
/// (`Nats-Expected-Last-Msg-Id`) continues across the restart, and a message without an id
/// stored first after a restart (before the dedup rebuild was needed) ends it, as on
/// nats-server; ids stored before the kill are still duplicates.
async fn last_msg_id_survives_sigkill(kind: ServerKind) {
    let dir = StoreDir::new();
    let send = |js: jetstream::Context, msg: PublishMessage| async move {
        bounded("ack", js.send_publish("l.x", msg).await.unwrap()).await
    };
    let with_id = |i: u64| {
        PublishMessage::build()
            .payload(format!("p-{i}").into())
            .message_id(format!("a-{i}"))
    };
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    js.create_stream(config("L", &["l.>"])).await.unwrap();
    for i in 0..10 {
        send(js.clone(), with_id(i)).await.unwrap();
    }
    sigkill(server);

    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let ack = send(js.clone(), with_id(10).expected_last_message_id("a-9")).await;
    assert_eq!(ack.unwrap().sequence, 11);
    sigkill(server);

    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = context(&server).await;
    let plain = send(js.clone(), PublishMessage::build().payload("x".into())).await;
    assert_eq!(plain.unwrap().sequence, 12);
    let e = send(js.clone(), with_id(11).expected_last_message_id("a-10"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong last msg ID"), "{e}");
    let again = send(js.clone(), with_id(5)).await.unwrap();
    assert_eq!((again.sequence, again.duplicate), (6, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_msg_id_survives_sigkill_leafd() {
    last_msg_id_survives_sigkill(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_msg_id_survives_sigkill_hubd() {
    last_msg_id_survives_sigkill(ServerKind::Hubd).await;
}
