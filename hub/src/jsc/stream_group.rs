//! A replicated stream's group on a member: its Raft (openraft, the log in the member's Raft
//! database, [`StreamMachine`] applying to the copy's store), started when the member has the
//! copy of a stream assigned to it and stopped (its Raft state removed) when the stream goes.
//!
//! * **Bootstrap**: the first peer of the assignment initializes the group with every peer as
//!   a voter; the others wait to hear from it (one membership, no split brain).
//! * **Leader only captures**: the member leading the group subscribes the stream's subjects
//!   in the stream's account (and unsubscribes when it loses the lead), so exactly one member
//!   takes each publish; clients on other members reach it over a route by interest.
//! * **Publish**: the capture queues the message (bounded: past it a 429 PubAck); one task
//!   proposes the queued messages in arrival order (`client_write_ff`: openraft batches what
//!   is proposed while an append is in flight into one append, one fsync: group commit); a
//!   second task waits for each to be applied on this member, in order, and answers the
//!   PubAck `{"stream","seq","duplicate"?,"domain"?}`. An entry is applied only once
//!   committed, i.e. a quorum of the group has it in its Raft log, fsynced. Nothing applied
//!   for [`ANSWER_WITHIN`] (no quorum; a backlog that moves waits on, at most
//!   [`ANSWER_AT_MOST`]), or a lost lead: an error PubAck (10008), never silence; the client retries with its `Nats-Msg-Id` and the state machine's dedupe makes
//!   the retry a duplicate if the first one was committed after all.
//! * Publishes that expect a state (`Nats-Expected-*` headers) are refused with an error
//!   PubAck (10036): not supported on replicated streams yet. Rollups (`Nats-Rollup`) are
//!   checked here and applied by every peer after the store ([`super::rollup`]).
//! * The copy's consumers (this member's own) are woken after each apply that stored
//!   messages (`JetStream::replica_appended`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use leaf_core::jetstream::config::{ApiError, JsError, StreamConfig};
use leaf_core::jetstream::wire::{PeerInfo, PubAck};
use leaf_core::jetstream::JetStream;
use leaf_core::server::fanout::{InternalSink, Msg};
use leaf_core::server::{Account, Publisher, ReplyTo, SubRef};
use leaf_proto::time::now_ns;
use openraft::error::ClientWriteError;
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::group::MetaGroup;
use super::meta::StreamAssignment;
use super::network::GroupNetwork;
use super::stream_machine::StreamMachine;
use super::types::{Member, StreamEntry, StreamRaft, StreamReply, StreamTypes};

/// Publishes captured and not proposed yet, at most.
const QUEUE: usize = 8192;
/// Publishes proposed and not answered yet, at most (the proposer waits past it).
const IN_FLIGHT: usize = 8192;
/// How long a publish waits for its entry to be applied, while the group applies nothing
/// else, before an error PubAck.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);
/// How long a publish waits for its entry to be applied at most, while the group applies
/// other entries (a backlog), before an error PubAck.
const ANSWER_AT_MOST: Duration = Duration::from_secs(30);

/// The status line of a PubAck refused because the queue is full (nats-server's).
const TOO_MANY_REQUESTS_HDR: &[u8] = b"NATS/1.0 429 Too Many Requests\r\n\r\n";

/// One captured publish.
struct Publish {
    entry: StreamEntry,
    reply: Option<ReplyTo>,
}

/// What a publish waits on: when it was proposed, who to answer, the apply of its entry.
type Waiting = (
    Instant,
    Option<ReplyTo>,
    oneshot::Receiver<
        Result<openraft::raft::ClientWriteResponse<StreamTypes>, ClientWriteError<u64, Member>>,
    >,
);

/// The Raft timings of a stream group: the meta group's, and never a snapshot (the log is
/// kept whole: see [`super::stream_machine`]).
fn raft_config(group: &str) -> Result<Config, String> {
    Config {
        cluster_name: group.into(),
        heartbeat_interval: 250,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        install_snapshot_timeout: 5000,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    }
    .validate()
    .map_err(|e| format!("JetStream cluster: Raft configuration of {group}: {e}"))
}

