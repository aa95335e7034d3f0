//! JetStream pull consumers through the async-nats client, against leafd, hubd and
//! nats-server: fetch and batch with acks, counters, NAK and ack_wait redelivery, max_deliver,
//! filters, deliver policies, ephemerals, empty fetches, waiting fetches, listing and
//! deleting; and, for our servers, a durable consumer's state across a SIGKILL.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, consumer::pull, stream, AckKind, Message};
use bytes::Bytes;
use e2e::{bounded, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

server_tests!(
    fetch_and_ack_in_order,
    info_counters_after_partial_acks,
    nak_redelivers,
    ack_wait_redelivers_and_max_deliver,
    filter_subject,
    deliver_policies,
    ephemeral_consumer,
    empty_fetch_and_waiting_fetch,
    names_list_delete,
);

/// A server with stream `S` on `s.>`.
async fn setup(
    kind: ServerKind,
    dir: &StoreDir,
) -> (TestServer, jetstream::Context, stream::Stream) {
    let server = TestServer::start_jetstream(kind, dir).await;
    let js = jetstream::new(server.client().await);
    let stream = js
        .create_stream(stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    (server, js, stream)
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

fn durable(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

/// Fetches up to `n` messages (no_wait, with an `expires` so a fetch on an empty consumer waits
/// for new messages), bounded.
async fn fetch(c: &consumer::PullConsumer, n: usize, expires: Duration) -> Vec<Message> {
    let mut batch = bounded(
        "fetch request",
        c.fetch().max_messages(n).expires(expires).messages(),
    )
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

/// Fetches without expires: what is there now.
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

/// Collects exactly `n` messages through `batch` (waiting up to `expires`).
async fn batch(c: &consumer::PullConsumer, n: usize, expires: Duration) -> Vec<Message> {
    let mut b = bounded(
        "batch request",
        c.batch().max_messages(n).expires(expires).messages(),
    )
    .await
    .expect("batch");
    let mut out = Vec::new();
    bounded("batch result", async {
        while let Some(m) = b.next().await {
            out.push(m.expect("message"));
        }
    })
    .await;
    out
}

fn payloads(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

fn seqs(msgs: &[Message]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m.info().unwrap().stream_sequence)
        .collect()
}

async fn fetch_and_ack_in_order(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    for i in 0..25 {
        publish(&js, "s.a", &format!("m{i}")).await;
    }
    let c: consumer::PullConsumer = stream.create_consumer(durable("D")).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 25 {
        let msgs = fetch_now(&c, 10).await;
        assert!(
            !msgs.is_empty(),
            "fetch returned nothing after {}",
            got.len()
        );
        for m in &msgs {
            m.ack().await.unwrap();
        }
        got.extend(payloads(&msgs));
    }
    let want: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every message exactly once, in order");
    // The batch API too, with new messages.
    for i in 25..30 {
        publish(&js, "s.b", &format!("m{i}")).await;
    }
    let msgs = batch(&c, 5, Duration::from_secs(2)).await;
    assert_eq!(seqs(&msgs), [26, 27, 28, 29, 30]);
    for m in &msgs {
        m.double_ack().await.unwrap();
    }
    assert!(fetch_now(&c, 5).await.is_empty());
    let mut c = c;
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.delivered.stream_sequence, 30);
    assert_eq!(info.ack_floor.stream_sequence, 30);
}

async fn info_counters_after_partial_acks(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    for i in 0..10 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    let mut c: consumer::PullConsumer = stream.create_consumer(durable("D")).await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.num_pending, 10);
    assert_eq!(info.num_ack_pending, 0);
    let msgs = fetch_now(&c, 6).await;
    assert_eq!(seqs(&msgs), [1, 2, 3, 4, 5, 6]);
    assert_eq!(msgs[0].info().unwrap().pending, 9);
    assert_eq!(msgs[5].info().unwrap().pending, 4);
    for m in &msgs[..3] {
        m.double_ack().await.unwrap();
    }
    // Ack 5 out of order: the floor stays at 3.
    msgs[4].double_ack().await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.num_pending, 4);
    assert_eq!(info.num_ack_pending, 2);
    assert_eq!(info.delivered.consumer_sequence, 6);
    assert_eq!(info.delivered.stream_sequence, 6);
    assert_eq!(info.ack_floor.consumer_sequence, 3);
    assert_eq!(info.ack_floor.stream_sequence, 3);
    msgs[3].double_ack().await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.ack_floor.stream_sequence, 5);
    assert_eq!(info.num_ack_pending, 1);
    let streams = js
        .get_stream("S")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .consumer_count;
    assert_eq!(streams, 1);
}

async fn nak_redelivers(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    publish(&js, "s.a", "one").await;
    publish(&js, "s.a", "two").await;
    let mut c: consumer::PullConsumer = stream.create_consumer(durable("D")).await.unwrap();
    let msgs = fetch_now(&c, 1).await;
    assert_eq!(payloads(&msgs), ["one"]);
    assert_eq!(msgs[0].info().unwrap().delivered, 1);
    msgs[0].ack_with(AckKind::Nak(None)).await.unwrap();
    let mut again = batch(&c, 2, Duration::from_secs(3)).await;
    again.sort_by_key(|m| m.info().unwrap().stream_sequence);
    assert_eq!(payloads(&again), ["one", "two"]);
    assert_eq!(again[0].info().unwrap().delivered, 2, "redelivered");
    assert_eq!(again[1].info().unwrap().delivered, 1);
    again[0].double_ack().await.unwrap();
    again[1].ack_with(AckKind::Term).await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.delivered.consumer_sequence, 3);
}

