//! One uplink's task: reads its local buffer stream in order and forwards it to the hub
//! stream over the leaf link, pipelined; the [`Ledger`] decides how each message is sent and
//! when the gateway may forget it, and this task carries that out (buffer reads, link writes,
//! hub API requests, cursor writes).
//!
//! A connection goes through rounds. Each begins with a resynchronisation: the hub stream's
//! info (created when allowed and missing), proofs for what answers claimed stored, the newest
//! copy of this uplink's messages on the hub (read-back) and, where messages were sent one by
//! one, a walk over the uplink's hub subjects; then the cursor is persisted and sending starts
//! at it, skipping what is proven. A round ends on a failure (a refusal that may go away, no
//! answer within `ack_timeout`, a broken chain, a claim the hub stream contradicts): sending
//! stops, what is in flight is answered or times out, and after a backoff the next round
//! resynchronises. When the link drops, what was in flight has an unknown fate and the next
//! connection starts with a resynchronisation too. Every resend carries the message's
//! original `Nats-Msg-Id`.
//!
//! Answers from the hub are claims; proofs come from the hub's API (`STREAM.MSG.GET`) through
//! requests whose reply subjects carry random ids. The argument is in `ledger` and in
//! `leaf/DESIGN.md` ("Uplinks").

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::hub::{self, AckOutcome, Answer, HubCopy, TailEvent};
use super::ledger::{self, Durable, Found, Ledger, Plan, Reply, Settings, Verify};
use super::record::{self, Cursor, Origin};
use super::tail::{self, Tail};
use super::{State, StatusCell};
use crate::config::Uplink;
use leaf_core::jetstream::config::JsError;
use leaf_core::jetstream::wire::{ConsumerInfo, MsgGetRequest, StreamInfo};
use leaf_core::server::outbound::AppendOutcome;
use leaf_core::server::{ClientHandle, Shared};
use leaf_store::{PurgeRequest, Store, StoredMessage};

/// Most messages read from the buffer at once.
const READ_BATCH: usize = 256;
/// Most bytes read from the buffer at once.
const READ_BATCH_BYTES: u64 = 1 << 20;
/// How long an API request to the hub may take.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// Interval of the housekeeping tick (timeouts, persistence, rates).
const TICK: Duration = Duration::from_millis(100);
/// Interval of progress log lines while replaying, and of warnings about doubtful answers.
const PROGRESS_LOG: Duration = Duration::from_secs(10);
/// First wait after a failure before sending again; doubles up to [`MAX_RETRY_DELAY`].
const MIN_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Longest wait after repeated failures.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Longest walk over the uplink's hub subjects in one resynchronisation.
const WALK_TIME: Duration = Duration::from_secs(30);
/// The pause of verifications after one failed.
const VERIFY_PAUSE: Duration = Duration::from_secs(1);
/// Most subjects remembered for "denied by deny_exports" warnings.
const DENIED_WARNED: usize = 64;

/// Why a wait for the hub ended early.
enum Interrupted {
    /// The link went down (or another connection replaced it).
    LinkDown,
    /// The server is stopping.
    Stop,
    /// The local buffer stream was deleted (through the JetStream API).
    BufferGone,
}

/// Why the pump returned.
enum Ended {
    /// The round broke and drained: resynchronise after a backoff.
    Resync,
    /// The link, the server or the buffer went away.
    Interrupted(Interrupted),
}

/// What an API request in flight is for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// Read the hub stream where a claim says a message is.
    Verify(Verify),
    /// Nothing was there: ask the stream's last sequence (was it removed, or never there?).
    CheckRemoved(Verify),
    /// Nothing was there, but the stream has reached that position since: read it again. A
    /// replicated hub stream answers reads from a member's copy, which may not have applied
    /// the position at the first read and has by the `STREAM.INFO`; only a second miss
    /// means removed.
    Reread(Verify),
    /// One of the consumers of the proof tail with this nonce.
    TailCreated(u64),
}

/// What a proof read that found nothing at `hub_seq` means, once the stream's last sequence
/// is known.
#[derive(Debug, PartialEq, Eq)]
enum AfterMiss {
    /// The stream never reached that position: the message is not there.
    NeverThere,
    /// The stream has reached it: removed since, or (a replicated stream's copy that had
    /// not applied it at the first read) there now; only a second read tells.
    ReadAgain,
}

/// [`AfterMiss`] for a miss at `hub_seq` in a stream whose last sequence is `last_seq`.
fn after_a_miss(hub_seq: u64, last_seq: u64) -> AfterMiss {
    if hub_seq <= last_seq {
        AfterMiss::ReadAgain
    } else {
        AfterMiss::NeverThere
    }
}

/// Random nonces and request ids: a keyed hash (SipHash, keys from the OS's random source) of
/// a counter, so nobody who sees some of them can guess the others.
struct Secrets {
    keys: RandomState,
    counter: u64,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            keys: RandomState::new(),
            counter: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.keys.hash_one(self.counter)
    }
}

/// What the hub stream's info said.
#[derive(Debug, Clone, Copy, Default)]
struct HubStream {
    first_seq: u64,
    last_seq: u64,
}

