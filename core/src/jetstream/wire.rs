//! Typed bodies of the JetStream API shared by the server side (the API, streams' PubAcks)
//! and the clients of another server's API in this workspace (sources, the leafd uplink's
//! hub side), so both ends read and write one shape.
//!
//! * [`Response`]: the `type` envelope of every successful answer; [`ErrorResponse`]: the
//!   `error` one; [`read_answer`]: how a client reads either (module `envelope`).
//! * [`StreamInfo`] (with [`StreamState`], [`StreamSourceInfo`], [`ClusterInfo`]) and
//!   [`StreamInfoResponse`] (with [`Paged`] and `did_create`): `STREAM.INFO`, `CREATE`,
//!   `UPDATE` (module `stream_info`).
//! * [`ConsumerInfo`] (with [`SequenceInfo`]) and [`ConsumerCreateRequest`]: `CONSUMER.INFO`,
//!   `CONSUMER.CREATE`, `CONSUMER.DURABLE.CREATE` (module `consumer_info`).
//! * [`PubAck`]: a publish's acknowledgement or its refusal.
//! * [`MsgGetRequest`], [`MsgGetResponse`], [`StoredMsg`]: `STREAM.MSG.GET`.
//!
//! Stream and consumer configuration live in [`super::config`] (and are used inside these
//! bodies); the error codes in [`super::errors`]. Field names and the omission of empty
//! fields follow nats-server 2.9 (the differences are listed in each module); readers ignore
//! unknown fields and default missing optional ones. The unit tests round-trip answers
//! captured from nats-server 2.9 (`wire/fixtures/`, written by `scripts/capture-js-fixtures`).

mod consumer_info;
mod envelope;
mod stream_info;

pub use consumer_info::{ConsumerCreateRequest, ConsumerInfo, SequenceInfo};
pub use envelope::{read_answer, AnswerError, Response, TYPE_PREFIX};
pub use stream_info::{
    ClusterInfo, Paged, PeerInfo, StreamInfo, StreamInfoResponse, StreamSourceInfo, StreamState,
};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::errors::ApiError;

/// A PubAck: `{"stream","seq","domain"?,"duplicate"?}` when stored, `{"stream"?,"error"}`
/// when refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubAck<'a> {
    /// The stream (absent from some refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Cow<'a, str>>,
    /// The stream sequence it was stored at (absent from refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The JetStream domain, when the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Cow<'a, str>>,
    /// Whether it was a duplicate within the stream's window (stored earlier at `seq`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, ApiError>>,
}

/// Writes the PubAck of a stored message, `{"stream":S,"seq":N,"domain"?:D,"duplicate"?:true}`,
/// byte for byte as serializing a [`PubAck`] would, without serde on the publish path: the
/// stream and domain (fixed for a stream's task) are escaped once, at construction.
#[derive(Debug, Clone)]
pub struct PubAckEncoder {
    /// `{"stream":"<name>","seq":`
    head: Vec<u8>,
    /// `,"domain":"<domain>"` or nothing.
    domain: Vec<u8>,
}

impl PubAckEncoder {
    /// The encoder for the PubAcks of stream `stream` in JetStream domain `domain`.
    pub fn new(stream: &str, domain: Option<&str>) -> Self {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let head = format!("{{\"stream\":{},\"seq\":", quoted(stream)).into_bytes();
        let domain = domain
            .map(|d| format!(",\"domain\":{}", quoted(d)).into_bytes())
            .unwrap_or_default();
        PubAckEncoder { head, domain }
    }

    /// Writes the PubAck of sequence `seq` into `out` (cleared first).
    pub fn encode(&self, seq: u64, duplicate: bool, out: &mut Vec<u8>) {
        use std::io::Write as _;
        out.clear();
        out.extend_from_slice(&self.head);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{seq}");
        out.extend_from_slice(&self.domain);
        if duplicate {
            out.extend_from_slice(b",\"duplicate\":true");
        }
        out.push(b'}');
    }
}

/// The `error` envelope of any JetStream API answer (`{"type"?, "error": {...}}`); other
/// fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The response type (`io.nats.jetstream.api.v1.<kind>`), when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The error.
    pub error: ApiError,
}

/// A `STREAM.MSG.GET` (and `DIRECT.GET`) request: exactly one way of finding the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsgGetRequest {
    /// By sequence (with `next_by_subj`: the first at or after it).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// The last message on this subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_by_subj: Option<String>,
    /// The first message on this subject at or after `seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_by_subj: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stored message as `STREAM.MSG.GET` returns it (headers and data base64-encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMsg {
    /// Its subject.
    #[serde(default)]
    pub subject: String,
    /// Its stream sequence.
    #[serde(default)]
    pub seq: u64,
    /// Its header block, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hdrs: Option<String>,
    /// Its payload, base64.
    #[serde(default)]
    pub data: String,
    /// When it was stored (RFC 3339).
    #[serde(default)]
    pub time: String,
}

/// A successful `STREAM.MSG.GET` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgGetResponse {
    /// The message.
    pub message: StoredMsg,
}

#[cfg(test)]
mod tests;
