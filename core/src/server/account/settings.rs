//! The `accounts` configuration block, as nats-server reads it:
//!
//! ```toml
//! system_account = "SYS"            # optional; `$SYS` by default
//! [accounts.PLANT_A]
//! users = [{ user = "a", password = "..." , permissions = { publish = ["plant_a.>"] } }]
//! jetstream = "enabled"             # or true, or { max_mem, max_file, max_streams, max_consumers }
//! [accounts.SYS]
//! users = [{ user = "admin", password = "..." }]
//! ```
//!
//! Users of an account log into that account; users of `authorization` into the global
//! account. A user name is unique across all of them.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::config::{value, User};

/// One entry of `accounts`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountSettings {
    /// The account's users (name and password, with optional permissions).
    #[serde(deserialize_with = "value::de_table_list")]
    pub users: Vec<User>,
    /// Whether the account has JetStream, and its limits.
    pub jetstream: AccountJetStream,
    /// Stream and service exports: recognised to be refused ("not supported yet") rather
    /// than silently ignored.
    pub exports: Option<de::IgnoredAny>,
    /// Stream and service imports: as `exports`.
    pub imports: Option<de::IgnoredAny>,
}

impl AccountSettings {
    /// Keys given that this server does not implement yet, by name.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.exports.is_some() {
            keys.push("exports");
        }
        if self.imports.is_some() {
            keys.push("imports");
        }
        if self.jetstream.max_streams.is_some() {
            keys.push("jetstream.max_streams");
        }
        if self.jetstream.max_consumers.is_some() {
            keys.push("jetstream.max_consumers");
        }
        keys
    }
}

/// An account's `jetstream`: `enabled`/`disabled`, a boolean, or a table of limits (which
/// enables it). Limits of -1 or absent are unlimited (within the server's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountJetStream {
    /// Whether the account has JetStream.
    pub enabled: bool,
    /// Most bytes of `storage: memory` streams (`max_mem`, `max_memory`, `max_mem_store`).
    pub max_memory: Option<u64>,
    /// Most bytes of `storage: file` streams (`max_file`, `max_store`, `max_file_store`).
    pub max_file: Option<u64>,
    /// Most streams (`max_streams`).
    pub max_streams: Option<u64>,
    /// Most consumers (`max_consumers`).
    pub max_consumers: Option<u64>,
}

/// The table form of an account's `jetstream`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LimitsTable {
    enabled: Option<bool>,
    #[serde(
        alias = "max_memory",
        alias = "max_mem_store",
        deserialize_with = "de_size_limit"
    )]
    max_mem: Option<u64>,
    #[serde(
        alias = "max_store",
        alias = "max_file_store",
        deserialize_with = "de_size_limit"
    )]
    max_file: Option<u64>,
    max_streams: Option<i64>,
    max_consumers: Option<i64>,
}

/// -1 (or any negative number) is unlimited.
fn limit(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

/// A size in bytes (`1GB`, `512MB`, a number), or -1 for unlimited (`None`).
fn de_size_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct SizeLimit;
    impl Visitor<'_> for SizeLimit {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size in bytes (such as 512MB), or -1 for unlimited")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u64>, E> {
            value::parse_size(v)
                .map(Some)
                .map_err(|e| E::custom(format!("invalid size `{v}`: {e}")))
        }
    }
    deserializer.deserialize_any(SizeLimit)
}

impl<'de> Deserialize<'de> for AccountJetStream {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsVisitor;
        impl<'de> Visitor<'de> for JsVisitor {
            type Value = AccountJetStream;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`enabled`, `disabled`, a boolean, or a table of limits")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AccountJetStream, E> {
                Ok(AccountJetStream {
                    enabled: v,
                    ..AccountJetStream::default()
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AccountJetStream, E> {
                match v.to_ascii_lowercase().as_str() {
                    "enabled" | "enable" | "true" => self.visit_bool(true),
                    "disabled" | "disable" | "false" => self.visit_bool(false),
                    _ => Err(E::custom(format!(
                        "invalid value `{v}`: expected `enabled` or `disabled`"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AccountJetStream, A::Error> {
                let t = LimitsTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(AccountJetStream {
                    enabled: t.enabled.unwrap_or(true),
                    max_memory: t.max_mem,
                    max_file: t.max_file,
                    max_streams: limit(t.max_streams),
                    max_consumers: limit(t.max_consumers),
                })
            }
        }
        deserializer.deserialize_any(JsVisitor)
    }
}
