//! Who may connect to a hub's leafnode listener and what a leaf may do there (issue 16,
//! item 4), end to end, against hubd and, with the same configuration, nats-server 2.9.
//!
//! * A listener without `leafnodes.authorization` checks leaves against the client users:
//!   a leaf without credentials is refused by hubd; nats-server lets it in with every right
//!   (asserted, so the difference stays visible). A listener reachable from other hosts that
//!   takes leaves without credentials of their own is warned about at start.
//! * A leaf's permissions hold both ways: it may publish into the hub only where its
//!   `publish` rules allow, it receives only what its `subscribe` rules allow, and it cannot
//!   call the hub's JetStream API unless allowed. Tested for every (leaf, hub) pair with the
//!   client-users form both servers read, and on hubd with permissions on
//!   `leafnodes.authorization.users` (which nats-server 2.9 refuses). On the wire: a refused
//!   subscription or message gets `-ERR 'Permissions Violation ...'` and the link stays
//!   (nats-server closes the link on a subscription, and takes the message).
//! * A leaf server name is taken over only with the same credentials: another leaf sending
//!   the name is refused and the connected one stays (nats-server replaces it).
//!
//! Every wait is bounded; everything listens on 127.0.0.1 unless a test says otherwise.

use std::time::Duration;

use e2e::async_nats::Client;
use e2e::serde_json::{json, Value};
use e2e::{
    await_interest, barrier_on, bounded, drain_ready, free_port, leafz_remote, next_msg,
    run_to_exit, unique, wait_for_log, RawConn, ServerKind, StoreDir, TestServer, WAIT,
};

/// The leaf user's password.
const LEAF_PASS: &str = "leaf-pw";

/// The leaf user's permissions: it may publish on `up.>` and receive `down.>`.
fn leaf_permissions() -> Value {
    json!({ "publish": { "allow": ["up.>"] }, "subscribe": { "allow": ["down.>"] } })
}

/// How the hub gives its leaf user permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The client users (`authorization.users`), no `leafnodes.authorization`: both servers.
    ClientUsers,
    /// `leafnodes.authorization.users[].permissions`: hubd only.
    LeafnodeUsers,
}

/// A hub's configuration: a client user `cli`, the leaf user `leaf` (with
/// [`leaf_permissions`], in `form`), the listener on `port`, JetStream in domain `hub`.
fn hub_config(form: Form, port: u16, store: &StoreDir) -> Value {
    let leaf_user =
        json!({ "user": "leaf", "password": LEAF_PASS, "permissions": leaf_permissions() });
    let client = json!({ "user": "cli", "password": "pw" });
    let jetstream = json!({ "store_dir": store.path(), "domain": "hub" });
    match form {
        Form::ClientUsers => json!({
            "authorization": { "users": [client, leaf_user] },
            "jetstream": jetstream,
            "leafnodes": { "listen": format!("127.0.0.1:{port}") },
        }),
        Form::LeafnodeUsers => json!({
            "authorization": { "users": [client] },
            "jetstream": jetstream,
            "leafnodes": {
                "listen": format!("127.0.0.1:{port}"),
                "authorization": { "users": [leaf_user] },
            },
        }),
    }
}

/// The hub's client, logged in as `cli`.
async fn hub_client(hub: &TestServer) -> Client {
    hub.client_with(TestServer::options().user_and_password("cli".into(), "pw".into()))
        .await
}

/// A leaf of `kind` logging in to the hub's leafnode `port` as `leaf`, reconnecting fast.
async fn start_leaf(kind: ServerKind, port: u16) -> TestServer {
    let url = format!("nats-leaf://leaf:{LEAF_PASS}@127.0.0.1:{port}");
    let config = json!({ "leafnodes": { "remotes": [{ "url": url }], "reconnect": 1 } });
    TestServer::with_config(kind, config).await
}

