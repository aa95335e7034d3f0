//! Who may cause a reply where (issue 16, items 2 and 3): the server's own responders
//! (the JetStream API, PubAcks, pull consumers) answer only where the requester could publish
//! itself, and permissions apply to the JetStream API that is actually called through a
//! domain (`$JS.<domain>.API.>` is `$JS.API.>`).
//!
//! Each scenario runs against leafd, hubd and nats-server 2.9. Where nats-server is looser
//! (it does not check reply subjects at all, and checks a domain request only after mapping
//! it), its run asserts what it does, so the comparison stays visible: ours are stricter.

use std::time::Duration;

use e2e::async_nats::jetstream::{self, consumer, stream};
use e2e::serde_json::{json, Value};
use e2e::{
    bounded, drain_ready, free_port, http_get, next_msg, server_tests, sync, RawConn, ServerKind,
    StoreDir, TestServer,
};

server_tests!(
    api_answers_go_only_where_the_requester_may_publish,
    pubacks_go_only_where_the_publisher_may_publish,
    pull_deliveries_go_only_where_the_requester_may_publish,
    reserved_reply_subjects_are_refused,
    domain_api_requests_obey_the_api_permissions,
);

/// `admin` may do anything; `app` may publish only to the JetStream API and `orders.>`, and
/// subscribe to its inboxes and `cmd.>` (where the gateway's commands go): it may watch the
/// commands but not send them.
fn config(store: &StoreDir) -> Value {
    json!({
        "jetstream": { "store_dir": store.path(), "domain": "edge" },
        "authorization": { "users": [
            { "user": "admin", "password": "a" },
            { "user": "app", "password": "b", "permissions": {
                "publish": { "allow": ["$JS.API.>", "orders.>"] },
                "subscribe": { "allow": ["_INBOX.>", "cmd.>"] },
            } },
        ] },
    })
}

/// A server with [`config`] and a monitoring port.
async fn start(kind: ServerKind, store: &StoreDir) -> (TestServer, u16) {
    let monitor = free_port();
    let server = TestServer::builder(kind)
        .config(config(store))
        .arg("-m")
        .arg(monitor.to_string())
        .start()
        .await;
    (server, monitor)
}

async fn admin(server: &TestServer) -> e2e::async_nats::Client {
    let options = TestServer::options().user_and_password("admin".into(), "a".into());
    server.client_with(options).await
}

async fn app(server: &TestServer) -> RawConn {
    let mut raw = server.raw().await;
    raw.handshake(json!({ "user": "app", "pass": "b" })).await;
    raw
}

/// `/varz`'s count of dropped answers (ours only).
async fn replies_refused(monitor: u16) -> u64 {
    let (code, varz) = http_get(monitor, "/varz").await;
    assert_eq!(code, 200);
    varz["replies_refused"].as_u64().expect("replies_refused")
}

/// Whether `kind` is one of ours (stricter than nats-server here).
fn ours(kind: ServerKind) -> bool {
    kind != ServerKind::NatsServer
}

