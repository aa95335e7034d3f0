//! Talking to the hub's JetStream over the leaf link: writing messages straight into the
//! link's outbound queue, and receiving the answers (PubAcks and API replies) through one
//! internal subscription per uplink, `_UPLINK.<token>.>`, whose interest the link announces to
//! the hub like any other subscription.
//!
//! Reply subjects: `_UPLINK.<token>.a.<local seq>` for a message (the PubAck names the local
//! sequence it acknowledges, whatever order answers come in), `_UPLINK.<token>.r.<id>` for an
//! API request. The token is random per process, so answers meant for an earlier run are
//! never delivered to this one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use leaf_core::jetstream::config::ApiError;
use leaf_core::server::outbound::AppendOutcome;
use leaf_core::server::{ClientHandle, InternalSink, Msg};
use leaf_proto as proto;
use leaf_proto::headers;

/// The prefix of uplink reply subjects.
pub const REPLY_PREFIX: &str = "_UPLINK.";

/// An answer from the hub.
#[derive(Debug)]
pub enum Answer {
    /// The answer to the message with local sequence `seq`.
    Ack {
        /// The local sequence.
        seq: u64,
        /// What the hub said.
        outcome: AckOutcome,
    },
    /// The answer to API request `id`.
    Api {
        /// The request id.
        id: u64,
        /// The JSON body.
        body: Bytes,
    },
}

/// What a PubAck says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Stored (or recognised as a duplicate of a stored message) at hub sequence `seq`.
    Stored {
        /// The hub stream's sequence.
        seq: u64,
        /// The hub recognised the `Nats-Msg-Id`.
        duplicate: bool,
        /// The stream that stored it.
        stream: String,
    },
    /// Refused with a JetStream error.
    Refused(ApiError),
    /// A status message instead of a PubAck (503: no stream listens on the subject).
    Status(u16),
    /// An answer that is not a PubAck.
    Garbled,
}

/// Whether a refusal will repeat for the same message whatever happens on the hub (the
/// message is skipped and counted) or may go away (it is sent again later).
pub fn is_permanent(e: &ApiError) -> bool {
    // 10054: message size exceeds the stream's maximum.
    e.err_code == 10054
}

/// The internal subscription's sink: parses answers and hands them to the uplink's task.
pub struct AnswerSink {
    prefix: String,
    tx: mpsc::UnboundedSender<Answer>,
}

impl AnswerSink {
    /// A sink for reply subjects under `prefix` (`_UPLINK.<token>.`).
    pub fn new(prefix: String, tx: mpsc::UnboundedSender<Answer>) -> AnswerSink {
        AnswerSink { prefix, tx }
    }
}

impl InternalSink for AnswerSink {
    fn deliver(&self, msg: &Msg<'_>) {
        let Some(rest) = msg.subject.strip_prefix(self.prefix.as_bytes()) else {
            return;
        };
        let Some((kind, n)) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once('.'))
            .and_then(|(k, n)| Some((k.to_string(), n.parse::<u64>().ok()?)))
        else {
            return;
        };
        let answer = match kind.as_str() {
            "a" => Answer::Ack {
                seq: n,
                outcome: parse_ack(msg.headers, msg.payload),
            },
            "r" => Answer::Api {
                id: n,
                body: Bytes::copy_from_slice(msg.payload),
            },
            _ => return,
        };
        let _ = self.tx.send(answer);
    }
}

#[derive(Deserialize)]
struct PubAckBody {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    error: Option<ApiError>,
}

/// Reads a PubAck (or the status message sent instead of one).
pub fn parse_ack(hdrs: Option<&[u8]>, payload: &[u8]) -> AckOutcome {
    if payload.is_empty() {
        if let Some(code) = hdrs.and_then(status_code) {
            return AckOutcome::Status(code);
        }
    }
    match serde_json::from_slice::<PubAckBody>(payload) {
        Ok(PubAckBody { error: Some(e), .. }) => AckOutcome::Refused(e),
        Ok(b) if b.seq > 0 => AckOutcome::Stored {
            seq: b.seq,
            duplicate: b.duplicate,
            stream: b.stream,
        },
        _ => AckOutcome::Garbled,
    }
}

