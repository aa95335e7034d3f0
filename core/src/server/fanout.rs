//! Delivering one published message to the subscriptions that match it.
//!
//! This is the message path shared by client connections (which publish what their clients
//! send), leafnode links (which publish what the other server forwards, see
//! [`Fanout::fan_out_from_link`]) and the server's own components (JetStream replies), which
//! publish with [`Account::publish`](super::Account::publish) and receive through [`InternalSink`] subscriptions.
//!
//! A [`Fanout`] holds the per-publisher delivery state: the set of connections written to since
//! the last flush (their writers are woken once per batch, not per message) and the
//! subscribers whose queues passed their stall mark (the publisher waits for them): client
//! connections and links by their outbound queue, internal sinks (a stream's ingest) by the
//! [`Budget`] [`InternalSink::offer`] reports.
//!
//! # Leafnode targets
//!
//! Interest announced by a leafnode link (`LS+`), or by a route (`RS+`), is a
//! [`SubTarget::Leaf`] subscription. A
//! message crosses a link at most once, however many of the link's subscriptions match: link
//! targets are collected while the local subscriptions are served, then one `LMSG`/`HMSG` is
//! written per link, carrying the names of the queue groups this copy is meant for. As in
//! nats-server, a queue group prefers its local members; a member behind a link is chosen only
//! when no local member took the message. A message that came from a link is never sent back
//! into it, and reaches only the queue groups its `LMSG` names. On a route the copy is an
//! `RMSG`/`HMSG` naming the publisher's account, and a message that came over a route never
//! goes out on another route (one hop: every server of a cluster has a route to every other).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::outbound::{AppendOutcome, Outbound, SHARE_THRESHOLD};
use super::reply::Publisher;
use super::Account;
use crate::auth::Permissions;
use crate::budget::Budget;
use crate::sublist::{MatchResult, Sublist};
use leaf_proto::subject::is_valid_subject;
use leaf_proto::{self as proto, QueueNames};

/// How long a publisher waits for one stalled subscriber before it goes on.
const STALL_LIMIT: Duration = Duration::from_millis(100);

/// The part of a connection other connections see: its outbound queue and delivery options.
pub struct ClientHandle {
    /// The connection id (INFO's `client_id`; leafnode links draw from the same counter).
    pub id: u64,
    /// What is waiting to be written to this client.
    pub out: Outbound,
    /// The client understands HMSG.
    pub(crate) headers: AtomicBool,
    /// What is at the other end.
    pub kind: ConnKind,
    /// A client connection's traffic: what it published (in) and what was delivered to it
    /// (out). Links count into their [`LeafPeer::stats`] instead.
    pub traffic: LinkStats,
}

impl ClientHandle {
    /// A client connection's handle with an empty outbound queue bounded by `max_pending` bytes.
    pub fn new(id: u64, max_pending: usize) -> Self {
        Self::with_kind(id, max_pending, ConnKind::Client)
    }

    /// A handle for a connection of `kind`.
    pub fn with_kind(id: u64, max_pending: usize, kind: ConnKind) -> Self {
        ClientHandle {
            id,
            out: Outbound::new(max_pending),
            headers: AtomicBool::new(false),
            kind,
            traffic: LinkStats::default(),
        }
    }

    /// The leafnode peer behind this handle, if it is a leafnode link.
    pub fn leaf(&self) -> Option<&LeafPeer> {
        match &self.kind {
            ConnKind::Leaf(peer) => Some(peer),
            ConnKind::Client | ConnKind::Route(_) => None,
        }
    }

    /// The cluster peer behind this handle, if it is a route.
    pub fn route(&self) -> Option<&RoutePeer> {
        match &self.kind {
            ConnKind::Route(peer) => Some(peer),
            ConnKind::Client | ConnKind::Leaf(_) => None,
        }
    }

    /// Whether the peer understands messages with headers (`HMSG`): a client or peer that
    /// said `"headers":true`. Without, a message's headers are left out.
    pub fn set_headers(&self, headers: bool) {
        self.headers.store(headers, Ordering::Relaxed);
    }
}

