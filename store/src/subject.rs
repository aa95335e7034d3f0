//! Subject filters: `*` matches one token, a trailing `>` matches one or more tokens.

/// Whether `filter` contains no wildcard token (so it names exactly one subject).
pub(crate) fn is_literal(filter: &str) -> bool {
    !filter.split('.').any(|t| t == "*" || t == ">")
}

/// Whether a message may be stored under `subject`: non-empty tokens, no whitespace. A
/// token `*` or `>` is stored as it is (nats-server stores a publish to `hello.*`, as a KV
/// purge of that key makes); where the store takes a filter, such a subject is a wildcard.
pub(crate) fn is_message_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| !t.is_empty())
        && !subject.bytes().any(|b| b.is_ascii_whitespace())
}

/// Whether `subject` matches `filter`. An empty filter or `>` matches everything.
pub(crate) fn matches(filter: &str, subject: &str) -> bool {
    if filter.is_empty() || filter == ">" {
        return true;
    }
    let mut s = subject.split('.');
    let mut f = filter.split('.').peekable();
    while let Some(ft) = f.next() {
        if ft == ">" && f.peek().is_none() {
            return s.next().is_some();
        }
        match s.next() {
            Some(st) if ft == "*" || ft == st => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_subjects() {
        for ok in ["a", "a.b", "a.*", "a.>", "$KV.b.hello.*"] {
            assert!(is_message_subject(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a\tb"] {
            assert!(!is_message_subject(bad), "{bad:?}");
        }
    }

    #[test]
    fn filters() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "x"));
        assert!(matches("", "x"));
        assert!(matches("*.b", "a.b"));
        assert!(is_literal("a.b"));
        assert!(!is_literal("a.*"));
        assert!(!is_literal("a.>"));
    }
}
