//! The route protocol between the servers of one cluster, both directions, without I/O.
//!
//! A route carries interest and messages between two servers of a cluster, like a leafnode
//! link, but for every account at once: each `RS+`/`RS-`/`RMSG` names its account. Both ends
//! speak the same grammar, so one decoder, [`parse_route_op`], and one set of writers serve the
//! soliciting and the accepting side. Decoding follows the client and leafnode codecs: a pure
//! function of the buffered bytes, zero copy, no allocation, never panics, and the outcome does
//! not depend on how the stream was split into reads (`route/tests.rs` checks that every prefix
//! of an op asks for more bytes; `tests/fuzz_route.rs` mutates valid streams;
//! `tests/route_interop.rs` plays a cluster member against a real nats-server 2.9).
//!
//! # Grammar
//!
//! What nats-server 2.9 (v2.9.10) sends and accepts on a route, read from its source:
//!
//! * `server/parser.go`, `(*client).parse`: `RS+`/`RS-` (the `SUB`/`UNSUB` argument states with
//!   the route's argument processors), `RMSG` (`MSG_ARG`), `HMSG` (`HMSG_ARG`), `INFO`,
//!   `CONNECT`, `PING`/`PONG`, `-ERR`, `+OK`;
//! * `server/route.go`: `processRemoteSub` and `processRemoteUnsub` (the `RS+`/`RS-`
//!   arguments), `processRoutedMsgArgs` and `processRoutedHeaderMsgArgs` (the `RMSG`/`HMSG`
//!   arguments), `sendRouteSubProtos`/`sendRouteSubOrUnSubProtos` (the writers), `connectInfo`
//!   and `sendRouteConnect` (CONNECT);
//! * `server/client.go`: `msgHeaderForRouteOrLeaf` (the `RMSG`/`HMSG` writer).
//!
//! ```text
//! INFO <json>                                       the server's info; sent first by the
//!                                                   accepting side, again to gossip members
//! CONNECT <json>                                    the dialing server's credentials; "name"
//!                                                   is its server id; no "lang" field
//! PING / PONG                                       keepalive, both directions
//! -ERR '<text>'                                     e.g. a cluster name mismatch
//! +OK                                               tolerated
//! RS+ <account> <subject>                           plain interest (0 -> 1 in the account)
//! RS+ <account> <subject> <queue> <weight>          queue interest; weight = members of the
//!                                                   group on the sending side (absolute,
//!                                                   re-sent whenever it changes)
//! RS- <account> <subject> [<queue>]                 interest gone
//! RMSG <account> <subject> [<reply>] <size>         message without headers
//! RMSG <account> <subject> + <reply> <q1> .. <size> for the listed queue groups, with a reply
//! RMSG <account> <subject> | <q1> .. <size>         for the listed queue groups, no reply
//! HMSG <account> <subject> ... <hdr> <total>        the same with headers (only between two
//!                                                   servers that both said "headers":true)
//! ```
//!
//! Lines end in `\r\n` (a bare `\n` is accepted), fields are separated by runs of spaces or
//! tabs, op names are case-insensitive. The `+`/`|` marker and the queue list are read as on
//! a leafnode link (see [`super::leaf`]): with exactly one field between the subject and the
//! size(s) it is the reply. A message sent over a route is never forwarded to another route
//! (one hop): that rule is the server's, not the codec's.
//!
//! # Not spoken
//!
//! nats-server 2.9 also sends `LS+`/`LS-`/`LMSG` with an origin cluster on a route, but only to
//! a peer whose CONNECT said `"lnoc":true` (it understands leafnode origin). A server using this
//! codec does not say so, so its peers never send them; they are refused here as unknown
//! operations, like `A+`/`A-` (gateways only).
//!
//! # Differences from nats-server
//!
//! As on leafnode links the decoder is stricter where nats-server ignores garbage (weights
//! must be decimal `u32`s, `PING`, `PONG` and `+OK` take no arguments, a non-empty `HMSG`
//! header block must start with `NATS/1.0`), and it enforces [`Limits`]: use a generous
//! `max_control_line` (queue lists and INFO can be long) and a `max_payload` at least as large
//! as the cluster's.

use bytes::BytesMut;

use super::leaf::{
    msg_args_of, msg_body, parse_weight, write_fields, write_head_with, write_msg_with, MsgVerb,
    QueueNames,
};
use super::parse::{
    fast_fields, find_line, hdr_total, name_end, no_args, parse_usize, split_fields, text_arg,
    Fields,
};
use super::{Limits, ParseError};

