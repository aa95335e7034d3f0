//! TLS on the client port and on the monitoring port (`https_port`), end to end, against
//! leafd, hubd and nats-server 2.9 with the same config file.
//!
//! Certificates are made at test time (`e2e::certs`): a CA, a server certificate for
//! `127.0.0.1`, client certificates signed by the CA or by an unrelated one. In nats-server
//! 2.9's order the server writes its INFO in plain text (`tls_required`), then the client
//! starts TLS and sends CONNECT inside it.
//!
//! * async-nats with `require_tls` and the CA connects and works; a plain client is cut off
//!   at the handshake; a client that does not trust the server's CA fails;
//! * `verify`: a client certificate signed by the CA is needed; none, or one from another CA,
//!   fails on the client and is logged by the server;
//! * `verify_and_map`: the certificate's email, or its subject, names the user; that user's
//!   permissions and account apply; a certificate naming nobody is refused;
//! * `https_port` serves `/varz` to an HTTPS client (no client certificate needed even with
//!   `verify`), not plain HTTP; `http_port` with `https_port`, or `https_port` without `tls`,
//!   refuse to start;
//! * nats-server's `--tls`, `--tlscert`, `--tlskey`, `--tlsverify`, `--tlscacert` flags.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use std::time::Duration;

use e2e::async_nats::{self, ConnectOptions, Event, ServerError};
use e2e::certs::{https_get, Certs, Subject};
use e2e::serde_json::{json, Value};
use e2e::{
    bounded, free_port, next_msg, run_to_exit, server_tests, sync, unique, ServerKind, TestServer,
};
use rcgen::DnType;

/// Waits (bounded) until `server`'s log says one of `needles` on a line about a TLS
/// handshake.
async fn wait_for_any_log(server: &TestServer, needles: &[&str]) {
    let deadline = std::time::Instant::now() + e2e::WAIT;
    loop {
        let log = server.log();
        let found = log
            .lines()
            .any(|l| l.contains("TLS handshake") && needles.iter().any(|n| l.contains(n)));
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS handshake error saying one of {needles:?} in the {} log:\n{log}",
            server.kind()
        );
        // Polling a log file: there is nothing to synchronise on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `tls` table of the client port: the server certificate, and with `verify` (`"verify"`
/// or `"verify_and_map"`) the CA of client certificates.
fn tls(certs: &Certs, verify: Option<&str>) -> Value {
    let mut tls = json!({
        "cert_file": certs.path("hub.pem"),
        "key_file": certs.path("hub-key.pem"),
        "timeout": 2,
    });
    if let Some(verify) = verify {
        tls["ca_file"] = json!(certs.path("ca.pem"));
        tls[verify] = json!(true);
    }
    tls
}

/// Client options trusting the test CA, requiring TLS, with the client certificate `stem`
/// (`<stem>.pem`, `<stem>-key.pem`) when given.
fn tls_options(certs: &Certs, stem: Option<&str>) -> ConnectOptions {
    let options = TestServer::options()
        .require_tls(true)
        .add_root_certificates(certs.path("ca.pem").into());
    match stem {
        Some(stem) => options.add_client_certificate(
            certs.path(&format!("{stem}.pem")).into(),
            certs.path(&format!("{stem}-key.pem")).into(),
        ),
        None => options,
    }
}

/// A message published by `client` on a fresh subject comes back to its own subscription.
async fn round_trip(client: &async_nats::Client, prefix: &str) {
    let subject = unique(prefix);
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    client
        .publish(subject.clone(), "over TLS".into())
        .await
        .unwrap();
    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.subject.as_str(), subject);
    assert_eq!(&msg.payload[..], b"over TLS");
}

/// With `tls`, INFO says `tls_required`; async-nats with TLS connects and works (a large
/// message too); a client that does not trust the server's certificate fails; a plain
/// client's CONNECT ends the connection, and the server logs the failed handshake.
async fn tls_required_on_the_client_port(kind: ServerKind) {
    let certs = Certs::new();
    let server = TestServer::with_config(kind, json!({ "tls": tls(&certs, None) })).await;

    let mut raw = server.raw().await;
    assert_eq!(raw.info()["tls_required"], json!(true), "{}", raw.info());
    raw.send("CONNECT {\"verbose\":false}\r\nPING\r\n").await;
    let lines = raw.expect_closed_within(Duration::from_secs(5)).await;
    assert!(!lines.iter().any(|l| l.starts_with("PONG")), "{lines:?}");
    // ours: rustls's InvalidContentType; nats-server: "does not look like a TLS handshake".
    wait_for_any_log(
        &server,
        &["InvalidContentType", "not look like a TLS handshake"],
    )
    .await;

    let client = server.client_with(tls_options(&certs, None)).await;
    round_trip(&client, "tls").await;
    let subject = unique("big");
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    client
        .publish(subject.clone(), big.clone().into())
        .await
        .unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, big);

    // Trusting another CA: the client refuses the server's certificate.
    let wrong_ca = TestServer::options()
        .require_tls(true)
        .add_root_certificates(certs.path("other-ca.pem").into());
    let err = server.try_client_with(wrong_ca).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("UnknownIssuer") || err.to_string().contains("certificate"),
        "{err:?}"
    );
    // The server lives on.
    round_trip(&client, "after").await;
}

