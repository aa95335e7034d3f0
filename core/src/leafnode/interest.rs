//! The interest every leafnode link has been told about (nats-server's per-link "smap").
//!
//! Every subscription change of the server goes through [`Shared::add_subscription`],
//! [`Shared::remove_subscription`] or [`Shared::reweigh_subscription`], which, with leafnode
//! links configured, hold the [`Interest`] lock around the sublist change and call
//! [`Interest::change`]. `Interest` keeps:
//!
//! * a **table** of all interest by key (`subject` or `subject queue`, the `LS+` argument),
//!   counted by origin: local (clients and the server's own components) or per link, with the
//!   link's queue weight. A link that connects gets its first `LS+` burst from this table, so
//!   the sublist never has to be walked;
//! * the **established links**. What a link was told about a key (nats-server keeps it per
//!   link, its "smap") is not stored: it is a function of the table (the members of the key
//!   the link may see: local ones and those of other links, less what its side and its deny
//!   lists keep from it), because every change to the table is passed on under the same lock
//!   and the link's first burst was computed from the table too. A plain key is announced
//!   when that count goes from 0 to 1 (`LS+ subject`) and withdrawn when it returns to 0
//!   (`LS- subject`); a queue key is announced with its weight (`LS+ subject queue weight`)
//!   whenever the weight changes, and withdrawn at 0. Not storing it keeps a hub's memory
//!   linear in its interest: with N leaves each announcing its own subjects, per-link maps
//!   would hold N² entries (about 60 KiB per link at 1,000 leaves).
//!
//! What a link is told depends on its side, as in nats-server: a link this server accepted
//! (we are its hub) hears about all interest except its own; a link this server solicited (we
//! are a leaf, "spoke") hears only about local interest and interest of links this server
//! accepted, never about interest learned from another hub.
//!
//! Loop-detection subjects (`$LDS.`) are the links' own: a link announces its own (the last
//! of its first burst) and the table passes on those other links announced, whatever the
//! links' permissions and deny lists, as nats-server does; a *local* subscription to one is
//! never announced (a client subscribing to a leaf's `$LDS.` subject would make that leaf see
//! its own subject come back and close its link as a loop). [`Interest::lds_elsewhere`] tells
//! a link whether another link already announced a loop-detection subject.
//!
//! **The first burst is written step by step** ([`Interest::continue_burst`], driven by the
//! link's writer through [`FirstBurst`]: one step each time it has written what was queued, so
//! other traffic on the link never starves the burst): the table is ordered by key and
//! the link keeps the last key its burst went past. A change to a key up to there is passed on
//! at once (the link was told about the key); a change to a key beyond is not, the burst writes
//! that key's state when it gets there. So what the link hears still adds up to the table at
//! every point, and a hub that thousands of gateways reconnect to at once holds one step
//! ([`BURST_STEP`]) of interest per link in its queues, not one copy of the whole table per
//! link (with N gateways each announcing its own subjects, N² lines at once).
//!
//! Holding one lock across the sublist change and the announcements makes each link's view
//! exact: a link registering (and each step of its burst) and a subscription changing are
//! ordered.
//! The lock is never taken on the publish path (except by the rare auto-unsubscribe).
//!
//! [`Shared::add_subscription`]: crate::server::Shared::add_subscription
//! [`Shared::remove_subscription`]: crate::server::Shared::remove_subscription
//! [`Shared::reweigh_subscription`]: crate::server::Shared::reweigh_subscription

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};

use bytes::BytesMut;

use crate::server::fanout::{ClientHandle, SubTarget, Subscription};
use crate::server::outbound::{AppendOutcome, Outbound, Refill};
use leaf_proto as proto;

/// Where a piece of interest comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client connection or a component of this server.
    Local,
    /// A leafnode link.
    Link {
        /// The link's connection id.
        id: u64,
        /// This server opened the link (the peer is our hub).
        solicited: bool,
    },
}

