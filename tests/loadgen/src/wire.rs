//! Just enough of the NATS client protocol, over a blocking `TcpStream`.

use super::{Result, MAX_LINE, WAIT_LIMIT};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A user name and password for `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub pass: String,
}

/// Splits `[scheme://][user:password@]host:port` into the address and the credentials it
/// carries (a user without `:password` has an empty password). Any scheme is ignored.
pub fn split_url(url: &str) -> (&str, Option<Credentials>) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.rsplit_once('@') {
        Some((userinfo, addr)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let creds = Credentials {
                user: user.to_owned(),
                pass: pass.to_owned(),
            };
            (addr, Some(creds))
        }
        None => (rest, None),
    }
}

/// Connects to `url` (`HOST:PORT`, an optional `nats://` prefix and `user:password@` are
/// understood), reads `INFO`, sends `CONNECT` and a `PING`, and waits for the `PONG`.
///
/// Returns the stream and a [`Reader`] holding any bytes read past the `PONG`.
pub fn connect(url: &str) -> Result<(TcpStream, Reader)> {
    connect_as(url, None)
}

/// [`connect`], logging in with `creds` when the URL carries none.
pub fn connect_as(url: &str, creds: Option<&Credentials>) -> Result<(TcpStream, Reader)> {
    let (addr, url_creds) = split_url(url);
    let creds = url_creds.as_ref().or(creds);
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    // A server that stops reading must not hang a publisher forever.
    stream.set_write_timeout(Some(WAIT_LIMIT))?;
    let mut reader = Reader::new();
    let info = reader.read_line(&mut stream)?;
    if !info.starts_with(b"INFO") {
        return Err(format!("expected INFO, got {:?}", String::from_utf8_lossy(&info)).into());
    }
    let mut connect = serde_json::json!({
        "verbose": false, "pedantic": false, "headers": false,
        "name": "loadgen", "lang": "rust", "version": "0.1.0", "protocol": 1,
    });
    if let (Some(c), Some(obj)) = (creds, connect.as_object_mut()) {
        obj.insert("user".into(), c.user.clone().into());
        obj.insert("pass".into(), c.pass.clone().into());
    }
    stream.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())?;
    reader
        .wait_pong(&mut stream)
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok((stream, reader))
}

/// What a [`Reader`] saw in one call to [`Reader::feed`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// `MSG`/`HMSG` frames completed.
    pub msgs: u64,
    /// `PING`s from the server that need a `PONG`.
    pub pings: u32,
    /// `PONG`s from the server.
    pub pongs: u32,
    /// `MSG` frames completed on the probe subscription (sid [`PROBE_SID`]).
    pub probes: u64,
}

/// Subscription id whose messages count as probes, not as measured messages.
pub const PROBE_SID: &[u8] = b"p";

/// Incremental parser of server-to-client traffic that counts messages
/// without copying payloads.
#[derive(Debug)]
pub struct Reader {
    /// Payload bytes (plus CRLF) still to skip.
    skip: usize,
    /// Whether the message being skipped belongs to the probe subscription.
    skip_probe: bool,
    /// Partial protocol line carried over between reads.
    line: Vec<u8>,
    /// Bytes read during the handshake and not consumed yet.
    pending: Vec<u8>,
    /// First `-ERR` line received, if any.
    pub error: Option<String>,
}

impl Reader {
    /// A reader at the start of a connection.
    pub fn new() -> Reader {
        Reader {
            skip: 0,
            skip_probe: false,
            line: Vec::new(),
            pending: Vec::new(),
            error: None,
        }
    }

