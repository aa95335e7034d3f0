//! A replicated stream's group on a member: its Raft (openraft, the log in the member's Raft
//! database, [`StreamMachine`] applying to the copy's store), started when the member has the
//! copy of a stream assigned to it and stopped (its Raft state removed) when the stream goes.
//!
//! * **Bootstrap**: the first peer of the assignment initializes the group with every peer as
//!   a voter; the others wait to hear from it (one membership, no split brain). A group
//!   adopting an R1 stream's store (`jsc::replicate`) starts with its first peer alone, which
//!   builds a snapshot and purges its log before it serves anything.
//! * **Leader only captures**: the member leading the group subscribes the stream's subjects
//!   in the stream's account (and unsubscribes when it loses the lead), so exactly one member
//!   takes each publish; clients on other members reach it over a route by interest.
//! * **Publish**: the capture queues the message (bounded: past it a 429 PubAck); one task
//!   proposes the queued messages in arrival order **in batches**, one Raft entry
//!   ([`StreamBatch`]) per batch: one publish, then, once fewer than [`BATCHES_OUT`] batches
//!   wait for their apply, whatever else is queued, up to [`BATCH_MSGS`] and [`BATCH_BYTES`]
//!   (`client_write_ff`). One entry is one append, one fsync, on each member however many
//!   publishes it holds: the group commit (openraft alone does not give it: under load its
//!   core appends each proposal in a commit of its own). A second task waits for each batch to
//!   be applied on this member, in order, and answers the PubAck
//!   `{"stream","seq","duplicate"?,"domain"?}` of each of its publishes, in order. An entry is
//!   applied only once committed, i.e. a quorum of the group has it in its Raft log, fsynced.
//!   Nothing applied for [`ANSWER_WITHIN`] after the batch was proposed (no quorum; a backlog
//!   that moves waits on, at most [`ANSWER_AT_MOST`]), or a lost lead: an error PubAck (10008)
//!   for each publish of the batch, never silence; the client retries with its `Nats-Msg-Id`
//!   and the state machine's dedupe makes the retry a duplicate if the first one was
//!   committed after all.
//! * `Nats-Expected-*` headers are checked by the state machine against the applied state
//!   (alike on every member, each publish of a batch against the state the earlier ones
//!   left; a refused publish is stored nowhere and answered with a single
//!   server's error PubAck, 10060/10071/10070). Rollups (`Nats-Rollup`) are checked here and
//!   applied by every peer after the store ([`super::rollup`]).
//! * `discard: new` limits are decided by the state machine (10077, alike on every member);
//!   `max_msg_size` is checked here before proposing (10054: it depends on the publish and the
//!   configuration alone).
//! * Purges, message deletes and the removals a replicated consumer's acks release
//!   ([`StreamOp`]) are proposed by the leader alone ([`StreamGroup::propose_op`]; other
//!   members send them to it: `MetaGroup::stream_op`) and answered once applied here.
//! * Interest retention: a publish no assigned consumer's filter matches is marked
//!   `no_interest` here at capture (`MetaGroup::has_interest`), and every member takes its
//!   sequence without storing it (see "Retention on replicated streams" in
//!   `hub/JETSTREAM-CLUSTER.md`).
//! * The copy's consumers (this member's own) are woken after each apply that stored
//!   messages (`JetStream::replica_appended`).
//! * Reads of the stream's messages (`MSG.GET`, `DIRECT.GET`) are served by the leader after
//!   a read barrier ([`super::reads`]).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use leaf_core::jetstream::config::{ApiError, JsError, Retention, StreamConfig};
use leaf_core::jetstream::wire::{PeerInfo, PubAck};
use leaf_core::jetstream::JetStream;
use leaf_core::server::fanout::{InternalSink, Msg};
use leaf_core::server::{Account, Publisher, ReplyTo, SubRef};
use leaf_proto::time::now_ns;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::storage::RaftLogStorage;
use openraft::LogId;
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