/// What is at the other end of a connection.
pub enum ConnKind {
    /// A NATS client: messages are written as `MSG`/`HMSG`.
    Client,
    /// Another server, over a leafnode link: messages are written as `LMSG`/`HMSG`.
    Leaf(LeafPeer),
    /// Another server of this server's cluster, over a route: messages are written as
    /// `RMSG`/`HMSG` with their account, and a message that came over a route never goes
    /// out on another one (one hop).
    Route(RoutePeer),
}

/// The route-specific part of a route connection's handle.
pub struct RoutePeer {
    /// The peer's server id, once its INFO told it.
    pub server_id: std::sync::OnceLock<String>,
    /// Traffic counters, shared with the route's status entry.
    pub stats: Arc<LinkStats>,
}

/// The link-specific part of a leafnode connection's handle.
pub struct LeafPeer {
    /// This server opened the link (it is a leaf of the peer, the "spoke" side).
    pub solicited: bool,
    /// Traffic counters, shared with the link's status entry.
    pub stats: Arc<LinkStats>,
    /// Subjects kept off the link: a remote's `deny_imports`/`deny_exports` (set when the
    /// link is created), or the `deny_pub` an accepted leaf sent in its CONNECT. Unset:
    /// nothing denied.
    pub deny: std::sync::OnceLock<super::deny::LinkDeny>,
}

/// Message and byte counters of a leafnode link, both directions. Bytes count message bodies
/// (headers and payload), as nats-server's `in_bytes`/`out_bytes`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Messages received from the peer.
    pub msgs_in: AtomicU64,
    /// Body bytes received from the peer.
    pub bytes_in: AtomicU64,
    /// Messages sent to the peer.
    pub msgs_out: AtomicU64,
    /// Body bytes sent to the peer.
    pub bytes_out: AtomicU64,
}

/// How many subjects a publisher caches match results for.
const MATCH_CACHE_SIZE: usize = 512;

/// A publisher's own cache of match results (a client connection's, a link's), valid while the
/// sublist's generation is unchanged: a hit costs one atomic load and one hash lookup, no lock.
#[derive(Default)]
pub struct MatchCache {
    results: HashMap<Box<[u8]>, Arc<MatchResult<SubRef>>>,
    generation: u64,
}

impl MatchCache {
    /// The subscriptions matching `subject`, or `None` when it is not a well-formed subject
    /// (validated only on a cache miss: cached subjects were valid).
    ///
    /// As in nats-server (without `pedantic`), a published subject may contain `*` and `>`
    /// tokens; they are matched as ordinary tokens. Clients rely on it: async-nats puts a
    /// consumer's wildcard filter into the `$JS.API.CONSUMER.CREATE` subject.
    pub fn lookup(
        &mut self,
        sublist: &Sublist<SubRef>,
        subject: &[u8],
    ) -> Option<Arc<MatchResult<SubRef>>> {
        // Read the generation before matching: a concurrent change then costs at most one
        // needless cache drop, never a stale hit.
        let generation = sublist.generation();
        if generation != self.generation {
            self.results.clear();
            self.generation = generation;
        } else if let Some(hit) = self.results.get(subject) {
            return Some(hit.clone());
        }
        if !is_valid_subject(subject) {
            return None;
        }
        if is_single_use(subject) {
            return Some(sublist.matches_uncached(subject));
        }
        let result = sublist.matches(subject);
        if self.results.len() >= MATCH_CACHE_SIZE {
            self.results.clear();
        }
        self.results.insert(subject.into(), result.clone());
        Some(result)
    }
}

/// Whether `subject` is most likely published to once (a reply inbox, a JetStream ack, an
/// uplink's reply): its match result is not cached, so a stream of such subjects does not
/// evict the subjects that repeat.
fn is_single_use(subject: &[u8]) -> bool {
    subject.starts_with(b"_INBOX.")
        || subject.starts_with(b"_UPLINK.")
        || subject.starts_with(b"$JS.ACK.")
}

/// A message as it is routed: slices borrowed from the publisher's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    /// The subject it was published to.
    pub subject: &'a [u8],
    /// The reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// The header block (`NATS/1.0 ...\r\n\r\n`), if any.
    pub headers: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

