//! Top-level keys a binary adds to the shared configuration ([`Extension`]), and the one-pass
//! reader that hands each key of a file to whoever owns it.
//!
//! The shared [`Config`] is a plain serde struct. The reader gives its derived
//! `Deserialize` a view of the file's top-level table from which the extension's keys are
//! taken out as they come ([`Extension::read_key`] reads their values in place), so errors
//! inside either part keep the key path and the line the parser reports, and an unknown key
//! lists the keys of both (`unknown key `prot` (expected one of host, port, ..., gpio)`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::Config;

/// Top-level keys a binary reads besides the shared ones (leafd's `uplinks` and gateways;
/// hubd's refusal of those).
pub trait Extension: Default {
    /// The keys, in the order they are listed in error messages (after the shared ones).
    const KEYS: &'static [&'static str];

    /// The keys an unknown key's error lists as expected (after the shared ones): all of
    /// [`Self::KEYS`] by default; none for keys that are only there to be refused.
    const LISTED: &'static [&'static str] = Self::KEYS;

    /// Reads the value of `key` (one of [`Self::KEYS`], each at most once) with
    /// `map.next_value()` or `map.next_value_seed(...)`, or refuses it with an error.
    fn read_key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// No keys beyond the shared ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoExtension;

impl Extension for NoExtension {
    const KEYS: &'static [&'static str] = &[];

    fn read_key<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        _map: &mut A,
    ) -> Result<(), A::Error> {
        Err(de::Error::custom(format!("unknown field `{key}`")))
    }
}

/// A whole file: the shared configuration and the extension's part. The file must be a
/// table (a JSON array is not a configuration).
pub(super) struct TopLevel<X>(pub(super) Config, pub(super) X);

impl<'de, X: Extension> Deserialize<'de> for TopLevel<X> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopVisitor(PhantomData))
    }
}

struct TopVisitor<X>(PhantomData<X>);

impl<'de, X: Extension> Visitor<'de> for TopVisitor<X> {
    type Value = TopLevel<X>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevel<X>, A::Error> {
        let mut ext = X::default();
        let config = Config::deserialize(Split { map, ext: &mut ext })?;
        Ok(TopLevel(config, ext))
    }
}

/// The file's top-level table as the shared [`Config`]'s `Deserialize` sees it.
struct Split<'x, A, X> {
    map: A,
    ext: &'x mut X,
}

impl<'de, A: MapAccess<'de>, X: Extension> Deserializer<'de> for Split<'_, A, X> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        self.deserialize_struct("", &[], visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(SplitMap {
            map: self.map,
            ext: self.ext,
            fields,
            seen: Vec::new(),
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The shared keys of the table, in file order; the extension's are read on the way.
struct SplitMap<'x, A, X> {
    map: A,
    ext: &'x mut X,
    /// The shared keys (the derived `Deserialize`'s fields).
    fields: &'static [&'static str],
    /// The extension's keys read so far.
    seen: Vec<&'static str>,
}

impl<'de, A: MapAccess<'de>, X: Extension> MapAccess<'de> for SplitMap<'_, A, X> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let key = self.map.next_key_seed(KeySeed {
                fields: self.fields,
                extension: X::KEYS,
                listed: X::LISTED,
                seen: &mut self.seen,
            })?;
            match key {
                None => return Ok(None),
                Some(Key::Extension(key)) => self.ext.read_key(key, &mut self.map)?,
                Some(Key::Shared(key)) => {
                    let key: de::value::StringDeserializer<A::Error> = key.into_deserializer();
                    return seed.deserialize(key).map(Some);
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A top-level key and who reads its value.
enum Key {
    /// One of the shared [`Config`]'s.
    Shared(String),
    /// One of the extension's.
    Extension(&'static str),
}

/// Reads a top-level key and sorts it; an unknown key (or an extension key given twice) is
/// refused here, while the parser is on the key, so the error carries the key's line.
struct KeySeed<'s> {
    fields: &'static [&'static str],
    extension: &'static [&'static str],
    /// The extension's keys named in an unknown key's error.
    listed: &'static [&'static str],
    seen: &'s mut Vec<&'static str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        let key = String::deserialize(deserializer)?;
        if let Some(&known) = self.extension.iter().find(|k| **k == key) {
            if self.seen.contains(&known) {
                return Err(de::Error::duplicate_field(known));
            }
            self.seen.push(known);
            return Ok(Key::Extension(known));
        }
        if self.fields.contains(&key.as_str()) {
            return Ok(Key::Shared(key));
        }
        Err(de::Error::custom(unknown_key(
            &key,
            self.fields,
            self.listed,
        )))
    }
}

/// serde's message for an unknown field (which `ConfigError` turns into its own), listing
/// the keys of both parts.
fn unknown_key(key: &str, fields: &[&str], extension: &[&str]) -> String {
    let expected: Vec<String> = fields
        .iter()
        .chain(extension)
        .map(|k| format!("`{k}`"))
        .collect();
    match expected.as_slice() {
        [] => format!("unknown field `{key}`, there are no fields"),
        [one] => format!("unknown field `{key}`, expected {one}"),
        [a, b] => format!("unknown field `{key}`, expected {a} or {b}"),
        all => format!("unknown field `{key}`, expected one of {}", all.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str_with, value, ConfigError, Format};

    /// Two keys of a binary of its own: a list of tables and a plain value.
    #[derive(Debug, Default, PartialEq)]
    struct Extra {
        items: Vec<Item>,
        flag: Option<bool>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
    }

    impl Extension for Extra {
        const KEYS: &'static [&'static str] = &["items", "flag"];

        fn read_key<'de, A: MapAccess<'de>>(
            &mut self,
            key: &str,
            map: &mut A,
        ) -> Result<(), A::Error> {
            match key {
                "items" => self.items = map.next_value_seed(value::TableList::new())?,
                _ => self.flag = map.next_value()?,
            }
            Ok(())
        }
    }

    fn toml(text: &str) -> Result<(Config, Extra), ConfigError> {
        parse_str_with(text, Format::Toml, "x.toml")
    }

    #[test]
    fn keys_go_to_their_owner_in_any_order() {
        let (cfg, extra) =
            toml("flag = true\nport = 5\n[[items]]\nname = \"a\"\n[[items]]\nname = \"b\"\n")
                .unwrap();
        assert_eq!(cfg.port, 5);
        assert_eq!(extra.flag, Some(true));
        assert_eq!(extra.items.len(), 2);
        #[cfg(feature = "json-config")]
        {
            let json = r#"{"items": [{"name": "a"}], "host": "h", "flag": false}"#;
            let (cfg, extra) = parse_str_with::<Extra>(json, Format::Json, "x.json").unwrap();
            assert_eq!((cfg.host.as_str(), extra.flag), ("h", Some(false)));
        }
    }

    #[test]
    fn errors_keep_key_and_line() {
        let err = toml("port = 5\n\n[[items]]\nnam = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.toml:4: unknown key `items[0].nam`"),
            "{err}"
        );
        let err = toml("port = 5\nflg = true\n").unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml:2: unknown key `flg` (expected one of host, port,"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "leafnodes, accounts, system_account, lame_duck_duration, lame_duck_grace_period, \
                 pid_file, pidfile, log_file, logfile, syslog, websocket, items, flag)"
            ),
            "{err}"
        );
        #[cfg(feature = "json-config")]
        {
            let err = parse_str_with::<Extra>(
                "{\n\"flag\": true,\n\"flag\": false\n}",
                Format::Json,
                "x.json",
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("x.json:3:") && err.contains("duplicate field `flag`"),
                "{err}"
            );
        }
    }
}
