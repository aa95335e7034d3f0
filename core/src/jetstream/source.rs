//! Mirrors and sources: copying the messages of other streams into a stream, the way
//! nats-server 2.9 does it on the wire, so the origin (or the copy) may be nats-server.
//!
//! Each mirror or source has a task. It creates an ephemeral push consumer on the origin
//! through the JetStream API (`<api>.CONSUMER.CREATE.<origin>`, or, with a filter,
//! `<api>.CONSUMER.CREATE.<origin>.<name>.<filter>`), with `ack_policy: none`, flow control
//! and a 1 s idle heartbeat, delivering to a random `$JS.S.`/`$JS.M.` subject. Requests and
//! deliveries use internal subscriptions and [`Shared::publish`], so they cross leafnode
//! links like a client's: a hub reaches a leaf's stream through the leaf's domain
//! (`external: {api: "$JS.<domain>.API"}`). The deliver subject and the request's reply
//! inbox are subscribed before the request is sent.
//!
//! The task answers flow control requests once the stream's queue is short again, and starts
//! over (a new consumer, the old one deleted on a best-effort basis; an ephemeral consumer
//! nobody listens to also deletes itself) when nothing, not even a heartbeat, arrived for
//! three heartbeat intervals, when the delivery sequence skips (a heartbeat's
//! `Nats-Last-Consumer` or a message's), or when the stream could not store a copy. Creation
//! is retried with a backoff from 1 s to 5 s for as long as the origin is unreachable.
//!
//! **Sources.** A copy keeps the origin's subject, headers and payload, plus a
//! `Nats-Stream-Source: <index name> <origin sequence>` header (2.9's format; the index name
//! is the origin's name, followed by `:` and an 8-character hash of the API prefix for an
//! external origin). It is appended like a published message, durable before it counts.
//!
//! **Resume rule.** The position of a source is read from the store, never kept elsewhere:
//! it is the origin sequence in the header of the newest stored message of that source
//! (found scanning backwards, at most [`RESUME_SCAN_LIMIT`] messages). The header is written
//! in the same commit as the message, so after a crash the copy resumes exactly after the
//! last message it holds: nothing is lost (not stored: copied again) and nothing is
//! duplicated (stored: its sequence is known). The stream's task also drops a copy whose
//! origin sequence is not newer than the last one stored or in flight, so a consumer
//! recreated from an older position while copies were in flight duplicates nothing. When
//! the scan finds nothing within its limit, the copy starts at the time of the oldest message
//! scanned: no message of the source was stored after it.
//!
//! **Mirrors.** A mirror keeps the origin's sequences and timestamps: its position is its
//! last sequence, each copy is appended only if the stream's last sequence is the one before
//! it, and sequences missing at the origin (removed messages) are skipped with
//! [`Store::skip`].
//!
//! **Bounded memory.** Deliveries wait for the task in a queue of at most
//! [`DELIVERIES_MAX_BYTES`] (room for the largest flow control window, nats-server's 32 MiB);
//! one that does not fit (a flood on the deliver subject) is dropped, which the task sees as a
//! gap and answers by recreating the consumer from its position. Flow control requests are
//! answered only while the stream's ingest is below its stall mark, so the origin sends no
//! more than a window ahead of the store.

use leaf_proto::printable::printable;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::consumer::{AckPolicy, ConsumerConfig, DeliverPolicy};
use super::config::{ApiError, JsError, StreamConfig, StreamSource};
use super::handle::{SourceHandle, SourceStatus};
use super::stream::{Origin, Stream};
use super::wire::{AnswerError, ConsumerCreateRequest, ConsumerInfo, StreamSourceInfo};
use crate::budget::{self, Budget};
use crate::server::{Account, InternalSink, Msg, Publisher, SubRef};
use leaf_proto::headers;
use leaf_store::Store;