/// A component of the server that receives messages through a subscription.
///
/// `deliver` runs on the publisher's task, inline on the message path: it must be quick and
/// must not block (copy what it needs and hand it to its own task, into a queue bounded by a
/// [`Budget`]).
///
/// A sink that answers requests turns the message's reply subject into a
/// [`ReplyTo`](super::ReplyTo) with `from.reply_to(reply)` and answers through
/// [`Account::answer`](super::Account::answer): the requester can then make it publish only where it could publish
/// itself (see [`super::reply`]).
pub trait InternalSink: Send + Sync {
    /// One message matching the subscription, published by `from`.
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher);

    /// Delivers one message and returns the budget of the queue it went into when that queue
    /// is past its stall mark: a publisher that can wait does, bounded, as for a slow
    /// subscriber (see [`Fanout::wait_for_stalled`]). The server calls this; a sink whose queue
    /// should push back on publishers implements it (and `deliver` as `offer` without the
    /// answer).
    fn offer(&self, msg: &Msg<'_>, from: &Publisher) -> Option<Arc<Budget>> {
        self.deliver(msg, from);
        None
    }
}

/// Where a subscription's messages go.
pub enum SubTarget {
    /// A client connection: encoded as MSG/HMSG into its outbound queue.
    Client(Arc<ClientHandle>),
    /// A component inside the server.
    Internal(Arc<dyn InternalSink>),
    /// Interest announced by a leafnode link (`LS+`): encoded as LMSG/HMSG into the link's
    /// outbound queue, once per message and link.
    Leaf(Arc<ClientHandle>),
}

/// One subscription.
pub struct Subscription {
    /// Where matching messages go.
    pub target: SubTarget,
    /// The subject filter.
    pub subject: Box<[u8]>,
    /// The queue group, if any.
    pub queue: Option<Box<[u8]>>,
    /// The client's subscription id.
    pub sid: Box<[u8]>,
    /// Deliveries after which the subscription ends (0: unlimited).
    pub(crate) max: AtomicU64,
    /// Deliveries so far.
    pub(crate) delivered: AtomicU64,
    /// Set once the subscription is removed.
    pub(crate) done: AtomicBool,
    /// Set when the filter overlaps the subscriber's subscribe deny list.
    pub(crate) deny_check: Option<Arc<Permissions>>,
    /// How many members this subscription stands for in its queue group: 1, except for a
    /// leafnode link's queue interest (the `LS+` weight). Changed under the interest lock.
    pub(crate) weight: AtomicU32,
}

impl Subscription {
    /// A new, unlimited subscription.
    pub fn new(
        target: SubTarget,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        deny_check: Option<Arc<Permissions>>,
    ) -> Self {
        Subscription {
            target,
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            done: AtomicBool::new(false),
            deny_check,
            weight: AtomicU32::new(1),
        }
    }

    /// The subscription standing for `weight` members of its queue group (a link's queue
    /// interest: the `LS+`/`RS+` weight), before it is added to a sublist.
    pub fn with_weight(self, weight: u32) -> Self {
        self.weight.store(weight.max(1), Ordering::Relaxed);
        self
    }

    /// The id of the subscribing connection or link (`None` for internal subscriptions).
    pub fn client_id(&self) -> Option<u64> {
        match &self.target {
            SubTarget::Client(c) | SubTarget::Leaf(c) => Some(c.id),
            SubTarget::Internal(_) => None,
        }
    }

    /// The queue weight (see the field's documentation).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Whether the subscription was removed.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Marks the subscription removed; returns true the first time (the caller then removes
    /// it from its account's sublist).
    pub fn finish(&self) -> bool {
        !self.done.swap(true, Ordering::Relaxed)
    }
}

/// A shared handle to a subscription; equality is identity.
#[derive(Clone)]
pub struct SubRef(pub Arc<Subscription>);

impl PartialEq for SubRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SubRef {}