/// The status code of a header block's `NATS/1.0 <code>` line.
fn status_code(block: &[u8]) -> Option<u16> {
    let first = block.split(|&b| b == b'\r' || b == b'\n').next()?;
    let text = std::str::from_utf8(first).ok()?;
    text.strip_prefix("NATS/1.0 ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Writes one message into the link's outbound queue (not flushed), counting it in the
/// link's statistics.
pub fn send(
    link: &Arc<ClientHandle>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) -> AppendOutcome {
    let outcome = link.out.append(
        |b| proto::write_lmsg(b, subject, reply, &[], headers, payload),
        None,
        &[],
    );
    if outcome != AppendOutcome::Closed {
        if let Some(peer) = link.leaf() {
            let size = headers.map_or(0, <[u8]>::len) + payload.len();
            peer.stats.msgs_out.fetch_add(1, Ordering::Relaxed);
            peer.stats
                .bytes_out
                .fetch_add(size as u64, Ordering::Relaxed);
        }
    }
    outcome
}

/// The reply of a JetStream API request, or its error.
pub fn api_result(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::general("the hub answered with invalid JSON"))?;
    match value.get("error") {
        Some(e) => Err(serde_json::from_value(e.clone())
            .unwrap_or_else(|_| ApiError::general("the hub answered with an unreadable error"))),
        None => Ok(value),
    }
}

/// What `STREAM.MSG.GET` returned: the message's hub sequence, its `Nats-Msg-Id` and when
/// it was stored (RFC 3339 text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubMessage {
    /// The hub stream's sequence.
    pub seq: u64,
    /// The message's `Nats-Msg-Id`, if it has one.
    pub msg_id: Option<String>,
}

/// Reads a `STREAM.MSG.GET` reply; `Ok(None)` when the hub has no such message.
pub fn parse_msg_get(body: &[u8]) -> Result<Option<HubMessage>, ApiError> {
    let value = match api_result(body) {
        Ok(v) => v,
        // 10037: no message found.
        Err(e) if e.err_code == 10037 => return Ok(None),
        Err(e) => return Err(e),
    };
    let msg = value
        .get("message")
        .ok_or_else(|| ApiError::general("MSG.GET reply without a message"))?;
    let seq = msg
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let msg_id = msg
        .get("hdrs")
        .and_then(serde_json::Value::as_str)
        .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
        .and_then(|block| headers::get_str(&block, "Nats-Msg-Id").map(str::to_string));
    Ok(Some(HubMessage { seq, msg_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_acks_are_read() {
        assert_eq!(
            parse_ack(None, br#"{"stream":"S","seq":5}"#),
            AckOutcome::Stored {
                seq: 5,
                duplicate: false,
                stream: "S".into()
            }
        );
        assert_eq!(
            parse_ack(None, br#"{"stream":"S","seq":5,"duplicate":true}"#),
            AckOutcome::Stored {
                seq: 5,
                duplicate: true,
                stream: "S".into()
            }
        );
        let refused = parse_ack(
            None,
            br#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#,
        );
        match refused {
            AckOutcome::Refused(e) => assert!(is_permanent(&e)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_ack(Some(b"NATS/1.0 503\r\n\r\n"), b""),
            AckOutcome::Status(503)
        );
        assert_eq!(parse_ack(None, b"nonsense"), AckOutcome::Garbled);
    }

    #[test]
    fn msg_get_replies_are_read() {
        let hdrs = base64::engine::general_purpose::STANDARD
            .encode(b"NATS/1.0\r\nNats-Msg-Id: u@1:9\r\n\r\n");
        let body = format!(
            r#"{{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{{"subject":"a","seq":12,"hdrs":"{hdrs}","data":"","time":"2026-01-01T00:00:00Z"}}}}"#
        );
        assert_eq!(
            parse_msg_get(body.as_bytes()).unwrap(),
            Some(HubMessage {
                seq: 12,
                msg_id: Some("u@1:9".into())
            })
        );
        let none = br#"{"type":"x","error":{"code":404,"err_code":10037,"description":"no message found"}}"#;
        assert_eq!(parse_msg_get(none).unwrap(), None);
        let other = br#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
        assert_eq!(parse_msg_get(other).unwrap_err().err_code, 10059);
    }
}
