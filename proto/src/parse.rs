//! Decoding of client protocol operations from a byte buffer.
//!
//! [`parse_client_op`] is the single entry point. It is a pure function of the buffered bytes:
//! it keeps no state between calls, so a read loop simply calls it again on the same (grown)
//! buffer when it returned `Ok(None)`. The work done for an incomplete operation is bounded by
//! the control line limit (the line-end search never looks further than
//! `max_control_line + 2` bytes), so re-parsing while a large payload trickles in costs a short
//! scan of the control line each time, not a scan of the payload.
//!
//! The building blocks (op name matching, control line search, field splitting, number
//! parsing, payload framing) are shared, `pub(super)`, with the leafnode codec in
//! [`leaf`](super::leaf), so both protocols frame bytes the same way.

use memchr::memchr;

use super::ParseError;

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted control line in bytes, op name included, line end (`\r\n` or `\n`)
    /// excluded. nats-server's default is 4096.
    pub max_control_line: usize,
    /// Largest accepted payload in bytes (for `HPUB`, headers plus payload). nats-server's
    /// default is 1 MiB.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
        }
    }
}

/// One operation a client sends, borrowing from the input buffer (zero copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT {json}`: the raw JSON object text after `CONNECT ` (surrounding blanks removed).
    Connect(&'a [u8]),
    /// `PUB <subject> [reply] <#bytes>` followed by the payload.
    Pub {
        /// Subject the message is published to (not validated here).
        subject: &'a [u8],
        /// Optional reply subject.
        reply: Option<&'a [u8]>,
        /// Message payload, without the trailing `\r\n`.
        payload: &'a [u8],
    },
    /// `HPUB <subject> [reply] <#hdr bytes> <#total bytes>` followed by headers and payload.
    HPub {
        /// Subject the message is published to (not validated here).
        subject: &'a [u8],
        /// Optional reply subject.
        reply: Option<&'a [u8]>,
        /// The header block, `NATS/1.0...\r\n\r\n` (empty if the client declared 0 header bytes).
        headers: &'a [u8],
        /// The payload after the header block, without the trailing `\r\n`.
        payload: &'a [u8],
    },
    /// `SUB <subject> [queue] <sid>`.
    Sub {
        /// Subject (possibly with wildcards) to subscribe to (not validated here).
        subject: &'a [u8],
        /// Optional queue group name.
        queue: Option<&'a [u8]>,
        /// Client-chosen subscription id.
        sid: &'a [u8],
    },
    /// `UNSUB <sid> [max]`.
    Unsub {
        /// Subscription id to remove.
        sid: &'a [u8],
        /// Remove only after this many more messages were delivered.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

impl ClientOp<'_> {
    /// The canonical (upper case) name of the operation, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            ClientOp::Connect(_) => "CONNECT",
            ClientOp::Pub { .. } => "PUB",
            ClientOp::HPub { .. } => "HPUB",
            ClientOp::Sub { .. } => "SUB",
            ClientOp::Unsub { .. } => "UNSUB",
            ClientOp::Ping => "PING",
            ClientOp::Pong => "PONG",
        }
    }
}

/// The operations a client may send, as recognised from the op name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pub,
    HPub,
    Sub,
    Unsub,
    Connect,
    Ping,
    Pong,
}

impl Kind {
    /// Upper-case name, which is also the name used in [`ParseError::BadArgs`].
    fn name(self) -> &'static str {
        match self {
            Kind::Pub => "PUB",
            Kind::HPub => "HPUB",
            Kind::Sub => "SUB",
            Kind::Unsub => "UNSUB",
            Kind::Connect => "CONNECT",
            Kind::Ping => "PING",
            Kind::Pong => "PONG",
        }
    }
}

/// The parse result type: `None` means more bytes are needed.
type Parsed<'a> = Result<Option<(ClientOp<'a>, usize)>, ParseError>;

/// Parses one op from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a valid operation (more bytes are
/// needed), and `Ok(Some((op, consumed)))` when one complete operation (control line, payload
/// and the payload's trailing `\r\n`) occupies `buf[..consumed]`. Errors are reported as soon as
/// the buffered bytes prove them, and the same error is reported whatever way the stream is
/// split into reads.
///
/// Never panics and never allocates.
pub fn parse_client_op<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    // Fast paths: the overwhelmingly common ops, spelled the way every client library does.
    if buf.starts_with(b"PUB ") {
        if let Some(parsed) = parse_pub_fast(buf, limits) {
            return parsed;
        }
        return parse_after_name(buf, Kind::Pub, 3, limits);
    }
    if buf.starts_with(b"HPUB ") {
        if let Some(parsed) = parse_hpub_fast(buf, limits) {
            return parsed;
        }
        return parse_after_name(buf, Kind::HPub, 4, limits);
    }
    parse_general(buf, limits)
}

/// The general path of [`parse_client_op`], without the `PUB `/`HPUB ` fast paths.
fn parse_general<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    match op_name(buf)? {
        Some((kind, name_len)) => parse_after_name(buf, kind, name_len, limits),
        None => Ok(None),
    }
}