impl std::hash::Hash for SubRef {
    /// Hashes the identity (the address), as equality compares it.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

/// The connections written to since the last flush.
#[derive(Default)]
struct FlushSet {
    list: Vec<Arc<ClientHandle>>,
    ids: HashSet<u64>,
}

impl FlushSet {
    fn add(&mut self, client: &Arc<ClientHandle>) {
        if let Some(last) = self.list.last() {
            if last.id == client.id {
                return;
            }
        }
        if self.list.len() < 16 {
            if self.list.iter().any(|c| c.id == client.id) {
                return;
            }
            self.list.push(client.clone());
            if self.list.len() == 16 {
                self.ids.extend(self.list.iter().map(|c| c.id));
            }
        } else if self.ids.insert(client.id) {
            self.list.push(client.clone());
        }
    }

    fn flush(&mut self) {
        for c in self.list.drain(..) {
            c.out.flush();
        }
        self.ids.clear();
    }
}

/// A large message body, copied once per publish and shared by every subscriber's queue: with
/// the header block (for subscribers that announced headers) and without.
#[derive(Default)]
struct SharedBodies {
    with_headers: Option<Bytes>,
    payload_only: Option<Bytes>,
}

impl SharedBodies {
    fn get(&mut self, headers: Option<&[u8]>, payload: &[u8]) -> &Bytes {
        match headers {
            Some(h) => self.with_headers.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(h.len() + payload.len());
                b.extend_from_slice(h);
                b.extend_from_slice(payload);
                b.freeze()
            }),
            None => self
                .payload_only
                .get_or_insert_with(|| Bytes::copy_from_slice(payload)),
        }
    }
}

/// The delivery state of one publisher.
#[derive(Default)]
pub struct Fanout {
    /// Who publishes through this fan-out (handed to internal sinks).
    publisher: Publisher,
    flush_set: FlushSet,
    stalled: Vec<Arc<ClientHandle>>,
    /// Internal sinks' queues past their stall mark.
    stalled_budgets: Vec<Arc<Budget>>,
    /// Links the message being routed goes to (each once), collected during `fan_out`.
    links: Vec<Arc<ClientHandle>>,
    /// Queue members behind links chosen for the message being routed: (index in `links`,
    /// the subscription, whose queue name goes on the `LMSG` line).
    link_queues: Vec<(usize, SubRef)>,
}

impl Fanout {
    /// The delivery state of `publisher` (a client connection, a link).
    pub fn new(publisher: Publisher) -> Self {
        Fanout {
            publisher,
            ..Fanout::default()
        }
    }

    /// Changes who publishes through this fan-out (a client's permissions are known only once
    /// it sent CONNECT).
    pub fn set_publisher(&mut self, publisher: Publisher) {
        self.publisher = publisher;
    }

    /// Delivers `msg` to every plain subscription in `result` and to one member of each queue
    /// group. `no_echo` is the publishing connection's id when it asked not to receive its own
    /// messages. Returns how many deliveries were made (a link counts once).
    pub fn fan_out(
        &mut self,
        account: &Account,
        result: &MatchResult<SubRef>,
        msg: &Msg<'_>,
        no_echo: Option<u64>,
    ) -> usize {
        self.fan_out_inner(account, result, msg, no_echo, None)
    }

    /// Delivers a message received from the leafnode link `link_id`: to every plain
    /// subscription except the link's own, and to one member of each queue group named in
    /// `queues` (none when it is empty), as nats-server does with an `LMSG`.
    pub fn fan_out_from_link(
        &mut self,
        account: &Account,
        result: &MatchResult<SubRef>,
        msg: &Msg<'_>,
        link_id: u64,
        queues: QueueNames<'_>,
    ) -> usize {
        self.fan_out_inner(account, result, msg, Some(link_id), Some(queues))
    }

