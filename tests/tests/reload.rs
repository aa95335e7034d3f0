//! Configuration reload on SIGHUP: what may change while running changes (log level, uplink
//! limits); anything else is refused by name and the server goes on with its running
//! configuration.

use e2e::async_nats::jetstream;
use e2e::serde_json::{json, Value};
use e2e::{free_port, wait_for_log, ServerKind, StoreDir, TestServer};

fn config(
    store: &StoreDir,
    hub_port: u16,
    log_level: &str,
    max_msgs: u64,
    server_name: Option<&str>,
) -> Value {
    let mut c = json!({
        "log_level": log_level,
        "jetstream": { "store_dir": store.path() },
        "leafnodes": { "remotes": [{ "url": format!("nats-leaf://127.0.0.1:{hub_port}") }] },
        "uplinks": [{
            "name": "sensors",
            "subjects": ["sensors.>"],
            "hub_stream": "SENSORS",
            "max_msgs": max_msgs,
        }],
    });
    if let Some(name) = server_name {
        c["server_name"] = json!(name);
    }
    c
}

async fn buffer_limit(server: &TestServer) -> i64 {
    let js = jetstream::new(server.client().await);
    let mut stream = js
        .get_stream("UPLINK_sensors")
        .await
        .expect("buffer stream");
    stream.info().await.expect("info").config.max_messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_what_may_change_and_refuses_the_rest() {
    let store = StoreDir::new();
    let hub_port = free_port(); // nothing listens: the uplink stays offline
    let server = TestServer::with_config(
        ServerKind::Leafd,
        config(&store, hub_port, "info", 100, None),
    )
    .await;
    assert_eq!(buffer_limit(&server).await, 100);
    assert!(
        !server.log().contains("DEBUG"),
        "debug lines before the reload"
    );

    // Log level and an uplink limit change in place.
    std::fs::write(
        server.config_path(),
        config(&store, hub_port, "debug", 50, None).to_string(),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "configuration reloaded", 1).await;
    assert_eq!(buffer_limit(&server).await, 50);
    // Connecting a client logs at debug level now.
    let _client = server.client().await;
    wait_for_log(&server, "DEBUG", 1).await;

    // A key that cannot change: refused by name, with the uplink change in the same file;
    // the server keeps its running settings. (The port is set by a flag here, and flags
    // win over the file, so it would not change.)
    std::fs::write(
        server.config_path(),
        config(&store, hub_port, "debug", 10, Some("renamed")).to_string(),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "server_name: cannot change while running", 1).await;
    assert_eq!(
        buffer_limit(&server).await,
        50,
        "a refused reload changed the buffer"
    );

    // A broken file: refused with its line; still serving.
    std::fs::write(server.config_path(), "{ \"log_level\": \n").unwrap();
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "reload refused", 2).await;
    assert!(
        server.log().contains("server.json:"),
        "the error names the file and line"
    );
    assert_eq!(buffer_limit(&server).await, 50);
}
