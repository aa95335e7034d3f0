//! Server configuration shared by `leafd` and `hubd`: the keys both read.
//!
//! A config file is TOML when its name ends in `.toml`, JSON when it ends in `.json`, and
//! nats-server's own configuration format otherwise ([`natsconf`]: `leafd.conf`,
//! `nats-server.conf`); all three are read onto the same serde structures. Key names and
//! nesting follow nats-server's config file, so its users recognise them (`port`,
//! `max_payload`, `authorization { users = [...] }`, `jetstream`, `leafnodes`, ...); in
//! nats-server's format its other names are accepted too (`listen: host:port`,
//! `http: host:port`, `monitor_port`, `net`, `leaf`, ...), keys nats-server knows that we do
//! not implement are refused by name ("not supported yet") or, when they change nothing a
//! client sees (`logtime`, `syslog`, ...), ignored with one warning (see
//! [`natsconf::keys::RULES`], the one table of them). Unknown keys are an error, so a typo
//! cannot silently fall back to a default. `leaf/leafd.example.toml` documents every key,
//! `leaf/leafd.example.conf` shows the same in nats-server's format; unit tests of the
//! `leaf` crate parse both, so they cannot drift from the code. JSON and nats-server's
//! format each have a cargo feature (`json-config`, `natsconf`; on by default, always in
//! hubd): every settings type is deserialized once per format, so a build that reads TOML
//! only (leafd's `gateway` build, issue 24) is about 0.7 MB smaller; it refuses the other
//! file names with [`ConfigError::NotBuilt`].
//!
//! This module holds the top-level [`Config`], the loader and the checks across keys
//! ([`Config::validate`]); each subsystem's settings type lives next to the code that uses it
//! and is re-exported here: [`Authorization`] (one type for `authorization` and
//! `leafnodes.authorization`; `crate::auth::settings`), [`JetStream`]
//! (`crate::jetstream::settings`), [`LeafNodes`] and its remotes (`crate::leafnode::settings`),
//! [`AccountSettings`] (`crate::server::account::settings`).
//!
//! A binary adds top-level keys of its own through an [`Extension`] (leafd: the
//! uplinks and the gateways; hubd: those same keys, refused by name): the file is
//! read in one pass, each key by whoever owns it, and errors keep their key and line.
//!
//! Loading has three steps:
//!
//! 1. [`load_file`] (or [`parse_str`], and [`load_file_with`] / [`parse_str_with`]
//!    with an extension) reads and deserializes a file. Errors name the file, line
//!    (and in nats-server's format the column) and key:
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
#[cfg(feature = "natsconf")]
pub mod natsconf;
mod validate;
pub mod value;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::server::account::settings as account_settings;
pub use crate::server::account::{AccountJetStream, AccountSettings};
pub use crate::server::tls::TlsSettings;

