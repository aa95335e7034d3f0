//! A leafd uplink replaying into an R3 stream on a hubd cluster while members are SIGKILLed
//! (issue 22: "Leaf uplinks and sources into an R3 stream continue through a leader change
//! exactly once").
//!
//! Three hubd members (routes, JetStream, a leafnodes listener each) hold an R3 stream
//! created through async-nats; a leafd whose leaf remote lists every member's URL replays a
//! local backlog into it. Meanwhile rounds of SIGKILL hit a random member (the stream
//! leader in the first round), each restarted after a short bounded pause. Afterwards every
//! member's copy holds every local message exactly once, in local order, and the leafd's
//! `/uplinkz` shows no backlog.
//!
//! Size: `UPLINK_R3_MSGS` messages (default 20,000) and `UPLINK_R3_ROUNDS` rounds (default
//! 4) keep `scripts/test` short on a small machine; `.ci/run` runs this test again at the
//! size issue 22 names, 200,000 messages and 20 rounds (`UPLINK_R3_MSGS=200000
//! UPLINK_R3_ROUNDS=20`, ~140 s).
//!
//! Every wait is bounded.

use std::time::Duration;

use e2e::serde_json::{json, Value};
use e2e::uplink::*;
use e2e::{bounded_for, free_port, http_get, ServerKind, StoreDir, TestServer};

/// How long a cluster may take to elect leaders.
const ELECTION: Duration = Duration::from_secs(40);

/// One hubd member: its server, configuration, monitoring port and store.
struct Member {
    server: Option<TestServer>,
    name: String,
    http: u16,
    config: Value,
    _store: StoreDir,
}

/// A number from the environment variable `var`, or `default`.
fn sized(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Three hubd members of cluster `C` with JetStream, a system account and a leafnodes
/// listener each (the ports in the returned list).
async fn hub_cluster() -> (Vec<Member>, Vec<u16>) {
    let routes = [free_port(), free_port(), free_port()];
    let leafs = vec![free_port(), free_port(), free_port()];
    let mut members = Vec::new();
    for i in 0..3 {
        let store = StoreDir::new();
        let http = free_port();
        let name = format!("n{}", i + 1);
        let config = json!({
            "server_name": name,
            "http_port": http,
            "jetstream": { "store_dir": store.path() },
            "cluster": {
                "name": "C",
                "listen": format!("127.0.0.1:{}", routes[i]),
                "routes": routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>(),
            },
            "leafnodes": { "listen": format!("127.0.0.1:{}", leafs[i]) },
            "accounts": { "SYS": { "users": [ { "user": "sys", "password": "s" } ] } },
            "system_account": "SYS",
            "authorization": { "users": [ { "user": "g", "password": "g" } ] },
        });
        let server = TestServer::with_config(ServerKind::Hubd, config.clone()).await;
        members.push(Member {
            server: Some(server),
            name,
            http,
            config,
            _store: store,
        });
    }
    (members, leafs)
}

/// A client of the global account (JetStream's) on `m`.
async fn app_client(m: &Member) -> e2e::async_nats::Client {
    m.server
        .as_ref()
        .expect("a running member")
        .client_with(TestServer::options().user_and_password("g".into(), "g".into()))
        .await
}

/// `m`'s own view of the hub stream: `STREAM.INFO` answered by its copy (`None` while it
/// has no answer).
async fn info_on(m: &Member) -> Option<Value> {
    let client = app_client(m).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(
            format!("$JS.API.STREAM.INFO.{HUB_STREAM}"),
            "{}".to_string().into(),
        ),
    )
    .await
    .ok()?
    .ok()?;
    let info: Value = e2e::serde_json::from_slice(&answer.payload).ok()?;
    info.get("error").is_none().then_some(info)
}

