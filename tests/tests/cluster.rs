//! Clusters (issue 21, first step): hubd nodes connected by routes speaking nats-server 2.9's
//! route protocol, with each other and with nats-server.
//!
//! Each test starts two servers on 127.0.0.1, each listing both route URLs (its own included,
//! as a shared configuration does), and checks across the route: a subscriber on one node
//! receives what is published on the other (plain, wildcard, with headers), a queue group
//! with members on both nodes gets each message exactly once, request/reply works both ways,
//! an unsubscribed subject stops crossing, and accounts stay apart across the route. Every
//! pair is run as hubd + hubd, hubd + nats-server and nats-server + hubd (and nats-server +
//! nats-server, the reference).
//!
//! Every wait is bounded.

use std::collections::HashSet;
use std::time::Duration;

use e2e::async_nats::{Client, HeaderMap};
use e2e::serde_json::{json, Value};
use e2e::{await_interest, free_port, next_msg, sync, unique, ServerKind, TestServer};
use futures::StreamExt;

/// The configuration of one member: its name, the cluster block with both route URLs, and two
/// accounts (`A` with user `a`, `B` with user `b`).
fn member(name: &str, route_port: u16, ports: [u16; 2]) -> Value {
    json!({
        "server_name": name,
        "cluster": {
            "name": "C",
            "listen": format!("127.0.0.1:{route_port}"),
            "routes": ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>(),
        },
        "accounts": {
            "A": { "users": [ { "user": "a", "password": "a" } ] },
            "B": { "users": [ { "user": "b", "password": "b" } ] },
        },
    })
}

/// Two members of cluster `C`, of the given kinds.
async fn pair(kinds: [ServerKind; 2]) -> [TestServer; 2] {
    let ports = [free_port(), free_port()];
    let first = TestServer::with_config(kinds[0], member("n1", ports[0], ports)).await;
    let second = TestServer::with_config(kinds[1], member("n2", ports[1], ports)).await;
    [first, second]
}

async fn login(server: &TestServer, user: &str) -> Client {
    server
        .client_with(TestServer::options().user_and_password(user.into(), user.into()))
        .await
}

