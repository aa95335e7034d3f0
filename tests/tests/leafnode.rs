//! Leafnode links end to end: a leaf server connected to a hub server, with `async-nats`
//! clients on both sides.
//!
//! Each scenario runs for every (leaf, hub) pair: `leafd` → `nats-server`, `nats-server` →
//! `hubd`, `leafd` → `hubd`, and `nats-server` → `nats-server` (the reference, which keeps the
//! expectations honest). Interest crosses a link asynchronously, so tests wait for it by
//! publishing probes until one arrives (bounded), never by sleeping.

use std::time::Duration;

use e2e::async_nats::{self, Client, HeaderMap, Subscriber};
use e2e::serde_json::json;
use e2e::{
    await_interest, bounded, drain_ready, free_port, next_msg, unique, wait_for_log, ServerKind,
    TestServer,
};
use futures::StreamExt;

const PROBE: &[u8] = b"probe";
const USER: &str = "leaf";
const PASS: &str = "s3cret";

/// A hub accepting leafnode connections on `port` (user/password required when `auth`).
async fn start_hub(kind: ServerKind, port: u16, auth: bool) -> TestServer {
    let mut leafnodes = json!({ "listen": format!("127.0.0.1:{port}") });
    if auth {
        leafnodes["authorization"] = json!({ "user": USER, "password": PASS });
    }
    TestServer::with_config(kind, json!({ "leafnodes": leafnodes })).await
}

/// A leaf connecting to the hub's leafnode `port` with `pass` (no credentials when `None`).
async fn start_leaf(kind: ServerKind, port: u16, pass: Option<&str>) -> TestServer {
    let url = match pass {
        Some(pass) => format!("nats-leaf://{USER}:{pass}@127.0.0.1:{port}"),
        None => format!("nats-leaf://127.0.0.1:{port}"),
    };
    let config = json!({ "leafnodes": { "remotes": [{ "url": url }], "reconnect": 1 } });
    TestServer::with_config(kind, config).await
}

