//! The leafnode protocol between two servers, both directions, without I/O.
//!
//! A leafnode link carries the same kind of traffic as a client connection, but between
//! servers: interest (`LS+`/`LS-`) instead of `SUB`/`UNSUB`, and messages (`LMSG`/`HMSG`)
//! instead of `PUB`/`HPUB`. The soliciting side (a leaf, `leafd`) and the accepting side (a hub,
//! `hubd` or nats-server) speak the same grammar, so one decoder, [`parse_leaf_op`], and one set
//! of writers serve both. Decoding follows the client codec ([`parse_client_op`]): a pure
//! function of the buffered bytes, zero copy, no allocation, never panics, and the outcome does
//! not depend on how the stream was split into reads (`tests/proto_leaf_split.rs`).
//!
//! # Grammar
//!
//! The protocol is not documented; this is what nats-server 2.9 (v2.9.10) sends and accepts,
//! read from its source:
//!
//! * `server/parser.go`, `(*client).parse`: op recognition (`OP_L`/`OP_LS` route `LS+`/`LS-`
//!   to the `SUB`/`UNSUB` argument states and `LMSG` to `MSG_ARG`; `HMSG_ARG`, `INFO_ARG`,
//!   `MINUS_ERR_ARG`, `OP_PLUS_OK`, `OP_PING`/`OP_PONG`), and `overMaxControlLineLimit`;
//! * `server/leafnode.go`: `writeLeafSub` and `keyFromSub` (the `LS+`/`LS-` writer),
//!   `processLeafSub`, `processLeafUnsub`, `processLeafMsgArgs`, `processLeafHeaderMsgArgs`,
//!   `sendLeafConnect` and `leafConnectInfo` (CONNECT), `generateLeafNodeInfoJSON` and
//!   `sendPermsAndAccountInfo` (INFO), `handleLeafNodeLoop` (the loop `-ERR`);
//! * `server/client.go`: `msgHeaderForRouteOrLeaf` (the `LMSG`/`HMSG` writer), `sendErr`
//!   (`-ERR '<text>'`), `processErr`;
//! * `server/util.go`: `parseSize`.
//!
//! ```text
//! INFO <json>                                  the hub's server info; a second INFO with
//!                                              "connect_info":true answers the CONNECT
//!                                              (that one is written "INFO <json> \r\n")
//! CONNECT <json>                               the leaf's credentials and options; no "lang"
//!                                              field (that marks a client on the wrong port)
//! PING / PONG                                  keepalive, both directions
//! -ERR '<text>'                                e.g. -ERR 'Loop detected for leafnode
//!                                              account="$G". Delaying attempt to reconnect for 30s'
//! +OK                                          never sent on a leafnode link; tolerated
//! LS+ <subject>                                plain interest
//! LS+ <subject> <queue> <weight>               queue interest; weight = number of members of
//!                                              the group on the sending side (absolute, re-sent
//!                                              whenever it changes)
//! LS- <subject> [<queue>]                      interest gone
//! LMSG <subject> [<reply>] <size>              message without headers
//! LMSG <subject> + <reply> <q1> .. <qn> <size> message for queue subscribers, with a reply
//! LMSG <subject> | <q1> .. <qn> <size>         message for queue subscribers, no reply
//! HMSG <subject> [<reply>] <hdr> <total>       with headers (hdr = header block length,
//! HMSG <subject> + <reply> <q1> .. <hdr> <total>   total = headers + payload)
//! HMSG <subject> | <q1> .. <hdr> <total>
//! ```
//!
//! Every line ends in `\r\n` (a bare `\n` is accepted), fields are separated by runs of spaces
//! or tabs, op names are case-insensitive. `LMSG`/`HMSG` are followed by `<size>` (or
//! `<total>`) bytes and `\r\n`. There is no account field: a leafnode connection is bound to
//! one account. The queue names of a message are the groups on the receiving side that the
//! copy is meant for. The `+`/`|` marker is only written when queue names follow; a reader
//! tells the forms apart by the field count, as nats-server does: with two fields between the
//! subject and the size(s), or more, the first must be `+` (the next field is the reply) or
//! `|`; with exactly one it is the reply. `LMSG s + r 5` (marker, no queue) is accepted as a
//! reply without queues. A sender uses `HMSG` only if the peer's CONNECT (or INFO) announced
//! `"headers":true`; otherwise nats-server strips the headers and sends `LMSG`.
//!
//! # Differences from nats-server
//!
//! The decoder is stricter where nats-server ignores garbage: `LS+` weights must be decimal
//! `u32`s (nats-server stores `-1`), `PING`, `PONG` and `+OK` take no arguments, op names must
//! be followed by a blank or a line end, and a non-empty `HMSG` header block must start with
//! `NATS/1.0`. It also enforces [`Limits`], which nats-server does not do on leafnode links
//! (`overMaxControlLineLimit` checks client connections only, and no payload limit applies to
//! `LMSG`): a long queue list or a big `INFO` can exceed a client-sized control line, so use a
//! generous `max_control_line` (64 KiB, say) and a `max_payload` at least as large as the
//! peer's `max_payload` for a leafnode connection.
//!
//! [`parse_client_op`]: super::parse_client_op

use bytes::BytesMut;

use super::parse::{
    fast_fields, find_line, hdr_total, name_end, no_args, parse_u64, parse_usize, payload,
    split_fields, split_headers, text_arg, trim_blanks, Fields,
};
use super::{Limits, ParseError};

