//! nkey and `.creds` authentication on leafnode links, end to end, against nats-server 2.9.
//!
//! Keys are made at test time with the `nkeys` crate; JWTs (operator, account, user) with a
//! small encoder below, in the shape nats-server 2.9 (jwt v2) expects: header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, claims with `iss`/`sub`/`nats.type`/`nats.version`,
//! base64url without padding, signed by the issuer's nkey.
//!
//! * `leafd` with `nkey = <seed>` → a nats-server hub whose users list has the public key;
//!   a seed the hub does not know is refused, reported in `/leafz`, and retried;
//! * `leafd` with `credentials = <file>` → a nats-server hub in operator mode (memory
//!   resolver with the account preloaded);
//! * a nats-server leaf with a `credentials` file (2.9 remotes have no `nkey` key) → `hubd`
//!   with `leafnodes.authorization.users = [{ nkey }]`; an unknown key is refused, and so is a
//!   wrong signature on the wire;
//! * `leafd` with `nkey` → `hubd`;
//! * config errors: a missing creds file, a garbled seed, a bad listener nkey refuse the
//!   start with the key named.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use e2e::creds::{creds_text, encode_jwt, hubd_with_nkeys, user_jwt, B64};
use e2e::serde_json::{json, Value};
use e2e::{
    bounded, free_port, http_get, pub_sub_both_ways, run_to_exit, unique, wait_for_log, RawConn,
    ServerKind, TestServer, WAIT,
};
use futures::StreamExt;
use nkeys::KeyPair;

/// A temporary directory for creds and JWT files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(unique("leaf-auth"));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to `name` and returns the path as a string for configs.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An operator, one account and one user, with their JWTs.
struct Operator {
    jwt: String,
    account: KeyPair,
    account_jwt: String,
}

impl Operator {
    fn new() -> Operator {
        let operator = KeyPair::new_operator();
        let jwt = encode_jwt(
            json!({
                "name": "e2e-operator",
                "sub": operator.public_key(),
                "nats": { "type": "operator", "version": 2 },
            }),
            &operator,
        );
        let account = KeyPair::new_account();
        let account_jwt = encode_jwt(
            json!({
                "name": "e2e-account",
                "sub": account.public_key(),
                "nats": {
                    "limits": {
                        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                        "wildcards": true, "conn": -1, "leaf": -1,
                    },
                    "default_permissions": { "pub": {}, "sub": {} },
                    "type": "account",
                    "version": 2,
                },
            }),
            &operator,
        );
        Operator {
            jwt,
            account,
            account_jwt,
        }
    }
}

/// A leaf of `kind` with one `remote` (its `url` and auth keys), reconnecting every second
/// at most, its monitoring port at `http_port`.
async fn start_leaf(kind: ServerKind, remote: Value, http_port: u16) -> TestServer {
    let config = json!({
        "http_port": http_port,
        "leafnodes": { "remotes": [remote], "reconnect": 1 },
    });
    TestServer::with_config(kind, config).await
}

/// The first remote in a leaf's `/leafz`.
async fn leafz_remote(http_port: u16) -> Value {
    let (code, body) = http_get(http_port, "/leafz").await;
    assert_eq!(code, 200);
    body["remotes"][0].clone()
}

/// Whether `server`'s process is still running.
fn running(server: &TestServer) -> bool {
    Path::new(&format!("/proc/{}", server.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
            .unwrap_or_default()
            .contains(") Z ")
}

/// A hub (nats-server) with a users list: the leaf's user nkey, and a user/password for the
/// test's own client.
async fn nats_server_hub_with_nkey(public: &str, port: u16) -> TestServer {
    TestServer::with_config(
        ServerKind::NatsServer,
        json!({
            "authorization": { "users": [
                { "nkey": public },
                { "user": "test", "password": "pw" },
            ]},
            "leafnodes": { "listen": format!("127.0.0.1:{port}") },
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_nkey_to_nats_server_hub() {
    let user = KeyPair::new_user();
    let port = free_port();
    let hub = nats_server_hub_with_nkey(&user.public_key(), port).await;
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "nkey": user.seed().unwrap() }),
        http,
    )
    .await;
    let hc = hub
        .client_with(TestServer::options().user_and_password("test".into(), "pw".into()))
        .await;
    let lc = leaf.client().await;
    pub_sub_both_ways(&hc, &lc).await;
    let remote = leafz_remote(http).await;
    assert_eq!(remote["connected"], json!(true), "{remote}");
    // The seed is never logged.
    let seed = user.seed().unwrap();
    assert!(!leaf.log().contains(&seed[2..]), "the seed is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_nkey_is_refused_reported_and_retried() {
    let user = KeyPair::new_user();
    let port = free_port();
    let _hub = nats_server_hub_with_nkey(&user.public_key(), port).await;
    let stranger = KeyPair::new_user();
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "seed": stranger.seed().unwrap() }),
        http,
    )
    .await;
    let log = wait_for_log(&leaf, "Authorization Violation", 3).await;
    assert!(
        log.contains("leafnode link to hub failed; will retry"),
        "{log}"
    );
    let remote = leafz_remote(http).await;
    assert_eq!(remote["connected"], json!(false), "{remote}");
    assert!(
        remote["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization Violation")),
        "{remote}"
    );
    assert!(running(&leaf), "leafd exited");
    // Still serving its clients.
    let lc = leaf.client().await;
    lc.flush().await.unwrap();
}