/// Fast path for a well-formed `PUB <subject> [reply] <size>\r\n`; `buf` starts with `PUB `.
///
/// Returns `None` when the general path must decide (see [`fast_fields`]), so it never changes
/// an outcome, only the cost of reaching it.
#[inline]
fn parse_pub_fast<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let (fields, n, line_end) = fast_fields::<3>(buf, 4, limits)?;
    let (subject, reply, size) = match (n, fields) {
        (2, [subject, size, _]) => (subject, None, size),
        (3, [subject, reply, size]) => (subject, Some(reply), size),
        _ => return None,
    };
    let args = PubArgs {
        subject,
        reply,
        hdr: None,
        total: parse_usize(size)?,
    };
    Some(finish_pub(buf, line_end, args, limits))
}

/// Fast path for a well-formed `HPUB <subject> [reply] <hdr> <total>\r\n`; `buf` starts with
/// `HPUB `. Same contract as [`parse_pub_fast`].
#[inline]
fn parse_hpub_fast<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let (fields, n, line_end) = fast_fields::<4>(buf, 5, limits)?;
    let (subject, reply, hdr, total) = match (n, fields) {
        (3, [subject, hdr, total, _]) => (subject, None, hdr, total),
        (4, [subject, reply, hdr, total]) => (subject, Some(reply), hdr, total),
        _ => return None,
    };
    let (hdr, total) = hdr_total(hdr, total)?;
    let args = PubArgs {
        subject,
        reply,
        hdr: Some(hdr),
        total,
    };
    Some(finish_pub(buf, line_end, args, limits))
}

/// Splits a canonical control line, `NAME field( field)*\r\n` with single spaces, whose
/// arguments start at `buf[start]`, into at most `N` fields; returns the fields (unused slots
/// empty), their count and the index just past the `\r\n`.
///
/// One pass both splits the fields and finds the line end: hot control lines are short, and a
/// word-at-a-time scan beats separate `memchr` calls there (each costs dozens of instructions of
/// dispatch on a short haystack). Returns `None` for anything unusual (an incomplete or
/// overlong line, tabs, several spaces, a bare `\n`, more than `N` fields), leaving the
/// decision to the general path.
#[inline]
pub(super) fn fast_fields<'a, const N: usize>(
    buf: &'a [u8],
    mut start: usize,
    limits: &Limits,
) -> Option<([&'a [u8]; N], usize, usize)> {
    // A line whose text fits the limit has its "\r\n" within the first `max + 2` bytes.
    let line = buf.get(..buf.len().min(limits.max_control_line.saturating_add(2)))?;
    let mut fields: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    loop {
        let i = next_control_or_space(line, start)?;
        if i == start {
            return None;
        }
        *fields.get_mut(n)? = line.get(start..i)?;
        n += 1;
        match line.get(i..i + 2)? {
            [b' ', _] => start = i + 1,
            b"\r\n" => return Some((fields, n, i + 2)),
            _ => return None,
        }
    }
}

/// Index of the first byte at or after `from` that is `<= b' '` (a space, a tab, `\r`, `\n` or
/// another control byte), or `None` if there is none.
///
/// Examines eight bytes per step: `(w - 0x21..) & !w & 0x80..` sets the top bit of the lowest
/// byte of `w` that is below `0x21`, and of no byte before it (higher bytes may be flagged
/// spuriously by the borrow, but only the lowest flag is used).
#[inline]
fn next_control_or_space(line: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = line.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*chunk);
        let found = w.wrapping_sub(ONES * 0x21) & !w & HIGHS;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let tail = line.get(i..)?;
    tail.iter().position(|&b| b <= b' ').map(|p| i + p)
}

/// Recognises the op name at the start of `buf`, case-insensitively.
///
/// Returns the op and the length of its name once the name and the byte after it (a blank or a
/// line end) are buffered, `None` while `buf` is a prefix of an op name, and
/// [`ParseError::UnknownOp`] as soon as it cannot be one.
fn op_name(buf: &[u8]) -> Result<Option<(Kind, usize)>, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // See `name_end` for the `| 0x20` case folding.
    let (kind, name): (Kind, &[u8]) = match first | 0x20 {
        b'p' => match buf.get(1).map(|b| b | 0x20) {
            None => return Ok(None),
            Some(b'u') => (Kind::Pub, b"pub"),
            Some(b'i') => (Kind::Ping, b"ping"),
            Some(b'o') => (Kind::Pong, b"pong"),
            Some(_) => return Err(ParseError::UnknownOp),
        },
        b'h' => (Kind::HPub, b"hpub"),
        b's' => (Kind::Sub, b"sub"),
        b'u' => (Kind::Unsub, b"unsub"),
        b'c' => (Kind::Connect, b"connect"),
        _ => return Err(ParseError::UnknownOp),
    };
    Ok(name_end(buf, name)?.map(|len| (kind, len)))
}

/// Matches the op name `name` (lower case letters, other bytes literal) at the start of `buf`.
///
/// Letters compare case-insensitively, other bytes (`+`, `-`) exactly. Returns the name's
/// length once the name and the byte after it (a blank or a line end) are buffered, `None`
/// while `buf` is a prefix of `name` followed by such a byte, and [`ParseError::UnknownOp`] as
/// soon as it cannot be.
#[inline]
pub(super) fn name_end(buf: &[u8], name: &[u8]) -> Result<Option<usize>, ParseError> {
    // `| 0x20` folds ASCII upper case letters onto lower case; the only other byte it maps onto
    // a lower case letter is that letter itself, so comparing `b | 0x20` with a lower case
    // letter is an exact case-insensitive comparison. Non-letters must match exactly (`0x0b |
    // 0x20` is `+`).
    let differs = |(b, n): (&u8, &u8)| {
        if n.is_ascii_lowercase() {
            b | 0x20 != *n
        } else {
            b != n
        }
    };
    if buf.iter().zip(name).any(differs) {
        return Err(ParseError::UnknownOp);
    }
    match buf.get(name.len()) {
        None => Ok(None),
        Some(b' ' | b'\t' | b'\r' | b'\n') => Ok(Some(name.len())),
        Some(_) => Err(ParseError::UnknownOp),
    }
}

