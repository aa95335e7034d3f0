//! Authentication and authorization, driven by config files (and the `--user/--pass`,
//! `--auth` flags).

use std::time::Duration;

use bytes::Bytes;
use e2e::{
    barrier_on, next_msg, serde_json::json, server_tests, sync, unique, RawConn, ServerKind,
    TestServer,
};

server_tests!(
    user_password,
    user_password_flags,
    token,
    token_flag,
    permissions_publish,
    permissions_subscribe,
    permissions_wildcards_and_deny_overrides_allow,
);

/// How long the server may take to close a connection it rejected.
const CLOSE: Duration = Duration::from_secs(5);

/// The line nats-server sends before closing a connection that failed authentication.
const AUTH_VIOLATION: &str = "-ERR 'Authorization Violation'";

/// Asserts that `CONNECT` with `fields` is rejected: `-ERR 'Authorization Violation'`, then
/// the server closes the connection.
async fn assert_rejected(server: &TestServer, fields: e2e::serde_json::Value) {
    let mut raw = server.raw().await;
    raw.send_connect(fields.clone()).await;
    // The server may have closed the socket already; a failed write is fine.
    let _ = raw.try_send("PING\r\n").await;
    let lines = raw.expect_closed_within(CLOSE).await;
    assert_eq!(
        lines.first().map(String::as_str),
        Some(AUTH_VIOLATION),
        "CONNECT {fields}: lines before close: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l == "PONG"),
        "CONNECT {fields}: an unauthenticated PING got a PONG: {lines:?}"
    );
}

/// Asserts that a raw connection with `fields` authenticates and can pub/sub to itself.
async fn assert_accepted(server: &TestServer, fields: e2e::serde_json::Value) -> RawConn {
    let mut raw = server.raw().await;
    assert_eq!(raw.info()["auth_required"], true, "INFO: {}", raw.info());
    raw.handshake(fields).await;
    raw.send("SUB self 1\r\nPUB self 2\r\nok\r\n").await;
    let msg = raw.next_msg().await;
    assert_eq!(msg.payload, b"ok");
    raw
}

/// Asserts that async-nats can connect with `options` and round-trip a message.
async fn assert_client_works(server: &TestServer, options: async_nats::ConnectOptions) {
    let client = server.client_with(options).await;
    let mut sub = client.subscribe("client.check").await.unwrap();
    sync(&client).await;
    client.publish("client.check", "x".into()).await.unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, Bytes::from("x"));
}

/// Asserts that async-nats fails to connect with `options`.
async fn assert_client_fails(server: &TestServer, options: async_nats::ConnectOptions) {
    let result = server.try_client_with(options).await;
    assert!(result.is_err(), "async-nats connected with bad credentials");
}

/// The shared checks for a server requiring user `alice`, password `s3cret`.
async fn check_user_password(server: &TestServer) {
    assert_accepted(server, json!({ "user": "alice", "pass": "s3cret" })).await;
    assert_rejected(server, json!({ "user": "alice", "pass": "wrong" })).await;
    assert_rejected(server, json!({ "user": "mallory", "pass": "s3cret" })).await;
    assert_rejected(server, json!({})).await;
    assert_client_works(
        server,
        TestServer::options().user_and_password("alice".into(), "s3cret".into()),
    )
    .await;
    assert_client_fails(
        server,
        TestServer::options().user_and_password("alice".into(), "nope".into()),
    )
    .await;
    assert_client_fails(server, TestServer::options()).await;
}

/// `authorization { user, password }` from the config file.
async fn user_password(kind: ServerKind) {
    let server = TestServer::with_config(
        kind,
        json!({ "authorization": { "user": "alice", "password": "s3cret" } }),
    )
    .await;
    check_user_password(&server).await;
}

/// `--user alice --pass s3cret` on the command line.
async fn user_password_flags(kind: ServerKind) {
    let server = TestServer::builder(kind)
        .arg("--user")
        .arg("alice")
        .arg("--pass")
        .arg("s3cret")
        .start()
        .await;
    check_user_password(&server).await;
}

