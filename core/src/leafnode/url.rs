//! Remote URLs: `nats-leaf://[user[:password]@]host[:port]`, or `tls://...` for a link over TLS;
//! `ws://...` and `wss://...` (port 80 and 443 by default) for a link over WebSocket through
//! the hub's websocket port (nats-server's; needs the `websocket` feature). A remote's URLs
//! are all WebSocket or none, as nats-server requires.
//!
//! A URL is displayed (logs, `/leafz`, metric labels, errors) with its credentials hidden by
//! [`crate::redact`]: `user:[REDACTED]@`, or `[REDACTED]@` for a lone user name (a token).

use std::fmt;

use crate::config::DEFAULT_LEAFNODE_PORT;
use crate::redact;

/// A parsed remote URL. `Display` hides the password and a lone user name (a token).
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (default 7422).
    pub port: u16,
    /// User name from the userinfo.
    pub user: Option<String>,
    /// Password from the userinfo.
    pub pass: Option<String>,
    /// The link uses TLS (a `tls://` or `wss://` URL, or a remote with a `tls` table).
    pub tls: bool,
    /// The link runs over WebSocket (`ws://` or `wss://`).
    pub ws: bool,
}

/// Why a remote URL cannot be used. The URL in the message has its credentials hidden.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not `scheme://...`.
    #[error("`{0}` is not a URL like nats-leaf://host:7422")]
    Malformed(String),
    /// A scheme this build cannot connect with.
    #[error("`{url}`: the {scheme}:// scheme is not supported (use nats-leaf://, tls://, ws:// or wss://)")]
    Unsupported {
        /// The URL, credentials hidden.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The port is not a number.
    #[error("`{0}`: invalid port")]
    BadPort(String),
    /// A `ws://`/`wss://` URL in a build without WebSocket support.
    #[error("`{0}`: built without websocket support (cargo feature `websocket`)")]
    NoWebSocket(String),
}

impl RemoteUrl {
    /// Parses a remote URL. The schemes `nats-leaf` and `nats` (plain), `tls` (TLS), `ws`
    /// and `wss` (WebSocket, plain or TLS; refused in a build without the `websocket`
    /// feature) are accepted. Userinfo may be percent-encoded.
    pub fn parse(text: &str) -> Result<RemoteUrl, UrlError> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| UrlError::Malformed(redact::url(text).into_owned()))?;
        let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let scheme = scheme.to_ascii_lowercase();
        let ws = scheme == "ws" || scheme == "wss";
        let tls = scheme == "tls" || scheme == "wss";
        if ws && !cfg!(feature = "websocket") {
            return Err(UrlError::NoWebSocket(redact::url(text).into_owned()));
        }
        if scheme != "nats-leaf" && scheme != "nats" && !tls && !ws {
            return Err(UrlError::Unsupported {
                url: redact::url(text).into_owned(),
                scheme,
            });
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::Malformed(redact::url(text).into_owned()))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::Malformed(redact::url(text).into_owned()));
        }
        let port = match port {
            None | Some("") if ws => {
                if tls {
                    443
                } else {
                    80
                }
            }
            None | Some("") => DEFAULT_LEAFNODE_PORT,
            Some(p) => p
                .parse()
                .map_err(|_| UrlError::BadPort(redact::url(text).into_owned()))?,
        };
        let (user, pass) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(info)), None),
            },
        };
        Ok(RemoteUrl {
            host: host.to_owned(),
            port,
            user: user.filter(|u| !u.is_empty()),
            pass,
            tls,
            ws,
        })
    }

    /// `host:port` for connecting.
    /// The URL of another server of the same hub cluster, announced as `host:port` in the
    /// hub's `leafnode_urls`: this URL's scheme, credentials and TLS with that address.
    /// `None` when `announced` is not `host:port`.
    pub fn sibling(&self, announced: &str) -> Option<RemoteUrl> {
        let (host, port) = announced.trim().rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(RemoteUrl {
            host: host.to_owned(),
            port: port.parse().ok()?,
            ..self.clone()
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.ws, self.tls) {
            (true, true) => "wss://",
            (true, false) => "ws://",
            (false, true) => "tls://",
            (false, false) => "nats-leaf://",
        })?;
        redact::write_userinfo(f, self.user.as_deref(), self.pass.as_deref())?;
        f.write_str(&self.addr())
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteUrl({self})")
    }
}

