//! Who may cause a reply where: the rule every responder inside the server follows.
//!
//! The server's own responders (the JetStream API, PubAcks, pull consumers, the gateways'
//! request subjects) answer on the reply subject the *requester* chose, with the server's
//! rights. Left alone, that makes them confused deputies: a user allowed to publish only
//! `gpio.b.door.get` sends it with the reply `gpio.b.valve.set`, and the valve follows the
//! door; a hub client asks a leaf's JetStream API with a reply the leaf's `deny_imports`
//! forbids, and the answer lands on the leaf.
//!
//! So a responder never answers on a raw reply subject. The sink that received the request
//! turns it into a [`ReplyTo`] with [`Publisher::reply_to`], from the publisher of the request
//! (the [`Fanout`](super::Fanout) hands every internal sink the [`Publisher`] of the message),
//! and the answer goes out through [`Shared::answer`](super::Shared::answer):
//!
//! * a reply subject the requester may publish to itself is answered as usual (a client with
//!   no permissions, or whose publish rules allow it; the server's own components; a link
//!   whose rules, a remote's deny lists or an accepted leaf's permissions, do not cover the
//!   subject);
//! * any other reply is *confined*: the answer goes only to the requester's own
//!   subscriptions (a client's), or only back into the link the request came from (a link's,
//!   where the link's own deny lists apply again). Nobody else, no internal sink and no other
//!   link receives it. A confined answer that reaches nobody is dropped, counted
//!   ([`Refusals`], `/varz` `replies_refused`, `/metrics` `leafd_replies_refused_total`) and
//!   logged at a bounded rate.
//!
//! Confining rather than refusing keeps the common permission sets working (`publish:
//! ["$JS.API.>"]`, `subscribe: ["_INBOX.>"]`: the requester may not publish to its own inbox,
//! but may receive there), while a requester can no longer make the server publish anywhere
//! it could not publish itself. nats-server 2.9 does not check reply subjects at all: its
//! JetStream answers and PubAcks go wherever the reply says. Ours are stricter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

use super::fanout::{ClientHandle, SubRef};
use crate::auth::Permissions;
use crate::sublist::{MatchResult, QueueGroup};

/// At most one log line about refused replies per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Who published a message, as internal sinks see it.
#[derive(Clone, Default)]
pub enum Publisher {
    /// A component of the server (JetStream, an uplink, a gateway): may answer anywhere.
    #[default]
    Server,
    /// A client connection.
    Client {
        /// The connection id.
        id: u64,
        /// Its permissions (`None`: unrestricted).
        permissions: Option<Arc<Permissions>>,
    },
    /// A leafnode link (whatever the server at the other end forwarded).
    Link(Arc<ClientHandle>),
}

impl Publisher {
    /// Where the answer to a request with reply subject `reply` may go (see the module
    /// documentation).
    pub fn reply_to(&self, reply: &[u8]) -> ReplyTo {
        let subject = String::from_utf8_lossy(reply).into_owned();
        let only = match self {
            Publisher::Server
            | Publisher::Client {
                permissions: None, ..
            } => None,
            Publisher::Client {
                id,
                permissions: Some(p),
            } => (!p.publish.allows_publish(reply)).then_some(*id),
            Publisher::Link(link) => link
                .leaf()
                .and_then(|peer| peer.deny.get())
                .is_some_and(|d| d.import_denied(reply) || d.export_denied(reply))
                .then_some(link.id),
        };
        ReplyTo { subject, only }
    }
}

/// A reply subject with who may receive the answer: everyone subscribed to it, or only the
/// requester (see the module documentation). Made by [`Publisher::reply_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    subject: String,
    /// `Some(id)`: only the subscriptions of connection or link `id`.
    only: Option<u64>,
}