/// The shared checks for a server requiring token `t0ken-42`.
async fn check_token(server: &TestServer) {
    assert_accepted(server, json!({ "auth_token": "t0ken-42" })).await;
    assert_rejected(server, json!({ "auth_token": "wrong" })).await;
    assert_rejected(server, json!({})).await;
    assert_client_works(server, TestServer::options().token("t0ken-42".into())).await;
    assert_client_fails(server, TestServer::options().token("bad".into())).await;
}

/// `authorization { token }` from the config file.
async fn token(kind: ServerKind) {
    let server =
        TestServer::with_config(kind, json!({ "authorization": { "token": "t0ken-42" } })).await;
    check_token(&server).await;
}

/// `--auth t0ken-42` on the command line.
async fn token_flag(kind: ServerKind) {
    let server = TestServer::builder(kind)
        .arg("--auth")
        .arg("t0ken-42")
        .start()
        .await;
    check_token(&server).await;
}

/// Users with permissions: `limited` may publish only to `foo.>` and `bar` (but not
/// `foo.secret` nor `foo.private.*`) and subscribe only to `foo.*` and `_INBOX.>` (but not
/// `foo.hidden`); `admin` has no restrictions.
fn permissions_config() -> e2e::serde_json::Value {
    json!({
        "authorization": {
            "users": [
                {
                    "user": "limited",
                    "password": "pw1",
                    "permissions": {
                        "publish": {
                            "allow": ["foo.>", "bar"],
                            "deny": ["foo.secret", "foo.private.*"]
                        },
                        "subscribe": {
                            "allow": ["foo.*", "_INBOX.>"],
                            "deny": ["foo.hidden"]
                        }
                    }
                },
                { "user": "admin", "password": "pw2" }
            ]
        }
    })
}

/// nats-server's wording for a denied publish.
fn pub_violation(subject: &str) -> String {
    format!("-ERR 'Permissions Violation for Publish to \"{subject}\"'")
}

/// nats-server's wording for a denied subscription.
fn sub_violation(subject: &str) -> String {
    format!("-ERR 'Permissions Violation for Subscription to \"{subject}\"'")
}

/// A denied publish gets `-ERR 'Permissions Violation for Publish to "<subject>"'`, is not
/// delivered, and the connection stays up; allowed publishes are delivered.
async fn permissions_publish(kind: ServerKind) {
    let server = TestServer::with_config(kind, permissions_config()).await;
    let admin_opts = TestServer::options().user_and_password("admin".into(), "pw2".into());
    let admin = server.client_with(admin_opts).await;
    let mut watch = admin.subscribe(">").await.unwrap();
    sync(&admin).await;

    let mut raw = server.raw().await;
    raw.handshake(json!({ "user": "limited", "pass": "pw1" }))
        .await;
    for subject in ["baz", "foo.secret", "foo"] {
        raw.send(format!("PUB {subject} 6\r\ndenied\r\n")).await;
        raw.expect_line(&pub_violation(subject)).await;
        raw.ping().await;
    }
    for subject in ["foo.ok", "foo.a.b", "bar", "foo.secret.not"] {
        raw.send(format!("PUB {subject} 7\r\nallowed\r\n")).await;
        raw.ping().await;
    }
    // Order the limited user's publishes before a marker that admin awaits.
    raw.send("PUB foo.end 3\r\nend\r\n").await;
    raw.ping().await;
    let mut got = Vec::new();
    loop {
        let msg = next_msg(&mut watch).await;
        if msg.subject.as_str() == "foo.end" {
            break;
        }
        if !msg.subject.starts_with("barrier.") {
            got.push((msg.subject.to_string(), msg.payload));
        }
    }
    let allowed = Bytes::from("allowed");
    assert_eq!(
        got,
        ["foo.ok", "foo.a.b", "bar", "foo.secret.not"].map(|s| (s.to_owned(), allowed.clone()))
    );
}