/// Everything one uplink's task owns.
pub(crate) struct Forwarder {
    /// The server: for the proof tail's subscription.
    shared: Arc<Shared>,
    cfg: Uplink,
    stream: String,
    store: Store,
    origin: Origin,
    epoch: i64,
    link_rx: watch::Receiver<Option<Arc<ClientHandle>>>,
    answers: hub::Answers,
    appended: watch::Receiver<u64>,
    reply_prefix: String,
    api_prefix: String,
    status: Arc<StatusCell>,
    stop: watch::Receiver<bool>,
    /// New settings from a configuration reload (limits and pacing).
    settings: watch::Receiver<Uplink>,
    ledger: Ledger,
    /// Messages read from the buffer, not sent yet.
    read_ahead: VecDeque<StoredMessage>,
    /// The next sequence to read from the buffer.
    read_pos: u64,
    /// The connection the pump sends on (for requests made from answers).
    link: Option<Arc<ClientHandle>>,
    /// API requests in flight, by id: what for and when they time out.
    pending_api: HashMap<u64, (Purpose, Instant)>,
    /// No new verifications before this (after one went unanswered).
    verify_paused_until: Option<Instant>,
    secrets: Secrets,
    /// The proof tail, while the round sends one by one.
    tail: Option<Tail>,
    /// The hub refused to create a tail: not asked again before this.
    tail_refused_until: Option<Instant>,
    persist_task: Option<JoinHandle<Option<Durable>>>,
    last_persist: Instant,
    bucket: Option<TokenBucket>,
    api_warned: bool,
    hub_api: bool,
    hub: HubStream,
    last_progress: Instant,
    /// When doubtful answers were last reported, and how many there were then.
    last_doubtful_warning: (Option<Instant>, u64),
    denied_warned: HashSet<String>,
    retry_delay: Duration,
}

/// The ledger's settings from an uplink's configuration.
fn ledger_settings(cfg: &Uplink) -> Settings {
    Settings {
        ack_every: cfg.ack_every,
        max_in_flight: cfg.max_in_flight,
        ack_timeout: cfg.ack_timeout,
        verify_interval: cfg.cursor_interval,
        hwm_step: ledger::HWM_STEP,
    }
}

