//! JetStream push consumers through the async-nats client, against leafd, hubd and
//! nats-server: a durable push consumer with explicit acks and ack_wait redelivery, a
//! deliver group split between two queue subscribers, ordered consumers (with messages
//! published while they run, and a 5,000-message consume under flow control), and the raw
//! idle heartbeat and flow control requests on the deliver subject.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, consumer::push, stream};
use bytes::Bytes;
use e2e::serde_json::json;
use e2e::{bounded, bounded_for, free_port, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

server_tests!(
    durable_explicit_acks_and_redelivery,
    deliver_group_splits_messages,
    ordered_consumer_sees_everything,
    ordered_consumer_5000_with_flow_control,
    heartbeat_and_flow_control_on_the_wire,
    push_consumer_refuses_pull_requests,
    ephemeral_without_interest_goes_away,
);

/// A server with stream `S` on `s.>`.
async fn setup(
    kind: ServerKind,
    dir: &StoreDir,
) -> (
    TestServer,
    async_nats::Client,
    jetstream::Context,
    stream::Stream,
) {
    let server = TestServer::builder(kind)
        .arg("-js")
        .arg("-sd")
        .arg(dir.path())
        .start()
        .await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    (server, client, js, stream)
}

/// Publishes `payloads` pipelined, then waits for every ack.
async fn publish_all(js: &jetstream::Context, subject: &str, payloads: Vec<Bytes>) {
    let mut acks = Vec::with_capacity(payloads.len());
    for p in payloads {
        acks.push(
            bounded("publish", js.publish(subject.to_string(), p))
                .await
                .expect("publish sent"),
        );
    }
    for ack in acks {
        bounded("publish ack", ack).await.expect("publish acked");
    }
}

fn numbered(from: usize, to: usize) -> Vec<Bytes> {
    (from..to).map(|i| Bytes::from(format!("m{i}"))).collect()
}

async fn durable_explicit_acks_and_redelivery(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, _client, js, stream) = setup(kind, &dir).await;
    publish_all(&js, "s.a", numbered(0, 10)).await;
    let c: consumer::PushConsumer = stream
        .create_consumer(push::Config {
            durable_name: Some("D".into()),
            deliver_subject: "push.d".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    let mut got = Vec::new();
    for i in 0..10 {
        let m = bounded("push message", msgs.next())
            .await
            .expect("stream open")
            .expect("message");
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
        let info = m.info().unwrap();
        assert_eq!(info.delivered, 1);
        assert_eq!(info.consumer_sequence, i + 1);
        if i < 7 {
            m.ack().await.unwrap();
        }
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "everything, in order");
    // New messages are pushed as they are stored.
    publish_all(&js, "s.b", numbered(10, 12)).await;
    let mut redelivered = Vec::new();
    let mut fresh = Vec::new();
    bounded("redeliveries and new messages", async {
        while redelivered.len() < 3 || fresh.len() < 2 {
            let m = msgs.next().await.expect("stream open").expect("message");
            let info = m.info().unwrap();
            let seq = info.stream_sequence;
            if info.delivered > 1 {
                redelivered.push(seq);
            } else {
                fresh.push(seq);
            }
            m.ack().await.unwrap();
        }
    })
    .await;
    redelivered.sort_unstable();
    redelivered.dedup();
    assert_eq!(
        redelivered,
        [8, 9, 10],
        "the unacked ones come back after ack_wait"
    );
    assert_eq!(fresh, [11, 12]);
    // Nothing is left unacknowledged.
    bounded("ack floor", async {
        loop {
            let info = js
                .get_consumer_from_stream::<consumer::push::Config, _, _>("D", "S")
                .await
                .unwrap()
                .cached_info()
                .clone();
            if info.num_ack_pending == 0 && info.ack_floor.stream_sequence == 12 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn deliver_group_splits_messages(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, client, js, stream) = setup(kind, &dir).await;
    let mut a = client
        .queue_subscribe("push.q", "grp".into())
        .await
        .unwrap();
    let mut b = client
        .queue_subscribe("push.q", "grp".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let _c: consumer::PushConsumer = stream
        .create_consumer(push::Config {
            durable_name: Some("Q".into()),
            deliver_subject: "push.q".into(),
            deliver_group: Some("grp".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    publish_all(&js, "s.q", numbered(0, 100)).await;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    bounded("both queue members", async {
        while from_a.len() + from_b.len() < 100 {
            tokio::select! {
                Some(m) = a.next() => from_a.push(m),
                Some(m) = b.next() => from_b.push(m),
            }
        }
    })
    .await;
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "split between the members: {} / {}",
        from_a.len(),
        from_b.len()
    );
    let mut all: Vec<String> = from_a
        .iter()
        .chain(from_b.iter())
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    all.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(all, want, "every message once");
    // Even with ack none, each message carries its $JS.ACK reply subject.
    assert!(from_a.iter().all(|m| m
        .reply
        .as_deref()
        .is_some_and(|r| r.starts_with("$JS.ACK.S.Q."))));
}

async fn ordered_consumer_sees_everything(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, client, js, stream) = setup(kind, &dir).await;
    publish_all(&js, "s.o", numbered(0, 50)).await;
    let c: consumer::Consumer<push::OrderedConfig> = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    let mut got = Vec::new();
    bounded("first 50", async {
        while got.len() < 50 {
            let m = msgs.next().await.expect("open").expect("message");
            got.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
    })
    .await;
    // Published while the consumer runs.
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for chunk in 0..5 {
                publish_all(&js, "s.o", numbered(50 + chunk * 10, 60 + chunk * 10)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    bounded("next 50", async {
        while got.len() < 100 {
            let m = msgs.next().await.expect("open").expect("message");
            got.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
    })
    .await;
    bounded("publisher", publisher).await.unwrap();
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every message, in order");
}

async fn ordered_consumer_5000_with_flow_control(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, client, js, stream) = setup(kind, &dir).await;
    // 5,000 messages of 1 KiB: far more than one flow control window.
    let body = vec![b'x'; 1024];
    let payloads: Vec<Bytes> = (0..5000)
        .map(|i| {
            let mut p = format!("{i:05}:").into_bytes();
            p.extend_from_slice(&body);
            Bytes::from(p)
        })
        .collect();
    let (first, rest) = payloads.split_at(2500);
    for chunk in first.chunks(500) {
        publish_all(&js, "s.f", chunk.to_vec()).await;
    }
    let c: consumer::Consumer<push::OrderedConfig> = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    let publisher = {
        let js = js.clone();
        let rest = rest.to_vec();
        tokio::spawn(async move {
            for chunk in rest.chunks(100) {
                publish_all(&js, "s.f", chunk.to_vec()).await;
            }
        })
    };
    let mut n = 0usize;
    bounded_for(Duration::from_secs(60), "5,000 ordered messages", async {
        while n < 5000 {
            let m = msgs
                .next()
                .await
                .expect("open")
                .unwrap_or_else(|e| panic!("message {n}: {e}"));
            let want = format!("{n:05}:");
            assert!(
                m.payload.starts_with(want.as_bytes()),
                "message {n} in order"
            );
            n += 1;
        }
    })
    .await;
    bounded("publisher", publisher).await.unwrap();
}

async fn heartbeat_and_flow_control_on_the_wire(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, client, js, stream) = setup(kind, &dir).await;
    let mut sub = client.subscribe("push.raw").await.unwrap();
    client.flush().await.unwrap();
    let _c: consumer::PushConsumer = stream
        .create_consumer(push::Config {
            deliver_subject: "push.raw".into(),
            flow_control: true,
            idle_heartbeat: Duration::from_millis(200),
            ..Default::default()
        })
        .await
        .unwrap();
    // Idle: a heartbeat with the last sequences.
    let hb = bounded("idle heartbeat", sub.next()).await.expect("open");
    assert_eq!(hb.status, Some(async_nats::StatusCode::IDLE_HEARTBEAT));
    assert!(hb.reply.is_none());
    let headers = hb.headers.expect("heartbeat headers");
    assert_eq!(
        headers.get("Nats-Last-Consumer").map(|v| v.as_str()),
        Some("0")
    );
    assert_eq!(
        headers.get("Nats-Last-Stream").map(|v| v.as_str()),
        Some("0")
    );
    // 4 MiB: a flow control request must come, and delivery goes on once it is answered.
    let big = Bytes::from(vec![b'y'; 64 * 1024]);
    publish_all(&js, "s.fc", vec![big; 64]).await;
    let (mut data, mut requests) = (0, 0);
    bounded_for(
        Duration::from_secs(30),
        "all data under flow control",
        async {
            while data < 64 {
                let m = sub.next().await.expect("open");
                match m.status {
                    None => data += 1,
                    Some(s) if s == async_nats::StatusCode::IDLE_HEARTBEAT => {
                        if let Some(reply) = m.reply {
                            assert!(reply.starts_with("$JS.FC."), "{reply}");
                            requests += 1;
                            client.publish(reply, Bytes::new()).await.unwrap();
                        }
                    }
                    Some(s) => panic!("unexpected status {s}"),
                }
            }
        },
    )
    .await;
    assert!(requests >= 1, "flow control requests: {requests}");
}

async fn push_consumer_refuses_pull_requests(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, client, _js, stream) = setup(kind, &dir).await;
    let _c: consumer::PushConsumer = stream
        .create_consumer(push::Config {
            durable_name: Some("P".into()),
            deliver_subject: "push.p".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let reply = bounded(
        "pull request to a push consumer",
        client.request("$JS.API.CONSUMER.MSG.NEXT.S.P", Bytes::from_static(b"1")),
    )
    .await;
    // nats-server answers 409 "Consumer is push based"; async-nats maps a status reply to an
    // error or a message carrying the status.
    match reply {
        Ok(m) => assert_eq!(m.status.map(|s| s.as_u16()), Some(409)),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

async fn ephemeral_without_interest_goes_away(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, client, js, stream) = setup(kind, &dir).await;
    let mut sub = client.subscribe("push.e").await.unwrap();
    client.flush().await.unwrap();
    let c: consumer::PushConsumer = stream
        .create_consumer(push::Config {
            deliver_subject: "push.e".into(),
            inactive_threshold: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let name = c.cached_info().name.clone();
    publish_all(&js, "s.e", numbered(0, 1)).await;
    let m = bounded("pushed while someone listens", sub.next())
        .await
        .expect("open");
    assert_eq!(&m.payload[..], b"m0");
    // While the subscription lasts the consumer stays, well past its threshold.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(js
        .get_consumer_from_stream::<push::Config, _, _>(&name, "S")
        .await
        .is_ok());
    sub.unsubscribe().await.unwrap();
    client.flush().await.unwrap();
    bounded("ephemeral deleted", async {
        loop {
            let gone = js
                .get_consumer_from_stream::<push::Config, _, _>(&name, "S")
                .await
                .is_err();
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// A leafd with JetStream under a nats-server hub: a subscriber on the hub gets the leaf's
/// push deliveries across the link under their original subject (the hub takes it back out
/// of the `$JS.ACK.…@<subject>` reply), and its acks reach the leaf's consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_across_leaf_link_to_nats_server_hub() {
    let dir = StoreDir::new();
    let port = free_port();
    let hub = TestServer::with_config(
        ServerKind::NatsServer,
        json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}") } }),
    )
    .await;
    let leaf = TestServer::builder(ServerKind::Leafd)
        .config(json!({
            "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{port}") }],
                           "reconnect": 1 }
        }))
        .arg("-js")
        .arg("-sd")
        .arg(dir.path())
        .start()
        .await;
    let leaf_js = jetstream::new(leaf.client().await);
    let stream = leaf_js
        .create_stream(stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let hub_client = hub.client().await;
    let mut sub = hub_client.subscribe("push.x").await.unwrap();
    hub_client.flush().await.unwrap();
    let _c: consumer::PushConsumer = stream
        .create_consumer(push::Config {
            durable_name: Some("X".into()),
            deliver_subject: "push.x".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    publish_all(&leaf_js, "s.x", numbered(0, 1)).await;
    let m = bounded("delivery across the link", sub.next())
        .await
        .expect("open");
    assert_eq!(m.subject.as_str(), "s.x", "original subject");
    let reply = m.reply.expect("ack reply").to_string();
    assert!(
        reply.starts_with("$JS.ACK.S.X.") && !reply.contains('@'),
        "{reply}"
    );
    hub_client.publish(reply, Bytes::new()).await.unwrap();
    hub_client.flush().await.unwrap();
    bounded("ack across the link", async {
        loop {
            let info = leaf_js
                .get_consumer_from_stream::<push::Config, _, _>("X", "S")
                .await
                .unwrap()
                .cached_info()
                .clone();
            if info.num_ack_pending == 0 && info.ack_floor.stream_sequence == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
