//! One stream at run time: capturing the messages published to its subjects, storing them
//! through the group-committing [`Store`], and answering each publisher with a PubAck once the
//! message is durable.
//!
//! Capture is an internal subscription per configured subject. Its `deliver` runs on the
//! publisher's task and only copies the message into the stream's queue; the stream's own
//! task does the rest in arrival order:
//!
//! * **Pipelining.** Plain messages are handed to the store in groups (`Store::append_each`,
//!   one outcome each): those taken from the queue together go as one group once all of them
//!   are handled, without waiting for more when none of the stream's appends is being
//!   committed (at most `GROUP_MAX` per group). The store's writer assigns sequence numbers
//!   in arrival order and batches everything that arrives during one commit into the next;
//!   each PubAck is sent when the commit holding its message is durable, in order. Many
//!   publishes are in flight at a time; none is acknowledged before it is on disk. A group
//!   never starts with its first message alone while others already taken wait behind it:
//!   that cost a commit (an fsync) for one message each time the pipeline restarted.
//! * **Exact expectations.** A message with `Nats-Expected-*` headers, or whose `Nats-Msg-Id`
//!   is still in flight, first waits until every earlier append of the stream is committed, so
//!   its checks see the exact stored state (KV compare-and-set relies on this).
//! * **Deduplication.** `Nats-Msg-Id`s of the last `duplicate_window` are kept in memory and
//!   rebuilt from the stored messages after the server starts, at the stream's first publish
//!   that carries a `Nats-Msg-Id` or `Nats-Expected-Last-Msg-Id` (as nats-server does; others
//!   are stored at once and never pay for it), so a retry after a restart is still
//!   recognised.
//! * **Limits.** `max_msgs`, `max_bytes` (with `discard: old`) and `max_msgs_per_subject`
//!   (unless `discard_new_per_subject`) are the store's [`Retain`] limits of the stream, set
//!   when its task starts and when its configuration changes ([`retain_of`]): the store's
//!   writer removes the oldest messages in the commit of the append that crossed a limit, so
//!   every limit holds when the PubAck is sent, as on nats-server. A rollup is applied by a
//!   purge the PubAck waits for (nobody reads what it replaced once it is acknowledged);
//!   `max_age` by a timer. `discard: new` refuses a message that would exceed `max_msgs` or
//!   `max_bytes`.
//! * **Consumers.** After each PubAck the stream's consumers are told the new sequence and
//!   subject (one channel send each), and after each purge that they should count again.
//! * **Bounded memory.** Every message from its capture until its append is reported holds a
//!   [`Charge`] of the stream's ingest budget ([`INGEST_MAX_BYTES`], [`INGEST_MAX_MSGS`]),
//!   itself inside one budget for all streams ([`ALL_INGEST_MAX_BYTES`]). Past the stall mark
//!   ([`INGEST_STALL_BYTES`], [`INGEST_STALL_MSGS`]) a publishing connection waits for the
//!   stream (bounded, as for a slow subscriber: the publisher is slowed to the disk's pace);
//!   past the limit a publish is refused with nats-server's 429 "too many requests" (10167)
//!   and dropped. Copies from mirrors and sources are always taken (their flow control
//!   bounds them: a source answers it only while the stream is below its stall mark) but
//!   count towards the budget.

use leaf_proto::printable::printable;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::config::{ApiError, Discard, JsError, Retention, StreamConfig, SubjectTransformConfig};
use super::handle::{Cmd, ConsumerHandle, SourceHandle};
use super::msg_ids::{MsgId, MsgIds};
use super::republish::{Republisher, Stored};
use super::retention::{SharedView, StreamView};
use super::wire::{PubAck, PubAckEncoder};
use crate::budget::{Budget, Charge};
use crate::server::{Account, InternalSink, Msg, Publisher, ReplyTo};
use leaf_proto::headers;
use leaf_proto::time::now_ns;
use leaf_proto::transform::Transform;
use leaf_store::{Appended, NewMessage, PurgeRequest, Retain, Store, StoreError};

/// Most messages a stream holds between capture and the report of their append.
pub(crate) const INGEST_MAX_MSGS: usize = 65_536;
/// Most bytes a stream holds between capture and the report of their append (messages'
/// subject, reply, headers and payload, plus [`crate::budget::ITEM_OVERHEAD`] each).
pub(crate) const INGEST_MAX_BYTES: usize = 32 << 20;
/// Past this many bytes held a publisher waits for the stream (bounded), and a source holds
/// back its flow control answer.
pub(crate) const INGEST_STALL_BYTES: usize = 4 << 20;
/// Past this many messages held, likewise.
pub(crate) const INGEST_STALL_MSGS: usize = 4096;
/// Most bytes all streams together hold between capture and append.
pub(crate) const ALL_INGEST_MAX_BYTES: usize = 64 << 20;

/// The budget all streams' ingest budgets are part of.
pub(crate) fn all_streams_budget() -> Arc<Budget> {
    Arc::new(
        Budget::new(ALL_INGEST_MAX_BYTES, usize::MAX)
            .stall_at(ALL_INGEST_MAX_BYTES / 2, usize::MAX),
    )
}

/// A message captured from a subject of the stream, or copied from an origin stream.
pub(crate) struct Ingest {
    subject: String,
    /// Where the PubAck goes (only to the publisher, when it may not publish there itself).
    reply: Option<ReplyTo>,
    headers: Option<Bytes>,
    payload: Bytes,
    origin: Origin,
    /// What it holds of the stream's ingest budget, until its append is reported (taken by
    /// the stream's task when it handles the message).
    charge: Option<Charge>,
}

/// Where an [`Ingest`] comes from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// Published to one of the stream's subjects.
    Publish,
    /// Copied from a source (index name `iname`) at origin sequence `seq`; its headers
    /// already carry the `Nats-Stream-Source` header.
    Source {
        /// The source's index name.
        iname: Arc<str>,
        /// The origin sequence.
        seq: u64,
    },
    /// Not a message: source `iname` has origin sequence `last` stored (anything at or below
    /// it is a duplicate).
    SourceReset {
        /// The source's index name.
        iname: Arc<str>,
        /// The newest origin sequence stored.
        last: u64,
    },
    /// Copied from the mirrored stream, where it has sequence `seq` and time `ts_ns`.
    Mirror {
        /// The origin sequence, which the mirror keeps.
        seq: u64,
        /// The origin's timestamp, which the mirror keeps.
        ts_ns: i64,
    },
}