    /// `queue_filter`: `None` serves every queue group, `Some(names)` only those named.
    fn fan_out_inner(
        &mut self,
        account: &Account,
        result: &MatchResult<SubRef>,
        msg: &Msg<'_>,
        no_echo: Option<u64>,
        queue_filter: Option<QueueNames<'_>>,
    ) -> usize {
        let mut bodies = SharedBodies::default();
        let mut delivered = 0;
        // One hop: what came over a route never goes out on a route. A hubd cluster's
        // internal traffic (`$HRG.`) goes out on a route only when a server published it
        // (never a client's or a leafnode link's: hubd's `jsc::transport`).
        let from_route = matches!(&self.publisher, Publisher::Link(h) if h.route().is_some())
            || (msg.subject.starts_with(b"$HRG.") && !matches!(&self.publisher, Publisher::Server));
        for sub in &result.plain {
            if let SubTarget::Leaf(link) = &sub.0.target {
                if Some(link.id) != no_echo
                    && !sub.0.is_done()
                    && !(from_route && link.route().is_some())
                {
                    self.add_link(link);
                }
                continue;
            }
            delivered += usize::from(self.deliver(account, sub, msg, no_echo, &mut bodies));
        }
        for group in &result.queues {
            if let Some(filter) = &queue_filter {
                if !filter.iter().any(|q| q == &*group.name) {
                    continue;
                }
            }
            let n = group.members.len();
            if n == 0 {
                continue;
            }
            // Local members first; a member behind a link only if none of them took it.
            let mut remote: Option<&SubRef> = None;
            let mut done = false;
            let start = fastrand::usize(..n);
            for i in 0..n {
                let Some(member) = group.members.get((start + i) % n) else {
                    break;
                };
                if let SubTarget::Leaf(link) = &member.0.target {
                    if remote.is_none()
                        && Some(link.id) != no_echo
                        && !member.0.is_done()
                        && !(from_route && link.route().is_some())
                    {
                        remote = Some(member);
                    }
                    continue;
                }
                if self.deliver(account, member, msg, no_echo, &mut bodies) {
                    delivered += 1;
                    done = true;
                    break;
                }
            }
            if let (false, Some(member)) = (done, remote) {
                if let SubTarget::Leaf(link) = &member.0.target {
                    let index = self.add_link(link);
                    self.link_queues.push((index, member.clone()));
                }
            }
        }
        if !self.links.is_empty() {
            // The JetStream API never leaves this server; KV and object store subjects go
            // to routes but not to leafnode links (see `send_to_links`).
            if super::deny::route_denied(msg.subject) {
                self.links.clear();
                self.link_queues.clear();
            } else {
                delivered += self.send_to_links(account, msg, &mut bodies);
            }
        }
        delivered
    }

    /// Adds `link` to the links the current message goes to; returns its index.
    fn add_link(&mut self, link: &Arc<ClientHandle>) -> usize {
        match self.links.iter().position(|l| l.id == link.id) {
            Some(i) => i,
            None => {
                self.links.push(link.clone());
                self.links.len() - 1
            }
        }
    }

    /// Writes one `LMSG`/`HMSG` (`RMSG`/`HMSG` with the account on a route) per collected
    /// link, then forgets them.
    fn send_to_links(
        &mut self,
        account: &Account,
        msg: &Msg<'_>,
        bodies: &mut SharedBodies,
    ) -> usize {
        let links = std::mem::take(&mut self.links);
        let picks = std::mem::take(&mut self.link_queues);
        let mut sent = 0;
        let mut queues: Vec<&[u8]> = Vec::new();
        let leaf_denied = super::deny::js_denied(msg.subject);
        for (i, link) in links.iter().enumerate() {
            if leaf_denied && link.route().is_none() {
                continue;
            }
            if link
                .leaf()
                .and_then(|p| p.deny.get())
                .is_some_and(|d| d.limits_exports() && d.export_denied(msg.subject))
            {
                continue;
            }
            queues.clear();
            queues.extend(
                picks
                    .iter()
                    .filter(|(index, _)| *index == i)
                    .filter_map(|(_, sub)| sub.0.queue.as_deref()),
            );
            let route_account = link.route().map(|_| account.name().as_bytes());
            match encode_link(link, route_account, msg, &queues, bodies) {
                AppendOutcome::Queued => {}
                AppendOutcome::Stalled => {
                    if !self.stalled.iter().any(|c| c.id == link.id) {
                        self.stalled.push(link.clone());
                    }
                }
                AppendOutcome::Closed => continue,
            }
            self.flush_set.add(link);
            sent += 1;
        }
        // Keep the allocations for the next message.
        self.links = links;
        self.links.clear();
        self.link_queues = picks;
        self.link_queues.clear();
        sent
    }

