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

/// Pulls `n` messages of consumer `C` of stream `S` into `inbox`'s subscription.
async fn pull(
    client: &e2e::async_nats::Client,
    inbox: &str,
    sub: &mut e2e::async_nats::Subscriber,
    n: usize,
) -> Vec<e2e::async_nats::Message> {
    client
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.S.C",
            inbox.to_string(),
            json!({ "batch": n, "expires": 2_000_000_000u64 })
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        let m = e2e::next_msg(sub).await;
        if m.reply.is_some() {
            got.push(m);
        }
    }
    got
}

/// Ack policy `all`: after an ack of a redelivered message, terminating a newer message must
/// not move the ack floor over messages still pending (it did: the floor's consumer sequence
/// was the redelivery's, so the newer message looked next in line), else their acks are
/// ignored and they are redelivered forever. Found by the ack state's model test. And, as in
/// nats-server 2.9, the TERM of the newer message acknowledges everything up to it (a term is
/// an ack that suppresses redelivery; cumulative under `all`).
async fn ack_all_floor_stays_below_pending(kind: ServerKind) {
    use std::time::Duration;
    let store = StoreDir::new();
    let server = TestServer::start_jetstream(kind, &store).await;
    let client = server.client().await;
    let created = js_api(
        &client,
        "$JS.API.STREAM.CREATE.S",
        json!({ "name": "S", "subjects": ["s.>"] }),
    )
    .await;
    assert!(created.get("error").is_none(), "{created}");
    let consumer = js_api(
        &client,
        "$JS.API.CONSUMER.CREATE.S.C",
        json!({ "stream_name": "S", "config": {
            "name": "C", "durable_name": "C", "ack_policy": "all", "ack_wait": 2_000_000_000u64,
        } }),
    )
    .await;
    assert!(consumer.get("error").is_none(), "{consumer}");
    let js = e2e::async_nats::jetstream::new(client.clone());
    for i in 1..=3 {
        js.publish(format!("s.{i}"), "m".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let inbox = e2e::unique("_INBOX.pull");
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    sync(&client).await;
    // m1 first; m2 and m3 1.2 s later, so that only m1 is due when it is redelivered.
    let m1 = pull(&client, &inbox, &mut sub, 1).await;
    assert_eq!(m1[0].subject.as_str(), "s.1");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let rest = pull(&client, &inbox, &mut sub, 2).await;
    assert_eq!(rest[1].subject.as_str(), "s.3");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let again = pull(&client, &inbox, &mut sub, 1).await;
    assert_eq!(again[0].subject.as_str(), "s.1", "{kind}: m1 redelivered");
    // Ack-all the redelivery of m1: m2 and m3 stay pending.
    client
        .publish(again[0].reply.clone().unwrap(), "".into())
        .await
        .unwrap();
    // A new message, delivered next, terminated.
    js.publish("s.4", "m".into()).await.unwrap().await.unwrap();
    let m4 = pull(&client, &inbox, &mut sub, 1).await;
    assert_eq!(m4[0].subject.as_str(), "s.4", "{kind}");
    client
        .publish(m4[0].reply.clone().unwrap(), "+TERM".into())
        .await
        .unwrap();
    sync(&client).await;
    let info = js_api(&client, "$JS.API.CONSUMER.INFO.S.C", json!({})).await;
    // As nats-server 2.9: under ack policy `all` a TERM acknowledges everything up to it
    // (nothing pending, the floor at m4).
    assert_eq!(info["num_ack_pending"], 0, "{kind}: {info}");
    assert_eq!(info["ack_floor"]["stream_seq"], 4, "{kind}: {info}");
    // m2 and m3 are not redelivered once their ack_wait passes.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    client
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.S.C",
            inbox.clone(),
            json!({ "batch": 1, "expires": 500_000_000u64 })
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let late = tokio::time::timeout(Duration::from_secs(2), sub.next()).await;
    match late {
        Ok(Some(m)) => assert!(
            m.subject.as_str() == inbox.as_str() && m.payload.is_empty(),
            "{kind}: nothing to redeliver after the TERM, got {:?} {:?}",
            m.subject,
            m.headers
        ),
        Ok(None) => panic!("{kind}: subscription closed"),
        Err(_) => {}
    }
}

mod ack_all_floor_stays_below_pending {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leafd() {
        super::ack_all_floor_stays_below_pending(e2e::ServerKind::Leafd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubd() {
        super::ack_all_floor_stays_below_pending(e2e::ServerKind::Hubd).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_server() {
        super::ack_all_floor_stays_below_pending(e2e::ServerKind::NatsServer).await
    }
}
