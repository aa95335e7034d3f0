//! Accounts: separate subject spaces in one server, as nats-server has them.
//!
//! Every connection, link and server component belongs to exactly one [`Account`]: its
//! subscriptions live in that account's [`Sublist`], and what it publishes reaches only that
//! account's subscribers (and the links bound to that account). Without an `accounts`
//! configuration there is one, the global account `$G`, as in nats-server.
//!
//! Every subscription change goes through [`Account::add_subscription`],
//! [`Account::remove_subscription`] or [`Account::reweigh_subscription`]: with links to other
//! servers configured these also tell them (see [`Peers`]; the leafnode layer implements it,
//! this module knows nothing else of it).
//!
//! An account may have limits of its own ([`limits`]: connections, leafnode connections,
//! subscriptions and payload per connection), as an account JWT gives them; accounts of the
//! configuration file are unlimited.

pub mod imports;
pub mod limits;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use settings::{AccountJetStream, AccountSettings};

use super::reply::Refusals;
use super::{Fanout, InternalSink, Msg, Peers, ReplyTo, SubRef, SubTarget, Subscription};
use crate::sublist::{MatchResult, QueueGroup, Sublist, SublistError};

/// The name of the global account: connections that belong to no configured account.
pub const GLOBAL_ACCOUNT: &str = "$G";

/// One subject space: its subscriptions and the links told about them.
pub struct Account {
    /// The account's name (`$G` for the global account).
    name: Arc<str>,
    /// All subscriptions of this account: its clients', its links', its components'.
    pub sublist: Sublist<SubRef>,
    /// Links to other servers, told about every interest change of this account.
    peers: Option<Arc<dyn Peers>>,
    /// Answers confined to their requester that reached nobody (server-wide counter).
    refusals: Arc<Refusals>,
    /// The account's own limits (an account JWT's; unlimited otherwise) and the
    /// connections counted against them.
    pub limits: limits::AccountLimits,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("name", &self.name).finish()
    }
}

impl Account {
    /// A new, empty account.
    pub fn new(name: &str, peers: Option<Arc<dyn Peers>>, refusals: Arc<Refusals>) -> Account {
        Account {
            name: name.into(),
            sublist: Sublist::new(),
            peers,
            refusals,
            limits: limits::AccountLimits::default(),
        }
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is the global account (`$G`).
    pub fn is_global(&self) -> bool {
        &*self.name == GLOBAL_ACCOUNT
    }
}

impl Account {
    /// Publishes a message from inside the server (no client connection): JetStream replies,
    /// messages arriving over a leaf link. Returns how many subscriptions it was delivered to.
    /// It never waits for slow subscribers; their own limits bound what they queue.
    ///
    /// An answer to a request goes through [`Account::answer`] instead.
    pub fn publish(&self, msg: &Msg<'_>) -> usize {
        let result = self.sublist.matches(msg.subject);
        self.deliver(&result, msg)
    }

    /// Answers a request: publishes `headers` and `payload` on `to`'s subject, to whoever
    /// `to` allows (everyone, or only the requester: see [`reply`]). A confined answer that
    /// reaches nobody is counted and logged. Returns how many subscriptions it was delivered
    /// to.
    pub fn answer(&self, to: &ReplyTo, headers: Option<&[u8]>, payload: &[u8]) -> usize {
        let msg = Msg {
            subject: to.subject().as_bytes(),
            reply: None,
            headers,
            payload,
        };
        // A reply subject is nearly always used once (an inbox per request, per PubAck):
        // caching its match would cost a write lock and evict the subjects that repeat.
        let result = self.sublist.matches_uncached(msg.subject);
        let delivered = match to.narrow(&result) {
            None => self.deliver(&result, &msg),
            Some(mine) => self.deliver(&mine, &msg),
        };
        if delivered == 0 && to.confined_to().is_some() {
            self.refusals.record(to);
        }
        delivered
    }

    /// Delivers `msg` to `result` without waiting for anybody.
    fn deliver(&self, result: &MatchResult<SubRef>, msg: &Msg<'_>) -> usize {
        if result.is_empty() {
            return 0;
        }
        let mut fanout = Fanout::default();
        let delivered = fanout.fan_out(self, result, msg, None);
        fanout.flush();
        fanout.clear_stalled();
        delivered
    }

    /// Publishes a message from inside the server whose form depends on who receives it, as
    /// JetStream delivers a stored message to a consumer's deliver subject `to`: subscribers
    /// of this server get `local` (the stored subject, the ack reply); links to other servers
    /// get it under `to` (the subject the other side routes on) with the reply
    /// `linked_reply()` (made only if a link is among the receivers). A queue group with a
    /// local member stays local. Returns how many subscriptions it was delivered to.
    pub fn publish_split(
        &self,
        to: &[u8],
        local: &Msg<'_>,
        linked_reply: impl FnOnce() -> String,
    ) -> usize {
        let result = self.sublist.matches(to);
        self.deliver_split(&result, to, local, linked_reply)
    }

