//! Store-and-forward uplinks: local subjects captured durably on the gateway and forwarded
//! to a stream on the hub, in order, exactly once, whenever the leaf link is up.
//!
//! Data path: a publish on a captured subject is stored in the uplink's local buffer stream
//! (an ordinary JetStream stream with limits retention, `UPLINK_<name>`), and the publisher's
//! PubAck is sent once it is fsynced, link or no link. The uplink's task ([`forward`]) reads
//! the buffer in sequence order and writes each message straight into the leaf link (not
//! through the local router, so it never loops back into the buffer), with a reply subject
//! naming its local sequence; the hub's JetStream stores it and answers with a PubAck, which
//! comes back over the link ([`hub`]). Many messages are in flight at once (a [`window`] up to `max_in_flight`);
//! the cursor advances only over messages the hub acknowledged, is stored with the buffer
//! (group-committed like everything else), and what it covers is removed from the buffer.
//! The task holds at most one read batch and the in-flight window in memory, whatever the
//! backlog; a slow hub fills the window and the task waits.
//!
//! Exactly once (the argument is in `leaf/DESIGN.md`, "Uplinks"): every message carries a
//! `Nats-Msg-Id` made of the uplink's origin (name and the local stream's creation time) and
//! its local sequence ([`record`]), so a resend within the hub stream's duplicate window is
//! recognised by the hub. For resends after longer outages, the task reads back, after every
//! (re)connect and before sending anything, the newest message of its origin on the hub
//! (`STREAM.MSG.GET` `last_by_subj`) and starts after it. Requests to the hub's API are sent
//! straight into the link like the messages: hubs do not announce interest in `$JS.API.>` to
//! leaves, but serve what a leaf sends there (nats-server and hubd alike). `hub_domain`
//! addresses a hub whose JetStream is in a domain (`$JS.<domain>.API`).

pub mod forward;
pub mod hub;
pub mod ledger;
pub mod record;
pub mod tail;
pub mod window;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use self::forward::Forwarder;
use self::hub::REPLY_PREFIX;
use self::record::{Cursor, Origin, CURSOR_KEY};
use crate::config::{Uplink, WhenFull};
use leaf_core::jetstream::config::{ApiError, StreamConfig};
use leaf_core::jetstream::JetStream;
use leaf_core::leafnode::LeafState;
use leaf_core::server::Shared;
use leaf_store::Store;

/// Why uplinks could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// The server has no leafnode remote for the uplink.
    #[error("uplink {name}: there is no leafnode remote number {remote}")]
    NoRemote {
        /// The uplink.
        name: String,
        /// The remote index it names.
        remote: usize,
    },
    /// The local buffer stream could not be created or updated.
    #[error("uplink {name}: cannot set up the local stream {stream}: {source}")]
    Stream {
        /// The uplink.
        name: String,
        /// The local stream.
        stream: String,
        /// Why.
        source: ApiError,
    },
    /// The reply subscription could not be made.
    #[error("uplink {name}: cannot subscribe its reply subject: {reason}")]
    Subscribe {
        /// The uplink.
        name: String,
        /// Why.
        reason: String,
    },
}

/// What an uplink is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The link is down: messages are buffered.
    Offline,
    /// The link came up: checking the hub stream and reading back what it holds.
    Syncing,
    /// Sending a backlog.
    Forwarding,
    /// Caught up: new messages go out as they arrive.
    Live,
    /// The hub did not store messages (full, no stream, no answer): retrying with backoff.
    Stalled,
}

