//! The JetStream API request decoder fuzzed on stable Rust: mutated `$JS.API.` requests
//! (subject tail and JSON body) against a real engine on a real store, in process. Every
//! request must be answered, with JSON (DIRECT.GET: a message or a status), and nothing may
//! panic anywhere (the API task, a stream's or a consumer's task). `cargo test` runs 300
//! cases; CI runs it for 60 s (`LEAF_FUZZ_SECS=60`, `scripts/fuzz`).
//!
//! An input is `<subject tail after $JS.API.>\n<body>`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use leaf_core::jetstream::{JetStream, JetStreamOptions};
use leaf_core::server::{InternalSink, Msg, Publisher, Server, ServerOptions};
use leaf_proto::fuzzing::{run, Budget};
use leaf_proto::subject::is_literal;

const SEEDS: &[&[u8]] = &[
    b"STREAM.CREATE.S\n{\"name\":\"S\",\"subjects\":[\"a.>\"],\"max_msgs\":100,\"max_bytes\":-1,\"storage\":\"file\",\"retention\":\"limits\",\"discard\":\"old\",\"max_age\":0,\"duplicate_window\":120000000000}",
    b"STREAM.CREATE.W\n{\"name\":\"W\",\"subjects\":[\"w.*\"],\"retention\":\"workqueue\",\"max_msgs_per_subject\":2,\"allow_rollup_hdrs\":true,\"deny_delete\":false}",
    b"STREAM.CREATE.M\n{\"name\":\"M\",\"mirror\":{\"name\":\"S\",\"opt_start_seq\":2}}",
    b"STREAM.CREATE.K\n{\"name\":\"K\",\"sources\":[{\"name\":\"S\",\"filter_subject\":\"a.b\"},{\"name\":\"W\",\"external\":{\"api\":\"$JS.d.API\"}}]}",
    b"STREAM.UPDATE.S\n{\"name\":\"S\",\"subjects\":[\"a.>\",\"b\"],\"max_msgs\":5}",
    b"STREAM.INFO.S\n{\"subjects_filter\":\">\",\"deleted_details\":true}",
    b"STREAM.NAMES\n{\"offset\":0,\"subject\":\"a.b\"}",
    b"STREAM.LIST\n{\"offset\":1}",
    b"STREAM.PURGE.S\n{\"filter\":\"a.>\",\"keep\":1,\"seq\":3}",
    b"STREAM.MSG.GET.S\n{\"seq\":1}",
    b"STREAM.MSG.GET.S\n{\"last_by_subj\":\"a.b\"}",
    b"STREAM.MSG.GET.S\n{\"seq\":2,\"next_by_subj\":\"a.*\"}",
    b"STREAM.MSG.DELETE.S\n{\"seq\":1,\"no_erase\":true}",
    b"DIRECT.GET.S\n{\"seq\":1}",
    b"DIRECT.GET.S.a.b\n",
    b"STREAM.DELETE.W\n",
    b"CONSUMER.CREATE.S\n{\"stream_name\":\"S\",\"config\":{\"ack_policy\":\"explicit\",\"deliver_policy\":\"by_start_sequence\",\"opt_start_seq\":1}}",
    b"CONSUMER.CREATE.S.C.a.b\n{\"stream_name\":\"S\",\"config\":{\"name\":\"C\",\"filter_subject\":\"a.b\",\"ack_policy\":\"all\",\"max_deliver\":3,\"backoff\":[1000000,2000000]}}",
    b"CONSUMER.DURABLE.CREATE.S.D\n{\"stream_name\":\"S\",\"config\":{\"durable_name\":\"D\",\"deliver_subject\":\"push.d\",\"flow_control\":true,\"idle_heartbeat\":1000000000,\"filter_subjects\":[\"a.x\",\"a.y\"]}}",
    b"CONSUMER.CREATE.S.E\n{\"stream_name\":\"S\",\"config\":{\"name\":\"E\",\"deliver_policy\":\"by_start_time\",\"opt_start_time\":\"2024-01-01T00:00:00Z\",\"max_ack_pending\":1,\"max_waiting\":1}}",
    b"CONSUMER.INFO.S.D\n",
    b"CONSUMER.NAMES.S\n{\"offset\":0}",
    b"CONSUMER.LIST.S\n{}",
    b"CONSUMER.DELETE.S.C\n",
    b"CONSUMER.MSG.NEXT.S.D\n{\"batch\":2,\"no_wait\":true,\"max_bytes\":100}",
    b"CONSUMER.MSG.NEXT.S.E\n{\"batch\":1,\"expires\":1000000}",
    b"CONSUMER.PAUSE.S.D\n{\"pause_until\":\"2030-01-01T00:00:00Z\"}",
    b"INFO\n",
];

