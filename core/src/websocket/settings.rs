//! The `websocket` block: nats-server 2.9's `websocket { ... }` under the same key names.
//!
//! This type is compiled in every build, so a configuration with the block always parses;
//! [`WebSocket::validate`] then refuses it by name in a build without the `websocket`
//! feature ("built without websocket support"), and refuses what nats-server refuses (no
//! TLS without `no_tls`, a user or token beside the server's `users`) and what is not built
//! yet (`compression`, `jwt_cookie`, `no_auth_user`, `advertise`), each naming its key.

use std::time::Duration;

use serde::Deserialize;

use super::origin::Origin;
use crate::config::{value, ConfigError, TlsSettings};

/// Default time limit of the WebSocket upgrade (TLS handshake included): nats-server's 2 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `websocket` block: a listener for NATS clients (and leaves, on the path `/leafnode`)
/// speaking the NATS protocol inside WebSocket frames.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocket {
    /// Host to listen on (default: the top-level `host`).
    pub host: Option<String>,
    /// Port to listen on (0: any free port). Required unless `listen` gives it.
    pub port: Option<u16>,
    /// `host:port` to listen on (nats-server's `listen`), instead of `host` and `port`.
    pub listen: Option<String>,
    /// Plain WebSocket (`ws://`) without TLS: nats-server refuses a `websocket` block
    /// without `tls` unless this is set, and so do we.
    pub no_tls: bool,
    /// TLS (`wss://`): the certificate, and `ca_file` with `verify` to ask for clients'.
    pub tls: Option<TlsSettings>,
    /// permessage-deflate compression: not supported yet (refused when `true`).
    pub compression: bool,
    /// Only upgrades whose `Origin` is this server's own host and port (when the header is
    /// present).
    pub same_origin: bool,
    /// Only upgrades whose `Origin` (when present) is one of these (`scheme://host[:port]`;
    /// one string is a list of one, as nats-server takes it).
    #[serde(deserialize_with = "value::de_string_list")]
    pub allowed_origins: Vec<String>,
    /// Time limit of the TLS handshake and the HTTP upgrade (default 2 s).
    #[serde(deserialize_with = "value::de_duration")]
    pub handshake_timeout: Duration,
    /// Credentials every WebSocket client must present instead of the server's
    /// `authorization` (a user with a password, or a token).
    pub authorization: WsAuthorization,
    /// nats-server's user for clients without credentials: not supported yet.
    pub no_auth_user: Option<String>,
    /// nats-server's cookie carrying a user JWT: not supported yet.
    pub jwt_cookie: Option<String>,
    /// nats-server's advertised WebSocket URL for clusters: not supported yet.
    pub advertise: Option<String>,
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            host: None,
            port: None,
            listen: None,
            no_tls: false,
            tls: None,
            compression: false,
            same_origin: false,
            allowed_origins: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            authorization: WsAuthorization::default(),
            no_auth_user: None,
            jwt_cookie: None,
            advertise: None,
        }
    }
}

/// `websocket.authorization`: one user with a password, or a token, for every WebSocket
/// client (nats-server's block takes no `users`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsAuthorization {
    /// User name (with `password`).
    #[serde(alias = "username")]
    pub user: Option<String>,
    /// Its password (plain, or a bcrypt hash).
    #[serde(alias = "pass")]
    pub password: Option<String>,
    /// A token (`auth_token` in CONNECT); excludes `user`.
    pub token: Option<String>,
    /// Time a WebSocket client has to send CONNECT (default: the server's).
    #[serde(default, deserialize_with = "value::de_opt_duration")]
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for WsAuthorization {
    /// Secrets are redacted so the config can be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsAuthorization")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WsAuthorization {
    /// Whether the block sets credentials of its own.
    pub fn is_set(&self) -> bool {
        self.user.is_some() || self.token.is_some()
    }
}

/// The message of every WebSocket setting in a build without the feature.
pub const NOT_BUILT: &str = "built without websocket support (cargo feature `websocket`)";

impl WebSocket {
    /// The address to listen on: `listen`, else `host` (or `default_host`) and `port`.
    pub fn listen_addr(&self, default_host: &str) -> Result<(String, u16), ConfigError> {
        let (mut host, mut port) = (self.host.clone(), self.port);
        if let Some(listen) = &self.listen {
            let (h, p) = listen
                .rsplit_once(':')
                .ok_or_else(|| ConfigError::invalid("websocket.listen", "expected host:port"))?;
            let p = p
                .parse::<u16>()
                .map_err(|_| ConfigError::invalid("websocket.listen", "invalid port"))?;
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if !h.is_empty() {
                host = Some(h.to_owned());
            }
            port = Some(p);
        }
        let port = port.ok_or_else(|| {
            ConfigError::invalid(
                "websocket.port",
                "missing: the websocket block needs a port (or listen)",
            )
        })?;
        Ok((host.unwrap_or_else(|| default_host.to_owned()), port))
    }

