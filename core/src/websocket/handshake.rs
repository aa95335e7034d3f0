//! The server side of the HTTP/1.1 upgrade to WebSocket (RFC 6455 §4.2), checked as
//! nats-server checks it: `GET`, a `Host`, `Upgrade: websocket`, `Connection: Upgrade`, a
//! `Sec-WebSocket-Key`, version 13, then the origin rules ([`super::origin`]). The path
//! chooses the kind of connection: one starting with `/leafnode` is a leafnode link (how a
//! nats-server leaf and leafd's `ws://` remotes connect), any other a client.
//!
//! The request is read whole before anything is answered, at most [`MAX_REQUEST`] bytes (a
//! browser's cookies included); bytes after it (a client that did not wait for the 101)
//! are refused, as nats-server does. A refusal is an HTTP error status with its reason as the
//! body, then the connection is closed.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::origin::OriginRules;

/// The largest upgrade request read (request line and headers).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;
/// The path prefix of leafnode connections (nats-server's).
pub const LEAF_PATH: &str = "/leafnode";
/// The GUID of the accept key (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the upgrade is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A NATS client.
    Client,
    /// A leafnode link (path `/leafnode`).
    Leaf,
}

/// An accepted upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Client or leaf.
    pub kind: Kind,
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// The `User-Agent` started with `Mozilla/` (a browser).
    pub browser: bool,
}

/// A refused upgrade: the HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Refusal {
    /// 400, 403, 405 or 431.
    pub status: u16,
    /// Why, for the response body and the log.
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// Reads the upgrade request: up to the blank line after the headers, at most
/// [`MAX_REQUEST`] bytes. `Ok(None)`: the peer closed first.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<Vec<u8>>, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find_end(&buf) {
            if end != buf.len() {
                return Err(refuse(400, "client sent data before handshake is complete"));
            }
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Err(refuse(431, "request header fields too large"));
        }
        let room = (MAX_REQUEST - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]).await {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Ok(None),
        }
    }
}

/// The length of the request up to and including its blank line, once complete.
fn find_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Whether header `name` lists `token` (comma-separated, any case).
fn lists(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// Checks a complete upgrade request (`tls`: it came over TLS, for `same_origin`).
pub fn check(raw: &[u8], origins: &OriginRules, tls: bool) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(refuse(400, "incomplete request")),
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many header fields")),
        Err(e) => return Err(refuse(400, format!("malformed request: {e}"))),
    }
    if req.method != Some("GET") {
        return Err(refuse(405, "request method must be GET"));
    }
    let path = req.path.unwrap_or("/");
    let headers = req.headers;
    let host = header(headers, "Host").unwrap_or_default();
    if host.is_empty() {
        return Err(refuse(400, "'Host' missing in request"));
    }
    if !lists(headers, "Upgrade", "websocket") {
        return Err(refuse(400, "invalid value for header 'Upgrade'"));
    }
    if !lists(headers, "Connection", "Upgrade") {
        return Err(refuse(400, "invalid value for header 'Connection'"));
    }
    let key = header(headers, "Sec-WebSocket-Key").unwrap_or_default();
    if key.is_empty() {
        return Err(refuse(400, "key missing"));
    }
    if !lists(headers, "Sec-WebSocket-Version", "13") {
        return Err(refuse(400, "invalid version"));
    }
    let origin = header(headers, "Origin").or_else(|| header(headers, "Sec-WebSocket-Origin"));
    origins
        .check(origin, host, tls)
        .map_err(|why| refuse(403, format!("origin not allowed: {why}")))?;
    let kind = if path.starts_with(LEAF_PATH) {
        Kind::Leaf
    } else {
        Kind::Client
    };
    let browser = header(headers, "User-Agent").is_some_and(|ua| ua.starts_with("Mozilla/"));
    Ok(Request {
        kind,
        key: key.to_owned(),
        browser,
    })
}

