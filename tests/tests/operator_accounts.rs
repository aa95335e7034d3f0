//! Operator mode (issue 19): what an account JWT gives its account, end to end against hubd
//! and, with the same configuration and steps, nats-server 2.9. JWTs are minted in the test
//! with the `nkeys` crate (operator → account → user).
//!
//! * JetStream: an account whose JWT enables it (`mem_storage`/`disk_storage`) creates a
//!   stream and publishes with a PubAck; its `streams` limit refuses one more (10027); an
//!   account without it gets 10039; a claims update that enables JetStream at run time works
//!   without a restart, one that takes it away answers 10039 again, and enabled once more the
//!   stream is still there.
//! * Limits: `conn` refuses a connection past it with `-ERR 'maximum account active
//!   connections exceeded'`; `subs` refuses a subscription past it with `-ERR 'maximum
//!   subscriptions exceeded'`; `payload` is announced in an INFO after the CONNECT, and a
//!   connection publishing more is closed with `-ERR 'Maximum Payload Violation'`; `leaf`
//!   refuses a second leaf of the account with the same error as `conn`.
//! * Exports/imports: a service exported by one JWT account and imported by another (under
//!   its `local_subject`) answers a request; a stream import with a `local_subject`.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::time::Duration;

use e2e::async_nats::{Client, ConnectOptions};
use e2e::creds::{creds_text, encode_jwt, user_jwt, B64};
use e2e::serde_json::{json, Value};
use e2e::{bounded, js_api, next_msg, sync, unique, RawConn, ServerKind, StoreDir, TestServer};
use nkeys::KeyPair;

use base64::Engine;

/// An operator, its system account, and the account JWTs the test mints.
struct Operator {
    jwt: String,
    key: KeyPair,
    system: KeyPair,
}

/// Account limits with everything unlimited and no JetStream (as `nsc` mints them).
fn unlimited() -> Value {
    json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    })
}

/// JetStream enabled (both storages unlimited), at most `streams` streams.
fn with_jetstream(streams: i64) -> Value {
    let mut limits = unlimited();
    limits["mem_storage"] = json!(-1);
    limits["disk_storage"] = json!(-1);
    limits["streams"] = json!(streams);
    limits["consumer"] = json!(-1);
    limits
}

impl Operator {
    fn new() -> Operator {
        let key = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let jwt = encode_jwt(
            json!({
                "name": "e2e-operator",
                "sub": key.public_key(),
                "nats": { "type": "operator", "version": 2, "system_account": system.public_key() },
            }),
            &key,
        );
        Operator { jwt, key, system }
    }

    /// The JWT of `account` with `limits`, `exports` and `imports`.
    fn account_jwt(
        &self,
        account: &KeyPair,
        limits: Value,
        exports: Value,
        imports: Value,
    ) -> String {
        encode_jwt(
            json!({
                "name": "e2e-account",
                "sub": account.public_key(),
                "nats": {
                    "limits": limits,
                    "exports": exports,
                    "imports": imports,
                    "default_permissions": { "pub": {}, "sub": {} },
                    "type": "account",
                    "version": 2,
                },
            }),
            &self.key,
        )
    }

    /// Operator mode with JetStream (store in `dir`), `resolver`, and `preload` (account
    /// key → JWT) besides the system account.
    fn config(&self, dir: &StoreDir, resolver: Value, preload: &[(&KeyPair, String)]) -> Value {
        let path = format!("{}/operator.jwt", dir.path());
        std::fs::write(&path, &self.jwt).unwrap();
        let mut accounts = json!({
            self.system.public_key(): self.account_jwt(&self.system, unlimited(), json!([]), json!([])),
        });
        for (key, jwt) in preload {
            accounts[key.public_key()] = json!(jwt);
        }
        json!({
            "operator": path,
            "system_account": self.system.public_key(),
            "resolver": resolver,
            "resolver_preload": accounts,
            "jetstream": { "store_dir": format!("{}/js", dir.path()) },
        })
    }
}

/// A client logged in as a new user of `account`.
async fn login(server: &TestServer, account: &KeyPair) -> Client {
    let user = KeyPair::new_user();
    let creds = creds_text(&user_jwt(&user, account), &user.seed().unwrap());
    let options = ConnectOptions::with_credentials(&creds)
        .expect("creds parse")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .ignore_discovered_servers()
        .max_reconnects(1);
    server
        .try_client_with(options)
        .await
        .expect("the account's user logs in")
}

