//! The JetStream domain's API subjects: with domain `edge`, a request on
//! `$JS.edge.API.<rest>` is served as `$JS.API.<rest>` (nats-server maps the one onto the
//! other for the account's clients and leaves).
//!
//! Permissions apply to the API that is actually called: a publish on `$JS.edge.API.<rest>`
//! is allowed only when the publisher may publish both that subject and `$JS.API.<rest>`, and
//! a message arriving over a link on it only when the link's `deny_imports` cover neither.
//! nats-server 2.9 maps the subject before it checks permissions, so it checks only
//! `$JS.API.<rest>`; checking the subject sent as well is stricter (a deny on
//! `$JS.edge.API.>` holds too) and never weaker.

/// The API prefix of this server's JetStream domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainApi {
    /// `$JS.<domain>.API.`
    prefix: Box<[u8]>,
}

/// The API prefix without a domain.
const API: &[u8] = b"$JS.API.";

impl DomainApi {
    /// The API of domain `domain`.
    pub fn new(domain: &str) -> Self {
        DomainApi {
            prefix: format!("$JS.{domain}.API.").into_bytes().into(),
        }
    }

    /// `$JS.<domain>.API.`
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The `$JS.API.` subject a request on `subject` calls, when `subject` is in this domain's
    /// API.
    #[inline]
    pub fn resolve(&self, subject: &[u8]) -> Option<Vec<u8>> {
        let rest = subject.strip_prefix(&*self.prefix)?;
        let mut api = Vec::with_capacity(API.len() + rest.len());
        api.extend_from_slice(API);
        api.extend_from_slice(rest);
        Some(api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_subjects_resolve_to_the_api() {
        let edge = DomainApi::new("edge");
        assert_eq!(edge.prefix(), b"$JS.edge.API.");
        assert_eq!(
            edge.resolve(b"$JS.edge.API.STREAM.DELETE.S").as_deref(),
            Some(&b"$JS.API.STREAM.DELETE.S"[..])
        );
        assert_eq!(edge.resolve(b"$JS.hub.API.STREAM.DELETE.S"), None);
        assert_eq!(edge.resolve(b"$JS.API.INFO"), None);
        assert_eq!(edge.resolve(b"$JS.edge.API"), None);
    }
}
