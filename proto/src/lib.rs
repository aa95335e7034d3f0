//! # leaf-proto: the NATS protocol on the wire, without I/O
//!
//! The bottom of the leaf workspace: what both servers, the tests and the fuzzers need to read
//! and write NATS, and nothing else (it depends on `bytes`, `memchr`, `itoa` and `thiserror`
//! only).
//!
//! * the client protocol: bytes into [`ClientOp`]s ([`parse_client_op`]) and operations into
//!   bytes (the `write_*` functions, [`encode`]);
//! * [`leaf`]: the same for the server-to-server leafnode protocol ([`LeafOp`],
//!   [`parse_leaf_op`]), with the same building blocks;
//! * [`route`]: the same for the route protocol between the servers of a cluster
//!   ([`RouteOp`], [`parse_route_op`]), sharing the leafnode codec's message framing;
//! * [`subject`]: subject and queue-name validation, wildcard matching, overlap and subset
//!   tests;
//! * [`headers`]: reading and writing NATS header blocks (`NATS/1.0` plus fields), as
//!   JetStream's headers need them;
//! * [`time`]: the clock and the RFC 3339 timestamps of JetStream's JSON;
//! * [`transform`]: subject transforms (a source filter to a destination template), as
//!   JetStream's republish and subject mappings write them.
//!
//! It never touches a socket, keeps no state, and the parsers never allocate, so the same code
//! serves the client read loop, the leafnode link, tests and the fuzzers (`fuzz/fuzz_targets/`,
//! which build this crate alone).
//!
//! # Decoding in two phases
//!
//! A read loop appends whatever the socket delivered to a buffer and calls
//! [`parse_client_op`] on it until it returns `Ok(None)`:
//!
//! 1. **Find one complete operation.** The op name is recognised from its first bytes
//!    (case-insensitively), then `memchr` finds the end of the control line, looking no further
//!    than [`Limits::max_control_line`] bytes. Canonical `PUB `/`HPUB ` lines (single spaces,
//!    `\r\n`) take a fast path that splits the fields and finds the line end in one
//!    word-at-a-time pass; anything unusual falls back to the general path, which decides. For `PUB` and
//!    `HPUB` the declared size is checked against [`Limits::max_payload`] and the op is complete
//!    once `size + 2` more bytes (payload and `\r\n`) are buffered. Anything missing yields
//!    `Ok(None)`: the caller reads more and calls again on the same, longer buffer, since the
//!    parser holds no state between calls.
//! 2. **Borrow the fields.** The returned op holds slices of the caller's buffer (subject,
//!    reply, sid, headers, payload), plus the number of bytes it occupies. The caller handles
//!    the op and then advances its buffer by that count (for example with
//!    `BytesMut::advance`), or freezes the payload range to pass it on without copying.
//!
//! The outcome depends only on the bytes, not on how they were split into reads: a stream fed
//! in one piece or byte by byte yields the same operations and the same error
//! (`tests/proto_split.rs` checks this at every split point).
//!
//! # Errors and the `-ERR` texts
//!
//! A [`ParseError`] means the stream can no longer be framed; the server replies with
//! `-ERR <text>` using [`ParseError::err_text`] and closes the connection. The texts follow
//! nats-server 2.9 where it sends one:
//!
//! | error | `-ERR` text |
//! |---|---|
//! | [`ParseError::UnknownOp`], [`ParseError::MissingPayloadTerminator`] | `'Unknown Protocol Operation'` |
//! | [`ParseError::ControlLineTooLong`] | `'maximum control line exceeded'` (lower case, as nats-server sends it) |
//! | [`ParseError::MaxPayload`] | `'Maximum Payload Violation'` |
//! | [`ParseError::BadArgs`] | `'Invalid PUB Arguments'` and so on per op (nats-server closes silently) |
//! | [`ParseError::BadHeaders`] | `'Invalid Message Headers'` (nats-server does not check headers) |
//!
//! # Accepted syntax
//!
//! Op names in any letter case; fields separated by runs of spaces and tabs; lines ending in
//! `\r\n` or a bare `\n`; a payload must be followed by exactly `\r\n`. An `HPUB` header block
//! must start with `NATS/1.0`, except that an empty one (`HPUB subj 0 <n>`) is accepted, as
//! nats-server does. Subjects, queue names and sids are returned as given: checking them is the
//! caller's job.

pub mod encode;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod leaf;
pub mod parse;
pub mod printable;
pub mod route;
pub mod subject;
pub mod time;
pub mod transform;

pub use encode::{
    write_client_op, write_connect, write_err, write_hmsg, write_hmsg_head, write_hpub, write_info,
    write_msg, write_msg_head, write_ok, write_ping, write_pong, write_pub, write_sub, write_unsub,
    OK, PING, PONG,
};
pub use error::ParseError;
pub use leaf::{
    parse_leaf_op, write_leaf_op, write_lmsg, write_lmsg_head, write_ls_minus, write_ls_plus,
    LeafOp, QueueNames,
};
pub use parse::{parse_client_op, ClientOp, Limits};
pub use route::{
    parse_route_op, write_rmsg, write_rmsg_head, write_route_op, write_rs_minus, write_rs_plus,
    RouteOp,
};
