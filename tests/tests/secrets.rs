//! Secrets and what a stranger can learn or guess: empty passwords are refused (nats-server
//! takes them, and then a client with the user name and no password gets in), and the hub's
//! leafnode nonce is fresh and unguessable on every connection.

use std::collections::HashSet;
use std::process::Command;

use e2e::{free_port, serde_json::json, server_tests, ServerKind, TestServer};

server_tests!(bcrypt_passwords_are_verified_as_bcrypt);

/// Writes `text` as a TOML config file in a fresh directory.
fn config_file(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "leaf-e2e-secrets-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("server.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

const EMPTY_PASSWORDS: [(&str, &str); 3] = [
    (
        "[authorization]\nuser = \"u\"\npassword = \"\"\n",
        "authorization.password: must not be empty",
    ),
    (
        "[authorization]\nusers = [\n  { user = \"u\", password = \"\" },\n]\n",
        "authorization.users[0].password: must not be empty",
    ),
    (
        "[leafnodes]\nlisten = \"127.0.0.1:0\"\n[leafnodes.authorization]\nuser = \"l\"\npassword = \"\"\n",
        "leafnodes.authorization.password: must not be empty",
    ),
];

/// `check-config` and a start both refuse an empty password, naming the key and line.
#[test]
fn empty_passwords_are_refused_by_name() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        for (text, needle) in EMPTY_PASSWORDS {
            let path = config_file(text);
            let path = path.to_str().unwrap();
            for args in [vec!["check-config", path], vec!["-c", path]] {
                let out = e2e::run_command_to_exit(Command::new(kind.binary_path()).args(&args));
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{kind} {args:?}: {stderr}");
                assert!(stderr.contains(needle), "{kind} {args:?}: {stderr}");
            }
        }
    }
}

/// nats-server takes `password = ""` and lets the user in with no password: ours are stricter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_password_nats_server_lets_anyone_in() {
    let server = TestServer::builder(ServerKind::NatsServer)
        .config(json!({ "authorization": { "user": "u", "password": "" } }))
        .start()
        .await;
    let client = async_nats::ConnectOptions::new()
        .user_and_password("u".into(), String::new())
        .connect(server.url())
        .await;
    assert!(client.is_ok(), "nats-server accepts the empty password");
}

/// Every accepted leafnode connection gets its own nonce: 16 bytes from the OS's CSPRNG as
/// 22 base64url characters; 64 connections, no repeat, every character of the alphabet seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafnode_nonces_are_fresh_hubd() {
    let lport = free_port();
    let _hub = TestServer::builder(ServerKind::Hubd)
        .arg("--leafnodes")
        .arg(format!("127.0.0.1:{lport}"))
        .start()
        .await;
    let mut seen = HashSet::new();
    let mut chars = HashSet::new();
    for _ in 0..256 {
        let conn = e2e::RawConn::open(lport).await;
        let nonce = conn.info()["nonce"].as_str().expect("nonce").to_string();
        assert_eq!(nonce.len(), 22, "{nonce}");
        assert!(
            nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{nonce}"
        );
        chars.extend(nonce.bytes());
        assert!(seen.insert(nonce), "a nonce came twice");
    }
    assert_eq!(chars.len(), 64, "the whole base64url alphabet occurs");
}

/// A user whose configured password is a bcrypt hash (`$2a$` and `$2b$`): the password gets
/// in, the hash itself does not (before: the hash was compared as plain text, so only the
/// hash got in); the same for a bcrypt token.
async fn bcrypt_passwords_are_verified_as_bcrypt(kind: ServerKind) {
    let hash_b = bcrypt::hash("s3cret", 6).unwrap();
    let hash_a = bcrypt::hash("other", 6)
        .unwrap()
        .replacen("$2b$", "$2a$", 1);
    let server = TestServer::builder(kind)
        .config(json!({ "authorization": { "users": [
            { "user": "b", "password": hash_b },
            { "user": "a", "password": hash_a },
        ] } }))
        .start()
        .await;
    let login = |user: &str, pass: &str| {
        async_nats::ConnectOptions::new()
            .user_and_password(user.into(), pass.into())
            .connect(server.url())
    };
    for (user, good, hash) in [("b", "s3cret", &hash_b), ("a", "other", &hash_a)] {
        let client = e2e::bounded("login", login(user, good))
            .await
            .unwrap_or_else(|e| panic!("{kind}: {user} with the password: {e}"));
        e2e::sync(&client).await;
        let refused = e2e::bounded("login", async {
            async_nats::ConnectOptions::new()
                .user_and_password(user.into(), hash.clone())
                .connect(server.url())
                .await
        })
        .await;
        assert!(
            refused.is_err(),
            "{kind}: {user} got in with the hash as password"
        );
    }
    drop(server);

    let token_hash = bcrypt::hash("t0ken", 6).unwrap();
    let server = TestServer::builder(kind)
        .config(json!({ "authorization": { "token": token_hash } }))
        .start()
        .await;
    let client = e2e::bounded(
        "token login",
        async_nats::ConnectOptions::with_token("t0ken".into()).connect(server.url()),
    )
    .await;
    assert!(client.is_ok(), "{kind}: the token gets in");
    let refused = e2e::bounded(
        "token login",
        async_nats::ConnectOptions::with_token(token_hash.clone()).connect(server.url()),
    )
    .await;
    assert!(refused.is_err(), "{kind}: the hash is no token");
}
