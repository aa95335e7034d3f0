//! Errors raised while decoding the client protocol.

use thiserror::Error;

/// Why a buffer could not be decoded as a client protocol operation (or, by
/// [`parse_leaf_op`](super::parse_leaf_op), as a leafnode one).
///
/// Every variant is fatal for the connection: the server answers with
/// `-ERR <`[`ParseError::err_text`]`>` (or closes silently, as nats-server does for malformed
/// arguments) and drops the client, because the byte stream can no longer be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes at the start of the buffer do not name a known operation, or the name is not
    /// followed by a space, a tab or a line end.
    #[error("unknown protocol operation")]
    UnknownOp,
    /// The control line is longer than [`Limits::max_control_line`](super::Limits) bytes.
    /// Reported as soon as that many bytes are buffered without a line end.
    #[error("maximum control line exceeded")]
    ControlLineTooLong,
    /// The payload size declared by `PUB`/`HPUB` (or `LMSG`/`HMSG` on a leafnode link) exceeds
    /// [`Limits::max_payload`](super::Limits). Reported as soon as the control line is complete,
    /// before any payload byte is needed.
    #[error("maximum payload exceeded")]
    MaxPayload,
    /// The arguments of an operation are malformed: wrong number of fields, a size that is not
    /// a decimal number (or overflows), a header size larger than the total size, an empty
    /// `CONNECT`; on a leafnode link also an `LS+` weight that is not a `u32`, a missing or
    /// unknown `+`/`|` queue marker, an empty `INFO` or `-ERR`.
    #[error("invalid arguments for {op}")]
    BadArgs {
        /// The operation whose arguments were rejected (`"PUB"`, `"HPUB"`, `"SUB"`, `"UNSUB"`,
        /// `"CONNECT"`, `"PING"` or `"PONG"`; on a leafnode link also `"INFO"`, `"-ERR"`,
        /// `"+OK"`, `"LS+"`, `"LS-"`, `"LMSG"` or `"HMSG"`).
        op: &'static str,
    },
    /// The payload of a `PUB`/`HPUB` (`LMSG`/`HMSG`) is not followed by `\r\n`, so the declared
    /// size is wrong.
    #[error("message payload is not followed by CRLF")]
    MissingPayloadTerminator,
    /// The header block of an `HPUB` (or leafnode `HMSG`) does not start with `NATS/1.0`.
    #[error("message headers do not start with NATS/1.0")]
    BadHeaders,
}

impl ParseError {
    /// The text a server sends after `-ERR ` for this error, single quotes included.
    ///
    /// The texts follow nats-server 2.9 where it sends one: `'Unknown Protocol Operation'` (also
    /// for a payload without its `\r\n`), `'maximum control line exceeded'` (lower case, as the
    /// real server sends it) and `'Maximum Payload Violation'`. nats-server closes the connection
    /// without an `-ERR` on malformed arguments and does not validate header blocks; for those
    /// cases the text is our own wording.
    pub fn err_text(&self) -> &'static str {
        match self {
            ParseError::UnknownOp | ParseError::MissingPayloadTerminator => {
                "'Unknown Protocol Operation'"
            }
            ParseError::ControlLineTooLong => "'maximum control line exceeded'",
            ParseError::MaxPayload => "'Maximum Payload Violation'",
            ParseError::BadArgs { op } => match *op {
                "PUB" => "'Invalid PUB Arguments'",
                "HPUB" => "'Invalid HPUB Arguments'",
                "SUB" => "'Invalid SUB Arguments'",
                "UNSUB" => "'Invalid UNSUB Arguments'",
                "CONNECT" => "'Invalid CONNECT Arguments'",
                _ => "'Invalid Protocol Arguments'",
            },
            ParseError::BadHeaders => "'Invalid Message Headers'",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_texts_are_quoted() {
        let all = [
            ParseError::UnknownOp,
            ParseError::ControlLineTooLong,
            ParseError::MaxPayload,
            ParseError::BadArgs { op: "PUB" },
            ParseError::BadArgs { op: "HPUB" },
            ParseError::BadArgs { op: "SUB" },
            ParseError::BadArgs { op: "UNSUB" },
            ParseError::BadArgs { op: "CONNECT" },
            ParseError::BadArgs { op: "PING" },
            ParseError::MissingPayloadTerminator,
            ParseError::BadHeaders,
        ];
        for e in all {
            let t = e.err_text();
            assert!(
                t.len() > 2 && t.starts_with('\'') && t.ends_with('\''),
                "{t}"
            );
            assert!(!t[1..t.len() - 1].contains('\''), "{t}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn nats_server_texts() {
        assert_eq!(
            ParseError::UnknownOp.err_text(),
            "'Unknown Protocol Operation'"
        );
        assert_eq!(
            ParseError::MaxPayload.err_text(),
            "'Maximum Payload Violation'"
        );
        assert_eq!(
            ParseError::ControlLineTooLong.err_text(),
            "'maximum control line exceeded'"
        );
        assert_eq!(
            ParseError::BadArgs { op: "PUB" }.err_text(),
            "'Invalid PUB Arguments'"
        );
    }
}