/// Locates the end of the control line that starts at `buf[0]`, searching from `from`.
///
/// Returns `(content_end, line_end)`: the line's text is `buf[..content_end]` (without `\r\n`
/// or `\n`) and the next byte after the line is `buf[line_end]`. `None` means the line end is
/// not buffered yet and the line may still fit the limit.
pub(super) fn find_line(
    buf: &[u8],
    from: usize,
    max: usize,
) -> Result<Option<(usize, usize)>, ParseError> {
    // A line whose text fits the limit has its '\n' at index `max + 1` at the latest.
    let limit = buf.len().min(max.saturating_add(2));
    let hay = buf.get(from..limit).unwrap_or(&[]);
    match memchr(b'\n', hay) {
        Some(i) => {
            let nl = from + i;
            let content_end = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
                nl - 1
            } else {
                nl
            };
            if content_end > max {
                return Err(ParseError::ControlLineTooLong);
            }
            Ok(Some((content_end, nl + 1)))
        }
        None => {
            // No '\n' among the first `limit` bytes. The text is already too long if more than
            // `max` bytes are buffered, unless exactly `max + 1` are and the last one is the
            // '\r' of a line end whose '\n' is still in flight.
            let too_long = buf.len() > max.saturating_add(1)
                || (buf.len() == max.saturating_add(1) && buf.last() != Some(&b'\r'));
            if too_long {
                Err(ParseError::ControlLineTooLong)
            } else {
                Ok(None)
            }
        }
    }
}

/// Parses the rest of an op once its name (`buf[..name_len]`) has been recognised.
fn parse_after_name<'a>(buf: &'a [u8], kind: Kind, name_len: usize, limits: &Limits) -> Parsed<'a> {
    let Some((content_end, line_end)) = find_line(buf, name_len, limits.max_control_line)? else {
        return Ok(None);
    };
    let args = buf.get(name_len..content_end).unwrap_or(&[]);
    let op = match kind {
        Kind::Pub => return finish_pub(buf, line_end, pub_args(args)?, limits),
        Kind::HPub => return finish_pub(buf, line_end, hpub_args(args)?, limits),
        Kind::Sub => {
            let bad = ParseError::BadArgs { op: "SUB" };
            match split_fields::<3>(args).ok_or(bad)? {
                ([subject, sid, _], 2) => ClientOp::Sub {
                    subject,
                    queue: None,
                    sid,
                },
                ([subject, queue, sid], 3) => ClientOp::Sub {
                    subject,
                    queue: Some(queue),
                    sid,
                },
                _ => return Err(bad),
            }
        }
        Kind::Unsub => {
            let bad = ParseError::BadArgs { op: "UNSUB" };
            match split_fields::<2>(args).ok_or(bad)? {
                ([sid, _], 1) => ClientOp::Unsub { sid, max: None },
                ([sid, max], 2) => ClientOp::Unsub {
                    sid,
                    max: Some(parse_u64(max).ok_or(bad)?),
                },
                _ => return Err(bad),
            }
        }
        Kind::Connect => ClientOp::Connect(text_arg(args, "CONNECT")?),
        Kind::Ping | Kind::Pong => {
            no_args(args, kind.name())?;
            if kind == Kind::Ping {
                ClientOp::Ping
            } else {
                ClientOp::Pong
            }
        }
    };
    Ok(Some((op, line_end)))
}

/// The arguments of a `PUB` or `HPUB` control line.
struct PubArgs<'a> {
    /// Subject published to.
    subject: &'a [u8],
    /// Optional reply subject.
    reply: Option<&'a [u8]>,
    /// Size of the header block for `HPUB` (at most `total`), `None` for `PUB`.
    hdr: Option<usize>,
    /// Number of bytes after the control line, before the final `\r\n`.
    total: usize,
}

/// Splits `PUB` arguments into subject, optional reply and payload size.
fn pub_args(args: &[u8]) -> Result<PubArgs<'_>, ParseError> {
    let bad = ParseError::BadArgs { op: "PUB" };
    let (subject, reply, size) = match split_fields::<3>(args).ok_or(bad)? {
        ([subject, size, _], 2) => (subject, None, size),
        ([subject, reply, size], 3) => (subject, Some(reply), size),
        _ => return Err(bad),
    };
    Ok(PubArgs {
        subject,
        reply,
        hdr: None,
        total: parse_usize(size).ok_or(bad)?,
    })
}

/// Splits `HPUB` arguments into subject, optional reply, header size and total size.
fn hpub_args(args: &[u8]) -> Result<PubArgs<'_>, ParseError> {
    let bad = ParseError::BadArgs { op: "HPUB" };
    let (subject, reply, hdr, total) = match split_fields::<4>(args).ok_or(bad)? {
        ([subject, hdr, total, _], 3) => (subject, None, hdr, total),
        ([subject, reply, hdr, total], 4) => (subject, Some(reply), hdr, total),
        _ => return Err(bad),
    };
    let (hdr, total) = hdr_total(hdr, total).ok_or(bad)?;
    Ok(PubArgs {
        subject,
        reply,
        hdr: Some(hdr),
        total,
    })
}