/// The header naming the origin of a sourced message.
pub const SOURCE_HEADER: &str = "Nats-Stream-Source";
/// The origin's idle heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which the consumer is recreated.
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// How long a consumer creation may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait between two attempts.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Most bytes of deliveries waiting for a source task (plus [`budget::ITEM_OVERHEAD`] each):
/// nats-server's largest flow control window (32 MiB) and room to spare.
pub(crate) const DELIVERIES_MAX_BYTES: usize = 40 << 20;
/// Most stored messages scanned backwards for a source's position.
pub const RESUME_SCAN_LIMIT: u64 = 1_000_000;
/// The characters of nats-server's hashes.
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl StreamSource {
    /// The name that identifies this origin in `Nats-Stream-Source` headers: the stream's
    /// name, or for an external origin `<name>:<hash of the API prefix>`.
    pub fn index_name(&self) -> String {
        match &self.external {
            Some(ext) => format!("{}:{}", self.name, hash8(&ext.api)),
            None => self.name.clone(),
        }
    }

    fn api_prefix(&self) -> &str {
        match &self.external {
            Some(ext) if !ext.api.is_empty() => &ext.api,
            _ => "$JS.API",
        }
    }
}

/// nats-server's 8-character name hash (SHA-256, each of the first 8 bytes as a base-62
/// digit).
fn hash8(name: &str) -> String {
    let sum = Sha256::digest(name.as_bytes());
    sum.iter()
        .take(8)
        .map(|b| char::from(DIGITS[usize::from(*b) % DIGITS.len()]))
        .collect()
}

/// A random token of `n` base-62 characters.
fn token(n: usize) -> String {
    (0..n)
        .map(|_| char::from(DIGITS[fastrand::usize(..DIGITS.len())]))
        .collect()
}

/// The value of a `Nats-Stream-Source` header: index name and origin sequence. Reads 2.9's
/// `<name> <seq>`, newer forms with more fields after them, and the older form that is the
/// delivery's `$JS.ACK.` reply subject.
pub fn parse_source_header(value: &str) -> Option<(&str, u64)> {
    if value.starts_with("$JS.ACK.") {
        let a = AckReply::parse(value)?;
        return Some((a.stream, a.sseq));
    }
    let mut it = value.split_whitespace();
    let name = it.next()?;
    let seq = it.next()?.parse().ok()?;
    Some((name, seq))
}

/// What the `$JS.ACK.` reply subject of a push delivery says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckReply<'a> {
    /// The origin stream.
    pub stream: &'a str,
    /// The consumer.
    pub consumer: &'a str,
    /// Delivery count.
    pub dc: u64,
    /// Origin stream sequence.
    pub sseq: u64,
    /// Consumer (delivery) sequence.
    pub dseq: u64,
    /// Origin timestamp, ns.
    pub ts_ns: i64,
    /// Messages still pending after this one.
    pub pending: u64,
}

impl<'a> AckReply<'a> {
    /// Parses `$JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.<pending>` and the 2.10
    /// form with domain and account hash before the stream (and a random token after).
    pub fn parse(reply: &'a str) -> Option<AckReply<'a>> {
        let reply = reply.split_once('@').map_or(reply, |(r, _)| r);
        let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
        let t = match tokens.len() {
            7 => &tokens[..],
            9 | 10 => tokens.get(2..9)?,
            _ => return None,
        };
        let num = |i: usize| t.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(AckReply {
            stream: t.first()?,
            consumer: t.get(1)?,
            dc: num(2)?,
            sseq: num(3)?,
            dseq: num(4)?,
            ts_ns: t.get(5)?.parse().ok()?,
            pending: num(6)?,
        })
    }
}

/// Where a source resumes, read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After this origin sequence (the newest stored).
    After(u64),
    /// Nothing of the source is stored at all.
    Nothing,
    /// Nothing of the source among the newest [`RESUME_SCAN_LIMIT`] messages, the oldest of
    /// which was stored at this time.
    NotSince(i64),
}

