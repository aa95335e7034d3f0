//! JetStream at the edges of the API, where clients written against nats-server notice a
//! difference (issue 18): the same raw API steps against leafd, hubd and nats-server 2.9,
//! expecting the same answers.
//!
//! * Consumer filters may be wider than the stream's subjects they cover.
//! * `max_msgs`, `max_msgs_per_subject` (discard old) hold when each PubAck is sent, and a
//!   stream updated to tighter limits is trimmed by the update (stricter than nats-server 2.9
//!   in one case, noted in the test).
//! * `STREAM.INFO` with `subjects_filter` (paged by `offset`) and `deleted_details`.
//! * Stream configurations nats-server refuses, and the "unlimited" zeros it reports as -1.
//! * A message whose subject contains `*` or `>` tokens is stored like any other (a KV purge
//!   of `hello.*`); as a rollup or a lookup its subject is a filter, as on nats-server.
//! * `republish`: its configuration checks, the copies and their headers.
//! * `state.bytes`, `max_bytes` and `max_msg_size` count a message as nats-server does.
//! * `storage: memory` streams work, count as memory, and are gone after a restart.
//! * Fields of newer servers (INFO says 2.10): `first_seq`, `subject_transform`,
//!   `consumer_limits` and `compression: s2` work, other compressions and 2.11 fields are
//!   refused by name, never accepted and ignored; `placement` is kept as a single nats-server 2.9 keeps it.
//!   nats-server 2.9 predates them and ignores them: its run shows that.

use bytes::Bytes;
use e2e::{bounded, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;
use serde_json::{json, Value};

server_tests!(
    consumer_filters_may_cover_stream_subjects,
    message_limits_hold_at_each_puback,
    tighter_limits_apply_with_the_update,
    stream_info_details,
    stream_config_checks_and_unlimited_zeros,
    wildcard_characters_in_message_subjects,
    republish,
    newer_stream_fields,
    direct_get_without_a_direct_stream_has_no_responders,
    bytes_are_counted_as_nats_server_counts_them,
    memory_streams_live_in_memory,
);

use e2e::js_api as api;

/// The error code of an API answer (0: success).
fn code(answer: &Value) -> u64 {
    answer["error"]["err_code"].as_u64().unwrap_or(0)
}

async fn create_stream(client: &async_nats::Client, config: Value) {
    let name = config["name"].as_str().expect("name").to_string();
    let answer = api(client, &format!("$JS.API.STREAM.CREATE.{name}"), config).await;
    assert_eq!(code(&answer), 0, "create {name}: {answer}");
}

/// Creates durable `name` on `stream` with `filter`; returns the error code.
async fn create_consumer(
    client: &async_nats::Client,
    stream: &str,
    name: &str,
    filter: &str,
) -> u64 {
    let config = json!({
        "durable_name": name,
        "ack_policy": "explicit",
        "filter_subject": filter,
    });
    let answer = api(
        client,
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}"),
        json!({ "stream_name": stream, "config": config }),
    )
    .await;
    code(&answer)
}

/// Publishes with a PubAck wait; returns the PubAck.
async fn publish(client: &async_nats::Client, subject: &str, payload: &str) -> Value {
    let reply = bounded(
        "puback",
        client.request(subject.to_string(), Bytes::from(payload.to_string())),
    )
    .await
    .expect("puback");
    let ack: Value = serde_json::from_slice(&reply.payload).expect("json puback");
    assert!(ack["error"].is_null(), "publish to {subject}: {ack}");
    ack
}