impl Origin {
    /// The origin of a subscription, from its target.
    pub fn of(sub: &Subscription) -> Origin {
        match &sub.target {
            SubTarget::Leaf(link) => Origin::Link {
                id: link.id,
                solicited: link.leaf().is_some_and(|p| p.solicited),
            },
            SubTarget::Client(_) | SubTarget::Internal(_) => Origin::Local,
        }
    }
}

/// The interest behind one key, by origin.
#[derive(Debug, Default)]
struct KeyInterest {
    /// Local members (subscriptions of clients and of the server itself).
    local: u32,
    /// Per link: (link id, solicited, members).
    links: Vec<(u64, bool, u32)>,
}

impl KeyInterest {
    fn is_empty(&self) -> bool {
        self.local == 0 && self.links.is_empty()
    }

    /// The count a link with id `id` and side `solicited` should have been told (local
    /// members left out for a loop-detection subject, `lds`).
    fn visible_to(&self, id: u64, solicited: bool, lds: bool) -> u32 {
        let from_links: u32 = self
            .links
            .iter()
            .filter(|(l, s, _)| *l != id && !(solicited && *s))
            .fold(0u32, |sum, (_, _, n)| sum.saturating_add(*n));
        if lds {
            from_links
        } else {
            self.local.saturating_add(from_links)
        }
    }
}

/// A key's members just before a change, summed so that what each link was told about it
/// (see [`KeyInterest::visible_to`]) is found without a walk of the key's links per link.
#[derive(Default)]
struct Before {
    local: u32,
    /// Members of all links.
    links: u64,
    /// Members of links this server accepted (the only ones a solicited link is told about).
    accepted: u64,
    /// Members per link, for a key held by many links (looked up in `few` otherwise).
    by_link: Option<HashMap<u64, (bool, u32)>>,
    few: Vec<(u64, bool, u32)>,
}

/// Above this many links holding one key, [`Before`] indexes them by id.
const INDEX_LINKS_ABOVE: usize = 16;

impl Before {
    fn of(entry: &KeyInterest) -> Before {
        let mut b = Before {
            local: entry.local,
            ..Before::default()
        };
        for &(_, solicited, n) in &entry.links {
            b.links += u64::from(n);
            if !solicited {
                b.accepted += u64::from(n);
            }
        }
        if entry.links.len() > INDEX_LINKS_ABOVE {
            b.by_link = Some(entry.links.iter().map(|&(id, s, n)| (id, (s, n))).collect());
        } else {
            b.few = entry.links.clone();
        }
        b
    }

    /// The same count as [`KeyInterest::visible_to`] on the entry this was taken from.
    fn visible_to(&self, id: u64, solicited: bool, lds: bool) -> u32 {
        let own = match &self.by_link {
            Some(map) => map.get(&id).copied(),
            None => self
                .few
                .iter()
                .find(|(l, _, _)| *l == id)
                .map(|&(_, s, n)| (s, n)),
        };
        let from_links = if solicited {
            let own_accepted = own.filter(|(s, _)| !s).map_or(0, |(_, n)| n);
            self.accepted.saturating_sub(u64::from(own_accepted))
        } else {
            self.links
                .saturating_sub(own.map_or(0, |(_, n)| u64::from(n)))
        };
        let local = if lds { 0 } else { u64::from(self.local) };
        u32::try_from(local.saturating_add(from_links)).unwrap_or(u32::MAX)
    }
}

/// How much of a link's first burst is written per step: one step runs each time the link's
/// writer has written what was queued.
pub const BURST_STEP: usize = 8 * 1024;

/// Where a link's first burst stands: the keys up to `after` were written (none while
/// `after` is `None`); the loop-detection subject `lds` ends it.
struct Burst {
    /// The last key the burst went past; `None` before the first step.
    after: Option<Box<[u8]>>,
    /// This server's loop-detection subject for the link, announced last.
    lds: Box<[u8]>,
}

