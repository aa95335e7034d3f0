//! One uplink's task: reads its local buffer stream in order and forwards it to the hub
//! stream over the leaf link, pipelined, advancing its cursor only on the hub's PubAcks.
//!
//! Position bookkeeping (local sequences):
//!
//! * `next`: the next sequence to read from the buffer; every sequence below it was read and
//!   is *done* (acknowledged by the hub, refused for good, or absent: dropped by the buffer's
//!   limits), *in flight* (sent, no answer yet) or *failed* (must be sent again);
//! * the cursor `acked` is the sequence below the first one that is not done, so everything
//!   up to it is on the hub. Answers may come in any order; a done sequence above the cursor
//!   waits in `done_ahead` until the ones below it are done too.
//!
//! A refusal that may go away (hub full, no stream yet, not the leader), a garbled answer and
//! an answer that does not come within `ack_timeout` stop new sends; once nothing is in
//! flight any more, sending resumes at the cursor after a backoff, skipping what is known to
//! be done. When the link drops, what was in flight has an unknown fate: sending resumes at
//! the cursor once the link is back, after the read-back (see `sync`). Every resend carries
//! the message's original `Nats-Msg-Id`.
//!
//! Chained acknowledgements (`ack_every` > 1): each message after the first of a chain carries
//! `Nats-Expected-Last-Msg-Id` with its predecessor's id, and only every `ack_every`-th message
//! (and the last one of every burst) has a reply subject. The hub stores a chained message only
//! while its predecessor is the stream's newest message, so a PubAck for a chained message
//! proves every message of its chain up to it stored, once and in order. Any other answer
//! breaks the chain: the members up to it have an unknown fate and are sent again from the
//! cursor with one PubAck each (`per_message_until`), then chaining resumes. A refusal naming a
//! newest message that is not this uplink's means the hub stream has other writers: chaining
//! stops until the next connect. The argument is in `leaf/DESIGN.md`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::hub::{self, AckOutcome, Answer};
use super::record::{self, Cursor, Origin};
use super::window::Window;
use super::{State, StatusCell};
use crate::config::Uplink;
use leaf_core::server::outbound::AppendOutcome;
use leaf_core::server::ClientHandle;
use leaf_store::{PurgeRequest, Store, StoredMessage};

/// Most messages read from the buffer at once.
const READ_BATCH: usize = 256;
/// Most bytes read from the buffer at once.
const READ_BATCH_BYTES: u64 = 1 << 20;
/// Most bytes in flight to the hub.
const MAX_IN_FLIGHT_BYTES: u64 = 4 << 20;
/// How long an API request to the hub may take.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// Interval of the housekeeping tick (timeouts, persistence, rates).
const TICK: Duration = Duration::from_millis(100);
/// Interval of progress log lines while replaying.
const PROGRESS_LOG: Duration = Duration::from_secs(10);
/// First wait after a failure before sending again; doubles up to [`MAX_RETRY_DELAY`].
const MIN_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Longest wait after repeated failures.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// A message sent and not answered yet.
struct Sent {
    at: Instant,
    bytes: u64,
    /// The chain the message belongs to, if it was sent chained.
    chain: Option<u64>,
}

/// The chain being extended: the next chained message expects `last_msg_id`.
struct Chain {
    id: u64,
    last_msg_id: String,
    /// Messages sent in the chain since the last one with a reply subject.
    since_reply: u32,
}

/// Why a wait for the hub ended early.
enum Interrupted {
    /// The link went down (or another connection replaced it).
    LinkDown,
    /// The server is stopping.
    Stop,
    /// The local buffer stream was deleted (through the JetStream API).
    BufferGone,
}

