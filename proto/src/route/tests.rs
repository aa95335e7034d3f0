//! Unit tests of the route codec: each form of each op, prefixes, errors, and a round trip.

use super::*;
use proptest::prelude::*;

fn lim() -> Limits {
    Limits::default()
}

/// Parses `input`, expecting exactly one complete op spanning the whole input, and checks that
/// every strict prefix asks for more bytes.
fn one(input: &[u8]) -> RouteOp<'_> {
    for k in 0..input.len() {
        assert_eq!(
            parse_route_op(&input[..k], &lim()),
            Ok(None),
            "prefix {k} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    match parse_route_op(input, &lim()) {
        Ok(Some((op, n))) => {
            assert_eq!(n, input.len(), "{:?}", String::from_utf8_lossy(input));
            op
        }
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn err(input: &[u8]) -> ParseError {
    match parse_route_op(input, &lim()) {
        Err(e) => e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn enc(op: &RouteOp<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_route_op(&mut out, op);
    out.to_vec()
}

fn msg<'a>(
    account: &'a [u8],
    subject: &'a [u8],
    reply: Option<&'a [u8]>,
    queues: &'a [u8],
    headers: Option<&'a [u8]>,
    payload: &'a [u8],
) -> RouteOp<'a> {
    RouteOp::Msg {
        account,
        subject,
        reply,
        queues: QueueNames::new(queues),
        headers,
        payload,
    }
}

#[test]
fn control_ops() {
    assert_eq!(
        one(b"INFO {\"server_id\":\"N\"}\r\n"),
        RouteOp::Info(b"{\"server_id\":\"N\"}")
    );
    assert_eq!(one(b"CONNECT {}\r\n"), RouteOp::Connect(b"{}"));
    assert_eq!(one(b"PING\r\n"), RouteOp::Ping);
    assert_eq!(one(b"pong\n"), RouteOp::Pong);
    assert_eq!(one(b"+OK\r\n"), RouteOp::Ok);
    assert_eq!(
        one(b"-ERR 'Rejecting connection'\r\n"),
        RouteOp::Err(b"'Rejecting connection'")
    );
}

#[test]
fn interest() {
    assert_eq!(
        one(b"RS+ $G foo.>\r\n"),
        RouteOp::Sub {
            account: b"$G",
            subject: b"foo.>",
            queue: None,
            weight: None
        }
    );
    assert_eq!(
        one(b"rs+\tACC  foo q 3\r\n"),
        RouteOp::Sub {
            account: b"ACC",
            subject: b"foo",
            queue: Some(b"q"),
            weight: Some(3)
        }
    );
    assert_eq!(
        one(b"RS- $G foo\r\n"),
        RouteOp::Unsub {
            account: b"$G",
            subject: b"foo",
            queue: None
        }
    );
    assert_eq!(
        one(b"RS- A foo q\r\n"),
        RouteOp::Unsub {
            account: b"A",
            subject: b"foo",
            queue: Some(b"q")
        }
    );
}

#[test]
fn messages() {
    assert_eq!(
        one(b"RMSG $G foo 5\r\nhello\r\n"),
        msg(b"$G", b"foo", None, b"", None, b"hello")
    );
    assert_eq!(
        one(b"RMSG $G foo _INBOX.1 0\r\n\r\n"),
        msg(b"$G", b"foo", Some(b"_INBOX.1"), b"", None, b"")
    );
    assert_eq!(
        one(b"RMSG A foo + r q1 q2 2\r\nhi\r\n"),
        msg(b"A", b"foo", Some(b"r"), b"q1 q2", None, b"hi")
    );
    assert_eq!(
        one(b"RMSG A foo | q1 2\r\nhi\r\n"),
        msg(b"A", b"foo", None, b"q1", None, b"hi")
    );
    assert_eq!(
        one(b"HMSG $G foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
        msg(b"$G", b"foo", None, b"", Some(b"NATS/1.0\r\n\r\n"), b"hi")
    );
    assert_eq!(
        one(b"HMSG $G foo + r q 12 12\r\nNATS/1.0\r\n\r\n\r\n"),
        msg(
            b"$G",
            b"foo",
            Some(b"r"),
            b"q",
            Some(b"NATS/1.0\r\n\r\n"),
            b""
        )
    );
    // Tabs and runs of blanks take the general path, with the same result.
    assert_eq!(
        one(b"RMSG\t$G  foo\t5\r\nhello\r\n"),
        msg(b"$G", b"foo", None, b"", None, b"hello")
    );
}

#[test]
fn errors() {
    // Leafnode-origin ops (only sent to peers that say "lnoc") and gateway ops are refused.
    assert_eq!(err(b"LS+ $G foo\r\n"), ParseError::UnknownOp);
    assert_eq!(err(b"A+ $G\r\n"), ParseError::UnknownOp);
    assert_eq!(err(b"SUB foo 1\r\n"), ParseError::UnknownOp);
    assert_eq!(err(b"RS+ $G\r\n"), ParseError::BadArgs { op: "RS+" });
    assert_eq!(err(b"RS+ $G foo q\r\n"), ParseError::BadArgs { op: "RS+" });
    assert_eq!(
        err(b"RS+ $G foo q -1\r\n"),
        ParseError::BadArgs { op: "RS+" }
    );
    assert_eq!(
        err(b"RS- $G foo q x\r\n"),
        ParseError::BadArgs { op: "RS-" }
    );
    assert_eq!(err(b"RMSG $G 5\r\n"), ParseError::BadArgs { op: "RMSG" });
    assert_eq!(err(b"RMSG\r\n"), ParseError::BadArgs { op: "RMSG" });
    assert_eq!(
        err(b"RMSG $G foo x q 2\r\n"),
        ParseError::BadArgs { op: "RMSG" }
    );
    assert_eq!(
        err(b"HMSG $G foo 9 5\r\n"),
        ParseError::BadArgs { op: "HMSG" }
    );
    assert_eq!(err(b"HMSG $G foo 2 2\r\nxx\r\n"), ParseError::BadHeaders);
    assert_eq!(
        err(b"RMSG $G foo 2\r\nhiX\r\n"),
        ParseError::MissingPayloadTerminator
    );
    let small = Limits {
        max_payload: 4,
        ..Limits::default()
    };
    assert_eq!(
        parse_route_op(b"RMSG $G foo 5\r\n", &small),
        Err(ParseError::MaxPayload)
    );
}

#[test]
fn writers_write_what_nats_server_writes() {
    let mut out = BytesMut::new();
    write_rs_plus(&mut out, b"$G", b"foo", None);
    write_rs_plus(&mut out, b"A", b"foo", Some((b"q", 2)));
    write_rs_minus(&mut out, b"A", b"foo", Some(b"q"));
    write_rmsg(&mut out, b"$G", b"foo", Some(b"r"), &[], None, b"hi");
    write_rmsg(&mut out, b"$G", b"foo", None, &[b"q1", b"q2"], None, b"hi");
    write_rmsg(
        &mut out,
        b"A",
        b"foo",
        Some(b"r"),
        &[b"q"],
        Some(b"NATS/1.0\r\n\r\n"),
        b"",
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "RS+ $G foo\r\nRS+ A foo q 2\r\nRS- A foo q\r\n\
         RMSG $G foo r 2\r\nhi\r\nRMSG $G foo | q1 q2 2\r\nhi\r\n\
         HMSG A foo + r q 12 12\r\nNATS/1.0\r\n\r\n\r\n"
    );
    let mut head = BytesMut::new();
    write_rmsg_head(&mut head, b"$G", b"foo", None, &[], Some(12), 14);
    assert_eq!(&head[..], b"HMSG $G foo 12 14\r\n");
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![b'a'..=b'z', Just(b'.'), Just(b'$'), Just(b'_')],
        1..12,
    )
}

proptest! {
    /// Whatever is written decodes back to the same op.
    #[test]
    fn round_trip(
        account in token(),
        subject in token(),
        reply in proptest::option::of(token()),
        queues in proptest::collection::vec(token(), 0..3),
        headers in proptest::option::of(Just(b"NATS/1.0\r\nA: b\r\n\r\n".to_vec())),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        weight in proptest::option::of(0u32..1000),
    ) {
        let joined = queues.join(&b' ');
        let m = msg(&account, &subject, reply.as_deref(), &joined, headers.as_deref(), &payload);
        let bytes = enc(&m);
        prop_assert_eq!(one(&bytes), m);
        let sub = RouteOp::Sub {
            account: &account,
            subject: &subject,
            queue: weight.map(|_| subject.as_slice()),
            weight,
        };
        let bytes = enc(&sub);
        prop_assert_eq!(one(&bytes), sub);
        let unsub = RouteOp::Unsub {
            account: &account,
            subject: &subject,
            queue: reply.as_deref(),
        };
        let bytes = enc(&unsub);
        prop_assert_eq!(one(&bytes), unsub);
    }

    /// Arbitrary bytes never make the parser panic.
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_route_op(&bytes, &lim());
    }
}