/// Scans stream `stream` backwards for the newest message copied from source `iname`.
/// Blocking (store reads).
pub fn resume_position(store: &Store, stream: &str, iname: &str, limit: u64) -> Resume {
    let Ok(Some(state)) = store.stream_state(stream) else {
        return Resume::Nothing;
    };
    if state.msgs == 0 {
        return Resume::Nothing;
    }
    const CHUNK: u64 = 512;
    let mut end = state.last_seq;
    let mut scanned = 0u64;
    let mut oldest_ts = None;
    while end >= state.first_seq && end > 0 {
        let start = end.saturating_sub(CHUNK - 1).max(state.first_seq);
        let Ok(batch) = store.read_range(stream, start, CHUNK as usize, u64::MAX) else {
            break;
        };
        for m in batch.iter().rev().filter(|m| m.seq <= end) {
            if scanned >= limit {
                return oldest_ts.map_or(Resume::Nothing, Resume::NotSince);
            }
            scanned += 1;
            oldest_ts = Some(m.ts_ns);
            let found = m
                .headers
                .as_deref()
                .and_then(|h| headers::get_str(h, SOURCE_HEADER))
                .and_then(parse_source_header)
                .filter(|(name, _)| *name == iname);
            if let Some((_, seq)) = found {
                return Resume::After(seq);
            }
        }
        if start <= state.first_seq {
            break;
        }
        end = start - 1;
    }
    Resume::Nothing
}

/// The `mirror` and `sources` entries of a stream's info.
pub(crate) fn info(stream: &Stream) -> (Option<StreamSourceInfo>, Option<Vec<StreamSourceInfo>>) {
    let cfg = stream.config();
    let handles = stream
        .sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if cfg.mirror.is_some() {
        return (handles.first().map(SourceHandle::info), None);
    }
    if handles.is_empty() {
        return (None, None);
    }
    (None, Some(handles.iter().map(SourceHandle::info).collect()))
}

/// Starts and stops tasks so that they match the stream's `mirror` and `sources`: a task
/// whose origin configuration is unchanged keeps running.
pub(crate) fn sync(
    stream: &Arc<Stream>,
    store: &Store,
    server: &Weak<Account>,
    cfg: &StreamConfig,
) {
    let wanted: Vec<(StreamSource, bool)> = match &cfg.mirror {
        Some(m) => vec![(m.clone(), true)],
        None => cfg
            .sources
            .iter()
            .flatten()
            .map(|s| (s.clone(), false))
            .collect(),
    };
    let mut handles = stream
        .sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut kept = Vec::new();
    for h in handles.drain(..) {
        if wanted.iter().any(|(s, _)| *s == h.spec) {
            kept.push(h);
        } else {
            h.stop();
        }
    }
    for (spec, mirror) in wanted {
        if let Some(pos) = kept.iter().position(|h| h.spec == spec) {
            handles.push(kept.swap_remove(pos));
        } else {
            handles.push(start(stream, store.clone(), server.clone(), spec, mirror));
        }
    }
}

/// Stops every task of the stream.
pub(crate) fn stop_all(stream: &Stream) {
    for h in stream
        .sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        h.stop();
    }
}

fn start(
    stream: &Arc<Stream>,
    store: Store,
    server: Weak<Account>,
    spec: StreamSource,
    mirror: bool,
) -> SourceHandle {
    let status = Arc::new(SourceStatus::default());
    let (stop_tx, stop) = watch::channel(false);
    let task = Task {
        stream: Arc::downgrade(stream),
        name: stream.name.clone(),
        store,
        server,
        iname: Arc::from(spec.index_name()),
        spec: spec.clone(),
        mirror,
        status: status.clone(),
        stop,
        resync: stream.resync.subscribe(),
        sseq: 0,
        resume: Resume::Nothing,
        rescan: true,
    };
    tokio::spawn(task.run());
    SourceHandle {
        spec,
        status,
        stop: stop_tx,
    }
}

