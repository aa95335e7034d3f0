//! The parser: keys and values into a [`Map`], with `include` and `$VARIABLE`s resolved as
//! nats-server resolves them, within the bounds of [`super`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lexer::{Cursor, Scalar};
use super::tree::{Entry, Map, Node, Value};
use super::{
    ParseError, MAX_DEPTH, MAX_ENV_DEPTH, MAX_FILE_BYTES, MAX_INCLUDE_DEPTH, MAX_NODES,
    MAX_TOTAL_BYTES,
};

/// What all files of one load share: the bounds spent so far and the includes open.
#[derive(Default)]
pub(super) struct Budget {
    bytes: usize,
    nodes: usize,
    /// The files being parsed, outermost first (canonical paths), to refuse cycles.
    open: Vec<PathBuf>,
    /// Environment variables being expanded (a value may reference another).
    env_depth: usize,
}

impl Budget {
    /// Charges `bytes` of input.
    pub(super) fn read(&mut self, bytes: usize) -> Result<(), String> {
        if bytes > MAX_FILE_BYTES {
            return Err(format!(
                "the file is larger than {MAX_FILE_BYTES} bytes, too large for a configuration"
            ));
        }
        self.bytes += bytes;
        if self.bytes > MAX_TOTAL_BYTES {
            return Err(format!(
                "the configuration and its includes are larger than {MAX_TOTAL_BYTES} bytes"
            ));
        }
        Ok(())
    }

    /// Marks `path` (canonical) open.
    pub(super) fn open(&mut self, path: PathBuf) {
        self.open.push(path);
    }
}

/// Parses one file's text into its top-level block. `dir` is where its includes are found.
pub(super) fn document(
    text: &str,
    file: Arc<str>,
    dir: &Path,
    budget: &mut Budget,
) -> Result<Map, ParseError> {
    let mut parser = Parser {
        cur: Cursor::new(text, file),
        dir,
        scopes: vec![Map::default()],
        budget,
        depth: 0,
    };
    parser.top()?;
    Ok(parser.scopes.pop().unwrap_or_default())
}

struct Parser<'t, 'b> {
    cur: Cursor<'t>,
    dir: &'b Path,
    /// The blocks being read, innermost last: where variables are looked up.
    scopes: Vec<Map>,
    budget: &'b mut Budget,
    /// Blocks and arrays open.
    depth: usize,
}

impl Parser<'_, '_> {
    /// The top level: `key value` lines, optionally inside one pair of braces.
    fn top(&mut self) -> Result<(), ParseError> {
        let mut braces = 0usize;
        loop {
            self.cur.skip_space_and_comments();
            match self.cur.peek() {
                None => return Ok(()),
                Some('{') => {
                    self.cur.bump();
                    braces += 1;
                    continue;
                }
                Some('}') if braces > 0 => {
                    self.cur.bump();
                    braces -= 1;
                    continue;
                }
                Some(_) => {}
            }
            self.key_value(false)?;
            self.cur.skip_blanks();
            if self.cur.at_comment() {
                self.cur.skip_comment();
            }
            match self.cur.peek() {
                None | Some('\n' | '\r') => {}
                Some(';' | ',' | '}') => {
                    self.cur.bump();
                }
                Some(c) => {
                    return Err(self.cur.error(format!(
                        "expected a new line, `;` or a comment after the value, found `{c}`"
                    )))
                }
            }
        }
    }