/// One established link.
struct LinkView {
    handle: Arc<ClientHandle>,
    solicited: bool,
    /// The first burst, while it is still being written.
    burst: Option<Burst>,
}

impl LinkView {
    /// Whether the link was already told about `key` (its first burst went past it): changes
    /// to a key the burst has not reached are not passed on, the burst writes the key's state
    /// when it gets there.
    fn told(&self, key: &[u8]) -> bool {
        match &self.burst {
            None => true,
            Some(Burst { after: None, .. }) => false,
            Some(Burst {
                after: Some(after), ..
            }) => key <= &after[..],
        }
    }
}

/// All interest and every link's view of it; see the module documentation.
#[derive(Default)]
pub struct Interest {
    /// Ordered, so that a first burst written step by step can stand at a key.
    table: BTreeMap<Box<[u8]>, KeyInterest>,
    links: Vec<LinkView>,
    /// Scratch space for building keys.
    key: Vec<u8>,
}

/// Builds the key of `subject`/`queue` into `buf`.
fn make_key<'b>(buf: &'b mut Vec<u8>, subject: &[u8], queue: Option<&[u8]>) -> &'b [u8] {
    buf.clear();
    buf.extend_from_slice(subject);
    if let Some(q) = queue {
        buf.push(b' ');
        buf.extend_from_slice(q);
    }
    buf
}

/// Whether `link` refuses messages on everything `subject` could match (its remote's
/// `deny_imports`, a leaf's `publish` permissions), so the interest is not announced to it.
/// Callers leave loop-detection subjects out of this check.
fn import_denied(link: &ClientHandle, subject: &[u8]) -> bool {
    link.leaf()
        .and_then(|p| p.deny.get())
        .is_some_and(|d| d.limits_imports() && d.import_interest_denied(subject))
}

/// Whether `subject` is a loop-detection subject (`$LDS.`...).
fn is_lds(subject: &[u8]) -> bool {
    subject.starts_with(super::LDS_PREFIX.as_bytes())
}

/// Splits a key back into subject and queue.
fn split_key(key: &[u8]) -> (&[u8], Option<&[u8]>) {
    match key.iter().position(|&b| b == b' ') {
        Some(i) => (key.get(..i).unwrap_or_default(), key.get(i + 1..)),
        None => (key, None),
    }
}

/// Whether [`write_update`] writes anything for a link going from `old` to `new` members.
fn update_needed(key: &[u8], old: u32, new: u32) -> bool {
    match split_key(key).1 {
        Some(_) => new != old,
        None => (old == 0) != (new == 0),
    }
}

/// Writes the `LS+`/`LS-` that takes a link from `old` to `new` members of `key`, if any.
fn write_update(out: &mut BytesMut, key: &[u8], old: u32, new: u32) {
    let (subject, queue) = split_key(key);
    match queue {
        Some(q) if new > 0 && new != old => proto::write_ls_plus(out, subject, Some((q, new))),
        None if old == 0 && new > 0 => proto::write_ls_plus(out, subject, None),
        _ if old > 0 && new == 0 => proto::write_ls_minus(out, subject, queue),
        _ => {}
    }
}

