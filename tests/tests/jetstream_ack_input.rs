//! Ack subjects are written by clients: a forged `$JS.ACK` for a message the consumer never
//! delivered (the largest stream sequence, or a consumer sequence not reached) acknowledges
//! nothing and stops nothing; the consumer keeps delivering. Against leafd and hubd: the
//! same forged ack stalls nats-server 2.9's consumer (its API stops answering), so it is not
//! run there.

use e2e::serde_json::json;
use e2e::{js_api, sync, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

async fn forged_ack_all_acknowledges_nothing(kind: ServerKind) {
    let store = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &store).await;
    let client = server.client().await;
    let created = js_api(
        &client,
        "$JS.API.STREAM.CREATE.FA",
        json!({ "name": "FA", "subjects": ["fa.>"] }),
    )
    .await;
    assert!(created.get("error").is_none(), "{created}");
    let consumer = js_api(
        &client,
        "$JS.API.CONSUMER.CREATE.FA.C",
        json!({ "stream_name": "FA", "config": { "name": "C", "durable_name": "C", "ack_policy": "all" } }),
    )
    .await;
    assert!(consumer.get("error").is_none(), "{consumer}");
    let js = e2e::async_nats::jetstream::new(client.clone());
    for i in 0..3 {
        js.publish(format!("fa.{i}"), "m".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let stream = js.get_stream("FA").await.unwrap();
    let pull: e2e::async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("C").await.unwrap();
    let mut first = pull.fetch().max_messages(1).messages().await.unwrap();
    let m = first.next().await.expect("one message").unwrap();
    assert_eq!(m.subject.as_str(), "fa.0", "{kind}");
    // Forged acks: the largest stream sequence, then a consumer sequence not reached.
    for forged in [
        "$JS.ACK.FA.C.1.18446744073709551615.1.0.0",
        "$JS.ACK.FA.C.1.2.99.0.0",
    ] {
        client.publish(forged, "".into()).await.unwrap();
    }
    sync(&client).await;
    // Nothing was acknowledged and the consumer still works: the next fetch gets fa.1.
    let info = js_api(&client, "$JS.API.CONSUMER.INFO.FA.C", json!({})).await;
    assert_eq!(info["ack_floor"]["stream_seq"], 0, "{kind}: {info}");
    let mut next = pull.fetch().max_messages(1).messages().await.unwrap();
    let m = next.next().await.expect("the next message").unwrap();
    assert_eq!(m.subject.as_str(), "fa.1", "{kind}");
}

mod forged_ack_all_acknowledges_nothing {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leafd() {
        super::forged_ack_all_acknowledges_nothing(e2e::ServerKind::Leafd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::forged_ack_all_acknowledges_nothing(e2e::ServerKind::Hubd).await
    }
}