/// A raw connection that sent the CONNECT of a new user of `account` (the nonce signed).
async fn raw_login(server: &TestServer, account: &KeyPair) -> RawConn {
    let user = KeyPair::new_user();
    let mut conn = RawConn::open(server.port()).await;
    let nonce = conn.info()["nonce"]
        .as_str()
        .expect("INFO has a nonce")
        .to_owned();
    let sig = B64.encode(user.sign(nonce.as_bytes()).unwrap());
    conn.send_connect(json!({ "jwt": user_jwt(&user, account), "sig": sig }))
        .await;
    conn
}

/// `$JS.API.INFO` of `client` until it says no error (bounded): JetStream may come up just
/// after a claims update is answered.
async fn until_jetstream(client: &Client) -> Value {
    bounded("the account's JetStream", async {
        loop {
            let info = js_api(client, "$JS.API.INFO", json!({})).await;
            if info.get("error").is_none() {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// `$JS.API.INFO` of `client` until it answers 10039 (bounded).
async fn until_not_enabled(client: &Client) -> Value {
    bounded("JetStream switched off", async {
        loop {
            let info = js_api(client, "$JS.API.INFO", json!({})).await;
            if info["error"]["err_code"] == 10039 {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn jwt_accounts_get_jetstream_as_their_jwt_says(kind: ServerKind) {
    let dir = StoreDir::new();
    let op = Operator::new();
    let (a, b) = (KeyPair::new_account(), KeyPair::new_account());
    let preload = [
        (
            &a,
            op.account_jwt(&a, with_jetstream(1), json!([]), json!([])),
        ),
        (&b, op.account_jwt(&b, unlimited(), json!([]), json!([]))),
    ];
    let server = TestServer::with_config(kind, op.config(&dir, json!("MEMORY"), &preload)).await;
    let ca = login(&server, &a).await;
    let cb = login(&server, &b).await;

    let info = until_jetstream(&ca).await;
    assert_eq!(info["limits"]["max_streams"], 1, "{kind}: {info}");
    let created = js_api(
        &ca,
        "$JS.API.STREAM.CREATE.S",
        json!({ "name": "S", "subjects": ["s.>"] }),
    )
    .await;
    assert!(created.get("error").is_none(), "{kind}: {created}");
    let js = e2e::async_nats::jetstream::new(ca.clone());
    assert_eq!(e2e::js_publish(&js, "s.1", "stored").await, 1, "{kind}");

    // The JWT's `streams: 1`: a second stream is refused (10027).
    let second = js_api(
        &ca,
        "$JS.API.STREAM.CREATE.T",
        json!({ "name": "T", "subjects": ["t.>"] }),
    )
    .await;
    assert_eq!(second["error"]["err_code"], 10027, "{kind}: {second}");

    // B's JWT has no JetStream: 10039.
    let info_b = js_api(&cb, "$JS.API.INFO", json!({})).await;
    assert_eq!(info_b["error"]["err_code"], 10039, "{kind}: {info_b}");
}

async fn claims_updates_switch_jetstream_without_restart(kind: ServerKind) {
    let dir = StoreDir::new();
    let op = Operator::new();
    let b = KeyPair::new_account();
    let resolver = json!({ "type": "full", "dir": format!("{}/jwt", dir.path()) });
    let preload = [(&b, op.account_jwt(&b, unlimited(), json!([]), json!([])))];
    let server = TestServer::with_config(kind, op.config(&dir, resolver, &preload)).await;
    let sys = login(&server, &op.system).await;
    let cb = login(&server, &b).await;
    let info = js_api(&cb, "$JS.API.INFO", json!({})).await;
    assert_eq!(info["error"]["err_code"], 10039, "{kind}: {info}");

    let push = |limits: Value| {
        let jwt = op.account_jwt(&b, limits, json!([]), json!([]));
        let sys = sys.clone();
        let subject = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", b.public_key());
        async move {
            let answer = bounded("the claims update", sys.request(subject, jwt.into()))
                .await
                .expect("the claims update is answered");
            let body: Value = e2e::serde_json::from_slice(&answer.payload).unwrap();
            assert_eq!(body["data"]["code"], 200, "{body}");
        }
    };
    // iat is in seconds: each update must be newer than the last.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(with_jetstream(-1)).await;
    until_jetstream(&cb).await;
    let created = js_api(
        &cb,
        "$JS.API.STREAM.CREATE.S",
        json!({ "name": "S", "subjects": ["s.>"] }),
    )
    .await;
    assert!(created.get("error").is_none(), "{kind}: {created}");
    let js = e2e::async_nats::jetstream::new(cb.clone());
    assert_eq!(e2e::js_publish(&js, "s.1", "one").await, 1, "{kind}");

    // Taken away: 10039; given back: the stream and its message are still there.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(unlimited()).await;
    until_not_enabled(&cb).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push(with_jetstream(-1)).await;
    until_jetstream(&cb).await;
    let info = bounded("the stream back", async {
        loop {
            let info = js_api(&cb, "$JS.API.STREAM.INFO.S", json!({})).await;
            if info.get("error").is_none() {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(info["state"]["messages"], 1, "{kind}: {info}");
    assert_eq!(e2e::js_publish(&js, "s.2", "two").await, 2, "{kind}");
}

async fn account_limits_from_the_jwt(kind: ServerKind) {
    let dir = StoreDir::new();
    let op = Operator::new();
    let c = KeyPair::new_account();
    let mut limits = unlimited();
    limits["conn"] = json!(2);
    limits["subs"] = json!(2);
    limits["payload"] = json!(16);
    let preload = [(&c, op.account_jwt(&c, limits, json!([]), json!([])))];
    let server = TestServer::with_config(kind, op.config(&dir, json!("MEMORY"), &preload)).await;

    // `subs: 2`: the third subscription of a connection is refused, the connection stays.
    // Each connection is told its smaller `max_payload` in an INFO after its CONNECT.
    let mut first = raw_login(&server, &c).await;
    first.send("SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n").await;
    let read = first.until_pong().await;
    assert!(!read.closed, "{kind}: {read:?}");
    let (infos, others): (Vec<_>, Vec<_>) = read.lines.iter().partition(|l| l.starts_with("INFO "));
    assert_eq!(
        others,
        vec!["-ERR 'maximum subscriptions exceeded'"],
        "{kind}"
    );
    // nats-server 2.9 may send that INFO later (the login that loads the account gets it
    // after its first PONG); hubd before the CONNECT's answer.
    if kind != ServerKind::NatsServer {
        assert_eq!(infos.len(), 1, "{kind}: {infos:?}");
    }
    for info in infos {
        let info: Value = e2e::serde_json::from_str(&info["INFO ".len()..]).unwrap();
        assert_eq!(info["max_payload"], 16, "{kind}: {info}");
    }

    // `conn: 2`: a third connection of the account is refused.
    let mut second = raw_login(&server, &c).await;
    let read = second.until_pong().await;
    assert!(!read.closed, "{kind}: {read:?}");
    assert!(
        read.lines.iter().all(|l| l.contains("\"max_payload\":16")),
        "{kind}: {read:?}"
    );
    let mut third = raw_login(&server, &c).await;
    let lines = third.expect_closed_within(Duration::from_secs(5)).await;
    assert!(
        lines
            .iter()
            .any(|l| l == "-ERR 'maximum account active connections exceeded'"),
        "{kind}: {lines:?}"
    );
    // Once one leaves, there is room again.
    drop(second);
    let fourth = bounded("a place freed", async {
        loop {
            let mut conn = raw_login(&server, &c).await;
            let read = conn.until_pong().await;
            if !read.closed {
                return conn;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // `payload: 16`: a larger payload is a violation, the connection ends.
    let mut publisher = fourth;
    publisher
        .send("PUB x 32\r\n0123456789abcdef0123456789abcdef\r\n")
        .await;
    let lines = publisher.expect_closed_within(Duration::from_secs(5)).await;
    assert!(
        lines
            .iter()
            .any(|l| l == "-ERR 'Maximum Payload Violation'"),
        "{kind}: {lines:?}"
    );
    // Within it, fine.
    first.send("PUB x 4\r\nsmol\r\n").await;
    let read = first.until_pong().await;
    assert!(!read.closed, "{kind}: {read:?}");
    assert!(
        read.lines.iter().all(|l| l.contains("\"max_payload\":16")),
        "{kind}: {read:?}"
    );
}

async fn service_and_stream_imports_between_jwt_accounts(kind: ServerKind) {
    let dir = StoreDir::new();
    let op = Operator::new();
    let (a, b) = (KeyPair::new_account(), KeyPair::new_account());
    let exports = json!([
        { "subject": "svc.>", "type": "service" },
        { "subject": "events.>", "type": "stream" },
    ]);
    let imports = json!([
        { "subject": "svc.time", "account": a.public_key(), "type": "service", "local_subject": "time" },
        { "subject": "events.>", "account": a.public_key(), "type": "stream", "local_subject": "from_a.>" },
    ]);
    let preload = [
        (&a, op.account_jwt(&a, unlimited(), exports, json!([]))),
        (&b, op.account_jwt(&b, unlimited(), json!([]), imports)),
    ];
    let server = TestServer::with_config(kind, op.config(&dir, json!("MEMORY"), &preload)).await;
    let ca = login(&server, &a).await;
    let cb = login(&server, &b).await;

    // A answers B's requests on B's `time`.
    let mut svc = ca.subscribe("svc.time").await.unwrap();
    sync(&ca).await;
    let responder = ca.clone();
    let serve = tokio::spawn(async move {
        let req = next_msg(&mut svc).await;
        let reply = req.reply.expect("the request has a reply subject");
        responder.publish(reply, "12:00".into()).await.unwrap();
        responder.flush().await.unwrap();
    });
    let answer = bounded("the imported service", cb.request("time", "now?".into()))
        .await
        .expect("B's request is answered through the import");
    assert_eq!(&answer.payload[..], b"12:00", "{kind}");
    serve.await.unwrap();

    // A's events arrive in B under `from_a.`.
    let mut events = cb.subscribe("from_a.>").await.unwrap();
    sync(&cb).await;
    let subject = unique("events");
    let subject = format!("events.{subject}");
    bounded("the imported stream", async {
        loop {
            ca.publish(subject.clone(), "e".into()).await.unwrap();
            sync(&ca).await;
            if let Ok(Some(m)) = tokio::time::timeout(
                Duration::from_millis(200),
                futures::StreamExt::next(&mut events),
            )
            .await
            {
                return m;
            }
        }
    })
    .await;
    // B cannot reach A's own subjects.
    let err = cb.request("svc.time", "direct?".into()).await;
    assert!(
        err.is_err(),
        "{kind}: a request outside the import was answered"
    );
}

/// An account JWT with `leaf: 1`: a leafd leaf logs in with a `.creds` file of one of its
/// users and its traffic flows; a second leafd of the same account is refused with
/// `-ERR 'maximum account active connections exceeded'` (the hub says so, the leaf logs it).
async fn leaf_limit_from_the_jwt(kind: ServerKind) {
    let dir = StoreDir::new();
    let op = Operator::new();
    let l = KeyPair::new_account();
    let mut limits = unlimited();
    limits["leaf"] = json!(1);
    let preload = [(&l, op.account_jwt(&l, limits, json!([]), json!([])))];
    let port = e2e::free_port();
    let mut config = op.config(&dir, json!("MEMORY"), &preload);
    config["leafnodes"] = json!({ "listen": format!("127.0.0.1:{port}") });
    let hub = TestServer::with_config(kind, config).await;
    let leaf = |name: &str| {
        let user = KeyPair::new_user();
        let path = format!("{}/{name}.creds", dir.path());
        std::fs::write(
            &path,
            creds_text(&user_jwt(&user, &l), &user.seed().unwrap()),
        )
        .unwrap();
        json!({ "server_name": name, "leafnodes": { "remotes": [ {
            "url": format!("nats-leaf://127.0.0.1:{port}"),
            "credentials": path,
        } ], "reconnect": 1 } })
    };
    let first = TestServer::with_config(ServerKind::Leafd, leaf("leaf1")).await;
    let hc = login(&hub, &l).await;
    let lc = first.client().await;
    e2e::pub_sub_both_ways(&hc, &lc).await;
    let second = TestServer::with_config(ServerKind::Leafd, leaf("leaf2")).await;
    e2e::wait_for_log(&second, "maximum account active connections exceeded", 1).await;
    // The first leaf is unaffected.
    e2e::pub_sub_both_ways(&hc, &lc).await;
}

macro_rules! against_hubd_and_nats_server {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hubd() {
                super::$name(e2e::ServerKind::Hubd).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats_server() {
                super::$name(e2e::ServerKind::NatsServer).await
            }
        }
    };
}

against_hubd_and_nats_server!(jwt_accounts_get_jetstream_as_their_jwt_says);
against_hubd_and_nats_server!(claims_updates_switch_jetstream_without_restart);
against_hubd_and_nats_server!(account_limits_from_the_jwt);
against_hubd_and_nats_server!(service_and_stream_imports_between_jwt_accounts);
against_hubd_and_nats_server!(leaf_limit_from_the_jwt);
