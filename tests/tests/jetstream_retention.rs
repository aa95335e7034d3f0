//! Interest and workqueue retention through the async-nats client, against leafd, hubd and
//! nats-server (so the three are seen to behave the same): interest with 0, 1 and 2
//! consumers, filtered consumers, ack policy none, a deleted consumer releasing its messages;
//! workqueue removal on ack, the consumer rules and their error codes, and what a restart
//! keeps.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, consumer::pull, stream, Message};
use bytes::Bytes;
use e2e::{bounded, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;
use serde_json::{json, Value};

server_tests!(
    interest_without_consumers_keeps_nothing,
    interest_one_consumer,
    interest_two_consumers_both_ack,
    interest_filtered_consumers,
    interest_ack_none_and_ack_all,
    interest_deleted_consumer_releases,
    interest_inactive_ephemeral_releases,
    workqueue_ack_removes,
    workqueue_many_acks,
    workqueue_consumer_rules,
    workqueue_restart_keeps_unacked,
);

/// A server with stream `S` on `s.>` with `retention`.
async fn setup(
    kind: ServerKind,
    dir: &StoreDir,
    retention: stream::RetentionPolicy,
) -> (TestServer, jetstream::Context, stream::Stream) {
    let server = TestServer::start_jetstream(kind, dir).await;
    let js = jetstream::new(server.client().await);
    let stream = create(&js, retention).await;
    (server, js, stream)
}

async fn create(js: &jetstream::Context, retention: stream::RetentionPolicy) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "S".into(),
        subjects: vec!["s.>".into()],
        retention,
        ..Default::default()
    })
    .await
    .expect("stream created")
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &str) -> u64 {
    bounded(
        "publish ack",
        js.publish(subject.to_string(), Bytes::from(payload.to_string()))
            .await
            .expect("publish sent"),
    )
    .await
    .expect("publish acknowledged")
    .sequence
}

fn durable(name: &str, filter: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        filter_subject: filter.into(),
        ..Default::default()
    }
}

async fn consumer(stream: &stream::Stream, config: pull::Config) -> consumer::PullConsumer {
    stream
        .create_consumer(config)
        .await
        .expect("consumer created")
}

/// Fetches what is there now (up to `n`).
async fn fetch_now(c: &consumer::PullConsumer, n: usize) -> Vec<Message> {
    let mut batch = bounded("fetch request", c.fetch().max_messages(n).messages())
        .await
        .expect("fetch");
    let mut out = Vec::new();
    bounded("fetch result", async {
        while let Some(m) = batch.next().await {
            out.push(m.expect("message"));
        }
    })
    .await;
    out
}

fn seqs(msgs: &[Message]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m.info().expect("jetstream message").stream_sequence)
        .collect()
}

/// Acks `m` as a request: answered once the ack (and what it removes) is applied.
async fn ack(m: &Message) {
    bounded("double ack", m.double_ack())
        .await
        .expect("ack answered");
}

/// The stream's (messages, first_seq, last_seq).
async fn state(stream: &mut stream::Stream) -> (u64, u64, u64) {
    let info = bounded("stream info", stream.info())
        .await
        .expect("stream info");
    (
        info.state.messages,
        info.state.first_sequence,
        info.state.last_sequence,
    )
}

