//! The meta group of a member: its Raft (openraft, log and snapshots in the Raft database),
//! started once the server runs, and what keeps it going:
//!
//! * bootstrap: a member without Raft state initializes the group when [`super::bootstrap`]
//!   allows it (all expected members seen, and their probes agree);
//! * membership: the leader adds every JetStream hubd member it sees over a route and the
//!   group does not have yet, as a learner, then as a voter;
//! * mixed clusters: a nats-server member with JetStream is reported once, by name;
//! * the log line on every leader change, `/jsz`'s `meta_cluster`, `/healthz`'s readiness;
//! * `$JS.API.META.LEADER.STEPDOWN` in the system account (answered by any member, carried
//!   out by the leader).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use leaf_core::jetstream::accounts::AccountJetStreams;
use leaf_core::jetstream::config::{ApiError, JsError};
use leaf_core::jetstream::wire::PeerInfo;
use leaf_core::jetstream::JetStream;
use leaf_core::server::fanout::{InternalSink, Msg};
use leaf_core::server::{Account, Publisher, SubRef};
use openraft::{ChangeMembers, Config, RaftMetrics, ServerState};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::bootstrap::{self, ProbeAnswer, Step};
use super::consumer_group::ConsumerGroup;
use super::machine::MetaMachine;
use super::meta::{ConsumerAssignment, MetaState, StreamAssignment};
use super::network::{serve_rpc, GroupNetwork};
use super::node_id::{node_id, peer_id, Names};
use super::store::RaftDb;
use super::stream_group::StreamGroup;
use super::transport::{Handler, Transport};
use super::types::{Member, MetaRaft, MetaTypes, OpReply, StreamOp};
use crate::route::Routes;

/// The meta group's name (a subject token).
pub const META: &str = "meta";

/// How lately a replica must have been heard from to be `current`.
const RECENT: Duration = Duration::from_secs(5);

/// How often membership and bootstrap are checked.
const TICK: Duration = Duration::from_millis(500);

/// The deadline of a probe or a forwarded stepdown.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stream change sent to its group's leader (`STREAM.PURGE`, `MSG.DELETE`) may
/// take: its proposal, commit and apply (the leader gives up after 30 s itself).
const OP_TIMEOUT: Duration = Duration::from_secs(35);

/// How long a stepped-down leader stays silent at most, waiting for another to be elected.
const STEPDOWN_SILENCE: Duration = Duration::from_secs(15);

/// What [`MetaGroup::start`] needs.
pub struct MetaOptions {
    /// This server's name (`server_name`).
    pub server_name: String,
    /// The cluster's name (`cluster.name`).
    pub cluster_name: String,
    /// The JetStream store directory (`raft.redb` goes there).
    pub store_dir: std::path::PathBuf,
    /// The routes.
    pub routes: Arc<Routes>,
    /// The system account (the transport's subjects and the stepdown request live there).
    pub system: Arc<Account>,
}

/// A member's meta group.
pub struct MetaGroup {
    /// The group's Raft.
    pub raft: MetaRaft,
    pub(super) own: u64,
    name: String,
    cluster: String,
    routes: Arc<Routes>,
    pub(super) transport: Arc<Transport>,
    /// The Raft database (every group of this member).
    pub(super) db: RaftDb,
    /// The groups of the replicated streams this member is a peer of, by group name.
    streams: Mutex<HashMap<String, Arc<StreamGroup>>>,
    /// The groups of the replicated consumers this member is a peer of, by group name.
    consumers: Mutex<HashMap<String, Arc<ConsumerGroup>>>,
    /// The assignments as this member's state machine applied them.
    state: watch::Receiver<MetaState>,
    pub(super) system: Arc<Account>,
    names: Mutex<Names>,
    /// Names of members already reported (collisions, nats-server with JetStream).
    reported: Mutex<HashSet<String>>,
    pub(super) subs: Mutex<Vec<SubRef>>,
    /// The changes of streams' peers this member runs as meta leader (`jsc::moves`).
    pub(super) runs: super::moves::Runs,
    /// The JetStream engines of this member's accounts (set once the R1 streams are followed:
    /// `jsc::r1`), which serve the API requests other members forward.
    pub(super) engines: std::sync::OnceLock<Arc<AccountJetStreams>>,
}

/// Meta log entries applied since the last snapshot that make the meta group take a new one.
/// The meta state is small (assignments), so a snapshot is cheap; a member behind by more
/// than [`META_SNAPSHOT_EVERY`] + [`META_LOG_KEPT`] entries gets one instead of the log.
const META_SNAPSHOT_EVERY: u64 = 128;
/// Meta log entries kept before the last snapshot.
const META_LOG_KEPT: u64 = 64;

