//! The shape of stream and consumer infos (issue 17: the typed bodies of
//! `leaf_core::jetstream::wire`): the steps `scripts/capture-js-fixtures` ran against
//! nats-server 2.9 to capture `core/src/jetstream/wire/fixtures/`, run against leafd, hubd
//! and nats-server, each answer's keys (nested, as paths) compared with those of the captured
//! answer. nats-server must answer with exactly the captured keys (the fixtures are still
//! true); leafd and hubd with the same keys except the differences listed in [`DIFFERENCES`],
//! each of which is a documented choice (see `core/DESIGN.md`, "JetStream API types").

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use e2e::{bounded, next_msg, server_tests, ServerKind, StoreDir, TestServer, WAIT};
use serde_json::{json, Value};

server_tests!(infos_have_nats_server_keys);

/// Keys leafd and hubd add to (`+`) or leave out of (`-`) nats-server 2.9's answer, per
/// captured answer.
const DIFFERENCES: &[(&str, &[&str])] = &[
    // `ts`: 2.10's time of the answer.
    ("stream_create_response", &["+ts"]),
    // 2.9 sends `total`, `offset` and `limit` with every STREAM.INFO answer (zeros without
    // a subjects filter); we send them only for a filter that matched.
    (
        "stream_info_response",
        &["+ts", "-total", "-offset", "-limit"],
    ),
    ("stream_info_details_response", &["+ts"]),
    ("stream_update_response", &["+ts"]),
    // Our stream configuration always lists its subjects, also when there are none.
    (
        "stream_info_sources_response",
        &["+ts", "-total", "-offset", "-limit", "+config.subjects"],
    ),
    // A mirror's configuration keeps the default `duplicate_window` (2 min), where 2.9
    // reports none (0, left out) for a mirror.
    (
        "stream_info_mirror_response",
        &[
            "+ts",
            "-total",
            "-offset",
            "-limit",
            "+config.subjects",
            "+config.duplicate_window",
        ],
    ),
    (
        "stream_info_not_found_response",
        &["-total", "-offset", "-limit"],
    ),
    // Our consumer configuration carries the consumer's `name` (as 2.10's does; 2.9 only
    // `durable_name`) and leaves out a zero `num_replicas` (2.9 always sends it).
    (
        "consumer_create_response",
        &["+ts", "+config.name", "-config.num_replicas"],
    ),
    (
        "consumer_info_response",
        &["+ts", "+config.name", "-config.num_replicas"],
    ),
    // An ephemeral push consumer, as a source asks for: also `push_bound` (false, nobody
    // listens; 2.9 sends only `true`), no `direct` (accepted, neither kept nor reported) and
    // no `inactive_threshold` (2.9 reports its 5 s default; ours applies it unreported).
    (
        "consumer_create_push_response",
        &[
            "+ts",
            "+config.name",
            "+push_bound",
            "-config.num_replicas",
            "-config.direct",
            "-config.inactive_threshold",
        ],
    ),
    ("consumer_info_not_found_response", &[]),
];

/// A captured answer or request.
fn fixture(name: &str) -> Value {
    let text = match name {
        "stream_create_request" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_create_request.json")
        }
        "stream_create_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_create_response.json")
        }
        "stream_info_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_info_response.json")
        }
        "stream_info_details_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_info_details_response.json")
        }
        "stream_update_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_update_response.json")
        }
        "stream_info_sources_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_info_sources_response.json")
        }
        "stream_info_mirror_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/stream_info_mirror_response.json")
        }
        "stream_info_not_found_response" => include_str!(
            "../../core/src/jetstream/wire/fixtures/stream_info_not_found_response.json"
        ),
        "consumer_durable_create_request" => include_str!(
            "../../core/src/jetstream/wire/fixtures/consumer_durable_create_request.json"
        ),
        "consumer_create_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/consumer_create_response.json")
        }
        "consumer_info_response" => {
            include_str!("../../core/src/jetstream/wire/fixtures/consumer_info_response.json")
        }
        "consumer_create_push_request" => {
            include_str!("../../core/src/jetstream/wire/fixtures/consumer_create_push_request.json")
        }
        "consumer_create_push_response" => include_str!(
            "../../core/src/jetstream/wire/fixtures/consumer_create_push_response.json"
        ),
        "consumer_info_not_found_response" => include_str!(
            "../../core/src/jetstream/wire/fixtures/consumer_info_not_found_response.json"
        ),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("fixture JSON")
}