/// One operation on a leafnode connection (either direction), borrowing from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafOp<'a> {
    /// `INFO <json>`: the raw JSON text (surrounding blanks removed).
    Info(&'a [u8]),
    /// `CONNECT <json>`: the raw JSON text (surrounding blanks removed).
    Connect(&'a [u8]),
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `-ERR <text>`: the text after `-ERR `, quotes included (e.g. `'Loop detected ...'`).
    Err(&'a [u8]),
    /// `+OK`, which nats-server never sends on a leafnode link; tolerated.
    Ok,
    /// `LS+ <subject> [<queue> <weight>]`: the sender has interest in `subject`.
    Sub {
        /// Subject (possibly with wildcards), not validated here.
        subject: &'a [u8],
        /// Queue group, for queue interest.
        queue: Option<&'a [u8]>,
        /// Number of members of the queue group on the sending side; the parser sets it
        /// exactly when `queue` is set.
        weight: Option<u32>,
    },
    /// `LS- <subject> [<queue>]`: the sender lost its interest.
    Unsub {
        /// Subject, as in the `LS+`.
        subject: &'a [u8],
        /// Queue group, as in the `LS+`.
        queue: Option<&'a [u8]>,
    },
    /// `LMSG` (no headers) or `HMSG` (headers): a message crossing the link.
    Msg {
        /// Subject the message was published to.
        subject: &'a [u8],
        /// Optional reply subject.
        reply: Option<&'a [u8]>,
        /// Queue groups on the receiving side this copy is for (empty for plain delivery).
        queues: QueueNames<'a>,
        /// The header block (`HMSG`), `None` for `LMSG`.
        headers: Option<&'a [u8]>,
        /// The payload after the header block, without the trailing `\r\n`.
        payload: &'a [u8],
    },
}

impl LeafOp<'_> {
    /// The canonical (upper case) name of the operation, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            LeafOp::Info(_) => "INFO",
            LeafOp::Connect(_) => "CONNECT",
            LeafOp::Ping => "PING",
            LeafOp::Pong => "PONG",
            LeafOp::Err(_) => "-ERR",
            LeafOp::Ok => "+OK",
            LeafOp::Sub { .. } => "LS+",
            LeafOp::Unsub { .. } => "LS-",
            LeafOp::Msg { headers: None, .. } => "LMSG",
            LeafOp::Msg { .. } => "HMSG",
        }
    }
}

/// The queue names of a queue-routed message: a view of the blank-separated names as they
/// appear on the control line, iterated without allocation.
///
/// Two values are equal when they hold the same names in the same order, whatever blanks
/// separate them.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueNames<'a> {
    /// The names separated by runs of blanks, with no blanks at either end.
    list: &'a [u8],
}

impl<'a> QueueNames<'a> {
    /// A view of `list`, queue names separated by spaces or tabs (`b""` for none).
    pub fn new(list: &'a [u8]) -> Self {
        QueueNames {
            list: trim_blanks(list),
        }
    }

    /// `true` if the message carries no queue names (plain delivery).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The queue names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + Clone {
        Fields::new(self.list)
    }

    /// The names as they appeared on the wire, separated by blanks (empty for none).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.list
    }
}

impl PartialEq for QueueNames<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for QueueNames<'_> {}

/// The operations of a leafnode link, as recognised from the op name.
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
    LMsg,
    HMsg,
}

/// The parse result type: `None` means more bytes are needed.
type Parsed<'a> = Result<Option<(LeafOp<'a>, usize)>, ParseError>;

/// Parses one leafnode op from the start of `buf`.
///
/// Same contract as [`parse_client_op`](super::parse_client_op): `Ok(None)` while `buf` holds
/// only a prefix of a valid operation, `Ok(Some((op, consumed)))` once one complete operation
/// (control line, and for `LMSG`/`HMSG` the body and its `\r\n`) occupies `buf[..consumed]`,
/// and an error as soon as the buffered bytes prove one, the same whatever way the stream was
/// split. [`Limits::max_payload`] applies to the whole body of an `LMSG`/`HMSG` (headers
/// included); see the module documentation for suitable limits.
///
/// Never panics and never allocates.
pub fn parse_leaf_op<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    // Fast path: plain (non-queue) messages, the bulk of a link's traffic, written the
    // canonical way. Anything else goes through the general path, which decides.
    if buf.starts_with(b"LMSG ") {
        if let Some(parsed) = parse_lmsg_fast(buf, limits) {
            return parsed;
        }
    } else if buf.starts_with(b"HMSG ") {
        if let Some(parsed) = parse_hmsg_fast(buf, limits) {
            return parsed;
        }
    }
    parse_general(buf, limits)
}

/// The general path of [`parse_leaf_op`].
fn parse_general<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    match op_name(buf)? {
        Some((kind, name_len)) => parse_after_name(buf, kind, name_len, limits),
        None => Ok(None),
    }
}

/// Fast path for `LMSG <subject> [reply] <size>\r\n` with single spaces; `buf` starts with
/// `LMSG `. Returns `None` when the general path must decide, so it never changes an outcome.
#[inline]
fn parse_lmsg_fast<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let (fields, n, line_end) = fast_fields::<3>(buf, 5, limits)?;
    let (subject, reply, size) = match (n, fields) {
        (2, [subject, size, _]) => (subject, None, size),
        (3, [subject, reply, size]) => (subject, Some(reply), size),
        _ => return None,
    };
    let args = MsgArgs {
        subject,
        reply,
        queues: QueueNames::default(),
        hdr: None,
        total: parse_usize(size)?,
    };
    Some(finish_msg(buf, line_end, args, limits))
}

/// Fast path for `HMSG <subject> [reply] <hdr> <total>\r\n` with single spaces; `buf` starts
/// with `HMSG `. Same contract as [`parse_lmsg_fast`].
#[inline]
fn parse_hmsg_fast<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let (fields, n, line_end) = fast_fields::<4>(buf, 5, limits)?;
    let (subject, reply, hdr, total) = match (n, fields) {
        (3, [subject, hdr, total, _]) => (subject, None, hdr, total),
        (4, [subject, reply, hdr, total]) => (subject, Some(reply), hdr, total),
        _ => return None,
    };
    let (hdr, total) = hdr_total(hdr, total)?;
    let args = MsgArgs {
        subject,
        reply,
        queues: QueueNames::default(),
        hdr: Some(hdr),
        total,
    };
    Some(finish_msg(buf, line_end, args, limits))
}

