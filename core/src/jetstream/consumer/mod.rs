//! Consumers: one task per consumer owns its state and serves its pull requests
//! (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`), its acks (`$JS.ACK.<stream>.<consumer>.…`),
//! its flow control answers and its info requests, in arrival order.
//!
//! A consumer with a `deliver_subject` is a push consumer: the same task, state, acks,
//! redeliveries and persistence, but messages are sent to `deliver_subject` without pull
//! requests (see [`push`] for interest, flow control and heartbeats).
//!
//! * **Delivery.** A pull request waits in the consumer's queue until messages are there, its
//!   `expires` passes (`408 Request Timeout`) or, with `no_wait`, nothing more is available
//!   (`404 No Messages` if nothing was delivered, else `408`). Messages go to the request's
//!   reply subject with the reply subject
//!   `$JS.ACK.<stream>.<consumer>.<delivery count>.<stream seq>.<consumer seq>.<ts>.<pending>`.
//!   The stream wakes its consumers after each stored message ([`Cmd::Appended`]).
//! * **Acks.** `+ACK` (or empty), `-NAK` (optionally `-NAK {"delay": ns}`), `+WPI` (restarts
//!   `ack_wait`), `+TERM`, `+NXT` (ack, then a pull request). A message not acknowledged
//!   within `ack_wait` is redelivered, at most `max_deliver` times in total. The bookkeeping
//!   (pending acks with delivery counts and deadlines, ack floor, redelivery queue,
//!   `max_ack_pending`) is a pure state machine, [`ack_state`], which this task feeds with
//!   events and the time and asks what is due; it is property-tested against a model.
//! * **Persistence.** A durable consumer's configuration and state (delivered sequences,
//!   ack floor, outstanding acks with their delivery counts) are written with
//!   [`Store::put_consumer`] after every change, with at most one write in flight: the changes
//!   made while a write is in flight go into the next one, so writes batch under load and
//!   share the store's group commits. A crash loses at most the changes of the writes not yet
//!   committed: acks in them are lost (those messages are delivered again) and deliveries in
//!   them are repeated, i.e. delivery is at-least-once, as with nats-server. An ack sent with a
//!   reply subject (`double_ack`) is answered only once it is durable. Ephemeral consumers are
//!   not persisted. A replicated consumer's task (on its group's leader in hubd) puts its
//!   records through a [`RecordSink`] instead (`start_with_sink`: the group's proposal, durable
//!   once committed on a quorum), under the same rules.
//! * **Retention.** On an interest or workqueue stream the messages an ack (or, with ack
//!   policy `none`, a delivery) releases are collected and handed to the store in one
//!   [`Store::remove_msgs`] right before the consumer's next state write (ephemerals: as their
//!   own write), so the removal is durable whenever the ack is, and an ack sent as a request is
//!   answered once both are (see [`super::retention`] and `retain.rs`).

mod ack_state;
mod push;
mod retain;

pub(crate) use retain::remote_views;

use leaf_proto::printable::printable;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

use self::ack_state::{AckState, Acked, Pending, Redelivery, Rules};
use super::config::consumer::{AckPolicy, ConsumerConfig, DeliverPolicy, DEFAULT_INACTIVE_NS};
use super::config::Retention;
use super::handle::{self, Cmd, ConsumerHandle, Lag};
use super::retention::{AckView, SharedView};
use super::stream::Stream;
use super::wire::{ConsumerInfo, SequenceInfo};
use crate::budget;
use crate::server::{Account, Msg, ReplyTo};
use leaf_proto::headers;
use leaf_proto::subject::subject_matches;
use leaf_proto::time::{now_ns, rfc3339};
use leaf_store::{Store, StoreError, StoredMessage};

/// The consumer's state: its ack state and where its delivery stands.
#[derive(Debug, Clone)]
struct State {
    /// Pending acks, ack floor, consumer sequence, redeliveries.
    ack: AckState,
    /// Next stream sequence to look at for new messages.
    next_sseq: u64,
    /// `last_per_subject` start: the sequences still to deliver, then where to resume.
    lps: Option<(VecDeque<u64>, u64)>,
    /// When the last message was delivered, ns (0: never).
    last_delivered_ns: i64,
    /// When the last ack arrived, ns (0: never).
    last_ack_ns: i64,
}

impl State {
    fn new(rules: Rules) -> Self {
        Self {
            ack: AckState::new(rules),
            next_sseq: 0,
            lps: None,
            last_delivered_ns: 0,
            last_ack_ns: 0,
        }
    }

    /// The state as it was persisted.
    fn restore(rules: Rules, s: Stored) -> Self {
        Self {
            ack: AckState::restore(rules, s.dseq, s.ack_floor, s.pending),
            next_sseq: s.next_sseq,
            lps: s.lps,
            last_delivered_ns: s.last_delivered_ns,
            last_ack_ns: s.last_ack_ns,
        }
    }

    /// What is persisted.
    fn stored(&self) -> Stored {
        Stored {
            dseq: self.ack.dseq(),
            next_sseq: self.next_sseq,
            ack_floor: self.ack.floor(),
            pending: self.ack.pending().clone(),
            lps: self.lps.clone(),
            last_delivered_ns: self.last_delivered_ns,
            last_ack_ns: self.last_ack_ns,
        }
    }

    /// The last stream sequence the consumer has passed (where the ack floor goes when nothing
    /// waits for an ack).
    fn passed(&self) -> u64 {
        let passed = self.next_sseq.saturating_sub(1);
        match &self.lps {
            Some((_, resume)) => passed.min(*resume),
            None => passed,
        }
    }
}

