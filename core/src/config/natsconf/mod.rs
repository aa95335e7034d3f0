//! nats-server's own configuration format, so an operator's `nats-server.conf` starts leafd
//! and hubd unchanged: the format of every config file whose name ends neither in `.toml`
//! nor in `.json`.
//!
//! Why a parser of our own: no Rust crate reads this format (searched crates.io and docs.rs
//! in 2026: there are nats clients and unrelated nginx/corosync-style parsers, none for
//! nats-server's grammar with its includes, variables and size suffixes). The grammar is
//! small, so this module is too: [`lexer`] reads scalars as nats-server 2.9's
//! `conf/lex.go` classifies them, [`parser`] builds a [`Map`] of [`Node`]s that remember
//! file, line and column, [`de`] lets the existing serde `Deserialize` impls read that tree
//! (so TOML, JSON and this format share every key, check and error path), and [`keys`]
//! maps nats-server's key names onto ours with one table of what is supported, refused or
//! ignored. The only I/O is reading `include`d files.
//!
//! The grammar, as nats-server's:
//! - comments `#` and `//` to the end of the line;
//! - `key: value`, `key = value` or `key value`; keys bare or quoted; entries separated by
//!   newlines, `,` or `;`; the whole file may sit in one pair of braces;
//! - blocks `{ ... }` and arrays `[ ... ]` (items separated by `,` or newlines);
//! - strings double-quoted (escapes `\t \n \r \" \\ \xHH`), single-quoted (raw), bare (up
//!   to whitespace, a newline, `,`, `;`, `]` or `}`), or a block `( ... )` closed by a line
//!   holding only `)`;
//! - integers with size suffixes: `K`, `M`, `G`, `T`, `P`, `E` are powers of 1000 and
//!   `KB`/`Ki`/`KiB`... powers of 1024 (so `1K` is 1000 and `1KB` 1024, as nats-server);
//!   floats; `true`/`false`/`yes`/`no`/`on`/`off` in any case; dates
//!   `2006-01-02T15:04:05Z` (kept as strings); IP addresses and `host:port` bare;
//! - durations are strings (`"30s"`, bare `30s` too); beware that bare `2m` is the number
//!   2,000,000 (`m` is the mega suffix), exactly as in nats-server: quote it;
//! - `include ./other.conf`: the file's keys, relative to the including file, merged where
//!   the include stands;
//! - `$NAME`: the value of key `NAME` defined earlier in this or an enclosing block, else of
//!   environment variable `NAME` (read as a value of the format, so `4222` is a number); a
//!   key used this way is a variable definition, not a setting, unless it is a key we read.
//!   `$2a$...` is a bcrypt hash, not a variable.
//!
//! Bounds (remote input never reaches this parser, but a generated or copied file might be
//! huge or hostile): [`MAX_FILE_BYTES`] per file, [`MAX_TOTAL_BYTES`] with includes and
//! environment values, [`MAX_DEPTH`] nested blocks and arrays, [`MAX_INCLUDE_DEPTH`]
//! nested includes (a cycle is refused), [`MAX_ENV_DEPTH`] environment variables that
//! refer to others, [`MAX_NODES`] values (variables copy values).

mod de;
pub mod keys;
mod lexer;
mod load;
mod parser;
mod tree;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use de::{DeError, TopDeserializer};
pub(super) use load::load;
pub use tree::{Entry, Map, Node, Pos, Value};

/// Largest file (the configuration or an include), in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Largest input all files and environment values together, in bytes.
pub const MAX_TOTAL_BYTES: usize = 4 << 20;
/// Deepest nesting of blocks and arrays.
pub const MAX_DEPTH: usize = 32;
/// Deepest nesting of includes.
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Deepest chain of environment variables whose values reference variables.
pub const MAX_ENV_DEPTH: usize = 8;
/// Most values (keys, items, copies made by variables) in one load.
pub const MAX_NODES: usize = 200_000;

/// A syntax error, or an include or variable that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ParseError {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// Reads the configuration file at `path`, at most one byte past [`MAX_FILE_BYTES`] (then
/// [`parse`] refuses it as too large), so a huge file or a device is never read whole.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Parses `text`, named `origin` in positions. `path` is the file it was read from: includes
/// are found next to it (else in the current directory) and it may not include itself.
pub fn parse(text: &str, origin: &str, path: Option<&Path>) -> Result<Map, ParseError> {
    let file: Arc<str> = origin.into();
    let mut budget = parser::Budget::default();
    budget.read(text.len()).map_err(|message| ParseError {
        pos: Pos {
            file: file.clone(),
            line: 1,
            column: 1,
        },
        message,
    })?;
    let dir = match path {
        Some(path) => {
            if let Ok(canonical) = path.canonicalize() {
                budget.open(canonical);
            }
            path.parent().unwrap_or(Path::new(".")).to_path_buf()
        }
        None => Path::new(".").to_path_buf(),
    };
    parser::document(text, file, &dir, &mut budget)
}
