//! The system account and the monitoring that fleet tools expect (issue 20), end to end
//! against leafd, hubd and, with the same configuration, nats-server 2.9. Shapes (key sets)
//! are compared, not values.
//!
//! * `$SYS.REQ.SERVER.PING` (the `statsz` body), `.PING.VARZ` and requests by server id are
//!   answered with the `server` block; a bad option is an `error`; a filter that does not
//!   match leaves the server silent; a user of another account finds no responders.
//! * Client connect / disconnect advisories reach a system account subscriber; a user of
//!   another account sees none of them.
//! * A leaf that logs into the hub as a client user: the hub sends the connect advisory
//!   (`kind` `Leafnode`), and the disconnect advisory when the leaf is killed.
//! * `/accountz`, `/accstatz`, `/connz?acc=&sort=&subs=`, `/leafz?subs=1&acc=` shapes (and
//!   the link's `rtt` once the first keepalive ping is answered); a bad
//!   `sort` is a 400 and the server lives on.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::time::Duration;

use e2e::async_nats::Client;
use e2e::serde_json::{json, Value};
use e2e::{
    bounded, drain_ready, free_port, http_get, next_msg, sync, unique, ServerKind, TestServer,
};

/// Accounts `SYS` (user `sys`, the system account) and `A` (users `a`, `a2`).
fn config(name: &str) -> Value {
    json!({
        "server_name": name,
        "accounts": {
            "SYS": { "users": [ { "user": "sys", "password": "sys" } ] },
            "A": { "users": [ { "user": "a", "password": "a" }, { "user": "a2", "password": "a2" } ] },
        },
        "system_account": "SYS",
    })
}

/// A server of `kind` with `config` and the monitoring port `mport`.
async fn start(kind: ServerKind, mport: u16, config: Value) -> TestServer {
    TestServer::builder(kind)
        .config(config)
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await
}

/// A client of `server` logged in as `user` (password = user name).
async fn login(server: &TestServer, user: &str) -> Client {
    server
        .client_with(TestServer::options().user_and_password(user.into(), user.into()))
        .await
}

/// Asserts that `v` is an object with every key of `keys`.
#[track_caller]
fn has_keys(what: &str, v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    for key in keys {
        assert!(obj.contains_key(*key), "{what}: no `{key}` in {v}");
    }
}

/// The keys of the `server` block (nats-server's `ServerInfo`; `cluster`, `domain`, `tags`
/// are left out when empty).
const SERVER_BLOCK: &[&str] = &["name", "host", "id", "ver", "seq", "jetstream", "time"];

