//! hubd's configuration: the keys both binaries read (`leaf_core::config`), and nothing
//! else. The keys of leafd's uplinks and gateways are refused by name, at their line
//! (`hubd.toml:12: serial: a leafd setting: ...`), rather than rejected as unknown or,
//! worse, accepted and ignored: a hub has no serial ports, Modbus buses, GPIO lines or
//! uplinks.

use std::fmt;
use std::path::Path;

use leaf_core::cli::{self, ServerArgs};
use std::collections::BTreeMap;

use leaf_core::config::{self, Config, ConfigError, Extension};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::operator::settings::{self, OperatorSettings, ResolverKind};
use crate::route::ClusterSettings;

/// hubd's own top-level keys: `cluster` (see [`crate::route::settings`]), operator mode's
/// (`operator`, `resolver`, `resolver_preload`, see [`crate::operator::settings`]), and
/// leafd's, refused by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HubKeys {
    /// `operator`: the operator JWT or its file.
    pub operator: Option<String>,
    /// `resolver`.
    pub resolver: Option<ResolverKind>,
    /// `resolver_preload`: account public key → JWT.
    pub resolver_preload: BTreeMap<String, String>,
    /// `cluster`: routes to the other servers of a cluster (see [`crate::route`]).
    pub cluster: Option<ClusterSettings>,
    /// `server_tags`: this server's tags, matched by a stream's `placement.tags` in a
    /// JetStream cluster (trimmed, lowercased, without duplicates, as nats-server's).
    pub server_tags: Vec<String>,
}

/// hubd's own flags, named as nats-server's: the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClusterArgs {
    /// Cluster URL to listen on for routes (`nats://host:port`).
    #[arg(long = "cluster", value_name = "URL")]
    pub cluster: Option<String>,
    /// The cluster's name.
    #[arg(long = "cluster_name", alias = "cluster-name", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Routes to the other members, comma-separated (`nats-route://host:port,...`).
    #[arg(long = "routes", value_name = "URLS")]
    pub routes: Option<String>,
}

impl ClusterArgs {
    /// Applies the flags over the file's `cluster` block (making one when the file has
    /// none); errors name the flag.
    pub fn apply(&self, hub: &mut HubKeys) -> Result<(), ConfigError> {
        if self == &ClusterArgs::default() {
            return Ok(());
        }
        let cluster = hub.cluster.get_or_insert_with(ClusterSettings::default);
        if let Some(url) = &self.cluster {
            let parsed = crate::route::RouteUrl::parse(url)
                .map_err(|e| ConfigError::invalid("--cluster", e))?;
            cluster.listen = Some(parsed.addr());
            cluster.host = None;
            cluster.port = None;
        }
        if let Some(name) = &self.cluster_name {
            cluster.name = Some(name.clone());
        }
        if let Some(routes) = &self.routes {
            cluster.routes = routes
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| {
                    crate::route::RouteUrl::parse(r)
                        .map_err(|e| ConfigError::invalid("--routes", e))
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }
}

impl HubKeys {
    /// The operator-mode settings, when `operator` is given (`resolver` defaults to MEMORY);
    /// `resolver` or `resolver_preload` without `operator` is an error naming the key.
    pub fn operator_settings(&self) -> Result<Option<OperatorSettings>, String> {
        let Some(operator) = &self.operator else {
            if self.resolver.is_some() {
                return Err("resolver: needs `operator` (operator mode)".into());
            }
            if !self.resolver_preload.is_empty() {
                return Err("resolver_preload: needs `operator` (operator mode)".into());
            }
            return Ok(None);
        };
        Ok(Some(OperatorSettings {
            operator: operator.clone(),
            resolver: self.resolver.clone().unwrap_or(ResolverKind::Memory),
            preload: self.resolver_preload.clone(),
        }))
    }
}

impl Extension for HubKeys {
    const KEYS: &'static [&'static str] = &[
        "cluster",
        "server_tags",
        "operator",
        "resolver",
        "resolver_preload",
        "uplinks",
        "board",
        "boards_dir",
        "serial",
        "modbus",
        "gpio",
    ];
    const LISTED: &'static [&'static str] = &[
        "cluster",
        "server_tags",
        "operator",
        "resolver",
        "resolver_preload",
    ];

    fn read_key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "operator" => self.operator = Some(map.next_value::<OperatorValue>()?.0),
            "resolver" => self.resolver = Some(map.next_value::<ResolverValue>()?.0),
            "resolver_preload" => self.resolver_preload = map.next_value()?,
            "cluster" => self.cluster = Some(map.next_value()?),
            "server_tags" => self.server_tags = map.next_value::<ServerTags>()?.0,
            _ => LeafdKeys.read_key(key, map)?,
        }
        Ok(())
    }
}

/// `server_tags`' value: one tag or a list of them (as nats-server reads it), normalized:
/// trimmed, lowercased, empty ones and duplicates dropped.
struct ServerTags(Vec<String>);