/// One uplink's state, counters and backlog.
#[derive(Debug, Clone, Serialize)]
pub struct UplinkStatus {
    /// The uplink's name.
    pub name: String,
    /// The local buffer stream.
    pub stream: String,
    /// The hub stream.
    pub hub_stream: String,
    /// What it is doing.
    pub state: State,
    /// Every local sequence up to this one is proven on the hub (or dropped, rejected or
    /// denied): the cursor.
    pub acked: u64,
    /// Messages waiting to be forwarded.
    pub backlog_msgs: u64,
    /// Messages in the local buffer: the backlog plus forwarded messages not freed yet
    /// (they are freed with each cursor write). Limits apply to these.
    pub buffered_msgs: u64,
    /// Bytes waiting to be forwarded (approximate while forwarded messages are freed).
    pub backlog_bytes: u64,
    /// Age of the oldest waiting message.
    pub oldest_age: Option<Duration>,
    /// Messages sent to the hub (resends included).
    pub sent_msgs: u64,
    /// Bytes sent to the hub (resends included).
    pub sent_bytes: u64,
    /// Messages the hub acknowledged (answers that passed every check).
    pub acked_msgs: u64,
    /// Messages acknowledged and not yet proven from the hub stream: the gateway keeps them
    /// until they are.
    pub unproven_msgs: u64,
    /// Answers on the uplink's reply subjects that the hub cannot have sent (not in flight,
    /// another nonce, stream, domain or sequence) or that the hub stream contradicted:
    /// ignored. Anything above zero means someone on the hub answers for it.
    pub doubtful_answers: u64,
    /// Copies of this uplink's messages the proof tail delivered (while sending one by one:
    /// each proves its message without a read of its own).
    pub tail_copies: u64,
    /// Answers dropped because the uplink's answer queue was full (a flood on its reply
    /// subjects; dropped answers are asked for again, nothing is lost).
    pub answers_dropped: u64,
    /// Acknowledged messages accepted without proof because the hub stream removed them
    /// before they could be read (interest or work-queue retention, small limits).
    pub unproven_accepted: u64,
    /// Messages dropped by the buffer's limits before they were forwarded.
    pub dropped: u64,
    /// Messages the hub refused for good (skipped).
    pub rejected: u64,
    /// Messages not forwarded because the remote's `deny_exports` cover their subject.
    pub denied: u64,
    /// Times sending restarted at the cursor after a failure.
    pub resent_rounds: u64,
    /// Messages that may be in flight now: the send window, sized from the path's rate and
    /// round trip, up to `max_in_flight` (see [`window`]).
    pub window: usize,
    /// Messages acknowledged per second, smoothed.
    pub rate_msgs_per_sec: f64,
    /// When the hub last acknowledged a message.
    pub last_ack: Option<SystemTime>,
    /// The hub stream's sequence of that message.
    pub last_hub_seq: u64,
    /// Whether the hub's JetStream API answered through the link (read-back possible).
    pub hub_api: bool,
    /// The hub stream's duplicate window, once known.
    pub hub_duplicate_window: Duration,
    /// The last problem, if any.
    pub last_error: Option<String>,
}

/// An uplink's live status, shared by its task and readers.
pub struct StatusCell {
    inner: Mutex<UplinkStatus>,
    rate: Mutex<RateSample>,
}

struct RateSample {
    at: Instant,
    acked_msgs: u64,
    rate: f64,
}

impl StatusCell {
    fn new(status: UplinkStatus) -> StatusCell {
        StatusCell {
            inner: Mutex::new(status),
            rate: Mutex::new(RateSample {
                at: Instant::now(),
                acked_msgs: 0,
                rate: 0.0,
            }),
        }
    }

