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
    /// What the account offers other accounts: streams (messages) and services (requests).
    #[serde(deserialize_with = "value::de_table_list")]
    pub exports: Vec<Export>,
    /// What the account takes from others' exports.
    #[serde(deserialize_with = "value::de_table_list")]
    pub imports: Vec<Import>,
}

/// Which kind of export or import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Messages: published in the exporter, delivered in the importer.
    Stream,
    /// Requests: published in the importer, answered in the exporter.
    Service,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Stream => "stream",
            Kind::Service => "service",
        })
    }
}

/// How many responses a service request may get (`response_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseType {
    /// One (the default): the response route is gone after the first answer.
    #[default]
    Singleton,
    /// Any number, until `response_threshold`.
    Stream,
    /// Any number, until `response_threshold` (a response in several parts).
    Chunked,
}

/// One entry of an account's `exports`: `{ stream = "subject" }` or `{ service = "subject" }`,
/// with optional `accounts` (who may import it; everybody when absent) and, for services,
/// `response_type` and `response_threshold`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ExportTable")]
pub struct Export {
    /// Stream or service.
    pub kind: Kind,
    /// The subject (wildcards allowed).
    pub subject: String,
    /// Who may import it (`None`: every account).
    pub accounts: Option<Vec<String>>,
    /// Services: how many responses a request may get.
    pub response_type: ResponseType,
    /// Services: how long responses are routed back after the request.
    pub response_threshold: std::time::Duration,
}

/// How long a service's responses are routed back by default (nats-server's 2 minutes).
pub const DEFAULT_RESPONSE_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportTable {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string_list")]
    accounts: Option<Vec<String>>,
    #[serde(default)]
    response_type: Option<ResponseType>,
    #[serde(default, deserialize_with = "value::de_opt_duration")]
    response_threshold: Option<std::time::Duration>,
    #[serde(default)]
    latency: Option<de::IgnoredAny>,
}

/// An optional list of strings (`accounts = ["B"]`; a single string is a list of one).
fn de_opt_string_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    value::de_string_list(deserializer).map(Some)
}

impl TryFrom<ExportTable> for Export {
    type Error = String;

    fn try_from(t: ExportTable) -> Result<Self, Self::Error> {
        let (kind, subject) = match (t.stream, t.service) {
            (Some(s), None) => (Kind::Stream, s),
            (None, Some(s)) => (Kind::Service, s),
            _ => return Err("set exactly one of `stream` and `service`".to_owned()),
        };
        if kind == Kind::Stream && (t.response_type.is_some() || t.response_threshold.is_some()) {
            return Err("`response_type` and `response_threshold` are for services".to_owned());
        }
        if t.latency.is_some() {
            return Err("`latency`: not supported yet".to_owned());
        }
        Ok(Export {
            kind,
            subject,
            accounts: t.accounts,
            response_type: t.response_type.unwrap_or_default(),
            response_threshold: t.response_threshold.unwrap_or(DEFAULT_RESPONSE_THRESHOLD),
        })
    }
}

/// One entry of an account's `imports`: `{ stream = { account, subject }, prefix | to }` or
/// `{ service = { account, subject }, to }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ImportTable")]
pub struct Import {
    /// Stream or service.
    pub kind: Kind,
    /// The exporting account.
    pub account: String,
    /// The subject in the exporting account (within one of its exports).
    pub subject: String,
    /// The subject in this account: streams arrive, requests are published, on it. Built
    /// from `prefix` (`<prefix>.<subject>`) or `to`; the exporter's subject otherwise.
    pub local: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportTable {
    #[serde(default)]
    stream: Option<ImportSource>,
    #[serde(default)]
    service: Option<ImportSource>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    share: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportSource {
    account: String,
    subject: String,
}

impl TryFrom<ImportTable> for Import {
    type Error = String;

    fn try_from(t: ImportTable) -> Result<Self, Self::Error> {
        let (kind, source) = match (t.stream, t.service) {
            (Some(s), None) => (Kind::Stream, s),
            (None, Some(s)) => (Kind::Service, s),
            _ => return Err("set exactly one of `stream` and `service`".to_owned()),
        };
        let local = match (kind, t.prefix, t.to) {
            (_, Some(_), Some(_)) => return Err("set either `prefix` or `to`, not both".to_owned()),
            (Kind::Service, Some(_), None) => {
                return Err("`prefix` is for stream imports (services use `to`)".to_owned())
            }
            (Kind::Stream, Some(prefix), None) => format!("{prefix}.{}", source.subject),
            (_, None, Some(to)) => to,
            (_, None, None) => source.subject.clone(),
        };
        if kind == Kind::Stream && t.share.is_some() {
            return Err("`share` is for service imports".to_owned());
        }
        Ok(Import {
            kind,
            account: source.account,
            subject: source.subject,
            local,
        })
    }
}

impl AccountSettings {
    /// Keys given that this server does not implement yet, by name (none at the moment:
    /// the hook stays for the next nats-server key).
    pub fn unsupported(&self) -> Vec<&'static str> {
        Vec::new()
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