/// Opens a raw leafnode connection to `port` and sends `connect` (fields of a leaf's
/// CONNECT). Returns the connection and what the hub answered: its `connect_info` INFO, or
/// the lines it sent before closing the connection.
async fn raw_leaf(port: u16, connect: Value) -> (RawConn, Result<Value, Vec<String>>) {
    let mut raw = RawConn::open(port).await;
    let mut connect = connect;
    if let Some(fields) = connect.as_object_mut() {
        fields.entry("headers").or_insert(json!(true));
        fields.entry("version").or_insert(json!("2.9.10"));
    }
    raw.send(format!("CONNECT {connect}\r\n")).await;
    let mut lines = Vec::new();
    let answer = loop {
        match raw.next_line().await {
            Some(line) if line.starts_with("INFO ") && line.contains("\"connect_info\":true") => {
                let json = line.trim_start_matches("INFO ").trim();
                break Ok(e2e::serde_json::from_str(json).expect("INFO JSON"));
            }
            Some(line) => lines.push(line),
            None => break Err(lines),
        }
    };
    (raw, answer)
}

/// Sends `PING` on a raw leaf connection and reads up to the `PONG`, answering the hub's
/// pings; returns the other lines, or `None` when the hub closed the connection first.
async fn until_pong(raw: &mut RawConn) -> Option<Vec<String>> {
    let read = raw.until_pong().await;
    (!read.closed).then_some(read.lines)
}

/// A hub with client users and no `leafnodes.authorization`: hubd refuses a leaf without
/// credentials; nats-server 2.9 accepts it (with every right). A leaf logging in as a client
/// user is accepted by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_without_authorization_checks_client_users() {
    for kind in [ServerKind::Hubd, ServerKind::NatsServer] {
        let (port, store) = (free_port(), StoreDir::new());
        let _hub = TestServer::with_config(kind, hub_config(Form::ClientUsers, port, &store)).await;
        let (_raw, anonymous) = raw_leaf(port, json!({ "name": unique("anon") })).await;
        match kind {
            ServerKind::NatsServer => assert!(anonymous.is_ok(), "{kind}: {anonymous:?}"),
            _ => assert_eq!(
                anonymous.as_ref().err().map(Vec::as_slice),
                Some(&["-ERR 'Authorization Violation'".to_owned()][..]),
                "{kind}"
            ),
        }
        let (_raw, wrong) = raw_leaf(
            port,
            json!({ "name": unique("wrong"), "user": "leaf", "pass": "nope" }),
        )
        .await;
        assert!(wrong.is_err(), "{kind}: {wrong:?}");
        let (_raw, user) = raw_leaf(
            port,
            json!({ "name": unique("user"), "user": "leaf", "pass": LEAF_PASS }),
        )
        .await;
        let info = user.unwrap_or_else(|lines| panic!("{kind} refused the leaf user: {lines:?}"));
        // Its permissions, announced as nats-server announces them.
        assert_eq!(
            info["import"],
            json!({ "allow": ["down.>"] }),
            "{kind}: {info}"
        );
        assert_eq!(
            info["export"],
            json!({ "allow": ["up.>"] }),
            "{kind}: {info}"
        );
    }
}

/// The start-up warning: a listener on a non-loopback address that is open, or that checks
/// leaves against the client users only. None on loopback or with leafnode authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reachable_without_own_authorization_is_warned_about() {
    const OPEN: &str = "the leafnode listener is open";
    const CLIENTS: &str = "the leafnode listener has no leafnodes.authorization";
    let client_users = json!({ "users": [{ "user": "cli", "password": "pw" }] });
    let cases = [
        ("0.0.0.0", json!({}), json!(null), Some(OPEN)),
        ("0.0.0.0", client_users.clone(), json!(null), Some(CLIENTS)),
        ("0.0.0.0", client_users, json!({ "token": "t0k" }), None),
        ("127.0.0.1", json!({}), json!(null), None),
    ];
    for kind in [ServerKind::Hubd, ServerKind::Leafd] {
        for (host, authorization, leaf_auth, warning) in &cases {
            let port = free_port();
            let mut leafnodes = json!({ "listen": format!("{host}:{port}") });
            if !leaf_auth.is_null() {
                leafnodes["authorization"] = leaf_auth.clone();
            }
            let config = json!({ "authorization": authorization, "leafnodes": leafnodes });
            let server = TestServer::with_config(kind, config).await;
            let log = wait_for_log(&server, "listening for leafnode connections", 1).await;
            for needle in [OPEN, CLIENTS] {
                assert_eq!(
                    log.contains(needle),
                    *warning == Some(needle),
                    "{kind} on {host} with {authorization} / {leaf_auth}: {log}"
                );
            }
        }
    }
}

