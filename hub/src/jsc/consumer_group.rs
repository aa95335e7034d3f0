//! A replicated consumer's group on a member (see "Consumer groups" in
//! `hub/JETSTREAM-CLUSTER.md`): its Raft (openraft, the log in the member's Raft database,
//! [`ConsumerMachine`] writing the applied state record to the member's copy of the stream),
//! started on each peer of the stream as the consumer's assignment is applied here
//! ([`follow`], called by [`super::copies`]) and stopped (its Raft state and record removed)
//! when the assignment goes.
//!
//! * **Bootstrap**: the first peer of the assignment initializes the group with every peer as
//!   a voter; the others wait to hear from it (as stream groups, with their Raft timings and
//!   snapshot policy: a snapshot is the marker, one record).
//! * **Only the leader runs the task**: on leadership gained the member applies everything
//!   committed (`ensure_linearizable`), then starts the core's consumer task on its copy from
//!   the machine's applied record (`JetStream::start_group_consumer`), its state records going
//!   to the group ([`Proposals`]): a record is durable once its proposal committed (a quorum
//!   fsynced it) and was applied here, and only then are the acks it holds answered. On
//!   leadership lost the task is stopped first thing; a proposal of an old leader fails, and its
//!   pending AckAck replies are never answered (the client retries).
//! * **The API** (the core's `Replication` hook, [`MetaGroup::create_consumer`]):
//!   `CONSUMER.CREATE` proposes `AssignConsumer` (peers: the stream's), `CONSUMER.DELETE`
//!   `RemoveConsumer`, `CONSUMER.INFO` shows the group's leader in `cluster`.
//! * **Pull requests on any member**: one arriving where the task does not run is forwarded
//!   to the group's leader as the group's RPC [`NEXT`] ([`MetaGroup::forward_pull`]); the
//!   leader's task answers the client's reply subject over the routes.
//! * **Stepdown** ([`MetaGroup::step_down_consumer`], `CONSUMER.LEADER.STEPDOWN`): the leader
//!   stops its task and holds it while another member is elected.
//! * **Updates** ([`MetaGroup::update_consumer`]): the configuration lives in the meta
//!   assignment; each peer follows it ([`ConsumerGroup::follow_config`]) and the task gets it.
//! * **A new leader starts the task once its whole log is applied**, not only up to
//!   `ensure_linearizable`'s read point (see [`lead`]).

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use leaf_core::jetstream::accounts::AccountJetStreams;
use leaf_core::jetstream::config::consumer::ConsumerConfig;
use leaf_core::jetstream::config::{ApiError, JsError, Retention, StreamConfig};
use leaf_core::jetstream::consumer::{RecordSink, RemovalFuture, WriteFuture};
use leaf_core::jetstream::replication::ReplicatedConsumer;
use leaf_core::jetstream::wire::{ClusterInfo, PeerInfo};
use leaf_core::jetstream::JetStream;
use leaf_proto::subject::subject_matches;
use leaf_proto::time::now_ns;
use leaf_store::StoreError;
use openraft::ServerState;
use tokio::time::Instant;
use tracing::{info, warn};

use super::consumer_machine::ConsumerMachine;
use super::group::MetaGroup;
use super::meta::{ConsumerAssignment, MetaCommand, MetaState, RaftGroup};
use super::network::GroupNetwork;
use super::node_id::peer_id;
use super::types::{ConsumerRaft, ConsumerRecord, ConsumerTypes, OpReply, StreamOp};

/// How long a new leader waits to have applied everything committed before it starts the
/// task (tried again after [`RECHECK`]).
const CATCH_UP: Duration = Duration::from_secs(5);
/// How often the leadership is looked at again without a change (retries of a failed start).
const RECHECK: Duration = Duration::from_secs(1);
/// How long a proposal of a state record waits for its commit and apply.
const COMMIT_WITHIN: Duration = Duration::from_secs(10);
/// How long a failed proposal holds the task before it tries again (no hot loop while the
/// lead moves).
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How long a leader that stepped down keeps its task stopped at most while another member
/// is elected (the meta group's hand-over silence).
const STEPDOWN_HOLD: Duration = Duration::from_secs(15);