    /// Queues `msg` for one subscription. Returns false when it was not delivered (echo off,
    /// subscription ended, denied, or the subscriber is gone), so a queue group can try another.
    fn deliver(
        &mut self,
        account: &Account,
        sub_ref: &SubRef,
        msg: &Msg<'_>,
        no_echo: Option<u64>,
        bodies: &mut SharedBodies,
    ) -> bool {
        let sub = &sub_ref.0;
        if no_echo.is_some() && sub.client_id() == no_echo {
            return false;
        }
        if sub.is_done() {
            return false;
        }
        if let Some(perms) = &sub.deny_check {
            if perms.delivery_denied(msg.subject) {
                return false;
            }
        }
        let n = sub.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        let max = sub.max.load(Ordering::Relaxed);
        if max > 0 {
            if n > max {
                return false;
            }
            if n == max && sub.finish() {
                account.remove_subscription(sub_ref);
            }
        }
        let client = match &sub.target {
            SubTarget::Client(client) => client,
            SubTarget::Internal(sink) => {
                if let Some(budget) = sink.offer(msg, &self.publisher) {
                    if !self.stalled_budgets.iter().any(|b| Arc::ptr_eq(b, &budget)) {
                        self.stalled_budgets.push(budget);
                    }
                }
                return true;
            }
            // Links are served by `send_to_links`; `fan_out_inner` never passes them here.
            SubTarget::Leaf(_) => return false,
        };
        let outcome = encode_into(&client.out, client, sub, msg, bodies);
        match outcome {
            AppendOutcome::Queued => {}
            AppendOutcome::Stalled => {
                if !self.stalled.iter().any(|c| c.id == client.id) {
                    self.stalled.push(client.clone());
                }
            }
            AppendOutcome::Closed => return false,
        }
        self.flush_set.add(client);
        true
    }

    /// Queues raw protocol bytes for `client` (PONG, +OK, -ERR, a status message).
    pub fn send(&mut self, client: &Arc<ClientHandle>, bytes: &[u8]) {
        client.out.append_bytes(bytes);
        self.flush_set.add(client);
    }

    /// Wakes `client`'s writer at the next flush (for bytes queued by other means).
    pub fn flush_later(&mut self, client: &Arc<ClientHandle>) {
        self.flush_set.add(client);
    }

    /// Queues bytes that `encode` writes for `client`.
    pub fn send_with(&mut self, client: &Arc<ClientHandle>, encode: impl FnOnce(&mut BytesMut)) {
        client.out.append(encode, None, &[]);
        self.flush_set.add(client);
    }

    /// Wakes the writer of every connection written to since the last flush.
    pub fn flush(&mut self) {
        self.flush_set.flush();
    }

    /// Waits (bounded) for subscribers whose queues passed their stall mark, except `me`, so
    /// a fast publisher is slowed to its consumers' pace.
    pub async fn wait_for_stalled(&mut self, me: Option<u64>) {
        for client in self.stalled.drain(..) {
            if Some(client.id) != me {
                client.out.wait_drained(STALL_LIMIT).await;
            }
        }
        for budget in self.stalled_budgets.drain(..) {
            budget.wait_drained(STALL_LIMIT).await;
        }
    }

    /// Forgets stalled subscribers without waiting (for publishers that must not wait).
    pub fn clear_stalled(&mut self) {
        self.stalled.clear();
        self.stalled_budgets.clear();
    }
}

/// Appends `MSG`/`HMSG` for `sub` to `out`. A subscriber that did not announce headers gets
/// the payload alone, as in nats-server.
fn encode_into(
    out: &Outbound,
    client: &ClientHandle,
    sub: &Subscription,
    msg: &Msg<'_>,
    bodies: &mut SharedBodies,
) -> AppendOutcome {
    let hdr = msg
        .headers
        .filter(|_| client.headers.load(Ordering::Relaxed));
    let total = hdr.map_or(0, <[u8]>::len) + msg.payload.len();
    let head = |b: &mut BytesMut| match hdr {
        Some(h) => {
            proto::encode::write_hmsg_head(b, msg.subject, &sub.sid, msg.reply, h.len(), total)
        }
        None => proto::encode::write_msg_head(b, msg.subject, &sub.sid, msg.reply, total),
    };
    let outcome = if total >= SHARE_THRESHOLD {
        out.append(head, Some(bodies.get(hdr, msg.payload)), b"\r\n")
    } else {
        out.append(
            |b| {
                head(b);
                if let Some(h) = hdr {
                    b.extend_from_slice(h);
                }
                b.extend_from_slice(msg.payload);
            },
            None,
            b"\r\n",
        )
    };
    if outcome != AppendOutcome::Closed {
        client.traffic.msgs_out.fetch_add(1, Ordering::Relaxed);
        client
            .traffic
            .bytes_out
            .fetch_add(total as u64, Ordering::Relaxed);
    }
    outcome
}

