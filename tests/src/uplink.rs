//! Helpers of the uplink tests (`tests/uplink*.rs`): a hub with JetStream (domain `hub`)
//! and a leafd whose uplink forwards `sensors.>` into it, publishing numbered messages and
//! checking the hub stream holds exactly those, in order, each once.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{jetstream, HeaderMap};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::{bounded_for, free_port, http_get, ServerKind, StoreDir, TestServer};

/// The hub stream's name.
pub const HUB_STREAM: &str = "SENSORS";
/// The prefix leafd puts in front of every forwarded subject.
pub const PREFIX: &str = "gw1";

/// A hub with JetStream (domain `hub`) accepting leaf nodes on `leaf_port`, on `port` when
/// given (a restart).
pub async fn start_hub(
    kind: ServerKind,
    store: &StoreDir,
    leaf_port: u16,
    port: Option<u16>,
) -> TestServer {
    let config = json!({
        "jetstream": { "store_dir": store.path(), "domain": "hub" },
        "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
    });
    let mut b = TestServer::builder(kind).config(config);
    if let Some(p) = port {
        b = b.port(p);
    }
    b.start().await
}

/// The config of a leafd with one uplink `sensors.>` → hub stream [`HUB_STREAM`] (created
/// when missing) through the hub leafnode URL `hub_url`; `extra` is merged into the uplink's
/// settings (a `null` removes a key).
pub fn leafd_config(store: &StoreDir, hub_url: &str, extra: &Value) -> Value {
    let mut uplink = json!({
        "name": "sensors",
        "subjects": ["sensors.>"],
        "hub_stream": HUB_STREAM,
        "hub_domain": "hub",
        "subject_prefix": PREFIX,
        "create_hub_stream": true,
    });
    if let (Some(u), Some(e)) = (uplink.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                u.remove(k);
            } else {
                u.insert(k.clone(), v.clone());
            }
        }
    }
    json!({
        "jetstream": { "store_dir": store.path() },
        "leafnodes": { "remotes": [{ "url": hub_url }], "reconnect": "250ms" },
        "uplinks": [uplink],
    })
}

/// leafd as [`leafd_config`] describes, with the hub's leafnode port `hub_leaf_port`, on
/// client port `port` when given (a restart).
pub async fn start_leafd(
    store: &StoreDir,
    hub_leaf_port: u16,
    extra: Value,
    port: Option<u16>,
) -> TestServer {
    let url = format!("nats-leaf://127.0.0.1:{hub_leaf_port}");
    let mut b = TestServer::builder(ServerKind::Leafd).config(leafd_config(store, &url, &extra));
    if let Some(p) = port {
        b = b.port(p);
    }
    b.start().await
}

/// leafd as [`start_leafd`] starts it, with its monitoring port on; returns it and the port.
pub async fn start_leafd_monitored(
    store: &StoreDir,
    hub_leaf_port: u16,
    extra: Value,
) -> (TestServer, u16) {
    let mport = free_port();
    let url = format!("nats-leaf://127.0.0.1:{hub_leaf_port}");
    let server = TestServer::builder(ServerKind::Leafd)
        .config(leafd_config(store, &url, &extra))
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    (server, mport)
}

/// The status of the first uplink, from `/uplinkz`.
pub async fn uplink_status(mport: u16) -> Value {
    let (code, body) = http_get(mport, "/uplinkz").await;
    assert_eq!(code, 200, "{body}");
    body["uplinks"][0].clone()
}

