//! The async-nats key-value API against leafd, hubd and nats-server: bucket creation, put,
//! get, entries and revisions, update (compare-and-set), create on an existing key, delete and
//! purge, history, keys, and a watch receiving the puts made after it started. History, keys
//! and watch run on ordered push consumers.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use e2e::{bounded, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

server_tests!(
    put_get_entry_revisions,
    update_and_create_compare_and_set,
    delete_and_purge,
    history_and_keys,
    watch_receives_new_puts,
);

/// A server with bucket `B` (history 5).
///
/// async-nats 0.51's `create_key_value` first reads the account info and requires its
/// `reserved_memory`/`reserved_storage` fields, which nats-server 2.9 does not send; against
/// nats-server the bucket's stream is therefore created as `create_key_value` would create it
/// and opened with `get_key_value`.
async fn setup(kind: ServerKind, dir: &StoreDir) -> (TestServer, jetstream::Context, kv::Store) {
    let server = TestServer::builder(kind)
        .arg("-js")
        .arg("-sd")
        .arg(dir.path())
        .start()
        .await;
    let js = jetstream::new(server.client().await);
    let config = kv::Config {
        bucket: "B".into(),
        history: 5,
        ..Default::default()
    };
    let store = if kind == ServerKind::NatsServer {
        bounded(
            "create bucket stream",
            js.create_stream(stream::Config {
                name: "KV_B".into(),
                subjects: vec!["$KV.B.>".into()],
                max_messages_per_subject: 5,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            }),
        )
        .await
        .expect("bucket stream created");
        bounded("open bucket", js.get_key_value("B"))
            .await
            .expect("bucket opened")
    } else {
        bounded("create bucket", js.create_key_value(config))
            .await
            .expect("bucket created")
    };
    (server, js, store)
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

async fn put_get_entry_revisions(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, js, kv) = setup(kind, &dir).await;
    let r1 = kv.put("a", b("1")).await.unwrap();
    let r2 = kv.put("b", b("2")).await.unwrap();
    let r3 = kv.put("a", b("3")).await.unwrap();
    assert_eq!((r1, r2, r3), (1, 2, 3));
    assert_eq!(kv.get("a").await.unwrap(), Some(b("3")));
    assert_eq!(kv.get("b").await.unwrap(), Some(b("2")));
    assert_eq!(kv.get("missing").await.unwrap(), None);
    let e = kv.entry("a").await.unwrap().expect("entry");
    assert_eq!(e.revision, 3);
    assert_eq!(e.key, "a");
    assert_eq!(e.value, b("3"));
    assert_eq!(e.operation, kv::Operation::Put);
    let old = kv.entry_for_revision("a", 1).await.unwrap().expect("old");
    assert_eq!(old.value, b("1"));
    // The bucket is there for another handle too.
    let again = js.get_key_value("B").await.unwrap();
    assert_eq!(again.get("b").await.unwrap(), Some(b("2")));
    let status = kv.status().await.unwrap();
    assert_eq!(status.bucket(), "B");
}

async fn update_and_create_compare_and_set(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, _js, kv) = setup(kind, &dir).await;
    let r1 = kv.create("k", b("v1")).await.unwrap();
    let err = kv.create("k", b("again")).await.unwrap_err();
    assert_eq!(err.kind(), kv::CreateErrorKind::AlreadyExists, "{err}");
    let r2 = kv.update("k", b("v2"), r1).await.unwrap();
    assert!(r2 > r1);
    let err = kv.update("k", b("stale"), r1).await.unwrap_err();
    assert_eq!(err.kind(), kv::UpdateErrorKind::WrongLastRevision, "{err}");
    assert!(err.to_string().contains("10071"), "{err}");
    assert_eq!(kv.get("k").await.unwrap(), Some(b("v2")));
    // A deleted key may be created again.
    kv.delete("k").await.unwrap();
    kv.create("k", b("v3")).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), Some(b("v3")));
}

async fn delete_and_purge(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, _js, kv) = setup(kind, &dir).await;
    kv.put("d", b("1")).await.unwrap();
    kv.put("p", b("1")).await.unwrap();
    kv.put("p", b("2")).await.unwrap();
    kv.delete("d").await.unwrap();
    assert_eq!(kv.get("d").await.unwrap(), None);
    let e = kv.entry("d").await.unwrap();
    assert!(
        e.is_none()
            || e.as_ref()
                .is_some_and(|e| e.operation == kv::Operation::Delete),
        "{e:?}"
    );
    kv.purge("p").await.unwrap();
    assert_eq!(kv.get("p").await.unwrap(), None);
    // A purge keeps only its marker.
    let history: Vec<kv::Entry> = bounded("history after purge", async {
        kv.history("p")
            .await
            .unwrap()
            .map(|e| e.expect("entry"))
            .collect()
            .await
    })
    .await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].operation, kv::Operation::Purge);
}

async fn history_and_keys(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, _js, kv) = setup(kind, &dir).await;
    for i in 0..7 {
        kv.put("h", b(&format!("v{i}"))).await.unwrap();
    }
    kv.put("x.y", b("1")).await.unwrap();
    kv.put("z", b("1")).await.unwrap();
    kv.put("gone", b("1")).await.unwrap();
    kv.delete("gone").await.unwrap();
    let history: Vec<String> = bounded("history", async {
        kv.history("h")
            .await
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.expect("entry").value).into_owned())
            .collect()
            .await
    })
    .await;
    assert_eq!(
        history,
        ["v2", "v3", "v4", "v5", "v6"],
        "the last 5 revisions"
    );
    let mut keys: Vec<String> = bounded("keys", async {
        kv.keys()
            .await
            .unwrap()
            .map(|k| k.expect("key"))
            .collect()
            .await
    })
    .await;
    keys.sort();
    assert_eq!(keys, ["h", "x.y", "z"], "deleted keys are not listed");
}

async fn watch_receives_new_puts(kind: ServerKind) {
    let dir = StoreDir::new();
    let (_server, _js, kv) = setup(kind, &dir).await;
    kv.put("w.old", b("before")).await.unwrap();
    let mut watch = kv.watch("w.>").await.unwrap();
    let mut all = kv.watch_all().await.unwrap();
    // Give the watchers' consumers a moment, then change things.
    tokio::time::sleep(Duration::from_millis(100)).await;
    kv.put("w.a", b("1")).await.unwrap();
    kv.put("other", b("x")).await.unwrap();
    kv.put("w.b", b("2")).await.unwrap();
    kv.delete("w.a").await.unwrap();
    let mut seen = Vec::new();
    bounded("watch entries", async {
        while seen.len() < 3 {
            let e = watch.next().await.expect("open").expect("entry");
            seen.push((e.key, e.operation));
        }
    })
    .await;
    assert_eq!(
        seen,
        [
            ("w.a".to_string(), kv::Operation::Put),
            ("w.b".to_string(), kv::Operation::Put),
            ("w.a".to_string(), kv::Operation::Delete),
        ],
        "only changes after the watch started, matching its filter"
    );
    let mut keys = Vec::new();
    bounded("watch_all entries", async {
        while keys.len() < 4 {
            let e = all.next().await.expect("open").expect("entry");
            keys.push(e.key);
        }
    })
    .await;
    assert_eq!(keys, ["w.a", "other", "w.b", "w.a"]);
}