/// Everything one uplink's task owns.
pub(crate) struct Forwarder {
    pub(crate) cfg: Uplink,
    pub(crate) stream: String,
    pub(crate) store: Store,
    pub(crate) origin: Origin,
    pub(crate) epoch: i64,
    pub(crate) link_rx: watch::Receiver<Option<Arc<ClientHandle>>>,
    pub(crate) answers: mpsc::UnboundedReceiver<Answer>,
    pub(crate) appended: watch::Receiver<u64>,
    pub(crate) reply_prefix: String,
    pub(crate) api_prefix: String,
    pub(crate) status: Arc<StatusCell>,
    pub(crate) stop: watch::Receiver<bool>,
    /// New settings from a configuration reload (limits and pacing).
    pub(crate) settings: watch::Receiver<Uplink>,
    pub(crate) cursor: Cursor,
    next: u64,
    in_flight: BTreeMap<u64, Sent>,
    in_flight_bytes: u64,
    /// How many messages may be in flight, sized from the path's rate and round trip.
    window: Window,
    /// Done sequences above the cursor, with their hub sequence when known.
    done_ahead: BTreeMap<u64, u64>,
    /// The lowest sequence that failed since the last resume.
    failed_min: Option<u64>,
    /// No new sends until nothing is in flight, then resume at the cursor.
    recovering: bool,
    retry_delay: Duration,
    resume_at: Option<Instant>,
    read_ahead: VecDeque<StoredMessage>,
    next_api_id: u64,
    persisted: u64,
    last_persist: Instant,
    persist_task: Option<JoinHandle<()>>,
    bucket: Option<TokenBucket>,
    api_warned: bool,
    last_progress: Instant,
    chain: Option<Chain>,
    last_chain_id: u64,
    /// The hub stream has other writers: one PubAck per message until the next connect.
    chain_off: bool,
    /// Sequences up to this one are sent with one PubAck each (after a broken chain).
    per_message_until: u64,
}

