//! Server configuration shared by `leafd` and `hubd`: the keys both read.
//!
//! A config file is TOML, or JSON when its name ends in `.json`; both are
//! read onto the same serde structures. Key names and nesting follow
//! nats-server's config file, so its users recognise them (`port`,
//! `max_payload`, `authorization { users = [...] }`, `jetstream`,
//! `leafnodes`, ...). Unknown keys are an error, so a typo cannot silently
//! fall back to a default. `leaf/leafd.example.toml` documents every key; a
//! unit test of the `leaf` crate parses it, so it cannot drift from the code.
//!
//! A binary adds top-level keys of its own through an [`Extension`] (leafd: the
//! uplinks and the gateways; hubd: those same keys, refused by name): the file is
//! read in one pass, each key by whoever owns it, and errors keep their key and line.
//!
//! Loading has three steps:
//!
//! 1. [`load_file`] (or [`parse_str`], and [`load_file_with`] / [`parse_str_with`]
//!    with an extension) reads and deserializes a file. Errors name the file, line
//!    and key:
//!    `leafd.toml:7: authorization.users[0].password: invalid type: integer `5`, expected a string`.
//! 2. Command-line flags override file values (`cli::ServerArgs::apply`).
//! 3. [`Config::validate`] checks what serde cannot: auth combinations,
//!    permission subjects, limits.
//!
//! `cli::load` runs all three.
//!
//! Values with units: durations are an integer number of seconds or a string
//! such as `"500ms"`, `"30s"`, `"2m"`, `"1h"` ([`parse_duration`]); sizes are
//! an integer number of bytes or a string such as `"64KB"` or `"1MB"`
//! ([`parse_size`]).

mod error;
mod extension;
mod validate;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::redact::{self, Redacted};
pub use crate::server::account::settings as account_settings;
pub use crate::server::account::{AccountJetStream, AccountSettings};

pub use error::{line_of, ConfigError, Location};
pub use extension::{Extension, NoExtension};
pub use validate::is_valid_token;
pub use value::{parse_duration, parse_size, LogLevel, ParseValueError};

