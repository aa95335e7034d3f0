//! NATS subject syntax: validation, matching and filter algebra.
//!
//! A subject is a byte string of tokens separated by `.`. Tokens must be
//! non-empty and must not contain whitespace (space, tab, `\r`, `\n`, `\f`).
//! Two tokens are wildcards when they stand alone:
//!
//! * `*` matches exactly one token (`foo.*` matches `foo.bar`, not `foo` nor `foo.bar.baz`);
//! * `>` matches one or more trailing tokens and may only be the last token
//!   (`foo.>` matches `foo.bar` and `foo.bar.baz`, not `foo`).
//!
//! A `*` or `>` inside a longer token (`foo*`, `a>b`) is an ordinary
//! character, exactly as in nats-server: only whole tokens act as wildcards.
//!
//! Subjects that contain wildcards are *filters* (used by subscriptions,
//! stream subjects and permissions); subjects without are *literal* (used to
//! publish). All functions here work on `&[u8]` and never allocate.

/// The token separator.
const SEP: u8 = b'.';
/// The single-token wildcard, as a whole token.
const PWC: &[u8] = b"*";
/// The trailing multi-token wildcard, as a whole token.
const FWC: &[u8] = b">";

/// Iterates over the `.`-separated tokens of `s` (an empty `s` yields one empty token).
fn tokens(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == SEP)
}

/// True for the bytes nats-server rejects inside subjects and queue names.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0c)
}

/// Returns true if `s` is a valid subject or filter.
///
/// Every token is non-empty and free of whitespace, and `>` (as a whole
/// token) appears only as the last token.
#[must_use]
pub fn is_valid_subject(s: &[u8]) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut after_fwc = false;
    for t in tokens(s) {
        if t.is_empty() || after_fwc || t.iter().any(|&b| is_space(b)) {
            return false;
        }
        after_fwc = t == FWC;
    }
    true
}

/// Returns true if `s` is a valid subject with no wildcard tokens, i.e. one a
/// client may publish to.
#[must_use]
pub fn is_valid_literal_subject(s: &[u8]) -> bool {
    is_valid_subject(s) && is_literal(s)
}

/// Returns true if no token of `s` is a wildcard. Does not check validity.
#[must_use]
pub fn is_literal(s: &[u8]) -> bool {
    tokens(s).all(|t| t != PWC && t != FWC)
}

/// Returns true if `s` is a valid queue group name: non-empty, no whitespace.
#[must_use]
pub fn is_valid_queue_name(s: &[u8]) -> bool {
    !s.is_empty() && !s.iter().any(|&b| is_space(b))
}