/// One operation on a route (either direction), borrowing from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp<'a> {
    /// `INFO <json>`: the raw JSON text (surrounding blanks removed).
    Info(&'a [u8]),
    /// `CONNECT <json>`: the raw JSON text (surrounding blanks removed).
    Connect(&'a [u8]),
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `-ERR <text>`: the text after `-ERR `, quotes included.
    Err(&'a [u8]),
    /// `+OK`; tolerated.
    Ok,
    /// `RS+ <account> <subject> [<queue> <weight>]`: the sender has interest in `subject`.
    Sub {
        /// The account the interest lives in.
        account: &'a [u8],
        /// Subject (possibly with wildcards), not validated here.
        subject: &'a [u8],
        /// Queue group, for queue interest.
        queue: Option<&'a [u8]>,
        /// Members of the queue group on the sending side; set exactly when `queue` is.
        weight: Option<u32>,
    },
    /// `RS- <account> <subject> [<queue>]`: the sender lost its interest.
    Unsub {
        /// The account, as in the `RS+`.
        account: &'a [u8],
        /// Subject, as in the `RS+`.
        subject: &'a [u8],
        /// Queue group, as in the `RS+`.
        queue: Option<&'a [u8]>,
    },
    /// `RMSG` (no headers) or `HMSG` (headers): a message crossing the route.
    Msg {
        /// The account it was published in.
        account: &'a [u8],
        /// Subject the message was published to.
        subject: &'a [u8],
        /// Optional reply subject.
        reply: Option<&'a [u8]>,
        /// Queue groups on the receiving side this copy is for (empty: plain subscribers only).
        queues: QueueNames<'a>,
        /// The header block (`HMSG`), `None` for `RMSG`.
        headers: Option<&'a [u8]>,
        /// The payload after the header block, without the trailing `\r\n`.
        payload: &'a [u8],
    },
}

impl RouteOp<'_> {
    /// The canonical (upper case) name of the operation, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            RouteOp::Info(_) => "INFO",
            RouteOp::Connect(_) => "CONNECT",
            RouteOp::Ping => "PING",
            RouteOp::Pong => "PONG",
            RouteOp::Err(_) => "-ERR",
            RouteOp::Ok => "+OK",
            RouteOp::Sub { .. } => "RS+",
            RouteOp::Unsub { .. } => "RS-",
            RouteOp::Msg { headers: None, .. } => "RMSG",
            RouteOp::Msg { .. } => "HMSG",
        }
    }
}

/// The operations of a route, as recognised from the op name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Info,
    Connect,
    Ping,
    Pong,
    Err,
    Ok,
    Sub,
    Unsub,
    RMsg,
    HMsg,
}

/// The parse result type: `None` means more bytes are needed.
type Parsed<'a> = Result<Option<(RouteOp<'a>, usize)>, ParseError>;

/// Parses one route op from the start of `buf`.
///
/// Same contract as [`parse_leaf_op`](super::parse_leaf_op): `Ok(None)` while `buf` holds only
/// a prefix of a valid operation, `Ok(Some((op, consumed)))` once one complete operation
/// occupies `buf[..consumed]`, and an error as soon as the buffered bytes prove one, the same
/// whatever way the stream was split. [`Limits::max_payload`] applies to the whole body of an
/// `RMSG`/`HMSG` (headers included).
///
/// Never panics and never allocates.
pub fn parse_route_op<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    // Fast path: plain messages written the canonical way, the bulk of a route's traffic.
    if buf.starts_with(b"RMSG ") {
        if let Some(parsed) = parse_rmsg_fast(buf, limits) {
            return parsed;
        }
    } else if buf.starts_with(b"HMSG ") {
        if let Some(parsed) = parse_hmsg_fast(buf, limits) {
            return parsed;
        }
    }
    match op_name(buf)? {
        Some((kind, name_len)) => parse_after_name(buf, kind, name_len, limits),
        None => Ok(None),
    }
}

/// Fast path for `RMSG <account> <subject> [reply] <size>\r\n` with single spaces. Returns
/// `None` when the general path must decide, so it never changes an outcome.
#[inline]
fn parse_rmsg_fast<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let (fields, n, line_end) = fast_fields::<4>(buf, 5, limits)?;
    let (account, subject, reply, size) = match (n, fields) {
        (3, [account, subject, size, _]) => (account, subject, None, size),
        (4, [account, subject, reply, size]) => (account, subject, Some(reply), size),
        _ => return None,
    };
    let args = super::leaf::MsgArgs {
        subject,
        reply,
        queues: QueueNames::default(),
        hdr: None,
        total: parse_usize(size)?,
    };
    Some(finish_msg(buf, line_end, account, args, limits))
}