/// Sends requests to `subject` until one is answered (the responder's interest crossed the
/// link); returns the reply payload.
async fn request_until_answered(client: &Client, subject: &str, payload: &str) -> Vec<u8> {
    bounded(&format!("a reply on {subject}"), async {
        loop {
            let request = client.request(subject.to_owned(), payload.to_owned().into());
            match tokio::time::timeout(Duration::from_millis(500), request).await {
                Ok(Ok(reply)) => return reply.payload.to_vec(),
                // No responders yet, or the request was lost to propagation: try again.
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// Waits until nobody answers requests on `subject` any more (the interest was withdrawn
/// across the link): requests fail with "no responders".
async fn await_no_interest(client: &Client, subject: &str) {
    bounded(&format!("interest in {subject} to be withdrawn"), async {
        loop {
            match client.request(subject.to_owned(), "x".into()).await {
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

/// Answers every request on `subject` with `prefix` + the request payload.
async fn spawn_responder(client: &Client, subject: &str, prefix: &'static str) {
    let mut sub = client.subscribe(subject.to_owned()).await.unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let mut body = prefix.as_bytes().to_vec();
                body.extend_from_slice(&msg.payload);
                let _ = client.publish(reply, body.into()).await;
            }
        }
    });
}

/// Publishes `n` numbered messages on `subject` and checks they arrive in order on `sub`.
async fn send_and_expect(publisher: &Client, subject: &str, sub: &mut Subscriber, n: usize) {
    for i in 0..n {
        publisher
            .publish(subject.to_owned(), format!("m{i}").into())
            .await
            .unwrap();
    }
    for i in 0..n {
        let msg = next_msg(sub).await;
        assert_eq!(
            msg.payload,
            format!("m{i}").as_bytes(),
            "message {i} on {subject}"
        );
    }
}

/// Pub/sub, request/reply and headers both ways, queue groups across the link, and interest
/// withdrawn after unsubscribe; the hub requires a user and password.
async fn basics(leaf_kind: ServerKind, hub_kind: ServerKind) {
    let port = free_port();
    let hub = start_hub(hub_kind, port, true).await;
    let leaf = start_leaf(leaf_kind, port, Some(PASS)).await;
    let hc = hub.client().await;
    let lc = leaf.client().await;

    // Leaf → hub and hub → leaf.
    let subject = unique("l2h");
    let mut sub = hc.subscribe(subject.clone()).await.unwrap();
    await_interest(&lc, &subject, &mut sub).await;
    send_and_expect(&lc, &subject, &mut sub, 20).await;
    let subject = unique("h2l");
    let mut sub = lc.subscribe(subject.clone()).await.unwrap();
    await_interest(&hc, &subject, &mut sub).await;
    send_and_expect(&hc, &subject, &mut sub, 20).await;

    // Request/reply both ways (the reply crosses back on the requester's inbox interest).
    let svc = unique("svc.hub");
    spawn_responder(&hc, &svc, "hub:").await;
    assert_eq!(request_until_answered(&lc, &svc, "ping").await, b"hub:ping");
    let svc = unique("svc.leaf");
    spawn_responder(&lc, &svc, "leaf:").await;
    assert_eq!(
        request_until_answered(&hc, &svc, "ping").await,
        b"leaf:ping"
    );

    // Headers across the link, both ways.
    for (publisher, subscriber) in [(&hc, &lc), (&lc, &hc)] {
        let subject = unique("hdr");
        let mut sub = subscriber.subscribe(subject.clone()).await.unwrap();
        await_interest(publisher, &subject, &mut sub).await;
        let mut headers = HeaderMap::new();
        headers.insert("X-Line", "press-7");
        publisher
            .publish_with_headers(subject.clone(), headers, "with headers".into())
            .await
            .unwrap();
        let msg = next_msg(&mut sub).await;
        assert_eq!(msg.payload, "with headers".as_bytes());
        let got = msg.headers.expect("headers crossed the link");
        assert_eq!(got.get("X-Line").map(|v| v.as_str()), Some("press-7"));
    }

    queue_groups(&hc, &lc).await;

    // Unsubscribe withdraws the interest across the link, both ways.
    for (subscriber, publisher) in [(&lc, &hc), (&hc, &lc)] {
        let subject = unique("unsub");
        let mut sub = subscriber.subscribe(subject.clone()).await.unwrap();
        await_interest(publisher, &subject, &mut sub).await;
        sub.unsubscribe().await.unwrap();
        await_no_interest(publisher, &subject).await;
    }
}

/// Queue groups across the link: every message is delivered exactly once, to a member on
/// either side; a group whose members are all on the other side is served over the link.
async fn queue_groups(hc: &Client, lc: &Client) {
    // Members on both sides, messages published on both sides.
    let subject = unique("q.mixed");
    let h1 = hc
        .queue_subscribe(subject.clone(), "workers".into())
        .await
        .unwrap();
    let l1 = lc
        .queue_subscribe(subject.clone(), "workers".into())
        .await
        .unwrap();
    let mut members = futures::stream::select(h1, l1);
    // Wait until each side knows the other's members (a probe from each side arrives
    // somewhere; with local members it may stay local, which is fine).
    for publisher in [hc, lc] {
        publisher
            .publish(subject.clone(), PROBE.into())
            .await
            .unwrap();
    }
    let n = 30;
    for i in 0..n {
        let publisher = if i % 2 == 0 { hc } else { lc };
        publisher
            .publish(subject.clone(), format!("q{i}").into())
            .await
            .unwrap();
    }
    let mut seen = vec![0u32; n];
    let mut got = 0;
    while got < n {
        let msg = bounded("queue group messages", members.next())
            .await
            .expect("queue subscriptions ended");
        if &msg.payload[..] == PROBE {
            continue;
        }
        let i: usize = std::str::from_utf8(&msg.payload[1..])
            .unwrap()
            .parse()
            .unwrap();
        seen[i] += 1;
        got += 1;
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "deliveries per message: {seen:?}"
    );

    // All members on the leaf, published on the hub: every message crosses once.
    let subject = unique("q.remote");
    let l1 = lc
        .queue_subscribe(subject.clone(), "far".into())
        .await
        .unwrap();
    let l2 = lc
        .queue_subscribe(subject.clone(), "far".into())
        .await
        .unwrap();
    let mut members = futures::stream::select(l1, l2);
    bounded("queue interest across the link", async {
        loop {
            hc.publish(subject.clone(), PROBE.into()).await.unwrap();
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), members.next()).await
            {
                return;
            }
        }
    })
    .await;
    for i in 0..n {
        hc.publish(subject.clone(), format!("r{i}").into())
            .await
            .unwrap();
    }
    let mut seen = vec![0u32; n];
    let mut got = 0;
    while got < n {
        let msg = bounded("remote queue messages", members.next())
            .await
            .expect("queue subscriptions ended");
        if &msg.payload[..] == PROBE {
            continue;
        }
        let i: usize = std::str::from_utf8(&msg.payload[1..])
            .unwrap()
            .parse()
            .unwrap();
        seen[i] += 1;
        got += 1;
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "deliveries per message: {seen:?}"
    );
    // Nothing was delivered twice: a fresh marker is the next thing either member sees.
    hc.publish(subject.clone(), "last".into()).await.unwrap();
    loop {
        let msg = bounded("the marker", members.next()).await.unwrap();
        if &msg.payload[..] != PROBE {
            assert_eq!(msg.payload, "last".as_bytes());
            break;
        }
    }
}

/// A wrong password: the leaf logs the hub's refusal and keeps retrying with backoff, and
/// both servers keep serving their clients.
async fn wrong_password(leaf_kind: ServerKind, hub_kind: ServerKind) {
    let port = free_port();
    let hub = start_hub(hub_kind, port, true).await;
    let leaf = start_leaf(leaf_kind, port, Some("wrong")).await;
    // At least two refusals: it retried.
    wait_for_log(&leaf, "Authorization Violation", 2).await;
    for server in [&hub, &leaf] {
        let client = server.client().await;
        e2e::sync(&client).await;
    }
}

/// The hub is killed and started again on the same leafnode port: the leaf reconnects by
/// itself and its subscriptions made before the outage work again.
async fn hub_restart(leaf_kind: ServerKind, hub_kind: ServerKind) {
    let port = free_port();
    let mut hub = start_hub(hub_kind, port, false).await;
    let leaf = start_leaf(leaf_kind, port, None).await;
    let lc = leaf.client().await;
    let subject = unique("survives");
    let mut sub = lc.subscribe(subject.clone()).await.unwrap();
    {
        let hc = hub.client().await;
        await_interest(&hc, &subject, &mut sub).await;
    }
    let _ = hub.terminate();
    drop(hub);
    let hub = start_hub(hub_kind, port, false).await;
    let hc = hub.client().await;
    // Interest made before the outage is announced again after the reconnect.
    await_interest(&hc, &subject, &mut sub).await;
    send_and_expect(&hc, &subject, &mut sub, 5).await;
    // And the other way, on the new hub.
    let back = unique("back");
    let mut hub_sub = hc.subscribe(back.clone()).await.unwrap();
    await_interest(&lc, &back, &mut hub_sub).await;
    send_and_expect(&lc, &back, &mut hub_sub, 5).await;
}

/// `deny_exports` and `deny_imports` on the leaf's remote: messages on denied subjects do
/// not cross the link in the denied direction, even to wildcard subscribers, while the
/// others do.
async fn deny_lists(leaf_kind: ServerKind, hub_kind: ServerKind) {
    let port = free_port();
    let hub = start_hub(hub_kind, port, false).await;
    let config = json!({ "leafnodes": { "remotes": [{
        "url": format!("nats-leaf://127.0.0.1:{port}"),
        "deny_exports": ["secret.>"],
        "deny_imports": ["cmd.>"],
    }], "reconnect": 1 } });
    let leaf = TestServer::with_config(leaf_kind, config).await;
    let hc = hub.client().await;
    let lc = leaf.client().await;

    // Leaf → hub: secret.> stays on the leaf, for exact and wildcard subscribers alike.
    let mut exact = hc.subscribe("secret.x").await.unwrap();
    let mut wide = hc.subscribe(">").await.unwrap();
    let mut open = hc.subscribe("open.x").await.unwrap();
    await_interest(&lc, "open.x", &mut open).await;
    lc.publish("secret.x", "classified".into()).await.unwrap();
    lc.publish("open.x", "public".into()).await.unwrap();
    assert_eq!(next_msg(&mut open).await.payload, "public".as_bytes());
    // Everything the hub's `>` subscriber got up to the public message: no secret.
    loop {
        let msg = next_msg(&mut wide).await;
        assert!(
            !msg.subject.starts_with("secret."),
            "{} crossed",
            msg.subject
        );
        if msg.payload == "public".as_bytes() {
            break;
        }
    }
    assert!(
        drain_ready(&mut exact).await.is_empty(),
        "secret.x crossed the link"
    );

    // Hub → leaf: cmd.> is not accepted by the leaf.
    let mut cmd = lc.subscribe("cmd.valve").await.unwrap();
    let mut wide = lc.subscribe(">").await.unwrap();
    let mut ok = lc.subscribe("ok.x").await.unwrap();
    await_interest(&hc, "ok.x", &mut ok).await;
    hc.publish("cmd.valve", "open".into()).await.unwrap();
    hc.publish("ok.x", "fine".into()).await.unwrap();
    assert_eq!(next_msg(&mut ok).await.payload, "fine".as_bytes());
    loop {
        let msg = next_msg(&mut wide).await;
        assert!(!msg.subject.starts_with("cmd."), "{} crossed", msg.subject);
        if msg.payload == "fine".as_bytes() {
            break;
        }
    }
    assert!(
        drain_ready(&mut cmd).await.is_empty(),
        "cmd.valve crossed the link"
    );
}

macro_rules! pair_tests {
    ($($name:ident: $leaf:ident -> $hub:ident),+ $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn basics() {
                    super::basics(ServerKind::$leaf, ServerKind::$hub).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn wrong_password() {
                    super::wrong_password(ServerKind::$leaf, ServerKind::$hub).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn deny_lists() {
                    super::deny_lists(ServerKind::$leaf, ServerKind::$hub).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hub_restart() {
                    super::hub_restart(ServerKind::$leaf, ServerKind::$hub).await
                }
            }
        )+
    };
}

pair_tests! {
    leafd_to_nats_server: Leafd -> NatsServer,
    nats_server_to_hubd: NatsServer -> Hubd,
    leafd_to_hubd: Leafd -> Hubd,
    nats_server_to_nats_server: NatsServer -> NatsServer,
}

/// Two leaves on one hubd: a message published on leaf A reaches a subscriber on leaf B
/// (leaf A → hub → leaf B), and a request from B is answered on A. The hub and leaf B are
/// configured with the `--leafnodes` and `--hub` flags instead of a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leaves_through_hubd() {
    let port = free_port();
    let _hub = TestServer::builder(ServerKind::Hubd)
        .arg("--leafnodes")
        .arg(format!("127.0.0.1:{port}"))
        .start()
        .await;
    let a = start_leaf(ServerKind::Leafd, port, None).await;
    let b = TestServer::builder(ServerKind::Leafd)
        .arg("--hub")
        .arg(format!("nats-leaf://127.0.0.1:{port}"))
        .start()
        .await;
    let ac = a.client().await;
    let bc = b.client().await;
    let subject = unique("a2b");
    let mut sub = bc.subscribe(subject.clone()).await.unwrap();
    await_interest(&ac, &subject, &mut sub).await;
    send_and_expect(&ac, &subject, &mut sub, 10).await;
    let svc = unique("svc.a");
    spawn_responder(&ac, &svc, "a:").await;
    assert_eq!(request_until_answered(&bc, &svc, "hi").await, b"a:hi");
}

/// Two servers that solicit each other form a loop: the `$LDS.` subject of one comes back to
/// it, and the loop is reported and the link closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_is_detected() {
    let (pa, pb) = (free_port(), free_port());
    let config = |listen: u16, remote: u16| {
        json!({ "leafnodes": {
            "listen": format!("127.0.0.1:{listen}"),
            "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{remote}") }],
        }})
    };
    let a = TestServer::with_config(ServerKind::Hubd, config(pa, pb)).await;
    let b = TestServer::with_config(ServerKind::Leafd, config(pb, pa)).await;
    bounded("a loop report", async {
        loop {
            if a.log().contains("Loop detected") || b.log().contains("Loop detected") {
                return;
            }
            // Polling log files: there is nothing to synchronise on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Both still serve clients.
    for server in [&a, &b] {
        e2e::sync(&server.client().await).await;
    }
}

/// The hub side on the wire: INFO as a nats-server 2.9 leaf needs it, CONNECT required
/// first, then INFO `connect_info` and the `LS+` burst with the hub's `$LDS.` subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubd_handshake_on_the_wire() {
    let port = free_port();
    let hub = start_hub(ServerKind::Hubd, port, true).await;
    let hc = hub.client().await;
    let subject = unique("wire");
    let _sub = hc.subscribe(subject.clone()).await.unwrap();
    e2e::sync(&hc).await;

    let raw = e2e::RawConn::open(port).await;
    let info = raw.info().clone();
    assert!(info["client_id"].as_u64().unwrap_or(0) > 0, "{info}");
    assert!(info["leafnode_urls"].is_array(), "{info}");
    assert_eq!(info["info_on_connect"], true);
    assert_eq!(info["auth_required"], true);
    assert_eq!(info["headers"], true);
    assert!(info["nonce"].as_str().is_some_and(|n| !n.is_empty()));
    let mut raw = raw;
    raw.send("LS+ foo\r\n").await;
    let lines = raw.expect_closed_within(e2e::WAIT).await;
    assert_eq!(lines, ["-ERR 'Authorization Violation'"]);

    let mut raw = e2e::RawConn::open(port).await;
    raw.send(format!(
        "CONNECT {}\r\n",
        json!({"name": "raw-leaf", "user": USER, "pass": PASS, "headers": true})
    ))
    .await;
    let line = raw.next_line().await.unwrap();
    let json = line.strip_prefix("INFO ").expect("INFO answers CONNECT");
    let second: e2e::serde_json::Value = e2e::serde_json::from_str(json.trim()).unwrap();
    assert_eq!(second["connect_info"], true);
    // The burst holds the hub's loop-detection subject and the client's subscription (and
    // possibly others of the client's, e.g. a barrier not yet unsubscribed).
    let (mut lds, mut sub) = (false, false);
    while !(lds && sub) {
        let line = raw.next_line().await.expect("the LS+ burst");
        lds |= line.starts_with("LS+ $LDS.");
        sub |= line == format!("LS+ {subject}");
        assert!(line.starts_with("LS+ ") || line == "PING", "{line}");
    }
    // Interest from the raw leaf reaches hub clients' publishes as LMSG.
    raw.send("LS+ to.leaf\r\nPING\r\n").await;
    loop {
        if raw.next_line().await.as_deref() == Some("PONG") {
            break;
        }
    }
    hc.publish("to.leaf", "x".into()).await.unwrap();
    loop {
        let line = raw.next_line().await.unwrap();
        if line.starts_with("LMSG") {
            assert_eq!(line, "LMSG to.leaf 1");
            assert_eq!(raw.next_line().await.as_deref(), Some("x"));
            break;
        }
    }
}

/// A remote pointing at a client port (not a leafnode port) is reported and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_port_is_reported() {
    let hub = TestServer::start(ServerKind::Hubd).await;
    let leaf = TestServer::builder(ServerKind::Leafd)
        .arg("--hub")
        .arg(format!("nats-leaf://127.0.0.1:{}", hub.port()))
        .start()
        .await;
    wait_for_log(&leaf, "not a leafnode port", 2).await;
}

/// JetStream across the link, the nats-server way: a nats-server hub stream sources a leafd
/// stream through leafd's JetStream domain (`$JS.leaf.API`), with the push consumer, flow
/// control and heartbeats that sourcing creates across the link. Messages stored on the leaf
/// before and after the source was set up arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_hub_sources_a_leafd_stream() {
    use e2e::async_nats::jetstream::{self, stream};
    use e2e::StoreDir;
    let (leaf_store, hub_store) = (StoreDir::new(), StoreDir::new());
    let port = free_port();
    let hub = TestServer::with_config(
        ServerKind::NatsServer,
        json!({
            "jetstream": { "store_dir": hub_store.path(), "domain": "hub" },
            "leafnodes": { "listen": format!("127.0.0.1:{port}") },
        }),
    )
    .await;
    let leaf = TestServer::with_config(
        ServerKind::Leafd,
        json!({
            "jetstream": { "store_dir": leaf_store.path(), "domain": "leaf" },
            "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{port}") }], "reconnect": 1 },
        }),
    )
    .await;
    let ljs = jetstream::new(leaf.client().await);
    ljs.create_stream(stream::Config {
        name: "LOCAL".into(),
        subjects: vec!["plant.>".into()],
        ..Default::default()
    })
    .await
    .expect("leaf stream");
    for i in 0..50 {
        ljs.publish(format!("plant.m{}", i % 3), format!("r{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let hjs = jetstream::new(hub.client().await);
    let source = stream::Source {
        name: "LOCAL".into(),
        external: Some(stream::External {
            api_prefix: "$JS.leaf.API".into(),
            delivery_prefix: None,
        }),
        ..Default::default()
    };
    hjs.create_stream(stream::Config {
        name: "CENTRAL".into(),
        sources: Some(vec![source]),
        ..Default::default()
    })
    .await
    .expect("hub stream sourcing the leaf");
    for i in 50..100 {
        ljs.publish(format!("plant.m{}", i % 3), format!("r{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    bounded("the hub stream to hold the leaf's 100 messages", async {
        loop {
            let n = hjs
                .get_stream("CENTRAL")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages;
            if n >= 100 {
                assert_eq!(n, 100, "duplicates on the hub");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let central = hjs.get_stream("CENTRAL").await.unwrap();
    for seq in 1..=100u64 {
        let msg = central.get_raw_message(seq).await.expect("hub message");
        let i = seq - 1;
        assert_eq!(msg.subject.as_str(), format!("plant.m{}", i % 3));
        assert_eq!(msg.payload, format!("r{i}").as_bytes());
    }
}

/// leafd is configured with one server of a two-node nats-server hub cluster; the hub
/// announces both in `leafnode_urls`. When the configured server stops, leafd moves to the
/// other one by itself, and traffic flows again in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_fails_over_to_announced_cluster_urls() {
    let leaf_ports = [free_port(), free_port()];
    let route_ports = [free_port(), free_port()];
    let mut nodes = Vec::new();
    for i in 0..2 {
        let config = json!({
            "server_name": format!("hub{i}"),
            "cluster": {
                "name": "hubs",
                "listen": format!("127.0.0.1:{}", route_ports[i]),
                "routes": [format!("nats-route://127.0.0.1:{}", route_ports[1 - i])],
            },
            "leafnodes": { "listen": format!("127.0.0.1:{}", leaf_ports[i]) },
        });
        nodes.push(TestServer::with_config(ServerKind::NatsServer, config).await);
    }
    // Only hub0 is configured.
    let leafd = start_leaf(ServerKind::Leafd, leaf_ports[0], None).await;
    wait_for_log(&leafd, "leafnode link established", 1).await;
    let lc = leafd.client().await;
    let survivor = nodes.pop().expect("hub1");
    let hc = survivor.client().await;
    let subject = unique("failover");
    let mut hub_sub = hc.subscribe(subject.clone()).await.unwrap();
    await_interest(&lc, &subject, &mut hub_sub).await;
    // hub0 announces hub1's leafnode URL once their route is up (in its INFO, or in a new
    // INFO sent to the connected leaf): stop hub0 only after that.
    let mut hub0 = nodes.pop().expect("hub0");
    wait_for_log(&hub0, "Route connection created", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub0.terminate();
    wait_for_log(&leafd, "leafnode link established", 2).await;
    assert!(
        leafd
            .log()
            .contains(&format!("url=nats-leaf://127.0.0.1:{}", leaf_ports[1])),
        "leafd did not move to the announced hub1:\n{}",
        leafd.log()
    );
    // Both directions work through hub1.
    let subject = unique("after");
    let mut hub_sub = hc.subscribe(subject.clone()).await.unwrap();
    await_interest(&lc, &subject, &mut hub_sub).await;
    let back = unique("back");
    let mut leaf_sub = lc.subscribe(back.clone()).await.unwrap();
    await_interest(&hc, &back, &mut leaf_sub).await;
}

/// A WAN path that dies without a reset (the proxy freezes it): leafd notices first, through
/// its own pings, and reconnects; hubd replaces the old connection from the same leaf server
/// at once, instead of keeping it (holding the leaf's interest, buffering messages for it)
/// until its own pings give up a minute later. Traffic flows over the new link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubd_replaces_a_stale_leaf_connection() {
    let (port, mport) = (free_port(), free_port());
    let hub = TestServer::builder(ServerKind::Hubd)
        .config(json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}") } }))
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    let wan = e2e::proxy::TcpProxy::start(port).await;
    let leaf_config = json!({ "leafnodes": {
        "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{}", wan.port()) }],
        "reconnect": "250ms", "ping_interval": "1s", "ping_max": 2,
    }});
    let leaf = TestServer::with_config(ServerKind::Leafd, leaf_config).await;
    let (hc, lc) = (hub.client().await, leaf.client().await);
    let mut sub = lc.subscribe("stale.x").await.unwrap();
    await_interest(&hc, "stale.x", &mut sub).await;

    wan.freeze();
    wait_for_log(
        &hub,
        "replacing the connection from the same leaf server",
        1,
    )
    .await;
    let leafz = bounded("hubd to list one leaf", async {
        loop {
            let (_, leafz) = e2e::http_get(mport, "/leafz").await;
            if leafz["leafnodes"] == json!(1) {
                return leafz;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(leafz["leafs"].as_array().map(Vec::len), Some(1), "{leafz}");
    assert_eq!(wan.connections(), 2, "leafd reconnected once");
    await_interest(&hc, "stale.x", &mut sub).await;
    send_and_expect(&hc, "stale.x", &mut sub, 100).await;
    // The old connection's interest (the leaf's own `$LDS.` subject among it) is withdrawn
    // before the new one is told what the hub wants: the leaf must not see a loop.
    let log = leaf.log();
    assert!(!log.contains("Loop detected"), "{log}");
    assert_eq!(wan.connections(), 2, "no further reconnect");
}
