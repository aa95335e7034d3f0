//! The async-nats object store API against leafd, hubd and nats-server: a bucket, objects
//! larger than one chunk put and read back byte for byte, info, list, overwrite, delete.

use async_nats::jetstream::{self, object_store};
use e2e::{bounded, server_tests, ServerKind, StoreDir, TestServer};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

server_tests!(put_get_list_delete);

/// A deterministic pseudo-random payload of `len` bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn read_all(store: &object_store::ObjectStore, name: &str) -> Vec<u8> {
    let mut object = bounded("object get", store.get(name)).await.expect("get");
    let mut out = Vec::new();
    bounded("object read", object.read_to_end(&mut out))
        .await
        .expect("read");
    out
}

async fn put_get_list_delete(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &dir).await;
    let js = jetstream::new(server.client().await);
    let store = bounded(
        "create object store",
        js.create_object_store(object_store::Config {
            bucket: "files".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{kind}: create object store: {e}"));

    // 1 MiB + a bit: several 128 KiB chunks and a short last one.
    let big = payload((1 << 20) + 777, 7);
    let small = payload(10, 1);
    let mut reader = big.as_slice();
    let info = bounded("put big", store.put("firmware.bin", &mut reader))
        .await
        .expect("put big");
    assert_eq!(info.size, big.len(), "{kind}");
    assert!(info.chunks > 1, "{kind}: {info:?}");
    let mut reader = small.as_slice();
    bounded("put small", store.put("config.txt", &mut reader))
        .await
        .expect("put small");

    assert_eq!(read_all(&store, "firmware.bin").await, big, "{kind}");
    assert_eq!(read_all(&store, "config.txt").await, small, "{kind}");

    let info = bounded("info", store.info("firmware.bin"))
        .await
        .expect("info");
    assert_eq!(info.size, big.len());
    let mut names = Vec::new();
    let mut list = bounded("list", store.list()).await.expect("list");
    while let Ok(Some(Ok(o))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), list.next()).await
    {
        names.push(o.name);
        if names.len() == 2 {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["config.txt", "firmware.bin"], "{kind}");

    // Overwrite replaces the content; delete removes it.
    let newer = payload(300_000, 9);
    let mut reader = newer.as_slice();
    bounded("overwrite", store.put("firmware.bin", &mut reader))
        .await
        .expect("overwrite");
    assert_eq!(read_all(&store, "firmware.bin").await, newer, "{kind}");
    bounded("delete", store.delete("config.txt"))
        .await
        .expect("delete");
    assert!(
        bounded("get deleted", store.get("config.txt"))
            .await
            .is_err(),
        "{kind}: a deleted object is still readable"
    );
}
