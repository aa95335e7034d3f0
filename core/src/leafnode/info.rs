//! The JSON bodies of the leafnode handshake: the hub's `INFO` and the leaf's `CONNECT`.
//!
//! Field names are nats-server 2.9's (`Info` in `server.go`, `leafConnectInfo` in
//! `leafnode.go`). What a 2.9 leaf checks in the hub's first INFO: a non-zero `client_id` and
//! a `leafnode_urls` array (otherwise it reports that it reached the wrong port), `nonce`,
//! `headers`, and `info_on_connect` (then it waits for a second INFO with `connect_info`
//! before it sends its own interest).

use serde::{Deserialize, Serialize};

/// The `INFO` a hub sends its established leaves when its cluster changed: the leafnode
/// URLs of every member (nats-server's `sendAsyncLeafNodeInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct UpdateInfo<'a> {
    /// The hub's server id.
    pub server_id: &'a str,
    /// The hub's server name.
    pub server_name: &'a str,
    /// The nats-server feature level.
    pub version: &'a str,
    /// Protocol version (1).
    pub proto: u32,
    /// Headers supported.
    pub headers: bool,
    /// Largest payload.
    pub max_payload: usize,
    /// This server's leafnode URL and the other members' (in lame duck mode: the others'
    /// only).
    pub leafnode_urls: &'a [String],
    /// Lame duck mode: this server is about to close the link; move to another member now
    /// (a nats-server 2.9 leaf ignores it and takes the new `leafnode_urls`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ldm: bool,
}

/// The hub's `INFO` on a leafnode connection (both the first one and the `connect_info` one).
#[derive(Debug, Clone, Serialize)]
pub struct HubInfo {
    /// The hub's server id.
    pub server_id: String,
    /// The hub's server name.
    pub server_name: String,
    /// The nats-server feature level ([`crate::server::info::NATS_FEATURE_LEVEL`]).
    pub version: &'static str,
    /// Protocol version (1).
    pub proto: u8,
    /// Our own release.
    pub leaf_version: &'static str,
    /// `leafd` or `hubd`.
    pub implementation: &'static str,
    /// nats-server's Go version field.
    pub go: &'static str,
    /// The leafnode listener's host.
    pub host: String,
    /// The leafnode listener's port.
    pub port: u16,
    /// HMSG is supported.
    pub headers: bool,
    /// The largest payload the hub accepts.
    pub max_payload: usize,
    /// The connection id; a nats-server leaf requires it to be non-zero.
    pub client_id: u64,
    /// The peer's address.
    pub client_ip: String,
    /// Random bytes a leaf signs for nkey authentication.
    pub nonce: String,
    /// The leaf must authenticate in CONNECT.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    /// The hub answers CONNECT with a second INFO (`connect_info`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub info_on_connect: bool,
    /// Set on the INFO that answers CONNECT.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub connect_info: bool,
    /// The leaf must start TLS (right after this INFO, unless `handshake_first`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
    /// The leaf must present a client certificate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_verify: bool,
    /// The account the leaf is bound to (on the `connect_info` INFO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_account: Option<&'static str>,
    /// What the leaf may receive (its `subscribe` permissions; on the `connect_info` INFO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<SubjectLists>,
    /// What the leaf may send (its `publish` permissions; on the `connect_info` INFO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<SubjectLists>,
    /// Leafnode URLs the leaf may reconnect to (`host:port`); never absent.
    pub leafnode_urls: Vec<String>,
}