/// The name of consumer `name`'s group of stream `stream` of `account`, created at
/// `created_ns` (`C-` and 8 base62 characters).
pub fn group_name(account: &str, stream: &str, name: &str, created_ns: i64) -> String {
    format!(
        "C-{}",
        peer_id(&format!("{account}\0{stream}\0{name}\0{created_ns}"))
    )
}

/// A replicated consumer's group on this member.
pub struct ConsumerGroup {
    /// The group's Raft.
    pub raft: ConsumerRaft,
    /// The group's name (`C-<hash>`).
    pub name: String,
    /// The stream's account.
    pub account: String,
    /// The stream's name.
    pub stream: String,
    /// The consumer's name.
    pub consumer: String,
    /// The configuration of the assignment (updated as the meta group applies updates).
    config: Mutex<ConsumerConfig>,
    /// Until when this member does not run the task although it leads (it stepped down and
    /// waits for another leader).
    held: Mutex<Option<Instant>>,
    machine: ConsumerMachine,
    js: JetStream,
    /// The meta group (the stream's group and the assignments are reached through it).
    meta: Weak<MetaGroup>,
}

impl ConsumerGroup {
    /// Starts the group of assignment `ca` on this member (whose copy of the stream is in
    /// `js`).
    pub async fn start(
        meta: &Arc<MetaGroup>,
        ca: &ConsumerAssignment,
        js: &JetStream,
    ) -> Result<Arc<ConsumerGroup>, String> {
        let config: ConsumerConfig = serde_json::from_str(&ca.config)
            .map_err(|e| format!("its configuration does not read: {e}"))?;
        let (db, group) = (meta.db.clone(), ca.group.name.clone());
        let store = js.store_of(&ca.stream).clone();
        let machine = {
            let (db, group, stream, name) = (
                db.clone(),
                group.clone(),
                ca.stream.clone(),
                ca.name.clone(),
            );
            tokio::task::spawn_blocking(move || {
                ConsumerMachine::open(db, &group, store, &stream, &name)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        };
        let network = GroupNetwork {
            transport: meta.transport.clone(),
            group: group.clone(),
            durable: None,
        };
        let raft = ConsumerRaft::new(
            meta.own,
            Arc::new(super::stream_group::raft_config(&group)?),
            network,
            db.log::<ConsumerTypes>(&group),
            machine.clone(),
        )
        .await
        .map_err(|e| format!("cannot start its group: {e}"))?;
        let g = Arc::new(ConsumerGroup {
            raft,
            name: group,
            account: ca.account.clone(),
            stream: ca.stream.clone(),
            consumer: ca.name.clone(),
            config: Mutex::new(config),
            held: Mutex::new(None),
            machine,
            js: js.clone(),
            meta: Arc::downgrade(meta),
        });
        meta.initialize_group(&g.raft, &g.name, &ca.group.peers)
            .await;
        tokio::spawn(follow_leadership(Arc::downgrade(&g)));
        info!(account = %g.account, stream = %g.stream, consumer = %g.consumer, group = %g.name,
              "JetStream cluster: consumer group started");
        Ok(g)
    }

    /// Stops the consumer's task (if it runs here) and the group's Raft.
    pub async fn stop(&self) {
        self.js
            .stop_group_consumer(&self.stream, &self.consumer, false)
            .await;
        let _ = self.raft.shutdown().await;
    }

    /// The engine of the stream's copy.
    pub fn engine(&self) -> &JetStream {
        &self.js
    }

    /// The configuration of the assignment.
    fn config(&self) -> ConsumerConfig {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows assignment `ca`'s configuration (a `CONSUMER.CREATE` update applied by the
    /// meta group): kept for the next start of the task, and given to the task if it runs
    /// here.
    pub async fn follow_config(&self, ca: &ConsumerAssignment) {
        let Ok(config) = serde_json::from_str::<ConsumerConfig>(&ca.config) else {
            return;
        };
        {
            let mut current = self.config.lock().unwrap_or_else(PoisonError::into_inner);
            if *current == config {
                return;
            }
            *current = config.clone();
        }
        info!(stream = %self.stream, consumer = %self.consumer,
              "JetStream cluster: a replicated consumer's configuration updated");
        self.js.update_group_consumer(&self.stream, config).await;
    }

    /// Makes `members` the group's voters if this member leads it (see
    /// [`super::group::change_members`]); `None` when it does not.
    pub async fn change_members(&self, members: &[(u64, String)]) -> Option<Result<(), ApiError>> {
        let what = format!("consumer {}", self.consumer);
        super::group::change_members(&self.raft, members, COMMIT_WITHIN, &what).await
    }

    /// Whether this member holds its task back after a stepdown.
    fn held(&self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match *held {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *held = None;
                false
            }
            None => false,
        }
    }

    /// Steps down if this member leads the group (`CONSUMER.LEADER.STEPDOWN`): the task is
    /// stopped first (its write in flight finished: nothing it answered is lost, and no
    /// proposal keeps the followers from their election), then the group's heartbeats stop
    /// until another member leads ([`super::group::hand_over`]). Whether it led.
    pub async fn step_down(&self) -> bool {
        let own = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader {
                return false;
            }
            m.id
        };
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + STEPDOWN_HOLD);
        self.js
            .stop_group_consumer(&self.stream, &self.consumer, true)
            .await;
        super::group::hand_over(&self.raft, own, &format!("consumer {}", self.consumer))
    }

