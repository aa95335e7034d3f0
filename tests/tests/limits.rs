//! Size and scale limits: max payload, large payloads, many subscriptions, many clients.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use e2e::{
    barrier, bounded, bounded_for, drain_ready, next_msg, serde_json::json, server_tests, sync,
    ServerKind, TestServer, WAIT,
};
use futures::StreamExt;

server_tests!(
    max_payload_violation,
    large_payload,
    many_subscriptions,
    many_clients,
);

/// A `PUB` declaring more than `max_payload` bytes gets `-ERR 'Maximum Payload Violation'`
/// (nats-server then closes that connection); other clients keep working.
async fn max_payload_violation(kind: ServerKind) {
    let server = TestServer::with_config(kind, json!({ "max_payload": 1024 })).await;
    let client = server.client().await;
    let mut sub = client.subscribe("after").await.unwrap();
    sync(&client).await;

    let mut raw = server.raw_connected().await;
    assert_eq!(raw.info()["max_payload"], 1024, "INFO: {}", raw.info());
    // Exactly max_payload is fine.
    raw.send(format!("PUB after 1024\r\n{}\r\n", "x".repeat(1024)))
        .await;
    raw.ping().await;
    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.payload.len(), 1024);

    raw.send("PUB after 2000\r\n").await;
    let line = raw.next_line().await;
    assert_eq!(line.as_deref(), Some("-ERR 'Maximum Payload Violation'"));

    client.publish("after", "still works".into()).await.unwrap();
    let msg = next_msg(&mut sub).await;
    assert_eq!(msg.payload, Bytes::from("still works"));
}