/// Waits (bounded) until the stream holds `want` messages; returns the final state.
async fn wait_messages(stream: &mut stream::Stream, want: u64) -> (u64, u64, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = state(stream).await;
        if s.0 == want || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The consumer's (num_pending, num_ack_pending, ack floor stream seq).
async fn counters(c: &mut consumer::PullConsumer) -> (u64, usize, u64) {
    let info = bounded("consumer info", c.info())
        .await
        .expect("consumer info");
    (
        info.num_pending,
        info.num_ack_pending,
        info.ack_floor.stream_sequence,
    )
}

/// Sends a raw `$JS.API.` request and returns the JSON answer.
async fn api(server: &TestServer, subject: &str, body: Value) -> Value {
    e2e::js_api(&server.client().await, subject, body).await
}

/// Creates consumer `name` on `S` through the raw API; returns the error code (0: created).
async fn raw_create(server: &TestServer, name: &str, config: Value) -> u64 {
    let mut config = config;
    config["durable_name"] = json!(name);
    let answer = api(
        server,
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.S.{name}"),
        json!({ "stream_name": "S", "config": config }),
    )
    .await;
    answer["error"]["err_code"].as_u64().unwrap_or(0)
}

async fn interest_without_consumers_keeps_nothing(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    for i in 1..=3 {
        assert_eq!(publish(&js, "s.a", &format!("{i}")).await, i, "PubAck seq");
    }
    assert_eq!(
        state(&mut stream).await,
        (0, 4, 3),
        "nothing kept, seq advanced"
    );
    // A consumer created now sees only what comes after.
    let c = consumer(&stream, durable("C", "")).await;
    assert_eq!(publish(&js, "s.a", "4").await, 4);
    assert_eq!(state(&mut stream).await, (1, 4, 4));
    assert_eq!(seqs(&fetch_now(&c, 10).await), [4]);
}

async fn interest_one_consumer(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    let mut c = consumer(&stream, durable("C", "")).await;
    for i in 1..=3 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    assert_eq!(state(&mut stream).await, (3, 1, 3));
    let msgs = fetch_now(&c, 3).await;
    assert_eq!(seqs(&msgs), [1, 2, 3]);
    assert_eq!(
        state(&mut stream).await,
        (3, 1, 3),
        "delivered is not acked"
    );
    ack(&msgs[1]).await;
    assert_eq!(
        state(&mut stream).await,
        (2, 1, 3),
        "an interior ack removes"
    );
    assert_eq!(counters(&mut c).await, (0, 2, 0));
    ack(&msgs[0]).await;
    assert_eq!(state(&mut stream).await, (1, 3, 3));
    assert_eq!(counters(&mut c).await, (0, 1, 2));
    ack(&msgs[2]).await;
    assert_eq!(state(&mut stream).await, (0, 4, 3));
    assert_eq!(counters(&mut c).await, (0, 0, 3));
}

async fn interest_two_consumers_both_ack(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    let a = consumer(&stream, durable("A", "")).await;
    let b = consumer(&stream, durable("B", "")).await;
    for i in 1..=2 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    let from_a = fetch_now(&a, 2).await;
    for m in &from_a {
        ack(m).await;
    }
    assert_eq!(state(&mut stream).await, (2, 1, 2), "B has not acked yet");
    let from_b = fetch_now(&b, 2).await;
    assert_eq!(seqs(&from_b), [1, 2]);
    ack(&from_b[0]).await;
    assert_eq!(state(&mut stream).await, (1, 2, 2), "both acked 1");
    ack(&from_b[1]).await;
    assert_eq!(state(&mut stream).await, (0, 3, 2));
}

async fn interest_filtered_consumers(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    let a = consumer(&stream, durable("A", "s.a")).await;
    let b = consumer(&stream, durable("B", "s.b")).await;
    assert_eq!(publish(&js, "s.a", "1").await, 1);
    assert_eq!(publish(&js, "s.b", "2").await, 2);
    assert_eq!(publish(&js, "s.c", "3").await, 3, "nobody's: not kept");
    assert_eq!(publish(&js, "s.a", "4").await, 4);
    assert_eq!(state(&mut stream).await, (3, 1, 4));
    let from_a = fetch_now(&a, 10).await;
    assert_eq!(seqs(&from_a), [1, 4]);
    ack(&from_a[0]).await;
    assert_eq!(state(&mut stream).await, (2, 2, 4), "B never wanted s.a");
    let from_b = fetch_now(&b, 10).await;
    assert_eq!(seqs(&from_b), [2]);
    ack(&from_b[0]).await;
    assert_eq!(state(&mut stream).await, (1, 4, 4));
    ack(&from_a[1]).await;
    assert_eq!(state(&mut stream).await, (0, 5, 4));
}

async fn interest_ack_none_and_ack_all(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    let none = consumer(
        &stream,
        pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..durable("N", "")
        },
    )
    .await;
    let mut all = consumer(
        &stream,
        pull::Config {
            ack_policy: consumer::AckPolicy::All,
            ..durable("L", "")
        },
    )
    .await;
    for i in 1..=4 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    let from_all = fetch_now(&all, 4).await;
    assert_eq!(seqs(&from_all), [1, 2, 3, 4]);
    // Acking 3 with ack policy all acknowledges 1..=3; N still has them all.
    ack(&from_all[2]).await;
    assert_eq!(state(&mut stream).await, (4, 1, 4));
    assert_eq!(counters(&mut all).await, (0, 1, 3));
    // Delivery to N (ack policy none) is its ack.
    assert_eq!(seqs(&fetch_now(&none, 4).await), [1, 2, 3, 4]);
    assert_eq!(wait_messages(&mut stream, 1).await, (1, 4, 4));
    ack(&from_all[3]).await;
    assert_eq!(state(&mut stream).await, (0, 5, 4));
}

