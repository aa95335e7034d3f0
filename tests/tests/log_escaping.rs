//! Names and subjects chosen by whoever is on the other end are written to the log with their
//! control characters escaped: a `\n` cannot forge a log line, an ANSI escape cannot rewrite
//! an operator's terminal.

use e2e::{free_port, serde_json::json, wait_for_log, RawConn, ServerKind, TestServer};

/// A name that would forge a log line and turn the terminal red if written raw.
const EVIL: &str = "evil\n2026-01-01T00:00:00Z ERROR forged line \u{1b}[31mred\u{1b}[0m";

/// What the log must show instead: the same characters, escaped.
const ESCAPED: &str = "evil\\n2026-01-01T00:00:00Z ERROR forged line \\u{1b}[31mred\\u{1b}[0m";

/// Neither the raw newline's forged line nor a raw ESC is in `log`.
fn assert_clean(kind: ServerKind, log: &str) {
    assert!(
        !log.contains('\u{1b}'),
        "{kind}: a raw ESC in the log:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z ERROR forged")),
        "{kind}: a forged log line:\n{log}"
    );
}

/// A client's CONNECT name (logged at debug level).
async fn client_name_is_escaped(kind: ServerKind) {
    let server = TestServer::builder(kind)
        .arg("--log_level")
        .arg("debug")
        .start()
        .await;
    let mut conn = server.raw().await;
    conn.handshake(json!({ "name": EVIL })).await;
    let log = wait_for_log(&server, "client CONNECT", 1).await;
    assert!(log.contains(ESCAPED), "{kind}: the name escaped:\n{log}");
    assert_clean(kind, &log);
}

/// A leaf's name in its leafnode CONNECT, logged when the link comes up, and an LS+ subject
/// the hub refuses (logged at debug level).
async fn leaf_name_and_subject_are_escaped(kind: ServerKind) {
    let lport = free_port();
    let server = TestServer::builder(kind)
        .arg("--log_level")
        .arg("debug")
        .arg("--leafnodes")
        .arg(format!("127.0.0.1:{lport}"))
        .start()
        .await;
    let mut leaf = RawConn::open(lport).await;
    let connect = json!({ "name": EVIL, "headers": true });
    leaf.send(format!(
        "CONNECT {connect}\r\nLS+ bad..\u{1b}[2J.subject\r\nPING\r\n"
    ))
    .await;
    let log = wait_for_log(&server, "leafnode link established", 1).await;
    assert!(
        log.contains(ESCAPED),
        "{kind}: the leaf's name escaped:\n{log}"
    );
    let log = wait_for_log(&server, "invalid LS+ ignored", 1).await;
    assert!(log.contains("bad..\\u{1b}[2J.subject"), "{kind}:\n{log}");
    assert_clean(kind, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_name_is_escaped_leafd() {
    client_name_is_escaped(ServerKind::Leafd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_name_is_escaped_hubd() {
    client_name_is_escaped(ServerKind::Hubd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_name_and_subject_are_escaped_hubd() {
    leaf_name_and_subject_are_escaped(ServerKind::Hubd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_name_and_subject_are_escaped_leafd() {
    leaf_name_and_subject_are_escaped(ServerKind::Leafd).await;
}
