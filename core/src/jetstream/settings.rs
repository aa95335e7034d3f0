//! The `jetstream` settings as a file writes them (`jetstream = true`, or a table with
//! `store_dir`, `domain`, `max_memory_store`, `max_file_store`): read by `crate::config`, turned
//! into [`super::JetStreamOptions`] by `crate::app::jetstream_options` (which picks the store
//! directory).

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::config::value;

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