/// The queue from the capturing subscriptions into the stream's task. A plain deque under a
/// mutex: the task takes everything queued in one swap, and both deques keep their capacity,
/// so a steady stream of messages allocates nothing here (a channel allocated a block per
/// few dozen messages, a quarter of the ingest's allocator time). What it holds is bounded
/// by the messages' [`Charge`]s of `budget`.
struct IngestQueue {
    /// Captured messages; `None` asks the task to finish what is in flight and stop.
    items: Mutex<VecDeque<Option<Ingest>>>,
    /// What the stream holds of messages queued or being appended.
    budget: Arc<Budget>,
    /// Wakes the task after a push.
    ready: Notify,
}

impl IngestQueue {
    /// Queues `item` (charged already).
    fn push(&self, item: Option<Ingest>) {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(item);
        self.ready.notify_one();
    }

    /// Moves everything queued into `into` (which must be empty).
    fn take_all(&self, into: &mut VecDeque<Option<Ingest>>) {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *items, into);
    }
}

/// The JetStream headers of a published message, found in one pass over its header block.
#[derive(Debug, Default)]
struct PublishHeaders<'a> {
    msg_id: Option<&'a str>,
    expected_stream: Option<&'a str>,
    expected_last_seq: Option<&'a str>,
    expected_subject_seq: Option<&'a str>,
    expected_subject_seq_subject: Option<&'a str>,
    expected_last_msg_id: Option<&'a str>,
    rollup: Option<&'a str>,
}

impl<'a> PublishHeaders<'a> {
    /// Reads the headers from `block`; the first value of each counts, names match
    /// case-insensitively (as [`headers::get`]) and values that are not UTF-8 are ignored.
    fn parse(block: &'a [u8]) -> Self {
        let mut h = PublishHeaders::default();
        for (key, value) in headers::fields(block) {
            let Some((prefix, name)) = key.split_at_checked(5) else {
                continue;
            };
            if !prefix.eq_ignore_ascii_case(b"Nats-") {
                continue;
            }
            let slot = match name {
                k if k.eq_ignore_ascii_case(b"Msg-Id") => &mut h.msg_id,
                k if k.eq_ignore_ascii_case(b"Expected-Stream") => &mut h.expected_stream,
                k if k.eq_ignore_ascii_case(b"Expected-Last-Sequence") => &mut h.expected_last_seq,
                k if k.eq_ignore_ascii_case(b"Expected-Last-Subject-Sequence") => {
                    &mut h.expected_subject_seq
                }
                k if k.eq_ignore_ascii_case(b"Expected-Last-Subject-Sequence-Subject") => {
                    &mut h.expected_subject_seq_subject
                }
                k if k.eq_ignore_ascii_case(b"Expected-Last-Msg-Id") => &mut h.expected_last_msg_id,
                k if k.eq_ignore_ascii_case(b"Rollup") => &mut h.rollup,
                _ => continue,
            };
            if slot.is_none() {
                *slot = std::str::from_utf8(value).ok();
            }
        }
        h
    }
}

/// A stream's shared handle: its configuration and the queue into its task.
pub(crate) struct Stream {
    pub(crate) name: String,
    /// The configuration (replaced whole on update; readers on the message path clone the
    /// `Arc`, not the configuration).
    pub(crate) config: RwLock<Arc<StreamConfig>>,
    pub(crate) created_ns: i64,
    queue: IngestQueue,
    /// The stream's consumers by name.
    pub(crate) consumers: RwLock<HashMap<String, Arc<ConsumerHandle>>>,
    /// The sequence of the newest message acknowledged as stored (for in-process readers
    /// such as uplinks).
    pub(crate) appended: tokio::sync::watch::Sender<u64>,
    /// The running mirror or source tasks.
    pub(crate) sources: std::sync::Mutex<Vec<SourceHandle>>,
    /// Bumped when a copied message could not be stored: the source tasks start again from
    /// what the store holds.
    pub(crate) resync: tokio::sync::watch::Sender<u64>,
    /// The server, to answer publishers the stream refuses.
    server: Weak<Account>,
}

impl Stream {
    /// Stops the stream's task once it has reported everything already captured.
    pub(crate) fn close(&self) {
        self.queue.push(None);
    }

    /// Hands a message copied by a mirror or source task to the stream's task. Always taken:
    /// the copying task bounds what it queues (see [`Stream::ingest_stalled`]), but it counts
    /// towards the ingest budget publishers see.
    pub(crate) fn ingest_copied(
        &self,
        subject: String,
        headers: Option<Bytes>,
        payload: Bytes,
        origin: Origin,
    ) {
        let bytes = subject.len() + headers.as_ref().map_or(0, Bytes::len) + payload.len();
        let charge = self.queue.budget.charge(Budget::cost(bytes));
        self.queue.push(Some(Ingest {
            subject,
            reply: None,
            headers,
            payload,
            origin,
            charge: Some(charge),
        }));
    }

    /// Messages queued or being appended.
    pub(crate) fn queued(&self) -> usize {
        self.queue.budget.items()
    }

    /// Whether the stream holds more than its stall mark: a source holds back its flow
    /// control answer until it is not.
    pub(crate) fn ingest_stalled(&self) -> bool {
        self.queue.budget.is_stalled()
    }

