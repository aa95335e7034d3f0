//! Leafnode links over TLS, end to end, against nats-server 2.9 on either side.
//!
//! Certificates are made at test time with rcgen: a CA, a hub certificate for `127.0.0.1`
//! and `localhost`, a leaf client certificate, and a second, unrelated CA. In nats-server
//! 2.9's order the hub writes its INFO in plain text (`tls_required`), then both sides run
//! the TLS handshake and the leaf's CONNECT goes inside TLS.
//!
//! * `leafd` → nats-server hub with `leafnodes.tls`, a `tls://` URL and `tls.ca_file`;
//! * nats-server leaf → `hubd` with `leafnodes.tls`;
//! * `leafd` → `hubd` with client certificates (`verify = true`), and with `handshake_first`;
//! * failures: a wrong CA, TLS on one side only, a missing certificate file.
//!
//! Every wait is bounded; everything listens on 127.0.0.1.

use e2e::certs::Certs;
use e2e::serde_json::{json, Value};
use e2e::{
    await_interest, free_port, http_get, next_msg, run_to_exit, unique, wait_for_log, ServerKind,
    TestServer,
};

/// `leafnodes.tls` of a hub: its certificate, and with `verify` the CA of client
/// certificates.
fn hub_tls(certs: &Certs, verify: bool) -> Value {
    let mut tls = json!({
        "cert_file": certs.path("hub.pem"),
        "key_file": certs.path("hub-key.pem"),
    });
    if verify {
        tls["ca_file"] = json!(certs.path("ca.pem"));
        tls["verify"] = json!(true);
    }
    tls
}

/// A hub of `kind` accepting TLS leafnode connections on `port`.
async fn start_hub(kind: ServerKind, port: u16, tls: Value) -> TestServer {
    let config = json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}"), "tls": tls } });
    TestServer::with_config(kind, config).await
}

/// A leaf of `kind` with one remote `url` (and its `tls` table unless null), reconnecting
/// every second at most, with its monitoring port at `http_port`.
async fn start_leaf(kind: ServerKind, url: &str, tls: Value, http_port: u16) -> TestServer {
    let mut remote = json!({ "url": url });
    if !tls.is_null() {
        remote["tls"] = tls;
    }
    let config = json!({
        "http_port": http_port,
        "leafnodes": { "remotes": [remote], "reconnect": 1 },
    });
    TestServer::with_config(kind, config).await
}

/// Messages both ways across the link between `hub` and `leaf`, in order.
async fn pub_sub_both_ways(hub: &TestServer, leaf: &TestServer) {
    let hc = hub.client().await;
    let lc = leaf.client().await;
    e2e::pub_sub_both_ways(&hc, &lc).await;
    // A large message crosses too (many TLS records).
    let subject = unique("big");
    let mut sub = hc.subscribe(subject.clone()).await.unwrap();
    await_interest(&lc, &subject, &mut sub).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    lc.publish(subject.clone(), big.clone().into())
        .await
        .unwrap();
    assert_eq!(next_msg(&mut sub).await.payload, big);
}