/// What a leaf reads from the hub's `INFO`. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// The hub's server id.
    pub server_id: String,
    /// The hub's server name.
    pub server_name: String,
    /// The hub's version.
    pub version: String,
    /// The connection id the hub gave us (non-zero on a leafnode port).
    pub client_id: u64,
    /// HMSG is supported.
    pub headers: bool,
    /// The hub's largest payload.
    pub max_payload: usize,
    /// The hub answers CONNECT with an INFO carrying `connect_info`.
    pub info_on_connect: bool,
    /// This INFO answers our CONNECT.
    pub connect_info: bool,
    /// The hub requires TLS.
    pub tls_required: bool,
    /// What the leaf signs for nkey or creds authentication; empty when the hub sent none.
    pub nonce: String,
    /// The hub's leafnode URLs; `None` means this is not a leafnode port.
    pub leafnode_urls: Option<Vec<String>>,
    /// What the hub lets us receive (our `subscribe` permissions there).
    pub import: Option<SubjectLists>,
    /// What the hub lets us send (our `publish` permissions there).
    pub export: Option<SubjectLists>,
    /// The hub entered lame duck mode: it will close the link; reconnect elsewhere.
    pub ldm: bool,
}

/// An allow list and a deny list of subjects, as nats-server's `SubjectPermission` (the
/// `import` and `export` of a leafnode INFO).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubjectLists {
    /// Allowed subjects; empty: everything not denied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Denied subjects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl SubjectLists {
    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// The leaf's `CONNECT` (nats-server's `leafConnectInfo`). Unknown fields are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LeafConnect {
    /// The leaf's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// User name (from the remote URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password (from the remote URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// Token; nats-server leaves send a lone URL user name as `user` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// The user JWT (creds authentication), with `sig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// The user public nkey (nkey authentication), with `sig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// The Ed25519 signature of the hub's nonce, base64url without padding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// TLS is in use.
    pub tls_required: bool,
    /// The leaf's server id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The leaf's server name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The soliciting side wants to be the hub (not supported; refused).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_hub: bool,
    /// The leaf's cluster name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// HMSG is supported.
    pub headers: bool,
    /// JetStream is enabled on the leaf.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub jetstream: bool,
    /// Set by clients (never by leaves): a client connected to the leafnode port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Set by gateways: a gateway connected to the leafnode port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The leaf's `deny_imports`: subjects the hub must not send it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_pub: Vec<String>,
}

pub use crate::auth::nkey::new_nonce;

#[cfg(test)]
mod tests {
    use super::*;

    /// The first INFO of nats-server 2.9.10's leafnode port, as captured.
    const NATS_INFO: &str = r#"{"server_id":"NBX","server_name":"hub","version":"2.9.10","proto":1,"go":"go1.19","host":"127.0.0.1","port":7422,"headers":true,"auth_required":true,"max_payload":1048576,"client_id":5,"nonce":"abc","leafnode_urls":["127.0.0.1:7422"],"info_on_connect":true}"#;

    #[test]
    fn reads_nats_server_info() {
        let info: PeerInfo = serde_json::from_str(NATS_INFO).unwrap();
        assert_eq!(info.client_id, 5);
        assert!(info.headers && info.info_on_connect && !info.connect_info);
        assert_eq!(
            info.leafnode_urls.as_deref(),
            Some(&["127.0.0.1:7422".to_owned()][..])
        );
        let client_port: PeerInfo = serde_json::from_str(r#"{"server_id":"N"}"#).unwrap();
        assert!(client_port.leafnode_urls.is_none());
    }

    #[test]
    fn connect_round_trip() {
        let c = LeafConnect {
            user: Some("u".into()),
            pass: Some("p".into()),
            headers: true,
            ..LeafConnect::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"user":"u","pass":"p","tls_required":false,"headers":true}"#
        );
        let back: LeafConnect =
            serde_json::from_str(r#"{"version":"2.9.10","tls_required":false,"server_id":"N","name":"leaf","headers":true,"extra":1}"#)
                .unwrap();
        assert_eq!(back.name.as_deref(), Some("leaf"));
        assert!(back.lang.is_none());
    }

    #[test]
    fn nonce_shape() {
        let n = new_nonce().unwrap();
        assert_ne!(Some(&n), new_nonce().as_ref(), "fresh every time");
        assert_eq!(n.len(), 22);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
