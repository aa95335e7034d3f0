//! Reading and writing NATS header blocks (`NATS/1.0[ status[ description]]\r\nKey: value\r\n...\r\n\r\n`).

/// Returns the first value of header `name` (case-insensitive, as nats-server matches them),
/// trimmed, or `None`.
pub fn get<'a>(block: &'a [u8], name: &str) -> Option<&'a [u8]> {
    fields(block)
        .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, value)| value)
}

/// Every `(name, trimmed value)` of a header block, in order (lines without a colon are
/// skipped). One pass for callers that look for several headers.
pub fn fields(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut lines = block.split(|&b| b == b'\n');
    let _version = lines.next();
    lines
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (key, rest) = line.split_at(colon);
            Some((key, trim(rest.get(1..).unwrap_or_default())))
        })
}

/// Like [`get`], as UTF-8 text.
pub fn get_str<'a>(block: &'a [u8], name: &str) -> Option<&'a str> {
    get(block, name).and_then(|v| std::str::from_utf8(v).ok())
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if first.is_ascii_whitespace() {
            v = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = v {
        if last.is_ascii_whitespace() {
            v = rest;
        } else {
            break;
        }
    }
    v
}

/// Builds a header block line by line.
#[derive(Debug, Default)]
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// A block starting with `NATS/1.0` and an optional status and description.
    pub fn new(status: Option<(u16, &str)>) -> Self {
        let mut buf = b"NATS/1.0".to_vec();
        if let Some((code, text)) = status {
            buf.extend_from_slice(format!(" {code}").as_bytes());
            if !text.is_empty() {
                buf.push(b' ');
                buf.extend_from_slice(text.as_bytes());
            }
        }
        buf.extend_from_slice(b"\r\n");
        Builder { buf }
    }

    /// Adds `name: value`.
    pub fn add(mut self, name: &str, value: &str) -> Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Adds every header line of an existing block (not its version/status line).
    pub fn add_block(mut self, block: &[u8]) -> Self {
        for line in block.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            self.buf.extend_from_slice(line);
            self.buf.extend_from_slice(b"\r\n");
        }
        self
    }

    /// The finished block.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_trimmed() {
        let block = b"NATS/1.0\r\nNats-Msg-Id:  abc \r\nX: 1\r\nx: 2\r\n\r\n";
        assert_eq!(get(block, "nats-msg-id"), Some(&b"abc"[..]));
        assert_eq!(get(block, "X"), Some(&b"1"[..]));
        assert_eq!(get(block, "missing"), None);
        assert_eq!(get(b"NATS/1.0 503\r\n\r\n", "x"), None);
        let all: Vec<_> = fields(block).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], (&b"x"[..], &b"2"[..]));
    }

    #[test]
    fn builder_round_trips() {
        let block = Builder::new(Some((404, "Message Not Found")))
            .add("Nats-Stream", "S")
            .finish();
        assert_eq!(
            block,
            b"NATS/1.0 404 Message Not Found\r\nNats-Stream: S\r\n\r\n".to_vec()
        );
        let copy = Builder::new(None).add_block(&block).add("A", "b").finish();
        assert_eq!(get_str(&copy, "nats-stream"), Some("S"));
        assert_eq!(get_str(&copy, "a"), Some("b"));
    }
}