/// Default client listen host: loopback, so a fresh install is not exposed.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default client port, as nats-server.
pub const DEFAULT_PORT: u16 = 4222;
/// Default leaf-node port, as nats-server.
pub const DEFAULT_LEAFNODE_PORT: u16 = 7422;
/// Default maximum message payload: 1 MiB, as nats-server.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Largest accepted `max_payload`: 64 MiB, as nats-server.
pub const MAX_PAYLOAD_LIMIT: usize = 64 << 20;
/// Default maximum protocol control line: 4 KiB.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// Default per-connection outbound pending limit: 8 MiB (nats-server's is 64 MiB).
///
/// Sized for a 1 GB board: publishers are already slowed once a queue passes its stall mark
/// (a quarter of this, at most 512 KiB, which 8 MiB keeps at its cap, so throughput is the
/// same as with 64 MiB), so the rest only holds what a subscriber that stopped reading
/// receives before it is cut off: room for eight messages of the default `max_payload`,
/// and 64 such subscribers at once stay within 512 MiB where 64 MiB each would need 4 GiB.
pub const DEFAULT_MAX_PENDING: usize = 8 << 20;
/// Default most subscriptions of one client connection (`max_subscriptions` unset):
/// 65,536, about 30 MiB of interest state. nats-server's default is unlimited; 0 sets that.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 65_536;
/// Default most subscriptions a leafnode link may announce (`max_subscriptions` unset):
/// 262,144, about 120 MiB. A link carries the interest of a whole server, so it gets more
/// room than a client.
pub const DEFAULT_LINK_MAX_SUBSCRIPTIONS: usize = 262_144;
/// Default maximum number of client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65536;
/// Default interval between server pings to a client.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(120);
/// Default number of unanswered pings before a connection is closed as stale.
pub const DEFAULT_PING_MAX: u32 = 2;
/// Default time a write to a client may block before it is a slow consumer.
pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Default time a client has to authenticate after connecting.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The server configuration both binaries read (a binary's own keys are in its
/// [`Extension`]). `Config::default()` is the configuration of a server started
/// without a file or flags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client listen host (default `127.0.0.1`).
    pub host: String,
    /// Client listen port (default 4222; 0 picks a free port).
    pub port: u16,
    /// HTTP monitoring port (off by default); binds to `host`.
    pub http_port: Option<u16>,
    /// Server name announced in `INFO`; the binary picks one when unset.
    pub server_name: Option<String>,
    /// Largest message payload a client may publish, in bytes.
    #[serde(deserialize_with = "value::de_size_usize")]
    pub max_payload: usize,
    /// Longest protocol control line (verb, subject and arguments), in bytes.
    #[serde(deserialize_with = "value::de_size_usize")]
    pub max_control_line: usize,
    /// Per-connection outbound bytes pending before the client is a slow consumer.
    #[serde(deserialize_with = "value::de_size_usize")]
    pub max_pending: usize,
    /// Maximum number of client connections.
    pub max_connections: usize,
    /// Most subscriptions one connection may hold (nats-server's `max_subscriptions`, also
    /// `max_subs`), clients and, as in nats-server, the interest a leafnode link announces;
    /// 0 is unlimited. Unset: [`DEFAULT_MAX_SUBSCRIPTIONS`] for a client,
    /// [`DEFAULT_LINK_MAX_SUBSCRIPTIONS`] for a link.
    #[serde(alias = "max_subs")]
    pub max_subscriptions: Option<usize>,
    /// Interval between server pings to each client.
    #[serde(deserialize_with = "value::de_duration")]
    pub ping_interval: Duration,
    /// Unanswered pings after which a connection is closed as stale.
    pub ping_max: u32,
    /// How long a write to a client may block before the client is dropped.
    #[serde(deserialize_with = "value::de_duration")]
    pub write_deadline: Duration,
    /// Log level; see [`Config::effective_log_level`] for `debug` and `trace`.
    pub log_level: LogLevel,
    /// nats-server style switch: `true` logs at least at debug level.
    pub debug: bool,
    /// nats-server style switch: `true` logs at trace level.
    pub trace: bool,
    /// Client authentication and permissions.
    #[serde(deserialize_with = "value::de_table")]
    pub authorization: Authorization,
    /// JetStream (persistence); disabled by default.
    pub jetstream: JetStream,
    /// Leaf-node listener and remotes.
    #[serde(deserialize_with = "value::de_table")]
    pub leafnodes: LeafNodes,
    /// Accounts besides the global one, by name: each its own subject space, with its users
    /// and its JetStream (see [`crate::server::account`]).
    #[serde(deserialize_with = "value::de_table")]
    pub accounts: BTreeMap<String, AccountSettings>,
    /// The account of the server's own events and requests (`$SYS` when unset, as in
    /// nats-server); must be one of `accounts` when set.
    pub system_account: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            http_port: None,
            server_name: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_pending: DEFAULT_MAX_PENDING,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_max: DEFAULT_PING_MAX,
            write_deadline: DEFAULT_WRITE_DEADLINE,
            log_level: LogLevel::Info,
            debug: false,
            trace: false,
            authorization: Authorization::default(),
            jetstream: JetStream::default(),
            leafnodes: LeafNodes::default(),
            accounts: BTreeMap::new(),
            system_account: None,
        }
    }
}

impl AsRef<Config> for Config {
    fn as_ref(&self) -> &Config {
        self
    }
}

impl AsMut<Config> for Config {
    fn as_mut(&mut self) -> &mut Config {
        self
    }
}

impl Config {
    /// The level to log at: `log_level`, raised to debug by `debug = true`
    /// and to trace by `trace = true`.
    pub fn effective_log_level(&self) -> LogLevel {
        let mut level = self.log_level;
        if self.debug {
            level = level.max(LogLevel::Debug);
        }
        if self.trace {
            level = level.max(LogLevel::Trace);
        }
        level
    }

    /// The leaf-node listen address as `(host, port)`, if leaf nodes are
    /// accepted. A `leafnodes.listen` without a host uses the top-level `host`.
    pub fn leafnode_listen(&self) -> Option<(&str, u16)> {
        self.leafnodes
            .listen
            .as_ref()
            .map(|listen| (listen.host.as_deref().unwrap_or(&self.host), listen.port))
    }
}

