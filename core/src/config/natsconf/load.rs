//! The format read onto the shared [`Config`] and a binary's [`Extension`]: parse, apply
//! [`keys::normalize`], deserialize through [`TopDeserializer`], and turn every failure into a
//! [`ConfigError`] naming file, line, column and key.

use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{keys, parse, ParseError, Pos, TopDeserializer};
use crate::config::extension::TopLevel;
use crate::config::{Config, ConfigError, Extension, Location};

/// Reads `text` (named `origin`, read from `path`) as the binary's configuration.
pub(in crate::config) fn load<X: Extension>(
    text: &str,
    origin: &str,
    path: Option<&Path>,
) -> Result<(Config, X), ConfigError> {
    let mut map = parse(text, origin, path).map_err(syntax)?;
    let mut known: Vec<&str> = config_fields().to_vec();
    known.extend_from_slice(X::KEYS);
    let ignored = keys::normalize(&mut map, &known).map_err(|r| ConfigError::InvalidValue {
        at: location(Some(&r.pos), origin),
        key: r.key,
        message: r.message,
    })?;
    let top = TopDeserializer {
        map: &map,
        pos: Pos {
            file: origin.into(),
            line: 1,
            column: 1,
        },
    };
    let TopLevel(mut config, ext) = serde_path_to_error::deserialize(top).map_err(|err| {
        let at = location(err.inner().pos.as_ref(), origin);
        let message = err.inner().message.clone();
        ConfigError::from_parts(err.path(), &message, at)
    })?;
    config.ignored_settings = ignored;
    Ok((config, ext))
}

fn syntax(e: ParseError) -> ConfigError {
    ConfigError::Syntax {
        at: location(Some(&e.pos), &e.pos.file),
        message: e.message,
    }
}

fn location(pos: Option<&Pos>, origin: &str) -> Location {
    match pos {
        Some(pos) => Location {
            file: pos.file.to_string(),
            line: Some(pos.line),
            column: Some(pos.column),
        },
        None => Location {
            file: origin.to_owned(),
            line: None,
            column: None,
        },
    }
}

/// The top-level keys of the shared [`Config`], as its derived `Deserialize` lists them.
fn config_fields() -> &'static [&'static str] {
    /// Hands back the field list the derived impl passes to `deserialize_struct`.
    struct Probe;
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field list")
        }
    }
    impl std::error::Error for Fields {}
    impl de::Error for Fields {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Fields(&[])
        }
    }
    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match Config::deserialize(Probe) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}