    /// The consumer `name`.
    pub(crate) fn consumer(&self, name: &str) -> Option<Arc<ConsumerHandle>> {
        self.consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// All consumers, sorted by name.
    pub(crate) fn consumers_snapshot(&self) -> Vec<Arc<ConsumerHandle>> {
        let mut v: Vec<_> = self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// How many consumers the stream has.
    pub(crate) fn consumer_count(&self) -> usize {
        self.consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Registers a started consumer.
    pub(crate) fn add_consumer(&self, handle: Arc<ConsumerHandle>) {
        self.consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(handle.name.clone(), handle);
    }

    /// Forgets a consumer (its task is stopped by the caller).
    pub(crate) fn remove_consumer(&self, name: &str) -> Option<Arc<ConsumerHandle>> {
        self.consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
    }

    /// Tells every consumer that messages were removed.
    pub(crate) fn consumers_recount(&self) {
        for c in self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            c.send(Cmd::Recount);
        }
    }

    /// Tells every consumer and the readers of [`Stream::appended`] that `seq` was stored.
    pub(crate) fn consumers_appended(&self, seq: u64, subject: &str) {
        self.appended.send_replace(seq);
        self.tell_consumers(seq, subject);
    }

    /// Tells every consumer that `seq` was stored.
    fn tell_consumers(&self, seq: u64, subject: &str) {
        let consumers = self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if consumers.is_empty() {
            return;
        }
        let subject: Arc<str> = Arc::from(subject);
        for c in consumers.values() {
            c.appended(seq, subject.clone());
        }
    }

    /// The current configuration.
    pub(crate) fn config(&self) -> StreamConfig {
        StreamConfig::clone(&self.shared_config())
    }

    /// The current configuration, shared (no copy).
    pub(crate) fn shared_config(&self) -> Arc<StreamConfig> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the configuration.
    pub(crate) fn set_config(&self, config: StreamConfig) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }
}

impl StreamView for Stream {
    fn name(&self) -> &str {
        &self.name
    }

    fn retention(&self) -> Retention {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .retention
    }

    fn views(&self, except: Option<&str>) -> Vec<SharedView> {
        self.consumers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|c| except != Some(c.name.as_str()))
            .map(|c| c.view.clone())
            .collect()
    }
}

/// The internal subscription sink that captures messages for a stream.
pub(crate) struct Capture(pub(crate) Weak<Stream>);

/// The status line of a PubAck refused because the stream holds too much (nats-server's).
const TOO_MANY_REQUESTS_HDR: &[u8] = b"NATS/1.0 429 Too Many Requests\r\n\r\n";

impl InternalSink for Capture {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let _ = self.offer(msg, from);
    }

    fn offer(&self, msg: &Msg<'_>, from: &Publisher) -> Option<Arc<Budget>> {
        let stream = self.0.upgrade()?;
        let budget = &stream.queue.budget;
        let bytes = msg.subject.len()
            + msg.reply.map_or(0, <[u8]>::len)
            + msg.headers.map_or(0, <[u8]>::len)
            + msg.payload.len();
        let Some(charge) = budget.try_charge(Budget::cost(bytes)) else {
            stream.refuse(msg, from);
            // Full is stalled too: the publisher waits before it sends more to refuse.
            return Some(budget.clone());
        };
        // A reply that is itself a JetStream ack or API subject is not a publisher waiting
        // for a PubAck (nats-server treats them the same way).
        let ingest = Ingest {
            subject: String::from_utf8_lossy(msg.subject).into_owned(),
            reply: msg.reply.map(|r| from.reply_to(r)),
            headers: msg.headers.map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(msg.payload),
            origin: Origin::Publish,
            charge: Some(charge),
        };
        stream.queue.push(Some(ingest));
        budget.is_stalled().then(|| budget.clone())
    }
}

impl Stream {
    /// Refuses a published message the stream has no room for: its publisher (if it waits
    /// for a PubAck) gets nats-server's 429 "too many requests"; a warning is logged at most
    /// every 10 s.
    fn refuse(&self, msg: &Msg<'_>, from: &Publisher) {
        let budget = &self.queue.budget;
        if budget.should_report() {
            warn!(stream = %printable(&self.name), held_bytes = budget.bytes(), held_msgs = budget.items(),
                  refused = budget.refused(),
                  "stream ingest full (publishers faster than the store), messages refused");
        }
        let (Some(reply), Some(server)) = (msg.reply, self.server.upgrade()) else {
            return;
        };
        // The body of a refused PubAck, as nats-server words it: the stream and the error.
        let body = serde_json::to_vec(&PubAck {
            stream: Some(Cow::Borrowed(&self.name)),
            error: Some(Cow::Owned(ApiError::too_many_requests())),
            ..PubAck::default()
        })
        .unwrap_or_default();
        server.answer(&from.reply_to(reply), Some(TOO_MANY_REQUESTS_HDR), &body);
    }
}

type AppendFuture = Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send>>;
type GroupFuture =
    Pin<Box<dyn Future<Output = Result<Vec<Result<Appended, StoreError>>, StoreError>> + Send>>;

/// Most published messages handed to the store as one group (see [`Runner::pending`]).
const GROUP_MAX: usize = 256;

/// Published appends handed to the store as one [`Store::append_each`].
struct Group {
    fut: GroupFuture,
    /// The outcomes, once the store answered.
    outcomes: Option<Result<std::vec::IntoIter<Result<Appended, StoreError>>, StoreError>>,
    /// Members not reported yet.
    remaining: usize,
}

/// An append handed to the store (or about to be) whose commit has not been reported yet.
struct InFlight {
    /// Its own store request, or `None` for a member of a group (`Runner::groups`, or
    /// `Runner::pending` while the group is being gathered), in the same order.
    fut: Option<AppendFuture>,
    reply: Option<ReplyTo>,
    subject: String,
    msg_id: Option<MsgId>,
    rollup: Option<Rollup>,
    /// Its headers and payload, kept only when the stream republishes (see
    /// [`super::republish`]).
    body: Option<Body>,
    /// The sequence this append gets if every append before it succeeds.
    predicted_seq: u64,
    /// The source it was copied from (index name and origin sequence), if any.
    source: Option<(Arc<str>, u64)>,
    /// Only takes a sequence (a mirror's gap): nobody is told about it.
    gap: bool,
    /// What the message holds of the stream's ingest budget, given back when this is
    /// dropped: once its append is reported.
    _charge: Option<Charge>,
}

/// A message's headers and payload.
type Body = (Option<Bytes>, Bytes);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollup {
    Subject,
    All,
}