/// Completes a `PUB`/`HPUB` whose control line ends at `line_end`: waits for the payload and
/// its `\r\n`, then checks the header block of an `HPUB`.
#[inline]
fn finish_pub<'a>(
    buf: &'a [u8],
    line_end: usize,
    args: PubArgs<'a>,
    limits: &Limits,
) -> Parsed<'a> {
    let Some(all) = payload(buf, line_end, args.total, limits)? else {
        return Ok(None);
    };
    let consumed = line_end + args.total + 2;
    let PubArgs { subject, reply, .. } = args;
    let op = match args.hdr {
        None => ClientOp::Pub {
            subject,
            reply,
            payload: all,
        },
        Some(hdr) => {
            let (headers, payload) = split_headers(all, hdr, "HPUB")?;
            ClientOp::HPub {
                subject,
                reply,
                headers,
                payload,
            }
        }
    };
    Ok(Some((op, consumed)))
}

/// Parses the header and total sizes of an `HPUB` (or a leafnode `HMSG`); `None` unless both
/// are numbers and the header block fits in the total.
#[inline]
pub(super) fn hdr_total(hdr: &[u8], total: &[u8]) -> Option<(usize, usize)> {
    let hdr = parse_usize(hdr)?;
    let total = parse_usize(total)?;
    (hdr <= total).then_some((hdr, total))
}

/// Splits the body of an `HPUB` (or a leafnode `HMSG`) into its `hdr`-byte header block and the
/// payload, checking that a non-empty header block starts with `NATS/1.0`.
///
/// `op` names the operation in [`ParseError::BadArgs`] should `hdr` exceed the body (the
/// argument checks already exclude it).
#[inline]
pub(super) fn split_headers<'a>(
    all: &'a [u8],
    hdr: usize,
    op: &'static str,
) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let (headers, payload) = all
        .split_at_checked(hdr)
        .ok_or(ParseError::BadArgs { op })?;
    if hdr > 0 && !headers.starts_with(b"NATS/1.0") {
        return Err(ParseError::BadHeaders);
    }
    Ok((headers, payload))
}

/// Returns the `size` payload bytes starting at `start`, once they and their `\r\n` are buffered.
///
/// Enforces [`Limits::max_payload`] before looking at any payload byte.
pub(super) fn payload<'a>(
    buf: &'a [u8],
    start: usize,
    size: usize,
    limits: &Limits,
) -> Result<Option<&'a [u8]>, ParseError> {
    if size > limits.max_payload {
        return Err(ParseError::MaxPayload);
    }
    let end = start.saturating_add(size);
    match buf.get(end..) {
        Some([b'\r', b'\n', ..]) => Ok(buf.get(start..end)),
        None | Some([] | [b'\r']) => Ok(None),
        Some(_) => Err(ParseError::MissingPayloadTerminator),
    }
}

/// `true` for the blanks that separate fields of a control line.
#[inline]
fn is_blank(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// Splits `args` into at most `N` fields separated by runs of blanks.
///
/// Returns the fields (unused slots are empty) and how many there are, or `None` if there are
/// more than `N`.
#[inline]
pub(super) fn split_fields<const N: usize>(args: &[u8]) -> Option<([&[u8]; N], usize)> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    for field in Fields::new(args) {
        *out.get_mut(n)? = field;
        n += 1;
    }
    Some((out, n))
}

/// The blank-separated fields of a control line's arguments, from either end.
///
/// Taking fields from the front ([`Iterator::next`]) and the back
/// ([`DoubleEndedIterator::next_back`]) shrinks the untaken middle, which
/// [`Fields::remainder`] returns; this lets an op with a variable number of fields in the
/// middle (the queue names of a leafnode `LMSG`) be split without allocating.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields<'a> {
    /// The fields not taken yet, possibly with surrounding blanks.
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Fields of `args`.
    #[inline]
    pub(super) fn new(args: &'a [u8]) -> Self {
        Fields { rest: args }
    }

    /// The fields not taken yet, blanks around them removed.
    #[inline]
    pub(super) fn remainder(&self) -> &'a [u8] {
        trim_blanks(self.rest)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|b| !is_blank(b))?;
        let rest = self.rest.get(start..).unwrap_or(&[]);
        let end = rest.iter().position(is_blank).unwrap_or(rest.len());
        let (field, rest) = rest.split_at(end);
        self.rest = rest;
        Some(field)
    }
}

impl<'a> DoubleEndedIterator for Fields<'a> {
    #[inline]
    fn next_back(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().rposition(|b| !is_blank(b))? + 1;
        let rest = self.rest.get(..end).unwrap_or(&[]);
        let start = rest.iter().rposition(is_blank).map_or(0, |i| i + 1);
        let (rest, field) = rest.split_at(start);
        self.rest = rest;
        Some(field)
    }
}

/// Checks that an op which takes no arguments (`PING`, `PONG`, `+OK`) got none.
#[inline]
pub(super) fn no_args(args: &[u8], op: &'static str) -> Result<(), ParseError> {
    if trim_blanks(args).is_empty() {
        Ok(())
    } else {
        Err(ParseError::BadArgs { op })
    }
}