impl Interest {
    /// Records that `delta` members of `subject`/`queue` from `origin` appeared (positive) or
    /// went away (negative), and tells every link that should know.
    pub fn change(&mut self, subject: &[u8], queue: Option<&[u8]>, origin: Origin, delta: i64) {
        if delta == 0 {
            return;
        }
        let lds = is_lds(subject);
        // Local interest in a loop-detection subject is never announced (see the module
        // documentation).
        let announce = !(super::js_denied(subject) || lds && origin == Origin::Local);
        let mut key_buf = std::mem::take(&mut self.key);
        let key = make_key(&mut key_buf, subject, queue);
        // What each link was told so far is what the table showed it before this change.
        let before = match self.table.get(key) {
            Some(entry) if announce => Before::of(entry),
            _ => Before::default(),
        };
        // Only what the table actually gained or lost is passed on: removing interest an
        // origin no longer holds (see `drop_origin`) changes nothing.
        let delta = self.update_table(key, origin, delta);
        for link in self.links.iter().filter(|_| announce && delta != 0) {
            if !link.told(key) || !lds && import_denied(&link.handle, subject) {
                continue;
            }
            let visible = match origin {
                Origin::Local => true,
                Origin::Link { id, solicited } => {
                    id != link.handle.id && !(link.solicited && solicited)
                }
            };
            if !visible {
                continue;
            }
            let old = before.visible_to(link.handle.id, link.solicited, lds);
            let new = apply(old, delta);
            if update_needed(key, old, new) {
                link.handle
                    .out
                    .append(|out| write_update(out, key, old, new), None, &[]);
                link.handle.out.flush();
            }
        }
        self.key = key_buf;
    }

    /// Applies `delta` to `origin`'s members of `key`; returns the change that took place
    /// (smaller than `delta` when a removal meets fewer members than it removes).
    fn update_table(&mut self, key: &[u8], origin: Origin, delta: i64) -> i64 {
        let entry = match self.table.get_mut(key) {
            Some(e) => e,
            None if delta > 0 => self.table.entry(key.into()).or_default(),
            None => return 0,
        };
        let (before, after) = match origin {
            Origin::Local => {
                let before = entry.local;
                entry.local = apply(before, delta);
                (before, entry.local)
            }
            Origin::Link { id, solicited } => {
                match entry.links.iter().position(|(l, _, _)| *l == id) {
                    Some(i) => {
                        let before = entry.links.get(i).map_or(0, |(_, _, n)| *n);
                        let n = apply(before, delta);
                        if n == 0 {
                            entry.links.swap_remove(i);
                        } else if let Some(slot) = entry.links.get_mut(i) {
                            slot.2 = n;
                        }
                        (before, n)
                    }
                    None => {
                        let n = apply(0, delta);
                        if n > 0 {
                            entry.links.push((id, solicited, n));
                        }
                        (0, n)
                    }
                }
            }
        };
        if entry.is_empty() {
            self.table.remove(key);
        }
        i64::from(after) - i64::from(before)
    }

    /// Withdraws all interest link `id` announced, telling the other links, at once: a
    /// connection being replaced by the same leaf's new one must not hand the new one its
    /// own interest (its `$LDS.` subject would look like a loop). The old link's own
    /// teardown later removes the same interest again, which then changes nothing.
    pub fn drop_origin(&mut self, id: u64) {
        let held: Vec<(Box<[u8]>, bool, u32)> = self
            .table
            .iter()
            .filter_map(|(key, e)| {
                e.links
                    .iter()
                    .find(|(l, _, _)| *l == id)
                    .map(|&(_, solicited, n)| (key.clone(), solicited, n))
            })
            .collect();
        for (key, solicited, n) in held {
            let (subject, queue) = split_key(&key);
            self.change(
                subject,
                queue,
                Origin::Link { id, solicited },
                -i64::from(n),
            );
        }
        self.remove_link(id);
    }

    /// Registers an established link. Its first `LS+` burst (every key it should know about,
    /// then the loop-detection subject `lds`) is not written here but step by step, as the
    /// link's socket takes it: [`Interest::continue_burst`], driven by the [`FirstBurst`] the
    /// caller hands the link's outbound queue. A hub that a fleet reconnects to at once thus
    /// holds one step per link, not one whole copy of its interest per link.
    pub fn add_link(&mut self, handle: Arc<ClientHandle>, solicited: bool, lds: &[u8]) {
        self.links.push(LinkView {
            handle,
            solicited,
            burst: Some(Burst {
                after: None,
                lds: lds.into(),
            }),
        });
    }