/// Returns true if the literal `subject` matches `filter`.
///
/// `filter` may contain wildcards; the tokens of `subject` are compared as
/// plain bytes (a `*` token in `subject` is only matched by `*` or `>` in
/// `filter`). Both are assumed valid; an empty argument never matches.
#[must_use]
pub fn subject_matches(filter: &[u8], subject: &[u8]) -> bool {
    if filter.is_empty() || subject.is_empty() {
        return false;
    }
    let mut f = tokens(filter);
    let mut s = tokens(subject);
    loop {
        match (f.next(), s.next()) {
            (None, None) => return true,
            (Some(ft), Some(_)) if ft == FWC => return true,
            (Some(ft), Some(st)) => {
                if ft != PWC && ft != st {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Returns true if some literal subject matches both filters `a` and `b`.
///
/// Used to reject streams whose subject filters overlap. Both are assumed
/// valid; an empty argument overlaps nothing.
#[must_use]
pub fn subjects_overlap(a: &[u8], b: &[u8]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let mut at = tokens(a);
    let mut bt = tokens(b);
    loop {
        match (at.next(), bt.next()) {
            (None, None) => return true,
            // `>` absorbs whatever (at least one) tokens the other side still has.
            (Some(x), Some(y)) if x == FWC || y == FWC => return true,
            (Some(x), Some(y)) => {
                if x != PWC && y != PWC && x != y {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Returns true if every literal subject matching `filter` also matches `of`.
///
/// Used by permissions: `foo.bar` ⊆ `foo.*` ⊆ `foo.>` ⊆ `>`, but `foo.>` is
/// not a subset of `foo.*`. Both are assumed valid; an empty argument is
/// never a subset.
#[must_use]
pub fn is_subset(filter: &[u8], of: &[u8]) -> bool {
    if filter.is_empty() || of.is_empty() {
        return false;
    }
    let mut f = tokens(filter);
    let mut o = tokens(of);
    loop {
        match (f.next(), o.next()) {
            (None, None) => return true,
            (Some(_), Some(y)) if y == FWC => return true,
            // `filter` accepts any length here, `of` does not.
            (Some(x), Some(_)) if x == FWC => return false,
            (Some(x), Some(y)) => {
                let covered = y == PWC || (x != PWC && x == y);
                if !covered {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validity() {
        for ok in [
            &b"foo"[..],
            b"foo.bar",
            b"*",
            b">",
            b"foo.*.bar",
            b"foo.>",
            b"*.>",
            b"foo*.bar",
            b"a>b.c",
            b"$SYS.x",
            b"_INBOX.abc",
        ] {
            assert!(is_valid_subject(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b".",
            b"foo.",
            b".foo",
            b"foo..bar",
            b"foo bar",
            b"foo\tbar",
            b"foo\r",
            b"\nfoo",
            b">.foo",
            b"foo.>.bar",
            b"foo.>.>",
        ] {
            assert!(!is_valid_subject(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(is_valid_literal_subject(b"foo.bar"));
        assert!(is_valid_literal_subject(b"foo*.b>"));
        assert!(!is_valid_literal_subject(b"foo.*"));
        assert!(!is_valid_literal_subject(b"foo.>"));
        assert!(!is_valid_literal_subject(b"foo..bar"));
        assert!(is_valid_queue_name(b"workers"));
        assert!(is_valid_queue_name(b"w.1"));
        assert!(!is_valid_queue_name(b""));
        assert!(!is_valid_queue_name(b"a b"));
        assert!(!is_valid_queue_name(b"a\n"));
    }

    #[test]
    fn matching() {
        let yes = [
            ("foo", "foo"),
            ("foo.bar", "foo.bar"),
            ("*", "foo"),
            ("foo.*", "foo.bar"),
            ("*.bar", "foo.bar"),
            ("foo.*.baz", "foo.bar.baz"),
            (">", "foo"),
            (">", "foo.bar.baz"),
            ("foo.>", "foo.bar"),
            ("foo.>", "foo.bar.baz"),
            ("*.>", "foo.bar"),
            ("foo*", "foo*"),
        ];
        let no = [
            ("foo", "bar"),
            ("foo", "foo.bar"),
            ("foo.bar", "foo"),
            ("*", "foo.bar"),
            ("foo.*", "foo"),
            ("foo.*", "foo.bar.baz"),
            ("foo.>", "foo"),
            ("*.>", "foo"),
            ("foo*", "foox"),
            ("", ""),
            ("foo", ""),
        ];
        for (f, s) in yes {
            assert!(subject_matches(f.as_bytes(), s.as_bytes()), "{f} {s}");
        }
        for (f, s) in no {
            assert!(!subject_matches(f.as_bytes(), s.as_bytes()), "{f} {s}");
        }
    }

    #[test]
    fn overlap_and_subset() {
        let overlap = [
            ("foo", "foo"),
            ("foo.*", "*.bar"),
            ("foo.>", "*.bar.baz"),
            (">", "a.b.c"),
            ("foo.*", "foo.>"),
            ("*.*", "a.>"),
        ];
        let disjoint = [
            ("foo", "bar"),
            ("foo.*", "foo"),
            ("foo.>", "foo"),
            ("foo.*", "foo.*.*"),
            ("foo.>", "*"),
            ("a.*", "b.>"),
        ];
        for (a, b) in overlap {
            assert!(subjects_overlap(a.as_bytes(), b.as_bytes()), "{a} {b}");
            assert!(subjects_overlap(b.as_bytes(), a.as_bytes()), "{b} {a}");
        }
        for (a, b) in disjoint {
            assert!(!subjects_overlap(a.as_bytes(), b.as_bytes()), "{a} {b}");
            assert!(!subjects_overlap(b.as_bytes(), a.as_bytes()), "{b} {a}");
        }
        let subset = [
            ("foo.bar", "foo.bar"),
            ("foo.bar", "foo.*"),
            ("foo.*", "foo.*"),
            ("foo.*", "foo.>"),
            ("foo.>", "foo.>"),
            ("foo.>", ">"),
            ("foo.*.baz", "*.*.baz"),
            ("foo.bar.>", "foo.*.>"),
        ];
        let not_subset = [
            ("foo.*", "foo.bar"),
            ("foo.>", "foo.*"),
            ("foo", "foo.>"),
            (">", "foo.>"),
            ("foo.>", "foo.*.>"),
            ("*.bar", "foo.bar"),
        ];
        for (f, o) in subset {
            assert!(is_subset(f.as_bytes(), o.as_bytes()), "{f} ⊆ {o}");
        }
        for (f, o) in not_subset {
            assert!(!is_subset(f.as_bytes(), o.as_bytes()), "{f} ⊄ {o}");
        }
    }

    /// A random valid filter over a tiny alphabet, so collisions are common.
    fn filter() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 0..4),
            prop::sample::select(vec!["a", "b", "*", ">"]),
        )
            .prop_map(|(head, last)| {
                let mut v = head;
                v.push(last);
                v.join(".").into_bytes()
            })
    }

    /// Every literal subject over `{a, b, c}` with 1 to `max_len` tokens.
    fn all_literals(max_len: usize) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut layer: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for prefix in &layer {
                for t in [b'a', b'b', b'c'] {
                    let mut s = prefix.clone();
                    if !s.is_empty() {
                        s.push(b'.');
                    }
                    s.push(t);
                    next.push(s);
                }
            }
            out.extend(next.iter().cloned());
            layer = next;
        }
        out
    }

    proptest! {
        /// overlap and subset agree with brute force over all short literal
        /// subjects (filters have at most 5 tokens; 7 covers `>` tails).
        #[test]
        fn algebra_matches_brute_force(a in filter(), b in filter()) {
            prop_assert!(is_valid_subject(&a) && is_valid_subject(&b));
            let universe = all_literals(7);
            let ma: Vec<bool> = universe.iter().map(|s| subject_matches(&a, s)).collect();
            let mb: Vec<bool> = universe.iter().map(|s| subject_matches(&b, s)).collect();
            let both = ma.iter().zip(&mb).any(|(x, y)| *x && *y);
            let a_in_b = ma.iter().zip(&mb).all(|(x, y)| !*x || *y);
            prop_assert_eq!(subjects_overlap(&a, &b), both);
            prop_assert_eq!(is_subset(&a, &b), a_in_b);
        }
    }
}
