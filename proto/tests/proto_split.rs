//! Property tests for the client protocol codec (`leaf_proto`), through its public API only.
//!
//! Random sequences of valid operations are encoded with `write_client_op` and decoded back,
//! from one buffer and from a growing buffer fed in chunks split at every byte boundary, the
//! way a server read loop sees them. Corrupted streams must give the same ops and the same
//! error whatever the split, and arbitrary bytes must never make the parser panic.

use bytes::BytesMut;
use leaf_proto::{parse_client_op, write_client_op, ClientOp, Limits, ParseError};
use proptest::prelude::*;

/// An owned copy of a [`ClientOp`], so decoded ops outlive the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Connect(Vec<u8>),
    Pub {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    HPub {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        headers: Vec<u8>,
        payload: Vec<u8>,
    },
    Sub {
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
        sid: Vec<u8>,
    },
    Unsub {
        sid: Vec<u8>,
        max: Option<u64>,
    },
    Ping,
    Pong,
}

impl Op {
    fn from_op(op: &ClientOp<'_>) -> Op {
        let own = |s: &[u8]| s.to_vec();
        match *op {
            ClientOp::Connect(json) => Op::Connect(own(json)),
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => Op::Pub {
                subject: own(subject),
                reply: reply.map(own),
                payload: own(payload),
            },
            ClientOp::HPub {
                subject,
                reply,
                headers,
                payload,
            } => Op::HPub {
                subject: own(subject),
                reply: reply.map(own),
                headers: own(headers),
                payload: own(payload),
            },
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => Op::Sub {
                subject: own(subject),
                queue: queue.map(own),
                sid: own(sid),
            },
            ClientOp::Unsub { sid, max } => Op::Unsub { sid: own(sid), max },
            ClientOp::Ping => Op::Ping,
            ClientOp::Pong => Op::Pong,
        }
    }

    fn as_op(&self) -> ClientOp<'_> {
        match self {
            Op::Connect(json) => ClientOp::Connect(json),
            Op::Pub {
                subject,
                reply,
                payload,
            } => ClientOp::Pub {
                subject,
                reply: reply.as_deref(),
                payload,
            },
            Op::HPub {
                subject,
                reply,
                headers,
                payload,
            } => ClientOp::HPub {
                subject,
                reply: reply.as_deref(),
                headers,
                payload,
            },
            Op::Sub {
                subject,
                queue,
                sid,
            } => ClientOp::Sub {
                subject,
                queue: queue.as_deref(),
                sid,
            },
            Op::Unsub { sid, max } => ClientOp::Unsub { sid, max: *max },
            Op::Ping => ClientOp::Ping,
            Op::Pong => ClientOp::Pong,
        }
    }
}

const TOKEN_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

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

/// Binary payloads, biased towards CR and LF so that line ends appear inside payloads.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => any::<u8>(), 1 => Just(b'\r'), 1 => Just(b'\n')],
        0..300,
    )
}

/// A header block: `NATS/1.0[ status]\r\n`, some `Key: value\r\n` lines, and `\r\n`.
fn headers() -> impl Strategy<Value = Vec<u8>> {
    let value = prop::collection::vec(prop::sample::select(&b"abc XYZ 019:;/._-"[..]), 0..20);
    (
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
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (token(), any::<bool>()).prop_map(|(name, verbose)| {
            let json = format!(
                "{{\"verbose\":{verbose},\"pedantic\":false,\"name\":\"{}\",\"headers\":true}}",
                String::from_utf8_lossy(&name)
            );
            Op::Connect(json.into_bytes())
        }),
        6 => (subject(), prop::option::of(subject()), payload()).prop_map(
            |(subject, reply, payload)| Op::Pub { subject, reply, payload }
        ),
        3 => (subject(), prop::option::of(subject()), headers(), payload()).prop_map(
            |(subject, reply, headers, payload)| Op::HPub { subject, reply, headers, payload }
        ),
        2 => (subject(), prop::option::of(token()), token()).prop_map(
            |(subject, queue, sid)| Op::Sub { subject, queue, sid }
        ),
        1 => (token(), prop::option::of(any::<u64>())).prop_map(|(sid, max)| Op::Unsub { sid, max }),
        1 => Just(Op::Ping),
        1 => Just(Op::Pong),
    ]
}

fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for op in ops {
        write_client_op(&mut out, &op.as_op());
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

/// Decodes `stream` as a server read loop would: each chunk (the stream cut at `cuts`, which
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
            match parse_client_op(&buf, limits) {
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
    while let Ok(Some((op, n))) = parse_client_op(rest, limits) {
        assert!(n > 0 && n <= rest.len());
        let _ = op.name();
        rest = &rest[n..];
    }
}

/// Fragments that make random inputs look like protocol text more often than pure noise does.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"PUB ".to_vec()),
        Just(b"pub\t".to_vec()),
        Just(b"HPUB ".to_vec()),
        Just(b"SUB ".to_vec()),
        Just(b"UNSUB ".to_vec()),
        Just(b"CONNECT ".to_vec()),
        Just(b"PING".to_vec()),
        Just(b"PONG".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"NATS/1.0".to_vec()),
        (0u32..40).prop_map(|n| n.to_string().into_bytes()),
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
            (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(&b" \t\r\n9x\xffP"[..])),
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