/// Every panic anywhere in the process (any task), counted by the panic hook.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// One answer on `_R.>`: (reply subject, headers, payload).
type Answer = (String, Option<Vec<u8>>, Vec<u8>);

/// Hands every answer on `_R.>` to the test.
struct Answers(Mutex<mpsc::Sender<Answer>>);

impl InternalSink for Answers {
    fn deliver(&self, msg: &Msg<'_>, _from: &Publisher) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send((
                String::from_utf8_lossy(msg.subject).into_owned(),
                msg.headers.map(<[u8]>::to_vec),
                msg.payload.to_vec(),
            ));
        }
    }
}

#[test]
fn jetstream_api_survives_mutated_requests() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let (server, _js) = rt.block_on(async {
        let server = Server::bind(ServerOptions {
            port: 0,
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let js = JetStream::start(
            server.shared(),
            server.shared().global(),
            JetStreamOptions {
                store_dir: dir.path().to_path_buf(),
                domain: Some("d".into()),
                max_file_bytes: Some(256 << 20),
                max_memory_bytes: Some(64 << 20),
                max_streams: None,
                max_consumers: None,
            },
        )
        .unwrap();
        server
            .shared()
            .global()
            .subscribe_internal(b"_R.>", None, Arc::new(Answers(Mutex::new(tx))))
            .unwrap();
        (server, js)
    });
    let shared = server.shared().clone();
    let mut n = 0u64;
    let cases = run(
        "JetStream API",
        SEEDS,
        Budget::from_env(300, 0x15a1),
        |input| {
            let (tail, body) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (&input[..i], &input[i + 1..]),
                None => (input, &[][..]),
            };
            let mut subject = b"$JS.API.".to_vec();
            subject.extend_from_slice(tail);
            if !is_literal(&subject) || subject.len() > 1024 {
                return; // no client can publish there
            }
            // Messages for the streams, so reads and consumers have something to find.
            for s in [&b"a.b"[..], b"a.x", b"w.1", b"b"] {
                shared.global().publish(&Msg {
                    subject: s,
                    reply: None,
                    headers: None,
                    payload: body.get(..8).unwrap_or(body),
                });
            }
            n += 1;
            let reply = format!("_R.{n}");
            shared.global().publish(&Msg {
                subject: &subject,
                reply: Some(reply.as_bytes()),
                headers: None,
                payload: body,
            });
            let waits_for_messages = tail.starts_with(b"CONSUMER.MSG.NEXT");
            let limit = if waits_for_messages {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(10)
            };
            let answer = loop {
                match rx.recv_timeout(limit) {
                    Ok((to, headers, payload)) if to == reply => break Some((headers, payload)),
                    Ok(_) => continue, // a late answer to an earlier NEXT
                    Err(_) => break None,
                }
            };
            let direct = tail.starts_with(b"DIRECT.");
            match answer {
                None => assert!(waits_for_messages, "no answer within {limit:?}"),
                Some((_, payload)) if !direct && !waits_for_messages => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&payload).expect("the answer is JSON");
                    assert!(v.is_object(), "{v}");
                }
                Some(_) => {}
            }
            assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
        },
    );
    assert!(cases >= SEEDS.len() as u64);
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(5));
}