/// What arrives on the task's subscriptions.
enum Event {
    /// On the deliver subject.
    Delivery {
        subject: String,
        reply: Option<String>,
        headers: Option<Bytes>,
        payload: Bytes,
        /// Who sent it: flow control is answered only where it may publish.
        from: Publisher,
    },
    /// The answer to the consumer creation.
    Created(Bytes),
}

struct DeliverSink(budget::Sender<Event>);

impl InternalSink for DeliverSink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let bytes = msg.subject.len()
            + msg.reply.map_or(0, <[u8]>::len)
            + msg.headers.map_or(0, <[u8]>::len)
            + msg.payload.len();
        let event = Event::Delivery {
            subject: String::from_utf8_lossy(msg.subject).into_owned(),
            reply: msg.reply.map(|r| String::from_utf8_lossy(r).into_owned()),
            headers: msg.headers.map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(msg.payload),
            from: from.clone(),
        };
        // Dropped when it does not fit: the task sees a gap and starts over from the store.
        if self.0.try_send(event, bytes).is_err() && self.0.budget().should_report() {
            warn!(
                refused = self.0.budget().refused(),
                "source deliveries arrive faster than they are stored, some dropped (recopied)"
            );
        }
    }
}

struct CreatedSink(budget::Sender<Event>);

impl InternalSink for CreatedSink {
    fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
        let _ = self.0.try_send(
            Event::Created(Bytes::copy_from_slice(msg.payload)),
            msg.payload.len(),
        );
    }
}

/// Internal subscriptions removed when dropped.
struct Subs {
    server: Weak<Account>,
    subs: Vec<SubRef>,
}

impl Drop for Subs {
    fn drop(&mut self) {
        if let Some(server) = self.server.upgrade() {
            for s in &self.subs {
                server.unsubscribe_internal(s);
            }
        }
    }
}

/// How a consumer's session ended.
enum Ended {
    /// The stream stopped the task.
    Stopped,
    /// Start over; `progress` when messages were copied.
    Retry { progress: bool },
}

struct Task {
    stream: Weak<Stream>,
    name: String,
    store: Store,
    server: Weak<Account>,
    spec: StreamSource,
    iname: Arc<str>,
    mirror: bool,
    status: Arc<SourceStatus>,
    stop: watch::Receiver<bool>,
    resync: watch::Receiver<u64>,
    /// The newest origin sequence handed to the stream.
    sseq: u64,
    /// What the store said at the last scan.
    resume: Resume,
    /// The position must be read from the store again.
    rescan: bool,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = RETRY_MIN;
        loop {
            if *self.stop.borrow() {
                break;
            }
            if self.rescan && !self.scan().await {
                break;
            }
            match self.session().await {
                Ended::Stopped => break,
                Ended::Retry { progress } => {
                    if progress {
                        backoff = RETRY_MIN;
                    }
                    let stop = self.stop.wait_for(|s| *s);
                    if tokio::time::timeout(backoff, stop).await.is_ok() {
                        break;
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        debug!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), "source task ended");
    }

    /// Reads the position from the store, once the stream's queue is empty (waiting at most
    /// a second: the stream's task drops what it already holds anyway); false when the
    /// stream is gone.
    async fn scan(&mut self) -> bool {
        for _ in 0..100 {
            let Some(stream) = self.stream.upgrade() else {
                return false;
            };
            if stream.queued() == 0 {
                break;
            }
            drop(stream);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (store, name, iname, mirror) = (
            self.store.clone(),
            self.name.clone(),
            self.iname.clone(),
            self.mirror,
        );
        let scanned = tokio::task::spawn_blocking(move || {
            if mirror {
                let last = store
                    .stream_state(&name)
                    .ok()
                    .flatten()
                    .map_or(0, |s| s.last_seq);
                if last == 0 {
                    Resume::Nothing
                } else {
                    Resume::After(last)
                }
            } else {
                resume_position(&store, &name, &iname, RESUME_SCAN_LIMIT)
            }
        })
        .await;
        let Ok(resume) = scanned else {
            return false;
        };
        self.resume = resume;
        self.sseq = match resume {
            Resume::After(seq) => seq,
            _ => 0,
        };
        if !self.mirror {
            let Some(stream) = self.stream.upgrade() else {
                return false;
            };
            stream.ingest_copied(
                String::new(),
                None,
                Bytes::new(),
                Origin::SourceReset {
                    iname: self.iname.clone(),
                    last: self.sseq,
                },
            );
        }
        self.rescan = false;
        info!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), mirror = self.mirror,
              after = self.sseq, "copying from origin stream");
        true
    }