/// A 512 KiB payload arrives intact.
async fn large_payload(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let publisher = server.client().await;
    let mut sub = client.subscribe("big").await.unwrap();
    sync(&client).await;
    let payload: Bytes = (0..512 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    for _ in 0..3 {
        publisher.publish("big", payload.clone()).await.unwrap();
    }
    for _ in 0..3 {
        let msg = next_msg(&mut sub).await;
        assert_eq!(msg.payload.len(), payload.len());
        assert!(msg.payload == payload, "large payload corrupted");
    }
}

/// 10,000 distinct subscriptions plus wildcard ones on one connection route exactly.
async fn many_subscriptions(kind: ServerKind) {
    const EXACT: usize = 10_000;
    const WILD: usize = 200;
    let server = TestServer::start(kind).await;
    let client = server.client().await;
    let publisher = server.client().await;

    let mut exact = Vec::with_capacity(EXACT);
    for i in 0..EXACT {
        exact.push(client.subscribe(format!("s.{i}")).await.unwrap());
    }
    let mut wild = Vec::with_capacity(WILD);
    for j in 0..WILD {
        wild.push(client.subscribe(format!("w.{j}.*")).await.unwrap());
    }
    let mut all_s = client.subscribe("s.>").await.unwrap();
    sync(&client).await;

    // Unsubscribe every 10th exact subscription: those subjects must then reach only `s.>`.
    for (i, sub) in exact.iter_mut().enumerate() {
        if i % 10 == 9 {
            sub.unsubscribe().await.unwrap();
        }
    }
    sync(&client).await;

    for i in 0..EXACT {
        publisher
            .publish(format!("s.{i}"), i.to_string().into())
            .await
            .unwrap();
    }
    for j in 0..WILD {
        publisher
            .publish(format!("w.{j}.x"), j.to_string().into())
            .await
            .unwrap();
        publisher
            .publish(format!("w.{j}.x.y"), "too deep".into())
            .await
            .unwrap();
    }
    bounded_for(
        std::time::Duration::from_secs(30),
        "barrier after 10,000 publishes",
        barrier(&publisher, &client),
    )
    .await;

    for (i, sub) in exact.iter_mut().enumerate() {
        let got: Vec<Bytes> = drain_ready(sub)
            .await
            .into_iter()
            .map(|m| m.payload)
            .collect();
        if i % 10 == 9 {
            assert!(got.is_empty(), "unsubscribed s.{i} still got {got:?}");
        } else {
            assert_eq!(got, [Bytes::from(i.to_string())], "subscription s.{i}");
        }
    }
    for (j, sub) in wild.iter_mut().enumerate() {
        let got: Vec<String> = drain_ready(sub)
            .await
            .into_iter()
            .map(|m| m.subject.to_string())
            .collect();
        assert_eq!(got, [format!("w.{j}.x")], "subscription w.{j}.*");
    }
    let seen = drain_ready(&mut all_s).await;
    assert_eq!(seen.len(), EXACT, "s.> must see every s.* publish");
    for (i, msg) in seen.iter().enumerate() {
        assert_eq!(msg.subject.as_str(), format!("s.{i}"));
    }
}

/// 50 concurrent clients each publish to a shared subject and to a neighbour's private
/// subject; every client receives exactly every message meant for it.
async fn many_clients(kind: ServerKind) {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 20;
    let server = TestServer::start(kind).await;

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.client().await);
    }
    let mut subs = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let shared = client.subscribe("c.all").await.unwrap();
        let private = client.subscribe(format!("c.{i}")).await.unwrap();
        subs.push((shared, private));
    }
    for client in &clients {
        sync(client).await;
    }

    // Per receiver: messages and "end" markers seen so far, for the failure message.
    let progress: Arc<Vec<(AtomicUsize, AtomicUsize)>> = Arc::new(
        (0..CLIENTS)
            .map(|_| (AtomicUsize::new(0), AtomicUsize::new(0)))
            .collect(),
    );
    // Everyone receives concurrently while everyone publishes concurrently.
    let receivers = subs
        .into_iter()
        .enumerate()
        .map(|(i, (mut shared, mut private))| {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                let mut ends = 0;
                while ends < CLIENTS {
                    let Some(msg) = shared.next().await else {
                        panic!("client {i}: subscription ended");
                    };
                    let text = String::from_utf8_lossy(&msg.payload).into_owned();
                    if text.starts_with("end ") {
                        ends += 1;
                        progress[i].1.store(ends, Ordering::Relaxed);
                    } else {
                        assert!(seen.insert(text.clone()), "client {i} got {text} twice");
                        progress[i].0.store(seen.len(), Ordering::Relaxed);
                    }
                }
                // Every publisher's "end" follows its messages, so nothing may be missing.
                assert_eq!(seen.len(), CLIENTS * PER_CLIENT, "client {i} on c.all");
                // The direct message was published before its sender's "end": already queued.
                let direct: Vec<Bytes> = drain_ready(&mut private)
                    .await
                    .into_iter()
                    .map(|m| m.payload)
                    .collect();
                let from = (i + CLIENTS - 1) % CLIENTS;
                assert_eq!(
                    direct,
                    [Bytes::from(format!("to {i} from {from}"))],
                    "client {i}"
                );
            })
        });
    let receivers: Vec<_> = receivers.collect();

    let publishers = clients.iter().enumerate().map(|(i, client)| {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0..PER_CLIENT {
                client
                    .publish("c.all", format!("{i}:{n}").into())
                    .await
                    .unwrap();
            }
            let to = (i + 1) % CLIENTS;
            client
                .publish(format!("c.{to}"), format!("to {to} from {i}").into())
                .await
                .unwrap();
            client
                .publish("c.all", format!("end {i}").into())
                .await
                .unwrap();
        })
    });
    let publishers: Vec<_> = publishers.collect();
    bounded("publishers", futures::future::try_join_all(publishers))
        .await
        .unwrap();
    let all = futures::future::try_join_all(receivers);
    match tokio::time::timeout(WAIT, all).await {
        Ok(result) => {
            result.unwrap();
        }
        Err(_) => {
            let stuck: Vec<String> = progress
                .iter()
                .enumerate()
                .filter(|(_, (_, ends))| ends.load(Ordering::Relaxed) < CLIENTS)
                .map(|(i, (seen, ends))| {
                    format!(
                        "client {i}: {}/{} messages, {}/{CLIENTS} ends",
                        seen.load(Ordering::Relaxed),
                        CLIENTS * PER_CLIENT,
                        ends.load(Ordering::Relaxed)
                    )
                })
                .collect();
            panic!(
                "receivers incomplete after {WAIT:?} ({} of {CLIENTS} stuck): {stuck:#?}",
                stuck.len()
            );
        }
    }
}