/// The `[authorization]` table: one user, a token, or a list of users.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    /// Single-user name (with `password`).
    #[serde(alias = "username")]
    pub user: Option<String>,
    /// Single-user password (with `user`).
    #[serde(alias = "pass")]
    pub password: Option<String>,
    /// Shared token (`auth_token` in `CONNECT`); excludes users.
    pub token: Option<String>,
    /// Several users, each with optional permissions.
    #[serde(deserialize_with = "value::de_table_list")]
    pub users: Vec<User>,
    /// Time a client has to send `CONNECT` before it is disconnected.
    #[serde(deserialize_with = "value::de_duration")]
    pub timeout: Duration,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            user: None,
            password: None,
            token: None,
            users: Vec::new(),
            timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }
}

impl Authorization {
    /// Whether clients must authenticate at all.
    pub fn is_required(&self) -> bool {
        self.user.is_some() || self.token.is_some() || !self.users.is_empty()
    }
}

impl fmt::Debug for Authorization {
    /// Secrets are redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .field("users", &self.users)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One entry of `authorization.users` (or of an account's `users`): a user name with its
/// password, or a user public nkey (`nkey = "U..."`, which the client proves by signing the
/// INFO's nonce).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "UserTable")]
pub struct User {
    /// User name (empty for an nkey user).
    pub user: String,
    /// Password; required with `user` (checked by [`Config::validate`]).
    pub password: Option<String>,
    /// A user public nkey (`U...`), instead of `user` and `password`.
    pub nkey: Option<String>,
    /// What the user may publish and subscribe to; unrestricted by default.
    pub permissions: Permissions,
}

/// A user entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserTable {
    #[serde(default, alias = "username")]
    user: Option<String>,
    #[serde(default, alias = "pass")]
    password: Option<String>,
    #[serde(default)]
    nkey: Option<String>,
    #[serde(default, deserialize_with = "value::de_table")]
    permissions: Permissions,
}

impl TryFrom<UserTable> for User {
    type Error = String;

    fn try_from(t: UserTable) -> Result<Self, Self::Error> {
        if t.user.is_none() && t.nkey.is_none() {
            return Err("missing key `user`".to_owned());
        }
        Ok(User {
            user: t.user.unwrap_or_default(),
            password: t.password,
            nkey: t.nkey,
            permissions: t.permissions,
        })
    }
}

impl fmt::Debug for User {
    /// The password is redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("nkey", &self.nkey)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// A user's publish and subscribe permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permissions {
    /// Subjects the user may publish to (`pub` is accepted too).
    #[serde(alias = "pub")]
    pub publish: SubjectPermission,
    /// Subjects the user may subscribe to (`sub` is accepted too).
    #[serde(alias = "sub")]
    pub subscribe: SubjectPermission,
}

impl Permissions {
    /// Whether neither publish nor subscribe is restricted.
    pub fn is_unrestricted(&self) -> bool {
        self.publish.is_unrestricted() && self.subscribe.is_unrestricted()
    }
}

/// Allow and deny lists of subjects (wildcards allowed).
///
/// An empty `allow` allows every subject that `deny` does not match. In a
/// file this is a table `{ allow = [...], deny = [...] }`, or, as in
/// nats-server, a bare list or a single string meaning `allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectPermission {
    /// Subjects allowed; empty means all.
    pub allow: Vec<String>,
    /// Subjects denied, checked after `allow`.
    pub deny: Vec<String>,
}

impl SubjectPermission {
    /// The allow list, or `None` when there is none (everything not denied
    /// is allowed).
    pub fn allow_list(&self) -> Option<&[String]> {
        (!self.allow.is_empty()).then_some(self.allow.as_slice())
    }

    /// Whether every subject is allowed.
    pub fn is_unrestricted(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl<'de> Deserialize<'de> for SubjectPermission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The table form.
        #[derive(Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Table {
            #[serde(deserialize_with = "value::de_string_list")]
            allow: Vec<String>,
            #[serde(deserialize_with = "value::de_string_list")]
            deny: Vec<String>,
        }