/// With `verify`, INFO says `tls_verify` and a client needs a certificate signed by
/// `ca_file`: one without a certificate, or with one from another CA, fails with an error on
/// the client and one in the server's log; the server serves the others on.
async fn verify_requires_a_client_certificate(kind: ServerKind) {
    let certs = Certs::new();
    let stranger = Subject {
        dn: vec![(DnType::CommonName, "leaf".into())],
        ..Subject::default()
    };
    certs.client("stranger", &stranger, true);
    let server = TestServer::with_config(kind, json!({ "tls": tls(&certs, Some("verify")) })).await;
    let raw = server.raw().await;
    assert_eq!(raw.info()["tls_verify"], json!(true), "{}", raw.info());
    drop(raw);

    let client = server.client_with(tls_options(&certs, Some("leaf"))).await;
    round_trip(&client, "verified").await;

    let err = server
        .try_client_with(tls_options(&certs, None))
        .await
        .expect_err("connected without a client certificate");
    println!("{kind}, no certificate: {err:?}");
    wait_for_any_log(
        &server,
        &["peer sent no certificates", "didn't provide a certificate"],
    )
    .await;
    let err = server
        .try_client_with(tls_options(&certs, Some("stranger")))
        .await
        .expect_err("connected with a certificate of another CA");
    println!("{kind}, another CA: {err:?}");
    wait_for_any_log(&server, &["UnknownIssuer", "unknown authority"]).await;
    round_trip(&client, "still").await;
}

/// The users of the `verify_and_map` tests: `alice@example.com` (an email SAN) may publish
/// and subscribe under `alice.>` only; `CN=bob,O=Plant A` (a subject) lives in account
/// `PLANT` without restrictions.
fn mapped_config(certs: &Certs) -> Value {
    json!({
        "tls": tls(certs, Some("verify_and_map")),
        "authorization": { "users": [{
            "user": "alice@example.com",
            "permissions": {
                "publish": { "allow": ["alice.>"] },
                "subscribe": { "allow": ["alice.>", "_INBOX.>"] },
            },
        }]},
        "accounts": { "PLANT": { "users": [{ "user": "CN=bob,O=Plant A" }] } },
    })
}

/// Client options that send every server error to a channel.
fn with_errors(options: ConnectOptions) -> (ConnectOptions, tokio::sync::mpsc::Receiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let Event::ServerError(ServerError::Other(text)) = event {
                let _ = tx.send(text).await;
            }
        }
    });
    (options, rx)
}

/// `verify_and_map`: the certificate names the user; its permissions apply (a publish outside
/// them gets the Permissions Violation) and so does its account; a certificate that names no
/// user is refused with an Authorization Violation.
async fn verify_and_map_logs_in_as_the_certificate_user(kind: ServerKind) {
    let certs = Certs::new();
    certs.client(
        "alice",
        &Subject {
            dn: vec![(DnType::CommonName, "Alice".into())],
            emails: vec!["alice@example.com".into()],
            ..Subject::default()
        },
        false,
    );
    certs.client(
        "bob",
        &Subject {
            dn: vec![
                (DnType::OrganizationName, "Plant A".into()),
                (DnType::CommonName, "bob".into()),
            ],
            ..Subject::default()
        },
        false,
    );
    let server = TestServer::with_config(kind, mapped_config(&certs)).await;
    let raw = server.raw().await;
    assert_eq!(raw.info()["auth_required"], json!(true), "{}", raw.info());
    drop(raw);

    let (options, mut errors) = with_errors(tls_options(&certs, Some("alice")));
    let alice = server.client_with(options).await;
    round_trip(&alice, "alice").await;
    alice.publish("plant.valve", "no".into()).await.unwrap();
    let error = bounded("the permissions violation", errors.recv())
        .await
        .expect("an error");
    assert!(
        error
            .to_lowercase()
            .contains("permissions violation for publish to \"plant.valve\""),
        "{error}"
    );
    // The connection stays and keeps its rights.
    round_trip(&alice, "alice").await;

    // bob is in PLANT: alice's messages do not reach him, his own do.
    let bob = server.client_with(tls_options(&certs, Some("bob"))).await;
    let subject = unique("alice.shared");
    let mut bobs = bob.subscribe(subject.clone()).await.unwrap();
    sync(&bob).await;
    let mut alices = alice.subscribe(subject.clone()).await.unwrap();
    alice
        .publish(subject.clone(), "from alice".into())
        .await
        .unwrap();
    assert_eq!(&next_msg(&mut alices).await.payload[..], b"from alice");
    bob.publish(subject.clone(), "from bob".into())
        .await
        .unwrap();
    assert_eq!(&next_msg(&mut bobs).await.payload[..], b"from bob");

    // A certificate of the right CA naming nobody configured.
    certs.client(
        "mallory",
        &Subject {
            dn: vec![(DnType::CommonName, "mallory".into())],
            ..Subject::default()
        },
        false,
    );
    let err = server
        .try_client_with(tls_options(&certs, Some("mallory")))
        .await
        .expect_err("mallory connected");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("authorization violation"),
        "{err:?}"
    );
    round_trip(&alice, "alice").await;
}