/// The persisted part of a consumer's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    /// Last consumer sequence handed out.
    dseq: u64,
    /// Next stream sequence to look at for new messages.
    next_sseq: u64,
    /// Ack floor: consumer and stream sequences.
    ack_floor: (u64, u64),
    /// Outstanding acks by stream sequence.
    pending: BTreeMap<u64, Pending>,
    /// `last_per_subject` start: the sequences still to deliver, then where to resume.
    lps: Option<(VecDeque<u64>, u64)>,
    /// When the last message was delivered, ns (0: never).
    last_delivered_ns: i64,
    /// When the last ack arrived, ns (0: never).
    last_ack_ns: i64,
}

/// What the store keeps for a durable consumer.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    config: ConsumerConfig,
    created_ns: i64,
    state: Stored,
}

/// A pull request waiting for messages.
struct Waiting {
    /// Where its messages go (only to the requester, when it may not publish there itself).
    reply: ReplyTo,
    /// Messages still wanted.
    batch: u64,
    /// Bytes still allowed (`None`: no limit).
    bytes: Option<u64>,
    no_wait: bool,
    expires: Option<Instant>,
    heartbeat: Option<Duration>,
    next_heartbeat: Option<Instant>,
    delivered: u64,
}

/// The body of a pull request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NextRequest {
    batch: i64,
    expires: i64,
    max_bytes: i64,
    no_wait: bool,
    idle_heartbeat: i64,
}

/// The 409 text of the pull requests waiting when the consumer is deleted or stopped.
const DELETED: &str = "Consumer Deleted";
/// The 409 text of the pull requests waiting when another member takes the consumer over.
const LEADERSHIP_CHANGE: &str = "Leadership Change";

/// A write of a consumer's state record: resolves once the record is durable.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Where a replicated durable consumer's task puts its state record instead of
/// [`Store::put_consumer`]: hubd's consumer group proposes it to the group, and the returned
/// future resolves once the proposal committed (a quorum fsynced it) and was applied, which
/// writes the record to every peer's store (see "Consumer groups" in
/// `hub/JETSTREAM-CLUSTER.md`). The task keeps its rules: at most one write in flight, AckAck
/// replies answered after the write holding them resolved.
pub trait RecordSink: Send + Sync {
    /// Puts `record`, the state record of `consumer` of `stream`.
    fn put(&self, stream: &str, consumer: &str, record: Vec<u8>) -> WriteFuture;

    /// Removes messages `seqs` of `stream` that acks released (interest or workqueue
    /// retention) from every copy: hubd proposes them to the stream's group (through its
    /// leader), and the future resolves once that committed. The task submits it before the
    /// record holding the acks, as it does with [`Store::remove_msgs`] on a single server.
    /// Removing a message already gone is no error.
    fn remove(&self, stream: &str, seqs: Vec<u64>) -> RemovalFuture;

    /// The configurations of the stream's replicated consumers the cluster assigned (this
    /// one included): one whose task does not run here and whose group applied no record
    /// here yet counts as needing every message its filters match. By default none.
    fn assigned(&self, stream: &str) -> Vec<ConsumerConfig> {
        let _ = stream;
        Vec::new()
    }
}

/// A removal of messages through a [`RecordSink`]: how many went, once committed.
pub type RemovalFuture = Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send>>;

/// The retention view of a consumer as its stored record `bytes` shows it (a replicated
/// consumer whose task runs on another member: see `retain.rs`); `None` when it does not
/// read.
pub(crate) fn view_of_record(bytes: &[u8]) -> Option<AckView> {
    let record: Record = serde_json::from_slice(bytes).ok()?;
    Some(AckView {
        filters: record.config.filters(),
        policy: record.config.ack_policy,
        floor: record.state.ack_floor.1,
        next: record.state.next_sseq,
        pending: record.state.pending.keys().copied().collect(),
    })
}

/// Creates a consumer (or resumes a stored one) and starts its task.
pub(crate) fn start(
    stream: &Arc<Stream>,
    store: Store,
    server: Weak<Account>,
    config: ConsumerConfig,
    created_ns: i64,
    stored: Option<Vec<u8>>,
) -> Result<Arc<ConsumerHandle>, String> {
    start_with_sink(stream, store, server, config, created_ns, stored, None)
}

/// [`start`], the state records going to `sink` instead of the store when given (a
/// replicated consumer on its group's leader).
pub(crate) fn start_with_sink(
    stream: &Arc<Stream>,
    store: Store,
    server: Weak<Account>,
    config: ConsumerConfig,
    created_ns: i64,
    stored: Option<Vec<u8>>,
    sink: Option<Arc<dyn RecordSink>>,
) -> Result<Arc<ConsumerHandle>, String> {
    let name = config
        .consumer_name()
        .map(str::to_string)
        .ok_or_else(|| "consumer without a name".to_string())?;
    let (tx, rx) = handle::consumer_channel();
    let lag = Arc::new(Lag::default());
    let view: SharedView = Arc::new(std::sync::Mutex::new(AckView::new(&config)));
    let handle = Arc::new(ConsumerHandle::new(
        name.clone(),
        config.clone(),
        view.clone(),
        tx,
        lag.clone(),
    ));
    let retention = stream.config().retention;
    let rules = Rules::of(&config);
    let mut task = Task {
        stream_name: stream.name.clone(),
        stream: Arc::downgrade(stream),
        name,
        durable: config.is_durable(),
        filters: config.filters(),
        config,
        created_ns,
        store,
        sink,
        server,
        state: State::new(rules),
        num_pending: 0,
        counted_upto: 0,
        waiting: VecDeque::new(),
        ack_check: None,
        last_request: Instant::now(),
        dirty: false,
        write: None,
        replies_dirty: Vec::new(),
        replies_in_flight: Vec::new(),
        push: None,
        ahead: None,
        view,
        retention,
        removals: Vec::new(),
        removals_in_flight: Vec::new(),
        reconcile_at: None,
        lag,
    };
    task.reset_push();
    match stored {
        Some(bytes) => {
            let record: Record = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            task.state = State::restore(Rules::of(&task.config), record.state);
            task.schedule_ack_check();
        }
        None => {
            task.select_start();
            task.dirty = task.durable;
        }
    }
    task.recount();
    task.publish_view();
    task.reconcile_group();
    tokio::spawn(task.run(rx));
    Ok(handle)
}

