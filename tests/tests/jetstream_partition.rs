//! Network partitions of a JetStream cluster (issue 22, "Tests (CI)": partitions).
//!
//! The issue asks for network namespaces and netem; this kernel has no `sch_netem`, so a
//! partition is modelled with blackhole routes instead (see `e2e::partition`): three hubd
//! members, each in its own network namespace on a bridge, cut apart by `blackhole` routes
//! inside the namespaces on both sides (new connections fail, established ones stop getting
//! through) and healed by deleting them. The test's clients, in the test's namespace, reach
//! every member, the minority one too. Needs root.
//!
//! `a_partitioned_stream_leader_acknowledges_nothing_and_heals_without_loss`: an R3 stream; its
//! leader cut off from the two others (it is the minority); a client on the minority member
//! publishes windows of msg ids (retried) and gets no PubAck with a sequence (only timeouts
//! and errors, every outcome recorded), while a client on a majority member publishes
//! windows of other ids until all are acknowledged (the majority elects a new leader); an R2
//! stream created on the majority during the partition is created, one created on the
//! minority is not (no split brain). Healed, every member's copy is identical within a
//! bounded wait, holds every acknowledged message exactly once at its acknowledged sequence,
//! and no msg id twice; the stream created on the majority exists on every member.
//!
//! `kv_cas_updates_stay_linearizable_through_a_kill_and_a_partition`: an R3 register updated
//! with CAS by three clients (one per member) through a SIGKILL and restart of its stream
//! leader and a partition of the next leader; `e2e::linearizable::check` over the recorded
//! history and the stored revisions finds no lost update, one chain of revisions, real-time
//! order kept, no phantom read and no stale read: a `get` invoked after an update completed
//! returns that update's revision or a later one (reads are answered by the group's leader
//! after a read barrier, whichever member is asked).
//!
//! Every wait is bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::linearizable::{check, Op, Outcome, Reads};
use e2e::partition::Lan;
use e2e::serde_json::{json, Value};
use e2e::{ServerKind, StoreDir, TestServer};

/// The route port of every member (each has its own namespace and address).
const ROUTE_PORT: u16 = 6222;

/// How long elections, catch-up and placements may take.
const BOUND: Duration = Duration::from_secs(40);

/// One member in namespace `index` of the LAN.
struct Member {
    server: TestServer,
    name: String,
    config: Value,
    namespace: String,
    addr: String,
    _store: StoreDir,
}

impl Member {
    /// SIGKILLs the member and starts it again on the same port, configuration and store.
    async fn kill_and_restart(&mut self, down: Duration) {
        let port = self.server.port();
        self.server.kill();
        tokio::time::sleep(down).await;
        self.server = TestServer::builder(ServerKind::Hubd)
            .config(self.config.clone())
            .in_netns(&self.namespace, &self.addr)
            .port(port)
            .start()
            .await;
    }
}

/// Starts hubd member `i` of three in the LAN's namespace `i`.
async fn start(lan: &Lan, i: usize) -> Member {
    let store = StoreDir::new();
    let name = format!("n{}", i + 1);
    let config = json!({
        "server_name": name,
        "jetstream": { "store_dir": store.path() },
        "cluster": {
            "name": "C",
            "listen": format!("{}:{ROUTE_PORT}", lan.addr(i)),
            "routes": (0..3).map(|j| format!("nats-route://{}:{ROUTE_PORT}", lan.addr(j))).collect::<Vec<_>>(),
        },
        "accounts": { "SYS": { "users": [ { "user": "sys", "password": "s" } ] } },
        "system_account": "SYS",
        "authorization": { "users": [ { "user": "g", "password": "g" } ] },
    });
    let server = TestServer::builder(ServerKind::Hubd)
        .config(config.clone())
        .in_netns(lan.namespace(i), lan.addr(i))
        .start()
        .await;
    Member {
        server,
        name,
        config,
        namespace: lan.namespace(i).to_owned(),
        addr: lan.addr(i).to_owned(),
        _store: store,
    }
}

