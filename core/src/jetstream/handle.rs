//! What a stream keeps of the tasks working on it: its consumers ([`ConsumerHandle`], and the
//! [`Cmd`]s their tasks take) and its mirror or source tasks ([`SourceHandle`]).
//!
//! The handles live here, below the `stream`, `consumer` and `source` modules,
//! so that the stream can hold and command its consumers and sources without depending on
//! the modules that run them (which depend on the stream).
//!
//! A consumer's commands are bounded: what clients send it (pull requests, acks, flow control
//! answers) by [`CONSUMER_MAX_BYTES`] (past it they are refused: see [`ConsumerHandle::offer`]),
//! the stream's notices of new messages by [`MAX_APPENDED_QUEUED`] (past it the stream sends one
//! [`Cmd::CatchUp`] instead, and the consumer counts what it missed from the store). The few
//! commands of the API (info, update, stop) are not charged.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use leaf_proto::printable::printable;
use tokio::sync::{oneshot, watch};

use super::config::consumer::ConsumerConfig;
use super::config::{ApiError, StreamSource};
use super::retention::SharedView;
use super::wire::{ConsumerInfo, StreamSourceInfo};
use crate::budget::{self, Budget};
use crate::server::ReplyTo;
use leaf_proto::time::now_ns;

/// Most bytes of client commands (pull requests, acks, flow control answers) waiting for one
/// consumer's task (plus [`budget::ITEM_OVERHEAD`] each).
pub(crate) const CONSUMER_MAX_BYTES: usize = 2 << 20;
/// Most notices of new messages waiting for one consumer's task.
pub(crate) const MAX_APPENDED_QUEUED: usize = 16_384;

/// A new consumer command channel, bounded by [`CONSUMER_MAX_BYTES`].
pub(crate) fn consumer_channel() -> (budget::Sender<Cmd>, budget::Receiver<Cmd>) {
    budget::channel(Arc::new(Budget::new(CONSUMER_MAX_BYTES, usize::MAX)))
}

/// How far a consumer's task is behind the stream's notices (shared by handle and task).
#[derive(Debug, Default)]
pub(crate) struct Lag {
    /// [`Cmd::Appended`] notices sent and not handled yet.
    pub(crate) queued: AtomicUsize,
    /// A [`Cmd::CatchUp`] is on its way: no notices are sent until it is handled.
    pub(crate) catching_up: AtomicBool,
}

/// A message for a consumer's task.
pub(crate) enum Cmd {
    /// A pull request.
    Next {
        /// Where the messages go.
        reply: ReplyTo,
        /// The request body.
        payload: Bytes,
    },
    /// An ack on one delivered message.
    Ack {
        /// Its stream sequence.
        sseq: u64,
        /// Its consumer sequence.
        dseq: u64,
        /// The ack body.
        body: Bytes,
        /// The ack's own reply subject.
        reply: Option<ReplyTo>,
    },
    /// The stream stored message `seq` on `subject`.
    Appended {
        /// Its sequence.
        seq: u64,
        /// Its subject.
        subject: Arc<str>,
    },
    /// A flow control answer: the client published to this `$JS.FC.…` subject.
    FlowControl {
        /// The subject it published to.
        subject: String,
    },
    /// Messages were removed from the stream: count the pending ones again.
    Recount,
    /// Notices of new messages were left out (too many queued): count again, and take
    /// notices again.
    CatchUp,
    /// The consumer's info.
    Info(oneshot::Sender<ConsumerInfo>),
    /// A new configuration (already checked); answers with the info.
    Update(Box<ConsumerConfig>, oneshot::Sender<ConsumerInfo>),
    /// Stop; answers once no write of this consumer is in flight any more.
    Stop(oneshot::Sender<()>),
    /// Stop because another member takes the consumer over (a replicated consumer's group
    /// changed leader): as `Stop`, the waiting pull requests told `409 Leadership Change`
    /// (nats-server's status) rather than `409 Consumer Deleted`.
    Handover(oneshot::Sender<()>),
}

/// A running consumer, as its stream keeps it.
pub(crate) struct ConsumerHandle {
    /// The consumer's name.
    pub(crate) name: String,
    /// The configuration it was created with (updated by [`Cmd::Update`] through the API).
    pub(crate) config: std::sync::Mutex<ConsumerConfig>,
    /// What the other consumers need of its acks (interest retention, see
    /// [`super::retention`]).
    pub(crate) view: SharedView,
    tx: budget::Sender<Cmd>,
    lag: Arc<Lag>,
}