/// The state the stream's task owns.
struct Runner {
    stream: Arc<Stream>,
    store: Store,
    server: Weak<Account>,
    /// Writes the PubAcks of stored messages (no serde per message).
    ack: PubAckEncoder,
    /// The PubAck being written, reused.
    ack_buf: Vec<u8>,
    /// `Nats-Msg-Id`s stored within the duplicate window and in flight.
    ids: MsgIds,
    /// The `Nats-Msg-Id` of the last stored message.
    last_msg_id: Option<MsgId>,
    /// The dedup state was not read back from the store yet ([`recent_msg_ids`]): done
    /// before the first publish that needs it.
    rebuild_pending: bool,
    /// An append completed since the task started: the newest stored message is newer than
    /// what the rebuild saw as the newest.
    stored_since_start: bool,
    in_flight: VecDeque<InFlight>,
    /// Published appends gathered while handling a burst of the ingest queue, submitted as
    /// one group before the task waits (or before any other store request, which keeps
    /// the store's queue in `in_flight` order).
    pending: Vec<(NewMessage, Option<u64>)>,
    /// Groups submitted and not fully reported, oldest first.
    groups: VecDeque<Group>,
    /// An append failed while others were in flight, so `InFlight::predicted_seq` is wrong
    /// until `in_flight` is empty again.
    predictions_broken: bool,
    /// Per source index name: the newest origin sequence stored or in flight.
    source_last: HashMap<Arc<str>, u64>,
    /// The compiled `republish` configuration, made when first needed.
    republisher: Option<Republisher>,
    /// The compiled `subject_transform`, made when first needed.
    subject_transform: Option<(SubjectTransformConfig, Transform)>,
    /// The ingest budget charge of the message being handled: moved to its `InFlight`, or
    /// given back once the message is handled without one.
    charge: Option<Charge>,
}

/// Creates a stream's handle and starts its task. The task serves the stream's queue at
/// once and rebuilds the dedup state from the stored messages (see [`recent_msg_ids`], off
/// the async threads) only when the first publish with a `Nats-Msg-Id` or
/// `Nats-Expected-Last-Msg-Id` comes (it and those behind it wait), so a retry with a known
/// `Nats-Msg-Id` is still recognised and a stream whose publishers send no ids never reads
/// its window back. The stream's ingest budget is part of
/// `all_streams` (see [`all_streams_budget`]).
pub(crate) fn start(
    name: String,
    config: StreamConfig,
    created_ns: i64,
    store: Store,
    server: Weak<Account>,
    domain: Option<String>,
    all_streams: Arc<Budget>,
) -> Arc<Stream> {
    let budget = Budget::new(INGEST_MAX_BYTES, INGEST_MAX_MSGS)
        .stall_at(INGEST_STALL_BYTES, INGEST_STALL_MSGS)
        .within(all_streams);
    let stream = Arc::new(Stream {
        name,
        config: RwLock::new(Arc::new(config)),
        created_ns,
        queue: IngestQueue {
            items: Mutex::new(VecDeque::new()),
            budget: Arc::new(budget),
            ready: Notify::new(),
        },
        consumers: RwLock::new(HashMap::new()),
        appended: tokio::sync::watch::Sender::new(0),
        sources: std::sync::Mutex::new(Vec::new()),
        resync: tokio::sync::watch::Sender::new(0),
        server: server.clone(),
    });
    // Queued before the task's first append (the store applies operations in order); an
    // error (the stream is gone) shows on that append.
    drop(store.set_retain(&stream.name, retain_of(&stream.config())));
    drop(store.set_compression(&stream.name, stream.config().compressed()));
    let runner = Runner {
        ack: PubAckEncoder::new(&stream.name, domain.as_deref()),
        ack_buf: Vec::new(),
        stream: stream.clone(),
        store,
        server,
        ids: MsgIds::default(),
        last_msg_id: None,
        rebuild_pending: true,
        stored_since_start: false,
        in_flight: VecDeque::new(),
        pending: Vec::new(),
        groups: VecDeque::new(),
        predictions_broken: false,
        source_last: HashMap::new(),
        republisher: None,
        subject_transform: None,
        charge: None,
    };
    tokio::spawn(runner.run());
    stream
}

/// The limits the store keeps the stream within after every append (see the module
/// documentation): those nats-server applies by removing old messages.
pub(crate) fn retain_of(cfg: &StreamConfig) -> Retain {
    let positive = |n: i64| u64::try_from(n).ok().filter(|&n| n > 0);
    let discard_old = cfg.discard == Discard::Old;
    Retain {
        max_msgs: positive(cfg.max_msgs).filter(|_| discard_old),
        max_bytes: positive(cfg.max_bytes).filter(|_| discard_old),
        max_msgs_per_subject: positive(cfg.max_msgs_per_subject)
            .filter(|_| discard_old || !cfg.discard_new_per_subject),
    }
}

/// What [`recent_msg_ids`] read back: the ids within the duplicate window (oldest first,
/// with their sequence and time) and the id of the newest message.
type RecentIds = (Vec<(String, u64, i64)>, Option<String>);

/// The `Nats-Msg-Id`s stored within the stream's duplicate window (oldest first, with their
/// sequence and time), and the id of the newest message, read back from the store.
fn recent_msg_ids(store: &Store, stream: &Stream) -> RecentIds {
    let cfg = stream.config();
    let Ok(Some(state)) = store.stream_state(&stream.name) else {
        return (Vec::new(), None);
    };
    if state.msgs == 0 {
        return (Vec::new(), None);
    }
    let cutoff = now_ns() - cfg.duplicate_window;
    let last_msg_id = store
        .get(&stream.name, state.last_seq)
        .ok()
        .flatten()
        .and_then(|m| m.headers)
        .and_then(|h| headers::get_str(&h, "Nats-Msg-Id").map(str::to_string));
    // Step back in chunks until a chunk starts before the window.
    let chunk = 1024u64;
    let mut from = state
        .last_seq
        .saturating_sub(chunk - 1)
        .max(state.first_seq);
    loop {
        let first_in_chunk = store
            .read_range(&stream.name, from, 1, u64::MAX)
            .ok()
            .and_then(|v| v.into_iter().next());
        if from <= state.first_seq || first_in_chunk.is_none_or(|m| m.ts_ns < cutoff) {
            break;
        }
        from = from.saturating_sub(chunk).max(state.first_seq);
    }
    let mut ids = Vec::new();
    let mut seq = from;
    while seq <= state.last_seq {
        let Ok(batch) = store.read_range(&stream.name, seq, 1024, u64::MAX) else {
            break;
        };
        let Some(last) = batch.last() else {
            break;
        };
        seq = last.seq + 1;
        for m in batch {
            if m.ts_ns < cutoff {
                continue;
            }
            if let Some(id) = m
                .headers
                .as_deref()
                .and_then(|h| headers::get_str(h, "Nats-Msg-Id"))
            {
                ids.push((id.to_string(), m.seq, m.ts_ns));
            }
        }
    }
    (ids, last_msg_id)
}