/// A replicated stream's group on this member.
pub struct StreamGroup {
    /// The group's Raft.
    pub raft: StreamRaft,
    /// The group's name (`S-<hash>`).
    pub name: String,
    /// The stream's account.
    pub account: String,
    /// The stream's name.
    pub stream: String,
    subjects: Vec<String>,
    /// The stream's `allow_rollup_hdrs`.
    allow_rollup: bool,
    acct: Weak<Account>,
    queue: mpsc::Sender<Publish>,
    domain: Option<String>,
    /// The capturing subscriptions, while this member leads.
    capture: Mutex<Vec<SubRef>>,
}

impl StreamGroup {
    /// Starts the group of assignment `sa` on this member (whose copy of the stream is in
    /// `js`).
    pub async fn start(
        meta: &Arc<MetaGroup>,
        sa: &StreamAssignment,
        js: &JetStream,
    ) -> Result<Arc<StreamGroup>, String> {
        let config: StreamConfig = serde_json::from_str(&sa.config)
            .map_err(|e| format!("its configuration does not read: {e}"))?;
        let acct = js
            .account()
            .ok_or_else(|| "its account is gone".to_owned())?;
        let (db, group, stream) = (meta.db.clone(), sa.group.name.clone(), sa.name.clone());
        let store = js.store_of(&sa.name).clone();
        let (window, first_seq) = (config.duplicate_window, config.first_seq);
        let machine = {
            let (db, group, stream) = (db.clone(), group.clone(), stream.clone());
            tokio::task::spawn_blocking(move || {
                StreamMachine::open(db, &group, store, &stream, window, first_seq)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .on_stored(wake_consumers(js, &sa.name))
        };
        let network = GroupNetwork {
            transport: meta.transport.clone(),
            group: group.clone(),
        };
        let raft = StreamRaft::new(
            meta.own,
            Arc::new(raft_config(&group)?),
            network,
            db.log::<StreamTypes>(&group),
            machine,
        )
        .await
        .map_err(|e| format!("cannot start its group: {e}"))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let g = Arc::new(StreamGroup {
            raft,
            name: group,
            account: sa.account.clone(),
            stream,
            subjects: config.subjects.clone(),
            allow_rollup: config.allow_rollup_hdrs,
            acct: Arc::downgrade(&acct),
            queue,
            domain: js.domain().map(str::to_owned),
            capture: Mutex::new(Vec::new()),
        });
        // The first peer initializes the group with every peer as a voter.
        let m = g.raft.metrics().borrow().clone();
        let has_state = m.current_term > 0 || m.last_log_index.is_some();
        if sa.group.peers.first() == Some(&meta.own) && !has_state {
            let nodes: BTreeMap<u64, Member> = sa
                .group
                .peers
                .iter()
                .map(|id| {
                    let name = meta.name_of(*id).unwrap_or_else(|| id.to_string());
                    (*id, Member { name })
                })
                .collect();
            if let Err(e) = g.raft.initialize(nodes).await {
                tracing::debug!(group = %g.name, error = %e, "stream group not initialized here");
            }
        }
        let (waits, waiting) = mpsc::channel(IN_FLIGHT);
        tokio::spawn(propose(Arc::downgrade(&g), rx, waits));
        tokio::spawn(answer(Arc::downgrade(&g), waiting));
        tokio::spawn(follow_leadership(Arc::downgrade(&g)));
        info!(account = %g.account, stream = %g.stream, group = %g.name,
              "JetStream cluster: stream group started");
        Ok(g)
    }

    /// Stops the group's Raft and its capture.
    pub async fn stop(&self) {
        self.release();
        let _ = self.raft.shutdown().await;
    }

    /// Subscribes the stream's subjects (this member leads).
    fn capture(self: &Arc<Self>) {
        let mut subs = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        if !subs.is_empty() {
            return;
        }
        let Some(acct) = self.acct.upgrade() else {
            return;
        };
        for subject in &self.subjects {
            let sink = Arc::new(Capture(Arc::downgrade(self)));
            match acct.subscribe_internal(subject.as_bytes(), None, sink) {
                Ok(sub) => subs.push(sub),
                Err(e) => warn!(stream = %self.stream, subject = %subject, error = %e,
                                "JetStream cluster: cannot capture a replicated stream's subject"),
            }
        }
        info!(account = %self.account, stream = %self.stream,
              "JetStream cluster: this member leads the stream and takes its publishes");
    }

    /// Unsubscribes the stream's subjects (this member no longer leads).
    fn release(&self) {
        let subs =
            std::mem::take(&mut *self.capture.lock().unwrap_or_else(PoisonError::into_inner));
        if subs.is_empty() {
            return;
        }
        if let Some(acct) = self.acct.upgrade() {
            for s in &subs {
                acct.unsubscribe_internal(s);
            }
        }
        info!(account = %self.account, stream = %self.stream,
              "JetStream cluster: this member no longer leads the stream");
    }

    /// Answers a publish.
    fn answer(&self, reply: Option<&ReplyTo>, outcome: Result<StreamReply, ApiError>) {
        let (Some(reply), Some(acct)) = (reply, self.acct.upgrade()) else {
            return;
        };
        let ack = match outcome {
            Ok(r) => PubAck {
                stream: Some(Cow::Borrowed(&self.stream)),
                seq: Some(r.seq),
                domain: self.domain.as_deref().map(Cow::Borrowed),
                duplicate: r.duplicate,
                error: None,
            },
            Err(e) => PubAck {
                stream: Some(Cow::Borrowed(&self.stream)),
                error: Some(Cow::Owned(e)),
                ..PubAck::default()
            },
        };
        let body = serde_json::to_vec(&ack).unwrap_or_default();
        acct.answer(reply, None, &body);
    }

    /// The group's leader (its name) and, on the leader, the other peers as `STREAM.INFO`
    /// shows them (`current`: caught up and heard from lately, `active`: ns since last heard
    /// from, `lag`: entries behind); on a follower the peers with what it knows.
    pub fn cluster(&self, meta: &MetaGroup) -> (Option<String>, Vec<PeerInfo>) {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader;
        // The meta group's names first: the membership's were written when the group was
        // initialized, possibly before the first peer had seen every other one.
        let name = |id: u64| {
            meta.name_of(id)
                .or_else(|| {
                    m.membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.name.clone())
                })
                .unwrap_or_else(|| id.to_string())
        };
        let online = meta.online();
        let last = m.last_log_index.unwrap_or(0);
        let leading = leader == Some(meta.own);
        let replicas = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| Some(*id) != leader)
            .map(|id| {
                let since = meta.transport.last_contact(id).map(|t| t.elapsed());
                let lag = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned())
                    .map(|matched| last.saturating_sub(matched.map_or(0, |l| l.index)));
                let recent = since.is_some_and(|s| s < Duration::from_secs(5));
                let current = if leading {
                    lag == Some(0) && recent
                } else {
                    id == meta.own && leader.is_some()
                };
                PeerInfo {
                    name: name(id),
                    current,
                    offline: !online.contains_key(&id),
                    active: since.map_or(0, |s| i64::try_from(s.as_nanos()).unwrap_or(i64::MAX)),
                    lag: lag.unwrap_or(0),
                }
            })
            .collect();
        (leader.map(name), replicas)
    }
}