/// A JetStream API answer goes to a reply subject the requester may not publish to only if
/// the requester subscribes there itself; a watcher of that subject gets nothing.
/// nats-server delivers it to everyone subscribed.
async fn api_answers_go_only_where_the_requester_may_publish(kind: ServerKind) {
    let store = StoreDir::new();
    let (server, monitor) = start(kind, &store).await;
    let admin = admin(&server).await;
    let mut watch = admin.subscribe("cmd.>").await.unwrap();
    sync(&admin).await;
    let mut app = app(&server).await;

    // Reply on a command subject app may not publish to, and does not subscribe to.
    app.send("PUB $JS.API.INFO cmd.valve.open 0\r\n\r\n").await;
    // Reply on a command subject app may not publish to, but subscribes to: app gets it.
    app.send("SUB cmd.mine 1\r\nPUB $JS.API.INFO cmd.mine 0\r\n\r\n")
        .await;
    let mine = app.next_msg().await;
    assert_eq!(
        (mine.subject.as_str(), mine.sid.as_str()),
        ("cmd.mine", "1")
    );
    assert!(String::from_utf8_lossy(&mine.payload).contains("account_info_response"));
    // Its inbox (which it may not publish to either): the usual request works.
    app.send("SUB _INBOX.app.> 2\r\nPUB $JS.API.INFO _INBOX.app.1 0\r\n\r\n")
        .await;
    let inbox = app.next_msg().await;
    assert_eq!(inbox.subject, "_INBOX.app.1");

    if ours(kind) {
        // The answers were published before the last one reached app; a round trip on
        // admin's connection orders them before anything admin receives next.
        sync(&admin).await;
        let leaked: Vec<String> = drain_ready(&mut watch)
            .await
            .iter()
            .map(|m| m.subject.to_string())
            .collect();
        assert!(leaked.is_empty(), "answers reached the watcher: {leaked:?}");
        assert_eq!(replies_refused(monitor).await, 1);
    } else {
        let mut got = vec![
            next_msg(&mut watch).await.subject.to_string(),
            next_msg(&mut watch).await.subject.to_string(),
        ];
        got.sort();
        assert_eq!(
            got,
            ["cmd.mine", "cmd.valve.open"],
            "nats-server got looser"
        );
    }
}

/// A PubAck goes only where the publisher may publish (or subscribes itself); the message
/// itself is stored, since publishing it was allowed. nats-server acknowledges anywhere.
async fn pubacks_go_only_where_the_publisher_may_publish(kind: ServerKind) {
    let store = StoreDir::new();
    let (server, monitor) = start(kind, &store).await;
    let admin = admin(&server).await;
    let js = jetstream::new(admin.clone());
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let mut watch = admin.subscribe("cmd.>").await.unwrap();
    sync(&admin).await;
    let mut app = app(&server).await;

    app.send("PUB orders.1 cmd.valve.open 5\r\nfirst\r\n").await;
    app.send("SUB _INBOX.app.> 1\r\nPUB orders.2 _INBOX.app.ack 6\r\nsecond\r\n")
        .await;
    let ack = app.next_msg().await;
    assert_eq!(ack.subject, "_INBOX.app.ack");
    let ack: Value = e2e::serde_json::from_slice(&ack.payload).expect("PubAck JSON");
    assert_eq!(ack["stream"], "ORDERS");
    assert_eq!(ack["seq"], 2, "the first message was stored too");

    if ours(kind) {
        sync(&admin).await;
        let leaked = drain_ready(&mut watch).await;
        assert!(leaked.is_empty(), "a PubAck reached cmd.>: {:?}", leaked[0]);
        assert_eq!(replies_refused(monitor).await, 1);
    } else {
        let msg = next_msg(&mut watch).await;
        assert_eq!(
            msg.subject.as_str(),
            "cmd.valve.open",
            "nats-server got looser"
        );
        assert!(String::from_utf8_lossy(&msg.payload).contains("\"seq\":1"));
    }
}