/// A denied subscription gets `-ERR 'Permissions Violation for Subscription to "<subject>"'`,
/// receives nothing, and the connection stays up; allowed subscriptions receive.
async fn permissions_subscribe(kind: ServerKind) {
    let server = TestServer::with_config(kind, permissions_config()).await;
    let admin_opts = TestServer::options().user_and_password("admin".into(), "pw2".into());
    let admin = server.client_with(admin_opts).await;

    let mut raw = server.raw().await;
    raw.handshake(json!({ "user": "limited", "pass": "pw1" }))
        .await;
    for (sid, subject) in [(1, "bar"), (2, "foo.hidden"), (3, "foo.a.b"), (4, ">")] {
        raw.send(format!("SUB {subject} {sid}\r\n")).await;
        raw.expect_line(&sub_violation(subject)).await;
        raw.ping().await;
    }
    raw.send("SUB foo.visible 10\r\nSUB _INBOX.abc 11\r\n")
        .await;
    raw.ping().await;
    for subject in ["bar", "foo.hidden", "foo.a.b", "foo.visible", "_INBOX.abc"] {
        admin.publish(subject, subject.into()).await.unwrap();
    }
    let first = raw.next_msg().await;
    let second = raw.next_msg().await;
    assert_eq!(
        (first.sid.as_str(), first.subject.as_str()),
        ("10", "foo.visible")
    );
    assert_eq!(
        (second.sid.as_str(), second.subject.as_str()),
        ("11", "_INBOX.abc")
    );
    raw.ping().await;

    // async-nats as the limited user: request/reply through an allowed _INBOX works.
    let limited = server
        .client_with(TestServer::options().user_and_password("limited".into(), "pw1".into()))
        .await;
    let mut service = admin.subscribe("foo.service").await.unwrap();
    sync(&admin).await;
    let responder = admin.clone();
    let task = tokio::spawn(async move {
        let msg = next_msg(&mut service).await;
        if let Some(reply) = msg.reply {
            responder.publish(reply, "pong".into()).await.unwrap();
        }
    });
    let reply = limited.request("foo.service", "ping".into()).await.unwrap();
    assert_eq!(reply.payload, Bytes::from("pong"));
    task.await.unwrap();
}

/// Deny beats allow, and wildcards work in both lists: `foo.private.*` denies
/// `foo.private.x` although `foo.>` allows it, while `foo.private.x.y` stays allowed.
async fn permissions_wildcards_and_deny_overrides_allow(kind: ServerKind) {
    let server = TestServer::with_config(kind, permissions_config()).await;
    let admin_opts = TestServer::options().user_and_password("admin".into(), "pw2".into());
    let admin = server.client_with(admin_opts).await;
    let mut watch = admin.subscribe("foo.>").await.unwrap();
    sync(&admin).await;

    let limited_opts = TestServer::options().user_and_password("limited".into(), "pw1".into());
    let limited = server.client_with(limited_opts).await;
    let mut raw = server.raw().await;
    raw.handshake(json!({ "user": "limited", "pass": "pw1" }))
        .await;
    raw.send("PUB foo.private.x 1\r\nx\r\n").await;
    raw.expect_line(&pub_violation("foo.private.x")).await;
    raw.send("PUB foo.private.x.y 1\r\ny\r\n").await;
    raw.ping().await;

    // The same through async-nats: the denied publish is dropped, the connection survives.
    limited.publish("foo.private.z", "z".into()).await.unwrap();
    limited.publish("foo.fine", "fine".into()).await.unwrap();
    // `limited` may not publish to a barrier subject: use an allowed marker instead.
    limited.publish("foo.end", "end".into()).await.unwrap();
    let mut subjects = Vec::new();
    loop {
        let subject = next_msg(&mut watch).await.subject.to_string();
        if subject == "foo.end" {
            break;
        }
        subjects.push(subject);
    }
    subjects.sort();
    assert_eq!(subjects, ["foo.fine", "foo.private.x.y"]);

    // Subscribe side: `foo.*` allowed, `foo.hidden` denied even though `foo.*` matches it.
    let mut sub = limited.subscribe("foo.*").await.unwrap();
    // `limited` may only subscribe to foo.* and _INBOX.>: sync through an inbox subject.
    barrier_on(&admin, &limited, &unique("_INBOX.sync")).await;
    admin.publish("foo.hidden", "h".into()).await.unwrap();
    admin.publish("foo.seen", "s".into()).await.unwrap();
    // A denied subject is not delivered even through an allowed wildcard subscription
    // (nats-server filters deliveries against the deny list). foo.hidden was published
    // first, so it would arrive before foo.seen.
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("foo.seen") {
        got.push(next_msg(&mut sub).await.subject.to_string());
    }
    assert_eq!(
        got,
        ["foo.seen"],
        "foo.hidden leaked through the foo.* subscription"
    );
}
