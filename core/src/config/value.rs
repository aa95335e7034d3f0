//! Typed config values written as strings: durations, sizes and log levels.
//!
//! Each value has a plain parser (`parse_duration`, `parse_size`,
//! `LogLevel::from_str`) used by both the config file and the command line,
//! and a serde helper that also accepts the integer form from a file. The helpers are
//! public for the keys binaries add ([`super::Extension`]): `#[serde(deserialize_with =
//! "value::de_duration")]` reads the same forms everywhere.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

/// What a duration value should look like, for error messages.
const DURATION_EXPECTED: &str =
    "a duration such as \"500ms\", \"30s\", \"2m\", \"1h\" or a number of seconds";

/// What a size value should look like, for error messages.
const SIZE_EXPECTED: &str = "a size such as 1048576, \"64KB\", \"1MB\" or \"1MiB\"";

/// What a log level should look like, for error messages.
const LOG_LEVEL_EXPECTED: &str = "one of error, warn, info, debug, trace";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A string that is not a valid duration, size or log level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: expected {expected}")]
pub struct ParseValueError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl ParseValueError {
    fn new(what: &'static str, input: &str, expected: &'static str) -> Self {
        ParseValueError {
            what,
            input: input.to_owned(),
            expected,
        }
    }
}

/// Parses a Go-style duration: one or more `<number><unit>` parts such as
/// `"500ms"`, `"30s"`, `"2m"`, `"1h30m"` or `"1.5s"`.
///
/// Units are `ns`, `us` (or `µs`), `ms`, `s`, `m` and `h`. A bare `"0"` is
/// accepted; other numbers need a unit (a config file may give a plain
/// integer number of seconds instead of a string).
pub fn parse_duration(input: &str) -> Result<Duration, ParseValueError> {
    let err = || ParseValueError::new("duration", input, DURATION_EXPECTED);
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int_part, after) = split_digits(rest);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => return Err(err()),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut part = int.checked_mul(unit_nanos).ok_or_else(err)?;
        // Fractional digits below one nanosecond are dropped.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(err)?;
        rest = after;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| err())?;
    // The remainder is below 10^9, so it always fits in a u32.
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| err())?;
    Ok(Duration::new(secs, nanos))
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a size in bytes: a plain integer, or an integer with a unit, as
/// nats-server does.
///
/// Units (case-insensitive, optional space before the unit, see [`size_unit`]): `B`; `K`,
/// `M`, `G`, `T`, `P`, `E` are decimal (1000-based); `KB`, `MB`, `GB`, `TB`, ... and `KiB`,
/// `MiB`, ... (also `Ki`, `Mi`, ...) are binary (1024-based). So `"1MB"` is
/// 1048576 bytes, like nats-server's `max_payload: 1MB`.
pub fn parse_size(input: &str) -> Result<u64, ParseValueError> {
    let err = || ParseValueError::new("size", input, SIZE_EXPECTED);
    let s = input.trim();
    let (digits, unit) = split_digits(s);
    if digits.is_empty() {
        return Err(err());
    }
    let number: u64 = digits.parse().map_err(|_| err())?;
    let multiplier = size_unit(unit.trim_start()).ok_or_else(err)?;
    number.checked_mul(multiplier).ok_or_else(err)
}

/// The bytes of one size unit, any case, as nats-server reads them: none or `B` is 1; `K`,
/// `M`, `G`, `T`, `P`, `E` are powers of 1000; `KB`, `Ki`, `KiB` (and so on) powers of 1024.
pub fn size_unit(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let (power, binary) = match unit.as_bytes() {
        [] | [b'b'] => return Some(1),
        [p] => (*p, false),
        [p, b'b' | b'i'] | [p, b'i', b'b'] => (*p, true),
        _ => return None,
    };
    let exponent = match power {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        b'e' => 6,
        _ => return None,
    };
    let base: u64 = if binary { 1024 } else { 1000 };
    Some(base.pow(exponent))
}

/// How much the server logs, from least to most verbose.
///
/// Ordered by verbosity, so `LogLevel::Debug > LogLevel::Info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Normal operational messages (the default).
    #[default]
    Info,
    /// Debug messages (nats-server's `-D`).
    Debug,
    /// Protocol tracing (nats-server's `-V`).
    Trace,
}

impl LogLevel {
    /// The lower-case name used in config files and on the command line; also
    /// a valid `tracing` level directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = ParseValueError;

