//! Property tests for the leafnode protocol codec (`leaf_proto::leaf`), through its public API
//! only.
//!
//! Random sequences of valid leafnode operations are encoded with `write_leaf_op` and decoded
//! back, from one buffer and from a growing buffer fed in chunks split at every byte boundary,
//! the way a link's read loop sees them. Corrupted streams must give the same ops and the same
//! error whatever the split, and arbitrary bytes must never make the parser panic.

use bytes::BytesMut;
use leaf_proto::{
    parse_leaf_op, write_leaf_op, write_lmsg, LeafOp, Limits, ParseError, QueueNames,
};
use proptest::prelude::*;

/// An owned copy of a [`LeafOp`], so decoded ops outlive the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Info(Vec<u8>),
    Connect(Vec<u8>),
    Ping,
    Pong,
    Err(Vec<u8>),
    Ok,
    Sub {
        subject: Vec<u8>,
        queue: Option<(Vec<u8>, u32)>,
    },
    Unsub {
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
    },
    Msg {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        /// The queue names joined by single spaces (empty for none).
        queues: Vec<u8>,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
}

impl Op {
    fn from_op(op: &LeafOp<'_>) -> Op {
        let own = |s: &[u8]| s.to_vec();
        match *op {
            LeafOp::Info(json) => Op::Info(own(json)),
            LeafOp::Connect(json) => Op::Connect(own(json)),
            LeafOp::Ping => Op::Ping,
            LeafOp::Pong => Op::Pong,
            LeafOp::Err(text) => Op::Err(own(text)),
            LeafOp::Ok => Op::Ok,
            LeafOp::Sub {
                subject,
                queue,
                weight,
            } => {
                assert_eq!(queue.is_some(), weight.is_some(), "{op:?}");
                Op::Sub {
                    subject: own(subject),
                    queue: queue.zip(weight).map(|(q, w)| (own(q), w)),
                }
            }
            LeafOp::Unsub { subject, queue } => Op::Unsub {
                subject: own(subject),
                queue: queue.map(own),
            },
            LeafOp::Msg {
                subject,
                reply,
                queues,
                headers,
                payload,
            } => Op::Msg {
                subject: own(subject),
                reply: reply.map(own),
                queues: queues.iter().collect::<Vec<_>>().join(&b' '),
                headers: headers.map(own),
                payload: own(payload),
            },
        }
    }

    fn as_op(&self) -> LeafOp<'_> {
        match self {
            Op::Info(json) => LeafOp::Info(json),
            Op::Connect(json) => LeafOp::Connect(json),
            Op::Ping => LeafOp::Ping,
            Op::Pong => LeafOp::Pong,
            Op::Err(text) => LeafOp::Err(text),
            Op::Ok => LeafOp::Ok,
            Op::Sub { subject, queue } => LeafOp::Sub {
                subject,
                queue: queue.as_ref().map(|(q, _)| &q[..]),
                weight: queue.as_ref().map(|&(_, w)| w),
            },
            Op::Unsub { subject, queue } => LeafOp::Unsub {
                subject,
                queue: queue.as_deref(),
            },
            Op::Msg {
                subject,
                reply,
                queues,
                headers,
                payload,
            } => LeafOp::Msg {
                subject,
                reply: reply.as_deref(),
                queues: QueueNames::new(queues),
                headers: headers.as_deref(),
                payload,
            },
        }
    }
}

const TOKEN_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-$+|";

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKEN_CHARS), 1..8)
}

fn subject() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => token(), 1 => Just(b"*".to_vec()), 1 => Just(b">".to_vec())],
        1..5,
    )
    .prop_map(|tokens| tokens.join(&b'.'))
}

/// A reply subject; sometimes a lone `+` or `|`, which must not be taken for a marker.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![8 => subject(), 1 => Just(b"+".to_vec()), 1 => Just(b"|".to_vec())]
}

/// Binary payloads, biased towards CR and LF so that line ends appear inside payloads.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => any::<u8>(), 1 => Just(b'\r'), 1 => Just(b'\n')],
        0..300,
    )
}