impl Forwarder {
    /// A forwarder starting from `cursor` (read from the store, or fresh).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: Uplink,
        store: Store,
        origin: Origin,
        epoch: i64,
        link_rx: watch::Receiver<Option<Arc<ClientHandle>>>,
        answers: mpsc::UnboundedReceiver<Answer>,
        appended: watch::Receiver<u64>,
        reply_prefix: String,
        status: Arc<StatusCell>,
        stop: watch::Receiver<bool>,
        settings: watch::Receiver<Uplink>,
        cursor: Cursor,
    ) -> Forwarder {
        let api_prefix = match &cfg.hub_domain {
            Some(d) => format!("$JS.{d}.API."),
            None => "$JS.API.".to_string(),
        };
        let bucket = cfg.rate_limit.map(TokenBucket::new);
        let window = Window::new(cfg.max_in_flight, cfg.ack_timeout);
        Forwarder {
            stream: cfg.stream_name(),
            cfg,
            store,
            origin,
            epoch,
            link_rx,
            answers,
            appended,
            reply_prefix,
            api_prefix,
            status,
            stop,
            settings,
            next: cursor.acked + 1,
            persisted: cursor.acked,
            cursor,
            in_flight: BTreeMap::new(),
            in_flight_bytes: 0,
            window,
            done_ahead: BTreeMap::new(),
            failed_min: None,
            recovering: false,
            retry_delay: MIN_RETRY_DELAY,
            resume_at: None,
            read_ahead: VecDeque::new(),
            next_api_id: 0,
            last_persist: Instant::now(),
            persist_task: None,
            bucket,
            api_warned: false,
            last_progress: Instant::now(),
            chain: None,
            last_chain_id: 0,
            chain_off: false,
            per_message_until: 0,
        }
    }

    /// Runs until the server stops.
    pub(crate) async fn run(mut self) {
        self.status.update(|s| s.acked = self.cursor.acked);
        loop {
            let link = match self.wait_for_link().await {
                Some(link) => link,
                None => break,
            };
            self.status.update(|s| s.state = State::Syncing);
            let ended = match self.sync(&link).await {
                Ok(()) => self.pump(&link).await,
                Err(e) => e,
            };
            self.link_lost();
            match ended {
                Interrupted::Stop => break,
                Interrupted::BufferGone => {
                    error!(uplink = %self.cfg.name, stream = %self.stream, "the uplink's buffer stream was deleted; the uplink stops until leafd restarts (which creates it again)");
                    self.status.update(|s| {
                        s.state = State::Stalled;
                        s.last_error = Some("buffer stream deleted; restart leafd".into());
                    });
                    let _ = self.stop.wait_for(|stop| *stop).await;
                    return;
                }
                Interrupted::LinkDown => {}
            }
        }
        self.persist_now().await;
    }

    /// Waits until the link is up; `None` when the server stops first.
    async fn wait_for_link(&mut self) -> Option<Arc<ClientHandle>> {
        self.status.update(|s| s.state = State::Offline);
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let current = self.link_rx.borrow_and_update().clone();
            if let Some(link) = current.filter(|l| !l.out.is_closed()) {
                return Some(link);
            }
            tokio::select! {
                r = self.link_rx.changed() => if r.is_err() { return None },
                _ = self.stop.changed() => {}
                Some(a) = self.answers.recv() => self.on_answer(a),
            }
        }
    }

    /// In-flight messages have an unknown fate now; they are sent again from the cursor.
    fn link_lost(&mut self) {
        self.window.restart();
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.read_ahead.clear();
        self.failed_min = None;
        self.recovering = false;
        self.resume_at = None;
        self.next = self.cursor.acked + 1;
        self.chain = None;
        self.chain_off = false;
        self.status.update(|s| s.state = State::Offline);
    }

    /// Whether `link` is still the current connection.
    fn link_is_current(&self, link: &Arc<ClientHandle>) -> bool {
        !link.out.is_closed()
            && self
                .link_rx
                .borrow()
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, link))
    }

    // ----- synchronisation with the hub after every (re)connect -------------------------

    /// Makes sure the hub stream exists (creating it when allowed) and reads back the newest
    /// message of this uplink the hub holds, so nothing it already has is sent again, however
    /// long ago it was sent. Without the hub's API (no JetStream on the hub, or a domain other
    /// than `hub_domain`), only the hub's duplicate window protects resends.
    async fn sync(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let info = self
            .request(link, &format!("STREAM.INFO.{}", self.cfg.hub_stream), b"")
            .await?;
        let Some(info) = info else {
            if !self.api_warned {
                self.api_warned = true;
                warn!(
                    uplink = %self.cfg.name,
                    api = %self.api_prefix,
                    "the hub's JetStream API does not answer through the link (is hub_domain the hub's JetStream domain?); messages are still forwarded, but a resend is only recognised within the hub stream's duplicate window"
                );
            }
            self.status.update(|s| s.hub_api = false);
            return Ok(());
        };
        self.status.update(|s| s.hub_api = true);
        match hub::api_result(&info) {
            Ok(v) => self.note_hub_stream(&v),
            Err(e) if e.err_code == 10059 && self.cfg.create_hub_stream => {
                self.create_hub_stream(link).await?;
            }
            Err(e) => {
                warn!(uplink = %self.cfg.name, hub_stream = %self.cfg.hub_stream, error = %e, "hub stream is not available; messages wait until it is");
                self.status
                    .update(|s| s.last_error = Some(format!("hub stream: {e}")));
            }
        }
        self.read_back(link).await
    }

    fn note_hub_stream(&mut self, info: &serde_json::Value) {
        let window = info
            .pointer("/config/duplicate_window")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        self.status.update(|s| {
            s.hub_duplicate_window = Duration::from_nanos(u64::try_from(window).unwrap_or(0));
        });
    }

    async fn create_hub_stream(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let subjects = if self.cfg.hub_subjects.is_empty() {
            self.hub_filters()
        } else {
            self.cfg.hub_subjects.clone()
        };
        let body = json!({
            "name": self.cfg.hub_stream,
            "subjects": subjects,
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": 1,
        });
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let reply = self
            .request(
                link,
                &format!("STREAM.CREATE.{}", self.cfg.hub_stream),
                &payload,
            )
            .await?;
        match reply.as_deref().map(hub::api_result) {
            Some(Ok(v)) => {
                info!(uplink = %self.cfg.name, hub_stream = %self.cfg.hub_stream, ?subjects, "created the hub stream");
                self.note_hub_stream(&v);
            }
            Some(Err(e)) => {
                warn!(uplink = %self.cfg.name, hub_stream = %self.cfg.hub_stream, error = %e, "cannot create the hub stream");
                self.status
                    .update(|s| s.last_error = Some(format!("creating the hub stream: {e}")));
            }
            None => {
                warn!(uplink = %self.cfg.name, "the hub did not answer the stream create request")
            }
        }
        Ok(())
    }

    /// The hub subjects this uplink's messages land on (its subjects after the prefix).
    fn hub_filters(&self) -> Vec<String> {
        self.cfg
            .subjects
            .iter()
            .map(|s| self.hub_subject(s))
            .collect()
    }

    fn hub_subject(&self, local: &str) -> String {
        match &self.cfg.subject_prefix {
            Some(p) => format!("{p}.{local}"),
            None => local.to_string(),
        }
    }

    /// Asks the hub for the newest message on each of the uplink's hub subjects; a message
    /// of this uplink's origin above the cursor moves the cursor there (the hub stores one
    /// link's messages in the order they were sent, so everything before it is there too).
    async fn read_back(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let mut newest: Option<(u64, u64)> = None;
        for filter in self.hub_filters() {
            let body = serde_json::to_vec(&json!({ "last_by_subj": filter })).unwrap_or_default();
            let reply = self
                .request(
                    link,
                    &format!("STREAM.MSG.GET.{}", self.cfg.hub_stream),
                    &body,
                )
                .await?;
            let Some(reply) = reply else {
                return Ok(());
            };
            match hub::parse_msg_get(&reply) {
                Ok(Some(m)) => {
                    let ours = m.msg_id.as_deref().and_then(|id| self.origin.parse(id));
                    match ours {
                        Some(local) if newest.is_none_or(|(n, _)| local > n) => {
                            newest = Some((local, m.seq));
                        }
                        Some(_) => {}
                        None => {
                            debug!(uplink = %self.cfg.name, %filter, "newest hub message on the subject is not this uplink's")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    debug!(uplink = %self.cfg.name, %filter, error = %e, "read-back failed");
                    return Ok(());
                }
            }
        }
        if let Some((local, hub_seq)) = newest {
            if local > self.cursor.acked {
                info!(
                    uplink = %self.cfg.name,
                    cursor = self.cursor.acked,
                    hub_holds = local,
                    "the hub already holds messages sent before the link dropped; not sending them again"
                );
                self.done_ahead.retain(|&s, _| s > local);
                self.cursor.acked = local;
                self.cursor.hub_seq = hub_seq;
                self.next = local + 1;
                self.status.update(|s| s.acked = local);
            }
        }
        Ok(())
    }

    /// Sends one API request and waits for its answer: `Ok(None)` on timeout.
    async fn request(
        &mut self,
        link: &Arc<ClientHandle>,
        api: &str,
        payload: &[u8],
    ) -> Result<Option<Bytes>, Interrupted> {
        self.next_api_id += 1;
        let id = self.next_api_id;
        let subject = format!("{}{api}", self.api_prefix);
        let reply = format!("{}r.{id}", self.reply_prefix);
        if hub::send(
            link,
            subject.as_bytes(),
            Some(reply.as_bytes()),
            None,
            payload,
        ) == AppendOutcome::Closed
        {
            return Err(Interrupted::LinkDown);
        }
        link.out.flush();
        let deadline = tokio::time::Instant::now() + API_TIMEOUT;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.stop.changed() => return Err(Interrupted::Stop),
                r = self.link_rx.changed() => {
                    if r.is_err() || !self.link_is_current(link) {
                        return Err(Interrupted::LinkDown);
                    }
                }
                a = self.answers.recv() => match a {
                    Some(Answer::Api { id: got, body }) if got == id => return Ok(Some(body)),
                    Some(other) => self.on_answer(other),
                    None => return Err(Interrupted::Stop),
                },
            }
        }
    }

    // ----- forwarding -------------------------------------------------------------------

    /// Sends and collects answers until the link drops or the server stops.
    async fn pump(&mut self, link: &Arc<ClientHandle>) -> Interrupted {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *self.stop.borrow() {
                return Interrupted::Stop;
            }
            if !self.link_is_current(link) {
                return Interrupted::LinkDown;
            }
            let wait = match self.send_some(link).await {
                Ok(wait) => wait,
                Err(e) => return e,
            };
            tokio::select! {
                biased;
                _ = self.stop.changed() => return Interrupted::Stop,
                r = self.link_rx.changed() => {
                    if r.is_err() || !self.link_is_current(link) {
                        return Interrupted::LinkDown;
                    }
                }
                a = self.answers.recv() => match a {
                    Some(a) => {
                        self.on_answer(a);
                        while let Ok(a) = self.answers.try_recv() {
                            self.on_answer(a);
                        }
                    }
                    None => return Interrupted::Stop,
                },
                _ = tick.tick() => self.housekeeping(),
                r = self.appended.changed(), if wait == Wait::NewMessages => {
                    if r.is_err() {
                        return Interrupted::BufferGone;
                    }
                }
                _ = tokio::time::sleep(wait.delay()), if wait.is_delay() => {}
            }
        }
    }

    /// Sends as much as the window, the rate limit and the buffer allow.
    /// Adds a burst's sends to the status counters.
    fn count_sent(&self, msgs: u64, bytes: u64) {
        if msgs > 0 {
            self.status.update(|s| {
                s.sent_msgs += msgs;
                s.sent_bytes += bytes;
            });
        }
    }

    async fn send_some(&mut self, link: &Arc<ClientHandle>) -> Result<Wait, Interrupted> {
        if self.recovering {
            if !self.in_flight.is_empty() {
                return Ok(Wait::Answers);
            }
            self.resume();
        }
        if let Some(at) = self.resume_at {
            let now = Instant::now();
            if at > now {
                return Ok(Wait::Delay(at - now));
            }
            self.resume_at = None;
        }
        let mut sent_any = false;
        // Counted here and reported once per burst (the status cell is shared).
        let (mut sent_msgs, mut sent_bytes) = (0u64, 0u64);
        // One clock read per burst (and after every wait): the send time only serves the
        // ack timeout, which is seconds.
        let mut now = Instant::now();
        let result = loop {
            if self.in_flight.len() >= self.window.limit()
                || self.in_flight_bytes >= MAX_IN_FLIGHT_BYTES
            {
                break Wait::Answers;
            }
            // Keep the next message in hand too: a chained message goes without a reply
            // subject only when its successor is certain to follow at once.
            if self.read_ahead.len() < 2
                && (self.read_ahead.is_empty() || self.refill_more_pending())
            {
                let more = self.refill().await;
                now = Instant::now();
                if self.read_ahead.is_empty() {
                    if more {
                        // Everything read was already done; more is stored: read on.
                        continue;
                    }
                    break Wait::NewMessages;
                }
            }
            let Some(msg) = self.read_ahead.front() else {
                continue;
            };
            let size = wire_size(msg);
            if let Some(bucket) = &mut self.bucket {
                if let Some(delay) = bucket.take(size) {
                    break Wait::Delay(delay);
                }
            }
            let Some(msg) = self.read_ahead.pop_front() else {
                break Wait::NewMessages;
            };
            let next_size = self.read_ahead.front().map(wire_size);
            let has_successor = next_size.is_some_and(|next| {
                self.in_flight.len() + 1 < self.window.limit()
                    && self.in_flight_bytes + size < MAX_IN_FLIGHT_BYTES
                    && self.bucket.as_mut().is_none_or(|b| b.has(next))
            });
            let chained =
                self.cfg.ack_every > 1 && !self.chain_off && msg.seq > self.per_message_until;
            let since_reply = match (&self.chain, chained) {
                (Some(c), true) => c.since_reply,
                _ => 0,
            };
            let want_reply = !chained || !has_successor || since_reply + 1 >= self.cfg.ack_every;
            let msg_id = self.origin.msg_id(msg.seq);
            let expect = match (&self.chain, chained) {
                (Some(c), true) => Some(c.last_msg_id.as_str()),
                _ => None,
            };
            let subject = self.hub_subject(&msg.subject);
            let headers = record::hub_headers(msg.headers.as_deref(), &msg_id, expect);
            let reply = want_reply.then(|| format!("{}a.{}", self.reply_prefix, msg.seq));
            let outcome = hub::send(
                link,
                subject.as_bytes(),
                reply.as_deref().map(str::as_bytes),
                Some(&headers),
                &msg.payload,
            );
            if outcome == AppendOutcome::Closed {
                self.count_sent(sent_msgs, sent_bytes);
                return Err(Interrupted::LinkDown);
            }
            let chain = if chained {
                let id = match &self.chain {
                    Some(c) => c.id,
                    None => {
                        self.last_chain_id += 1;
                        self.last_chain_id
                    }
                };
                self.chain = Some(Chain {
                    id,
                    last_msg_id: msg_id,
                    since_reply: if want_reply { 0 } else { since_reply + 1 },
                });
                Some(id)
            } else {
                self.chain = None;
                None
            };
            self.in_flight.insert(
                msg.seq,
                Sent {
                    at: now,
                    bytes: size,
                    chain,
                },
            );
            self.in_flight_bytes += size;
            sent_msgs += 1;
            sent_bytes += size;
            sent_any = true;
            if outcome == AppendOutcome::Stalled {
                link.out.flush();
                link.out.wait_drained(Duration::from_millis(100)).await;
                now = Instant::now();
            }
        };
        self.count_sent(sent_msgs, sent_bytes);
        if sent_any {
            link.out.flush();
            self.status.update(|s| {
                if s.state != State::Stalled {
                    s.state = State::Forwarding;
                }
            });
        } else if result == Wait::NewMessages && self.in_flight.is_empty() {
            self.status.update(|s| s.state = State::Live);
        }
        Ok(result)
    }

    /// Reads the next messages from the buffer into `read_ahead`, skipping what is already
    /// done and counting what the buffer dropped. Returns false when there is nothing new.
    async fn refill(&mut self) -> bool {
        let store = self.store.clone();
        let (stream, from) = (self.stream.clone(), self.next);
        let batch = tokio::task::spawn_blocking(move || {
            store.read_range(&stream, from, READ_BATCH, READ_BATCH_BYTES)
        })
        .await;
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                warn!(uplink = %self.cfg.name, error = %e, "cannot read the buffer");
                return false;
            }
            Err(_) => return false,
        };
        if batch.is_empty() {
            return false;
        }
        let mut dropped = 0;
        for msg in batch {
            if msg.seq < self.next {
                continue;
            }
            dropped += msg.seq - self.next;
            self.next = msg.seq + 1;
            if self.done_ahead.contains_key(&msg.seq) {
                continue;
            }
            self.read_ahead.push_back(msg);
        }
        if dropped > 0 {
            self.status.update(|s| s.dropped += dropped);
            warn!(uplink = %self.cfg.name, dropped, "buffer limits dropped messages before they reached the hub");
        }
        self.advance();
        !self.read_ahead.is_empty() || self.refill_more_pending()
    }

    /// Whether more may be readable right away (everything read was already done).
    fn refill_more_pending(&self) -> bool {
        *self.appended.borrow() >= self.next
    }

    fn on_answer(&mut self, answer: Answer) {
        let Answer::Ack { seq, outcome } = answer else {
            return;
        };
        let sent = self.in_flight.get(&seq).map(|s| (s.at, s.chain));
        if let Some((sent_at, Some(chain))) = sent {
            return self.on_chain_answer(seq, sent_at, chain, outcome);
        }
        match outcome {
            AckOutcome::Stored {
                seq: hub_seq,
                stream,
                ..
            } => {
                if let Some((sent_at, _)) = sent {
                    let now = Instant::now();
                    self.window
                        .on_answer(now, now.saturating_duration_since(sent_at), 1);
                }
                self.note_stored(hub_seq, &stream);
                self.done(seq, hub_seq);
            }
            AckOutcome::Refused(e) if hub::is_permanent(&e) => {
                warn!(uplink = %self.cfg.name, seq, error = %e, "the hub refused a message for good; skipped");
                self.status.update(|s| {
                    s.rejected += 1;
                    s.last_error = Some(format!("message {seq} refused: {e}"));
                });
                self.done(seq, 0);
            }
            other => {
                if seq <= self.cursor.acked || self.done_ahead.contains_key(&seq) {
                    return;
                }
                if let Some(s) = self.in_flight.remove(&seq) {
                    self.in_flight_bytes = self.in_flight_bytes.saturating_sub(s.bytes);
                }
                self.fail(seq, &describe(&other));
            }
        }
    }

    /// Records a PubAck that says "stored" (the hub is healthy again).
    fn note_stored(&mut self, hub_seq: u64, stream: &str) {
        if stream != self.cfg.hub_stream {
            warn!(uplink = %self.cfg.name, %stream, expected = %self.cfg.hub_stream, "message stored by another hub stream");
        }
        self.retry_delay = MIN_RETRY_DELAY;
        self.status.update(|s| {
            s.last_ack = Some(SystemTime::now());
            s.last_hub_seq = hub_seq;
        });
    }

    /// The answer to `seq`, the reply-carrying message of chain `chain`.
    fn on_chain_answer(&mut self, seq: u64, sent_at: Instant, chain: u64, outcome: AckOutcome) {
        let members: Vec<u64> = self
            .in_flight
            .range(..=seq)
            .filter(|(_, s)| s.chain == Some(chain))
            .map(|(&k, _)| k)
            .collect();
        match outcome {
            AckOutcome::Stored {
                seq: hub_seq,
                duplicate: false,
                stream,
            } => {
                let now = Instant::now();
                self.window
                    .on_answer(now, now.saturating_duration_since(sent_at), members.len());
                self.note_stored(hub_seq, &stream);
                // Stored while its predecessor was the newest message: by induction the
                // whole chain up to it is stored, in order, once.
                for m in members {
                    self.done(m, if m == seq { hub_seq } else { 0 });
                }
            }
            AckOutcome::Stored {
                seq: hub_seq,
                duplicate: true,
                ..
            } => {
                // A duplicate was stored earlier, whatever its predecessor: it proves only
                // itself.
                self.done(seq, hub_seq);
                let rest: Vec<u64> = members.into_iter().filter(|&m| m != seq).collect();
                self.chain_broken(&rest, "a chained message was a duplicate on the hub");
            }
            other => {
                if let AckOutcome::Refused(e) = &other {
                    let newest = e.description.rsplit(": ").next().unwrap_or_default();
                    if e.err_code == 10070 && self.origin.parse(newest).is_none() {
                        if !self.chain_off {
                            info!(uplink = %self.cfg.name, hub_stream = %self.cfg.hub_stream, "the hub stream has other writers; asking for a PubAck on every message until the next connect");
                        }
                        self.chain_off = true;
                    }
                }
                self.chain_broken(&members, &describe(&other));
            }
        }
    }

    /// The chain broke at or before the last of `members` (sent, fate unknown): they are
    /// sent again from the cursor, with one PubAck each up to what was read so far.
    fn chain_broken(&mut self, members: &[u64], why: &str) {
        for m in members {
            if let Some(s) = self.in_flight.remove(m) {
                self.in_flight_bytes = self.in_flight_bytes.saturating_sub(s.bytes);
            }
        }
        self.chain = None;
        self.per_message_until = self.per_message_until.max(self.next.saturating_sub(1));
        if let Some(&first) = members.first() {
            self.fail(first, why);
        }
    }

    /// `seq` is on the hub (or skipped for good).
    fn done(&mut self, seq: u64, hub_seq: u64) {
        if seq <= self.cursor.acked {
            return;
        }
        if let Some(s) = self.in_flight.remove(&seq) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(s.bytes);
        }
        self.done_ahead.insert(seq, hub_seq);
        self.status.update(|s| s.acked_msgs += 1);
        self.advance();
    }

    /// `seq` must be sent again: stop sending, let what is in flight finish, then resume at
    /// the cursor after a backoff.
    fn fail(&mut self, seq: u64, why: &str) {
        self.failed_min = Some(self.failed_min.map_or(seq, |m| m.min(seq)));
        if !self.recovering {
            warn!(uplink = %self.cfg.name, seq, reason = why, "hub did not store a message; sending again from the cursor");
        }
        self.recovering = true;
        self.status.update(|s| {
            s.state = State::Stalled;
            s.last_error = Some(why.to_string());
        });
        self.advance();
    }

    /// Resumes sending at the cursor (what is done above it is skipped when read again).
    fn resume(&mut self) {
        self.recovering = false;
        self.chain = None;
        self.failed_min = None;
        self.read_ahead.clear();
        self.in_flight_bytes = 0;
        self.next = self.cursor.acked + 1;
        self.resume_at = Some(Instant::now() + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        self.status.update(|s| s.resent_rounds += 1);
    }

    /// Moves the cursor up to the first sequence that is not done.
    fn advance(&mut self) {
        let mut limit = self.next;
        if let Some((&first, _)) = self.in_flight.first_key_value() {
            limit = limit.min(first);
        }
        if let Some(f) = self.failed_min {
            limit = limit.min(f);
        }
        if let Some(r) = self.read_ahead.front() {
            limit = limit.min(r.seq);
        }
        let new_acked = limit.saturating_sub(1);
        if new_acked <= self.cursor.acked {
            return;
        }
        while let Some((&s, &h)) = self.done_ahead.first_key_value() {
            if s > new_acked {
                break;
            }
            if h > 0 {
                self.cursor.hub_seq = h;
            }
            self.done_ahead.pop_first();
        }
        self.cursor.acked = new_acked;
        self.status.update(|s| s.acked = new_acked);
    }

    /// Timeouts, cursor persistence, rates and progress logs.
    fn housekeeping(&mut self) {
        if self.settings.has_changed().unwrap_or(false) {
            let new = self.settings.borrow_and_update().clone();
            if new.rate_limit != self.cfg.rate_limit {
                self.bucket = new.rate_limit.map(TokenBucket::new);
            }
            self.window.reconfigure(new.max_in_flight, new.ack_timeout);
            self.cfg = new;
            info!(uplink = %self.cfg.name, max_in_flight = self.cfg.max_in_flight, rate_limit = ?self.cfg.rate_limit, "uplink settings reloaded");
        }
        let now = Instant::now();
        if let Some((&first, sent)) = self.in_flight.first_key_value() {
            if now.duration_since(sent.at) > self.cfg.ack_timeout {
                self.window.on_timeout();
                let n = self.in_flight.len();
                self.in_flight.clear();
                self.in_flight_bytes = 0;
                self.fail(
                    first,
                    &format!(
                        "no answer from the hub within {:?} for {n} messages",
                        self.cfg.ack_timeout
                    ),
                );
            }
        }
        self.persist();
        let window = self.window.limit();
        self.status.update(|s| s.window = window);
        self.status.tick();
        if now.duration_since(self.last_progress) >= PROGRESS_LOG {
            self.last_progress = now;
            let last = *self.appended.borrow();
            let backlog = last.saturating_sub(self.cursor.acked);
            if backlog > 0 {
                let rate = self.status.snapshot_rate();
                info!(uplink = %self.cfg.name, backlog, acked = self.cursor.acked, msgs_per_sec = rate as u64, "uplink forwarding");
            }
        }
    }

    /// Writes the cursor and frees what the hub holds, at most every `cursor_interval`, one
    /// write at a time.
    fn persist(&mut self) {
        if self.cursor.acked <= self.persisted
            || self.last_persist.elapsed() < self.cfg.cursor_interval
            || self.persist_task.as_ref().is_some_and(|t| !t.is_finished())
        {
            return;
        }
        self.last_persist = Instant::now();
        self.persisted = self.cursor.acked;
        let cursor = Cursor {
            version: Cursor::VERSION,
            epoch: self.epoch,
            ..self.cursor
        };
        let (store, stream, name) = (
            self.store.clone(),
            self.stream.clone(),
            self.cfg.name.clone(),
        );
        self.persist_task = Some(tokio::spawn(async move {
            write_cursor(&store, &stream, &name, cursor).await;
        }));
    }

    /// Writes the cursor now (at shutdown).
    async fn persist_now(&mut self) {
        if let Some(t) = self.persist_task.take() {
            let _ = t.await;
        }
        if self.cursor.acked > self.persisted {
            self.persisted = self.cursor.acked;
            let cursor = Cursor {
                version: Cursor::VERSION,
                epoch: self.epoch,
                ..self.cursor
            };
            write_cursor(&self.store, &self.stream, &self.cfg.name, cursor).await;
        }
    }
}

