//! The `leafnodes` settings as a file writes them: the listener (`listen` or `host`/`port`,
//! `authorization`, `tls`, `max_connections`), the remotes (hubs to connect to, with their TLS
//! and credentials) and the link keepalive. Read by `crate::config` (which validates them,
//! naming key and line); `crate::app::leaf_options` builds [`super::LeafOptions`] from them,
//! reading the TLS and credentials files.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::auth::settings::LeafAuthorization;
use crate::config::{value, DEFAULT_LEAFNODE_PORT};
use crate::redact::{self, Redacted};

/// Default cap of the leaf-node reconnect backoff.
pub const DEFAULT_LEAFNODE_RECONNECT: Duration = Duration::from_secs(10);
/// Default interval between keepalive pings on a leaf-node link.
pub const DEFAULT_LEAFNODE_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Default number of unanswered pings after which a leaf-node link is dead.
pub const DEFAULT_LEAFNODE_PING_MAX: u32 = 2;
/// Default most connections the leaf-node listener serves at once (handshakes included).
pub const DEFAULT_LEAFNODE_MAX_CONNECTIONS: usize = 1024;

/// The `[leafnodes]` table: accepting leaf connections and connecting out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LeafNodesTable")]
pub struct LeafNodes {
    /// Where to accept leaf-node connections; `None` accepts none.
    pub listen: Option<Listen>,
    /// Servers (hubs) to connect to as a leaf node.
    pub remotes: Vec<Remote>,
    /// Who may connect on the leaf-node listener.
    pub authorization: LeafAuthorization,
    /// Cap of the reconnect backoff (`reconnect`, also `reconnect_delay`,
    /// `reconnect_interval`): retries start at 100 ms and double up to this.
    pub reconnect: Duration,
    /// Interval between keepalive pings on each link.
    pub ping_interval: Duration,
    /// Unanswered pings after which a link is closed and, if solicited, reconnected.
    pub ping_max: u32,
    /// TLS on the listener (`leafnodes.tls`): when set, every accepted link must use TLS.
    pub tls: Option<LeafTls>,
    /// Most connections the listener serves at once, handshakes included (not a nats-server
    /// key); more are refused with `-ERR 'maximum connections exceeded'`.
    pub max_connections: usize,
}

impl Default for LeafNodes {
    fn default() -> Self {
        LeafNodes {
            listen: None,
            remotes: Vec::new(),
            authorization: LeafAuthorization::default(),
            reconnect: DEFAULT_LEAFNODE_RECONNECT,
            ping_interval: DEFAULT_LEAFNODE_PING_INTERVAL,
            ping_max: DEFAULT_LEAFNODE_PING_MAX,
            tls: None,
            max_connections: DEFAULT_LEAFNODE_MAX_CONNECTIONS,
        }
    }
}

/// Default time limit of a leafnode TLS handshake (nats-server's 2 s).
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_secs(2);

/// `leafnodes.tls`: the listener's certificate and, with `verify`, the CA that leaves'
/// client certificates must chain to (nats-server's `leafnodes { tls { ... } }`). Files are
/// PEM; they are read when the server starts (a missing file refuses to start).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeafTls {
    /// The listener's certificate chain (PEM); required.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1); required.
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that leaves' client certificates must chain to; used with
    /// `verify`.
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate from every leaf, verified against `ca_file`.
    pub verify: bool,
    /// Time limit of the TLS handshake (seconds, or a string such as `"500ms"`; default 2 s).
    #[serde(deserialize_with = "value::de_duration")]
    pub timeout: Duration,
    /// TLS starts right after the TCP connect, before the INFO (nats-server 2.10's
    /// `handshake_first`); leaves must be configured the same way.
    pub handshake_first: bool,
}

impl Default for LeafTls {
    fn default() -> Self {
        LeafTls {
            cert_file: None,
            key_file: None,
            ca_file: None,
            verify: false,
            timeout: DEFAULT_TLS_TIMEOUT,
            handshake_first: false,
        }
    }
}

