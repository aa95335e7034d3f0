//! Talking to the hub's JetStream over the leaf link: writing messages straight into the
//! link's outbound queue, and receiving the answers (PubAcks and API replies) through one
//! internal subscription per uplink, `_UPLINK.<token>.>`, whose interest the link announces to
//! the hub like any other subscription.
//!
//! Reply subjects: `_UPLINK.<token>.a.<local seq>.<nonce>` for a message (the PubAck names
//! the local sequence it acknowledges, whatever order answers come in, and a random nonce of
//! that send, so nobody can answer a message they have not seen), `_UPLINK.<token>.r.<id>`
//! for an API request, with a random id: API replies are what the uplink trusts (see
//! `ledger`), and their reply subjects never appear on forwarded traffic. The token is
//! random per process, so answers meant for an earlier run are never delivered to this one.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use tokio::sync::mpsc;

use leaf_core::jetstream::config::{ApiError, JsError};
use leaf_core::jetstream::wire::{AnswerError, MsgGetResponse, PubAck};
use leaf_core::server::outbound::AppendOutcome;
use leaf_core::server::{ClientHandle, InternalSink, Msg, Publisher};
use leaf_proto as proto;
use leaf_proto::headers;

/// The prefix of uplink reply subjects.
pub use crate::config::uplink::REPLY_PREFIX;

/// An answer from the hub.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// The answer to the message with local sequence `seq`.
    Ack {
        /// The local sequence.
        seq: u64,
        /// The nonce in the reply subject.
        nonce: u64,
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
    /// A delivery of the proof tail whose deliver subject ends in `nonce` (see `tail`).
    Tail {
        /// The tail's nonce.
        nonce: u64,
        /// What it delivered.
        event: TailEvent,
    },
}

/// What the proof tail (a headers-only push consumer on the hub stream) delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailEvent {
    /// A message stored in the hub stream: its position and ids.
    Copy {
        /// The hub stream's sequence.
        hub_seq: u64,
        /// Its `Nats-Msg-Id`.
        msg_id: Option<String>,
        /// Its `Nats-Expected-Last-Msg-Id`.
        expect_last: Option<String>,
    },
    /// A heartbeat, or a flow control request to answer (an empty message to that subject).
    Control {
        /// The subject to answer a flow control request on.
        flow_control: Option<String>,
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
        /// The hub's JetStream domain, if it has one.
        domain: Option<String>,
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
    e.is(JsError::StreamMessageExceedsMaximum)
}

/// Most answers queued for the uplink's task.
const MAX_QUEUED_ANSWERS: usize = 65_536;
/// Most bytes of answers queued for the uplink's task.
const MAX_QUEUED_ANSWER_BYTES: usize = 16 << 20;
/// What an answer without a body counts for in the byte bound.
const ANSWER_OVERHEAD: usize = 64;

/// The internal subscription's sink: parses answers and hands them to the uplink's task
/// through a queue bounded in answers and in bytes. Anybody on the hub can publish to the
/// reply subjects, so what does not fit is dropped (and counted): a lost PubAck is a timeout
/// and a lost API reply a verification asked again, never a lost message.
pub struct AnswerSink {
    prefix: String,
    tx: mpsc::Sender<(Answer, usize)>,
    bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

/// The uplink task's end of the answer queue.
pub struct Answers {
    rx: mpsc::Receiver<(Answer, usize)>,
    bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

/// A sink for reply subjects under `prefix` (`_UPLINK.<token>.`) and the queue it feeds.
pub fn answer_queue(prefix: String) -> (AnswerSink, Answers) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_ANSWERS);
    let bytes = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        AnswerSink {
            prefix,
            tx,
            bytes: bytes.clone(),
            dropped: dropped.clone(),
        },
        Answers { rx, bytes, dropped },
    )
}

impl Answers {
    /// The next answer; `None` once the sink is gone.
    pub async fn recv(&mut self) -> Option<Answer> {
        let (answer, size) = self.rx.recv().await?;
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        Some(answer)
    }

    /// The next answer if one is queued.
    pub fn try_recv(&mut self) -> Option<Answer> {
        let (answer, size) = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        Some(answer)
    }

