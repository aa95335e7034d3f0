//! Configuration reload on SIGHUP: what may change while running changes (log level, uplink
//! limits, leafnode remotes); anything else is refused by name and the server goes on with
//! its running configuration.
//!
//! Leafnode remotes, against real nats-server 2.9 and hubd hubs:
//! * a remote pointed at another hub moves there (the first hub sees the leaf go);
//! * with two remotes, changing one leaves the other's connection untouched;
//! * a changed credentials file reconnects the remote with it; an invalid one is refused by
//!   key and file, and the link stays up;
//! * an uplink resumes over a remote reconnected with new settings;
//! * removing a remote an uplink uses, moving remotes, and changing the listener are refused
//!   by name.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::time::Duration;

use e2e::async_nats::jetstream;
use e2e::creds::{creds_for, hubd_with_nkeys};
use e2e::serde_json::{json, Value};
use e2e::{
    bounded, free_port, http_get, next_msg, pub_sub_both_ways, unique, wait_for_log, ServerKind,
    StoreDir, TestServer,
};
use nkeys::KeyPair;

fn config(
    store: &StoreDir,
    hub_port: u16,
    log_level: &str,
    max_msgs: u64,
    server_name: Option<&str>,
) -> Value {
    let mut c = json!({
        "log_level": log_level,
        "jetstream": { "store_dir": store.path() },
        "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{hub_port}") }] },
        "uplinks": [{
            "name": "sensors",
            "subjects": ["sensors.>"],
            "hub_stream": "SENSORS",
            "max_msgs": max_msgs,
        }],
    });
    if let Some(name) = server_name {
        c["server_name"] = json!(name);
    }
    c
}

async fn buffer_limit(server: &TestServer) -> i64 {
    let js = jetstream::new(server.client().await);
    let mut stream = js
        .get_stream("UPLINK_sensors")
        .await
        .expect("buffer stream");
    stream.info().await.expect("info").config.max_messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_what_may_change_and_refuses_the_rest() {
    let store = StoreDir::new();
    let hub_port = free_port(); // nothing listens: the uplink stays offline
    let server = TestServer::with_config(
        ServerKind::Leafd,
        config(&store, hub_port, "info", 100, None),
    )
    .await;
    assert_eq!(buffer_limit(&server).await, 100);
    assert!(
        !server.log().contains("DEBUG"),
        "debug lines before the reload"
    );

    // Log level and an uplink limit change in place.
    std::fs::write(
        server.config_path(),
        config(&store, hub_port, "debug", 50, None).to_string(),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "configuration reloaded", 1).await;
    assert_eq!(buffer_limit(&server).await, 50);
    // Connecting a client logs at debug level now.
    let _client = server.client().await;
    wait_for_log(&server, "DEBUG", 1).await;

    // A key that cannot change: refused by name, with the uplink change in the same file;
    // the server keeps its running settings. (The port is set by a flag here, and flags
    // win over the file, so it would not change.)
    std::fs::write(
        server.config_path(),
        config(&store, hub_port, "debug", 10, Some("renamed")).to_string(),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "server_name: cannot change while running", 1).await;
    assert_eq!(
        buffer_limit(&server).await,
        50,
        "a refused reload changed the buffer"
    );

    // A broken file: refused with its line; still serving.
    std::fs::write(server.config_path(), "{ \"log_level\": \n").unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "reload refused", 2).await;
    assert!(
        server.log().contains("server.json:"),
        "the error names the file and line"
    );
    assert_eq!(buffer_limit(&server).await, 50);
}

/// A nats-server hub accepting leaf nodes on `leaf_port`, monitoring on `http_port`.
async fn nats_hub(leaf_port: u16, http_port: u16) -> TestServer {
    TestServer::with_config(
        ServerKind::NatsServer,
        json!({
            "http_port": http_port,
            "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
        }),
    )
    .await
}

/// A remote to the hub leafnode port `port`.
fn remote(port: u16) -> Value {
    json!({ "url": format!("nats-leaf://127.0.0.1:{port}") })
}

/// A leafd config with `remotes`, monitoring on `http_port`.
fn leaf_config(http_port: u16, remotes: &[Value]) -> Value {
    json!({
        "http_port": http_port,
        "leafnodes": { "remotes": remotes, "reconnect": "250ms" },
    })
}

