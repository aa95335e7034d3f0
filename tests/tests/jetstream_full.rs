//! A full store through the JetStream API (leafd and hubd): with `jetstream.max_file_store`
//! reached, a publish fails with JetStream's insufficient-resources error (10023), everything
//! acknowledged before is still there, the server keeps serving, and freeing space (a purge)
//! makes publishes succeed again. (nats-server accounts `max_file_store` per stream
//! reservation instead, so it is not the reference here.)

use async_nats::jetstream::{self, stream};
use e2e::serde_json::json;
use e2e::{bounded_for, ServerKind, StoreDir, TestServer};
use std::time::Duration;

async fn full_store_refuses_and_recovers(kind: ServerKind) {
    let dir = StoreDir::new();
    let server = TestServer::builder(kind)
        .config(json!({ "jetstream": { "store_dir": dir.path(), "max_file_store": "4MB" } }))
        .start()
        .await;
    let js = jetstream::new(server.client().await);
    js.create_stream(stream::Config {
        name: "FULL".into(),
        subjects: vec!["full.>".into()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    let payload = vec![b'x'; 1024];
    let mut acked = 0u64;
    let refusal = bounded_for(Duration::from_secs(120), "the store to fill up", async {
        for i in 0..20_000u64 {
            let ack = js
                .publish(format!("full.{}", i % 10), payload.clone().into())
                .await
                .expect("send")
                .await;
            match ack {
                Ok(a) => {
                    acked += 1;
                    assert_eq!(a.sequence, acked, "gapless sequences before the limit");
                }
                Err(e) => return e.to_string(),
            }
        }
        panic!("20 000 KiB fit in a 4 MB store");
    })
    .await;
    assert!(refusal.contains("insufficient resources"), "{refusal}");
    assert!(acked > 100, "only {acked} messages fit");
    // Nothing acknowledged is lost, and the server still answers the API.
    let mut s = js
        .get_stream("FULL")
        .await
        .expect("stream info after the refusal");
    let info = s.info().await.expect("info");
    assert_eq!(info.state.messages, acked, "acknowledged messages kept");
    let last = s
        .get_raw_message(acked)
        .await
        .expect("last acknowledged message");
    assert_eq!(last.payload.len(), 1024);
    // Freeing space lets publishes through again.
    s.purge().await.expect("purge");
    let ack = bounded_for(
        Duration::from_secs(30),
        "a publish after the purge",
        async {
            loop {
                match js
                    .publish("full.again", "ok".into())
                    .await
                    .expect("send")
                    .await
                {
                    Ok(a) => return a,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        },
    )
    .await;
    assert!(ack.sequence > acked, "{ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_store_leafd() {
    full_store_refuses_and_recovers(ServerKind::Leafd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_store_hubd() {
    full_store_refuses_and_recovers(ServerKind::Hubd).await
}
