//! Stream mirrors and sources end to end.
//!
//! * Local: a mirror and a filtered source of streams of the same server, with the same
//!   assertions against `leafd`, `hubd` and `nats-server` (contents, subjects, headers and the
//!   `Nats-Stream-Source` header, the mirror's sequences, configuration errors).
//! * Over a leafnode link: a `hubd` stream sourcing a `leafd` stream through the leaf's
//!   domain, with messages stored while the link is down and a `hubd` restart mid-stream;
//!   and a `hubd` stream sourcing a `nats-server` leaf's stream.
//!
//! Every wait is bounded; copies are awaited by polling stream info, never by sleeping.

use std::time::Duration;

use e2e::async_nats::jetstream::{self, stream, Context};
use e2e::async_nats::HeaderMap;
use e2e::serde_json::json;
use e2e::{bounded, bounded_for, free_port, wait_for_log, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

/// Waits until stream `name` holds `n` messages (failing if it ever holds more).
async fn await_messages(js: &Context, name: &str, n: u64, limit: Duration) {
    bounded_for(
        limit,
        &format!("stream {name} to hold {n} messages"),
        async {
            loop {
                if let Ok(mut s) = js.get_stream(name).await {
                    if let Ok(info) = s.info().await {
                        let have = info.state.messages;
                        assert!(
                            have <= n,
                            "stream {name} holds {have} messages, more than {n}"
                        );
                        if have == n {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
}

/// The `Nats-Stream-Source` header of a stored message, split into index name and sequence.
fn source_header(headers: &HeaderMap) -> (String, u64) {
    let v = headers
        .get("Nats-Stream-Source")
        .expect("a Nats-Stream-Source header")
        .to_string();
    let mut it = v.split_whitespace();
    let name = it.next().expect("index name").to_string();
    let seq = it
        .next()
        .expect("sequence")
        .parse()
        .expect("numeric sequence");
    (name, seq)
}

async fn local_mirror_and_sources(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = jetstream::new(server.client().await);
    js.create_stream(stream::Config {
        name: "ORIGIN".into(),
        subjects: vec!["o.>".into()],
        ..Default::default()
    })
    .await
    .expect("origin stream");
    for i in 1..=20u64 {
        let subject = if i % 2 == 0 { "o.a.x" } else { "o.b" };
        let mut h = HeaderMap::new();
        h.insert("X-Index", i.to_string().as_str());
        js.publish_with_headers(subject, h, format!("m{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // A gap at the origin: the mirror skips it and keeps the other sequences.
    let origin = js.get_stream("ORIGIN").await.unwrap();
    assert!(origin.delete_message(5).await.unwrap());

    // Configuration errors, with nats-server's codes.
    let m = stream::Source {
        name: "ORIGIN".into(),
        ..Default::default()
    };
    let e = js
        .create_stream(stream::Config {
            name: "BADM1".into(),
            subjects: vec!["bad.>".into()],
            mirror: Some(m.clone()),
            ..Default::default()
        })
        .await
        .expect_err("a mirror with subjects");
    assert!(e.to_string().contains("10034"), "{e}");
    let e = js
        .create_stream(stream::Config {
            name: "BADM2".into(),
            mirror: Some(m.clone()),
            sources: Some(vec![m.clone()]),
            ..Default::default()
        })
        .await
        .expect_err("a mirror with sources");
    assert!(e.to_string().contains("10031"), "{e}");

    js.create_stream(stream::Config {
        name: "MIRROR".into(),
        mirror: Some(m.clone()),
        ..Default::default()
    })
    .await
    .expect("mirror");
    js.create_stream(stream::Config {
        name: "SRC".into(),
        subjects: vec!["own.>".into()],
        sources: Some(vec![stream::Source {
            name: "ORIGIN".into(),
            filter_subject: Some("o.a.>".into()),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .await
    .expect("source");
    await_messages(&js, "MIRROR", 19, Duration::from_secs(15)).await;
    await_messages(&js, "SRC", 10, Duration::from_secs(15)).await;

    let mut mirror = js.get_stream("MIRROR").await.unwrap();
    let info = mirror.info().await.unwrap();
    assert_eq!(info.state.last_sequence, 20);
    assert_eq!(
        info.mirror.as_ref().map(|m| m.name.as_str()),
        Some("ORIGIN")
    );
    for seq in 1..=20u64 {
        let got = mirror.get_raw_message(seq).await;
        if seq == 5 {
            assert!(got.is_err(), "seq 5 was deleted at the origin");
            continue;
        }
        let msg = got.expect("mirrored message");
        let want = origin.get_raw_message(seq).await.unwrap();
        assert_eq!(msg.subject, want.subject);
        assert_eq!(msg.payload, want.payload);
        assert_eq!(
            msg.headers.get("X-Index").map(|v| v.to_string()),
            Some(seq.to_string())
        );
    }
    let e = js
        .update_stream(stream::Config {
            name: "MIRROR".into(),
            mirror: Some(stream::Source {
                name: "OTHER".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("changing a mirror");
    assert!(e.to_string().contains("10055"), "{e}");

    let mut src = js.get_stream("SRC").await.unwrap();
    let info = src.info().await.unwrap();
    assert_eq!(info.sources.len(), 1);
    assert_eq!(info.sources[0].name, "ORIGIN");
    for (i, seq) in (1..=10u64).enumerate() {
        let msg = src.get_raw_message(seq).await.expect("sourced message");
        let origin_seq = 2 * (i as u64 + 1);
        assert_eq!(msg.subject.as_str(), "o.a.x");
        assert_eq!(msg.payload, format!("m{origin_seq}").as_bytes());
        assert_eq!(
            msg.headers.get("X-Index").map(|v| v.to_string()),
            Some(origin_seq.to_string())
        );
        assert_eq!(
            source_header(&msg.headers),
            ("ORIGIN".to_string(), origin_seq)
        );
    }
    // New origin messages keep flowing; the stream's own subjects still work.
    js.publish("o.a.y", "late".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("own.1", "mine".into())
        .await
        .unwrap()
        .await
        .unwrap();
    await_messages(&js, "SRC", 12, Duration::from_secs(10)).await;
    await_messages(&js, "MIRROR", 20, Duration::from_secs(10)).await;
    let last = mirror.get_raw_message(21).await.expect("mirror keeps up");
    assert_eq!(last.payload, "late".as_bytes());

    // UPDATE adds a source.
    js.create_stream(stream::Config {
        name: "ORIGIN2".into(),
        subjects: vec!["p.>".into()],
        ..Default::default()
    })
    .await
    .expect("second origin");
    for i in 1..=3 {
        js.publish("p.x", format!("p{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js.update_stream(stream::Config {
        name: "SRC".into(),
        subjects: vec!["own.>".into()],
        sources: Some(vec![
            stream::Source {
                name: "ORIGIN".into(),
                filter_subject: Some("o.a.>".into()),
                ..Default::default()
            },
            stream::Source {
                name: "ORIGIN2".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    })
    .await
    .expect("adding a source");
    await_messages(&js, "SRC", 15, Duration::from_secs(10)).await;
    assert_eq!(src.info().await.unwrap().sources.len(), 2);
    for (i, seq) in (13..=15u64).enumerate() {
        let msg = src.get_raw_message(seq).await.expect("second source");
        assert_eq!(msg.payload, format!("p{}", i + 1).as_bytes());
        assert_eq!(
            source_header(&msg.headers),
            ("ORIGIN2".to_string(), i as u64 + 1)
        );
    }

    // Deleting the copies ends their consumers on the origins.
    js.delete_stream("SRC").await.unwrap();
    js.delete_stream("MIRROR").await.unwrap();
    bounded("the copies' consumers to go away", async {
        loop {
            let mut count = 0;
            for name in ["ORIGIN", "ORIGIN2"] {
                let mut s = js.get_stream(name).await.unwrap();
                count += s.info().await.unwrap().state.consumer_count;
            }
            if count == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mirror_and_sources_leafd() {
    local_mirror_and_sources(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mirror_and_sources_hubd() {
    local_mirror_and_sources(ServerKind::Hubd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mirror_and_sources_nats_server() {
    local_mirror_and_sources(ServerKind::NatsServer).await;
}

/// A JetStream hub with a leafnode listener on `leaf_port`, storing in `dir`.
async fn start_js_hub(kind: ServerKind, dir: &StoreDir, leaf_port: u16) -> TestServer {
    TestServer::with_config(
        kind,
        json!({
            "jetstream": { "store_dir": dir.path(), "domain": "hub" },
            "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
        }),
    )
    .await
}

/// A JetStream leaf (domain `leaf`) connecting to `port`.
async fn start_js_leaf(kind: ServerKind, dir: &StoreDir, port: u16) -> TestServer {
    let mut leafnodes = json!({
        "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{port}") }],
        "reconnect": 1,
    });
    if kind != ServerKind::NatsServer {
        // A dead link is noticed within about 3 s.
        leafnodes["reconnect"] = json!("250ms");
        leafnodes["ping_interval"] = json!("1s");
        leafnodes["ping_max"] = json!(2);
    }
    TestServer::with_config(
        kind,
        json!({
            "jetstream": { "store_dir": dir.path(), "domain": "leaf" },
            "leafnodes": leafnodes,
        }),
    )
    .await
}

/// Publishes `r<from>`..`r<to>` (pipelined, 100 PubAcks outstanding) and checks their PubAcks.
async fn publish_range(js: &Context, from: u64, to: u64) {
    let mut acks = Vec::new();
    for i in from..to {
        let ack = js
            .publish(format!("plant.m{}", i % 3), format!("r{i}").into())
            .await
            .unwrap();
        acks.push(ack);
        if acks.len() == 100 || i + 1 == to {
            for ack in acks.drain(..) {
                bounded("a PubAck", ack).await.expect("PubAck");
            }
        }
    }
}

/// Creates the leaf's stream `LOCAL` (`plant.>`).
async fn create_local(ljs: &Context) {
    ljs.create_stream(stream::Config {
        name: "LOCAL".into(),
        subjects: vec!["plant.>".into()],
        ..Default::default()
    })
    .await
    .expect("leaf stream");
}

/// Stream `LOCAL` of the leaf, reached through its JetStream domain `leaf`.
fn leaf_local() -> stream::Source {
    stream::Source {
        name: "LOCAL".into(),
        external: Some(stream::External {
            api_prefix: "$JS.leaf.API".into(),
            delivery_prefix: None,
        }),
        ..Default::default()
    }
}

async fn create_central(hjs: &Context) {
    hjs.create_stream(stream::Config {
        name: "CMIRROR".into(),
        mirror: Some(leaf_local()),
        ..Default::default()
    })
    .await
    .expect("hub stream mirroring the leaf");
    hjs.create_stream(stream::Config {
        name: "CENTRAL".into(),
        sources: Some(vec![leaf_local()]),
        ..Default::default()
    })
    .await
    .expect("hub stream sourcing the leaf");
}

/// Checks that CENTRAL holds exactly the leaf's messages `0..n`, in order, each once, and
/// that CMIRROR mirrors them with the leaf's sequences.
async fn check_central(hjs: &Context, n: u64) {
    await_messages(hjs, "CMIRROR", n, Duration::from_secs(20)).await;
    let mut mirror = hjs.get_stream("CMIRROR").await.unwrap();
    let info = mirror.info().await.unwrap();
    assert_eq!(
        (info.state.first_sequence, info.state.last_sequence),
        (1, n)
    );
    assert_eq!(info.mirror.as_ref().map(|m| m.name.as_str()), Some("LOCAL"));
    for seq in [1, n / 2, n] {
        let msg = mirror.get_raw_message(seq).await.expect("mirrored message");
        assert_eq!(msg.payload, format!("r{}", seq - 1).as_bytes());
    }
    let mut central = hjs.get_stream("CENTRAL").await.unwrap();
    let info = central.info().await.unwrap();
    assert_eq!(info.state.messages, n);
    assert_eq!(info.state.first_sequence, 1);
    assert_eq!(info.state.last_sequence, n);
    assert_eq!(info.sources.len(), 1);
    let reader = central
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("a reader");
    let mut iname = None;
    let mut seq = 0u64;
    bounded_for(Duration::from_secs(30), "reading CENTRAL back", async {
        while seq < n {
            let mut batch = reader
                .fetch()
                .max_messages(500)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .expect("a batch");
            while let Some(msg) = bounded("a stored message", batch.next()).await {
                let msg = msg.expect("a message");
                seq += 1;
                assert_eq!(msg.info().expect("js message").stream_sequence, seq);
                let i = seq - 1;
                assert_eq!(msg.subject.as_str(), format!("plant.m{}", i % 3));
                assert_eq!(msg.payload, format!("r{i}").as_bytes(), "hub seq {seq}");
                let headers = msg.headers.as_ref().expect("headers");
                let (name, origin_seq) = source_header(headers);
                assert_eq!(origin_seq, seq);
                assert!(name.starts_with("LOCAL:"), "{name}");
                assert_eq!(*iname.get_or_insert_with(|| name.clone()), name);
            }
        }
    })
    .await;
}

/// leafd stores 1,000 messages before hubd exists; hubd then sources them; leafd is killed
/// and restarted and stores 500 more, and hubd is killed (SIGKILL) while it copies 500 more:
/// after each step the hub holds exactly the leaf's messages, in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubd_sources_a_leafd_stream_across_outages_and_restarts() {
    let (leaf_store, hub_store) = (StoreDir::new(), StoreDir::new());
    let hub_leaf_port = free_port();
    let mut leaf = start_js_leaf(ServerKind::Leafd, &leaf_store, hub_leaf_port).await;
    let ljs = jetstream::new(leaf.client().await);
    create_local(&ljs).await;
    publish_range(&ljs, 0, 1000).await;

    let mut hub = start_js_hub(ServerKind::Hubd, &hub_store, hub_leaf_port).await;
    let hjs = jetstream::new(hub.client().await);
    create_central(&hjs).await;
    await_messages(&hjs, "CENTRAL", 1000, Duration::from_secs(20)).await;
    check_central(&hjs, 1000).await;

    // The origin goes away: leafd is killed (the hub hears nothing more and retries while
    // the link is down), comes back on its store and stores 500 more.
    leaf.kill();
    let leaf = start_js_leaf(ServerKind::Leafd, &leaf_store, hub_leaf_port).await;
    let ljs = jetstream::new(leaf.client().await);
    publish_range(&ljs, 1000, 1500).await;
    await_messages(&hjs, "CENTRAL", 1500, Duration::from_secs(30)).await;
    // A new consumer was created on the restarted leaf.
    wait_for_log(&hub, "consumer created on the origin", 2).await;

    // hubd dies while the leaf stores more, and comes back on the same store.
    let publisher = {
        let ljs = ljs.clone();
        tokio::spawn(async move {
            for from in (1500..2000).step_by(10) {
                publish_range(&ljs, from, from + 10).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    bounded("the hub to copy some of the new messages", async {
        loop {
            let mut central = hjs.get_stream("CENTRAL").await.unwrap();
            if central.info().await.unwrap().state.messages > 1500 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    hub.kill();
    assert!(!publisher.is_finished(), "hubd was killed mid-stream");
    drop(hjs);
    bounded("the leaf's publisher", publisher)
        .await
        .expect("publisher");
    let hub = start_js_hub(ServerKind::Hubd, &hub_store, hub_leaf_port).await;
    let hjs = jetstream::new(hub.client().await);
    await_messages(&hjs, "CENTRAL", 2000, Duration::from_secs(30)).await;
    check_central(&hjs, 2000).await;
}

/// A hubd stream sources the stream of a nats-server leaf (JetStream domain `leaf`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubd_sources_a_nats_server_leaf_stream() {
    let (leaf_store, hub_store) = (StoreDir::new(), StoreDir::new());
    let port = free_port();
    let hub = start_js_hub(ServerKind::Hubd, &hub_store, port).await;
    let leaf = start_js_leaf(ServerKind::NatsServer, &leaf_store, port).await;
    let ljs = jetstream::new(leaf.client().await);
    create_local(&ljs).await;
    publish_range(&ljs, 0, 100).await;
    let hjs = jetstream::new(hub.client().await);
    create_central(&hjs).await;
    publish_range(&ljs, 100, 200).await;
    await_messages(&hjs, "CENTRAL", 200, Duration::from_secs(20)).await;
    check_central(&hjs, 200).await;
}
