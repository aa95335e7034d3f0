//! The JSON bodies of `INFO` (server → client) and `CONNECT` (client → server).

use serde::{Deserialize, Serialize};

/// The nats-server feature level this server implements, reported as INFO's `version`.
///
/// Clients use `version` for feature detection (nats.py, for one, chooses its JetStream
/// consumer-create request from it), so it must state the NATS protocol level we are compatible
/// with, not our own release number. Our own version travels in [`ServerInfo::leaf_version`].
pub const NATS_FEATURE_LEVEL: &str = "2.10.0";

/// The body of the `INFO` line sent to a client right after it connects.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// A random, unique id of this server process.
    pub server_id: String,
    /// The configured server name (the id when none is set).
    pub server_name: String,
    /// The nats-server feature level, see [`NATS_FEATURE_LEVEL`].
    pub version: &'static str,
    /// Our own release (`leafd` or `hubd` version).
    pub leaf_version: &'static str,
    /// The implementation, `leafd` or `hubd`.
    pub implementation: &'static str,
    /// The Go version field nats-server sends; clients print it, nothing depends on it.
    pub go: &'static str,
    /// The listening host.
    pub host: String,
    /// The listening port.
    pub port: u16,
    /// Headers (HPUB/HMSG) are supported.
    pub headers: bool,
    /// The largest payload a client may publish.
    pub max_payload: usize,
    /// The protocol version (1: supports INFO updates and headers).
    pub proto: u8,
    /// The id of this connection.
    pub client_id: u64,
    /// The client's address as the server sees it.
    pub client_ip: String,
    /// Set when the client must authenticate in CONNECT.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    /// Set when the client must start TLS after this INFO (the `tls` table).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    /// Set when the client must present a certificate (`verify`, `verify_and_map`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_verify: bool,
    /// JetStream is enabled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub jetstream: bool,
    /// What an nkey user signs to prove its key (present when some user logs in with one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The client URLs of every server of the cluster (empty: no cluster).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Set on the INFO that announces lame duck mode (sent once): move to another server.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ldm: bool,
}

/// The options a client sends in `CONNECT`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConnectInfo {
    /// Acknowledge every protocol op with `+OK`.
    pub verbose: bool,
    /// Strict checking of subjects on publish.
    pub pedantic: bool,
    /// Deliver the client's own messages back to it (default true).
    pub echo: bool,
    /// The client understands HMSG.
    pub headers: bool,
    /// The client wants a 503 status message for requests without responders.
    pub no_responders: bool,
    /// The client's name, for monitoring and logs.
    pub name: Option<String>,
    /// The client library's language.
    pub lang: Option<String>,
    /// The client library's version.
    pub version: Option<String>,
    /// The protocol version the client speaks.
    pub protocol: Option<u8>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub pass: Option<String>,
    /// Authentication token.
    pub auth_token: Option<String>,
    /// A user public nkey, with `sig`.
    pub nkey: Option<String>,
    /// The signature of the INFO's nonce by `nkey`'s seed, or by the seed of `jwt`'s
    /// subject (base64url).
    pub sig: Option<String>,
    /// A user JWT (operator mode).
    pub jwt: Option<String>,
}

impl Default for ConnectInfo {
    fn default() -> Self {
        ConnectInfo {
            verbose: false,
            pedantic: false,
            echo: true,
            headers: false,
            no_responders: false,
            name: None,
            lang: None,
            version: None,
            protocol: None,
            user: None,
            pass: None,
            auth_token: None,
            nkey: None,
            sig: None,
            jwt: None,
        }
    }
}

/// A random server id in the style of nats-server's (56 upper-case base32 characters starting
/// with `N`).
pub fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::with_capacity(56);
    id.push('N');
    for _ in 1..56 {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_defaults_and_unknown_fields() {
        let c: ConnectInfo =
            serde_json::from_str(r#"{"verbose":true,"future_field":[1,2],"name":"x"}"#).unwrap();
        assert!(c.verbose);
        assert!(c.echo, "echo defaults to true");
        assert_eq!(c.name.as_deref(), Some("x"));
    }

    #[test]
    fn server_id_shape() {
        let id = new_server_id();
        assert_eq!(id.len(), 56);
        assert!(id.starts_with('N'));
    }
}
