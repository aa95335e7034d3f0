//! Origin checks of the WebSocket upgrade, as nats-server's (`same_origin`,
//! `allowed_origins`).
//!
//! Only browsers send `Origin` (or the older `Sec-WebSocket-Origin`); a request without it is
//! accepted whatever the settings, since any other client can claim any origin (RFC 6455
//! §1.6). With `same_origin` the origin's host and port must be the request's `Host` (port
//! defaulting to 80, or 443 over TLS); with `allowed_origins` its scheme, host and port must
//! be one of the list's. Both may be set: then both must pass.

/// A parsed origin: `scheme://host[:port]`, the port defaulted from the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https` (lower case; any other scheme keeps its name).
    pub scheme: String,
    /// Host name or address, lower case, IPv6 without brackets.
    pub host: String,
    /// Port: the URL's, else 443 for `https`/`wss`, else 80.
    pub port: u16,
}

/// Why an origin is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// Not `scheme://host[:port]`.
    #[error("`{0}` is not an origin like https://host:port")]
    Malformed(String),
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing path is ignored).
    pub fn parse(text: &str) -> Result<Origin, OriginError> {
        let bad = || OriginError::Malformed(crate::redact::url(text).into_owned());
        let (scheme, rest) = text.trim().split_once("://").ok_or_else(bad)?;
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let tls = scheme == "https" || scheme == "wss";
        let (host, port) = host_and_port(authority, tls).ok_or_else(bad)?;
        Ok(Origin { scheme, host, port })
    }
}

/// `host[:port]` (IPv6 in brackets), the port defaulted to 443 with `tls`, else 80. `None`
/// when the host is empty or the port not a number.
pub fn host_and_port(authority: &str, tls: bool) -> Option<(String, u16)> {
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The origin rules of one listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginRules {
    /// The origin must be the request's `Host`.
    pub same_origin: bool,
    /// The origin must be one of these (empty: any).
    pub allowed: Vec<Origin>,
}

impl OriginRules {
    /// Whether nothing is checked.
    pub fn is_open(&self) -> bool {
        !self.same_origin && self.allowed.is_empty()
    }

    /// Checks the request's `origin` header (if any) against the rules; `host` is the
    /// request's `Host` header and `tls` whether it came over TLS. The error says why, for
    /// the 403 and the log.
    pub fn check(&self, origin: Option<&str>, host: &str, tls: bool) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        let Some(origin) = origin.filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let parsed = Origin::parse(origin).map_err(|e| e.to_string())?;
        if self.same_origin {
            let (rh, rp) =
                host_and_port(host, tls).ok_or_else(|| "invalid Host header".to_owned())?;
            if parsed.host != rh || parsed.port != rp {
                return Err("not same origin".into());
            }
        }
        if !self.allowed.is_empty() && !self.allowed.contains(&parsed) {
            return Err("not in the allowed list".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_with_default_ports() {
        let o = Origin::parse("https://Example.com").unwrap();
        assert_eq!(
            o,
            Origin {
                scheme: "https".into(),
                host: "example.com".into(),
                port: 443
            }
        );
        assert_eq!(Origin::parse("http://h:8080/x").unwrap().port, 8080);
        assert_eq!(Origin::parse("http://[::1]:81").unwrap().host, "::1");
        assert_eq!(Origin::parse("http://h").unwrap().port, 80);
        for bad in ["h:80", "http://", "http://h:x", "://h", "ht tp://h"] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_as_nats_server() {
        let open = OriginRules::default();
        assert!(open.check(Some("http://evil"), "h:1", false).is_ok());
        let same = OriginRules {
            same_origin: true,
            allowed: Vec::new(),
        };
        assert!(
            same.check(None, "h:8080", false).is_ok(),
            "no Origin header"
        );
        assert!(same.check(Some("http://h:8080"), "h:8080", false).is_ok());
        assert!(same.check(Some("https://h"), "h", true).is_ok(), "443 both");
        assert_eq!(
            same.check(Some("http://other:8080"), "h:8080", false),
            Err("not same origin".into())
        );
        assert!(same.check(Some("http://h:8081"), "h:8080", false).is_err());
        let listed = OriginRules {
            same_origin: false,
            allowed: vec![Origin::parse("https://panel.local:8443").unwrap()],
        };
        assert!(listed
            .check(Some("https://panel.local:8443"), "x", false)
            .is_ok());
        assert!(listed
            .check(Some("http://panel.local:8443"), "x", false)
            .is_err());
        assert!(listed
            .check(Some("https://panel.local"), "x", false)
            .is_err());
        assert!(listed.check(Some("garbage"), "x", false).is_err());
    }
}
