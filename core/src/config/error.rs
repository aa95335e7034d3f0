//! Config errors, and their construction from TOML, JSON and nats-server format errors.
//!
//! Every error that comes from a file names the file and, when the parser
//! knows it, the line; errors about a value also name its key as a dotted
//! path (`authorization.users[0].password`).

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde_path_to_error::Segment;

/// Where in a config file a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given (or another label for text that is not a file).
    pub file: String,
    /// The 1-based line, when the parser reported a position.
    pub line: Option<usize>,
    /// The 1-based column, when the parser reported one (nats-server's format).
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}", self.file),
            (Some(line), None) => write!(f, "{}:{line}", self.file),
            _ => f.write_str(&self.file),
        }
    }
}

/// An error loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The file is not valid TOML, JSON or nats-server format, or its top level is not a
    /// table.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// The parser's message.
        message: String,
    },

    /// A key the configuration does not know, usually a typo.
    #[error("{at}: unknown key `{key}` ({expected})")]
    UnknownKey {
        /// Where the key is.
        at: Location,
        /// The full dotted path of the unknown key, e.g. `authorization.usr`.
        key: String,
        /// The keys allowed at that place, e.g. `expected one of user, password`.
        expected: String,
    },

    /// A known key whose value has the wrong type or cannot be parsed.
    #[error("{at}: {key}: {message}")]
    InvalidValue {
        /// Where the value is.
        at: Location,
        /// The dotted path of the key, e.g. `authorization.users[0].password`.
        key: String,
        /// What is wrong with the value.
        message: String,
    },

    /// The file's format (by its name: `Format::from_path`) is left out of this build: a
    /// leafd built with `--no-default-features --features gateway` reads TOML only.
    #[error("{file}: {format} files are not read by this build (built without cargo feature `{feature}`; name the file *.toml)")]
    NotBuilt {
        /// The file (or the label of the text).
        file: String,
        /// The format, e.g. "nats-server's config format".
        format: &'static str,
        /// The cargo feature that reads it.
        feature: &'static str,
    },

    /// The configuration parsed but is not usable (see `Config::validate`).
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted path of the offending key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A semantic error about `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Builds an error from a deserializer message, the key path
    /// serde_path_to_error recorded, and the position.
    pub(super) fn from_parts(
        path: &serde_path_to_error::Path,
        message: &str,
        at: Location,
    ) -> Self {
        let mut segments: Vec<&Segment> = path.iter().collect();
        // A key that failed before it was read shows up as an unknown segment.
        while matches!(segments.last(), Some(Segment::Unknown)) {
            segments.pop();
        }
        // serde's `unknown_field` message: "unknown field `x`, expected one of `a`, `b`".
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((name, expected)) = rest.split_once("`, ") {
                // The path normally ends with the unknown key already.
                let mut key = key_path(&segments);
                if !matches!(segments.last(), Some(Segment::Map { key }) if key == name) {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(name);
                }
                let expected = if expected.starts_with("there are no fields") {
                    "no keys are allowed here".to_owned()
                } else {
                    expected.replace('`', "")
                };
                return ConfigError::UnknownKey { at, key, expected };
            }
        }
        let message = match message.strip_prefix("missing field ") {
            Some(rest) => format!("missing key {rest}"),
            None => message.to_owned(),
        };
        if segments.is_empty() {
            ConfigError::Syntax { at, message }
        } else {
            let key = key_path(&segments);
            ConfigError::InvalidValue { at, key, message }
        }
    }

    /// Converts a TOML deserialization error; `text` is the parsed input, used
    /// to turn the error's byte span into a line number.
    pub(super) fn from_toml(
        err: serde_path_to_error::Error<toml::de::Error>,
        text: &str,
        file: &str,
    ) -> Self {
        let inner = err.inner();
        let at = Location {
            file: file.to_owned(),
            line: inner.span().map(|span| line_of(text, span.start)),
            column: None,
        };
        // toml's syntax messages can span lines ("invalid string\nexpected ...").
        let message = inner.message().trim_end().replace('\n', "; ");
        Self::from_parts(err.path(), &message, at)
    }

    /// Converts a JSON deserialization error.
    #[cfg(feature = "json-config")]
    pub(super) fn from_json(
        err: serde_path_to_error::Error<serde_json::Error>,
        file: &str,
    ) -> Self {
        let (at, message) = json_parts(err.inner(), file);
        Self::from_parts(err.path(), &message, at)
    }

    /// Converts a JSON error found outside any key (e.g. trailing characters).
    #[cfg(feature = "json-config")]
    pub(super) fn from_json_syntax(err: &serde_json::Error, file: &str) -> Self {
        let (at, message) = json_parts(err, file);
        ConfigError::Syntax { at, message }
    }
}

/// Formats a key path as `authorization.users[0].password`.
fn key_path(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// The location and bare message of a JSON error.
#[cfg(feature = "json-config")]
fn json_parts(err: &serde_json::Error, file: &str) -> (Location, String) {
    let full = err.to_string();
    // serde_json appends the position to its message; keep only the message.
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    let at = Location {
        file: file.to_owned(),
        line: (err.line() > 0).then_some(err.line()),
        column: None,
    };
    (at, message)
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers() {
        let text = "a\nbb\n\nc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 6), 4);
        assert_eq!(line_of(text, 999), 4);
    }

    #[test]
    fn location_display() {
        let with_line = Location {
            file: "leafd.toml".into(),
            line: Some(7),
            column: None,
        };
        let without = Location {
            file: "leafd.toml".into(),
            line: None,
            column: None,
        };
        let with_column = Location {
            file: "leafd.conf".into(),
            line: Some(7),
            column: Some(3),
        };
        assert_eq!(with_line.to_string(), "leafd.toml:7");
        assert_eq!(without.to_string(), "leafd.toml");
        assert_eq!(with_column.to_string(), "leafd.conf:7:3");
    }
}