    /// The consumer configuration for the current position.
    fn consumer_config(&self, deliver: &str) -> ConsumerConfig {
        let (deliver_policy, opt_start_seq, opt_start_time) = if self.sseq > 0 {
            (DeliverPolicy::ByStartSequence, self.sseq + 1, None)
        } else if self.spec.opt_start_seq > 0 {
            (
                DeliverPolicy::ByStartSequence,
                self.spec.opt_start_seq,
                None,
            )
        } else if let Some(t) = &self.spec.opt_start_time {
            (DeliverPolicy::ByStartTime, 0, Some(t.clone()))
        } else if let Resume::NotSince(ts) = self.resume {
            let t = leaf_proto::time::rfc3339(ts);
            (DeliverPolicy::ByStartTime, 0, Some(t))
        } else {
            (DeliverPolicy::All, 0, None)
        };
        ConsumerConfig {
            deliver_subject: Some(deliver.to_string()),
            deliver_policy,
            opt_start_seq,
            opt_start_time,
            ack_policy: AckPolicy::None,
            ack_wait: 22 * 3600 * 1_000_000_000,
            max_deliver: 1,
            filter_subject: self.spec.filter_subject.clone(),
            idle_heartbeat: HEARTBEAT.as_nanos() as i64,
            flow_control: true,
            direct: true,
            ..ConsumerConfig::default()
        }
    }