/// `[leafnodes]` as written: `listen = "host:port"` or `host` and `port`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LeafNodesTable {
    #[serde(deserialize_with = "de_listen")]
    listen: Option<Listen>,
    host: Option<String>,
    port: Option<u16>,
    #[serde(deserialize_with = "value::de_table_list")]
    remotes: Vec<Remote>,
    #[serde(deserialize_with = "value::de_table")]
    authorization: LeafAuthorization,
    #[serde(
        alias = "reconnect_delay",
        alias = "reconnect_interval",
        deserialize_with = "value::de_duration"
    )]
    reconnect: Duration,
    #[serde(deserialize_with = "value::de_duration")]
    ping_interval: Duration,
    ping_max: u32,
    tls: Option<LeafTls>,
    max_connections: usize,
}

impl Default for LeafNodesTable {
    fn default() -> Self {
        let d = LeafNodes::default();
        LeafNodesTable {
            listen: None,
            host: None,
            port: None,
            remotes: Vec::new(),
            authorization: d.authorization,
            reconnect: d.reconnect,
            ping_interval: d.ping_interval,
            ping_max: d.ping_max,
            tls: None,
            max_connections: d.max_connections,
        }
    }
}

impl TryFrom<LeafNodesTable> for LeafNodes {
    type Error = String;

    fn try_from(table: LeafNodesTable) -> Result<Self, Self::Error> {
        let listen = match (table.listen, table.host, table.port) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("set either `listen` or `host`/`port`, not both".to_owned())
            }
            (Some(listen), None, None) => Some(listen),
            (None, host, Some(port)) => Some(Listen { host, port }),
            (None, Some(host), None) => Some(Listen {
                host: Some(host),
                port: DEFAULT_LEAFNODE_PORT,
            }),
            (None, None, None) => None,
        };
        Ok(LeafNodes {
            listen,
            remotes: table.remotes,
            authorization: table.authorization,
            reconnect: table.reconnect,
            ping_interval: table.ping_interval,
            ping_max: table.ping_max,
            tls: table.tls,
            max_connections: table.max_connections,
        })
    }
}

/// Serde helper for `leafnodes.listen`.
fn de_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Listen>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(de::Error::custom)
}

/// A listen address: `"0.0.0.0:7422"`, `"[::1]:7422"`, `":7422"` or `"7422"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Host or IP (IPv6 without brackets); `None` means the top-level `host`.
    pub host: Option<String>,
    /// Port (0 picks a free port).
    pub port: u16,
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid listen address `{s}`: expected host:port");
        let s = s.trim();
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => ("", s),
        };
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        let port = port.parse().map_err(|_| bad())?;
        let host = (!host.is_empty()).then(|| host.to_owned());
        Ok(Listen { host, port })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.as_deref() {
            Some(host) if host.contains(':') => write!(f, "[{host}]:{}", self.port),
            Some(host) => write!(f, "{host}:{}", self.port),
            None => write!(f, ":{}", self.port),
        }
    }
}

/// One `leafnodes.remotes` entry: a hub to connect to.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RemoteTable")]
pub struct Remote {
    /// URLs of the hub's leaf-node listeners (`nats-leaf://host:7422`), tried in random order.
    pub urls: Vec<String>,
    /// Subjects whose messages are not accepted from this hub.
    pub deny_imports: Vec<String>,
    /// Subjects whose messages are not sent to this hub.
    pub deny_exports: Vec<String>,
    /// TLS towards the hub (`tls = { ... }`); a `tls://` URL implies TLS too.
    pub tls: Option<RemoteTls>,
    /// A NATS credentials file (`credentials`, also `creds`): a user JWT and its nkey seed.
    /// The leaf sends the JWT and signs the hub's nonce with the seed. Read at startup.
    pub credentials: Option<PathBuf>,
    /// A user nkey seed (`nkey`, also `seed`: `SU...`). The leaf sends the public key and
    /// signs the hub's nonce with the seed. Excludes `credentials`.
    pub nkey: Option<String>,
    /// The local account the link is bound to (`account`, also `local`): only that
    /// account's traffic crosses it. `None`: the global account.
    pub account: Option<String>,
    /// nats-server remote keys that were given but are not implemented yet (`hub`, ...):
    /// the binaries refuse to start with them rather than ignore them.
    pub unsupported: Vec<String>,
}