    /// Case-insensitive; `warning` is accepted for `warn`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(ParseValueError::new("log level", s, LOG_LEVEL_EXPECTED)),
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LevelVisitor;
        impl Visitor<'_> for LevelVisitor {
            type Value = LogLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(LOG_LEVEL_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LogLevel, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(LevelVisitor)
    }
}

/// Serde helper: a duration given as integer or fractional seconds, or as a
/// string for [`parse_duration`].
pub fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(DURATION_EXPECTED)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v)
                .map_err(|_| E::invalid_value(Unexpected::Float(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
        }
    }
    deserializer.deserialize_any(DurationVisitor)
}

/// Serde visitor for sizes: a non-negative integer or a string for
/// [`parse_size`].
struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXPECTED)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// Serde helper: a size in bytes as a `usize`.
pub fn de_size_usize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let size = deserializer.deserialize_any(SizeVisitor)?;
    usize::try_from(size).map_err(|_| {
        de::Error::invalid_value(Unexpected::Unsigned(size), &"a size that fits in memory")
    })
}

/// Serde helper: an optional size in bytes (the key being present means `Some`).
pub fn de_opt_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer.deserialize_any(SizeVisitor).map(Some)
}

/// Serde helper: a list of strings, or a single string meaning a list of one.
pub fn de_string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(StringListVisitor)
}

/// Serde visitor behind [`de_string_list`].
pub struct StringListVisitor;

impl<'de> Visitor<'de> for StringListVisitor {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_owned()])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<String>()? {
            out.push(item);
        }
        Ok(out)
    }
}

/// Deserializes a struct `T` from a table only.
///
/// serde derive also accepts a struct written as a sequence of its field
/// values (`authorization = ["a", "b"]`), which is never what a config file
/// means; this seed rejects it with "expected a table".
pub struct TableSeed<T>(PhantomData<T>);

impl<T> TableSeed<T> {
    /// A seed for a `T`.
    pub fn new() -> Self {
        TableSeed(PhantomData)
    }
}

impl<T> Default for TableSeed<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for TableSeed<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for TableSeed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// Serde helper: a struct written as a table (see [`TableSeed`]).
pub fn de_table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    TableSeed::new().deserialize(deserializer)
}

/// Serde helper: an optional duration (see [`de_duration`]); absent keys stay `None`
/// through `#[serde(default)]`.
pub fn de_opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(deserializer).map(Some)
}

/// The seed form of [`de_table_list`], for a key read with `MapAccess::next_value_seed`
/// (a binary's own keys, see [`super::Extension`]).
pub struct TableList<T>(PhantomData<T>);

impl<T> TableList<T> {
    /// A seed for a `Vec<T>`.
    pub fn new() -> Self {
        TableList(PhantomData)
    }
}

impl<T> Default for TableList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for TableList<T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        de_table_list(deserializer)
    }
}

/// Serde helper: a list of structs, each written as a table.
pub fn de_table_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    struct ListVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of tables")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element_seed(TableSeed::new())? {
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(ListVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            (".25s", Duration::from_millis(250)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (" 2m ", Duration::from_secs(120)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in [
            "",
            "30",
            "s",
            "-1s",
            "1x",
            "1.s.",
            "5 s",
            "1d",
            ".s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("1048576", 1_048_576),
            ("1MB", 1 << 20),
            ("1mb", 1 << 20),
            ("1MiB", 1 << 20),
            ("1M", 1_000_000),
            ("64KB", 64 << 10),
            ("64 KB", 64 << 10),
            ("64K", 64_000),
            ("2GB", 2 << 30),
            ("1TiB", 1 << 40),
            ("100B", 100),
            ("1P", 1_000_000_000_000_000),
            ("1EiB", 1 << 60),
        ];
        for (input, want) in ok {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
        for bad in ["", "MB", "-1", "1.5MB", "1XB", "99999999999TB", "1 M B"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn log_levels() {
        assert_eq!("INFO".parse(), Ok(LogLevel::Info));
        assert_eq!("warning".parse(), Ok(LogLevel::Warn));
        assert!(LogLevel::Trace > LogLevel::Debug && LogLevel::Debug > LogLevel::Info);
        let err = "loud".parse::<LogLevel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid log level `loud`: expected one of error, warn, info, debug, trace"
        );
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            assert_eq!(level.as_str().parse(), Ok(level));
        }
    }
}