    /// The group's leader (its name) and the other peers, with their state on the leader
    /// ([`MetaGroup::group_cluster`]: `current`, `active` and `lag` from the group's Raft
    /// metrics).
    fn cluster(&self, meta: &MetaGroup) -> (Option<String>, Vec<PeerInfo>) {
        meta.group_cluster(&self.raft.metrics().borrow())
    }
}

/// The RPC of a pull request forwarded to the group's leader (see
/// [`MetaGroup::forward_pull`]).
pub const NEXT: &str = "next";

/// How long the forwarding of a pull request waits for the leader's receipt.
const FORWARD_TTL: Duration = Duration::from_secs(5);

impl ConsumerGroup {
    /// Serves a pull request another member forwarded (postcard of the reply subject and the
    /// body): handed to the consumer's task here, which answers the client's reply subject
    /// over the routes. The receipt (empty), or `None` when the body does not decode.
    pub fn serve_forwarded(&self, body: &[u8]) -> Option<Vec<u8>> {
        let (reply, payload): (String, Vec<u8>) = postcard::from_bytes(body).ok()?;
        self.js
            .forwarded_pull(&self.stream, &self.consumer, &reply, payload);
        Some(Vec::new())
    }
}

impl MetaGroup {
    /// Forwards a pull request of replicated consumer `name` of stream `stream` of `account`
    /// to the member leading its group (a client's request on a member that does not run the
    /// task): `false` when this member has no group of it, or no other leader is known.
    pub fn forward_pull(
        &self,
        account: &str,
        stream: &str,
        name: &str,
        reply: &str,
        payload: &[u8],
    ) -> bool {
        let key = (account.to_owned(), stream.to_owned(), name.to_owned());
        let Some(group) = self
            .state()
            .consumers
            .get(&key)
            .map(|ca| ca.group.name.clone())
        else {
            return false;
        };
        let Some(cg) = self.consumer_group_named(&group) else {
            return false;
        };
        let leader = cg.raft.metrics().borrow().current_leader;
        let Some(leader) = leader.filter(|l| *l != self.own) else {
            return false;
        };
        let Ok(body) = postcard::to_allocvec(&(reply, payload)) else {
            return false;
        };
        let transport = self.transport.clone();
        tokio::spawn(async move {
            if let Err(e) = transport
                .request(leader, &group, NEXT, &body, FORWARD_TTL)
                .await
            {
                tracing::debug!(group = %group, error = %e, "JetStream cluster: a forwarded pull request was not received");
            }
        });
        true
    }
}