impl<'de> Deserialize<'de> for ServerTags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a tag or a list of tags (strings)")]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let raw = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(tag) => vec![tag],
            OneOrMany::Many(tags) => tags,
        };
        let mut tags: Vec<String> = Vec::new();
        for tag in raw {
            let tag = tag.trim().to_lowercase();
            if !tag.is_empty() && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Ok(ServerTags(tags))
    }
}

/// `operator`'s value (see [`settings::de_operator`]).
struct OperatorValue(String);

impl<'de> Deserialize<'de> for OperatorValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        settings::de_operator(deserializer).map(OperatorValue)
    }
}

/// `resolver`'s value (see [`settings::de_resolver`]).
struct ResolverValue(ResolverKind);

impl<'de> Deserialize<'de> for ResolverValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        settings::de_resolver(deserializer).map(ResolverValue)
    }
}

/// leafd's own top-level keys, refused by hubd.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeafdKeys;

impl Extension for LeafdKeys {
    const KEYS: &'static [&'static str] =
        &["uplinks", "board", "boards_dir", "serial", "modbus", "gpio"];
    /// Not offered as alternatives to an unknown key: hubd does not read them.
    const LISTED: &'static [&'static str] = &[];

    fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        _key: &str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        // Refused from inside the value, so the error carries the value's line.
        map.next_value_seed(Refuse)
    }
}

/// Why a leafd key is refused.
const REFUSAL: &str = "a leafd setting: hubd has no uplinks, serial ports, Modbus buses or GPIO \
                       lines (they run in leafd, on the gateway); remove it from hubd's file";

/// A value that is refused whatever it is.
struct Refuse;

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Refuses every kind of value with [`REFUSAL`].
macro_rules! refuse {
    ($($method:ident($($arg:ty)?)),* $(,)?) => {
        $(fn $method<E: de::Error>(self $(, _: $arg)?) -> Result<(), E> {
            Err(E::custom(REFUSAL))
        })*
    };
}

impl<'de> Visitor<'de> for Refuse {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no value (hubd does not read this key)")
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8]),
        visit_none(),
        visit_unit(),
    );

    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(REFUSAL))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(REFUSAL))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(REFUSAL))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(REFUSAL))
    }
}

/// Reads and deserializes a config file; see `leaf_core::config::load_file`.
pub fn load_file(path: &Path) -> Result<(Config, HubKeys), ConfigError> {
    config::load_file_with::<HubKeys>(path)
}

/// hubd's whole configuration: the shared keys and its own.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The keys both binaries read.
    pub server: Config,
    /// hubd's own (operator mode).
    pub hub: HubKeys,
}

impl AsRef<Config> for HubConfig {
    fn as_ref(&self) -> &Config {
        &self.server
    }
}

/// The effective configuration: the `--config` file if given (else the defaults), overridden
/// by the flags, then validated.
pub fn load(args: &ServerArgs, cluster: &ClusterArgs) -> Result<HubConfig, ConfigError> {
    let (server, mut hub) = cli::load_with::<HubKeys>(args)?;
    cluster.apply(&mut hub)?;
    validate(&server, &hub)?;
    Ok(HubConfig { server, hub })
}