/// The single free-text argument of `CONNECT`, `INFO` or `-ERR`, blanks around it removed;
/// it must not be empty.
#[inline]
pub(super) fn text_arg<'a>(args: &'a [u8], op: &'static str) -> Result<&'a [u8], ParseError> {
    let text = trim_blanks(args);
    if text.is_empty() {
        Err(ParseError::BadArgs { op })
    } else {
        Ok(text)
    }
}

/// Removes leading and trailing blanks.
pub(super) fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_blank(first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_blank(last) {
            break;
        }
        s = rest;
    }
    s
}

/// Parses a non-empty run of ASCII digits; `None` on any other byte or on overflow.
#[inline]
pub(super) fn parse_usize(digits: &[u8]) -> Option<usize> {
    // Up to this many digits cannot overflow, so the common case needs no overflow checks.
    const SAFE_DIGITS: usize = if usize::BITS >= 64 { 19 } else { 9 };
    if digits.is_empty() {
        return None;
    }
    if digits.len() > SAFE_DIGITS {
        return usize::try_from(parse_u64(digits)?).ok();
    }
    let mut n: usize = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + usize::from(d);
    }
    Some(n)
}

/// Like [`parse_usize`], for `u64`.
pub(super) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    /// Parses `input`, expecting exactly one complete op spanning the whole input.
    fn one(input: &[u8]) -> ClientOp<'_> {
        match parse_client_op(input, &lim()) {
            Ok(Some((op, n))) => {
                assert_eq!(
                    n,
                    input.len(),
                    "consumed for {:?}",
                    String::from_utf8_lossy(input)
                );
                op
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> ParseError {
        err_with(input, &lim())
    }

    fn err_with(input: &[u8], limits: &Limits) -> ParseError {
        match parse_client_op(input, limits) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// Every strict prefix of a valid op must ask for more bytes.
    fn prefixes_incomplete(input: &[u8]) {
        for k in 0..input.len() {
            assert_eq!(
                parse_client_op(&input[..k], &lim()),
                Ok(None),
                "prefix {k} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn pub_ops() {
        assert_eq!(
            one(b"PUB foo 5\r\nhello\r\n"),
            ClientOp::Pub {
                subject: b"foo",
                reply: None,
                payload: b"hello"
            }
        );
        assert_eq!(
            one(b"PUB foo.bar _INBOX.1 0\r\n\r\n"),
            ClientOp::Pub {
                subject: b"foo.bar",
                reply: Some(b"_INBOX.1"),
                payload: b""
            }
        );
        // Payload may contain CRLF; the size decides.
        assert_eq!(
            one(b"PUB a 4\r\n\r\n\r\n\r\n"),
            ClientOp::Pub {
                subject: b"a",
                reply: None,
                payload: b"\r\n\r\n"
            }
        );
    }

    #[test]
    fn hpub_ops() {
        let input = b"HPUB foo rep 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
        assert_eq!(
            one(input),
            ClientOp::HPub {
                subject: b"foo",
                reply: Some(b"rep"),
                headers: b"NATS/1.0\r\n\r\n",
                payload: b"hi"
            }
        );
        let input = b"HPUB foo 24 24\r\nNATS/1.0\r\nA: b\r\nC: d\r\n\r\n\r\n";
        assert_eq!(
            one(input),
            ClientOp::HPub {
                subject: b"foo",
                reply: None,
                headers: b"NATS/1.0\r\nA: b\r\nC: d\r\n\r\n",
                payload: b""
            }
        );
        // nats-server accepts an empty header block.
        assert_eq!(
            one(b"HPUB foo 0 2\r\nhi\r\n"),
            ClientOp::HPub {
                subject: b"foo",
                reply: None,
                headers: b"",
                payload: b"hi"
            }
        );
    }

    #[test]
    fn sub_unsub_connect_ping_pong() {
        assert_eq!(
            one(b"SUB foo 1\r\n"),
            ClientOp::Sub {
                subject: b"foo",
                queue: None,
                sid: b"1"
            }
        );
        assert_eq!(
            one(b"SUB foo.* workers 42\r\n"),
            ClientOp::Sub {
                subject: b"foo.*",
                queue: Some(b"workers"),
                sid: b"42"
            }
        );
        assert_eq!(
            one(b"UNSUB 1\r\n"),
            ClientOp::Unsub {
                sid: b"1",
                max: None
            }
        );
        assert_eq!(
            one(b"UNSUB 1 10\r\n"),
            ClientOp::Unsub {
                sid: b"1",
                max: Some(10)
            }
        );
        assert_eq!(
            one(b"UNSUB 1 18446744073709551615\r\n"),
            ClientOp::Unsub {
                sid: b"1",
                max: Some(u64::MAX)
            }
        );
        assert_eq!(
            one(b"CONNECT {\"verbose\":false, \"pedantic\":false}\r\n"),
            ClientOp::Connect(b"{\"verbose\":false, \"pedantic\":false}")
        );
        assert_eq!(one(b"PING\r\n"), ClientOp::Ping);
        assert_eq!(one(b"PONG\r\n"), ClientOp::Pong);
        assert_eq!(one(b"PING \t\r\n"), ClientOp::Ping);
    }

    #[test]
    fn case_insensitive_names() {
        for name in ["pub", "Pub", "pUb", "PUB"] {
            let input = format!("{name} foo 2\r\nhi\r\n");
            assert_eq!(one(input.as_bytes()).name(), "PUB");
        }
        assert_eq!(
            one(b"hpub foo 12 12\r\nNATS/1.0\r\n\r\n\r\n").name(),
            "HPUB"
        );
        assert_eq!(one(b"sub foo 1\r\n").name(), "SUB");
        assert_eq!(one(b"uNsUb 1\r\n").name(), "UNSUB");
        assert_eq!(one(b"connect {}\r\n").name(), "CONNECT");
        assert_eq!(one(b"ping\r\n"), ClientOp::Ping);
        assert_eq!(one(b"pOnG\r\n"), ClientOp::Pong);
    }

    #[test]
    fn blanks_and_bare_newlines() {
        assert_eq!(
            one(b"PUB\tfoo  \t bar\t\t3 \t\r\nabc\r\n"),
            ClientOp::Pub {
                subject: b"foo",
                reply: Some(b"bar"),
                payload: b"abc"
            }
        );
        assert_eq!(
            one(b"pub foo 2\nhi\r\n"),
            ClientOp::Pub {
                subject: b"foo",
                reply: None,
                payload: b"hi"
            }
        );
        assert_eq!(
            one(b"SUB  foo \t q\t 7\n"),
            ClientOp::Sub {
                subject: b"foo",
                queue: Some(b"q"),
                sid: b"7"
            }
        );
        assert_eq!(one(b"PING\n"), ClientOp::Ping);
        assert_eq!(one(b"CONNECT \t {} \t\n"), ClientOp::Connect(b"{}"));
    }

    #[test]
    fn consumes_only_one_op() {
        let input = b"PING\r\nPUB a 1\r\nx\r\nSUB b 2\r\n";
        let (op, n) = parse_client_op(input, &lim()).unwrap().unwrap();
        assert_eq!((op, n), (ClientOp::Ping, 6));
        let (op, m) = parse_client_op(&input[n..], &lim()).unwrap().unwrap();
        assert_eq!(op.name(), "PUB");
        assert_eq!(m, 12);
        let (op, k) = parse_client_op(&input[n + m..], &lim()).unwrap().unwrap();
        assert_eq!(op.name(), "SUB");
        assert_eq!(n + m + k, input.len());
    }

    #[test]
    fn prefixes_need_more() {
        for input in [
            &b"PUB foo 5\r\nhello\r\n"[..],
            b"pub foo reply 5\nhello\r\n",
            b"HPUB foo rep 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            b"SUB foo q 1\r\n",
            b"UNSUB 1 5\r\n",
            b"CONNECT {}\r\n",
            b"PING\r\n",
            b"PONG\n",
        ] {
            prefixes_incomplete(input);
            one(input);
        }
    }

    #[test]
    fn unknown_ops() {
        for input in [
            &b"FOO\r\n"[..],
            b"P",
            b"PX",
            b"PUBX",
            b"PINGX",
            b"PUBLISH foo 1\r\n",
            b"SUBS",
            b"CONNEC\r\n",
            b"UNSUBSCRIBE 1\r\n",
            b" PING\r\n",
            b"\r\n",
            b"\n",
            b"MSG foo 1 2\r\n",
            b"INFO {}\r\n",
            b"+OK\r\n",
            b"\xffPUB",
        ] {
            if input == b"P" {
                assert_eq!(parse_client_op(input, &lim()), Ok(None));
                continue;
            }
            assert_eq!(err(input), ParseError::UnknownOp, "{input:?}");
        }
    }

    #[test]
    fn bad_args() {
        let cases: &[(&[u8], &str)] = &[
            (b"PUB\r\n", "PUB"),
            (b"PUB foo\r\n", "PUB"),
            (b"PUB foo x\r\n", "PUB"),
            (b"PUB foo -1\r\n", "PUB"),
            (b"PUB foo +1\r\n", "PUB"),
            (b"PUB foo 1x\r\n", "PUB"),
            (b"PUB a b c 1\r\n", "PUB"),
            (b"PUB foo 99999999999999999999999\r\n", "PUB"),
            (b"PUB foo 1\rx\r\n", "PUB"),
            (b"HPUB foo 5\r\n", "HPUB"),
            (b"HPUB foo 10 5\r\n", "HPUB"),
            (b"HPUB foo x 5\r\n", "HPUB"),
            (b"HPUB a b c d e\r\n", "HPUB"),
            (b"SUB foo\r\n", "SUB"),
            (b"SUB\r\n", "SUB"),
            (b"SUB a b c d\r\n", "SUB"),
            (b"UNSUB\r\n", "UNSUB"),
            (b"UNSUB \r\n", "UNSUB"),
            (b"UNSUB 1 x\r\n", "UNSUB"),
            (b"UNSUB 1 2 3\r\n", "UNSUB"),
            (b"UNSUB 1 18446744073709551616\r\n", "UNSUB"),
            (b"CONNECT\r\n", "CONNECT"),
            (b"CONNECT  \t\r\n", "CONNECT"),
            (b"PING foo\r\n", "PING"),
            (b"PONG 1\r\n", "PONG"),
        ];
        for &(input, op) in cases {
            assert_eq!(err(input), ParseError::BadArgs { op }, "{input:?}");
        }
    }

    #[test]
    fn payload_terminator() {
        assert_eq!(
            err(b"PUB foo 2\r\nabc\r\n"),
            ParseError::MissingPayloadTerminator
        );
        assert_eq!(
            err(b"PUB foo 2\r\nab\n"),
            ParseError::MissingPayloadTerminator
        );
        assert_eq!(
            err(b"PUB foo 2\r\nab\r\r"),
            ParseError::MissingPayloadTerminator
        );
        assert_eq!(
            err(b"PUB foo 3\r\nab\r\n"),
            ParseError::MissingPayloadTerminator
        );
        assert_eq!(
            err(b"HPUB foo 12 12\r\nNATS/1.0\r\n\r\nXY"),
            ParseError::MissingPayloadTerminator
        );
        // Detected from the first byte after the payload.
        assert_eq!(
            err(b"PUB foo 2\r\nabX"),
            ParseError::MissingPayloadTerminator
        );
        // Terminator half there: wait.
        assert_eq!(parse_client_op(b"PUB foo 2\r\nab\r", &lim()), Ok(None));
    }

    #[test]
    fn bad_headers() {
        assert_eq!(err(b"HPUB foo 5 7\r\nABCDEhi\r\n"), ParseError::BadHeaders);
        assert_eq!(err(b"HPUB foo 3 3\r\nNAT\r\n"), ParseError::BadHeaders);
        assert_eq!(err(b"HPUB foo 1 3\r\nXhi\r\n"), ParseError::BadHeaders);
        assert_eq!(
            err(b"HPUB foo 12 12\r\nnats/1.0\r\n\r\n\r\n"),
            ParseError::BadHeaders
        );
    }

    #[test]
    fn max_payload() {
        let limits = Limits {
            max_control_line: 4096,
            max_payload: 10,
        };
        // Reported as soon as the control line is complete.
        assert_eq!(err_with(b"PUB foo 11\r\n", &limits), ParseError::MaxPayload);
        assert_eq!(err_with(b"PUB foo 11\n", &limits), ParseError::MaxPayload);
        assert_eq!(
            err_with(b"HPUB foo 5 11\r\n", &limits),
            ParseError::MaxPayload
        );
        assert_eq!(
            err_with(b"PUB foo 9999999999999\r\n", &limits),
            ParseError::MaxPayload
        );
        assert_eq!(err(b"PUB foo 1048577\r\n"), ParseError::MaxPayload);
        // Exactly at the limit is fine.
        let ok = b"PUB foo 10\r\n0123456789\r\n";
        assert!(matches!(
            parse_client_op(ok, &limits),
            Ok(Some((ClientOp::Pub { .. }, 24)))
        ));
        assert_eq!(parse_client_op(b"PUB foo 10\r\n", &limits), Ok(None));
        // hdr > total is a bad argument, checked before the payload limit (as nats-server).
        assert_eq!(
            err_with(b"HPUB foo 20 11\r\n", &limits),
            ParseError::BadArgs { op: "HPUB" }
        );
    }

    #[test]
    fn control_line_limit() {
        let limits = Limits {
            max_control_line: 16,
            max_payload: 1024,
        };
        // 16 bytes of text fit, with either line end.
        let fits = b"SUB abcdefghij 1\r\n";
        assert_eq!(fits.len(), 18);
        assert!(parse_client_op(fits, &limits).unwrap().is_some());
        assert!(parse_client_op(b"SUB abcdefghij 1\n", &limits)
            .unwrap()
            .is_some());
        for k in 0..fits.len() {
            assert_eq!(parse_client_op(&fits[..k], &limits), Ok(None), "prefix {k}");
        }
        // 17 bytes of text do not.
        assert_eq!(
            err_with(b"SUB abcdefghijk 1\r\n", &limits),
            ParseError::ControlLineTooLong
        );
        assert_eq!(
            err_with(b"SUB abcdefghijk 1\n", &limits),
            ParseError::ControlLineTooLong
        );
        // Detected before the line end arrives.
        assert_eq!(
            err_with(b"SUB abcdefghijk 1", &limits),
            ParseError::ControlLineTooLong
        );
        assert_eq!(
            err_with(b"SUB abcdefghijk 1\r", &limits),
            ParseError::ControlLineTooLong
        );
        assert_eq!(
            err_with(b"PUB aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &limits),
            ParseError::ControlLineTooLong
        );
        // The payload does not count.
        let long_payload = b"PUB a 20\r\n01234567890123456789\r\n";
        assert!(parse_client_op(long_payload, &limits).unwrap().is_some());
        // Default limit.
        let mut line = b"PUB ".to_vec();
        line.resize(5000, b'a');
        assert_eq!(err(&line), ParseError::ControlLineTooLong);
        line.truncate(4096);
        assert_eq!(parse_client_op(&line, &lim()), Ok(None));
    }

    #[test]
    fn tiny_limits_do_not_panic() {
        let limits = Limits {
            max_control_line: 0,
            max_payload: 0,
        };
        assert_eq!(
            err_with(b"PING\r\n", &limits),
            ParseError::ControlLineTooLong
        );
        // The op name is recognised before the line length is checked.
        assert_eq!(parse_client_op(b"PING", &limits), Ok(None));
        assert_eq!(parse_client_op(b"P", &limits), Ok(None));
        let limits = Limits {
            max_control_line: usize::MAX,
            max_payload: usize::MAX,
        };
        assert_eq!(
            parse_client_op(b"PUB foo 18446744073709551615\r\nabc", &limits),
            Ok(None)
        );
        assert_eq!(parse_client_op(b"PUB foo", &limits), Ok(None));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_usize(b"0"), Some(0));
        assert_eq!(parse_usize(b"007"), Some(7));
        assert_eq!(parse_usize(b"1048576"), Some(1_048_576));
        assert_eq!(parse_usize(b""), None);
        assert_eq!(parse_usize(b"1a"), None);
        assert_eq!(parse_usize(b"/"), None);
        assert_eq!(parse_usize(b":"), None);
        assert_eq!(parse_usize(b"99999999999999999999999"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
    }

    #[test]
    fn fields() {
        assert_eq!(
            split_fields::<3>(b"  a\t\tb  "),
            Some(([&b"a"[..], b"b", b""], 2))
        );
        assert_eq!(split_fields::<2>(b"a b c"), None);
        assert_eq!(split_fields::<2>(b""), Some(([&b""[..], b""], 0)));
        assert_eq!(trim_blanks(b" \t x y \t"), b"x y");
        let all: Vec<&[u8]> = Fields::new(b" a\tbb  c ").collect();
        assert_eq!(all, [&b"a"[..], b"bb", b"c"]);
        let back: Vec<&[u8]> = Fields::new(b" a\tbb  c ").rev().collect();
        assert_eq!(back, [&b"c"[..], b"bb", b"a"]);
        let mut f = Fields::new(b"  s  + r q1\tq2  9 ");
        assert_eq!(f.next(), Some(&b"s"[..]));
        assert_eq!(f.next_back(), Some(&b"9"[..]));
        assert_eq!(f.remainder(), b"+ r q1\tq2");
        assert_eq!(f.next(), Some(&b"+"[..]));
        assert_eq!(f.next_back(), Some(&b"q2"[..]));
        assert_eq!(f.remainder(), b"r q1");
        let mut f = Fields::new(b"x");
        assert_eq!(f.next_back(), Some(&b"x"[..]));
        assert_eq!(
            (f.next(), f.next_back(), f.remainder()),
            (None, None, &b""[..])
        );
        assert_eq!(Fields::new(b" \t ").next(), None);
        assert_eq!(Fields::new(b"").next_back(), None);
        assert_eq!(trim_blanks(b" \t "), b"");
    }

    /// `PUB`/`HPUB` argument text, mostly near-valid: fields joined by blanks, a line end and
    /// a body.
    fn arg_text() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            12 => (0u32..20).prop_map(|n| n.to_string().into_bytes()),
            2 => Just(b"foo".to_vec()),
            1 => Just(b"bar.baz".to_vec()),
            1 => Just(b"99999999999999999999".to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..3),
        ];
        let sep = prop_oneof![
            20 => Just(&b" "[..]),
            1 => Just(&b"  "[..]),
            1 => Just(&b"\t"[..]),
        ];
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
            prop::bool::weighted(0.05),
            prop_oneof![3 => Just(b"foo".to_vec()), 1 => field.clone()],
            prop_oneof![
                4 => prop::collection::vec((sep.clone(), field.clone()), 1..4),
                1 => prop::collection::vec((sep, field.clone()), 0..6),
            ],
            end,
            body,
        )
            .prop_map(|(lead, first, rest, end, body)| {
                let mut out = Vec::new();
                if lead {
                    out.push(b' ');
                }
                out.extend_from_slice(&first);
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

        /// The `PUB `/`HPUB ` fast paths return exactly what the general path returns, for
        /// every prefix of well-formed and malformed input alike.
        #[test]
        fn fast_paths_agree_with_general_path(tail in arg_text(), small in any::<bool>()) {
            let limits = if small {
                Limits { max_control_line: 20, max_payload: 12 }
            } else {
                Limits::default()
            };
            for (prefix, kind, name_len) in [(&b"PUB "[..], Kind::Pub, 3), (b"HPUB ", Kind::HPub, 4)] {
                let mut buf = prefix.to_vec();
                buf.extend_from_slice(&tail);
                for k in prefix.len()..=buf.len() {
                    let input = &buf[..k];
                    prop_assert_eq!(
                        parse_client_op(input, &limits),
                        parse_after_name(input, kind, name_len, &limits),
                        "{:?}", String::from_utf8_lossy(input)
                    );
                }
            }
        }
    }

    #[test]
    fn swar_scan() {
        let line = b"abcdefghijklmnopqrstuvwxyz \x7f\x80\xff\t";
        for from in 0..line.len() {
            let want = line[from..]
                .iter()
                .position(|&b| b <= b' ')
                .map(|p| p + from);
            assert_eq!(next_control_or_space(line, from), want, "from {from}");
        }
        for len in 0..20 {
            let mut v = vec![b'a'; len];
            assert_eq!(next_control_or_space(&v, 0), None);
            for at in 0..len {
                for b in [0u8, b'\t', b'\n', b'\r', b' ', 0x20] {
                    v[at] = b;
                    assert_eq!(next_control_or_space(&v, 0), Some(at));
                    v[at] = b'a';
                }
                // Bytes above 0x20, including non-ASCII ones, are never delimiters.
                for b in [0x21u8, 0x7f, 0x80, 0xa0, 0xa1, 0xdf, 0xff] {
                    v[at] = b;
                    assert_eq!(next_control_or_space(&v, 0), None);
                    v[at] = b'a';
                }
            }
        }
        assert_eq!(next_control_or_space(b"ab", 5), None);
    }
}
