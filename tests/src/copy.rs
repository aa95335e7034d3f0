//! A hubd member's own copy of a replicated stream, read through an ephemeral pull consumer
//! created on that member (a consumer of a copy lives on that member's copy): `MSG.GET` and
//! `DIRECT.GET` are answered by the stream group's leader, whichever member is asked, so they
//! cannot show what one member holds.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures::StreamExt;

/// One message of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyMsg {
    /// Its stream sequence.
    pub seq: u64,
    /// Its `Nats-Msg-Id`, empty without one.
    pub msg_id: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// How long one step (a request, a fetch) may take.
const STEP: Duration = Duration::from_secs(5);

/// The first `count` messages of `stream` in the copy of the member `client` is connected to,
/// in order, read within `within`; `None` when they could not all be read in time (no copy,
/// fewer messages, no answer).
pub async fn messages(
    client: &async_nats::Client,
    stream: &str,
    count: u64,
    within: Duration,
) -> Option<Vec<CopyMsg>> {
    let deadline = Instant::now() + within;
    let js = async_nats::jetstream::new(client.clone());
    let s = tokio::time::timeout(STEP, js.get_stream(stream))
        .await
        .ok()?
        .ok()?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = tokio::time::timeout(
        STEP,
        s.create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        }),
    )
    .await
    .ok()?
    .ok()?;
    let mut out: Vec<CopyMsg> = Vec::new();
    let want = usize::try_from(count).unwrap_or(usize::MAX);
    while out.len() < want {
        if Instant::now() >= deadline {
            break;
        }
        let batch = want.saturating_sub(out.len()).min(256);
        let fetched = tokio::time::timeout(STEP, async {
            let mut msgs = consumer
                .fetch()
                .max_messages(batch)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .ok()?;
            let mut got = Vec::new();
            while let Some(m) = msgs.next().await {
                let m = m.ok()?;
                let seq = m.info().ok()?.stream_sequence;
                let msg_id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                got.push(CopyMsg {
                    seq,
                    msg_id,
                    payload: m.payload.to_vec(),
                });
            }
            Some(got)
        })
        .await;
        match fetched {
            Ok(Some(got)) => out.extend(got),
            _ => break,
        }
    }
    let name = consumer.cached_info().name.clone();
    let _ = tokio::time::timeout(STEP, s.delete_consumer(&name)).await;
    (out.len() == want).then_some(out)
}
