//! Operator mode (issue 19, "identity without restarts"), end to end against hubd and, with
//! the same configuration, nats-server 2.9: JWTs minted in the test with the `nkeys` crate
//! (operator → account → user), users logging in with `.creds` through async-nats.
//!
//! * `resolver: MEMORY` with `resolver_preload`: a user of a preloaded account logs in and
//!   lands in its account (isolated from another account's users); a user JWT signed by a
//!   key the account does not know is refused; a user JWT that expires mid-connection is
//!   disconnected.
//! * The full resolver: an account unknown at start is pushed by a system-account user on
//!   `$SYS.REQ.CLAIMS.UPDATE`, and its new user logs in without a restart; a malformed JWT or
//!   one of another operator is refused with a reason (nats-server 2.9 stores the latter and
//!   fails only when it is used), connected users unaffected; an update that revokes a user
//!   disconnects it and refuses it afterwards.
//! * A leaf with a `.creds` file of an account's user: its traffic lives in that account.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::async_nats::{self, Client, ConnectOptions};
use e2e::creds::{creds_text, encode_jwt};
use e2e::serde_json::{json, Value};
use e2e::{bounded, next_msg, sync, unique, ServerKind, StoreDir, TestServer};
use nkeys::KeyPair;

/// Unix seconds now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An operator with a system account and two accounts (A preloaded, B not unless asked).
struct Fleet {
    operator_jwt: String,
    operator: KeyPair,
    system: KeyPair,
    a: KeyPair,
    b: KeyPair,
}

impl Fleet {
    fn new() -> Fleet {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let operator_jwt = encode_jwt(
            json!({
                "name": "e2e-operator",
                "sub": operator.public_key(),
                "nats": { "type": "operator", "version": 2, "system_account": system.public_key() },
            }),
            &operator,
        );
        Fleet {
            operator_jwt,
            operator,
            system,
            a: KeyPair::new_account(),
            b: KeyPair::new_account(),
        }
    }

    /// The JWT of `account`, revoking the users in `revoked` (key → unix time).
    fn account_jwt(&self, account: &KeyPair, name: &str, revoked: Value) -> String {
        encode_jwt(
            json!({
                "name": name,
                "sub": account.public_key(),
                "nats": {
                    "limits": {
                        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                        "wildcards": true, "conn": -1, "leaf": -1,
                    },
                    "revocations": revoked,
                    "default_permissions": { "pub": {}, "sub": {} },
                    "type": "account",
                    "version": 2,
                },
            }),
            &self.operator,
        )
    }

    /// The config: the operator JWT in a file of `dir`, the resolver, A and the system
    /// account preloaded.
    fn config(&self, dir: &StoreDir, resolver: Value) -> Value {
        let path = format!("{}/operator.jwt", dir.path());
        std::fs::write(&path, &self.operator_jwt).unwrap();
        json!({
            "operator": path,
            "system_account": self.system.public_key(),
            "resolver": resolver,
            "resolver_preload": {
                self.a.public_key(): self.account_jwt(&self.a, "A", json!({})),
                self.system.public_key(): self.account_jwt(&self.system, "SYS", json!({})),
            },
        })
    }
}

/// `.creds` text of a new user of `account` (signed by `signer`), expiring at `exp` (0:
/// never); returns the user's key pair too.
fn user_creds(account: &KeyPair, signer: &KeyPair, exp: u64) -> (KeyPair, String) {
    user_creds_with(account, signer, exp, json!({}))
}

/// [`user_creds`] with `extra` members in the JWT's `nats` claims.
fn user_creds_with(
    account: &KeyPair,
    signer: &KeyPair,
    exp: u64,
    extra: Value,
) -> (KeyPair, String) {
    let user = KeyPair::new_user();
    let mut claims = json!({
        "name": "e2e-user",
        "sub": user.public_key(),
        "nats": {
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        },
    });
    if account.public_key() != signer.public_key() {
        claims["nats"]["issuer_account"] = json!(account.public_key());
    }
    if let (Some(nats), Some(extra)) = (claims["nats"].as_object_mut(), extra.as_object()) {
        nats.extend(extra.clone());
    }
    if exp > 0 {
        claims["exp"] = json!(exp);
    }
    let jwt = encode_jwt(claims, signer);
    let creds = creds_text(&jwt, &user.seed().unwrap());
    (user, creds)
}

fn options(creds: &str) -> ConnectOptions {
    ConnectOptions::with_credentials(creds)
        .expect("creds parse")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .ignore_discovered_servers()
        .max_reconnects(1)
}

async fn login(server: &TestServer, creds: &str) -> Result<Client, async_nats::ConnectError> {
    server.try_client_with(options(creds)).await
}

