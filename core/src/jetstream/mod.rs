//! JetStream on the durable [`Store`]: streams, pull and push consumers, their API and publish
//! acknowledgements.
//!
//! * [`config`]: stream and consumer configuration, as nats-server shapes them.
//! * [`wire`]: typed API bodies (stream and consumer infos, the consumer create request,
//!   PubAck, MSG.GET, the `type` and `error` envelopes) shared with sources and the leafd
//!   uplink's hub side.
//! * [`errors`]: the one table of nats-server error codes the API answers with ([`errors::JsError`]).
//! * [`accounts`]: every account's engine, started at boot or at run time, and switched off
//!   (data kept) or on again.
//! * [`api`]: the `$JS.API.` request handlers (one task, requests in order).
//! * [`stream`]: capturing published messages into a stream and acknowledging them once they
//!   are durable (see its module documentation for pipelining, dedup and limits).
//! * [`consumer`]: pull and push consumers, their acks, redeliveries and persisted state (see
//!   its module documentation for the persistence rule).
//! * [`retention`]: interest and workqueue retention (which acknowledged messages leave).
//! * [`replication`]: the hook of a clustered server (hubd) for replicated streams.
//! * [`source`]: mirrors and sources, copying other streams (local or over a leaf link).
//! * [`headers`], [`time`]: NATS header blocks and Go-style timestamps.
//!
//! The engine plugs into the server through internal subscriptions (see
//! [`crate::server::Shared::subscribe_internal`]): one on `$JS.API.>` (and
//! `$JS.<domain>.API.>`), one on `$JS.ACK.>`, one on `$JS.FC.>` (push flow control answers),
//! and one per subject of every stream. Pull requests (`CONSUMER.MSG.NEXT`), acks and flow
//! control answers go straight to the consumer's task, not through the API task.
//!
//! Every answer (API replies, PubAcks, a pull request's messages and statuses, an ack's
//! reply) goes to a [`ReplyTo`] made from the request's publisher when it arrived: only where
//! the requester may publish itself (see [`crate::server::reply`]). With a domain, a request
//! on `$JS.<domain>.API.X` is served as `$JS.API.X`, and permissions apply to both subjects
//! (see [`crate::server::jsdomain`]).
//!
//! Every queue these subscriptions fill is bounded by a [`Budget`] (see `core/DESIGN.md`,
//! "Bounded memory"): API requests by [`API_MAX_BYTES`] and [`API_MAX_REQUESTS`] (past them
//! a request is answered at once with 429 "too many requests", 10167), each stream's ingest
//! (see [`stream`]), each consumer's commands (see [`handle`]).

pub mod accounts;
pub mod api;
pub mod cluster_r1;
pub mod config;
pub mod consumer;
pub mod disabled;
pub mod errors;
pub mod handle;
pub mod info_request;
mod msg_ids;
pub mod reads;
pub mod replication;
mod republish;
pub mod retention;
pub mod settings;
pub mod source;
pub mod stream;
pub mod wire;

use leaf_proto::printable::printable;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::config::{ApiError, StreamConfig};
use self::stream::{Capture, Stream};
use crate::budget::{self, Budget};
use crate::server::jsdomain::DomainApi;
use crate::server::{Account, InternalSink, Msg, Publisher, ReplyTo, Shared, SubRef};
use leaf_store::{QuarantineTarget, Quarantined, Store, StoreError, StoreOptions};

/// How JetStream is set up.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// Directory of the store (created if missing).
    pub store_dir: PathBuf,
    /// The JetStream domain, if any: the API is also served on `$JS.<domain>.API.>`.
    pub domain: Option<String>,
    /// Most bytes the store file may use.
    pub max_file_bytes: Option<u64>,
    /// Most bytes the memory store of `storage: memory` streams may use (`None`:
    /// [`DEFAULT_MAX_MEMORY_BYTES`]).
    pub max_memory_bytes: Option<u64>,
    /// Most streams (an account's `max_streams`; `None`: unlimited).
    pub max_streams: Option<u64>,
    /// Most consumers, all streams together (an account's `max_consumers`; `None`:
    /// unlimited).
    pub max_consumers: Option<u64>,
}

/// The memory store's bound when `max_memory_store` is not set. nats-server takes 75 % of the
/// machine's memory; a gateway shares a small board with its applications, so the default is
/// a fixed, small figure.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;