        struct PermissionVisitor;
        impl<'de> Visitor<'de> for PermissionVisitor {
            type Value = SubjectPermission;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a subject, a list of subjects, or a table with allow and deny")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SubjectPermission, E> {
                Ok(SubjectPermission {
                    allow: vec![v.to_owned()],
                    deny: Vec::new(),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<SubjectPermission, A::Error> {
                let allow = value::StringListVisitor.visit_seq(seq)?;
                Ok(SubjectPermission {
                    allow,
                    deny: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SubjectPermission, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SubjectPermission {
                    allow: table.allow,
                    deny: table.deny,
                })
            }
        }
        deserializer.deserialize_any(PermissionVisitor)
    }
}

/// JetStream settings. In a file either `jetstream = true|false` or a table;
/// a table enables JetStream unless it says `enabled = false`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JetStream {
    /// Whether JetStream is on (default off).
    pub enabled: bool,
    /// Where streams are stored; the binary picks a default when unset.
    pub store_dir: Option<PathBuf>,
    /// JetStream domain, so a leaf's streams are addressable from the hub.
    pub domain: Option<String>,
    /// Limit on memory-backed stream storage, in bytes.
    pub max_memory_store: Option<u64>,
    /// Limit on file-backed stream storage, in bytes.
    pub max_file_store: Option<u64>,
}

impl<'de> Deserialize<'de> for JetStream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The table form.
        #[derive(Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Table {
            enabled: Option<bool>,
            store_dir: Option<PathBuf>,
            domain: Option<String>,
            #[serde(
                alias = "max_mem_store",
                alias = "max_mem",
                deserialize_with = "value::de_opt_size"
            )]
            max_memory_store: Option<u64>,
            #[serde(alias = "max_file", deserialize_with = "value::de_opt_size")]
            max_file_store: Option<u64>,
        }

        struct JetStreamVisitor;
        impl<'de> Visitor<'de> for JetStreamVisitor {
            type Value = JetStream;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a table")
            }
            fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<JetStream, E> {
                Ok(JetStream {
                    enabled,
                    ..JetStream::default()
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JetStream, E> {
                // nats-server accepts `jetstream: enabled`.
                match v {
                    "enabled" | "true" => self.visit_bool(true),
                    "disabled" | "false" => self.visit_bool(false),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JetStream, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(JetStream {
                    enabled: table.enabled.unwrap_or(true),
                    store_dir: table.store_dir,
                    domain: table.domain,
                    max_memory_store: table.max_memory_store,
                    max_file_store: table.max_file_store,
                })
            }
        }
        deserializer.deserialize_any(JetStreamVisitor)
    }
}

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

/// `leafnodes.authorization`: credentials a leaf must present (one user, a token, or one of
/// `users`: users with a password, or user nkeys).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeafAuthorization {
    /// User name (with `password`).
    #[serde(alias = "username")]
    pub user: Option<String>,
    /// Password (with `user`).
    #[serde(alias = "pass")]
    pub password: Option<String>,
    /// Token (a leaf sends it as the URL's user name, or as `auth_token`); excludes `user`.
    pub token: Option<String>,
    /// Several users (nats-server's leafnode `users` list), each with a user name and
    /// password or with a user public nkey (`{ nkey = "U..." }`, which leaves prove by
    /// signing the hub's nonce).
    #[serde(deserialize_with = "value::de_table_list")]
    pub users: Vec<LeafUser>,
    /// Time a leaf has to send `CONNECT`.
    #[serde(deserialize_with = "value::de_duration")]
    pub timeout: Duration,
}