/// Appends `LMSG`/`HMSG` for `msg` to a link's queue, with the queue groups it is meant for.
/// A peer that did not announce headers gets the payload alone, as nats-server does.
fn encode_link(
    link: &ClientHandle,
    route_account: Option<&[u8]>,
    msg: &Msg<'_>,
    queues: &[&[u8]],
    bodies: &mut SharedBodies,
) -> AppendOutcome {
    let hdr = msg.headers.filter(|_| link.headers.load(Ordering::Relaxed));
    let total = hdr.map_or(0, <[u8]>::len) + msg.payload.len();
    let head = |b: &mut BytesMut| match route_account {
        Some(account) => proto::write_rmsg_head(
            b,
            account,
            msg.subject,
            msg.reply,
            queues,
            hdr.map(<[u8]>::len),
            total,
        ),
        None => proto::write_lmsg_head(
            b,
            msg.subject,
            msg.reply,
            queues,
            hdr.map(<[u8]>::len),
            total,
        ),
    };
    let outcome = if total >= SHARE_THRESHOLD {
        link.out
            .append(head, Some(bodies.get(hdr, msg.payload)), b"\r\n")
    } else {
        link.out.append(
            |b| {
                head(b);
                if let Some(h) = hdr {
                    b.extend_from_slice(h);
                }
                b.extend_from_slice(msg.payload);
            },
            None,
            b"\r\n",
        )
    };
    if outcome != AppendOutcome::Closed {
        let stats = match &link.kind {
            ConnKind::Leaf(peer) => Some(&peer.stats),
            ConnKind::Route(peer) => Some(&peer.stats),
            ConnKind::Client => None,
        };
        if let Some(stats) = stats {
            stats.msgs_out.fetch_add(1, Ordering::Relaxed);
            stats.bytes_out.fetch_add(total as u64, Ordering::Relaxed);
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Server, ServerOptions};

    async fn shared() -> Arc<Account> {
        let opts = ServerOptions {
            port: 0,
            ..ServerOptions::default()
        };
        Server::bind(opts).await.unwrap().shared().global().clone()
    }

    fn handle(id: u64, leaf: bool) -> Arc<ClientHandle> {
        let kind = if leaf {
            ConnKind::Leaf(LeafPeer {
                solicited: false,
                stats: Arc::default(),
                deny: std::sync::OnceLock::new(),
            })
        } else {
            ConnKind::Client
        };
        let h = ClientHandle::with_kind(id, 1 << 20, kind);
        h.headers.store(true, Ordering::Relaxed);
        Arc::new(h)
    }

    fn sub(shared: &Account, h: &Arc<ClientHandle>, subject: &str, queue: Option<&str>) {
        let target = match h.kind {
            ConnKind::Leaf(_) | ConnKind::Route(_) => SubTarget::Leaf(h.clone()),
            ConnKind::Client => SubTarget::Client(h.clone()),
        };
        let s = Subscription::new(
            target,
            subject.as_bytes(),
            queue.map(str::as_bytes),
            b"1",
            None,
        );
        shared.add_subscription(&SubRef(Arc::new(s))).unwrap();
    }

    fn route(shared: &Account, from_link: Option<(u64, &[u8])>, subject: &str) -> usize {
        let msg = Msg {
            subject: subject.as_bytes(),
            reply: None,
            headers: None,
            payload: b"hi",
        };
        let result = shared.sublist.matches(msg.subject);
        let mut fanout = Fanout::default();
        let n = match from_link {
            None => fanout.fan_out(shared, &result, &msg, None),
            Some((id, queues)) => {
                fanout.fan_out_from_link(shared, &result, &msg, id, QueueNames::new(queues))
            }
        };
        fanout.flush();
        n
    }

    async fn written(h: &ClientHandle) -> String {
        h.out.close();
        let mut sink = Vec::new();
        h.out
            .run_writer(&mut sink, Duration::from_secs(1))
            .await
            .unwrap();
        String::from_utf8(sink).unwrap()
    }

    #[tokio::test]
    async fn a_link_gets_one_copy_with_its_queue_names() {
        let shared = shared().await;
        let link = handle(100, true);
        sub(&shared, &link, "a.b", None);
        sub(&shared, &link, "a.*", None);
        sub(&shared, &link, "a.>", Some("q"));
        assert_eq!(route(&shared, None, "a.b"), 1);
        assert_eq!(route(&shared, None, "x"), 0);
        assert_eq!(written(&link).await, "LMSG a.b | q 2\r\nhi\r\n");
        let stats = &link.leaf().unwrap().stats;
        assert_eq!(stats.msgs_out.load(Ordering::Relaxed), 1);
        assert_eq!(stats.bytes_out.load(Ordering::Relaxed), 2);
    }

    /// KV and object store messages go to routes but never to leafnode links; JetStream API
    /// messages go to neither, even to a `>` subscriber behind them.
    #[tokio::test]
    async fn kv_reaches_routes_not_leaf_links_and_the_api_neither() {
        let shared = shared().await;
        let leaf = handle(100, true);
        let route_link = Arc::new(ClientHandle::with_kind(
            200,
            1 << 20,
            ConnKind::Route(RoutePeer {
                server_id: std::sync::OnceLock::new(),
                stats: Arc::default(),
            }),
        ));
        route_link.headers.store(true, Ordering::Relaxed);
        sub(&shared, &leaf, ">", None);
        sub(&shared, &route_link, ">", None);
        assert_eq!(route(&shared, None, "$KV.b.k"), 1);
        assert_eq!(route(&shared, None, "$OBJ.b.c"), 1);
        assert_eq!(route(&shared, None, "$JS.API.INFO"), 0);
        assert_eq!(route(&shared, None, "plain"), 2);
        assert_eq!(written(&leaf).await, "LMSG plain 2\r\nhi\r\n");
        assert_eq!(
            written(&route_link).await,
            "RMSG $G $KV.b.k 2\r\nhi\r\nRMSG $G $OBJ.b.c 2\r\nhi\r\nRMSG $G plain 2\r\nhi\r\n"
        );
    }

    #[tokio::test]
    async fn queue_groups_prefer_local_members() {
        let shared = shared().await;
        let link = handle(100, true);
        let local = handle(1, false);
        sub(&shared, &link, "job", Some("w"));
        sub(&shared, &local, "job", Some("w"));
        for _ in 0..20 {
            assert_eq!(route(&shared, None, "job"), 1);
        }
        assert_eq!(written(&link).await, "");
        assert_eq!(written(&local).await.matches("MSG job 1 2\r\n").count(), 20);
    }

    #[tokio::test]
    async fn messages_from_a_link_skip_it_and_unnamed_queues() {
        let shared = shared().await;
        let from = handle(100, true);
        let other = handle(101, true);
        let local = handle(1, false);
        sub(&shared, &from, "m", None);
        sub(&shared, &other, "m", None);
        sub(&shared, &local, "m", None);
        sub(&shared, &local, "m", Some("g"));
        // Plain delivery only: the local plain subscription and the other link.
        assert_eq!(route(&shared, Some((100, b"")), "m"), 2);
        // Named queue group too.
        assert_eq!(route(&shared, Some((100, b"g")), "m"), 3);
        assert_eq!(written(&from).await, "");
        assert_eq!(
            written(&other).await,
            "LMSG m 2\r\nhi\r\nLMSG m 2\r\nhi\r\n"
        );
        assert_eq!(written(&local).await.matches("MSG m 1 2\r\n").count(), 3);
    }
}