    /// Writes the next step (at least `budget` bytes, unless the burst ends first) of link
    /// `id`'s first burst into its outbound queue; returns whether more is to come.
    pub fn continue_burst(&mut self, id: u64, budget: usize) -> bool {
        let Some(link) = self.links.iter_mut().find(|l| l.handle.id == id) else {
            return false;
        };
        let Some(burst) = link.burst.as_mut() else {
            return false;
        };
        let start = match &burst.after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut keys = self.table.range::<Box<[u8]>, _>((start, Bound::Unbounded));
        let (handle, solicited) = (&link.handle, link.solicited);
        let mut last: Option<&Box<[u8]>> = None;
        let mut finished = false;
        let outcome = handle.out.append(
            |out| {
                let begin = out.len();
                loop {
                    let Some((key, entry)) = keys.next() else {
                        proto::write_ls_plus(out, &burst.lds, None);
                        finished = true;
                        break;
                    };
                    last = Some(key);
                    let subject = split_key(key).0;
                    let lds = is_lds(subject);
                    if super::js_denied(subject) || (!lds && import_denied(handle, subject)) {
                        continue;
                    }
                    let n = entry.visible_to(id, solicited, lds);
                    if n > 0 {
                        write_update(out, key, 0, n);
                        if out.len() - begin >= budget {
                            break;
                        }
                    }
                }
            },
            None,
            &[],
        );
        // A closed queue takes nothing more: the burst is over.
        if finished || outcome == AppendOutcome::Closed {
            link.burst = None;
            return false;
        }
        if let Some(key) = last {
            burst.after = Some(key.clone());
        }
        true
    }

    /// Whether a link other than `id` announced the loop-detection subject `subject`: a
    /// second link announcing it is a loop through this server (or a peer echoing another
    /// link's subject), and is refused as a loop; see `link::Link::on_sub`.
    pub fn lds_elsewhere(&self, subject: &[u8], id: u64) -> bool {
        self.table
            .get(subject)
            .is_some_and(|e| e.links.iter().any(|(l, _, _)| *l != id))
    }

    /// Forgets a link (its own interest is removed separately, subscription by subscription).
    pub fn remove_link(&mut self, id: u64) {
        self.links.retain(|l| l.handle.id != id);
    }

    /// How many keys link `id` was told about (for tests and status): those its first burst
    /// (as far as it went) and the changes since have announced and not withdrawn, computed
    /// from the table.
    pub fn announced(&self, id: u64) -> usize {
        let Some(link) = self.links.iter().find(|l| l.handle.id == id) else {
            return 0;
        };
        self.table
            .iter()
            .filter(|(key, entry)| {
                let subject = split_key(key).0;
                let lds = is_lds(subject);
                link.told(key)
                    && !super::js_denied(subject)
                    && (lds || !import_denied(&link.handle, subject))
                    && entry.visible_to(id, link.solicited, lds) > 0
            })
            .count()
    }
}

/// Feeds a link's first burst to its outbound queue as the socket drains (the queue's
/// [`Refill`]): one [`Interest::continue_burst`] step each time, under the interest lock. Holds
/// the table weakly: the table holds the link's handle, which holds this.
pub struct FirstBurst {
    /// The link's account's interest table.
    pub interest: Weak<Mutex<Interest>>,
    /// The link's connection id.
    pub id: u64,
}

impl Refill for FirstBurst {
    fn refill(&self, _out: &Outbound) -> bool {
        match self.interest.upgrade() {
            Some(table) => super::lock_interest(&table).continue_burst(self.id, BURST_STEP),
            None => false,
        }
    }
}