    /// Answers dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl InternalSink for AnswerSink {
    fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
        let Some(rest) = msg.subject.strip_prefix(self.prefix.as_bytes()) else {
            return;
        };
        let Some(answer) = parse_reply_subject(rest, msg.reply, msg.headers, msg.payload) else {
            return;
        };
        let size = ANSWER_OVERHEAD
            + match &answer {
                Answer::Api { body, .. } => body.len(),
                Answer::Ack { .. } | Answer::Tail { .. } => 0,
            };
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_ANSWER_BYTES
            || self.tx.try_send((answer, size)).is_err()
        {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads `a.<seq>.<nonce>` (a PubAck), `r.<id>` (an API reply) or `c.<nonce>` (a proof tail
/// delivery) after the uplink's prefix.
fn parse_reply_subject(
    rest: &[u8],
    reply: Option<&[u8]>,
    hdrs: Option<&[u8]>,
    payload: &[u8],
) -> Option<Answer> {
    let rest = std::str::from_utf8(rest).ok()?;
    let (kind, rest) = rest.split_once('.')?;
    match kind {
        "a" => {
            let (seq, nonce) = rest.split_once('.')?;
            Some(Answer::Ack {
                seq: seq.parse().ok()?,
                nonce: u64::from_str_radix(nonce, 16).ok()?,
                outcome: parse_ack(hdrs, payload),
            })
        }
        "r" => Some(Answer::Api {
            id: u64::from_str_radix(rest, 16).ok()?,
            body: Bytes::copy_from_slice(payload),
        }),
        "c" => Some(Answer::Tail {
            nonce: u64::from_str_radix(rest, 16).ok()?,
            event: parse_tail_event(reply, hdrs, payload)?,
        }),
        _ => None,
    }
}

/// Reads a push consumer's delivery: a status message (`NATS/1.0 100`: heartbeat or flow
/// control) or a message with its `$JS.ACK.` reply subject.
fn parse_tail_event(
    reply: Option<&[u8]>,
    hdrs: Option<&[u8]>,
    payload: &[u8],
) -> Option<TailEvent> {
    let reply = reply.and_then(|r| std::str::from_utf8(r).ok());
    let block = hdrs.unwrap_or_default();
    if payload.is_empty() && block.starts_with(b"NATS/1.0 100") {
        // Answered straight into the link: only on a flow control subject, so whoever can
        // publish to the tail's deliver subject cannot make the uplink publish elsewhere on
        // the hub.
        let flow_control = reply
            .or_else(|| headers::get_str(block, "Nats-Consumer-Stalled"))
            .filter(|s| s.starts_with("$JS.FC."))
            .map(str::to_string);
        return Some(TailEvent::Control { flow_control });
    }
    let ack = leaf_core::jetstream::source::AckReply::parse(reply?)?;
    let header = |name: &str| headers::get_str(block, name).map(str::to_string);
    Some(TailEvent::Copy {
        hub_seq: ack.sseq,
        msg_id: header("Nats-Msg-Id"),
        expect_last: header("Nats-Expected-Last-Msg-Id"),
    })
}

/// Reads a PubAck (or the status message sent instead of one).
pub fn parse_ack(hdrs: Option<&[u8]>, payload: &[u8]) -> AckOutcome {
    if payload.is_empty() {
        if let Some(code) = hdrs.and_then(status_code) {
            return AckOutcome::Status(code);
        }
    }
    match serde_json::from_slice::<PubAck>(payload) {
        Ok(PubAck { error: Some(e), .. }) => AckOutcome::Refused(e.into_owned()),
        Ok(PubAck {
            seq: Some(seq),
            stream,
            duplicate,
            domain,
            ..
        }) if seq > 0 => AckOutcome::Stored {
            seq,
            duplicate,
            stream: stream.map(Cow::into_owned).unwrap_or_default(),
            domain: domain.map(Cow::into_owned),
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

/// What became of a message written towards the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued (the link's queue state).
    Queued(AppendOutcome),
    /// Not sent: the remote's `deny_exports` cover its subject.
    Denied,
}

/// Whether the remote's `deny_exports` keep `subject` off `link`.
pub fn export_denied(link: &ClientHandle, subject: &[u8]) -> bool {
    link.leaf()
        .and_then(|peer| peer.deny.get())
        .is_some_and(|deny| deny.export_denied(subject))
}

/// Writes one message into the link's outbound queue (not flushed), counting it in the
/// link's statistics, unless the remote's `deny_exports` cover its subject: the uplink writes
/// past the router, so it applies the link's deny list itself.
pub fn send(
    link: &Arc<ClientHandle>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) -> Sent {
    if export_denied(link, subject) {
        return Sent::Denied;
    }
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
    Sent::Queued(outcome)
}

/// The error of a JetStream API answer read as a typed body of
/// [`leaf_core::jetstream::wire`] (`StreamInfo::read`…): the hub's own, or a general one
/// (500/10051) saying its answer was unreadable.
pub fn api_error(e: AnswerError) -> ApiError {
    match e {
        AnswerError::Refused(e) => e,
        AnswerError::Unreadable(why) => {
            ApiError::general(&format!("the hub's answer is unreadable: {why}"))
        }
    }
}

/// A message of the hub stream as `STREAM.MSG.GET` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCopy {
    /// The hub stream's sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its `Nats-Msg-Id`, if it has one.
    pub msg_id: Option<String>,
    /// Its `Nats-Expected-Last-Msg-Id`, if it was published chained.
    pub expect_last: Option<String>,
    /// Its payload.
    pub data: Vec<u8>,
}

/// Reads a `STREAM.MSG.GET` reply; `Ok(None)` when the hub has no such message.
pub fn parse_msg_get(body: &[u8]) -> Result<Option<HubCopy>, ApiError> {
    let msg = match MsgGetResponse::read(body).map_err(api_error) {
        Ok(MsgGetResponse { message }) => message,
        Err(e) if e.is(JsError::NoMessageFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.decode(t);
    let hdrs = match msg.hdrs.as_deref().map(b64) {
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Err(ApiError::general("MSG.GET reply with unreadable headers")),
        None => None,
    };
    let Ok(data) = b64(&msg.data) else {
        return Err(ApiError::general(
            "MSG.GET reply with an unreadable payload",
        ));
    };
    let header = |name: &str| {
        hdrs.as_deref()
            .and_then(|block| headers::get_str(block, name))
            .map(str::to_string)
    };
    Ok(Some(HubCopy {
        msg_id: header("Nats-Msg-Id"),
        expect_last: header("Nats-Expected-Last-Msg-Id"),
        data,
        seq: msg.seq,
        subject: msg.subject,
    }))
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
                stream: "S".into(),
                domain: None,
            }
        );
        assert_eq!(
            parse_ack(
                None,
                br#"{"stream":"S","domain":"hub","seq":5,"duplicate":true}"#
            ),
            AckOutcome::Stored {
                seq: 5,
                duplicate: true,
                stream: "S".into(),
                domain: Some("hub".into()),
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
    fn reply_subjects_are_read() {
        match parse_reply_subject(b"a.42.ff", None, None, br#"{"stream":"S","seq":7}"#) {
            Some(Answer::Ack {
                seq: 42,
                nonce: 0xff,
                outcome: AckOutcome::Stored { seq: 7, .. },
            }) => {}
            other => panic!("{other:?}"),
        }
        match parse_reply_subject(b"r.1f", None, None, b"{}") {
            Some(Answer::Api { id: 0x1f, body }) => assert_eq!(&body[..], b"{}"),
            other => panic!("{other:?}"),
        }
        let delivery = parse_reply_subject(
            b"c.a1",
            Some(b"$JS.ACK.S.C.1.77.3.1700000000000000000.0"),
            Some(b"NATS/1.0\r\nNats-Msg-Id: u@1:9\r\nNats-Msg-Size: 4\r\n\r\n"),
            b"",
        );
        assert_eq!(
            delivery,
            Some(Answer::Tail {
                nonce: 0xa1,
                event: TailEvent::Copy {
                    hub_seq: 77,
                    msg_id: Some("u@1:9".into()),
                    expect_last: None,
                },
            })
        );
        let fc = parse_reply_subject(
            b"c.a1",
            Some(b"$JS.FC.S.x.y"),
            Some(b"NATS/1.0 100 FlowControl Request\r\n\r\n"),
            b"",
        );
        assert_eq!(
            fc,
            Some(Answer::Tail {
                nonce: 0xa1,
                event: TailEvent::Control {
                    flow_control: Some("$JS.FC.S.x.y".into()),
                },
            })
        );
        // A "flow control request" elsewhere is not answered.
        for reply in [&b"gpio.b.valve.set"[..], b"$JS.API.STREAM.DELETE.S"] {
            assert_eq!(
                parse_reply_subject(
                    b"c.a1",
                    Some(reply),
                    Some(b"NATS/1.0 100 FlowControl Request\r\n\r\n"),
                    b"",
                ),
                Some(Answer::Tail {
                    nonce: 0xa1,
                    event: TailEvent::Control { flow_control: None },
                })
            );
        }
        for bad in [&b"a.42"[..], b"a.x.1", b"a.1.zz", b"r.", b"q.1", b"", b"a"] {
            assert!(
                parse_reply_subject(bad, None, None, b"").is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_flood_of_answers_is_bounded_in_bytes() {
        let (sink, mut answers) = answer_queue("_UPLINK.t.".into());
        let body = vec![b'x'; 1 << 20];
        for i in 0..100u64 {
            let subject = format!("_UPLINK.t.r.{i:x}");
            sink.deliver(
                &Msg {
                    subject: subject.as_bytes(),
                    reply: None,
                    headers: None,
                    payload: &body,
                },
                &Publisher::Server,
            );
        }
        // 16 MiB of bodies fit; the rest is dropped and counted.
        assert_eq!(answers.dropped(), 85);
        let mut queued = 0;
        while answers.try_recv().is_some() {
            queued += 1;
        }
        assert_eq!(queued, 15);
        // Once drained, answers are taken again.
        sink.deliver(
            &Msg {
                subject: b"_UPLINK.t.a.1.ff",
                reply: None,
                headers: None,
                payload: br#"{"stream":"S","seq":1}"#,
            },
            &Publisher::Server,
        );
        assert!(matches!(
            answers.try_recv(),
            Some(Answer::Ack { seq: 1, .. })
        ));
    }

    #[test]
    fn msg_get_replies_are_read() {
        let hdrs = base64::engine::general_purpose::STANDARD
            .encode(b"NATS/1.0\r\nNats-Msg-Id: u@1:9\r\nNats-Expected-Last-Msg-Id: u@1:8\r\n\r\n");
        let data = base64::engine::general_purpose::STANDARD.encode(b"21.5");
        let body = format!(
            r#"{{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{{"subject":"a","seq":12,"hdrs":"{hdrs}","data":"{data}","time":"2026-01-01T00:00:00Z"}}}}"#
        );
        assert_eq!(
            parse_msg_get(body.as_bytes()).unwrap(),
            Some(HubCopy {
                seq: 12,
                subject: "a".into(),
                msg_id: Some("u@1:9".into()),
                expect_last: Some("u@1:8".into()),
                data: b"21.5".to_vec(),
            })
        );
        let none = br#"{"type":"x","error":{"code":404,"err_code":10037,"description":"no message found"}}"#;
        assert_eq!(parse_msg_get(none).unwrap(), None);
        let other = br#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
        assert_eq!(parse_msg_get(other).unwrap_err().err_code, 10059);
        let bare = parse_msg_get(br#"{"type":"x"}"#).unwrap_err();
        assert!(bare
            .description
            .starts_with("the hub's answer is unreadable"));
    }

    #[test]
    fn hub_stream_infos_are_read_and_hostile_ones_refused() {
        use leaf_core::jetstream::wire::StreamInfo;
        let info = StreamInfo::read(
            br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","total":0,"offset":0,"limit":0,
                 "config":{"name":"HUB","subjects":["gw.>"],"max_msg_size":1024,"duplicate_window":60000000000,"new_field":[1]},
                 "created":"2026-12-06T04:15:49Z","state":{"messages":2,"first_seq":3,"last_seq":4}}"#,
        )
        .map_err(api_error)
        .unwrap();
        assert_eq!((info.state.first_seq, info.state.last_seq), (3, 4));
        assert_eq!(
            (info.config.max_msg_size, info.config.duplicate_window),
            (1024, 60_000_000_000)
        );
        let missing = StreamInfo::read(
            br#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )
        .map_err(api_error)
        .unwrap_err();
        assert!(missing.is(JsError::StreamNotFound));
        for hostile in [
            &b"not json"[..],
            br#"{"config":{"name":"HUB"}}"#,
            br#"{"config":{"name":"HUB"},"state":{"last_seq":-5}}"#,
            br#"{"config":{"name":"HUB","max_msg_size":"\u001b[31m"},"state":{}}"#,
            br#"{"error":"\u001b[31m"}"#,
        ] {
            let e = StreamInfo::read(hostile).map_err(api_error).unwrap_err();
            assert!(e.is(JsError::StreamGeneralError), "{e}");
            assert!(
                e.description.starts_with("the hub's answer is unreadable"),
                "{e}"
            );
            assert!(!e.description.contains('\u{1b}'), "{e}");
        }
    }
}