    /// Checks the block against the rest of the configuration (`has_users`: the server's
    /// `authorization` has `users`, or accounts have users).
    pub fn validate(&self, default_host: &str, has_users: bool) -> Result<(), ConfigError> {
        if !cfg!(feature = "websocket") {
            return Err(ConfigError::invalid("websocket", NOT_BUILT));
        }
        self.listen_addr(default_host)?;
        if self.tls.is_none() && !self.no_tls {
            return Err(ConfigError::invalid(
                "websocket.tls",
                "missing: websocket requires TLS configuration (as nats-server); set \
                 websocket.no_tls = true for plain ws://",
            ));
        }
        let refused = [
            ("compression", self.compression),
            ("jwt_cookie", self.jwt_cookie.is_some()),
            ("no_auth_user", self.no_auth_user.is_some()),
            ("advertise", self.advertise.is_some()),
        ];
        if let Some((key, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                format!("websocket.{key}"),
                "not supported yet",
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.verify_and_map {
                return Err(ConfigError::invalid(
                    "websocket.tls.verify_and_map",
                    "not supported yet on the websocket port",
                ));
            }
        }
        let auth = &self.authorization;
        if auth.user.is_some() && auth.token.is_some() {
            return Err(ConfigError::invalid(
                "websocket.authorization.token",
                "cannot be combined with websocket.authorization.user; use one or the other",
            ));
        }
        if auth.password.as_deref() == Some("") || auth.token.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "websocket.authorization",
                "an empty password or token would let anybody in",
            ));
        }
        if auth.user.is_some() != auth.password.is_some() {
            return Err(ConfigError::invalid(
                "websocket.authorization.password",
                "user and password go together",
            ));
        }
        if auth.is_set() && has_users {
            return Err(ConfigError::invalid(
                "websocket.authorization",
                "a websocket user or token is not compatible with authorization.users (as \
                 nats-server)",
            ));
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if let Err(e) = Origin::parse(origin) {
                return Err(ConfigError::invalid(
                    format!("websocket.allowed_origins[{i}]"),
                    e.to_string(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_from_listen_or_host_and_port() {
        let ws = WebSocket {
            listen: Some("0.0.0.0:8080".into()),
            ..WebSocket::default()
        };
        assert_eq!(
            ws.listen_addr("127.0.0.1").unwrap(),
            ("0.0.0.0".into(), 8080)
        );
        let ws = WebSocket {
            port: Some(443),
            ..WebSocket::default()
        };
        assert_eq!(
            ws.listen_addr("10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 443)
        );
        let e = WebSocket::default().listen_addr("h").unwrap_err();
        assert!(e.to_string().starts_with("websocket.port: missing"), "{e}");
    }

    #[cfg(not(feature = "websocket"))]
    #[test]
    fn refused_by_name_without_the_feature() {
        let ws = WebSocket {
            port: Some(8080),
            no_tls: true,
            ..WebSocket::default()
        };
        let e = ws.validate("h", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "websocket: built without websocket support (cargo feature `websocket`)"
        );
    }

    #[cfg(feature = "websocket")]
    #[test]
    fn refusals_name_their_key() {
        let base = WebSocket {
            port: Some(0),
            no_tls: true,
            ..WebSocket::default()
        };
        assert!(base.validate("h", false).is_ok());
        let e = WebSocket {
            no_tls: false,
            ..base.clone()
        }
        .validate("h", false)
        .unwrap_err();
        assert!(e.to_string().starts_with("websocket.tls: missing"), "{e}");
        let e = WebSocket {
            compression: true,
            ..base.clone()
        }
        .validate("h", false)
        .unwrap_err();
        assert_eq!(e.to_string(), "websocket.compression: not supported yet");
        let e = WebSocket {
            jwt_cookie: Some("jwt".into()),
            ..base.clone()
        }
        .validate("h", false)
        .unwrap_err();
        assert_eq!(e.to_string(), "websocket.jwt_cookie: not supported yet");
        let with_token = WebSocket {
            authorization: WsAuthorization {
                token: Some("t".into()),
                ..WsAuthorization::default()
            },
            ..base.clone()
        };
        assert!(with_token.validate("h", false).is_ok());
        let e = with_token.validate("h", true).unwrap_err();
        assert!(e.to_string().starts_with("websocket.authorization:"), "{e}");
        let e = WebSocket {
            allowed_origins: vec!["not an origin".into()],
            ..base
        }
        .validate("h", false)
        .unwrap_err();
        assert!(
            e.to_string().starts_with("websocket.allowed_origins[0]:"),
            "{e}"
        );
    }
}
