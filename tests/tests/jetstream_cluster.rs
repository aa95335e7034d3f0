//! JetStream clusters (issue 22, the foundation): the meta group of hubd members, on openraft
//! over the routes (see `hub/JETSTREAM-CLUSTER.md`).
//!
//! Three members with JetStream elect one meta leader that every member's `/jsz` shows
//! (`meta_cluster`), and `/healthz` is 503 until then; the leader SIGKILLed is replaced (while
//! a reconnecting client's publishes to an R3 stream go on, each acknowledged one stored once,
//! and streams are still created), and once restarted it rejoins from its own Raft log as a
//! current follower; the system account's
//! `$JS.API.META.LEADER.STEPDOWN` moves leadership; a nats-server member with JetStream is
//! reported by name and routing goes on; two halves of a four-member cluster started apart
//! elect no leader. The same steps run against a nats-server cluster where they apply, to
//! show that hubd behaves alike.
//!
//! Replicated streams (issue 22 steps 1-4): an R3 stream created on any member is assigned
//! through the meta group and seen by every member's API; each peer holds a copy that answers
//! reads; refused with 10008 without a meta leader, with 10005 in a mixed cluster, and with
//! 10074 without a cluster (leafd, a single hubd, nats-server alike). Its group's leader takes
//! the publishes (clients on other members reach it by interest) and acknowledges each once a
//! quorum has it fsynced and it is applied: 1,000 async publishes land in the same order on
//! every copy; the stream leader SIGKILLed mid-way loses no acknowledged publish, and the
//! retried ones are stored once (msg-id dedupe in the state machine); a member alone
//! acknowledges nothing.
//!
//! Replicated consumers (consumer groups): an R3 durable pull consumer's leader SIGKILLed
//! mid-way redelivers no message whose double ack succeeded and skips none; pull requests on
//! members not leading its group are forwarded to the leader; `CONSUMER.LEADER.STEPDOWN`,
//! configuration updates reaching every member and the next leader, an R3 push consumer
//! through its leader's SIGKILL. `SERVER.REMOVE`: a dead server's streams and consumers get a
//! replacement peer.
//!
//! Clients that reconnect to a restarted member (issue 22's "a client that reconnects", with
//! the client given only that member's URL): a member SIGKILLed and restarted on the same
//! ports and store, its async-nats client reconnects by itself and its publishes are
//! acknowledged again (the member leading the stream or not, the stream or meta leader
//! restarted at once or after the others elected, publishes going on through the restart,
//! ids acknowledged before answered as duplicates), and a core request from it is answered by
//! a responder on another member (its inbox's interest reaches the routes anew).
//!
//! R1 streams are the cluster's (as nats-server 2.9's: one-peer assignments): created on one
//! member, listed, read, consumed and deleted through the others; a KV bucket with the default
//! R1 used from another member; streams from before the change assigned to their member (a
//! name held by two members logged, the loser serving its own clients); a push delivery
//! crossing a route arrives under its stored subject; one deleted while its member was down
//! does not come back when the member learns the removal from a snapshot; `SERVER.REMOVE` of
//! its member gives it another one; `max_streams` and `$JS.API.INFO` count the account's
//! assignments on every member. An R3 stream updated to R1 keeps its leader's copy as the R1
//! stream (publishes going on meanwhile), and goes back to R3.
//!
//! Every wait is bounded.

use std::time::{Duration, Instant};