    /// [`Account::publish_split`] for an answer to a request (a pull request's messages): only
    /// to whoever `to` allows, as [`Account::answer`].
    pub fn answer_split(
        &self,
        to: &ReplyTo,
        local: &Msg<'_>,
        linked_reply: impl FnOnce() -> String,
    ) -> usize {
        let subject = to.subject().as_bytes();
        // Used once, as in `answer`.
        let result = self.sublist.matches_uncached(subject);
        let delivered = match to.narrow(&result) {
            None => self.deliver_split(&result, subject, local, linked_reply),
            Some(mine) => self.deliver_split(&mine, subject, local, linked_reply),
        };
        if delivered == 0 && to.confined_to().is_some() {
            self.refusals.record(to);
        }
        delivered
    }

    /// Delivers as [`Account::publish_split`] to `result` (the subscriptions matching `to`).
    fn deliver_split(
        &self,
        result: &MatchResult<SubRef>,
        to: &[u8],
        local: &Msg<'_>,
        linked_reply: impl FnOnce() -> String,
    ) -> usize {
        if result.is_empty() {
            return 0;
        }
        let mut fanout = Fanout::default();
        let mut delivered = 0;
        if let Some((near, far)) = split_near_far(result) {
            if !near.is_empty() {
                delivered += fanout.fan_out(self, &near, local, None);
            }
            if !far.is_empty() {
                let reply = linked_reply();
                let linked = Msg {
                    subject: to,
                    reply: Some(reply.as_bytes()),
                    headers: local.headers,
                    payload: local.payload,
                };
                delivered += fanout.fan_out(self, &far, &linked, None);
            }
        } else {
            delivered += fanout.fan_out(self, result, local, None);
        }
        fanout.flush();
        fanout.clear_stalled();
        delivered
    }

    /// Whether anything (a client, a component, a link) is subscribed to `subject`.
    pub fn has_interest(&self, subject: &[u8]) -> bool {
        !self.sublist.matches(subject).is_empty()
    }

    /// Whether an answer to `to` would reach anybody (see [`Account::answer`]).
    pub fn has_answer_interest(&self, to: &ReplyTo) -> bool {
        let result = self.sublist.matches(to.subject().as_bytes());
        match to.narrow(&result) {
            None => !result.is_empty(),
            Some(mine) => !mine.is_empty(),
        }
    }

    /// Subscribes a component of the server to `subject` (optionally in a queue group): every
    /// matching message is handed to `sink`.
    pub fn subscribe_internal(
        &self,
        subject: &[u8],
        queue: Option<&[u8]>,
        sink: Arc<dyn InternalSink>,
    ) -> Result<SubRef, SublistError> {
        let sub = SubRef(Arc::new(Subscription::new(
            SubTarget::Internal(sink),
            subject,
            queue,
            b"",
            None,
        )));
        self.add_subscription(&sub)?;
        Ok(sub)
    }

    /// Removes a subscription made with [`Account::subscribe_internal`].
    pub fn unsubscribe_internal(&self, sub: &SubRef) {
        if sub.0.finish() {
            self.remove_subscription(sub);
        }
    }

    /// Adds `sub` to the sublist (the one place subscriptions are added). With peers, under
    /// their interest lock, and every link that should hear about it is told.
    pub fn add_subscription(&self, sub: &SubRef) -> Result<(), SublistError> {
        let s = &sub.0;
        let Some(peers) = &self.peers else {
            return self
                .sublist
                .insert(&s.subject, s.queue.as_deref(), sub.clone());
        };
        let mut inserted = Ok(());
        peers.announce(self, s, &mut || {
            inserted = self
                .sublist
                .insert(&s.subject, s.queue.as_deref(), sub.clone());
            inserted.is_ok().then(|| i64::from(s.weight()))
        });
        inserted
    }

    /// Removes `sub` from the sublist (the one place subscriptions are removed; callers mark
    /// it finished first). Returns false if it was not there.
    pub fn remove_subscription(&self, sub: &SubRef) -> bool {
        let s = &sub.0;
        let Some(peers) = &self.peers else {
            return matches!(
                self.sublist.remove(&s.subject, s.queue.as_deref(), sub),
                Ok(true)
            );
        };
        let mut removed = false;
        peers.announce(self, s, &mut || {
            removed = matches!(
                self.sublist.remove(&s.subject, s.queue.as_deref(), sub),
                Ok(true)
            );
            removed.then(|| -i64::from(s.weight()))
        });
        removed
    }