/// The shared checks, and operator mode's: users come from JWTs then, so none may be
/// configured.
pub fn validate(cfg: &Config, hub: &HubKeys) -> Result<(), ConfigError> {
    cfg.validate()?;
    if let Some(cluster) = &hub.cluster {
        cluster
            .check()
            .map_err(|(key, e)| ConfigError::invalid(key, e))?;
    }
    let operator = hub
        .operator_settings()
        .map_err(|e| ConfigError::invalid("operator", e))?;
    if operator.is_some() {
        let a = &cfg.authorization;
        if a.user.is_some() || a.token.is_some() || !a.users.is_empty() {
            return Err(ConfigError::invalid(
                "authorization",
                "operator mode: users come from JWTs, none may be configured",
            ));
        }
        if let Some((name, _)) = cfg.accounts.iter().find(|(_, a)| !a.users.is_empty()) {
            return Err(ConfigError::invalid(
                format!("accounts.{name}.users"),
                "operator mode: users come from JWTs, none may be configured",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaf_core::config::Format;

    fn refusal(text: &str, format: Format, file: &str) -> String {
        config::parse_str_with::<HubKeys>(text, format, file)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn leafd_keys_are_refused_by_name_and_line() {
        let cases = [
            (
                "port = 4222\n\n[[serial]]\nname = \"p\"\n",
                "hubd.toml:3: serial: a leafd setting",
            ),
            (
                "port = 4222\nboard = \"rpi4\"\n",
                "hubd.toml:2: board: a leafd setting",
            ),
            (
                "boards_dir = \"/etc\"\n",
                "hubd.toml:1: boards_dir: a leafd setting",
            ),
            (
                "[[modbus]]\nname = \"m\"\n",
                "hubd.toml:1: modbus: a leafd setting",
            ),
            ("gpio = []\n", "hubd.toml:1: gpio: a leafd setting"),
            (
                "jetstream = true\n[[uplinks]]\nname = \"u\"\n",
                "hubd.toml:2: uplinks: a leafd setting",
            ),
        ];
        for (text, want) in cases {
            let err = refusal(text, Format::Toml, "hubd.toml");
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        let err = refusal(
            "{\n  \"port\": 4222,\n  \"serial\": [{\"name\": \"p\"}]\n}",
            Format::Json,
            "hubd.json",
        );
        assert!(
            err.starts_with("hubd.json:3: serial: a leafd setting"),
            "{err}"
        );
    }

    #[test]
    fn shared_keys_load_and_unknown_ones_are_listed() {
        let (cfg, _) =
            config::parse_str_with::<HubKeys>("port = 5\n", Format::Toml, "hubd.toml").unwrap();
        assert_eq!(cfg.port, 5);
        let err = refusal("prot = 5\n", Format::Toml, "hubd.toml");
        assert!(
            err.starts_with("hubd.toml:1: unknown key `prot` (expected one of host, port,"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "leafnodes, accounts, system_account, lame_duck_duration, lame_duck_grace_period, \
                 pid_file, pidfile, log_file, logfile, syslog, websocket, cluster, server_tags, \
                 operator, resolver, resolver_preload)"
            ),
            "{err}"
        );
    }

    /// nats-server's format: hubd's own keys under nats-server's names (`cluster` with
    /// `listen` as a port, `cluster_advertise`, `net`, route `authorization` with `username`
    /// and `pass`; `operators` for `operator`), leafd's refused by name, line and column.
    #[test]
    fn nats_server_format() {
        let text = "cluster {\n  name: plant\n  listen: 6222\n  net: 127.0.0.1\n  \
                    cluster_advertise: \"10.0.0.1:6222\"\n  \
                    authorization { username: r, pass: s, timeout: 2 }\n  \
                    routes: [\n    nats-route://r:s@127.0.0.1:6223\n  ]\n}\n";
        let (_, hub) = config::parse_str_with::<HubKeys>(text, Format::NatsConf, "hubd.conf")
            .unwrap_or_else(|e| panic!("{e}"));
        let cluster = hub.cluster.unwrap();
        assert_eq!(cluster.name.as_deref(), Some("plant"));
        assert_eq!(cluster.listen.as_deref(), Some(":6222"));
        assert_eq!(cluster.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(cluster.advertise.as_deref(), Some("10.0.0.1:6222"));
        assert_eq!(cluster.authorization.unwrap().user, "r");
        assert_eq!(cluster.routes.len(), 1);
        let (_, hub) = config::parse_str_with::<HubKeys>(
            "operators: /etc/op.jwt\n",
            Format::NatsConf,
            "hubd.conf",
        )
        .unwrap();
        assert_eq!(hub.operator.as_deref(), Some("/etc/op.jwt"));
        let err = refusal(
            "port: 4222\n  serial: [ { name: p } ]\n",
            Format::NatsConf,
            "hubd.conf",
        );
        assert!(
            err.starts_with("hubd.conf:2:11: serial: a leafd setting"),
            "{err}"
        );
    }

    /// `server_tags` in every format: one tag or a list, normalized as nats-server's (trimmed,
    /// lowercased, no duplicates); a value of another type names the key and its line.
    #[test]
    fn server_tags_in_every_format() {
        let cases = [
            (
                "server_tags = [\"SSD\", \" eu \", \"ssd\"]\n",
                Format::Toml,
                "h.toml",
            ),
            (
                "{\"server_tags\": [\"ssd\", \"EU\"]}",
                Format::Json,
                "h.json",
            ),
            ("server_tags: [ssd, eu]\n", Format::NatsConf, "h.conf"),
        ];
        for (text, format, file) in cases {
            let (_, hub) = config::parse_str_with::<HubKeys>(text, format, file)
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(hub.server_tags, ["ssd", "eu"], "{text:?}");
        }
        let (_, hub) =
            config::parse_str_with::<HubKeys>("server_tags: gpu\n", Format::NatsConf, "h.conf")
                .unwrap();
        assert_eq!(hub.server_tags, ["gpu"]);
        let err = refusal("port = 1\nserver_tags = 5\n", Format::Toml, "h.toml");
        assert!(err.starts_with("h.toml:2: server_tags:"), "{err}");
    }

    /// `hub/hubd.example.toml` (what the Debian package installs as /etc/hubd/hubd.toml)
    /// parses and validates, so it cannot drift from the code.
    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../hubd.example.toml");
        let (cfg, hub) =
            config::parse_str_with::<HubKeys>(text, Format::Toml, "hubd.example.toml").unwrap();
        validate(&cfg, &hub).unwrap();
        assert_eq!(cfg.server_name.as_deref(), Some("hub"));
        assert!(
            cfg.leafnodes.listen.is_some(),
            "the example accepts gateways"
        );
    }
}