/// Waits until the first uplink's status satisfies `ok`.
pub async fn await_status(mport: u16, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    bounded_for(Duration::from_secs(60), what, async {
        loop {
            let s = uplink_status(mport).await;
            if ok(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// What a test publishes: message `i` goes to `sensors.<i % 7>` with a header and payload
/// naming `i`.
pub fn expected(i: u64) -> (String, String) {
    (format!("sensors.{}", i % 7), format!("reading {i}"))
}

/// Publishes messages `from..to` to leafd through JetStream, pipelined, waiting for every
/// PubAck (leafd acknowledges once the message is durable on the gateway).
pub async fn publish_range(client: &async_nats::Client, from: u64, to: u64) {
    let js = jetstream::new(client.clone());
    let mut acks = Vec::with_capacity(1024);
    for i in from..to {
        let (subject, payload) = expected(i);
        let mut headers = HeaderMap::new();
        headers.insert("Reading", i.to_string().as_str());
        let ack = js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .expect("publish to leafd");
        acks.push(ack);
        if acks.len() == 1024 {
            for a in acks.drain(..) {
                a.await.expect("leafd PubAck");
            }
        }
    }
    for a in acks {
        a.await.expect("leafd PubAck");
    }
}

/// The number of messages in the hub stream (0 while it does not exist).
pub async fn hub_count(hub: &async_nats::Client) -> u64 {
    let js = jetstream::new(hub.clone());
    match js.get_stream(HUB_STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits (up to `limit`) until the hub stream holds at least `n` messages.
pub async fn await_hub_count(hub: &async_nats::Client, n: u64, limit: Duration) {
    bounded_for(limit, &format!("{n} messages in the hub stream"), async {
        loop {
            if hub_count(hub).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Reads the whole hub stream in order and checks it holds exactly messages `0..n`, each
/// once, with its subject (prefixed), payload and headers.
pub async fn check_hub_stream(hub: &async_nats::Client, n: u64) {
    check_hub_range(hub, 0, n).await
}

/// Like [`check_hub_stream`] for messages `from..to`.
pub async fn check_hub_range(hub: &async_nats::Client, from: u64, to: u64) {
    check_hub_messages(hub, from, to, None, to - from).await
}

/// Like [`check_hub_range`], reading only the hub subjects matching `filter`, in a hub
/// stream that holds `total` messages in all.
pub async fn check_hub_messages(
    hub: &async_nats::Client,
    from: u64,
    to: u64,
    filter: Option<&str>,
    total: u64,
) {
    let js = jetstream::new(hub.clone());
    let stream = js.get_stream(HUB_STREAM).await.expect("hub stream");
    // A clustered hub that just lost a node may refuse a consumer for a moment.
    let consumer = bounded_for(
        Duration::from_secs(30),
        "a consumer on the hub stream",
        async {
            loop {
                let created = stream
                    .create_consumer(jetstream::consumer::pull::Config {
                        ack_policy: jetstream::consumer::AckPolicy::None,
                        num_replicas: 1,
                        filter_subject: filter.unwrap_or_default().to_string(),
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(c) => return c,
                    Err(e) => {
                        eprintln!("hub consumer not created yet: {e}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        },
    )
    .await;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .expect("hub consumer messages");
    let mut ids: HashMap<String, u64> = HashMap::new();
    for i in from..to {
        let msg = bounded_for(
            Duration::from_secs(30),
            "the next hub message",
            messages.next(),
        )
        .await
        .expect("hub stream ended early")
        .expect("hub message");
        let (subject, payload) = expected(i);
        assert_eq!(
            msg.subject.as_str(),
            format!("{PREFIX}.{subject}"),
            "subject of message {i}"
        );
        assert_eq!(
            std::str::from_utf8(&msg.payload).unwrap(),
            payload,
            "payload of message {i} (hub sequence {})",
            msg.info().map(|i| i.stream_sequence).unwrap_or(0)
        );
        let headers = msg.headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("Reading").map(|v| v.as_str()),
            Some(i.to_string().as_str()),
            "header of message {i}"
        );
        let id = headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .expect("Nats-Msg-Id");
        if let Some(first) = ids.insert(id.clone(), i) {
            panic!("message id {id} stored twice: messages {first} and {i}");
        }
    }
    assert_eq!(
        hub_count(hub).await,
        total,
        "hub stream holds extra messages"
    );
}

/// Connects a client to `server`, retrying (it may be restarting).
pub async fn client(server: &TestServer) -> async_nats::Client {
    server.client().await
}

/// One test module per scenario, each run against a nats-server hub and a hubd hub:
/// `hub_tests!(scenario_a, scenario_b)` where each scenario is `async fn(ServerKind)`.
#[macro_export]
macro_rules! hub_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats_server_hub() {
                    super::$name(e2e::ServerKind::NatsServer).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hubd_hub() {
                    super::$name(e2e::ServerKind::Hubd).await
                }
            }
        )+
    };
}
