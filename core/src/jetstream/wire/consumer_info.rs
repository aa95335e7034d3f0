//! A consumer's info (`ConsumerInfo`, what `CONSUMER.INFO`, `CONSUMER.CREATE` and each entry
//! of `CONSUMER.LIST` answer) and the `CONSUMER.CREATE` / `CONSUMER.DURABLE.CREATE` request
//! (`CreateConsumerRequest`). The API reads requests and writes infos; sources and the leafd
//! uplink's proof tail write requests to another server and read the info it answers (the
//! consumer's name).
//!
//! What this server writes differs from a nats-server 2.9 answer in `ts` (2.10's answer
//! time, always sent), `push_bound` (sent for every push consumer, `false` when nobody
//! listens; 2.9 sends only `true`) and the configuration: `name` set (as 2.10),
//! `num_replicas` left out when 0, `direct` not kept, the default `inactive_threshold` of
//! an ephemeral consumer not reported (`tests/tests/jetstream_info_shape.rs` checks them).

use serde::{Deserialize, Serialize};

use super::ClusterInfo;
use crate::jetstream::config::consumer::ConsumerConfig;

/// A consumer's configuration, position and counters (`ConsumerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerInfo {
    /// Its stream.
    pub stream_name: String,
    /// Its name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Its configuration.
    pub config: ConsumerConfig,
    /// The last message delivered.
    pub delivered: SequenceInfo,
    /// Below this everything is acknowledged.
    pub ack_floor: SequenceInfo,
    /// Delivered messages waiting for their ack.
    pub num_ack_pending: u64,
    /// Messages delivered more than once and not acknowledged yet.
    pub num_redelivered: u64,
    /// Pull requests waiting.
    pub num_waiting: u64,
    /// Messages not delivered yet.
    pub num_pending: u64,
    /// Its replicas (a clustered nats-server's; this server has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// For a push consumer, whether someone listens on its deliver subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_bound: Option<bool>,
    /// When the answer was made (RFC 3339; 2.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

/// A position of a consumer (`SequenceInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SequenceInfo {
    /// The consumer sequence.
    pub consumer_seq: u64,
    /// The stream sequence.
    pub stream_seq: u64,
    /// When it last moved (RFC 3339), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

/// A `CONSUMER.CREATE` or `CONSUMER.DURABLE.CREATE` request (`CreateConsumerRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerCreateRequest {
    /// The stream, which must be the one the subject names.
    pub stream_name: String,
    /// The consumer's configuration (required: its absence is an error of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConsumerConfig>,
    /// `create` (refused if it exists with another configuration), `update` (refused if it
    /// does not exist) or empty (either; 2.10).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
}
