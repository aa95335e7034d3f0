//! The scanner: a cursor over the text that knows lines and columns, and reads the format's
//! scalars (quoted, bare and block strings, numbers with size suffixes, booleans, dates,
//! variable references) as nats-server's lexer classifies them.

use super::ParseError;
use super::Pos;
use std::sync::Arc;

/// A scalar as read, before variables are resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `$NAME` (the name without `$`).
    Variable(String),
}

/// A position in the text: byte offset, line and column.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    offset: usize,
    line: usize,
    column: usize,
}

/// The cursor.
pub(super) struct Cursor<'a> {
    text: &'a str,
    file: Arc<str>,
    at: Mark,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str, file: Arc<str>) -> Self {
        Cursor {
            text,
            file,
            at: Mark {
                offset: 0,
                line: 1,
                column: 1,
            },
        }
    }

    /// The current position.
    pub(super) fn pos(&self) -> Pos {
        self.pos_of(self.at)
    }

    fn pos_of(&self, mark: Mark) -> Pos {
        Pos {
            file: self.file.clone(),
            line: mark.line,
            column: mark.column,
        }
    }

    /// An error at the current position.
    pub(super) fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            pos: self.pos(),
            message: message.into(),
        }
    }

    fn error_at(&self, mark: Mark, message: impl Into<String>) -> ParseError {
        ParseError {
            pos: self.pos_of(mark),
            message: message.into(),
        }
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.text[self.at.offset..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.text[self.at.offset..].chars();
        chars.next();
        chars.next()
    }

    /// Moves past the next character.
    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at.offset += c.len_utf8();
        if c == '\n' {
            self.at.line += 1;
            self.at.column = 1;
        } else {
            self.at.column += 1;
        }
        Some(c)
    }

    /// Spaces and tabs.
    pub(super) fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    /// Whitespace, newlines too (between a key and its separator or value).
    pub(super) fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// Whether a comment (`#` or `//`) starts here.
    pub(super) fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek_second() == Some('/'),
            _ => false,
        }
    }

    /// Skips to the end of the line (the newline stays).
    pub(super) fn skip_comment(&mut self) {
        while !matches!(self.peek(), None | Some('\n' | '\r')) {
            self.bump();
        }
    }

    /// Whitespace (newlines too) and comments.
    pub(super) fn skip_space_and_comments(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                _ if self.at_comment() => self.skip_comment(),
                _ => return,
            }
        }
    }

    /// A quoted string or key: up to the closing `quote`, without escapes (keys, single
    /// quotes, include paths). The opening quote is already read.
    pub(super) fn raw_quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.at;
        let open = before(start);
        loop {
            match self.bump() {
                Some(c) if c == quote => {
                    return Ok(self.text[start.offset..self.at.offset - 1].to_owned())
                }
                Some(_) => {}
                None => return Err(self.error_at(open, format!("unclosed `{quote}` quote"))),
            }
        }
    }

    /// A bare key: up to whitespace, `:` or `=`.
    pub(super) fn bare_key(&mut self) -> String {
        let start = self.at.offset;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ':' || c == '=' {
                break;
            }
            self.bump();
        }
        self.text[start..self.at.offset].to_owned()
    }

    /// An include's path: quoted, or bare up to whitespace, `;` or `}`.
    pub(super) fn include_path(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                self.raw_quoted(q)
            }
            None | Some('\n' | '\r') => Err(self.error("expected a file name after `include`")),
            Some('[' | '{' | '(') => Err(self.error("expected a file name after `include`")),
            Some(_) => {
                let start = self.at.offset;
                while !matches!(
                    self.peek(),
                    None | Some(' ' | '\t' | '\n' | '\r' | ';' | '}')
                ) {
                    self.bump();
                }
                Ok(self.text[start..self.at.offset].to_owned())
            }
        }
    }

    /// A scalar value (the caller handles `[` and `{`).
    pub(super) fn scalar(&mut self) -> Result<Scalar, ParseError> {
        match self.peek() {
            Some('\'') => {
                self.bump();
                self.raw_quoted('\'').map(Scalar::Str)
            }
            Some('"') => {
                self.bump();
                self.double_quoted().map(Scalar::Str)
            }
            Some('(') => {
                self.bump();
                self.block().map(Scalar::Str)
            }
            Some('-') => {
                let start = self.at;
                self.bump();
                if !matches!(self.peek(), Some('0'..='9')) {
                    return Err(self.error("expected a digit after `-`"));
                }
                self.number(start)
            }
            Some('0'..='9') => self.number(self.at),
            Some('.') => Err(self.error("a number must start with a digit, not `.`")),
            _ => self.bare(self.at),
        }
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while matches!(self.peek(), Some('0'..='9')) {
            self.bump();
            n += 1;
        }
        n
    }

    /// A number, date, IP address or (when other characters follow) a bare string starting
    /// at `start`.
    fn number(&mut self, start: Mark) -> Result<Scalar, ParseError> {
        let negative = self.text[start.offset..].starts_with('-');
        let count = self.digits();
        match self.peek() {
            Some('-') if !negative && count == 4 => return self.date(start),
            Some('.') => {
                self.bump();
                if self.digits() == 0 {
                    return Err(self.error("expected a digit after `.`"));
                }
                if self.peek() == Some('.') {
                    // An IP address (`127.0.0.1`, `0.0.0.0:4222`): a string.
                    while matches!(self.peek(), Some('0'..='9' | '.' | ':' | '-')) {
                        self.bump();
                    }
                    return Ok(Scalar::Str(self.since(start).to_owned()));
                }
                let text = self.since(start);
                return text
                    .parse()
                    .map(Scalar::Float)
                    .map_err(|_| self.error_at(start, format!("invalid float `{text}`")));
            }
            Some(c) if is_size_suffix(c) => {
                let digits_end = self.at.offset;
                self.bump();
                while matches!(self.peek(), Some('b' | 'B' | 'i' | 'I')) {
                    self.bump();
                }
                if ends_number(self.peek()) {
                    let suffix = &self.text[digits_end..self.at.offset];
                    return self.integer(start, digits_end, suffix);
                }
                if matches!(self.peek(), Some('0'..='9')) {
                    return Err(self.error("unexpected digit after a size suffix"));
                }
            }
            c if ends_number(c) || negative => {
                let digits_end = self.at.offset;
                return self.integer(start, digits_end, "");
            }
            _ => {}
        }
        // Other characters follow the digits (`30s`, `500ms`, `4222abc`): a bare string.
        self.bare(start)
    }

    /// The integer between `start` and `digits_end`, times `suffix`.
    fn integer(&self, start: Mark, digits_end: usize, suffix: &str) -> Result<Scalar, ParseError> {
        let text = &self.text[start.offset..self.at.offset];
        let digits = &self.text[start.offset..digits_end];
        let out_of_range = || self.error_at(start, format!("integer `{text}` is out of range"));
        let number: i64 = digits.parse().map_err(|_| out_of_range())?;
        // The units of sizes written as strings (`"64KB"`): K = 1000, KB = 1024.
        let multiplier = crate::config::value::size_unit(suffix)
            .and_then(|m| i64::try_from(m).ok())
            .ok_or_else(|| {
                self.error_at(start, format!("invalid size suffix `{suffix}` in `{text}`"))
            })?;
        number
            .checked_mul(multiplier)
            .map(Scalar::Int)
            .ok_or_else(out_of_range)
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (the year is read): kept as a string.
    fn date(&mut self, start: Mark) -> Result<Scalar, ParseError> {
        for want in "-00-00T00:00:00Z".chars() {
            let got = self.peek();
            let ok = match want {
                '0' => matches!(got, Some('0'..='9')),
                _ => got == Some(want),
            };
            if !ok {
                return Err(self.error("expected a date in the form 2006-01-02T15:04:05Z"));
            }
            self.bump();
        }
        Ok(Scalar::Str(self.since(start).to_owned()))
    }

    fn since(&self, start: Mark) -> &'a str {
        &self.text[start.offset..self.at.offset]
    }

    /// A bare string from `start`: up to whitespace, a newline, `;`, `,`, `]` or `}`; a
    /// boolean word or a `$variable` unless it had escapes.
    fn bare(&mut self, start: Mark) -> Result<Scalar, ParseError> {
        // Re-read from the start: the number path may have consumed a prefix.
        self.at = start;
        let mut out = String::new();
        let mut escaped = false;
        loop {
            match self.peek() {
                None | Some(' ' | '\t' | '\n' | '\r' | ';' | ',' | ']' | '}') => break,
                Some('\'') => {
                    self.bump();
                    break;
                }
                Some('\\') => {
                    self.bump();
                    self.escape(&mut out)?;
                    escaped = true;
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
        if escaped {
            return Ok(Scalar::Str(out));
        }
        match out.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => return Ok(Scalar::Bool(true)),
            "false" | "no" | "off" => return Ok(Scalar::Bool(false)),
            _ => {}
        }
        match out.strip_prefix('$') {
            // A bcrypt hash (`$2a$11$...`) is a password, not a variable, as in nats-server.
            Some(name) if !name.starts_with("2a$") => Ok(Scalar::Variable(name.to_owned())),
            _ => Ok(Scalar::Str(out)),
        }
    }

    /// A double-quoted string (the quote is read): escapes `\t \n \r \" \\ \xHH`.
    fn double_quoted(&mut self) -> Result<String, ParseError> {
        let open = before(self.at);
        let mut out = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(out),
                Some('\\') => self.escape(&mut out)?,
                Some(c) => out.push(c),
                None => return Err(self.error_at(open, "unclosed `\"` quote")),
            }
        }
    }

    /// An escape sequence (the backslash is read).
    fn escape(&mut self, out: &mut String) -> Result<(), ParseError> {
        match self.bump() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = (0..2).filter_map(|_| self.bump()).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| self.error("expected two hexadecimal digits after `\\x`"))?;
                if !byte.is_ascii() {
                    return Err(self.error("`\\x` escapes above 7f are not supported"));
                }
                out.push(char::from(byte));
            }
            _ => {
                return Err(self
                    .error("invalid escape: only \\t, \\n, \\r, \\\", \\\\ and \\xHH are allowed"))
            }
        }
        Ok(())
    }

    /// A block string `( ... )` (the `(` is read): everything up to a line holding only `)`.
    fn block(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        let open = before(start);
        loop {
            match self.bump() {
                Some('\n') if self.peek() == Some(')') => {
                    let end = self.at.offset - 1;
                    let mut after = self.text[self.at.offset + 1..].chars();
                    if matches!(after.next(), None | Some('\n' | '\r')) {
                        self.bump();
                        return Ok(self.text[start.offset..end].to_owned());
                    }
                }
                Some(_) => {}
                None => return Err(self.error_at(open, "unclosed `(` block")),
            }
        }
    }
}

/// The mark of the one-column, one-byte opening character just read before `mark`.
fn before(mark: Mark) -> Mark {
    Mark {
        offset: mark.offset.saturating_sub(1),
        line: mark.line,
        column: mark.column.saturating_sub(1).max(1),
    }
}

fn is_size_suffix(c: char) -> bool {
    matches!(c.to_ascii_lowercase(), 'k' | 'm' | 'g' | 't' | 'p' | 'e')
}

/// Whether `c` ends a number (otherwise the digits start a bare string).
fn ends_number(c: Option<char>) -> bool {
    matches!(
        c,
        None | Some(' ' | '\t' | '\n' | '\r' | ';' | ',' | ']' | '}')
    )
}