/// Recognises the op name at the start of `buf`, case-insensitively; same contract as the
/// client parser's.
fn op_name(buf: &[u8]) -> Result<Option<(Kind, usize)>, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Letters are folded with `| 0x20` (see `name_end`); `+` and `-` must match exactly.
    let (kind, name): (Kind, &[u8]) = match first {
        b'+' => (Kind::Ok, b"+ok"),
        b'-' => (Kind::Err, b"-err"),
        _ => match first | 0x20 {
            b'l' => match buf.get(1).map(|b| b | 0x20) {
                None => return Ok(None),
                Some(b'm') => (Kind::LMsg, b"lmsg"),
                Some(b's') => match buf.get(2) {
                    None => return Ok(None),
                    Some(b'+') => (Kind::Sub, b"ls+"),
                    Some(b'-') => (Kind::Unsub, b"ls-"),
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
        Kind::LMsg => return finish_msg(buf, line_end, msg_args(args, false)?, limits),
        Kind::HMsg => return finish_msg(buf, line_end, msg_args(args, true)?, limits),
        Kind::Info => LeafOp::Info(text_arg(args, "INFO")?),
        Kind::Connect => LeafOp::Connect(text_arg(args, "CONNECT")?),
        Kind::Err => LeafOp::Err(text_arg(args, "-ERR")?),
        Kind::Ping => no_args(args, "PING").map(|()| LeafOp::Ping)?,
        Kind::Pong => no_args(args, "PONG").map(|()| LeafOp::Pong)?,
        Kind::Ok => no_args(args, "+OK").map(|()| LeafOp::Ok)?,
        Kind::Sub => {
            let bad = ParseError::BadArgs { op: "LS+" };
            match split_fields::<3>(args).ok_or(bad)? {
                ([subject, _, _], 1) => LeafOp::Sub {
                    subject,
                    queue: None,
                    weight: None,
                },
                ([subject, queue, weight], 3) => LeafOp::Sub {
                    subject,
                    queue: Some(queue),
                    weight: Some(parse_weight(weight).ok_or(bad)?),
                },
                _ => return Err(bad),
            }
        }
        Kind::Unsub => {
            let bad = ParseError::BadArgs { op: "LS-" };
            match split_fields::<2>(args).ok_or(bad)? {
                ([subject, _], 1) => LeafOp::Unsub {
                    subject,
                    queue: None,
                },
                ([subject, queue], 2) => LeafOp::Unsub {
                    subject,
                    queue: Some(queue),
                },
                _ => return Err(bad),
            }
        }
    };
    Ok(Some((op, line_end)))
}

/// Parses an `LS+` (or route `RS+`) queue weight: a decimal `u32`.
pub(super) fn parse_weight(digits: &[u8]) -> Option<u32> {
    u32::try_from(parse_u64(digits)?).ok()
}

/// The arguments of an `LMSG` or `HMSG` control line (or, after its account, of a route's
/// `RMSG`/`HMSG`: see [`super::route`]).
pub(super) struct MsgArgs<'a> {
    /// Subject of the message.
    pub(super) subject: &'a [u8],
    /// Optional reply subject.
    pub(super) reply: Option<&'a [u8]>,
    /// Queue names (empty for plain delivery).
    pub(super) queues: QueueNames<'a>,
    /// Size of the header block for `HMSG` (at most `total`), `None` for `LMSG`.
    pub(super) hdr: Option<usize>,
    /// Number of bytes after the control line, before the final `\r\n`.
    pub(super) total: usize,
}

/// Splits `LMSG` (`headers == false`) or `HMSG` arguments; see the module documentation for
/// the grammar.
fn msg_args(args: &[u8], headers: bool) -> Result<MsgArgs<'_>, ParseError> {
    msg_args_of(args, headers, if headers { "HMSG" } else { "LMSG" })
}

/// [`msg_args`], naming `op` in [`ParseError::BadArgs`] (a route's `RMSG` has the same
/// arguments after its account).
pub(super) fn msg_args_of<'a>(
    args: &'a [u8],
    headers: bool,
    op: &'static str,
) -> Result<MsgArgs<'a>, ParseError> {
    let bad = ParseError::BadArgs { op };
    let mut fields = Fields::new(args);
    let subject = fields.next().ok_or(bad)?;
    let total = fields.next_back().ok_or(bad)?;
    let (hdr, total) = if headers {
        let hdr = fields.next_back().ok_or(bad)?;
        let (hdr, total) = hdr_total(hdr, total).ok_or(bad)?;
        (Some(hdr), total)
    } else {
        (None, parse_usize(total).ok_or(bad)?)
    };
    // What is left lies between the subject and the size(s): nothing, a reply, or a marker
    // followed by an optional reply and the queue names.
    let (reply, queues) = match fields.next() {
        None => (None, QueueNames::default()),
        Some(first) if fields.remainder().is_empty() => (Some(first), QueueNames::default()),
        Some(b"+") => {
            let reply = fields.next().ok_or(bad)?;
            (Some(reply), QueueNames::new(fields.remainder()))
        }
        Some(b"|") => (None, QueueNames::new(fields.remainder())),
        Some(_) => return Err(bad),
    };
    Ok(MsgArgs {
        subject,
        reply,
        queues,
        hdr,
        total,
    })
}

/// Completes an `LMSG`/`HMSG` whose control line ends at `line_end`: waits for the body and its
/// `\r\n`, then splits off the header block of an `HMSG`.
#[inline]
fn finish_msg<'a>(
    buf: &'a [u8],
    line_end: usize,
    args: MsgArgs<'a>,
    limits: &Limits,
) -> Parsed<'a> {
    Ok(msg_body(buf, line_end, args, limits)?.map(|(m, consumed)| {
        let op = LeafOp::Msg {
            subject: m.subject,
            reply: m.reply,
            queues: m.queues,
            headers: m.headers,
            payload: m.payload,
        };
        (op, consumed)
    }))
}