async fn interest_deleted_consumer_releases(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    let a = consumer(&stream, durable("A", "")).await;
    let _b = consumer(&stream, durable("B", "s.b")).await;
    publish(&js, "s.a", "1").await;
    publish(&js, "s.b", "2").await;
    publish(&js, "s.b", "3").await;
    let from_a = fetch_now(&a, 3).await;
    for m in &from_a {
        ack(m).await;
    }
    assert_eq!(state(&mut stream).await, (2, 2, 3), "B holds s.b");
    assert!(stream.delete_consumer("B").await.expect("deleted").success);
    assert_eq!(wait_messages(&mut stream, 0).await, (0, 4, 3));
    // Deleting the last consumer of held messages releases them too.
    publish(&js, "s.b", "4").await;
    assert_eq!(state(&mut stream).await, (1, 4, 4));
    assert!(stream.delete_consumer("A").await.expect("deleted").success);
    assert_eq!(wait_messages(&mut stream, 0).await, (0, 5, 4));
}

/// An ephemeral consumer that goes away after its inactive threshold releases its messages.
async fn interest_inactive_ephemeral_releases(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::Interest).await;
    let _e = consumer(
        &stream,
        pull::Config {
            ack_policy: consumer::AckPolicy::Explicit,
            inactive_threshold: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    publish(&js, "s.a", "1").await;
    publish(&js, "s.a", "2").await;
    assert_eq!(state(&mut stream).await, (2, 1, 2));
    assert_eq!(wait_messages(&mut stream, 0).await, (0, 3, 2));
}

async fn workqueue_ack_removes(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::WorkQueue).await;
    for i in 1..=3 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    assert_eq!(
        state(&mut stream).await,
        (3, 1, 3),
        "kept without consumers"
    );
    let mut c = consumer(&stream, durable("W", "")).await;
    let msgs = fetch_now(&c, 2).await;
    assert_eq!(seqs(&msgs), [1, 2]);
    for m in &msgs {
        ack(m).await;
    }
    assert_eq!(state(&mut stream).await, (1, 3, 3));
    assert_eq!(counters(&mut c).await, (1, 0, 2));
    // A NAK keeps it; the next ack removes it.
    let third = fetch_now(&c, 1).await;
    assert_eq!(seqs(&third), [3]);
    bounded("nak", third[0].ack_with(jetstream::AckKind::Nak(None)))
        .await
        .expect("nak sent");
    // The NAK is not answered: wait for the redelivery.
    let mut again = Vec::new();
    bounded("redelivery after nak", async {
        let mut batch = c
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .expect("fetch");
        while let Some(m) = batch.next().await {
            again.push(m.expect("message"));
        }
    })
    .await;
    assert_eq!(seqs(&again), [3]);
    assert_eq!(state(&mut stream).await, (1, 3, 3));
    ack(&again[0]).await;
    assert_eq!(state(&mut stream).await, (0, 4, 3));
    assert_eq!(counters(&mut c).await, (0, 0, 3));
}

/// Many messages, pipelined publishes and plain (unanswered) acks from two filtered
/// consumers: the workqueue ends empty and each consumer got exactly its share.
async fn workqueue_many_acks(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::WorkQueue).await;
    const N: u64 = 600;
    let mut acks = Vec::new();
    for i in 0..N {
        let subject = if i % 3 == 0 { "s.x" } else { "s.y" };
        acks.push(
            js.publish(subject, Bytes::from(i.to_string()))
                .await
                .expect("publish sent"),
        );
    }
    for a in acks {
        bounded("publish ack", a).await.expect("acknowledged");
    }
    assert_eq!(state(&mut stream).await, (N, 1, N));
    let x = consumer(&stream, durable("X", "s.x")).await;
    let y = consumer(&stream, durable("Y", "s.y")).await;
    let mut got = 0u64;
    for c in [&x, &y] {
        loop {
            let batch = fetch_now(c, 128).await;
            if batch.is_empty() {
                break;
            }
            for m in &batch {
                bounded("ack", m.ack()).await.expect("ack sent");
            }
            got += batch.len() as u64;
        }
    }
    assert_eq!(got, N);
    assert_eq!(wait_messages(&mut stream, 0).await, (0, N + 1, N));
}