use super::group::MetaGroup;
use super::meta::StreamAssignment;
use super::network::GroupNetwork;
use super::store::{RaftDb, RESET_FLOOR};
use super::stream_machine::{copy_lost, DiscardNew, StreamMachine};
use super::types::{
    Member, OpReply, Refusal, StreamBatch, StreamMsg, StreamOp, StreamRaft, StreamReply,
    StreamTypes,
};

/// Publishes captured and not proposed yet, at most.
const QUEUE: usize = 8192;
/// Publishes in one batch (one Raft entry), at most.
const BATCH_MSGS: usize = 256;
/// Bytes (subjects, headers and payloads) of the publishes in one batch, at most (a larger
/// publish goes alone). Together with [`MAX_PAYLOAD_ENTRIES`] it bounds an append request to
/// a follower to about the transport's in-flight bound (`super::transport`).
const BATCH_BYTES: usize = 64 * 1024;
/// Batches proposed and not applied yet, at most: the proposer waits past it, and what is
/// captured meanwhile makes the next batch larger (the group commit). Eight: since the
/// leader replicates during its own fsync (`LogStore::early_ack`), batches proposed while one
/// is at the followers go to them together in the next append request (openraft has one in
/// flight per follower); with two the async R3 row was 20-25 % slower than with four, and
/// four about 10 % slower than eight (BENCHMARKS.md, "JetStream clusters"). At most eight
/// batches of [`BATCH_BYTES`] (512 KiB) wait per group.
const BATCHES_OUT: usize = 8;
/// Log entries (batches) in one append request to a follower, at most (openraft's
/// `max_payload_entries`): 64 batches of at most [`BATCH_BYTES`] are 4 MiB.
const MAX_PAYLOAD_ENTRIES: u64 = 64;
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
    msg: StreamMsg,
    reply: Option<ReplyTo>,
}

impl Publish {
    /// What it counts toward [`BATCH_BYTES`].
    fn size(&self) -> usize {
        self.msg.subject.len()
            + self.msg.headers.as_ref().map_or(0, Vec::len)
            + self.msg.payload.len()
    }
}

/// The apply of a proposed batch, as openraft reports it.
type Applied = oneshot::Receiver<
    Result<openraft::raft::ClientWriteResponse<StreamTypes>, ClientWriteError<u64, Member>>,
>;

/// What a proposed batch waits on: when it was proposed and the group's last applied index
/// then, who to answer (one per publish, in the batch's order), the apply of its entry, and
/// its slot among the [`BATCHES_OUT`].
struct Waiting {
    proposed: Instant,
    applied_then: Option<u64>,
    replies: Vec<Option<ReplyTo>>,
    applied: Applied,
    slot: OwnedSemaphorePermit,
}

/// Log entries applied since the last snapshot that make the group take a new one (a
/// snapshot is the apply marker, see `super::stream_machine`; openraft then purges the log
/// before it, keeping [`LOG_KEPT`] entries).
const SNAPSHOT_EVERY: u64 = 512;
/// Log entries kept before the last snapshot (openraft's `max_in_snapshot_log_to_keep`): the
/// log holds 512 to 1,024 entries, so a member fewer than 512 entries behind always catches up
/// from the log; one further behind may get a snapshot. Under load one entry holds up to
/// [`BATCH_MSGS`] publishes; one publish at a time, one.
const LOG_KEPT: u64 = 512;
/// Bytes of snapshot data per install request (openraft's `snapshot_max_chunk_size`): within
/// the transport's in-flight bound like an append request.
const SNAPSHOT_CHUNK: u64 = 1024 * 1024;