/// `Sec-WebSocket-Accept` for `key`: base64 of the SHA-1 of the key and the GUID.
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// The 101 answer to an accepted request.
pub fn switching(req: &Request) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&req.key)
    )
    .into_bytes()
}

/// The answer to a refused request: its status, the reason as a plain-text body.
pub fn refusal(r: &Refusal) -> Vec<u8> {
    let text = match r.status {
        403 => "Forbidden",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    format!(
        "HTTP/1.1 {} {text}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        r.status,
        r.reason.len(),
        r.reason
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET / HTTP/1.1\r\nHost: h:8080\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n";

    fn req(extra: &str) -> Vec<u8> {
        format!("{GOOD}{extra}\r\n").into_bytes()
    }

    #[test]
    fn the_rfc_example_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_valid_request_and_its_kind() {
        let open = OriginRules::default();
        let r = check(&req(""), &open, false).unwrap();
        assert_eq!(r.kind, Kind::Client);
        let leaf = GOOD.replacen("GET / ", "GET /leafnode ", 1) + "\r\n";
        assert_eq!(
            check(leaf.as_bytes(), &open, false).unwrap().kind,
            Kind::Leaf
        );
        assert!(switching(&r)
            .windows(28)
            .any(|w| w == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn refusals_as_nats_server() {
        let open = OriginRules::default();
        let post = GOOD.replacen("GET", "POST", 1) + "\r\n";
        assert_eq!(
            check(post.as_bytes(), &open, false).unwrap_err().status,
            405
        );
        let no_upgrade = GOOD.replace("Upgrade: websocket\r\n", "") + "\r\n";
        assert_eq!(
            check(no_upgrade.as_bytes(), &open, false)
                .unwrap_err()
                .reason,
            "invalid value for header 'Upgrade'"
        );
        let old = GOOD.replace("Version: 13", "Version: 8") + "\r\n";
        assert_eq!(
            check(old.as_bytes(), &open, false).unwrap_err().reason,
            "invalid version"
        );
        let same = OriginRules {
            same_origin: true,
            allowed: Vec::new(),
        };
        let e = check(&req("Origin: http://evil:8080\r\n"), &same, false).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(String::from_utf8(refusal(&e))
            .unwrap()
            .starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(check(&req("Origin: http://h:8080\r\n"), &same, false).is_ok());
        assert_eq!(
            check(b"\x16\x03\x01garbage\r\n\r\n", &open, false)
                .unwrap_err()
                .status,
            400
        );
    }

    proptest::proptest! {
        /// Whatever a peer sends as its upgrade request, the check answers (a request or a
        /// refusal with a 4xx status) and never panics; a valid request with any header
        /// noise added is still accepted or refused for a reason.
        #[test]
        fn any_bytes_get_an_answer(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let rules = OriginRules { same_origin: true, allowed: Vec::new() };
            if let Err(r) = check(&raw, &rules, false) {
                proptest::prop_assert!((400..500).contains(&r.status), "{r}");
            }
        }

        #[test]
        fn any_header_value_gets_an_answer(value in "[ -~]{0,80}") {
            let raw = req(&format!("Origin: {value}\r\nX-Any: {value}\r\n"));
            let rules = OriginRules { same_origin: true, allowed: Vec::new() };
            if let Err(r) = check(&raw, &rules, false) {
                proptest::prop_assert!(r.status == 403 || r.status == 400, "{r}");
            }
        }
    }

    #[tokio::test]
    async fn reading_is_bounded() {
        let mut big = std::io::Cursor::new(vec![b'a'; MAX_REQUEST * 2]);
        assert_eq!(read_request(&mut big).await.unwrap_err().status, 431);
        let mut early =
            std::io::Cursor::new(req("").into_iter().chain(*b"PING").collect::<Vec<_>>());
        assert_eq!(read_request(&mut early).await.unwrap_err().status, 400);
        let mut ok = std::io::Cursor::new(req(""));
        assert_eq!(read_request(&mut ok).await.unwrap().unwrap(), req(""));
    }
}