/// Percent-decodes `s` (invalid escapes are kept as written).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_take_scheme_and_credentials() {
        let u = RemoteUrl::parse("tls://u:p@hub-a:7422").unwrap();
        let b = u.sibling("10.0.0.2:7423").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("10.0.0.2", 7423, true));
        assert_eq!(
            (b.user.as_deref(), b.pass.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(u.sibling("[::1]:7").unwrap().host, "::1");
        assert!(u.sibling("nohost").is_none());
        assert!(u.sibling("h:notaport").is_none());
    }

    #[test]
    fn parses_forms() {
        let u = RemoteUrl::parse("nats-leaf://hub:7000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user, u.pass),
            ("hub", 7000, None, None)
        );
        let u = RemoteUrl::parse("nats-leaf://a%40b:p%3Aw@10.0.0.1").unwrap();
        assert_eq!(u.port, 7422);
        assert_eq!(u.user.as_deref(), Some("a@b"));
        assert_eq!(u.pass.as_deref(), Some("p:w"));
        assert_eq!(u.to_string(), "nats-leaf://a@b:[REDACTED]@10.0.0.1:7422");
        let u = RemoteUrl::parse("nats://tok@[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.user.as_deref(), Some("tok"));
        assert_eq!(u.addr(), "[::1]:9");
        // A lone user name is a token: hidden too.
        assert_eq!(u.to_string(), "nats-leaf://[REDACTED]@[::1]:9");
        assert_eq!(
            format!("{u:?}"),
            "RemoteUrl(nats-leaf://[REDACTED]@[::1]:9)"
        );
    }

    #[test]
    fn tls_scheme() {
        let u = RemoteUrl::parse("TLS://u:secret@hub").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 7422);
        assert_eq!(u.to_string(), "tls://u:[REDACTED]@hub:7422");
        assert!(!RemoteUrl::parse("nats-leaf://hub").unwrap().tls);
    }

    #[test]
    fn websocket_schemes() {
        let parsed = RemoteUrl::parse("ws://u:secret@hub:8080");
        if !cfg!(feature = "websocket") {
            let e = parsed.unwrap_err();
            assert!(matches!(e, UrlError::NoWebSocket(_)));
            assert!(
                e.to_string().contains("built without websocket support"),
                "{e}"
            );
            assert!(!e.to_string().contains("secret"));
            return;
        }
        let u = parsed.unwrap();
        assert_eq!((u.ws, u.tls, u.port), (true, false, 8080));
        assert_eq!(u.to_string(), "ws://u:[REDACTED]@hub:8080");
        let u = RemoteUrl::parse("WSS://hub").unwrap();
        assert_eq!((u.ws, u.tls, u.port), (true, true, 443));
        assert_eq!(u.to_string(), "wss://hub:443");
        assert_eq!(RemoteUrl::parse("ws://hub/").unwrap().port, 80);
        assert!(!RemoteUrl::parse("tls://hub").unwrap().ws);
    }

    #[test]
    fn refuses_what_is_not_supported() {
        let e = RemoteUrl::parse("http://u:secret@hub:7422").unwrap_err();
        assert!(matches!(e, UrlError::Unsupported { .. }));
        assert!(!e.to_string().contains("secret"));
        // The errors of URLs that do not parse hide credentials too.
        for bad in [
            "u:secret@hub:7422",
            "nats-leaf://u:secret@hub:x",
            "nats-leaf://secret@",
            "nats-leaf://secret@[::1",
            "wss://secret@hub:x",
        ] {
            let e = RemoteUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret") && e.contains("[REDACTED]@"), "{e}");
        }
        assert!(matches!(
            RemoteUrl::parse("https://hub"),
            Err(UrlError::Unsupported { .. })
        ));
        assert!(matches!(
            RemoteUrl::parse("hub:7422"),
            Err(UrlError::Malformed(_))
        ));
        assert!(matches!(
            RemoteUrl::parse("nats-leaf://hub:x"),
            Err(UrlError::BadPort(_))
        ));
    }
}