/// A pull request whose reply app may not publish to delivers nothing there, and does not
/// consume the message: app's next pull request gets it as its first delivery. nats-server
/// delivers the message to the reply subject.
async fn pull_deliveries_go_only_where_the_requester_may_publish(kind: ServerKind) {
    let store = StoreDir::new();
    let (server, _monitor) = start(kind, &store).await;
    let admin = admin(&server).await;
    let js = jetstream::new(admin.clone());
    let orders = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    orders
        .create_consumer(consumer::pull::Config {
            durable_name: Some("C".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    js.publish("orders.1", "open the valve".into())
        .await
        .unwrap()
        .await
        .expect("stored");
    let mut watch = admin.subscribe("cmd.>").await.unwrap();
    sync(&admin).await;
    let mut app = app(&server).await;

    app.send("PUB $JS.API.CONSUMER.MSG.NEXT.ORDERS.C cmd.valve.open 1\r\n1\r\n")
        .await;
    if !ours(kind) {
        let msg = next_msg(&mut watch).await;
        assert_eq!(msg.subject.as_str(), "orders.1", "nats-server got looser");
        return;
    }
    app.send(
        "SUB _INBOX.app.> 1\r\nPUB $JS.API.CONSUMER.MSG.NEXT.ORDERS.C _INBOX.app.n 1\r\n1\r\n",
    )
    .await;
    let msg = app.next_msg().await;
    assert_eq!(msg.subject, "orders.1");
    assert_eq!(msg.payload, b"open the valve");
    let ack = msg.reply.expect("ack subject");
    // $JS.ACK.<stream>.<consumer>.<delivery count>.<stream seq>.<consumer seq>.<ts>.<pending>
    assert!(
        ack.starts_with("$JS.ACK.ORDERS.C.1.1.1."),
        "delivered before: {ack}"
    );
    sync(&admin).await;
    let leaked = drain_ready(&mut watch).await;
    assert!(
        leaked.is_empty(),
        "a delivery reached cmd.>: {:?}",
        leaked[0]
    );
}

/// A client may not publish with a reply subject reserved for the servers' own replies
/// (a JetStream ack, `_R_.`, `_GR_.`): it is told so and the message is not delivered, as
/// nats-server does.
async fn reserved_reply_subjects_are_refused(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let mut raw = server.raw_connected().await;
    raw.send("SUB work 1\r\n").await;
    for reply in ["$JS.ACK.S.C.1.1.1.0.0", "_R_.abc.def", "_GR_.x.y.z"] {
        raw.send(format!("PUB work {reply} 2\r\nhi\r\n")).await;
        raw.expect_line(&format!(
            "-ERR 'Permissions Violation for Publish with Reply of \"{reply}\"'"
        ))
        .await;
    }
    raw.send("PUB work _INBOX.ok 2\r\nok\r\n").await;
    let msg = raw.next_msg().await;
    assert_eq!(msg.reply.as_deref(), Some("_INBOX.ok"), "only the last one");
    raw.ping().await;
}

/// With JetStream domain `edge`, `$JS.edge.API.X` calls `$JS.API.X`: a user denied
/// `$JS.API.>` cannot delete a stream through the domain (nats-server maps the subject and
/// refuses it likewise). A user denied `$JS.edge.API.>` itself is refused too (nats-server
/// checks only the mapped subject and serves it: ours are stricter).
async fn domain_api_requests_obey_the_api_permissions(kind: ServerKind) {
    let store = StoreDir::new();
    let server = TestServer::with_config(
        kind,
        json!({
            "jetstream": { "store_dir": store.path(), "domain": "edge" },
            "authorization": { "users": [
                { "user": "admin", "password": "a" },
                { "user": "nojs", "password": "b",
                  "permissions": { "publish": { "deny": ["$JS.API.>"] } } },
                { "user": "nodomain", "password": "c",
                  "permissions": { "publish": { "deny": ["$JS.edge.API.>"] } } },
            ] },
        }),
    )
    .await;
    let admin = admin(&server).await;
    let js = jetstream::new(admin.clone());
    js.create_stream(stream::Config {
        name: "S".into(),
        subjects: vec!["s.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");

    let mut nojs = server.raw().await;
    nojs.handshake(json!({ "user": "nojs", "pass": "b" })).await;
    nojs.send("SUB _INBOX.n.> 1\r\n").await;
    for api in ["STREAM.DELETE.S", "STREAM.INFO.S", "INFO"] {
        nojs.send(format!("PUB $JS.edge.API.{api} _INBOX.n.1 0\r\n\r\n"))
            .await;
        nojs.expect_line(&format!(
            "-ERR 'Permissions Violation for Publish to \"$JS.API.{api}\"'"
        ))
        .await;
    }
    nojs.ping().await;

    let mut nodomain = server.raw().await;
    nodomain
        .handshake(json!({ "user": "nodomain", "pass": "c" }))
        .await;
    nodomain
        .send("SUB _INBOX.d.> 1\r\nPUB $JS.edge.API.STREAM.INFO.S _INBOX.d.1 0\r\n\r\n")
        .await;
    if ours(kind) {
        nodomain
            .expect_line(
                "-ERR 'Permissions Violation for Publish to \"$JS.edge.API.STREAM.INFO.S\"'",
            )
            .await;
        nodomain.ping().await;
    } else {
        let info = nodomain.next_msg().await;
        assert!(String::from_utf8_lossy(&info.payload).contains("stream_info_response"));
    }

    // The stream is still there, and the domain API serves who may call it.
    let through_domain = jetstream::with_domain(admin, "edge");
    let info = bounded("stream info through the domain", async {
        through_domain
            .get_stream("S")
            .await
            .expect("stream S")
            .cached_info()
            .clone()
    })
    .await;
    assert_eq!(info.config.name, "S");
}

/// A leaf with JetStream domain `leaf` whose remote denies imports of `cmd.>`, on `hub`.
async fn leaf_with_deny_imports(
    leaf_kind: ServerKind,
    hub_port: u16,
    store: &StoreDir,
    monitor: u16,
) -> TestServer {
    TestServer::builder(leaf_kind)
        .config(json!({
            "jetstream": { "store_dir": store.path(), "domain": "leaf" },
            "leafnodes": {
                "remotes": [{
                    "url": format!("nats-leaf://127.0.0.1:{hub_port}"),
                    "deny_imports": ["cmd.>"],
                }],
                "reconnect": 1,
            },
        }))
        .arg("-m")
        .arg(monitor.to_string())
        .start()
        .await
}

/// Over a leaf link: a hub client asks the leaf's JetStream API (through its domain) with a
/// reply subject the leaf's `deny_imports` forbid. The answer must not land on the leaf
/// (the hub could not send there itself); an allowed reply subject works. A nats-server leaf
/// delivers it on the leaf.
async fn link_answers_obey_deny_imports(leaf_kind: ServerKind, hub_kind: ServerKind) {
    let store = StoreDir::new();
    let port = free_port();
    let hub = TestServer::with_config(
        hub_kind,
        json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}") } }),
    )
    .await;
    let monitor = free_port();
    let leaf = leaf_with_deny_imports(leaf_kind, port, &store, monitor).await;
    let hc = hub.client().await;
    let lc = leaf.client().await;
    let mut cmd = lc.subscribe("cmd.valve").await.unwrap();
    let mut ok = lc.subscribe("ok.x").await.unwrap();
    e2e::await_interest(&hc, "ok.x", &mut ok).await;
    // The leaf's domain API is reachable from the hub.
    bounded("the leaf's API through the link", async {
        loop {
            let request = hc.request("$JS.leaf.API.INFO", "".into());
            if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_millis(500), request).await
            {
                assert!(String::from_utf8_lossy(&answer.payload).contains("account_info"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    hc.publish_with_reply("$JS.leaf.API.INFO", "cmd.valve", "".into())
        .await
        .unwrap();
    hc.publish_with_reply("$JS.leaf.API.INFO", "ok.x", "".into())
        .await
        .unwrap();
    let answer = next_msg(&mut ok).await;
    assert!(String::from_utf8_lossy(&answer.payload).contains("account_info"));
    if ours(leaf_kind) {
        // Both requests crossed the link in order and were answered in order: the first
        // answer would be queued before the second.
        let leaked = drain_ready(&mut cmd).await;
        assert!(
            leaked.is_empty(),
            "an API answer reached cmd.valve on the leaf"
        );
        assert_eq!(replies_refused(monitor).await, 1);
    } else {
        let msg = next_msg(&mut cmd).await;
        assert!(
            String::from_utf8_lossy(&msg.payload).contains("account_info"),
            "nats-server got looser"
        );
    }
}

macro_rules! link_tests {
    ($($name:ident: $leaf:ident -> $hub:ident),+ $(,)?) => {
        mod link_answers_obey_deny_imports {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::link_answers_obey_deny_imports(ServerKind::$leaf, ServerKind::$hub)
                        .await
                }
            )+
        }
    };
}

link_tests! {
    leafd_to_hubd: Leafd -> Hubd,
    leafd_to_nats_server: Leafd -> NatsServer,
    hubd_to_nats_server: Hubd -> NatsServer,
    nats_server_to_nats_server: NatsServer -> NatsServer,
}