/// Why JetStream could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamError {
    /// The store could not be opened.
    #[error("cannot open the JetStream store in {dir}: {source}")]
    Store {
        /// The store directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The API subjects could not be subscribed.
    #[error("cannot subscribe the JetStream API: {0}")]
    Subscribe(String),
}

/// Most bytes of API requests waiting for the API task (subject, reply and payload, plus
/// [`budget::ITEM_OVERHEAD`] each).
pub const API_MAX_BYTES: usize = 8 << 20;
/// Most API requests waiting for the API task (nats-server's `JSDefaultRequestQueueLimit`).
pub const API_MAX_REQUESTS: usize = 10_000;

/// One stream's size, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream.
    pub name: String,
    /// Stored messages.
    pub messages: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// Consumers.
    pub consumers: usize,
}

/// What the store keeps as a stream's configuration bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    pub(crate) config: StreamConfig,
    pub(crate) created_ns: i64,
}

/// A running JetStream engine. Dropping it does not stop it; the server's shutdown does.
#[derive(Clone)]
pub struct JetStream {
    inner: Arc<Inner>,
}

/// State shared by the API task and the streams.
pub(crate) struct Inner {
    /// The store of `storage: file` streams (and of every stream's record).
    pub(crate) store: Store,
    /// The store of `storage: memory` streams: in memory only, bounded by
    /// `max_memory_bytes`, gone after a restart (see `leaf_store::Store::open_memory`).
    pub(crate) memory: Store,
    pub(crate) max_memory_bytes: u64,
    pub(crate) server: Weak<Account>,
    /// The server (its replication hook: see [`replication`]).
    pub(crate) shared: Weak<Shared>,
    pub(crate) domain: Option<String>,
    pub(crate) max_file_bytes: Option<u64>,
    /// Most streams and consumers (an account's limits; changed at run time by
    /// [`JetStream::set_counts`]).
    counts: RwLock<CountLimits>,
    /// Set while the account's JetStream is switched off ([`JetStream::suspend`]): the API
    /// answers "not enabled" (10039), no stream captures or delivers; the stores stay.
    suspended: std::sync::atomic::AtomicBool,
    streams: RwLock<HashMap<String, Arc<Stream>>>,
    captures: Mutex<HashMap<String, Vec<SubRef>>>,
    pub(crate) api_total: AtomicU64,
    /// The budget every stream's ingest budget is part of.
    all_streams: Arc<Budget>,
    /// Records quarantined because they could not be read (see [`JetStream::quarantined`]).
    quarantined: Mutex<Vec<Quarantined>>,
    /// Reads of replicated streams waiting for the group's leader ([`reads`]).
    pub(crate) reads_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// Hands API requests to the API task, and pull requests to their consumer. Each request's
/// reply subject becomes a [`ReplyTo`] from its publisher: the answers go only where the
/// requester may publish (see [`crate::server::reply`]).
struct ApiSink {
    tx: budget::Sender<api::Request>,
    /// The domain whose API this sink serves (`None`: `$JS.API.>`).
    domain: Option<DomainApi>,
    engine: Weak<Inner>,
}

/// Hands acks (`$JS.ACK.>`) to their consumer.
struct AckSink(Weak<Inner>);

impl InternalSink for AckSink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let Some(inner) = self.0.upgrade().filter(|i| !i.is_suspended()) else {
            return;
        };
        let subject = String::from_utf8_lossy(msg.subject);
        let Some((stream, consumer, sseq, dseq)) = consumer::parse_ack_subject(&subject) else {
            return;
        };
        if let Some(c) = inner.stream(stream).and_then(|s| s.consumer(consumer)) {
            let bytes = msg.payload.len() + msg.reply.map_or(0, <[u8]>::len);
            // Refused when the consumer holds too much already: the ack is lost, and the
            // message is redelivered as for any lost ack.
            let _ = c.offer(
                handle::Cmd::Ack {
                    sseq,
                    dseq,
                    body: Bytes::copy_from_slice(msg.payload),
                    reply: msg.reply.map(|r| from.reply_to(r)),
                },
                bytes,
            );
        }
    }
}

/// Hands flow control answers (`$JS.FC.<stream>.<consumer>.<n>`) to their consumer.
struct FlowControlSink(Weak<Inner>);