async fn ack_wait_redelivers_and_max_deliver(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    publish(&js, "s.a", "x").await;
    let c: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            ack_wait: Duration::from_secs(1),
            max_deliver: 2,
            ..durable("D")
        })
        .await
        .unwrap();
    let first = fetch_now(&c, 1).await;
    assert_eq!(first[0].info().unwrap().delivered, 1);
    // Not acked: redelivered once ack_wait (1 s) has passed.
    let second = batch(&c, 1, Duration::from_secs(4)).await;
    assert_eq!(payloads(&second), ["x"]);
    assert_eq!(second[0].info().unwrap().delivered, 2);
    // max_deliver 2: never again.
    let third = fetch(&c, 1, Duration::from_millis(2500)).await;
    assert!(third.is_empty(), "delivered a third time");
}

async fn filter_subject(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    for (i, s) in ["s.a", "s.b", "s.a", "s.c", "s.a"].iter().enumerate() {
        publish(&js, s, &format!("{i}")).await;
    }
    let mut c: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: "s.a".into(),
            ..durable("A")
        })
        .await
        .unwrap();
    assert_eq!(c.info().await.unwrap().num_pending, 3);
    let msgs = fetch_now(&c, 10).await;
    assert_eq!(seqs(&msgs), [1, 3, 5]);
    publish(&js, "s.b", "x").await;
    publish(&js, "s.a", "y").await;
    let msgs = fetch_now(&c, 10).await;
    assert_eq!(seqs(&msgs), [7]);
    // A wildcard filter (async-nats puts it into the create subject: CONSUMER.CREATE.S.W.s.*).
    let w: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: "s.*".into(),
            ..durable("W")
        })
        .await
        .unwrap();
    assert_eq!(seqs(&fetch_now(&w, 10).await), [1, 2, 3, 4, 5, 6, 7]);
    // A filter outside the stream is refused.
    let e = stream
        .create_consumer(pull::Config {
            filter_subject: "other.x".into(),
            ..durable("B")
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("10093"), "{e}");
}

async fn deliver_policies(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    for (i, s) in ["s.a", "s.b", "s.a", "s.b", "s.c"].iter().enumerate() {
        publish(&js, s, &format!("{i}")).await;
    }
    let make = |name: &str, policy: consumer::DeliverPolicy, filter: &str| pull::Config {
        deliver_policy: policy,
        filter_subject: filter.into(),
        ..durable(name)
    };
    let all: consumer::PullConsumer = stream
        .create_consumer(make("ALL", consumer::DeliverPolicy::All, ""))
        .await
        .unwrap();
    assert_eq!(seqs(&fetch_now(&all, 10).await), [1, 2, 3, 4, 5]);
    let last: consumer::PullConsumer = stream
        .create_consumer(make("LAST", consumer::DeliverPolicy::Last, ""))
        .await
        .unwrap();
    assert_eq!(seqs(&fetch_now(&last, 10).await), [5]);
    let last_a: consumer::PullConsumer = stream
        .create_consumer(make("LASTA", consumer::DeliverPolicy::Last, "s.a"))
        .await
        .unwrap();
    assert_eq!(seqs(&fetch_now(&last_a, 10).await), [3]);
    let by_seq: consumer::PullConsumer = stream
        .create_consumer(make(
            "SEQ",
            consumer::DeliverPolicy::ByStartSequence { start_sequence: 4 },
            "",
        ))
        .await
        .unwrap();
    assert_eq!(seqs(&fetch_now(&by_seq, 10).await), [4, 5]);
    let lps: consumer::PullConsumer = stream
        .create_consumer(make("LPS", consumer::DeliverPolicy::LastPerSubject, "s.a"))
        .await
        .unwrap();
    // (A wildcard filter would put a wildcard into the CONSUMER.CREATE subject, which
    // leafd's publish path refuses.)
    assert_eq!(seqs(&fetch_now(&lps, 10).await), [3]);
    let new: consumer::PullConsumer = stream
        .create_consumer(make("NEW", consumer::DeliverPolicy::New, ""))
        .await
        .unwrap();
    assert!(fetch_now(&new, 10).await.is_empty());
    publish(&js, "s.a", "late").await;
    assert_eq!(seqs(&fetch_now(&new, 10).await), [6]);
    assert_eq!(seqs(&fetch_now(&lps, 10).await), [6]);
}