impl Forwarder {
    /// A forwarder starting from `cursor` (read from the store, or fresh).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        cfg: Uplink,
        store: Store,
        origin: Origin,
        epoch: i64,
        link_rx: watch::Receiver<Option<Arc<ClientHandle>>>,
        answers: hub::Answers,
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
        let durable = Durable {
            confirmed: cursor.acked,
            hub_seq: cursor.hub_seq,
            pm_hwm: cursor.pm_hwm,
        };
        Forwarder {
            shared,
            stream: cfg.stream_name(),
            ledger: Ledger::new(ledger_settings(&cfg), durable),
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
            read_ahead: VecDeque::new(),
            read_pos: cursor.acked + 1,
            link: None,
            pending_api: HashMap::new(),
            verify_paused_until: None,
            secrets: Secrets::new(),
            tail: None,
            tail_refused_until: None,
            persist_task: None,
            last_persist: Instant::now(),
            bucket,
            api_warned: false,
            hub_api: false,
            hub: HubStream::default(),
            last_progress: Instant::now(),
            last_doubtful_warning: (None, 0),
            denied_warned: HashSet::new(),
            retry_delay: MIN_RETRY_DELAY,
        }
    }

    /// Runs until the server stops.
    pub(crate) async fn run(mut self) {
        self.show_position();
        loop {
            let Some(link) = self.wait_for_link().await else {
                break;
            };
            self.link = Some(link.clone());
            let ended = loop {
                self.status.update(|s| s.state = State::Syncing);
                match self.resync(&link).await {
                    Err(e) => break e,
                    Ok(true) => {}
                    Ok(false) => {
                        // The cursor could not be written (the store refused): nothing is
                        // sent until it can be.
                        if let Err(e) = self.back_off(&link).await {
                            break e;
                        }
                        continue;
                    }
                }
                match self.pump(&link).await {
                    Ended::Interrupted(e) => break e,
                    Ended::Resync => {
                        if let Err(e) = self.back_off(&link).await {
                            break e;
                        }
                    }
                }
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

    /// In-flight messages have an unknown fate now; they are sent again after the next
    /// resynchronisation.
    fn link_lost(&mut self) {
        self.ledger.link_lost();
        self.read_ahead.clear();
        self.pending_api.clear();
        if let Some(t) = self.tail.take() {
            self.shared.global().unsubscribe_internal(&t.interest);
        }
        self.link = None;
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

    /// The wait after a failed round (doubling up to [`MAX_RETRY_DELAY`]), answers processed
    /// meanwhile.
    async fn back_off(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let until = tokio::time::Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        self.status.update(|s| {
            s.state = State::Stalled;
            s.resent_rounds += 1;
        });
        while let Some(a) = self.next_answer(link, until).await? {
            self.on_answer(a);
        }
        Ok(())
    }

    /// The next answer from the hub, or `None` once `deadline` passed; an error when the link
    /// drops or the server stops first.
    async fn next_answer(
        &mut self,
        link: &Arc<ClientHandle>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Answer>, Interrupted> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.stop.changed() => return Err(Interrupted::Stop),
                r = self.link_rx.changed() => {
                    if r.is_err() || !self.link_is_current(link) {
                        return Err(Interrupted::LinkDown);
                    }
                }
                a = self.answers.recv() => return a.map(Some).ok_or(Interrupted::Stop),
            }
        }
    }

    // ----- resynchronisation after every (re)connect and failed round --------------------

    /// Finds out what the hub holds, persists the cursor and opens a round: the hub stream's
    /// info (creating the stream when allowed), proofs for the claims on record, the read-back
    /// of the newest copy of this uplink's messages, and the walk over messages sent one by
    /// one. Without the hub's API (no JetStream on the hub, or a domain other than
    /// `hub_domain`), messages are still forwarded but nothing can be proven, so nothing is
    /// freed and sending stops once the caps are reached.
    /// Returns whether a round began.
    async fn resync(&mut self, link: &Arc<ClientHandle>) -> Result<bool, Interrupted> {
        self.end_tail(link);
        self.ledger.end_round();
        self.read_ahead.clear();
        self.read_pos = self.ledger.durable().confirmed + 1;
        self.hub_stream(link).await?;
        if self.hub_api {
            self.settle_claims(link).await?;
            self.read_back(link).await?;
            let d = self.ledger.durable();
            if d.pm_hwm > d.confirmed {
                self.walk(link).await?;
            }
        }
        self.persist_now().await;
        // Refused only while the cursor on disk is behind (the store refused the write):
        // nothing is in flight after a drained round or on a new link.
        let began = self.ledger.begin_round(self.hub.last_seq);
        if began && self.ledger.hwm_pending() {
            self.persist_now().await;
        }
        self.read_pos = self.ledger.durable().confirmed + 1;
        self.show_position();
        Ok(began)
    }

    /// Reads the hub stream's info (and creates the stream when allowed and missing).
    async fn hub_stream(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let info = self
            .request(link, &format!("STREAM.INFO.{}", self.cfg.hub_stream), b"")
            .await?;
        let Some(info) = info else {
            if !self.api_warned {
                self.api_warned = true;
                warn!(
                    uplink = %self.cfg.name,
                    api = %self.api_prefix,
                    "the hub's JetStream API does not answer through the link (is hub_domain the hub's JetStream domain?); messages are still forwarded, but a resend is only recognised within the hub stream's duplicate window, and nothing is freed on the gateway until the hub's stream can be read"
                );
            }
            self.hub_api = false;
            self.status.update(|s| {
                s.hub_api = false;
                s.last_error = Some(
                    "the hub's JetStream API does not answer: acknowledgements cannot be confirmed"
                        .into(),
                );
            });
            return Ok(());
        };
        self.hub_api = true;
        self.status.update(|s| s.hub_api = true);
        match StreamInfo::read(&info).map_err(hub::api_error) {
            Ok(v) => self.note_hub_stream(&v),
            Err(e) if e.is(JsError::StreamNotFound) && self.cfg.create_hub_stream => {
                self.create_hub_stream(link).await?;
            }
            Err(e) => {
                warn!(uplink = %self.cfg.name, hub_stream = %self.cfg.hub_stream, error = %e, "hub stream is not available; messages wait until it is");
                self.status
                    .update(|s| s.last_error = Some(format!("hub stream: {e}")));
            }
        }
        Ok(())
    }

    /// Takes what the uplink needs of the hub stream's info: its message size limit, its
    /// sequences and its duplicate window.
    fn note_hub_stream(&mut self, info: &StreamInfo) {
        let window = info.config.duplicate_window;
        self.ledger
            .hub_stream_limits(i64::from(info.config.max_msg_size));
        self.hub = HubStream {
            first_seq: info.state.first_seq,
            last_seq: info.state.last_seq,
        };
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
        match reply
            .as_deref()
            .map(|r| StreamInfo::read(r).map_err(hub::api_error))
        {
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

    /// Asks for proofs of every claim on record and waits for the answers (bounded).
    async fn settle_claims(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        self.verify_paused_until = None;
        self.start_verifications(link)?;
        let deadline = tokio::time::Instant::now() + API_TIMEOUT * 2;
        while !self.pending_api.is_empty() {
            match self.next_answer(link, deadline).await? {
                Some(a) => self.on_answer(a),
                None => break,
            }
        }
        self.expire_api(Instant::now() + API_TIMEOUT * 4);
        Ok(())
    }

    /// Asks the hub for the newest message on each of the uplink's hub subjects; the newest
    /// copy of this uplink's messages (checked against the buffer) is proven, with the chain
    /// below it (see `ledger`).
    async fn read_back(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let mut newest: Option<(u64, HubCopy)> = None;
        for filter in self.hub_filters() {
            let body = serde_json::to_vec(&MsgGetRequest {
                last_by_subj: Some(filter.clone()),
                ..MsgGetRequest::default()
            })
            .unwrap_or_default();
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
                Ok(Some(copy)) => {
                    match copy.msg_id.as_deref().and_then(|id| self.origin.parse(id)) {
                        Some(local) if newest.as_ref().is_none_or(|(n, _)| local > *n) => {
                            newest = Some((local, copy));
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
        let Some((local, copy)) = newest else {
            return Ok(());
        };
        let before = self.ledger.durable().confirmed;
        if local <= before {
            return Ok(());
        }
        if self.prove_copy(&copy).await {
            let after = self.ledger.durable().confirmed;
            if after > before {
                info!(
                    uplink = %self.cfg.name,
                    cursor = before,
                    hub_holds = after,
                    "the hub already holds messages sent earlier; not sending them again"
                );
            }
        }
        Ok(())
    }

    /// Walks the uplink's hub subjects from the cursor's hub position, proving the copies of
    /// messages sent one by one (they prove nothing of each other), so that they are not sent
    /// again even after the hub's duplicate window. Bounded in time; what it does not reach is
    /// sent again.
    async fn walk(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let deadline = Instant::now() + WALK_TIME;
        for filter in self.hub_filters() {
            let d = self.ledger.durable();
            let mut from = if d.hub_seq > 0 {
                d.hub_seq + 1
            } else {
                self.hub.first_seq.max(1)
            };
            loop {
                let d = self.ledger.durable();
                if d.confirmed >= d.pm_hwm || Instant::now() >= deadline {
                    return Ok(());
                }
                let body = serde_json::to_vec(&MsgGetRequest {
                    seq: from,
                    next_by_subj: Some(filter.clone()),
                    ..MsgGetRequest::default()
                })
                .unwrap_or_default();
                let reply = self
                    .request(
                        link,
                        &format!("STREAM.MSG.GET.{}", self.cfg.hub_stream),
                        &body,
                    )
                    .await?;
                let Some(Ok(Some(copy))) = reply.as_deref().map(hub::parse_msg_get) else {
                    break;
                };
                from = copy.seq + 1;
                match copy.msg_id.as_deref().and_then(|id| self.origin.parse(id)) {
                    Some(local) if local > d.pm_hwm => break,
                    Some(local) if local > d.confirmed => {
                        self.prove_copy(&copy).await;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Proves a copy of one of this uplink's messages read from the hub, if it is the message
    /// in the buffer (same subject and payload). Returns whether it did.
    async fn prove_copy(&mut self, copy: &HubCopy) -> bool {
        let Some(found @ Found::Copy { seq, content, .. }) = self.found(copy) else {
            return false;
        };
        let store = self.store.clone();
        let stream = self.stream.clone();
        let local = tokio::task::spawn_blocking(move || store.get(&stream, seq)).await;
        let Ok(Ok(Some(local))) = local else {
            return false;
        };
        let expected =
            ledger::content_hash(self.hub_subject(&local.subject).as_bytes(), &local.payload);
        if expected != content {
            warn!(uplink = %self.cfg.name, seq, hub_seq = copy.seq, "the hub stream holds a different message under this uplink's id of a buffered message; it stays in the buffer");
            self.status.update(|s| {
                s.last_error = Some(format!(
                    "the hub stream holds a different message under the id of message {seq}"
                ))
            });
            return false;
        }
        self.ledger.on_read_back(copy.seq, found);
        true
    }

    /// What a copy read from the hub is, for the ledger.
    fn found(&self, copy: &HubCopy) -> Option<Found> {
        let seq = copy
            .msg_id
            .as_deref()
            .and_then(|id| self.origin.parse(id))?;
        let linked_to = copy
            .expect_last
            .as_deref()
            .and_then(|id| self.origin.parse(id));
        Some(Found::Copy {
            seq,
            linked_to,
            content: ledger::content_hash(copy.subject.as_bytes(), &copy.data),
        })
    }

    /// Sends one API request and waits for its answer: `Ok(None)` on timeout.
    async fn request(
        &mut self,
        link: &Arc<ClientHandle>,
        api: &str,
        payload: &[u8],
    ) -> Result<Option<Bytes>, Interrupted> {
        let id = self.send_api(link, api, payload)?;
        let deadline = tokio::time::Instant::now() + API_TIMEOUT;
        loop {
            match self.next_answer(link, deadline).await? {
                Some(Answer::Api { id: got, body }) if got == id => return Ok(Some(body)),
                Some(other) => self.on_answer(other),
                None => return Ok(None),
            }
        }
    }

    /// Writes an API request into the link (flushed) with a fresh random reply id.
    fn send_api(
        &mut self,
        link: &Arc<ClientHandle>,
        api: &str,
        payload: &[u8],
    ) -> Result<u64, Interrupted> {
        let id = self.secrets.next();
        let subject = format!("{}{api}", self.api_prefix);
        let reply = format!("{}r.{id:x}", self.reply_prefix);
        match hub::send(
            link,
            subject.as_bytes(),
            Some(reply.as_bytes()),
            None,
            payload,
        ) {
            hub::Sent::Queued(AppendOutcome::Closed) => return Err(Interrupted::LinkDown),
            hub::Sent::Queued(_) => {}
            hub::Sent::Denied => {
                if !self.api_warned {
                    self.api_warned = true;
                    warn!(uplink = %self.cfg.name, %subject, "the remote's deny_exports cover the hub's JetStream API: nothing can be confirmed");
                }
            }
        }
        link.out.flush();
        Ok(id)
    }

    // ----- proofs while forwarding ------------------------------------------------------

    /// Sends the verification requests the ledger asks for.
    fn start_verifications(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let now = Instant::now();
        if self.verify_paused_until.is_some_and(|t| now < t) || !self.ledger.has_claims() {
            return Ok(());
        }
        for v in self.ledger.verifications(now, self.tail_running()) {
            let body = serde_json::to_vec(&MsgGetRequest {
                seq: v.hub_seq,
                ..MsgGetRequest::default()
            })
            .unwrap_or_default();
            let id = self.send_api(
                link,
                &format!("STREAM.MSG.GET.{}", self.cfg.hub_stream),
                &body,
            )?;
            self.pending_api
                .insert(id, (Purpose::Verify(v), now + API_TIMEOUT));
        }
        Ok(())
    }

    /// Reads the position of claim `v` again ([`Purpose::Reread`]).
    fn reread(&mut self, v: Verify) {
        let body = serde_json::to_vec(&MsgGetRequest {
            seq: v.hub_seq,
            ..MsgGetRequest::default()
        })
        .unwrap_or_default();
        let sent = self.link.clone().map(|link| {
            self.send_api(
                &link,
                &format!("STREAM.MSG.GET.{}", self.cfg.hub_stream),
                &body,
            )
        });
        match sent {
            Some(Ok(id)) => {
                self.pending_api
                    .insert(id, (Purpose::Reread(v), Instant::now() + API_TIMEOUT));
            }
            _ => {
                self.ledger.verify_failed(v);
                self.pause_verifications();
            }
        }
    }

    /// An API answer for a request made in the background.
    fn on_api(&mut self, purpose: Purpose, body: &[u8]) {
        let reread = matches!(purpose, Purpose::Reread(_));
        match purpose {
            Purpose::Verify(v) | Purpose::Reread(v) => match hub::parse_msg_get(body) {
                Ok(Some(copy)) => {
                    let found = self.found(&copy).unwrap_or(Found::Other);
                    self.ledger.on_verified(v, found);
                }
                // Read again after the stream reached the position: removed since.
                Ok(None) if reread => self.ledger.on_verified(v, Found::Missing { removed: true }),
                Ok(None) => {
                    // Nothing there: removed since, or never there. The stream's last
                    // sequence tells which.
                    let sent = self.link.clone().map(|link| {
                        self.send_api(&link, &format!("STREAM.INFO.{}", self.cfg.hub_stream), b"")
                    });
                    match sent {
                        Some(Ok(id)) => {
                            self.pending_api.insert(
                                id,
                                (Purpose::CheckRemoved(v), Instant::now() + API_TIMEOUT),
                            );
                        }
                        _ => {
                            self.ledger.verify_failed(v);
                            self.pause_verifications();
                        }
                    }
                }
                // The hub stream does not exist, so it stores nothing.
                Err(e) if e.is(JsError::StreamNotFound) => {
                    self.ledger
                        .on_verified(v, Found::Missing { removed: false });
                }
                Err(e) => {
                    debug!(uplink = %self.cfg.name, error = %e, "verification failed");
                    self.ledger.verify_failed(v);
                    self.pause_verifications();
                }
            },
            Purpose::TailCreated(nonce) => self.on_tail_created(nonce, body),
            Purpose::CheckRemoved(v) => match StreamInfo::read(body).map_err(hub::api_error) {
                Ok(info) => {
                    self.note_hub_stream(&info);
                    match after_a_miss(v.hub_seq, self.hub.last_seq) {
                        AfterMiss::ReadAgain => self.reread(v),
                        AfterMiss::NeverThere => self
                            .ledger
                            .on_verified(v, Found::Missing { removed: false }),
                    }
                }
                Err(_) => {
                    self.ledger.verify_failed(v);
                    self.pause_verifications();
                }
            },
        }
    }

    // ----- the proof tail ---------------------------------------------------------------

    /// Whether a proof tail delivers the hub stream's copies now.
    fn tail_running(&self) -> bool {
        self.tail.as_ref().is_some_and(|t| !t.consumers.is_empty())
    }

    /// Starts the proof tail when the round sends one by one, ends it when it does not any
    /// more, and starts it again when it went quiet.
    fn maintain_tail(&mut self, link: &Arc<ClientHandle>) -> Result<(), Interrupted> {
        let now = Instant::now();
        let wanted = self.hub_api
            && self.ledger.sending()
            && self.ledger.one_by_one_round()
            && self.tail_refused_until.is_none_or(|t| now >= t);
        if let Some(t) = &self.tail {
            let dead = t.is_dead(now);
            if dead && wanted {
                debug!(uplink = %self.cfg.name, "the proof tail went quiet; creating it again");
            }
            if dead || !wanted {
                self.end_tail(link);
            }
        }
        if !wanted || self.tail.is_some() {
            return Ok(());
        }
        let nonce = self.secrets.next();
        let deliver = tail::deliver_subject(&self.reply_prefix, nonce);
        // nats-server delivers a push consumer's messages across a leafnode link only to
        // interest in the literal deliver subject: the wildcard of the uplink's replies is
        // not enough. The deliveries reach the uplink through that wildcard.
        let interest = match self.shared.global().subscribe_internal(
            deliver.as_bytes(),
            None,
            Arc::new(tail::Interest),
        ) {
            Ok(sub) => sub,
            Err(e) => {
                warn!(uplink = %self.cfg.name, error = %e, "cannot subscribe the proof tail's deliver subject");
                self.tail_refused_until = Some(now + tail::RETRY_AFTER);
                return Ok(());
            }
        };
        let from = self.ledger.round_base() + 1;
        for filter in self.hub_filters() {
            let body = tail::create_request(&self.cfg.hub_stream, &deliver, &filter, from);
            let id = self.send_api(
                link,
                &format!("CONSUMER.CREATE.{}", self.cfg.hub_stream),
                &body,
            )?;
            self.pending_api
                .insert(id, (Purpose::TailCreated(nonce), now + API_TIMEOUT));
        }
        self.tail = Some(Tail::new(nonce, interest, now));
        Ok(())
    }

    /// Ends the proof tail, deleting its consumers on the hub (their answers are not
    /// awaited).
    fn end_tail(&mut self, link: &Arc<ClientHandle>) {
        let Some(t) = self.tail.take() else {
            return;
        };
        self.shared.global().unsubscribe_internal(&t.interest);
        for name in t.consumers {
            let api = format!("CONSUMER.DELETE.{}.{name}", self.cfg.hub_stream);
            let _ = self.send_api(link, &api, b"");
        }
    }

    /// A delivery of the proof tail.
    fn on_tail(&mut self, nonce: u64, event: TailEvent) {
        let Some(t) = self.tail.as_mut().filter(|t| t.nonce == nonce) else {
            return;
        };
        t.last_seen = Instant::now();
        match event {
            TailEvent::Copy {
                hub_seq,
                msg_id,
                expect_last,
            } => {
                let Some(seq) = msg_id.as_deref().and_then(|id| self.origin.parse(id)) else {
                    return;
                };
                let linked_to = expect_last.as_deref().and_then(|id| self.origin.parse(id));
                self.status.update(|s| s.tail_copies += 1);
                self.ledger.on_read_back(
                    hub_seq,
                    Found::Copy {
                        seq,
                        linked_to,
                        content: 0,
                    },
                );
            }
            TailEvent::Control {
                flow_control: Some(subject),
            } => {
                if let Some(link) = self.link.clone() {
                    let _ = hub::send(&link, subject.as_bytes(), None, None, b"");
                    link.out.flush();
                }
            }
            TailEvent::Control { flow_control: None } => {}
        }
    }

    /// The answer to the creation of one of a tail's consumers.
    fn on_tail_created(&mut self, nonce: u64, body: &[u8]) {
        let Some(t) = self.tail.as_mut().filter(|t| t.nonce == nonce) else {
            return;
        };
        match ConsumerInfo::read(body).map_err(hub::api_error) {
            Ok(info) => {
                if !info.name.is_empty() {
                    t.consumers.push(info.name);
                }
                t.last_seen = Instant::now();
            }
            Err(e) => {
                warn!(uplink = %self.cfg.name, error = %e, "the hub did not create the proof tail's consumer; messages sent one by one are proven by reading each back");
                self.tail_refused_until = Some(Instant::now() + tail::RETRY_AFTER);
                if let Some(link) = self.link.clone() {
                    self.end_tail(&link);
                }
            }
        }
    }

    /// After a verification the hub could not answer, the next ones wait a little.
    fn pause_verifications(&mut self) {
        self.verify_paused_until = Some(Instant::now() + VERIFY_PAUSE);
    }

    /// Gives up on background API requests older than their deadline (`now` past it): their
    /// proofs are asked again after a pause.
    fn expire_api(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending_api
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(&id, _)| id)
            .collect();
        let mut verifications_expired = false;
        for id in expired {
            match self.pending_api.remove(&id) {
                Some((Purpose::Verify(v) | Purpose::CheckRemoved(v) | Purpose::Reread(v), _)) => {
                    self.ledger.verify_failed(v);
                    verifications_expired = true;
                }
                // A tail whose consumer was never created goes quiet and is made again.
                Some((Purpose::TailCreated(_), _)) | None => {}
            }
        }
        if verifications_expired {
            self.pause_verifications();
        }
    }

    // ----- forwarding -------------------------------------------------------------------

    /// Sends, collects answers and proofs until the round breaks and drains, the link drops
    /// or the server stops.
    async fn pump(&mut self, link: &Arc<ClientHandle>) -> Ended {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *self.stop.borrow() {
                return Ended::Interrupted(Interrupted::Stop);
            }
            if !self.link_is_current(link) {
                return Ended::Interrupted(Interrupted::LinkDown);
            }
            if self.ledger.ready_to_resync() {
                if let Some(why) = self.ledger.broken() {
                    let why = describe_break(why);
                    warn!(uplink = %self.cfg.name, reason = %why, "sending again from what the hub is proven to hold");
                    self.status.update(|s| s.last_error = Some(why));
                }
                return Ended::Resync;
            }
            let wait = match self.send_some(link).await {
                Ok(wait) => wait,
                Err(e) => return Ended::Interrupted(e),
            };
            if let Err(e) = self
                .maintain_tail(link)
                .and_then(|()| self.start_verifications(link))
            {
                return Ended::Interrupted(e);
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => return Ended::Interrupted(Interrupted::Stop),
                r = self.link_rx.changed() => {
                    if r.is_err() || !self.link_is_current(link) {
                        return Ended::Interrupted(Interrupted::LinkDown);
                    }
                }
                a = self.answers.recv() => match a {
                    Some(a) => {
                        self.on_answer(a);
                        while let Some(a) = self.answers.try_recv() {
                            self.on_answer(a);
                        }
                    }
                    None => return Ended::Interrupted(Interrupted::Stop),
                },
                _ = tick.tick() => self.housekeeping().await,
                r = self.appended.changed(), if wait == Wait::NewMessages => {
                    if r.is_err() {
                        return Ended::Interrupted(Interrupted::BufferGone);
                    }
                }
                _ = tokio::time::sleep(wait.delay()), if wait.is_delay() => {}
            }
        }
    }

    /// Adds a burst's sends to the status counters.
    fn count_sent(&self, msgs: u64, bytes: u64) {
        if msgs > 0 {
            self.status.update(|s| {
                s.sent_msgs += msgs;
                s.sent_bytes += bytes;
            });
        }
    }

    /// Sends as much as the ledger, the rate limit and the buffer allow.
    async fn send_some(&mut self, link: &Arc<ClientHandle>) -> Result<Wait, Interrupted> {
        if !self.ledger.sending() {
            return Ok(Wait::Answers);
        }
        let mut sent_any = false;
        // Counted here and reported once per burst (the status cell is shared).
        let (mut sent_msgs, mut sent_bytes) = (0u64, 0u64);
        // One clock read per burst (and after every wait): the send time only serves the
        // ack timeout, which is seconds.
        let mut now = Instant::now();
        let result = loop {
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
            let (seq, size) = (msg.seq, wire_size(msg));
            if let Some(bucket) = &mut self.bucket {
                if !bucket.has(size) {
                    let delay = bucket.take(size).unwrap_or_default();
                    break Wait::Delay(delay);
                }
            }
            let next_size = self.read_ahead.get(1).map(wire_size);
            let successor = next_size.is_some_and(|next| {
                self.ledger.room_after(size, next, seq + 1)
                    && self.bucket.as_mut().is_none_or(|b| b.has(size + next))
            });
            let plan = match self.ledger.plan(seq, size, successor) {
                Plan::Wait => break Wait::Answers,
                Plan::RaiseHwm(_) => {
                    self.persist_now().await;
                    now = Instant::now();
                    if self.ledger.needs_persist() {
                        // The store refused the write: try again in a while.
                        break Wait::Delay(MAX_RETRY_DELAY);
                    }
                    continue;
                }
                Plan::Send(plan) => plan,
            };
            let Some(msg) = self.read_ahead.pop_front() else {
                break Wait::NewMessages;
            };
            if let Some(bucket) = &mut self.bucket {
                let _ = bucket.take(size);
            }
            let msg_id = self.origin.msg_id(seq);
            let expect = plan.expect_last.map(|q| self.origin.msg_id(q));
            let subject = self.hub_subject(&msg.subject);
            let headers = record::hub_headers(msg.headers.as_deref(), &msg_id, expect.as_deref());
            let tag = plan.reply.then(|| {
                (
                    self.secrets.next(),
                    ledger::content_hash(subject.as_bytes(), &msg.payload),
                )
            });
            let reply = tag.map(|(nonce, _)| format!("{}a.{seq}.{nonce:x}", self.reply_prefix));
            let outcome = hub::send(
                link,
                subject.as_bytes(),
                reply.as_deref().map(str::as_bytes),
                Some(&headers),
                &msg.payload,
            );
            let outcome = match outcome {
                hub::Sent::Denied => {
                    self.ledger.denied(seq);
                    self.warn_denied(&subject);
                    continue;
                }
                hub::Sent::Queued(AppendOutcome::Closed) => {
                    self.count_sent(sent_msgs, sent_bytes);
                    return Err(Interrupted::LinkDown);
                }
                hub::Sent::Queued(o) => o,
            };
            let hub_bytes = (headers.len() + msg.payload.len()) as u64;
            self.ledger.sent(seq, plan, size, hub_bytes, tag, now);
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
            self.status.update(|s| s.state = State::Forwarding);
        } else if result == Wait::NewMessages
            && self.ledger.in_flight() == 0
            && self.ledger.unproven() == 0
        {
            self.show_position();
            self.status.update(|s| s.state = State::Live);
        }
        Ok(result)
    }

    /// Logs (once per subject, for a bounded number of subjects) a message kept off the link
    /// by the remote's `deny_exports`.
    fn warn_denied(&mut self, subject: &str) {
        if self.denied_warned.len() < DENIED_WARNED && self.denied_warned.insert(subject.into()) {
            warn!(uplink = %self.cfg.name, %subject, "the remote's deny_exports cover this subject: its messages are not forwarded (counted as denied)");
        }
    }

    /// Reads the next messages from the buffer into `read_ahead`, skipping what is already
    /// done and counting what the buffer dropped. Returns false when there is nothing new.
    async fn refill(&mut self) -> bool {
        let store = self.store.clone();
        let (stream, from) = (self.stream.clone(), self.read_pos);
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
            if msg.seq < self.read_pos {
                continue;
            }
            if msg.seq > self.read_pos {
                dropped += msg.seq - self.read_pos;
                self.ledger.absent(self.read_pos, msg.seq - 1);
            }
            self.read_pos = msg.seq + 1;
            if self.ledger.is_done(msg.seq) {
                continue;
            }
            self.read_ahead.push_back(msg);
        }
        if dropped > 0 {
            warn!(uplink = %self.cfg.name, dropped, "buffer limits dropped messages before they reached the hub");
        }
        !self.read_ahead.is_empty() || self.refill_more_pending()
    }

    /// Whether more may be readable right away (everything read was already done).
    fn refill_more_pending(&self) -> bool {
        *self.appended.borrow() >= self.read_pos
    }

    fn on_answer(&mut self, answer: Answer) {
        match answer {
            Answer::Ack {
                seq,
                nonce,
                outcome,
            } => {
                let reply = self.reply_of(outcome);
                let stored = matches!(reply, Reply::Stored { .. });
                self.ledger.on_reply(seq, nonce, reply, Instant::now());
                if stored {
                    self.status.update(|s| s.last_ack = Some(SystemTime::now()));
                }
            }
            Answer::Api { id, body } => {
                if let Some((purpose, _)) = self.pending_api.remove(&id) {
                    self.on_api(purpose, &body);
                }
            }
            Answer::Tail { nonce, event } => self.on_tail(nonce, event),
        }
    }

    /// What a PubAck says, for the ledger.
    fn reply_of(&self, outcome: AckOutcome) -> Reply {
        match outcome {
            AckOutcome::Stored {
                seq,
                duplicate,
                stream,
                domain,
            } => Reply::Stored {
                hub_seq: seq,
                duplicate,
                // The domain is the one the API answered in (without an answering API nothing
                // is proven anyway, and the domain cannot be known).
                names_match: stream == self.cfg.hub_stream
                    && (!self.hub_api
                        || self
                            .cfg
                            .hub_domain
                            .as_ref()
                            .is_none_or(|d| domain.as_deref() == Some(d.as_str()))),
            },
            AckOutcome::Refused(e) => {
                // Wrong last msg id: its description names the stream's newest one.
                let newest = e.description.rsplit(": ").next().unwrap_or_default();
                let other_writer =
                    e.is(JsError::StreamWrongLastMsgId) && self.origin.parse(newest).is_none();
                if other_writer {
                    info!(uplink = %self.cfg.name, hub_stream = %self.cfg.hub_stream, "the hub stream may have other writers; sending one by one (each message proven on its own) until the next connect");
                }
                Reply::Refused {
                    err_code: e.err_code,
                    other_writer,
                }
            }
            AckOutcome::Status(_) | AckOutcome::Garbled => Reply::NotStored,
        }
    }

    /// Timeouts, cursor persistence, rates and progress logs.
    async fn housekeeping(&mut self) {
        if self.settings.has_changed().unwrap_or(false) {
            let new = self.settings.borrow_and_update().clone();
            if new.rate_limit != self.cfg.rate_limit {
                self.bucket = new.rate_limit.map(TokenBucket::new);
            }
            self.ledger.reconfigure(ledger_settings(&new));
            self.cfg = new;
            info!(uplink = %self.cfg.name, max_in_flight = self.cfg.max_in_flight, rate_limit = ?self.cfg.rate_limit, "uplink settings reloaded");
        }
        let now = Instant::now();
        self.ledger.tick(now);
        self.expire_api(now);
        self.persist().await;
        self.show_position();
        self.status.tick();
        let counters = self.ledger.counters();
        let (at, seen) = self.last_doubtful_warning;
        if counters.doubtful_answers > seen
            && at.is_none_or(|at| now.duration_since(at) >= PROGRESS_LOG)
        {
            warn!(uplink = %self.cfg.name, answers = counters.doubtful_answers - seen, "answers on the uplink's reply subjects that the hub cannot have sent, or that its stream contradicts, were ignored (is a client on the hub answering them?)");
            self.last_doubtful_warning = (Some(now), counters.doubtful_answers);
        }
        if now.duration_since(self.last_progress) >= PROGRESS_LOG {
            self.last_progress = now;
            let last = *self.appended.borrow();
            let confirmed = self.ledger.durable().confirmed;
            let backlog = last.saturating_sub(confirmed);
            if backlog > 0 {
                let rate = self.status.snapshot_rate();
                info!(uplink = %self.cfg.name, backlog, acked = confirmed, unproven = self.ledger.unproven(), msgs_per_sec = rate as u64, "uplink forwarding");
            }
        }
    }

    /// Copies the ledger's position and counters into the status.
    fn show_position(&self) {
        let d = self.ledger.durable();
        let c = self.ledger.counters();
        let window = self.ledger.window_limit();
        let unproven = self.ledger.unproven();
        let answers_dropped = self.answers.dropped();
        self.status.update(|s| {
            s.answers_dropped = answers_dropped;
            s.acked = d.confirmed;
            if d.hub_seq > 0 {
                s.last_hub_seq = d.hub_seq;
            }
            s.window = window;
            s.acked_msgs = c.proven + c.rejected;
            s.dropped = c.dropped;
            s.rejected = c.rejected;
            s.denied = c.denied;
            s.unproven_msgs = unproven;
            s.doubtful_answers = c.doubtful_answers;
            s.unproven_accepted = c.unproven_accepted;
        });
    }

    /// Writes the cursor and frees what the hub is proven to hold, at most every
    /// `cursor_interval`, one write at a time.
    async fn persist(&mut self) {
        if let Some(t) = &self.persist_task {
            if !t.is_finished() {
                return;
            }
            // Finished: the await returns at once.
            if let Some(t) = self.persist_task.take() {
                if let Ok(Some(d)) = t.await {
                    self.ledger.persisted(d);
                }
            }
        }
        if !self.ledger.needs_persist() || self.last_persist.elapsed() < self.cfg.cursor_interval {
            return;
        }
        self.last_persist = Instant::now();
        let d = self.ledger.durable();
        let (store, stream, name, cursor) = (
            self.store.clone(),
            self.stream.clone(),
            self.cfg.name.clone(),
            self.cursor_record(d),
        );
        self.persist_task = Some(tokio::spawn(async move {
            write_cursor(&store, &stream, &name, cursor)
                .await
                .then_some(d)
        }));
    }

    /// Writes the cursor now and waits for it (before a round, before raising `pm_hwm`, at
    /// shutdown).
    async fn persist_now(&mut self) {
        if let Some(t) = self.persist_task.take() {
            if let Ok(Some(d)) = t.await {
                self.ledger.persisted(d);
            }
        }
        if self.ledger.needs_persist() {
            self.last_persist = Instant::now();
            let d = self.ledger.durable();
            if write_cursor(
                &self.store,
                &self.stream,
                &self.cfg.name,
                self.cursor_record(d),
            )
            .await
            {
                self.ledger.persisted(d);
            }
        }
    }

    fn cursor_record(&self, d: Durable) -> Cursor {
        Cursor {
            version: Cursor::VERSION,
            epoch: self.epoch,
            acked: d.confirmed,
            hub_seq: d.hub_seq,
            pm_hwm: d.pm_hwm,
        }
    }
}

/// Stores the cursor, then removes the messages it covers from the buffer. The order matters:
/// a crash in between leaves messages the cursor already covers, never a gap the cursor does
/// not explain (which would be counted as dropped). Returns whether the cursor was stored.
async fn write_cursor(store: &Store, stream: &str, name: &str, cursor: Cursor) -> bool {
    if let Err(e) = store
        .put_consumer(stream, record::CURSOR_KEY, cursor.encode())
        .await
    {
        warn!(uplink = %name, error = %e, "cannot store the uplink cursor");
        return false;
    }
    let purge = PurgeRequest {
        up_to_seq: Some(cursor.acked + 1),
        ..PurgeRequest::default()
    };
    if let Err(e) = store.purge(stream, purge).await {
        warn!(uplink = %name, error = %e, "cannot free forwarded messages");
    }
    true
}

/// A broken round in words.
fn describe_break(why: &ledger::Break) -> String {
    match why {
        ledger::Break::NotStored(s) | ledger::Break::Contradicted(s) => s.clone(),
        ledger::Break::Timeout(n) => format!("no answer from the hub for {n} messages"),
        ledger::Break::Duplicate => "a chained message was a duplicate on the hub".to_string(),
    }
}

/// The bytes a message counts for in the window and the rate limit.
fn wire_size(msg: &StoredMessage) -> u64 {
    (msg.subject.len() + msg.headers.as_ref().map_or(0, |h| h.len()) + msg.payload.len()) as u64
}

/// What `pump` waits for after sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Answers (the window is full, or the round is broken).
    Answers,
    /// New messages in the buffer.
    NewMessages,
    /// A delay (rate limit).
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

    /// A miss below the stream's last sequence is read again (a lagging copy of a replicated
    /// stream may have applied it since), never taken as removed at once; beyond it the
    /// message was never there.
    #[test]
    fn a_miss_within_the_stream_is_read_again() {
        assert_eq!(after_a_miss(8425, 8425), AfterMiss::ReadAgain);
        assert_eq!(after_a_miss(10, 20_000), AfterMiss::ReadAgain);
        assert_eq!(after_a_miss(8426, 8425), AfterMiss::NeverThere);
        assert_eq!(after_a_miss(1, 0), AfterMiss::NeverThere);
    }

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
