//! Store-and-forward uplinks end to end: `leafd` buffers messages published on the gateway
//! in its local JetStream and forwards them over its leaf link into a stream on the hub,
//! in order and exactly once, through outages, link cuts, hub restarts and leafd crashes.
//!
//! Every scenario runs against a real nats-server 2.9 hub with JetStream and against hubd.
//! The hubs have a JetStream domain (`hub`) which most scenarios address; one runs without
//! any. Checks compare every message on the hub with what was published: subject, payload,
//! headers, order, no duplicates.

use std::time::Duration;

use e2e::async_nats::{jetstream, HeaderMap};
use e2e::netns::NetNs;
use e2e::proxy::{Impairment, TcpProxy};
use e2e::serde_json::json;
use e2e::uplink::*;
use e2e::{bounded_for, free_port, http_get, ServerKind, StoreDir, TestServer};

/// Messages published while the link is up arrive at the hub stream, which leafd created
/// through the hub's plain `$JS.API` (no domain configured on the uplink).
async fn forwards_live_traffic(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let leafd = start_leafd(&leaf_store, leaf_port, json!({ "hub_domain": null }), None).await;
    let hub_client = client(&hub).await;
    let leaf_client = client(&leafd).await;
    publish_range(&leaf_client, 0, 2000).await;
    await_hub_count(&hub_client, 2000, Duration::from_secs(60)).await;
    check_hub_stream(&hub_client, 2000).await;
}

/// 100,000 messages published while the hub is down reach it, exactly once and in order,
/// once it starts.
async fn replays_offline_backlog(kind: ServerKind) {
    const N: u64 = 100_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let leafd = start_leafd(&leaf_store, leaf_port, json!({}), None).await;
    let leaf_client = client(&leafd).await;
    publish_range(&leaf_client, 0, N).await;
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    await_hub_count(&hub_client, N, Duration::from_secs(240)).await;
    check_hub_stream(&hub_client, N).await;
}

/// The link is cut again and again by a proxy, and the hub is stopped and restarted, while
/// a backlog is replayed and new messages keep arriving: still exactly once and in order.
async fn survives_link_cuts_and_hub_restarts(kind: ServerKind) {
    const BACKLOG: u64 = 20_000;
    const LIVE: u64 = 5_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let mut hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_port = hub.port();
    let proxy = TcpProxy::start(leaf_port).await;
    proxy.set_up(false);
    let leafd = start_leafd(&leaf_store, proxy.port(), json!({}), None).await;
    let leaf_client = client(&leafd).await;
    publish_range(&leaf_client, 0, BACKLOG).await;
    proxy.set_up(true);

    let publisher = {
        let leaf_client = leaf_client.clone();
        tokio::spawn(async move {
            for chunk in 0..LIVE / 500 {
                publish_range(
                    &leaf_client,
                    BACKLOG + chunk * 500,
                    BACKLOG + (chunk + 1) * 500,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(..250))).await;
        proxy.cut();
        if round == 4 {
            // The hub goes away and comes back on the same ports and store. nats-server
            // acknowledges before its data reaches the disk, so it gets SIGTERM (a crash
            // could lose what it acknowledged, which no leaf can detect); hubd fsyncs before
            // acknowledging, so it gets SIGKILL.
            if kind == ServerKind::NatsServer {
                hub.terminate();
            } else {
                hub.kill();
            }
            drop(hub);
            tokio::time::sleep(Duration::from_millis(300)).await;
            hub = start_hub(kind, &hub_store, leaf_port, Some(hub_port)).await;
        }
    }
    bounded_for(Duration::from_secs(120), "the live publisher", publisher)
        .await
        .expect("publisher task");
    let hub_client = client(&hub).await;
    await_hub_count(&hub_client, BACKLOG + LIVE, Duration::from_secs(180)).await;
    check_hub_stream(&hub_client, BACKLOG + LIVE).await;
    assert!(proxy.connections() >= 8, "the link was not cut as planned");
}

/// leafd is killed with SIGKILL at random moments, 20 times, while it replays a backlog and
/// takes new messages: after each restart it goes on where the hub stands.
async fn survives_leafd_sigkills(kind: ServerKind) {
    const ROUNDS: u64 = 20;
    const PER_ROUND: u64 = 1_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    let proxy = TcpProxy::start(leaf_port).await;
    proxy.set_up(false);
    let mut leafd = start_leafd(&leaf_store, proxy.port(), json!({}), None).await;
    let leaf_port_client = leafd.port();
    publish_range(&client(&leafd).await, 0, 10_000).await;
    proxy.set_up(true);
    let mut published = 10_000;
    for _ in 0..ROUNDS {
        publish_range(&client(&leafd).await, published, published + PER_ROUND).await;
        published += PER_ROUND;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(..400))).await;
        leafd.kill();
        drop(leafd);
        leafd = start_leafd(&leaf_store, proxy.port(), json!({}), Some(leaf_port_client)).await;
    }
    await_hub_count(&hub_client, published, Duration::from_secs(180)).await;
    check_hub_stream(&hub_client, published).await;
}

