//! Loop detection (`$LDS.` subjects) cannot be turned against a leaf (issue 16, item 4), and
//! still finds real loops; end to end on hubd, and the same steps on nats-server 2.9.
//!
//! nats-server 2.9 closes a leaf's link when the leaf receives its own `$LDS.` subject, and
//! passes every `$LDS.` subject on to every other leaf: so a leaf that echoes another leaf's
//! subject, or a client that subscribes to it, makes that leaf close its link and stay away
//! 30 s (asserted below on nats-server, so the difference stays visible). hubd closes the
//! echoing link instead (a second link announcing a loop-detection subject is the loop), never
//! announces a client's `$LDS.` subscription, and leafd uses a fresh subject per connection.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use e2e::async_nats::{Client, Subscriber};
use e2e::serde_json::json;
use e2e::{
    await_interest, bounded, free_port, leafz_remote, next_msg, unique, wait_for_log, RawConn,
    ServerKind, TestServer,
};

/// A raw leaf named `name` on the hub's leafnode `port` (no credentials), past its first
/// `LS+` burst; returns it and the `$LDS.` subjects the hub announced to it.
async fn raw_leaf(port: u16, name: &str) -> (RawConn, HashSet<String>) {
    let mut raw = RawConn::open(port).await;
    let connect = json!({ "name": name, "headers": true, "version": "2.9.10" });
    raw.send(format!("CONNECT {connect}\r\n")).await;
    let read = raw.until_pong().await;
    assert!(
        !read.closed,
        "the hub refused the raw leaf: {:?}",
        read.lines
    );
    (raw, lds_added(&read.lines).collect())
}

/// The `$LDS.` subjects announced (`LS+`) in `lines`.
fn lds_added(lines: &[String]) -> impl Iterator<Item = String> + '_ {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("LS+ $LDS."))
        .map(|id| format!("$LDS.{id}"))
}