pub use crate::auth::settings::{
    Authorization, LeafAuthorization, LeafLogin, LeafUser, Permissions, SubjectPermission, User,
    DEFAULT_AUTH_TIMEOUT,
};
pub use crate::jetstream::settings::JetStream;
pub use crate::leafnode::settings::{
    LeafNodes, LeafTls, Listen, Remote, RemoteTls, DEFAULT_LEAFNODE_MAX_CONNECTIONS,
    DEFAULT_LEAFNODE_PING_INTERVAL, DEFAULT_LEAFNODE_PING_MAX, DEFAULT_LEAFNODE_RECONNECT,
    DEFAULT_TLS_TIMEOUT,
};
pub use crate::websocket::settings::{WebSocket, WsAuthorization};
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
/// Default length of lame duck mode (SIGUSR2), as nats-server: 2 minutes.
pub const DEFAULT_LAME_DUCK_DURATION: Duration = Duration::from_secs(120);
/// Shortest `lame_duck_duration` accepted, as nats-server: 30 seconds.
pub const MIN_LAME_DUCK_DURATION: Duration = Duration::from_secs(30);
/// Default wait in lame duck mode before connections are closed, as nats-server: 10 seconds.
pub const DEFAULT_LAME_DUCK_GRACE_PERIOD: Duration = Duration::from_secs(10);

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
    /// HTTPS monitoring port (off by default; needs `tls`, excludes `http_port`); binds to
    /// `host`.
    pub https_port: Option<u16>,
    /// TLS on the client port (and the certificate of `https_port`); see
    /// [`crate::server::tls`].
    pub tls: Option<TlsSettings>,
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
    /// nats-server settings the file gave that change nothing a client sees and are not
    /// implemented (`logtime`, `syslog`, ...), as `key (file:line:column)`: accepted, and
    /// named in one warning when the server starts (nats-server's format only; see
    /// [`natsconf::keys`]).
    #[serde(skip)]
    pub ignored_settings: Vec<String>,
    /// Lame duck mode (SIGUSR2, see `crate::lameduck`): connections still open after the
    /// grace period are closed spread over this time less the grace period (at most one
    /// second apart, as nats-server); at least [`MIN_LAME_DUCK_DURATION`].
    #[serde(deserialize_with = "value::de_duration")]
    pub lame_duck_duration: Duration,
    /// Lame duck mode: how long clients and leaves get to move to another cluster member
    /// before the server starts closing connections; shorter than `lame_duck_duration`.
    #[serde(deserialize_with = "value::de_duration")]
    pub lame_duck_grace_period: Duration,
    /// The file the process id is written to at start and removed from at a clean exit
    /// (nats-server's `pid_file`, also `pidfile`; flag `-P`/`--pid`).
    #[serde(alias = "pidfile")]
    pub pid_file: Option<std::path::PathBuf>,
    /// The file to log to (appended) instead of stderr; SIGUSR1 reopens it, for logrotate
    /// (nats-server's `log_file`, also `logfile`; flag `-l`/`--log`).
    #[serde(alias = "logfile")]
    pub log_file: Option<std::path::PathBuf>,
    /// nats-server's `syslog`: refused when true (not supported yet; under systemd the
    /// journal takes stderr).
    pub syslog: bool,
    /// A listener for clients (and leaves) over WebSocket, nats-server's `websocket`
    /// block (see [`crate::websocket`]); off when unset.
    pub websocket: Option<WebSocket>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            http_port: None,
            https_port: None,
            tls: None,
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
            ignored_settings: Vec::new(),
            lame_duck_duration: DEFAULT_LAME_DUCK_DURATION,
            lame_duck_grace_period: DEFAULT_LAME_DUCK_GRACE_PERIOD,
            pid_file: None,
            log_file: None,
            syslog: false,
            websocket: None,
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

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML, for file names ending in `.toml`.
    Toml,
    /// JSON, for file names ending in `.json`.
    Json,
    /// nats-server's own format ([`natsconf`]), for every other file name.
    NatsConf,
}

impl Format {
    /// TOML if the file name ends in `.toml`, JSON if in `.json` (any case), nats-server's
    /// format otherwise (`.conf`, no extension, ...), as nats-server reads any name.
    pub fn from_path(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::NatsConf,
        }
    }

    /// The format's name in messages.
    fn name(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
            Format::NatsConf => "nats-server's config format",
        }
    }

    /// The cargo feature that reads the format (none for TOML, always built).
    fn feature(self) -> &'static str {
        match self {
            Format::Toml => "",
            Format::Json => "json-config",
            Format::NatsConf => "natsconf",
        }
    }

    /// Whether this build reads the format: TOML always, JSON and nats-server's format with
    /// their cargo features (`json-config`, `natsconf`; both on by default).
    pub fn is_built(self) -> bool {
        match self {
            Format::Toml => true,
            Format::Json => cfg!(feature = "json-config"),
            Format::NatsConf => cfg!(feature = "natsconf"),
        }
    }

    /// [`ConfigError::NotBuilt`] for `file` unless this build reads the format.
    fn check_built(self, file: &str) -> Result<(), ConfigError> {
        if self.is_built() {
            Ok(())
        } else {
            Err(self.not_built(file))
        }
    }

    /// The refusal of `file` in a build without the format.
    fn not_built(self, file: &str) -> ConfigError {
        ConfigError::NotBuilt {
            file: file.to_owned(),
            format: self.name(),
            feature: self.feature(),
        }
    }
}