/// `n + delta`, clamped to `0..=u32::MAX`.
fn apply(n: u32, delta: i64) -> u32 {
    u32::try_from((i64::from(n) + delta).max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fanout::{ConnKind, LeafPeer};

    fn link(id: u64, solicited: bool) -> Arc<ClientHandle> {
        Arc::new(ClientHandle::with_kind(
            id,
            1 << 20,
            ConnKind::Leaf(LeafPeer {
                solicited,
                stats: Arc::default(),
                deny: std::sync::OnceLock::new(),
            }),
        ))
    }

    /// Registers a link and writes its whole first burst at once.
    fn add(i: &mut Interest, h: Arc<ClientHandle>, solicited: bool, lds: &[u8]) {
        let id = h.id;
        i.add_link(h, solicited, lds);
        while i.continue_burst(id, BURST_STEP) {}
    }

    async fn drain(h: &ClientHandle) -> String {
        h.out.close();
        let mut sink = Vec::new();
        h.out
            .run_writer(&mut sink, std::time::Duration::from_secs(1))
            .await
            .unwrap();
        String::from_utf8(sink).unwrap()
    }

    const LOCAL: Origin = Origin::Local;

    #[tokio::test]
    async fn plain_and_queue_transitions() {
        let mut i = Interest::default();
        let a = link(1, false);
        add(&mut i, a.clone(), false, b"$LDS.x");
        i.change(b"foo", None, LOCAL, 1);
        i.change(b"foo", None, LOCAL, 1);
        i.change(b"foo", None, LOCAL, -1);
        i.change(b"foo", None, LOCAL, -1);
        i.change(b"bar", Some(b"q"), LOCAL, 1);
        i.change(b"bar", Some(b"q"), LOCAL, 1);
        i.change(b"bar", Some(b"q"), LOCAL, -2);
        assert_eq!(
            drain(&a).await,
            "LS+ $LDS.x\r\nLS+ foo\r\nLS- foo\r\nLS+ bar q 1\r\nLS+ bar q 2\r\nLS- bar q\r\n"
        );
    }

    /// A first burst written a line at a time: a change to a key the burst has not reached is
    /// left to the burst (which writes the key's state then), a change to a key it went past
    /// is passed on at once.
    #[tokio::test]
    async fn a_burst_in_steps_and_changes_meanwhile() {
        let mut i = Interest::default();
        for key in [&b"a"[..], b"b", b"c", b"d"] {
            i.change(key, None, LOCAL, 1);
        }
        let l = link(1, false);
        i.add_link(l.clone(), false, b"$LDS.x");
        // Not reached yet: `a` comes and goes, `b` goes, `e` comes; the link hears nothing.
        i.change(b"a", None, LOCAL, 1);
        i.change(b"b", None, LOCAL, -1);
        i.change(b"e", None, LOCAL, 1);
        assert_eq!(i.announced(1), 0);
        assert!(i.continue_burst(1, 1));
        assert_eq!(i.announced(1), 1);
        // Past `a` now: its change is passed on; `c` is not reached.
        i.change(b"a", None, LOCAL, -2);
        i.change(b"c", None, LOCAL, -1);
        i.change(b"c", None, LOCAL, 1);
        while i.continue_burst(1, 1) {}
        assert!(!i.continue_burst(1, 1));
        i.change(b"e", None, LOCAL, -1);
        assert_eq!(
            drain(&l).await,
            "LS+ a\r\nLS- a\r\nLS+ c\r\nLS+ d\r\nLS+ e\r\nLS+ $LDS.x\r\nLS- e\r\n"
        );
    }

    #[tokio::test]
    async fn a_replaced_link_withdraws_its_interest_once() {
        let mut i = Interest::default();
        let other = link(2, false);
        add(&mut i, other.clone(), false, b"$LDS.hub");
        let old = Origin::Link {
            id: 1,
            solicited: false,
        };
        add(&mut i, link(1, false), false, b"$LDS.hub");
        i.change(b"$LDS.leaf", None, old, 1);
        i.change(b"x", Some(b"q"), old, 2);
        i.drop_origin(1);
        // The same leaf's new connection hears nothing of the old one (no loop).
        let new = link(3, false);
        add(&mut i, new.clone(), false, b"$LDS.hub");
        // The old connection's teardown removes the same interest again: no effect.
        i.change(b"$LDS.leaf", None, old, -1);
        i.change(b"x", Some(b"q"), old, -2);
        assert_eq!(drain(&new).await, "LS+ $LDS.hub\r\n");
        let mut seen: Vec<String> = drain(&other).await.lines().map(str::to_owned).collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                "LS+ $LDS.hub",
                "LS+ $LDS.leaf",
                "LS+ x q 2",
                "LS- $LDS.leaf",
                "LS- x q"
            ]
        );
    }

    #[tokio::test]
    async fn burst_and_sides() {
        let mut i = Interest::default();
        i.change(b"local", None, LOCAL, 1);
        // Interest learned from a hub (solicited link 7) and from a leaf below us (link 8).
        let hub = link(7, true);
        let below = link(8, false);
        add(&mut i, hub.clone(), true, b"$LDS.x");
        add(&mut i, below.clone(), false, b"$LDS.x");
        i.change(
            b"from.hub",
            None,
            Origin::Link {
                id: 7,
                solicited: true,
            },
            1,
        );
        i.change(
            b"from.leaf",
            Some(b"g"),
            Origin::Link {
                id: 8,
                solicited: false,
            },
            3,
        );
        // A second hub connects: it hears local and leaf interest, not the first hub's.
        let hub2 = link(9, true);
        add(&mut i, hub2.clone(), true, b"$LDS.x");
        let mut burst: Vec<String> = drain(&hub2).await.lines().map(str::to_owned).collect();
        burst.sort();
        assert_eq!(burst, ["LS+ $LDS.x", "LS+ from.leaf g 3", "LS+ local"]);
        assert_eq!(
            drain(&hub).await,
            "LS+ local\r\nLS+ $LDS.x\r\nLS+ from.leaf g 3\r\n"
        );
        assert_eq!(
            drain(&below).await,
            "LS+ local\r\nLS+ $LDS.x\r\nLS+ from.hub\r\n"
        );
        i.remove_link(7);
        assert_eq!(i.announced(7), 0);
        assert_eq!(i.announced(9), 2);
    }

    #[tokio::test]
    async fn loop_detection_subjects_pass_on_between_links_only() {
        let mut i = Interest::default();
        let restricted = link(1, false);
        // A leaf that may publish nothing but `down.>` hears of no other interest, but still
        // of other links' loop-detection subjects.
        let _ = restricted
            .leaf()
            .unwrap()
            .deny
            .set(crate::leafnode::LinkDeny {
                import_allow: Some(vec!["down.>".into()]),
                ..crate::leafnode::LinkDeny::default()
            });
        add(&mut i, restricted.clone(), false, b"$LDS.hub1");
        let other = Origin::Link {
            id: 2,
            solicited: false,
        };
        i.change(b"$LDS.other", None, other, 1);
        // A client subscribing to a leaf's loop-detection subject: never announced.
        i.change(b"$LDS.victim", None, LOCAL, 1);
        i.change(b"up.x", None, LOCAL, 1);
        assert!(i.lds_elsewhere(b"$LDS.other", 1));
        assert!(!i.lds_elsewhere(b"$LDS.other", 2));
        assert!(!i.lds_elsewhere(b"$LDS.victim", 1));
        let late = link(3, false);
        add(&mut i, late.clone(), false, b"$LDS.hub3");
        assert_eq!(
            drain(&restricted).await,
            "LS+ $LDS.hub1\r\nLS+ $LDS.other\r\n"
        );
        let mut burst: Vec<String> = drain(&late).await.lines().map(str::to_owned).collect();
        burst.sort();
        assert_eq!(burst, ["LS+ $LDS.hub3", "LS+ $LDS.other", "LS+ up.x"]);
    }

    /// Random changes from local clients and from links of both sides, links joining late (their
    /// first bursts written a line or two at a time between the changes) and being replaced:
    /// what each link hears, replayed, is exactly what the table shows it (no
    /// `LS-` for a key it was not told, no second `LS+` of a plain key, the weight of a queue
    /// key its current one), so computing a link's view instead of storing it loses nothing.
    #[tokio::test]
    async fn what_each_link_hears_adds_up_to_the_table() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let keys: [(&[u8], Option<&[u8]>); 14] = [
            (b"a", None),
            (b"b.>", None),
            (b"c", Some(b"q")),
            (b"c", Some(b"r")),
            (b"$LDS.z", None),
            (b"$JS.API.x", None),
            (b"d.1", None),
            (b"d.2", None),
            (b"d.3", Some(b"q")),
            (b"e", None),
            (b"f.*", None),
            (b"g", Some(b"r")),
            (b"h.>", None),
            (b"i", None),
        ];
        let mut i = Interest::default();
        let mut handles: Vec<(Arc<ClientHandle>, bool)> = Vec::new();
        for step in 0..4000u64 {
            if step % 400 == 0 && handles.len() < 8 {
                let id = 100 + handles.len() as u64;
                let solicited = id.is_multiple_of(3);
                let h = link(id, solicited);
                // Its first burst is written a line or two at a time between changes.
                i.add_link(h.clone(), solicited, b"$LDS.me");
                handles.push((h, solicited));
            }
            if next(3) == 0 && !handles.is_empty() {
                let id = handles[next(handles.len() as u64) as usize].0.id;
                i.continue_burst(id, 1 + next(24) as usize);
            }
            let (subject, queue) = keys[next(keys.len() as u64) as usize];
            let origin = match next(4) {
                0 => LOCAL,
                _ => {
                    // A link's side never changes: the same for its interest before
                    // and after it is registered.
                    let id = 100 + next(30);
                    Origin::Link {
                        id,
                        solicited: id.is_multiple_of(3),
                    }
                }
            };
            // Removals a little more likely than additions: keys keep coming and going
            // (0 <-> 1 transitions) instead of piling up members.
            let delta = [1, 2, -1, -2, -2][next(5) as usize];
            i.change(subject, queue, origin, delta);
            if next(700) == 0 {
                i.drop_origin(100 + next(30));
            }
        }
        for (h, _) in &handles {
            while i.continue_burst(h.id, BURST_STEP) {}
        }
        let registered: Vec<u64> = i.links.iter().map(|l| l.handle.id).collect();
        // A replaced link (`drop_origin`) is told nothing more: only the others are checked.
        assert!(registered.len() >= 4, "{registered:?}");
        for (h, solicited) in handles.iter().filter(|(h, _)| registered.contains(&h.id)) {
            let heard = drain(h).await;
            let mut told: HashMap<String, u32> = HashMap::new();
            for line in heard.lines() {
                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    ["LS+", subject] => {
                        assert!(told.insert(subject.to_string(), 1).is_none(), "{line}");
                    }
                    ["LS+", subject, queue, weight] => {
                        told.insert(format!("{subject} {queue}"), weight.parse().unwrap());
                    }
                    ["LS-", rest @ ..] => {
                        assert!(told.remove(&rest.join(" ")).is_some(), "{line}");
                    }
                    _ => panic!("unexpected line {line}"),
                }
            }
            told.remove("$LDS.me");
            let mut shown: HashMap<String, u32> = HashMap::new();
            for (key, entry) in &i.table {
                let subject = split_key(key).0;
                let lds = is_lds(subject);
                let n = entry.visible_to(h.id, *solicited, lds);
                if n > 0 && !super::super::js_denied(subject) {
                    let key = String::from_utf8(key.to_vec()).unwrap();
                    shown.insert(key.clone(), if key.contains(' ') { n } else { 1 });
                }
            }
            assert_eq!(told, shown, "link {} (solicited {solicited})", h.id);
            assert_eq!(i.announced(h.id), shown.len());
        }
    }
}