impl Runner {
    /// Reads the dedup state back from the store, the first time only, and merges it. Appends
    /// made since the start carried no `Nats-Msg-Id` (one would have come here first), so the
    /// ids read back are all older than any the task stores from now on.
    async fn finish_rebuild(&mut self) {
        if !std::mem::take(&mut self.rebuild_pending) {
            return;
        }
        let (store, stream) = (self.store.clone(), self.stream.clone());
        match tokio::task::spawn_blocking(move || recent_msg_ids(&store, &stream)).await {
            Ok((recent, last_msg_id)) => {
                for (id, seq, ts) in recent {
                    let id = self.ids.key(&id);
                    self.ids.stored(id, seq, ts);
                }
                if !self.stored_since_start {
                    self.last_msg_id = last_msg_id.map(|id| self.ids.key(&id));
                }
            }
            Err(e) => {
                warn!(stream = %printable(&self.stream.name), error = %e, "dedup rebuild failed")
            }
        }
    }

    async fn run(mut self) {
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = self.stream.clone();
        // Messages taken from the queue, handled one by one in order.
        let mut taken = VecDeque::new();
        loop {
            if taken.is_empty() {
                // Everything taken so far is handled: if none of the stream's appends is
                // being committed, the gathered ones go now (the writer is idle for us).
                if self.groups.is_empty() {
                    self.submit_pending();
                }
                stream.queue.take_all(&mut taken);
                if taken.is_empty() {
                    self.submit_pending();
                }
            }
            let more = !taken.is_empty();
            tokio::select! {
                biased;
                result = self.next_done(more), if !self.in_flight.is_empty() => {
                    if let Some(done) = self.in_flight.pop_front() {
                        self.completed(done, result).await;
                    }
                }
                () = std::future::ready(()), if !taken.is_empty() => match taken.pop_front() {
                    Some(Some(ingest)) => {
                        self.ingest(ingest).await;
                        // Handled without an append (refused, a duplicate): room again.
                        self.charge = None;
                    }
                    Some(None) => break,
                    None => {}
                },
                // A push between `take_all` and this wait leaves a permit: no wakeup is lost.
                () = stream.queue.ready.notified(), if taken.is_empty() => {}
                _ = expiry.tick() => self.expire().await,
            }
        }
        self.drain().await;
    }

    /// Waits for every append in flight and reports it.
    async fn drain(&mut self) {
        while !self.in_flight.is_empty() {
            let result = self.next_done(false).await;
            let Some(done) = self.in_flight.pop_front() else {
                break;
            };
            self.completed(done, result).await;
        }
    }