/// Publishes `n` messages on `subject` from `publisher`.
async fn publish_n(publisher: &Client, subject: &str, n: usize) {
    for i in 0..n {
        publisher
            .publish(subject.to_owned(), format!("m{i}").into())
            .await
            .expect("publish");
    }
}

/// The leaf's permissions, both ways, for a `leaf_kind` leaf on a `hub_kind` hub that gives
/// them in `form`.
async fn permissions_both_ways(leaf_kind: ServerKind, hub_kind: ServerKind, form: Form) {
    let (port, store) = (free_port(), StoreDir::new());
    let hub = TestServer::with_config(hub_kind, hub_config(form, port, &store)).await;
    let leaf = start_leaf(leaf_kind, port).await;
    let (hc, lc) = (hub_client(&hub).await, leaf.client().await);

    // Leaf → hub: `up.>` arrives, `side.>` never does.
    let (up, side) = (unique("up"), unique("side"));
    let mut side_sub = hc.subscribe(side.clone()).await.unwrap();
    let mut up_sub = hc.subscribe(up.clone()).await.unwrap();
    await_interest(&lc, &up, &mut up_sub).await;
    publish_n(&lc, &side, 5).await;
    publish_n(&lc, &up, 5).await;
    for _ in 0..5 {
        next_msg(&mut up_sub).await;
    }
    assert!(
        drain_ready(&mut side_sub).await.is_empty(),
        "{leaf_kind} -> {hub_kind} ({form:?}): the leaf published outside its permissions"
    );

    // Hub → leaf: `down.>` arrives; `other.>` never does, not even to a leaf subscriber on
    // `>` (whose interest the hub may take, but filters).
    let (down, other) = (unique("down"), unique("other"));
    let mut other_sub = lc.subscribe(other.clone()).await.unwrap();
    let mut all_sub = lc.subscribe(">").await.unwrap();
    let mut down_sub = lc.subscribe(down.clone()).await.unwrap();
    await_interest(&hc, &down, &mut down_sub).await;
    publish_n(&hc, &other, 5).await;
    publish_n(&hc, &down, 5).await;
    for _ in 0..5 {
        next_msg(&mut down_sub).await;
    }
    let leaked: Vec<String> = drain_ready(&mut all_sub)
        .await
        .into_iter()
        .chain(drain_ready(&mut other_sub).await)
        .map(|m| m.subject.to_string())
        .filter(|s| s.starts_with("other."))
        .collect();
    assert!(
        leaked.is_empty(),
        "{leaf_kind} -> {hub_kind} ({form:?}): the leaf received {leaked:?}"
    );

    // The hub's JetStream API (domain `hub`) is not the leaf's to call.
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        lc.request("$JS.hub.API.INFO", "".into()),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "{leaf_kind} -> {hub_kind} ({form:?}): the leaf called the hub's JetStream API"
    );
    // The link is still up: the leaf was not cut off for any of this.
    let marker = unique("down.marker");
    barrier_on(&hc, &lc, &marker).await;
}

macro_rules! permission_tests {
    ($($name:ident: $leaf:ident -> $hub:ident, $form:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                permissions_both_ways(ServerKind::$leaf, ServerKind::$hub, Form::$form).await
            }
        )+
    };
}