/// (messages, first sequence, last sequence) of `stream`.
async fn state(client: &async_nats::Client, stream: &str) -> (u64, u64, u64) {
    let info = api(client, &format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await;
    assert_eq!(code(&info), 0, "info {stream}: {info}");
    let st = &info["state"];
    let n = |k: &str| st[k].as_u64().unwrap_or(0);
    (n("messages"), n("first_seq"), n("last_seq"))
}

/// Pending messages of consumer `name` on `stream`.
async fn num_pending(client: &async_nats::Client, stream: &str, name: &str) -> u64 {
    let info = api(
        client,
        &format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
        json!({}),
    )
    .await;
    assert_eq!(code(&info), 0, "consumer info: {info}");
    info["num_pending"].as_u64().unwrap_or(u64::MAX)
}

async fn consumer_filters_may_cover_stream_subjects(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(
        &client,
        json!({ "name": "ABC", "subjects": ["foo.A", "foo.B", "foo.C"] }),
    )
    .await;
    create_stream(
        &client,
        json!({ "name": "MIX", "subjects": ["a", "b", "c.>"] }),
    )
    .await;
    create_stream(&client, json!({ "name": "PART", "subjects": ["p.a.*"] })).await;

    // Wider than the subjects they cover: accepted.
    assert_eq!(create_consumer(&client, "ABC", "star", "foo.*").await, 0);
    assert_eq!(create_consumer(&client, "ABC", "tail", "foo.>").await, 0);
    assert_eq!(create_consumer(&client, "MIX", "all", ">").await, 0);
    assert_eq!(create_consumer(&client, "MIX", "cstar", "c.*").await, 0);
    // Within one subject: accepted, as before.
    assert_eq!(create_consumer(&client, "ABC", "b", "foo.B").await, 0);
    // Outside every subject, or only partly overlapping one: refused with 10093.
    assert_eq!(create_consumer(&client, "ABC", "d", "foo.D").await, 10093);
    assert_eq!(create_consumer(&client, "ABC", "bar", "bar.*").await, 10093);
    assert_eq!(create_consumer(&client, "PART", "x", "p.*.x").await, 10093);

    // The wide filters select what they cover.
    for s in ["foo.A", "foo.B", "foo.C", "a", "b", "c.x", "c.x.y"] {
        publish(&client, s, "m").await;
    }
    assert_eq!(num_pending(&client, "ABC", "star").await, 3);
    assert_eq!(num_pending(&client, "ABC", "tail").await, 3);
    assert_eq!(num_pending(&client, "ABC", "b").await, 1);
    assert_eq!(num_pending(&client, "MIX", "all").await, 4);
    assert_eq!(num_pending(&client, "MIX", "cstar").await, 1);
}

async fn message_limits_hold_at_each_puback(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(
        &client,
        json!({ "name": "L", "subjects": ["l.>"], "max_msgs": 5, "discard": "old" }),
    )
    .await;
    for n in 1..=8u64 {
        let ack = publish(&client, "l.x", &n.to_string()).await;
        assert_eq!(ack["seq"].as_u64(), Some(n));
        let want = (n.min(5), n.saturating_sub(4).max(1), n);
        assert_eq!(state(&client, "L").await, want, "{kind} after publish {n}");
    }

    create_stream(
        &client,
        json!({ "name": "H", "subjects": ["h.>"], "max_msgs_per_subject": 2 }),
    )
    .await;
    for n in 1..=5u64 {
        publish(&client, "h.a", &n.to_string()).await;
        publish(&client, "h.b", &n.to_string()).await;
        let (msgs, _, last) = state(&client, "H").await;
        assert_eq!(
            (msgs, last),
            (2 * n.min(2), 2 * n),
            "{kind} after round {n}"
        );
    }
    let (msgs, first, _) = state(&client, "H").await;
    assert_eq!((msgs, first), (4, 7));
}

async fn tighter_limits_apply_with_the_update(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let config = json!({ "name": "U", "subjects": ["u.>"] });
    create_stream(&client, config.clone()).await;
    assert_eq!(create_consumer(&client, "U", "all", ">").await, 0);
    for (n, s) in ["u.a", "u.b", "u.a", "u.a", "u.b", "u.c"]
        .iter()
        .enumerate()
    {
        publish(&client, s, &n.to_string()).await;
    }
    let mut per_subject = config.clone();
    per_subject["max_msgs_per_subject"] = json!(1);
    let answer = api(&client, "$JS.API.STREAM.UPDATE.U", per_subject.clone()).await;
    assert_eq!(code(&answer), 0, "{answer}");
    // nats-server 2.9 trims per subject on an update only when the old limit was a number
    // larger than the new one, so unlimited to 1 keeps everything there (later versions trim;
    // ours trims, as every limit holds at once).
    let want = match kind {
        ServerKind::NatsServer => (6, 1, 6),
        _ => (3, 4, 6),
    };
    assert_eq!(state(&client, "U").await, want, "{kind}");
    let mut two = per_subject;
    two["max_msgs"] = json!(2);
    let answer = api(&client, "$JS.API.STREAM.UPDATE.U", two).await;
    assert_eq!(code(&answer), 0, "{answer}");
    assert_eq!(state(&client, "U").await, (2, 5, 6), "{kind}");
    assert_eq!(num_pending(&client, "U", "all").await, 2, "{kind}");
}

async fn stream_info_details(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(&client, json!({ "name": "D", "subjects": ["d.>"] })).await;
    for s in ["d.a", "d.a", "d.b", "d.a", "d.b", "d.c.x"] {
        publish(&client, s, "m").await;
    }
    let info = |body: Value| {
        let client = client.clone();
        async move {
            let answer = api(&client, "$JS.API.STREAM.INFO.D", body).await;
            assert_eq!(code(&answer), 0, "{answer}");
            answer
        }
    };
    let a = info(json!({ "subjects_filter": "d.*" })).await;
    assert_eq!(
        a["state"]["subjects"],
        json!({ "d.a": 3, "d.b": 2 }),
        "{kind}: {a}"
    );
    assert_eq!(
        (a["total"].as_u64(), a["offset"].as_u64()),
        (Some(2), Some(0))
    );
    let all = info(json!({ "subjects_filter": ">" })).await;
    assert_eq!(
        all["state"]["subjects"],
        json!({ "d.a": 3, "d.b": 2, "d.c.x": 1 }),
        "{kind}: {all}"
    );
    let page = info(json!({ "subjects_filter": ">", "offset": 1 })).await;
    assert_eq!(
        page["state"]["subjects"],
        json!({ "d.b": 2, "d.c.x": 1 }),
        "{kind}: {page}"
    );
    assert_eq!(page["total"].as_u64(), Some(3));
    let literal = info(json!({ "subjects_filter": "d.c.x" })).await;
    assert_eq!(
        literal["state"]["subjects"],
        json!({ "d.c.x": 1 }),
        "{kind}"
    );
    let none = info(json!({ "subjects_filter": "other.>" })).await;
    assert!(none["state"].get("subjects").is_none(), "{kind}: {none}");
    let plain = info(json!({})).await;
    assert!(plain["state"].get("subjects").is_none(), "{kind}: {plain}");

    let gone = api(
        &client,
        "$JS.API.STREAM.MSG.DELETE.D",
        json!({ "seq": 2, "no_erase": true }),
    )
    .await;
    assert_eq!(code(&gone), 0, "{gone}");
    let d = info(json!({ "deleted_details": true })).await;
    assert_eq!(d["state"]["deleted"], json!([2]), "{kind}: {d}");
    assert_eq!(d["state"]["num_deleted"].as_u64(), Some(1));
    let plain = info(json!({})).await;
    assert!(plain["state"].get("deleted").is_none(), "{kind}: {plain}");
}

async fn stream_config_checks_and_unlimited_zeros(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    for (name, bad) in [
        (
            "P1",
            json!({ "discard_new_per_subject": true, "max_msgs_per_subject": 1 }),
        ),
        (
            "P2",
            json!({ "discard_new_per_subject": true, "discard": "new" }),
        ),
        ("M", json!({ "mirror_direct": true })),
    ] {
        let mut config = bad.clone();
        config["name"] = json!(name);
        let answer = api(&client, &format!("$JS.API.STREAM.CREATE.{name}"), config).await;
        assert_eq!(code(&answer), 10052, "{kind}: {bad} -> {answer}");
    }
    let answer = api(
        &client,
        "$JS.API.STREAM.CREATE.Z",
        json!({
            "name": "Z", "subjects": ["z"], "max_consumers": 0, "max_msgs": 0, "max_bytes": 0,
            "max_msg_size": 0, "max_msgs_per_subject": 0,
            "discard": "new", "discard_new_per_subject": false,
        }),
    )
    .await;
    assert_eq!(code(&answer), 0, "{kind}: {answer}");
    let config = &answer["config"];
    for key in [
        "max_consumers",
        "max_msgs",
        "max_bytes",
        "max_msg_size",
        "max_msgs_per_subject",
    ] {
        assert_eq!(config[key].as_i64(), Some(-1), "{kind}: {key} in {config}");
    }
}

async fn wildcard_characters_in_message_subjects(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(&client, json!({ "name": "W", "subjects": ["w.>"] })).await;
    publish(&client, "w.a", "1").await;
    publish(&client, "w.b.c", "2").await;
    // A plain publish (no PubAck asked for) is captured too.
    client
        .publish("w.*", Bytes::from_static(b"3"))
        .await
        .expect("publish");
    let ack = publish(&client, "w.>", "4").await;
    assert_eq!(ack["seq"].as_u64(), Some(4), "{kind}: {ack}");
    assert_eq!(state(&client, "W").await, (4, 1, 4), "{kind}");
    let got = api(&client, "$JS.API.STREAM.MSG.GET.W", json!({ "seq": 3 })).await;
    assert_eq!(got["message"]["subject"], "w.*", "{kind}: {got}");
    let info = api(
        &client,
        "$JS.API.STREAM.INFO.W",
        json!({ "subjects_filter": ">" }),
    )
    .await;
    assert_eq!(
        info["state"]["subjects"],
        json!({ "w.a": 1, "w.b.c": 1, "w.*": 1, "w.>": 1 }),
        "{kind}: {info}"
    );

    // KV: purging key `hello.*` stores a purge marker on `$KV.B.hello.*`.
    create_stream(
        &client,
        json!({
            "name": "KV_B", "subjects": ["$KV.B.>"], "max_msgs_per_subject": 1,
            "allow_rollup_hdrs": true, "deny_delete": true, "discard": "new",
        }),
    )
    .await;
    publish(&client, "$KV.B.hello.x", "v").await;
    publish(&client, "$KV.B.other", "v").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "PURGE");
    headers.insert("Nats-Rollup", "sub");
    let reply = bounded(
        "purge ack",
        client.request_with_headers("$KV.B.hello.*", headers, Bytes::new()),
    )
    .await
    .expect("purge ack");
    let ack: Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(ack["seq"].as_u64(), Some(3), "{kind}: {ack}");
    let info = api(
        &client,
        "$JS.API.STREAM.INFO.KV_B",
        json!({ "subjects_filter": ">" }),
    )
    .await;
    // The rollup's subject is a filter: hello.x went with it, `other` stayed.
    assert_eq!(
        info["state"]["subjects"],
        json!({ "$KV.B.hello.*": 1, "$KV.B.other": 1 }),
        "{kind}: {info}"
    );
}