/// Wakes the consumers of this member's copy of `stream` (in `js`) after the group stored
/// messages in it (consumers on a copy are this member's own: see
/// `hub/JETSTREAM-CLUSTER.md`, "Consumers on replicated streams").
fn wake_consumers(js: &JetStream, stream: &str) -> super::stream_machine::OnStored {
    let (js, stream) = (js.clone(), stream.to_owned());
    Arc::new(move |stored, rolled_up| {
        let trimmed = rolled_up || stored.iter().any(|(a, _, _)| a.trimmed > 0);
        js.replica_appended(
            &stream,
            stored
                .iter()
                .map(|(a, subject, _)| (a.seq, subject.as_str())),
            trimmed,
        );
    })
}

/// The capturing subscription of the leader.
struct Capture(Weak<StreamGroup>);

impl InternalSink for Capture {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let Some(g) = self.0.upgrade() else {
            return;
        };
        let reply = msg.reply.map(|r| from.reply_to(r));
        if msg.headers.is_some_and(unsupported_headers) {
            g.answer(
                reply.as_ref(),
                Err(JsError::ClusterUnSupportFeature
                    .with("Nats-Expected-* headers are not supported on replicated streams yet")),
            );
            return;
        }
        if let Err(e) = super::rollup::check(msg.headers, g.allow_rollup) {
            g.answer(reply.as_ref(), Err(e));
            return;
        }
        let publish = Publish {
            entry: StreamEntry {
                subject: String::from_utf8_lossy(msg.subject).into_owned(),
                headers: msg.headers.map(<[u8]>::to_vec),
                payload: msg.payload.to_vec(),
                ts_ns: now_ns(),
            },
            reply,
        };
        if let Err(mpsc::error::TrySendError::Full(p)) = g.queue.try_send(publish) {
            if let (Some(reply), Some(acct)) = (p.reply.as_ref(), g.acct.upgrade()) {
                let body = serde_json::to_vec(&PubAck {
                    stream: Some(Cow::Borrowed(&g.stream)),
                    error: Some(Cow::Owned(ApiError::too_many_requests())),
                    ..PubAck::default()
                })
                .unwrap_or_default();
                acct.answer(reply, Some(TOO_MANY_REQUESTS_HDR), &body);
            }
        }
    }
}