/// The Raft timings of the meta group: heartbeats every 250 ms, elections after 1.5-3 s
/// without one (the routes are a LAN; nats-server's are 4-9 s); a snapshot every
/// [`META_SNAPSHOT_EVERY`] entries.
fn raft_config() -> Result<Config, String> {
    Config {
        cluster_name: META.into(),
        heartbeat_interval: 250,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        install_snapshot_timeout: 5000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(META_SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: META_LOG_KEPT,
        ..Config::default()
    }
    .validate()
    .map_err(|e| format!("JetStream cluster: Raft configuration: {e}"))
}

impl MetaGroup {
    /// Opens the Raft state in the store directory and starts the meta group's Raft, its
    /// transport and its upkeep (until `stop`).
    pub async fn start(
        opts: MetaOptions,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<MetaGroup>, String> {
        let own = node_id(&opts.server_name);
        std::fs::create_dir_all(&opts.store_dir).map_err(|e| {
            format!(
                "JetStream cluster: cannot create {}: {e}",
                opts.store_dir.display()
            )
        })?;
        let db = RaftDb::open(Path::new(&opts.store_dir)).map_err(|e| e.to_string())?;
        let machine = MetaMachine::open(db.snapshots(META)).map_err(|e| e.to_string())?;
        let state = machine.watch();
        let transport = Transport::start(opts.system.clone(), own)?;
        let network = GroupNetwork {
            transport: transport.clone(),
            group: META.into(),
            durable: None,
        };
        let raft = MetaRaft::new(
            own,
            Arc::new(raft_config()?),
            network,
            db.log::<MetaTypes>(META),
            machine.clone(),
        )
        .await
        .map_err(|e| format!("JetStream cluster: cannot start the meta group: {e}"))?;
        let mut names = Names::default();
        let _ = names.check(&opts.server_name, own);
        let group = Arc::new(MetaGroup {
            raft,
            own,
            name: opts.server_name,
            cluster: opts.cluster_name,
            routes: opts.routes,
            transport: transport.clone(),
            db: db.clone(),
            streams: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            state,
            system: opts.system,
            names: Mutex::new(names),
            reported: Mutex::new(HashSet::new()),
            subs: Mutex::new(Vec::new()),
            runs: super::moves::Runs::default(),
            engines: std::sync::OnceLock::new(),
        });
        transport.serve(Arc::new(MetaHandler(Arc::downgrade(&group))));
        group.serve_stepdown()?;
        group.serve_server_remove()?;
        info!(
            node_id = own,
            expected = group.expected(),
            "JetStream cluster: meta group started"
        );
        tokio::spawn(upkeep(Arc::downgrade(&group), stop.clone()));
        tokio::spawn(log_leaders(Arc::downgrade(&group), stop));
        Ok(group)
    }

    /// Raft requests from other members dropped (over the transport's bounds, or malformed).
    pub fn dropped(&self) -> u64 {
        self.transport.dropped()
    }

    /// Stops the group's Raft and the stream groups' (at shutdown).
    pub async fn shutdown(&self) {
        let streams: Vec<Arc<StreamGroup>> = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, g)| g)
            .collect();
        let consumers: Vec<Arc<ConsumerGroup>> = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, g)| g)
            .collect();
        for g in consumers {
            g.stop().await;
        }
        for g in streams {
            g.stop().await;
        }
        let _ = self.raft.shutdown().await;
    }

    /// Starts the group of consumer assignment `ca` (this member has the stream's copy in
    /// `js`) unless it runs.
    pub async fn ensure_consumer_group(
        self: &Arc<Self>,
        ca: &ConsumerAssignment,
        js: &JetStream,
    ) -> Result<(), String> {
        if let Some(running) = self.consumer_group_named(&ca.group.name) {
            running.follow_config(ca).await;
            return Ok(());
        }
        let g = ConsumerGroup::start(self, ca, js).await?;
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ca.group.name.clone(), g);
        Ok(())
    }

    /// The names of the consumer groups running here but those of `wanted`.
    pub fn consumer_groups_except(&self, wanted: &BTreeSet<&str>) -> Vec<String> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect()
    }

    /// Stops consumer group `name`, deletes the consumer's record from this member's copy
    /// and removes the group's Raft state (the consumer is deleted).
    pub async fn remove_consumer_group(&self, name: &str) {
        let gone = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        let Some(g) = gone else {
            return;
        };
        g.stop().await;
        if let Err(e) = g
            .engine()
            .delete_group_consumer(&g.stream, &g.consumer)
            .await
        {
            warn!(group = %g.name, error = %e.description, "JetStream cluster: cannot delete a consumer's record");
        }
        if let Err(e) = self.db.remove_group(&g.name).await {
            warn!(group = %g.name, error = %e, "JetStream cluster: cannot remove a consumer group's state");
        }
        info!(stream = %g.stream, consumer = %g.consumer, "JetStream cluster: consumer group removed");
    }

    /// The consumer group `name` running here.
    pub(super) fn consumer_group_named(&self, name: &str) -> Option<Arc<ConsumerGroup>> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The group of replicated stream `name` of `account`, if this member runs it.
    pub fn stream_group(&self, account: &str, name: &str) -> Option<Arc<StreamGroup>> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|g| g.account == account && g.stream == name)
            .cloned()
    }

    /// Starts the group of assignment `sa` (this member has its copy in `js`) unless it runs;
    /// a running one follows the assignment's configuration (`STREAM.UPDATE`).
    pub async fn ensure_stream_group(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        js: &JetStream,
    ) -> Result<(), String> {
        let running = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&sa.group.name)
            .cloned();
        if let Some(g) = running {
            return g.follow_config(sa, js).await;
        }
        let g = StreamGroup::start(self, sa, js).await?;
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sa.group.name.clone(), g);
        Ok(())
    }

    /// Stops the groups of replicated stream `name` of `account` and removes their Raft state
    /// (the stream is deleted, or created again with another group).
    pub async fn remove_stream_groups(&self, account: &str, name: &str) {
        let gone: Vec<Arc<StreamGroup>> = {
            let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
            let names: Vec<String> = streams
                .values()
                .filter(|g| g.account == account && g.stream == name)
                .map(|g| g.name.clone())
                .collect();
            names.iter().filter_map(|n| streams.remove(n)).collect()
        };
        for g in gone {
            g.stop().await;
            if let Err(e) = self.db.remove_group(&g.name).await {
                warn!(group = %g.name, error = %e, "JetStream cluster: cannot remove a stream group's state");
            }
        }
    }

    /// The stream group `name` running here.
    fn stream_group_named(&self, name: &str) -> Option<Arc<StreamGroup>> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The assignments as this member's state machine applied them.
    pub fn state(&self) -> MetaState {
        self.state.borrow().clone()
    }

    /// Watches the assignments as this member's state machine applies them.
    pub fn watch_state(&self) -> watch::Receiver<MetaState> {
        self.state.clone()
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    /// The members up as this one sees them: itself and the JetStream hubd members seen over
    /// a route, by node id, with their names.
    pub fn online(&self) -> BTreeMap<u64, String> {
        let mut online = self.seen();
        online.insert(self.own, self.name.clone());
        online
    }

    /// The `server_tags` of the members up: this member's, and those of the members seen
    /// over a route (their route INFO's `leaf_jsc`).
    pub fn online_tags(&self) -> BTreeMap<u64, Vec<String>> {
        let seen = self.seen();
        let mut tags: BTreeMap<u64, Vec<String>> = self
            .routes
            .established()
            .into_iter()
            .filter_map(|(_, route)| route.jsc)
            .filter(|jsc| seen.contains_key(&jsc.node_id))
            .map(|jsc| (jsc.node_id, jsc.tags))
            .collect();
        let own = self.routes.jsc().map(|jsc| jsc.tags).unwrap_or_default();
        tags.insert(self.own, own);
        tags
    }

    /// Initializes the group of a replicated stream or consumer (`raft`, named `name`) with
    /// every one of its `peers` as a voter, if this member is the first of them and has no
    /// Raft state for it yet (the others wait to be reached by its leader).
    pub(super) async fn initialize_group<C>(
        &self,
        raft: &openraft::Raft<C>,
        name: &str,
        peers: &[u64],
    ) where
        C: openraft::RaftTypeConfig<NodeId = u64, Node = super::types::Member>,
    {
        let m = raft.metrics().borrow().clone();
        let has_state = m.current_term > 0 || m.last_log_index.is_some();
        if peers.first() != Some(&self.own) || has_state {
            return;
        }
        let nodes: BTreeMap<u64, super::types::Member> = peers
            .iter()
            .map(|id| {
                let name = self.name_of(*id).unwrap_or_else(|| id.to_string());
                (*id, super::types::Member { name })
            })
            .collect();
        if let Err(e) = raft.initialize(nodes).await {
            tracing::debug!(group = %name, error = %e, "group not initialized here");
        }
    }

    /// The name of member `id`, if known (the membership, or a route).
    pub fn name_of(&self, id: u64) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        self.member_name(&m, id)
    }

    /// A nats-server member with JetStream seen over a route (its name): replicated assets
    /// are refused in such a cluster (see "Mixed clusters" in `hub/JETSTREAM-CLUSTER.md`).
    pub fn nats_server_with_jetstream(&self) -> Option<String> {
        self.routes
            .established()
            .into_iter()
            .find(|(_, r)| r.jsc.is_none() && r.jetstream)
            .map(|(_, r)| r.name)
    }

    /// The expected number of JetStream members (see [`super::bootstrap::expected`]).
    pub fn expected(&self) -> usize {
        let without_js = self
            .routes
            .established()
            .iter()
            .filter(|(_, r)| r.jsc.is_none() && !r.jetstream)
            .count();
        bootstrap::expected(self.routes.configured_peers(), without_js)
    }

    /// The JetStream hubd members seen over routes (others), by node id, with their names;
    /// a name colliding with another's node id is reported and left out.
    fn seen(&self) -> BTreeMap<u64, String> {
        let mut seen = BTreeMap::new();
        for (_, route) in self.routes.established() {
            let Some(jsc) = route.jsc else {
                if route.jetstream {
                    self.report_once(&route.name, || {
                        format!(
                            "nats-server member {} has JetStream; hubd and nats-server cannot \
                             share JetStream groups: replicated streams and consumers are \
                             refused in this cluster (R1 assets are not affected)",
                            route.name
                        )
                    });
                }
                continue;
            };
            let checked = self
                .names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(&route.name, jsc.node_id);
            match checked {
                Ok(()) if jsc.node_id == node_id(&route.name) => {
                    seen.insert(jsc.node_id, route.name.clone());
                }
                Ok(()) => self.report_once(&route.name, || {
                    format!(
                        "JetStream cluster: member {} announces node id {} which is not its \
                         name's; left out of the meta group",
                        route.name, jsc.node_id
                    )
                }),
                Err(e) => self.report_once(&route.name, || e.to_string()),
            }
        }
        seen
    }

    fn report_once(&self, name: &str, text: impl FnOnce() -> String) {
        let new = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        if new {
            error!("{}", text());
        }
    }

    /// This member's answer to a bootstrap probe.
    fn probe_answer(&self) -> ProbeAnswer {
        let mut members: BTreeSet<u64> = self.seen().into_keys().collect();
        members.insert(self.own);
        ProbeAnswer {
            has_state: self.has_state(),
            members,
        }
    }

    /// Whether this member has Raft state for the group (a vote, a log or a membership).
    fn has_state(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_term > 0
            || m.last_log_index.is_some()
            || m.membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some()
    }

    /// One round of upkeep: bootstrap, or (leader) the changes of streams' peers recorded
    /// (`jsc::moves`) and membership.
    async fn tick(self: &Arc<Self>) {
        let seen = self.seen();
        if !self.has_state() {
            self.try_bootstrap(&seen).await;
            return;
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.own) || m.state != ServerState::Leader {
            return;
        }
        self.resume_moves();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let known: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        for (id, name) in &seen {
            if voters.contains(id) {
                continue;
            }
            if !known.contains(id) {
                info!(member = %name, "JetStream cluster: adding a member to the meta group");
                let added = tokio::time::timeout(
                    Duration::from_secs(10),
                    self.raft
                        .add_learner(*id, Member { name: name.clone() }, true),
                )
                .await;
                if !matches!(added, Ok(Ok(_))) {
                    warn!(member = %name, "JetStream cluster: the new member did not catch up yet");
                    return;
                }
            }
            let promoted = tokio::time::timeout(
                Duration::from_secs(10),
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false),
            )
            .await;
            match promoted {
                Ok(Ok(_)) => {
                    info!(member = %name, "JetStream cluster: member is a voter of the meta group")
                }
                _ => {
                    warn!(member = %name, "JetStream cluster: could not make the member a voter yet")
                }
            }
            return;
        }
    }

    /// Initializes the group if the bootstrap rule allows it now.
    async fn try_bootstrap(&self, seen: &BTreeMap<u64, String>) {
        let ids: BTreeSet<u64> = seen.keys().copied().collect();
        let members = match bootstrap::next_step(self.own, self.expected(), &ids) {
            Step::Wait(why) => {
                tracing::debug!("JetStream cluster: {why}");
                return;
            }
            Step::Probe(members) => members,
        };
        let mut answers = Vec::new();
        for id in &ids {
            let answer = self
                .transport
                .request(*id, META, "probe", &[], PROBE_TIMEOUT)
                .await
                .ok()
                .and_then(|a| postcard::from_bytes::<ProbeAnswer>(&a).ok());
            match answer {
                Some(a) => answers.push(a),
                None => return,
            }
        }
        if !bootstrap::confirmed(&members, &answers) || self.has_state() {
            return;
        }
        let mut nodes = BTreeMap::new();
        for id in &members {
            let name = if *id == self.own {
                self.name.clone()
            } else {
                seen.get(id).cloned().unwrap_or_default()
            };
            nodes.insert(*id, Member { name });
        }
        let names: Vec<String> = nodes.values().map(|m| m.name.clone()).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => info!(members = ?names, "JetStream cluster: meta group initialized"),
            Err(e) => {
                tracing::debug!(error = %e, "JetStream cluster: meta group not initialized here")
            }
        }
    }

    pub(super) fn member_name(
        &self,
        m: &openraft::RaftMetrics<u64, Member>,
        id: u64,
    ) -> Option<String> {
        if id == self.own {
            return Some(self.name.clone());
        }
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.name.clone())
            .or_else(|| {
                self.names
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .name(id)
                    .map(str::to_owned)
            })
    }

    /// `/jsz`'s `meta_cluster`, as nats-server's: the cluster's name, the leader (name and
    /// peer id), on the leader the other voters (`current`: caught up and heard from lately; `active`:
    /// nanoseconds since last heard from; `lag`: entries behind, known on the leader) and the
    /// group's size.
    pub fn meta_cluster(&self) -> Value {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let leader = m.current_leader;
        // As nats-server's: the replicas are known (and shown) by the leader only.
        let mut replicas = Vec::new();
        let leading = leader == Some(self.own);
        for id in voters.iter().filter(|id| leading && Some(**id) != leader) {
            let name = self.member_name(&m, *id).unwrap_or_default();
            let (since, lag) = self.replica_state(&m, *id);
            let recent = since.is_some_and(|s| s < RECENT);
            let current = match lag {
                Some(lag) => lag == 0 && recent,
                None => recent && leader.is_some(),
            };
            replicas.push(json!({
                "name": name,
                "current": current,
                "active": since.map_or(0, |s| u64::try_from(s.as_nanos()).unwrap_or(u64::MAX)),
                "lag": lag.unwrap_or(0),
                "peer": peer_id(&name),
            }));
        }
        let mut block = json!({
            "name": self.cluster,
            "cluster_size": if voters.is_empty() { self.expected() } else { voters.len() },
        });
        if leading {
            block["replicas"] = json!(replicas);
        }
        if let Some(name) = leader.and_then(|l| self.member_name(&m, l)) {
            block["peer"] = json!(peer_id(&name));
            block["leader"] = json!(name);
        }
        block
    }

    /// What this member knows of peer `id` of a group whose metrics are `m`: how long ago it
    /// was last heard from over the transport (zero for this member), and on the group's
    /// leader how many entries it is behind.
    fn replica_state(
        &self,
        m: &RaftMetrics<u64, Member>,
        id: u64,
    ) -> (Option<Duration>, Option<u64>) {
        let since = if id == self.own {
            Some(Duration::ZERO)
        } else {
            self.transport.last_contact(id).map(|t| t.elapsed())
        };
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .map(|matched| last.saturating_sub(matched.map_or(0, |l| l.index)));
        (since, lag)
    }

    /// The leader (its name) and the other voters of a stream's or consumer's group whose
    /// metrics are `m`, as `STREAM.INFO` and `CONSUMER.INFO` show them: on the leader from
    /// its replication state (`current`: caught up and heard from within [`RECENT`],
    /// `active`: ns since last heard from, `lag`: entries behind); on a follower what it
    /// knows (itself current while it has a leader, the others not, `lag` 0).
    pub fn group_cluster(&self, m: &RaftMetrics<u64, Member>) -> (Option<String>, Vec<PeerInfo>) {
        let leader = m.current_leader;
        // The meta group's names first: the membership's were written when the group was
        // initialized, possibly before the first peer had seen every other one.
        let name = |id: u64| {
            self.name_of(id)
                .or_else(|| {
                    m.membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.name.clone())
                })
                .unwrap_or_else(|| id.to_string())
        };
        let online = self.online();
        let leading = leader == Some(self.own);
        let replicas = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| Some(*id) != leader)
            .map(|id| {
                let (since, lag) = self.replica_state(m, id);
                let recent = since.is_some_and(|s| s < RECENT);
                let current = if leading {
                    lag == Some(0) && recent
                } else {
                    id == self.own && leader.is_some()
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

    /// Why the server is not ready: no meta leader.
    pub fn unready(&self) -> Option<String> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .is_none()
            .then(|| "JetStream has not established contact with a meta leader".to_owned())
    }

    /// Steps down if this member leads (see [`hand_over`]). Returns whether it led.
    fn step_down(self: &Arc<Self>) -> bool {
        hand_over(&self.raft, self.own, "meta group")
    }

    /// The assignment of replicated stream `name` of `account` (10059 without one) and its
    /// group on this member, if it runs here.
    pub(super) fn assigned(
        &self,
        account: &str,
        name: &str,
    ) -> Result<(StreamAssignment, Option<Arc<StreamGroup>>), ApiError> {
        // Looked up in place: the whole state is not cloned (reads come here for every get).
        let sa = self
            .state
            .borrow()
            .streams
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(ApiError::stream_not_found)?;
        let here = self.stream_group_named(&sa.group.name);
        Ok((sa, here))
    }

    /// The members to ask for something only a group's leader does: `leader` (the leader this
    /// member's copy of the group knows), then each of `peers`, never this member.
    pub(super) fn leader_targets(&self, leader: Option<u64>, peers: &[u64]) -> Vec<u64> {
        let mut targets: Vec<u64> = leader
            .into_iter()
            .chain(peers.iter().copied())
            .filter(|id| *id != self.own)
            .collect();
        targets.dedup();
        targets
    }

    /// Asks each of `targets` in turn to step down as leader of group `group` (its
    /// `stepdown` RPC): whether one did.
    pub(super) async fn ask_stepdown(&self, group: &str, targets: Vec<u64>) -> bool {
        for target in targets {
            let answer = self
                .transport
                .request(target, group, "stepdown", &[], PROBE_TIMEOUT)
                .await;
            if answer
                .ok()
                .and_then(|a| postcard::from_bytes::<bool>(&a).ok())
                == Some(true)
            {
                return true;
            }
        }
        false
    }

    /// `STREAM.LEADER.STEPDOWN` of replicated stream `name` of `account`: its group's leader
    /// steps down, here or asked over the transport (the leader this member knows, else each
    /// peer in turn). Errors: 10059 (no such stream), 10008 (no leader answered).
    pub async fn step_down_stream(&self, account: &str, name: &str) -> Result<(), ApiError> {
        let (sa, here) = self.assigned(account, name)?;
        if here.as_ref().is_some_and(|sg| sg.step_down(self.own)) {
            return Ok(());
        }
        let known = here.and_then(|sg| sg.raft.metrics().borrow().current_leader);
        let targets = self.leader_targets(known, &sa.group.peers);
        if self.ask_stepdown(&sa.group.name, targets).await {
            return Ok(());
        }
        Err(JsError::ClusterNotAvail.err())
    }

    /// Proposes `op` (`STREAM.PURGE`, `MSG.DELETE`) to the group of replicated stream `name`
    /// of `account` through its leader: here when this member leads, else sent to the
    /// leader this member knows, then to the other peers (a member not leading answers that
    /// it does not); its reply once committed and applied on the leader.
    pub async fn stream_op(
        &self,
        account: &str,
        name: &str,
        op: StreamOp,
    ) -> Result<OpReply, ApiError> {
        let (sa, here) = self.assigned(account, name)?;
        let group = sa.group.name.clone();
        if let Some(sg) = &here {
            if let Some(answer) = sg.propose_op(op.clone()).await {
                return answer;
            }
        }
        let body = postcard::to_allocvec(&op).map_err(|e| ApiError::general(&e.to_string()))?;
        let known = here.and_then(|sg| sg.raft.metrics().borrow().current_leader);
        for target in self.leader_targets(known, &sa.group.peers) {
            let answer = self
                .transport
                .request(target, &group, "op", &body, OP_TIMEOUT)
                .await;
            let answer = answer
                .ok()
                .and_then(|a| postcard::from_bytes::<Option<Result<OpReply, ApiError>>>(&a).ok());
            if let Some(Some(answer)) = answer {
                return answer;
            }
        }
        Err(JsError::ClusterNotAvail.err())
    }

    /// Waits (bounded) until the leader of replicated stream `name`'s group of `account` has
    /// applied the assignment of consumer `consumer` (here, or asked of the leader this member
    /// knows, then of each peer): whether it did. An interest stream's leader decides at
    /// capture whether a publish has interest, against the assignments it applied.
    pub async fn stream_leader_sees(&self, account: &str, name: &str, consumer: &str) -> bool {
        let Ok((sa, here)) = self.assigned(account, name) else {
            return false;
        };
        if let Some(sg) = &here {
            if let Some(seen) = sg.await_consumer(consumer).await {
                return seen;
            }
        }
        let Ok(body) = postcard::to_allocvec(consumer) else {
            return false;
        };
        let rpc = super::stream_group::SEES_CONSUMER;
        let ttl = super::stream_group::SEES_WITHIN + Duration::from_millis(500);
        for target in self.leader_targets(
            here.as_ref()
                .and_then(|sg| sg.raft.metrics().borrow().current_leader),
            &sa.group.peers,
        ) {
            let answer = self
                .transport
                .request(target, &sa.group.name, rpc, &body, ttl)
                .await
                .ok()
                .and_then(|a| postcard::from_bytes::<Option<bool>>(&a).ok());
            if let Some(Some(seen)) = answer {
                return seen;
            }
        }
        false
    }

    /// Makes `peers` the voters of the group of assignment `sa` through its leader (here or
    /// sent to it, `$HRG` request `members`), retried while the group has no leader (the
    /// removed peer may have led it) within [`OP_TIMEOUT`].
    pub async fn set_stream_members(
        &self,
        sa: &StreamAssignment,
        peers: &[u64],
    ) -> Result<(), ApiError> {
        self.set_members(&sa.group.name, &sa.group.peers, peers)
            .await
    }

    /// Makes `peers` the voters of group `group` (a stream's or a consumer's, whose peers were
    /// `old`) through its leader, as [`MetaGroup::set_stream_members`].
    pub async fn set_members(
        &self,
        group: &str,
        old: &[u64],
        peers: &[u64],
    ) -> Result<(), ApiError> {
        let targets: Vec<u64> = peers.iter().chain(old).copied().collect();
        self.change_group_members(group, &targets, |_| peers.to_vec())
            .await
            .map(drop)
    }

    /// Makes `members_if(leader)` the voters of group `group` (a stream's or a consumer's)
    /// through its leader, here or sent to it (`$HRG` request `members`; each of `targets` is
    /// asked with the voters wanted if it leads, a member not leading answers that it does
    /// not), retried while the group has no leader within [`OP_TIMEOUT`]: the voters set. A
    /// shrink keeps the leader this way without knowing it beforehand.
    pub async fn change_group_members(
        &self,
        group: &str,
        targets: &[u64],
        members_if: impl Fn(u64) -> Vec<u64>,
    ) -> Result<Vec<u64>, ApiError> {
        let named = |peers: &[u64]| -> Vec<(u64, String)> {
            peers
                .iter()
                .map(|id| (*id, self.name_of(*id).unwrap_or_else(|| id.to_string())))
                .collect()
        };
        let mut seen = BTreeSet::new();
        let targets: Vec<u64> = targets
            .iter()
            .copied()
            .filter(|id| *id != self.own && seen.insert(*id))
            .collect();
        let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
        loop {
            let mine = members_if(self.own);
            let members = named(&mine);
            let here = match self.stream_group_named(group) {
                Some(sg) => sg.change_members(&members).await,
                None => match self.consumer_group_named(group) {
                    Some(cg) => cg.change_members(&members).await,
                    None => None,
                },
            };
            if let Some(answer) = here {
                return answer.map(|()| mine);
            }
            for target in &targets {
                let theirs = members_if(*target);
                let body = postcard::to_allocvec(&named(&theirs))
                    .map_err(|e| ApiError::general(&e.to_string()))?;
                let answer = self
                    .transport
                    .request(*target, group, "members", &body, OP_TIMEOUT)
                    .await
                    .ok()
                    .and_then(|a| postcard::from_bytes::<Option<Result<(), ApiError>>>(&a).ok());
                if let Some(Some(answer)) = answer {
                    return answer.map(|()| theirs);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(JsError::ClusterNotAvail.err());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Serves `$JS.API.META.LEADER.STEPDOWN` in the system account.
    fn serve_stepdown(self: &Arc<Self>) -> Result<(), String> {
        self.serve_system_request(b"$JS.API.META.LEADER.STEPDOWN", |g, _| async move {
            g.stepdown_request().await
        })
    }

    /// Serves the API requests on `subject` in the system account: each answered with what
    /// `handle` gives for its body (one at a time, in order; at most 16 waiting, more are
    /// dropped and the requester times out).
    pub(super) fn serve_system_request<F, Fut>(
        self: &Arc<Self>,
        subject: &[u8],
        handle: F,
    ) -> Result<(), String>
    where
        F: Fn(Arc<MetaGroup>, Vec<u8>) -> Fut + Send + 'static,
        Fut: Future<Output = Value> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(16);
        let sub = self
            .system
            .subscribe_internal(subject, None, Arc::new(RequestSink(tx)))
            .map_err(|e| {
                format!(
                    "JetStream cluster: cannot serve {}: {e}",
                    String::from_utf8_lossy(subject)
                )
            })?;
        self.subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sub);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some((reply, body)) = rx.recv().await {
                let Some(g) = weak.upgrade() else {
                    break;
                };
                let answer = handle(g.clone(), body).await;
                g.system.publish(&Msg {
                    subject: reply.as_bytes(),
                    reply: None,
                    headers: None,
                    payload: answer.to_string().as_bytes(),
                });
            }
        });
        Ok(())
    }

    /// Carries out a stepdown request here or at the leader; the API answer.
    async fn stepdown_request(self: &Arc<Self>) -> Value {
        const TYPE: &str = "io.nats.jetstream.api.v1.meta_leader_stepdown_response";
        let unavailable = json!({
            "type": TYPE,
            "error": JsError::ClusterNotAvail.err(),
        });
        if self.step_down() {
            return json!({ "type": TYPE, "success": true });
        }
        let Some(leader) = self.raft.metrics().borrow().current_leader else {
            return unavailable;
        };
        let answer = self
            .transport
            .request(leader, META, "stepdown", &[], PROBE_TIMEOUT)
            .await;
        match answer
            .ok()
            .and_then(|a| postcard::from_bytes::<bool>(&a).ok())
        {
            Some(true) => json!({ "type": TYPE, "success": true }),
            _ => unavailable,
        }
    }
}

impl Drop for MetaGroup {
    fn drop(&mut self) {
        let subs = std::mem::take(&mut *self.subs.lock().unwrap_or_else(PoisonError::into_inner));
        for s in subs {
            self.system.unsubscribe_internal(&s);
        }
    }
}

/// Makes `members` (node id, server name) the voters of `raft`'s group (`what`, for the log)
/// if this member leads it: the new ones added as learners first (waiting until they caught
/// up: from the log or a snapshot), then the voters replaced; each step within `within`.
/// `None` when this member does not lead.
pub(super) async fn change_members<C>(
    raft: &openraft::Raft<C>,
    members: &[(u64, String)],
    within: Duration,
    what: &str,
) -> Option<Result<(), ApiError>>
where
    C: openraft::RaftTypeConfig<
        NodeId = u64,
        Node = Member,
        Responder = openraft::impls::OneshotResponder<C>,
    >,
{
    if raft.metrics().borrow().state != ServerState::Leader {
        return None;
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        warn!(group = %what, error = %e, "JetStream cluster: the group's peers not changed");
        Some(Err(JsError::ClusterNotAvail.err()))
    };
    let voters: BTreeSet<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    for (id, name) in members.iter().filter(|(id, _)| !voters.contains(id)) {
        let member = Member { name: name.clone() };
        match tokio::time::timeout(within, raft.add_learner(*id, member, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return unavailable(&e),
            Err(e) => return unavailable(&e),
        }
    }
    let ids: BTreeSet<u64> = members.iter().map(|(id, _)| *id).collect();
    match tokio::time::timeout(within, raft.change_membership(ids, false)).await {
        Ok(Ok(_)) => {
            info!(group = %what, peers = ?members, "JetStream cluster: the group's peers changed");
            Some(Ok(()))
        }
        Ok(Err(e)) => unavailable(&e),
        Err(e) => unavailable(&e),
    }
}

/// Steps down if this member (`own`) leads `raft`'s group: its heartbeats stop until another
/// member has been elected (at most [`STEPDOWN_SILENCE`]; openraft 0.9 has no leadership
/// transfer), so the followers' election timeouts fire. Returns whether it led.
pub(super) fn hand_over<C>(raft: &openraft::Raft<C>, own: u64, what: &str) -> bool
where
    C: openraft::RaftTypeConfig<NodeId = u64>,
{
    if raft.metrics().borrow().state != ServerState::Leader {
        return false;
    }
    info!("JetStream cluster: stepping down as leader of the {what}");
    raft.runtime_config().heartbeat(false);
    let raft = raft.clone();
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(STEPDOWN_SILENCE, async {
            while metrics.changed().await.is_ok() {
                let leader = metrics.borrow().current_leader;
                if leader.is_some_and(|l| l != own) {
                    break;
                }
            }
        })
        .await;
        raft.runtime_config().heartbeat(true);
    });
    true
}