/// A client of the global account (JetStream's) on `m`.
async fn client(m: &Member) -> e2e::async_nats::Client {
    m.server
        .client_with(TestServer::options().user_and_password("g".into(), "g".into()))
        .await
}

/// A JetStream API request: its JSON answer, or `None` without one within 6 s.
async fn try_api(client: &e2e::async_nats::Client, subject: &str, body: Value) -> Option<Value> {
    match tokio::time::timeout(
        Duration::from_secs(6),
        client.request(subject.to_owned(), body.to_string().into()),
    )
    .await
    {
        Ok(Ok(msg)) => e2e::serde_json::from_slice(&msg.payload).ok(),
        _ => None,
    }
}

/// Creates stream `config` through `client`, retrying (bounded) until it is created.
async fn create_until_done(client: &e2e::async_nats::Client, config: Value) {
    let subject = format!(
        "$JS.API.STREAM.CREATE.{}",
        config["name"].as_str().unwrap_or_default()
    );
    let deadline = Instant::now() + BOUND;
    loop {
        let answer = try_api(client, &subject, config.clone()).await;
        if answer
            .as_ref()
            .is_some_and(|a| a["did_create"] == json!(true) || a["config"].is_object())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{subject}: not created within {BOUND:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The stream's group leader as the first of `members` that names one (other than `not`)
/// says (bounded wait).
async fn stream_leader(members: &[&Member], stream: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + BOUND;
    let subject = format!("$JS.API.STREAM.INFO.{stream}");
    loop {
        for m in members {
            let c = client(m).await;
            if let Some(info) = try_api(&c, &subject, json!({})).await {
                if let Some(leader) = info["cluster"]["leader"].as_str() {
                    if Some(leader) != not {
                        return leader.to_owned();
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: no group leader (other than {not:?}) within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stream names `m` lists (`None` without an answer).
async fn stream_names(m: &Member) -> Option<Vec<String>> {
    let answer = try_api(&client(m).await, "$JS.API.STREAM.NAMES", json!({})).await?;
    Some(
        answer["streams"]
            .as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
    )
}

/// `m`'s own copy of `stream`: its `STREAM.INFO` state and its messages as (sequence,
/// `Nats-Msg-Id`), read with an ephemeral consumer on `m`'s copy (`MSG.GET` is answered by the
/// group's leader).
async fn copy_of(m: &Member, stream: &str) -> Option<(Value, Vec<(u64, String)>)> {
    let c = client(m).await;
    let info = try_api(&c, &format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await?;
    let state = info["state"].clone();
    let count = state["messages"].as_u64()?;
    let msgs = e2e::copy::messages(&c, stream, count, Duration::from_secs(30)).await?;
    Some((state, msgs.into_iter().map(|m| (m.seq, m.msg_id)).collect()))
}

/// A publish with `Nats-Msg-Id` `id`.
fn with_id(id: &str) -> e2e::async_nats::HeaderMap {
    let mut headers = e2e::async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers
}

/// The outcome of one publish: `Ok(sequence)`, or the error / timeout as text.
type PubOutcome = Result<u64, String>;

/// Publishes `ids` (one window, async) through `js` and awaits every PubAck together within
/// `limit`: each id's outcome.
async fn window(
    js: &e2e::async_nats::jetstream::Context,
    ids: &[String],
    limit: Duration,
) -> Vec<(String, PubOutcome)> {
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for id in ids {
        match js
            .publish_with_headers(format!("orders.{id}"), with_id(id), id.clone().into())
            .await
        {
            Ok(ack) => pending.push((id.clone(), ack)),
            Err(e) => out.push((id.clone(), Err(format!("send: {e}")))),
        }
    }
    let awaited = futures::future::join_all(pending.into_iter().map(|(id, ack)| async move {
        let outcome = match tokio::time::timeout(limit, ack).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(format!("{e}")),
            Err(_) => Err("timeout".to_owned()),
        };
        (id, outcome)
    }))
    .await;
    out.extend(awaited);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_stream_leader_acknowledges_nothing_and_heals_without_loss() {
    let mut lan = Lan::new(3);
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(start(&lan, i).await);
    }
    let all: Vec<&Member> = members.iter().collect();
    // Retried until the meta group has a leader.
    create_until_done(
        &client(&members[0]).await,
        json!({"name": "ORDERS", "subjects": ["orders.>"], "num_replicas": 3}),
    )
    .await;
    let leader = stream_leader(&all, "ORDERS", None).await;
    let minority = members
        .iter()
        .position(|m| m.name == leader)
        .expect("the leader is a member");
    let majority: Vec<usize> = (0..3).filter(|i| *i != minority).collect();
    let js_min = e2e::async_nats::jetstream::new(client(&members[minority]).await);
    let js_maj = e2e::async_nats::jetstream::new(client(&members[majority[0]]).await);

    // Acknowledged before the cut: the id -> sequence of every PubAck with a sequence.
    let mut acked: HashMap<String, u64> = HashMap::new();
    let pre: Vec<String> = (0..20).map(|i| format!("pre{i}")).collect();
    for (id, outcome) in window(&js_maj, &pre, Duration::from_secs(10)).await {
        let seq = outcome.unwrap_or_else(|e| panic!("{id} before the cut: {e}"));
        acked.insert(id, seq);
    }

    lan.cut(&[minority]);

    // The meta group: a stream created on the majority is created (once it has a meta
    // leader and sees two voters up); one created on the minority is not.
    let on_minority = try_api(
        &client(&members[minority]).await,
        "$JS.API.STREAM.CREATE.MIN",
        json!({"name": "MIN", "subjects": ["min.>"], "num_replicas": 2}),
    )
    .await;
    assert!(
        on_minority
            .as_ref()
            .is_none_or(|a| a["did_create"] != json!(true) && !a["error"].is_null()),
        "the minority created a stream: {on_minority:?}"
    );

    // Windows from both sides until every majority id is acknowledged.
    const N: usize = 200;
    const WINDOW: usize = 20;
    let maj_ids: Vec<String> = (0..N).map(|i| format!("maj{i}")).collect();
    let min_ids: Vec<String> = (0..WINDOW * 2).map(|i| format!("min{i}")).collect();
    let mut minority_outcomes: Vec<(String, PubOutcome)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    while maj_ids.iter().any(|id| !acked.contains_key(id)) {
        assert!(
            Instant::now() < deadline,
            "the majority did not acknowledge every publish within 90 s: {} left",
            maj_ids.iter().filter(|id| !acked.contains_key(*id)).count()
        );
        let batch: Vec<String> = maj_ids
            .iter()
            .filter(|id| !acked.contains_key(*id))
            .take(WINDOW)
            .cloned()
            .collect();
        // The minority's windows go round its ids: each is published (retried) repeatedly.
        let start = (round * WINDOW / 2) % min_ids.len();
        let min_batch: Vec<String> = min_ids
            .iter()
            .cycle()
            .skip(start)
            .take(WINDOW)
            .cloned()
            .collect();
        round += 1;
        let (maj, min) = tokio::join!(
            window(&js_maj, &batch, Duration::from_secs(5)),
            window(&js_min, &min_batch, Duration::from_millis(1500)),
        );
        let mut failed = false;
        for (id, outcome) in maj {
            match outcome {
                Ok(seq) => {
                    acked.insert(id, seq);
                }
                Err(_) => failed = true,
            }
        }
        minority_outcomes.extend(min);
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let sequenced: Vec<&(String, PubOutcome)> = minority_outcomes
        .iter()
        .filter(|(_, o)| o.is_ok())
        .collect();
    assert!(
        sequenced.is_empty(),
        "the minority acknowledged with a sequence after the cut: {sequenced:?}"
    );
    assert!(!minority_outcomes.is_empty());
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for (_, outcome) in &minority_outcomes {
        if let Err(e) = outcome {
            *kinds.entry(e.as_str()).or_default() += 1;
        }
    }
    eprintln!("the minority's PubAck outcomes after the cut: {kinds:?}; on the minority STREAM.CREATE answered {on_minority:?}");
    let majority_members: Vec<&Member> = majority.iter().map(|i| &members[*i]).collect();
    let new_leader = stream_leader(&majority_members, "ORDERS", Some(&leader)).await;
    assert_ne!(new_leader, leader);
    create_until_done(
        &client(&members[majority[0]]).await,
        json!({"name": "MAJ", "subjects": ["maj.>"], "num_replicas": 2}),
    )
    .await;

    lan.heal();

    // Every copy identical (bounded wait), with every acknowledged message once.
    let deadline = Instant::now() + BOUND;
    let copies = loop {
        let mut copies = Vec::new();
        for m in &members {
            copies.push(copy_of(m, "ORDERS").await);
        }
        let settled = copies.iter().all(|c| {
            c.as_ref().is_some_and(|(_, msgs)| {
                msgs.len() >= acked.len()
                    && copies
                        .first()
                        .and_then(Option::as_ref)
                        .is_some_and(|(_, first)| first == msgs)
            })
        });
        if settled {
            break copies.into_iter().flatten().collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "the copies differ {BOUND:?} after healing: {:?}",
            copies
                .iter()
                .map(|c| c.as_ref().map(|(state, _)| state.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, msgs) = &copies[0];
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (seq, id) in msgs {
        if let Some(first) = seen.insert(id.as_str(), *seq) {
            panic!("{id} stored twice: at {first} and {seq}");
        }
    }
    for (id, seq) in &acked {
        assert_eq!(
            seen.get(id.as_str()),
            Some(seq),
            "{id}: acknowledged at {seq}"
        );
    }
    eprintln!(
        "ids of the minority stored after healing: {}",
        seen.keys().filter(|id| id.starts_with("min")).count()
    );
    // The meta group: no split brain.
    let deadline = Instant::now() + BOUND;
    loop {
        let mut names = Vec::new();
        for m in &members {
            names.push(stream_names(m).await);
        }
        let done = names.iter().all(|n| {
            n.as_ref()
                .is_some_and(|n| n.contains(&"MAJ".to_owned()) && Some(n) == names[0].as_ref())
        });
        if done {
            if on_minority.is_some() {
                assert!(
                    !names[0]
                        .as_ref()
                        .is_some_and(|n| n.contains(&"MIN".to_owned())),
                    "a stream refused on the minority exists: {names:?}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the members' stream names differ after healing: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The values of `stream` in `m`'s own copy, as (sequence, payload parsed as a number), once
/// an ephemeral consumer on `m`'s copy reads every message `STREAM.INFO` counts.
async fn values_of(m: &Member, stream: &str) -> Option<Vec<(u64, u64)>> {
    let c = client(m).await;
    let info = try_api(&c, &format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await?;
    let count = info["state"]["messages"].as_u64()?;
    let msgs = e2e::copy::messages(&c, stream, count, Duration::from_secs(30)).await?;
    msgs.into_iter()
        .map(|m| Some((m.seq, String::from_utf8_lossy(&m.payload).parse().ok()?)))
        .collect()
}

/// One client's loop on the register: `get`, then `update` to the value plus one from the
/// revision read, each recorded (a read without an answer is not recorded: it says nothing),
/// until `stop`.
async fn cas_loop(
    client_id: usize,
    kv: e2e::async_nats::jetstream::kv::Store,
    start: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Op> {
    use e2e::async_nats::jetstream::kv::UpdateErrorKind;
    let limit = Duration::from_secs(3);
    let mut ops = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let invoked = start.elapsed();
        let read = tokio::time::timeout(limit, kv.entry("r")).await;
        let Ok(Ok(Some(entry))) = read else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(value) = String::from_utf8_lossy(&entry.value).parse::<u64>() else {
            panic!("client {client_id}: not a number: {entry:?}");
        };
        ops.push(Op {
            client: client_id,
            invoked,
            completed: start.elapsed(),
            outcome: Outcome::Read {
                revision: entry.revision,
                value,
            },
        });
        let invoked = start.elapsed();
        let written = tokio::time::timeout(
            limit,
            kv.update("r", (value + 1).to_string().into(), entry.revision),
        )
        .await;
        let outcome = match written {
            Ok(Ok(revision)) => Outcome::Updated {
                expected: entry.revision,
                revision,
                value: value + 1,
            },
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => Outcome::CasFailed,
            // A timeout, or an error that may come after the write was proposed.
            _ => Outcome::Unknown,
        };
        let unknown = outcome == Outcome::Unknown;
        ops.push(Op {
            client: client_id,
            invoked,
            completed: start.elapsed(),
            outcome,
        });
        if unknown {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ops
}

/// issue 22, KV linearizability: an R3 register (`KV_reg`, every revision kept) updated with
/// CAS by three clients, one on each member, while the register's stream leader is SIGKILLed
/// and restarted, and then the next leader partitioned away and healed. The recorded history
/// and the stored revisions pass `e2e::linearizable::check`: no lost update, one chain of
/// revisions, real-time order of the successful updates, no phantom read, and no stale read
/// (`Reads::StaleAfter(0)`: a `get` invoked after an update completed sees it; reads are
/// served by the group's leader after a read barrier, see "Reads on the group's leader" in
/// JETSTREAM-CLUSTER.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_cas_updates_stay_linearizable_through_a_kill_and_a_partition() {
    let mut lan = Lan::new(3);
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(start(&lan, i).await);
    }
    // Every revision kept (a KV bucket keeps at most 64), so the whole chain can be checked;
    // made as a stream, as `create_key_value` would not allow that history.
    create_until_done(
        &client(&members[0]).await,
        json!({
            "name": "KV_reg", "subjects": ["$KV.reg.>"], "num_replicas": 3,
            "max_msgs_per_subject": 1_000_000, "allow_rollup_hdrs": true, "deny_delete": true,
            "allow_direct": true,
        }),
    )
    .await;
    let mut stores = Vec::new();
    for m in &members {
        let js = e2e::async_nats::jetstream::new(client(m).await);
        stores.push(js.get_key_value("reg").await.expect("the bucket"));
    }
    let deadline = Instant::now() + BOUND;
    while !matches!(
        tokio::time::timeout(Duration::from_secs(5), stores[0].put("r", "0".into())).await,
        Ok(Ok(_))
    ) {
        assert!(Instant::now() < deadline, "no initial put within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let start_at = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, kv)| tokio::spawn(cas_loop(i, kv, start_at, stop.clone())))
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = {
        let all: Vec<&Member> = members.iter().collect();
        stream_leader(&all, "KV_reg", None).await
    };
    let killed = members
        .iter()
        .position(|m| m.name == leader)
        .expect("the leader");
    members[killed]
        .kill_and_restart(Duration::from_secs(1))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = {
        let all: Vec<&Member> = members.iter().collect();
        stream_leader(&all, "KV_reg", None).await
    };
    let cut = members
        .iter()
        .position(|m| m.name == second)
        .expect("the leader");
    lan.cut(&[cut]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    lan.heal();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ops = Vec::new();
    for w in workers {
        ops.extend(
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a client stops within 10 s")
                .expect("a client's loop"),
        );
    }

    // Every copy the same (bounded wait), then checked.
    let deadline = Instant::now() + BOUND;
    let stored = loop {
        let mut copies = Vec::new();
        for m in &members {
            copies.push(values_of(m, "KV_reg").await);
        }
        if copies[0].is_some() && copies.iter().all(|c| c == &copies[0]) {
            break copies[0].clone().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "the copies differ {BOUND:?} after the run: {:?}",
            copies
                .iter()
                .map(|c| c.as_ref().map(Vec::len))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|op| f(&op.outcome)).count();
    let updated = count(|o| matches!(o, Outcome::Updated { .. }));
    eprintln!(
        "{} operations: {updated} updates, {} CAS failures, {} unknown, {} reads; {} revisions stored",
        ops.len(),
        count(|o| *o == Outcome::CasFailed),
        count(|o| *o == Outcome::Unknown),
        count(|o| matches!(o, Outcome::Read { .. })),
        stored.len()
    );
    assert!(updated >= 10, "too few successful updates to check");
    let violations = check(&ops, &stored, Reads::StaleAfter(Duration::ZERO));
    assert!(
        violations.is_empty(),
        "not linearizable: {violations:?}\nstored: {stored:?}"
    );
}