impl ReplyTo {
    /// A reply subject anyone subscribed to may receive: for requests the server makes
    /// itself.
    pub fn anyone(subject: impl Into<String>) -> Self {
        ReplyTo {
            subject: subject.into(),
            only: None,
        }
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The connection or link the answer is confined to, if it is.
    pub fn confined_to(&self) -> Option<u64> {
        self.only
    }

    /// `result` (the subscriptions matching the subject) narrowed to who may receive the
    /// answer; `None` when everyone may.
    pub(crate) fn narrow(&self, result: &MatchResult<SubRef>) -> Option<MatchResult<SubRef>> {
        let id = self.only?;
        let mine = |s: &&SubRef| s.0.client_id() == Some(id);
        let mut narrowed = MatchResult::new();
        narrowed.plain = result.plain.iter().filter(mine).cloned().collect();
        narrowed.queues = result
            .queues
            .iter()
            .filter_map(|g| {
                let members: Vec<SubRef> = g.members.iter().filter(mine).cloned().collect();
                (!members.is_empty()).then(|| QueueGroup {
                    name: g.name.clone(),
                    members,
                })
            })
            .collect();
        Some(narrowed)
    }
}

/// Confined answers that reached nobody: counted, and logged at most once per 10 s (with the
/// number left unlogged since).
#[derive(Default)]
pub struct Refusals {
    count: AtomicU64,
    log: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    last: Option<Instant>,
    suppressed: u64,
}

impl Refusals {
    /// Answers dropped since the start.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts (and maybe logs) an answer to `to` that was dropped.
    pub(crate) fn record(&self, to: &ReplyTo) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.last.is_some_and(|t| t.elapsed() < LOG_INTERVAL) {
            log.suppressed += 1;
            return;
        }
        warn!(
            reply = ?to.subject,
            requester = to.only.unwrap_or(0),
            suppressed = log.suppressed,
            "reply dropped: the requester may not publish to its reply subject, and is not \
             subscribed to it itself"
        );
        log.last = Some(Instant::now());
        log.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Rules;
    use crate::server::deny::LinkDeny;
    use crate::server::fanout::{ConnKind, LeafPeer, SubTarget, Subscription};

    fn client(allow: &[&str]) -> Publisher {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        Publisher::Client {
            id: 7,
            permissions: Some(Arc::new(Permissions {
                publish: Rules::new(Some(&allow), &[]),
                subscribe: Rules::default(),
            })),
        }
    }

    #[test]
    fn replies_the_requester_may_publish_go_to_anyone() {
        assert_eq!(Publisher::Server.reply_to(b"x").confined_to(), None);
        let open = Publisher::Client {
            id: 3,
            permissions: None,
        };
        assert_eq!(open.reply_to(b"gpio.b.valve.set").confined_to(), None);
        let door = client(&["gpio.b.door.get", "_INBOX.>"]);
        assert_eq!(door.reply_to(b"_INBOX.a.b").confined_to(), None);
        let to = door.reply_to(b"gpio.b.valve.set");
        assert_eq!(to.confined_to(), Some(7));
        assert_eq!(to.subject(), "gpio.b.valve.set");
        assert_eq!(ReplyTo::anyone("y").confined_to(), None);
    }

    #[test]
    fn a_link_request_is_answered_past_its_deny_lists_only_into_the_link() {
        let peer = LeafPeer {
            solicited: true,
            stats: Arc::default(),
            deny: std::sync::OnceLock::from(LinkDeny {
                imports: vec!["cmd.>".into()],
                exports: vec!["secret.>".into()],
                ..LinkDeny::default()
            }),
        };
        let link = Arc::new(ClientHandle::with_kind(9, 1024, ConnKind::Leaf(peer)));
        let from = Publisher::Link(link);
        assert_eq!(from.reply_to(b"_INBOX.x").confined_to(), None);
        assert_eq!(from.reply_to(b"cmd.valve").confined_to(), Some(9));
        assert_eq!(from.reply_to(b"secret.x").confined_to(), Some(9));
    }

    #[test]
    fn narrowing_keeps_only_the_requesters_subscriptions() {
        let sub = |id: u64, queue: Option<&[u8]>| {
            let h = Arc::new(ClientHandle::new(id, 1024));
            SubRef(Arc::new(Subscription::new(
                SubTarget::Client(h),
                b"r",
                queue,
                b"1",
                None,
            )))
        };
        let mut result = MatchResult::new();
        result.plain = vec![sub(1, None), sub(2, None)];
        result.queues = vec![
            QueueGroup {
                name: b"q".as_slice().into(),
                members: vec![sub(1, Some(b"q")), sub(3, Some(b"q"))],
            },
            QueueGroup {
                name: b"w".as_slice().into(),
                members: vec![sub(3, Some(b"w"))],
            },
        ];
        assert!(ReplyTo::anyone("r").narrow(&result).is_none());
        let confined = client(&["nothing"]).reply_to(b"r");
        assert_eq!(confined.confined_to(), Some(7));
        let mine = ReplyTo {
            only: Some(1),
            ..confined
        };
        let narrowed = mine.narrow(&result).unwrap();
        assert_eq!(narrowed.plain.len(), 1);
        assert_eq!(narrowed.queues.len(), 1);
        assert_eq!(narrowed.queues[0].members.len(), 1);
        assert_eq!(narrowed.queues[0].members[0].0.client_id(), Some(1));
    }

    #[test]
    fn refusals_are_counted() {
        let r = Refusals::default();
        r.record(&ReplyTo::anyone("a"));
        r.record(&ReplyTo::anyone("b"));
        assert_eq!(r.count(), 2);
    }
}