impl fmt::Debug for Remote {
    /// The nkey seed and the URLs' credentials are redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact::Url(u)).collect::<Vec<_>>(),
            )
            .field("deny_imports", &self.deny_imports)
            .field("deny_exports", &self.deny_exports)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .field("nkey", &self.nkey.as_ref().map(|_| Redacted))
            .field("account", &self.account)
            .field("unsupported", &self.unsupported)
            .finish()
    }
}

/// `leafnodes.remotes[i].tls`: how a leaf checks its hub and, for hubs that verify leaves,
/// the client certificate it presents (nats-server's remote `tls { ... }` block). Files are
/// PEM, read when the server starts (a missing file refuses to start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteTls {
    /// CA certificates (PEM) the hub's certificate must chain to. Without it the system's CA
    /// bundle is used (`SSL_CERT_FILE`, or the distribution's bundle file).
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name checked against the hub's certificate; by default the URL's host (a name or
    /// an IP address).
    pub server_name: Option<String>,
    /// Start TLS right after the TCP connect, before the hub's INFO (nats-server 2.10's
    /// `handshake_first`); the hub must be configured the same way.
    pub handshake_first: bool,
    /// Time limit of the TLS handshake (default 2 s).
    #[serde(deserialize_with = "value::de_opt_duration")]
    pub timeout: Option<Duration>,
    /// nats-server's `insecure` (skip certificate verification): accepted only as `false`;
    /// `true` is refused at startup, hub certificates are always verified.
    pub insecure: bool,
}

/// A remote as written: `url = "..."` and/or `urls = [...]`, `tls`, `credentials` or `nkey`,
/// plus nats-server keys that are recognised only to be refused with a clear message.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RemoteTable {
    url: Option<String>,
    #[serde(deserialize_with = "value::de_string_list")]
    urls: Vec<String>,
    tls: Option<RemoteTls>,
    #[serde(alias = "creds")]
    credentials: Option<PathBuf>,
    #[serde(alias = "seed")]
    nkey: Option<String>,
    #[serde(alias = "local")]
    account: Option<String>,
    hub: Option<de::IgnoredAny>,
    #[serde(deserialize_with = "value::de_string_list")]
    deny_imports: Vec<String>,
    #[serde(deserialize_with = "value::de_string_list")]
    deny_exports: Vec<String>,
    ws_compression: Option<de::IgnoredAny>,
    ws_no_masking: Option<de::IgnoredAny>,
    compression: Option<de::IgnoredAny>,
}

impl TryFrom<RemoteTable> for Remote {
    type Error = String;

    fn try_from(table: RemoteTable) -> Result<Self, Self::Error> {
        if table.credentials.is_some() && table.nkey.is_some() {
            return Err(
                "set either `credentials` or `nkey`, not both (a credentials file holds its \
                 own seed)"
                    .to_owned(),
            );
        }
        let mut urls = Vec::with_capacity(table.urls.len() + 1);
        urls.extend(table.url);
        urls.extend(table.urls);
        let unsupported = [
            ("hub", table.hub.is_some()),
            ("ws_compression", table.ws_compression.is_some()),
            ("ws_no_masking", table.ws_no_masking.is_some()),
            ("compression", table.compression.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(key, _)| key.to_owned())
        .collect();
        Ok(Remote {
            urls,
            deny_imports: table.deny_imports,
            deny_exports: table.deny_exports,
            tls: table.tls,
            credentials: table.credentials,
            nkey: table.nkey,
            account: table.account,
            unsupported,
        })
    }
}