async fn memory_resolver_logs_users_into_their_accounts(kind: ServerKind) {
    let dir = StoreDir::new();
    let fleet = Fleet::new();
    let server = TestServer::with_config(kind, fleet.config(&dir, json!("MEMORY"))).await;
    let (_, creds_a) = user_creds(&fleet.a, &fleet.a, 0);
    let (_, creds_a2) = user_creds(&fleet.a, &fleet.a, 0);
    let a = login(&server, &creds_a).await.expect("A's user logs in");
    let a2 = login(&server, &creds_a2)
        .await
        .expect("A's second user logs in");
    let subject = unique("op");
    let mut sub = a.subscribe(subject.clone()).await.unwrap();
    sync(&a).await;
    a2.publish(subject.clone(), "within A".into())
        .await
        .unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"within A", "{kind}");
    // The system account's users are elsewhere.
    let (_, creds_sys) = user_creds(&fleet.system, &fleet.system, 0);
    let sys = login(&server, &creds_sys)
        .await
        .expect("a system user logs in");
    sys.publish(subject.clone(), "from SYS".into())
        .await
        .unwrap();
    sync(&sys).await;
    sync(&a).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        e2e::drain_ready(&mut sub).await.is_empty(),
        "{kind}: crossed accounts"
    );

    // Signed by a key A does not know: refused. Of an account the resolver does not have
    // (B, not preloaded): refused.
    let stranger = KeyPair::new_account();
    let (_, forged) = user_creds(&fleet.a, &stranger, 0);
    assert!(
        login(&server, &forged).await.is_err(),
        "{kind}: forged user logged in"
    );
    let (_, creds_b) = user_creds(&fleet.b, &fleet.b, 0);
    assert!(
        login(&server, &creds_b).await.is_err(),
        "{kind}: unknown account"
    );

    // Restrictions: a leaf-only user cannot log in as a client; a user restricted to
    // another network cannot log in from here.
    for extra in [
        json!({ "allowed_connection_types": ["LEAFNODE"] }),
        json!({ "src": "10.99.0.0/16" }),
    ] {
        let (_, restricted) = user_creds_with(&fleet.a, &fleet.a, 0, extra.clone());
        assert!(
            login(&server, &restricted).await.is_err(),
            "{kind}: {extra} logged in"
        );
    }

    // A user JWT that expires in 2 s is disconnected then.
    let (_, short) = user_creds(&fleet.a, &fleet.a, now() + 2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let short_client = server
        .try_client_with(options(&short).event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.to_string());
            }
        }))
        .await
        .expect("the short-lived user logs in");
    let events = bounded("the expiry disconnect", async {
        let mut seen = Vec::new();
        while let Some(e) = rx.recv().await {
            seen.push(e.clone());
            if e.to_lowercase().contains("disconnect") || e.to_lowercase().contains("expired") {
                return seen;
            }
        }
        seen
    })
    .await;
    assert!(!events.is_empty(), "{kind}: no disconnect event");
    drop(short_client);
}

async fn full_resolver_onboards_and_revokes_without_restart(kind: ServerKind) {
    let dir = StoreDir::new();
    let fleet = Fleet::new();
    let resolver = json!({ "type": "full", "dir": format!("{}/jwt", dir.path()) });
    let server = TestServer::with_config(kind, fleet.config(&dir, resolver)).await;
    let (_, creds_sys) = user_creds(&fleet.system, &fleet.system, 0);
    let sys = login(&server, &creds_sys)
        .await
        .expect("a system user logs in");

    // B is unknown: its user is refused; pushed, B's user logs in.
    let (_, creds_b) = user_creds(&fleet.b, &fleet.b, 0);
    assert!(
        login(&server, &creds_b).await.is_err(),
        "{kind}: B before its push"
    );
    let answer = sys
        .request(
            "$SYS.REQ.CLAIMS.UPDATE",
            fleet.account_jwt(&fleet.b, "B", json!({})).into(),
        )
        .await
        .expect("the claims update is answered");
    let body: Value = e2e::serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(body["data"]["code"], 200, "{kind}: {body}");
    assert_eq!(
        body["data"]["account"],
        fleet.b.public_key(),
        "{kind}: {body}"
    );
    let b = login(&server, &creds_b)
        .await
        .expect("B's user after the push");
    let subject = unique("b");
    let mut sub = b.subscribe(subject.clone()).await.unwrap();
    sync(&b).await;
    b.publish(subject.clone(), "hello".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hello", "{kind}");

    // An account JWT of another operator, and a malformed one, are refused with a reason
    // (nats-server 2.9 stores the former); connected users are unaffected.
    let other = Fleet::new();
    for (what, jwt) in [
        (
            "another operator's",
            other.account_jwt(&other.a, "X", json!({})),
        ),
        ("malformed", "eyJ.not.a-jwt".to_string()),
    ] {
        let answer = sys
            .request("$SYS.REQ.CLAIMS.UPDATE", jwt.into())
            .await
            .expect("the refusal is answered");
        let body: Value = e2e::serde_json::from_slice(&answer.payload).unwrap();
        if kind == ServerKind::NatsServer && what == "another operator's" {
            // nats-server 2.9 stores it ("jwt updated") and refuses it only when used;
            // hubd refuses it at the door.
            assert_eq!(body["data"]["code"], 200, "{kind}: {what}: {body}");
            continue;
        }
        assert!(
            body["error"]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{kind}: {what}: {body}"
        );
    }
    b.publish(subject.clone(), "still".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"still", "{kind}");

    // An update revoking a user of A disconnects it; it cannot log in again.
    let (victim, creds_victim) = user_creds(&fleet.a, &fleet.a, 0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _victim_client = server
        .try_client_with(options(&creds_victim).event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.to_string());
            }
        }))
        .await
        .expect("the victim logs in");
    // Revocations cover JWTs issued at or before the time given.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked = json!({ victim.public_key(): now() });
    let answer = sys
        .request(
            format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", fleet.a.public_key()),
            fleet.account_jwt(&fleet.a, "A", revoked).into(),
        )
        .await
        .expect("the revocation is answered");
    let body: Value = e2e::serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(body["data"]["code"], 200, "{kind}: {body}");
    bounded("the revoked user's disconnect", async {
        while let Some(e) = rx.recv().await {
            let e = e.to_lowercase();
            if e.contains("disconnect") || e.contains("revoked") {
                return;
            }
        }
    })
    .await;
    assert!(
        login(&server, &creds_victim).await.is_err(),
        "{kind}: the revoked user logged in again"
    );
}