    /// One `key: value`, `key = value` or `key value`, or an `include`, into the innermost
    /// block.
    fn key_value(&mut self, in_block: bool) -> Result<(), ParseError> {
        let key_pos = self.cur.pos();
        let (key, quoted) = match self.cur.peek() {
            Some(q @ ('"' | '\'')) => {
                self.cur.bump();
                (self.cur.raw_quoted(q)?, true)
            }
            Some(':' | '=') => return Err(self.cur.error("expected a key before the separator")),
            _ => (self.cur.bare_key(), false),
        };
        if key.is_empty() {
            return Err(self.cur.error("expected a key"));
        }
        if !quoted
            && key.eq_ignore_ascii_case("include")
            && matches!(self.cur.peek(), Some(' ' | '\t'))
        {
            self.cur.skip_blanks();
            return self.include(key_pos);
        }
        self.cur.skip_whitespace();
        if matches!(self.cur.peek(), Some(':' | '=')) {
            self.cur.bump();
            self.cur.skip_blanks();
            if in_block {
                self.cur.skip_space_and_comments();
            }
        }
        let value = self.value(&key)?;
        self.charge(1)?;
        self.innermost().set(Entry {
            key,
            key_pos,
            value,
            used_as_variable: false,
        });
        Ok(())
    }