/// A request in the system account, answered within the default bound, parsed.
async fn request(client: &Client, subject: &str, body: &str) -> Value {
    let msg = bounded(
        subject,
        client.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    e2e::serde_json::from_slice(&msg.payload)
        .unwrap_or_else(|e| panic!("{subject}: not JSON ({e}): {:?}", msg.payload))
}

async fn ping_varz_and_requests_by_id(kind: ServerKind) {
    let name = unique("sys");
    let server = start(kind, free_port(), config(&name)).await;
    let sys = login(&server, "sys").await;

    let ping = request(&sys, "$SYS.REQ.SERVER.PING", "").await;
    has_keys("PING", &ping, &["server", "statsz"]);
    has_keys("PING server", &ping["server"], SERVER_BLOCK);
    assert_eq!(ping["server"]["name"], json!(name), "{kind}");
    has_keys(
        "PING statsz",
        &ping["statsz"],
        &[
            "start",
            "mem",
            "cores",
            "connections",
            "total_connections",
            "active_accounts",
            "subscriptions",
            "sent",
            "received",
            "slow_consumers",
        ],
    );
    has_keys("statsz sent", &ping["statsz"]["sent"], &["msgs", "bytes"]);

    let varz = request(&sys, "$SYS.REQ.SERVER.PING.VARZ", "").await;
    has_keys("VARZ", &varz, &["server", "data"]);
    has_keys("VARZ server", &varz["server"], SERVER_BLOCK);
    has_keys(
        "VARZ data",
        &varz["data"],
        &[
            "server_id",
            "server_name",
            "version",
            "connections",
            "in_msgs",
            "subscriptions",
        ],
    );
    assert_eq!(varz["data"]["system_account"], json!("SYS"), "{kind}");
    let id = varz["server"]["id"].as_str().expect("server id").to_owned();
    assert_eq!(varz["data"]["server_id"], json!(id));

    // By server id: this server's pages.
    let healthz = request(&sys, &format!("$SYS.REQ.SERVER.{id}.HEALTHZ"), "").await;
    assert_eq!(healthz["data"]["status"], json!("ok"), "{kind}: {healthz}");
    assert_eq!(healthz["server"]["id"], json!(id));
    let connz = request(
        &sys,
        &format!("$SYS.REQ.SERVER.{id}.CONNZ"),
        r#"{"acc":"SYS","sort":"cid","unknown":true}"#,
    )
    .await;
    has_keys(
        "CONNZ data",
        &connz["data"],
        &[
            "server_id",
            "now",
            "num_connections",
            "total",
            "offset",
            "limit",
            "connections",
        ],
    );
    assert_eq!(
        connz["data"]["total"],
        json!(1),
        "{kind}: only sys is in SYS: {connz}"
    );
    for page in ["LEAFZ", "SUBSZ", "JSZ", "ACCOUNTZ", "STATSZ"] {
        let answer = request(&sys, &format!("$SYS.REQ.SERVER.{id}.{page}"), "").await;
        has_keys(page, &answer["server"], SERVER_BLOCK);
        let body = if page == "STATSZ" { "statsz" } else { "data" };
        assert!(answer[body].is_object(), "{kind} {page}: {answer}");
    }

    // A bad option is an error (nats-server's code 500), and the server answers on.
    let bad = request(&sys, "$SYS.REQ.SERVER.PING.CONNZ", r#"{"sort":"bogus"}"#).await;
    assert_eq!(bad["error"]["code"], json!(500), "{kind}: {bad}");
    assert_eq!(
        bad["error"]["description"],
        json!("invalid sorting option: bogus"),
        "{kind}"
    );
    let not_json = request(&sys, "$SYS.REQ.SERVER.PING.VARZ", "{nope").await;
    assert_eq!(not_json["error"]["code"], json!(400), "{kind}: {not_json}");

    // A filter for another server: silence (the request times out).
    let mut inbox = sys.subscribe("_INBOX.filtered").await.unwrap();
    sync(&sys).await;
    sys.publish_with_reply(
        "$SYS.REQ.SERVER.PING.VARZ",
        "_INBOX.filtered",
        r#"{"server_name":"no-such-server"}"#.into(),
    )
    .await
    .unwrap();
    sync(&sys).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        drain_ready(&mut inbox).await.is_empty(),
        "{kind}: filtered out"
    );
    let again = request(&sys, "$SYS.REQ.SERVER.PING", "").await;
    assert!(
        again["server"]["seq"].as_u64() > ping["server"]["seq"].as_u64(),
        "{kind}: seq grows: {again}"
    );

    // A user of another account has no such subjects.
    let a = login(&server, "a").await;
    let err = a
        .request("$SYS.REQ.SERVER.PING", "".into())
        .await
        .expect_err("account A has no system requests");
    assert_eq!(
        err.kind(),
        e2e::async_nats::RequestErrorKind::NoResponders,
        "{kind}: {err}"
    );
}

/// The next advisory on `sub`, skipping the system user's own: nats-server publishes a
/// login's connect advisory asynchronously, so the `sys` client's own can arrive after its
/// subscription to the advisories is in place.
async fn next_advisory(sub: &mut e2e::async_nats::Subscriber) -> e2e::async_nats::Message {
    loop {
        let m = next_msg(sub).await;
        if !m.subject.as_str().starts_with("$SYS.ACCOUNT.SYS.") {
            return m;
        }
    }
}

async fn client_advisories(kind: ServerKind) {
    let server = start(kind, free_port(), config(&unique("adv"))).await;
    let sys = login(&server, "sys").await;
    let mut connects = sys.subscribe("$SYS.ACCOUNT.*.CONNECT").await.unwrap();
    let mut disconnects = sys.subscribe("$SYS.ACCOUNT.*.DISCONNECT").await.unwrap();
    sync(&sys).await;
    // A user of account A listening to the same subjects in its own account.
    let a2 = login(&server, "a2").await;
    let mut outsider = a2.subscribe("$SYS.>").await.unwrap();
    sync(&a2).await;
    // a2's own connect advisory.
    let first = next_advisory(&mut connects).await;
    assert_eq!(first.subject.as_str(), "$SYS.ACCOUNT.A.CONNECT", "{kind}");

    let mut raw = server.raw().await;
    raw.handshake(json!({ "user": "a", "pass": "a", "name": "adv-client" }))
        .await;
    raw.send("PUB x 2\r\nhi\r\nPING\r\n").await;
    raw.expect_line("PONG").await;
    let connect = next_advisory(&mut connects).await;
    assert_eq!(connect.subject.as_str(), "$SYS.ACCOUNT.A.CONNECT", "{kind}");
    let ev: Value = e2e::serde_json::from_slice(&connect.payload).unwrap();
    has_keys(
        "connect",
        &ev,
        &["type", "id", "timestamp", "server", "client"],
    );
    assert_eq!(
        ev["type"],
        json!("io.nats.server.advisory.v1.client_connect")
    );
    has_keys("connect server", &ev["server"], SERVER_BLOCK);
    has_keys(
        "connect client",
        &ev["client"],
        &[
            "start",
            "host",
            "id",
            "acc",
            "user",
            "name",
            "lang",
            "ver",
            "kind",
            "client_type",
        ],
    );
    assert_eq!(ev["client"]["acc"], json!("A"), "{kind}");
    assert_eq!(ev["client"]["user"], json!("a"), "{kind}");
    assert_eq!(ev["client"]["name"], json!("adv-client"), "{kind}");
    assert_eq!(ev["client"]["kind"], json!("Client"), "{kind}");

    drop(raw);
    let disconnect = next_advisory(&mut disconnects).await;
    assert_eq!(
        disconnect.subject.as_str(),
        "$SYS.ACCOUNT.A.DISCONNECT",
        "{kind}"
    );
    let ev: Value = e2e::serde_json::from_slice(&disconnect.payload).unwrap();
    has_keys(
        "disconnect",
        &ev,
        &[
            "type",
            "id",
            "timestamp",
            "server",
            "client",
            "sent",
            "received",
            "reason",
        ],
    );
    assert_eq!(
        ev["type"],
        json!("io.nats.server.advisory.v1.client_disconnect")
    );
    has_keys(
        "disconnect client",
        &ev["client"],
        &["start", "stop", "acc", "user", "kind"],
    );
    assert_eq!(ev["client"]["name"], json!("adv-client"), "{kind}");
    assert_eq!(ev["sent"], json!({ "msgs": 1, "bytes": 2 }), "{kind}: {ev}");

    // Nothing of it reached account A.
    sync(&a2).await;
    assert!(drain_ready(&mut outsider).await.is_empty(), "{kind}");
}

e2e::server_tests!(ping_varz_and_requests_by_id, client_advisories);

/// A leafd logs into a hub of `hub_kind` as client user `a` (no `leafnodes.authorization`):
/// the hub's system account hears of it, `/leafz` shows it in account A with its
/// subscriptions; when the leaf is killed leafd and hubd send the disconnect advisory.
async fn leaf_advisories(hub_kind: ServerKind) {
    let (mport, lport) = (free_port(), free_port());
    let mut hub_config = config(&unique("hub"));
    hub_config["leafnodes"] = json!({ "listen": format!("127.0.0.1:{lport}") });
    if hub_kind != ServerKind::NatsServer {
        // The first keepalive ping (which measures `rtt`) after a second, as nats-server's.
        hub_config["leafnodes"]["ping_interval"] = json!("1s");
    }
    let hub = start(hub_kind, mport, hub_config).await;
    let sys = login(&hub, "sys").await;
    let mut connects = sys.subscribe("$SYS.ACCOUNT.A.CONNECT").await.unwrap();
    let mut disconnects = sys.subscribe("$SYS.ACCOUNT.A.DISCONNECT").await.unwrap();
    // The subjects fleet tools ask for (ours only: nats-server 2.9 sends LEAFNODE.CONNECT to
    // its gateways alone and has no LEAFNODE.DISCONNECT).
    let mut leaf_events = sys.subscribe("$SYS.ACCOUNT.A.LEAFNODE.*").await.unwrap();
    sync(&sys).await;

    let leaf_name = unique("leaf");
    let mut leaf = TestServer::with_config(
        ServerKind::Leafd,
        json!({
            "server_name": leaf_name,
            "leafnodes": { "remotes": [ { "url": format!("nats-leaf://a:a@127.0.0.1:{lport}") } ] },
        }),
    )
    .await;
    let connect = next_advisory(&mut connects).await;
    let ev: Value = e2e::serde_json::from_slice(&connect.payload).unwrap();
    has_keys(
        "leaf connect",
        &ev,
        &["type", "id", "timestamp", "server", "client"],
    );
    has_keys(
        "leaf connect client",
        &ev["client"],
        &["start", "host", "id", "acc", "user", "name", "ver", "kind"],
    );
    assert_eq!(ev["client"]["kind"], json!("Leafnode"), "{hub_kind}: {ev}");
    assert_eq!(ev["client"]["acc"], json!("A"), "{hub_kind}");
    assert_eq!(ev["client"]["name"], json!(leaf_name), "{hub_kind}");

    // The leaf's interest, listed in account A.
    let lc = leaf.client().await;
    let subject = unique("leafsub");
    let _sub = lc.subscribe(subject.clone()).await.unwrap();
    sync(&lc).await;
    let leafz = bounded("the leaf's subscription in /leafz", async {
        loop {
            let (code, leafz) = http_get(mport, "/leafz?subs=1&acc=A").await;
            assert_eq!(code, 200, "{hub_kind}: {leafz}");
            let listed = leafz["leafs"][0]["subscriptions_list"]
                .as_array()
                .is_some_and(|l| l.contains(&json!(subject)));
            if listed {
                break leafz;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let link = &leafz["leafs"][0];
    has_keys(
        "leafz leaf",
        link,
        &[
            "account",
            "ip",
            "port",
            "in_msgs",
            "out_msgs",
            "in_bytes",
            "out_bytes",
            "subscriptions",
            "subscriptions_list",
        ],
    );
    assert_eq!(link["account"], json!("A"), "{hub_kind}");
    // The round trip, once the first keepalive ping was answered.
    bounded("the link's rtt in /leafz", async {
        loop {
            let (_, leafz) = http_get(mport, "/leafz").await;
            if leafz["leafs"][0]["rtt"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (_, other) = http_get(mport, "/leafz?acc=SYS").await;
    assert_eq!(
        other["leafs"].as_array().map_or(0, Vec::len),
        0,
        "{hub_kind}: {other}"
    );
    let (_, accstatz) = http_get(mport, "/accstatz?unused=1").await;
    let a = accstatz["account_statz"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["acc"] == json!("A")).cloned())
        .unwrap_or_else(|| panic!("{hub_kind}: no A in {accstatz}"));
    has_keys(
        "accstatz A",
        &a,
        &[
            "acc",
            "conns",
            "leafnodes",
            "total_conns",
            "sent",
            "received",
            "slow_consumers",
        ],
    );
    assert_eq!(a["leafnodes"], json!(1), "{hub_kind}: {a}");

    leaf.kill();
    let disconnect = next_advisory(&mut disconnects).await;
    if hub_kind != ServerKind::NatsServer {
        for what in ["CONNECT", "DISCONNECT"] {
            let m = next_msg(&mut leaf_events).await;
            assert_eq!(
                m.subject.as_str(),
                format!("$SYS.ACCOUNT.A.LEAFNODE.{what}"),
                "{hub_kind}"
            );
            let ev: Value = e2e::serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(ev["acc"], json!("A"), "{hub_kind}: {ev}");
            assert_eq!(ev["client"]["kind"], json!("Leafnode"), "{hub_kind}: {ev}");
        }
    }
    let ev: Value = e2e::serde_json::from_slice(&disconnect.payload).unwrap();
    has_keys(
        "leaf disconnect",
        &ev,
        &["type", "server", "client", "sent", "received", "reason"],
    );
    has_keys(
        "leaf disconnect client",
        &ev["client"],
        &["start", "stop", "acc", "name", "kind"],
    );
    assert_eq!(ev["client"]["kind"], json!("Leafnode"), "{hub_kind}: {ev}");
    assert_eq!(ev["client"]["name"], json!(leaf_name), "{hub_kind}");
}

mod leaf_advisories {
    use e2e::ServerKind::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::leaf_advisories(Hubd).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leafd() {
        super::leaf_advisories(Leafd).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::leaf_advisories(NatsServer).await
    }
}

async fn accountz_and_connz_pages(kind: ServerKind) {
    let mport = free_port();
    let server = start(kind, mport, config(&unique("pages"))).await;
    let a = login(&server, "a").await;
    let subject = unique("connz");
    let _sub = a.subscribe(subject.clone()).await.unwrap();
    a.publish(subject.clone(), "x".into()).await.unwrap();
    sync(&a).await;
    let _sys = login(&server, "sys").await;

    let (code, accountz) = http_get(mport, "/accountz").await;
    assert_eq!(code, 200, "{kind}");
    has_keys(
        "accountz",
        &accountz,
        &["server_id", "now", "system_account", "accounts"],
    );
    assert_eq!(accountz["system_account"], json!("SYS"), "{kind}");
    for name in ["$G", "A", "SYS"] {
        assert!(
            accountz["accounts"]
                .as_array()
                .is_some_and(|l| l.contains(&json!(name))),
            "{kind}: {name} in {accountz}"
        );
    }
    let (code, detail) = http_get(mport, "/accountz?acc=A").await;
    assert_eq!(code, 200, "{kind}");
    has_keys(
        "accountz?acc=A",
        &detail["account_detail"],
        &[
            "account_name",
            "expired",
            "complete",
            "jetstream_enabled",
            "leafnode_connections",
            "client_connections",
            "subscriptions",
        ],
    );
    assert_eq!(
        detail["account_detail"]["client_connections"],
        json!(1),
        "{kind}: {detail}"
    );
    let (code, _) = http_get(mport, "/accountz?acc=NOPE").await;
    assert_eq!(code, 400, "{kind}: unknown account");

    let (code, accstatz) = http_get(mport, "/accstatz").await;
    assert_eq!(code, 200, "{kind}");
    has_keys(
        "accstatz",
        &accstatz,
        &["server_id", "now", "account_statz"],
    );

    let (code, connz) = http_get(mport, "/connz?acc=A&sort=bytes_to&subs=1").await;
    assert_eq!(code, 200, "{kind}: {connz}");
    assert_eq!(connz["total"], json!(1), "{kind}: only a is in A: {connz}");
    let conn = &connz["connections"][0];
    has_keys(
        "connz connection",
        conn,
        &[
            "cid",
            "ip",
            "port",
            "start",
            "uptime",
            "in_msgs",
            "out_bytes",
            "subscriptions",
            "subscriptions_list",
        ],
    );
    assert_eq!(conn["subscriptions_list"], json!([subject]), "{kind}");
    let (code, detail) = http_get(mport, "/connz?acc=A&subs=detail").await;
    assert_eq!(code, 200, "{kind}");
    has_keys(
        "subscriptions_list_detail",
        &detail["connections"][0]["subscriptions_list_detail"][0],
        &["subject", "sid", "msgs", "cid"],
    );
    let (code, none) = http_get(mport, "/connz?acc=NOPE").await;
    assert_eq!(
        (code, none["total"].clone()),
        (200, json!(0)),
        "{kind}: {none}"
    );
    let (code, all) = http_get(mport, "/connz?sort=subs").await;
    assert_eq!(code, 200, "{kind}");
    assert_eq!(all["total"], json!(2), "{kind}: a and sys: {all}");

    // A bad sort value: 400, and the server lives on.
    let (code, _) = http_get(mport, "/connz?sort=bogus").await;
    assert_eq!(code, 400, "{kind}");
    let (code, _) = http_get(mport, "/connz?subs=maybe").await;
    assert_eq!(code, 400, "{kind}");
    let (code, _) = http_get(mport, "/healthz").await;
    assert_eq!(code, 200, "{kind}");
    sync(&a).await;
}

e2e::server_tests!(accountz_and_connz_pages);