/// Runs the consumer's task while this member leads the group, stops it when it does not.
async fn follow_leadership(group: Weak<ConsumerGroup>) {
    let Some(mut metrics) = group.upgrade().map(|g| g.raft.metrics()) else {
        return;
    };
    let mut running = false;
    loop {
        let leads = metrics.borrow_and_update().state == ServerState::Leader;
        let Some(g) = group.upgrade() else {
            break;
        };
        if !leads {
            *g.held.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        let leads = leads && !g.held();
        if !leads && running {
            g.js.stop_group_consumer(&g.stream, &g.consumer, true).await;
            running = false;
            info!(stream = %g.stream, consumer = %g.consumer,
                  "JetStream cluster: this member no longer leads the consumer");
        } else if leads && !running {
            running = lead(&g).await;
        }
        drop(g);
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
    if let Some(g) = group.upgrade() {
        g.js.stop_group_consumer(&g.stream, &g.consumer, true).await;
    }
}

/// Starts the consumer's task on this member (it leads): from the record of everything
/// committed. Whether it runs.
async fn lead(g: &Arc<ConsumerGroup>) -> bool {
    match tokio::time::timeout(CATCH_UP, g.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => {}
        _ => return false,
    }
    // A leader restarted within its term (openraft 0.9 resumes it without an election) reads
    // from its term's first entry and its committed index saved lazily, both possibly behind
    // what it committed before the restart: the record would be stale, and the task would
    // propose that stale state over the committed one. Everything in a leader's log is
    // committed in the end (a leader never truncates its own log): the task starts once all
    // of it is applied.
    let last = g.raft.metrics().borrow().last_log_index;
    let applied = g
        .raft
        .wait(Some(CATCH_UP))
        .applied_index_at_least(last, "the leader's log applied")
        .await;
    if applied.is_err() {
        return false;
    }
    let record = g.machine.applied_record();
    let sink = Arc::new(Proposals(Arc::downgrade(g)));
    let config = g.config();
    match g
        .js
        .start_group_consumer(&g.stream, config.clone(), now_ns(), record, sink)
        .await
    {
        Ok(()) => {
            // An update applied while the task started.
            let now = g.config();
            if now != config {
                g.js.update_group_consumer(&g.stream, now).await;
            }
            info!(stream = %g.stream, consumer = %g.consumer,
                  "JetStream cluster: this member leads the consumer and runs it");
            true
        }
        Err(e) => {
            warn!(stream = %g.stream, consumer = %g.consumer, error = %e.description,
                  "JetStream cluster: cannot start a replicated consumer (retried)");
            false
        }
    }
}

/// The leader's record sink: each state record proposed to the group, done once committed and
/// applied here; the messages its acks release (interest, workqueue retention) removed
/// through the stream's group (`StreamOp::Remove`, through its leader: here or over the
/// transport, as `MSG.DELETE`), so every copy removes them alike.
struct Proposals(Weak<ConsumerGroup>);

impl RecordSink for Proposals {
    fn put(&self, _stream: &str, _consumer: &str, record: Vec<u8>) -> WriteFuture {
        let group = self.0.clone();
        Box::pin(async move {
            let raft = group.upgrade().map(|g| g.raft.clone());
            let Some(raft) = raft else {
                return Err(StoreError::Closed);
            };
            let written = tokio::time::timeout(
                COMMIT_WITHIN,
                raft.client_write(ConsumerRecord { state: record }),
            )
            .await;
            let why = match written {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "not committed in time".to_owned(),
            };
            tokio::time::sleep(RETRY_AFTER).await;
            Err(StoreError::Io(io::Error::other(format!(
                "the consumer group did not commit the state: {why}"
            ))))
        })
    }

    fn remove(&self, stream: &str, seqs: Vec<u64>) -> RemovalFuture {
        let group = self.0.clone();
        let stream = stream.to_owned();
        Box::pin(async move {
            let target = group.upgrade().map(|g| (g.meta.clone(), g.account.clone()));
            let Some((Some(meta), account)) = target.map(|(m, a)| (m.upgrade(), a)) else {
                return Err(StoreError::Closed);
            };
            let why = match meta
                .stream_op(&account, &stream, StreamOp::Remove { seqs })
                .await
            {
                Ok(OpReply::Removed(n)) => return Ok(n),
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(e) => e.description,
            };
            tokio::time::sleep(RETRY_AFTER).await;
            Err(StoreError::Io(io::Error::other(format!(
                "the stream group did not remove acknowledged messages: {why}"
            ))))
        })
    }

    fn assigned(&self, stream: &str) -> Vec<ConsumerConfig> {
        let Some(g) = self.0.upgrade() else {
            return Vec::new();
        };
        let Some(meta) = g.meta.upgrade() else {
            return Vec::new();
        };
        meta.state()
            .consumers
            .values()
            .filter(|ca| ca.account == g.account && ca.stream == stream)
            .filter_map(|ca| serde_json::from_str(&ca.config).ok())
            .collect()
    }
}

/// Starts and stops this member's consumer groups as the assignments of `state` say:
/// consumers of the streams this member has a copy of (`copies`: account and stream).
pub async fn follow(
    g: &Arc<MetaGroup>,
    state: &MetaState,
    engines: &AccountJetStreams,
    copies: &BTreeSet<(String, String)>,
) {
    let mine: Vec<&ConsumerAssignment> = state
        .consumers
        .values()
        .filter(|ca| ca.group.peers.contains(&g.own))
        .filter(|ca| copies.contains(&(ca.account.clone(), ca.stream.clone())))
        .collect();
    let wanted: BTreeSet<&str> = mine.iter().map(|ca| ca.group.name.as_str()).collect();
    for gone in g.consumer_groups_except(&wanted) {
        g.remove_consumer_group(&gone).await;
    }
    for ca in mine {
        let Some(js) = engines.get(&ca.account) else {
            continue;
        };
        if let Err(e) = g.ensure_consumer_group(ca, &js).await {
            warn!(account = %ca.account, stream = %ca.stream, consumer = %ca.name, error = %e,
                  "JetStream cluster: cannot start a consumer group (retried)");
        }
    }
}

/// 10008: no meta leader, or it did not answer.
fn unavailable() -> ApiError {
    JsError::ClusterNotAvail.err()
}

impl MetaGroup {
    /// Assigns the replicated consumer `config` of stream `stream` of `account` to the
    /// stream's peers (or confirms it with the same configuration).
    pub async fn create_consumer(
        &self,
        account: &str,
        stream: &str,
        config: ConsumerConfig,
    ) -> Result<(), ApiError> {
        let state = self.state();
        let Some(sa) = state.streams.get(&(account.to_owned(), stream.to_owned())) else {
            return Err(ApiError::stream_not_found());
        };
        let name = config.consumer_name().unwrap_or_default().to_owned();
        let interest = serde_json::from_str::<StreamConfig>(&sa.config)
            .is_ok_and(|c| c.retention == Retention::Interest);
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        let assignment = ConsumerAssignment {
            account: account.to_owned(),
            stream: stream.to_owned(),
            name: name.clone(),
            config: text,
            group: RaftGroup {
                name: group_name(account, stream, &name, now_ns()),
                peers: sa.group.peers.clone(),
            },
        };
        let proposed = self
            .propose(MetaCommand::AssignConsumer(assignment))
            .await
            .map_err(|_| unavailable())?;
        match proposed.reply.refused {
            None => {
                // Interest retention: the stream's leader decides whether a publish has
                // interest against the assignments it applied; a publish sent right after
                // this answer must find this consumer there.
                if interest && !self.stream_leader_sees(account, stream, &name).await {
                    warn!(account, stream, consumer = %name,
                          "JetStream cluster: the stream leader did not confirm a new consumer in time");
                }
                Ok(())
            }
            Some(super::meta::Refusal::ConsumerExists) => Err(JsError::ConsumerAlreadyExists.err()),
            Some(super::meta::Refusal::StreamNotFound) => Err(ApiError::stream_not_found()),
            Some(super::meta::Refusal::WorkQueue(e)) => Err(e),
            Some(r) => Err(ApiError::general(&r.to_string())),
        }
    }

    /// Updates the replicated consumer `config` of stream `stream` of `account` (checked by the
    /// core): the new configuration through the meta group; each peer keeps it for its next
    /// start of the task, and the member running the task gives it the new configuration as
    /// it applies the update ([`ConsumerGroup::follow_config`]).
    pub async fn update_consumer(
        &self,
        account: &str,
        stream: &str,
        config: ConsumerConfig,
    ) -> Result<(), ApiError> {
        let name = config.consumer_name().unwrap_or_default().to_owned();
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        let proposed = self
            .propose(MetaCommand::UpdateConsumer {
                account: account.to_owned(),
                stream: stream.to_owned(),
                name,
                config: text,
            })
            .await
            .map_err(|_| unavailable())?;
        match proposed.reply.refused {
            None => Ok(()),
            Some(_) => Err(JsError::ConsumerNotFound.err()),
        }
    }

    /// `CONSUMER.LEADER.STEPDOWN` of replicated consumer `name` of stream `stream` of
    /// `account`: its group's leader steps down, here or asked over the transport (the
    /// leader this member knows, else each peer in turn). Errors: 10014 (no such consumer),
    /// 10008 (no leader answered).
    pub async fn step_down_consumer(
        &self,
        account: &str,
        stream: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let key = (account.to_owned(), stream.to_owned(), name.to_owned());
        let ca = self
            .state()
            .consumers
            .get(&key)
            .cloned()
            .ok_or_else(|| JsError::ConsumerNotFound.err())?;
        let here = self.consumer_group_named(&ca.group.name);
        if let Some(cg) = &here {
            if cg.step_down().await {
                return Ok(());
            }
        }
        let known = here.and_then(|cg| cg.raft.metrics().borrow().current_leader);
        let targets = self.leader_targets(known, &ca.group.peers);
        if self.ask_stepdown(&ca.group.name, targets).await {
            return Ok(());
        }
        Err(unavailable())
    }

    /// Removes the replicated consumer `name` of stream `stream` of `account`.
    pub async fn delete_consumer(
        &self,
        account: &str,
        stream: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let proposed = self
            .propose(MetaCommand::RemoveConsumer {
                account: account.to_owned(),
                stream: stream.to_owned(),
                name: name.to_owned(),
            })
            .await
            .map_err(|_| unavailable())?;
        match proposed.reply.refused {
            None => Ok(()),
            Some(_) => Err(JsError::ConsumerNotFound.err()),
        }
    }

    /// Whether a consumer the meta group assigned to stream `stream` of `account` (as this
    /// member applied the assignments) has a filter matching `subject`: interest retention's
    /// rule for a new publish (see "Retention on replicated streams" in
    /// `hub/JETSTREAM-CLUSTER.md`).
    pub fn has_interest(&self, account: &str, stream: &str, subject: &str) -> bool {
        let state = self.watch_state();
        let state = state.borrow();
        let from = (account.to_owned(), stream.to_owned(), String::new());
        state
            .consumers
            .range(from..)
            .take_while(|((a, s, _), _)| a == account && s == stream)
            .any(|(_, ca)| {
                serde_json::from_str::<ConsumerConfig>(&ca.config).is_ok_and(|c| {
                    let filters = c.filters();
                    filters.is_empty()
                        || filters
                            .iter()
                            .any(|f| subject_matches(f.as_bytes(), subject.as_bytes()))
                })
            })
    }

    /// The names of the replicated consumers of stream `stream` of `account` (the meta
    /// assignments).
    pub fn consumer_names(&self, account: &str, stream: &str) -> Vec<String> {
        self.state()
            .consumers
            .values()
            .filter(|ca| ca.account == account && ca.stream == stream)
            .map(|ca| ca.name.clone())
            .collect()
    }

    /// The replicated consumer `name` of stream `stream` of `account` as this member knows it:
    /// its configuration and, where this member runs its group, the group's leader.
    pub fn consumer_of(
        &self,
        account: &str,
        stream: &str,
        name: &str,
    ) -> Option<ReplicatedConsumer> {
        let key = (account.to_owned(), stream.to_owned(), name.to_owned());
        let ca = self.state().consumers.get(&key).cloned()?;
        let config: ConsumerConfig = serde_json::from_str(&ca.config).ok()?;
        let online = self.online();
        let (leader, replicas) = match self.consumer_group_named(&ca.group.name) {
            Some(g) => g.cluster(self),
            None => (
                None,
                ca.group
                    .peers
                    .iter()
                    .map(|id| PeerInfo {
                        name: self.name_of(*id).unwrap_or_else(|| id.to_string()),
                        current: false,
                        offline: !online.contains_key(id),
                        active: 0,
                        lag: 0,
                    })
                    .collect(),
            ),
        };
        Some(ReplicatedConsumer {
            config,
            cluster: ClusterInfo {
                name: Some(self.cluster_name().to_owned()),
                leader,
                replicas,
            },
        })
    }
}