/// `https_port` serves the monitoring pages over TLS with the `tls` certificate (no client
/// certificate needed, even with `verify`); plain HTTP gets no page.
async fn https_port_serves_varz(kind: ServerKind) {
    let certs = Certs::new();
    let port = free_port();
    let server = TestServer::with_config(
        kind,
        json!({ "tls": tls(&certs, Some("verify")), "https_port": port }),
    )
    .await;
    let (code, varz) = https_get(port, "/varz", &certs.path("ca.pem"))
        .await
        .expect("GET /varz over https");
    assert_eq!(code, 200, "{varz}");
    assert!(
        varz["server_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{varz}"
    );

    // Plain HTTP: no page.
    let plain = bounded("plain HTTP on the https port", async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = tcp
            .write_all(b"GET /varz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await;
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw).await;
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await;
    assert!(!plain.contains("server_id"), "{plain}");
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    // A client that does not trust the certificate gets no page either.
    let err = https_get(port, "/varz", &certs.path("other-ca.pem"))
        .await
        .expect_err("trusted an unknown CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
    drop(server);
}

/// `http_port` together with `https_port`, and `https_port` without `tls`, refuse to start.
async fn https_port_needs_tls_and_excludes_http_port(kind: ServerKind) {
    let certs = Certs::new();
    let both = json!({
        "tls": tls(&certs, None),
        "http_port": free_port(),
        "https_port": free_port(),
    });
    let (ok, output) = run_to_exit(kind, &certs.dir, &both);
    assert!(
        !ok,
        "{kind} started with http_port and https_port: {output}"
    );
    let without_tls = json!({ "https_port": free_port() });
    let (ok, output2) = run_to_exit(kind, &certs.dir, &without_tls);
    assert!(!ok, "{kind} started https_port without tls: {output2}");
    if kind != ServerKind::NatsServer {
        assert!(
            output.contains("https_port: cannot be combined with http_port"),
            "{output}"
        );
        assert!(
            output2.contains("https_port: needs the `tls` table"),
            "{output2}"
        );
    }
}

/// nats-server's flags: `--tls --tlscert --tlskey` require TLS; `--tlsverify --tlscacert`
/// add client certificates.
async fn tls_flags(kind: ServerKind) {
    let certs = Certs::new();
    let server = TestServer::builder(kind)
        .arg("--tls")
        .arg("--tlscert")
        .arg(certs.path("hub.pem"))
        .arg("--tlskey")
        .arg(certs.path("hub-key.pem"))
        .start()
        .await;
    assert_eq!(server.raw().await.info()["tls_required"], json!(true));
    let client = server.client_with(tls_options(&certs, None)).await;
    round_trip(&client, "flags").await;

    let verifying = TestServer::builder(kind)
        .arg("--tlsverify")
        .arg("--tlscert")
        .arg(certs.path("hub.pem"))
        .arg("--tlskey")
        .arg(certs.path("hub-key.pem"))
        .arg("--tlscacert")
        .arg(certs.path("ca.pem"))
        .start()
        .await;
    assert_eq!(verifying.raw().await.info()["tls_verify"], json!(true));
    let client = verifying
        .client_with(tls_options(&certs, Some("leaf")))
        .await;
    round_trip(&client, "verified").await;
    assert!(verifying
        .try_client_with(tls_options(&certs, None))
        .await
        .is_err());
}

server_tests!(
    tls_required_on_the_client_port,
    verify_requires_a_client_certificate,
    verify_and_map_logs_in_as_the_certificate_user,
    https_port_serves_varz,
    https_port_needs_tls_and_excludes_http_port,
    tls_flags,
);

/// A TLS file that cannot be read refuses the start, naming the key and the file; so does a
/// passwordless user without `verify_and_map`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key() {
    let certs = Certs::new();
    let missing = certs.path("nope.pem");
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let config = json!({ "tls": { "cert_file": certs.path("hub.pem"), "key_file": missing } });
        let (ok, output) = run_to_exit(kind, &certs.dir, &config);
        assert!(!ok, "{kind} started: {output}");
        assert!(
            output.contains(&format!("tls.key_file: cannot read {missing}")),
            "{output}"
        );
        let config = json!({ "tls": { "cert_file": certs.path("hub.pem"), "key_file": certs.path("hub-key.pem"), "verify": true } });
        let (ok, output) = run_to_exit(kind, &certs.dir, &config);
        assert!(!ok, "{kind} started: {output}");
        assert!(output.contains("tls.ca_file: missing"), "{output}");
        let config = json!({
            "tls": tls(&certs, Some("verify")),
            "authorization": { "users": [{ "user": "CN=leaf" }] },
        });
        let (ok, output) = run_to_exit(kind, &certs.dir, &config);
        assert!(!ok, "{kind} started: {output}");
        assert!(
            output.contains("authorization.users[0].password: missing password"),
            "{output}"
        );
    }
}