/// Reads the stored record of a consumer: its configuration and creation time.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<(ConsumerConfig, i64), String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok((record.config, record.created_ns))
}

/// The consumer's task state.
struct Task {
    stream_name: String,
    stream: Weak<Stream>,
    name: String,
    durable: bool,
    config: ConsumerConfig,
    filters: Vec<String>,
    created_ns: i64,
    store: Store,
    /// Where the state records go instead of `store` (a replicated consumer: see
    /// [`RecordSink`]).
    sink: Option<Arc<dyn RecordSink>>,
    server: Weak<Account>,
    state: State,
    /// Messages at or after `next_sseq` matching the filters (plus the `lps` list).
    num_pending: u64,
    /// Highest stream sequence `num_pending` accounts for.
    counted_upto: u64,
    waiting: VecDeque<Waiting>,
    /// When pending acks are next checked for expiry.
    ack_check: Option<Instant>,
    /// When the last pull request arrived (ephemerals' inactivity).
    last_request: Instant,
    /// State changed since the last write was issued.
    dirty: bool,
    write: Option<WriteFuture>,
    /// Ack replies waiting for the next write / the write in flight.
    replies_dirty: Vec<ReplyTo>,
    replies_in_flight: Vec<ReplyTo>,
    /// Push delivery state (`None`: a pull consumer).
    push: Option<push::PushState>,
    /// Messages read ahead of delivery.
    ahead: Option<ReadAhead>,
    /// This consumer's [`AckView`], kept current when the stream's retention is not `limits`.
    view: SharedView,
    /// The stream's retention (it cannot change).
    retention: Retention,
    /// Acknowledged messages to remove from the stream, handed to the store with the next
    /// write (before the consumer's own state).
    removals: Vec<u64>,
    /// The removals of the write in flight (a replicated consumer's: put back into
    /// `removals` when the write fails).
    removals_in_flight: Vec<u64>,
    /// When a replicated consumer of an interest stream next looks for messages every
    /// consumer is done with (see `retain.rs`).
    reconcile_at: Option<Instant>,
    /// How far behind the stream's notices the task is (shared with the handle).
    lag: Arc<Lag>,
}

/// Most messages read ahead at once.
const READ_AHEAD_MSGS: usize = 128;
/// Most bytes read ahead at once.
const READ_AHEAD_BYTES: u64 = 1024 * 1024;

/// Stored messages read ahead: every stored message with a sequence in `from..=upto` that
/// is still to be looked at (removals clear it through [`Cmd::Recount`]).
struct ReadAhead {
    from: u64,
    upto: u64,
    msgs: VecDeque<StoredMessage>,
}

/// Parses the tokens after `$JS.ACK.`: stream, consumer, delivery count, stream seq, consumer
/// seq (and timestamp, pending, which are not needed).
///
/// An ack reply that crossed a leafnode link to a server that does not take the original
/// subject back out of it (`$JS.ACK.…@<subject>`) is understood too.
pub(crate) fn parse_ack_subject(subject: &str) -> Option<(&str, &str, u64, u64)> {
    let subject = subject.split_once('@').map_or(subject, |(ack, _)| ack);
    let rest = subject.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    if tokens.len() != 7 {
        return None;
    }
    let (stream, consumer) = (*tokens.first()?, *tokens.get(1)?);
    let sseq = tokens.get(3)?.parse().ok()?;
    let dseq = tokens.get(4)?.parse().ok()?;
    Some((stream, consumer, sseq, dseq))
}

fn instant_after_ns(ns: i64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.max(0) as u64)
}

impl Task {
    async fn run(mut self, mut rx: budget::Receiver<Cmd>) {
        loop {
            self.maybe_write();
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                result = poll_write(&mut self.write), if self.write.is_some() => {
                    self.write = None;
                    if result.is_ok() {
                        self.removals_in_flight.clear();
                    }
                    if let Err(e) = result {
                        warn!(stream = %printable(&self.stream_name), consumer = %printable(&self.name), error = %e,
                              "consumer state write failed");
                        if self.sink.is_some() {
                            // Not committed by the group: nothing of it is durable, so the
                            // acks waiting on it are not answered yet; the state goes again,
                            // and so do its removals.
                            let removed = std::mem::take(&mut self.removals_in_flight);
                            self.removals.extend(removed);
                            let mut replies = std::mem::take(&mut self.replies_in_flight);
                            replies.append(&mut self.replies_dirty);
                            self.replies_dirty = replies;
                            self.dirty = true;
                            continue;
                        }
                    }
                    let replies = std::mem::take(&mut self.replies_in_flight);
                    for reply in replies {
                        self.answer(&reply, None, b"");
                    }
                }
                // A client's command's charge is given back once it is handled.
                cmd = rx.recv() => match cmd.map(|(cmd, _charge)| cmd) {
                    Some(Cmd::Stop(done)) => {
                        self.stopped(DELETED).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Cmd::Handover(done)) => {
                        self.stopped(LEADERSHIP_CHANGE).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd),
                    None => {
                        self.stopped(DELETED).await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    if self.timers() {
                        self.stopped(DELETED).await;
                        self.release().await;
                        return;
                    }
                }
            }
        }
    }