/// A message framed from its control line and body, before it becomes a leafnode or route op.
pub(super) struct MsgBody<'a> {
    /// Subject of the message.
    pub(super) subject: &'a [u8],
    /// Optional reply subject.
    pub(super) reply: Option<&'a [u8]>,
    /// Queue names (empty for plain delivery).
    pub(super) queues: QueueNames<'a>,
    /// The header block (`HMSG`), `None` without.
    pub(super) headers: Option<&'a [u8]>,
    /// The payload after the header block.
    pub(super) payload: &'a [u8],
}

/// Waits for the body of a message whose control line ends at `line_end`, and splits off its
/// header block: the message and the bytes it occupies, or `None` while incomplete.
#[inline]
pub(super) fn msg_body<'a>(
    buf: &'a [u8],
    line_end: usize,
    args: MsgArgs<'a>,
    limits: &Limits,
) -> Result<Option<(MsgBody<'a>, usize)>, ParseError> {
    let Some(all) = payload(buf, line_end, args.total, limits)? else {
        return Ok(None);
    };
    let consumed = line_end + args.total + 2;
    let (headers, payload) = match args.hdr {
        None => (None, all),
        Some(hdr) => {
            let (headers, payload) = split_headers(all, hdr, "HMSG")?;
            (Some(headers), payload)
        }
    };
    let body = MsgBody {
        subject: args.subject,
        reply: args.reply,
        queues: args.queues,
        headers,
        payload,
    };
    Ok(Some((body, consumed)))
}

/// Line terminator.
pub(super) const CRLF: &[u8] = b"\r\n";

/// Writes `LS+ <subject>\r\n`, or `LS+ <subject> <queue> <weight>\r\n` for queue interest
/// (`weight` = members of the group on this side).
pub fn write_ls_plus(out: &mut BytesMut, subject: &[u8], queue_and_weight: Option<(&[u8], u32)>) {
    let mut digits = itoa::Buffer::new();
    let (queue, weight) = match queue_and_weight {
        Some((queue, weight)) => (Some(queue), Some(digits.format(weight).as_bytes())),
        None => (None, None),
    };
    write_fields(out, &[Some(b"LS+"), Some(subject), queue, weight]);
}

/// Writes `LS- <subject> [<queue>]\r\n`.
pub fn write_ls_minus(out: &mut BytesMut, subject: &[u8], queue: Option<&[u8]>) {
    write_fields(out, &[Some(b"LS-"), Some(subject), queue]);
}

/// Appends the present `fields` separated by single spaces, then `\r\n`.
pub(super) fn write_fields(out: &mut BytesMut, fields: &[Option<&[u8]>]) {
    let len: usize = fields.iter().flatten().map(|f| f.len() + 1).sum::<usize>() + 1;
    out.reserve(len);
    for (i, field) in fields.iter().flatten().enumerate() {
        if i > 0 {
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(field);
    }
    out.extend_from_slice(CRLF);
}

/// Writes a complete message: `LMSG` when `headers` is `None`, `HMSG` otherwise, then the
/// header block, the payload and `\r\n`.
///
/// With queue names the control line carries the `+ <reply>` or `|` marker; without, the plain
/// `[reply]` form.
pub fn write_lmsg(
    out: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: &[&[u8]],
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    write_msg(
        out,
        subject,
        reply,
        queues.iter().copied(),
        headers,
        payload,
    );
}

/// Writes only the control line of a message: `LMSG <subject> ... <total_len>\r\n` when
/// `hdr_len` is `None`, `HMSG <subject> ... <hdr_len> <total_len>\r\n` otherwise.
///
/// The caller appends the `total_len` body bytes (header block, then payload) and `\r\n`, for
/// instance from a shared buffer; room for them is reserved.
pub fn write_lmsg_head(
    out: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: &[&[u8]],
    hdr_len: Option<usize>,
    total_len: usize,
) {
    write_head(
        out,
        subject,
        reply,
        queues.iter().copied(),
        hdr_len,
        total_len,
    );
}

/// [`write_lmsg`] over any list of queue names.
fn write_msg<'q>(
    out: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    write_msg_with(out, LEAF_VERB, subject, reply, queues, headers, payload);
}

/// The message verbs of a leafnode link: `LMSG` without headers, `HMSG` with.
const LEAF_VERB: MsgVerb<'static> = MsgVerb {
    plain: b"LMSG",
    account: None,
};

/// How a message's control line starts: its verb without headers (`LMSG`, `RMSG`; `HMSG` is
/// written when there are headers) and, on a route, the account that follows the verb.
#[derive(Debug, Clone, Copy)]
pub(super) struct MsgVerb<'a> {
    /// The verb of a message without headers.
    pub(super) plain: &'static [u8],
    /// The account field after the verb (routes only).
    pub(super) account: Option<&'a [u8]>,
}

/// [`write_msg`] with any verb: the control line, the header block, the payload and `\r\n`.
pub(super) fn write_msg_with<'q>(
    out: &mut BytesMut,
    verb: MsgVerb<'_>,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let hdr_len = headers.map(<[u8]>::len);
    let total = hdr_len.unwrap_or(0) + payload.len();
    write_head_with(out, verb, subject, reply, queues, hdr_len, total);
    if let Some(headers) = headers {
        out.extend_from_slice(headers);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// [`write_lmsg_head`] over any list of queue names.
fn write_head<'q>(
    out: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    hdr_len: Option<usize>,
    total_len: usize,
) {
    write_head_with(out, LEAF_VERB, subject, reply, queues, hdr_len, total_len);
}