    /// Creates a consumer on the origin and copies what it delivers until something is
    /// wrong or the task is stopped.
    async fn session(&mut self) -> Ended {
        let Some(server) = self.server.upgrade() else {
            return Ended::Stopped;
        };
        let kind = if self.mirror { "M" } else { "S" };
        let tok = token(22);
        let deliver = match self.spec.external.as_ref().map(|e| e.deliver.as_str()) {
            Some(prefix) if !prefix.is_empty() => {
                format!("{prefix}.{kind}.{tok}").replace("..", ".")
            }
            _ => format!("$JS.{kind}.{tok}"),
        };
        let inbox = format!("_INBOX.{}", token(22));
        let (tx, mut rx) =
            budget::channel::<Event>(Arc::new(Budget::new(DELIVERIES_MAX_BYTES, usize::MAX)));
        let mut subs = Subs {
            server: self.server.clone(),
            subs: Vec::new(),
        };
        for (subject, sink) in [
            (
                deliver.as_str(),
                Arc::new(DeliverSink(tx.clone())) as Arc<dyn InternalSink>,
            ),
            (
                inbox.as_str(),
                Arc::new(CreatedSink(tx)) as Arc<dyn InternalSink>,
            ),
        ] {
            match server.subscribe_internal(subject.as_bytes(), None, sink) {
                Ok(s) => subs.subs.push(s),
                Err(e) => {
                    self.status
                        .set_error(Some(self.setup_error(&e.to_string())));
                    return Ended::Retry { progress: false };
                }
            }
        }
        let mut config = self.consumer_config(&deliver);
        let api = self.spec.api_prefix().to_string();
        let origin = self.spec.name.clone();
        let subject = if self.spec.filter_subject.is_empty() {
            format!("{api}.CONSUMER.CREATE.{origin}")
        } else {
            let name = format!(
                "{}-{}",
                if self.mirror { "mirror" } else { "src" },
                token(8)
            );
            config.name = Some(name.clone());
            format!(
                "{api}.CONSUMER.CREATE.{origin}.{name}.{}",
                self.spec.filter_subject
            )
        }
        .replace("..", ".");
        let request = ConsumerCreateRequest {
            stream_name: origin,
            config: Some(config),
            action: String::new(),
        };
        let body = request.to_json();
        let answered = server.publish(&Msg {
            subject: subject.as_bytes(),
            reply: Some(inbox.as_bytes()),
            headers: None,
            payload: &body,
        });
        drop(server);
        if answered == 0 {
            self.status.set_error(Some(
                self.setup_error("no responders: the origin's JetStream API is not reachable")
                    .with_status(503),
            ));
            return Ended::Retry { progress: false };
        }
        // Deliveries may overtake the answer.
        let mut early = Vec::new();
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let created = loop {
            let ev = tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return Ended::Stopped,
                ev = tokio::time::timeout_at(deadline, rx.recv()) => ev.map(|e| e.map(|(e, _)| e)),
            };
            match ev {
                Ok(Some(Event::Created(body))) => break body,
                Ok(Some(d @ Event::Delivery { .. })) => early.push(d),
                Ok(None) => return Ended::Stopped,
                Err(_) => {
                    self.status.set_error(Some(
                        self.setup_error("timeout creating the consumer on the origin")
                            .with_status(504),
                    ));
                    return Ended::Retry { progress: false };
                }
            }
        };
        // Only this consumer's answer is needed: stop listening on the inbox.
        if let (Some(server), Some(s)) = (self.server.upgrade(), subs.subs.pop()) {
            server.unsubscribe_internal(&s);
        }
        let cname = match ConsumerInfo::read(&created) {
            Ok(info) if !info.name.is_empty() => info.name,
            Ok(_) | Err(AnswerError::Unreadable(_)) => {
                self.status
                    .set_error(Some(self.setup_error("invalid consumer create answer")));
                return Ended::Retry { progress: false };
            }
            Err(AnswerError::Refused(e)) => {
                warn!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), error = %e,
                      "origin refused the copy's consumer");
                self.status.set_error(Some(e));
                return Ended::Retry { progress: false };
            }
        };
        self.status.set_error(None);
        self.status.touch();
        info!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), consumer = %printable(&cname),
              after = self.sseq, "consumer created on the origin");
        let mut session = Session {
            cname,
            dseq: 0,
            progress: false,
        };
        // Only failures from now on ask for a new scan.
        self.resync.borrow_and_update();
        for ev in early {
            if let Some(end) = self.event(&mut session, ev).await {
                self.delete_consumer(&session.cname);
                return end;
            }
        }
        loop {
            let wake = tokio::select! {
                _ = self.stop.wait_for(|s| *s) => Wake::Stop,
                _ = self.resync.changed() => Wake::Resync,
                ev = tokio::time::timeout(STALLED_AFTER, rx.recv()) => {
                    Wake::Event(ev.map(|e| e.map(|(e, _)| e)))
                }
            };
            let ev = match wake {
                Wake::Stop => {
                    self.delete_consumer(&session.cname);
                    return Ended::Stopped;
                }
                Wake::Resync => {
                    self.rescan = true;
                    self.delete_consumer(&session.cname);
                    return Ended::Retry {
                        progress: session.progress,
                    };
                }
                Wake::Event(ev) => ev,
            };
            match ev {
                Ok(Some(ev)) => {
                    if let Some(end) = self.event(&mut session, ev).await {
                        self.delete_consumer(&session.cname);
                        return end;
                    }
                }
                Ok(None) => return Ended::Stopped,
                Err(_) => {
                    debug!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), "origin silent, recreating");
                    self.delete_consumer(&session.cname);
                    return Ended::Retry {
                        progress: session.progress,
                    };
                }
            }
        }
    }

    /// Why setting up the origin's consumer failed: nats-server's 10029 for a mirror,
    /// 10045 for a source.
    fn setup_error(&self, text: &str) -> ApiError {
        if self.mirror {
            JsError::MirrorConsumerSetupFailed.with(text)
        } else {
            JsError::SourceConsumerSetupFailed.with(text)
        }
    }

    /// Handles one delivery; `Some` ends the session.
    async fn event(&mut self, s: &mut Session, ev: Event) -> Option<Ended> {
        let Event::Delivery {
            subject,
            reply,
            headers: hdr,
            payload,
            from,
        } = ev
        else {
            return None;
        };
        let control = payload.is_empty()
            && hdr
                .as_deref()
                .is_some_and(|h| h.starts_with(b"NATS/1.0 100"));
        if control {
            self.status.touch();
            let hdr = hdr.unwrap_or_default();
            if let Some(fc) = reply {
                return self.answer_flow_control(&fc, &from).await;
            }
            let last = headers::get_str(&hdr, "Nats-Last-Consumer")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if last > 0 && last != s.dseq {
                debug!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), "missed deliveries, recreating");
                return Some(Ended::Retry {
                    progress: s.progress,
                });
            }
            if let Some(fc) = headers::get_str(&hdr, "Nats-Consumer-Stalled") {
                let fc = fc.to_string();
                return self.answer_flow_control(&fc, &from).await;
            }
            return None;
        }
        let reply = reply?;
        // Across a leaf link or route the delivery's subject is the deliver subject and the
        // original subject follows the ack subject after `@`.
        let (reply, subject) = match reply.split_once('@') {
            Some((ack, original)) if !original.is_empty() => {
                (ack.to_string(), original.to_string())
            }
            _ => (reply, subject),
        };
        let ack = AckReply::parse(&reply)?;
        if ack.consumer != s.cname || ack.dc > 1 {
            return None;
        }
        if ack.dseq != s.dseq + 1 {
            if ack.dseq <= s.dseq {
                return None;
            }
            debug!(stream = %printable(&self.name), origin = %printable(self.iname.as_bytes()), "delivery gap, recreating");
            return Some(Ended::Retry {
                progress: s.progress,
            });
        }
        s.dseq = ack.dseq;
        s.progress = true;
        self.status.touch();
        self.status
            .lag
            .store(ack.pending.saturating_sub(1), Ordering::Relaxed);
        let stream = self.stream.upgrade()?;
        if self.mirror {
            stream.ingest_copied(
                subject,
                hdr,
                payload,
                Origin::Mirror {
                    seq: ack.sseq,
                    ts_ns: ack.ts_ns,
                },
            );
        } else {
            let value = format!("{} {}", self.iname, ack.sseq);
            let hdr = with_source_header(hdr.as_deref(), &value);
            stream.ingest_copied(
                subject,
                Some(hdr),
                payload,
                Origin::Source {
                    iname: self.iname.clone(),
                    seq: ack.sseq,
                },
            );
        }
        self.sseq = ack.sseq;
        None
    }

    /// Answers a flow control request once the stream has caught up: only on a flow control
    /// subject (`$JS.FC.…`), and only where `from`, who sent the request, may publish.
    async fn answer_flow_control(&mut self, reply: &str, from: &Publisher) -> Option<Ended> {
        if !reply.starts_with("$JS.FC.") {
            return None;
        }
        loop {
            if !self.stream.upgrade()?.ingest_stalled() {
                break;
            }
            tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return Some(Ended::Stopped),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        if let Some(server) = self.server.upgrade() {
            server.answer(&from.reply_to(reply.as_bytes()), None, b"");
        }
        None
    }

    /// Asks the origin to delete consumer `cname` (best effort: nobody waits for the answer).
    fn delete_consumer(&self, cname: &str) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let subject = format!(
            "{}.CONSUMER.DELETE.{}.{cname}",
            self.spec.api_prefix(),
            self.spec.name
        )
        .replace("..", ".");
        let reply = format!("_INBOX.{}", token(22));
        server.publish(&Msg {
            subject: subject.as_bytes(),
            reply: Some(reply.as_bytes()),
            headers: None,
            payload: b"",
        });
    }
}