/// A system API request's subscription: the reply subject and body queued for the group's
/// task (see [`MetaGroup::serve_system_request`]).
struct RequestSink(mpsc::Sender<(String, Vec<u8>)>);

impl InternalSink for RequestSink {
    fn deliver(&self, msg: &Msg<'_>, _from: &Publisher) {
        if let Some(reply) = msg.reply.and_then(|r| std::str::from_utf8(r).ok()) {
            let _ = self.0.try_send((reply.to_owned(), msg.payload.to_vec()));
        }
    }
}

/// Serves the meta group's requests from other members.
struct MetaHandler(Weak<MetaGroup>);

impl Handler for MetaHandler {
    fn handle(
        &self,
        from: u64,
        group: String,
        rpc: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>> {
        let weak = self.0.clone();
        Box::pin(async move {
            let g = weak.upgrade()?;
            // A group not running here answers a change of members at once (its proposer
            // goes on to the next peer instead of waiting out the request).
            let not_here = || postcard::to_allocvec(&None::<Result<(), ApiError>>).ok();
            if group.starts_with("C-") {
                let Some(cg) = g.consumer_group_named(&group) else {
                    return if rpc == "members" { not_here() } else { None };
                };
                drop(g);
                if rpc == super::consumer_group::NEXT {
                    return cg.serve_forwarded(&body);
                }
                if rpc == "stepdown" {
                    return postcard::to_allocvec(&cg.step_down().await).ok();
                }
                if rpc == "members" {
                    let members: Vec<(u64, String)> = postcard::from_bytes(&body).ok()?;
                    return postcard::to_allocvec(&cg.change_members(&members).await).ok();
                }
                return serve_rpc(&cg.raft, &rpc, &body).await;
            }
            if group != META {
                let Some(sg) = g.stream_group_named(&group) else {
                    return if rpc == "members" { not_here() } else { None };
                };
                let own = g.own;
                drop(g);
                if rpc == "stepdown" {
                    return postcard::to_allocvec(&sg.step_down(own)).ok();
                }
                if rpc == "vote" {
                    if let Some(refused) = sg.refuse_vote(&body) {
                        return Some(refused);
                    }
                }
                if rpc == "members" {
                    let members: Vec<(u64, String)> = postcard::from_bytes(&body).ok()?;
                    return postcard::to_allocvec(&sg.change_members(&members).await).ok();
                }
                if rpc == super::reads::READ {
                    let read: leaf_core::jetstream::reads::Read =
                        postcard::from_bytes(&body).ok()?;
                    return postcard::to_allocvec(&sg.read(&read).await).ok();
                }
                if rpc == super::stream_group::SEES_CONSUMER {
                    let name: String = postcard::from_bytes(&body).ok()?;
                    return postcard::to_allocvec(&sg.await_consumer(&name).await).ok();
                }
                if rpc == "op" {
                    let op: StreamOp = postcard::from_bytes(&body).ok()?;
                    return postcard::to_allocvec(&sg.propose_op(op).await).ok();
                }
                return serve_rpc(&sg.raft, &rpc, &body).await;
            }
            let _ = from;
            match rpc.as_str() {
                "probe" => postcard::to_allocvec(&g.probe_answer()).ok(),
                "stepdown" => postcard::to_allocvec(&g.step_down()).ok(),
                "propose" => g.serve_proposal(&body).await,
                super::r1::API_RPC => g.serve_api(&body).await,
                super::r1_held::READ_INDEX_RPC => g.serve_read_index().await,
                super::server_remove::REMOVE_RPC => {
                    postcard::to_allocvec(&g.serve_remove_server(&body).await).ok()
                }
                other => serve_rpc(&g.raft, other, &body).await,
            }
        })
    }
}

/// Bootstrap and membership, every [`TICK`] until `stop`.
async fn upkeep(group: Weak<MetaGroup>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => break,
        }
        let Some(g) = group.upgrade() else {
            break;
        };
        g.tick().await;
    }
}

/// Logs every change of meta leader.
async fn log_leaders(group: Weak<MetaGroup>, mut stop: watch::Receiver<bool>) {
    let Some(mut metrics) = group.upgrade().map(|g| g.raft.metrics()) else {
        return;
    };
    let mut last: Option<u64> = None;
    loop {
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
        let leader = metrics.borrow().current_leader;
        if leader == last {
            continue;
        }
        last = leader;
        let Some(g) = group.upgrade() else {
            break;
        };
        match leader.and_then(|l| g.member_name(&metrics.borrow().clone(), l)) {
            Some(name) => info!(leader = %name, "JetStream cluster: meta leader: {name}"),
            None => warn!("JetStream cluster: the meta group has no leader"),
        }
    }
}
