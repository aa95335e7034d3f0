//! The proof tail: while a round sends one by one (the hub stream has other writers, so
//! chains cannot prove anything), a headers-only push consumer on the hub stream delivers
//! the id and position of every message stored after the round began, on the uplink's own
//! subjects. Each delivery of one of this uplink's messages proves it, at the cost of one
//! small delivery per message instead of one `STREAM.MSG.GET` request and reply.
//!
//! The consumer delivers to `_UPLINK.<token>.c.<nonce>`, a subject chosen at random for each
//! tail and never seen on forwarded traffic (the same trust as the API replies: only a
//! client that may read `$JS.API.>` on the hub sees it). It is created with the hub's
//! JetStream API (`CONSUMER.CREATE`: ack policy none, flow control, an idle heartbeat), one
//! per hub subject filter of the uplink; the uplink answers flow control requests and treats
//! a tail without a heartbeat for [`DEAD_AFTER`] as gone (it is created again). Claims of
//! messages sent one by one wait for their copy here, and are read on their own only when
//! it does not come within `ack_timeout`.

use std::time::{Duration, Instant};

use leaf_core::jetstream::config::consumer::{AckPolicy, ConsumerConfig, DeliverPolicy};
use leaf_core::jetstream::wire::ConsumerCreateRequest;
use leaf_core::server::{InternalSink, Msg, Publisher, SubRef};

/// The consumer's idle heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A tail without any delivery or heartbeat for this long is gone.
pub const DEAD_AFTER: Duration = Duration::from_secs(4);
/// How long a hub that refused to create the consumer is not asked again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A running proof tail.
pub struct Tail {
    /// The random part of its deliver subject.
    pub nonce: u64,
    /// The consumers the hub created for it (deleted when the tail ends).
    pub consumers: Vec<String>,
    /// When it last delivered anything (or was created).
    pub last_seen: Instant,
    /// The subscription announcing interest in its literal deliver subject.
    pub interest: SubRef,
}

impl Tail {
    /// A tail whose consumers are being created.
    pub fn new(nonce: u64, interest: SubRef, now: Instant) -> Tail {
        Tail {
            nonce,
            consumers: Vec::new(),
            last_seen: now,
            interest,
        }
    }

    /// Whether it went quiet for longer than [`DEAD_AFTER`].
    pub fn is_dead(&self, now: Instant) -> bool {
        quiet_too_long(self.last_seen, now)
    }
}

/// Whether nothing came since `last_seen` for longer than [`DEAD_AFTER`].
fn quiet_too_long(last_seen: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last_seen) > DEAD_AFTER
}

/// The sink of the subscription that only announces interest in a tail's deliver subject:
/// its messages reach the uplink through the subscription of all its reply subjects.
pub struct Interest;

impl InternalSink for Interest {
    fn deliver(&self, _: &Msg<'_>, _: &Publisher) {}
}

/// The deliver subject of a tail: `<reply prefix>c.<nonce>`.
pub fn deliver_subject(reply_prefix: &str, nonce: u64) -> String {
    format!("{reply_prefix}c.{nonce:x}")
}

/// The `CONSUMER.CREATE` request of one of a tail's consumers: headers only, no acks, flow
/// control and heartbeats, from hub sequence `from` on, on `filter`.
pub fn create_request(stream: &str, deliver: &str, filter: &str, from: u64) -> Vec<u8> {
    let config = ConsumerConfig {
        deliver_subject: Some(deliver.to_string()),
        deliver_policy: DeliverPolicy::ByStartSequence,
        opt_start_seq: from.max(1),
        filter_subject: filter.to_string(),
        ack_policy: AckPolicy::None,
        max_deliver: 1,
        headers_only: true,
        flow_control: true,
        idle_heartbeat: HEARTBEAT.as_nanos() as i64,
        num_replicas: 1,
        ..ConsumerConfig::default()
    };
    let request = ConsumerCreateRequest {
        stream_name: stream.to_string(),
        config: Some(config),
        action: String::new(),
    };
    request.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_liveness() {
        let deliver = deliver_subject("_UPLINK.t.", 0xab);
        assert_eq!(deliver, "_UPLINK.t.c.ab");
        let req: serde_json::Value =
            serde_json::from_slice(&create_request("S", &deliver, "gw.>", 0)).unwrap();
        // The request as it was written before the typed body, and nats.go's
        // `replay_policy`, which every typed consumer configuration carries.
        assert_eq!(
            req,
            serde_json::json!({
                "stream_name": "S",
                "config": {
                    "deliver_subject": "_UPLINK.t.c.ab",
                    "deliver_policy": "by_start_sequence",
                    "opt_start_seq": 1,
                    "filter_subject": "gw.>",
                    "ack_policy": "none",
                    "max_deliver": 1,
                    "headers_only": true,
                    "flow_control": true,
                    "idle_heartbeat": 1_000_000_000,
                    "num_replicas": 1,
                    "replay_policy": "instant",
                },
            })
        );
        let t0 = Instant::now();
        assert!(!quiet_too_long(t0, t0 + Duration::from_secs(1)));
        assert!(quiet_too_long(t0, t0 + Duration::from_secs(5)));
    }
}
