//! The HTTP monitoring port (`-m`/`http_port`) of leafd and hubd, with real HTTP requests.

use std::time::Duration;

use e2e::serde_json::{json, Value};
use e2e::{bounded, free_port, http_get, ServerKind, TestServer};

/// A server with the monitoring port on `mport` and `config`.
async fn start(kind: ServerKind, mport: u16, config: Value) -> TestServer {
    TestServer::builder(kind)
        .config(config)
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_unknown_pages() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let mport = free_port();
        let _server = start(kind, mport, json!({})).await;
        assert_eq!(
            http_get(mport, "/healthz").await,
            (200, json!({"status": "ok"}))
        );
        let (code, body) = http_get(mport, "/nope").await;
        assert_eq!(code, 404, "{kind}: {body}");
        let (code, body) = http_get(mport, "/uplinkz").await;
        assert_eq!(code, 200);
        assert_eq!(body["uplinks"], json!([]), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leafz_shows_the_link_on_both_sides() {
    let (hub_m, leaf_m, leaf_port) = (free_port(), free_port(), free_port());
    let _hub = start(
        ServerKind::Hubd,
        hub_m,
        json!({ "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") } }),
    )
    .await;
    let _leaf = start(
        ServerKind::Leafd,
        leaf_m,
        json!({ "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{leaf_port}") }] } }),
    )
    .await;
    let hub_view = bounded("the hub to list its leaf", async {
        loop {
            let (_, body) = http_get(hub_m, "/leafz").await;
            if body["leafnodes"] == json!(1) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(hub_view["leafs"][0]["is_spoke"], json!(false), "{hub_view}");
    assert_eq!(hub_view["leafs"][0]["ip"], json!("127.0.0.1"), "{hub_view}");
    let (_, leaf_view) = http_get(leaf_m, "/leafz").await;
    assert_eq!(leaf_view["leafnodes"], json!(1), "{leaf_view}");
    assert_eq!(
        leaf_view["leafs"][0]["is_spoke"],
        json!(true),
        "{leaf_view}"
    );
    assert_eq!(
        leaf_view["remotes"][0]["connected"],
        json!(true),
        "{leaf_view}"
    );
    assert_eq!(
        leaf_view["leafs"][0]["port"],
        json!(leaf_port),
        "{leaf_view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(ServerKind::Leafd.binary_path())
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-m",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen for monitoring"), "{stderr}");
}