    /// Tells the waiting requests the consumer is gone here (`why`: the 409's text) and waits
    /// for the write in flight.
    async fn stopped(&mut self, why: &str) {
        for w in std::mem::take(&mut self.waiting) {
            self.status(&w.reply, 409, why, None);
        }
        if let Some(write) = self.write.take() {
            let _ = write.await;
        }
        self.flush_removals().await;
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Next { reply, payload } => self.next_request(reply, &payload),
            Cmd::Ack {
                sseq,
                dseq,
                body,
                reply,
            } => self.ack(sseq, dseq, &body, reply),
            Cmd::Appended { seq, subject } => {
                self.lag.queued.fetch_sub(1, Ordering::Relaxed);
                if seq > self.counted_upto {
                    self.counted_upto = seq;
                    let after_start = match &self.state.lps {
                        Some((_, resume)) => seq > *resume,
                        None => seq >= self.state.next_sseq,
                    };
                    if after_start && self.matches(&subject) {
                        self.num_pending += 1;
                    }
                }
                self.deliver();
            }
            Cmd::FlowControl { subject } => self.flow_control_answer(&subject),
            Cmd::Recount => {
                self.ahead = None;
                self.recount();
                self.deliver();
            }
            Cmd::CatchUp => {
                // Notices sent from now on are newer than the count.
                self.lag.catching_up.store(false, Ordering::Release);
                self.ahead = None;
                self.recount();
                self.deliver();
            }
            Cmd::Info(tx) => {
                let _ = tx.send(self.info());
            }
            Cmd::Update(config, tx) => {
                self.config = *config;
                self.filters = self.config.filters();
                self.state.ack.set_rules(Rules::of(&self.config));
                self.view_config();
                self.reset_push();
                self.dirty = self.durable;
                self.schedule_ack_check();
                let _ = tx.send(self.info());
                self.deliver();
            }
            Cmd::Stop(_) | Cmd::Handover(_) => {}
        }
    }

    /// Sets up push delivery for the current configuration (kept if the subject is the same).
    fn reset_push(&mut self) {
        match self
            .config
            .deliver_subject
            .clone()
            .filter(|s| !s.is_empty())
        {
            Some(subject) => {
                if self.push.as_ref().is_none_or(|p| p.subject() != subject) {
                    self.push = Some(push::PushState::new(subject));
                }
            }
            None => self.push = None,
        }
    }

    fn matches(&self, subject: &str) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| subject_matches(f.as_bytes(), subject.as_bytes()))
    }

    /// Publishes to the deliver subject (a push consumer's messages, flow control requests,
    /// heartbeats).
    fn publish(&self, subject: &str, reply: Option<&str>, headers: Option<&[u8]>, payload: &[u8]) {
        if let Some(server) = self.server.upgrade() {
            server.publish(&Msg {
                subject: subject.as_bytes(),
                reply: reply.map(str::as_bytes),
                headers,
                payload,
            });
        }
    }

    /// Answers a request (an ack's reply, a pull request's status) on `to`.
    fn answer(&self, to: &ReplyTo, headers: Option<&[u8]>, payload: &[u8]) {
        if let Some(server) = self.server.upgrade() {
            server.answer(to, headers, payload);
        }
    }

    /// Sends a stored message to the subscribers of `to` (a pull request's reply subject or a
    /// push consumer's deliver subject), as nats-server does: local subscribers see the
    /// message under its original `subject`; leafnode links get it under `to` (the subject the
    /// other side routes on) with the original subject appended to the ack reply
    /// (`$JS.ACK.…@<subject>`), which the receiving server turns back into the subject.
    fn publish_stored(
        &self,
        to: &ReplyTo,
        subject: &str,
        ack: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let local = Msg {
            subject: subject.as_bytes(),
            reply: Some(ack.as_bytes()),
            headers,
            payload,
        };
        server.answer_split(to, &local, || format!("{ack}@{subject}"));
    }

    /// Sends a status message (`NATS/1.0 <code> <text>`) to a request's reply subject.
    fn status(&self, reply: &ReplyTo, code: u16, text: &str, left: Option<(u64, u64)>) {
        let mut b = headers::Builder::new(Some((code, text)));
        if let Some((msgs, bytes)) = left {
            b = b
                .add("Nats-Pending-Messages", &msgs.to_string())
                .add("Nats-Pending-Bytes", &bytes.to_string());
        }
        let hdr = b.finish();
        self.answer(reply, Some(&hdr), b"");
    }

    fn has_interest(&self, subject: &str) -> bool {
        self.server
            .upgrade()
            .is_some_and(|s| s.has_interest(subject.as_bytes()))
    }

    /// Whether a pull request's messages would reach anybody.
    fn has_answer_interest(&self, to: &ReplyTo) -> bool {
        self.server
            .upgrade()
            .is_some_and(|s| s.has_answer_interest(to))
    }

    // ---- starting point and counting ----

    fn stream_bounds(&self) -> (u64, u64) {
        match self.store.stream_state(&self.stream_name) {
            Ok(Some(s)) => (s.first_seq.max(1), s.last_seq),
            _ => (1, 0),
        }
    }

    /// The first stored message at or after `from` matching the filters.
    ///
    /// Without filters, or with a wildcard filter, messages are read ahead in batches
    /// ([`ReadAhead`]): one store read serves many deliveries. Literal filters use the
    /// store's subject index.
    fn next_matching(&mut self, from: u64) -> Option<StoredMessage> {
        let literal = !self.filters.is_empty()
            && self
                .filters
                .iter()
                .all(|f| !f.split('.').any(|t| t == "*" || t == ">"));
        if !literal {
            return self.next_read_ahead(from);
        }
        self.filters
            .iter()
            .filter_map(|f| {
                self.store
                    .next_by_subject(&self.stream_name, from, f)
                    .ok()
                    .flatten()
            })
            .min_by_key(|m| m.seq)
    }

    fn next_read_ahead(&mut self, mut from: u64) -> Option<StoredMessage> {
        loop {
            if let Some(ra) = &mut self.ahead {
                if ra.from <= from && from <= ra.upto {
                    while ra.msgs.front().is_some_and(|m| m.seq < from) {
                        ra.msgs.pop_front();
                    }
                    while let Some(m) = ra.msgs.pop_front() {
                        ra.from = m.seq + 1;
                        if self.filters.is_empty()
                            || self
                                .filters
                                .iter()
                                .any(|f| subject_matches(f.as_bytes(), m.subject.as_bytes()))
                        {
                            return Some(m);
                        }
                    }
                    from = ra.upto + 1;
                }
            }
            let batch = self
                .store
                .read_range(&self.stream_name, from, READ_AHEAD_MSGS, READ_AHEAD_BYTES)
                .ok()
                .filter(|b| !b.is_empty());
            let Some(batch) = batch else {
                self.ahead = None;
                return None;
            };
            let upto = batch.last().map_or(from, |m| m.seq);
            self.ahead = Some(ReadAhead {
                from,
                upto,
                msgs: batch.into(),
            });
        }
    }

    /// Calls `f` on every stored message at or after `from` (stops when `f` returns false).
    fn scan(&self, from: u64, mut f: impl FnMut(&StoredMessage) -> bool) {
        let mut seq = from;
        loop {
            let Ok(batch) = self.store.read_range(&self.stream_name, seq, 512, u64::MAX) else {
                return;
            };
            let Some(last) = batch.last().map(|m| m.seq) else {
                return;
            };
            for m in &batch {
                if !f(m) {
                    return;
                }
            }
            seq = last + 1;
        }
    }

    /// Chooses where a new consumer starts.
    fn select_start(&mut self) {
        let (first, last) = self.stream_bounds();
        let cfg = &self.config;
        self.state.next_sseq = match cfg.deliver_policy {
            DeliverPolicy::All => first,
            DeliverPolicy::New => last + 1,
            DeliverPolicy::Last => {
                let found = if self.filters.len() == 1 {
                    self.filters.first().and_then(|f| {
                        self.store
                            .last_by_subject(&self.stream_name, f)
                            .ok()
                            .flatten()
                    })
                } else if self.filters.is_empty() {
                    self.store.get(&self.stream_name, last).ok().flatten()
                } else {
                    let mut best = None;
                    self.scan(first, |m| {
                        if self.matches(&m.subject) {
                            best = Some(m.seq);
                        }
                        true
                    });
                    best.and_then(|s| self.store.get(&self.stream_name, s).ok().flatten())
                };
                found.map_or(last + 1, |m| m.seq)
            }
            DeliverPolicy::ByStartSequence => cfg.opt_start_seq.clamp(first, last + 1),
            DeliverPolicy::ByStartTime => {
                let start = cfg.start_time_ns().unwrap_or(0);
                let mut at = last + 1;
                self.scan(first, |m| {
                    if m.ts_ns >= start {
                        at = m.seq;
                        return false;
                    }
                    true
                });
                at
            }
            DeliverPolicy::LastPerSubject => {
                let mut last_by: HashMap<String, u64> = HashMap::new();
                self.scan(first, |m| {
                    if self.matches(&m.subject) {
                        last_by.insert(m.subject.clone(), m.seq);
                    }
                    true
                });
                let mut seqs: Vec<u64> = last_by.into_values().collect();
                seqs.sort_unstable();
                let next = seqs.first().copied().unwrap_or(last + 1);
                self.state.lps = Some((seqs.into(), last));
                next
            }
        };
        if self.state.lps.as_ref().is_some_and(|(s, _)| s.is_empty()) {
            self.state.lps = None;
        }
        if let Some((_, resume)) = &self.state.lps {
            // Nothing before the resume point is delivered except the list.
            self.state.next_sseq = self.state.next_sseq.min(*resume + 1);
        }
        // nats-server reports the floors just below the start.
        self.state.ack.start_at(self.state.next_sseq);
    }

    /// Counts the messages still to deliver.
    fn recount(&mut self) {
        let (first, last) = self.stream_bounds();
        self.counted_upto = last;
        let (from, extra) = match &self.state.lps {
            Some((seqs, resume)) => (*resume + 1, seqs.len() as u64),
            None => (self.state.next_sseq.max(first), 0),
        };
        let mut n = 0u64;
        if from <= last {
            if self.filters.is_empty() {
                if let Ok(Some(s)) = self.store.stream_state(&self.stream_name) {
                    if from <= s.first_seq {
                        n = s.msgs;
                    } else {
                        self.scan(from, |_| {
                            n += 1;
                            true
                        });
                    }
                }
            } else {
                self.scan(from, |m| {
                    if m.seq > last {
                        return false;
                    }
                    if self.matches(&m.subject) {
                        n += 1;
                    }
                    true
                });
            }
        }
        self.num_pending = n + extra;
    }

    // ---- pull requests ----

    fn next_request(&mut self, reply: ReplyTo, payload: &[u8]) {
        if self.push.is_some() {
            return self.status(&reply, 409, "Consumer is push based", None);
        }
        self.last_request = Instant::now();
        let body = payload.trim_ascii();
        let req = if body.is_empty() {
            NextRequest {
                batch: 1,
                ..NextRequest::default()
            }
        } else if body.first() == Some(&b'{') {
            match serde_json::from_slice::<NextRequest>(body) {
                Ok(r) => r,
                Err(e) => return self.status(&reply, 400, &format!("Bad Request - {e}"), None),
            }
        } else {
            NextRequest {
                batch: std::str::from_utf8(body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1),
                ..NextRequest::default()
            }
        };
        if req.idle_heartbeat > 0 && req.idle_heartbeat.saturating_mul(2) > req.expires {
            return self.status(&reply, 400, "Bad Request - heartbeat value too large", None);
        }
        let cfg = self.config.clone();
        if cfg.max_batch > 0 && req.batch > cfg.max_batch {
            let text = format!("Exceeded MaxRequestBatch of {}", cfg.max_batch);
            return self.status(&reply, 409, &text, None);
        }
        if cfg.max_expires > 0 && req.expires > cfg.max_expires {
            let text = format!(
                "Exceeded MaxRequestExpires of {:?}",
                Duration::from_nanos(cfg.max_expires as u64)
            );
            return self.status(&reply, 409, &text, None);
        }
        if cfg.max_bytes > 0 && req.max_bytes > cfg.max_bytes {
            let text = format!("Exceeded MaxRequestMaxBytes of {}", cfg.max_bytes);
            return self.status(&reply, 409, &text, None);
        }
        self.expire_requests();
        if self.waiting.len() as i64 >= cfg.max_waiting.max(1) {
            return self.status(&reply, 409, "Exceeded MaxWaiting", None);
        }
        if req.no_wait && req.expires <= 0 && self.available() == 0 {
            return self.status(&reply, 404, "No Messages", None);
        }
        let heartbeat =
            (req.idle_heartbeat > 0).then(|| Duration::from_nanos(req.idle_heartbeat as u64));
        self.waiting.push_back(Waiting {
            reply,
            batch: req.batch.max(1) as u64,
            bytes: (req.max_bytes > 0).then_some(req.max_bytes as u64),
            no_wait: req.no_wait,
            expires: (req.expires > 0).then(|| instant_after_ns(req.expires)),
            heartbeat,
            next_heartbeat: heartbeat.map(|h| Instant::now() + h),
            delivered: 0,
        });
        self.deliver();
    }

    /// Messages that could be delivered right now (an estimate for `no_wait`).
    fn available(&self) -> u64 {
        let new = if self.state.ack.blocks_new() {
            0
        } else {
            self.num_pending
        };
        new + self.state.ack.num_queued() as u64
    }

    /// Answers the requests whose time is up.
    fn expire_requests(&mut self) {
        let now = Instant::now();
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        for w in std::mem::take(&mut self.waiting) {
            if w.expires.is_some_and(|e| e <= now) {
                self.status(
                    &w.reply,
                    408,
                    "Request Timeout",
                    Some((w.batch, w.bytes.unwrap_or(0))),
                );
            } else {
                keep.push_back(w);
            }
        }
        self.waiting = keep;
    }

    // ---- delivery ----

    /// Delivers what is available to the waiting requests, round robin.
    fn deliver(&mut self) {
        if self.push.is_some() {
            return self.deliver_push();
        }
        while let Some(mut w) = self.waiting.pop_front() {
            if !self.has_answer_interest(&w.reply) {
                continue; // the requester is gone
            }
            let Some((msg, dc, redelivery)) = self.next_message() else {
                // Nothing more now: a no_wait request ends here.
                if w.no_wait {
                    if w.delivered == 0 && w.expires.is_none() {
                        self.status(&w.reply, 404, "No Messages", None);
                    } else if w.delivered > 0 {
                        self.status(
                            &w.reply,
                            408,
                            "Request Timeout",
                            Some((w.batch, w.bytes.unwrap_or(0))),
                        );
                    } else {
                        self.waiting.push_front(w);
                    }
                } else {
                    self.waiting.push_front(w);
                }
                // Give the other no_wait requests their answer too.
                self.finish_no_wait();
                return;
            };
            let size = (msg.subject.len()
                + msg.headers.as_ref().map_or(0, Bytes::len)
                + msg.payload.len()) as u64;
            if let Some(left) = w.bytes {
                if size > left {
                    self.status(
                        &w.reply,
                        409,
                        "Message Size Exceeds MaxBytes",
                        Some((w.batch, left)),
                    );
                    self.unget(msg.seq, redelivery);
                    continue;
                }
                w.bytes = Some(left - size);
            }
            self.send_message(&w.reply, &msg, dc, redelivery);
            w.delivered += 1;
            w.batch -= 1;
            if let Some(h) = w.heartbeat {
                w.next_heartbeat = Some(Instant::now() + h);
            }
            if w.batch > 0 && w.bytes != Some(0) {
                self.waiting.push_back(w);
            }
        }
    }

    /// Ends the `no_wait` requests that got something when nothing more is available.
    fn finish_no_wait(&mut self) {
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        for w in std::mem::take(&mut self.waiting) {
            if w.no_wait && w.delivered > 0 {
                self.status(
                    &w.reply,
                    408,
                    "Request Timeout",
                    Some((w.batch, w.bytes.unwrap_or(0))),
                );
            } else if w.no_wait && w.expires.is_none() {
                self.status(&w.reply, 404, "No Messages", None);
            } else {
                keep.push_back(w);
            }
        }
        self.waiting = keep;
    }

    /// The next message to deliver: a redelivery first, else a new one. Returns the message,
    /// its delivery count and whether it is a redelivery.
    fn next_message(&mut self) -> Option<(StoredMessage, u64, bool)> {
        while let Some(next) = self.state.ack.next_redelivery(self.state.passed()) {
            match next {
                // Delivered often enough: no longer waited for.
                Redelivery::Exhausted(forgot) => self.view_forget(forgot),
                Redelivery::Send { sseq, dc } => {
                    match self.store.get(&self.stream_name, sseq).ok().flatten() {
                        Some(m) => return Some((m, dc, true)),
                        // Gone: no longer waited for.
                        None => {
                            if let Some(forgot) = self.state.ack.removed(sseq, self.state.passed())
                            {
                                self.view_forget(forgot);
                            }
                        }
                    }
                }
            }
        }
        if self.state.ack.blocks_new() {
            return None;
        }
        loop {
            if let Some((seqs, resume)) = &mut self.state.lps {
                let Some(seq) = seqs.pop_front() else {
                    self.state.next_sseq = self.state.next_sseq.max(*resume + 1);
                    self.state.lps = None;
                    continue;
                };
                if let Some(m) = self.store.get(&self.stream_name, seq).ok().flatten() {
                    self.num_pending = self.num_pending.saturating_sub(1);
                    return Some((m, 1, false));
                }
                self.num_pending = self.num_pending.saturating_sub(1);
                continue;
            }
            let m = self.next_matching(self.state.next_sseq)?;
            self.state.next_sseq = m.seq + 1;
            if m.seq <= self.counted_upto {
                self.num_pending = self.num_pending.saturating_sub(1);
            } else {
                self.counted_upto = m.seq;
            }
            return Some((m, 1, false));
        }
    }

    /// Puts back a message taken by [`Task::next_message`] but not sent.
    fn unget(&mut self, seq: u64, redelivery: bool) {
        if redelivery {
            self.state.ack.unget_redelivery(seq);
        } else if self.state.lps.is_some() {
            if let Some((seqs, _)) = &mut self.state.lps {
                seqs.push_front(seq);
            }
            self.num_pending += 1;
        } else {
            self.state.next_sseq = seq;
            self.num_pending += 1;
        }
    }

    fn send_message(&mut self, reply: &ReplyTo, msg: &StoredMessage, dc: u64, redelivery: bool) {
        let now = now_ns();
        self.state.last_delivered_ns = now;
        let delivery = self.state.ack.delivered(msg.seq, dc, now);
        let dseq = delivery.dseq;
        if self.config.ack_policy != AckPolicy::None
            && (delivery.was_idle || self.ack_check.is_none())
        {
            self.schedule_ack_check();
        }
        let _ = redelivery;
        self.view_delivered(msg);
        let ack = format!(
            "$JS.ACK.{}.{}.{}.{}.{}.{}.{}",
            self.stream_name, self.name, dc, msg.seq, dseq, msg.ts_ns, self.num_pending
        );
        if self.config.headers_only {
            let hdr = headers::Builder::new(None)
                .add_block(msg.headers.as_deref().unwrap_or(b"NATS/1.0\r\n\r\n"))
                .add("Nats-Msg-Size", &msg.payload.len().to_string())
                .finish();
            self.publish_stored(reply, &msg.subject, &ack, Some(&hdr), b"");
        } else {
            self.publish_stored(
                reply,
                &msg.subject,
                &ack,
                msg.headers.as_deref(),
                &msg.payload,
            );
        }
        self.dirty = self.durable;
    }

    // ---- acks ----

    fn ack(&mut self, sseq: u64, dseq: u64, body: &[u8], reply: Option<ReplyTo>) {
        let body = body.trim_ascii();
        let (kind, rest) = match body.iter().position(|b| b.is_ascii_whitespace()) {
            Some(i) => (
                body.get(..i).unwrap_or_default(),
                body.get(i..).unwrap_or_default(),
            ),
            None => (body, &b""[..]),
        };
        // An ack of a delivery this task has not made: a previous leader of a replicated
        // consumer made it and its state record was never committed (or a delivery lost
        // with a restart). Neither taken nor answered: this task delivers the message
        // (again) and takes its ack then, so a successful double ack always means a
        // committed one.
        if sseq > self.state.passed() && !self.state.ack.pending().contains_key(&sseq) {
            return;
        }
        let now = now_ns();
        self.state.last_ack_ns = now;
        let floor = self.state.ack.floor().1;
        match kind {
            b"" | b"+ACK" => {
                self.acked(sseq, dseq);
                self.retire_acked(floor, sseq);
            }
            b"+NXT" => {
                self.acked(sseq, dseq);
                self.retire_acked(floor, sseq);
                if let Some(r) = reply {
                    self.next_request(r, rest);
                }
                self.dirty = self.durable;
                return;
            }
            b"-NAK" => {
                #[derive(Deserialize)]
                struct Delay {
                    delay: i64,
                }
                let delay = serde_json::from_slice::<Delay>(rest.trim_ascii())
                    .map(|d| d.delay)
                    .unwrap_or(0);
                // With a delay: due again `delay` from now.
                if self.state.ack.nak(sseq, delay, now) {
                    self.schedule_ack_check();
                }
            }
            b"+WPI" => self.state.ack.in_progress(sseq, now),
            b"+TERM" => {
                match self.state.ack.term(sseq, dseq, self.state.passed()) {
                    Acked::Forgot(forgot) => self.view_forget(forgot),
                    Acked::Upto(sseq) => self.view_acked_upto(sseq),
                    Acked::Nothing => {}
                }
                // Like an ack: the message leaves a workqueue or interest stream.
                self.retire_acked(floor, sseq);
            }
            _ => {}
        }
        self.dirty = self.durable;
        if let Some(r) = reply {
            if self.durable || !self.removals.is_empty() {
                self.replies_dirty.push(r);
            } else {
                self.answer(&r, None, b"");
            }
        }
        self.deliver();
    }

    fn acked(&mut self, sseq: u64, dseq: u64) {
        match self.state.ack.ack(sseq, dseq, self.state.passed()) {
            Acked::Forgot(forgot) => self.view_forget(forgot),
            Acked::Upto(sseq) => self.view_acked_upto(sseq),
            Acked::Nothing => {}
        }
    }

    // ---- timers ----

    /// Sets the next pending-ack check to the earliest deadline.
    fn schedule_ack_check(&mut self) {
        let now = now_ns();
        let earliest = self.state.ack.next_deadline();
        self.ack_check = earliest.map(|t| instant_after_ns(t - now));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.ack_check;
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        for w in &self.waiting {
            take(w.expires);
            take(w.next_heartbeat);
        }
        if !self.durable && self.waiting.is_empty() {
            take(Some(self.inactive_deadline()));
        }
        take(self.push_deadline());
        take(self.reconcile_at);
        d
    }

    fn inactive_deadline(&self) -> Instant {
        let ns = if self.config.inactive_threshold > 0 {
            self.config.inactive_threshold
        } else {
            DEFAULT_INACTIVE_NS
        };
        self.last_request + Duration::from_nanos(ns as u64)
    }

    /// Runs what is due. Returns true when an inactive ephemeral consumer deleted itself.
    fn timers(&mut self) -> bool {
        let now = Instant::now();
        if self.ack_check.is_some_and(|t| t <= now) {
            let passed = self.state.passed();
            // Delivered `max_deliver` times: no longer waited for.
            for forgot in self.state.ack.due(now_ns(), passed) {
                self.view_forget(forgot);
                self.dirty = self.durable;
            }
            self.schedule_ack_check();
        }
        self.expire_requests();
        if self.reconcile_at.is_some_and(|t| t <= now) {
            self.reconcile_group();
        }
        self.push_timers(now);
        let mut due_hb = Vec::new();
        for w in &mut self.waiting {
            if let (Some(t), Some(h)) = (w.next_heartbeat, w.heartbeat) {
                if t <= now {
                    w.next_heartbeat = Some(now + h);
                    due_hb.push(w.reply.clone());
                }
            }
        }
        for reply in due_hb {
            let hdr = headers::Builder::new(Some((100, "Idle Heartbeat")))
                .add("Nats-Last-Consumer", &self.state.ack.dseq().to_string())
                .add(
                    "Nats-Last-Stream",
                    &self.state.next_sseq.saturating_sub(1).to_string(),
                )
                .finish();
            self.answer(&reply, Some(&hdr), b"");
        }
        if !self.durable && self.waiting.is_empty() && self.inactive_deadline() <= now {
            if let Some(stream) = self.stream.upgrade() {
                stream.remove_consumer(&self.name);
            }
            return true;
        }
        self.deliver();
        false
    }

    // ---- persistence ----

    fn maybe_write(&mut self) {
        if self.write.is_some() {
            return;
        }
        // Removals go first: once the acks causing them are durable, so are they.
        let removal = self.submit_removals();
        if !self.dirty || !self.durable {
            if let Some(removal) = removal {
                self.write = Some(Box::pin(async move { removal.await.map(|_| ()) }));
                self.replies_in_flight = std::mem::take(&mut self.replies_dirty);
            }
            return;
        }
        self.dirty = false;
        let record = Record {
            config: self.config.clone(),
            created_ns: self.created_ns,
            state: self.state.stored(),
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let put: WriteFuture = match &self.sink {
            Some(sink) => sink.put(&self.stream_name, &self.name, bytes),
            None => Box::pin(
                self.store
                    .put_consumer(&self.stream_name, &self.name, bytes),
            ),
        };
        self.write = Some(match removal {
            Some(removal) => Box::pin(async move {
                removal.await?;
                put.await
            }),
            None => put,
        });
        self.replies_in_flight = std::mem::take(&mut self.replies_dirty);
    }

    // ---- info ----

    fn info(&self) -> ConsumerInfo {
        ConsumerInfo {
            num_waiting: self.waiting.len() as u64,
            num_pending: self.num_pending,
            push_bound: self.push_bound(),
            ..state_info(
                &self.stream_name,
                &self.name,
                self.created_ns,
                &self.config,
                &self.state,
            )
        }
    }
}