/// Heartbeats of a stream group's leader, every this many milliseconds.
const HEARTBEAT_MS: u64 = 200;
/// A stream group's election timeout, drawn in `ELECTION_MIN_MS..ELECTION_MAX_MS`. openraft
/// 0.9 also makes a follower's leader lease `ELECTION_MAX_MS`: a follower refuses its vote
/// while it heard from its leader within the lease, and starts an election only after the
/// lease plus its timeout without a word from it, 3-4 s here (the meta group's 4.5-6 s). A
/// leader killed is replaced about that much later (`loadgen failover`: 5.5 s with the meta
/// group's timings, nats-server 4.6 s); a leader starved of CPU must miss 15 heartbeats in a
/// row before a follower campaigns.
const ELECTION_MIN_MS: u64 = 1000;
/// See [`ELECTION_MIN_MS`].
const ELECTION_MAX_MS: u64 = 2000;

/// The Raft configuration of a stream group: the meta group's timings, a snapshot every
/// [`SNAPSHOT_EVERY`] entries and the log purged before it but [`LOG_KEPT`] entries (see
/// "Snapshots and log purge" in `hub/JETSTREAM-CLUSTER.md`).
pub(super) fn raft_config(group: &str) -> Result<Config, String> {
    Config {
        cluster_name: group.into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        install_snapshot_timeout: 5000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: LOG_KEPT,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Config::default()
    }
    .validate()
    .map_err(|e| format!("JetStream cluster: Raft configuration of {group}: {e}"))
}

/// What a stream group uses of its stream's configuration.
#[derive(Debug, Clone)]
struct Settings {
    /// The assignment's configuration (JSON text) these come from.
    config: String,
    /// The stream's subjects (captured by the leader).
    subjects: Vec<String>,
    /// The stream's `allow_rollup_hdrs`.
    allow_rollup: bool,
    /// The stream's `max_msg_size` (negative: none), checked before proposing.
    max_msg_size: i32,
    /// The stream has interest retention (a publish no consumer matches is not kept).
    interest: bool,
}