/// A header block: `NATS/1.0[ status]\r\n`, some `Key: value\r\n` lines, and `\r\n`; rarely
/// empty (an `HMSG` with 0 header bytes).
fn headers() -> impl Strategy<Value = Vec<u8>> {
    let value = prop::collection::vec(prop::sample::select(&b"abc XYZ 019:;/._-"[..]), 0..20);
    let block = (
        prop::option::of(prop::sample::select(&[b"503", b"404", b"100"][..])),
        prop::collection::vec((token(), value), 0..4),
    )
        .prop_map(|(status, lines)| {
            let mut h = b"NATS/1.0".to_vec();
            if let Some(code) = status {
                h.push(b' ');
                h.extend_from_slice(code);
            }
            h.extend_from_slice(b"\r\n");
            for (k, v) in lines {
                h.extend_from_slice(&k);
                h.extend_from_slice(b": ");
                h.extend_from_slice(&v);
                h.extend_from_slice(b"\r\n");
            }
            h.extend_from_slice(b"\r\n");
            h
        });
    prop_oneof![9 => block, 1 => Just(Vec::new())]
}

/// Free text for `INFO`, `CONNECT` and `-ERR`: no line ends, no blanks at either end.
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(&b"{}\":,'abcXYZ019 \t.$=_"[..]), 1..60).prop_map(
        |mut t| {
            t.insert(0, b'{');
            t.push(b'}');
            t
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => text().prop_map(Op::Info),
        1 => text().prop_map(Op::Connect),
        1 => Just(Op::Ping),
        1 => Just(Op::Pong),
        1 => text().prop_map(Op::Err),
        1 => Just(Op::Ok),
        3 => (subject(), prop::option::of((token(), any::<u32>())))
            .prop_map(|(subject, queue)| Op::Sub { subject, queue }),
        2 => (subject(), prop::option::of(token()))
            .prop_map(|(subject, queue)| Op::Unsub { subject, queue }),
        8 => (
            subject(),
            prop::option::of(reply()),
            prop::collection::vec(token(), 0..4),
            prop::option::of(headers()),
            payload(),
        )
            .prop_map(|(subject, reply, queues, headers, payload)| Op::Msg {
                subject,
                reply,
                queues: queues.join(&b' '),
                headers,
                payload,
            }),
    ]
}

fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for op in ops {
        write_leaf_op(&mut out, &op.as_op());
    }
    out.to_vec()
}

/// What a decoding run produced: the ops, the error that stopped it (if any) and the number of
/// bytes left unconsumed in the buffer.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    ops: Vec<Op>,
    error: Option<ParseError>,
    leftover: usize,
}

/// Decodes `stream` as a link's read loop would: each chunk (the stream cut at `cuts`, which
/// must be ascending) is appended to a growing buffer, every complete op is parsed and
/// consumed, and the rest waits for the next chunk.
fn decode_chunked(stream: &[u8], cuts: &[usize], limits: &Limits) -> Outcome {
    let mut buf: Vec<u8> = Vec::new();
    let mut ops = Vec::new();
    let mut prev = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[prev..cut]);
        prev = cut;
        loop {
            match parse_leaf_op(&buf, limits) {
                Ok(Some((op, n))) => {
                    assert!(n > 0 && n <= buf.len(), "consumed {n} of {}", buf.len());
                    ops.push(Op::from_op(&op));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        ops,
                        error: Some(error),
                        leftover: buf.len() + stream.len() - prev,
                    }
                }
            }
        }
    }
    Outcome {
        ops,
        error: None,
        leftover: buf.len(),
    }
}

fn decode_whole(stream: &[u8], limits: &Limits) -> Outcome {
    decode_chunked(stream, &[], limits)
}

/// The body of the fuzz target: parse until the input is exhausted, incomplete or invalid.
fn parse_all(data: &[u8], limits: &Limits) {
    let mut rest = data;
    while let Ok(Some((op, n))) = parse_leaf_op(rest, limits) {
        assert!(n > 0 && n <= rest.len());
        let _ = op.name();
        rest = &rest[n..];
    }
}