/// The info of a consumer in `state` (no waiting requests, no pending count, no push binding).
fn state_info(
    stream_name: &str,
    name: &str,
    created_ns: i64,
    config: &ConsumerConfig,
    state: &State,
) -> ConsumerInfo {
    let opt_ts = |ns: i64| (ns > 0).then(|| rfc3339(ns));
    let (floor_dseq, floor_sseq) = state.ack.floor();
    ConsumerInfo {
        stream_name: stream_name.to_owned(),
        name: name.to_owned(),
        created: rfc3339(created_ns),
        config: config.clone(),
        delivered: SequenceInfo {
            consumer_seq: state.ack.dseq(),
            stream_seq: state.next_sseq.saturating_sub(1),
            last_active: opt_ts(state.last_delivered_ns),
        },
        ack_floor: SequenceInfo {
            consumer_seq: floor_dseq,
            stream_seq: floor_sseq,
            last_active: opt_ts(state.last_ack_ns),
        },
        num_ack_pending: state.ack.num_ack_pending() as u64,
        num_redelivered: state.ack.num_redelivered() as u64,
        num_waiting: 0,
        num_pending: 0,
        cluster: None,
        push_bound: None,
        ts: Some(rfc3339(now_ns())),
    }
}

/// The info of a new consumer `config` (nothing delivered yet).
pub(crate) fn info_of_config(
    stream_name: &str,
    name: &str,
    created_ns: i64,
    config: &ConsumerConfig,
) -> ConsumerInfo {
    let state = State::new(Rules::of(config));
    state_info(stream_name, name, created_ns, config, &state)
}

/// The info of stored consumer `name` of stream `stream_name` from its state record (a
/// replicated consumer on a member that does not run its task: the record its group applied).
pub(crate) fn info_of_record(
    stream_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<ConsumerInfo, String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let state = State::restore(Rules::of(&record.config), record.state);
    Ok(state_info(
        stream_name,
        name,
        record.created_ns,
        &record.config,
        &state,
    ))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

async fn poll_write(write: &mut Option<WriteFuture>) -> Result<(), StoreError> {
    match write {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_parse() {
        assert_eq!(
            parse_ack_subject("$JS.ACK.S.C.2.10.12.1700000000000000000.5"),
            Some(("S", "C", 10, 12))
        );
        assert_eq!(
            parse_ack_subject("$JS.ACK.S.C.2.10.12.1700000000000000000.5@orders.new"),
            Some(("S", "C", 10, 12))
        );
        assert_eq!(parse_ack_subject("$JS.ACK.S.C.2.10"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.S.C.x.y.z.1.5"), None);
    }
}