async fn ephemeral_consumer(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    publish(&js, "s.a", "1").await;
    publish(&js, "s.a", "2").await;
    let mut c: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let name = c.info().await.unwrap().name.clone();
    assert!(!name.is_empty());
    assert!(c.cached_info().config.durable_name.is_none());
    let msgs = fetch_now(&c, 5).await;
    assert_eq!(payloads(&msgs), ["1", "2"]);
    for m in &msgs {
        m.ack().await.unwrap();
    }
    // Deleted once inactive for its inactive_threshold.
    let mut c2: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            inactive_threshold: Duration::from_millis(500),
            ..Default::default()
        })
        .await
        .unwrap();
    let name2 = c2.info().await.unwrap().name.clone();
    bounded("ephemeral consumer expiry", async {
        loop {
            if stream.consumer_info(&name2).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

async fn empty_fetch_and_waiting_fetch(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    let c: consumer::PullConsumer = stream.create_consumer(durable("D")).await.unwrap();
    // No messages, no expires: 404 ends the fetch at once.
    let started = std::time::Instant::now();
    assert!(fetch_now(&c, 5).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    // A raw no_wait request sees the 404 status.
    let client = js.client();
    let reply = client
        .request(
            "$JS.API.CONSUMER.MSG.NEXT.S.D",
            Bytes::from_static(br#"{"batch":1,"no_wait":true}"#),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.map(u16::from), Some(404));
    // A waiting batch is woken by a message published meanwhile.
    let c2 = c.clone();
    let waiter = tokio::spawn(async move { batch(&c2, 2, Duration::from_secs(5)).await });
    bounded("the pull request waiting", async {
        loop {
            let mut c = c.clone();
            if c.info().await.unwrap().num_waiting > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    publish(&js, "s.a", "a").await;
    publish(&js, "s.a", "b").await;
    let msgs = bounded("woken batch", waiter).await.unwrap();
    assert_eq!(payloads(&msgs), ["a", "b"]);
}

async fn names_list_delete(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, stream) = setup(kind, &dir).await;
    for n in ["C1", "C2", "C3"] {
        let _: consumer::PullConsumer = stream.create_consumer(durable(n)).await.unwrap();
    }
    // Same config again: fine.
    let _: consumer::PullConsumer = stream.create_consumer(durable("C1")).await.unwrap();
    let mut names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    names.sort();
    assert_eq!(names, ["C1", "C2", "C3"]);
    let infos: Vec<consumer::Info> = stream.consumers().map(|i| i.unwrap()).collect().await;
    assert_eq!(infos.len(), 3);
    assert!(stream.delete_consumer("C2").await.unwrap().success);
    let e = stream.consumer_info("C2").await.unwrap_err();
    assert!(e.to_string().contains("consumer not found"), "{e}");
    assert!(stream.delete_consumer("C2").await.is_err());
    let count = js
        .get_stream("S")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .consumer_count;
    assert_eq!(count, 2);
    let account = js
        .client()
        .request("$JS.API.INFO", Bytes::new())
        .await
        .unwrap();
    let account: serde_json::Value = serde_json::from_slice(&account.payload).unwrap();
    assert_eq!(account["consumers"], 2, "{account}");
    // Deleting the stream deletes its consumers.
    js.delete_stream("S").await.unwrap();
    js.create_stream(stream::Config {
        name: "S".into(),
        subjects: vec!["s.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = js.get_stream("S").await.unwrap();
    let names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    assert!(names.is_empty(), "{names:?}");
}

/// A durable consumer's acks survive a SIGKILL: acked messages are not delivered again,
/// unacked ones are.
async fn ack_floor_survives_sigkill(kind: ServerKind) {
    let dir = StoreDir::new();
    let (server, js, stream) = setup(kind, &dir).await;
    for i in 1..=10 {
        publish(&js, "s.a", &format!("{i}")).await;
    }
    let c: consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            ack_wait: Duration::from_secs(1),
            ..durable("D")
        })
        .await
        .unwrap();
    let msgs = fetch_now(&c, 7).await;
    assert_eq!(seqs(&msgs), [1, 2, 3, 4, 5, 6, 7]);
    // double_ack: answered once the ack is durable.
    for m in &msgs[..5] {
        m.double_ack().await.unwrap();
    }
    let pid = server.pid();
    // SAFETY: our own child, not yet reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    drop(server);
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = jetstream::new(server.client().await);
    let stream = js.get_stream("S").await.unwrap();
    let c: consumer::PullConsumer = stream.get_consumer("D").await.unwrap();
    let mut got = seqs(&batch(&c, 5, Duration::from_secs(5)).await);
    got.sort_unstable();
    assert_eq!(
        got,
        [6, 7, 8, 9, 10],
        "acked ones not again, the others yes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_floor_survives_sigkill_leafd() {
    ack_floor_survives_sigkill(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_floor_survives_sigkill_hubd() {
    ack_floor_survives_sigkill(ServerKind::Hubd).await;
}
