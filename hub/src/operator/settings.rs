//! hubd's operator-mode keys, as nats-server names them:
//!
//! ```toml
//! operator = "/etc/hubd/operator.jwt"       # a file, or the JWT itself
//! system_account = "ADSYS..."               # the system account's public key
//! resolver = "MEMORY"                        # or { type = "full", dir = "/var/lib/hubd/jwt" }
//! [resolver_preload]
//! ACCOUNTPUBKEY = "eyJ0eXAiOiJKV1Qi..."
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::OperatorError;

/// Where account JWTs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverKind {
    /// `MEMORY`: the preloaded accounts only.
    Memory,
    /// `{ type: full, dir }`: stored in `dir`, updated at run time.
    Full {
        /// The directory of account JWTs.
        dir: PathBuf,
    },
}

/// The operator-mode settings of a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSettings {
    /// `operator`: a path to the operator JWT, or the JWT itself.
    pub operator: String,
    /// `resolver`.
    pub resolver: ResolverKind,
    /// `resolver_preload`: account public key → account JWT.
    pub preload: BTreeMap<String, String>,
}

impl OperatorSettings {
    /// The operator JWT: `operator` itself when it is one, else the file it names.
    pub fn operator_jwt(&self) -> Result<String, OperatorError> {
        let text = self.operator.trim();
        if text.starts_with("eyJ") {
            return Ok(text.to_owned());
        }
        let content = std::fs::read_to_string(text)
            .map_err(|e| OperatorError::new("operator", format!("cannot read {text}: {e}")))?;
        // nsc writes the JWT alone, or between `-----BEGIN ...-----` lines.
        content
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("eyJ"))
            .map(str::to_owned)
            .ok_or_else(|| OperatorError::new("operator", format!("{text} holds no JWT")))
    }
}

/// `operator`: a string (or a list of exactly one, as nats-server also reads it).
pub fn de_operator<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the operator JWT or the path of its file")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let first: String = seq
                .next_element()?
                .ok_or_else(|| de::Error::custom("an empty list: give one operator"))?;
            if seq.next_element::<String>()?.is_some() {
                return Err(de::Error::custom(
                    "several operators: not supported yet (give one)",
                ));
            }
            Ok(first)
        }
    }
    deserializer.deserialize_any(V)
}

/// `resolver`: `MEMORY`, or a table `{ type = "full", dir = ... }`.
pub fn de_resolver<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ResolverKind, D::Error> {
    /// `interval` and `timeout` tune the synchronisation between several full resolvers of a
    /// cluster, and `limit`/`ttl` the cache resolver: a single hub has nothing to tune, so
    /// they are read and have no effect.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Table {
        #[serde(rename = "type")]
        kind: String,
        dir: Option<PathBuf>,
        #[serde(default)]
        allow_delete: bool,
        #[serde(default)]
        interval: Option<de::IgnoredAny>,
        #[serde(default)]
        timeout: Option<de::IgnoredAny>,
        #[serde(default)]
        limit: Option<de::IgnoredAny>,
        #[serde(default)]
        ttl: Option<de::IgnoredAny>,
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = ResolverKind;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("MEMORY, or a table { type = \"full\", dir = ... }")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<ResolverKind, E> {
            match v.trim() {
                m if m.eq_ignore_ascii_case("memory") => Ok(ResolverKind::Memory),
                u if u.to_ascii_uppercase().starts_with("URL(") => Err(E::custom(
                    "an account server URL resolver: not supported yet (use MEMORY or full)",
                )),
                other => Err(E::custom(format!(
                    "invalid resolver `{other}`: expected MEMORY or a full resolver table"
                ))),
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ResolverKind, A::Error> {
            let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
            match t.kind.to_ascii_lowercase().as_str() {
                "full" => {
                    if t.allow_delete {
                        return Err(de::Error::custom(
                            "allow_delete: not supported yet (accounts cannot be deleted)",
                        ));
                    }
                    let dir = t
                        .dir
                        .ok_or_else(|| de::Error::custom("missing key `dir` (with type full)"))?;
                    Ok(ResolverKind::Full { dir })
                }
                "cache" => Err(de::Error::custom(
                    "type cache: not supported yet (use full)",
                )),
                other => Err(de::Error::custom(format!(
                    "invalid type `{other}`: expected full"
                ))),
            }
        }
    }
    deserializer.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "de_resolver")]
        resolver: ResolverKind,
        #[serde(default, deserialize_with = "de_operator")]
        operator: String,
    }

    #[test]
    fn resolvers_and_operators_read_as_nats_server_writes_them() {
        let p: Probe =
            serde_json::from_str(r#"{"resolver": "MEMORY", "operator": "op.jwt"}"#).unwrap();
        assert_eq!(p.resolver, ResolverKind::Memory);
        assert_eq!(p.operator, "op.jwt");
        let p: Probe = serde_json::from_str(
            r#"{"resolver": {"type": "full", "dir": "/j"}, "operator": ["a"]}"#,
        )
        .unwrap();
        assert_eq!(p.resolver, ResolverKind::Full { dir: "/j".into() });
        for (text, needle) in [
            (r#"{"resolver": "URL(http://x)"}"#, "not supported yet"),
            (
                r#"{"resolver": {"type": "cache", "dir": "/j"}}"#,
                "not supported yet",
            ),
            (r#"{"resolver": {"type": "full"}}"#, "missing key `dir`"),
            (
                r#"{"resolver": "MEMORY", "operator": ["a", "b"]}"#,
                "several operators",
            ),
        ] {
            let err = serde_json::from_str::<Probe>(text)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