/// Whether a header block asks for what a replicated stream does not do yet: an expected
/// state (`Nats-Expected-*`). (Rollups are applied by every peer: [`super::rollup`].)
fn unsupported_headers(block: &[u8]) -> bool {
    leaf_proto::headers::fields(block).any(|(k, _)| {
        k.get(..14)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"Nats-Expected-"))
    })
}

/// Proposes the captured publishes in order.
async fn propose(
    group: Weak<StreamGroup>,
    mut rx: mpsc::Receiver<Publish>,
    waits: mpsc::Sender<Waiting>,
) {
    while let Some(p) = rx.recv().await {
        let Some(g) = group.upgrade() else {
            break;
        };
        let proposed = Instant::now();
        match g.raft.client_write_ff(p.entry).await {
            Ok(applied) => {
                drop(g);
                if waits.send((proposed, p.reply, applied)).await.is_err() {
                    break;
                }
            }
            Err(_) => g.answer(p.reply.as_ref(), Err(JsError::ClusterNotAvail.err())),
        }
    }
}

/// Answers each proposed publish once applied here (or with an error), in order.
async fn answer(group: Weak<StreamGroup>, mut waiting: mpsc::Receiver<Waiting>) {
    while let Some((proposed, reply, mut applied)) = waiting.recv().await {
        let Some(metrics) = group.upgrade().map(|g| g.raft.metrics()) else {
            break;
        };
        let applied_index = || metrics.borrow().last_applied.map(|l| l.index);
        let mut seen = applied_index();
        let mut deadline = proposed + ANSWER_WITHIN;
        let outcome = loop {
            match tokio::time::timeout_at(deadline, &mut applied).await {
                Ok(Ok(Ok(resp))) => break Ok(resp.data),
                Ok(_) => break Err(JsError::ClusterNotAvail.err()),
                Err(_) => {
                    // Slow but moving (a backlog): wait on, within the hard bound; stuck
                    // (no quorum): say so.
                    let now = applied_index();
                    if now > seen && Instant::now() < proposed + ANSWER_AT_MOST {
                        seen = now;
                        deadline = Instant::now() + ANSWER_WITHIN;
                    } else {
                        break Err(JsError::ClusterNotAvail.err());
                    }
                }
            }
        };
        let Some(g) = group.upgrade() else {
            break;
        };
        g.answer(reply.as_ref(), outcome);
    }
}

/// Captures while this member leads the group, releases when it does not.
async fn follow_leadership(group: Weak<StreamGroup>) {
    let Some(mut metrics) = group.upgrade().map(|g| g.raft.metrics()) else {
        return;
    };
    loop {
        let leads = metrics.borrow_and_update().state == ServerState::Leader;
        let Some(g) = group.upgrade() else {
            break;
        };
        if leads {
            g.capture();
        } else {
            g.release();
        }
        drop(g);
        if metrics.changed().await.is_err() {
            break;
        }
    }
    if let Some(g) = group.upgrade() {
        g.release();
    }
}

#[cfg(test)]
mod tests {
    use super::unsupported_headers;

    #[test]
    fn expectations_are_recognised() {
        let block = |h: &str| format!("NATS/1.0\r\n{h}\r\n\r\n").into_bytes();
        assert!(unsupported_headers(&block(
            "Nats-Expected-Last-Sequence: 3"
        )));
        assert!(unsupported_headers(&block("nats-expected-stream: S")));
        assert!(!unsupported_headers(&block("Nats-Rollup: sub")));
        assert!(!unsupported_headers(&block("Nats-Msg-Id: a")));
        assert!(!unsupported_headers(&block("Nats-Expected: x")));
    }
}