impl InternalSink for FlowControlSink {
    fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
        let Some(inner) = self.0.upgrade().filter(|i| !i.is_suspended()) else {
            return;
        };
        let subject = String::from_utf8_lossy(msg.subject);
        let Some(rest) = subject.strip_prefix("$JS.FC.") else {
            return;
        };
        let mut it = rest.split('.');
        let (Some(stream), Some(consumer), Some(_), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return;
        };
        if let Some(c) = inner.stream(stream).and_then(|s| s.consumer(consumer)) {
            // Refused when the consumer holds too much: the consumer asks again (stalled).
            let _ = c.offer(
                handle::Cmd::FlowControl {
                    subject: subject.clone().into_owned(),
                },
                subject.len(),
            );
        }
    }
}

impl InternalSink for ApiSink {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let api = self.domain.as_ref().and_then(|d| d.resolve(msg.subject));
        let subject = String::from_utf8_lossy(api.as_deref().unwrap_or(msg.subject)).into_owned();
        if let Some(inner) = self.engine.upgrade().filter(|i| i.is_suspended()) {
            if let (Some(account), Some(reply)) = (inner.server.upgrade(), msg.reply) {
                disabled::answer_not_enabled(&account, &from.reply_to(reply), &subject);
            }
            return;
        }
        if let Some(rest) = subject.strip_prefix("$JS.API.CONSUMER.MSG.NEXT.") {
            if let (Some(inner), Some(reply)) = (self.engine.upgrade(), msg.reply) {
                inner.pull_request(
                    rest,
                    from.reply_to(reply),
                    Bytes::copy_from_slice(msg.payload),
                );
            }
            return;
        }
        let bytes = msg.subject.len() + msg.reply.map_or(0, <[u8]>::len) + msg.payload.len();
        let request = api::Request {
            subject,
            reply: msg.reply.map(|r| from.reply_to(r)),
            payload: Bytes::copy_from_slice(msg.payload),
            forwarded: false,
        };
        if let Err(refused) = self.tx.try_send(request, bytes) {
            self.refuse(&refused);
        }
    }
}

impl ApiSink {
    /// Answers a request the API's queue has no room for with 429 "too many requests" at
    /// once (nats-server drops it, and the requester times out); warns at most every 10 s.
    fn refuse(&self, request: &api::Request) {
        let budget = self.tx.budget();
        if budget.should_report() {
            warn!(
                held_bytes = budget.bytes(),
                held_requests = budget.items(),
                refused = budget.refused(),
                "JetStream API queue full (requests faster than they are served), requests refused"
            );
        }
        let (Some(reply), Some(inner)) = (&request.reply, self.engine.upgrade()) else {
            return;
        };
        let Some(server) = inner.server.upgrade() else {
            return;
        };
        let refusal = wire::ErrorResponse {
            kind: None,
            error: ApiError::too_many_requests(),
        };
        let body = serde_json::to_vec(&refusal).unwrap_or_default();
        server.answer(reply, None, &body);
    }
}

