//! Subjects kept off server-to-server links, checked on the message path ([`super::fanout`])
//! and by the links themselves.
//!
//! [`js_denied`]: the JetStream API, KV and object store, kept off leafnode links;
//! [`route_denied`]: the JetStream API alone, kept off routes (inside a cluster `$KV.` and
//! `$OBJ.` are ordinary stream subjects, as on nats-server's routes).
//!
//! [`LinkDeny`], a remote's `deny_imports` and `deny_exports`: subjects kept off one link, the
//! gateway's security boundary; and a leaf's permissions, as allow and deny lists of the same
//! two directions: on a hub, an accepted leaf's `publish` rules are what the hub imports from
//! it, its `subscribe` rules what the hub exports to it (see [`LinkDeny::from_permissions`]);
//! on a leaf, the permissions its hub announced (`import`/`export` in the INFO that answers
//! CONNECT) join the remote's deny lists.
//!
//! * `deny_exports`: messages on these subjects never go to the hub. Interest the hub
//!   announces wholly within them is ignored, and every message is checked before it is
//!   written to the link (a hub subscription on `>` still gets nothing denied).
//! * `deny_imports`: messages on these subjects from the hub are dropped. Local interest
//!   wholly within them is not announced to the hub (so it does not send them), and every
//!   message arriving from the link is checked.

use leaf_proto::subject::{is_subset, subject_matches, subjects_overlap};

use crate::auth::{Permissions, Rules};

/// Subjects whose interest never crosses a link, as nats-server denies them on leafnode
/// connections of ordinary accounts: the JetStream API without a domain, KV and object store.
/// Both sides may run JetStream; were the interest announced, a client's request would be
/// answered by both. Messages on them are not forwarded by interest either. A message the
/// other side sends anyway (an uplink's request to its hub's API) is served, as nats-server
/// serves it. A JetStream on the other side is otherwise reached through its domain
/// (`$JS.<domain>.API.>`).
pub const JS_DENIED_PREFIXES: [&[u8]; 3] = [b"$JS.API.", b"$KV.", b"$OBJ."];

/// Whether `subject` (a literal subject or an `LS+` subject) is kept off leafnode links;
/// see [`JS_DENIED_PREFIXES`].
#[inline]
pub fn js_denied(subject: &[u8]) -> bool {
    subject.first() == Some(&b'$') && JS_DENIED_PREFIXES.iter().any(|p| subject.starts_with(p))
}

/// The subjects whose interest never crosses a route: the JetStream API (without a domain).
/// Every member of a cluster answers its own API (forwarding to the meta group or a stream
/// group where it must); were the interest announced, a request would be answered by every
/// member. KV (`$KV.`) and object store (`$OBJ.`) subjects are not in it: inside a cluster
/// they are ordinary stream subjects (a replicated bucket's leader captures them for the
/// whole cluster), as nats-server's routes carry them; only leafnode links deny them.
pub const ROUTE_DENIED_PREFIX: &[u8] = b"$JS.API.";

/// Whether `subject` (a literal subject or an `RS+` subject) is kept off routes; see
/// [`ROUTE_DENIED_PREFIX`].
#[inline]
pub fn route_denied(subject: &[u8]) -> bool {
    subject.starts_with(ROUTE_DENIED_PREFIX)
}

/// The subjects kept off one link: deny lists, and the allow lists of permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkDeny {
    /// Subjects (wildcards allowed) not accepted from the peer.
    pub imports: Vec<String>,
    /// Subjects (wildcards allowed) not sent to the peer.
    pub exports: Vec<String>,
    /// When set, only these subjects are accepted from the peer (`imports` still apply).
    pub import_allow: Option<Vec<String>>,
    /// When set, only these subjects are sent to the peer (`exports` still apply).
    pub export_allow: Option<Vec<String>>,
}

/// Whether `list` (an allow list) leaves out the literal `subject`.
fn not_allowed(list: Option<&Vec<String>>, subject: &[u8]) -> bool {
    list.is_some_and(|l| !l.iter().any(|p| subject_matches(p.as_bytes(), subject)))
}

/// Whether `list` (an allow list) leaves out everything `filter` could match.
fn nothing_allowed(list: Option<&Vec<String>>, filter: &[u8]) -> bool {
    list.is_some_and(|l| !l.iter().any(|p| subjects_overlap(p.as_bytes(), filter)))
}

/// The allow list (`None`: none) and the deny list of `rules`, as strings.
pub(crate) fn rule_lists(rules: &Rules) -> (Option<Vec<String>>, Vec<String>) {
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    (
        rules
            .allow
            .as_ref()
            .map(|a| a.iter().map(|f| text(f)).collect()),
        rules.deny.iter().map(|f| text(f)).collect(),
    )
}

impl LinkDeny {
    /// What a hub keeps off the link of a leaf with `perms` (the leaf's permissions, as
    /// configured for its user): it imports only what the leaf may publish and exports only
    /// what the leaf may subscribe to.
    pub fn from_permissions(perms: &Permissions) -> LinkDeny {
        let (import_allow, imports) = rule_lists(&perms.publish);
        let (export_allow, exports) = rule_lists(&perms.subscribe);
        LinkDeny {
            imports,
            exports,
            import_allow,
            export_allow,
        }
    }

    /// Whether nothing is denied.
    pub fn is_empty(&self) -> bool {
        self.imports.is_empty()
            && self.exports.is_empty()
            && self.import_allow.is_none()
            && self.export_allow.is_none()
    }

    /// Whether anything is kept from going to the peer.
    #[inline]
    pub fn limits_exports(&self) -> bool {
        !self.exports.is_empty() || self.export_allow.is_some()
    }