    fn innermost(&mut self) -> &mut Map {
        if self.scopes.is_empty() {
            self.scopes.push(Map::default());
        }
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    fn charge(&mut self, nodes: usize) -> Result<(), ParseError> {
        self.budget.nodes += nodes;
        if self.budget.nodes > MAX_NODES {
            return Err(self.cur.error(format!(
                "more than {MAX_NODES} values: too large for a configuration"
            )));
        }
        Ok(())
    }

    /// The value of `key`.
    fn value(&mut self, key: &str) -> Result<Node, ParseError> {
        let pos = self.cur.pos();
        let value = match self.cur.peek() {
            None | Some('\n' | '\r') => {
                return Err(self.cur.error(format!("expected a value for `{key}`")))
            }
            Some('[') => self.nested(Self::array)?,
            Some('{') => self.nested(Self::block)?,
            _ => match self.cur.scalar()? {
                Scalar::Str(s) => Value::Str(s),
                Scalar::Int(n) => Value::Int(n),
                Scalar::Float(x) => Value::Float(x),
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Variable(name) => {
                    let found = self.variable(&name, &pos)?;
                    return Ok(Node { pos, ..found });
                }
            },
        };
        Ok(Node { value, pos })
    }

    /// Reads a block or an array one level deeper.
    fn nested(
        &mut self,
        read: fn(&mut Self) -> Result<Value, ParseError>,
    ) -> Result<Value, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self
                .cur
                .error(format!("blocks and arrays nested deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    /// `[ value, value ... ]` (commas or newlines between values).
    fn array(&mut self) -> Result<Value, ParseError> {
        let open = self.cur.pos();
        self.cur.bump();
        let mut items = Vec::new();
        loop {
            self.cur.skip_space_and_comments();
            match self.cur.peek() {
                Some(']') => {
                    self.cur.bump();
                    return Ok(Value::Array(items));
                }
                Some(',') => return Err(self.cur.error("unexpected `,` in an array")),
                None => return Err(unclosed(&open, "[")),
                Some(_) => {}
            }
            let item = self.value("an array item")?;
            self.charge(1)?;
            items.push(item);
            self.cur.skip_blanks();
            if self.cur.at_comment() {
                self.cur.skip_comment();
            }
            match self.cur.peek() {
                Some(',' | '\n' | '\r') => {
                    self.cur.bump();
                }
                Some(']') => {}
                None => return Err(unclosed(&open, "[")),
                Some(c) => {
                    return Err(self
                        .cur
                        .error(format!("expected `,`, `]` or a new line, found `{c}`")))
                }
            }
        }
    }

    /// `{ key: value ... }` (`,`, `;` or newlines between entries).
    fn block(&mut self) -> Result<Value, ParseError> {
        let open = self.cur.pos();
        self.cur.bump();
        self.scopes.push(Map::default());
        let result = self.block_entries(&open);
        let map = self.scopes.pop().unwrap_or_default();
        result.map(|()| Value::Map(map))
    }

    fn block_entries(&mut self, open: &super::Pos) -> Result<(), ParseError> {
        loop {
            self.cur.skip_space_and_comments();
            match self.cur.peek() {
                Some('}') => {
                    self.cur.bump();
                    return Ok(());
                }
                None => return Err(unclosed(open, "{")),
                Some(']') => return Err(self.cur.error("unexpected `]` in a block")),
                Some(_) => {}
            }
            self.key_value(true)?;
            self.cur.skip_blanks();
            if self.cur.at_comment() {
                self.cur.skip_comment();
            }
            match self.cur.peek() {
                Some(',' | ';' | '\n' | '\r') => {
                    self.cur.bump();
                }
                Some('}') => {}
                None => return Err(unclosed(open, "{")),
                Some(c) => {
                    return Err(self.cur.error(format!(
                        "expected `,`, `;`, `}}` or a new line, found `{c}`"
                    )))
                }
            }
        }
    }

    /// The value of `$name`: a key of an enclosing block (innermost first, defined before
    /// the reference), else the environment variable, read as a value of the format.
    fn variable(&mut self, name: &str, pos: &super::Pos) -> Result<Node, ParseError> {
        for scope in self.scopes.iter_mut().rev() {
            if let Some(entry) = scope.entries.iter_mut().find(|e| e.key == name) {
                entry.used_as_variable = true;
                let found = entry.value.clone();
                self.charge(found.value.size())?;
                return Ok(found);
            }
        }
        let Ok(text) = std::env::var(name) else {
            return Err(ParseError {
                pos: pos.clone(),
                message: format!(
                    "variable `${name}` is not defined (neither earlier in the file nor in the \
                 environment)"
                ),
            });
        };
        if self.budget.env_depth >= MAX_ENV_DEPTH {
            return Err(self.cur.error(format!(
                "environment variable `${name}` refers to variables more than \
                 {MAX_ENV_DEPTH} deep"
            )));
        }
        self.budget
            .read(text.len())
            .map_err(|e| self.cur.error(e))?;
        self.budget.env_depth += 1;
        let origin: Arc<str> = format!("${name} (environment)").into();
        let parsed = document(&format!("pk={text}"), origin, self.dir, self.budget);
        self.budget.env_depth -= 1;
        let mut map = parsed.map_err(|e| ParseError {
            pos: pos.clone(),
            message: format!("environment variable `${name}`: {}", e.message),
        })?;
        match map.remove("pk") {
            Some(entry) => Ok(entry.value),
            None => Err(self
                .cur
                .error(format!("environment variable `${name}` holds no value"))),
        }
    }

    /// `include path`: the file's keys, relative to this file's directory, merged into the
    /// innermost block.
    fn include(&mut self, at: super::Pos) -> Result<(), ParseError> {
        let name = self.cur.include_path()?;
        let error = |message: String| ParseError {
            pos: at.clone(),
            message: format!("include `{name}`: {message}"),
        };
        if self.budget.open.len() >= MAX_INCLUDE_DEPTH {
            return Err(error(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH}"
            )));
        }
        let path = self.dir.join(&name);
        let canonical = path.canonicalize().map_err(|e| error(e.to_string()))?;
        if self.budget.open.contains(&canonical) {
            return Err(error("the file includes itself (an include cycle)".into()));
        }
        let text = read_bounded(&canonical).map_err(error)?;
        self.budget.read(text.len()).map_err(error)?;
        let dir = canonical.parent().unwrap_or(Path::new(".")).to_path_buf();
        let file: Arc<str> = path.display().to_string().into();
        self.budget.open(canonical);
        let parsed = document(&text, file, &dir, self.budget);
        self.budget.open.pop();
        for entry in parsed?.entries {
            self.innermost().set(entry);
        }
        Ok(())
    }
}

/// A regular file's text, read up to one byte past [`MAX_FILE_BYTES`] (so a device or a
/// growing file cannot make the read endless; [`Budget::read`] refuses the excess).
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

fn unclosed(open: &super::Pos, what: &str) -> ParseError {
    ParseError {
        pos: open.clone(),
        message: format!("`{what}` is never closed"),
    }
}