/// Every key of `v`, as paths (`state.first_seq`; array elements as `[]`).
fn key_paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(path.clone());
                    walk(v, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Checks `answer`'s keys against the captured answer `name`'s, with the differences our
/// servers have (none for nats-server).
fn check(kind: ServerKind, name: &str, answer: &Value) {
    let ours = key_paths(answer);
    let theirs = key_paths(&fixture(name));
    let mut found: Vec<String> = ours
        .difference(&theirs)
        .map(|k| format!("+{k}"))
        .chain(theirs.difference(&ours).map(|k| format!("-{k}")))
        .collect();
    found.sort();
    let mut expected: Vec<String> = match kind {
        ServerKind::NatsServer => Vec::new(),
        _ => DIFFERENCES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| panic!("no differences listed for {name}")),
    };
    expected.sort();
    assert_eq!(found, expected, "{kind}: {name}: {answer}");
}

async fn request(client: &async_nats::Client, subject: &str, body: &Value) -> Value {
    let payload = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let reply = bounded("api request", client.request(subject.to_string(), payload))
        .await
        .expect("answer");
    serde_json::from_slice(&reply.payload).expect("JSON answer")
}

/// Asks for `stream`'s info until it holds `messages` (its sources copied them).
async fn info_once_copied(client: &async_nats::Client, stream: &str, messages: u64) -> Value {
    let subject = format!("$JS.API.STREAM.INFO.{stream}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = request(client, &subject, &Value::Null).await;
        if info["state"]["messages"].as_u64() == Some(messages) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} never held {messages} messages: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn infos_have_nats_server_keys(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let client = server.client().await;
    let mut orders = fixture("stream_create_request");
    let created = request(&client, "$JS.API.STREAM.CREATE.ORDERS", &orders).await;
    check(kind, "stream_create_response", &created);
    for (i, subject) in ["orders.new", "orders.new", "orders.paid"]
        .iter()
        .enumerate()
    {
        let ack = request(&client, subject, &json!(format!("order {i}"))).await;
        assert_eq!(ack["seq"].as_u64(), Some(i as u64 + 1), "{kind}: {ack}");
    }
    let info = request(&client, "$JS.API.STREAM.INFO.ORDERS", &Value::Null).await;
    check(kind, "stream_info_response", &info);
    let deleted = request(
        &client,
        "$JS.API.STREAM.MSG.DELETE.ORDERS",
        &json!({ "seq": 2, "no_erase": true }),
    )
    .await;
    assert_eq!(deleted["success"], true, "{kind}: {deleted}");
    let details = request(
        &client,
        "$JS.API.STREAM.INFO.ORDERS",
        &json!({ "subjects_filter": ">", "deleted_details": true }),
    )
    .await;
    check(kind, "stream_info_details_response", &details);
    orders["max_msgs"] = json!(1000);
    let updated = request(&client, "$JS.API.STREAM.UPDATE.ORDERS", &orders).await;
    check(kind, "stream_update_response", &updated);

    for (name, config) in [
        (
            "COPY",
            json!({ "name": "COPY", "sources": [{ "name": "ORDERS" }] }),
        ),
        (
            "MIRROR",
            json!({ "name": "MIRROR", "mirror": { "name": "ORDERS" } }),
        ),
    ] {
        let created = request(&client, &format!("$JS.API.STREAM.CREATE.{name}"), &config).await;
        assert!(created.get("error").is_none(), "{kind}: {created}");
    }
    let copy = info_once_copied(&client, "COPY", 2).await;
    check(kind, "stream_info_sources_response", &copy);
    let mirror = info_once_copied(&client, "MIRROR", 2).await;
    check(kind, "stream_info_mirror_response", &mirror);
    let missing = request(&client, "$JS.API.STREAM.INFO.NOPE", &Value::Null).await;
    check(kind, "stream_info_not_found_response", &missing);

    let durable = request(
        &client,
        "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.DUR",
        &fixture("consumer_durable_create_request"),
    )
    .await;
    check(kind, "consumer_create_response", &durable);
    // The message comes on the inbox with its own subject, so not as a request's answer.
    let inbox = client.new_inbox();
    let mut messages = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.ORDERS.DUR".to_string(),
            inbox,
            Bytes::from(json!({ "batch": 1, "expires": 2_000_000_000u64 }).to_string()),
        )
        .await
        .expect("pull request");
    let next = next_msg(&mut messages).await;
    assert_eq!(next.subject.as_str(), "orders.new", "{kind}");
    let info = request(&client, "$JS.API.CONSUMER.INFO.ORDERS.DUR", &Value::Null).await;
    check(kind, "consumer_info_response", &info);
    // What a source asks its origin for.
    let push = request(
        &client,
        "$JS.API.CONSUMER.CREATE.ORDERS",
        &fixture("consumer_create_push_request"),
    )
    .await;
    check(kind, "consumer_create_push_response", &push);
    let missing = request(&client, "$JS.API.CONSUMER.INFO.ORDERS.NOPE", &Value::Null).await;
    check(kind, "consumer_info_not_found_response", &missing);
}