/// Waits (bounded) until every member has a meta leader in its `/jsz`.
async fn await_meta_leader(members: &[Member]) {
    bounded_for(ELECTION, "a meta leader seen by every member", async {
        loop {
            let mut all = true;
            for m in members {
                let (code, jsz) = http_get(m.http, "/jsz").await;
                all &= code == 200 && jsz["meta_cluster"]["leader"].is_string();
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// The hub stream's group leader as some running member reports it.
async fn stream_leader(members: &[Member]) -> String {
    bounded_for(ELECTION, "a stream leader", async {
        loop {
            for m in members.iter().filter(|m| m.server.is_some()) {
                if let Some(info) = info_on(m).await {
                    if let Some(l) = info["cluster"]["leader"].as_str() {
                        return l.to_owned();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// Waits (bounded) until a running member's copy holds at least `n` messages.
async fn await_progress(members: &[Member], n: u64) {
    bounded_for(
        Duration::from_secs(120),
        &format!("{n} messages in the hub stream"),
        async {
            loop {
                for m in members.iter().filter(|m| m.server.is_some()) {
                    if let Some(info) = info_on(m).await {
                        if info["state"]["messages"].as_u64().unwrap_or(0) >= n {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
}

/// The uplink replays a leafd backlog into an R3 stream on three hubd members while random
/// members (the stream leader first) are SIGKILLed and restarted: every member's copy ends
/// with every local message exactly once, in local order, and leafd has nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_replays_into_an_r3_stream_through_sigkills_exactly_once() {
    let n = sized("UPLINK_R3_MSGS", 20_000);
    let rounds = sized("UPLINK_R3_ROUNDS", 4);
    let seed = fastrand::u64(..);
    eprintln!("{n} messages, {rounds} rounds, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut members, leaf_ports) = hub_cluster().await;
    await_meta_leader(&members).await;
    let js = e2e::async_nats::jetstream::new(app_client(&members[0]).await);
    bounded_for(ELECTION, "the R3 hub stream created", async {
        loop {
            let created = js
                .create_stream(e2e::async_nats::jetstream::stream::Config {
                    name: HUB_STREAM.to_string(),
                    subjects: vec![format!("{PREFIX}.sensors.>")],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => return,
                Err(e) => eprintln!("stream not created yet: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let leaf_store = StoreDir::new();
    let mport = free_port();
    let urls: Vec<String> = leaf_ports
        .iter()
        .map(|p| format!("nats-leaf://g:g@127.0.0.1:{p}"))
        .collect();
    let config = json!({
        "jetstream": { "store_dir": leaf_store.path() },
        "leafnodes": { "remotes": [{ "urls": urls }], "reconnect": "250ms" },
        "uplinks": [{
            "name": "sensors",
            "subjects": ["sensors.>"],
            "hub_stream": HUB_STREAM,
            "subject_prefix": PREFIX,
        }],
    });
    let leafd = TestServer::builder(ServerKind::Leafd)
        .config(config)
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    publish_range(&client(&leafd).await, 0, n).await;
    for round in 0..rounds {
        // Spread the kills over the replay.
        await_progress(&members, (round + 1) * n / (rounds + 2)).await;
        let victim = if round == 0 {
            let leader = stream_leader(&members).await;
            members
                .iter()
                .position(|m| m.name == leader)
                .expect("the leader is a member")
        } else {
            rng.usize(..members.len())
        };
        eprintln!("round {round}: SIGKILL {}", members[victim].name);
        if let Some(mut s) = members[victim].server.take() {
            s.kill();
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(200..1500))).await;
        members[victim].server =
            Some(TestServer::with_config(ServerKind::Hubd, members[victim].config.clone()).await);
    }
    let status = await_status(mport, "no backlog on leafd", |s| {
        s["backlog_msgs"].as_u64() == Some(0)
    })
    .await;
    eprintln!("leafd uplink: {status}");
    // Every copy converges on exactly the local messages (bounded wait; a copy may lag).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for m in &members {
            counts.push(
                info_on(m)
                    .await
                    .and_then(|i| i["state"]["messages"].as_u64()),
            );
        }
        if counts.iter().all(|c| *c == Some(n)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copies do not agree on {n} messages within 60 s: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for m in &members {
        eprintln!("checking {}'s copy", m.name);
        check_hub_stream(&app_client(m).await, n).await;
    }
    let status = uplink_status(mport).await;
    assert_eq!(status["backlog_msgs"], 0, "{status}");
}
