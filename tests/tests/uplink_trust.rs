//! Who the uplink trusts. Reply subjects are visible to every subscriber of the forwarded
//! subjects on the hub, so anyone there can answer them: these tests play such a client and
//! show that forged acknowledgements never make the gateway forget a message the hub did not
//! store. And the remote's `deny_exports` hold for uplink traffic too.
//!
//! Every scenario runs against a real nats-server 2.9 hub and against hubd. (nats-server has
//! no uplink of its own to compare with: its leaf's stream is sourced by the hub, which reads
//! what it copies itself.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::async_nats::jetstream;
use e2e::serde_json::json;
use e2e::uplink::*;
use e2e::{free_port, ServerKind, StoreDir, TestServer};
use futures::StreamExt;

/// A client on the hub that answers every uplink reply subject it sees on the forwarded
/// subjects with a PubAck of its own making (stored, at a sequence it counts), and answers
/// ahead: for the next 200 sequences, in the reply format it saw and in the earlier one
/// without a nonce. Returns the task and the number of forged answers sent.
async fn forger(hub: &TestServer) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let client = hub.client().await;
    let mut sub = client
        .subscribe(format!("{PREFIX}.>"))
        .await
        .expect("forger subscribes");
    client.flush().await.expect("flush");
    let sent = Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    let task = tokio::spawn(async move {
        let mut hub_seq = 0u64;
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.as_ref().map(|r| r.to_string()) else {
                continue;
            };
            // _UPLINK.<token>.a.<seq>.<nonce>
            let parts: Vec<&str> = reply.split('.').collect();
            let (Some(token), Some(seq)) = (
                parts.get(1),
                parts.get(3).and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let nonce = parts.get(4).copied().unwrap_or("0");
            hub_seq += 1;
            let ack =
                |n: u64| json!({ "stream": HUB_STREAM, "domain": "hub", "seq": n }).to_string();
            let _ = client.publish(reply.clone(), ack(hub_seq).into()).await;
            for ahead in 1..=200u64 {
                let s = seq + ahead;
                let n = hub_seq + ahead;
                for subject in [
                    format!("_UPLINK.{token}.a.{s}"),
                    format!("_UPLINK.{token}.a.{s}.{nonce}"),
                ] {
                    let _ = client.publish(subject, ack(n).into()).await;
                }
            }
            count.fetch_add(401, Ordering::Relaxed);
        }
    });
    (task, sent)
}

/// The scenario of the report: a gateway buffered messages while the hub was down; when the
/// hub came back, a plain client on it answered every reply subject it saw, and sequences
/// ahead of them. Here the hub stream does not even exist at first, so nothing the uplink
/// sends is stored: the cursor must not move, whatever the answers say. Once the stream
/// exists, everything arrives, once and in order, with the forger still at work for a while.
async fn forged_acknowledgements_never_lose_buffered_data(kind: ServerKind) {
    const N: u64 = 20_000;
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let (leafd, mport) = start_leafd_monitored(
        &leaf_store,
        leaf_port,
        json!({ "create_hub_stream": false, "ack_timeout": "2s" }),
    )
    .await;
    publish_range(&client(&leafd).await, 0, N).await;

    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let (forging, forged) = forger(&hub).await;
    let hub_client = client(&hub).await;
    await_status(mport, "forged answers to arrive", |s| {
        s["doubtful_answers"].as_u64().unwrap_or(0) > 0
    })
    .await;
    // Long enough for many rounds of sends, forged answers and proofs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = uplink_status(mport).await;
    assert!(forged.load(Ordering::Relaxed) > 1000, "the forger was busy");
    assert_eq!(
        status["acked"],
        json!(0),
        "nothing may be forgotten: {status}"
    );
    assert_eq!(status["backlog_msgs"], json!(N), "{status}");
    assert_eq!(status["buffered_msgs"], json!(N), "{status}");

    jetstream::new(hub_client.clone())
        .create_stream(jetstream::stream::Config {
            name: HUB_STREAM.to_string(),
            subjects: vec![format!("{PREFIX}.>")],
            ..Default::default()
        })
        .await
        .expect("hub stream");
    tokio::time::sleep(Duration::from_secs(2)).await;
    forging.abort();
    await_hub_count(&hub_client, N, Duration::from_secs(120)).await;
    check_hub_stream(&hub_client, N).await;
    let live = await_status(mport, "the uplink to be live", |s| {
        s["state"] == json!("live") && s["acked"] == json!(N)
    })
    .await;
    assert_eq!(live["backlog_msgs"], json!(0), "{live}");
    assert!(
        live["doubtful_answers"].as_u64().unwrap_or(0) > 0,
        "forged answers are counted: {live}"
    );
    assert!(
        leafd.log().contains("cannot have sent"),
        "leafd warns about the forged answers"
    );
}

/// Subjects the remote's `deny_exports` cover never reach the hub through the uplink
/// either: they are counted as denied (and logged), everything else arrives once, in order.
async fn deny_exports_hold_for_uplink_traffic(kind: ServerKind) {
    let (hub_store, leaf_store) = (StoreDir::new(), StoreDir::new());
    let leaf_port = free_port();
    let hub = start_hub(kind, &hub_store, leaf_port, None).await;
    let hub_client = client(&hub).await;
    // A subscriber on the hub for everything: nothing denied may reach it either.
    let mut spy = hub_client
        .subscribe(format!("{PREFIX}.sensors.secret.>"))
        .await
        .unwrap();
    hub_client.flush().await.unwrap();
    let mut config = leafd_config(
        &leaf_store,
        &format!("nats-leaf://127.0.0.1:{leaf_port}"),
        &json!({}),
    );
    config["leafnodes"]["remotes"][0]["deny_exports"] =
        json!([format!("{PREFIX}.sensors.secret.>")]);
    let mport = free_port();
    let leafd = TestServer::builder(ServerKind::Leafd)
        .config(config)
        .arg("-m")
        .arg(mport.to_string())
        .start()
        .await;
    let leaf = client(&leafd).await;
    let js = jetstream::new(leaf.clone());
    publish_range(&leaf, 0, 50).await;
    for i in 0..10 {
        js.publish(format!("sensors.secret.{i}"), "classified".into())
            .await
            .expect("publish")
            .await
            .expect("leafd PubAck");
    }
    publish_range(&leaf, 50, 100).await;
    let live = await_status(mport, "the uplink to forward everything", |s| {
        s["state"] == json!("live") && s["acked"] == json!(110)
    })
    .await;
    assert_eq!(live["denied"], json!(10), "{live}");
    check_hub_stream(&hub_client, 100).await;
    let leaked = tokio::time::timeout(Duration::from_millis(500), spy.next()).await;
    assert!(
        leaked.is_err(),
        "a denied subject reached the hub: {leaked:?}"
    );
    assert!(leafd.log().contains("deny_exports cover this subject"));
}

e2e::hub_tests!(
    forged_acknowledgements_never_lose_buffered_data,
    deny_exports_hold_for_uplink_traffic,
);