permission_tests! {
    permissions_leafd_to_hubd: Leafd -> Hubd, ClientUsers,
    permissions_nats_server_to_hubd: NatsServer -> Hubd, ClientUsers,
    permissions_leafd_to_nats_server: Leafd -> NatsServer, ClientUsers,
    permissions_nats_server_to_nats_server: NatsServer -> NatsServer, ClientUsers,
    leafnode_user_permissions_leafd_to_hubd: Leafd -> Hubd, LeafnodeUsers,
    leafnode_user_permissions_nats_server_to_hubd: NatsServer -> Hubd, LeafnodeUsers,
}

/// Permissions on `leafnodes.authorization.users` are ours: nats-server 2.9 refuses the key
/// (its leaves get permissions from the client users, the other form tested above).
#[test]
fn nats_server_has_no_permissions_on_leafnode_users() {
    let dir = std::env::temp_dir().join(unique("leaf-perms"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = StoreDir::new();
    let config = hub_config(Form::LeafnodeUsers, free_port(), &store);
    let (ok, output) = run_to_exit(ServerKind::NatsServer, &dir, &config);
    assert!(!ok && output.contains("permissions"), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the wire: a subscription and a message the leaf's permissions forbid. Both servers
/// refuse the subscription with `-ERR 'Permissions Violation for Subscription to ...'`;
/// hubd keeps the link, nats-server closes it. hubd refuses the message with `-ERR
/// 'Permissions Violation for Publish to ...'` and drops it; nats-server takes it (it relies on
/// its leaves to keep to the permissions it announced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_violations_on_the_wire() {
    for kind in [ServerKind::Hubd, ServerKind::NatsServer] {
        let (port, store) = (free_port(), StoreDir::new());
        let hub = TestServer::with_config(kind, hub_config(Form::ClientUsers, port, &store)).await;
        let hc = hub_client(&hub).await;
        let login = || json!({ "name": unique("raw"), "user": "leaf", "pass": LEAF_PASS });
        let (mut raw, info) = raw_leaf(port, login()).await;
        info.unwrap_or_else(|lines| panic!("{kind}: {lines:?}"));
        let forbidden = unique("other");
        raw.send(format!("LS+ {forbidden}\r\n")).await;
        let refusal = format!("-ERR 'Permissions Violation for Subscription to \"{forbidden}\"'");
        match kind {
            ServerKind::NatsServer => {
                let lines = raw.expect_closed_within(WAIT).await;
                assert!(lines.contains(&refusal), "{kind}: {lines:?}");
            }
            _ => {
                let lines = until_pong(&mut raw).await;
                let lines = lines.unwrap_or_else(|| panic!("{kind} closed the link"));
                assert!(lines.contains(&refusal), "{kind}: {lines:?}");
            }
        }
        // Nothing reaches the leaf on that subject.
        if kind == ServerKind::Hubd {
            hc.publish(forbidden.clone(), "x".into()).await.unwrap();
            let lines = until_pong(&mut raw).await.expect("the link stays");
            assert!(!lines.iter().any(|l| l.contains(&forbidden)), "{lines:?}");
        }

        // A message outside the leaf's publish permissions.
        let (mut raw, info) = raw_leaf(port, login()).await;
        info.unwrap_or_else(|lines| panic!("{kind}: {lines:?}"));
        let side = unique("side");
        let mut sub = hc.subscribe(side.clone()).await.unwrap();
        e2e::sync(&hc).await;
        raw.send(format!("LMSG {side} 2\r\nhi\r\n")).await;
        let lines = until_pong(&mut raw).await.unwrap_or_default();
        let refusal = format!("-ERR 'Permissions Violation for Publish to \"{side}\"'");
        let marker = unique("marker");
        let mut marker_sub = hc.subscribe(marker.clone()).await.unwrap();
        e2e::sync(&hc).await;
        hc.publish(marker.clone(), "m".into()).await.unwrap();
        next_msg(&mut marker_sub).await;
        let got = drain_ready(&mut sub).await;
        match kind {
            ServerKind::NatsServer => {
                assert!(!lines.contains(&refusal), "{lines:?}");
                assert_eq!(got.len(), 1, "nats-server takes what its leaf publishes");
            }
            _ => {
                assert!(lines.contains(&refusal), "{kind}: {lines:?}");
                assert!(got.is_empty(), "{kind} passed on a forbidden message");
            }
        }
    }
}

/// A hub with two leaf users, `a` and `b`.
fn two_users_hub(port: u16) -> Value {
    json!({ "leafnodes": {
        "listen": format!("127.0.0.1:{port}"),
        "authorization": { "users": [
            { "user": "a", "password": "pa" },
            { "user": "b", "password": "pb" },
        ]},
    }})
}

/// A leafd named `name`, logging in as `a`, with its monitoring port `http`.
async fn leaf_a(port: u16, name: &str, http: u16) -> TestServer {
    TestServer::with_config(
        ServerKind::Leafd,
        json!({
            "server_name": name,
            "http_port": http,
            "leafnodes": {
                "remotes": [{ "url": format!("nats-leaf://a:pa@127.0.0.1:{port}") }],
                "reconnect": 1,
            },
        }),
    )
    .await
}

/// A leaf that sends another leaf's server name with other credentials is refused with a
/// clear error, and the connected leaf stays; nats-server replaces the connected one. With
/// the same credentials the name is taken over (a leaf reconnecting before the hub noticed
/// its old connection died).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_is_taken_over_only_with_the_same_credentials() {
    for kind in [ServerKind::Hubd, ServerKind::NatsServer] {
        let port = free_port();
        let hub = TestServer::with_config(kind, two_users_hub(port)).await;
        let (name, http) = (unique("plant"), free_port());
        let leaf = leaf_a(port, &name, http).await;
        let (hc, lc) = (hub.client().await, leaf.client().await);
        let subject = unique("to.plant");
        let mut sub = lc.subscribe(subject.clone()).await.unwrap();
        await_interest(&hc, &subject, &mut sub).await;

        let (_raw, answer) =
            raw_leaf(port, json!({ "name": name, "user": "b", "pass": "pb" })).await;
        match kind {
            ServerKind::NatsServer => {
                // The connected leaf is cut off in favour of the impostor.
                assert!(answer.is_ok(), "{answer:?}");
                wait_for_log(&leaf, "Duplicate Remote LeafNode Connection", 1).await;
                continue;
            }
            _ => assert_eq!(
                answer.as_ref().err().map(Vec::as_slice),
                Some(&["-ERR 'Leafnode Name In Use With Other Credentials'".to_owned()][..]),
                "{kind}"
            ),
        }
        let log = wait_for_log(&hub, "is in use by link", 1).await;
        assert!(log.contains("authenticated as user \"a\""), "{log}");
        // The leaf was never disconnected and still gets its traffic.
        publish_n(&hc, &subject, 3).await;
        for _ in 0..3 {
            next_msg(&mut sub).await;
        }
        let r = leafz_remote(http).await;
        assert_eq!(
            (r["connected"].clone(), r["reconnects"].clone()),
            (json!(true), json!(0)),
            "{r}"
        );

        // The same credentials take the name over.
        let (_raw, answer) =
            raw_leaf(port, json!({ "name": name, "user": "a", "pass": "pa" })).await;
        assert!(answer.is_ok(), "{answer:?}");
        wait_for_log(
            &hub,
            "replacing the connection from the same leaf server",
            1,
        )
        .await;
        bounded("the leaf to see its link replaced", async {
            loop {
                if leafz_remote(http).await["connected"] == json!(false)
                    || leafz_remote(http).await["reconnects"] != json!(0)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}
