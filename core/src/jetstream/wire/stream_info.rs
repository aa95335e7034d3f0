//! A stream's info (`StreamInfo`): what `STREAM.INFO`, `STREAM.CREATE`, `STREAM.UPDATE` and
//! each entry of `STREAM.LIST` answer. The API writes it; the leafd uplink reads the hub
//! stream's (its limits and sequences).
//!
//! Field names and omissions are nats-server's; what this server writes differs from a
//! nats-server 2.9 answer only in `ts` (2.10's answer time, always sent) and in `total`,
//! `offset`, `limit` (sent only with a `subjects_filter` that matched, where 2.9 always
//! sends them, zeros without); in the configuration, `subjects` is listed also when empty and
//! a mirror keeps the default `duplicate_window` (`tests/tests/jetstream_info_shape.rs`
//! checks them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jetstream::config::{ExternalStream, StreamConfig};
use crate::jetstream::errors::ApiError;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A stream's configuration, state and copies (`StreamInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Its configuration.
    pub config: StreamConfig,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// What it holds.
    pub state: StreamState,
    /// The JetStream domain (nats-server sends it when it has one; this server does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Its replicas (a clustered nats-server's; this server has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// The mirror's progress, for a mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<StreamSourceInfo>,
    /// Each source's progress, for a stream with sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<StreamSourceInfo>>,
    /// When the answer was made (RFC 3339; 2.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

/// What a stream holds (`StreamState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamState {
    /// Stored messages.
    pub messages: u64,
    /// Their bytes, counted as nats-server's file store counts them.
    pub bytes: u64,
    /// The oldest stored sequence (the next one when empty).
    pub first_seq: u64,
    /// When the oldest was stored (RFC 3339; Go's zero time when empty).
    pub first_ts: String,
    /// The newest sequence ever stored.
    pub last_seq: u64,
    /// When the newest was stored (RFC 3339).
    pub last_ts: String,
    /// Distinct subjects stored.
    #[serde(skip_serializing_if = "is_zero")]
    pub num_subjects: u64,
    /// Messages per subject, when a `STREAM.INFO` request asked with `subjects_filter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subjects: Option<BTreeMap<String, u64>>,
    /// Sequences between the first and the last that are gone.
    #[serde(skip_serializing_if = "is_zero")]
    pub num_deleted: u64,
    /// Those sequences, when a `STREAM.INFO` request asked with `deleted_details`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<u64>,
    /// Its consumers.
    pub consumer_count: u64,
}

/// A mirror's or source's progress (`StreamSourceInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamSourceInfo {
    /// The origin stream.
    pub name: String,
    /// How the origin is reached, when it is in another domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStream>,
    /// Messages the origin holds beyond the newest copy.
    pub lag: u64,
    /// Nanoseconds since something last arrived from the origin (-1: never).
    pub active: i64,
    /// The latest problem, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// A clustered stream's or consumer's replicas (`ClusterInfo`), as nats-server reports
/// them; this server, a single server, sends none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterInfo {
    /// The cluster's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server leading the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The other replicas.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<PeerInfo>,
}

/// One replica of a clustered stream or consumer (`PeerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// The server's name.
    pub name: String,
    /// Whether it is up to date.
    pub current: bool,
    /// Whether it is unreachable.
    #[serde(skip_serializing_if = "is_false")]
    pub offline: bool,
    /// Nanoseconds since it was last heard from.
    pub active: i64,
    /// Operations it is behind.
    #[serde(skip_serializing_if = "is_zero")]
    pub lag: u64,
}

/// The paging of an answer's subject counts (`ApiPaged`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paged {
    /// How many subjects match the filter.
    pub total: usize,
    /// The first one listed.
    pub offset: usize,
    /// The most one answer lists.
    pub limit: usize,
}

/// The body of a `STREAM.INFO`, `STREAM.CREATE` or `STREAM.UPDATE` answer (the `type` is
/// [`super::Response`]'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfoResponse {
    /// The paging of `state.subjects`: sent when a `subjects_filter` matched.
    #[serde(flatten)]
    pub paged: Option<Paged>,
    /// The stream's info.
    #[serde(flatten)]
    pub info: StreamInfo,
    /// Whether a `STREAM.CREATE` created it (absent when it existed already).
    #[serde(default, skip_serializing_if = "is_false")]
    pub did_create: bool,
}

impl From<StreamInfo> for StreamInfoResponse {
    fn from(info: StreamInfo) -> Self {
        StreamInfoResponse {
            paged: None,
            info,
            did_create: false,
        }
    }
}
