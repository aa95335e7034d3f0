//! Subject transforms: a source filter and a destination template, as nats-server's subject
//! mappings and JetStream's republish write them.
//!
//! The destination is made of tokens: a literal; `$N` or `{{wildcard(N)}}`, the token the
//! source's `N`th `*` matched (from 1); `*`, the source's next `*` not referred to by number
//! (in order); and a trailing `>`, whatever the source's trailing `>` matched. A transform is
//! refused when the destination refers to a wildcard the source does not have.

use crate::subject::{is_valid_subject, subject_matches};

/// One token of a destination template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The token the source's `*` number `n` (from 0) matched.
    Wildcard(usize),
    /// What the source's trailing `>` matched.
    Rest,
}

/// A compiled transform from a source filter to a destination template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    source: String,
    /// Positions (token indexes) of the source's `*` tokens.
    stars: Vec<usize>,
    /// Whether the source ends with `>`.
    rest: bool,
    dest: Vec<Part>,
}

/// Why a transform is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The source is not a valid subject filter.
    #[error("invalid source {0:?}")]
    Source(String),
    /// The destination is empty or not a valid subject.
    #[error("invalid destination {0:?}")]
    Destination(String),
    /// The destination uses a wildcard the source does not have.
    #[error("destination {0:?} refers to a wildcard its source does not have")]
    Reference(String),
}

impl Transform {
    /// Compiles `source` → `dest`.
    pub fn new(source: &str, dest: &str) -> Result<Self, TransformError> {
        if !is_valid_subject(source.as_bytes()) {
            return Err(TransformError::Source(source.to_string()));
        }
        let src_tokens: Vec<&str> = source.split('.').collect();
        let stars: Vec<usize> = (0..src_tokens.len())
            .filter(|&i| src_tokens[i] == "*")
            .collect();
        let rest = src_tokens.last() == Some(&">");
        if dest.is_empty() {
            return Err(TransformError::Destination(dest.to_string()));
        }
        let refused = || TransformError::Reference(dest.to_string());
        let tokens: Vec<&str> = dest.split('.').collect();
        let mut parts = Vec::with_capacity(tokens.len());
        let mut next_star = 0;
        for (i, token) in tokens.iter().enumerate() {
            let part = if let Some(n) = wildcard_reference(token) {
                let n = n
                    .checked_sub(1)
                    .filter(|&n| n < stars.len())
                    .ok_or_else(refused)?;
                Part::Wildcard(n)
            } else if *token == "*" {
                let n = next_star;
                next_star += 1;
                if n >= stars.len() {
                    return Err(refused());
                }
                Part::Wildcard(n)
            } else if *token == ">" {
                if !rest || i + 1 != tokens.len() {
                    return Err(refused());
                }
                Part::Rest
            } else if token.is_empty() || token.contains(['{', '}', ' ', '\t']) {
                return Err(TransformError::Destination(dest.to_string()));
            } else {
                Part::Literal((*token).to_string())
            };
            parts.push(part);
        }
        Ok(Transform {
            source: source.to_string(),
            stars,
            rest,
            dest: parts,
        })
    }

    /// The source filter.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The destination for `subject`, or `None` when `subject` does not match the source.
    pub fn apply(&self, subject: &str) -> Option<String> {
        if !subject_matches(self.source.as_bytes(), subject.as_bytes()) {
            return None;
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        let fixed = self.source.split('.').count() - usize::from(self.rest);
        let mut out = String::with_capacity(subject.len() + 16);
        for part in &self.dest {
            if !out.is_empty() {
                out.push('.');
            }
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Wildcard(n) => out.push_str(tokens.get(*self.stars.get(*n)?)?),
                Part::Rest => out.push_str(&tokens.get(fixed..)?.join(".")),
            }
        }
        Some(out)
    }
}

/// `N` of a `$N` or `{{wildcard(N)}}` token (spaces inside the braces allowed).
fn wildcard_reference(token: &str) -> Option<usize> {
    if let Some(n) = token.strip_prefix('$') {
        return n.parse().ok();
    }
    let inner = token.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let args = inner.strip_prefix("wildcard")?.trim_start();
    args.strip_prefix('(')?
        .strip_suffix(')')?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(src: &str, dest: &str, subject: &str) -> Option<String> {
        Transform::new(src, dest).unwrap().apply(subject)
    }

    #[test]
    fn destinations() {
        assert_eq!(apply(">", "out.>", "a.b").as_deref(), Some("out.a.b"));
        assert_eq!(
            apply("r.*.x", "o.$1.{{wildcard(1)}}", "r.a.x").as_deref(),
            Some("o.a.a")
        );
        assert_eq!(apply("r.*.x", "o.$1", "r.b.y"), None);
        assert_eq!(apply("a.*.*", "b.$2.$1", "a.x.y").as_deref(), Some("b.y.x"));
        assert_eq!(apply("a.*.*", "b.*.*", "a.x.y").as_deref(), Some("b.x.y"));
        assert_eq!(
            apply("a.*.>", "b.$1.>", "a.x.y.z").as_deref(),
            Some("b.x.y.z")
        );
        assert_eq!(apply("k.>", "fixed", "k.q").as_deref(), Some("fixed"));
        assert_eq!(
            apply("a.*", "b.{{ wildcard( 1 ) }}", "a.q").as_deref(),
            Some("b.q")
        );
    }

    #[test]
    fn refused() {
        assert!(Transform::new("f.*", "z.>").is_err());
        assert!(Transform::new("g.>", "").is_err());
        assert!(Transform::new("a.*", "b.$2").is_err());
        assert!(Transform::new("a.*", "b.$0").is_err());
        assert!(Transform::new("a.*", "b.*.*").is_err());
        assert!(Transform::new("a.>", "b.>.c").is_err());
        assert!(Transform::new("a..b", "c").is_err());
        assert!(Transform::new("a", "b..c").is_err());
        assert!(Transform::new("a", "b.{{x}}").is_err());
    }
}