/// Reads and deserializes a config file: TOML, JSON or nats-server's format by its name
/// ([`Format::from_path`]). Does not validate (flags may still change values); see
/// [`Config::validate`].
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with::<NoExtension>(path).map(|(config, NoExtension)| config)
}

/// [`load_file`] for a binary with keys of its own: the shared configuration and the
/// extension's.
pub fn load_file_with<X: Extension>(path: &Path) -> Result<(Config, X), ConfigError> {
    let format = Format::from_path(path);
    let origin = path.display().to_string();
    format.check_built(&origin)?;
    #[cfg(feature = "natsconf")]
    let text = if format == Format::NatsConf {
        natsconf::read_file(path)
    } else {
        std::fs::read_to_string(path)
    };
    #[cfg(not(feature = "natsconf"))]
    let text = std::fs::read_to_string(path);
    let text = text.map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(feature = "natsconf")]
    if format == Format::NatsConf {
        // Includes are found next to the file.
        return natsconf::load(strip_bom(&text), &origin, Some(path));
    }
    parse_str_with(&text, format, &origin)
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Deserializes config text; `origin` names it in errors (usually the file name).
pub fn parse_str(text: &str, format: Format, origin: &str) -> Result<Config, ConfigError> {
    parse_str_with::<NoExtension>(text, format, origin).map(|(config, NoExtension)| config)
}

/// [`parse_str`] for a binary with keys of its own: the shared configuration and the
/// extension's. In nats-server's format, includes are found relative to the current
/// directory (use [`load_file_with`] for a file's).
pub fn parse_str_with<X: Extension>(
    text: &str,
    format: Format,
    origin: &str,
) -> Result<(Config, X), ConfigError> {
    let text = strip_bom(text);
    format.check_built(origin)?;
    match format {
        #[cfg(feature = "natsconf")]
        Format::NatsConf => natsconf::load(text, origin, None),
        Format::Toml => serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map(|extension::TopLevel(config, ext)| (config, ext))
            .map_err(|err| ConfigError::from_toml(err, text, origin)),
        #[cfg(feature = "json-config")]
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let extension::TopLevel(config, ext) = serde_path_to_error::deserialize(&mut de)
                .map_err(|err| ConfigError::from_json(err, origin))?;
            // Reject trailing garbage after the top-level object.
            de.end()
                .map_err(|err| ConfigError::from_json_syntax(&err, origin))?;
            Ok((config, ext))
        }
        // Refused by `check_built` above.
        #[allow(unreachable_patterns)]
        _ => Err(format.not_built(origin)),
    }
}

// The cross-format tests read every format.
#[cfg(all(test, feature = "natsconf", feature = "json-config"))]
mod tests;

#[cfg(test)]
mod format_tests {
    use super::{parse_str, ConfigError, Format};

    /// TOML is always read; JSON and nats-server's format with their cargo features
    /// (`json-config`, `natsconf`), and a build without one refuses the file by the feature's
    /// name rather than misreading it. Run with each feature set to see both sides.
    #[test]
    fn formats_left_out_of_the_build_are_refused_by_name() {
        let cases = [
            (Format::Toml, "port = 4333\n", "x.toml", ""),
            (Format::Json, "{\"port\": 4333}", "x.json", "json-config"),
            (Format::NatsConf, "port: 4333\n", "x.conf", "natsconf"),
        ];
        for (format, text, file, feature) in cases {
            assert_eq!(Format::from_path(std::path::Path::new(file)), format);
            match parse_str(text, format, file) {
                Ok(cfg) => {
                    assert!(format.is_built(), "{file}");
                    assert_eq!(cfg.port, 4333, "{file}");
                }
                Err(err @ ConfigError::NotBuilt { .. }) => {
                    assert!(!format.is_built(), "{file}");
                    let msg = err.to_string();
                    assert!(
                        msg.starts_with(&format!("{file}: "))
                            && msg.contains(&format!("built without cargo feature `{feature}`")),
                        "{msg}"
                    );
                }
                Err(err) => panic!("{file}: {err}"),
            }
        }
    }
}