    /// Changes the queue weight of a link's queue subscription (a repeated `LS+` with a new
    /// weight) and tells the other links.
    pub fn reweigh_subscription(&self, sub: &SubRef, weight: u32) {
        let s = &sub.0;
        let Some(peers) = &self.peers else {
            s.weight.store(weight, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        peers.announce(self, s, &mut || {
            let old = s.weight.swap(weight, std::sync::atomic::Ordering::Relaxed);
            (!s.is_done()).then(|| i64::from(weight) - i64::from(old))
        });
    }
}

/// The accounts of one server, by name. The global account always exists.
pub struct Accounts {
    global: Arc<Account>,
    by_name: RwLock<HashMap<String, Arc<Account>>>,
    peers: Option<Arc<dyn Peers>>,
    refusals: Arc<Refusals>,
}

impl Accounts {
    /// The accounts `names` (the global account is added if not among them), all told their
    /// interest changes through `peers`.
    pub fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        peers: Option<Arc<dyn Peers>>,
        refusals: &Arc<Refusals>,
    ) -> Accounts {
        let global = Arc::new(Account::new(
            GLOBAL_ACCOUNT,
            peers.clone(),
            refusals.clone(),
        ));
        let mut by_name = HashMap::new();
        by_name.insert(GLOBAL_ACCOUNT.to_string(), global.clone());
        for name in names {
            by_name
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(Account::new(name, peers.clone(), refusals.clone())));
        }
        Accounts {
            global,
            by_name: RwLock::new(by_name),
            peers,
            refusals: refusals.clone(),
        }
    }

    /// Adds the account `name` if the server does not have it yet (a reload); returns it.
    pub fn add(&self, name: &str) -> Arc<Account> {
        let mut all = self
            .by_name
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Account::new(
                    name,
                    self.peers.clone(),
                    self.refusals.clone(),
                ))
            })
            .clone()
    }

    /// The global account (`$G`).
    pub fn global(&self) -> &Arc<Account> {
        &self.global
    }

    /// The account named `name`, if the server has it.
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.by_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every account, the global one included, sorted by name.
    pub fn all(&self) -> Vec<Arc<Account>> {
        let mut all: Vec<Arc<Account>> = self
            .by_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Subscriptions of every account together.
    pub fn subscription_count(&self) -> usize {
        self.all().iter().map(|a| a.sublist.count()).sum()
    }
}

/// `result` split into the subscriptions of this server (`near`) and those behind links to
/// other servers (`far`: leafnode links and routes), a queue group staying near when it has a
/// member here; `None` when nothing is behind a link.
pub fn split_near_far(
    result: &MatchResult<SubRef>,
) -> Option<(MatchResult<SubRef>, MatchResult<SubRef>)> {
    let remote = |s: &SubRef| matches!(s.0.target, SubTarget::Leaf(_));
    let any_remote = result.plain.iter().any(remote)
        || result.queues.iter().any(|g| g.members.iter().any(remote));
    if !any_remote {
        return None;
    }
    let mut near = MatchResult::new();
    let mut far = MatchResult::new();
    for sub in &result.plain {
        let side = if remote(sub) { &mut far } else { &mut near };
        side.plain.push(sub.clone());
    }
    for group in &result.queues {
        let (remote_members, local_members): (Vec<SubRef>, Vec<SubRef>) =
            group.members.iter().cloned().partition(|m| remote(m));
        let (side, members) = if local_members.is_empty() {
            (&mut far, remote_members)
        } else {
            (&mut near, local_members)
        };
        side.queues.push(QueueGroup {
            name: group.name.clone(),
            members,
        });
    }
    Some((near, far))
}

/// The ack reply and the stored subject of a JetStream delivery that crossed a link in the
/// linked form [`Account::publish_split`] gives it (`$JS.ACK.<7 tokens>@<subject>`, sent on
/// the deliver subject): `None` for any other reply. The `@` counts only after the ack's
/// eight dots (subjects may hold `@`), as nats-server reads it.
pub fn js_linked_delivery(reply: &[u8]) -> Option<(&[u8], &[u8])> {
    if !reply.starts_with(b"$JS.ACK.") {
        return None;
    }
    let mut dots = 0;
    for (i, b) in reply.iter().enumerate() {
        match b {
            b'.' => dots += 1,
            b'@' if dots >= 8 => {
                let subject = &reply[i + 1..];
                return (!subject.is_empty()).then(|| (&reply[..i], subject));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod linked_tests {
    use super::js_linked_delivery;

    #[test]
    fn linked_deliveries_are_read_after_the_acks_eight_dots() {
        let (ack, subject) =
            js_linked_delivery(b"$JS.ACK.S.C.1.2.3.4.0@orders.new").expect("linked");
        assert_eq!(ack, b"$JS.ACK.S.C.1.2.3.4.0");
        assert_eq!(subject, b"orders.new");
        // An `@` within the stream or consumer name is part of it.
        let (ack, subject) = js_linked_delivery(b"$JS.ACK.S@x.C.1.2.3.4.0@a@b").expect("linked");
        assert_eq!(ack, b"$JS.ACK.S@x.C.1.2.3.4.0");
        assert_eq!(subject, b"a@b");
        for plain in [
            &b"$JS.ACK.S.C.1.2.3.4.0"[..],
            b"$JS.ACK.S.C.1.2.3.4.0@",
            b"_INBOX.x@y",
            b"$JS.ACK.S@C",
        ] {
            assert_eq!(js_linked_delivery(plain), None, "{plain:?}");
        }
    }
}