use e2e::serde_json::{json, Value};
use e2e::{free_port, http_get, sync, wait_for_log, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

/// How long a cluster may take to elect a meta leader (nats-server: 4-9 s elections).
const ELECTION: Duration = Duration::from_secs(40);

/// One member: its server, monitoring port, name, configuration and store.
struct Member {
    server: TestServer,
    http: u16,
    name: String,
    config: Value,
    _store: StoreDir,
}

/// The configuration of member `name`: JetStream, the monitoring port, cluster `C` with
/// `routes` (route ports), a system account `SYS` with user `sys`.
fn member_config(
    name: &str,
    route_port: u16,
    routes: &[u16],
    http: u16,
    store: &StoreDir,
) -> Value {
    json!({
        "server_name": name,
        "http_port": http,
        "jetstream": { "store_dir": store.path() },
        "cluster": {
            "name": "C",
            "listen": format!("127.0.0.1:{route_port}"),
            "routes": routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>(),
        },
        "accounts": {
            "SYS": { "users": [ { "user": "sys", "password": "s" } ] },
            "APP": { "users": [ { "user": "a", "password": "a" } ] },
        },
        "system_account": "SYS",
        // The global account's users (JetStream's account here): `g`, and `r` who may only
        // make API requests and receive on its inboxes.
        "authorization": { "users": [
            { "user": "g", "password": "g" },
            { "user": "r", "password": "r", "permissions": {
                "publish": { "allow": ["$JS.API.>"] },
                "subscribe": { "allow": ["_INBOX.>"] },
            } },
        ] },
    })
}

/// Starts member `name` of `kind`.
async fn start(kind: ServerKind, name: &str, route_port: u16, routes: &[u16]) -> Member {
    let store = StoreDir::new();
    let http = free_port();
    let config = member_config(name, route_port, routes, http, &store);
    let server = TestServer::with_config(kind, config.clone()).await;
    Member {
        server,
        http,
        name: name.to_owned(),
        config,
        _store: store,
    }
}

/// hubd member `n<i+1>` of a cluster on route ports `ports`, on `store`, its configuration
/// changed by `tweak` first.
async fn member_on(
    i: usize,
    ports: &[u16],
    store: StoreDir,
    tweak: impl FnOnce(&mut Value),
) -> Member {
    let name = format!("n{}", i + 1);
    let http = free_port();
    let mut config = member_config(&name, ports[i], ports, http, &store);
    tweak(&mut config);
    let server = TestServer::with_config(ServerKind::Hubd, config.clone()).await;
    Member {
        server,
        http,
        name,
        config,
        _store: store,
    }
}

/// The global account's user (the account with JetStream) on `m`.
async fn app_client(m: &Member) -> e2e::async_nats::Client {
    m.server
        .client_with(TestServer::options().user_and_password("g".into(), "g".into()))
        .await
}

/// A JetStream API request's answer (JSON), within a bound.
async fn api(client: &e2e::async_nats::Client, subject: &str, body: Value) -> Value {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.to_owned(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer within 10 s"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    e2e::serde_json::from_slice(&answer.payload).expect("a JSON answer")
}

/// `STREAM.CREATE` of the stream `config` names (its answer).
async fn create(client: &e2e::async_nats::Client, config: Value) -> Value {
    let subject = format!(
        "$JS.API.STREAM.CREATE.{}",
        config["name"].as_str().unwrap_or_default()
    );
    api(client, &subject, config).await
}

/// `kinds.len()` members listing each other's routes.
async fn cluster(kinds: &[ServerKind]) -> Vec<Member> {
    let ports: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
    let mut members = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        members.push(start(*kind, &format!("n{}", i + 1), ports[i], &ports).await);
    }
    members
}

/// A member's `meta_cluster` block of `/jsz`.
async fn meta_cluster(m: &Member) -> Value {
    let (code, jsz) = http_get(m.http, "/jsz").await;
    assert_eq!(code, 200, "{}: /jsz: {jsz}", m.name);
    jsz["meta_cluster"].clone()
}

/// The meta leader's name as `m` sees it.
async fn leader_of(m: &Member) -> Option<String> {
    meta_cluster(m).await["leader"].as_str().map(str::to_owned)
}

/// Waits (bounded) until every member in `members` names the same meta leader, other than
/// `not`; returns it.
async fn agreed_leader(members: &[&Member], not: Option<&str>) -> String {
    let deadline = Instant::now() + ELECTION;
    loop {
        let mut seen = Vec::new();
        for m in members {
            seen.push(leader_of(m).await);
        }
        if let Some(Some(first)) = seen.first() {
            if seen.iter().all(|s| s.as_deref() == Some(first)) && Some(first.as_str()) != not {
                return first.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed meta leader within {ELECTION:?} (other than {not:?}): {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The system account's user on `m`.
async fn sys_client(m: &Member) -> e2e::async_nats::Client {
    m.server
        .client_with(TestServer::options().user_and_password("sys".into(), "s".into()))
        .await
}

/// Three members elect one meta leader, shown alike in every member's `/jsz` (`leader`,
/// `peer`, `cluster_size` 3, the two others as `replicas`) and in
/// `$SYS.REQ.SERVER.PING.JSZ`; `/healthz` answers 503 while a member has no meta leader
/// (the first member alone; 200 with `js-enabled-only`) and 200 once the group has one.
async fn three_members_elect_one_meta_leader(kind: ServerKind) {
    let ports = [free_port(), free_port(), free_port()];
    let n1 = start(kind, "n1", ports[0], &ports).await;
    let (code, health) = http_get(n1.http, "/healthz").await;
    assert_eq!(code, 503, "a member alone has no meta leader: {health}");
    assert_eq!(
        health["error"], "JetStream has not established contact with a meta leader",
        "{health}"
    );
    // `js-enabled-only` checks only that JetStream runs, as nats-server.
    let (code, health) = http_get(n1.http, "/healthz?js-enabled-only=true").await;
    assert_eq!(code, 200, "{health}");
    let n2 = start(kind, "n2", ports[1], &ports).await;
    let n3 = start(kind, "n3", ports[2], &ports).await;
    let members = [&n1, &n2, &n3];
    let leader = agreed_leader(&members, None).await;
    assert!(["n1", "n2", "n3"].contains(&leader.as_str()), "{leader}");
    for m in members {
        // nats-server counts a peer in its meta group once it has heard from it, which under
        // load may come after the leader is agreed: wait (bounded) for the full group.
        let deadline = Instant::now() + ELECTION;
        let meta = loop {
            let meta = meta_cluster(m).await;
            let replicas = meta["replicas"].as_array().map_or(0, Vec::len);
            let full = m.name != leader || replicas == 2;
            if (meta["cluster_size"] == 3 && full) || Instant::now() >= deadline {
                break meta;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(meta["name"], "C", "{}: {meta}", m.name);
        assert_eq!(meta["cluster_size"], 3, "{}: {meta}", m.name);
        assert_eq!(meta["peer"].as_str().map(str::len), Some(8), "{meta}");
        // As nats-server: the leader lists the other members.
        if m.name != leader {
            assert!(meta["replicas"].is_null(), "{}: {meta}", m.name);
            continue;
        }
        let mut replicas: Vec<&str> = meta["replicas"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: replicas: {meta}", m.name))
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        replicas.sort_unstable();
        let mut others: Vec<&str> = ["n1", "n2", "n3"]
            .into_iter()
            .filter(|n| *n != leader)
            .collect();
        others.sort_unstable();
        assert_eq!(replicas, others, "{}: {meta}", m.name);
    }
    for m in members {
        let deadline = Instant::now() + ELECTION;
        loop {
            let (code, health) = http_get(m.http, "/healthz").await;
            if code == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: /healthz {code} {health}",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The system account's JSZ request carries the same block.
    let sys = sys_client(&n2).await;
    let answer = sys
        .request("$SYS.REQ.SERVER.PING.JSZ", "".into())
        .await
        .expect("a JSZ answer");
    let body: Value = e2e::serde_json::from_slice(&answer.payload).expect("JSON");
    assert_eq!(
        body["data"]["meta_cluster"]["leader"],
        json!(leader),
        "{body}"
    );
    if kind == ServerKind::Hubd {
        let leading = members
            .iter()
            .find(|m| m.name == leader)
            .expect("the leader");
        wait_for_log(&leading.server, "meta leader: ", 1).await;
    }
}

mod three_members_elect_one_meta_leader {
    use e2e::ServerKind::{Hubd, NatsServer};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::three_members_elect_one_meta_leader(Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::three_members_elect_one_meta_leader(NatsServer).await
    }
}

/// The meta leader SIGKILLed (issue 22, "Repeat with the meta leader") while a client
/// connected to it, reconnecting to the others, publishes async windows with msg ids to an R3
/// stream: the two others elect a new leader, every publish is acknowledged and stored exactly
/// once at its acknowledged sequence on both survivors, and a stream is still created (R2,
/// through the new meta leader); the killed member restarted on its store rejoins from its own
/// Raft log (it does not initialize a group again), agrees on the leader, the leader reports
/// it current, and its copy holds the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_meta_leader_is_replaced_and_rejoins() {
    let mut members = cluster(&[ServerKind::Hubd; 3]).await;
    let first = {
        let all: Vec<&Member> = members.iter().collect();
        let first = agreed_leader(&all, None).await;
        let created = create(
            &app_client(&members[0]).await,
            json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3}),
        )
        .await;
        assert_eq!(created["did_create"], true, "{created}");
        stream_leader(&all, "ORDERS", None).await;
        first
    };
    let idx = members
        .iter()
        .position(|m| m.name == first)
        .expect("the leader is a member");
    // A client connected to the meta leader, that reconnects to the others when it dies.
    let mut urls = vec![members[idx].server.url()];
    urls.extend(
        members
            .iter()
            .filter(|m| m.name != first)
            .map(|m| m.server.url()),
    );
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        TestServer::options()
            .user_and_password("g".into(), "g".into())
            .retain_servers_order()
            .connect(urls),
    )
    .await
    .expect("connected within 10 s")
    .expect("connected");
    let js = e2e::async_nats::jetstream::new(client);
    const N: usize = 300;
    let mut killed_yet = false;
    let acked = publish_until_acknowledged(&js, N, |done| {
        if !killed_yet && done >= N / 3 {
            members[idx].server.kill();
            killed_yet = true;
        }
    })
    .await;
    assert!(killed_yet, "the meta leader was killed mid-way");
    let mut killed = members.remove(idx);
    let second = {
        let rest: Vec<&Member> = members.iter().collect();
        agreed_leader(&rest, Some(&first)).await
    };
    for m in &members {
        let copy = copy_of(m, "ORDERS", N as u64).await;
        exactly_once(m, &copy, &acked);
    }
    // Streams are still created, by the new meta leader (R2: one voter is down).
    let deadline = Instant::now() + ELECTION;
    loop {
        let created = create(
            &app_client(&members[0]).await,
            json!({"name": "AFTER", "subjects": ["after.>"], "num_replicas": 2}),
        )
        .await;
        if created["did_create"] == json!(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stream created after the meta leader died: {created}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_ne!(first, second);
    // Restarted on the same store and configuration.
    killed.server = TestServer::with_config(ServerKind::Hubd, killed.config.clone()).await;
    members.push(killed);
    let all: Vec<&Member> = members.iter().collect();
    let deadline = Instant::now() + ELECTION;
    loop {
        let leader = agreed_leader(&all, None).await;
        let at_leader = all
            .iter()
            .find(|m| m.name == leader)
            .expect("the leader is a member");
        let meta = meta_cluster(at_leader).await;
        let rejoined = meta["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == json!(first));
        if rejoined.is_some_and(|r| r["current"] == json!(true) && r["lag"] == json!(0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{first} not current at the leader {leader}: {meta}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restarted = all.iter().find(|m| m.name == first).expect("restarted");
    assert!(
        !restarted.server.log().contains("meta group initialized"),
        "a restarted member rejoins from its log:\n{}",
        restarted.server.log()
    );
    let copy = copy_of(restarted, "ORDERS", N as u64).await;
    exactly_once(restarted, &copy, &acked);
}

/// A member joining a running cluster is added online by the leader (a learner that catches
/// up, then a voter): the leader's `/jsz` shows a group of four with the newcomer current, and
/// the newcomer names the same leader without having initialized a group of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_is_added_online() {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(
            start(
                ServerKind::Hubd,
                &format!("n{}", i + 1),
                ports[i],
                &ports[..3],
            )
            .await,
        );
    }
    {
        let all: Vec<&Member> = members.iter().collect();
        agreed_leader(&all, None).await;
    }
    members.push(start(ServerKind::Hubd, "n4", ports[3], &ports).await);
    let all: Vec<&Member> = members.iter().collect();
    let deadline = Instant::now() + ELECTION;
    loop {
        let leader = agreed_leader(&all, None).await;
        let at_leader = all.iter().find(|m| m.name == leader).expect("a member");
        let meta = meta_cluster(at_leader).await;
        let n4_current = meta["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == json!("n4") && r["current"] == json!(true));
        if meta["cluster_size"] == json!(4) && (leader == "n4" || n4_current) {
            break;
        }
        assert!(Instant::now() < deadline, "n4 not a current voter: {meta}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n4 = all.last().expect("n4");
    assert!(
        !n4.server.log().contains("meta group initialized"),
        "{}",
        n4.server.log()
    );
}

/// A member without JetStream takes no part in the meta group: three members listing each
/// other, one of them (hubd, then nats-server) without JetStream; the two others form a group
/// of two.
async fn members_without_jetstream_are_left_out(third: ServerKind) {
    let ports = [free_port(), free_port(), free_port()];
    let n1 = start(ServerKind::Hubd, "n1", ports[0], &ports).await;
    let n2 = start(ServerKind::Hubd, "n2", ports[1], &ports).await;
    let mut config = member_config("n3", ports[2], &ports, free_port(), &StoreDir::new());
    if let Some(c) = config.as_object_mut() {
        c.remove("jetstream");
    }
    let _n3 = TestServer::with_config(third, config).await;
    let leader = agreed_leader(&[&n1, &n2], None).await;
    let at_leader = [&n1, &n2]
        .into_iter()
        .find(|m| m.name == leader)
        .expect("a member");
    let meta = meta_cluster(at_leader).await;
    assert_eq!(meta["cluster_size"], 2, "{meta}");
}

mod members_without_jetstream_are_left_out {
    use e2e::ServerKind::{Hubd, NatsServer};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::members_without_jetstream_are_left_out(Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::members_without_jetstream_are_left_out(NatsServer).await
    }
}

/// `$JS.API.META.LEADER.STEPDOWN` from the system account, sent to a follower: success, and
/// another member leads within a bounded time.
async fn stepdown_moves_meta_leadership(kind: ServerKind) {
    let members = cluster(&[kind; 3]).await;
    let all: Vec<&Member> = members.iter().collect();
    let first = agreed_leader(&all, None).await;
    let follower = members
        .iter()
        .find(|m| m.name != first)
        .expect("a follower");
    let sys = sys_client(follower).await;
    let answer = sys
        .request("$JS.API.META.LEADER.STEPDOWN", "".into())
        .await
        .expect("a stepdown answer");
    let body: Value = e2e::serde_json::from_slice(&answer.payload).expect("JSON");
    assert_eq!(body["success"], json!(true), "{body}");
    let second = agreed_leader(&all, Some(&first)).await;
    assert_ne!(first, second);
    // Not for other accounts: the request is the system account's (stricter than
    // nats-server 2.9, which answers an application account's request with success).
    if kind != ServerKind::Hubd {
        return;
    }
    let app = follower
        .server
        .client_with(TestServer::options().user_and_password("a".into(), "a".into()))
        .await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        app.request("$JS.API.META.LEADER.STEPDOWN", "".into()),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(ref m)) if e2e::serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["success"] == json!(true))),
        "an application account cannot move the meta leader"
    );
}

mod stepdown_moves_meta_leadership {
    use e2e::ServerKind::{Hubd, NatsServer};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::stepdown_moves_meta_leadership(Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::stepdown_moves_meta_leadership(NatsServer).await
    }
}

/// A nats-server member with JetStream joins two hubd members (a meta group of two): each
/// hubd logs the clear error naming it, keeps its meta group and routing (a message crosses
/// from the nats-server member to a hubd one), and the Raft traffic of the hubd members never
/// reaches nats-server (its routes' `in_msgs` do not move while the hubd members exchange
/// heartbeats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_member_with_jetstream_is_reported() {
    // The hubd members list each other (a meta group of two), the nats-server member all.
    let ports = [free_port(), free_port(), free_port()];
    let members = [
        start(ServerKind::Hubd, "n1", ports[0], &ports[..2]).await,
        start(ServerKind::Hubd, "n2", ports[1], &ports[..2]).await,
        start(ServerKind::NatsServer, "n3", ports[2], &ports).await,
    ];
    let hubs: Vec<&Member> = members[..2].iter().collect();
    agreed_leader(&hubs, None).await;
    for m in &members[..2] {
        wait_for_log(
            &m.server,
            "nats-server member n3 has JetStream; hubd and nats-server cannot share JetStream groups",
            1,
        )
        .await;
    }
    // Routing goes on: n3 → n1.
    let c1 = members[0]
        .server
        .client_with(TestServer::options().user_and_password("a".into(), "a".into()))
        .await;
    let mut sub = c1.subscribe("mixed.>").await.unwrap();
    sync(&c1).await;
    let c3 = members[2]
        .server
        .client_with(TestServer::options().user_and_password("a".into(), "a".into()))
        .await;
    e2e::await_interest(&c3, "mixed.probe", &mut sub).await;
    c3.publish("mixed.hello", "hi".into()).await.unwrap();
    c3.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the message crosses")
        .expect("a message");
    assert_eq!(got.subject.as_str(), "mixed.hello");
    // Replicated streams are refused with the reason (10005), R1 streams are not affected.
    let g1 = app_client(&members[0]).await;
    let r2 = create(
        &g1,
        json!({"name": "MIXED", "subjects": ["mixed.js.>"], "num_replicas": 2}),
    )
    .await;
    assert_eq!(r2["error"]["err_code"], 10005, "{r2}");
    let text = r2["error"]["description"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("no suitable peers for placement") && text.contains("n3"),
        "{r2}"
    );
    let r1 = create(&g1, json!({"name": "MIXED", "subjects": ["mixed.js.>"]})).await;
    assert!(r1["error"].is_null(), "{r1}");
    // The hubd members' Raft traffic (heartbeats every 250 ms) never reaches nats-server: it
    // has no interest in it, so its routes receive nothing while nothing else is published.
    let before = route_in_msgs(&members[2]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = route_in_msgs(&members[2]).await;
    assert_eq!(before, after, "Raft traffic reached the nats-server member");
}

/// The messages a member received over its routes (`/routez` `in_msgs`, summed).
async fn route_in_msgs(m: &Member) -> u64 {
    let (code, routez) = http_get(m.http, "/routez").await;
    assert_eq!(code, 200, "{routez}");
    routez["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["in_msgs"].as_u64())
        .sum()
}

/// Hostile route peers: one announcing a node id that is not its name's is left out of the
/// meta group with a clear log line; one whose `leaf_jsc` is not the expected object too (the
/// field is ignored, the route stays up: nats-server ignores unknown INFO fields). The meta
/// group goes on (same size, a leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_lying_about_its_node_id_is_left_out() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let ports = [free_port(), free_port(), free_port()];
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(start(ServerKind::Hubd, &format!("n{}", i + 1), ports[i], &ports).await);
    }
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let fake = |info: &str| {
        format!(
            "CONNECT {{\"echo\":true,\"verbose\":false,\"headers\":true,\"name\":\"NFAKE\",\"cluster\":\"C\"}}\r\n\
             INFO {{\"server_id\":\"NFAKE\",\"server_name\":\"fake\",\"cluster\":\"C\",\"port\":1,\"headers\":true,{info}}}\r\n"
        )
    };
    // A node id that is not SHA-256 of "fake".
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", ports[0]))
        .await
        .unwrap();
    let mut liar = BufReader::new(stream);
    let mut line = String::new();
    liar.read_line(&mut line).await.unwrap();
    liar.get_mut()
        .write_all(fake("\"leaf_jsc\":{\"node_id\":1}").as_bytes())
        .await
        .unwrap();
    wait_for_log(
        &members[0].server,
        "member fake announces node id 1 which is not its name's; left out of the meta group",
        1,
    )
    .await;
    // Not an object: ignored (logged), the route stays up and the peer out of the group.
    drop(liar);
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", ports[0]))
        .await
        .unwrap();
    let mut bad = BufReader::new(stream);
    let mut line = String::new();
    bad.read_line(&mut line).await.unwrap();
    bad.get_mut()
        .write_all(fake("\"leaf_jsc\":\"garbage\"").as_bytes())
        .await
        .unwrap();
    wait_for_log(
        &members[0].server,
        "malformed leaf_jsc in the route INFO: the peer is left out of the JetStream cluster",
        1,
    )
    .await;
    let mut rest = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_millis(500), bad.read(&mut rest)).await;
    assert!(
        !matches!(closed, Ok(Ok(0))),
        "the route of a peer with a malformed leaf_jsc was closed"
    );
    let leader = agreed_leader(&all, None).await;
    let at_leader = all.iter().find(|m| m.name == leader).expect("a member");
    assert_eq!(meta_cluster(at_leader).await["cluster_size"], 3);
}

/// A cluster of four members started as two halves without routes between them (each
/// half's configuration lists all four route URLs, the other half's unreachable): neither
/// half forms a meta group, so no member has a leader and `/healthz` stays 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_halves_of_a_cluster_do_not_both_elect() {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    // Where the other half would be: nobody listens there.
    let away = [free_port(), free_port(), free_port(), free_port()];
    let half_a = [ports[0], ports[1], away[2], away[3]];
    let half_b = [away[0], away[1], ports[2], ports[3]];
    let n1 = start(ServerKind::Hubd, "n1", ports[0], &half_a).await;
    let n2 = start(ServerKind::Hubd, "n2", ports[1], &half_a).await;
    let n3 = start(ServerKind::Hubd, "n3", ports[2], &half_b).await;
    let n4 = start(ServerKind::Hubd, "n4", ports[3], &half_b).await;
    // The routes within each half are up (interest crosses).
    for (a, b) in [(&n1, &n2), (&n3, &n4)] {
        let ca = sys_client(a).await;
        let mut sub = ca.subscribe("half.>").await.unwrap();
        sync(&ca).await;
        let cb = sys_client(b).await;
        e2e::await_interest(&cb, "half.probe", &mut sub).await;
    }
    // Several election timeouts (1.5-3 s) pass: nobody leads.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for m in [&n1, &n2, &n3, &n4] {
        let meta = meta_cluster(m).await;
        assert!(meta["leader"].is_null(), "{}: {meta}", m.name);
        assert_eq!(meta["cluster_size"], 4, "{}: {meta}", m.name);
        let (code, health) = http_get(m.http, "/healthz").await;
        assert_eq!(code, 503, "{}: {health}", m.name);
        assert!(
            !m.server.log().contains("meta group initialized"),
            "{}:\n{}",
            m.name,
            m.server.log()
        );
    }
}

/// JetStream in a cluster needs `server_name` and `cluster.name`, as nats-server: hubd
/// refuses to start without them, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_member_with_jetstream_needs_names() {
    let store = StoreDir::new();
    let port = free_port();
    for (config, key) in [
        (
            json!({
                "jetstream": { "store_dir": store.path() },
                "cluster": { "name": "C", "listen": format!("127.0.0.1:{port}") },
            }),
            "server_name",
        ),
        (
            json!({
                "server_name": "n1",
                "jetstream": { "store_dir": store.path() },
                "cluster": { "listen": format!("127.0.0.1:{port}") },
            }),
            "cluster.name",
        ),
    ] {
        let dir = StoreDir::new();
        let path = std::path::Path::new(dir.path()).join("server.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = e2e::run_command_to_exit(
            std::process::Command::new(ServerKind::Hubd.binary_path())
                .arg("-c")
                .arg(&path),
        );
        assert!(!out.status.success(), "{key}: started anyway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

/// The names a member's `STREAM.NAMES` lists.
async fn stream_names(client: &e2e::async_nats::Client) -> Vec<String> {
    let names = api(client, "$JS.API.STREAM.NAMES", json!({})).await;
    names["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// Waits (bounded) until `check` holds for what member `m` answers.
async fn until_member<F>(m: &Member, what: &str, mut check: F)
where
    F: FnMut(&Value, &Value, &[String]) -> bool,
{
    let client = app_client(m).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = api(&client, "$JS.API.STREAM.INFO.ORDERS", json!({})).await;
        let list = api(&client, "$JS.API.STREAM.LIST", json!({})).await;
        let names = stream_names(&client).await;
        if check(&info, &list, &names) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what}: info {info}, list {list}, names {names:?}",
            m.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// issue 22 steps 1-2: an R3 stream created on a follower of the meta group (the proposal
/// forwarded to the leader) is assigned on every member: each answers `STREAM.INFO`,
/// `STREAM.NAMES` and `STREAM.LIST` with it (its three peers: the leader and two replicas
/// once its group elected one). Creating it again is answered as existing, another
/// configuration under its name is refused, so are overlapping subjects (R1 or R3), more
/// replicas than members, another cluster in `placement` and more than five replicas. A
/// publish is acknowledged, and purged from a member. Deleted on the leader (a local
/// proposal), it is gone from every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_is_assigned_on_every_member() {
    let members = cluster(&[ServerKind::Hubd; 3]).await;
    let all: Vec<&Member> = members.iter().collect();
    let leader = agreed_leader(&all, None).await;
    let follower = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a follower");
    let at_leader = members
        .iter()
        .find(|m| m.name == leader)
        .expect("the leader");
    let client = app_client(follower).await;
    let config = json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3});
    let created = create(&client, config.clone()).await;
    assert_eq!(
        created["type"], "io.nats.jetstream.api.v1.stream_create_response",
        "{created}"
    );
    assert_eq!(created["did_create"], true, "{created}");
    assert_eq!(created["config"]["num_replicas"], 3, "{created}");
    assert_eq!(created["cluster"]["name"], "C", "{created}");
    let mut peers = group_members(&created);
    peers.sort_unstable();
    assert_eq!(peers, ["n1", "n2", "n3"], "{created}");
    assert_eq!(created["state"]["messages"], 0, "{created}");

    for m in &members {
        until_member(m, "the R3 stream is seen", |info, list, names| {
            info["config"]["num_replicas"] == json!(3)
                && group_members(info).len() == 3
                && list["streams"][0]["config"]["name"] == json!("ORDERS")
                && list["total"] == json!(1)
                && names == ["ORDERS"]
        })
        .await;
    }

    // The same again (another member): answered as existing.
    let other = members
        .iter()
        .find(|m| m.name != follower.name)
        .expect("another member");
    let other_client = app_client(other).await;
    let again = create(&other_client, config.clone()).await;
    assert!(again["error"].is_null(), "{again}");
    assert!(again["did_create"].is_null(), "{again}");
    // Another configuration under its name.
    let changed = create(
        &other_client,
        json!({"name": "ORDERS", "subjects": ["orders.>", "more.>"], "num_replicas": 3}),
    )
    .await;
    assert_eq!(changed["error"]["err_code"], 10058, "{changed}");
    // Overlapping subjects: an R3 stream, an R1 stream.
    for replicas in [3, 1] {
        let overlap = create(
            &other_client,
            json!({"name": "NEWORDERS", "subjects": ["orders.new"], "num_replicas": replicas}),
        )
        .await;
        assert_eq!(
            overlap["error"]["err_code"], 10065,
            "R{replicas}: {overlap}"
        );
    }
    // An R1 stream under its name.
    let r1 = create(
        &other_client,
        json!({"name": "ORDERS", "subjects": ["elsewhere"]}),
    )
    .await;
    assert_eq!(r1["error"]["err_code"], 10058, "{r1}");
    // Placement: more replicas than members, another cluster, more than five.
    for (body, code, text) in [
        (
            json!({"name": "R4", "subjects": ["r4"], "num_replicas": 4}),
            10005,
            "no suitable peers for placement",
        ),
        (
            json!({"name": "FAR", "subjects": ["far"], "num_replicas": 3, "placement": {"cluster": "OTHER"}}),
            10005,
            "no suitable peers for placement",
        ),
        (
            json!({"name": "R6", "subjects": ["r6"], "num_replicas": 6}),
            10052,
            "maximum replicas is 5",
        ),
    ] {
        let refused = create(&other_client, body).await;
        assert_eq!(refused["error"]["err_code"], code, "{refused}");
        assert_eq!(refused["error"]["description"], text, "{refused}");
    }
    // A publish is acknowledged (by the group's leader).
    let ack = acknowledged(follower, "orders.new").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    // A purge goes through the stream's group (from a member not leading it).
    let purge = api(&client, "$JS.API.STREAM.PURGE.ORDERS", json!({})).await;
    assert_eq!(
        (&purge["success"], &purge["purged"]),
        (&json!(true), &json!(1)),
        "{purge}"
    );

    // Deleted at the leader: gone everywhere.
    let leader_client = app_client(at_leader).await;
    let deleted = api(&leader_client, "$JS.API.STREAM.DELETE.ORDERS", json!({})).await;
    assert_eq!(deleted["success"], true, "{deleted}");
    for m in &members {
        until_member(m, "the R3 stream is gone", |info, list, names| {
            info["error"]["err_code"] == json!(10059)
                && list["total"] == json!(0)
                && names.is_empty()
        })
        .await;
    }
    let twice = api(&leader_client, "$JS.API.STREAM.DELETE.ORDERS", json!({})).await;
    assert_eq!(twice["error"]["err_code"], 10059, "{twice}");
}

/// Without a meta leader (two of three members killed) a replicated stream is refused with
/// 10008 ("JetStream system temporarily unavailable", nats-server's words) within a bounded
/// time; so is an R1 stream (the cluster's too, as on nats-server 2.9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_streams_need_a_meta_leader() {
    let mut members = cluster(&[ServerKind::Hubd; 3]).await;
    {
        let all: Vec<&Member> = members.iter().collect();
        agreed_leader(&all, None).await;
    }
    let left = members.remove(0);
    for m in &mut members {
        m.server.kill();
    }
    let client = app_client(&left).await;
    let refused = create(
        &client,
        json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3}),
    )
    .await;
    assert_eq!(refused["error"]["err_code"], 10008, "{refused}");
    assert_eq!(refused["error"]["code"], 503, "{refused}");
    assert_eq!(
        refused["error"]["description"], "JetStream system temporarily unavailable",
        "{refused}"
    );
    let r1 = create(&client, json!({"name": "LOCAL", "subjects": ["local.>"]})).await;
    assert_eq!(r1["error"]["err_code"], 10008, "{r1}");
}

/// Without a JetStream cluster (leafd, a single hubd) `num_replicas` > 1 is refused as a
/// single nats-server refuses it (10074).
async fn replicas_are_refused_without_a_cluster(kind: ServerKind) {
    let store = StoreDir::new();
    let server =
        TestServer::with_config(kind, json!({ "jetstream": { "store_dir": store.path() } })).await;
    let client = server.client().await;
    let refused = create(
        &client,
        json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3}),
    )
    .await;
    assert_eq!(refused["error"]["err_code"], 10074, "{refused}");
}

mod replicas_are_refused_without_a_cluster {
    use e2e::ServerKind::{Hubd, Leafd, NatsServer};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leafd() {
        super::replicas_are_refused_without_a_cluster(Leafd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::replicas_are_refused_without_a_cluster(Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::replicas_are_refused_without_a_cluster(NatsServer).await
    }
}

/// The streams a member's engine holds (`/jsz` `streams`: its own R1 streams and its copies of
/// replicated streams).
async fn engine_streams(m: &Member) -> u64 {
    let (code, jsz) = http_get(m.http, "/jsz").await;
    assert_eq!(code, 200, "{}: /jsz: {jsz}", m.name);
    jsz["streams"].as_u64().unwrap_or(u64::MAX)
}

/// Waits (bounded) until member `m`'s engine holds `n` streams.
async fn until_engine_streams(m: &Member, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held = engine_streams(m).await;
        if held == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {held} streams in its engine, not {n}",
            m.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The members of a replicated stream's group as its info shows them: the leader (if any)
/// and the replicas.
fn group_members(info: &Value) -> Vec<String> {
    let cluster = &info["cluster"];
    cluster["leader"]
        .as_str()
        .into_iter()
        .chain(
            cluster["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["name"].as_str()),
        )
        .map(str::to_owned)
        .collect()
}

/// A publish to `subject` through member `m` acknowledged (the PubAck), retried (bounded)
/// while the stream's group has no leader yet.
async fn acknowledged(m: &Member, subject: &str) -> Value {
    let client = app_client(m).await;
    let deadline = Instant::now() + ELECTION;
    loop {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(subject.to_owned(), "x".into()),
        )
        .await;
        let last = match answer {
            Ok(Ok(msg)) => {
                let ack: Value = e2e::serde_json::from_slice(&msg.payload).expect("a JSON PubAck");
                if ack["error"].is_null() {
                    return ack;
                }
                ack.to_string()
            }
            other => format!("{other:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "{}: no PubAck for {subject}: {last}",
            m.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// issue 22 step 3: each peer of an R2 stream holds a copy in its engine (the third member
/// none); once the group has a leader, reads are answered by it on a peer and on the member
/// without a copy alike (`MSG.GET`: no message); a publish through any member is
/// acknowledged, before and after a restart of a peer; a purge goes through the group; a
/// durable consumer is created as a replicated one (its group on the stream's peers). Deleted
/// from the member without a copy, the copies go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_has_a_copy_on_each_peer() {
    let mut members = cluster(&[ServerKind::Hubd; 3]).await;
    {
        let all: Vec<&Member> = members.iter().collect();
        agreed_leader(&all, None).await;
    }
    let client = app_client(&members[0]).await;
    let created = create(
        &client,
        json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 2}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    let peers: Vec<String> = created["cluster"]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(peers.len(), 2, "{created}");
    for m in &members {
        until_engine_streams(m, u64::from(peers.contains(&m.name))).await;
    }
    let peer = members
        .iter()
        .position(|m| peers.contains(&m.name))
        .expect("a peer");
    let other = members
        .iter()
        .find(|m| !peers.contains(&m.name))
        .expect("a member without a copy");
    let at_peer = app_client(&members[peer]).await;
    let info = api(&at_peer, "$JS.API.STREAM.INFO.ORDERS", json!({})).await;
    assert_eq!(info["config"]["num_replicas"], 2, "{info}");
    assert_eq!(info["cluster"]["name"], "C", "{info}");
    assert_eq!(
        info["created"], created["created"],
        "the assignment's creation time"
    );
    // Reads and purges go through the group: once it has a leader (10008 before).
    let holders: Vec<&Member> = members.iter().filter(|m| peers.contains(&m.name)).collect();
    stream_leader(&holders, "ORDERS", None).await;
    let get = api(&at_peer, "$JS.API.STREAM.MSG.GET.ORDERS", json!({"seq": 1})).await;
    assert_eq!(
        get["error"]["err_code"], 10037,
        "answered by the group's leader: {get}"
    );
    let purge = api(&at_peer, "$JS.API.STREAM.PURGE.ORDERS", json!({})).await;
    assert_eq!(purge["success"], true, "through the group: {purge}");
    let consumer = api(
        &at_peer,
        "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.D",
        json!({"stream_name": "ORDERS", "config": {"durable_name": "D", "ack_policy": "explicit"}}),
    )
    .await;
    // A replicated durable consumer: assigned to the stream's peers (its group).
    assert_eq!(consumer["name"], "D", "{consumer}");
    let at_other = app_client(other).await;
    let get = api(
        &at_other,
        "$JS.API.STREAM.MSG.GET.ORDERS",
        json!({"seq": 1}),
    )
    .await;
    assert_eq!(
        get["error"]["err_code"], 10037,
        "no copy here, answered by the group's leader: {get}"
    );
    // A publish through any member is acknowledged by the group's leader.
    for (i, m) in members.iter().enumerate() {
        let ack = acknowledged(m, "orders.new").await;
        assert_eq!(ack["seq"], i + 1, "{}: {ack}", m.name);
    }

    // A peer restarted keeps its copy and its group.
    members[peer].server.kill();
    members[peer].server =
        TestServer::with_config(ServerKind::Hubd, members[peer].config.clone()).await;
    until_engine_streams(&members[peer], 1).await;
    {
        let all: Vec<&Member> = members.iter().collect();
        agreed_leader(&all, None).await;
    }
    let ack = acknowledged(&members[peer], "orders.new").await;
    assert_eq!(ack["seq"], 4, "{ack}");

    // Deleted from the member without a copy: the copies go.
    let other = members
        .iter()
        .find(|m| !peers.contains(&m.name))
        .expect("a member without a copy");
    let at_other = app_client(other).await;
    let deleted = api(&at_other, "$JS.API.STREAM.DELETE.ORDERS", json!({})).await;
    assert_eq!(deleted["success"], true, "{deleted}");
    for m in &members {
        until_engine_streams(m, 0).await;
        until_member(m, "the R2 stream is gone", |info, _, names| {
            info["error"]["err_code"] == json!(10059) && names.is_empty()
        })
        .await;
    }
}

/// Waits (bounded) until some member's `STREAM.INFO` of `stream` names a group leader other
/// than `not`; returns it.
async fn stream_leader(members: &[&Member], stream: &str, not: Option<&str>) -> String {
    group_leader(members, &format!("$JS.API.STREAM.INFO.{stream}"), not).await
}

/// Waits (bounded) until some member's answer to the info request `subject` names a group
/// leader (`cluster.leader`) other than `not`; returns it.
async fn group_leader(members: &[&Member], subject: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + ELECTION;
    loop {
        for m in members {
            let client = app_client(m).await;
            let info = api(&client, subject, json!({})).await;
            if let Some(leader) = info["cluster"]["leader"].as_str() {
                if Some(leader) != not {
                    return leader.to_owned();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{subject}: no group leader (other than {not:?}) within {ELECTION:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages of `stream` in member `m`'s copy (its own `STREAM.INFO`, and an ephemeral
/// consumer on its copy: `MSG.GET` is answered by the group's leader), once it holds `count`
/// (bounded wait): (sequence, `Nats-Msg-Id`, payload) in order.
async fn copy_of(m: &Member, stream: &str, count: u64) -> Vec<(u64, String, String)> {
    copy_holds(m, stream, count).await;
    let client = app_client(m).await;
    let msgs = e2e::copy::messages(&client, stream, count, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("{}: its copy's {count} messages not read", m.name));
    msgs.into_iter()
        .map(|c| {
            let payload = String::from_utf8_lossy(&c.payload).into_owned();
            (c.seq, c.msg_id, payload)
        })
        .collect()
}

/// Waits (bounded) until member `m`'s own copy of `stream` holds `count` messages, by its own
/// `STREAM.INFO` (for interest and workqueue streams, whose copies cannot be read through an
/// ephemeral consumer: it would be refused, and would count as interest).
async fn copy_holds(m: &Member, stream: &str, count: u64) {
    let client = app_client(m).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let info_subject = format!("$JS.API.STREAM.INFO.{stream}");
    loop {
        let info = api(&client, &info_subject, json!({})).await;
        if info["state"]["messages"] == json!(count) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: its copy does not hold {count} messages: {}",
            m.name,
            info["state"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three hubd members with a meta leader and an R3 stream `name` on `subjects` (created on the
/// first member), once its group has a leader: the members and the leader's name.
async fn three_members_with_an_r3_stream(name: &str, subjects: &str) -> (Vec<Member>, String) {
    three_members_with(json!({"name": name, "subjects": [subjects], "num_replicas": 3})).await
}

/// Three hubd members with a meta leader and the replicated stream `config` (created on the
/// first member), once its group has a leader: the members and the leader's name.
async fn three_members_with(config: Value) -> (Vec<Member>, String) {
    let members = cluster(&[ServerKind::Hubd; 3]).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let name = config["name"].as_str().unwrap_or_default().to_owned();
    let created = create(&app_client(&members[0]).await, config).await;
    assert_eq!(created["did_create"], true, "{created}");
    let leader = stream_leader(&all, &name, None).await;
    (members, leader)
}

/// The positions in `members` of member `leader` and of another member.
fn leader_and_other(members: &[Member], leader: &str) -> (usize, usize) {
    let at = members
        .iter()
        .position(|m| m.name == leader)
        .expect("the leader");
    let other = members
        .iter()
        .position(|m| m.name != leader)
        .expect("another member");
    (at, other)
}

/// A JetStream context on member `m` (the global account's user).
async fn jetstream_on(m: &Member) -> e2e::async_nats::jetstream::Context {
    e2e::async_nats::jetstream::new(app_client(m).await)
}

/// A publish with `Nats-Msg-Id` `id`.
fn with_id(id: &str) -> e2e::async_nats::HeaderMap {
    let mut headers = e2e::async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers
}

/// issue 22 step 4 (a): an R3 stream; 1,000 async publishes with `Nats-Msg-Id` from a client
/// on a member that does not lead the stream's group (each crosses a route to the leader by
/// interest): every one acknowledged, sequences 1-1000 in publish order, and every member's
/// copy holds exactly those messages in that order. A publish again with a known id is a
/// duplicate. `STREAM.INFO` on the leader shows the two others as current replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_acknowledges_publishes_stored_alike_on_every_member() {
    let members = cluster(&[ServerKind::Hubd; 3]).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let created = create(
        &app_client(&members[0]).await,
        json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    let leader = stream_leader(&all, "ORDERS", None).await;
    let follower = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    let js = jetstream_on(follower).await;
    const N: usize = 1000;
    let mut acks = Vec::new();
    for i in 0..N {
        let ack = tokio::time::timeout(
            Duration::from_secs(10),
            js.publish_with_headers(
                format!("orders.{}", i % 7),
                with_id(&format!("m{i}")),
                format!("p{i}").into(),
            ),
        )
        .await
        .expect("published within 10 s")
        .expect("published");
        acks.push(ack);
    }
    for (i, ack) in acks.into_iter().enumerate() {
        let ack = tokio::time::timeout(Duration::from_secs(30), ack)
            .await
            .unwrap_or_else(|_| panic!("publish {i}: no PubAck within 30 s"))
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
        assert_eq!(ack.stream, "ORDERS");
        assert_eq!(ack.sequence, i as u64 + 1, "publish {i}");
        assert!(!ack.duplicate, "publish {i}");
    }
    for m in &members {
        let copy = copy_of(m, "ORDERS", N as u64).await;
        for (i, (seq, id, payload)) in copy.iter().enumerate() {
            assert_eq!(
                (*seq, id.as_str(), payload.as_str()),
                (
                    i as u64 + 1,
                    format!("m{i}").as_str(),
                    format!("p{i}").as_str()
                ),
                "{}: message {i}",
                m.name
            );
        }
    }
    let again = js
        .publish_with_headers("orders.0", with_id("m5"), "again".into())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    assert!(again.duplicate);
    assert_eq!(again.sequence, 6);
    let at_leader = members
        .iter()
        .find(|m| m.name == leader)
        .expect("the leader");
    let info = api(
        &app_client(at_leader).await,
        "$JS.API.STREAM.INFO.ORDERS",
        json!({}),
    )
    .await;
    assert_eq!(info["cluster"]["leader"], leader.as_str(), "{info}");
    assert_eq!(info["state"]["messages"], N, "{info}");
    let replicas = info["cluster"]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(replicas.len(), 2, "{info}");
    for r in &replicas {
        assert_ne!(r["name"], leader.as_str(), "{info}");
    }
}

/// issue 22 step 4 (b): the stream leader SIGKILLed while a client (on a surviving member)
/// publishes with msg ids and retries what was not acknowledged: a new leader is elected,
/// every publish is eventually acknowledged, and the surviving members' copies hold every
/// message exactly once, in the order of their sequences; the killed member restarted
/// catches up from the leader's log to the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stream_leader_loses_no_acknowledged_publish() {
    let (mut members, leader) = three_members_with_an_r3_stream("ORDERS", "orders.>").await;
    let (killed, client_member) = leader_and_other(&members, &leader);
    let js = jetstream_on(&members[client_member]).await;
    const N: usize = 300;
    let mut killed_yet = false;
    let acked = publish_until_acknowledged(&js, N, |done| {
        // Killed with a window in flight: some of it may be stored without its PubAck
        // reaching the client, and is retried.
        if !killed_yet && done >= N / 3 {
            members[killed].server.kill();
            killed_yet = true;
        }
    })
    .await;
    assert!(killed_yet, "the leader was killed mid-way");
    let survivors = survivors(&members, killed);
    let new_leader = stream_leader(&survivors, "ORDERS", Some(&leader)).await;
    assert_ne!(new_leader, leader);
    for m in &survivors {
        let copy = copy_of(m, "ORDERS", N as u64).await;
        exactly_once(m, &copy, &acked);
    }
    // The killed member restarted catches up.
    members[killed].server =
        TestServer::with_config(ServerKind::Hubd, members[killed].config.clone()).await;
    let copy = copy_of(&members[killed], "ORDERS", N as u64).await;
    exactly_once(&members[killed], &copy, &acked);
}

/// Publishes `orders.<i>` with `Nats-Msg-Id` `m<i>` and payload `p<i>` for every `i < n`
/// through `js`, in async windows of 20, retrying what was not acknowledged (bounded: 120 s),
/// calling `between` with the number acknowledged so far after each window is sent and
/// before its PubAcks are awaited: the sequence each publish was acknowledged with.
async fn publish_until_acknowledged(
    js: &e2e::async_nats::jetstream::Context,
    n: usize,
    mut between: impl FnMut(usize),
) -> Vec<u64> {
    const WINDOW: usize = 20;
    let mut acked: Vec<Option<u64>> = vec![None; n];
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "not every publish acknowledged within 120 s: {} left",
            acked.iter().filter(|a| a.is_none()).count()
        );
        // The next window of publishes not acknowledged yet (retries first).
        let batch: Vec<usize> = (0..n)
            .filter(|i| acked[*i].is_none())
            .take(WINDOW)
            .collect();
        let mut pending = Vec::new();
        for i in &batch {
            let sent = js
                .publish_with_headers(
                    format!("orders.{i}"),
                    with_id(&format!("m{i}")),
                    format!("p{i}").into(),
                )
                .await;
            if let Ok(ack) = sent {
                pending.push((*i, ack));
            }
        }
        between(acked.iter().filter(|a| a.is_some()).count());
        // Awaited together (a PubAck future's timeout starts when it is polled).
        let outcomes = futures::future::join_all(pending.into_iter().map(|(i, ack)| async move {
            (i, tokio::time::timeout(Duration::from_secs(10), ack).await)
        }))
        .await;
        let mut failed = false;
        for (i, outcome) in outcomes {
            match outcome {
                Ok(Ok(ack)) => acked[i] = Some(ack.sequence),
                _ => failed = true,
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    acked.into_iter().flatten().collect()
}

/// Exactly once: `copy` (of member `m`) holds each of the `acked.len()` ids once, with its
/// payload, at the sequence its PubAck gave.
fn exactly_once(m: &Member, copy: &[(u64, String, String)], acked: &[u64]) {
    let mut ids: Vec<&str> = copy.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), acked.len(), "{}: every id once", m.name);
    for (seq, id, payload) in copy {
        let i: usize = id
            .strip_prefix('m')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: unexpected id {id}", m.name));
        assert_eq!(payload, &format!("p{i}"), "{}", m.name);
        assert_eq!(
            acked.get(i),
            Some(seq),
            "{}: {id} at its acknowledged sequence",
            m.name
        );
    }
}

/// issue 22 step 4 (c): with two of three members stopped, the member left (the stream's
/// leader, which still takes the publishes) cannot acknowledge a publish to an R3 stream (no
/// quorum): it is refused (10008) or times out, never a PubAck with a sequence, and nothing
/// more is stored. Nor does it answer reads from its copy (it cannot confirm that it still
/// leads): `MSG.GET` of a message it holds answers 10008, `DIRECT.GET` a 503 status (no
/// responders), where both answered that message before the two others stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_member_acknowledges_nothing() {
    let mut members = cluster(&[ServerKind::Hubd; 3]).await;
    {
        let all: Vec<&Member> = members.iter().collect();
        agreed_leader(&all, None).await;
        let created = create(
            &app_client(&members[0]).await,
            json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3, "allow_direct": true}),
        )
        .await;
        assert_eq!(created["did_create"], true, "{created}");
    }
    let ack = acknowledged(&members[0], "orders.a").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    // The stream's leader stays: it still takes the publishes, but cannot commit them.
    let leader = {
        let all: Vec<&Member> = members.iter().collect();
        stream_leader(&all, "ORDERS", None).await
    };
    let stays = members
        .iter()
        .position(|m| m.name == leader)
        .expect("the leader");
    copy_of(&members[stays], "ORDERS", 1).await;
    let left = members.remove(stays);
    let client = app_client(&left).await;
    let get = "$JS.API.STREAM.MSG.GET.ORDERS";
    let read = api(&client, get, json!({"seq": 1})).await;
    assert_eq!(read["message"]["seq"], 1, "{read}");
    let direct = "$JS.API.DIRECT.GET.ORDERS";
    assert_eq!(
        direct_get(&client, direct, r#"{"seq":1}"#).await,
        Ok((1, "x".to_owned()))
    );
    for m in &mut members {
        m.server.kill();
    }
    let mut refused = 0;
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            Duration::from_secs(6),
            client.request("orders.b", "x".into()),
        )
        .await;
        if let Ok(Ok(msg)) = answer {
            let ack: Value = e2e::serde_json::from_slice(&msg.payload).expect("a JSON PubAck");
            assert!(ack["seq"].is_null(), "a minority acknowledged: {ack}");
            assert_eq!(ack["error"]["err_code"], 10008, "{ack}");
            refused += 1;
        }
    }
    // Not silence: the leader that cannot commit says so.
    assert!(
        refused > 0,
        "no error PubAck from the leader without a quorum"
    );
    let info = api(&client, "$JS.API.STREAM.INFO.ORDERS", json!({})).await;
    assert_eq!(info["state"]["messages"], 1, "{info}");
    // No read from a copy that cannot be confirmed as the leader's.
    let read = api(&client, get, json!({"seq": 1})).await;
    assert_eq!(read["error"]["err_code"], 10008, "a minority read: {read}");
    let direct = direct_get(&client, direct, r#"{"seq":1}"#).await;
    assert!(direct.is_err(), "a minority direct get: {direct:?}");
}

/// Three hubd members, once they agree on a meta leader.
async fn three_members_with_a_meta_leader() -> Vec<Member> {
    let members = cluster(&[ServerKind::Hubd; 3]).await;
    agreed_leader(&members.iter().collect::<Vec<_>>(), None).await;
    members
}

/// Retries `get` of `key` in `kv` (bounded) until it reads `want` (a `get` is answered by the
/// group's leader, so once the write was acknowledged the first try reads it; retried for a
/// write the test does not wait for).
async fn until_kv(kv: &e2e::async_nats::jetstream::kv::Store, key: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout(Duration::from_secs(5), kv.get(key))
            .await
            .unwrap_or_else(|_| panic!("get {key}: no answer within 5 s"))
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        let got = got.map(|v| String::from_utf8_lossy(&v).into_owned());
        if got.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: still {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// issue 22, KV on R3: a bucket created with `num_replicas: 3` through async-nats; from a
/// client on a member that does not lead the bucket's group (its `$KV.` puts cross a route to
/// the leader by interest): put, get, history (two revisions), keys, delete, purge (a rollup,
/// applied on every copy); a watch on that
/// member (an ephemeral consumer on its copy, woken as the group applies) sees a put made
/// from a client on another member. A durable consumer without `num_replicas: 1` is a
/// replicated one (its group), one with it lives on the member's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_kv_bucket_serves_puts_gets_history_keys_and_watches_from_every_member() {
    use e2e::async_nats::jetstream::kv;
    let members = three_members_with_a_meta_leader().await;
    let all: Vec<&Member> = members.iter().collect();
    let created = tokio::time::timeout(
        Duration::from_secs(10),
        jetstream_on(&members[0])
            .await
            .create_key_value(kv::Config {
                bucket: "CFG".into(),
                history: 5,
                num_replicas: 3,
                ..Default::default()
            }),
    )
    .await
    .expect("bucket created within 10 s")
    .expect("bucket created");
    drop(created);
    let leader = stream_leader(&all, "KV_CFG", None).await;
    let (follower, other) = {
        let mut not_leading = members.iter().filter(|m| m.name != leader);
        (
            not_leading.next().expect("a member not leading"),
            members
                .iter()
                .find(|m| m.name == leader)
                .expect("the leader"),
        )
    };
    let js = jetstream_on(follower).await;
    let kv = js.get_key_value("CFG").await.expect("bucket opened");
    let put = |key: &'static str, value: &'static str| {
        let kv = kv.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), kv.put(key, value.into()))
                .await
                .unwrap_or_else(|_| panic!("put {key}: no PubAck within 10 s"))
                .unwrap_or_else(|e| panic!("put {key}: {e}"))
        }
    };
    assert_eq!(put("a", "1").await, 1);
    assert_eq!(put("a", "2").await, 2);
    assert_eq!(put("b", "x").await, 3);
    until_kv(&kv, "a", Some("2")).await;
    until_kv(&kv, "b", Some("x")).await;
    // `history` is a consumer on this member's copy (which may be a heartbeat behind the
    // leader that answered the gets): waited for (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history: Vec<(u64, String)> = tokio::time::timeout(Duration::from_secs(10), async {
            kv.history("a")
                .await
                .expect("history")
                .map(|e| {
                    let e = e.expect("entry");
                    (e.revision, String::from_utf8_lossy(&e.value).into_owned())
                })
                .collect()
                .await
        })
        .await
        .expect("history within 10 s");
        if history == [(1, "1".to_owned()), (2, "2".to_owned())] {
            break;
        }
        assert!(Instant::now() < deadline, "history of a: {history:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = |kv: kv::Store| async move {
        let mut keys: Vec<String> = tokio::time::timeout(Duration::from_secs(10), async {
            kv.keys()
                .await
                .expect("keys")
                .map(|k| k.expect("key"))
                .collect()
                .await
        })
        .await
        .expect("keys within 10 s");
        keys.sort();
        keys
    };
    // `keys` is a consumer on this member's copy, which may be a heartbeat behind the
    // leader that answered the gets: waited for (bounded).
    let until_keys = |want: &'static [&'static str]| {
        let kv = kv.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = keys(kv.clone()).await;
                if got == want {
                    return;
                }
                assert!(Instant::now() < deadline, "keys {got:?}, not {want:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until_keys(&["a", "b"]).await;

    // A watch here sees a put made on another member.
    let mut watch = kv.watch("a").await.expect("watch");
    let elsewhere = jetstream_on(other)
        .await
        .get_key_value("CFG")
        .await
        .expect("bucket opened on another member");
    let rev = tokio::time::timeout(Duration::from_secs(10), elsewhere.put("a", "3".into()))
        .await
        .expect("PubAck within 10 s")
        .expect("put on another member");
    assert_eq!(rev, 4);
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch sees the put within 10 s")
        .expect("the watch is open")
        .expect("an entry");
    assert_eq!(
        (seen.key.as_str(), seen.revision, &seen.value[..]),
        ("a", 4, &b"3"[..])
    );

    tokio::time::timeout(Duration::from_secs(10), kv.delete("b"))
        .await
        .expect("delete within 10 s")
        .expect("delete");
    until_kv(&kv, "b", None).await;
    until_keys(&["a"]).await;

    // A purge is a rollup: every copy keeps only its marker of the key.
    tokio::time::timeout(Duration::from_secs(10), kv.purge("a"))
        .await
        .expect("purge within 10 s")
        .expect("purge");
    until_kv(&kv, "a", None).await;
    for m in &members {
        let there = jetstream_on(m)
            .await
            .get_key_value("CFG")
            .await
            .expect("bucket opened");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let history: Vec<kv::Operation> =
                tokio::time::timeout(Duration::from_secs(10), async {
                    there
                        .history("a")
                        .await
                        .expect("history")
                        .map(|e| e.expect("entry").operation)
                        .collect()
                        .await
                })
                .await
                .expect("history within 10 s");
            if history == [kv::Operation::Purge] {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {history:?}", m.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Durable consumers: replicated ones have a group (see
    // `a_killed_consumer_leader_redelivers_no_double_acked_message`); R1 ones live here.
    let client = app_client(follower).await;
    let replicated = api(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.KV_CFG.d",
        json!({"stream_name": "KV_CFG", "config": {"durable_name": "d", "ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(replicated["name"], "d", "{replicated}");
    assert!(replicated["cluster"].is_object(), "{replicated}");
    let r1 = api(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.KV_CFG.r1",
        json!({"stream_name": "KV_CFG", "config": {"durable_name": "r1", "ack_policy": "explicit", "num_replicas": 1}}),
    )
    .await;
    assert_eq!(r1["name"], "r1", "{r1}");
    // b's put and delete, a's purge marker.
    assert_eq!(r1["num_pending"], 3, "{r1}");
}

/// issue 22, object store on R3: a bucket created with `num_replicas: 3`; an object of
/// several chunks (> 128 KiB) put from a client on one member is read back byte for byte
/// from a client on another (the chunks are read by an ephemeral consumer on that member's
/// copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_object_store_returns_a_multi_chunk_object_on_another_member() {
    use e2e::async_nats::jetstream::object_store;
    use tokio::io::AsyncReadExt;
    let members = three_members_with_a_meta_leader().await;
    let all: Vec<&Member> = members.iter().collect();
    let store = tokio::time::timeout(
        Duration::from_secs(10),
        jetstream_on(&members[1])
            .await
            .create_object_store(object_store::Config {
                bucket: "FILES".into(),
                num_replicas: 3,
                ..Default::default()
            }),
    )
    .await
    .expect("bucket created within 10 s")
    .expect("bucket created");
    stream_leader(&all, "OBJ_FILES", None).await;
    let big: Vec<u8> = (0..(300 << 10) + 123)
        .map(|i: usize| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect();
    let mut reader = big.as_slice();
    let info = tokio::time::timeout(
        Duration::from_secs(30),
        store.put("firmware.bin", &mut reader),
    )
    .await
    .expect("put within 30 s")
    .expect("put");
    assert_eq!(info.size, big.len());
    assert!(info.chunks > 1, "{info:?}");
    for m in [&members[0], &members[2]] {
        let there = jetstream_on(m)
            .await
            .get_object_store("FILES")
            .await
            .expect("bucket opened");
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = loop {
            // The copy there may be a heartbeat behind: retried until the object is there.
            let got = tokio::time::timeout(Duration::from_secs(10), async {
                let mut object = there.get("firmware.bin").await?;
                let mut out = Vec::new();
                object.read_to_end(&mut out).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
            })
            .await
            .expect("get within 10 s");
            match got {
                Ok(out) if out.len() == big.len() => break out,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "{}: {:?}",
                        m.name,
                        other.map(|o| o.len())
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert!(out == big, "{}: the object read back differs", m.name);
    }
}

/// A publish with headers to `subject` through `client`: its PubAck, or why none came
/// (bounded wait).
async fn try_publish_expecting(
    client: &e2e::async_nats::Client,
    subject: &str,
    headers: &[(&str, &str)],
) -> Result<Value, String> {
    let mut map = e2e::async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, *v);
    }
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_headers(subject.to_owned(), map, "x".into()),
    )
    .await
    .map_err(|_| "no PubAck within 5 s".to_owned())?
    .map_err(|e| e.to_string())?;
    e2e::serde_json::from_slice(&msg.payload).map_err(|e| e.to_string())
}

/// [`try_publish_expecting`] that must be answered.
async fn publish_expecting(
    client: &e2e::async_nats::Client,
    subject: &str,
    headers: &[(&str, &str)],
) -> Value {
    try_publish_expecting(client, subject, headers)
        .await
        .expect("a PubAck")
}

/// issue 22 step 5: KV's compare-and-set on an R3 bucket (`create`, `update`: the
/// `Nats-Expected-Last-Subject-Sequence` header decided by the group's state machine), and the
/// other `Nats-Expected-*` headers on raw publishes, answered with a single server's error
/// PubAcks; a refused publish is stored on no copy. The clients are on the group's leader
/// (from other members: `an_r3_kv_bucket_serves_puts_gets_history_keys_and_watches_from_every_member`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_on_a_replicated_stream_are_decided_alike() {
    use e2e::async_nats::jetstream::kv;
    let members = cluster(&[ServerKind::Hubd; 3]).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    // Created through a member that may not lead the group (the API is answered anywhere).
    let js = jetstream_on(&members[0]).await;
    let _created = tokio::time::timeout(
        Duration::from_secs(30),
        js.create_key_value(kv::Config {
            bucket: "B".into(),
            history: 5,
            num_replicas: 3,
            ..Default::default()
        }),
    )
    .await
    .expect("bucket created within 30 s")
    .expect("bucket created");
    let leader = stream_leader(&all, "KV_B", None).await;
    let leader = members
        .iter()
        .find(|m| m.name == leader)
        .expect("the leader is a member");
    // Ready when an expectation that cannot hold is answered (the group's leader captures):
    // nothing is stored.
    {
        let client = app_client(leader).await;
        let deadline = Instant::now() + ELECTION;
        loop {
            let headers = [("Nats-Expected-Last-Sequence", "999")];
            let last = match try_publish_expecting(&client, "$KV.B.x", &headers).await {
                Ok(ack) if ack["error"]["err_code"] == json!(10071) => break,
                other => format!("{other:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "{}: not ready: {last}",
                leader.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let js = jetstream_on(leader).await;
    let bucket = js
        .get_key_value("B")
        .await
        .expect("bucket opened on the leader");
    let r1 = bucket.create("k", "v1".into()).await.expect("create");
    assert_eq!(r1, 1);
    let err = bucket.create("k", "again".into()).await.unwrap_err();
    assert!(
        err.to_string().contains("10071") || err.kind() == kv::CreateErrorKind::AlreadyExists,
        "{err}"
    );
    let r2 = bucket.update("k", "v2".into(), r1).await.expect("update");
    assert_eq!(r2, 2);
    let err = bucket.update("k", "stale".into(), r1).await.unwrap_err();
    assert_eq!(err.kind(), kv::UpdateErrorKind::WrongLastRevision, "{err}");
    assert!(err.to_string().contains("10071"), "{err}");

    // Raw publishes.
    {
        let m = leader;
        let client = app_client(m).await;
        let ack = publish_expecting(&client, "$KV.B.x", &[("Nats-Expected-Stream", "OTHER")]).await;
        assert_eq!(ack["error"]["err_code"], 10060, "{}: {ack}", m.name);
        let ack =
            publish_expecting(&client, "$KV.B.x", &[("Nats-Expected-Last-Sequence", "1")]).await;
        assert_eq!(ack["error"]["err_code"], 10071, "{}: {ack}", m.name);
        let ack =
            publish_expecting(&client, "$KV.B.x", &[("Nats-Expected-Last-Msg-Id", "nope")]).await;
        assert_eq!(ack["error"]["err_code"], 10070, "{}: {ack}", m.name);
    }
    let client = app_client(leader).await;
    let ack = publish_expecting(
        &client,
        "$KV.B.y",
        &[("Nats-Expected-Last-Sequence", "2"), ("Nats-Msg-Id", "m3")],
    )
    .await;
    assert_eq!(ack["seq"], 3, "{ack}");
    let ack = publish_expecting(
        &client,
        "$KV.B.z",
        &[
            ("Nats-Expected-Last-Msg-Id", "m3"),
            ("Nats-Expected-Stream", "KV_B"),
        ],
    )
    .await;
    assert_eq!(ack["seq"], 4, "{ack}");
    // Every copy holds the same four messages, none of the refused ones.
    let first = copy_of(&members[0], "KV_B", 4).await;
    let payloads: Vec<&str> = first.iter().map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(payloads, ["v1", "v2", "x", "x"]);
    for m in &members[1..] {
        assert_eq!(copy_of(m, "KV_B", 4).await, first, "{}", m.name);
    }
}

/// issue 22 step 5: `STREAM.LEADER.STEPDOWN` of an R3 stream, asked through a member that does
/// not lead its group, answers `{"success": true}`; another member leads, and publishes
/// (with `Nats-Msg-Id`, retried until acknowledged) before and after are stored exactly once,
/// alike on every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_leader_steps_down_and_publishes_continue_once() {
    let members = cluster(&[ServerKind::Hubd; 3]).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let client = app_client(&members[0]).await;
    let created = create(
        &client,
        json!({"name": "SD", "subjects": ["sd.>"], "num_replicas": 3}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    let leader = stream_leader(&all, "SD", None).await;
    let other = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member that does not lead");
    let js = jetstream_on(other).await;
    const N: usize = 30;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seqs = Vec::new();
    for i in 0..N {
        if i == N / 2 {
            let at_other = app_client(other).await;
            let answer = api(&at_other, "$JS.API.STREAM.LEADER.STEPDOWN.SD", json!({})).await;
            assert_eq!(answer["success"], true, "{answer}");
            let new_leader = stream_leader(&all, "SD", Some(&leader)).await;
            assert_ne!(new_leader, leader);
        }
        let seq = loop {
            assert!(
                Instant::now() < deadline,
                "publish {i} not acknowledged in 120 s"
            );
            let sent = js
                .publish_with_headers(
                    format!("sd.{i}"),
                    with_id(&format!("m{i}")),
                    format!("p{i}").into(),
                )
                .await;
            if let Ok(ack) = sent {
                if let Ok(Ok(ack)) = tokio::time::timeout(Duration::from_secs(10), ack).await {
                    break ack.sequence;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        seqs.push(seq);
    }
    let expected: Vec<u64> = (1..=N as u64).collect();
    assert_eq!(seqs, expected, "each publish once, in order");
    let first = copy_of(&members[0], "SD", N as u64).await;
    let ids: Vec<String> = first.iter().map(|(_, id, _)| id.clone()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, want);
    for m in &members[1..] {
        assert_eq!(copy_of(m, "SD", N as u64).await, first, "{}", m.name);
    }
    // No such stream: 10059.
    let answer = api(&client, "$JS.API.STREAM.LEADER.STEPDOWN.NONE", json!({})).await;
    assert_eq!(answer["error"]["err_code"], 10059, "{answer}");
}

/// Publishes `n` messages to `SNAP` on `js` one at a time (each its own Raft log entry),
/// with ids `m<i>` from `from`, each acknowledged at sequence `i + 1`.
async fn publish_one_by_one(
    js: &e2e::async_nats::jetstream::Context,
    from: usize,
    n: usize,
    payload: &str,
) {
    for i in from..from + n {
        let ack = tokio::time::timeout(Duration::from_secs(10), async {
            js.publish_with_headers(
                format!("snap.{}", i % 5),
                with_id(&format!("m{i}")),
                format!("{i}:{payload}").into(),
            )
            .await?
            .await
        })
        .await
        .unwrap_or_else(|_| panic!("publish {i}: no PubAck within 10 s"))
        .unwrap_or_else(|e| panic!("publish {i}: {e}"));
        assert_eq!((ack.sequence, ack.duplicate), (i as u64 + 1, false));
    }
}

/// issue 22 (snapshots): a member stopped while far more publishes than the group's log
/// keeps are acknowledged (one at a time: one log entry each) is restarted: the leader's log
/// before its position was purged, so it catches up through a snapshot (it logs the
/// install), and its copy then equals the leader's. The leader's `raft.redb` does not grow
/// with a second wave as large as the first (the purged entries' pages are reused; without
/// the purge it would grow by the wave's size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_from_a_snapshot() {
    let (mut members, leader) = three_members_with_an_r3_stream("SNAP", "snap.>").await;
    let (at, stopped) = leader_and_other(&members, &leader);
    members[stopped].server.kill();
    let js = jetstream_on(&members[at]).await;
    // Waves of 1,200 entries of 8 KiB: the log keeps at most about 1,024 entries.
    const WAVE: usize = 1200;
    let payload = "x".repeat(8 * 1024);
    let raft_file = std::path::Path::new(members[at]._store.path()).join("raft.redb");
    let size = || std::fs::metadata(&raft_file).map(|m| m.len()).unwrap_or(0);
    publish_one_by_one(&js, 0, WAVE, &payload).await;
    let after_first = size();
    publish_one_by_one(&js, WAVE, WAVE, &payload).await;
    let after_second = size();
    let wave_bytes = (WAVE * payload.len()) as u64;
    assert!(
        after_second < after_first + wave_bytes / 2,
        "raft.redb grew from {after_first} to {after_second} bytes with a wave of \
         {wave_bytes} bytes: its log is not purged"
    );
    members[stopped].server =
        TestServer::with_config(ServerKind::Hubd, members[stopped].config.clone()).await;
    wait_for_log(
        &members[stopped].server,
        "installed a snapshot of the stream's group",
        1,
    )
    .await;
    let total = (2 * WAVE) as u64;
    let want = copy_of(&members[at], "SNAP", total).await;
    let got = copy_of(&members[stopped], "SNAP", total).await;
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{}: message {i}", members[stopped].name);
    }
    // The restarted member's copy serves as the others': the next publishes are stored there
    // too, after the snapshot's messages.
    publish_one_by_one(&js, 2 * WAVE, 10, "after").await;
    let client = app_client(&members[stopped]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = api(&client, "$JS.API.STREAM.INFO.SNAP", json!({})).await["state"].take();
        if state["messages"] == json!(total + 10) && state["last_seq"] == json!(total + 10) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the publishes after the snapshot are not stored: {state}",
            members[stopped].name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 22, placement: a replicated stream's `placement.tags` choose its peers among the
/// members whose `server_tags` hold every tag (one tag or a list in the configuration,
/// compared without case); tags too few members hold are refused with nats-server's 10005
/// "no suitable peers for placement, tags not matched [...]"; an R1 stream is placed on a
/// member holding its tags, whichever member is asked. A peer's `/jsz` shows the stream's group and cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_tags_choose_members_by_their_server_tags() {
    let tags = [json!(["ssd", "eu"]), json!(["SSD"]), json!("hdd")];
    let members = tagged_cluster(&tags).await;
    agreed_leader(&members.iter().collect::<Vec<_>>(), None).await;
    // From the member without the tag.
    let client = app_client(&members[2]).await;
    let created = create(
        &client,
        json!({"name": "FAST", "subjects": ["fast.>"], "num_replicas": 2,
               "placement": {"tags": ["ssd"]}}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    let mut peers = group_members(&created);
    peers.sort_unstable();
    assert_eq!(peers, ["n1", "n2"], "{created}");
    assert_eq!(created["config"]["placement"]["tags"], json!(["ssd"]));
    let ack = acknowledged(&members[2], "fast.1").await;
    assert_eq!(ack["stream"], "FAST", "{ack}");
    // A peer's /jsz shows the stream's group and cluster (its leader, once known).
    let deadline = Instant::now() + ELECTION;
    loop {
        let (code, jsz) = http_get(members[0].http, "/jsz").await;
        assert_eq!(code, 200, "{jsz}");
        let detail = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["name"] == "$G")
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|d| d["name"] == "FAST")
            .unwrap_or_else(|| panic!("FAST in /jsz: {jsz}"));
        assert!(
            detail["stream_raft_group"]
                .as_str()
                .is_some_and(|g| g.starts_with("S-")),
            "{detail}"
        );
        assert_eq!(detail["cluster"]["name"], "C", "{detail}");
        let mut shown = group_members(&detail);
        shown.sort_unstable();
        if detail["cluster"]["leader"].is_string() && shown == ["n1", "n2"] {
            break;
        }
        assert!(Instant::now() < deadline, "no leader in /jsz: {detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An R1 stream is the cluster's (as nats-server 2.9): asked on the member without its
    // tags, it is placed on the one holding them (and answered from there); tags no member
    // holds are refused (10005).
    let r1 = json!({"name": "EU", "subjects": ["eu.>"], "num_replicas": 1,
                    "placement": {"tags": ["EU", "ssd"]}});
    let created = create(&client, r1.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    until_engine_streams(&members[0], 2).await;
    let refused = create(
        &client,
        json!({"name": "EU3", "subjects": ["eu3.>"], "placement": {"tags": ["eu", "hdd"]}}),
    )
    .await;
    assert_eq!(refused["error"]["err_code"], 10005, "{refused}");
    let text = refused["error"]["description"].as_str().unwrap_or_default();
    assert!(text.contains("tags not matched"), "{refused}");

    for (config, missing) in [
        (
            json!({"name": "EU2", "subjects": ["eu2.>"], "num_replicas": 2,
                   "placement": {"tags": ["ssd", "eu"]}}),
            "tags not matched ['ssd', 'eu']",
        ),
        (
            json!({"name": "GPU", "subjects": ["gpu.>"], "num_replicas": 2,
                   "placement": {"tags": ["gpu"]}}),
            "tags not matched ['gpu']",
        ),
    ] {
        let refused = create(&client, config).await;
        assert_eq!(refused["error"]["err_code"], 10005, "{refused}");
        let text = refused["error"]["description"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("no suitable peers for placement") && text.contains(missing),
            "{refused}"
        );
    }
    assert!(!stream_names(&client).await.contains(&"GPU".to_owned()));
}

/// issue 22 (R>1 as R1): `discard: new` with `max_msgs` and `max_msgs_per_subject` /
/// `discard_new_per_subject`, and `max_msg_size`, on an R3 stream from a member not leading
/// its group: each publish answered as the same publish to an R1 stream of the same
/// configuration (10077 with the limit's text, 10054), and every copy holds the same
/// messages, those the R1 stream holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_new_and_max_msg_size_on_a_replicated_stream_answer_as_r1() {
    let limits = json!({
        "discard": "new", "max_msgs": 3, "max_msgs_per_subject": 2,
        "discard_new_per_subject": true, "max_msg_size": 64,
    });
    let with = |name: &str, subjects: &str, replicas: u64| {
        let mut cfg = limits.clone();
        cfg["name"] = json!(name);
        cfg["subjects"] = json!([subjects]);
        cfg["num_replicas"] = json!(replicas);
        cfg
    };
    let (members, leader) = three_members_with(with("LIM", "lim.>", 3)).await;
    let follower = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    let client = app_client(follower).await;
    let r1 = create(&client, with("ONE", "one.>", 1)).await;
    assert_eq!(r1["did_create"], true, "{r1}");
    let pad = "p".repeat(80);
    let publishes: [(&str, Vec<(&str, &str)>); 6] = [
        ("a", vec![]),
        ("a", vec![]),
        ("a", vec![]),
        ("b", vec![("X-Pad", pad.as_str())]),
        ("b", vec![]),
        ("c", vec![]),
    ];
    for (i, (subject, headers)) in publishes.iter().enumerate() {
        let r3 = publish_expecting(&client, &format!("lim.{subject}"), headers).await;
        let r1 = publish_expecting(&client, &format!("one.{subject}"), headers).await;
        assert_eq!(r3["error"], r1["error"], "publish {i}: R3 {r3}, R1 {r1}");
        assert_eq!(r3["seq"], r1["seq"], "publish {i}: R3 {r3}, R1 {r1}");
    }
    // The errors are the single server's.
    let third = publish_expecting(&client, "one.a", &[]).await;
    assert_eq!(third["error"]["err_code"], 10077, "{third}");
    let big = publish_expecting(&client, "lim.d", &[("X-Pad", pad.as_str())]).await;
    assert_eq!(big["error"]["err_code"], 10054, "{big}");
    let full = publish_expecting(&client, "lim.d", &[]).await;
    assert_eq!(full["error"]["err_code"], 10077, "{full}");
    assert_eq!(
        full["error"]["description"], "maximum messages exceeded",
        "{full}"
    );
    let want: Vec<(u64, String, String)> = copy_of(follower, "ONE", 3).await;
    for m in &members {
        assert_eq!(copy_of(m, "LIM", 3).await, want, "{}'s copy", m.name);
    }
}

/// issue 22 (R>1 as R1): `STREAM.PURGE` (everything of a subject but the newest, below a
/// sequence) and `STREAM.MSG.DELETE` (with and without `no_erase`, and of a message not
/// there) on an R3 stream, asked of a member not leading its group: each answered as the
/// same request to an R1 stream holding the same messages, and every copy ends holding what
/// the R1 stream holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_msg_delete_on_a_replicated_stream_apply_on_every_copy() {
    let (members, leader) = three_members_with_an_r3_stream("PUR", "pur.>").await;
    let follower = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    let client = app_client(follower).await;
    let r1 = create(
        &client,
        json!({"name": "PONE", "subjects": ["pone.>"], "num_replicas": 1}),
    )
    .await;
    assert_eq!(r1["did_create"], true, "{r1}");
    for i in 1..=12 {
        let subject = if i % 2 == 1 { "a" } else { "b" };
        let id = format!("m{i}");
        for prefix in ["pur", "pone"] {
            let ack = publish_expecting(
                &client,
                &format!("{prefix}.{subject}"),
                &[("Nats-Msg-Id", &id)],
            )
            .await;
            assert_eq!(ack["seq"], i, "{prefix}: {ack}");
        }
    }
    let requests = [
        ("MSG.DELETE", json!({"seq": 2})),
        ("MSG.DELETE", json!({"seq": 2})),
        ("MSG.DELETE", json!({"seq": 4, "no_erase": true})),
        ("MSG.DELETE", json!({"seq": 99})),
        ("PURGE", json!({"filter": "pur.a", "keep": 2})),
        ("PURGE", json!({"seq": 8})),
        ("PURGE", json!({"filter": "pur.b", "seq": 11})),
    ];
    for (kind, body) in requests {
        let r3 = api(&client, &format!("$JS.API.STREAM.{kind}.PUR"), body.clone()).await;
        // The R1 stream's subjects are `pone.*`.
        let text = body.to_string().replace("pur.", "pone.");
        let body1: Value = e2e::serde_json::from_str(&text).expect("JSON");
        let r1 = api(&client, &format!("$JS.API.STREAM.{kind}.PONE"), body1).await;
        assert_eq!(r3, r1, "{kind} {body}");
    }
    let info = api(&client, "$JS.API.STREAM.INFO.PONE", json!({})).await;
    let count = info["state"]["messages"].as_u64().expect("a count");
    assert!(count > 0 && count < 12, "{info}");
    let want: Vec<(u64, String, String)> = copy_of(follower, "PONE", count).await;
    for m in &members {
        assert_eq!(copy_of(m, "PUR", count).await, want, "{}'s copy", m.name);
    }
}

/// issue 22 (R>1 as R1): `STREAM.UPDATE` of an R3 stream from a member not leading its group,
/// through the meta group: a new subject captured by the group's leader, `discard: new` with
/// `max_msgs` decided alike on every copy (10077), the description on every member's
/// `STREAM.INFO`; a change of the storage refused with a clear error, one to R5 on three
/// members as a create of an R5 stream is (10005: see
/// `a_stream_shrinks_to_r2_and_grows_back_to_r3` for the changes of `num_replicas`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_a_replicated_stream_reaches_every_copy() {
    let (members, leader) = three_members_with_an_r3_stream("UPD", "upd.a").await;
    let follower = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    let client = app_client(follower).await;
    assert_eq!(acknowledged(follower, "upd.a").await["seq"], 1);
    let config = json!({
        "name": "UPD", "subjects": ["upd.a", "upd.b"], "num_replicas": 3,
        "description": "updated", "discard": "new", "max_msgs": 2,
    });
    let updated = api(&client, "$JS.API.STREAM.UPDATE.UPD", config.clone()).await;
    assert!(updated["error"].is_null(), "{updated}");
    assert_eq!(
        updated["config"]["subjects"],
        json!(["upd.a", "upd.b"]),
        "{updated}"
    );
    // The leader captures the new subject once its member applied the update.
    assert_eq!(acknowledged(follower, "upd.b").await["seq"], 2);
    let full = publish_expecting(&client, "upd.a", &[]).await;
    assert_eq!(full["error"]["err_code"], 10077, "{full}");
    for m in &members {
        let member = app_client(m).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = api(&member, "$JS.API.STREAM.INFO.UPD", json!({})).await;
            if info["config"]["description"] == "updated" {
                break;
            }
            assert!(Instant::now() < deadline, "{}: not updated: {info}", m.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let copy = copy_of(m, "UPD", 2).await;
        assert_eq!(
            copy.iter().map(|(seq, _, _)| *seq).collect::<Vec<_>>(),
            [1, 2],
            "{}",
            m.name
        );
    }
    let mut r5 = config.clone();
    r5["num_replicas"] = json!(5);
    let refused = api(&client, "$JS.API.STREAM.UPDATE.UPD", r5).await;
    assert_eq!(refused["error"]["err_code"], 10005, "{refused}");
    let mut memory = config;
    memory["storage"] = json!("memory");
    let refused = api(&client, "$JS.API.STREAM.UPDATE.UPD", memory).await;
    assert_eq!(refused["error"]["err_code"], 10052, "{refused}");
}

/// issue 22 (snapshots, a lost memory copy): an R3 memory stream; a follower SIGKILLed after
/// more one-at-a-time publishes than the group's log keeps (its own log purged past a
/// snapshot) restarts with an empty copy and an applied marker it cannot reach from its log:
/// it resets its Raft state for the group (it logs it), the leader sends it a snapshot, and
/// its copy then equals the leader's, the next publishes stored after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_memory_copy_is_rebuilt_from_a_snapshot() {
    let (mut members, leader) = three_members_with(json!({
        "name": "MEMS", "subjects": ["snap.>"], "num_replicas": 3, "storage": "memory",
    }))
    .await;
    let (at, lost) = leader_and_other(&members, &leader);
    let js = jetstream_on(&members[at]).await;
    const N: usize = 1200;
    publish_one_by_one(&js, 0, N, "m").await;
    copy_of(&members[lost], "MEMS", N as u64).await;
    members[lost].server.kill();
    members[lost].server =
        TestServer::with_config(ServerKind::Hubd, members[lost].config.clone()).await;
    wait_for_log(&members[lost].server, "its Raft state is reset", 1).await;
    wait_for_log(
        &members[lost].server,
        "installed a snapshot of the stream's group",
        1,
    )
    .await;
    let want = copy_of(&members[at], "MEMS", N as u64).await;
    let got = copy_of(&members[lost], "MEMS", N as u64).await;
    assert_eq!(got, want, "{}'s copy", members[lost].name);
    publish_one_by_one(&js, N, 10, "after").await;
    let after = copy_of(&members[lost], "MEMS", N as u64 + 10).await;
    assert_eq!(after.last().map(|m| m.0), Some(N as u64 + 10));
}

/// issue 22 (`STREAM.PEER.REMOVE`): an R2 stream on three members; a peer not leading its
/// group removed by a request on the member that is no peer (forwarded): the third member
/// takes its place, catches up (its own copy holds every message), the removed member's copy
/// goes, the leader's info shows the new peers, and publishes go on to both copies. A server
/// that is no peer answers 10040.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_is_replaced_and_the_new_one_catches_up() {
    let (members, _) = three_members_with(json!({
        "name": "PEERS", "subjects": ["peers.>"], "num_replicas": 2,
    }))
    .await;
    let all: Vec<&Member> = members.iter().collect();
    let leader = stream_leader(&all, "PEERS", None).await;
    let at_leader = &members[leader_and_other(&members, &leader).0];
    let info_on_leader = || async {
        let client = app_client(at_leader).await;
        api(&client, "$JS.API.STREAM.INFO.PEERS", json!({})).await
    };
    let info = info_on_leader().await;
    let peers = group_members(&info);
    assert_eq!(peers.len(), 2, "{info}");
    let removed = members
        .iter()
        .find(|m| peers.contains(&m.name) && m.name != leader)
        .expect("a peer not leading");
    let third = members
        .iter()
        .find(|m| !peers.contains(&m.name))
        .expect("a member without a copy");
    for i in 1..=5 {
        assert_eq!(acknowledged(third, &format!("peers.{i}")).await["seq"], i);
    }
    let client = app_client(third).await;
    let not_peer = api(
        &client,
        "$JS.API.STREAM.PEER.REMOVE.PEERS",
        json!({"peer": third.name}),
    )
    .await;
    assert_eq!(not_peer["error"]["err_code"], 10040, "{not_peer}");
    let done = api(
        &client,
        "$JS.API.STREAM.PEER.REMOVE.PEERS",
        json!({"peer": removed.name}),
    )
    .await;
    assert_eq!(done["success"], true, "{done}");
    assert_eq!(copy_of(third, "PEERS", 5).await.len(), 5);
    until_engine_streams(removed, 0).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = info_on_leader().await;
        let mut now = group_members(&info);
        now.sort();
        let mut want = vec![leader.clone(), third.name.clone()];
        want.sort();
        if now == want {
            break;
        }
        assert!(Instant::now() < deadline, "the peers: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(acknowledged(removed, "peers.6").await["seq"], 6);
    assert_eq!(copy_of(third, "PEERS", 6).await.len(), 6);
    assert_eq!(copy_of(at_leader, "PEERS", 6).await.len(), 6);
}

/// The `cluster.leader` of replicated consumer `consumer` of `stream` as some member of
/// `members` sees it, other than `not` (bounded wait).
async fn consumer_leader(
    members: &[&Member],
    stream: &str,
    consumer: &str,
    not: Option<&str>,
) -> String {
    let subject = format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}");
    group_leader(members, &subject, not).await
}

/// One pull request of `batch` messages of consumer `consumer` of stream `stream` on
/// `client`: the stream sequence and ack subject of each message received (within a bound; a
/// status or an error ends it early).
async fn fetch(
    client: &e2e::async_nats::Client,
    stream: &str,
    consumer: &str,
    batch: u64,
) -> Vec<(u64, String)> {
    let inbox = client.new_inbox();
    let Ok(mut sub) = client.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    let body = json!({"batch": batch, "expires": 2_000_000_000u64}).to_string();
    if client
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            inbox,
            body.into(),
        )
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while (got.len() as u64) < batch {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let Some(reply) = msg.reply.as_ref().map(|r| r.to_string()) else {
            break; // a status (408, 404) or an error answer
        };
        let tokens: Vec<&str> = reply.split('.').collect();
        let Some(seq) = tokens.get(5).and_then(|t| t.parse::<u64>().ok()) else {
            break;
        };
        got.push((seq, reply));
    }
    got
}

/// issue 22 (consumer groups): an R3 stream with 1,000 messages and an R3 durable pull
/// consumer (explicit ack): a client on the consumer's group leader fetches batches and
/// double-acks every message (`+ACK` as a request: answered once its group committed it);
/// the consumer leader SIGKILLed mid-way, the client moves to the new leader's member and
/// finishes: every sequence received and acknowledged, none whose double ack succeeded
/// delivered again; every member (the killed one restarted too) shows the ack floor 1,000 in
/// `CONSUMER.INFO` (the record its group applied). `CONSUMER.DELETE` on one member removes it
/// from every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_leader_redelivers_no_double_acked_message() {
    let (mut members, _) = three_members_with_an_r3_stream("WORK", "work.>").await;
    const N: u64 = 1000;
    let js = jetstream_on(&members[0]).await;
    for window in 0..(N / 50) {
        let mut acks = Vec::new();
        for i in 0..50 {
            let ack = js
                .publish(format!("work.{}", window * 50 + i), "x".into())
                .await
                .expect("publish");
            acks.push(ack);
        }
        for ack in acks {
            tokio::time::timeout(Duration::from_secs(10), ack)
                .await
                .expect("a PubAck within 10 s")
                .expect("a PubAck");
        }
    }
    let created = api(
        &app_client(&members[0]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.WORK.D",
        json!({"stream_name": "WORK", "config": {
            "durable_name": "D", "ack_policy": "explicit", "ack_wait": 3_000_000_000u64,
        }}),
    )
    .await;
    assert_eq!(created["name"], "D", "{created}");
    assert!(created["error"].is_null(), "{created}");
    let mut run = KillRun::start(&members, "WORK", "D", N, 50).await;
    // Killed with a batch delivered and not acknowledged: the new leader delivers it again
    // (after `ack_wait`), as its double acks never succeed.
    while let Some((got, ack_client)) = run.next(&mut members).await {
        for (seq, _) in &got {
            assert!(
                !run.double_acked.contains(seq),
                "stream sequence {seq} delivered again after its double ack succeeded"
            );
        }
        run.double_acked.extend(double_ack(&ack_client, got).await);
    }
    let (killed, double_acked) = (run.killed, run.double_acked);
    assert_eq!(
        double_acked.iter().copied().collect::<Vec<u64>>(),
        (1..=N).collect::<Vec<u64>>()
    );
    // The killed member restarted: every member shows the ack floor from its group's record.
    members[killed].server =
        TestServer::with_config(ServerKind::Hubd, members[killed].config.clone()).await;
    for m in &members {
        until_answer(m, "$JS.API.CONSUMER.INFO.WORK.D", "the ack floor", |info| {
            info["ack_floor"]["stream_seq"] == json!(N)
        })
        .await;
    }
    // Deleted from any member: gone from every member.
    let deleted = api(
        &app_client(&members[killed]).await,
        "$JS.API.CONSUMER.DELETE.WORK.D",
        json!({}),
    )
    .await;
    assert_eq!(deleted["success"], true, "{deleted}");
    for m in &members {
        until_answer(m, "$JS.API.CONSUMER.INFO.WORK.D", "deleted", |info| {
            info["error"]["err_code"] == json!(10014)
        })
        .await;
    }
}

/// The position in `members` of the leader of consumer `consumer` of `stream` (bounded wait).
async fn consumer_leader_at(members: &[Member], stream: &str, consumer: &str) -> usize {
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, stream, consumer, None).await;
    members
        .iter()
        .position(|m| m.name == leader)
        .expect("the leader")
}

/// The members but `members[killed]`.
fn survivors(members: &[Member], killed: usize) -> Vec<&Member> {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != killed)
        .map(|(_, m)| m)
        .collect()
}

/// SIGKILLs `members[killed]` (a process the test started), the leader of consumer `consumer`
/// of `stream`, and waits (bounded) for another leader among the survivors: its name.
async fn kill_consumer_leader(
    members: &mut [Member],
    killed: usize,
    stream: &str,
    consumer: &str,
) -> String {
    members[killed].server.kill();
    let survivors = survivors(members, killed);
    let old = members[killed].name.clone();
    consumer_leader(&survivors, stream, consumer, Some(&old)).await
}

/// A client fetching a replicated consumer's messages on its group leader's member, that
/// leader SIGKILLed (a process the test started) once a third of the `n` messages are
/// double-acked, the client then moving to the new leader's member.
struct KillRun {
    stream: &'static str,
    consumer: &'static str,
    n: u64,
    batch: u64,
    /// The member killed (the first leader).
    killed: usize,
    client: e2e::async_nats::Client,
    /// The stream sequences whose double ack succeeded (the caller adds them).
    double_acked: std::collections::BTreeSet<u64>,
    killed_yet: bool,
    deadline: Instant,
}

impl KillRun {
    /// Waits for the consumer's leader and connects to its member.
    async fn start(
        members: &[Member],
        stream: &'static str,
        consumer: &'static str,
        n: u64,
        batch: u64,
    ) -> KillRun {
        let killed = consumer_leader_at(members, stream, consumer).await;
        KillRun {
            stream,
            consumer,
            n,
            batch,
            killed,
            client: app_client(&members[killed]).await,
            double_acked: std::collections::BTreeSet::new(),
            killed_yet: false,
            deadline: Instant::now() + Duration::from_secs(180),
        }
    }

    /// The next batch fetched and the client to ack it with (the batch's member's: the one
    /// fetched right before the kill is acked through the killed member, never successfully);
    /// `None` once every message is double-acked (bounded: 180 s), the leader killed.
    async fn next(
        &mut self,
        members: &mut [Member],
    ) -> Option<(Vec<(u64, String)>, e2e::async_nats::Client)> {
        while (self.double_acked.len() as u64) < self.n {
            assert!(
                Instant::now() < self.deadline,
                "not every message double-acked within 180 s: {} of {}",
                self.double_acked.len(),
                self.n
            );
            let got = fetch(&self.client, self.stream, self.consumer, self.batch).await;
            if got.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let ack_client = self.client.clone();
            if !self.killed_yet && self.double_acked.len() as u64 >= self.n / 3 {
                self.killed_yet = true;
                let new_leader =
                    kill_consumer_leader(members, self.killed, self.stream, self.consumer).await;
                let at = members
                    .iter()
                    .position(|m| m.name == new_leader)
                    .expect("the new leader");
                self.client = app_client(&members[at]).await;
            }
            return Some((got, ack_client));
        }
        assert!(self.killed_yet, "the consumer leader was killed mid-way");
        None
    }
}

/// Double-acks (`+ACK` as a request) the messages `got` on `client`: the stream sequences whose
/// double ack succeeded.
async fn double_ack(client: &e2e::async_nats::Client, got: Vec<(u64, String)>) -> Vec<u64> {
    let outcomes = futures::future::join_all(got.into_iter().map(|(seq, reply)| {
        let client = client.clone();
        async move {
            let answer =
                tokio::time::timeout(Duration::from_secs(5), client.request(reply, "+ACK".into()))
                    .await;
            (seq, matches!(answer, Ok(Ok(_))))
        }
    }))
    .await;
    outcomes
        .into_iter()
        .filter_map(|(seq, acked)| acked.then_some(seq))
        .collect()
}

/// issue 22 (consumer groups, forwarding): a replicated consumer's pull requests sent to a
/// member that does not lead its group are forwarded to the leader, whose task delivers to the
/// client's inbox over the routes; the client's double acks reach the leader by interest:
/// 100 messages fetched and double-acked through the two members not leading, each once, and
/// the leader's `CONSUMER.INFO` shows the ack floor 100. `CONSUMER.NAMES` and `LIST` on a
/// member not leading show it (the meta assignments), with its leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_consumer_serves_pull_requests_on_every_member() {
    let (members, _) = three_members_with_an_r3_stream("FWD", "fwd.>").await;
    const N: u64 = 100;
    let js = jetstream_on(&members[0]).await;
    for i in 0..N {
        js.publish(format!("fwd.{i}"), "x".into())
            .await
            .expect("publish")
            .await
            .expect("a PubAck");
    }
    let created = api(
        &app_client(&members[1]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.FWD.D",
        json!({"stream_name": "FWD", "config": {
            "durable_name": "D", "ack_policy": "explicit", "num_replicas": 3,
        }}),
    )
    .await;
    assert_eq!(created["name"], "D", "{created}");
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "FWD", "D", None).await;
    let others: Vec<&Member> = members.iter().filter(|m| m.name != leader).collect();
    // Listed on a member that does not run its task, with the group's leader.
    let at_other = app_client(others[0]).await;
    let names = api(&at_other, "$JS.API.CONSUMER.NAMES.FWD", json!({})).await;
    assert_eq!(names["consumers"], json!(["D"]), "{names}");
    let list = api(&at_other, "$JS.API.CONSUMER.LIST.FWD", json!({})).await;
    assert_eq!(list["consumers"][0]["name"], "D", "{list}");
    assert_eq!(
        list["consumers"][0]["cluster"]["leader"],
        json!(leader),
        "{list}"
    );
    let mut received = Vec::new();
    let mut double_acked = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = 0;
    while (double_acked.len() as u64) < N {
        assert!(
            Instant::now() < deadline,
            "not every message double-acked within 60 s through the members not leading: {} of {N}",
            double_acked.len()
        );
        let client = app_client(others[turn % others.len()]).await;
        turn += 1;
        let got = fetch(&client, "FWD", "D", 25).await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        received.extend(got.iter().map(|(seq, _)| *seq));
        double_acked.extend(double_ack(&client, got).await);
    }
    assert_eq!(
        received,
        (1..=N).collect::<Vec<u64>>(),
        "each message delivered once, in order"
    );
    let at_leader = app_client(
        members
            .iter()
            .find(|m| m.name == leader)
            .expect("the leader"),
    )
    .await;
    let info = api(&at_leader, "$JS.API.CONSUMER.INFO.FWD.D", json!({})).await;
    assert_eq!(info["ack_floor"]["stream_seq"], json!(N), "{info}");
    assert_eq!(info["num_ack_pending"], json!(0), "{info}");
}

/// Waits (bounded: 60 s) until member `m`'s answer to API request `subject` meets `check`
/// (`what` it waits for, in the failure's message).
async fn until_answer(m: &Member, subject: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let client = app_client(m).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = api(&client, subject, json!({})).await;
        if check(&answer) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {subject}: not {what} within 60 s: {answer}",
            m.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Hostile input: a pull request whose reply subject the requester may not publish to has its
/// answers confined to the requester (`server::reply`); sent to a member that does not lead
/// the replicated consumer, it is not forwarded (the leader could not confine the deliveries,
/// which would reach whoever subscribes that subject): answered 503 to the requester alone,
/// and a subscriber of that subject on the leader's member gets nothing. The same request
/// from a user allowed to publish there is forwarded and delivered (the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_with_a_confined_reply_is_not_forwarded() {
    let (members, _) = three_members_with_an_r3_stream("CONF", "conf.>").await;
    let js = jetstream_on(&members[0]).await;
    for i in 0..3 {
        js.publish(format!("conf.{i}"), "secret".into())
            .await
            .expect("publish")
            .await
            .expect("a PubAck");
    }
    let created = api(
        &app_client(&members[1]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.CONF.D",
        json!({"stream_name": "CONF", "config": {
            "durable_name": "D", "ack_policy": "explicit", "num_replicas": 3,
        }}),
    )
    .await;
    assert_eq!(created["name"], "D", "{created}");
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "CONF", "D", None).await;
    let at_leader = members
        .iter()
        .find(|m| m.name == leader)
        .expect("the leader");
    let other = members.iter().find(|m| m.name != leader).expect("another");
    let victim = app_client(at_leader).await;
    let mut spied = victim.subscribe("victim.inbox").await.expect("subscribe");
    victim.flush().await.expect("flush");
    let limited = other
        .server
        .client_with(TestServer::options().user_and_password("r".into(), "r".into()))
        .await;
    // The limited user's request, reply `victim.inbox` (it may not publish there).
    let next = "$JS.API.CONSUMER.MSG.NEXT.CONF.D";
    limited
        .publish_with_reply(next, "victim.inbox", json!({"batch": 1}).to_string().into())
        .await
        .expect("publish");
    limited.flush().await.expect("flush");
    let leaked = tokio::time::timeout(Duration::from_secs(2), spied.next()).await;
    assert!(
        leaked.is_err(),
        "a confined pull request was forwarded: {:?}",
        leaked.ok().flatten().map(|m| m.payload)
    );
    // The same request by a user allowed to publish there: forwarded, delivered.
    let allowed = app_client(other).await;
    allowed
        .publish_with_reply(next, "victim.inbox", json!({"batch": 1}).to_string().into())
        .await
        .expect("publish");
    allowed.flush().await.expect("flush");
    let delivered = tokio::time::timeout(Duration::from_secs(10), spied.next())
        .await
        .expect("the forwarded request's delivery")
        .expect("a message");
    assert_eq!(&delivered.payload[..], b"secret");
}

/// The member of `members` not among the peers `STREAM.INFO` of `stream` names (its leader
/// and replicas), asked on `at` (bounded wait until a leader is named).
async fn member_without_copy<'a>(members: &'a [Member], at: &Member, stream: &str) -> &'a Member {
    let client = app_client(at).await;
    let deadline = Instant::now() + ELECTION;
    loop {
        let info = api(&client, &format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await;
        if let Some(leader) = info["cluster"]["leader"].as_str() {
            let mut peers = vec![leader.to_owned()];
            if let Some(replicas) = info["cluster"]["replicas"].as_array() {
                peers.extend(
                    replicas
                        .iter()
                        .filter_map(|r| r["name"].as_str().map(str::to_owned)),
                );
            }
            if let Some(m) = members.iter().find(|m| !peers.contains(&m.name)) {
                return m;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: no leader or no member without a copy: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sequence of `payload` published on `subject` through `js`, once acknowledged (within
/// 10 s).
async fn acked_seq(js: &e2e::async_nats::jetstream::Context, subject: &str, payload: &str) -> u64 {
    tokio::time::timeout(Duration::from_secs(10), async {
        js.publish(subject.to_owned(), payload.to_owned().into())
            .await
            .expect("publish")
            .await
            .expect("a PubAck")
            .sequence
    })
    .await
    .unwrap_or_else(|_| panic!("{subject}: no PubAck within 10 s"))
}

/// A `DIRECT.GET` request's answer: its `Nats-Sequence` header and payload (or its status).
async fn direct_get(
    client: &e2e::async_nats::Client,
    subject: &str,
    body: &str,
) -> Result<(u64, String), String> {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.to_owned(), body.to_owned().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer within 10 s"))
    .map_err(|e| e.to_string())?;
    let headers = answer.headers.ok_or("no headers")?;
    let seq = headers
        .get("Nats-Sequence")
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| format!("no Nats-Sequence: {:?} {headers:?}", answer.status))?;
    Ok((seq, String::from_utf8_lossy(&answer.payload).into_owned()))
}

/// issue 22, no stale read after a write: reads of a replicated stream's messages are
/// answered by its group's leader after a read barrier, whichever member is asked. An R3 KV
/// bucket: 200 rounds of a put from a client on one follower (A), then a get (`DIRECT.GET`
/// last by subject) on the other follower (B) and on the leader's member (C): each returns the
/// revision and value just put. An R3 stream: 50 rounds of a publish acknowledged on A, then
/// on B `MSG.GET` of the acknowledged sequence, `MSG.GET` last by subject and `DIRECT.GET` by
/// sequence: each returns that message. An R2 stream: `MSG.GET` and `DIRECT.GET` on the member
/// without a copy are answered (by the leader) with the message just published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_any_member_see_the_last_acknowledged_write() {
    use e2e::async_nats::jetstream::kv;
    let members = three_members_with_a_meta_leader().await;
    let all: Vec<&Member> = members.iter().collect();
    tokio::time::timeout(
        Duration::from_secs(10),
        jetstream_on(&members[0])
            .await
            .create_key_value(kv::Config {
                bucket: "RD".into(),
                num_replicas: 3,
                ..Default::default()
            }),
    )
    .await
    .expect("bucket created within 10 s")
    .expect("bucket created");
    let leader = stream_leader(&all, "KV_RD", None).await;
    let followers: Vec<&Member> = members.iter().filter(|m| m.name != leader).collect();
    let at_leader = members
        .iter()
        .find(|m| m.name == leader)
        .expect("the leader");
    let (a, b, c) = (followers[0], followers[1], at_leader);
    let mut stores = Vec::new();
    for m in [a, b, c] {
        let js = jetstream_on(m).await;
        stores.push(js.get_key_value("RD").await.expect("bucket opened"));
    }
    for round in 0..200u32 {
        let value = round.to_string();
        let rev = tokio::time::timeout(
            Duration::from_secs(10),
            stores[0].put("k", value.clone().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no PubAck within 10 s"))
        .unwrap_or_else(|e| panic!("round {round}: put: {e}"));
        for (at, kv) in [(b, &stores[1]), (c, &stores[2])] {
            let got = tokio::time::timeout(Duration::from_secs(10), kv.entry("k"))
                .await
                .unwrap_or_else(|_| panic!("round {round}: no get answer within 10 s"))
                .unwrap_or_else(|e| panic!("round {round}: get on {}: {e}", at.name))
                .unwrap_or_else(|| panic!("round {round}: get on {}: no entry", at.name));
            assert_eq!(
                (
                    got.revision,
                    String::from_utf8_lossy(&got.value).into_owned()
                ),
                (rev, value.clone()),
                "round {round}: a stale get on {} after a put acknowledged on {}",
                at.name,
                a.name
            );
        }
    }

    // MSG.GET and DIRECT.GET right after a publish acknowledged on another member.
    let created = create(
        &app_client(a).await,
        json!({"name": "RG", "subjects": ["rg.>"], "num_replicas": 3, "allow_direct": true}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    stream_leader(&all, "RG", None).await;
    let js_a = jetstream_on(a).await;
    let client_b = app_client(b).await;
    for round in 0..50u32 {
        let value = format!("v{round}");
        let seq = acked_seq(&js_a, "rg.x", &value).await;
        for body in [json!({"seq": seq}), json!({"last_by_subj": "rg.x"})] {
            let got = api(&client_b, "$JS.API.STREAM.MSG.GET.RG", body.clone()).await;
            assert_eq!(
                got["message"]["seq"], seq,
                "round {round}: MSG.GET {body} on {}: {got}",
                b.name
            );
        }
        let direct = direct_get(
            &client_b,
            "$JS.API.DIRECT.GET.RG",
            &json!({"seq": seq}).to_string(),
        )
        .await;
        assert_eq!(
            direct,
            Ok((seq, value)),
            "round {round}: DIRECT.GET on {}",
            b.name
        );
    }

    // An R2 stream read on the member without a copy.
    let created = create(
        &app_client(a).await,
        json!({"name": "R2G", "subjects": ["r2g.>"], "num_replicas": 2, "allow_direct": true}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    let outside = member_without_copy(&members, a, "R2G").await;
    let seq = acked_seq(&js_a, "r2g.y", "there").await;
    let client_out = app_client(outside).await;
    let got = api(
        &client_out,
        "$JS.API.STREAM.MSG.GET.R2G",
        json!({"seq": seq}),
    )
    .await;
    assert_eq!(
        got["message"]["seq"], seq,
        "MSG.GET on {}: {got}",
        outside.name
    );
    let direct = direct_get(&client_out, "$JS.API.DIRECT.GET.R2G.r2g.y", "").await;
    assert_eq!(
        direct,
        Ok((seq, "there".to_owned())),
        "DIRECT.GET on {}",
        outside.name
    );
}

/// Hostile input: a `MSG.GET` whose reply subject the requester may not publish to has its
/// answer confined to the requester (`server::reply`). Sent to a follower, the read is served
/// by the group's leader, but the answer is delivered by the member the requester asked, still
/// confined: a subscriber of that subject on the leader's member or on the follower gets
/// nothing. The same request from a user allowed to publish there is answered (the check can
/// fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_a_confined_reply_reaches_only_the_requester() {
    let (members, leader) = three_members_with_an_r3_stream("CRD", "crd.>").await;
    let js = jetstream_on(&members[0]).await;
    js.publish("crd.a", "secret".into())
        .await
        .expect("publish")
        .await
        .expect("a PubAck");
    let at_leader = members
        .iter()
        .find(|m| m.name == leader)
        .expect("the leader");
    let other = members.iter().find(|m| m.name != leader).expect("another");
    let mut spies = Vec::new();
    for m in [at_leader, other] {
        let victim = app_client(m).await;
        let spied = victim.subscribe("victim.inbox").await.expect("subscribe");
        victim.flush().await.expect("flush");
        spies.push((victim, spied));
    }
    let limited = other
        .server
        .client_with(TestServer::options().user_and_password("r".into(), "r".into()))
        .await;
    let get = "$JS.API.STREAM.MSG.GET.CRD";
    let body = json!({"seq": 1}).to_string();
    limited
        .publish_with_reply(get, "victim.inbox", body.clone().into())
        .await
        .expect("publish");
    limited.flush().await.expect("flush");
    for (_, spied) in &mut spies {
        let leaked = tokio::time::timeout(Duration::from_secs(2), spied.next()).await;
        assert!(
            leaked.is_err(),
            "a confined read's answer leaked: {:?}",
            leaked.ok().flatten().map(|m| m.payload)
        );
    }
    // The limited user's own inbox gets the answer.
    let own = api(&limited, get, json!({"seq": 1})).await;
    assert_eq!(own["message"]["seq"], 1, "{own}");
    // A user allowed to publish there: the answer reaches the subscribers.
    let allowed = app_client(other).await;
    allowed
        .publish_with_reply(get, "victim.inbox", body.into())
        .await
        .expect("publish");
    allowed.flush().await.expect("flush");
    let delivered = tokio::time::timeout(Duration::from_secs(10), spies[0].1.next())
        .await
        .expect("the answer within 10 s")
        .expect("a message");
    let answer: Value = e2e::serde_json::from_slice(&delivered.payload).expect("JSON");
    assert_eq!(answer["message"]["seq"], 1, "{answer}");
}

/// Publishes `n` messages on `subject.<i>` through `js`, each acknowledged (with a
/// `Nats-Msg-Id`, retried until acknowledged, bounded: a stream leader that changes answers
/// 10008 to a publish in flight).
async fn publish_n(js: &e2e::async_nats::jetstream::Context, subject: &str, n: u64) {
    for i in 0..n {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let id = format!("{subject}-{i}");
            let sent = js
                .publish_with_headers(format!("{subject}.{i}"), with_id(&id), "x".into())
                .await;
            let acked: Result<(), String> = match sent {
                Ok(ack) => match tokio::time::timeout(Duration::from_secs(5), ack).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no PubAck within 5 s".into()),
                },
                Err(e) => Err(e.to_string()),
            };
            if acked.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{subject}.{i} not acknowledged within 30 s: {acked:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Publishes one message on `subject` through `js`: the sequence its PubAck gives.
async fn sequence_of(js: &e2e::async_nats::jetstream::Context, subject: &str) -> u64 {
    js.publish(subject.to_owned(), "x".into())
        .await
        .expect("publish")
        .await
        .expect("a PubAck")
        .sequence
}

/// Creates durable pull consumer `name` of `stream` on `m` (`extra` config fields): the answer.
async fn durable(m: &Member, stream: &str, name: &str, extra: Value) -> Value {
    let mut config = json!({"durable_name": name, "ack_policy": "explicit"});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    api(
        &app_client(m).await,
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}"),
        json!({"stream_name": stream, "config": config}),
    )
    .await
}

/// Fetches and double-acks the messages at stream sequences `seqs` of consumer `consumer` of
/// `stream` through `m` (bounded: 60 s): each delivered once, in order.
async fn consume_all(
    m: &Member,
    stream: &str,
    consumer: &str,
    seqs: std::ops::RangeInclusive<u64>,
) {
    let n = seqs.clone().count() as u64;
    let client = app_client(m).await;
    let mut received = Vec::new();
    let mut acked = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (acked.len() as u64) < n {
        assert!(
            Instant::now() < deadline,
            "{consumer}: not every message double-acked within 60 s: {} of {n}",
            acked.len()
        );
        let got = fetch(&client, stream, consumer, 25).await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        received.extend(got.iter().map(|(seq, _)| *seq));
        acked.extend(double_ack(&client, got).await);
    }
    assert_eq!(received, seqs.collect::<Vec<u64>>(), "{consumer}");
}

/// The number of messages in member `m`'s copy of `stream` (its own `STREAM.INFO`).
async fn copy_count(m: &Member, stream: &str) -> u64 {
    let client = app_client(m).await;
    let info = api(&client, &format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await;
    info["state"]["messages"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: {info}", m.name))
}

/// issue 22 (retention on R>1): an R3 workqueue stream with 100 messages and an R3 durable
/// pull consumer; every message fetched and double-acked through a member not leading the
/// consumer's group: every member's copy (its own `STREAM.INFO`) ends with no message, as
/// each ack's removal is an entry of the stream's group. A second consumer overlapping the
/// first answers a single server's workqueue errors (10099 unfiltered, 10100 filtered), and
/// an R1 durable (it would remove from one copy only) 10036.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workqueue_r3_stream_removes_acked_messages_from_every_copy() {
    let (members, _) = three_members_with(
        json!({"name": "WQ", "subjects": ["wq.>"], "num_replicas": 3, "retention": "workqueue"}),
    )
    .await;
    const N: u64 = 100;
    publish_n(&jetstream_on(&members[0]).await, "wq", N).await;
    let created = durable(&members[1], "WQ", "D", json!({})).await;
    assert_eq!(created["name"], "D", "{created}");
    let second = durable(&members[2], "WQ", "E", json!({})).await;
    assert_eq!(second["error"]["err_code"], json!(10099), "{second}");
    let filtered = durable(&members[0], "WQ", "F", json!({"filter_subject": "wq.7"})).await;
    assert_eq!(filtered["error"]["err_code"], json!(10100), "{filtered}");
    let r1 = durable(&members[0], "WQ", "R", json!({"num_replicas": 1})).await;
    assert_eq!(r1["error"]["err_code"], json!(10036), "{r1}");
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "WQ", "D", None).await;
    let other = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    consume_all(other, "WQ", "D", 1..=N).await;
    for m in &members {
        copy_holds(m, "WQ", 0).await;
        let info = api(&app_client(m).await, "$JS.API.STREAM.INFO.WQ", json!({})).await;
        assert_eq!(info["state"]["last_seq"], json!(N), "{}: {info}", m.name);
    }
}

/// issue 22 (retention on R>1): an R3 interest stream with two R3 durables led by two
/// different members (A's leader is SIGKILLed and restarted before B is created: B's group is
/// initialized, and so led, by the first peer, while A's lead stayed with another), 50
/// messages: all acked by A, every copy keeps them (B still has to ack them: A's leader sees
/// it in the record B's group applied there; checked again after more than two of the
/// leaders' reconcile periods); acked by B too, every member's copy ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interest_r3_stream_drops_messages_once_every_consumer_acked() {
    let (mut members, _) = three_members_with(
        json!({"name": "INT", "subjects": ["int.>"], "num_replicas": 3, "retention": "interest"}),
    )
    .await;
    const N: u64 = 50;
    let created = durable(&members[0], "INT", "A", json!({})).await;
    assert_eq!(created["name"], "A", "{created}");
    let killed = consumer_leader_at(&members, "INT", "A").await;
    let a_leader = kill_consumer_leader(&mut members, killed, "INT", "A").await;
    members[killed].server =
        TestServer::with_config(ServerKind::Hubd, members[killed].config.clone()).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    stream_leader(&all, "INT", None).await;
    let created = durable(&members[killed], "INT", "B", json!({})).await;
    assert_eq!(created["name"], "B", "{created}");
    let b_leader = consumer_leader(&all, "INT", "B", None).await;
    assert_ne!(a_leader, b_leader, "A and B are led by different members");
    publish_n(&jetstream_on(&members[2]).await, "int", N).await;
    consume_all(&members[2], "INT", "A", 1..=N).await;
    for m in &members {
        until_answer(m, "$JS.API.CONSUMER.INFO.INT.A", "A's ack floor", |info| {
            info["ack_floor"]["stream_seq"] == json!(N)
        })
        .await;
    }
    // Past two reconcile periods of the consumers' leaders (2 s each): nothing removed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for m in &members {
        assert_eq!(copy_count(m, "INT").await, N, "{}: B has not acked", m.name);
    }
    consume_all(&members[0], "INT", "B", 1..=N).await;
    for m in &members {
        copy_holds(m, "INT", 0).await;
    }
}

/// issue 22 (retention on R>1): an R3 interest stream keeps no message nobody is interested
/// in, alike on every copy (a single server's rule, decided by the stream's leader): before
/// any consumer, three publishes acknowledged at sequences 1-3 and stored nowhere; with a
/// consumer of `int.>`, `other.x` takes sequence 4 and is stored nowhere, `int.late` (5) is
/// kept; a consumer of `other.>` created on a member not leading the stream, and a publish
/// sent right after its answer (6) is kept: the stream's leader already sees the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interest_r3_stream_keeps_no_message_nobody_is_interested_in() {
    let (members, s_leader) = three_members_with(
        json!({"name": "NI", "subjects": ["int.>", "other.>"], "num_replicas": 3,
               "retention": "interest"}),
    )
    .await;
    let js = jetstream_on(&members[1]).await;
    for i in 1..=3u64 {
        assert_eq!(sequence_of(&js, "int.early").await, i);
    }
    for m in &members {
        until_answer(m, "$JS.API.STREAM.INFO.NI", "3 sequences taken", |info| {
            info["state"]["last_seq"] == json!(3)
        })
        .await;
        assert_eq!(copy_count(m, "NI").await, 0, "{}: no interest", m.name);
    }
    let created = durable(&members[0], "NI", "A", json!({"filter_subject": "int.>"})).await;
    assert_eq!(created["name"], "A", "{created}");
    assert_eq!(sequence_of(&js, "other.x").await, 4);
    assert_eq!(sequence_of(&js, "int.late").await, 5);
    for m in &members {
        copy_holds(m, "NI", 1).await;
    }
    let at = members
        .iter()
        .find(|m| m.name != s_leader)
        .expect("a member not leading");
    let created = durable(at, "NI", "C", json!({"filter_subject": "other.>"})).await;
    assert_eq!(created["name"], "C", "{created}");
    assert_eq!(sequence_of(&jetstream_on(at).await, "other.y").await, 6);
    for m in &members {
        copy_holds(m, "NI", 2).await;
    }
}

/// issue 22 (retention on R>1): an R3 workqueue stream with 300 messages, an R3 durable
/// consumer fetched and double-acked from a client; the consumer's leader SIGKILLed after a
/// third: while the work goes on at the new leader no copy holds fewer messages than were
/// never acked (no unacked message removed); at the end every copy (the killed member
/// restarted too) is empty within a bounded wait (no acked message left forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workqueue_consumer_leader_leaves_no_acked_message() {
    let (mut members, _) = three_members_with(
        json!({"name": "WK", "subjects": ["wk.>"], "num_replicas": 3, "retention": "workqueue"}),
    )
    .await;
    const N: u64 = 300;
    publish_n(&jetstream_on(&members[0]).await, "wk", N).await;
    let created = durable(
        &members[0],
        "WK",
        "D",
        json!({"ack_wait": 3_000_000_000u64}),
    )
    .await;
    assert_eq!(created["name"], "D", "{created}");
    let mut run = KillRun::start(&members, "WK", "D", N, 30).await;
    let mut ack_sent = std::collections::BTreeSet::new();
    while let Some((got, ack_client)) = run.next(&mut members).await {
        ack_sent.extend(got.iter().map(|(seq, _)| *seq));
        run.double_acked.extend(double_ack(&ack_client, got).await);
        if run.killed_yet {
            let never_acked = N - ack_sent.len() as u64;
            for (i, m) in members.iter().enumerate() {
                if i == run.killed {
                    continue;
                }
                let stored = copy_count(m, "WK").await;
                assert!(
                    stored >= never_acked,
                    "{}: {stored} stored, {never_acked} never acked",
                    m.name
                );
            }
        }
    }
    let killed = run.killed;
    members[killed].server =
        TestServer::with_config(ServerKind::Hubd, members[killed].config.clone()).await;
    for m in &members {
        copy_holds(m, "WK", 0).await;
    }
}

/// issue 22 (retention on R>1): deleting a replicated consumer of an R3 interest stream
/// releases what only it held, on every copy: with A and B, 20 messages acked by A only,
/// `CONSUMER.DELETE` of B empties every copy; 5 more messages, none acked, and the last
/// consumer A deleted: every copy empty (nobody is left to reconcile: the delete's own
/// release, through the stream's group, does it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_consumer_of_an_interest_r3_stream_releases_what_only_it_held() {
    let (members, _) = three_members_with(
        json!({"name": "REL", "subjects": ["rel.>"], "num_replicas": 3, "retention": "interest"}),
    )
    .await;
    for (name, at) in [("A", 0), ("B", 1)] {
        let created = durable(&members[at], "REL", name, json!({})).await;
        assert_eq!(created["name"], name, "{created}");
    }
    let all: Vec<&Member> = members.iter().collect();
    consumer_leader(&all, "REL", "A", None).await;
    consumer_leader(&all, "REL", "B", None).await;
    let js = jetstream_on(&members[2]).await;
    publish_n(&js, "rel", 20).await;
    consume_all(&members[2], "REL", "A", 1..=20).await;
    for m in &members {
        assert_eq!(copy_count(m, "REL").await, 20, "{}: B holds them", m.name);
    }
    delete_and_see_every_copy_empty(&members[1], &members, "REL", "B").await;
    publish_n(&js, "rel.more", 5).await;
    for m in &members {
        copy_holds(m, "REL", 5).await;
    }
    delete_and_see_every_copy_empty(&members[0], &members, "REL", "A").await;
}

/// Deletes consumer `consumer` of `stream` through member `at`, then waits (bounded) until
/// every member's copy of the stream is empty.
async fn delete_and_see_every_copy_empty(
    at: &Member,
    members: &[Member],
    stream: &str,
    consumer: &str,
) {
    let deleted = api(
        &app_client(at).await,
        &format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
        json!({}),
    )
    .await;
    assert_eq!(deleted["success"], true, "{deleted}");
    for m in members {
        copy_holds(m, stream, 0).await;
    }
}

/// Publishes `n` messages `<prefix>.<i>` through `js`, each acknowledged (windows of 50).
async fn publish_acknowledged(js: &e2e::async_nats::jetstream::Context, prefix: &str, n: u64) {
    for window in 0..n.div_ceil(50) {
        let mut acks = Vec::new();
        for i in (window * 50)..((window + 1) * 50).min(n) {
            acks.push(
                js.publish(format!("{prefix}.{i}"), "x".into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            tokio::time::timeout(Duration::from_secs(10), ack)
                .await
                .expect("a PubAck within 10 s")
                .expect("a PubAck");
        }
    }
}

/// issue 22 (`CONSUMER.LEADER.STEPDOWN`): an R3 stream with 200 messages and an R3 durable
/// pull consumer; 60 fetched and double-acked, then the stepdown asked of a member that does
/// not lead the consumer's group (forwarded to the leader): answered as nats-server
/// (`consumer_leader_stepdown_response`, `success`), another member leads (`cluster.leader`),
/// and fetching and acking go on to the end: every sequence double-acked, none delivered again
/// after its double ack succeeded. The errors: 10014 for an unknown consumer, 10059 for an
/// unknown stream, 10036 for an R1 consumer on a member's copy (it has no group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_leader_steps_down_and_acks_go_on() {
    let (members, _) = three_members_with_an_r3_stream("SD", "sd.>").await;
    const N: u64 = 200;
    publish_acknowledged(&jetstream_on(&members[0]).await, "sd", N).await;
    let created = api(
        &app_client(&members[0]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.SD.D",
        json!({"stream_name": "SD", "config": {
            "durable_name": "D", "ack_policy": "explicit", "ack_wait": 3_000_000_000u64,
        }}),
    )
    .await;
    assert!(created["error"].is_null(), "{created}");
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "SD", "D", None).await;
    let other = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    let client = app_client(other).await;
    let mut double_acked = std::collections::BTreeSet::new();
    let mut stepped_down = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (double_acked.len() as u64) < N {
        assert!(
            Instant::now() < deadline,
            "not every message double-acked within 120 s: {} of {N}",
            double_acked.len()
        );
        if !stepped_down && double_acked.len() >= 60 {
            let answer = api(&client, "$JS.API.CONSUMER.LEADER.STEPDOWN.SD.D", json!({})).await;
            assert_eq!(
                answer,
                json!({
                    "type": "io.nats.jetstream.api.v1.consumer_leader_stepdown_response",
                    "success": true,
                }),
            );
            let new_leader = consumer_leader(&all, "SD", "D", Some(&leader)).await;
            assert_ne!(new_leader, leader);
            stepped_down = true;
        }
        let got = fetch(&client, "SD", "D", 20).await;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        for (seq, _) in &got {
            assert!(
                !double_acked.contains(seq),
                "stream sequence {seq} delivered again after its double ack succeeded"
            );
        }
        double_acked.extend(double_ack(&client, got).await);
    }
    assert!(stepped_down);
    assert_eq!(
        double_acked.iter().copied().collect::<Vec<u64>>(),
        (1..=N).collect::<Vec<u64>>()
    );
    let code = |answer: &Value| answer["error"]["err_code"].clone();
    let unknown = api(
        &client,
        "$JS.API.CONSUMER.LEADER.STEPDOWN.SD.NOPE",
        json!({}),
    )
    .await;
    assert_eq!(code(&unknown), 10014, "{unknown}");
    let no_stream = api(
        &client,
        "$JS.API.CONSUMER.LEADER.STEPDOWN.NOPE.D",
        json!({}),
    )
    .await;
    assert_eq!(code(&no_stream), 10059, "{no_stream}");
    let r1 = api(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.SD.ONE",
        json!({"stream_name": "SD", "config": {
            "durable_name": "ONE", "ack_policy": "explicit", "num_replicas": 1,
        }}),
    )
    .await;
    assert!(r1["error"].is_null(), "{r1}");
    let r1_down = api(
        &client,
        "$JS.API.CONSUMER.LEADER.STEPDOWN.SD.ONE",
        json!({}),
    )
    .await;
    assert_eq!(code(&r1_down), 10036, "{r1_down}");
}

/// issue 22 (config update of a replicated consumer): an R3 durable pull consumer
/// (`ack_wait` 120 s, `max_ack_pending` 1) with one message delivered and not acknowledged;
/// `DURABLE.CREATE` with `ack_wait` 1 s and `max_deliver` 3 sent to a member not leading its
/// group: answered with the new configuration, and `CONSUMER.INFO` on every member shows it;
/// a change nats-server does not allow (`deliver_policy`) is refused (10012) and `action:
/// create` with another configuration answers 10148. After a stepdown the new leader uses
/// the new `ack_wait`: the unacknowledged message is delivered again well before 120 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_consumer_update_reaches_every_member_and_the_next_leader() {
    let (members, _) = three_members_with_an_r3_stream("UPD", "upd.>").await;
    publish_acknowledged(&jetstream_on(&members[0]).await, "upd", 5).await;
    let config = json!({
        "durable_name": "D", "ack_policy": "explicit", "ack_wait": 120_000_000_000u64,
        "max_ack_pending": 1,
    });
    let created = api(
        &app_client(&members[0]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.UPD.D",
        json!({"stream_name": "UPD", "config": config}),
    )
    .await;
    assert!(created["error"].is_null(), "{created}");
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "UPD", "D", None).await;
    let other = members
        .iter()
        .find(|m| m.name != leader)
        .expect("a member not leading");
    let client = app_client(other).await;
    let first = loop {
        let got = fetch(&client, "UPD", "D", 1).await;
        if let Some((seq, _)) = got.first() {
            break *seq;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(first, 1);
    let mut updated = config.clone();
    updated["ack_wait"] = json!(1_000_000_000u64);
    updated["max_deliver"] = json!(3);
    let answer = api(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.UPD.D",
        json!({"stream_name": "UPD", "config": updated}),
    )
    .await;
    assert!(answer["error"].is_null(), "{answer}");
    assert_eq!(answer["config"]["ack_wait"], 1_000_000_000u64, "{answer}");
    assert_eq!(answer["config"]["max_deliver"], 3, "{answer}");
    for m in &members {
        until_answer(m, "$JS.API.CONSUMER.INFO.UPD.D", "updated", |info| {
            info["config"]["ack_wait"] == json!(1_000_000_000u64)
                && info["config"]["max_deliver"] == json!(3)
        })
        .await;
    }
    let mut refused = updated.clone();
    refused["deliver_policy"] = json!("last");
    let answer = api(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.UPD.D",
        json!({"stream_name": "UPD", "config": refused}),
    )
    .await;
    assert_eq!(answer["error"]["err_code"], 10012, "{answer}");
    let mut other_config = updated.clone();
    other_config["max_deliver"] = json!(4);
    let answer = api(
        &client,
        "$JS.API.CONSUMER.CREATE.UPD.D",
        json!({"stream_name": "UPD", "config": other_config, "action": "create"}),
    )
    .await;
    assert_eq!(answer["error"]["err_code"], 10148, "{answer}");
    let down = api(&client, "$JS.API.CONSUMER.LEADER.STEPDOWN.UPD.D", json!({})).await;
    assert_eq!(down["success"], true, "{down}");
    let new_leader = consumer_leader(&all, "UPD", "D", Some(&leader)).await;
    let at_new = members
        .iter()
        .find(|m| m.name == new_leader)
        .expect("the new leader");
    until_answer(at_new, "$JS.API.CONSUMER.INFO.UPD.D", "updated", |info| {
        info["config"]["ack_wait"] == json!(1_000_000_000u64)
    })
    .await;
    // Delivered again by the new leader after the new ack_wait (the old one is 120 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = fetch(&client, "UPD", "D", 1).await;
        if got.first().map(|(seq, _)| *seq) == Some(1) {
            break;
        }
        assert!(got.is_empty(), "another message than 1 delivered: {got:?}");
        assert!(
            Instant::now() < deadline,
            "message 1 not delivered again within 60 s"
        );
    }
}

/// issue 22 (replicated push consumers): an R3 stream with 300 messages and an R3 durable
/// push consumer (`deliver_subject`, explicit ack) whose subscriber is a client of a member
/// not leading the consumer's group (the leader delivers over a route); the subscriber
/// double-acks each message; the consumer leader SIGKILLed mid-way: delivery goes on from
/// the new leader, every sequence double-acked, none delivered again after its double ack
/// succeeded, none skipped; the killed member restarted shows the ack floor 300.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_push_consumer_delivers_through_a_killed_leader() {
    let (mut members, _) = three_members_with_an_r3_stream("PUSH", "push.>").await;
    const N: u64 = 300;
    publish_acknowledged(&jetstream_on(&members[0]).await, "push", N).await;
    let created = api(
        &app_client(&members[0]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.PUSH.P",
        json!({"stream_name": "PUSH", "config": {
            "durable_name": "P", "ack_policy": "explicit", "ack_wait": 3_000_000_000u64,
            "deliver_subject": "dlv.P", "max_ack_pending": 20,
        }}),
    )
    .await;
    assert!(created["error"].is_null(), "{created}");
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "PUSH", "P", None).await;
    let killed = members
        .iter()
        .position(|m| m.name == leader)
        .expect("the leader");
    // The leader as it sees itself (another member's view may be a term behind).
    until_answer(
        &members[killed],
        "$JS.API.CONSUMER.INFO.PUSH.P",
        "leading",
        |info| info["cluster"]["leader"] == json!(leader),
    )
    .await;
    let at = members
        .iter()
        .position(|m| m.name != leader)
        .expect("a member not leading");
    let client = app_client(&members[at]).await;
    let mut sub = client.subscribe("dlv.P").await.expect("subscribe");
    client.flush().await.expect("flush");
    let mut double_acked = std::collections::BTreeSet::new();
    let mut received = std::collections::BTreeSet::new();
    let mut killed_yet = false;
    // Each delivery double-acked as it arrives (concurrently: a double ack the dead leader
    // never answers waits out its 5 s while delivery goes on).
    let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Until every sequence was received and double-acked, or received and acknowledged in
    // the leader's state (a double ack the leader took may still time out at the client: it
    // is then never delivered again, and the ack floor below shows it).
    while (double_acked.len() as u64) < N {
        if received.len() as u64 == N && outcomes.is_empty() {
            let live = all_but(&members, killed);
            let leader_now = consumer_leader(&live, "PUSH", "P", None).await;
            // Not the killed member (a survivor may still name it until the election).
            if let Some(at_leader) = live.iter().find(|m| m.name == leader_now) {
                let info = api(
                    &app_client(at_leader).await,
                    "$JS.API.CONSUMER.INFO.PUSH.P",
                    json!({}),
                )
                .await;
                if info["ack_floor"]["stream_seq"] == json!(N) {
                    break;
                }
            }
        }
        if Instant::now() >= deadline {
            let mut infos = Vec::new();
            for (i, m) in members.iter().enumerate().filter(|(i, _)| *i != killed) {
                let client = app_client(m).await;
                let info = api(&client, "$JS.API.CONSUMER.INFO.PUSH.P", json!({})).await;
                infos.push(format!("{i} {}: {info}", m.name));
            }
            let missing: Vec<u64> = (1..=N).filter(|s| !double_acked.contains(s)).collect();
            panic!(
                "not every message double-acked within 120 s: {} of {N}, missing {missing:?}; {infos:#?}",
                double_acked.len()
            );
        }
        if !killed_yet && double_acked.len() as u64 >= N / 3 {
            members[killed].server.kill();
            killed_yet = true;
        }
        let msg = tokio::select! {
            biased;
            acked = outcomes.recv() => {
                double_acked.extend(acked.unwrap_or_default());
                continue;
            }
            msg = tokio::time::timeout(Duration::from_secs(5), sub.next()) => msg,
        };
        let Ok(Some(msg)) = msg else {
            continue;
        };
        let Some(reply) = msg.reply.as_ref().map(|r| r.to_string()) else {
            continue; // a heartbeat or flow control
        };
        let tokens: Vec<&str> = reply.split('.').collect();
        let Some(seq) = tokens.get(5).and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        assert!(
            !double_acked.contains(&seq),
            "stream sequence {seq} delivered again after its double ack succeeded"
        );
        received.insert(seq);
        let (client, done) = (client.clone(), done.clone());
        tokio::spawn(async move {
            let _ = done.send(double_ack(&client, vec![(seq, reply)]).await);
        });
    }
    assert!(killed_yet, "the consumer leader was killed mid-way");
    assert_eq!(
        received.iter().copied().collect::<Vec<u64>>(),
        (1..=N).collect::<Vec<u64>>(),
        "every message delivered"
    );
    members[killed].server =
        TestServer::with_config(ServerKind::Hubd, members[killed].config.clone()).await;
    for m in &members {
        until_answer(m, "$JS.API.CONSUMER.INFO.PUSH.P", "the ack floor", |info| {
            info["ack_floor"]["stream_seq"] == json!(N)
        })
        .await;
    }
}

/// issue 22 (`SERVER.REMOVE`): four hubd members, an R3 stream on three of them with 20
/// messages; a peer of the stream that does not lead the meta group SIGKILLed and removed with
/// `$JS.API.SERVER.REMOVE` (system account, `{"peer": <name>}`, asked of a member that may not
/// lead: the meta leader answers): answered as nats-server, the stream's peers become the three
/// live members (the fourth caught up: every copy holds every message), a publish reaches all
/// three, its replicated consumer's group moves alike (every live member shows the three as
/// its peers and the ack floor 10), and the meta group counts three members. An unknown
/// server answers 10044. (Whichever peer is killed: the stream's leader too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_is_replaced_in_its_streams() {
    let mut members = cluster(&[ServerKind::Hubd; 4]).await;
    let all: Vec<&Member> = members.iter().collect();
    let meta_leader = agreed_leader(&all, None).await;
    let created = create(
        &app_client(&members[0]).await,
        json!({"name": "SRV", "subjects": ["srv.>"], "num_replicas": 3}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    let stream_leader_name = stream_leader(&all, "SRV", None).await;
    for i in 1..=20 {
        assert_eq!(
            acknowledged(&members[0], &format!("srv.{i}")).await["seq"],
            i
        );
    }
    // A replicated consumer of the stream with 10 messages double-acked.
    let created = api(
        &app_client(&members[0]).await,
        "$JS.API.CONSUMER.DURABLE.CREATE.SRV.C",
        json!({"stream_name": "SRV", "config": {"durable_name": "C", "ack_policy": "explicit"}}),
    )
    .await;
    assert!(created["error"].is_null(), "{created}");
    let client = app_client(&members[0]).await;
    let mut acked = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "10 messages not double-acked: {acked:?}"
        );
        let want = 10 - acked.len() as u64;
        let got = fetch(&client, "SRV", "C", want).await;
        acked.extend(double_ack(&client, got).await);
    }
    let at_leader = &members[leader_and_other(&members, &stream_leader_name).0];
    let info = api(
        &app_client(at_leader).await,
        "$JS.API.STREAM.INFO.SRV",
        json!({}),
    )
    .await;
    let peers = group_members(&info);
    assert_eq!(peers.len(), 3, "{info}");
    // The stream's leader when it does not lead the meta group (the harder case: the moves
    // wait for the group's next leader), else another peer.
    let victim = members
        .iter()
        .position(|m| m.name == stream_leader_name && m.name != meta_leader)
        .or_else(|| {
            members
                .iter()
                .position(|m| peers.contains(&m.name) && m.name != meta_leader)
        })
        .expect("a peer of the stream not leading the meta group");
    let victim_name = members[victim].name.clone();
    members[victim].server.kill();
    let live: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, m)| m)
        .collect();
    let asked = live
        .iter()
        .find(|m| m.name != meta_leader)
        .expect("a live member not leading the meta group");
    let sys = sys_client(asked).await;
    let unknown = api(&sys, "$JS.API.SERVER.REMOVE", json!({"peer": "nobody"})).await;
    assert_eq!(unknown["error"]["err_code"], 10044, "{unknown}");
    let removed = api(&sys, "$JS.API.SERVER.REMOVE", json!({"peer": victim_name})).await;
    assert_eq!(
        removed,
        json!({"type": "io.nats.jetstream.api.v1.meta_server_remove_response", "success": true}),
    );
    let mut want: Vec<String> = live.iter().map(|m| m.name.clone()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = stream_leader(&live, "SRV", Some(&victim_name)).await;
        let at = live
            .iter()
            .find(|m| m.name == leader)
            .expect("the stream leader is live");
        let info = api(&app_client(at).await, "$JS.API.STREAM.INFO.SRV", json!({})).await;
        let mut now = group_members(&info);
        now.sort();
        if now == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream's peers are not the live members within 60 s: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = copy_of(live[0], "SRV", 20).await;
    assert_eq!(
        first.iter().map(|(seq, _, _)| *seq).collect::<Vec<u64>>(),
        (1..=20).collect::<Vec<u64>>()
    );
    for m in &live[1..] {
        assert_eq!(copy_of(m, "SRV", 20).await, first, "{}", m.name);
    }
    assert_eq!(acknowledged(live[0], "srv.21").await["seq"], 21);
    for m in &live {
        assert_eq!(copy_of(m, "SRV", 21).await.len(), 21, "{}", m.name);
    }
    // The consumer's group moved alike: the three live members, each with its state.
    for m in &live {
        until_answer(m, "$JS.API.CONSUMER.INFO.SRV.C", "moved", |info| {
            let mut now = group_members(info);
            now.sort();
            now == want && info["ack_floor"]["stream_seq"] == json!(10)
        })
        .await;
    }
    let leader_member = live
        .iter()
        .find(|m| m.name == meta_leader)
        .expect("the meta leader is live");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let meta = meta_cluster(leader_member).await;
        if meta["cluster_size"] == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the meta group still counts the removed server: {meta}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The members but the one at `skip`.
fn all_but(members: &[Member], skip: usize) -> Vec<&Member> {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != skip)
        .map(|(_, m)| m)
        .collect()
}

/// SIGKILLs `m` (a process the test started) and restarts it on the same client port, store
/// and configuration, so that its clients reconnect to the same URL.
async fn restart_in_place(m: &mut Member) {
    let port = m.server.port();
    m.server.kill();
    m.server = TestServer::builder(ServerKind::Hubd)
        .config(m.config.clone())
        .port(port)
        .start()
        .await;
}

/// A client of the global account on `m` only (no other URL), reconnecting as async-nats does
/// by default, and a flag set when it is disconnected.
async fn reconnecting_client(
    m: &Member,
) -> (
    e2e::async_nats::Client,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let was_down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = was_down.clone();
    let client = m
        .server
        .client_with(
            TestServer::options()
                .user_and_password("g".into(), "g".into())
                .event_callback(move |event| {
                    let flag = flag.clone();
                    async move {
                        if matches!(event, e2e::async_nats::Event::Disconnected) {
                            flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }),
        )
        .await;
    (client, was_down)
}

/// Waits (bounded: 30 s) until `client` went through a disconnection (`was_down`, set by the
/// caller's event callback) and is connected again.
async fn until_reconnected(
    client: &e2e::async_nats::Client,
    was_down: &std::sync::atomic::AtomicBool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(was_down.load(std::sync::atomic::Ordering::SeqCst)
        && client.connection_state() == e2e::async_nats::connection::State::Connected)
    {
        assert!(
            Instant::now() < deadline,
            "the client did not reconnect within 30 s: {:?}",
            client.connection_state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A publish of `subject` with `Nats-Msg-Id` `id` through `js`, retried (a new attempt every
/// 3 s, bounded: 40 s) until acknowledged: its sequence, or the last error.
async fn acknowledged_within(
    js: &e2e::async_nats::jetstream::Context,
    subject: &str,
    id: &str,
) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    while Instant::now() < deadline {
        match js
            .publish_with_headers(subject.to_owned(), with_id(id), id.to_owned().into())
            .await
        {
            Ok(ack) => match tokio::time::timeout(Duration::from_secs(3), ack).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) => last = format!("PubAck: {e}"),
                Err(_) => last = "no PubAck within 3 s".to_owned(),
            },
            Err(e) => last = format!("publish: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// The reconnect symptom of issue 22: a client on member X (not the stream's leader) publishes
/// with PubAcks, X is SIGKILLed and restarted on the same port and store, the client
/// reconnects to it by itself (async-nats' default reconnect): its publishes are acknowledged
/// again (bounded), as a fresh client's on X are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnected_to_a_restarted_member_gets_pub_acks() {
    let (mut members, leader) = three_members_with_an_r3_stream("ORDERS", "orders.>").await;
    let (_, x) = leader_and_other(&members, &leader);
    let (client, was_down) = reconnecting_client(&members[x]).await;
    let js = e2e::async_nats::jetstream::new(client.clone());
    for i in 0..5 {
        acknowledged_within(&js, &format!("orders.{i}"), &format!("before{i}"))
            .await
            .unwrap_or_else(|e| panic!("before the restart, publish {i}: {e}"));
    }
    restart_in_place(&mut members[x]).await;
    until_reconnected(&client, &was_down).await;
    for i in 0..5 {
        acknowledged_within(&js, &format!("orders.{i}"), &format!("after{i}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "after the reconnect to {}, publish {i}: {e}\n---- {} log ----\n{}",
                    members[x].name,
                    members[x].name,
                    members[x].server.log()
                )
            });
    }
    // A fresh client on X is acknowledged too.
    let fresh = jetstream_on(&members[x]).await;
    acknowledged_within(&fresh, "orders.fresh", "fresh")
        .await
        .unwrap_or_else(|e| panic!("a fresh client on {}: {e}", members[x].name));
}

/// The same reconnect with core request/reply: a responder on another member, a requester on
/// member X that is SIGKILLed and restarted in place: once reconnected, its requests are
/// answered again (bounded), i.e. its inbox's interest reaches the other members anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_reconnected_to_a_restarted_member_gets_replies() {
    let mut members = cluster(&[ServerKind::Hubd; 3]).await;
    let responder = app_client(&members[1]).await;
    let mut service = responder.subscribe("svc.echo").await.expect("subscribed");
    tokio::spawn(async move {
        while let Some(msg) = service.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
    let (client, was_down) = reconnecting_client(&members[0]).await;
    let answered = |client: e2e::async_nats::Client, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let outcome = tokio::time::timeout(
                Duration::from_secs(3),
                client.request("svc.echo", what.into()),
            )
            .await;
            match outcome {
                Ok(Ok(answer)) if answer.payload == what.as_bytes() => return,
                other => assert!(
                    Instant::now() < deadline,
                    "{what}: no answer within 40 s: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    answered(client.clone(), "before").await;
    restart_in_place(&mut members[0]).await;
    until_reconnected(&client, &was_down).await;
    answered(client.clone(), "after").await;
}

/// Issue 22's first CI test with one URL: a client on the stream leader's member X publishes
/// async with `Nats-Msg-Id`, X is SIGKILLed with a window in flight and restarted in place
/// (at once: it resumes as leader; or once the others elected a new leader), the client
/// reconnects to X and publishes every id again (the acknowledged ones are duplicates): all
/// acknowledged within the bound, each stored once.
async fn a_client_of_a_restarted_stream_leader_case(elect_first: bool, meta: bool) {
    let (mut members, stream_leader_name) =
        three_members_with_an_r3_stream("ORDERS", "orders.>").await;
    let leader = if meta {
        let all: Vec<&Member> = members.iter().collect();
        agreed_leader(&all, None).await
    } else {
        stream_leader_name
    };
    let (x, _) = leader_and_other(&members, &leader);
    let (client, was_down) = reconnecting_client(&members[x]).await;
    let js = e2e::async_nats::jetstream::new(client.clone());
    const N: usize = 200;
    let first = publish_until_acknowledged(&js, N / 2, |_| {}).await;
    // A window in flight when X dies.
    let mut pending = Vec::new();
    for i in N / 2..N / 2 + 20 {
        if let Ok(ack) = js
            .publish_with_headers(
                format!("orders.{i}"),
                with_id(&format!("m{i}")),
                format!("p{i}").into(),
            )
            .await
        {
            pending.push(ack);
        }
    }
    let port = members[x].server.port();
    members[x].server.kill();
    drop(pending);
    if elect_first {
        let survivors = survivors(&members, x);
        if meta {
            agreed_leader(&survivors, Some(&leader)).await;
        }
        stream_leader(&survivors, "ORDERS", Some(&members[x].name)).await;
    }
    members[x].server = TestServer::builder(ServerKind::Hubd)
        .config(members[x].config.clone())
        .port(port)
        .start()
        .await;
    until_reconnected(&client, &was_down).await;
    let acked = publish_until_acknowledged(&js, N, |_| {}).await;
    assert_eq!(
        acked[..N / 2],
        first[..],
        "the first half again: duplicates"
    );
    for m in &members {
        let copy = copy_of(m, "ORDERS", N as u64).await;
        exactly_once(m, &copy, &acked);
    }
}

/// See [`a_client_of_a_restarted_stream_leader_case`]: restarted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_restarted_stream_leader_gets_pub_acks_again() {
    a_client_of_a_restarted_stream_leader_case(false, false).await;
}

/// See [`a_client_of_a_restarted_stream_leader_case`]: restarted after a new election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_replaced_stream_leader_gets_pub_acks_again() {
    a_client_of_a_restarted_stream_leader_case(true, false).await;
}

/// See [`a_client_of_a_restarted_stream_leader_case`]: the meta leader's member, restarted
/// after a new meta election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_replaced_meta_leader_gets_pub_acks_again() {
    a_client_of_a_restarted_stream_leader_case(true, true).await;
}

/// Issue 22's first CI test with one URL, the publishes going on through the restart: a client
/// on member X (the stream leader's, or another) publishes async windows with `Nats-Msg-Id`;
/// once a third is acknowledged X is SIGKILLed, and restarted in place 2 s later (the others
/// meanwhile elect, when X led); the client, given only X's URL, reconnects and goes on: every
/// publish acknowledged (bounded), each stored once on every copy.
async fn publishes_through_a_restart_of_the_clients_member(x_leads: bool) {
    let (mut members, leader) = three_members_with_an_r3_stream("ORDERS", "orders.>").await;
    let (at_leader, other) = leader_and_other(&members, &leader);
    let x = if x_leads { at_leader } else { other };
    let (client, was_down) = reconnecting_client(&members[x]).await;
    let js = e2e::async_nats::jetstream::new(client);
    let mut victim = members.remove(x);
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let restarter = tokio::spawn(async move {
        if go_rx.await.is_ok() {
            let port = victim.server.port();
            victim.server.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            victim.server = TestServer::builder(ServerKind::Hubd)
                .config(victim.config.clone())
                .port(port)
                .start()
                .await;
        }
        victim
    });
    let mut go = Some(go_tx);
    const N: usize = 600;
    let acked = publish_until_acknowledged(&js, N, |done| {
        if done >= N / 3 {
            if let Some(tx) = go.take() {
                let _ = tx.send(());
            }
        }
    })
    .await;
    assert!(go.is_none(), "the member was killed mid-way");
    let victim = restarter.await.expect("restarted");
    assert!(
        was_down.load(std::sync::atomic::Ordering::SeqCst),
        "the client saw its member go"
    );
    members.insert(x, victim);
    for m in &members {
        let copy = copy_of(m, "ORDERS", N as u64).await;
        exactly_once(m, &copy, &acked);
    }
}

/// See [`publishes_through_a_restart_of_the_clients_member`]: X leads the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_go_on_through_a_restart_of_the_clients_stream_leader() {
    publishes_through_a_restart_of_the_clients_member(true).await;
}

/// See [`publishes_through_a_restart_of_the_clients_member`]: X does not lead the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_go_on_through_a_restart_of_the_clients_member() {
    publishes_through_a_restart_of_the_clients_member(false).await;
}

/// `STREAM.UPDATE` of replicated stream `config["name"]` with `config` through `m` (the answer).
async fn update_stream(m: &Member, config: Value) -> Value {
    let subject = format!(
        "$JS.API.STREAM.UPDATE.{}",
        config["name"].as_str().unwrap_or_default()
    );
    api(&app_client(m).await, &subject, config).await
}

/// Waits (bounded) until every one of `members` shows stream `stream` with `config.num_replicas`
/// `r` and its group as the members named `peers` (the leader and the replicas of its
/// `STREAM.INFO`, in any order); on the group's leader each replica is also `current`.
async fn until_rescaled(members: &[&Member], stream: &str, r: u64, peers: &[String]) {
    let mut want = peers.to_vec();
    want.sort();
    let subject = format!("$JS.API.STREAM.INFO.{stream}");
    for m in members {
        until_answer(m, &subject, &format!("R{r} on {want:?}"), |info| {
            let mut now = group_members(info);
            now.sort();
            let leading = info["cluster"]["leader"].as_str() == Some(m.name.as_str());
            let current = info["cluster"]["replicas"]
                .as_array()
                .is_some_and(|rs| rs.iter().all(|r| r["current"] == true));
            info["config"]["num_replicas"] == json!(r) && now == want && (!leading || current)
        })
        .await;
    }
}

/// issue 22, a change of `num_replicas`: five members, an R3 stream with an R3 durable (its
/// R inherited) that double-acked the first 30 messages; 30 publishes with msg ids, then
/// `STREAM.UPDATE` to R5 through a member: answered with R5; every member shows R5, the five
/// members as the group (each replica current on the leader) and the consumer's group on the
/// five; 30 more publishes, the stream's former leader SIGKILLed, 20 more: every live copy,
/// the two new ones included, holds the 80 ids once, in order, at their acknowledged
/// sequences. Then down to R3 while the killed member is still down: the group becomes three
/// live members (the down one dropped first, the leader kept), each live member shows R3,
/// the two others drop their copy, publishes are still acknowledged and the consumer keeps
/// its ack floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rescaled_from_r3_to_r5_and_back_keeps_every_message() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(rescaled_from_r3_to_r5_and_back()).await;
}

/// See [`a_stream_rescaled_from_r3_to_r5_and_back_keeps_every_message`].
async fn rescaled_from_r3_to_r5_and_back() {
    let mut members = cluster(&[ServerKind::Hubd; 5]).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let config = json!({"name": "SCALE", "subjects": ["orders.>"], "num_replicas": 3});
    let created = create(&app_client(&members[0]).await, config.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    let old_leader = stream_leader(&all, "SCALE", None).await;
    let js = jetstream_on(&members[0]).await;
    let first = publish_until_acknowledged(&js, 30, |_| {}).await;
    assert_eq!(first, (1..=30).collect::<Vec<u64>>());
    let made = durable(&members[0], "SCALE", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    consume_all(&members[0], "SCALE", "D", 1..=30).await;

    let grown = update_stream(&members[1], with_replicas(&config, 5)).await;
    assert!(grown["error"].is_null(), "{grown}");
    assert_eq!(grown["config"]["num_replicas"], 5, "{grown}");
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    until_rescaled(&all, "SCALE", 5, &names).await;
    for m in &all {
        until_answer(m, "$JS.API.CONSUMER.INFO.SCALE.D", "on five", |info| {
            group_members(info).len() == 5 && info["ack_floor"]["stream_seq"] == json!(30)
        })
        .await;
    }

    // Publishes go on from a member that is not the old leader; the old leader goes.
    let (killed, via) = leader_and_other(&members, &old_leader);
    let js = jetstream_on(&members[via]).await;
    let second = publish_until_acknowledged(&js, 60, |_| {}).await;
    assert_eq!(second[..30], first[..], "the first 30 are duplicates");
    members[killed].server.kill();
    let live = all_but(&members, killed);
    stream_leader(&live, "SCALE", Some(&old_leader)).await;
    let acked = publish_until_acknowledged(&js, 80, |_| {}).await;
    assert_eq!(acked[..60], second[..]);
    let mut seqs = acked.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=80).collect::<Vec<u64>>(), "no gap, no double");
    for m in &live {
        let copy = copy_of(m, "SCALE", 80).await;
        exactly_once(m, &copy, &acked);
    }

    // Down to R3 with the killed member still down: it is dropped first, the leader stays.
    // (The killed member may have led the meta group: without a meta leader a rescale
    // answers 10008 and changes nothing.)
    agreed_leader(&live, Some(&old_leader)).await;
    let leader = stream_leader(&live, "SCALE", Some(&old_leader)).await;
    let shrunk = update_stream(live[0], config.clone()).await;
    assert!(shrunk["error"].is_null(), "{shrunk}");
    assert_eq!(shrunk["config"]["num_replicas"], 3, "{shrunk}");
    let info = info_on(&live, &leader, "SCALE").await;
    let peers = group_members(&info);
    assert_eq!(peers.len(), 3, "{info}");
    assert!(peers.contains(&leader), "the leader kept: {info}");
    assert!(
        !peers.contains(&old_leader),
        "the down member dropped: {info}"
    );
    until_rescaled(&live, "SCALE", 3, &peers).await;
    for m in live.iter().filter(|m| !peers.contains(&m.name)) {
        until_engine_streams(m, 0).await;
    }
    assert_eq!(acknowledged(live[0], "orders.x").await["seq"], 81);
    for m in live.iter().filter(|m| peers.contains(&m.name)) {
        assert_eq!(copy_of(m, "SCALE", 81).await.len(), 81, "{}", m.name);
        until_answer(m, "$JS.API.CONSUMER.INFO.SCALE.D", "on three", |info| {
            let mut now = group_members(info);
            now.sort();
            let mut want = peers.clone();
            want.sort();
            now == want && info["ack_floor"]["stream_seq"] == json!(30)
        })
        .await;
    }
}

/// `STREAM.INFO` of `stream` on the member of `members` named `name`.
async fn info_on(members: &[&Member], name: &str, stream: &str) -> Value {
    let m = members
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} is not among the members"));
    let subject = format!("$JS.API.STREAM.INFO.{stream}");
    api(&app_client(m).await, &subject, json!({})).await
}

/// Stream configuration `config` with `num_replicas` `r`.
fn with_replicas(config: &Value, r: u64) -> Value {
    let mut config = config.clone();
    config["num_replicas"] = json!(r);
    config
}

/// issue 22, a change of `num_replicas` on three members: R3 to R5 is refused as a create of
/// an R5 stream is (10005, the same text), to R6 too (10052), each leaving the stream as it
/// was (R3 to R1 is built: `a_stream_updated_to_r1_keeps_its_leaders_copy`); an R1 stream to
/// R6 is refused (10052), to R3 accepted (then deleted). R3 to R2 through the
/// member that will be dropped: answered with R2, the leader kept, the dropped member's copy
/// gone, every member showing R2; a publish through the dropped member acknowledged. Back to
/// R3: the member added again catches up (every copy holds the 21 messages in order), the
/// replicated consumer's group is on the three again with its ack floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shrinks_to_r2_and_grows_back_to_r3() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(shrinks_to_r2_and_grows_back()).await;
}

/// See [`a_stream_shrinks_to_r2_and_grows_back_to_r3`].
async fn shrinks_to_r2_and_grows_back() {
    let (members, leader) = three_members_with_an_r3_stream("SHRINK", "shrink.>").await;
    let all: Vec<&Member> = members.iter().collect();
    let config = json!({"name": "SHRINK", "subjects": ["shrink.>"], "num_replicas": 3});
    for i in 1..=20 {
        assert_eq!(
            acknowledged(&members[0], &format!("shrink.{i}")).await["seq"],
            i
        );
    }
    let made = durable(&members[0], "SHRINK", "D", json!({"num_replicas": 3})).await;
    assert!(made["error"].is_null(), "{made}");
    consume_all(&members[0], "SHRINK", "D", 1..=20).await;
    Box::pin(refused_rescales(&members, &config)).await;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    until_rescaled(&all, "SHRINK", 3, &names).await;
    Box::pin(shrink_and_grow_back(&members, &leader, &config)).await;
}

/// The changes of `num_replicas` of R3 stream `config` on three `members` that are refused.
async fn refused_rescales(members: &[Member], config: &Value) {
    let too_many = update_stream(&members[0], with_replicas(config, 5)).await;
    let client = app_client(&members[0]).await;
    let create_r5 = create(
        &client,
        json!({"name": "R5", "subjects": ["r5.>"], "num_replicas": 5}),
    )
    .await;
    assert_eq!(too_many["error"]["err_code"], 10005, "{too_many}");
    assert_eq!(too_many["error"], create_r5["error"], "as a create answers");
    let to_r6 = update_stream(&members[0], with_replicas(config, 6)).await;
    assert_eq!(to_r6["error"]["err_code"], 10052, "{to_r6}");
    let plain = json!({"name": "PLAIN", "subjects": ["plain.>"]});
    let created = create(&client, plain.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    let plain_r6 = update_stream(&members[0], with_replicas(&plain, 6)).await;
    assert_eq!(plain_r6["error"]["err_code"], 10052, "{plain_r6}");
    // R1 to R3 is built (`an_r1_stream_updated_to_r3_keeps_every_message`); the stream made
    // replicated is then deleted as any other.
    let plain_r3 = update_stream(&members[0], with_replicas(&plain, 3)).await;
    assert!(plain_r3["error"].is_null(), "{plain_r3}");
    let all: Vec<&Member> = members.iter().collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    until_rescaled(&all, "PLAIN", 3, &names).await;
    let deleted = api(&client, "$JS.API.STREAM.DELETE.PLAIN", json!({})).await;
    assert_eq!(deleted["success"], true, "{deleted}");
}

/// Stream `config` (R3 on `members`, led by `leader`) down to R2 and back to R3.
async fn shrink_and_grow_back(members: &[Member], leader: &str, config: &Value) {
    let all: Vec<&Member> = members.iter().collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let leader = leader.to_owned();
    // Down to R2, asked on a member that is not the leader.
    let (_, other) = leader_and_other(members, &leader);
    let shrunk = update_stream(&members[other], with_replicas(config, 2)).await;
    assert!(shrunk["error"].is_null(), "{shrunk}");
    assert_eq!(shrunk["config"]["num_replicas"], 2, "{shrunk}");
    let info = info_on(&all, &leader, "SHRINK").await;
    let peers = group_members(&info);
    assert_eq!(peers.len(), 2, "{info}");
    assert!(peers.contains(&leader), "the leader kept: {info}");
    until_rescaled(&all, "SHRINK", 2, &peers).await;
    let dropped = members
        .iter()
        .find(|m| !peers.contains(&m.name))
        .expect("a dropped member");
    until_engine_streams(dropped, 0).await;
    assert_eq!(acknowledged(dropped, "shrink.21").await["seq"], 21);
    for m in members.iter().filter(|m| peers.contains(&m.name)) {
        until_answer(m, "$JS.API.CONSUMER.INFO.SHRINK.D", "on two", |info| {
            group_members(info).len() == 2
                && info["config"]["num_replicas"] == json!(2)
                && info["ack_floor"]["stream_seq"] == json!(20)
        })
        .await;
    }

    // Back to R3: the dropped member is the one added.
    let grown = update_stream(dropped, config.clone()).await;
    assert!(grown["error"].is_null(), "{grown}");
    until_rescaled(&all, "SHRINK", 3, &names).await;
    let first = copy_of(&members[0], "SHRINK", 21).await;
    assert_eq!(
        first.iter().map(|(seq, _, _)| *seq).collect::<Vec<u64>>(),
        (1..=21).collect::<Vec<u64>>()
    );
    for m in &members[1..] {
        assert_eq!(copy_of(m, "SHRINK", 21).await, first, "{}", m.name);
    }
    for m in &all {
        until_answer(m, "$JS.API.CONSUMER.INFO.SHRINK.D", "on three", |info| {
            group_members(info).len() == 3 && info["ack_floor"]["stream_seq"] == json!(20)
        })
        .await;
    }
    consume_all(dropped, "SHRINK", "D", 21..=21).await;
}

/// issue 22, `CONSUMER.INFO` `cluster.replicas` from the consumer group's Raft metrics: on
/// the group's leader both replicas of an R3 consumer are `current` with `lag` 0 and an
/// `active` time; a replica SIGKILLed shows `current: false` there (bounded wait), the other
/// stays current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consumer_replica_is_not_current() {
    let (mut members, _) = three_members_with_an_r3_stream("CREP", "crep.>").await;
    for i in 1..=5 {
        assert_eq!(
            acknowledged(&members[0], &format!("crep.{i}")).await["seq"],
            i
        );
    }
    let made = durable(&members[0], "CREP", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    consume_all(&members[0], "CREP", "D", 1..=5).await;
    let all: Vec<&Member> = members.iter().collect();
    let leader = consumer_leader(&all, "CREP", "D", None).await;
    let (at, victim) = leader_and_other(&members, &leader);
    until_answer(
        &members[at],
        "$JS.API.CONSUMER.INFO.CREP.D",
        "all current",
        |info| {
            let replicas = info["cluster"]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            info["cluster"]["leader"] == json!(leader)
                && replicas.len() == 2
                && replicas.iter().all(|r| {
                    r["current"] == true
                    && r["lag"].as_u64().unwrap_or(0) == 0 // omitted when 0
                    && r["active"].as_u64().is_some()
                })
        },
    )
    .await;
    let victim_name = members[victim].name.clone();
    members[victim].server.kill();
    until_answer(
        &members[at],
        "$JS.API.CONSUMER.INFO.CREP.D",
        "the stopped one not current",
        |info| {
            let replicas = info["cluster"]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            info["cluster"]["leader"] == json!(leader)
                && replicas
                    .iter()
                    .any(|r| r["name"] == json!(victim_name) && r["current"] == false)
                && replicas
                    .iter()
                    .any(|r| r["name"] != json!(victim_name) && r["current"] == true)
        },
    )
    .await;
}

/// issue 22, changes of a stream's peers one at a time: five members, an R3 stream holding
/// 200 messages with ids and an R3 durable that double-acked them; R3 → R5, and at once
/// R5 → R3 and a `STREAM.PEER.REMOVE`: both refused with 10124 "stream move already in
/// progress" while the grow runs (its new peers catching up, the consumer following). Once
/// every member shows the five and the consumer on five, the shrink is accepted (retried
/// while the consumer still follows); then three peers, the leader kept, each holding the
/// 200 ids once at their acknowledged sequences, the two others without a copy, the consumer
/// on the three with its ack floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_change_of_a_streams_peers_waits_for_the_first() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(second_change_waits_for_the_first()).await;
}

/// See [`a_second_change_of_a_streams_peers_waits_for_the_first`].
async fn second_change_waits_for_the_first() {
    let members = cluster(&[ServerKind::Hubd; 5]).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let config = json!({"name": "SER", "subjects": ["orders.>"], "num_replicas": 3});
    let created = create(&app_client(&members[0]).await, config.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    let first_peers = group_members(&created);
    let js = jetstream_on(&members[0]).await;
    let acked = publish_until_acknowledged(&js, 200, |_| {}).await;
    let made = durable(&members[0], "SER", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    consume_all(&members[0], "SER", "D", 1..=200).await;

    let grown = update_stream(&members[1], with_replicas(&config, 5)).await;
    assert!(grown["error"].is_null(), "{grown}");
    let client = app_client(&members[2]).await;
    let peer = first_peers.first().cloned().unwrap_or_default();
    let (shrink, remove) = tokio::join!(
        update_stream(&members[2], config.clone()),
        api(
            &client,
            "$JS.API.STREAM.PEER.REMOVE.SER",
            json!({ "peer": peer })
        )
    );
    for refused in [&shrink, &remove] {
        assert_eq!(refused["error"]["err_code"], 10124, "{refused}");
        assert_eq!(
            refused["error"]["description"], "stream move already in progress",
            "{refused}"
        );
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    until_rescaled(&all, "SER", 5, &names).await;
    for m in &all {
        until_answer(m, "$JS.API.CONSUMER.INFO.SER.D", "on five", |info| {
            group_members(info).len() == 5 && info["ack_floor"]["stream_seq"] == json!(200)
        })
        .await;
    }

    // The shrink, once the grow is done (retried while its last steps end).
    let leader = stream_leader(&all, "SER", None).await;
    let shrunk = update_once_unlocked(&members[2], &config).await;
    assert!(shrunk["error"].is_null(), "{shrunk}");
    let info = info_on(&all, &leader, "SER").await;
    let peers = group_members(&info);
    assert_eq!(peers.len(), 3, "{info}");
    assert!(peers.contains(&leader), "the leader kept: {info}");
    until_rescaled(&all, "SER", 3, &peers).await;
    for m in &all {
        if peers.contains(&m.name) {
            let copy = copy_of(m, "SER", 200).await;
            exactly_once(m, &copy, &acked);
            until_answer(m, "$JS.API.CONSUMER.INFO.SER.D", "on three", |info| {
                let mut now = group_members(info);
                now.sort();
                let mut want = peers.clone();
                want.sort();
                now == want && info["ack_floor"]["stream_seq"] == json!(200)
            })
            .await;
        } else {
            until_engine_streams(m, 0).await;
        }
    }
}

/// Members named `n1`... with `server_tags` `tags[i]` each, listing each other's routes.
async fn tagged_cluster(tags: &[Value]) -> Vec<Member> {
    let ports: Vec<u16> = tags.iter().map(|_| free_port()).collect();
    let mut members = Vec::new();
    for (i, tags) in tags.iter().enumerate() {
        let tagged = |config: &mut Value| config["server_tags"] = tags.clone();
        members.push(member_on(i, &ports, StoreDir::new(), tagged).await);
    }
    members
}

/// `STREAM.UPDATE` of `config` through `m`, retried while another change of the stream's
/// peers is in progress (10124; bounded: 90 s): the first other answer.
async fn update_once_unlocked(m: &Member, config: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answer = update_stream(m, config.clone()).await;
        if answer["error"]["err_code"] != 10124 {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "still locked after 90 s: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// issue 22, a move by placement: six members, `n1`-`n3` tagged `a`, `n4`-`n6` tagged `b`;
/// an R3 stream on tags `a` with 30 publishes with ids and an R3 durable that double-acked
/// them. Refused: tags no member holds (10005, as a create with those tags), a move and a
/// scale in one update (10123). `STREAM.UPDATE` to tags `b` through `n1`, publishes going on
/// at once through `n1` (the first 30 again: duplicates) until 80 are acknowledged: every
/// member shows the stream on `n4`-`n6`, `n1`-`n3` have no copy left, each new copy holds
/// the 80 ids once at their acknowledged sequences, the durable's group is on `n4`-`n6` with
/// its ack floor, and delivers the next 50 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_moves_to_the_members_of_its_new_placement_tags() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(moves_by_placement()).await;
}

/// See [`a_stream_moves_to_the_members_of_its_new_placement_tags`].
async fn moves_by_placement() {
    let tags = [
        json!("a"),
        json!("a"),
        json!("a"),
        json!("b"),
        json!("b"),
        json!("b"),
    ];
    let members = tagged_cluster(&tags).await;
    let all: Vec<&Member> = members.iter().collect();
    agreed_leader(&all, None).await;
    let config = json!({"name": "MOVE", "subjects": ["orders.>"], "num_replicas": 3,
                        "placement": {"tags": ["a"]}});
    let client = app_client(&members[0]).await;
    let created = create(&client, config.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    let mut peers = group_members(&created);
    peers.sort();
    assert_eq!(peers, ["n1", "n2", "n3"], "{created}");
    let js = jetstream_on(&members[0]).await;
    let first = publish_until_acknowledged(&js, 30, |_| {}).await;
    let made = durable(&members[0], "MOVE", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    consume_all(&members[0], "MOVE", "D", 1..=30).await;

    let mut to_c = config.clone();
    to_c["placement"] = json!({"tags": ["c"]});
    let refused = update_stream(&members[0], to_c).await;
    let create_c = create(
        &client,
        json!({"name": "C", "subjects": ["c.>"], "num_replicas": 3,
               "placement": {"tags": ["c"]}}),
    )
    .await;
    assert_eq!(refused["error"]["err_code"], 10005, "{refused}");
    assert_eq!(refused["error"], create_c["error"], "as a create answers");
    let mut to_b = config.clone();
    to_b["placement"] = json!({"tags": ["b"]});
    let both = update_stream(&members[0], with_replicas(&to_b, 2)).await;
    assert_eq!(both["error"]["err_code"], 10123, "{both}");

    let moved = update_stream(&members[0], to_b).await;
    assert!(moved["error"].is_null(), "{moved}");
    assert_eq!(
        moved["config"]["placement"]["tags"],
        json!(["b"]),
        "{moved}"
    );
    let acked = publish_until_acknowledged(&js, 80, |_| {}).await;
    assert_eq!(acked[..30], first[..], "the first 30 are duplicates");
    let new_peers = ["n4".to_owned(), "n5".to_owned(), "n6".to_owned()];
    until_rescaled(&all, "MOVE", 3, &new_peers).await;
    for m in &members[..3] {
        until_engine_streams(m, 0).await;
    }
    for m in &members[3..] {
        let copy = copy_of(m, "MOVE", 80).await;
        exactly_once(m, &copy, &acked);
        until_answer(m, "$JS.API.CONSUMER.INFO.MOVE.D", "on n4-n6", |info| {
            let mut now = group_members(info);
            now.sort();
            now == new_peers && info["ack_floor"]["stream_seq"] == json!(30)
        })
        .await;
    }
    consume_all(&members[4], "MOVE", "D", 31..=80).await;
}

/// issue 22, a change of a stream's peers whose runner dies: five members, member `n<i>`
/// tagged `x<j>` for every other `j`, so that placement tags `x<k>` exclude member `k`. An R3
/// stream placed away from the meta leader (which runs every change) with 1,000 publishes
/// with ids; R3 → R4 asked on the meta leader, which is SIGKILLed as soon as it answered.
/// The next meta leader finishes the change: every live member shows the four live members
/// as the group, and the lock is released (R4 → R3 accepted, retried while 10124); then each
/// of the three peers holds the 1,000 ids once at their acknowledged sequences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_a_streams_peers_outlives_its_runner() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(change_outlives_its_runner()).await;
}

/// See [`a_change_of_a_streams_peers_outlives_its_runner`].
async fn change_outlives_its_runner() {
    let tags: Vec<Value> = (1..=5)
        .map(|i| {
            json!((1..=5)
                .filter(|j| *j != i)
                .map(|j| format!("x{j}"))
                .collect::<Vec<_>>())
        })
        .collect();
    let mut members = tagged_cluster(&tags).await;
    let all: Vec<&Member> = members.iter().collect();
    let leader = agreed_leader(&all, None).await;
    let at = members
        .iter()
        .position(|m| m.name == leader)
        .expect("the meta leader");
    let config = json!({"name": "RUN", "subjects": ["orders.>"], "num_replicas": 3,
                        "placement": {"tags": [format!("x{}", at + 1)]}});
    let created = create(&app_client(&members[at]).await, config.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    assert!(!group_members(&created).contains(&leader), "{created}");
    let via = (at + 1) % members.len();
    let js = jetstream_on(&members[via]).await;
    let acked = publish_until_acknowledged(&js, 1000, |_| {}).await;

    let grown = update_stream(&members[at], with_replicas(&config, 4)).await;
    assert!(grown["error"].is_null(), "{grown}");
    members[at].server.kill();
    let live = all_but(&members, at);
    agreed_leader(&live, Some(&leader)).await;
    let names: Vec<String> = live.iter().map(|m| m.name.clone()).collect();
    until_rescaled(&live, "RUN", 4, &names).await;

    let shrunk = update_once_unlocked(live[0], &config).await;
    assert!(shrunk["error"].is_null(), "{shrunk}");
    let stream_leader = stream_leader(&live, "RUN", None).await;
    let info = info_on(&live, &stream_leader, "RUN").await;
    let peers = group_members(&info);
    assert_eq!(peers.len(), 3, "{info}");
    until_rescaled(&live, "RUN", 3, &peers).await;
    for m in live.iter().filter(|m| peers.contains(&m.name)) {
        let copy = copy_of(m, "RUN", 1000).await;
        exactly_once(m, &copy, &acked);
    }
}

/// Waits (bounded) until `client`'s `STREAM.NAMES` lists exactly `want`.
async fn until_names(client: &e2e::async_nats::Client, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = stream_names(client).await;
        if names == want {
            return;
        }
        assert!(Instant::now() < deadline, "names {names:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// issue 22, R1 streams (as nats-server 2.9: an assignment of the meta group with one peer):
/// an R1 stream created on member A of three is listed by B and C (names and list) and held
/// by A's engine alone; publishes through C are stored once, on A; `STREAM.INFO` through B
/// shows them; a durable pull consumer is created, fetched and acked through B (the pull
/// request forwarded to A, the messages crossing back by the reply's interest); `MSG.GET`
/// through C; a second create through B answers as nats-server (the same configuration: the
/// existing stream; another: 10058), overlapping subjects 10065; updated through B (the
/// assignment's subjects follow: an overlap with the new one is refused on C); the stream
/// deleted through C is gone from A and from every member's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_stream_is_the_clusters_and_served_from_every_member() {
    let members = three_members_with_a_meta_leader().await;
    let (a, b, c) = (&members[0], &members[1], &members[2]);
    let (ca, cb, cc) = (
        app_client(a).await,
        app_client(b).await,
        app_client(c).await,
    );
    let config = json!({"name": "SOLO", "subjects": ["solo.>"]});
    let created = create(&ca, config.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    for client in [&ca, &cb, &cc] {
        until_names(client, &["SOLO"]).await;
    }
    let list = api(&cb, "$JS.API.STREAM.LIST", json!({})).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["streams"][0]["config"]["name"], "SOLO", "{list}");
    until_engine_streams(a, 1).await;
    assert_eq!(engine_streams(b).await, 0, "B holds nothing");
    assert_eq!(engine_streams(c).await, 0, "C holds nothing");

    // Publishes through C, stored on A.
    for i in 1..=5u64 {
        let ack = acknowledged(c, &format!("solo.{i}")).await;
        assert_eq!(
            (&ack["stream"], &ack["seq"]),
            (&json!("SOLO"), &json!(i)),
            "{ack}"
        );
    }
    let info = api(&cb, "$JS.API.STREAM.INFO.SOLO", json!({})).await;
    assert_eq!(info["config"]["name"], "SOLO", "{info}");
    assert_eq!(info["state"]["messages"], 5, "{info}");
    assert_eq!(info["state"]["last_seq"], 5, "{info}");

    // A durable pull consumer through B: created, fetched, acked.
    let durable = api(
        &cb,
        "$JS.API.CONSUMER.DURABLE.CREATE.SOLO.D",
        json!({"stream_name": "SOLO", "config": {"durable_name": "D", "ack_policy": "explicit"}}),
    )
    .await;
    assert_eq!(durable["name"], "D", "{durable}");
    assert_eq!(durable["num_pending"], 5, "{durable}");
    let names = api(&cc, "$JS.API.CONSUMER.NAMES.SOLO", json!({})).await;
    assert_eq!(names["consumers"], json!(["D"]), "{names}");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 5 {
        got.extend(fetch(&cb, "SOLO", "D", 5 - got.len() as u64).await);
        assert!(Instant::now() < deadline, "fetched only {got:?}");
    }
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(double_ack(&cb, got).await, [1, 2, 3, 4, 5]);
    let consumer = api(&cc, "$JS.API.CONSUMER.INFO.SOLO.D", json!({})).await;
    assert_eq!(consumer["ack_floor"]["stream_seq"], 5, "{consumer}");
    assert_eq!(consumer["num_pending"], 0, "{consumer}");

    // MSG.GET through C.
    let msg = api(&cc, "$JS.API.STREAM.MSG.GET.SOLO", json!({"seq": 3})).await;
    assert_eq!(msg["message"]["subject"], "solo.3", "{msg}");

    // Created again through B: the same configuration is the existing stream, another one
    // is refused, and so are overlapping subjects.
    let again = create(&cb, config.clone()).await;
    assert!(again["error"].is_null(), "{again}");
    assert_eq!(again["config"]["name"], "SOLO", "{again}");
    assert_eq!(again["state"]["messages"], 5, "{again}");
    assert_ne!(again["did_create"], true, "{again}");
    let other = create(&cb, json!({"name": "SOLO", "subjects": ["solo.>", "more"]})).await;
    assert_eq!(other["error"]["err_code"], 10058, "{other}");
    let overlap = create(&cc, json!({"name": "SOLO2", "subjects": ["solo.x"]})).await;
    assert_eq!(overlap["error"]["err_code"], 10065, "{overlap}");

    // Updated through B: applied on A, and the assignment's subjects follow (an overlap with
    // the new subject is refused on C).
    let updated = api(
        &cb,
        "$JS.API.STREAM.UPDATE.SOLO",
        json!({"name": "SOLO", "subjects": ["solo.>", "solo2.>"]}),
    )
    .await;
    assert_eq!(
        updated["config"]["subjects"],
        json!(["solo.>", "solo2.>"]),
        "{updated}"
    );
    assert_eq!(updated["state"]["messages"], 5, "{updated}");
    let overlap = create(&cc, json!({"name": "SOLO3", "subjects": ["solo2.x"]})).await;
    assert_eq!(overlap["error"]["err_code"], 10065, "{overlap}");

    // Deleted through C: gone from A.
    let deleted = api(&cc, "$JS.API.STREAM.DELETE.SOLO", json!({})).await;
    assert_eq!(deleted["success"], true, "{deleted}");
    until_engine_streams(a, 0).await;
    for client in [&ca, &cb, &cc] {
        until_names(client, &[]).await;
    }
    let info = api(&ca, "$JS.API.STREAM.INFO.SOLO", json!({})).await;
    assert_eq!(info["error"]["err_code"], 10059, "{info}");
}

/// issue 22, R1 streams: a KV bucket created with the default R1 through async-nats on one
/// member lives there, and a client on another member uses it: puts (crossing to the holder
/// by interest), gets (`DIRECT.GET` served by the holder), a watch (its ordered consumer on
/// the holder delivering across the route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_kv_bucket_is_used_from_another_member() {
    use e2e::async_nats::jetstream::kv;
    let members = three_members_with_a_meta_leader().await;
    let (a, b) = (&members[0], &members[1]);
    let js_a = jetstream_on(a).await;
    let bucket_a = tokio::time::timeout(
        Duration::from_secs(10),
        js_a.create_key_value(kv::Config {
            bucket: "SOLOKV".into(),
            history: 3,
            ..Default::default()
        }),
    )
    .await
    .expect("created within 10 s")
    .expect("created");
    until_engine_streams(a, 1).await;
    let js_b = jetstream_on(b).await;
    let bucket_b = tokio::time::timeout(Duration::from_secs(10), js_b.get_key_value("SOLOKV"))
        .await
        .expect("bound within 10 s")
        .expect("the bucket, from B");
    assert_eq!(engine_streams(b).await, 0, "B holds nothing");
    let mut watch = tokio::time::timeout(Duration::from_secs(10), bucket_b.watch("k.>"))
        .await
        .expect("watching within 10 s")
        .expect("a watch from B");
    // The holder's interest in `$KV.SOLOKV.>` reaches B by the routes: retried (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let revision = loop {
        match tokio::time::timeout(Duration::from_secs(5), bucket_b.put("k.1", "v1".into())).await {
            Ok(Ok(rev)) => break rev,
            other => assert!(Instant::now() < deadline, "put from B: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(revision, 1);
    until_kv(&bucket_b, "k.1", Some("v1")).await;
    until_kv(&bucket_a, "k.1", Some("v1")).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch entry within 10 s")
        .expect("an entry")
        .expect("no error");
    assert_eq!(
        (seen.key.as_str(), &seen.value[..], seen.revision),
        ("k.1", &b"v1"[..], 1)
    );
    let rev2 = bucket_a.put("k.1", "v2".into()).await.expect("put on A");
    assert_eq!(rev2, 2);
    until_kv(&bucket_b, "k.1", Some("v2")).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a second watch entry within 10 s")
        .expect("an entry")
        .expect("no error");
    assert_eq!((&seen.value[..], seen.revision), (&b"v2"[..], 2));
}

/// A push consumer's delivery crossing a route (the consumer on the member holding an R1
/// stream, its deliver subject subscribed on another member) reaches the client as from a
/// consumer of its own member: under the stored subject, with the ack reply (the linked form
/// `<ack>@<subject>` on the deliver subject is undone by the receiving member), and its
/// heartbeats on the deliver subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_delivery_across_a_route_has_the_stored_subject() {
    let members = three_members_with_a_meta_leader().await;
    let (a, b) = (&members[0], &members[1]);
    let ca = app_client(a).await;
    let cb = app_client(b).await;
    let created = create(&ca, json!({"name": "P", "subjects": ["p.>"]})).await;
    assert_eq!(created["did_create"], true, "{created}");
    acknowledged(a, "p.1").await;
    let mut sub = cb.subscribe("dlv.x").await.expect("subscribed");
    sync(&cb).await;
    let consumer = api(
        &cb,
        "$JS.API.CONSUMER.CREATE.P",
        json!({"stream_name": "P", "config": {"deliver_subject": "dlv.x", "flow_control": true,
               "idle_heartbeat": 500_000_000u64, "ack_policy": "none"}}),
    )
    .await;
    assert!(consumer["error"].is_null(), "{consumer}");
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("a message");
    assert_eq!(msg.subject.as_str(), "p.1");
    let reply = msg.reply.map(|r| r.to_string()).unwrap_or_default();
    assert!(
        reply.starts_with("$JS.ACK.P.") && !reply.contains('@'),
        "{reply}"
    );
    let heartbeat = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a heartbeat within 10 s")
        .expect("a message");
    assert_eq!(heartbeat.subject.as_str(), "dlv.x");
    assert_eq!(heartbeat.status.map(u16::from), Some(100));
}

/// issue 22, R1 streams from before they were the cluster's: stores written by hubd members
/// without a cluster (n1: `OLD` with two messages; n2: another `OLD`, one message, and
/// `MINE`) become members of a cluster. Each member proposes its streams as assignments with
/// itself as the peer: `MINE` is listed by n3 and served there from n2; one `OLD` gets the
/// assignment, and the other member logs the conflict naming both members and keeps serving
/// its own stream to its own clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_streams_from_before_are_assigned_to_their_member() {
    let stores: Vec<StoreDir> = (0..3).map(|_| StoreDir::new()).collect();
    let before: [&[(&str, &str, u64)]; 2] = [
        &[("OLD", "old", 2)],
        &[("OLD", "dup", 1), ("MINE", "mine", 1)],
    ];
    for (store, streams) in stores.iter().zip(before) {
        let mut server = TestServer::with_config(
            ServerKind::Hubd,
            json!({ "jetstream": { "store_dir": store.path() } }),
        )
        .await;
        let client = server.client().await;
        for (name, prefix, n) in streams {
            let created = create(
                &client,
                json!({"name": name, "subjects": [format!("{prefix}.>")]}),
            )
            .await;
            assert_eq!(created["did_create"], true, "{created}");
            for i in 0..*n {
                let ack = api(&client, &format!("{prefix}.{i}"), json!({})).await;
                assert!(ack["error"].is_null(), "{ack}");
            }
        }
        server.kill();
    }
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut members = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        members.push(member_on(i, &ports, store, |_| {}).await);
    }
    agreed_leader(&members.iter().collect::<Vec<_>>(), None).await;
    let c3 = app_client(&members[2]).await;
    until_names(&c3, &["MINE", "OLD"]).await;
    let mine = api(&c3, "$JS.API.STREAM.INFO.MINE", json!({})).await;
    assert_eq!(mine["state"]["messages"], 1, "{mine}");
    // The member holding `OLD`'s assignment, as n3 lists it.
    let list = api(&c3, "$JS.API.STREAM.LIST", json!({})).await;
    let holder = list["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["config"]["name"] == "OLD")
        .map(|s| s["cluster"]["leader"].clone())
        .unwrap_or_default();
    let (winner, loser, held) = match holder.as_str() {
        Some("n1") => (0, 1, 2),
        Some("n2") => (1, 0, 1),
        _ => panic!("OLD not assigned to n1 or n2: {list}"),
    };
    let old = api(&c3, "$JS.API.STREAM.INFO.OLD", json!({})).await;
    assert_eq!(old["state"]["messages"], held, "{old}");
    let text = format!(
        "a stream of this name on this member ({}) and the cluster's on {}",
        members[loser].name, members[winner].name
    );
    wait_for_log(&members[loser].server, &text, 1).await;
    let own = api(
        &app_client(&members[loser]).await,
        "$JS.API.STREAM.INFO.OLD",
        json!({}),
    )
    .await;
    assert_eq!(own["state"]["messages"], 3 - held, "{own}");
}

/// Hostile input, issue 22: a client may not speak the cluster's internal protocol. A message
/// a client publishes on `$HRG.` (the subjects of the members' Raft and API RPCs, such as
/// the `api` RPC that makes a member act in any account) is never sent over a route, even
/// by a user of the system account where the members' RPCs live; only the servers' own
/// `$HRG.` traffic crosses. A subject published next to it does cross, so the route carries
/// what it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_hrg_message_never_crosses_a_route() {
    use futures::StreamExt;
    let members = three_members_with_a_meta_leader().await;
    let (a, b) = (sys_client(&members[0]).await, sys_client(&members[1]).await);
    // Subscribed in this order on one connection: once `ctl.hrg`'s interest reached a, the
    // `$HRG.` one (sent before it over the same route) did too.
    let mut forged = b.subscribe("$HRG.>").await.expect("subscribe $HRG.>");
    let mut ctl = b.subscribe("ctl.hrg").await.expect("subscribe ctl");
    b.flush().await.expect("flush");
    e2e::await_interest(&a, "ctl.hrg", &mut ctl).await;
    let node = members[1].name.clone();
    a.publish(format!("$HRG.meta.{node}.api"), "forged".into())
        .await
        .expect("publish");
    a.publish("ctl.hrg", "after".into()).await.expect("publish");
    a.flush().await.expect("flush");
    // The route keeps a's order: the control message arriving means anything published
    // before it on a was delivered already.
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ctl.next())
            .await
            .expect("the control message crosses the route")
            .expect("subscription open");
        if msg.payload.as_ref() == b"after" {
            break;
        }
    }
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), forged.next()).await
    {
        assert_ne!(
            msg.payload.as_ref(),
            b"forged",
            "a client's $HRG. message crossed a route: {}",
            msg.subject
        );
    }
}

/// issue 22, an R1 stream made replicated (`STREAM.UPDATE` of `num_replicas` 1 to 3, as
/// nats-server 2.9): three members, an R1 stream created on A (its peer), 50 publishes with
/// msg ids through B, a durable pull consumer on A that double-acked 10. Updated to R3
/// through C while 300 publishes with msg ids go on through B (the first 50 again: duplicates
/// of their sequences; each retried until acknowledged): answered with R3; every member
/// shows R3 on the three (each replica current on the leader); every copy holds the 300 ids
/// once at their acknowledged sequences (A's store was adopted, the two others got it in a
/// snapshot). The durable, an R1 consumer of A's copy now (`num_replicas: 1`), delivers
/// message 11 next and every later one in order. The stream leader SIGKILLed: a new leader,
/// 20 more acknowledged, every surviving copy holds the 320 ids exactly once; restarted, its
/// copy catches up, and A's durable (resumed from its record) delivers the 20 new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_stream_updated_to_r3_keeps_every_message() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(r1_updated_to_r3()).await;
}

/// See [`an_r1_stream_updated_to_r3_keeps_every_message`].
async fn r1_updated_to_r3() {
    let mut members = three_members_with_a_meta_leader().await;
    let all: Vec<&Member> = members.iter().collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let config = json!({"name": "GROW", "subjects": ["orders.>"]});
    let created = create(&app_client(&members[0]).await, config.clone()).await;
    assert_eq!(created["did_create"], true, "{created}");
    assert_eq!(
        engine_streams(&members[0]).await,
        1,
        "A holds the R1 stream"
    );
    let js_b = jetstream_on(&members[1]).await;
    let acked = publish_until_acknowledged(&js_b, 50, |_| {}).await;
    assert_eq!(acked, (1..=50).collect::<Vec<u64>>());
    let made = durable(&members[0], "GROW", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    let client_a = app_client(&members[0]).await;
    let got = fetch(&client_a, "GROW", "D", 10).await;
    let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    double_ack(&client_a, got).await;

    // Updated through C while publishes go on through B: each is stored by the R1 stream,
    // refused (no responders while neither the stream nor the group's leader captures:
    // retried) or stored by the group.
    let client_c = app_client(&members[2]).await;
    let r3 = with_replicas(&config, 3);
    let update =
        tokio::spawn(async move { api(&client_c, "$JS.API.STREAM.UPDATE.GROW", r3).await });
    let acked = publish_until_acknowledged(&js_b, 300, |_| {}).await;
    let grown = update.await.expect("the update's task");
    assert!(grown["error"].is_null(), "{grown}");
    assert_eq!(grown["config"]["num_replicas"], 3, "{grown}");
    assert_eq!(
        &acked[..50],
        &(1..=50).collect::<Vec<u64>>()[..],
        "duplicates"
    );
    until_rescaled(&all, "GROW", 3, &names).await;
    for m in &all {
        let copy = copy_of(m, "GROW", 300).await;
        exactly_once(m, &copy, &acked);
    }
    consume_all(&members[0], "GROW", "D", 11..=300).await;
    let consumer = api(
        &app_client(&members[0]).await,
        "$JS.API.CONSUMER.INFO.GROW.D",
        json!({}),
    )
    .await;
    assert_eq!(
        consumer["config"]["num_replicas"], 1,
        "an R1 consumer of A's copy: {consumer}"
    );

    let leader = stream_leader(&all, "GROW", None).await;
    let (killed, other) = leader_and_other(&members, &leader);
    members[killed].server.kill();
    let survivors = survivors(&members, killed);
    let new_leader = stream_leader(&survivors, "GROW", Some(&leader)).await;
    assert_ne!(new_leader, leader);
    let js = jetstream_on(&members[other]).await;
    let acked = publish_until_acknowledged(&js, 320, |_| {}).await;
    for m in &survivors {
        let copy = copy_of(m, "GROW", 320).await;
        exactly_once(m, &copy, &acked);
    }
    // The killed member restarted: its copy catches up; on A the durable is back (an R1
    // consumer of the copy, resumed from its record) with its ack floor.
    members[killed].server =
        TestServer::with_config(ServerKind::Hubd, members[killed].config.clone()).await;
    let copy = copy_of(&members[killed], "GROW", 320).await;
    exactly_once(&members[killed], &copy, &acked);
    until_answer(
        &members[0],
        "$JS.API.CONSUMER.INFO.GROW.D",
        "D on A",
        |info| {
            info["ack_floor"]["stream_seq"] == json!(300)
                && info["config"]["num_replicas"] == json!(1)
        },
    )
    .await;
    consume_all(&members[0], "GROW", "D", 301..=320).await;
}

/// issue 22, a KV bucket made with async-nats' defaults (R1) on A, two revisions of a key
/// put, then its stream updated to R3 through B (`STREAM.UPDATE` with the stream's own
/// configuration and `num_replicas: 3`): every member shows R3 on the three; from C the
/// bucket is still usable: `get` reads the latest revision, a put is revision 3, `history`
/// lists the three revisions, and a `create` of an existing key is refused (CAS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_kv_bucket_updated_to_r3_is_still_usable() {
    use e2e::async_nats::jetstream::kv;
    let members = three_members_with_a_meta_leader().await;
    let all: Vec<&Member> = members.iter().collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let js_a = jetstream_on(&members[0]).await;
    let bucket_a = tokio::time::timeout(
        Duration::from_secs(10),
        js_a.create_key_value(kv::Config {
            bucket: "GROWKV".into(),
            history: 5,
            ..Default::default()
        }),
    )
    .await
    .expect("created within 10 s")
    .expect("created");
    assert_eq!(bucket_a.put("k", "v1".into()).await.expect("put"), 1);
    assert_eq!(bucket_a.put("k", "v2".into()).await.expect("put"), 2);

    let info = api(
        &app_client(&members[1]).await,
        "$JS.API.STREAM.INFO.KV_GROWKV",
        json!({}),
    )
    .await;
    let grown = update_stream(&members[1], with_replicas(&info["config"], 3)).await;
    assert!(grown["error"].is_null(), "{grown}");
    until_rescaled(&all, "KV_GROWKV", 3, &names).await;

    let js_c = jetstream_on(&members[2]).await;
    let bucket_c = tokio::time::timeout(Duration::from_secs(10), js_c.get_key_value("GROWKV"))
        .await
        .expect("bound within 10 s")
        .expect("the bucket, from C");
    until_kv(&bucket_c, "k", Some("v2")).await;
    let rev3 = tokio::time::timeout(Duration::from_secs(10), bucket_c.put("k", "v3".into()))
        .await
        .expect("put within 10 s")
        .expect("put from C");
    assert_eq!(rev3, 3);
    until_kv(&bucket_a, "k", Some("v3")).await;
    // `history` reads C's own copy (an ordered consumer lives on the copy of the member
    // asked), which may apply revision 3 after the leader answered the put.
    copy_holds(&members[2], "KV_GROWKV", 3).await;
    let history = tokio::time::timeout(Duration::from_secs(10), async {
        let mut entries = bucket_c.history("k").await.expect("history");
        let mut values = Vec::new();
        while let Some(entry) = entries.next().await {
            let entry = entry.expect("an entry");
            values.push(String::from_utf8_lossy(&entry.value).into_owned());
            if values.len() == 3 {
                break;
            }
        }
        values
    })
    .await
    .expect("history within 10 s");
    assert_eq!(history, ["v1", "v2", "v3"]);
    let again = bucket_c.create("k", "v4".into()).await;
    assert!(again.is_err(), "create of an existing key: {again:?}");
}

/// An API request through `client` retried (bounded) while it answers 10008 (no meta leader
/// yet after a member was killed): its answer.
async fn api_once_available(client: &e2e::async_nats::Client, subject: &str, body: Value) -> Value {
    let deadline = Instant::now() + ELECTION;
    loop {
        let answer = api(client, subject, body.clone()).await;
        if answer["error"]["err_code"] != 10008 {
            return answer;
        }
        assert!(Instant::now() < deadline, "{subject}: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// issue 22, R1 streams (`jsc::r1_held`): an R1 stream deleted while its member was down does
/// not come back. R1 stream `GONE` on A of three; A SIGKILLed; `GONE` deleted through B
/// (answered `success`); then enough further meta changes through B (R1 streams created and
/// deleted) that the meta log A lacks is purged behind a snapshot; A restarted learns the
/// state from the leader's snapshot (its log says so) and deletes `GONE` (logged with its
/// name): by the sweep at start when A's state never assigned it since it started (`GONE`
/// recorded as held, no assignment once caught up), else by its follower as the snapshot's
/// state dropped it; never proposed as a stream from before: no member lists it, A's engine
/// holds nothing, also after A's follower ran a few more rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_stream_deleted_while_its_member_was_down_does_not_come_back() {
    let mut members = three_members_with_a_meta_leader().await;
    let ca = app_client(&members[0]).await;
    let created = create(&ca, json!({"name": "GONE", "subjects": ["gone.>"]})).await;
    assert_eq!(created["did_create"], true, "{created}");
    assert_eq!(acknowledged(&members[2], "gone.1").await["seq"], 1);
    until_engine_streams(&members[0], 1).await;
    drop(ca);

    members[0].server.kill();
    agreed_leader(&[&members[1], &members[2]], Some("n1")).await;
    let cb = app_client(&members[1]).await;
    let deleted = api_once_available(&cb, "$JS.API.STREAM.DELETE.GONE", json!({})).await;
    assert_eq!(deleted["success"], true, "{deleted}");
    // Meta changes past a snapshot and its kept log (128 + 64 entries).
    for i in 0..150 {
        let name = format!("CHURN{i}");
        let config = json!({"name": name, "subjects": [format!("churn.{i}")], "storage": "memory"});
        let created = create(&cb, config).await;
        assert_eq!(created["did_create"], true, "{created}");
        let gone = api(&cb, &format!("$JS.API.STREAM.DELETE.{name}"), json!({})).await;
        assert_eq!(gone["success"], true, "{gone}");
    }

    restart_in_place(&mut members[0]).await;
    let a = &members[0];
    wait_for_log(
        &a.server,
        "meta state installed from the leader's snapshot",
        1,
    )
    .await;
    // Deleted by the sweep at start, or (when A's own log still assigned it as A started)
    // by the follower as the snapshot's state dropped it: never proposed again.
    let log = wait_for_log(&a.server, "R1 stream deleted", 1).await;
    assert!(
        log.lines()
            .any(|l| l.contains("R1 stream deleted") && l.contains("GONE")),
        "{log}"
    );
    until_engine_streams(a, 0).await;
    // A's follower runs every second: the stream stays gone through a few of its rounds.
    for _ in 0..3 {
        for m in &members {
            until_names(&app_client(m).await, &[]).await;
        }
        assert_eq!(engine_streams(&members[0]).await, 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        !members[0].server.log().contains("from before assigned"),
        "{}",
        members[0].server.log()
    );
}

/// issue 22, R1 streams and `SERVER.REMOVE` (as nats-server 2.9's peer removal: the stream is
/// remapped to another member, where it starts empty): R1 stream `MOVED` on member A (not the
/// meta leader) with one message; A SIGKILLed and removed through another member: the stream
/// gets a live member as its peer (created in its engine), every live member lists it, and
/// publishes through the other live member are acknowledged there, from sequence 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_servers_r1_stream_goes_to_another_member() {
    let mut members = three_members_with_a_meta_leader().await;
    let all: Vec<&Member> = members.iter().collect();
    let meta_leader = agreed_leader(&all, None).await;
    let victim = members
        .iter()
        .position(|m| m.name != meta_leader)
        .expect("a member not leading the meta group");
    let victim_name = members[victim].name.clone();
    let created = create(
        &app_client(&members[victim]).await,
        json!({"name": "MOVED", "subjects": ["moved.>"]}),
    )
    .await;
    assert_eq!(created["did_create"], true, "{created}");
    assert_eq!(acknowledged(&members[victim], "moved.1").await["seq"], 1);
    until_engine_streams(&members[victim], 1).await;
    members[victim].server.kill();
    let live = all_but(&members, victim);
    let sys = sys_client(live[0]).await;
    let removed = api(&sys, "$JS.API.SERVER.REMOVE", json!({"peer": victim_name})).await;
    assert_eq!(
        removed,
        json!({"type": "io.nats.jetstream.api.v1.meta_server_remove_response", "success": true}),
    );
    // The new peer holds it (empty); the other lists it with the new peer as its leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        let mut holders = Vec::new();
        for (i, m) in live.iter().enumerate() {
            if engine_streams(m).await == 1 {
                holders.push(i);
            }
        }
        if holders.len() == 1 {
            break holders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single live member holds MOVED: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let other = live[1 - holder];
    let list = api(&app_client(other).await, "$JS.API.STREAM.LIST", json!({})).await;
    assert_eq!(list["streams"][0]["config"]["name"], "MOVED", "{list}");
    assert_eq!(
        list["streams"][0]["cluster"]["leader"], live[holder].name,
        "{list}"
    );
    assert_eq!(acknowledged(other, "moved.2").await["seq"], 1);
    let info = api(
        &app_client(other).await,
        "$JS.API.STREAM.INFO.MOVED",
        json!({}),
    )
    .await;
    assert_eq!(info["state"]["messages"], 1, "{info}");
    for m in &live {
        until_names(&app_client(m).await, &["MOVED"]).await;
    }
}

/// issue 22, R1 streams and account limits (as nats-server's clustered account info and
/// create): account `APP` with `max_streams` 2 on each of three members; R1 streams created
/// on two different members; a third refused on every member with the single server's error
/// (10027), although no member's engine holds two; `$JS.API.INFO` on every member counts the
/// account's two streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_counts_the_accounts_r1_streams_on_every_member() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(
            member_on(i, &ports, StoreDir::new(), |c| {
                c["accounts"]["APP"]["jetstream"] = json!({"max_streams": 2});
            })
            .await,
        );
    }
    agreed_leader(&members.iter().collect::<Vec<_>>(), None).await;
    let mut clients = Vec::new();
    for m in &members {
        clients.push(
            m.server
                .client_with(TestServer::options().user_and_password("a".into(), "a".into()))
                .await,
        );
    }
    for (i, name) in ["ONE", "TWO"].iter().enumerate() {
        let created = create(
            &clients[i],
            json!({"name": name, "subjects": [format!("{}.>", name.to_lowercase())]}),
        )
        .await;
        assert_eq!(created["did_create"], true, "{created}");
    }
    for client in &clients {
        until_names(client, &["ONE", "TWO"]).await;
    }
    for (i, client) in clients.iter().enumerate() {
        let refused = create(client, json!({"name": "THREE", "subjects": ["three.>"]})).await;
        assert_eq!(refused["error"]["err_code"], 10027, "n{}: {refused}", i + 1);
        let info = api(client, "$JS.API.INFO", json!({})).await;
        assert_eq!(info["streams"], 2, "n{}: {info}", i + 1);
        assert_eq!(info["limits"]["max_streams"], 2, "n{}: {info}", i + 1);
    }
    for client in &clients {
        until_names(client, &["ONE", "TWO"]).await;
    }
}

/// issue 22, a replicated stream made R1 (`STREAM.UPDATE` of `num_replicas` 3 to 1, as
/// nats-server 2.9: the peers removed down to one, the stream stays): three members, an R3
/// stream, 50 publishes with msg ids; a replicated durable `D` and, on the stream's leader, an
/// R1 durable `E` of its copy that double-acked 10. Updated to R1 through a member that is not
/// the leader while the first 60 ids are published again through the third member (each
/// retried until acknowledged): answered with R1; the first 50 are duplicates, the other 10
/// stored at 51-60; every member shows the stream R1 with the former leader as its one peer
/// (`cluster.leader`, no replicas); only that member's engine holds a stream, the 60 ids
/// once at their acknowledged sequences. `D` is gone (10014 on every member), `E` delivers
/// 11-60 in order. 70 ids published again: the 10 new ones at 61-70. Back to R3 (the R1 to
/// R3 path): every copy holds the 70 ids once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_updated_to_r1_keeps_its_leaders_copy() {
    // Boxed: the test's future is too large for the test thread's stack in a debug build.
    Box::pin(updated_to_r1()).await;
}

/// See [`a_stream_updated_to_r1_keeps_its_leaders_copy`].
async fn updated_to_r1() {
    let (members, leader) = three_members_with_an_r3_stream("SHRINK1", "orders.>").await;
    let all: Vec<&Member> = members.iter().collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let config = json!({"name": "SHRINK1", "subjects": ["orders.>"], "num_replicas": 3});
    let (kept, other) = leader_and_other(&members, &leader);
    let third = (0..3)
        .find(|i| *i != kept && *i != other)
        .expect("a third member");
    let js_third = jetstream_on(&members[third]).await;
    let acked = publish_until_acknowledged(&jetstream_on(&members[other]).await, 50, |_| {}).await;
    assert_eq!(acked, (1..=50).collect::<Vec<u64>>());
    let made = durable(&members[other], "SHRINK1", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    let made = durable(&members[kept], "SHRINK1", "E", json!({"num_replicas": 1})).await;
    assert!(made["error"].is_null(), "{made}");
    let client_kept = app_client(&members[kept]).await;
    let got = fetch(&client_kept, "SHRINK1", "E", 10).await;
    let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    double_ack(&client_kept, got).await;

    let client_other = app_client(&members[other]).await;
    let r1 = with_replicas(&config, 1);
    let update =
        tokio::spawn(async move { api(&client_other, "$JS.API.STREAM.UPDATE.SHRINK1", r1).await });
    let during = publish_until_acknowledged(&js_third, 60, |_| {}).await;
    let r1 = update.await.expect("the update's task");
    assert!(r1["error"].is_null(), "{r1}");
    assert_eq!(r1["config"]["num_replicas"], 1, "{r1}");
    assert_eq!(
        &during[..50],
        &(1..=50).collect::<Vec<u64>>()[..],
        "duplicates"
    );
    let mut new = during[50..].to_vec();
    new.sort_unstable();
    assert_eq!(new, (51..=60).collect::<Vec<u64>>());
    for m in &all {
        until_answer(
            m,
            "$JS.API.STREAM.INFO.SHRINK1",
            "R1 on the leader",
            |info| {
                info["config"]["num_replicas"] == json!(1)
                    && group_members(info) == [leader.clone()]
                    && info["cluster"]["leader"] == json!(leader)
            },
        )
        .await;
    }
    for (i, m) in members.iter().enumerate() {
        until_engine_streams(m, u64::from(i == kept)).await;
    }
    let copy = copy_of(&members[kept], "SHRINK1", 60).await;
    exactly_once(&members[kept], &copy, &during);
    for m in &all {
        let gone = api(
            &app_client(m).await,
            "$JS.API.CONSUMER.INFO.SHRINK1.D",
            json!({}),
        )
        .await;
        assert_eq!(gone["error"]["err_code"], 10014, "{}: {gone}", m.name);
    }
    consume_all(&members[kept], "SHRINK1", "E", 11..=60).await;

    let acked = publish_until_acknowledged(&js_third, 70, |_| {}).await;
    assert_eq!(&acked[..60], &during[..], "duplicates");
    assert_eq!(&acked[60..], &(61..=70).collect::<Vec<u64>>()[..]);
    let copy = copy_of(&members[kept], "SHRINK1", 70).await;
    exactly_once(&members[kept], &copy, &acked);

    let r3 = update_stream(&members[other], config.clone()).await;
    assert!(r3["error"].is_null(), "{r3}");
    until_rescaled(&all, "SHRINK1", 3, &names).await;
    for m in &all {
        let copy = copy_of(m, "SHRINK1", 70).await;
        exactly_once(m, &copy, &acked);
    }
}

/// issue 22, `STREAM.UPDATE` of an R1 stream that cannot become replicated leaves it as it
/// was: on three members, R1 to R5 answers the create's 10005 (too few members) and an
/// interest stream with a consumer R1 to R3 answers 10061 (its R1 consumer would remove
/// messages a group's copies hold); each stream is still R1 on its member, holds its
/// messages, and takes the next publish at the next sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_stream_that_cannot_be_replicated_is_left_as_it_was() {
    let members = three_members_with_a_meta_leader().await;
    let client_a = app_client(&members[0]).await;
    let client_b = app_client(&members[1]).await;
    let limits = json!({"name": "STAY", "subjects": ["stay.>"]});
    let interest = json!({"name": "HEED", "subjects": ["heed.>"], "retention": "interest"});
    for config in [&limits, &interest] {
        let created = create(&client_a, config.clone()).await;
        assert_eq!(created["did_create"], true, "{created}");
    }
    let made = durable(&members[0], "HEED", "D", json!({})).await;
    assert!(made["error"].is_null(), "{made}");
    let js_b = jetstream_on(&members[1]).await;
    for (subject, n) in [("stay.x", 5u64), ("heed.x", 3)] {
        for i in 1..=n {
            let ack = js_b
                .publish(subject, format!("m{i}").into())
                .await
                .expect("publish")
                .await
                .expect("PubAck");
            assert_eq!(ack.sequence, i, "{subject}");
        }
    }

    let to_r5 = api(
        &client_b,
        "$JS.API.STREAM.UPDATE.STAY",
        with_replicas(&limits, 5),
    )
    .await;
    assert_eq!(to_r5["error"]["err_code"], 10005, "{to_r5}");
    let heed_r3 = api(
        &client_b,
        "$JS.API.STREAM.UPDATE.HEED",
        with_replicas(&interest, 3),
    )
    .await;
    assert_eq!(heed_r3["error"]["err_code"], 10061, "{heed_r3}");

    for (name, subject, held) in [("STAY", "stay.x", 5u64), ("HEED", "heed.x", 3)] {
        for m in &members {
            let info = api(
                &app_client(m).await,
                &format!("$JS.API.STREAM.INFO.{name}"),
                json!({}),
            )
            .await;
            assert_eq!(info["config"]["num_replicas"], 1, "{}: {info}", m.name);
            assert_eq!(info["state"]["messages"], held, "{}: {info}", m.name);
        }
        let ack = js_b
            .publish(subject, "next".into())
            .await
            .expect("publish")
            .await
            .expect("PubAck");
        assert_eq!(ack.sequence, held + 1, "{name}");
    }
    assert_eq!(
        engine_streams(&members[0]).await,
        2,
        "A still holds both streams"
    );
    for m in &members[1..] {
        assert_eq!(engine_streams(m).await, 0, "{} holds no copy", m.name);
    }
}