/// Stores the cursor, then removes the messages it covers from the buffer. The order matters:
/// a crash in between leaves messages the cursor already covers, never a gap the cursor does
/// not explain (which would be counted as dropped).
async fn write_cursor(store: &Store, stream: &str, name: &str, cursor: Cursor) {
    if let Err(e) = store
        .put_consumer(stream, record::CURSOR_KEY, cursor.encode())
        .await
    {
        warn!(uplink = %name, error = %e, "cannot store the uplink cursor");
        return;
    }
    let purge = PurgeRequest {
        up_to_seq: Some(cursor.acked + 1),
        ..PurgeRequest::default()
    };
    if let Err(e) = store.purge(stream, purge).await {
        warn!(uplink = %name, error = %e, "cannot free forwarded messages");
    }
}

/// A failure answer in words.
fn describe(outcome: &AckOutcome) -> String {
    match outcome {
        AckOutcome::Refused(e) => e.to_string(),
        AckOutcome::Status(503) => "no hub stream captures the subject (503)".to_string(),
        AckOutcome::Status(c) => format!("status {c}"),
        _ => "unreadable answer".to_string(),
    }
}

/// The bytes a message counts for in the window and the rate limit.
fn wire_size(msg: &StoredMessage) -> u64 {
    (msg.subject.len() + msg.headers.as_ref().map_or(0, |h| h.len()) + msg.payload.len()) as u64
}

