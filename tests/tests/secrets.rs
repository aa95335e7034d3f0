//! Secrets and what a stranger can learn or guess: empty passwords are refused (nats-server
//! takes them, and then a client with the user name and no password gets in), and the hub's
//! leafnode nonce is fresh and unguessable on every connection.

use std::collections::HashSet;
use std::process::Command;

use e2e::{free_port, serde_json::json, ServerKind, TestServer};

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