/// Why a session's wait ended.
enum Wake {
    Stop,
    Resync,
    Event(Result<Option<Event>, tokio::time::error::Elapsed>),
}

/// The state of one consumer.
struct Session {
    cname: String,
    /// The last delivery sequence seen.
    dseq: u64,
    progress: bool,
}

/// `block` (or an empty block) with any `Nats-Stream-Source` header replaced by one with
/// `value`.
fn with_source_header(block: Option<&[u8]>, value: &str) -> Bytes {
    let mut out = b"NATS/1.0\r\n".to_vec();
    if let Some(block) = block {
        for line in block.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let key = line
                .iter()
                .position(|&b| b == b':')
                .map_or(line, |i| &line[..i]);
            if key.eq_ignore_ascii_case(SOURCE_HEADER.as_bytes()) {
                continue;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(SOURCE_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_replies_are_read() {
        let a = AckReply::parse("$JS.ACK.S.C.1.10.12.1700000000000000000.5").unwrap();
        assert_eq!(
            (a.stream, a.consumer, a.dc, a.sseq, a.dseq, a.pending),
            ("S", "C", 1, 10, 12, 5)
        );
        let b =
            AckReply::parse("$JS.ACK.dom.ACCHASH.S.C.1.10.12.1700000000000000000.5.rnd").unwrap();
        assert_eq!((b.stream, b.sseq, b.dseq), ("S", 10, 12));
        assert!(AckReply::parse("$JS.ACK.S.C.1.10").is_none());
        assert!(AckReply::parse("_INBOX.x").is_none());
    }

    #[test]
    fn source_headers_round_trip() {
        assert_eq!(parse_source_header("ORDERS 42"), Some(("ORDERS", 42)));
        assert_eq!(
            parse_source_header("ORDERS:abcdEFGH 7 > >"),
            Some(("ORDERS:abcdEFGH", 7))
        );
        assert_eq!(
            parse_source_header("$JS.ACK.ORDERS.C.1.9.3.1700000000000000000.0"),
            Some(("ORDERS", 9))
        );
        assert_eq!(parse_source_header("ORDERS"), None);
        let block = b"NATS/1.0\r\nA: 1\r\nNats-Stream-Source: old 1\r\n\r\n";
        let h = with_source_header(Some(block), "S 5");
        assert_eq!(headers::get_str(&h, "A"), Some("1"));
        assert_eq!(headers::get_str(&h, SOURCE_HEADER), Some("S 5"));
        assert_eq!(
            h.windows(18).filter(|w| w == b"Nats-Stream-Source").count(),
            1
        );
        let h = with_source_header(None, "S 6");
        assert_eq!(&h[..], b"NATS/1.0\r\nNats-Stream-Source: S 6\r\n\r\n");
    }

    #[test]
    fn index_names_hash_the_api_prefix() {
        let local = StreamSource {
            name: "S".into(),
            ..StreamSource::default()
        };
        assert_eq!(local.index_name(), "S");
        let ext = StreamSource {
            name: "S".into(),
            external: Some(super::super::config::ExternalStream {
                api: "$JS.leaf.API".into(),
                deliver: String::new(),
            }),
            ..StreamSource::default()
        };
        let name = ext.index_name();
        assert!(name.starts_with("S:") && name.len() == 10, "{name}");
        assert!(name[2..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