/// Fast path for `HMSG <account> <subject> [reply] <hdr> <total>\r\n` with single spaces.
#[inline]
fn parse_hmsg_fast<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let (fields, n, line_end) = fast_fields::<5>(buf, 5, limits)?;
    let (account, subject, reply, hdr, total) = match (n, fields) {
        (4, [account, subject, hdr, total, _]) => (account, subject, None, hdr, total),
        (5, [account, subject, reply, hdr, total]) => (account, subject, Some(reply), hdr, total),
        _ => return None,
    };
    let (hdr, total) = hdr_total(hdr, total)?;
    let args = super::leaf::MsgArgs {
        subject,
        reply,
        queues: QueueNames::default(),
        hdr: Some(hdr),
        total,
    };
    Some(finish_msg(buf, line_end, account, args, limits))
}

/// Recognises the op name at the start of `buf`, case-insensitively.
fn op_name(buf: &[u8]) -> Result<Option<(Kind, usize)>, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (kind, name): (Kind, &[u8]) = match first {
        b'+' => (Kind::Ok, b"+ok"),
        b'-' => (Kind::Err, b"-err"),
        _ => match first | 0x20 {
            b'r' => match buf.get(1).map(|b| b | 0x20) {
                None => return Ok(None),
                Some(b'm') => (Kind::RMsg, b"rmsg"),
                Some(b's') => match buf.get(2) {
                    None => return Ok(None),
                    Some(b'+') => (Kind::Sub, b"rs+"),
                    Some(b'-') => (Kind::Unsub, b"rs-"),
                    Some(_) => return Err(ParseError::UnknownOp),
                },
                Some(_) => return Err(ParseError::UnknownOp),
            },
            b'h' => (Kind::HMsg, b"hmsg"),
            b'p' => match buf.get(1).map(|b| b | 0x20) {
                None => return Ok(None),
                Some(b'i') => (Kind::Ping, b"ping"),
                Some(b'o') => (Kind::Pong, b"pong"),
                Some(_) => return Err(ParseError::UnknownOp),
            },
            b'i' => (Kind::Info, b"info"),
            b'c' => (Kind::Connect, b"connect"),
            _ => return Err(ParseError::UnknownOp),
        },
    };
    Ok(name_end(buf, name)?.map(|len| (kind, len)))
}

/// Parses the rest of an op once its name (`buf[..name_len]`) has been recognised.
fn parse_after_name<'a>(buf: &'a [u8], kind: Kind, name_len: usize, limits: &Limits) -> Parsed<'a> {
    let Some((content_end, line_end)) = find_line(buf, name_len, limits.max_control_line)? else {
        return Ok(None);
    };
    let args = buf.get(name_len..content_end).unwrap_or(&[]);
    let op = match kind {
        Kind::RMsg | Kind::HMsg => {
            let headers = kind == Kind::HMsg;
            let name = if headers { "HMSG" } else { "RMSG" };
            let mut fields = Fields::new(args);
            let account = fields.next().ok_or(ParseError::BadArgs { op: name })?;
            let args = msg_args_of(fields.remainder(), headers, name)?;
            return finish_msg(buf, line_end, account, args, limits);
        }
        Kind::Info => RouteOp::Info(text_arg(args, "INFO")?),
        Kind::Connect => RouteOp::Connect(text_arg(args, "CONNECT")?),
        Kind::Err => RouteOp::Err(text_arg(args, "-ERR")?),
        Kind::Ping => no_args(args, "PING").map(|()| RouteOp::Ping)?,
        Kind::Pong => no_args(args, "PONG").map(|()| RouteOp::Pong)?,
        Kind::Ok => no_args(args, "+OK").map(|()| RouteOp::Ok)?,
        Kind::Sub => {
            let bad = ParseError::BadArgs { op: "RS+" };
            match split_fields::<4>(args).ok_or(bad)? {
                ([account, subject, _, _], 2) => RouteOp::Sub {
                    account,
                    subject,
                    queue: None,
                    weight: None,
                },
                ([account, subject, queue, weight], 4) => RouteOp::Sub {
                    account,
                    subject,
                    queue: Some(queue),
                    weight: Some(parse_weight(weight).ok_or(bad)?),
                },
                _ => return Err(bad),
            }
        }
        Kind::Unsub => {
            let bad = ParseError::BadArgs { op: "RS-" };
            match split_fields::<3>(args).ok_or(bad)? {
                ([account, subject, _], 2) => RouteOp::Unsub {
                    account,
                    subject,
                    queue: None,
                },
                ([account, subject, queue], 3) => RouteOp::Unsub {
                    account,
                    subject,
                    queue: Some(queue),
                },
                _ => return Err(bad),
            }
        }
    };
    Ok(Some((op, line_end)))
}

