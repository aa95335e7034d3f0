//! What a stream keeps of the tasks working on it: its consumers ([`ConsumerHandle`], and the
//! [`Cmd`]s their tasks take) and its mirror or source tasks ([`SourceHandle`]).
//!
//! The handles live here, below the `stream`, `consumer` and `source` modules,
//! so that the stream can hold and command its consumers and sources without depending on
//! the modules that run them (which depend on the stream).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::consumer::ConsumerConfig;
use super::config::{ApiError, StreamSource};
use super::retention::SharedView;
use crate::server::ReplyTo;
use leaf_proto::time::now_ns;

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
    /// The consumer's info.
    Info(oneshot::Sender<Value>),
    /// A new configuration (already checked); answers with the info.
    Update(Box<ConsumerConfig>, oneshot::Sender<Value>),
    /// Stop; answers once no write of this consumer is in flight any more.
    Stop(oneshot::Sender<()>),
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
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ConsumerHandle {
    /// The handle of a consumer task that reads its commands from `tx`'s receiver.
    pub(crate) fn new(
        name: String,
        config: ConsumerConfig,
        view: SharedView,
        tx: mpsc::UnboundedSender<Cmd>,
    ) -> ConsumerHandle {
        ConsumerHandle {
            name,
            config: std::sync::Mutex::new(config),
            view,
            tx,
        }
    }

    /// Hands `cmd` to the consumer's task (dropped if the task has ended).
    pub(crate) fn send(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
    }

    /// The current configuration.
    pub(crate) fn config(&self) -> ConsumerConfig {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Asks the task for the consumer's info (`None` if it has stopped).
    pub(crate) async fn info(&self) -> Option<Value> {
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
    pub(crate) fn info(&self) -> Value {
        let last = self.status.last_ns.load(Ordering::Relaxed);
        let mut v = json!({
            "name": self.spec.name,
            "lag": self.status.lag.load(Ordering::Relaxed),
            "active": if last == 0 { -1 } else { (now_ns() - last).max(0) },
        });
        if let Some(ext) = &self.spec.external {
            v["external"] = json!(ext);
        }
        if let Some(e) = self
            .status
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            v["error"] = json!(e);
        }
        v
    }
}