/// Rewrites `server`'s config file with `config` and sends SIGHUP.
fn reload(server: &TestServer, config: &Value) {
    std::fs::write(server.config_path(), config.to_string()).expect("write the config");
    server.signal(libc::SIGHUP);
}

/// The leaf nodes a nats-server hub has, from its `/leafz`.
async fn hub_leafs(http_port: u16) -> Vec<Value> {
    let (code, body) = http_get(http_port, "/leafz").await;
    assert_eq!(code, 200, "{body}");
    body["leafs"].as_array().cloned().unwrap_or_default()
}

/// Waits until a nats-server hub has `n` leaf nodes; returns them.
async fn await_hub_leafs(http_port: u16, n: usize) -> Vec<Value> {
    bounded(&format!("{n} leaf node(s) on the hub"), async {
        loop {
            let leafs = hub_leafs(http_port).await;
            if leafs.len() == n {
                return leafs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// leafd's remotes, from its `/leafz`.
async fn leaf_remotes(http_port: u16) -> Vec<Value> {
    let (code, body) = http_get(http_port, "/leafz").await;
    assert_eq!(code, 200, "{body}");
    body["remotes"].as_array().cloned().unwrap_or_default()
}

/// Waits until leafd's remote `index` satisfies `ok`; returns it.
async fn await_remote(
    http_port: u16,
    index: usize,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    bounded(what, async {
        loop {
            if let Some(r) = leaf_remotes(http_port).await.get(index) {
                if ok(r) {
                    return r.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_moves_to_another_hub() {
    let (l1, m1, l2, m2, lm) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let h1 = nats_hub(l1, m1).await;
    let h2 = nats_hub(l2, m2).await;
    let leaf = TestServer::with_config(ServerKind::Leafd, leaf_config(lm, &[remote(l1)])).await;
    let lc = leaf.client().await;
    pub_sub_both_ways(&h1.client().await, &lc).await;
    assert_eq!(hub_leafs(m1).await.len(), 1);

    reload(&leaf, &leaf_config(lm, &[remote(l2)]));
    wait_for_log(&leaf, "leafnodes.remotes[0]: settings changed", 1).await;
    wait_for_log(&leaf, "configuration reloaded\n", 1).await;
    pub_sub_both_ways(&h2.client().await, &lc).await;
    await_hub_leafs(m1, 0).await;
    await_hub_leafs(m2, 1).await;

    // Nothing crosses from the first hub any more.
    let h1c = h1.client().await;
    let subject = unique("gone");
    let mut sub = lc.subscribe(subject.clone()).await.expect("subscribe");
    let marker = unique("marker");
    let mut marks = lc.subscribe(marker.clone()).await.expect("subscribe");
    h1c.publish(subject, "lost".into()).await.expect("publish");
    h1c.flush().await.expect("flush");
    lc.publish(marker, "m".into()).await.expect("publish");
    next_msg(&mut marks).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        futures::FutureExt::now_or_never(futures::StreamExt::next(&mut sub)).is_none(),
        "a message from the old hub crossed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_remote_leaves_the_other_connected() {
    let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
    let (l1, m1, l2, m2, l3, m3, lm) = (
        ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6],
    );
    let h1 = nats_hub(l1, m1).await;
    let _h2 = nats_hub(l2, m2).await;
    let h3 = nats_hub(l3, m3).await;
    let leaf = TestServer::with_config(
        ServerKind::Leafd,
        leaf_config(lm, &[remote(l1), remote(l2)]),
    )
    .await;
    let first = await_remote(lm, 0, "remote 0 up", |r| r["connected"] == json!(true)).await;
    await_remote(lm, 1, "remote 1 up", |r| r["connected"] == json!(true)).await;
    let before = await_hub_leafs(m1, 1).await;
    await_hub_leafs(m2, 1).await;

    reload(&leaf, &leaf_config(lm, &[remote(l1), remote(l3)]));
    wait_for_log(&leaf, "leafnodes.remotes[1]: settings changed", 1).await;
    await_hub_leafs(m3, 1).await;
    await_hub_leafs(m2, 0).await;
    await_remote(lm, 1, "remote 1 up on the third hub", |r| {
        r["connected"] == json!(true)
            && r["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!(":{l3}")))
    })
    .await;

    // Remote 0: the same connection on both sides.
    let after = hub_leafs(m1).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["port"], before[0]["port"],
        "the first hub saw a reconnect"
    );
    let now = leaf_remotes(lm).await[0].clone();
    assert_eq!(now["reconnects"], json!(0), "{now}");
    assert_eq!(now["since"], first["since"], "{now}");
    assert!(
        !leaf.log().contains("leafnodes.remotes[0]:"),
        "{}",
        leaf.log()
    );
    let lc = leaf.client().await;
    pub_sub_both_ways(&h1.client().await, &lc).await;
    pub_sub_both_ways(&h3.client().await, &lc).await;

    // Removing the last remote stops it; adding one starts it.
    reload(&leaf, &leaf_config(lm, &[remote(l1)]));
    wait_for_log(&leaf, "leafnodes.remotes[1] removed", 1).await;
    await_hub_leafs(m3, 0).await;
    assert_eq!(leaf_remotes(lm).await.len(), 1);
    reload(&leaf, &leaf_config(lm, &[remote(l1), remote(l2)]));
    wait_for_log(&leaf, "leafnodes.remotes[1] added", 1).await;
    await_hub_leafs(m2, 1).await;
    assert_eq!(hub_leafs(m1).await[0]["port"], before[0]["port"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credentials_file_is_used_and_a_bad_one_refused() {
    let store = StoreDir::new();
    let creds = std::path::Path::new(store.path()).join("leaf.creds");
    let account = KeyPair::new_account();
    let (old_user, new_user) = (KeyPair::new_user(), KeyPair::new_user());
    let (lp, lm) = (free_port(), free_port());
    let hub = hubd_with_nkeys(&[old_user.public_key(), new_user.public_key()], lp).await;
    std::fs::write(&creds, creds_for(&old_user, &account)).unwrap();
    let config = leaf_config(
        lm,
        &[json!({ "url": format!("nats-leaf://127.0.0.1:{lp}"), "credentials": creds })],
    );
    let leaf = TestServer::with_config(ServerKind::Leafd, &config).await;
    let lc = leaf.client().await;
    pub_sub_both_ways(&hub.client().await, &lc).await;

    // The same config, a new file: the remote reconnects with it.
    std::fs::write(&creds, creds_for(&new_user, &account)).unwrap();
    reload(&leaf, &config);
    wait_for_log(
        &leaf,
        "leafnodes.remotes[0]: its credentials or TLS files changed",
        1,
    )
    .await;
    await_remote(lm, 0, "the remote back up", |r| {
        r["connected"] == json!(true) && r["reconnects"] == json!(1)
    })
    .await;
    // A hub that knows only the new user takes the leaf: it presents the new credentials.
    drop(hub);
    let hub = hubd_with_nkeys(&[new_user.public_key()], lp).await;
    pub_sub_both_ways(&hub.client().await, &lc).await;
    let up = await_remote(lm, 0, "the remote up on the new hub", |r| {
        r["connected"] == json!(true)
    })
    .await;
    assert!(!hub.log().contains("is not allowed"), "{}", hub.log());

    // Nothing changed: no reconnect.
    reload(&leaf, &config);
    wait_for_log(&leaf, "configuration reloaded: nothing changed", 1).await;

    // Garbage: refused by key and file; the link keeps its credentials and stays up.
    std::fs::write(&creds, "garbage").unwrap();
    reload(&leaf, &config);
    let log = wait_for_log(&leaf, "reload of leafnodes.remotes[0] refused", 1).await;
    let expected = format!("leafnodes.remotes[0].credentials: {}", creds.display());
    assert!(log.contains(&expected), "{log}");
    wait_for_log(&leaf, "configuration reloaded in part", 1).await;
    pub_sub_both_ways(&hub.client().await, &lc).await;
    let now = leaf_remotes(lm).await[0].clone();
    assert_eq!(now["reconnects"], up["reconnects"], "{now}");
    assert_eq!(now["since"], up["since"], "{now}");

    // A missing file: refused the same way.
    std::fs::remove_file(&creds).unwrap();
    reload(&leaf, &config);
    let log = wait_for_log(&leaf, "reload of leafnodes.remotes[0] refused", 2).await;
    assert!(
        log.contains(&format!(
            "leafnodes.remotes[0].credentials: cannot read {}",
            creds.display()
        )),
        "{log}"
    );
    assert_eq!(leaf_remotes(lm).await[0]["since"], up["since"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_resumes_over_a_reconnected_remote() {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let (lp, lm) = (free_port(), free_port());
    let hub = TestServer::with_config(
        ServerKind::NatsServer,
        json!({
            "jetstream": { "store_dir": hub_store.path(), "domain": "hub" },
            "leafnodes": { "listen": format!("127.0.0.1:{lp}") },
        }),
    )
    .await;
    let config = |deny: &[&str]| {
        json!({
            "http_port": lm,
            "jetstream": { "store_dir": leaf_store.path() },
            "leafnodes": {
                "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{lp}"), "deny_imports": deny }],
                "reconnect": "250ms",
            },
            "uplinks": [{
                "name": "sensors", "subjects": ["sensors.>"], "hub_stream": "SENSORS",
                "hub_domain": "hub", "create_hub_stream": true,
            }],
        })
    };
    let leaf = TestServer::with_config(ServerKind::Leafd, config(&[])).await;
    let lc = leaf.client().await;
    let hub_js = jetstream::new(hub.client().await);
    let hub_count = |want: u64| {
        let hub_js = hub_js.clone();
        async move {
            bounded(&format!("{want} message(s) in the hub stream"), async {
                loop {
                    if let Ok(mut s) = hub_js.get_stream("SENSORS").await {
                        if s.info().await.is_ok_and(|i| i.state.messages >= want) {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
        }
    };
    lc.publish("sensors.a", "before".into()).await.unwrap();
    lc.flush().await.unwrap();
    hub_count(1).await;

    reload(&leaf, &config(&["nothing.>"]));
    wait_for_log(&leaf, "leafnodes.remotes[0]: settings changed", 1).await;
    await_remote(lm, 0, "the remote back up", |r| {
        r["connected"] == json!(true) && r["reconnects"] == json!(1)
    })
    .await;
    for i in 0..5 {
        lc.publish("sensors.a", format!("after {i}").into())
            .await
            .unwrap();
    }
    lc.flush().await.unwrap();
    hub_count(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_an_uplink_uses_keep_their_place() {
    let store = StoreDir::new();
    let (a, b) = (free_port(), free_port()); // nothing listens: the links stay down
    let config = |remotes: &[Value], uplink_remote: usize| {
        json!({
            "jetstream": { "store_dir": store.path() },
            "leafnodes": { "remotes": remotes },
            "uplinks": [{
                "name": "sensors", "subjects": ["sensors.>"], "hub_stream": "SENSORS",
                "remote": uplink_remote,
            }],
        })
    };
    let leaf = TestServer::with_config(ServerKind::Leafd, config(&[remote(a), remote(b)], 1)).await;

    // Removing the remote the uplink uses: refused, naming the uplink's key.
    reload(&leaf, &config(&[remote(a)], 1));
    let log = wait_for_log(&leaf, "reload refused", 1).await;
    assert!(log.contains("uplinks[0].remote"), "{log}");
    // Swapping the remotes would move the uplink to another hub: refused.
    reload(&leaf, &config(&[remote(b), remote(a)], 1));
    let log = wait_for_log(&leaf, "reload refused", 2).await;
    assert!(
        log.contains("leafnodes.remotes[0]: is leafnodes.remotes[1] moved"),
        "{log}"
    );
    assert!(
        !log.contains("leafnodes.remotes[1]: settings changed"),
        "{log}"
    );
    // Still a working server.
    leaf.client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leafnode_listener_is_refused_by_name() {
    let (p, q) = (free_port(), free_port());
    let config = |port: u16| json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}") } });
    let hub = TestServer::with_config(ServerKind::Hubd, config(p)).await;
    reload(&hub, &config(q));
    wait_for_log(&hub, "leafnodes.port: cannot change while running", 1).await;
    // Still accepting leaves on the first port.
    let leaf =
        TestServer::with_config(ServerKind::Leafd, leaf_config(free_port(), &[remote(p)])).await;
    pub_sub_both_ways(&hub.client().await, &leaf.client().await).await;
}