impl JetStream {
    /// Opens the store, resumes every stored stream and starts serving the API of
    /// `account` (a subject space of `server`). Must be called within a tokio runtime.
    pub fn start(
        server: &Arc<Shared>,
        account: &Arc<Account>,
        opts: JetStreamOptions,
    ) -> Result<JetStream, JetStreamError> {
        let store = Store::open(
            &opts.store_dir,
            StoreOptions {
                max_file_bytes: opts.max_file_bytes,
                ..StoreOptions::default()
            },
        )
        .map_err(|source| JetStreamError::Store {
            dir: opts.store_dir.clone(),
            source,
        })?;
        let max_memory_bytes = opts.max_memory_bytes.unwrap_or(DEFAULT_MAX_MEMORY_BYTES);
        let memory = Store::open_memory(StoreOptions {
            max_file_bytes: Some(max_memory_bytes),
            ..StoreOptions::default()
        })
        .map_err(|source| JetStreamError::Store {
            dir: opts.store_dir.clone(),
            source,
        })?;
        let inner = Arc::new(Inner {
            store,
            memory,
            max_memory_bytes,
            server: Arc::downgrade(account),
            shared: Arc::downgrade(server),
            domain: opts.domain.clone(),
            max_file_bytes: opts.max_file_bytes,
            counts: RwLock::new(CountLimits {
                max_streams: opts.max_streams,
                max_consumers: opts.max_consumers,
            }),
            suspended: std::sync::atomic::AtomicBool::new(false),
            streams: RwLock::new(HashMap::new()),
            captures: Mutex::new(HashMap::new()),
            api_total: AtomicU64::new(0),
            all_streams: stream::all_streams_budget(),
            quarantined: Mutex::new(Vec::new()),
            reads_in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        // What the store quarantined when it opened (or in an earlier run) stays listed.
        let earlier = inner
            .store
            .quarantined()
            .map_err(|source| JetStreamError::Store {
                dir: opts.store_dir.clone(),
                source,
            })?;
        for q in &earlier {
            warn!(record = %q.what, reason = %q.reason, "quarantined store record (not served)");
        }
        *inner
            .quarantined
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = earlier;
        inner
            .load_stored()
            .map_err(|source| JetStreamError::Store {
                dir: opts.store_dir.clone(),
                source,
            })?;
        let (tx, mut rx) =
            budget::channel::<api::Request>(Arc::new(Budget::new(API_MAX_BYTES, API_MAX_REQUESTS)));
        let mut api_subjects = vec![("$JS.API.>".to_string(), None)];
        if let Some(d) = &opts.domain {
            let domain = DomainApi::new(d);
            // Permissions and deny lists check what a domain request calls from now on.
            let _ = server.js_domain.set(domain.clone());
            api_subjects.push((format!("$JS.{d}.API.>"), Some(domain)));
        }
        for (subject, domain) in api_subjects {
            let sink = Arc::new(ApiSink {
                tx: tx.clone(),
                domain,
                engine: Arc::downgrade(&inner),
            });
            account
                .subscribe_internal(subject.as_bytes(), None, sink)
                .map_err(|e| JetStreamError::Subscribe(e.to_string()))?;
        }
        account
            .subscribe_internal(
                b"$JS.ACK.>",
                None,
                Arc::new(AckSink(Arc::downgrade(&inner))),
            )
            .map_err(|e| JetStreamError::Subscribe(e.to_string()))?;
        account
            .subscribe_internal(
                b"$JS.FC.>",
                None,
                Arc::new(FlowControlSink(Arc::downgrade(&inner))),
            )
            .map_err(|e| JetStreamError::Subscribe(e.to_string()))?;
        let worker = inner.clone();
        tokio::spawn(async move {
            // The request's charge is held until it is answered.
            while let Some((req, _charge)) = rx.recv().await {
                worker
                    .api_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if worker.is_suspended() {
                    // Queued before the engine was switched off.
                    if let (Some(account), Some(reply)) = (worker.server.upgrade(), &req.reply) {
                        disabled::answer_not_enabled(&account, reply, &req.subject);
                    }
                    continue;
                }
                worker.handle(req).await;
            }
        });
        server
            .jetstream
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!(
            store_dir = %opts.store_dir.display(),
            streams = inner.streams_snapshot().len(),
            domain = opts.domain.as_deref().unwrap_or(""),
            "JetStream ready"
        );
        Ok(JetStream { inner })
    }

    /// The names of the streams.
    pub fn stream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .streams_snapshot()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    /// The file store under the engine.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The store holding stream `name` (the memory store for a `storage: memory` stream).
    pub fn store_of(&self, name: &str) -> &Store {
        self.inner.store_of(name)
    }

    /// Creates stream `config.name`, or updates it to `config` when it exists with another
    /// configuration, exactly as `STREAM.CREATE`/`STREAM.UPDATE` would.
    pub async fn ensure_stream(&self, config: &StreamConfig) -> Result<(), ApiError> {
        self.inner.ensure_stream(config).await
    }

    /// When stream `name` was created (ns since the epoch): a stream deleted and created
    /// again has a new value.
    pub fn stream_created_ns(&self, name: &str) -> Option<i64> {
        self.inner.stream(name).map(|s| s.created_ns)
    }

    /// Per stream: name, messages, bytes, consumers (sorted by name), for monitoring.
    pub fn stream_summaries(&self) -> Vec<StreamSummary> {
        let mut v: Vec<StreamSummary> = self
            .inner
            .streams_snapshot()
            .iter()
            .map(|s| {
                let state = self
                    .inner
                    .store_of(&s.name)
                    .stream_state(&s.name)
                    .ok()
                    .flatten();
                StreamSummary {
                    name: s.name.clone(),
                    messages: state.map_or(0, |st| st.msgs),
                    bytes: state.map_or(0, |st| st.bytes),
                    consumers: s.consumer_count(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// API requests served since the start.
    pub fn api_requests(&self) -> u64 {
        self.inner
            .api_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The JetStream domain, if any.
    pub fn domain(&self) -> Option<&str> {
        self.inner.domain.as_deref()
    }

    /// The store's size limit, if any.
    pub fn max_file_bytes(&self) -> Option<u64> {
        self.inner.max_file_bytes
    }

    /// Whether the store answers reads (for health checks).
    pub fn check_store(&self) -> Result<(), String> {
        self.inner
            .store
            .streams()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Store records that could not be read and were moved aside (this run or earlier):
    /// they are not served, everything else is. Shown on `/healthz` and `/jsz`.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the most streams and consumers (an account JWT update): streams and
    /// consumers beyond new limits stay; creating more is refused until below them.
    pub fn set_counts(&self, max_streams: Option<u64>, max_consumers: Option<u64>) {
        *self
            .inner
            .counts
            .write()
            .unwrap_or_else(PoisonError::into_inner) = CountLimits {
            max_streams,
            max_consumers,
        };
    }

    /// Switches the engine off (an account JWT no longer enables JetStream), as nats-server
    /// disables an account's JetStream: every stream and consumer stops (their data stays in
    /// the stores) and the API answers "not enabled for account" (10039) until
    /// [`JetStream::resume`].
    pub fn suspend(&self) {
        let inner = &self.inner;
        if inner
            .suspended
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        for stream in inner.streams_snapshot() {
            inner.close_stream(&stream.name);
        }
        info!(
            streams_kept = inner.store.streams().map_or(0, |s| s.len()),
            "JetStream switched off for the account (its data stays)"
        );
    }

    /// Switches a suspended engine on again: its stored streams and consumers resume.
    pub fn resume(&self) -> Result<(), JetStreamError> {
        let inner = &self.inner;
        if !inner.is_suspended() {
            return Ok(());
        }
        let loaded = inner.load_stored();
        inner
            .suspended
            .store(false, std::sync::atomic::Ordering::Release);
        loaded.map_err(|source| JetStreamError::Store {
            dir: PathBuf::new(),
            source,
        })?;
        info!(
            streams = inner.streams_snapshot().len(),
            "JetStream switched on again for the account"
        );
        Ok(())
    }

    /// Whether the engine is switched off ([`JetStream::suspend`]).
    pub fn is_suspended(&self) -> bool {
        self.inner.is_suspended()
    }

    /// Watches the sequence of the newest message of stream `name` acknowledged as stored.
    pub fn watch_appended(&self, name: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.stream(name).map(|s| s.appended.subscribe())
    }
}

/// What the engine's unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::JetStreamOptions;
    use crate::server::{Server, ServerOptions};

    /// A server bound on a free port (not running).
    pub(crate) async fn server() -> Server {
        Server::bind(ServerOptions {
            port: 0,
            ..ServerOptions::default()
        })
        .await
        .expect("a server binds")
    }

    /// JetStream options with the store in `dir` and no limits.
    pub(crate) fn options(dir: &std::path::Path) -> JetStreamOptions {
        JetStreamOptions {
            store_dir: dir.to_path_buf(),
            domain: None,
            max_file_bytes: None,
            max_memory_bytes: None,
            max_streams: None,
            max_consumers: None,
        }
    }
}

/// Most streams and consumers of one engine (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CountLimits {
    max_streams: Option<u64>,
    max_consumers: Option<u64>,
}

impl Inner {
    /// Most streams (`None`: unlimited).
    pub(crate) fn max_streams(&self) -> Option<u64> {
        self.counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .max_streams
    }

    /// Most consumers, all streams together (`None`: unlimited).
    pub(crate) fn max_consumers(&self) -> Option<u64> {
        self.counts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .max_consumers
    }

    /// The server's replication hook and this engine's account name, when the server is
    /// clustered (see [`replication`]).
    pub(crate) fn replication(&self) -> Option<(Arc<dyn replication::Replication>, String)> {
        let hook = self.shared.upgrade()?.js_replication.get()?.clone();
        let account = self.server.upgrade()?.name().to_owned();
        Some((hook, account))
    }

    /// Whether the engine is switched off ([`JetStream::suspend`]).
    fn is_suspended(&self) -> bool {
        self.suspended.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Opens every stream recorded in the stores (file, then memory: after a
    /// [`JetStream::suspend`] the memory store still holds its streams) with its consumers.
    /// A record that cannot be read is quarantined, never fatal: under systemd's `Restart=`
    /// an exit would be a crash loop that also stops every gateway.
    fn load_stored(&self) -> Result<(), StoreError> {
        let mut stored = self.store.streams()?;
        stored.extend(self.memory.streams()?);
        for (name, bytes, _) in stored {
            if self.stream(&name).is_some() {
                continue;
            }
            let record: StoredConfig = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    let reason = format!("stored configuration: {e}");
                    self.quarantine(QuarantineTarget::Stream(name), reason, bytes.len());
                    continue;
                }
            };
            if let Err(e) = self.open_stream(&name, record.config, record.created_ns) {
                self.close_stream(&name);
                let reason = format!("stored configuration: {}", e.description);
                self.quarantine(QuarantineTarget::Stream(name), reason, bytes.len());
                continue;
            }
            self.restore_consumers(&name);
            if let Some(stream) = self.stream(&name) {
                retention::reconcile(&*stream, self.store_of(&name));
            }
        }
        Ok(())
    }

    /// Resumes the stored consumers of stream `name`; one that cannot be read is
    /// quarantined and the others resume.
    pub(crate) fn restore_consumers(&self, name: &str) {
        let Some(stream) = self.stream(name) else {
            return;
        };
        let stored = match self.store_of(name).consumers(name) {
            Ok(s) => s,
            Err(e) => {
                warn!(stream = %printable(&name), error = %e, "cannot read the stored consumers");
                return;
            }
        };
        for (cname, bytes) in stored {
            if cname.contains('.') {
                // Not a consumer: state of an in-process reader (an uplink's cursor); consumer
                // names cannot contain dots.
                continue;
            }
            let len = bytes.len();
            // A replicated consumer is its group's: started on the member leading it.
            let replicated = consumer::decode_record(&bytes)
                .is_ok_and(|(config, _)| replication::wants_group(&stream.config(), &config));
            if replicated {
                continue;
            }
            let started = consumer::decode_record(&bytes).and_then(|(config, created_ns)| {
                consumer::start(
                    &stream,
                    self.store_of(name).clone(),
                    self.server.clone(),
                    config,
                    created_ns,
                    Some(bytes),
                )
            });
            match started {
                Ok(handle) => stream.add_consumer(handle),
                Err(e) => self.quarantine(
                    QuarantineTarget::Consumer(name.to_string(), cname),
                    format!("stored state: {e}"),
                    len,
                ),
            }
        }
    }

    /// Moves an unreadable record aside: logged, listed at once, written in the background.
    fn quarantine(&self, target: QuarantineTarget, reason: String, bytes: usize) {
        let what = target.key();
        tracing::error!(record = %what, reason = %reason, "store record unreadable: quarantined, not served");
        self.quarantined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Quarantined {
                what: what.clone(),
                at_ns: leaf_proto::time::now_ns(),
                reason: reason.clone(),
                bytes,
            });
        let store = match &target {
            QuarantineTarget::Stream(s) | QuarantineTarget::Consumer(s, _) => self.store_of(s),
        };
        let written = store.quarantine(target, reason);
        tokio::spawn(async move {
            if let Err(e) = written.await {
                warn!(record = %what, error = %e, "cannot move the record into quarantine");
            }
        });
    }

    /// Hands a pull request (`<stream>.<consumer>` after `CONSUMER.MSG.NEXT.`) to its
    /// consumer; without one the requester is told there are no responders (503).
    pub(crate) fn pull_request(&self, names: &str, reply: ReplyTo, payload: Bytes) {
        let mut it = names.split('.');
        let found = match (it.next(), it.next(), it.next()) {
            (Some(s), Some(c), None) => self.stream(s).and_then(|s| s.consumer(c)),
            _ => None,
        };
        match found {
            Some(c) => {
                let bytes = reply.subject().len() + payload.len();
                if let Err(handle::Cmd::Next { reply, .. }) =
                    c.offer(handle::Cmd::Next { reply, payload }, bytes)
                {
                    // More requests than the consumer holds: as when too many wait.
                    if let Some(server) = self.server.upgrade() {
                        let hdr =
                            leaf_proto::headers::Builder::new(Some((409, "Exceeded MaxWaiting")))
                                .finish();
                        server.answer(&reply, Some(&hdr), b"");
                    }
                }
            }
            None => {
                // A replicated consumer led by another member: its leader serves it. Not a
                // request whose answers are confined to the requester (a reply subject it may
                // not publish to, see `server::reply`): the leader could not confine them, so
                // the messages would reach anyone subscribed to that subject there.
                let forwarded = match (self.replication(), names.split_once('.')) {
                    (Some((hook, account)), Some((s, c))) if reply.confined_to().is_none() => {
                        hook.forward_pull(&account, s, c, reply.subject(), &payload)
                    }
                    _ => false,
                };
                if forwarded {
                    return;
                }
                if let Some(server) = self.server.upgrade() {
                    let hdr = leaf_proto::headers::Builder::new(Some((503, ""))).finish();
                    server.answer(&reply, Some(&hdr), b"");
                }
            }
        }
    }

    pub(crate) fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub(crate) fn streams_snapshot(&self) -> Vec<Arc<Stream>> {
        self.streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Starts a stream's task and subscribes its subjects (not a replicated stream's copy).
    pub(crate) fn open_stream(
        &self,
        name: &str,
        config: StreamConfig,
        created_ns: i64,
    ) -> Result<(), ApiError> {
        let stream = stream::start(
            name.to_string(),
            config.clone(),
            created_ns,
            self.store_for(config.storage).clone(),
            self.server.clone(),
            self.domain.clone(),
            self.all_streams.clone(),
        );
        self.streams
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), stream.clone());
        if config.is_replicated() {
            // A replicated stream's copy: it answers reads but takes no publish and copies
            // nothing (see `replication`).
            return Ok(());
        }
        self.subscribe_subjects(&stream, &config.subjects)?;
        source::sync(
            &stream,
            self.store_for(config.storage),
            &self.server,
            &config,
        );
        Ok(())
    }

    fn subscribe_subjects(
        &self,
        stream: &Arc<Stream>,
        subjects: &[String],
    ) -> Result<(), ApiError> {
        let Some(server) = self.server.upgrade() else {
            return Err(ApiError::general("server is shutting down"));
        };
        let mut subs = Vec::new();
        for subject in subjects {
            let sink = Arc::new(Capture(Arc::downgrade(stream)));
            match server.subscribe_internal(subject.as_bytes(), None, sink) {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    for s in &subs {
                        server.unsubscribe_internal(s);
                    }
                    return Err(ApiError::invalid_config(&e.to_string()));
                }
            }
        }
        self.captures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stream.name.clone(), subs);
        Ok(())
    }

    fn unsubscribe_subjects(&self, name: &str) {
        let subs = self
            .captures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let (Some(subs), Some(server)) = (subs, self.server.upgrade()) {
            for s in &subs {
                server.unsubscribe_internal(s);
            }
        }
    }

    /// Applies a new configuration to a running stream.
    pub(crate) fn reconfigure(
        &self,
        stream: &Arc<Stream>,
        config: StreamConfig,
    ) -> Result<(), ApiError> {
        let subjects_changed = stream.config().subjects != config.subjects;
        stream.set_config(config.clone());
        if config.is_replicated() {
            return Ok(());
        }
        if subjects_changed {
            self.unsubscribe_subjects(&stream.name);
            self.subscribe_subjects(stream, &config.subjects)?;
        }
        source::sync(
            stream,
            self.store_for(config.storage),
            &self.server,
            &config,
        );
        Ok(())
    }

    /// The store of streams with `storage`.
    pub(crate) fn store_for(&self, storage: config::Storage) -> &Store {
        match storage {
            config::Storage::File => &self.store,
            config::Storage::Memory => &self.memory,
        }
    }

    /// The store of stream `name` (the file store for a name not in use).
    pub(crate) fn store_of(&self, name: &str) -> &Store {
        match self.stream(name) {
            Some(s) => self.store_for(s.config().storage),
            None => &self.store,
        }
    }

    /// Stops capturing for a stream and forgets it (its task ends when its queue closes).
    pub(crate) fn close_stream(&self, name: &str) {
        self.unsubscribe_subjects(name);
        let removed = self
            .streams
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        match removed {
            Some(stream) => {
                source::stop_all(&stream);
                for c in stream.consumers_snapshot() {
                    stream.remove_consumer(&c.name);
                    c.send(handle::Cmd::Stop(tokio::sync::oneshot::channel().0));
                }
                stream.close()
            }
            None => warn!(stream = name, "closing a stream that is not open"),
        }
    }
}