/// What `pump` waits for after sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Answers (the window is full, or recovering).
    Answers,
    /// New messages in the buffer.
    NewMessages,
    /// A delay (rate limit, retry backoff).
    Delay(Duration),
}

impl Wait {
    fn is_delay(&self) -> bool {
        matches!(self, Wait::Delay(_))
    }

    fn delay(&self) -> Duration {
        match self {
            Wait::Delay(d) => *d,
            _ => Duration::ZERO,
        }
    }
}

/// A token bucket for the replay rate: `rate` bytes per second, bursts up to a tenth of a
/// second's worth (at least one large message).
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Adds the tokens earned since the last call, up to the burst size.
    fn earn(&mut self, n: u64) {
        let now = Instant::now();
        let burst = (self.rate / 10.0).max(n as f64);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(burst);
        self.last = now;
    }

    /// Whether `n` bytes' worth of tokens are there now (without taking them).
    fn has(&mut self, n: u64) -> bool {
        self.earn(n);
        self.tokens >= n as f64
    }

    /// Takes `n` bytes' worth of tokens, or says how long to wait for them.
    fn take(&mut self, n: u64) -> Option<Duration> {
        self.earn(n);
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            None
        } else {
            Some(Duration::from_secs_f64((n - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_paces_to_the_rate() {
        let mut b = TokenBucket::new(1000);
        // Starts empty: the first 100 bytes wait about 0.1 s.
        let d = b.take(100).unwrap();
        assert!(d > Duration::from_millis(50) && d <= Duration::from_millis(100));
        b.tokens = 100.0;
        assert_eq!(b.take(100), None);
        // A message larger than the burst still goes through eventually.
        b.tokens = 5000.0;
        assert_eq!(b.take(5000), None);
    }
}
