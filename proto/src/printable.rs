//! Text that came from the network, made safe to write into a log line.
//!
//! Client names, server names, subjects and error texts are chosen by whoever is on the other
//! end. Written raw, a `\n` forges a whole log line and an ANSI escape (`ESC [`) rewrites a
//! terminal; a Unicode direction override reorders what a reader sees. [`printable`] wraps
//! such bytes for `Display`: printable characters as they are, `\` as `\\`, `\n` `\r` `\t`
//! as those escapes, other control and direction-formatting characters as `\u{..}`, and
//! bytes that are not UTF-8 as `\xNN`. Every log site that shows such text goes through it.

use std::fmt;

/// Bytes from the network, displayed with control characters escaped (see the module).
#[derive(Clone, Copy)]
pub struct Printable<'a>(pub &'a [u8]);

/// Wraps `text` (a `str`, `String` or bytes) for a log line.
pub fn printable<T: AsRef<[u8]> + ?Sized>(text: &T) -> Printable<'_> {
    Printable(text.as_ref())
}

/// Characters that change how text after them is shown: bidirectional embeddings,
/// overrides and isolates, and the invisible direction marks.
fn is_direction_format(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let valid = chunk.valid();
            let mut start = 0;
            for (i, c) in valid.char_indices() {
                let escaped = match c {
                    '\\' => Some(String::from("\\\\")),
                    '\n' => Some(String::from("\\n")),
                    '\r' => Some(String::from("\\r")),
                    '\t' => Some(String::from("\\t")),
                    c if c.is_control() || is_direction_format(c) => {
                        Some(format!("\\u{{{:x}}}", u32::from(c)))
                    }
                    _ => None,
                };
                if let Some(e) = escaped {
                    f.write_str(&valid[start..i])?;
                    f.write_str(&e)?;
                    start = i + c.len_utf8();
                }
            }
            f.write_str(&valid[start..])?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        let cases: [(&[u8], &str); 7] = [
            (b"plain.subject", "plain.subject"),
            (b"a\nb\r\tc", "a\\nb\\r\\tc"),
            (b"\x1b[31mred\x1b[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            (b"back\\slash", "back\\\\slash"),
            (b"bad\xff\xfe utf8", "bad\\xff\\xfe utf8"),
            (
                "caf\u{e9} \u{202e}txt.exe".as_bytes(),
                "caf\u{e9} \\u{202e}txt.exe",
            ),
            (b"\x00\x7f", "\\u{0}\\u{7f}"),
        ];
        for (input, want) in cases {
            assert_eq!(printable(input).to_string(), want);
        }
        assert_eq!(format!("{:?}", printable("a\nb")), "\"a\\nb\"");
    }

    #[test]
    fn nothing_printed_contains_a_control_character() {
        let all: Vec<u8> = (0..=255).collect();
        let out = printable(&all).to_string();
        assert!(!out.chars().any(char::is_control), "{out}");
    }
}