/// The first remote in a leaf's `/leafz`.
async fn leafz_remote(http_port: u16) -> Value {
    let (code, body) = http_get(http_port, "/leafz").await;
    assert_eq!(code, 200);
    body["remotes"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_to_nats_server_over_tls() {
    let certs = Certs::new();
    let port = free_port();
    let hub = start_hub(ServerKind::NatsServer, port, hub_tls(&certs, false)).await;
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        &format!("tls://127.0.0.1:{port}"),
        json!({ "ca_file": certs.path("ca.pem") }),
        http,
    )
    .await;
    pub_sub_both_ways(&hub, &leaf).await;
    wait_for_log(&leaf, "tls=true", 1).await;
    let remote = leafz_remote(http).await;
    assert_eq!(remote["connected"], json!(true), "{remote}");
    assert_eq!(remote["url"], json!(format!("tls://127.0.0.1:{port}")));
    assert_eq!(remote["tls"], json!(true), "{remote}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_to_hubd_over_tls() {
    let certs = Certs::new();
    let port = free_port();
    let hub = start_hub(ServerKind::Hubd, port, hub_tls(&certs, false)).await;
    let leaf = start_leaf(
        ServerKind::NatsServer,
        &format!("tls://127.0.0.1:{port}"),
        json!({ "ca_file": certs.path("ca.pem") }),
        free_port(),
    )
    .await;
    pub_sub_both_ways(&hub, &leaf).await;
    wait_for_log(&hub, "tls=true", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_to_hubd_with_client_certificates() {
    let certs = Certs::new();
    let port = free_port();
    let hub = start_hub(ServerKind::Hubd, port, hub_tls(&certs, true)).await;
    // A nats-leaf:// URL with a tls table: TLS all the same.
    let leaf = start_leaf(
        ServerKind::Leafd,
        &format!("nats-leaf://localhost:{port}"),
        json!({
            "ca_file": certs.path("ca.pem"),
            "cert_file": certs.path("leaf.pem"),
            "key_file": certs.path("leaf-key.pem"),
        }),
        free_port(),
    )
    .await;
    pub_sub_both_ways(&hub, &leaf).await;

    // Without a client certificate the hub refuses the leaf, and the leaf says so.
    let http = free_port();
    let anonymous = start_leaf(
        ServerKind::Leafd,
        &format!("tls://127.0.0.1:{port}"),
        json!({ "ca_file": certs.path("ca.pem") }),
        http,
    )
    .await;
    wait_for_log(&hub, "TLS handshake with the leaf failed", 1).await;
    // TLS 1.3: the hub's alert arrives after the leaf's side of the handshake.
    wait_for_log(
        &anonymous,
        "TLS error: received fatal alert: CertificateRequired",
        2,
    )
    .await;
    let remote = leafz_remote(http).await;
    assert_eq!(remote["connected"], json!(false), "{remote}");
    assert!(
        remote["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("CertificateRequired")),
        "{remote}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_to_hubd_with_client_certificates() {
    let certs = Certs::new();
    let port = free_port();
    let hub = start_hub(ServerKind::Hubd, port, hub_tls(&certs, true)).await;
    let leaf = start_leaf(
        ServerKind::NatsServer,
        &format!("tls://127.0.0.1:{port}"),
        json!({
            "ca_file": certs.path("ca.pem"),
            "cert_file": certs.path("leaf.pem"),
            "key_file": certs.path("leaf-key.pem"),
        }),
        free_port(),
    )
    .await;
    pub_sub_both_ways(&hub, &leaf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafd_to_hubd_handshake_first() {
    let certs = Certs::new();
    let port = free_port();
    let mut tls = hub_tls(&certs, false);
    tls["handshake_first"] = json!(true);
    let hub = start_hub(ServerKind::Hubd, port, tls).await;
    let leaf = start_leaf(
        ServerKind::Leafd,
        &format!("tls://127.0.0.1:{port}"),
        json!({ "ca_file": certs.path("ca.pem"), "handshake_first": true }),
        free_port(),
    )
    .await;
    pub_sub_both_ways(&hub, &leaf).await;
}

/// The hub's certificate is not signed by the leaf's CA: the link does not come up, the log
/// and `/leafz` say it is the certificate, and the leaf retries. Restarted with the right
/// CA, it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_reported_and_retried() {
    let certs = Certs::new();
    let port = free_port();
    let hub = start_hub(ServerKind::NatsServer, port, hub_tls(&certs, false)).await;
    let url = format!("tls://127.0.0.1:{port}");
    let http = free_port();
    let leaf = start_leaf(
        ServerKind::Leafd,
        &url,
        json!({ "ca_file": certs.path("other-ca.pem") }),
        http,
    )
    .await;
    let log = wait_for_log(&leaf, "invalid peer certificate", 2).await;
    assert!(
        log.contains("leafnode link to hub failed; will retry"),
        "{log}"
    );
    let remote = leafz_remote(http).await;
    assert_eq!(remote["connected"], json!(false), "{remote}");
    let error = remote["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("certificate"), "{remote}");
    drop(leaf);

    let leaf = start_leaf(
        ServerKind::Leafd,
        &url,
        json!({ "ca_file": certs.path("ca.pem") }),
        free_port(),
    )
    .await;
    pub_sub_both_ways(&hub, &leaf).await;
}

/// TLS on one side only is reported clearly, on every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_one_side_only_is_reported() {
    let certs = Certs::new();
    // The hub requires TLS, the leaf is plain.
    let port = free_port();
    let _hub = start_hub(ServerKind::Hubd, port, hub_tls(&certs, false)).await;
    let http = free_port();
    let plain = start_leaf(
        ServerKind::Leafd,
        &format!("nats-leaf://127.0.0.1:{port}"),
        Value::Null,
        http,
    )
    .await;
    wait_for_log(
        &plain,
        "the hub requires TLS, but this remote is plain TCP",
        2,
    )
    .await;
    let remote = leafz_remote(http).await;
    assert!(
        remote["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("requires TLS")),
        "{remote}"
    );

    // The leaf wants TLS, the hub (nats-server) is plain.
    let port = free_port();
    let _plain_hub = TestServer::with_config(
        ServerKind::NatsServer,
        json!({ "leafnodes": { "listen": format!("127.0.0.1:{port}") } }),
    )
    .await;
    let tls_leaf = start_leaf(
        ServerKind::Leafd,
        &format!("tls://127.0.0.1:{port}"),
        json!({ "ca_file": certs.path("ca.pem") }),
        free_port(),
    )
    .await;
    wait_for_log(&tls_leaf, "the hub does not offer TLS", 2).await;
}

/// A TLS file that cannot be read refuses the start, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tls_file_refuses_to_start() {
    let certs = Certs::new();
    let missing = certs.path("nope.pem");
    let leaf_config = json!({ "leafnodes": { "remotes": [{
        "url": "tls://127.0.0.1:7422", "tls": { "ca_file": missing },
    }]}});
    let (ok, output) = run_to_exit(ServerKind::Leafd, &certs.dir, &leaf_config);
    assert!(!ok, "leafd started: {output}");
    assert!(
        output.contains(&format!(
            "leafnodes.remotes[0].tls.ca_file: cannot read {missing}"
        )),
        "{output}"
    );
    let hub_config = json!({ "leafnodes": {
        "listen": "127.0.0.1:0",
        "tls": { "cert_file": certs.path("hub.pem"), "key_file": missing },
    }});
    let (ok, output) = run_to_exit(ServerKind::Hubd, &certs.dir, &hub_config);
    assert!(!ok, "hubd started: {output}");
    assert!(
        output.contains(&format!("leafnodes.tls.key_file: cannot read {missing}")),
        "{output}"
    );
}