impl Settings {
    fn of(text: &str, config: &StreamConfig) -> Settings {
        Settings {
            config: text.to_owned(),
            subjects: config.subjects.clone(),
            allow_rollup: config.allow_rollup_hdrs,
            max_msg_size: config.max_msg_size,
            interest: config.retention == Retention::Interest,
        }
    }
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
    /// What the group uses of the stream's configuration (changed by `STREAM.UPDATE`).
    settings: Mutex<Settings>,
    /// The last log id this member had when its state was reset (its copy lost), if it was:
    /// it refuses its vote to a candidate behind it until it applied it ([`Self::refuse_vote`]).
    floor: Option<LogId<u64>>,
    acct: Weak<Account>,
    queue: mpsc::Sender<Publish>,
    domain: Option<String>,
    /// The capturing subscriptions, while this member leads.
    capture: Mutex<Vec<SubRef>>,
    /// This member's copy of the stream (its engine).
    pub(super) js: JetStream,
    /// The read barrier of the leader's reads (`super::reads`).
    pub(super) reads: super::reads::ReadBarrier,
    /// The meta group (the stream's consumers, for interest retention).
    meta: Weak<MetaGroup>,
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
        let floor = reset_if_lost(&db, &group, &store, &stream).await?;
        // The leader replicates its entries while its own fsync runs; applies and commit
        // indexes wait for that fsync (see `LogStore::early_ack`).
        let log = db.log::<StreamTypes>(&group).early_ack(meta.own);
        let durable = log.durable();
        let machine = {
            let (db, group, stream) = (db.clone(), group.clone(), stream.clone());
            tokio::task::spawn_blocking(move || {
                StreamMachine::open(db, &group, store, &stream, window, first_seq)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .on_stored(wake_consumers(js, &sa.name))
            .after_durable(durable.clone())
        };
        machine.set_discard_new(DiscardNew::of(&config));
        let network = GroupNetwork {
            transport: meta.transport.clone(),
            group: group.clone(),
            durable: Some(durable),
        };
        let raft = StreamRaft::new(
            meta.own,
            Arc::new(raft_config(&group)?),
            network,
            log,
            machine,
        )
        .await
        .map_err(|e| format!("cannot start its group: {e}"))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let raft_for_reads = raft.clone();
        let g = Arc::new(StreamGroup {
            raft,
            name: group,
            account: sa.account.clone(),
            stream,
            settings: Mutex::new(Settings::of(&sa.config, &config)),
            floor,
            acct: Arc::downgrade(&acct),
            queue,
            domain: js.domain().map(str::to_owned),
            capture: Mutex::new(Vec::new()),
            js: js.clone(),
            reads: super::reads::ReadBarrier::of(&raft_for_reads),
            meta: Arc::downgrade(meta),
        });
        // A group adopting a plain stream's store starts with that member alone, whatever
        // peers the assignment lists by now (`jsc::replicate`).
        let adopting = super::stream_machine::adopting(&db, &g.name).map_err(|e| e.to_string())?;
        let first = if adopting {
            vec![meta.own]
        } else {
            sa.group.peers.clone()
        };
        meta.initialize_group(&g.raft, &g.name, &first).await;
        if adopting {
            if let Err(e) = super::replicate::settle(&g.raft, meta.own, &db, &g.name).await {
                let _ = g.raft.shutdown().await;
                return Err(e);
            }
        }
        let (waits, waiting) = mpsc::channel(BATCHES_OUT);
        tokio::spawn(propose(Arc::downgrade(&g), rx, waits));
        tokio::spawn(answer(Arc::downgrade(&g), waiting));
        tokio::spawn(follow_leadership(Arc::downgrade(&g)));
        info!(account = %g.account, stream = %g.stream, group = %g.name,
              "JetStream cluster: stream group started");
        Ok(g)
    }

    /// The answer to vote request `body` when this member must refuse it: its state was
    /// reset (its copy lost), it has not applied up to the last log id it had then (the
    /// floor), and the candidate's log ends before the floor. Entries this member held may
    /// have been committed with its acknowledgement; voting with an empty log for a candidate
    /// lacking them could elect a leader without a committed entry. `None`: openraft decides.
    pub fn refuse_vote(&self, body: &[u8]) -> Option<Vec<u8>> {
        let floor = self.floor?;
        if self.raft.metrics().borrow().last_applied >= Some(floor) {
            return None;
        }
        let req: VoteRequest<u64> = postcard::from_bytes(body).ok()?;
        if req.last_log_id >= Some(floor) {
            return None;
        }
        let refused = VoteResponse {
            vote: req.vote,
            vote_granted: false,
            last_log_id: Some(floor),
        };
        postcard::to_allocvec(&Ok::<_, RaftError<u64>>(refused)).ok()
    }

    /// What the group uses of the stream's configuration now.
    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows assignment `sa`'s configuration if it changed (`STREAM.UPDATE`): this member's
    /// copy in `js` updated (`JetStream::update_replica`), the leader's capture moved to the
    /// new subjects, `max_msg_size` and rollups checked with the new values. The `discard:
    /// new` limits change through the group's log (`StreamOp::Configure`).
    pub async fn follow_config(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        js: &JetStream,
    ) -> Result<(), String> {
        if self.settings().config == sa.config {
            return Ok(());
        }
        let config: StreamConfig = serde_json::from_str(&sa.config)
            .map_err(|e| format!("its configuration does not read: {e}"))?;
        js.update_replica(config.clone())
            .await
            .map_err(|e| format!("cannot update its copy: {}", e.description))?;
        let new = Settings::of(&sa.config, &config);
        let old = std::mem::replace(
            &mut *self.settings.lock().unwrap_or_else(PoisonError::into_inner),
            new,
        );
        let capturing = !self
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if old.subjects != config.subjects && capturing {
            self.release();
            if self.raft.metrics().borrow().state == ServerState::Leader {
                self.capture();
            }
        }
        info!(account = %self.account, stream = %self.stream,
              "JetStream cluster: the copy follows the stream's updated configuration");
        Ok(())
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
        let subjects = self.settings().subjects;
        for subject in &subjects {
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

    /// Steps down if this member (`own`) leads the group (`STREAM.LEADER.STEPDOWN`);
    /// whether it led.
    pub fn step_down(&self, own: u64) -> bool {
        super::group::hand_over(&self.raft, own, &format!("stream {}", self.stream))
    }

    /// Waits (at most [`SEES_WITHIN`]) until this member's meta state holds consumer `name` of
    /// this stream, if this member leads the group (its capture decides interest retention's
    /// `no_interest` against those assignments): whether it does; `None` when this member
    /// does not lead. `CONSUMER.CREATE` of an interest stream's consumer asks it before it
    /// answers (`MetaGroup::stream_leader_sees`).
    pub async fn await_consumer(&self, name: &str) -> Option<bool> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        let mut state = self.meta.upgrade()?.watch_state();
        let key = (self.account.clone(), self.stream.clone(), name.to_owned());
        let seen = tokio::time::timeout(SEES_WITHIN, async {
            while !state.borrow_and_update().consumers.contains_key(&key) {
                if state.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        Some(seen.unwrap_or(false))
    }

    /// Proposes `op` (a purge, a message delete) if this member leads the group: its reply
    /// once committed and applied here; `None` when this member does not lead.
    pub async fn propose_op(&self, op: StreamOp) -> Option<Result<OpReply, ApiError>> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        let batch = StreamBatch {
            msgs: Vec::new(),
            op: Some(op),
        };
        let written = tokio::time::timeout(ANSWER_AT_MOST, self.raft.client_write(batch)).await;
        Some(match written {
            Ok(Ok(resp)) => resp.data.op.ok_or_else(|| JsError::ClusterNotAvail.err()),
            Ok(Err(openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                return None;
            }
            Ok(Err(e)) => {
                warn!(stream = %self.stream, error = %e, "JetStream cluster: a stream change not written");
                Err(JsError::ClusterNotAvail.err())
            }
            Err(_) => Err(JsError::ClusterNotAvail.err()),
        })
    }

    /// Makes `members` (node id, server name) the group's voters if this member leads it:
    /// the new ones added as learners first (waiting until they caught up: from the log or a
    /// snapshot), then the voters replaced. `None` when this member does not lead.
    pub async fn change_members(&self, members: &[(u64, String)]) -> Option<Result<(), ApiError>> {
        let what = format!("stream {}", self.stream);
        super::group::change_members(&self.raft, members, ANSWER_AT_MOST, &what).await
    }

    /// Answers a publish.
    fn answer(&self, reply: Option<&ReplyTo>, outcome: Result<StreamReply, ApiError>) {
        let (Some(reply), Some(acct)) = (reply, self.acct.upgrade()) else {
            return;
        };
        let ack = match outcome {
            Ok(StreamReply {
                refused: Some(r), ..
            }) => PubAck {
                stream: Some(Cow::Borrowed(&self.stream)),
                error: Some(Cow::Owned(match r {
                    Refusal::StreamMismatch => ApiError::expected_stream_mismatch(),
                    Refusal::WrongLastSequence(seq) => ApiError::wrong_last_sequence(seq),
                    Refusal::WrongLastMsgId(id) => ApiError::wrong_last_msg_id(&id),
                    Refusal::Discarded(limit) => ApiError::store_failed(limit.text()),
                })),
                ..PubAck::default()
            },
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

    /// The group's leader (its name) and its other peers as `STREAM.INFO` shows them
    /// ([`MetaGroup::group_cluster`]).
    pub fn cluster(&self, meta: &MetaGroup) -> (Option<String>, Vec<PeerInfo>) {
        meta.group_cluster(&self.raft.metrics().borrow())
    }
}

/// Resets group `group`'s Raft state on this member when its copy of `stream` in `store`
/// was lost and cannot be rebuilt from the log ([`copy_lost`]): the log, commit, snapshot and
/// applied marker go, the vote stays, and the last log id it had is kept as the reset's
/// floor. The leader then finds this member with an empty log and sends a snapshot. The
/// floor (this member's, or one kept from an earlier reset not caught up yet).
async fn reset_if_lost(
    db: &RaftDb,
    group: &str,
    store: &leaf_store::Store,
    stream: &str,
) -> Result<Option<LogId<u64>>, String> {
    let lost = {
        let (db, group, store, stream) = (
            db.clone(),
            group.to_owned(),
            store.clone(),
            stream.to_owned(),
        );
        tokio::task::spawn_blocking(move || copy_lost(&db, &group, &store, &stream))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    if lost {
        let mut log = db.log::<StreamTypes>(group);
        let last = log
            .get_log_state()
            .await
            .map_err(|e| e.to_string())?
            .last_log_id;
        let floor = postcard::to_allocvec(&last).map_err(|e| e.to_string())?;
        db.reset_group(group, floor)
            .await
            .map_err(|e| format!("cannot reset its lost copy's state: {e}"))?;
        warn!(group, stream, last_log = ?last,
              "JetStream cluster: this member's copy of the stream was lost (memory storage) \
               and the group's log is purged: its Raft state is reset, the leader sends a \
               snapshot");
    }
    let kept = db
        .get_state(group, RESET_FLOOR)
        .map_err(|e| e.to_string())?
        .and_then(|b| postcard::from_bytes::<Option<LogId<u64>>>(&b).ok())
        .flatten();
    Ok(kept)
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

/// How long a stream group's leader waits to apply a new consumer's assignment (see
/// [`StreamGroup::await_consumer`]).
pub const SEES_WITHIN: Duration = Duration::from_millis(1500);

/// The RPC asking a stream group's leader to wait for a consumer's assignment.
pub const SEES_CONSUMER: &str = "sees";

/// The capturing subscription of the leader.
struct Capture(Weak<StreamGroup>);

impl InternalSink for Capture {
    fn deliver(&self, msg: &Msg<'_>, from: &Publisher) {
        let Some(g) = self.0.upgrade() else {
            return;
        };
        let reply = msg.reply.map(|r| from.reply_to(r));
        // As a single server: headers and payload against `max_msg_size`. Checked here, not
        // in the apply: it depends on the publish and the configuration alone, and a refused
        // publish then costs no log entry.
        let (max_msg_size, allow_rollup, interest) = {
            let s = g.settings.lock().unwrap_or_else(PoisonError::into_inner);
            (s.max_msg_size, s.allow_rollup, s.interest)
        };
        let size = msg.headers.map_or(0, <[u8]>::len) + msg.payload.len();
        if u64::try_from(max_msg_size).is_ok_and(|max| size as u64 > max) {
            g.answer(reply.as_ref(), Err(ApiError::message_too_large()));
            return;
        }
        if let Err(e) = super::rollup::check(msg.headers, allow_rollup) {
            g.answer(reply.as_ref(), Err(e));
            return;
        }
        let subject = String::from_utf8_lossy(msg.subject).into_owned();
        // Interest retention: decided here, at capture, against the consumers the meta group
        // assigned as this member applied them (as a single server decides against the
        // consumers it has when the publish arrives); the entry carries the decision.
        let no_interest = interest
            && g.meta
                .upgrade()
                .is_some_and(|m| !m.has_interest(&g.account, &g.stream, &subject));
        let publish = Publish {
            msg: StreamMsg {
                subject,
                headers: msg.headers.map(<[u8]>::to_vec),
                payload: msg.payload.to_vec(),
                ts_ns: now_ns(),
                no_interest,
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

/// Proposes the captured publishes in order, in batches: one publish, then whatever else
/// is queued by the time a slot among the [`BATCHES_OUT`] is free, up to [`BATCH_MSGS`] and
/// [`BATCH_BYTES`], as one entry.
async fn propose(
    group: Weak<StreamGroup>,
    mut rx: mpsc::Receiver<Publish>,
    waits: mpsc::Sender<Waiting>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_OUT));
    // A publish taken from the queue that did not fit the previous batch.
    let mut next: Option<Publish> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut bytes = first.size();
        let mut batch = vec![first];
        while batch.len() < BATCH_MSGS {
            let Ok(p) = rx.try_recv() else {
                break;
            };
            if bytes + p.size() > BATCH_BYTES {
                next = Some(p);
                break;
            }
            bytes += p.size();
            batch.push(p);
        }
        let Some(g) = group.upgrade() else {
            break;
        };
        let (msgs, replies): (Vec<StreamMsg>, Vec<Option<ReplyTo>>) =
            batch.into_iter().map(|p| (p.msg, p.reply)).unzip();
        let proposed = Instant::now();
        let applied_then = g.raft.metrics().borrow().last_applied.map(|l| l.index);
        tracing::debug!(stream = %g.stream, publishes = msgs.len(), bytes, "JetStream cluster: a batch proposed");
        match g.raft.client_write_ff(StreamBatch { msgs, op: None }).await {
            Ok(applied) => {
                drop(g);
                let waiting = Waiting {
                    proposed,
                    applied_then,
                    replies,
                    applied,
                    slot,
                };
                if waits.send(waiting).await.is_err() {
                    break;
                }
            }
            Err(_) => {
                for reply in &replies {
                    g.answer(reply.as_ref(), Err(JsError::ClusterNotAvail.err()));
                }
            }
        }
    }
}

/// Answers the publishes of each proposed batch once it is applied here (or with an error),
/// in order.
async fn answer(group: Weak<StreamGroup>, mut waiting: mpsc::Receiver<Waiting>) {
    while let Some(w) = waiting.recv().await {
        let Waiting {
            proposed,
            applied_then,
            replies,
            mut applied,
            slot,
        } = w;
        let Some(metrics) = group.upgrade().map(|g| g.raft.metrics()) else {
            break;
        };
        let applied_index = || metrics.borrow().last_applied.map(|l| l.index);
        // Progress is measured from the proposal: the batches before this one being applied
        // meanwhile is the group moving, however long this task waited for them.
        let mut seen = applied_then;
        let mut deadline = proposed + ANSWER_WITHIN;
        let outcome = loop {
            match tokio::time::timeout_at(deadline, &mut applied).await {
                Ok(Ok(Ok(resp))) => break Ok(resp.data.replies),
                Ok(Ok(Err(e))) => break Err(format!("not written: {e}")),
                Ok(Err(_)) => break Err("the group stopped".to_owned()),
                Err(_) => {
                    // Slow but moving (a backlog): wait on, within the hard bound; stuck
                    // (no quorum): say so.
                    let now = applied_index();
                    if now > seen && Instant::now() < proposed + ANSWER_AT_MOST {
                        seen = now;
                        deadline = Instant::now() + ANSWER_WITHIN;
                    } else {
                        break Err(format!("not applied (applied index {now:?})"));
                    }
                }
            }
        };
        // The next batch may go while these are answered.
        drop(slot);
        let Some(g) = group.upgrade() else {
            break;
        };
        match outcome {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for reply in &replies {
                    // One reply per publish; a missing one (never: the machine replies to
                    // each) is an error PubAck rather than silence.
                    let outcome = outcomes
                        .next()
                        .ok_or_else(|| JsError::ClusterNotAvail.err());
                    g.answer(reply.as_ref(), outcome);
                }
            }
            Err(why) => {
                warn!(stream = %g.stream, group = %g.name, publishes = replies.len(),
                      waited_ms = proposed.elapsed().as_millis() as u64, %why,
                      "JetStream cluster: a batch of publishes is answered 10008");
                for reply in &replies {
                    g.answer(reply.as_ref(), Err(JsError::ClusterNotAvail.err()));
                }
            }
        }
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