impl ConsumerHandle {
    /// The handle of a consumer task that reads its commands from `tx`'s receiver and shares
    /// `lag` with it.
    pub(crate) fn new(
        name: String,
        config: ConsumerConfig,
        view: SharedView,
        tx: budget::Sender<Cmd>,
        lag: Arc<Lag>,
    ) -> ConsumerHandle {
        ConsumerHandle {
            name,
            config: std::sync::Mutex::new(config),
            view,
            tx,
            lag,
        }
    }

    /// Hands a command of the server's own (not a client's) to the consumer's task, uncharged
    /// (dropped if the task has ended).
    pub(crate) fn send(&self, cmd: Cmd) {
        self.tx.send_uncharged(cmd);
    }

    /// Hands a client's command of `bytes` bytes to the consumer's task if the consumer's
    /// budget has room; gives it back (for an answer, or to drop it) when it has not. A
    /// refusal is logged at most every 10 s.
    pub(crate) fn offer(&self, cmd: Cmd, bytes: usize) -> Result<(), Cmd> {
        self.tx.try_send(cmd, bytes).inspect_err(|_| {
            let budget = self.tx.budget();
            if budget.should_report() {
                tracing::warn!(consumer = %printable(&self.name), held_bytes = budget.bytes(),
                               refused = budget.refused(),
                               "consumer command queue full, pull requests and acks refused");
            }
        })
    }

    /// Tells the consumer's task that the stream stored message `seq` on `subject`; when it is
    /// [`MAX_APPENDED_QUEUED`] notices behind, it is told once to catch up instead.
    pub(crate) fn appended(&self, seq: u64, subject: Arc<str>) {
        if self.lag.catching_up.load(Ordering::Acquire) {
            return;
        }
        if self.lag.queued.load(Ordering::Relaxed) >= MAX_APPENDED_QUEUED {
            if !self.lag.catching_up.swap(true, Ordering::AcqRel) {
                self.send(Cmd::CatchUp);
            }
            return;
        }
        self.lag.queued.fetch_add(1, Ordering::Relaxed);
        self.send(Cmd::Appended { seq, subject });
    }

    /// The current configuration.
    pub(crate) fn config(&self) -> ConsumerConfig {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Asks the task for the consumer's info (`None` if it has stopped).
    pub(crate) async fn info(&self) -> Option<ConsumerInfo> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Info(tx));
        rx.await.ok()
    }

    /// Stops the task and waits until none of its writes is in flight.
    pub(crate) async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Stop(tx));
        let _ = rx.await;
    }

    /// [`ConsumerHandle::stop`] for a hand-over to another member (see [`Cmd::Handover`]).
    pub(crate) async fn hand_over(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Handover(tx));
        let _ = rx.await;
    }
}

/// What `STREAM.INFO` shows of a mirror or source.
#[derive(Debug, Default)]
pub(crate) struct SourceStatus {
    /// Messages the origin holds beyond the newest copy.
    pub(crate) lag: AtomicU64,
    /// When something last arrived from the origin (ns since the epoch; 0: never).
    pub(crate) last_ns: AtomicI64,
    /// The latest problem, cleared by the next success.
    pub(crate) error: Mutex<Option<ApiError>>,
}

impl SourceStatus {
    /// Records that something arrived from the origin now.
    pub(crate) fn touch(&self) {
        self.last_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Sets or clears the latest problem.
    pub(crate) fn set_error(&self, e: Option<ApiError>) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = e;
    }
}

/// A running mirror or source task.
pub(crate) struct SourceHandle {
    /// The origin it copies from, as configured.
    pub(crate) spec: StreamSource,
    /// What the stream's info shows of it.
    pub(crate) status: Arc<SourceStatus>,
    /// Set to ask the task to end.
    pub(crate) stop: watch::Sender<bool>,
}

impl SourceHandle {
    /// Asks the task to delete its consumer and end.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The `StreamSourceInfo` of the stream info.
    pub(crate) fn info(&self) -> StreamSourceInfo {
        let last = self.status.last_ns.load(Ordering::Relaxed);
        StreamSourceInfo {
            name: self.spec.name.clone(),
            external: self.spec.external.clone(),
            lag: self.status.lag.load(Ordering::Relaxed),
            active: if last == 0 {
                -1
            } else {
                (now_ns() - last).max(0)
            },
            error: self
                .status
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}