    /// Changes the status under its lock.
    pub(crate) fn update(&self, f: impl FnOnce(&mut UplinkStatus)) {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn snapshot(&self) -> UplinkStatus {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Updates the smoothed rate (called every 100 ms; samples once a second).
    pub(crate) fn tick(&self) {
        let acked = self.snapshot().acked_msgs;
        let mut r = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        let dt = r.at.elapsed().as_secs_f64();
        if dt < 1.0 {
            return;
        }
        let now = (acked.saturating_sub(r.acked_msgs)) as f64 / dt;
        r.rate = if r.rate == 0.0 {
            now
        } else {
            0.5 * r.rate + 0.5 * now
        };
        r.at = Instant::now();
        r.acked_msgs = acked;
        let rate = r.rate;
        drop(r);
        self.update(|s| s.rate_msgs_per_sec = rate);
    }

    /// The smoothed rate.
    pub(crate) fn snapshot_rate(&self) -> f64 {
        self.rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate
    }
}

struct Entry {
    status: Arc<StatusCell>,
    store: Store,
    stream: String,
    settings: watch::Sender<Uplink>,
}

/// The running uplinks of a server.
pub struct Uplinks {
    entries: Vec<Entry>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The local buffer stream of an uplink.
fn buffer_config(cfg: &Uplink) -> Result<StreamConfig, ApiError> {
    let limit = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok()).unwrap_or(-1);
    let body = serde_json::json!({
        "name": cfg.stream_name(),
        "subjects": cfg.subjects,
        "retention": "limits",
        "storage": "file",
        "max_msgs": limit(cfg.max_msgs),
        "max_bytes": limit(cfg.max_bytes),
        "max_age": cfg.max_age.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        "discard": match cfg.when_full { WhenFull::DropOldest => "old", WhenFull::Reject => "new" },
    });
    serde_json::from_value::<StreamConfig>(body)
        .map_err(|e| ApiError::invalid_config(&e.to_string()))?
        .normalize()
}

impl Uplinks {
    /// Sets up every uplink's buffer stream and starts its task. Call after JetStream
    /// started and before the server accepts clients, so no publish escapes the buffer.
    pub async fn start(
        shared: &Arc<Shared>,
        leaf: Option<&LeafState>,
        js: &JetStream,
        configs: &[Uplink],
    ) -> Result<Uplinks, UplinkError> {
        let (stop, stop_rx) = watch::channel(false);
        let mut uplinks = Uplinks {
            entries: Vec::new(),
            stop,
            tasks: Mutex::new(Vec::new()),
        };
        for cfg in configs {
            let stream = cfg.stream_name();
            let link_rx = leaf
                .and_then(|l| l.watch_remote(cfg.remote))
                .ok_or_else(|| UplinkError::NoRemote {
                    name: cfg.name.clone(),
                    remote: cfg.remote,
                })?;
            let stream_err = |source| UplinkError::Stream {
                name: cfg.name.clone(),
                stream: stream.clone(),
                source,
            };
            let config = buffer_config(cfg).map_err(stream_err)?;
            js.ensure_stream(&config).await.map_err(stream_err)?;
            let (Some(epoch), Some(appended)) =
                (js.stream_created_ns(&stream), js.watch_appended(&stream))
            else {
                return Err(stream_err(ApiError::general("stream vanished")));
            };
            let store = js.store_of(&stream).clone();
            let cursor = load_cursor(&store, &stream, epoch);
            let token = format!("{:016x}", fastrand::u64(..));
            let reply_prefix = format!("{REPLY_PREFIX}{token}.");
            let (sink, answers) = hub::answer_queue(reply_prefix.clone());
            shared
                .global()
                .subscribe_internal(format!("{reply_prefix}>").as_bytes(), None, Arc::new(sink))
                .map_err(|e| UplinkError::Subscribe {
                    name: cfg.name.clone(),
                    reason: e.to_string(),
                })?;
            let status = Arc::new(StatusCell::new(UplinkStatus {
                name: cfg.name.clone(),
                stream: stream.clone(),
                hub_stream: cfg.hub_stream.clone(),
                state: State::Offline,
                acked: cursor.acked,
                backlog_msgs: 0,
                buffered_msgs: 0,
                backlog_bytes: 0,
                oldest_age: None,
                sent_msgs: 0,
                sent_bytes: 0,
                acked_msgs: 0,
                unproven_msgs: 0,
                doubtful_answers: 0,
                answers_dropped: 0,
                tail_copies: 0,
                unproven_accepted: 0,
                dropped: 0,
                rejected: 0,
                denied: 0,
                resent_rounds: 0,
                window: 0,
                rate_msgs_per_sec: 0.0,
                last_ack: None,
                last_hub_seq: cursor.hub_seq,
                hub_api: false,
                hub_duplicate_window: Duration::ZERO,
                last_error: None,
            }));
            info!(
                uplink = %cfg.name,
                %stream,
                hub_stream = %cfg.hub_stream,
                acked = cursor.acked,
                "uplink ready"
            );
            let (settings, settings_rx) = watch::channel(cfg.clone());
            let forwarder = Forwarder::new(
                shared.clone(),
                cfg.clone(),
                store.clone(),
                Origin::new(&cfg.name, epoch),
                epoch,
                link_rx,
                answers,
                appended,
                reply_prefix,
                status.clone(),
                stop_rx.clone(),
                settings_rx,
                cursor,
            );
            uplinks
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(tokio::spawn(forwarder.run()));
            uplinks.entries.push(Entry {
                status,
                store,
                stream,
                settings,
            });
        }
        Ok(uplinks)
    }

    /// The status of every uplink, with its backlog read from the buffer.
    pub fn status(&self) -> Vec<UplinkStatus> {
        self.entries
            .iter()
            .map(|e| {
                let mut s = e.status.snapshot();
                if let Ok(Some(state)) = e.store.stream_state(&e.stream) {
                    let waiting = state.last_seq.saturating_sub(s.acked).min(state.msgs);
                    s.backlog_msgs = waiting;
                    s.buffered_msgs = state.msgs;
                    s.backlog_bytes = state
                        .bytes
                        .saturating_mul(waiting)
                        .checked_div(state.msgs)
                        .unwrap_or(0);
                }
                if s.backlog_msgs > 0 {
                    if let Ok(first) = e.store.read_range(&e.stream, s.acked + 1, 1, 0) {
                        s.oldest_age = first.first().map(|m| {
                            let now = leaf_proto::time::now_ns();
                            Duration::from_nanos(u64::try_from(now - m.ts_ns).unwrap_or(0))
                        });
                    }
                }
                s
            })
            .collect()
    }

    /// Applies reloaded settings to uplink number `index`: the buffer's limits (the stream is
    /// updated) and the forwarder's pacing. Only the keys `reload` allows may differ.
    pub async fn reconfigure(
        &self,
        js: &JetStream,
        index: usize,
        cfg: &Uplink,
    ) -> Result<(), UplinkError> {
        let Some(entry) = self.entries.get(index) else {
            return Ok(());
        };
        let stream_err = |source| UplinkError::Stream {
            name: cfg.name.clone(),
            stream: entry.stream.clone(),
            source,
        };
        let config = buffer_config(cfg).map_err(stream_err)?;
        js.ensure_stream(&config).await.map_err(stream_err)?;
        entry.settings.send_replace(cfg.clone());
        Ok(())
    }

    /// Stops every uplink and waits until each stored its cursor.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The stored cursor of `stream`, or a fresh one starting at its first stored message.
/// Without a current record (none yet, or one written before `pm_hwm` existed), every message
/// in the buffer may have been sent one by one: `pm_hwm` covers them all.
fn load_cursor(store: &Store, stream: &str, epoch: i64) -> Cursor {
    let state = store.stream_state(stream).ok().flatten();
    let last = state.map_or(0, |s| s.last_seq);
    let stored = store
        .consumers(stream)
        .ok()
        .and_then(|list| list.into_iter().find(|(name, _)| name == CURSOR_KEY))
        .and_then(|(_, bytes)| Cursor::decode(&bytes))
        .filter(|(c, _)| c.epoch == epoch);
    match stored {
        Some((c, Some(_))) => c,
        Some((c, None)) => Cursor { pm_hwm: last, ..c },
        None => {
            let first = state.map_or(1, |s| s.first_seq.max(1));
            Cursor {
                version: Cursor::VERSION,
                epoch,
                acked: first - 1,
                hub_seq: 0,
                pm_hwm: last,
            }
        }
    }
}