/// The worst moment for a crash: the hub stored and acknowledged messages but leafd never
/// recorded it (its cursor is written once an hour here), and leafd stays down for longer
/// than the hub stream's duplicate window (1 s here), so the hub no longer recognises the
/// resends. leafd reads back what the hub holds and sends nothing twice.
async fn no_duplicates_after_outage_beyond_duplicate_window(kind: ServerKind) {
    const N: u64 = 5_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    let js = jetstream::new(hub_client.clone());
    js.create_stream(jetstream::stream::Config {
        name: HUB_STREAM.to_string(),
        subjects: vec![format!("{PREFIX}.sensors.>")],
        duplicate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .expect("hub stream");
    let extra = json!({ "cursor_interval": "1h" });
    let mut leafd = start_leafd(&leaf_store, leaf_port, extra.clone(), None).await;
    let port = leafd.port();
    publish_range(&client(&leafd).await, 0, N).await;
    await_hub_count(&hub_client, N, Duration::from_secs(60)).await;
    leafd.kill();
    drop(leafd);
    // Longer than the duplicate window: the hub forgets the message ids.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let leafd = start_leafd(&leaf_store, leaf_port, extra, Some(port)).await;
    publish_range(&client(&leafd).await, N, N + 100).await;
    await_hub_count(&hub_client, N + 100, Duration::from_secs(60)).await;
    check_hub_stream(&hub_client, N + 100).await;
}

/// Without the hub's API (here: a `hub_domain` the hub does not have), a crash before the
/// cursor was written is still covered within the hub's duplicate window: every resend
/// carries its original message id.
async fn no_duplicates_within_window_without_hub_api(kind: ServerKind) {
    const N: u64 = 3_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    jetstream::new(hub_client.clone())
        .create_stream(jetstream::stream::Config {
            name: HUB_STREAM.to_string(),
            subjects: vec![format!("{PREFIX}.sensors.>")],
            ..Default::default()
        })
        .await
        .expect("hub stream");
    let extra =
        json!({ "cursor_interval": "1h", "hub_domain": "elsewhere", "create_hub_stream": false });
    let mut leafd = start_leafd(&leaf_store, leaf_port, extra.clone(), None).await;
    let port = leafd.port();
    publish_range(&client(&leafd).await, 0, N).await;
    await_hub_count(&hub_client, N, Duration::from_secs(60)).await;
    leafd.kill();
    drop(leafd);
    let leafd = start_leafd(&leaf_store, leaf_port, extra, Some(port)).await;
    publish_range(&client(&leafd).await, N, N + 100).await;
    await_hub_count(&hub_client, N + 100, Duration::from_secs(60)).await;
    check_hub_stream(&hub_client, N + 100).await;
    assert!(
        leafd.log().contains("does not answer through the link"),
        "leafd should warn that the hub's API is out of reach"
    );
}

/// A full buffer with the default policy drops the oldest messages, counts them, and keeps
/// the newest; the status page and `leafd status` show the backlog while the hub is away.
async fn full_buffer_drops_oldest(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let (leafd, mport) =
        start_leafd_monitored(&leaf_store, leaf_port, json!({ "max_msgs": 100 })).await;
    publish_range(&client(&leafd).await, 0, 250).await;
    // The limit is applied right after each message is stored, asynchronously.
    let offline = await_status(mport, "the buffer to hold the newest 100", |s| {
        s["buffered_msgs"] == json!(100)
    })
    .await;
    assert_eq!(offline["state"], json!("offline"), "{offline}");
    assert_eq!(offline["backlog_msgs"], json!(100), "{offline}");
    assert!(offline["oldest_age_ms"].as_u64().is_some(), "{offline}");
    let status = std::process::Command::new(ServerKind::Leafd.binary_path())
        .args(["status", "--once", "-m", &mport.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(text.contains("sensors -> SENSORS  offline"), "{text}");
    assert!(text.contains("backlog 100 msgs"), "{text}");

    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    await_hub_count(&hub_client, 100, Duration::from_secs(60)).await;
    check_hub_range(&hub_client, 150, 250).await;
    let live = await_status(mport, "the uplink to be live", |s| {
        s["state"] == json!("live")
    })
    .await;
    assert_eq!(live["dropped"], json!(150), "{live}");
    assert_eq!(live["backlog_msgs"], json!(0), "{live}");
    assert_eq!(live["acked_msgs"], json!(100), "{live}");
    assert_eq!(live["hub_api"], json!(true), "{live}");
}

/// With `when_full = "reject"` publishers get an error once the buffer is full; nothing
/// buffered is lost, and once forwarded, the buffer takes messages again.
async fn full_buffer_rejects_new(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let (leafd, mport) = start_leafd_monitored(
        &leaf_store,
        leaf_port,
        json!({ "max_msgs": 100, "when_full": "reject" }),
    )
    .await;
    let leaf_client = client(&leafd).await;
    publish_range(&leaf_client, 0, 100).await;
    let js = jetstream::new(leaf_client.clone());
    for i in 100..110 {
        let (subject, payload) = expected(i);
        let result = js
            .publish(subject, payload.into())
            .await
            .expect("send")
            .await;
        assert!(
            result.is_err(),
            "publish {i} into a full buffer was accepted"
        );
    }
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    await_hub_count(&hub_client, 100, Duration::from_secs(60)).await;
    // Forwarded messages are freed with the next cursor write.
    await_status(mport, "the buffer to drain", |s| {
        s["buffered_msgs"] == json!(0)
    })
    .await;
    publish_range(&leaf_client, 100, 150).await;
    await_hub_count(&hub_client, 150, Duration::from_secs(60)).await;
    check_hub_stream(&hub_client, 150).await;
    assert_eq!(uplink_status(mport).await["dropped"], json!(0));
}

/// A flaky WAN: leafd in its own network namespace, joined to the hub's by a veth pair
/// limited to 2 Mbit/s (`tc tbf`) and set down every few seconds (5 s, 1 s, 1 s, 5 s, ...), with 200 ms
/// of latency each way and 5 % loss on the path. The backlog still arrives exactly once and
/// in order; the achieved replay rate is printed.
///
/// The kernel here is built without `netem` (CONFIG_NET_SCH_NETEM is not set), so latency and
/// loss come from a relay on the path (see `e2e::proxy::Impairment`): every chunk is
/// delayed, and 5 % of them are held back 600 ms with everything behind them, which is what
/// a lost segment does to a TCP stream. Shaping and outages are the kernel's.
async fn survives_a_flaky_wan(kind: ServerKind) {
    const N: u64 = 10_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let ns = NetNs::create();
    let leaf_port = free_port();
    let wan = TcpProxy::start_on(
        ns.host_addr(),
        leaf_port,
        Impairment {
            delay: Duration::from_millis(200),
            loss: 0.05,
            stall: Duration::from_millis(600),
        },
    )
    .await;
    let url = format!("nats-leaf://{}:{}", ns.host_addr(), wan.port());
    let mut config = leafd_config(&leaf_store, &url, &json!({ "hub_domain": null }));
    // Dead-link detection within the long outages.
    config["leafnodes"]["reconnect"] = json!("500ms");
    config["leafnodes"]["ping_interval"] = json!("1s");
    config["leafnodes"]["ping_max"] = json!(3);
    let leafd = TestServer::builder(ServerKind::Leafd)
        .config(config)
        .in_netns(ns.name(), ns.ns_addr())
        .start()
        .await;
    publish_range(&client(&leafd).await, 0, N).await;
    ns.qdisc("tbf rate 2mbit burst 32kbit latency 500ms");
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    let started = std::time::Instant::now();
    // Short outages TCP rides out, and every third one, starting with the first (2 s into a
    // replay that needs at least 5 s at 2 Mbit/s), long enough (5 s) for the link's pings to
    // declare it dead, so leafd reconnects mid-replay.
    let outages = async {
        for round in 0.. {
            let gap = if round == 0 { 2 } else { 3 };
            tokio::time::sleep(Duration::from_secs(gap)).await;
            ns.set_link(false);
            let secs = if round % 3 == 0 { 5 } else { 1 };
            tokio::time::sleep(Duration::from_secs(secs)).await;
            ns.set_link(true);
        }
    };
    tokio::select! {
        _ = await_hub_count(&hub_client, N, Duration::from_secs(300)) => {}
        _ = outages => {}
    }
    ns.set_link(true);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "flaky WAN ({kind} hub): {N} messages replayed in {secs:.1} s = {:.0} msgs/s, over {} connections",
        N as f64 / secs,
        wan.connections()
    );
    check_hub_stream(&hub_client, N).await;
    assert!(
        wan.connections() > 1,
        "the long outage should have broken the link"
    );
    drop(leafd);
}

/// A hub cluster: three nats-server nodes with clustered JetStream and a stream replicated
/// on all three; leafd lists every node's leafnode URL. The node leafd is connected to is
/// stopped in the middle of the replay: leafd moves to another node and the hub stream
/// still gets every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_to_a_hub_cluster() {
    const N: u64 = 20_000;
    let stores = [StoreDir::new(), StoreDir::new(), StoreDir::new()];
    let leaf_store = StoreDir::new();
    let leaf_ports = [free_port(), free_port(), free_port()];
    let route_ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for i in 0..3 {
        let routes: Vec<String> = route_ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let config = json!({
            "server_name": format!("hub{i}"),
            "jetstream": { "store_dir": stores[i].path() },
            "cluster": {
                "name": "hubs",
                "listen": format!("127.0.0.1:{}", route_ports[i]),
                "routes": routes,
            },
            "leafnodes": { "listen": format!("127.0.0.1:{}", leaf_ports[i]) },
        });
        nodes.push(Some(
            TestServer::with_config(ServerKind::NatsServer, config).await,
        ));
    }
    let hub_client = client(nodes[2].as_ref().unwrap()).await;
    let js = jetstream::new(hub_client.clone());
    bounded_for(
        Duration::from_secs(60),
        "clustered JetStream to accept the stream",
        async {
            loop {
                let created = js
                    .create_stream(jetstream::stream::Config {
                        name: HUB_STREAM.to_string(),
                        subjects: vec![format!("{PREFIX}.sensors.>")],
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await;
                if created.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    )
    .await;
    let urls: Vec<String> = leaf_ports
        .iter()
        .map(|p| format!("nats-leaf://127.0.0.1:{p}"))
        .collect();
    let config = json!({
        "jetstream": { "store_dir": leaf_store.path() },
        "leafnodes": { "remotes": [{ "urls": urls }], "reconnect": "250ms" },
        "uplinks": [{
            "name": "sensors",
            "subjects": ["sensors.>"],
            "hub_stream": HUB_STREAM,
            "subject_prefix": PREFIX,
        }],
    });
    let leafd = TestServer::with_config(ServerKind::Leafd, config).await;
    publish_range(&client(&leafd).await, 0, N / 2).await;
    // Stop the node that carries the link once the replay is under way.
    await_hub_count(&hub_client, N / 10, Duration::from_secs(60)).await;
    let carrier = nodes
        .iter()
        .position(|n| {
            n.as_ref()
                .is_some_and(|n| n.log().contains("Leafnode connection created"))
        })
        .expect("a node with the leaf's connection");
    eprintln!("stopping hub{carrier}, which carries the link");
    let mut stopped = nodes[carrier].take().unwrap();
    stopped.terminate();
    publish_range(&client(&leafd).await, N / 2, N).await;
    let survivor = nodes.iter().flatten().next().unwrap();
    let hub_client = client(survivor).await;
    await_hub_count(&hub_client, N, Duration::from_secs(180)).await;
    check_hub_stream(&hub_client, N).await;
}

/// `rate_limit` caps the replay: 400 messages of about 540 bytes at 50 KiB/s cannot arrive
/// in less than about 4 s (the check is only that lower bound, which the token bucket
/// guarantees whatever the machine's speed).
async fn rate_limit_caps_the_replay(kind: ServerKind) {
    const N: u64 = 400;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let leafd = start_leafd(
        &leaf_store,
        leaf_port,
        json!({ "rate_limit": "50KB" }),
        None,
    )
    .await;
    let js = jetstream::new(client(&leafd).await);
    for i in 0..N {
        let mut headers = HeaderMap::new();
        headers.insert("Reading", i.to_string().as_str());
        js.publish_with_headers(
            format!("sensors.{}", i % 7),
            headers,
            vec![b'x'; 500].into(),
        )
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    }
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let started = std::time::Instant::now();
    let hub_client = client(&hub).await;
    await_hub_count(&hub_client, N, Duration::from_secs(60)).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(
        secs >= 3.0,
        "{N} messages of ~540 B at 50 KiB/s arrived in {secs:.2} s: the rate limit was not applied"
    );
}

/// Chained acknowledgements: the hub sends one PubAck per `ack_every` messages (128 by
/// default), not one per message, and the backlog still arrives exactly once and in order.
async fn acknowledgements_are_chained(kind: ServerKind) {
    const N: u64 = 10_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let (leafd, mport) = start_leafd_monitored(&leaf_store, leaf_port, json!({})).await;
    publish_range(&client(&leafd).await, 0, N).await;
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    await_hub_count(&hub_client, N, Duration::from_secs(120)).await;
    check_hub_stream(&hub_client, N).await;
    let live = await_status(mport, "the uplink to be live", |s| {
        s["state"] == json!("live")
    })
    .await;
    assert_eq!(live["acked_msgs"], json!(N), "{live}");
    let (code, leafz) = http_get(mport, "/leafz").await;
    assert_eq!(code, 200, "{leafz}");
    let answers = leafz["leafs"][0]["in_msgs"].as_u64().expect("in_msgs");
    assert!(
        answers < N / 16,
        "{answers} messages came back from the hub for {N} forwarded: acknowledgements are not chained"
    );
}

/// Another publisher writes into the hub stream while the uplink replays into it: chaining
/// stops (its expectation of the stream's newest message fails), the uplink falls back to
/// one PubAck per message, and its messages still arrive exactly once and in order.
async fn chain_stops_when_the_hub_stream_has_other_writers(kind: ServerKind) {
    const N: u64 = 5_000;
    const OTHERS: u64 = 400;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    let hub_js = jetstream::new(hub_client.clone());
    hub_js
        .create_stream(jetstream::stream::Config {
            name: HUB_STREAM.to_string(),
            subjects: vec![format!("{PREFIX}.>"), "other.>".to_string()],
            ..Default::default()
        })
        .await
        .expect("hub stream");
    // About 55 B per message at 100 KB/s: the replay takes about 3 s.
    let (leafd, mport) = start_leafd_monitored(
        &leaf_store,
        leaf_port,
        json!({ "rate_limit": "100KB", "create_hub_stream": false }),
    )
    .await;
    let leaf_client = client(&leafd).await;
    let foreign = async {
        for k in 0..OTHERS {
            hub_js
                .publish(format!("other.{k}"), "foreign".into())
                .await
                .expect("foreign publish")
                .await
                .expect("foreign PubAck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::join!(publish_range(&leaf_client, 0, N), foreign);
    await_hub_count(&hub_client, N + OTHERS, Duration::from_secs(120)).await;
    check_hub_messages(&hub_client, 0, N, Some(&format!("{PREFIX}.>")), N + OTHERS).await;
    e2e::wait_for_log(&leafd, "other writers", 1).await;
    // Sent one by one, the messages were proven by the proof tail's deliveries.
    let status = await_status(mport, "everything proven", |s| s["acked"] == json!(N)).await;
    assert!(
        status["tail_copies"].as_u64().unwrap_or(0) > 0,
        "the proof tail delivered nothing: {status}\n{}",
        leafd.log()
    );
}

/// A message larger than the hub stream's `max_msg_size`, in the middle of a chained
/// backlog: the hub refuses it (the chain breaks there), leafd sends it again with its own
/// PubAck, gets the refusal for good, skips and counts it; everything else arrives once.
async fn oversized_message_is_skipped_within_a_chain(kind: ServerKind) {
    const N: u64 = 4_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    // Buffered while the hub is down, so the big message is forwarded inside a chain.
    let (leafd, mport) = start_leafd_monitored(
        &leaf_store,
        leaf_port,
        json!({ "create_hub_stream": false }),
    )
    .await;
    let leaf_client = client(&leafd).await;
    publish_range(&leaf_client, 0, N / 2).await;
    jetstream::new(leaf_client.clone())
        .publish("sensors.big", vec![b'x'; 4096].into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    publish_range(&leaf_client, N / 2, N).await;
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    jetstream::new(hub_client.clone())
        .create_stream(jetstream::stream::Config {
            name: HUB_STREAM.to_string(),
            subjects: vec![format!("{PREFIX}.>")],
            max_message_size: 1024,
            ..Default::default()
        })
        .await
        .expect("hub stream");
    await_hub_count(&hub_client, N, Duration::from_secs(120)).await;
    check_hub_stream(&hub_client, N).await;
    let live = await_status(mport, "the uplink to be live", |s| {
        s["state"] == json!("live")
    })
    .await;
    assert_eq!(live["rejected"], json!(1), "{live}");
    assert_eq!(live["acked_msgs"], json!(N + 1), "{live}");
}

/// Deleting the uplink's buffer stream through the API does not take leafd down: the uplink
/// reports the problem and leafd keeps serving.
async fn deleted_buffer_is_reported(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let _hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let (leafd, mport) = start_leafd_monitored(&leaf_store, leaf_port, json!({})).await;
    let leaf_client = client(&leafd).await;
    publish_range(&leaf_client, 0, 10).await;
    await_status(mport, "the uplink to be live", |s| {
        s["state"] == json!("live")
    })
    .await;
    jetstream::new(leaf_client.clone())
        .delete_stream("UPLINK_sensors")
        .await
        .expect("delete the buffer stream");
    let s = await_status(mport, "the uplink to report its buffer gone", |s| {
        s["state"] == json!("stalled")
    })
    .await;
    assert!(
        s["last_error"].as_str().unwrap_or("").contains("deleted"),
        "{s}"
    );
    let (code, _) = http_get(mport, "/healthz").await;
    assert_eq!(code, 200);
    leaf_client
        .flush()
        .await
        .expect("leafd still serves clients");
}

e2e::hub_tests!(
    forwards_live_traffic,
    replays_offline_backlog,
    survives_link_cuts_and_hub_restarts,
    survives_leafd_sigkills,
    no_duplicates_after_outage_beyond_duplicate_window,
    no_duplicates_within_window_without_hub_api,
    full_buffer_drops_oldest,
    full_buffer_rejects_new,
    survives_a_flaky_wan,
    rate_limit_caps_the_replay,
    deleted_buffer_is_reported,
    acknowledgements_are_chained,
    chain_stops_when_the_hub_stream_has_other_writers,
    oversized_message_is_skipped_within_a_chain,
);