/// [`write_head`] with any verb (and, on a route, the account after it).
pub(super) fn write_head_with<'q>(
    out: &mut BytesMut,
    verb: MsgVerb<'_>,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    hdr_len: Option<usize>,
    total_len: usize,
) {
    let mut hdr_digits = itoa::Buffer::new();
    let mut total_digits = itoa::Buffer::new();
    let hdr = hdr_len.map(|n| hdr_digits.format(n).as_bytes());
    let total = total_digits.format(total_len).as_bytes();
    let queues_len: usize = queues.clone().map(|q| q.len() + 1).sum();
    let marker: Option<&[u8]> = match (queues_len, reply) {
        (0, _) => None,
        (_, Some(_)) => Some(b"+"),
        (_, None) => Some(b"|"),
    };
    out.reserve(
        5 + verb.account.map_or(0, |a| a.len() + 1)
            + subject.len()
            + marker.map_or(0, |m| m.len() + 1)
            + reply.map_or(0, |r| r.len() + 1)
            + queues_len
            + hdr.map_or(0, |h| h.len() + 1)
            + total.len()
            + 1
            + CRLF.len()
            + total_len
            + CRLF.len(),
    );
    out.extend_from_slice(if hdr.is_some() { b"HMSG" } else { verb.plain });
    for field in verb.account.into_iter().chain([subject]) {
        out.extend_from_slice(b" ");
        out.extend_from_slice(field);
    }
    for field in [marker, reply].into_iter().flatten() {
        out.extend_from_slice(b" ");
        out.extend_from_slice(field);
    }
    for queue in queues {
        out.extend_from_slice(b" ");
        out.extend_from_slice(queue);
    }
    for field in [hdr, Some(total)].into_iter().flatten() {
        out.extend_from_slice(b" ");
        out.extend_from_slice(field);
    }
    out.extend_from_slice(CRLF);
}