impl Default for LeafAuthorization {
    fn default() -> Self {
        LeafAuthorization {
            user: None,
            password: None,
            token: None,
            users: Vec::new(),
            timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }
}

impl fmt::Debug for LeafAuthorization {
    /// Secrets are redacted so the config can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafAuthorization")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .field("users", &self.users)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One entry of `leafnodes.authorization.users`: `user` and `password`, or `nkey`, and what
/// the leaf may do (`permissions`, as for client users: `publish` is what the leaf may send
/// into this server, `subscribe` what it may receive). nats-server 2.9 has no permissions on
/// leafnode users (it applies those of a client user a leaf logs in as, when the listener has
/// no `authorization` of its own; so do we): the key is ours.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LeafUserTable")]
pub struct LeafUser {
    /// How the leaf logs in.
    pub login: LeafLogin,
    /// What the leaf may publish and receive; unrestricted by default.
    pub permissions: Permissions,
    /// The account the leaf's traffic lives in on this server (`None`: the global one).
    pub account: Option<String>,
}

/// How a leaf of `leafnodes.authorization.users` logs in. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub enum LeafLogin {
    /// A user name and its password.
    Password {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// A user public nkey (`U...`); checked when the server starts.
    Nkey(String),
}

impl fmt::Debug for LeafLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafLogin::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &Redacted)
                .finish(),
            LeafLogin::Nkey(key) => f.debug_tuple("Nkey").field(key).finish(),
        }
    }
}

/// A `leafnodes.authorization.users` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeafUserTable {
    #[serde(default, alias = "username")]
    user: Option<String>,
    #[serde(default, alias = "pass")]
    password: Option<String>,
    #[serde(default)]
    nkey: Option<String>,
    #[serde(default, deserialize_with = "value::de_table")]
    permissions: Permissions,
    #[serde(default)]
    account: Option<String>,
}

impl TryFrom<LeafUserTable> for LeafUser {
    type Error = String;

    fn try_from(t: LeafUserTable) -> Result<Self, Self::Error> {
        let login = match (t.user, t.password, t.nkey) {
            (None, None, Some(nkey)) => LeafLogin::Nkey(nkey),
            (Some(_), Some(password), None) if password.is_empty() => {
                return Err("`password` must not be empty".to_owned())
            }
            (Some(user), Some(password), None) => LeafLogin::Password { user, password },
            (Some(_), None, None) => return Err("missing key `password` (with `user`)".to_owned()),
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
                return Err("set either `user` and `password`, or `nkey`, not both".to_owned())
            }
            (None, _, None) => return Err("missing key `user` or `nkey`".to_owned()),
        };
        Ok(LeafUser {
            login,
            permissions: t.permissions,
            account: t.account,
        })
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

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (the default).
    Toml,
    /// JSON, for file names ending in `.json`.
    Json,
}

impl Format {
    /// JSON if the file name ends in `.json` (any case), TOML otherwise.
    pub fn from_path(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// Reads and deserializes a config file: TOML, or JSON if the name ends in
/// `.json`. Does not validate (flags may still change values); see
/// [`Config::validate`].
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with::<NoExtension>(path).map(|(config, NoExtension)| config)
}

/// [`load_file`] for a binary with keys of its own: the shared configuration and the
/// extension's.
pub fn load_file_with<X: Extension>(path: &Path) -> Result<(Config, X), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str_with(&text, Format::from_path(path), &path.display().to_string())
}

/// Deserializes config text; `origin` names it in errors (usually the file name).
pub fn parse_str(text: &str, format: Format, origin: &str) -> Result<Config, ConfigError> {
    parse_str_with::<NoExtension>(text, format, origin).map(|(config, NoExtension)| config)
}

/// [`parse_str`] for a binary with keys of its own: the shared configuration and the
/// extension's.
pub fn parse_str_with<X: Extension>(
    text: &str,
    format: Format,
    origin: &str,
) -> Result<(Config, X), ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Toml => serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map(|extension::TopLevel(config, ext)| (config, ext))
            .map_err(|err| ConfigError::from_toml(err, text, origin)),
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let extension::TopLevel(config, ext) = serde_path_to_error::deserialize(&mut de)
                .map_err(|err| ConfigError::from_json(err, origin))?;
            // Reject trailing garbage after the top-level object.
            de.end()
                .map_err(|err| ConfigError::from_json_syntax(&err, origin))?;
            Ok((config, ext))
        }
    }
}

#[cfg(test)]
mod tests;