/// Messages, plain and with headers, a wildcard subscription, request/reply both ways, and
/// interest that goes away.
async fn messages_cross_the_route(kinds: [ServerKind; 2]) {
    let [n1, n2] = pair(kinds).await;
    let c1 = login(&n1, "a").await;
    let c2 = login(&n2, "a").await;
    let mut sub = c2.subscribe("orders.>").await.unwrap();
    sync(&c2).await;
    await_interest(&c1, "orders.probe", &mut sub).await;

    c1.publish("orders.1", "one".into()).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("K", "v");
    c1.publish_with_headers("orders.2", headers, "two".into())
        .await
        .unwrap();
    let m = next_msg(&mut sub).await;
    assert_eq!(
        (m.subject.as_str(), &m.payload[..]),
        ("orders.1", &b"one"[..])
    );
    let m = next_msg(&mut sub).await;
    assert_eq!(m.subject.as_str(), "orders.2");
    assert_eq!(
        m.headers
            .as_ref()
            .and_then(|h| h.get("K"))
            .map(|v| v.as_str()),
        Some("v"),
        "{kinds:?}: headers lost across the route"
    );

    // Request/reply: a responder on n2, a requester on n1, and the other way round.
    let mut service = c2.subscribe("svc.echo").await.unwrap();
    sync(&c2).await;
    let responder = c2.clone();
    let task = tokio::spawn(async move {
        while let Some(req) = service.next().await {
            if let Some(reply) = req.reply {
                responder.publish(reply, req.payload).await.unwrap();
            }
        }
    });
    let mut probe = c2.subscribe("svc.echo.probe").await.unwrap();
    sync(&c2).await;
    await_interest(&c1, "svc.echo.probe", &mut probe).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        c1.request("svc.echo", "ping".into()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    assert_eq!(&answer.payload[..], b"ping", "{kinds:?}");
    task.abort();

    // Interest removed on n2: nothing more crosses for it (a barrier subject still does).
    drop(sub);
    let mut after = c2.subscribe("after").await.unwrap();
    sync(&c2).await;
    await_interest(&c1, "after", &mut after).await;
}

/// A queue group with members on both nodes receives each message exactly once.
async fn a_queue_group_gets_each_message_once(kinds: [ServerKind; 2]) {
    let [n1, n2] = pair(kinds).await;
    let c1 = login(&n1, "a").await;
    let c2 = login(&n2, "a").await;
    let mut q1 = c1.queue_subscribe("work", "workers".into()).await.unwrap();
    let mut q2 = c2.queue_subscribe("work", "workers".into()).await.unwrap();
    sync(&c1).await;
    sync(&c2).await;
    // The group's interest has crossed when a plain subscriber on n2 sees n1's probes.
    let mut probe = c2.subscribe("work.probe").await.unwrap();
    sync(&c2).await;
    await_interest(&c1, "work.probe", &mut probe).await;

    let n = 200;
    for i in 0..n {
        c1.publish("work", i.to_string().into()).await.unwrap();
    }
    sync(&c1).await;
    let mut seen = HashSet::new();
    let mut from = [0usize; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < n {
        let m = tokio::select! {
            m = q1.next() => { from[0] += 1; m }
            m = q2.next() => { from[1] += 1; m }
            _ = tokio::time::sleep_until(deadline) => panic!("{kinds:?}: {} of {n} messages", seen.len()),
        };
        let m = m.expect("subscription ended");
        let text = String::from_utf8_lossy(&m.payload).into_owned();
        assert!(
            seen.insert(text.clone()),
            "{kinds:?}: message {text} delivered twice"
        );
    }
    // Nothing more arrives (each message went to exactly one member).
    sync(&c1).await;
    sync(&c2).await;
    let extra = tokio::time::timeout(Duration::from_millis(300), async {
        tokio::select! { m = q1.next() => m, m = q2.next() => m }
    })
    .await;
    assert!(
        extra.is_err(),
        "{kinds:?}: a message was delivered twice: {extra:?}"
    );
    assert_eq!(from[0] + from[1], n, "{kinds:?}");
}

/// Accounts stay apart across the route: B's subscriber on n2 receives nothing A publishes
/// on n1, while B's own messages cross.
async fn accounts_stay_apart(kinds: [ServerKind; 2]) {
    let [n1, n2] = pair(kinds).await;
    let a1 = login(&n1, "a").await;
    let b1 = login(&n1, "b").await;
    let b2 = login(&n2, "b").await;
    let subject = unique("shared");
    let mut sub = b2.subscribe(subject.clone()).await.unwrap();
    sync(&b2).await;
    await_interest(&b1, &subject, &mut sub).await;
    a1.publish(subject.clone(), "from-a".into()).await.unwrap();
    b1.publish(subject.clone(), "from-b".into()).await.unwrap();
    let m = next_msg(&mut sub).await;
    assert_eq!(
        &m.payload[..],
        b"from-b",
        "{kinds:?}: A's message crossed into B"
    );
}

/// A leaf (leafd) connected to n1 exchanges messages with clients of n2, both ways: the
/// leaf's interest reaches n2 through n1's route, n2's interest reaches the leaf through n1.
async fn a_leaf_reaches_the_whole_cluster(kinds: [ServerKind; 2]) {
    let ports = [free_port(), free_port()];
    let leaf_port = free_port();
    let plain = |name: &str, route_port: u16, leaf: Option<u16>| {
        let mut config = member(name, route_port, ports);
        config.as_object_mut().map(|c| c.remove("accounts"));
        if let Some(port) = leaf {
            config["leafnodes"] = json!({ "listen": format!("127.0.0.1:{port}") });
        }
        config
    };
    let n1 = TestServer::with_config(kinds[0], plain("n1", ports[0], Some(leaf_port))).await;
    let n2 = TestServer::with_config(kinds[1], plain("n2", ports[1], None)).await;
    let leaf = TestServer::with_config(
        ServerKind::Leafd,
        json!({ "leafnodes": { "remotes": [ { "url": format!("nats-leaf://127.0.0.1:{leaf_port}") } ] } }),
    )
    .await;
    let lc = leaf.client().await;
    let c2 = n2.client().await;
    // Cluster -> leaf.
    let mut at_leaf = lc.subscribe("to.leaf").await.unwrap();
    sync(&lc).await;
    await_interest(&c2, "to.leaf", &mut at_leaf).await;
    c2.publish("to.leaf", "hello leaf".into()).await.unwrap();
    assert_eq!(
        &next_msg(&mut at_leaf).await.payload[..],
        b"hello leaf",
        "{kinds:?}"
    );
    // Leaf -> cluster.
    let mut at_n2 = c2.subscribe("from.leaf").await.unwrap();
    sync(&c2).await;
    await_interest(&lc, "from.leaf", &mut at_n2).await;
    lc.publish("from.leaf", "hello cluster".into())
        .await
        .unwrap();
    assert_eq!(
        &next_msg(&mut at_n2).await.payload[..],
        b"hello cluster",
        "{kinds:?}"
    );
    // A request from the leaf answered on n2.
    let mut service = c2.subscribe("svc.leaf").await.unwrap();
    sync(&c2).await;
    let responder = c2.clone();
    let task = tokio::spawn(async move {
        while let Some(req) = service.next().await {
            if let Some(reply) = req.reply {
                responder.publish(reply, "answer".into()).await.unwrap();
            }
        }
    });
    let answer = e2e::bounded("a request from the leaf answered on n2", async {
        loop {
            if let Ok(Ok(m)) = tokio::time::timeout(
                Duration::from_millis(500),
                lc.request("svc.leaf", "q".into()),
            )
            .await
            {
                return m;
            }
        }
    })
    .await;
    assert_eq!(&answer.payload[..], b"answer", "{kinds:?}");
    task.abort();
}

/// Gossip: n2 and n3 are given only n1 as a route, and meet each other through it (a
/// message crosses one route at most, so n3's subscriber hears n2's publisher only over a
/// route n2–n3).
async fn members_meet_through_a_seed(kinds: [ServerKind; 3]) {
    let ports = [free_port(), free_port(), free_port()];
    let config = |name: &str, port: u16, routes: &[u16]| {
        json!({
            "server_name": name,
            "cluster": {
                "name": "C",
                "listen": format!("127.0.0.1:{port}"),
                "routes": routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>(),
            },
        })
    };
    let _n1 = TestServer::with_config(kinds[0], config("n1", ports[0], &[])).await;
    let n2 = TestServer::with_config(kinds[1], config("n2", ports[1], &[ports[0]])).await;
    let n3 = TestServer::with_config(kinds[2], config("n3", ports[2], &[ports[0]])).await;
    let c2 = n2.client().await;
    let c3 = n3.client().await;
    let mut sub = c3.subscribe("gossip.x").await.unwrap();
    sync(&c3).await;
    await_interest(&c2, "gossip.x", &mut sub).await;
    c2.publish("gossip.x", "met".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"met", "{kinds:?}");
}

mod members_meet_through_a_seed {
    use e2e::ServerKind::{Hubd, NatsServer};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd_hubd_hubd() {
        super::members_meet_through_a_seed([Hubd, Hubd, Hubd]).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server_seed_hubd_members() {
        super::members_meet_through_a_seed([NatsServer, Hubd, Hubd]).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd_seed_mixed_members() {
        super::members_meet_through_a_seed([Hubd, NatsServer, Hubd]).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd_seed_nats_server_members() {
        super::members_meet_through_a_seed([Hubd, NatsServer, NatsServer]).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server_nats_server_nats_server() {
        super::members_meet_through_a_seed([NatsServer, NatsServer, NatsServer]).await
    }
}

/// Every test for every mix of members.
macro_rules! cluster_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use e2e::ServerKind::{Hubd, NatsServer};
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hubd_hubd() {
                    super::$name([Hubd, Hubd]).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hubd_nats_server() {
                    super::$name([Hubd, NatsServer]).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats_server_hubd() {
                    super::$name([NatsServer, Hubd]).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats_server_nats_server() {
                    super::$name([NatsServer, NatsServer]).await
                }
            }
        )+
    };
}

cluster_tests!(
    a_leaf_reaches_the_whole_cluster,
    messages_cross_the_route,
    a_queue_group_gets_each_message_once,
    accounts_stay_apart
);