async fn republish(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    for (name, subjects, rp, want) in [
        (
            "C",
            json!(["c.>"]),
            json!({ "dest": "c.x" }),
            "forms a cycle",
        ),
        (
            "E",
            json!(["d.>"]),
            json!({ "src": "e.>", "dest": "z.>" }),
            "not valid subset",
        ),
        (
            "F",
            json!(["f.>"]),
            json!({ "src": "f.*", "dest": "z.>" }),
            "not valid",
        ),
        (
            "G",
            json!(["g.>"]),
            json!({ "src": "g.>", "dest": "" }),
            "not valid",
        ),
    ] {
        let config = json!({ "name": name, "subjects": subjects, "republish": rp });
        let answer = api(&client, &format!("$JS.API.STREAM.CREATE.{name}"), config).await;
        assert_eq!(code(&answer), 10052, "{kind}: {answer}");
        let text = answer["error"]["description"].as_str().unwrap_or_default();
        assert!(text.contains(want), "{kind}: {text}");
    }

    let answer = api(
        &client,
        "$JS.API.STREAM.CREATE.R",
        json!({ "name": "R", "subjects": ["r.>"],
                "republish": { "src": "r.*.x", "dest": "out.$1.{{wildcard(1)}}" } }),
    )
    .await;
    assert_eq!(code(&answer), 0, "{kind}: {answer}");
    assert_eq!(answer["config"]["republish"]["src"], "r.*.x");
    let answer = api(
        &client,
        "$JS.API.STREAM.CREATE.Q",
        json!({ "name": "Q", "subjects": ["q.>"],
                "republish": { "dest": "rq.>", "headers_only": true } }),
    )
    .await;
    assert_eq!(code(&answer), 0, "{kind}: {answer}");
    assert_eq!(
        answer["config"]["republish"]["src"], ">",
        "{kind}: {answer}"
    );

    let mut out = client.subscribe("out.>").await.expect("subscribe");
    let mut rq = client.subscribe("rq.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    publish(&client, "r.a.x", "hi").await;
    publish(&client, "r.b.y", "no").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Kind", "t");
    bounded(
        "puback",
        client.request_with_headers("r.a.x", headers, Bytes::from_static(b"hi2")),
    )
    .await
    .expect("puback");
    publish(&client, "q.k", "hello").await;

    let first = next(&mut out).await;
    assert_eq!(first.subject.as_str(), "out.a.a", "{kind}");
    assert_eq!(first.payload, Bytes::from_static(b"hi"));
    let h = first.headers.expect("headers");
    let get = |h: &async_nats::HeaderMap, k: &str| h.get(k).map(|v| v.as_str().to_string());
    assert_eq!(get(&h, "Nats-Stream").as_deref(), Some("R"), "{kind}");
    assert_eq!(get(&h, "Nats-Subject").as_deref(), Some("r.a.x"));
    assert_eq!(get(&h, "Nats-Sequence").as_deref(), Some("1"));
    assert_eq!(get(&h, "Nats-Last-Sequence").as_deref(), Some("0"));
    let second = next(&mut out).await;
    assert_eq!(
        second.payload,
        Bytes::from_static(b"hi2"),
        "{kind}: r.b.y is not copied"
    );
    let h = second.headers.expect("headers");
    assert_eq!(get(&h, "X-Kind").as_deref(), Some("t"), "{kind}");
    assert_eq!(get(&h, "Nats-Sequence").as_deref(), Some("3"));
    assert_eq!(
        get(&h, "Nats-Last-Sequence").as_deref(),
        Some("1"),
        "{kind}"
    );
    let only = next(&mut rq).await;
    assert_eq!(only.subject.as_str(), "rq.q.k", "{kind}");
    assert!(only.payload.is_empty());
    let h = only.headers.expect("headers");
    assert_eq!(get(&h, "Nats-Msg-Size").as_deref(), Some("5"), "{kind}");
    assert_eq!(get(&h, "Nats-Stream").as_deref(), Some("Q"));
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    bounded("republished", sub.next()).await.expect("message")
}

async fn newer_stream_fields(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let is_29 = kind == ServerKind::NatsServer;

    create_stream(
        &client,
        json!({ "name": "F", "subjects": ["f"], "first_seq": 5 }),
    )
    .await;
    let ack = publish(&client, "f", "x").await;
    assert_eq!(
        ack["seq"].as_u64(),
        Some(if is_29 { 1 } else { 5 }),
        "{kind}"
    );

    create_stream(
        &client,
        json!({ "name": "T", "subjects": ["t.>"],
                "subject_transform": { "src": "t.*", "dest": "stored.$1" } }),
    )
    .await;
    publish(&client, "t.a", "x").await;
    let got = api(&client, "$JS.API.STREAM.MSG.GET.T", json!({ "seq": 1 })).await;
    let want = if is_29 { "t.a" } else { "stored.a" };
    assert_eq!(got["message"]["subject"], want, "{kind}: {got}");
    let bad = api(
        &client,
        "$JS.API.STREAM.CREATE.T2",
        json!({ "name": "T2", "subjects": ["t2.>"],
                "subject_transform": { "src": "t2.*", "dest": "x.$2" } }),
    )
    .await;
    assert_eq!(code(&bad), if is_29 { 0 } else { 10052 }, "{kind}: {bad}");

    for (name, field, value) in [
        ("C", "compression", json!("lz4")),
        ("M", "allow_msg_ttl", json!(true)),
    ] {
        let mut config = json!({ "name": name, "subjects": [name.to_lowercase()] });
        config[field] = value;
        let answer = api(&client, &format!("$JS.API.STREAM.CREATE.{name}"), config).await;
        if is_29 {
            assert_eq!(code(&answer), 0, "{kind}: {answer}");
        } else {
            assert_eq!(code(&answer), 10052, "{kind}: {answer}");
            let text = answer["error"]["description"].as_str().unwrap_or_default();
            assert!(text.contains(field), "{kind}: {text}");
        }
    }
    // compression s2: the stream says so and stores and serves its messages as any other
    // (compressed at rest: the store's tests show the blocks shrink).
    create_stream(
        &client,
        json!({ "name": "Z", "subjects": ["z.>"], "compression": "s2" }),
    )
    .await;
    let big = "sensor 7 temperature 21.5 ok; ".repeat(200);
    for n in 1..=20 {
        publish(&client, &format!("z.{}", n % 3), &big).await;
    }
    let info = api(&client, "$JS.API.STREAM.INFO.Z", json!({})).await;
    if !is_29 {
        assert_eq!(info["config"]["compression"], "s2", "{kind}: {info}");
    }
    assert_eq!(info["state"]["messages"].as_u64(), Some(20), "{kind}");
    let got = api(&client, "$JS.API.STREAM.MSG.GET.Z", json!({ "seq": 7 })).await;
    let data = got["message"]["data"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    assert_eq!(payload, big.as_bytes(), "{kind}");

    // consumer_limits: the default and the ceiling of the stream's consumers.
    create_stream(
        &client,
        json!({ "name": "L", "subjects": ["l"], "consumer_limits": { "max_ack_pending": 10 } }),
    )
    .await;
    let create = |name: &str, config: Value| {
        let client = client.clone();
        let subject = format!("$JS.API.CONSUMER.DURABLE.CREATE.L.{name}");
        async move {
            api(
                &client,
                &subject,
                json!({ "stream_name": "L", "config": config }),
            )
            .await
        }
    };
    let fine = create(
        "d",
        json!({ "durable_name": "d", "ack_policy": "explicit" }),
    )
    .await;
    assert_eq!(code(&fine), 0, "{kind}: {fine}");
    let want = if is_29 { 1000 } else { 10 };
    assert_eq!(
        fine["config"]["max_ack_pending"].as_i64(),
        Some(want),
        "{kind}: {fine}"
    );
    let over = create(
        "o",
        json!({ "durable_name": "o", "ack_policy": "explicit", "max_ack_pending": 11 }),
    )
    .await;
    assert_eq!(code(&over), if is_29 { 0 } else { 10121 }, "{kind}: {over}");

    let config = json!({ "durable_name": "P", "ack_policy": "explicit",
                         "pause_until": "2030-01-01T00:00:00Z" });
    let answer = api(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.F.P",
        json!({ "stream_name": "F", "config": config }),
    )
    .await;
    if is_29 {
        assert_eq!(code(&answer), 0, "{kind}: {answer}");
    } else {
        let text = answer["error"]["description"].as_str().unwrap_or_default();
        assert!(text.contains("pause_until"), "{kind}: {answer}");
    }
    for (name, config) in [
        ("N", json!({ "compression": "none", "consumer_limits": {} })),
        ("P", json!({ "placement": { "cluster": "east" } })),
    ] {
        let mut config = config;
        config["name"] = json!(name);
        config["subjects"] = json!([name.to_lowercase()]);
        let answer = api(&client, &format!("$JS.API.STREAM.CREATE.{name}"), config).await;
        assert_eq!(code(&answer), 0, "{kind}: {answer}");
        if name == "P" {
            assert_eq!(
                answer["config"]["placement"],
                json!({ "cluster": "east" }),
                "{kind}"
            );
        }
    }
}

async fn direct_get_without_a_direct_stream_has_no_responders(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(&client, json!({ "name": "ND", "subjects": ["nd"] })).await;
    create_stream(
        &client,
        json!({ "name": "D", "subjects": ["d"], "allow_direct": true }),
    )
    .await;
    publish(&client, "d", "x").await;
    // Current nats-server versions answer "no responders"; 2.9 stays silent (its API
    // subscription takes the request and drops it), so its run waits one second for nothing.
    let want = match kind {
        ServerKind::NatsServer => async_nats::RequestErrorKind::TimedOut,
        _ => async_nats::RequestErrorKind::NoResponders,
    };
    for name in ["NOPE", "ND"] {
        let request = async_nats::Request::new()
            .payload(Bytes::from(json!({ "seq": 1 }).to_string()))
            .timeout(Some(std::time::Duration::from_secs(1)));
        let answer = bounded(
            "direct get",
            client.send_request(format!("$JS.API.DIRECT.GET.{name}"), request),
        )
        .await;
        let e = answer.expect_err("no answer");
        assert_eq!(e.kind(), want, "{kind}: {name}");
    }
    let found = bounded(
        "direct get",
        client.request(
            "$JS.API.DIRECT.GET.D".to_string(),
            Bytes::from(json!({ "seq": 1 }).to_string()),
        ),
    )
    .await
    .expect("answer");
    assert_eq!(found.payload, Bytes::from_static(b"x"), "{kind}");
}

/// Bytes (messages, bytes) of `stream`.
async fn msgs_and_bytes(client: &async_nats::Client, stream: &str) -> (u64, u64) {
    let info = api(client, &format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await;
    let st = &info["state"];
    (
        st["messages"].as_u64().unwrap_or(0),
        st["bytes"].as_u64().unwrap_or(0),
    )
}

async fn bytes_are_counted_as_nats_server_counts_them(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(
        &client,
        json!({ "name": "BY", "subjects": ["by.>"], "max_bytes": 200, "discard": "old" }),
    )
    .await;
    // "by.x" with "hello": 30 + 4 + 5 = 39 bytes on nats-server's file store.
    for n in 1..=8u64 {
        publish(&client, "by.x", "hello").await;
        let want = (n.min(5), 39 * n.min(5));
        assert_eq!(
            msgs_and_bytes(&client, "BY").await,
            want,
            "{kind} after {n}"
        );
    }
    // With headers: 34 + 5 + 18 + 3 = 60 bytes; the oldest go until 200 holds.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("A", "b");
    bounded(
        "puback",
        client.request_with_headers("by.yy", headers, Bytes::from_static(b"abc")),
    )
    .await
    .expect("puback");
    assert_eq!(
        msgs_and_bytes(&client, "BY").await,
        (4, 3 * 39 + 60),
        "{kind}"
    );

    // max_msg_size counts headers and payload, not the subject.
    create_stream(
        &client,
        json!({ "name": "SZ", "subjects": ["a-rather-long-subject.>"], "max_msg_size": 5 }),
    )
    .await;
    publish(&client, "a-rather-long-subject.x", "12345").await;
    let reply = bounded(
        "puback",
        client.request("a-rather-long-subject.y", Bytes::from_static(b"123456")),
    )
    .await
    .expect("puback");
    let nack: Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(
        nack["error"]["err_code"].as_u64(),
        Some(10054),
        "{kind}: {nack}"
    );
}

async fn memory_streams_live_in_memory(kind: ServerKind) {
    let dir = StoreDir::new();
    let mut server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    create_stream(
        &client,
        json!({ "name": "MEM", "subjects": ["mem.>"], "storage": "memory", "max_msgs": 3 }),
    )
    .await;
    create_stream(&client, json!({ "name": "DISK", "subjects": ["disk"] })).await;
    for n in 1..=5 {
        publish(&client, "mem.x", &n.to_string()).await;
    }
    publish(&client, "disk", "d").await;
    assert_eq!(state(&client, "MEM").await, (3, 3, 5), "{kind}");
    assert_eq!(create_consumer(&client, "MEM", "c", "mem.>").await, 0);
    assert_eq!(num_pending(&client, "MEM", "c").await, 3);
    let got = api(&client, "$JS.API.STREAM.MSG.GET.MEM", json!({ "seq": 4 })).await;
    assert_eq!(got["message"]["subject"], "mem.x", "{kind}: {got}");
    let info = api(&client, "$JS.API.INFO", json!({})).await;
    assert!(info["memory"].as_u64().unwrap_or(0) > 0, "{kind}: {info}");
    assert!(info["storage"].as_u64().unwrap_or(0) > 0, "{kind}: {info}");
    let update = api(
        &client,
        "$JS.API.STREAM.UPDATE.MEM",
        json!({ "name": "MEM", "subjects": ["mem.>"], "storage": "file", "max_msgs": 3 }),
    )
    .await;
    assert_eq!(code(&update), 10052, "{kind}: {update}");
    // An update of a memory stream applies its tighter limits to the memory store (it
    // failed with 10051 "stream not found": the limits went to the file store).
    let update = api(
        &client,
        "$JS.API.STREAM.UPDATE.MEM",
        json!({ "name": "MEM", "subjects": ["mem.>"], "storage": "memory", "max_msgs": 2 }),
    )
    .await;
    assert!(update.get("error").is_none(), "{kind}: {update}");
    assert_eq!(state(&client, "MEM").await, (2, 4, 5), "{kind}");
    drop(client);

    // A restart keeps the file stream and loses the memory one, as nats-server does.
    server.kill();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    assert_eq!(state(&client, "DISK").await.0, 1, "{kind}");
    let gone = api(&client, "$JS.API.STREAM.INFO.MEM", json!({})).await;
    assert_eq!(code(&gone), 10059, "{kind}: {gone}");
}
