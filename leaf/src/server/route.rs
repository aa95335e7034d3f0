//! Delivering one published message to the subscriptions that match it.
//!
//! This is the message path shared by client connections (which publish what their clients
//! send) and by the server's own components (JetStream replies, later the leaf link), which
//! publish with [`Shared::publish`](super::Shared::publish) and receive through
//! [`InternalSink`] subscriptions.
//!
//! A [`Router`] holds the per-publisher delivery state: the set of connections written to since
//! the last flush (their writers are woken once per batch, not per message) and the
//! subscribers whose queues passed their stall mark (the publisher waits for them).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::outbound::{AppendOutcome, Outbound, SHARE_THRESHOLD};
use crate::auth::Permissions;
use crate::proto;
use crate::sublist::{MatchResult, Sublist};

/// How long a publisher waits for one stalled subscriber before it goes on.
const STALL_LIMIT: Duration = Duration::from_millis(100);

/// The part of a connection other connections see: its outbound queue and delivery options.
pub struct ClientHandle {
    /// The connection id (INFO's `client_id`).
    pub id: u64,
    /// What is waiting to be written to this client.
    pub out: Outbound,
    /// The client understands HMSG.
    pub(crate) headers: AtomicBool,
}

impl ClientHandle {
    /// A handle with an empty outbound queue bounded by `max_pending` bytes.
    pub fn new(id: u64, max_pending: usize) -> Self {
        ClientHandle {
            id,
            out: Outbound::new(max_pending),
            headers: AtomicBool::new(false),
        }
    }
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
/// must not block (copy what it needs and hand it to its own task).
pub trait InternalSink: Send + Sync {
    /// One message matching the subscription.
    fn deliver(&self, msg: &Msg<'_>);
}

/// Where a subscription's messages go.
pub enum SubTarget {
    /// A client connection: encoded as MSG/HMSG into its outbound queue.
    Client(Arc<ClientHandle>),
    /// A component inside the server.
    Internal(Arc<dyn InternalSink>),
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
        }
    }

    /// The id of the subscribing client connection (`None` for internal subscriptions).
    pub fn client_id(&self) -> Option<u64> {
        match &self.target {
            SubTarget::Client(c) => Some(c.id),
            SubTarget::Internal(_) => None,
        }
    }

    /// Whether the subscription was removed.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Marks the subscription removed; returns true the first time.
    pub(crate) fn finish(&self) -> bool {
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
pub struct Router {
    flush_set: FlushSet,
    stalled: Vec<Arc<ClientHandle>>,
}

impl Router {
    /// Delivers `msg` to every plain subscription in `result` and to one member of each queue
    /// group. `no_echo` is the publishing connection's id when it asked not to receive its own
    /// messages. Returns how many deliveries were made.
    pub fn route(
        &mut self,
        sublist: &Sublist<SubRef>,
        result: &MatchResult<SubRef>,
        msg: &Msg<'_>,
        no_echo: Option<u64>,
    ) -> usize {
        let mut bodies = SharedBodies::default();
        let mut delivered = 0;
        for sub in &result.plain {
            delivered += usize::from(self.deliver(sublist, sub, msg, no_echo, &mut bodies));
        }
        for group in &result.queues {
            let n = group.members.len();
            if n == 0 {
                continue;
            }
            let start = fastrand::usize(..n);
            for i in 0..n {
                let Some(member) = group.members.get((start + i) % n) else {
                    break;
                };
                if self.deliver(sublist, member, msg, no_echo, &mut bodies) {
                    delivered += 1;
                    break;
                }
            }
        }
        delivered
    }

    /// Queues `msg` for one subscription. Returns false when it was not delivered (echo off,
    /// subscription ended, denied, or the subscriber is gone), so a queue group can try another.
    fn deliver(
        &mut self,
        sublist: &Sublist<SubRef>,
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
                let _ = sublist.remove(&sub.subject, sub.queue.as_deref(), sub_ref);
            }
        }
        let client = match &sub.target {
            SubTarget::Client(client) => client,
            SubTarget::Internal(sink) => {
                sink.deliver(msg);
                return true;
            }
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
    }

    /// Forgets stalled subscribers without waiting (for publishers that must not wait).
    pub fn clear_stalled(&mut self) {
        self.stalled.clear();
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
    if total >= SHARE_THRESHOLD {
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
    }
}