/// Writes any leafnode operation in its canonical form (upper case names, single spaces,
/// `\r\n`); [`parse_leaf_op`] decodes the result back to an equal op.
///
/// An `LeafOp::Sub` with a queue but no weight is written with weight 1; a weight without a
/// queue is ignored. `-ERR` text is written as given (it carries its own quotes).
pub fn write_leaf_op(out: &mut BytesMut, op: &LeafOp<'_>) {
    match *op {
        LeafOp::Info(json) => write_fields(out, &[Some(b"INFO"), Some(json)]),
        LeafOp::Connect(json) => write_fields(out, &[Some(b"CONNECT"), Some(json)]),
        LeafOp::Ping => out.extend_from_slice(super::PING),
        LeafOp::Pong => out.extend_from_slice(super::PONG),
        LeafOp::Err(text) => write_fields(out, &[Some(b"-ERR"), Some(text)]),
        LeafOp::Ok => out.extend_from_slice(super::OK),
        LeafOp::Sub {
            subject,
            queue,
            weight,
        } => write_ls_plus(out, subject, queue.map(|q| (q, weight.unwrap_or(1)))),
        LeafOp::Unsub { subject, queue } => write_ls_minus(out, subject, queue),
        LeafOp::Msg {
            subject,
            reply,
            queues,
            headers,
            payload,
        } => write_msg(out, subject, reply, queues.iter(), headers, payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    /// Parses `input`, expecting exactly one complete op spanning the whole input, and checks
    /// that every strict prefix asks for more bytes.
    fn one(input: &[u8]) -> LeafOp<'_> {
        for k in 0..input.len() {
            assert_eq!(
                parse_leaf_op(&input[..k], &lim()),
                Ok(None),
                "prefix {k} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        match parse_leaf_op(input, &lim()) {
            Ok(Some((op, n))) => {
                assert_eq!(n, input.len(), "{:?}", String::from_utf8_lossy(input));
                op
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err_with(input: &[u8], limits: &Limits) -> ParseError {
        match parse_leaf_op(input, limits) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> ParseError {
        err_with(input, &lim())
    }

    fn enc(op: &LeafOp<'_>) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_leaf_op(&mut out, op);
        out.to_vec()
    }

    fn msg<'a>(
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        queues: &'a [u8],
        headers: Option<&'a [u8]>,
        payload: &'a [u8],
    ) -> LeafOp<'a> {
        LeafOp::Msg {
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
            LeafOp::Info(b"{\"server_id\":\"N\"}")
        );
        // sendPermsAndAccountInfo writes a blank before the line end.
        assert_eq!(
            one(b"INFO {\"connect_info\":true} \r\n"),
            LeafOp::Info(b"{\"connect_info\":true}")
        );
        assert_eq!(
            one(b"CONNECT {\"name\":\"x\"}\r\n"),
            LeafOp::Connect(b"{\"name\":\"x\"}")
        );
        assert_eq!(one(b"PING\r\n"), LeafOp::Ping);
        assert_eq!(one(b"PONG\r\n"), LeafOp::Pong);
        assert_eq!(one(b"+OK\r\n"), LeafOp::Ok);
        assert_eq!(one(b"+ok \n"), LeafOp::Ok);
        let loop_err = b"-ERR 'Loop detected for leafnode account=\"$G\". Delaying attempt to reconnect for 30s'\r\n";
        assert_eq!(
            one(loop_err),
            LeafOp::Err(b"'Loop detected for leafnode account=\"$G\". Delaying attempt to reconnect for 30s'")
        );
        assert_eq!(one(b"-err\t'x y'\n"), LeafOp::Err(b"'x y'"));
    }

    #[test]
    fn interest_ops() {
        assert_eq!(
            one(b"LS+ foo.>\r\n"),
            LeafOp::Sub {
                subject: b"foo.>",
                queue: None,
                weight: None
            }
        );
        assert_eq!(
            one(b"LS+ foo.* workers 3\r\n"),
            LeafOp::Sub {
                subject: b"foo.*",
                queue: Some(b"workers"),
                weight: Some(3)
            }
        );
        assert_eq!(
            one(b"ls+\tfoo  q\t4294967295\n"),
            LeafOp::Sub {
                subject: b"foo",
                queue: Some(b"q"),
                weight: Some(u32::MAX)
            }
        );
        assert_eq!(
            one(b"LS- foo\r\n"),
            LeafOp::Unsub {
                subject: b"foo",
                queue: None
            }
        );
        assert_eq!(
            one(b"Ls- foo bar\r\n"),
            LeafOp::Unsub {
                subject: b"foo",
                queue: Some(b"bar")
            }
        );
    }

    #[test]
    fn plain_messages() {
        assert_eq!(
            one(b"LMSG foo 2\r\nhi\r\n"),
            msg(b"foo", None, b"", None, b"hi")
        );
        assert_eq!(
            one(b"LMSG foo _INBOX.x 0\r\n\r\n"),
            msg(b"foo", Some(b"_INBOX.x"), b"", None, b"")
        );
        assert_eq!(
            one(b"HMSG foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            msg(b"foo", None, b"", Some(b"NATS/1.0\r\n\r\n"), b"hi")
        );
        assert_eq!(
            one(b"HMSG foo r 12 12\r\nNATS/1.0\r\n\r\n\r\n"),
            msg(b"foo", Some(b"r"), b"", Some(b"NATS/1.0\r\n\r\n"), b"")
        );
        // General path: blanks, lower case, bare newline.
        assert_eq!(
            one(b"lmsg\tfoo  r \t 3 \nabc\r\n"),
            msg(b"foo", Some(b"r"), b"", None, b"abc")
        );
        // An empty header block, as nats-server accepts it.
        assert_eq!(
            one(b"HMSG foo 0 2\r\nhi\r\n"),
            msg(b"foo", None, b"", Some(b""), b"hi")
        );
        // The payload may contain line ends; the size decides.
        assert_eq!(
            one(b"LMSG a 4\r\n\r\n\r\n\r\n"),
            msg(b"a", None, b"", None, b"\r\n\r\n")
        );
    }

    #[test]
    fn queue_messages() {
        let op = one(b"LMSG foo + _INBOX.1 q1 q2 2\r\nhi\r\n");
        assert_eq!(op, msg(b"foo", Some(b"_INBOX.1"), b"q1 q2", None, b"hi"));
        let LeafOp::Msg { queues, .. } = op else {
            panic!("{op:?}")
        };
        assert!(!queues.is_empty());
        assert_eq!(queues.iter().collect::<Vec<_>>(), [&b"q1"[..], b"q2"]);
        assert_eq!(queues.as_bytes(), b"q1 q2");
        assert_eq!(
            one(b"LMSG foo | q1 2\r\nhi\r\n"),
            msg(b"foo", None, b"q1", None, b"hi")
        );
        assert_eq!(
            one(b"HMSG foo + r q1 q2 q3 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            msg(
                b"foo",
                Some(b"r"),
                b"q1 q2 q3",
                Some(b"NATS/1.0\r\n\r\n"),
                b"hi"
            )
        );
        assert_eq!(
            one(b"HMSG foo | q 12 12\r\nNATS/1.0\r\n\r\n\r\n"),
            msg(b"foo", None, b"q", Some(b"NATS/1.0\r\n\r\n"), b"")
        );
        // A marker with a reply and no queue names: accepted like nats-server.
        assert_eq!(
            one(b"LMSG foo + r 1\r\nx\r\n"),
            msg(b"foo", Some(b"r"), b"", None, b"x")
        );
        // With one field between subject and size, it is the reply, even `+` or `|`.
        assert_eq!(
            one(b"LMSG foo | 1\r\nx\r\n"),
            msg(b"foo", Some(b"|"), b"", None, b"x")
        );
        assert_eq!(
            one(b"HMSG foo + 0 1\r\nx\r\n"),
            msg(b"foo", Some(b"+"), b"", Some(b""), b"x")
        );
        // Queue names compare by value, not by spacing.
        assert_eq!(QueueNames::new(b" a\t b "), QueueNames::new(b"a b"));
        assert_ne!(QueueNames::new(b"a b"), QueueNames::new(b"a"));
        assert!(QueueNames::new(b" \t").is_empty());
    }

    #[test]
    fn consumes_only_one_op() {
        let input = b"PING\r\nLMSG a 1\r\nx\r\nLS+ b\r\n";
        let (op, n) = parse_leaf_op(input, &lim()).unwrap().unwrap();
        assert_eq!((op, n), (LeafOp::Ping, 6));
        let (op, m) = parse_leaf_op(&input[n..], &lim()).unwrap().unwrap();
        assert_eq!((op.name(), m), ("LMSG", 13));
        let (op, k) = parse_leaf_op(&input[n + m..], &lim()).unwrap().unwrap();
        assert_eq!(op.name(), "LS+");
        assert_eq!(n + m + k, input.len());
    }

    #[test]
    fn names() {
        let cases: &[(&[u8], &str)] = &[
            (b"info {}\r\n", "INFO"),
            (b"Connect {}\r\n", "CONNECT"),
            (b"ping\r\n", "PING"),
            (b"pOnG\r\n", "PONG"),
            (b"-Err 'x'\r\n", "-ERR"),
            (b"+oK\r\n", "+OK"),
            (b"lS+ a\r\n", "LS+"),
            (b"lS- a\r\n", "LS-"),
            (b"lMsG a 0\r\n\r\n", "LMSG"),
            (b"hmsg a 0 0\r\n\r\n", "HMSG"),
        ];
        for &(input, name) in cases {
            assert_eq!(one(input).name(), name);
        }
    }

    #[test]
    fn unknown_ops() {
        for input in [
            &b"FOO\r\n"[..],
            b"PUB foo 1\r\nx\r\n",
            b"SUB foo 1\r\n",
            b"MSG foo 1 1\r\n",
            b"RMSG $G foo 1\r\n",
            b"RS+ $G foo\r\n",
            b"LS* foo\r\n",
            b"LS\x0b foo\r\n",
            b"L\x0bS+ foo\r\n",
            b"LX",
            b"LMSGX",
            b"LS+X",
            b"LMSG\x0b",
            b"HPUB foo 0 0\r\n",
            b"+\x0f",
            b"\x0bOK\r\n",
            b"-ERROR 'x'\r\n",
            b"-\x0dRR",
            b"PINGX",
            b"INFOX",
            b" PING\r\n",
            b"\r\n",
            b"\xffLMSG",
        ] {
            assert_eq!(err(input), ParseError::UnknownOp, "{input:?}");
        }
        for partial in [
            &b""[..],
            b"L",
            b"LS",
            b"l",
            b"ls",
            b"P",
            b"+",
            b"-",
            b"-E",
            b"H",
        ] {
            assert_eq!(parse_leaf_op(partial, &lim()), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn bad_args() {
        let cases: &[(&[u8], &str)] = &[
            (b"INFO\r\n", "INFO"),
            (b"INFO \t \r\n", "INFO"),
            (b"CONNECT\r\n", "CONNECT"),
            (b"-ERR\r\n", "-ERR"),
            (b"-ERR  \r\n", "-ERR"),
            (b"PING x\r\n", "PING"),
            (b"PONG 1\r\n", "PONG"),
            (b"+OK x\r\n", "+OK"),
            (b"LS+\r\n", "LS+"),
            (b"LS+ \r\n", "LS+"),
            (b"LS+ foo q\r\n", "LS+"),
            (b"LS+ foo q x\r\n", "LS+"),
            (b"LS+ foo q -1\r\n", "LS+"),
            (b"LS+ foo q 4294967296\r\n", "LS+"),
            (b"LS+ foo q 1 x\r\n", "LS+"),
            (b"LS-\r\n", "LS-"),
            (b"LS- a b c\r\n", "LS-"),
            (b"LMSG\r\n", "LMSG"),
            (b"LMSG foo\r\n", "LMSG"),
            (b"LMSG foo x\r\n", "LMSG"),
            (b"LMSG foo r -1\r\n", "LMSG"),
            (b"LMSG foo 99999999999999999999999\r\n", "LMSG"),
            (b"LMSG foo a b 1\r\n", "LMSG"),
            (b"LMSG foo ++ r q 1\r\n", "LMSG"),
            (b"LMSG foo 1\rx\r\n", "LMSG"),
            (b"HMSG\r\n", "HMSG"),
            (b"HMSG foo 5\r\n", "HMSG"),
            (b"HMSG foo 10 5\r\n", "HMSG"),
            (b"HMSG foo x 5\r\n", "HMSG"),
            (b"HMSG foo r x 5\r\n", "HMSG"),
            (b"HMSG foo a b 1 2\r\n", "HMSG"),
            (b"HMSG foo + r q 3 2\r\n", "HMSG"),
        ];
        for &(input, op) in cases {
            assert_eq!(err(input), ParseError::BadArgs { op }, "{input:?}");
        }
        // A lone `+` between subject and size is a reply, so this waits for its payload.
        assert_eq!(parse_leaf_op(b"LMSG foo + 1\r\n", &lim()), Ok(None));
    }

    #[test]
    fn payload_errors() {
        assert_eq!(
            err(b"LMSG foo 2\r\nabc\r\n"),
            ParseError::MissingPayloadTerminator
        );
        assert_eq!(
            err(b"HMSG foo 12 12\r\nNATS/1.0\r\n\r\nXY"),
            ParseError::MissingPayloadTerminator
        );
        assert_eq!(parse_leaf_op(b"LMSG foo 2\r\nab\r", &lim()), Ok(None));
        assert_eq!(err(b"HMSG foo 5 7\r\nABCDEhi\r\n"), ParseError::BadHeaders);
        assert_eq!(err(b"HMSG foo | q 3 3\r\nNAT\r\n"), ParseError::BadHeaders);
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_control_line: 16,
            max_payload: 10,
        };
        assert_eq!(
            err_with(b"LMSG foo 11\r\n", &limits),
            ParseError::MaxPayload
        );
        assert_eq!(
            err_with(b"HMSG foo 5 11\r\n", &limits),
            ParseError::MaxPayload
        );
        assert_eq!(
            err_with(b"LMSG f | q1 q2 11\r\n", &limits),
            ParseError::ControlLineTooLong
        );
        assert_eq!(
            err_with(b"INFO {\"a\":\"bcdefgh\"}", &limits),
            ParseError::ControlLineTooLong
        );
        assert!(parse_leaf_op(b"LMSG f | q1 10\r\n0123456789\r\n", &limits)
            .unwrap()
            .is_some());
        let tiny = Limits {
            max_control_line: 0,
            max_payload: 0,
        };
        assert_eq!(err_with(b"PING\r\n", &tiny), ParseError::ControlLineTooLong);
        assert_eq!(parse_leaf_op(b"LS+", &tiny), Ok(None));
        let huge = Limits {
            max_control_line: usize::MAX,
            max_payload: usize::MAX,
        };
        assert_eq!(
            parse_leaf_op(b"LMSG foo 18446744073709551615\r\nabc", &huge),
            Ok(None)
        );
    }

    #[test]
    fn writers() {
        let w = |f: &dyn Fn(&mut BytesMut)| {
            let mut out = BytesMut::new();
            f(&mut out);
            out.to_vec()
        };
        assert_eq!(w(&|o| write_ls_plus(o, b"foo", None)), b"LS+ foo\r\n");
        assert_eq!(
            w(&|o| write_ls_plus(o, b"foo", Some((b"q", 12)))),
            b"LS+ foo q 12\r\n"
        );
        assert_eq!(w(&|o| write_ls_minus(o, b"foo", None)), b"LS- foo\r\n");
        assert_eq!(
            w(&|o| write_ls_minus(o, b"foo", Some(b"q"))),
            b"LS- foo q\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg(o, b"foo", None, &[], None, b"hi")),
            b"LMSG foo 2\r\nhi\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg(o, b"foo", Some(b"r"), &[], None, b"")),
            b"LMSG foo r 0\r\n\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg(o, b"foo", Some(b"r"), &[b"a", b"b"], None, b"hi")),
            b"LMSG foo + r a b 2\r\nhi\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg(o, b"foo", None, &[b"a"], None, b"hi")),
            b"LMSG foo | a 2\r\nhi\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg(o, b"foo", None, &[], Some(b"NATS/1.0\r\n\r\n"), b"hi")),
            b"HMSG foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg(
                o,
                b"foo",
                Some(b"r"),
                &[b"q"],
                Some(b"NATS/1.0\r\n\r\n"),
                b""
            )),
            b"HMSG foo + r q 12 12\r\nNATS/1.0\r\n\r\n\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg_head(o, b"foo", None, &[b"q"], Some(12), 100)),
            b"HMSG foo | q 12 100\r\n"
        );
        assert_eq!(
            w(&|o| write_lmsg_head(o, b"foo", None, &[], None, 1_048_576)),
            b"LMSG foo 1048576\r\n"
        );
        let mut out = BytesMut::new();
        write_lmsg_head(&mut out, b"subject", None, &[], None, 1000);
        assert!(out.capacity() - out.len() >= 1002);
        assert_eq!(enc(&LeafOp::Err(b"'x'")), b"-ERR 'x'\r\n");
        assert_eq!(enc(&LeafOp::Info(b"{}")), b"INFO {}\r\n");
        assert_eq!(enc(&LeafOp::Connect(b"{}")), b"CONNECT {}\r\n");
        assert_eq!(enc(&LeafOp::Ok), b"+OK\r\n");
        assert_eq!(
            enc(&LeafOp::Sub {
                subject: b"s",
                queue: Some(b"q"),
                weight: None
            }),
            b"LS+ s q 1\r\n"
        );
        assert_eq!(
            enc(&LeafOp::Sub {
                subject: b"s",
                queue: None,
                weight: Some(3)
            }),
            b"LS+ s\r\n"
        );
    }

    #[test]
    fn round_trips() {
        let ops = [
            LeafOp::Info(b"{\"server_id\":\"x\"}"),
            LeafOp::Connect(b"{\"headers\":true}"),
            LeafOp::Ping,
            LeafOp::Pong,
            LeafOp::Err(b"'Unknown Protocol Operation'"),
            LeafOp::Ok,
            LeafOp::Sub {
                subject: b"a.>",
                queue: None,
                weight: None,
            },
            LeafOp::Sub {
                subject: b"a.*",
                queue: Some(b"q"),
                weight: Some(0),
            },
            LeafOp::Unsub {
                subject: b"a",
                queue: Some(b"q"),
            },
            msg(b"s", None, b"", None, b""),
            msg(b"s", Some(b"+"), b"", None, b"x"),
            msg(
                b"s",
                Some(b"r"),
                b"q1 q2",
                Some(b"NATS/1.0\r\nA: b\r\n\r\n"),
                b"p",
            ),
            msg(b"s", None, b"q1", Some(b""), b"p"),
        ];
        for op in ops {
            let bytes = enc(&op);
            assert_eq!(one(&bytes), op, "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    /// `LMSG`/`HMSG` argument text, mostly near-valid: fields joined by blanks, a line end and
    /// a body.
    fn arg_text() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            12 => (0u32..20).prop_map(|n| n.to_string().into_bytes()),
            2 => Just(b"foo".to_vec()),
            2 => Just(b"+".to_vec()),
            2 => Just(b"|".to_vec()),
            1 => Just(b"99999999999999999999".to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..3),
        ];
        let sep = prop_oneof![20 => Just(&b" "[..]), 1 => Just(&b"  "[..]), 1 => Just(&b"\t"[..])];
        let end = prop_oneof![
            20 => Just(&b"\r\n"[..]),
            1 => Just(&b"\n"[..]),
            1 => Just(&b"\r"[..]),
            1 => Just(&b""[..]),
            1 => Just(&b" \r\n"[..]),
        ];
        let body = prop::collection::vec(
            prop_oneof![
                Just(b"NATS/1.0\r\n\r\n".to_vec()),
                Just(b"\r\n".to_vec()),
                prop::collection::vec(any::<u8>(), 0..8),
            ],
            0..4,
        );
        (
            prop_oneof![3 => Just(b"foo".to_vec()), 1 => field.clone()],
            prop::collection::vec((sep, field), 0..6),
            end,
            body,
        )
            .prop_map(|(first, rest, end, body)| {
                let mut out = first;
                for (sep, field) in rest {
                    out.extend_from_slice(sep);
                    out.extend_from_slice(&field);
                }
                out.extend_from_slice(end);
                out.extend_from_slice(&body.concat());
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The `LMSG `/`HMSG ` fast paths return exactly what the general path returns, for
        /// every prefix of well-formed and malformed input alike.
        #[test]
        fn fast_paths_agree_with_general_path(tail in arg_text(), small in any::<bool>()) {
            let limits = if small {
                Limits { max_control_line: 20, max_payload: 12 }
            } else {
                Limits::default()
            };
            for prefix in [&b"LMSG "[..], b"HMSG "] {
                let mut buf = prefix.to_vec();
                buf.extend_from_slice(&tail);
                for k in prefix.len()..=buf.len() {
                    let input = &buf[..k];
                    prop_assert_eq!(
                        parse_leaf_op(input, &limits),
                        parse_general(input, &limits),
                        "{:?}", String::from_utf8_lossy(input)
                    );
                }
            }
        }
    }
}