/// Reads from `raw` until the hub announces a `$LDS.` subject not in `known`; returns it.
async fn next_new_lds(raw: &mut RawConn, known: &HashSet<String>) -> String {
    bounded("another leaf's $LDS. subject", async {
        loop {
            let read = raw.until_pong().await;
            assert!(
                !read.closed,
                "the hub closed the raw leaf: {:?}",
                read.lines
            );
            if let Some(lds) = lds_added(&read.lines).find(|l| !known.contains(l)) {
                return lds;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A hub of `kind` with an open leafnode listener on `port`.
async fn start_hub(kind: ServerKind, port: u16) -> TestServer {
    TestServer::with_config(
        kind,
        json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}") } }),
    )
    .await
}

/// A leaf of `kind` named `name` connecting to `port`, its monitoring port at `http`.
async fn start_leaf(kind: ServerKind, name: &str, port: u16, http: u16) -> TestServer {
    TestServer::with_config(
        kind,
        json!({
            "server_name": name,
            "http_port": http,
            "leafnodes": {
                "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{port}") }],
                "reconnect": 1,
            },
        }),
    )
    .await
}

/// A hub, a raw leaf on it (the attacker, or an observer) and a victim leaf whose client
/// subscribed to a subject the hub's client publishes on; the raw leaf learned the victim's
/// `$LDS.` subject from the hub.
struct Scene {
    hub: TestServer,
    raw: RawConn,
    victim: TestServer,
    victim_kind: ServerKind,
    hc: Client,
    /// Keeps the victim's subscription's connection.
    _vc: Client,
    subject: String,
    sub: Subscriber,
    lds: String,
}

impl Scene {
    /// A `hub_kind` hub on `port`, the raw leaf, then a `victim_kind` leaf connecting to
    /// `victim_port` (the hub's port, or a proxy in front of it), its monitoring port `http`.
    async fn start(
        hub_kind: ServerKind,
        port: u16,
        victim_kind: ServerKind,
        victim_port: u16,
        http: u16,
    ) -> Scene {
        let hub = start_hub(hub_kind, port).await;
        let (mut raw, known) = raw_leaf(port, &unique("raw")).await;
        let victim = start_leaf(victim_kind, &unique("victim"), victim_port, http).await;
        let (hc, vc) = (hub.client().await, victim.client().await);
        let subject = unique("to.victim");
        let mut sub = vc.subscribe(subject.clone()).await.unwrap();
        await_interest(&hc, &subject, &mut sub).await;
        let lds = next_new_lds(&mut raw, &known).await;
        Scene {
            hub,
            raw,
            victim,
            victim_kind,
            hc,
            _vc: vc,
            subject,
            sub,
            lds,
        }
    }

    /// The victim still takes traffic from the hub (its link never closed: a closed link
    /// stays away 30 s after a loop) and never saw a loop.
    async fn victim_unharmed(&mut self) {
        for i in 0..3 {
            let payload = format!("after{i}").into();
            self.hc
                .publish(self.subject.clone(), payload)
                .await
                .unwrap();
        }
        for _ in 0..3 {
            next_msg(&mut self.sub).await;
        }
        let log = self.victim.log();
        assert!(
            !log.contains("Loop detected"),
            "{} saw a loop:\n{log}",
            self.victim_kind
        );
    }
}

/// A leaf that echoes another leaf's `$LDS.` subject: hubd closes the echoing link as the
/// loop and the other leaf stays linked; nats-server makes the other leaf close its link.
async fn echoed_lds(hub_kind: ServerKind, victim_kind: ServerKind) {
    let port = free_port();
    let mut scene = Scene::start(hub_kind, port, victim_kind, port, free_port()).await;
    let echo = format!("LS+ {}\r\n", scene.lds);
    scene.raw.send(echo).await;
    let read = scene.raw.until_pong().await;
    if hub_kind == ServerKind::NatsServer {
        wait_for_log(&scene.victim, "Loop detected", 1).await;
        return;
    }
    assert!(
        read.closed,
        "{hub_kind} kept the echoing link: {:?}",
        read.lines
    );
    assert!(
        read.lines
            .iter()
            .any(|l| l.starts_with("-ERR 'Loop detected")),
        "{:?}",
        read.lines
    );
    wait_for_log(&scene.hub, "another link's loop-detection subject", 1).await;
    scene.victim_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_lds_on_hubd_leafd_victim() {
    echoed_lds(ServerKind::Hubd, ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_lds_on_hubd_nats_server_victim() {
    echoed_lds(ServerKind::Hubd, ServerKind::NatsServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_lds_on_nats_server_leafd_victim() {
    echoed_lds(ServerKind::NatsServer, ServerKind::Leafd).await;
}

/// A hub client subscribing to a leaf's `$LDS.` subject: hubd does not announce it (the leaf
/// stays linked); nats-server does (the leaf closes its link as a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subscribing_to_a_leafs_lds() {
    for (hub_kind, victim_kind) in [
        (ServerKind::Hubd, ServerKind::Leafd),
        (ServerKind::Hubd, ServerKind::NatsServer),
        (ServerKind::NatsServer, ServerKind::Leafd),
    ] {
        let port = free_port();
        let mut scene = Scene::start(hub_kind, port, victim_kind, port, free_port()).await;
        let _lds_sub = scene.hc.subscribe(scene.lds.clone()).await.unwrap();
        e2e::sync(&scene.hc).await;
        if hub_kind == ServerKind::NatsServer {
            wait_for_log(&scene.victim, "Loop detected", 1).await;
            continue;
        }
        // An `LS+` for it would have gone to the victim before these messages.
        scene.victim_unharmed().await;
    }
}

/// A leaf that learned another leaf's `$LDS.` subject announces it while that leaf is away,
/// so that the leaf's reconnection would look like the loop. leafd takes a fresh subject for
/// every connection, so it reconnects as if nothing happened. A nats-server leaf keeps one
/// subject for its whole run, so hubd refuses its reconnection as the loop (the limit of what
/// a hub can tell: the echo looks like a second path to that leaf).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lds_announced_while_its_leaf_is_away() {
    for victim_kind in [ServerKind::Leafd, ServerKind::NatsServer] {
        let (port, http) = (free_port(), free_port());
        let wan = e2e::proxy::TcpProxy::start(port).await;
        let mut scene = Scene::start(ServerKind::Hubd, port, victim_kind, wan.port(), http).await;
        let lds = scene.lds.clone();

        // The victim's link drops; once the hub withdrew the victim's subject, the attacker
        // announces it.
        wan.set_up(false);
        wan.cut();
        bounded("the hub to withdraw the victim's $LDS. subject", async {
            loop {
                let read = scene.raw.until_pong().await;
                assert!(!read.closed, "{:?}", read.lines);
                if read.lines.contains(&format!("LS- {lds}")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        scene.raw.send(format!("LS+ {lds}\r\n")).await;
        let read = scene.raw.until_pong().await;
        assert!(!read.closed, "{:?}", read.lines);
        wan.set_up(true);

        if victim_kind == ServerKind::NatsServer {
            wait_for_log(&scene.hub, "another link's loop-detection subject", 1).await;
            wait_for_log(&scene.victim, "Loop detected", 1).await;
            continue;
        }
        bounded("the victim to reconnect", async {
            loop {
                let r = leafz_remote(http).await;
                if r["connected"] == json!(true) && r["reconnects"] != json!(0) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        await_interest(&scene.hc, &scene.subject, &mut scene.sub).await;
        scene.victim_unharmed().await;
        assert!(!scene
            .hub
            .log()
            .contains("another link's loop-detection subject"));
    }
}

/// Real loops are still found: a leaf linked to a hub and to a second hub that is itself a
/// leaf of the first (a triangle) reaches the first hub twice; the loop is reported and a link
/// closed. (A leaf linked twice to one hub is not a loop but a stale connection: the newer
/// replaces the older, on nats-server too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triangle_is_a_loop() {
    for (leaf_kind, hub_kind) in [
        (ServerKind::Leafd, ServerKind::Hubd),
        (ServerKind::NatsServer, ServerKind::Hubd),
        (ServerKind::Leafd, ServerKind::NatsServer),
        (ServerKind::NatsServer, ServerKind::NatsServer),
    ] {
        let (p1, p2) = (free_port(), free_port());
        let hub = start_hub(hub_kind, p1).await;
        let second = TestServer::with_config(
            hub_kind,
            json!({ "server_name": unique("second"), "leafnodes": {
                "listen": format!("127.0.0.1:{p2}"),
                "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{p1}") }],
                "reconnect": 1,
            }}),
        )
        .await;
        let leaf = TestServer::with_config(
            leaf_kind,
            json!({ "server_name": unique("leaf"), "leafnodes": {
                "remotes": [
                    { "url": format!("nats-leaf://127.0.0.1:{p1}") },
                    { "url": format!("nats-leaf://127.0.0.1:{p2}") },
                ],
                "reconnect": 1,
            }}),
        )
        .await;
        bounded(
            &format!("{leaf_kind} -> {hub_kind}: a loop report"),
            async {
                loop {
                    if [&leaf, &hub, &second]
                        .iter()
                        .any(|s| s.log().contains("Loop detected"))
                    {
                        return;
                    }
                    // Polling log files: there is nothing to synchronise on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
    }
}