    /// Whether anything is refused from the peer.
    #[inline]
    pub fn limits_imports(&self) -> bool {
        !self.imports.is_empty() || self.import_allow.is_some()
    }

    /// A message on `subject` must not be sent over the link.
    #[inline]
    pub fn export_denied(&self, subject: &[u8]) -> bool {
        self.exports
            .iter()
            .any(|p| subject_matches(p.as_bytes(), subject))
            || not_allowed(self.export_allow.as_ref(), subject)
    }

    /// A message on `subject` arriving from the link is dropped.
    #[inline]
    pub fn import_denied(&self, subject: &[u8]) -> bool {
        self.imports
            .iter()
            .any(|p| subject_matches(p.as_bytes(), subject))
            || not_allowed(self.import_allow.as_ref(), subject)
    }

    /// The peer's interest in `subject` (an `LS+` subject) is ignored: nothing it could
    /// match may be sent.
    pub fn export_interest_denied(&self, subject: &[u8]) -> bool {
        self.exports
            .iter()
            .any(|p| is_subset(subject, p.as_bytes()))
            || nothing_allowed(self.export_allow.as_ref(), subject)
    }

    /// Local interest in `subject` is not announced to the peer: nothing it could match
    /// would be accepted.
    pub fn import_interest_denied(&self, subject: &[u8]) -> bool {
        self.imports
            .iter()
            .any(|p| is_subset(subject, p.as_bytes()))
            || nothing_allowed(self.import_allow.as_ref(), subject)
    }

    /// These lists with `other`'s joined: both deny lists apply, and where both have an allow
    /// list a subject must be in either (a leaf's own deny lists joined with what its hub
    /// allows it; only one side has allow lists in practice).
    pub fn merged(&self, other: &LinkDeny) -> LinkDeny {
        let join = |a: &[String], b: &[String]| -> Vec<String> {
            let mut out = a.to_vec();
            out.extend(b.iter().filter(|s| !a.contains(s)).cloned());
            out
        };
        let allow = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| match (a, b) {
            (Some(a), Some(b)) => Some(join(a, b)),
            (Some(l), None) | (None, Some(l)) => Some(l.clone()),
            (None, None) => None,
        };
        LinkDeny {
            imports: join(&self.imports, &other.imports),
            exports: join(&self.exports, &other.exports),
            import_allow: allow(&self.import_allow, &other.import_allow),
            export_allow: allow(&self.export_allow, &other.export_allow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leafnode links keep the JetStream API, KV and object store off; routes only the API.
    #[test]
    fn leaf_links_deny_js_kv_and_obj_routes_only_the_api() {
        for s in [
            &b"$JS.API.STREAM.INFO.S"[..],
            b"$JS.API.>",
            b"$KV.b.k",
            b"$KV.b.>",
            b"$KV.>",
            b"$OBJ.b.c",
        ] {
            assert!(js_denied(s), "{}", String::from_utf8_lossy(s));
        }
        for s in [&b"$JS.API.STREAM.INFO.S"[..], b"$JS.API.>"] {
            assert!(route_denied(s), "{}", String::from_utf8_lossy(s));
        }
        for s in [
            &b"$KV.b.k"[..],
            b"$KV.b.>",
            b"$KV.>",
            b"$OBJ.b.c",
            b"$JS.ACK.S.C.1.2.3.4.0",
            b"$JS.hub.API.INFO",
            b"$JS.>",
            b"$O.b.C.x",
            b">",
            b"orders.1",
        ] {
            assert!(!route_denied(s), "{}", String::from_utf8_lossy(s));
        }
        for s in [&b"$JS.ACK.S.C.1"[..], b"$JS.>", b"$O.b.C.x", b">", b"kv.x"] {
            assert!(!js_denied(s), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn messages_and_interest() {
        let deny = LinkDeny {
            imports: vec!["cmd.>".into()],
            exports: vec!["secret.*".into(), "private".into()],
            ..LinkDeny::default()
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

    #[test]
    fn permissions_as_allow_lists() {
        let perms = Permissions {
            publish: Rules::new(Some(&["up.>".into()]), &["up.secret".into()]),
            subscribe: Rules::new(Some(&["down.*".into(), "_INBOX.>".into()]), &[]),
        };
        let deny = LinkDeny::from_permissions(&perms);
        assert!(deny.limits_imports() && deny.limits_exports() && !deny.is_empty());
        // Imports: what the leaf may publish.
        assert!(!deny.import_denied(b"up.a"));
        assert!(deny.import_denied(b"up.secret"));
        assert!(deny.import_denied(b"other"));
        // Exports: what the leaf may receive.
        assert!(!deny.export_denied(b"down.a"));
        assert!(deny.export_denied(b"down.a.b"));
        assert!(deny.export_denied(b"up.a"));
        // Interest: wildcards that reach something allowed pass; the rest is ignored.
        assert!(!deny.export_interest_denied(b">"));
        assert!(!deny.export_interest_denied(b"down.x"));
        assert!(deny.export_interest_denied(b"other.>"));
        assert!(!deny.import_interest_denied(b"up.*"));
        assert!(deny.import_interest_denied(b"up.secret"));
        assert!(deny.import_interest_denied(b"down.>"));
        let own = LinkDeny {
            exports: vec!["down.b".into()],
            ..LinkDeny::default()
        };
        let both = own.merged(&deny);
        assert!(both.export_denied(b"down.b") && !both.export_denied(b"down.a"));
        assert!(both.import_denied(b"other"));
        assert_eq!(
            LinkDeny::default().merged(&LinkDeny::default()),
            LinkDeny::default()
        );
    }
}