async fn workqueue_consumer_rules(kind: ServerKind) {
    let dir = StoreDir::new();
    let (server, _js, _stream) = setup(kind, &dir, stream::RetentionPolicy::WorkQueue).await;
    let explicit = |extra: Value| {
        let mut c = json!({ "ack_policy": "explicit", "deliver_policy": "all" });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    assert_eq!(
        raw_create(&server, "P", json!({ "ack_policy": "none" })).await,
        10084,
        "pull needs acks"
    );
    assert_eq!(
        raw_create(&server, "L", explicit(json!({ "ack_policy": "all" }))).await,
        10098,
        "explicit acks"
    );
    assert_eq!(
        raw_create(&server, "N", explicit(json!({ "deliver_policy": "new" }))).await,
        10101,
        "deliver all"
    );
    assert_eq!(raw_create(&server, "U1", explicit(json!({}))).await, 0);
    assert_eq!(
        raw_create(&server, "U2", explicit(json!({}))).await,
        10099,
        "one unfiltered consumer"
    );
    assert_eq!(
        raw_create(&server, "F1", explicit(json!({ "filter_subject": "s.a" }))).await,
        10100,
        "an unfiltered consumer takes everything"
    );
    let deleted = api(&server, "$JS.API.CONSUMER.DELETE.S.U1", json!({})).await;
    assert_eq!(deleted["success"], json!(true), "{deleted}");
    assert_eq!(
        raw_create(
            &server,
            "F1",
            explicit(json!({ "filter_subject": "s.a.>" }))
        )
        .await,
        0
    );
    assert_eq!(
        raw_create(
            &server,
            "F2",
            explicit(json!({ "filter_subject": "s.a.b" }))
        )
        .await,
        10100,
        "overlapping filters"
    );
    assert_eq!(
        raw_create(&server, "F3", explicit(json!({ "filter_subject": "s.b" }))).await,
        0
    );
    // The same consumer again (an idempotent create) is not a second consumer.
    assert_eq!(
        raw_create(&server, "F3", explicit(json!({ "filter_subject": "s.b" }))).await,
        0
    );
    // Retention cannot change.
    let update = api(
        &server,
        "$JS.API.STREAM.UPDATE.S",
        json!({ "name": "S", "subjects": ["s.>"], "retention": "limits", "storage": "file" }),
    )
    .await;
    assert!(update["error"]["err_code"].as_u64().is_some(), "{update}");
}

/// Unacked messages of a workqueue survive a restart, acked ones stay gone (leafd and hubd
/// are killed with SIGKILL: acks answered as requests are durable; nats-server, which does
/// not sync before it answers, is stopped cleanly).
async fn workqueue_restart_keeps_unacked(kind: ServerKind) {
    let dir = StoreDir::new();
    let (mut server, js, mut stream) = setup(kind, &dir, stream::RetentionPolicy::WorkQueue).await;
    for i in 1..=6 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    let c = consumer(
        &stream,
        pull::Config {
            ack_wait: Duration::from_secs(1),
            ..durable("W", "")
        },
    )
    .await;
    let msgs = fetch_now(&c, 4).await;
    assert_eq!(seqs(&msgs), [1, 2, 3, 4]);
    ack(&msgs[0]).await;
    ack(&msgs[2]).await;
    assert_eq!(state(&mut stream).await, (4, 2, 6));
    match kind {
        ServerKind::NatsServer => {
            server.terminate();
        }
        _ => server.kill(),
    }
    drop(server);
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = jetstream::new(server.client().await);
    let mut stream = bounded("stream after restart", js.get_stream("S"))
        .await
        .expect("stream survives");
    assert_eq!(
        state(&mut stream).await,
        (4, 2, 6),
        "acked gone, unacked kept"
    );
    let c: consumer::PullConsumer = stream.get_consumer("W").await.expect("consumer survives");
    // 2 and 4 come again after ack_wait, 5 and 6 for the first time.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 4 && tokio::time::Instant::now() < deadline {
        let batch = fetch_now(&c, 4).await;
        for m in &batch {
            ack(m).await;
        }
        got.extend(seqs(&batch));
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    got.sort_unstable();
    assert_eq!(got, [2, 4, 5, 6]);
    assert_eq!(state(&mut stream).await, (0, 7, 6));
}
