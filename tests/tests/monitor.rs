//! The HTTP monitoring port (`-m`/`http_port`) of leafd and hubd, with real HTTP requests.

use std::time::Duration;

use e2e::async_nats::jetstream;
use e2e::serde_json::{json, Value};
use e2e::{bounded, free_port, http_get, next_msg, ServerKind, StoreDir, TestServer};

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
        // leafd's own pages; hubd has no uplinks or gateway sources.
        for (page, list) in [("/uplinkz", "uplinks"), ("/sourcesz", "sources")] {
            let (code, body) = http_get(mport, page).await;
            if kind == ServerKind::Leafd {
                assert_eq!(code, 200);
                assert_eq!(body[list], json!([]), "{kind}");
            } else {
                assert_eq!(code, 404, "{kind} {page}: {body}");
            }
        }
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

/// `/varz`, `/connz`, `/subsz` count what clients do, with nats-server's field names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varz_connz_subsz_count_traffic() {
    for kind in [ServerKind::Leafd, ServerKind::Hubd] {
        let mport = free_port();
        let server = start(kind, mport, json!({})).await;
        let client = server
            .client_with(TestServer::options().name("probe"))
            .await;
        let mut sub = client.subscribe("metrics.test").await.unwrap();
        for _ in 0..10 {
            client
                .publish("metrics.test", "12345".into())
                .await
                .unwrap();
        }
        for _ in 0..10 {
            next_msg(&mut sub).await;
        }
        let (code, varz) = http_get(mport, "/varz").await;
        assert_eq!(code, 200);
        assert!(varz["in_msgs"].as_u64().unwrap() >= 10, "{kind}: {varz}");
        assert!(varz["out_msgs"].as_u64().unwrap() >= 10, "{kind}: {varz}");
        assert!(varz["in_bytes"].as_u64().unwrap() >= 50, "{kind}: {varz}");
        assert_eq!(varz["connections"], json!(1), "{kind}: {varz}");
        assert!(varz["total_connections"].as_u64().unwrap() >= 1);
        assert!(varz["subscriptions"].as_u64().unwrap() >= 1);
        assert_eq!(varz["port"], json!(server.port()));
        assert!(varz["mem"].as_u64().unwrap() > 0);

        let (_, connz) = http_get(mport, "/connz").await;
        assert_eq!(connz["num_connections"], json!(1), "{kind}: {connz}");
        let c = &connz["connections"][0];
        assert_eq!(c["name"], json!("probe"), "{c}");
        assert_eq!(c["lang"], json!("rust"), "{c}");
        assert_eq!(c["in_msgs"], json!(10), "{c}");
        assert_eq!(c["out_msgs"], json!(10), "{c}");
        assert_eq!(c["subscriptions"], json!(1), "{c}");
        let (_, empty) = http_get(mport, "/connz?offset=1").await;
        assert_eq!(empty["num_connections"], json!(0), "{empty}");

        let (_, subsz) = http_get(mport, "/subsz").await;
        assert!(subsz["num_subscriptions"].as_u64().unwrap() >= 1, "{subsz}");

        // Totals outlive the connection.
        drop(sub);
        drop(client);
        let varz = bounded("the connection to close", async {
            loop {
                let (_, v) = http_get(mport, "/varz").await;
                if v["connections"] == json!(0) {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(varz["in_msgs"].as_u64().unwrap() >= 10, "{varz}");
    }
}

/// `/jsz` and `/metrics` report streams; `/metrics` is Prometheus text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsz_and_metrics() {
    let store = StoreDir::new();
    let mport = free_port();
    let server = TestServer::builder(ServerKind::Leafd)
        .arg("-js")
        .arg("-sd")
        .arg(store.path())
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "METRICS".into(),
        subjects: vec!["m.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..3 {
        js.publish("m.x", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (_, jsz) = http_get(mport, "/jsz").await;
    assert_eq!(jsz["streams"], json!(1), "{jsz}");
    assert_eq!(jsz["messages"], json!(3), "{jsz}");
    assert!(jsz["api"]["total"].as_u64().unwrap() >= 1, "{jsz}");
    assert_eq!(http_get(mport, "/healthz").await.0, 200);

    let text = metrics_text(mport).await;
    assert!(
        text.contains("# TYPE leafd_in_msgs_total counter"),
        "{text}"
    );
    assert!(
        text.contains("leafd_stream_messages{stream=\"METRICS\"} 3"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("`name value`");
        assert!(
            !name.is_empty() && value.parse::<f64>().is_ok(),
            "bad sample: {line}"
        );
    }
    drop(client);
}

/// The raw body of `/metrics` (not JSON).
async fn metrics_text(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    bounded("the metrics page", stream.read_to_string(&mut raw))
        .await
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_string()
}