    /// Hands the gathered published appends to the store as one group.
    fn submit_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.pending);
        let remaining = items.len();
        self.groups.push_back(Group {
            fut: Box::pin(self.store.append_each(&self.stream.name, items)),
            outcomes: None,
            remaining,
        });
    }

    /// The outcome of the oldest append in flight (pending forever when none is). Cancel
    /// safe: nothing changes until the store's answer is there. `more`: messages taken from
    /// the queue are still to be handled; a group still being gathered waits for them (they
    /// join it) rather than going to the store with its first message alone, which cost a
    /// commit (an fsync) for one message at every restart of the pipeline.
    async fn next_done(&mut self, more: bool) -> Result<Appended, StoreError> {
        match self.in_flight.front_mut() {
            None => return std::future::pending().await,
            Some(InFlight { fut: Some(f), .. }) => return f.await,
            Some(InFlight { fut: None, .. }) => {}
        }
        if self.groups.is_empty() {
            // Its group is still being gathered.
            if more {
                return std::future::pending().await;
            }
            self.submit_pending();
        }
        let Some(group) = self.groups.front_mut() else {
            return Err(StoreError::Corrupt(
                "internal: append without a group".into(),
            ));
        };
        if group.outcomes.is_none() {
            let answer = (&mut group.fut).await;
            // The whole group is durable: readers of `appended` learn its newest message
            // once (a watch send wakes 8 lists; once per message was a cost of its own).
            let newest = answer.as_ref().ok().and_then(|each| {
                each.iter()
                    .filter_map(|r| r.as_ref().ok().map(|a| a.seq))
                    .max()
            });
            if let Some(seq) = newest {
                self.stream.appended.send_replace(seq);
            }
            group.outcomes = Some(answer.map(Vec::into_iter));
        }
        let outcome = match group.outcomes.as_mut() {
            Some(Ok(each)) => each
                .next()
                .unwrap_or_else(|| Err(StoreError::Corrupt("internal: short group".into()))),
            Some(Err(e)) => Err(e.replicate()),
            None => Err(StoreError::Corrupt("internal: group unanswered".into())),
        };
        group.remaining = group.remaining.saturating_sub(1);
        if group.remaining == 0 {
            self.groups.pop_front();
        }
        outcome
    }

    fn reply(&self, reply: Option<&ReplyTo>, body: &[u8]) {
        let (Some(reply), Some(server)) = (reply, self.server.upgrade()) else {
            return;
        };
        server.answer(reply, None, body);
    }

    fn reply_error(&self, reply: Option<&ReplyTo>, err: &ApiError) {
        if reply.is_none() {
            return;
        }
        let body = serde_json::to_vec(&PubAck {
            error: Some(Cow::Borrowed(err)),
            ..PubAck::default()
        })
        .unwrap_or_default();
        self.reply(reply, &body);
    }

    fn reply_ack(&mut self, reply: Option<&ReplyTo>, seq: u64, duplicate: bool) {
        let (Some(reply), Some(server)) = (reply, self.server.upgrade()) else {
            return;
        };
        self.ack.encode(seq, duplicate, &mut self.ack_buf);
        server.answer(reply, None, &self.ack_buf);
    }

    async fn ingest(&mut self, mut m: Ingest) {
        self.charge = m.charge.take();
        match m.origin.clone() {
            Origin::Publish => self.ingest_published(m).await,
            Origin::SourceReset { iname, last } => {
                // What is in flight is newer than what the store showed the source task.
                let entry = self.source_last.entry(iname).or_insert(last);
                *entry = (*entry).max(last);
            }
            Origin::Source { iname, seq } => self.ingest_sourced(m, iname, seq),
            Origin::Mirror { seq, ts_ns } => self.ingest_mirrored(m, seq, ts_ns),
        }
    }

    /// Appends a message copied from a source, unless that source's message `seq` is already
    /// stored or in flight (a consumer recreated from an older position sends it again).
    fn ingest_sourced(&mut self, m: Ingest, iname: Arc<str>, seq: u64) {
        if self
            .source_last
            .get(&iname)
            .is_some_and(|&last| seq <= last)
        {
            return;
        }
        if self.stream.shared_config().sealed {
            return;
        }
        self.source_last.insert(iname.clone(), seq);
        let new = NewMessage {
            subject: m.subject,
            headers: m.headers,
            payload: m.payload,
            ts_ns: now_ns(),
        };
        self.push_copied(new, None, Some((iname, seq)));
    }

    /// The stream's last sequence once every append in flight is stored (the store's last
    /// sequence when none is).
    fn predicted_last_seq(&self) -> u64 {
        match self.in_flight.back() {
            Some(newest) => newest.predicted_seq,
            None => self
                .store
                .stream_state(&self.stream.name)
                .ok()
                .flatten()
                .map_or(0, |s| s.last_seq),
        }
    }

    /// Appends a message copied from the mirrored stream at its origin sequence: a sequence
    /// already taken is a duplicate, a gap (messages removed from the origin) is skipped.
    fn ingest_mirrored(&mut self, m: Ingest, seq: u64, ts_ns: i64) {
        if self.in_flight.is_empty() {
            self.predictions_broken = false;
        }
        let last = self.predicted_last_seq();
        if seq <= last || self.predictions_broken {
            // A failed append before this one: the source task starts over from the store.
            if self.predictions_broken {
                self.stream.resync.send_modify(|n| *n += 1);
            }
            return;
        }
        self.submit_pending();
        if seq > last + 1 {
            self.in_flight.push_back(InFlight {
                fut: Some(Box::pin(self.store.skip_many(
                    &self.stream.name,
                    seq - 1 - last,
                    ts_ns,
                ))),
                reply: None,
                subject: String::new(),
                msg_id: None,
                rollup: None,
                body: None,
                predicted_seq: seq - 1,
                source: None,
                gap: true,
                _charge: None,
            });
        }
        let new = NewMessage {
            subject: m.subject,
            headers: m.headers,
            payload: m.payload,
            ts_ns,
        };
        let body = self.body_to_keep(&new);
        self.in_flight.push_back(InFlight {
            fut: Some(Box::pin(self.store.append_after(
                &self.stream.name,
                new.clone(),
                seq - 1,
            ))),
            reply: None,
            subject: new.subject,
            msg_id: None,
            rollup: None,
            body,
            predicted_seq: seq,
            source: None,
            gap: false,
            _charge: self.charge.take(),
        });
    }

    /// Queues the append of a copied message (sources).
    fn push_copied(
        &mut self,
        new: NewMessage,
        reply: Option<ReplyTo>,
        source: Option<(Arc<str>, u64)>,
    ) {
        if self.in_flight.is_empty() {
            self.predictions_broken = false;
        }
        let predicted_seq = self.predicted_last_seq() + 1;
        let body = self.body_to_keep(&new);
        let subject = new.subject.clone();
        self.submit_pending();
        // Behind other appends a copy is stored only if they all were: were one lost and this
        // one kept, the source would resume after this one and the lost one never come back.
        let fut: AppendFuture = if super::retention::no_interest(&*self.stream, &new.subject) {
            Box::pin(self.store.skip(&self.stream.name, new.ts_ns))
        } else if self.in_flight.is_empty() {
            Box::pin(self.store.append(&self.stream.name, new))
        } else {
            Box::pin(
                self.store
                    .append_after(&self.stream.name, new, predicted_seq - 1),
            )
        };
        self.in_flight.push_back(InFlight {
            fut: Some(fut),
            reply,
            subject,
            msg_id: None,
            rollup: None,
            body,
            predicted_seq,
            source,
            gap: false,
            _charge: self.charge.take(),
        });
    }

    async fn ingest_published(&mut self, mut m: Ingest) {
        let cfg = self.stream.shared_config();
        let reply = m.reply.as_ref().filter(|_| !cfg.no_ack);
        if cfg.sealed {
            return self.reply_error(reply, &ApiError::sealed());
        }
        if let Some(t) = &cfg.subject_transform {
            if let Some(subject) = self.transform_subject(t, &m.subject) {
                m.subject = subject;
            }
        }
        // max_msg_size applies to headers and payload, as on nats-server; max_bytes to the
        // message as the store accounts it (nats-server's formula, see leaf_store::msg_size).
        let headers_len = m.headers.as_ref().map_or(0, Bytes::len);
        if cfg.max_msg_size >= 0 && (headers_len + m.payload.len()) as u64 > cfg.max_msg_size as u64
        {
            return self.reply_error(reply, &ApiError::message_too_large());
        }
        let size = leaf_store::msg_size(&m.subject, headers_len, m.payload.len());
        let hdr = PublishHeaders::parse(m.headers.as_deref().unwrap_or_default());
        if hdr.msg_id.is_some() || hdr.expected_last_msg_id.is_some() {
            self.finish_rebuild().await;
        }
        let msg_id = hdr
            .msg_id
            .filter(|s| !s.is_empty())
            .map(|s| self.ids.key(s));
        if let Some(expected) = hdr.expected_stream {
            if expected != self.stream.name {
                return self.reply_error(reply, &ApiError::expected_stream_mismatch());
            }
        }
        let expect_last_seq = hdr.expected_last_seq;
        let expect_subject_seq = hdr.expected_subject_seq;
        let expect_msg_id = hdr.expected_last_msg_id;
        let rollup = match hdr.rollup {
            None => None,
            Some(kind) if !cfg.allow_rollup_hdrs => {
                let _ = kind;
                return self.reply_error(reply, &JsError::RollupNotPermitted.err());
            }
            Some(k) if k.eq_ignore_ascii_case("sub") => Some(Rollup::Subject),
            Some(k) if k.eq_ignore_ascii_case("all") => Some(Rollup::All),
            Some(_) => {
                return self.reply_error(
                    reply,
                    &JsError::StreamRollupFailed.with("rollup value invalid"),
                );
            }
        };
        if self.in_flight.is_empty() {
            self.predictions_broken = false;
        }
        // `Nats-Expected-Last-Msg-Id` is checked against the newest append in flight, and the
        // append is made conditional on its predecessor's predicted sequence: a chain of such
        // publishes is pipelined instead of waiting for one commit each.
        let needs_exact = expect_last_seq.is_some()
            || expect_subject_seq.is_some()
            || (expect_msg_id.is_some() && self.predictions_broken)
            || cfg.discard == Discard::New
            || msg_id.as_ref().is_some_and(|id| self.ids.is_in_flight(id));
        if needs_exact {
            self.drain().await;
        }
        if let Some(id) = &msg_id {
            if let Some(seq) = self.ids.stored_since(id, now_ns() - cfg.duplicate_window) {
                return self.reply_ack(reply, seq, true);
            }
        }
        // The stream's state (a lookup in the store's shared cache) only where it is needed:
        // not for the usual publish while others are in flight.
        let state = if expect_last_seq.is_some()
            || cfg.discard == Discard::New
            || self.in_flight.is_empty()
        {
            self.store.stream_state(&self.stream.name).ok().flatten()
        } else {
            None
        };
        if let Some(v) = expect_last_seq {
            let last = state.map_or(0, |s| s.last_seq);
            if v.parse::<u64>().ok() != Some(last) {
                return self.reply_error(reply, &ApiError::wrong_last_sequence(last));
            }
        }
        if let Some(v) = expect_subject_seq {
            let filter = hdr.expected_subject_seq_subject.unwrap_or(&m.subject);
            let last = self
                .store
                .subject_state(&self.stream.name, filter)
                .ok()
                .flatten()
                .map_or(0, |s| s.last_seq);
            if v.parse::<u64>().ok() != Some(last) {
                return self.reply_error(reply, &ApiError::wrong_last_sequence(last));
            }
        }
        let predicted_last_seq = match self.in_flight.back() {
            Some(newest) => newest.predicted_seq,
            None => state.map_or(0, |s| s.last_seq),
        };
        if let Some(v) = expect_msg_id {
            let last = match self.in_flight.back() {
                Some(newest) => newest.msg_id.as_ref().map(MsgId::as_str),
                None => self.last_msg_id.as_ref().map(MsgId::as_str),
            };
            if last != Some(v) {
                let last = last.unwrap_or_default().to_string();
                return self.reply_error(reply, &ApiError::wrong_last_msg_id(&last));
            }
        }
        if cfg.discard == Discard::New {
            if let Some(s) = state {
                let too_many = cfg.max_msgs > 0 && s.msgs >= cfg.max_msgs as u64;
                let too_big = cfg.max_bytes > 0 && s.bytes + size > cfg.max_bytes as u64;
                let per_subject = cfg.discard_new_per_subject
                    && cfg.max_msgs_per_subject > 0
                    && self
                        .store
                        .subject_state(&self.stream.name, &m.subject)
                        .ok()
                        .flatten()
                        .is_some_and(|ss| ss.msgs >= cfg.max_msgs_per_subject as u64);
                if too_many || too_big || per_subject {
                    let text = if too_big {
                        "maximum bytes exceeded"
                    } else if per_subject {
                        "maximum messages per subject exceeded"
                    } else {
                        "maximum messages exceeded"
                    };
                    return self.reply_error(reply, &ApiError::store_failed(text));
                }
            }
        }
        let chained = expect_msg_id.is_some();
        let new = NewMessage {
            subject: m.subject.clone(),
            headers: m.headers,
            payload: m.payload,
            ts_ns: now_ns(),
        };
        let body = self.body_to_keep(&new);
        // Interest retention: a message nobody is interested in only takes its sequence.
        // A chained message depends on its predecessor: if that one fails, the store
        // refuses this one too.
        // Appends join the group being gathered (each keeps its own outcome, see
        // `Store::append_each`).
        let fut: Option<AppendFuture> =
            if super::retention::no_interest(&*self.stream, &new.subject) {
                self.submit_pending();
                Some(Box::pin(self.store.skip(&self.stream.name, new.ts_ns)))
            } else {
                let after = (chained && !self.in_flight.is_empty()).then_some(predicted_last_seq);
                self.pending.push((new, after));
                None
            };
        if let Some(id) = &msg_id {
            self.ids.sent(id);
        }
        self.in_flight.push_back(InFlight {
            fut,
            reply: m.reply.filter(|_| !cfg.no_ack),
            subject: m.subject,
            msg_id,
            rollup,
            body,
            predicted_seq: predicted_last_seq + 1,
            source: None,
            gap: false,
            _charge: self.charge.take(),
        });
        if self.pending.len() >= GROUP_MAX {
            self.submit_pending();
        }
    }

    /// Reports one finished append and applies the limits it may have crossed.
    async fn completed(&mut self, done: InFlight, result: Result<Appended, StoreError>) {
        if let Some(id) = &done.msg_id {
            self.ids.landed(id);
        }
        let reply = done.reply.as_ref();
        if result.is_err() {
            if let Some((iname, seq)) = &done.source {
                // Accept it again when the source task sends it again (copies after it in
                // flight fail too: their appends were conditional on this one).
                let last = self.source_last.entry(iname.clone()).or_insert(seq - 1);
                *last = (*last).min(seq - 1);
                self.stream.resync.send_modify(|n| *n += 1);
            } else if self.stream.shared_config().mirror.is_some() {
                self.stream.resync.send_modify(|n| *n += 1);
            }
        }
        let appended = match result {
            Ok(a) if done.gap => {
                self.stream.appended.send_replace(a.seq);
                return;
            }
            Ok(a) => a,
            Err(StoreError::LastSeqMismatch { .. }) => {
                // A conditional append whose predecessor in flight was not stored.
                self.predictions_broken = true;
                let last = self.last_msg_id.as_ref().map_or("", MsgId::as_str);
                return self.reply_error(reply, &ApiError::wrong_last_msg_id(last));
            }
            Err(e) => {
                warn!(stream = %printable(&self.stream.name), error = %e, "append failed");
                self.predictions_broken = true;
                let err = match e {
                    StoreError::InsufficientResources(_) => ApiError::insufficient_resources(),
                    other => ApiError::store_failed(&other.to_string()),
                };
                return self.reply_error(reply, &err);
            }
        };
        self.stored_since_start = true;
        if let Some(id) = done.msg_id {
            self.ids.stored(id.clone(), appended.seq, appended.ts_ns);
            self.last_msg_id = Some(id);
        } else {
            self.last_msg_id = None;
        }
        // Consumers first: a pull request sent after the PubAck finds the message counted
        // (and what the stream's limits removed in the same commit gone).
        if done.fut.is_some() {
            self.stream.consumers_appended(appended.seq, &done.subject);
        } else {
            // A member of a group: `appended` was set once for the group (`next_done`).
            self.stream.tell_consumers(appended.seq, &done.subject);
        }
        if appended.trimmed > 0 {
            self.stream.consumers_recount();
        }
        if let Some(rollup) = done.rollup {
            self.roll_up(&done.subject, appended.seq, rollup).await;
        }
        if let Some((headers, payload)) = &done.body {
            self.republish(&done.subject, &appended, headers.as_deref(), payload);
        }
        self.reply_ack(reply, appended.seq, false);
    }

    /// `subject` as the stream's `subject_transform` stores it (`None`: unchanged).
    fn transform_subject(
        &mut self,
        config: &SubjectTransformConfig,
        subject: &str,
    ) -> Option<String> {
        let current = self
            .subject_transform
            .as_ref()
            .is_some_and(|(c, _)| c == config);
        if !current {
            let compiled = Transform::new(&config.src, &config.dest).ok()?;
            self.subject_transform = Some((config.clone(), compiled));
        }
        self.subject_transform.as_ref()?.1.apply(subject)
    }

    /// A message's headers and payload, when the stream republishes what it stores.
    fn body_to_keep(&self, new: &NewMessage) -> Option<Body> {
        self.stream
            .shared_config()
            .republish
            .is_some()
            .then(|| (new.headers.clone(), new.payload.clone()))
    }

    /// Publishes the copy of a stored message the stream's `republish` asks for, if any.
    fn republish(
        &mut self,
        subject: &str,
        appended: &Appended,
        headers: Option<&[u8]>,
        payload: &Bytes,
    ) {
        let cfg = self.stream.shared_config();
        let Some(rp) = &cfg.republish else {
            return;
        };
        if !self.republisher.as_ref().is_some_and(|r| r.is_for(rp)) {
            self.republisher = Republisher::new(rp);
        }
        let (Some(republisher), Some(server)) = (&self.republisher, self.server.upgrade()) else {
            return;
        };
        let stored = Stored {
            stream: &self.stream.name,
            subject,
            seq: appended.seq,
            prev_in_subject: appended.prev_in_subject,
            headers,
            payload,
        };
        if let Some(copy) = republisher.copy(&stored) {
            server.publish(&Msg {
                subject: copy.subject.as_bytes(),
                reply: None,
                headers: Some(&copy.headers),
                payload: &copy.payload,
            });
        }
    }

    /// Removes what the rollup message `seq` replaces (its subject's older messages, or all
    /// older messages), waiting for the store: the publisher gets its PubAck only after it,
    /// so nobody reads a replaced message once the rollup is acknowledged (a KV purge is
    /// followed at once by a history read, for example).
    async fn roll_up(&mut self, subject: &str, seq: u64, rollup: Rollup) {
        let req = PurgeRequest {
            filter: match rollup {
                Rollup::All => None,
                Rollup::Subject => Some(subject.to_string()),
            },
            up_to_seq: Some(seq),
            keep: None,
        };
        self.submit_pending();
        match self.store.purge(&self.stream.name, req).await {
            Ok(n) if n > 0 => self.stream.consumers_recount(),
            Ok(_) => {}
            Err(e) => {
                warn!(stream = %printable(&self.stream.name), error = %e, "rollup purge failed")
            }
        }
    }

    /// Removes messages older than `max_age` and forgets expired message ids.
    async fn expire(&mut self) {
        let cfg = self.stream.shared_config();
        let now = now_ns();
        self.ids.expire(now - cfg.duplicate_window);
        if cfg.max_age <= 0 {
            return;
        }
        let cutoff = now - cfg.max_age;
        let Ok(Some(state)) = self.store.stream_state(&self.stream.name) else {
            return;
        };
        if state.msgs == 0 || state.first_ts_ns >= cutoff {
            return;
        }
        let mut seq = state.first_seq;
        let mut up_to = None;
        'scan: loop {
            let Ok(batch) = self.store.read_range(&self.stream.name, seq, 256, u64::MAX) else {
                break;
            };
            let Some(last) = batch.last().map(|m| m.seq) else {
                break;
            };
            for m in &batch {
                if m.ts_ns >= cutoff {
                    up_to = Some(m.seq);
                    break 'scan;
                }
            }
            up_to = Some(last + 1);
            seq = last + 1;
        }
        if let Some(up_to) = up_to {
            let req = PurgeRequest {
                filter: None,
                up_to_seq: Some(up_to),
                keep: None,
            };
            self.submit_pending();
            match self.store.purge(&self.stream.name, req).await {
                Ok(n) => {
                    debug!(stream = %printable(&self.stream.name), expired = n, "max_age applied");
                    self.stream.consumers_recount();
                }
                Err(e) => {
                    warn!(stream = %printable(&self.stream.name), error = %e, "expiry failed")
                }
            }
        }
    }
}
