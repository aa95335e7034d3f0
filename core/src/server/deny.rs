//! Subjects kept off server-to-server links, checked on the message path ([`super::fanout`])
//! and by the links themselves.
//!
//! [`js_denied`]: the JetStream API, KV and object store, kept off every link.
//!
//! [`LinkDeny`], a remote's `deny_imports` and `deny_exports`: subjects kept off one link, the
//! gateway's security boundary.
//!
//! * `deny_exports`: messages on these subjects never go to the hub. Interest the hub
//!   announces wholly within them is ignored, and every message is checked before it is
//!   written to the link (a hub subscription on `>` still gets nothing denied).
//! * `deny_imports`: messages on these subjects from the hub are dropped. Local interest
//!   wholly within them is not announced to the hub (so it does not send them), and every
//!   message arriving from the link is checked.

use leaf_proto::subject::{is_subset, subject_matches};

/// Subjects whose interest never crosses a link, as nats-server denies them on leafnode
/// connections of ordinary accounts: the JetStream API without a domain, KV and object store.
/// Both sides may run JetStream; were the interest announced, a client's request would be
/// answered by both. Messages on them are not forwarded by interest either. A message the
/// other side sends anyway (an uplink's request to its hub's API) is served, as nats-server
/// serves it. A JetStream on the other side is otherwise reached through its domain
/// (`$JS.<domain>.API.>`).
pub const JS_DENIED_PREFIXES: [&[u8]; 3] = [b"$JS.API.", b"$KV.", b"$OBJ."];

/// Whether `subject` (a literal subject or an `LS+` subject) is kept off links; see
/// [`JS_DENIED_PREFIXES`].
#[inline]
pub fn js_denied(subject: &[u8]) -> bool {
    subject.first() == Some(&b'$') && JS_DENIED_PREFIXES.iter().any(|p| subject.starts_with(p))
}

/// The subjects kept off one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkDeny {
    /// Subjects (wildcards allowed) not accepted from the peer.
    pub imports: Vec<String>,
    /// Subjects (wildcards allowed) not sent to the peer.
    pub exports: Vec<String>,
}

impl LinkDeny {
    /// Whether nothing is denied.
    pub fn is_empty(&self) -> bool {
        self.imports.is_empty() && self.exports.is_empty()
    }

    /// A message on `subject` must not be sent over the link.
    #[inline]
    pub fn export_denied(&self, subject: &[u8]) -> bool {
        self.exports
            .iter()
            .any(|p| subject_matches(p.as_bytes(), subject))
    }

    /// A message on `subject` arriving from the link is dropped.
    #[inline]
    pub fn import_denied(&self, subject: &[u8]) -> bool {
        self.imports
            .iter()
            .any(|p| subject_matches(p.as_bytes(), subject))
    }

    /// The peer's interest in `subject` (an `LS+` subject) is ignored: nothing it could
    /// match may be sent.
    pub fn export_interest_denied(&self, subject: &[u8]) -> bool {
        self.exports
            .iter()
            .any(|p| is_subset(subject, p.as_bytes()))
    }

    /// Local interest in `subject` is not announced to the peer: nothing it could match
    /// would be accepted.
    pub fn import_interest_denied(&self, subject: &[u8]) -> bool {
        self.imports
            .iter()
            .any(|p| is_subset(subject, p.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_interest() {
        let deny = LinkDeny {
            imports: vec!["cmd.>".into()],
            exports: vec!["secret.*".into(), "private".into()],
        };
        assert!(!deny.is_empty());
        assert!(deny.export_denied(b"secret.x"));
        assert!(deny.export_denied(b"private"));
        assert!(!deny.export_denied(b"secret.x.y"));
        assert!(!deny.export_denied(b"public"));
        assert!(deny.import_denied(b"cmd.valve.open"));
        assert!(!deny.import_denied(b"cmdx"));
        // Interest wholly inside a denied subject is dropped; wider interest is kept and
        // filtered message by message.
        assert!(deny.export_interest_denied(b"secret.x"));
        assert!(deny.export_interest_denied(b"secret.*"));
        assert!(!deny.export_interest_denied(b"secret.>"));
        assert!(!deny.export_interest_denied(b">"));
        assert!(deny.import_interest_denied(b"cmd.*"));
        assert!(!deny.import_interest_denied(b">"));
        assert!(LinkDeny::default().is_empty());
    }
}