/// A leaf with an nkey, against a hub that sends no nonce (a fake hub): a clear error. The fake
/// announces no other leafnode URL: a failed attempt at one would replace the error in
/// `/leafz` before the test reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_without_nonce_is_reported() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let info = r#"INFO {"server_id":"FAKE","server_name":"fake","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,"client_id":7,"leafnode_urls":[],"info_on_connect":true}"#;
            let _ = sock.write_all(format!("{info}\r\n").as_bytes()).await;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                drop(sock);
            });
        }
    });
    let user = KeyPair::new_user();
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "nkey": user.seed().unwrap() }),
        http,
    )
    .await;
    wait_for_log(&leaf, "the hub sent no nonce", 1).await;
    let remote = leafz_remote(http).await;
    assert!(
        remote["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no nonce")),
        "{remote}"
    );
    fake.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_creds_to_operator_mode_hub() {
    let dir = Dir::new();
    let op = Operator::new();
    let user = KeyPair::new_user();
    let jwt = user_jwt(&user, &op.account);
    let creds = dir.write("user.creds", &creds_text(&jwt, &user.seed().unwrap()));
    let operator_file = dir.write("operator.jwt", &op.jwt);
    let port = free_port();
    let hub = TestServer::with_config(
        ServerKind::NatsServer,
        json!({
            "operator": operator_file,
            "resolver": "MEMORY",
            "resolver_preload": { op.account.public_key(): op.account_jwt },
            "leafnodes": { "listen": format!("127.0.0.1:{port}") },
        }),
    )
    .await;
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "credentials": creds }),
        http,
    )
    .await;
    // The hub's clients need a JWT too: a raw connection signs the nonce.
    let mut raw = hub.raw().await;
    let nonce = raw.info()["nonce"].as_str().unwrap().to_owned();
    let sig = B64.encode(user.sign(nonce.as_bytes()).unwrap());
    raw.handshake(json!({ "jwt": jwt, "sig": sig })).await;
    let lc = leaf.client().await;

    // Leaf → hub.
    let subject = unique("l2h");
    raw.send(format!("SUB {subject} 1\r\n")).await;
    raw.ping().await;
    let publisher = lc.clone();
    let probe_subject = subject.clone();
    let probes = tokio::spawn(async move {
        for _ in 0..200 {
            publisher
                .publish(probe_subject.clone(), "probe".into())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let msg = raw.next_msg().await;
    assert_eq!(msg.subject, subject);
    probes.abort();
    let remote = leafz_remote(http).await;
    assert_eq!(remote["connected"], json!(true), "{remote}");

    // Hub → leaf.
    let subject = unique("h2l");
    let mut sub = lc.subscribe(subject.clone()).await.unwrap();
    bounded("hub to leaf across the link", async {
        loop {
            raw.send(format!("PUB {subject} 5\r\nhello\r\n")).await;
            if let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                assert_eq!(&msg.payload[..], b"hello");
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_leaf_creds_to_hubd_nkey() {
    let dir = Dir::new();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let port = free_port();
    let hub = hubd_with_nkeys(&[user.public_key()], port).await;
    let creds = dir.write(
        "user.creds",
        &creds_text(&user_jwt(&user, &account), &user.seed().unwrap()),
    );
    let leaf = start_leaf(
        ServerKind::NatsServer,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "credentials": creds }),
        free_port(),
    )
    .await;
    pub_sub_both_ways(&hub.client().await, &leaf.client().await).await;

    // A user the hub does not know is refused.
    let stranger = KeyPair::new_user();
    let creds = dir.write(
        "stranger.creds",
        &creds_text(&user_jwt(&stranger, &account), &stranger.seed().unwrap()),
    );
    let refused = start_leaf(
        ServerKind::NatsServer,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "credentials": creds }),
        free_port(),
    )
    .await;
    wait_for_log(&refused, "Authorization Violation", 1).await;
    let log = wait_for_log(&hub, "is not allowed", 1).await;
    assert!(log.contains(&stranger.public_key()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_nkey_to_hubd() {
    let user = KeyPair::new_user();
    let other = KeyPair::new_user();
    let port = free_port();
    let hub = hubd_with_nkeys(&[other.public_key(), user.public_key()], port).await;
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}"), "nkey": user.seed().unwrap() }),
        http,
    )
    .await;
    pub_sub_both_ways(&hub.client().await, &leaf.client().await).await;

    // A leaf without credentials is refused by a listener that wants nkeys.
    let http = free_port();
    let _anonymous = start_leaf(
        ServerKind::Leafd,
        json!({ "url": format!("nats-leaf://127.0.0.1:{port}") }),
        http,
    )
    .await;
    wait_for_log(&hub, "no user nkey presented", 1).await;
    let remote = bounded("the refusal in /leafz", async {
        loop {
            let remote = leafz_remote(http).await;
            if !remote["last_error"].is_null() {
                return remote;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        remote["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization Violation")),
        "{remote}"
    );
}

/// A signature of something other than the nonce: `-ERR 'Authorization Violation'`, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signature_is_refused_on_the_wire() {
    let user = KeyPair::new_user();
    let port = free_port();
    let hub = hubd_with_nkeys(&[user.public_key()], port).await;
    let mut conn = RawConn::open(port).await;
    let nonce = conn.info()["nonce"].as_str().unwrap().to_owned();
    assert!(!nonce.is_empty());
    assert_eq!(conn.info()["auth_required"], json!(true));
    let sig = B64.encode(user.sign(b"not the nonce").unwrap());
    let connect = json!({
        "version": "2.9.10", "server_id": "NFAKE", "name": "fake-leaf", "headers": true,
        "tls_required": false, "nkey": user.public_key(), "sig": sig,
    });
    conn.send(format!("CONNECT {connect}\r\n")).await;
    let lines = conn.expect_closed_within(WAIT).await;
    assert!(
        lines.iter().any(|l| l == "-ERR 'Authorization Violation'"),
        "{lines:?}"
    );
    wait_for_log(&hub, "the nonce signature does not verify", 1).await;

    // The right signature on a fresh connection is accepted.
    let mut conn = RawConn::open(port).await;
    let nonce = conn.info()["nonce"].as_str().unwrap().to_owned();
    let sig = B64.encode(user.sign(nonce.as_bytes()).unwrap());
    let connect = json!({
        "version": "2.9.10", "server_id": "NFAKE2", "name": "fake-leaf-2", "headers": true,
        "tls_required": false, "nkey": user.public_key(), "sig": sig,
    });
    conn.send(format!("CONNECT {connect}\r\n")).await;
    let line = conn.next_line().await.unwrap_or_default();
    assert!(
        line.starts_with("INFO ") && line.contains("\"connect_info\":true"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_config_errors_refuse_to_start() {
    let dir = Dir::new();
    let missing = dir.0.join("nope.creds").display().to_string();
    let config = json!({ "leafnodes": { "remotes": [{
        "url": "nats-leaf://127.0.0.1:7422", "credentials": missing,
    }]}});
    let (ok, output) = run_to_exit(ServerKind::Leafd, &dir.0, &config);
    assert!(!ok, "leafd started: {output}");
    assert!(
        output.contains(&format!(
            "leafnodes.remotes[0].credentials: cannot read {missing}"
        )),
        "{output}"
    );

    let garbled = dir.write(
        "garbled.creds",
        "-----BEGIN NATS USER JWT-----\nnope\n------END NATS USER JWT------\n",
    );
    let config = json!({ "leafnodes": { "remotes": [{
        "url": "nats-leaf://127.0.0.1:7422", "creds": garbled,
    }]}});
    let (ok, output) = run_to_exit(ServerKind::Leafd, &dir.0, &config);
    assert!(!ok, "leafd started: {output}");
    assert!(
        output.contains("leafnodes.remotes[0].credentials: ")
            && output.contains("not a NATS credentials file"),
        "{output}"
    );

    let mut seed = KeyPair::new_user().seed().unwrap();
    seed.truncate(seed.len() - 3);
    let config = json!({ "leafnodes": { "remotes": [{
        "url": "nats-leaf://127.0.0.1:7422", "nkey": seed,
    }]}});
    let (ok, output) = run_to_exit(ServerKind::Leafd, &dir.0, &config);
    assert!(!ok, "leafd started: {output}");
    assert!(
        output.contains("leafnodes.remotes[0].nkey: not a valid nkey seed"),
        "{output}"
    );
    assert!(!output.contains(&seed[2..]), "the seed is echoed: {output}");

    let config = json!({ "leafnodes": {
        "listen": "127.0.0.1:0",
        "authorization": { "users": [{ "nkey": "UNOTAKEY" }] },
    }});
    let (ok, output) = run_to_exit(ServerKind::Hubd, &dir.0, &config);
    assert!(!ok, "hubd started: {output}");
    assert!(
        output.contains(
            "leafnodes.authorization.users[0].nkey: `UNOTAKEY` is not a user public nkey"
        ),
        "{output}"
    );
}
