//! Round trips of the typed bodies against JSON shaped as nats-server 2.9 sends it. The
//! fixtures are written from nats-server's source (`JSPubAckResponse`, `ApiError`,
//! `JSApiMsgGetResponse`/`StoredMsg` in server/jetstream_api.go and stream.go), with
//! values as a 2.9 server answers them.

use serde_json::Value;

use super::*;
use crate::jetstream::errors::JsError;

/// Parses `json` as `T`, writes it back and checks nothing was lost or added.
fn round_trip<'a, T: Deserialize<'a> + Serialize>(json: &'a str) -> T {
    let typed: T = serde_json::from_str(json).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    let want: Value = serde_json::from_str(json).unwrap();
    assert_eq!(back, want, "{json}");
    typed
}

#[test]
fn pub_acks() {
    let ack: PubAck = round_trip(r#"{"stream":"ORDERS","seq":7}"#);
    assert_eq!((ack.stream.as_deref(), ack.seq), (Some("ORDERS"), Some(7)));
    let ack: PubAck = round_trip(r#"{"stream":"ORDERS","seq":7,"domain":"hub","duplicate":true}"#);
    assert!(ack.duplicate);
    assert_eq!(ack.domain.as_deref(), Some("hub"));
    let refused: PubAck = round_trip(
        r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}"#,
    );
    assert!(refused.error.unwrap().is(JsError::StreamWrongLastSequence));
    let refused: PubAck = round_trip(
        r#"{"stream":"ORDERS","error":{"code":429,"err_code":10167,"description":"too many requests"}}"#,
    );
    assert_eq!(refused.seq, None);
}

#[test]
fn pub_ack_bytes_are_unchanged() {
    // What the stream sent before the typed struct, byte for byte (field order included).
    let ack = PubAck {
        stream: Some("S".into()),
        seq: Some(3),
        domain: Some("hub".into()),
        duplicate: true,
        error: None,
    };
    assert_eq!(
        serde_json::to_string(&ack).unwrap(),
        r#"{"stream":"S","seq":3,"domain":"hub","duplicate":true}"#
    );
    let refused = PubAck {
        stream: Some("S".into()),
        error: Some(std::borrow::Cow::Owned(
            JsError::StreamTooManyRequests.err(),
        )),
        ..PubAck::default()
    };
    assert_eq!(
        serde_json::to_string(&refused).unwrap(),
        r#"{"stream":"S","error":{"code":429,"err_code":10167,"description":"too many requests"}}"#
    );
}

#[test]
fn error_envelope() {
    let e: ErrorResponse = round_trip(
        r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
    );
    assert!(e.error.is(JsError::StreamNotFound));
    assert_eq!(e.error, JsError::StreamNotFound.err());
}

#[test]
fn msg_get() {
    let r: MsgGetRequest = round_trip(r#"{"seq":5}"#);
    assert_eq!(r.seq, 5);
    let r: MsgGetRequest = round_trip(r#"{"last_by_subj":"orders.new"}"#);
    assert_eq!(r.last_by_subj.as_deref(), Some("orders.new"));
    let r: MsgGetRequest = round_trip(r#"{"seq":2,"next_by_subj":"orders.*"}"#);
    assert_eq!(r.next_by_subj.as_deref(), Some("orders.*"));
    // nats-server 2.9's answer (the `type` is not part of the typed body).
    let answer = r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"orders.new","seq":5,"hdrs":"TkFUUy8xLjANCk5hdHMtTXNnLUlkOiBhDQoNCg==","data":"aGVsbG8=","time":"2026-12-06T01:02:03.456789Z"}}"#;
    let typed: MsgGetResponse = serde_json::from_str(answer).unwrap();
    let mut want: Value = serde_json::from_str(answer).unwrap();
    want.as_object_mut().unwrap().remove("type");
    assert_eq!(serde_json::to_value(&typed).unwrap(), want);
    assert_eq!(typed.message.seq, 5);
    let no_headers: MsgGetResponse = round_trip(
        r#"{"message":{"subject":"a","seq":1,"data":"","time":"2026-12-06T01:02:03Z"}}"#,
    );
    assert_eq!(no_headers.message.hdrs, None);
}
