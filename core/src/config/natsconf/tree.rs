//! The parsed file: a tree of values, each with the place it was written.

use std::fmt;
use std::sync::Arc;

/// Where a key or value was written: file (as given, or the include's path), 1-based line
/// and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The file, as named to the parser (an included file: its path as resolved).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts (a variable's value: where it was referenced).
    pub pos: Pos,
}

/// A value of the format. Dates (`2006-01-02T15:04:05Z`) are kept as strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted, bare or block string.
    Str(String),
    /// An integer, size suffixes applied (`1KB` is 1024, `1K` is 1000, as nats-server).
    Int(i64),
    /// A float.
    Float(f64),
    /// `true`/`false`/`yes`/`no`/`on`/`off`, any case.
    Bool(bool),
    /// `[a, b]` or one value a line.
    Array(Vec<Node>),
    /// `{ key: value ... }`, in file order.
    Map(Map),
}

impl Value {
    /// What the value is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Map(_) => "a block",
        }
    }

    /// How many nodes the value holds (itself included): what copying it costs.
    pub fn size(&self) -> usize {
        1 + match self {
            Value::Array(items) => items.iter().map(|n| n.value.size()).sum(),
            Value::Map(map) => map.entries.iter().map(|e| e.value.value.size()).sum(),
            _ => 0,
        }
    }
}

/// A block's keys, in file order; a key given again replaces the earlier value in place, as
/// nats-server's parser does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map {
    /// The entries.
    pub entries: Vec<Entry>,
}

/// One `key: value` of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key, as written (quotes removed).
    pub key: String,
    /// Where the key was written.
    pub key_pos: Pos,
    /// The value.
    pub value: Node,
    /// Whether a `$key` reference used it: nats-server then takes it for a variable
    /// definition, not a setting, unless the key is one it knows.
    pub used_as_variable: bool,
}

impl Map {
    /// Sets `key`, replacing an earlier value of the same key in place.
    pub fn set(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
    }

    /// The entry of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Takes the entry of `key` out, if given.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }
}
