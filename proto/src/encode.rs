//! Encoding of protocol operations into a [`BytesMut`].
//!
//! Server-side operations (`MSG`, `HMSG`, `INFO`, `-ERR`, `PING`, `PONG`, `+OK`) are what a
//! server writes to its clients; client-side operations ([`write_client_op`] and the `write_pub`
//! family) are what a client, a test or a leafnode link writes to a server. Every writer reserves
//! the whole operation once and then appends; none of them validates its arguments (subjects
//! must not contain blanks or line ends, which the caller guarantees).

use bytes::BytesMut;

use super::ClientOp;

/// The `PING` line.
pub const PING: &[u8] = b"PING\r\n";
/// The `PONG` line.
pub const PONG: &[u8] = b"PONG\r\n";
/// The `+OK` line a server sends in verbose mode.
pub const OK: &[u8] = b"+OK\r\n";

/// Line terminator.
const CRLF: &[u8] = b"\r\n";
/// Longest decimal rendering of a `u64`.
const MAX_DIGITS: usize = 20;

/// Appends `fields` separated by single spaces, then `\r\n`.
///
/// `None` fields are skipped; `numbers` are appended after the byte fields. Reserves everything
/// up front, plus `extra` bytes for what the caller appends next.
#[inline]
fn write_line(out: &mut BytesMut, fields: &[Option<&[u8]>], numbers: &[u64], extra: usize) {
    let len: usize = fields.iter().flatten().map(|f| f.len() + 1).sum::<usize>()
        + numbers.len() * (MAX_DIGITS + 1)
        + CRLF.len()
        + extra;
    out.reserve(len);
    let mut first = true;
    for field in fields.iter().flatten() {
        if !first {
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(field);
        first = false;
    }
    let mut digits = itoa::Buffer::new();
    for &n in numbers {
        out.extend_from_slice(b" ");
        out.extend_from_slice(digits.format(n).as_bytes());
    }
    out.extend_from_slice(CRLF);
}

/// Widens a length for decimal formatting (`usize` is at most 64 bits on supported targets).
#[inline]
fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Writes `MSG <subject> <sid> [reply] <payload_len>\r\n`.
///
/// Reserves room for the payload and its `\r\n` too, so the caller can append them without
/// another allocation.
#[inline]
pub fn write_msg_head(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload_len: usize,
) {
    let mut digits = itoa::Buffer::new();
    let len = digits.format(payload_len).as_bytes();
    write_delivery_head(out, b"MSG ", subject, sid, reply, &[len], payload_len);
}

/// Writes `HMSG <subject> <sid> [reply] <hdr_len> <total_len>\r\n`.
///
/// Reserves room for the headers, the payload and their `\r\n` too.
#[inline]
pub fn write_hmsg_head(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    hdr_len: usize,
    total_len: usize,
) {
    let mut hdr_digits = itoa::Buffer::new();
    let mut total_digits = itoa::Buffer::new();
    let hdr = hdr_digits.format(hdr_len).as_bytes();
    let total = total_digits.format(total_len).as_bytes();
    write_delivery_head(out, b"HMSG ", subject, sid, reply, &[hdr, total], total_len);
}

/// Writes `<op><subject> <sid> [reply] <sizes...>\r\n` and reserves `body_len + 2` more bytes.
#[inline(always)]
fn write_delivery_head(
    out: &mut BytesMut,
    op: &[u8],
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    sizes: &[&[u8]],
    body_len: usize,
) {
    let reply_len = reply.map_or(0, |r| r.len() + 1);
    let sizes_len: usize = sizes.iter().map(|s| s.len() + 1).sum();
    out.reserve(
        op.len()
            + subject.len()
            + 1
            + sid.len()
            + reply_len
            + sizes_len
            + CRLF.len()
            + body_len
            + CRLF.len(),
    );
    out.extend_from_slice(op);
    out.extend_from_slice(subject);
    out.extend_from_slice(b" ");
    out.extend_from_slice(sid);
    if let Some(reply) = reply {
        out.extend_from_slice(b" ");
        out.extend_from_slice(reply);
    }
    for size in sizes {
        out.extend_from_slice(b" ");
        out.extend_from_slice(size);
    }
    out.extend_from_slice(CRLF);
}

/// Writes a complete `MSG`: head, payload and `\r\n`.
#[inline]
pub fn write_msg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    write_msg_head(out, subject, sid, reply, payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// Writes a complete `HMSG`: head, header block, payload and `\r\n`.
#[inline]
pub fn write_hmsg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let total = headers.len() + payload.len();
    write_hmsg_head(out, subject, sid, reply, headers.len(), total);
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// Writes `INFO <json>\r\n`.
pub fn write_info(out: &mut BytesMut, json: &[u8]) {
    write_line(out, &[Some(b"INFO"), Some(json)], &[], 0);
}

/// Writes `-ERR <text>\r\n`; `text` carries its own quotes, e.g. from
/// [`ParseError::err_text`](super::ParseError::err_text).
pub fn write_err(out: &mut BytesMut, text: &str) {
    write_line(out, &[Some(b"-ERR"), Some(text.as_bytes())], &[], 0);
}

/// Writes `PING\r\n`.
pub fn write_ping(out: &mut BytesMut) {
    out.extend_from_slice(PING);
}

/// Writes `PONG\r\n`.
pub fn write_pong(out: &mut BytesMut) {
    out.extend_from_slice(PONG);
}

/// Writes `+OK\r\n`.
pub fn write_ok(out: &mut BytesMut) {
    out.extend_from_slice(OK);
}

/// Writes `CONNECT <json>\r\n`.
pub fn write_connect(out: &mut BytesMut, json: &[u8]) {
    write_line(out, &[Some(b"CONNECT"), Some(json)], &[], 0);
}

/// Writes a complete `PUB`: `PUB <subject> [reply] <len>\r\n<payload>\r\n`.
pub fn write_pub(out: &mut BytesMut, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    write_line(
        out,
        &[Some(b"PUB"), Some(subject), reply],
        &[len_u64(payload.len())],
        payload.len() + CRLF.len(),
    );
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// Writes a complete `HPUB`: `HPUB <subject> [reply] <hdr len> <total len>\r\n`, the header
/// block, the payload and `\r\n`.
pub fn write_hpub(
    out: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let total = headers.len() + payload.len();
    write_line(
        out,
        &[Some(b"HPUB"), Some(subject), reply],
        &[len_u64(headers.len()), len_u64(total)],
        total + CRLF.len(),
    );
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// Writes `SUB <subject> [queue] <sid>\r\n`.
pub fn write_sub(out: &mut BytesMut, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
    write_line(
        out,
        &[Some(b"SUB"), Some(subject), queue, Some(sid)],
        &[],
        0,
    );
}

/// Writes `UNSUB <sid> [max]\r\n`.
pub fn write_unsub(out: &mut BytesMut, sid: &[u8], max: Option<u64>) {
    match max {
        Some(max) => write_line(out, &[Some(b"UNSUB"), Some(sid)], &[max], 0),
        None => write_line(out, &[Some(b"UNSUB"), Some(sid)], &[], 0),
    }
}

/// Writes any client operation in its canonical form (upper case names, single spaces, `\r\n`).
///
/// [`parse_client_op`](super::parse_client_op) decodes the result back to an equal op.
pub fn write_client_op(out: &mut BytesMut, op: &ClientOp<'_>) {
    match *op {
        ClientOp::Connect(json) => write_connect(out, json),
        ClientOp::Pub {
            subject,
            reply,
            payload,
        } => write_pub(out, subject, reply, payload),
        ClientOp::HPub {
            subject,
            reply,
            headers,
            payload,
        } => write_hpub(out, subject, reply, headers, payload),
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => write_sub(out, subject, queue, sid),
        ClientOp::Unsub { sid, max } => write_unsub(out, sid, max),
        ClientOp::Ping => write_ping(out),
        ClientOp::Pong => write_pong(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_client_op, Limits};

    fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn server_ops() {
        assert_eq!(
            enc(|o| write_msg(o, b"foo.bar", b"7", None, b"hello")),
            b"MSG foo.bar 7 5\r\nhello\r\n"
        );
        assert_eq!(
            enc(|o| write_msg(o, b"foo", b"1", Some(b"_INBOX.x"), b"")),
            b"MSG foo 1 _INBOX.x 0\r\n\r\n"
        );
        assert_eq!(
            enc(|o| write_msg_head(o, b"a", b"22", None, 1_048_576)),
            b"MSG a 22 1048576\r\n"
        );
        assert_eq!(
            enc(|o| write_hmsg(o, b"foo", b"1", Some(b"r"), b"NATS/1.0\r\n\r\n", b"hi")),
            b"HMSG foo 1 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        );
        assert_eq!(
            enc(|o| write_hmsg_head(o, b"foo", b"1", None, 12, 12)),
            b"HMSG foo 1 12 12\r\n"
        );
        assert_eq!(
            enc(|o| write_info(o, b"{\"server_id\":\"x\"}")),
            b"INFO {\"server_id\":\"x\"}\r\n"
        );
        assert_eq!(
            enc(|o| write_err(o, "'Unknown Protocol Operation'")),
            b"-ERR 'Unknown Protocol Operation'\r\n"
        );
        assert_eq!(enc(write_ping), b"PING\r\n");
        assert_eq!(enc(write_pong), b"PONG\r\n");
        assert_eq!(enc(write_ok), b"+OK\r\n");
    }

    #[test]
    fn msg_head_reserves_payload() {
        let mut out = BytesMut::new();
        write_msg_head(&mut out, b"subject", b"1", None, 1000);
        assert!(out.capacity() - out.len() >= 1002);
    }

    #[test]
    fn client_ops_round_trip() {
        let ops = [
            ClientOp::Connect(b"{\"verbose\":false}"),
            ClientOp::Pub {
                subject: b"foo",
                reply: None,
                payload: b"a\r\nb",
            },
            ClientOp::Pub {
                subject: b"foo",
                reply: Some(b"bar"),
                payload: b"",
            },
            ClientOp::HPub {
                subject: b"foo",
                reply: Some(b"bar"),
                headers: b"NATS/1.0\r\nK: v\r\n\r\n",
                payload: b"xyz",
            },
            ClientOp::HPub {
                subject: b"foo",
                reply: None,
                headers: b"",
                payload: b"",
            },
            ClientOp::Sub {
                subject: b"foo.>",
                queue: None,
                sid: b"1",
            },
            ClientOp::Sub {
                subject: b"foo.*",
                queue: Some(b"q"),
                sid: b"2",
            },
            ClientOp::Unsub {
                sid: b"1",
                max: None,
            },
            ClientOp::Unsub {
                sid: b"2",
                max: Some(u64::MAX),
            },
            ClientOp::Ping,
            ClientOp::Pong,
        ];
        for op in ops {
            let bytes = enc(|o| write_client_op(o, &op));
            let (back, n) = parse_client_op(&bytes, &Limits::default())
                .unwrap()
                .unwrap();
            assert_eq!(back, op);
            assert_eq!(n, bytes.len());
        }
        assert_eq!(
            enc(|o| write_client_op(
                o,
                &ClientOp::Sub {
                    subject: b"a",
                    queue: Some(b"q"),
                    sid: b"9"
                }
            )),
            b"SUB a q 9\r\n"
        );
        assert_eq!(
            enc(|o| write_client_op(
                o,
                &ClientOp::Unsub {
                    sid: b"9",
                    max: Some(5)
                }
            )),
            b"UNSUB 9 5\r\n"
        );
        assert_eq!(
            enc(|o| write_client_op(
                o,
                &ClientOp::HPub {
                    subject: b"s",
                    reply: None,
                    headers: b"NATS/1.0\r\n\r\n",
                    payload: b"p"
                }
            )),
            b"HPUB s 12 13\r\nNATS/1.0\r\n\r\np\r\n"
        );
    }
}