mod memory_resolver_logs_users_into_their_accounts {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::memory_resolver_logs_users_into_their_accounts(e2e::ServerKind::Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::memory_resolver_logs_users_into_their_accounts(e2e::ServerKind::NatsServer).await
    }
}

mod full_resolver_onboards_and_revokes_without_restart {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::full_resolver_onboards_and_revokes_without_restart(e2e::ServerKind::Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::full_resolver_onboards_and_revokes_without_restart(e2e::ServerKind::NatsServer).await
    }
}

/// A leaf logging in to an operator-mode hub with a `.creds` file of a user of A: its
/// traffic lives in A on the hub (both ways), and the system account's users see none of it.
async fn leaf_with_creds_lands_in_its_account(hub_kind: ServerKind, leaf_kind: ServerKind) {
    let dir = StoreDir::new();
    let fleet = Fleet::new();
    let port = e2e::free_port();
    let mut config = fleet.config(&dir, json!("MEMORY"));
    config["leafnodes"] = json!({ "listen": format!("127.0.0.1:{port}") });
    let hub = TestServer::with_config(hub_kind, config).await;
    let (_, leaf_creds) = user_creds(&fleet.a, &fleet.a, 0);
    let creds_path = format!("{}/leaf.creds", dir.path());
    std::fs::write(&creds_path, leaf_creds).unwrap();
    let leaf = TestServer::with_config(
        leaf_kind,
        json!({ "leafnodes": { "remotes": [ {
            "url": format!("nats-leaf://127.0.0.1:{port}"),
            "credentials": creds_path,
        } ], "reconnect": 1 } }),
    )
    .await;
    let (_, creds_a) = user_creds(&fleet.a, &fleet.a, 0);
    let a = login(&hub, &creds_a).await.expect("A's user logs in");
    let lc = leaf.client().await;
    e2e::pub_sub_both_ways(&a, &lc).await;
    // The system account does not receive the leaf's traffic.
    let (_, creds_sys) = user_creds(&fleet.system, &fleet.system, 0);
    let sys = login(&hub, &creds_sys)
        .await
        .expect("a system user logs in");
    let up = unique("up");
    let mut sub_sys = sys.subscribe(up.clone()).await.unwrap();
    let mut sub_a = a.subscribe(up.clone()).await.unwrap();
    e2e::await_interest(&lc, &up, &mut sub_a).await;
    lc.publish(up.clone(), "x".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub_a).await.payload[..], b"x");
    sync(&sys).await;
    assert!(
        e2e::drain_ready(&mut sub_sys).await.is_empty(),
        "{hub_kind} from {leaf_kind}: crossed accounts"
    );
}

mod leaf_with_creds_lands_in_its_account {
    use e2e::ServerKind::{Hubd, Leafd, NatsServer};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leafd_to_hubd() {
        super::leaf_with_creds_lands_in_its_account(Hubd, Leafd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server_to_hubd() {
        super::leaf_with_creds_lands_in_its_account(Hubd, NatsServer).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leafd_to_nats_server() {
        super::leaf_with_creds_lands_in_its_account(NatsServer, Leafd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server_to_nats_server() {
        super::leaf_with_creds_lands_in_its_account(NatsServer, NatsServer).await
    }
}