/// Completes an `RMSG`/`HMSG` of `account` whose control line ends at `line_end`.
#[inline]
fn finish_msg<'a>(
    buf: &'a [u8],
    line_end: usize,
    account: &'a [u8],
    args: super::leaf::MsgArgs<'a>,
    limits: &Limits,
) -> Parsed<'a> {
    Ok(msg_body(buf, line_end, args, limits)?.map(|(m, consumed)| {
        let op = RouteOp::Msg {
            account,
            subject: m.subject,
            reply: m.reply,
            queues: m.queues,
            headers: m.headers,
            payload: m.payload,
        };
        (op, consumed)
    }))
}

/// Writes `RS+ <account> <subject>\r\n`, or `RS+ <account> <subject> <queue> <weight>\r\n` for
/// queue interest (`weight` = members of the group on this side).
pub fn write_rs_plus(
    out: &mut BytesMut,
    account: &[u8],
    subject: &[u8],
    queue_and_weight: Option<(&[u8], u32)>,
) {
    let mut digits = itoa::Buffer::new();
    let (queue, weight) = match queue_and_weight {
        Some((queue, weight)) => (Some(queue), Some(digits.format(weight).as_bytes())),
        None => (None, None),
    };
    write_fields(
        out,
        &[Some(b"RS+"), Some(account), Some(subject), queue, weight],
    );
}

/// Writes `RS- <account> <subject> [<queue>]\r\n`.
pub fn write_rs_minus(out: &mut BytesMut, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
    write_fields(out, &[Some(b"RS-"), Some(account), Some(subject), queue]);
}

/// The verbs of a route message of `account`.
fn route_verb(account: &[u8]) -> MsgVerb<'_> {
    MsgVerb {
        plain: b"RMSG",
        account: Some(account),
    }
}

/// Writes a complete route message: `RMSG` when `headers` is `None`, `HMSG` otherwise, then
/// the header block, the payload and `\r\n`. With queue names the control line carries the
/// `+ <reply>` or `|` marker.
pub fn write_rmsg(
    out: &mut BytesMut,
    account: &[u8],
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: &[&[u8]],
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    write_msg_with(
        out,
        route_verb(account),
        subject,
        reply,
        queues.iter().copied(),
        headers,
        payload,
    );
}

/// Writes only the control line of a route message (`RMSG`, or `HMSG` when `hdr_len` is set);
/// the caller appends the `total_len` body bytes and `\r\n` (room for them is reserved).
pub fn write_rmsg_head(
    out: &mut BytesMut,
    account: &[u8],
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: &[&[u8]],
    hdr_len: Option<usize>,
    total_len: usize,
) {
    write_head_with(
        out,
        route_verb(account),
        subject,
        reply,
        queues.iter().copied(),
        hdr_len,
        total_len,
    );
}

/// Writes any route operation in its canonical form (upper case names, single spaces,
/// `\r\n`); [`parse_route_op`] decodes the result back to an equal op.
///
/// A `RouteOp::Sub` with a queue but no weight is written with weight 1; a weight without a
/// queue is ignored.
pub fn write_route_op(out: &mut BytesMut, op: &RouteOp<'_>) {
    match *op {
        RouteOp::Info(json) => write_fields(out, &[Some(b"INFO"), Some(json)]),
        RouteOp::Connect(json) => write_fields(out, &[Some(b"CONNECT"), Some(json)]),
        RouteOp::Ping => out.extend_from_slice(super::PING),
        RouteOp::Pong => out.extend_from_slice(super::PONG),
        RouteOp::Err(text) => write_fields(out, &[Some(b"-ERR"), Some(text)]),
        RouteOp::Ok => out.extend_from_slice(super::OK),
        RouteOp::Sub {
            account,
            subject,
            queue,
            weight,
        } => write_rs_plus(
            out,
            account,
            subject,
            queue.map(|q| (q, weight.unwrap_or(1))),
        ),
        RouteOp::Unsub {
            account,
            subject,
            queue,
        } => write_rs_minus(out, account, subject, queue),
        RouteOp::Msg {
            account,
            subject,
            reply,
            queues,
            headers,
            payload,
        } => write_msg_with(
            out,
            route_verb(account),
            subject,
            reply,
            queues.iter(),
            headers,
            payload,
        ),
    }
}

#[cfg(test)]
mod tests;