    /// Reads one raw CRLF-terminated line (handshake use only).
    fn read_line(&mut self, stream: &mut TcpStream) -> Result<Vec<u8>> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let rest = self.pending.split_off(i + 1);
                let line = std::mem::replace(&mut self.pending, rest);
                return Ok(line);
            }
            if self.pending.len() > MAX_LINE {
                return Err("protocol line too long".into());
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for a line from the server".into());
            }
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            match stream.read(&mut buf) {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => self
                    .pending
                    .extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads until a `PONG` arrives, answering `PING`s and counting nothing else.
    pub fn wait_pong(&mut self, stream: &mut TcpStream) -> Result<u64> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut msgs = 0u64;
        let pending = std::mem::take(&mut self.pending);
        let mut seen = self.feed(&pending)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            msgs += seen.msgs;
            for _ in 0..seen.pings {
                stream.write_all(b"PONG\r\n")?;
            }
            if seen.pongs > 0 {
                stream.set_read_timeout(None)?;
                return Ok(msgs);
            }
            if let Some(err) = &self.error {
                return Err(format!("server error: {err}").into());
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for PONG".into());
            }
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            seen = match stream.read(&mut buf) {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => self.feed(buf.get(..n).unwrap_or_default())?,
                Err(e) if is_timeout(&e) => Seen::default(),
                Err(e) => return Err(e.into()),
            };
        }
    }

    /// Takes the bytes read past the handshake (to be fed before new reads).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Consumes `buf`, counting complete messages and control lines.
    pub fn feed(&mut self, mut buf: &[u8]) -> Result<Seen> {
        let mut seen = Seen::default();
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                self.skip -= n;
                buf = buf.get(n..).unwrap_or_default();
                if self.skip > 0 {
                    return Ok(seen);
                }
                if self.skip_probe {
                    seen.probes += 1;
                } else {
                    seen.msgs += 1;
                }
            }
            if buf.is_empty() {
                return Ok(seen);
            }
            match buf.iter().position(|&b| b == b'\n') {
                None => {
                    self.line.extend_from_slice(buf);
                    if self.line.len() > MAX_LINE {
                        return Err("protocol line too long".into());
                    }
                    return Ok(seen);
                }
                Some(i) => {
                    let (head, tail) = buf.split_at(i + 1);
                    buf = tail;
                    if self.line.is_empty() {
                        self.control(head, &mut seen)?;
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(head);
                        self.control(&line, &mut seen)?;
                        line.clear();
                        self.line = line;
                    }
                }
            }
        }
    }

    /// Handles one complete line (with its `\r\n`).
    fn control(&mut self, line: &[u8], seen: &mut Seen) -> Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
            // The last field is the payload size (total size for HMSG).
            let size_field = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            let size = parse_usize(size_field)
                .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(line)))?;
            self.skip = size + 2;
            // `MSG subject sid ...`: the second field is the subscription id.
            self.skip_probe = line.split(|&b| b == b' ').nth(2) == Some(PROBE_SID);
        } else if line.starts_with(b"PING") {
            seen.pings += 1;
        } else if line.starts_with(b"PONG") {
            seen.pongs += 1;
        } else if line.starts_with(b"-ERR") {
            if self.error.is_none() {
                self.error = Some(String::from_utf8_lossy(line).into_owned());
            }
        } else if line.starts_with(b"+OK") || line.starts_with(b"INFO") || line.is_empty() {
            // Nothing to do.
        } else {
            return Err(format!(
                "unexpected protocol line {:?}",
                String::from_utf8_lossy(line)
            )
            .into());
        }
        Ok(())
    }
}

/// Parses ASCII decimal digits.
fn parse_usize(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + usize::from(d - b'0'))
    })
}

/// True for the errors a socket read timeout produces.
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Pre-encodes as many `PUB subject size` frames as fit in about `target`
/// bytes (at least one).
pub fn pub_frames(subject: &str, size: usize, target: usize) -> (Vec<u8>, usize) {
    let mut frame = format!("PUB {subject} {size}\r\n").into_bytes();
    frame.extend((0..size).map(|i| b'a' + (i % 26) as u8));
    frame.extend_from_slice(b"\r\n");
    let count = (target / frame.len()).max(1);
    (frame.repeat(count), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(split_url("127.0.0.1:4222"), ("127.0.0.1:4222", None));
        assert_eq!(split_url("nats://127.0.0.1:1"), ("127.0.0.1:1", None));
        let (addr, creds) = split_url("nats-leaf://u:p:w@h:2");
        assert_eq!(addr, "h:2");
        let creds = creds.unwrap_or_else(|| panic!("no credentials"));
        assert_eq!((creds.user.as_str(), creds.pass.as_str()), ("u", "p:w"));
        let (_, creds) = split_url("tok@h:3");
        assert_eq!(
            creds.map(|c| (c.user, c.pass)),
            Some(("tok".into(), "".into()))
        );
    }

    #[test]
    fn counts_split_messages() {
        let wire = b"MSG a 1 3\r\nabc\r\nPING\r\nMSG a 1 reply 0\r\n\r\nHMSG a 1 12 14\r\nNATS/1.0\r\n\r\nxy\r\n";
        for cut in 0..wire.len() {
            let mut r = Reader::new();
            let (a, b) = wire.split_at(cut);
            let s1 = r.feed(a).unwrap_or_default();
            let s2 = r.feed(b).unwrap_or_default();
            assert_eq!(s1.msgs + s2.msgs, 3, "cut at {cut}");
            assert_eq!(s1.pings + s2.pings, 1, "cut at {cut}");
        }
    }

    #[test]
    fn separates_probes() {
        let wire = b"MSG bench.probe p 0\r\n\r\nMSG bench.s 1 2\r\nab\r\nMSG x p r 1\r\nz\r\n";
        for cut in 0..wire.len() {
            let mut r = Reader::new();
            let (a, b) = wire.split_at(cut);
            let s1 = r.feed(a).unwrap_or_default();
            let s2 = r.feed(b).unwrap_or_default();
            assert_eq!(s1.msgs + s2.msgs, 1, "cut at {cut}");
            assert_eq!(s1.probes + s2.probes, 2, "cut at {cut}");
        }
    }
}