/// Fragments that make random inputs look like protocol text more often than pure noise does.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"LMSG ".to_vec()),
        Just(b"lmsg\t".to_vec()),
        Just(b"HMSG ".to_vec()),
        Just(b"LS+ ".to_vec()),
        Just(b"LS- ".to_vec()),
        Just(b"INFO ".to_vec()),
        Just(b"CONNECT ".to_vec()),
        Just(b"-ERR ".to_vec()),
        Just(b"+OK".to_vec()),
        Just(b"PING".to_vec()),
        Just(b"PONG".to_vec()),
        Just(b"+ ".to_vec()),
        Just(b"| ".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"NATS/1.0".to_vec()),
        (0u32..40).prop_map(|n| n.to_string().into_bytes()),
        Just(b"4294967296".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        token(),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn small_limits() -> Limits {
    Limits {
        max_control_line: 48,
        max_payload: 160,
    }
}

#[test]
fn write_lmsg_matches_write_leaf_op() {
    let mut a = BytesMut::new();
    write_lmsg(
        &mut a,
        b"s",
        Some(b"r"),
        &[b"q1", b"q2"],
        Some(b"NATS/1.0\r\n\r\n"),
        b"x",
    );
    let mut b = BytesMut::new();
    write_leaf_op(
        &mut b,
        &LeafOp::Msg {
            subject: b"s",
            reply: Some(b"r"),
            queues: QueueNames::new(b"q1 q2"),
            headers: Some(b"NATS/1.0\r\n\r\n"),
            payload: b"x",
        },
    );
    assert_eq!(a, b);
    assert_eq!(&a[..], b"HMSG s + r q1 q2 12 13\r\nNATS/1.0\r\n\r\nx\r\n");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn valid_stream_round_trips_at_every_split(ops in prop::collection::vec(op(), 1..6)) {
        let stream = encode(&ops);
        let limits = Limits::default();
        let expected = Outcome { ops: ops.clone(), error: None, leftover: 0 };

        prop_assert_eq!(&decode_whole(&stream, &limits), &expected);
        for k in 0..=stream.len() {
            prop_assert_eq!(&decode_chunked(&stream, &[k], &limits), &expected, "split at {}", k);
        }
    }

    #[test]
    fn valid_stream_round_trips_in_many_chunks(
        ops in prop::collection::vec(op(), 1..10),
        sizes in prop::collection::vec(1usize..40, 1..200),
    ) {
        let stream = encode(&ops);
        let mut cuts = Vec::new();
        let mut at = 0;
        for size in sizes {
            at += size;
            if at >= stream.len() {
                break;
            }
            cuts.push(at);
        }
        let expected = Outcome { ops, error: None, leftover: 0 };
        prop_assert_eq!(decode_chunked(&stream, &cuts, &Limits::default()), expected);
    }

    #[test]
    fn byte_at_a_time(ops in prop::collection::vec(op(), 1..6)) {
        let stream = encode(&ops);
        let cuts: Vec<usize> = (1..stream.len()).collect();
        let expected = Outcome { ops, error: None, leftover: 0 };
        prop_assert_eq!(decode_chunked(&stream, &cuts, &Limits::default()), expected);
    }

    /// A corrupted stream yields the same ops and the same error however it is split.
    #[test]
    fn corrupted_stream_is_split_independent(
        ops in prop::collection::vec(op(), 1..5),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(&b" \t\r\n9x\xff+|L"[..])),
            1..4,
        ),
        small in any::<bool>(),
    ) {
        let mut stream = encode(&ops);
        for (at, kind, byte) in edits {
            let i = at.index(stream.len() + 1);
            match kind {
                0 if i < stream.len() => stream[i] = byte,
                1 if i < stream.len() => {
                    stream.remove(i);
                }
                _ => stream.insert(i, byte),
            }
        }
        let limits = if small { small_limits() } else { Limits::default() };
        let whole = decode_whole(&stream, &limits);
        for k in 0..=stream.len() {
            prop_assert_eq!(&decode_chunked(&stream, &[k], &limits), &whole, "split at {}", k);
        }
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        parse_all(&data, &Limits::default());
        parse_all(&data, &small_limits());
    }

    #[test]
    fn protocol_like_bytes_never_panic(data in protocolish()) {
        parse_all(&data, &Limits::default());
        parse_all(&data, &small_limits());
        parse_all(&data, &Limits { max_control_line: 0, max_payload: 0 });
        parse_all(&data, &Limits { max_control_line: usize::MAX, max_payload: usize::MAX });
        // Splitting never changes the outcome, valid or not.
        let whole = decode_whole(&data, &small_limits());
        let cuts: Vec<usize> = (1..data.len()).collect();
        prop_assert_eq!(decode_chunked(&data, &cuts, &small_limits()), whole);
    }
}
