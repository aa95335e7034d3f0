//! The fleet view end to end: leafd gateways publish status records over their leaf links
//! (`$LEAF.STATUS.<server name>`), hubd keeps the latest one per gateway and shows them on
//! `/fleetz`, in `/metrics` and with `hubd fleet -m`; a gateway whose link is gone is offline
//! since it was last seen, with its backlog; records that are malformed, name another
//! server than their link's, or come from a plain client are ignored and counted.
//!
//! The records are plain NATS: a plain subscriber on a nats-server hub (and on hubd) reads
//! them, including the one sent as soon as the link is up and the one sent at a clean
//! shutdown.

use std::process::Command;
use std::time::Duration;

use e2e::serde_json::{json, Value};
use e2e::uplink::publish_range;
use e2e::{
    bounded, bounded_for, free_port, http_get, http_get_text, next_msg, run_command_to_exit,
    ServerKind, StoreDir, TestServer,
};

/// `/fleetz` of the hub whose monitoring port is `mport`, once `ok` holds (polled, bounded).
async fn await_fleet(mport: u16, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    bounded_for(Duration::from_secs(60), what, async {
        loop {
            let (code, page) = http_get(mport, "/fleetz").await;
            assert_eq!(code, 200, "/fleetz: {page}");
            if ok(&page) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// The gateway `name` in a `/fleetz` page.
fn gateway<'a>(page: &'a Value, name: &str) -> &'a Value {
    page["gateways"]
        .as_array()
        .and_then(|all| all.iter().find(|g| g["server_name"] == name))
        .unwrap_or(&Value::Null)
}

/// A hub with JetStream (domain `hub`) in the global account and in account `A`, a leafnode
/// listener on `leaf_port` where user `a` is bound to `A` and user `g` to the global account.
fn hub_config(store: &StoreDir, leaf_port: u16) -> Value {
    json!({
        "server_name": "hub",
        "jetstream": { "store_dir": store.path(), "domain": "hub" },
        "accounts": {
            "A": { "users": [ { "user": "ca", "password": "ca" } ], "jetstream": "enabled" },
        },
        "leafnodes": {
            "listen": format!("127.0.0.1:{leaf_port}"),
            "authorization": { "users": [
                { "user": "a", "password": "a", "account": "A" },
                { "user": "g", "password": "g" },
            ] },
        },
    })
}

/// A leafd named `name` logging in to the hub as `user`, with one uplink of `sensors.>` into
/// the hub stream `hub_stream` (created when `create`), status records every `interval`.
fn gateway_config(
    name: &str,
    store: &StoreDir,
    hub_url: &str,
    hub_stream: &str,
    create: bool,
    interval: &str,
) -> Value {
    json!({
        "server_name": name,
        "jetstream": { "store_dir": store.path() },
        // Gateways in one hub account would otherwise capture each other's sensors.
        "leafnodes": {
            "remotes": [{ "url": hub_url, "deny_imports": ["sensors.>"] }],
            "reconnect": "250ms",
        },
        "uplinks": [{
            "name": "sensors",
            "subjects": ["sensors.>"],
            "hub_stream": hub_stream,
            "hub_domain": "hub",
            "subject_prefix": name,
            "create_hub_stream": create,
        }],
        "fleet": { "interval": interval },
    })
}

/// A record body as leafd sends it, for `name`, with `backlog` messages buffered.
fn forged_record(name: &str, backlog: u64) -> Vec<u8> {
    json!({
        "format": 1, "server_name": name, "server_id": "FORGED", "version": "9.9.9",
        "start": "2026-01-01T00:00:00Z", "uptime_secs": 1, "sent": "2026-01-01T00:00:01Z",
        "interval_secs": 1,
        "uplinks": [{ "name": "sensors", "state": "live", "backlog_msgs": backlog,
                      "backlog_bytes": backlog * 10 }],
        "uplinks_total": 1,
    })
    .to_string()
    .into_bytes()
}

/// Runs `hubd fleet` with `args`; its standard output.
fn hubd_fleet(args: &[&str]) -> String {
    let out = run_command_to_exit(
        Command::new(ServerKind::Hubd.binary_path())
            .arg("fleet")
            .args(args),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hubd fleet {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Three gateways on a hubd: gw1 in account A and gw2 in the global account forward their
/// uplinks; gw3's hub stream does not exist, so its 40 messages stay buffered. `/fleetz`,
/// `/metrics` and `hubd fleet` show the three with their backlog; hostile records are
/// ignored and counted while the good ones stay; gw3 stopped is offline with its backlog
/// and an alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubd_shows_three_gateways_one_offline_with_a_backlog() {
    let (hub_store, s1, s2, s3) = (
        StoreDir::new(),
        StoreDir::new(),
        StoreDir::new(),
        StoreDir::new(),
    );
    let (leaf_port, mport) = (free_port(), free_port());
    let hub = TestServer::builder(ServerKind::Hubd)
        .config(hub_config(&hub_store, leaf_port))
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    let url = |user: &str| format!("nats-leaf://{user}:{user}@127.0.0.1:{leaf_port}");
    let gw1 = TestServer::with_config(
        ServerKind::Leafd,
        gateway_config("gw1", &s1, &url("a"), "GW1", true, "1s"),
    )
    .await;
    let gw2 = TestServer::with_config(
        ServerKind::Leafd,
        gateway_config("gw2", &s2, &url("g"), "GW2", true, "1s"),
    )
    .await;
    let mut gw3 = TestServer::with_config(
        ServerKind::Leafd,
        gateway_config("gw3", &s3, &url("g"), "MISSING", false, "1s"),
    )
    .await;
    let (c1, c2, c3) = (gw1.client().await, gw2.client().await, gw3.client().await);
    publish_range(&c1, 0, 10).await;
    publish_range(&c3, 0, 40).await;

    let page = await_fleet(mport, "three gateways, gw3 holding 40 messages", |p| {
        p["total"] == 3
            && p["connected"] == 3
            && gateway(p, "gw1")["backlog_msgs"] == 0
            && gateway(p, "gw1")["record"]["uplinks"][0]["state"] == "live"
            && gateway(p, "gw3")["backlog_msgs"] == 40
            && gateway(p, "gw3")["record"]["uplinks"][0]["state"] == "stalled"
    })
    .await;
    let (g1, g2, g3) = (
        gateway(&page, "gw1"),
        gateway(&page, "gw2"),
        gateway(&page, "gw3"),
    );
    assert_eq!(g1["account"], "A", "{page}");
    assert_eq!(g2["account"], "$G", "{page}");
    assert_eq!(g3["account"], "$G", "{page}");
    for g in [g1, g2, g3] {
        assert_eq!(g["state"], "connected", "{g}");
        assert_eq!(g["offline_since"], Value::Null, "{g}");
        assert_eq!(g["record"]["format"], 1, "{g}");
        assert!(g["record"]["store"]["used_bytes"].as_u64() > Some(0), "{g}");
    }
    assert!(g3["backlog_bytes"].as_u64() > Some(0), "{g3}");
    assert_eq!(g3["record"]["uplinks"][0]["hub_stream"], "MISSING");
    let gw3_id = g3["server_id"].clone();
    assert!(
        g3["alarms"][0]
            .as_str()
            .is_some_and(|a| a.starts_with("uplink sensors stalled")),
        "{g3}"
    );
    assert_eq!(g1["alarms"], json!([]), "{g1}");

    // Hostile records: each ignored and counted, none replaces a good one.
    // A plain client of the hub, in account A.
    let hc = hub
        .client_with(TestServer::options().user_and_password("ca".into(), "ca".into()))
        .await;
    c1.publish("$LEAF.STATUS.gw1", "not json".into())
        .await
        .unwrap();
    c1.publish("$LEAF.STATUS.gw1", vec![b' '; 70 * 1024].into())
        .await
        .unwrap();
    let later_format =
        String::from_utf8_lossy(&forged_record("gw1", 5)).replace("\"format\":1", "\"format\":2");
    c1.publish("$LEAF.STATUS.gw1", later_format.into())
        .await
        .unwrap();
    // gw2's link carries a record claiming to be gw3's.
    c2.publish("$LEAF.STATUS.gw3", forged_record("gw3", 999).into())
        .await
        .unwrap();
    // A plain client of the hub publishes a record for gw1, in gw1's account.
    hc.publish("$LEAF.STATUS.gw1", forged_record("gw1", 999).into())
        .await
        .unwrap();
    for c in [&c1, &c2, &hc] {
        c.flush().await.unwrap();
    }
    let page = await_fleet(mport, "the hostile records counted", |p| {
        let i = &p["ignored"];
        i["invalid"] == 1
            && i["too_large"] == 1
            && i["format"] == 1
            && i["name_mismatch"] == 1
            && i["not_a_leaf"] == 1
    })
    .await;
    assert_eq!(gateway(&page, "gw3")["backlog_msgs"], 40, "{page}");
    assert_eq!(gateway(&page, "gw3")["server_id"], gw3_id, "{page}");
    assert_eq!(gateway(&page, "gw2")["backlog_msgs"], 0, "{page}");
    assert_ne!(gateway(&page, "gw2")["server_id"], "FORGED", "{page}");
    assert_ne!(gateway(&page, "gw1")["server_id"], "FORGED", "{page}");
    assert_eq!(page["total"], 3, "{page}");

    // gw3 stops with its backlog: offline (or stopped, after its last record) since then.
    gw3.terminate();
    let page = await_fleet(mport, "gw3 offline", |p| {
        gateway(p, "gw3")["connected"] == false && p["connected"] == 2
    })
    .await;
    let g3 = gateway(&page, "gw3");
    assert!(g3["state"] == "stopped" || g3["state"] == "offline", "{g3}");
    assert_eq!(g3["backlog_msgs"], 40, "{g3}");
    assert_eq!(g3["offline_since"], g3["last_seen"], "{g3}");
    assert!(g3["offline_since"].is_string(), "{g3}");
    let alarms: Vec<&str> = g3["alarms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        alarms
            .first()
            .is_some_and(|a| a.starts_with("offline for ") && a.ends_with(" buffered")),
        "{g3}"
    );
    assert_eq!(gateway(&page, "gw1")["alarms"], json!([]), "{page}");

    let metrics = http_get_text(mport, "/metrics").await;
    for line in [
        "hubd_fleet_connected{account=\"$G\",gateway=\"gw3\"} 0",
        "hubd_fleet_connected{account=\"A\",gateway=\"gw1\"} 1",
        "hubd_fleet_backlog_messages{account=\"$G\",gateway=\"gw3\"} 40",
        "hubd_fleet_gateways 3",
        "hubd_fleet_records_ignored_total{reason=\"not_a_leaf\"} 1",
        "hubd_fleet_records_ignored_total{reason=\"name_mismatch\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    let monitor = format!("127.0.0.1:{mport}");
    let table = hubd_fleet(&["-m", &monitor]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.first(), Some(&"3 gateways, 2 connected"), "{table}");
    assert!(table.contains("ignored status records: 5"), "{table}");
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} (")))
            .copied()
            .unwrap_or_else(|| panic!("no line for {name}:\n{table}"))
    };
    assert!(line("gw1").starts_with("gw1 (A)  connected"), "{table}");
    assert!(line("gw2").starts_with("gw2 ($G)  connected"), "{table}");
    let l3 = line("gw3");
    assert!(l3.contains(" since "), "{table}");
    assert!(l3.contains("backlog 40 msgs"), "{table}");
    assert!(table.contains("    ALARM offline for "), "{table}");
    let json_out: Value =
        e2e::serde_json::from_str(&hubd_fleet(&["-m", &monitor, "--json"])).expect("--json");
    assert_eq!(json_out["total"], 3);
    drop((gw1, gw2));
}

/// The records are plain NATS: a plain subscriber on the hub (`kind`: nats-server, or hubd)
/// reads the one sent right after the link came up (the interval is an hour), and the one
/// sent at a clean shutdown.
async fn a_plain_subscriber_on_the_hub_reads_the_records(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = TestServer::with_config(
        kind,
        json!({
            "jetstream": { "store_dir": hub_store.path(), "domain": "hub" },
            "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
        }),
    )
    .await;
    // A plain client of the hub, in account A.
    let hc = hub
        .client_with(TestServer::options().user_and_password("ca".into(), "ca".into()))
        .await;
    let mut sub = hc.subscribe("$LEAF.STATUS.>").await.unwrap();
    hc.flush().await.unwrap();
    let url = format!("nats-leaf://127.0.0.1:{leaf_port}");
    let mut leaf = TestServer::with_config(
        ServerKind::Leafd,
        gateway_config("edge-7", &leaf_store, &url, "EDGE", true, "1h"),
    )
    .await;
    let msg = bounded("the record sent at link up", next_msg(&mut sub)).await;
    assert_eq!(msg.subject.as_str(), "$LEAF.STATUS.edge-7", "{kind}");
    let record: Value = e2e::serde_json::from_slice(&msg.payload).expect("JSON record");
    assert_eq!(record["format"], 1, "{record}");
    assert_eq!(record["server_name"], "edge-7", "{record}");
    assert_eq!(record["interval_secs"], 3600, "{record}");
    assert_eq!(record["stopping"], false, "{record}");
    assert_eq!(record["uplinks"][0]["name"], "sensors", "{record}");
    assert_eq!(record["uplinks_total"], 1, "{record}");
    assert!(record["store"]["used_bytes"].is_u64(), "{record}");
    assert!(record["sent"].is_string() && record["start"].is_string());
    leaf.terminate();
    let last = bounded("the record sent at shutdown", async {
        loop {
            let m = next_msg(&mut sub).await;
            let r: Value = e2e::serde_json::from_slice(&m.payload).expect("JSON record");
            if r["stopping"] == true {
                return r;
            }
        }
    })
    .await;
    assert_eq!(last["server_name"], "edge-7", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_subscriber_on_nats_server_reads_the_records() {
    a_plain_subscriber_on_the_hub_reads_the_records(ServerKind::NatsServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_subscriber_on_hubd_reads_the_records() {
    a_plain_subscriber_on_the_hub_reads_the_records(ServerKind::Hubd).await;
}

/// hubd keeps the fleet view across a restart (a snapshot in its JetStream store directory):
/// a gateway that went offline with a backlog is listed after the restart, still offline,
/// with the backlog of its last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_survives_a_hub_restart() {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub_config = json!({
        "jetstream": { "store_dir": hub_store.path(), "domain": "hub" },
        "leafnodes": { "listen": format!("127.0.0.1:{leaf_port}") },
    });
    let start_hub = |mport: u16| {
        TestServer::builder(ServerKind::Hubd)
            .config(hub_config.clone())
            .arg("-m")
            .arg(mport.to_string())
            .start()
    };
    let mport = free_port();
    let mut hub = start_hub(mport).await;
    let url = format!("nats-leaf://127.0.0.1:{leaf_port}");
    let mut gw = TestServer::with_config(
        ServerKind::Leafd,
        gateway_config("gw9", &leaf_store, &url, "MISSING", false, "1s"),
    )
    .await;
    publish_range(&gw.client().await, 0, 25).await;
    await_fleet(mport, "gw9 holding 25 messages", |p| {
        gateway(p, "gw9")["backlog_msgs"] == 25
    })
    .await;
    gw.terminate();
    let before = await_fleet(mport, "gw9 offline", |p| {
        gateway(p, "gw9")["connected"] == false
    })
    .await;
    let id = gateway(&before, "gw9")["server_id"].clone();
    hub.terminate();

    let mport = free_port();
    let _hub = start_hub(mport).await;
    let (code, after) = http_get(mport, "/fleetz").await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["total"], 1, "{after}");
    let g = gateway(&after, "gw9");
    assert_eq!(g["connected"], false, "{g}");
    assert_eq!(g["server_id"], id, "{g}");
    assert_eq!(g["backlog_msgs"], 25, "{g}");
    assert!(g["offline_since"].is_string(), "{g}");
    assert!(
        g["alarms"][0]
            .as_str()
            .is_some_and(|a| a.starts_with("offline for ") && a.ends_with(" buffered")),
        "{g}"
    );
}
