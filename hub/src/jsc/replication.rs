//! The JetStream API's replicated streams (`num_replicas` > 1) on the meta group: hubd's
//! [`Replication`] hook (see `leaf_core::jetstream::replication`).
//!
//! `STREAM.CREATE` with R>1 on any member places the stream ([`super::placement`]) and
//! proposes its assignment to the meta group ([`MetaGroup::propose`]); `STREAM.DELETE`
//! proposes its removal; every member's state machine applies both, so `STREAM.INFO`,
//! `STREAM.NAMES` and `STREAM.LIST` on any member show the assignment. Each peer's copy is
//! written by the stream's group ([`super::stream_group`]); on a peer the info's `cluster`
//! block is the group's view (its leader, the replicas' state), on another member the peers
//! without a leader. `STREAM.UPDATE` proposes the new configuration to the meta group, then
//! the stream's `discard: new` limits to its group. `STREAM.PURGE` and `MSG.DELETE` are proposed to the stream's group through
//! its leader ([`MetaGroup::stream_op`]) and applied alike on every copy. `MSG.GET` and
//! `DIRECT.GET` are served by the group's leader after a read barrier ([`super::reads`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tracing::warn;

use leaf_core::jetstream::cluster_r1::{Forward, Forwarded};
use leaf_core::jetstream::config::consumer::ConsumerConfig;
use leaf_core::jetstream::config::{ApiError, JsError, StreamConfig};
use leaf_core::jetstream::reads::{Read, ReadAnswer};
use leaf_core::jetstream::replication::{Pending, Replicated, ReplicatedConsumer, Replication};
use leaf_core::jetstream::wire::{ClusterInfo, PeerInfo};
use leaf_proto::time::now_ns;
use leaf_store::PurgeRequest;

use super::group::MetaGroup;
use super::meta::{ConsumerAssignment, MetaCommand, RaftGroup, Refusal, StreamAssignment};
use super::placement::{self, NoPeers, Voter};
use super::stream_machine::DiscardNew;
use super::types::{OpReply, StreamOp};

/// hubd's hook: the meta group of this member.
pub struct ClusterStreams(pub Weak<MetaGroup>);

impl ClusterStreams {
    /// Proposes `op` to replicated stream `name`'s group of `account` through its leader:
    /// what `take` finds in the reply (anything else: 10008).
    fn op<T: Send + 'static>(
        &self,
        account: &str,
        name: &str,
        op: StreamOp,
        take: fn(OpReply) -> Option<T>,
    ) -> Pending<T> {
        let group = self.0.clone();
        let (account, name) = (account.to_owned(), name.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            take(g.stream_op(&account, &name, op).await?).ok_or_else(unavailable)
        })
    }
}

/// 10008: no meta leader, or it did not answer.
pub(super) fn unavailable() -> ApiError {
    JsError::ClusterNotAvail.err()
}

impl ClusterStreams {
    /// `work` with the meta group, later (10008 once the group is gone).
    fn with_group<T, F, Fut>(&self, work: F) -> Pending<T>
    where
        F: FnOnce(Arc<MetaGroup>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, ApiError>> + Send,
        T: 'static,
    {
        let group = self.0.clone();
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            work(g).await
        })
    }
}

/// 10005 with the reason.
pub(super) fn no_peers(e: NoPeers) -> ApiError {
    JsError::ClusterNoPeers.with(&e.0)
}

/// The API error of a refused command.
pub(super) fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::StreamExists => ApiError::stream_name_exists(),
        Refusal::SubjectsOverlap => ApiError::subjects_overlap(),
        Refusal::StreamNotFound => ApiError::stream_not_found(),
        Refusal::ConsumerExists | Refusal::ConsumerNotFound => ApiError::general(&r.to_string()),
        Refusal::WorkQueue(e) => e,
        Refusal::MoveInProgress => JsError::StreamMoveInProgress.err(),
        Refusal::MaxStreams => JsError::MaximumStreamsLimit.err(),
    }
}

impl Replication for ClusterStreams {
    fn create(&self, account: &str, config: StreamConfig) -> Pending<(Replicated, bool)> {
        let group = self.0.clone();
        let account = account.to_owned();
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.create_stream(&account, config).await
        })
    }

    fn delete(&self, account: &str, name: &str) -> Pending<()> {
        let group = self.0.clone();
        let (account, name) = (account.to_owned(), name.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.delete_stream(&account, &name).await
        })
    }

    fn step_down(&self, account: &str, name: &str) -> Pending<()> {
        let group = self.0.clone();
        let (account, name) = (account.to_owned(), name.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.step_down_stream(&account, &name).await
        })
    }

    /// An R1 stream lives on this member: its `placement` must name this cluster and only
    /// tags this member's `server_tags` hold.
    fn check_here(&self, config: &StreamConfig) -> Result<(), ApiError> {
        let Some(g) = self.0.upgrade() else {
            return Ok(());
        };
        placement::check(config.placement.as_ref(), g.cluster_name()).map_err(no_peers)?;
        let own = g.online_tags().remove(&g.own).unwrap_or_default();
        let here = Voter {
            id: g.own,
            online: true,
            tags: own,
        };
        let wanted = placement::tags(config.placement.as_ref());
        placement::choose(1, &[here], &BTreeMap::new(), &wanted)
            .map(drop)
            .map_err(no_peers)
    }

    fn update(&self, account: &str, config: StreamConfig) -> Pending<Replicated> {
        let group = self.0.clone();
        let account = account.to_owned();
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.update_stream(&account, config).await
        })
    }

    fn remove_peer(&self, account: &str, name: &str, peer: &str) -> Pending<()> {
        let group = self.0.clone();
        let (account, name, peer) = (account.to_owned(), name.to_owned(), peer.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.remove_stream_peer(&account, &name, &peer).await
        })
    }

    fn purge(&self, account: &str, name: &str, req: PurgeRequest) -> Pending<u64> {
        let op = StreamOp::Purge {
            filter: req.filter,
            up_to_seq: req.up_to_seq,
            keep: req.keep,
        };
        self.op(account, name, op, |r| match r {
            OpReply::Purged(n) => Some(n),
            _ => None,
        })
    }

    fn delete_msg(&self, account: &str, name: &str, seq: u64) -> Pending<bool> {
        self.op(account, name, StreamOp::Delete { seq }, |r| match r {
            OpReply::Deleted(found) => Some(found),
            _ => None,
        })
    }

    fn remove_msgs(&self, account: &str, name: &str, seqs: Vec<u64>) -> Pending<u64> {
        self.op(account, name, StreamOp::Remove { seqs }, |r| match r {
            OpReply::Removed(n) => Some(n),
            _ => None,
        })
    }

    fn create_consumer(&self, account: &str, stream: &str, config: ConsumerConfig) -> Pending<()> {
        let group = self.0.clone();
        let (account, stream) = (account.to_owned(), stream.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.create_consumer(&account, &stream, config).await
        })
    }

    fn update_consumer(&self, account: &str, stream: &str, config: ConsumerConfig) -> Pending<()> {
        let (account, stream) = (account.to_owned(), stream.to_owned());
        self.with_group(|g| async move { g.update_consumer(&account, &stream, config).await })
    }

    fn step_down_consumer(&self, account: &str, stream: &str, name: &str) -> Pending<()> {
        let (account, stream, name) = (account.to_owned(), stream.to_owned(), name.to_owned());
        self.with_group(|g| async move { g.step_down_consumer(&account, &stream, &name).await })
    }

    fn delete_consumer(&self, account: &str, stream: &str, name: &str) -> Pending<()> {
        let group = self.0.clone();
        let (account, stream, name) = (account.to_owned(), stream.to_owned(), name.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.delete_consumer(&account, &stream, &name).await
        })
    }

    fn forward_pull(
        &self,
        account: &str,
        stream: &str,
        name: &str,
        reply: &str,
        payload: &[u8],
    ) -> bool {
        self.0.upgrade().is_some_and(|g| {
            g.forward_pull(account, stream, name, reply, payload)
                || g.forward_r1_pull(account, stream, name, reply, payload)
        })
    }

    fn clusters_r1(&self) -> bool {
        true
    }

    fn assign_r1(&self, account: &str, config: StreamConfig) -> Pending<bool> {
        let account = account.to_owned();
        self.with_group(|g| async move { g.assign_r1(&account, config).await })
    }

    fn remove_r1(&self, account: &str, name: &str) -> Pending<()> {
        let (account, name) = (account.to_owned(), name.to_owned());
        self.with_group(|g| async move { g.remove_r1(&account, &name).await })
    }

    fn update_r1(&self, account: &str, config: StreamConfig) -> Pending<()> {
        let account = account.to_owned();
        self.with_group(|g| async move { g.update_r1(&account, config).await })
    }

    fn replicate_r1(&self, account: &str, config: StreamConfig) -> Pending<Replicated> {
        let account = account.to_owned();
        self.with_group(|g| async move { g.replicate_r1(&account, config).await })
    }

    fn unreplicate(&self, account: &str, config: StreamConfig) -> Pending<Replicated> {
        let account = account.to_owned();
        self.with_group(|g| async move { g.unreplicate(&account, config).await })
    }

    fn r1_here(&self, account: &str, name: &str) -> Option<bool> {
        self.0.upgrade()?.r1_here(account, name)
    }

    fn r1_streams(&self, account: &str) -> Vec<Replicated> {
        self.0
            .upgrade()
            .map(|g| g.r1_streams(account))
            .unwrap_or_default()
    }

    fn forward(&self, account: &str, stream: &str, request: Forward) -> Pending<Option<Forwarded>> {
        let (account, stream) = (account.to_owned(), stream.to_owned());
        self.with_group(|g| async move { g.forward_api(&account, &stream, request).await })
    }

    fn read(&self, account: &str, name: &str, read: Read) -> Pending<ReadAnswer> {
        let group = self.0.clone();
        let (account, name) = (account.to_owned(), name.to_owned());
        Box::pin(async move {
            let g = group.upgrade().ok_or_else(unavailable)?;
            g.read_stream(&account, &name, read).await
        })
    }

    fn consumer_names(&self, account: &str, stream: &str) -> Vec<String> {
        self.0
            .upgrade()
            .map(|g| g.consumer_names(account, stream))
            .unwrap_or_default()
    }

    fn consumer(&self, account: &str, stream: &str, name: &str) -> Option<ReplicatedConsumer> {
        self.0.upgrade()?.consumer_of(account, stream, name)
    }

    fn streams(&self, account: &str) -> Vec<Replicated> {
        self.0
            .upgrade()
            .map(|g| g.streams_of(account))
            .unwrap_or_default()
    }
}

impl MetaGroup {
    /// Places and assigns the replicated stream `config` of `account` (see the module
    /// documentation); `false` when it existed with this configuration.
    async fn create_stream(
        &self,
        account: &str,
        config: StreamConfig,
    ) -> Result<(Replicated, bool), ApiError> {
        placement::check(config.placement.as_ref(), self.cluster_name()).map_err(no_peers)?;
        if let Some(member) = self.nats_server_with_jetstream() {
            return Err(no_peers(placement::mixed(&member)));
        }
        let key = (account.to_owned(), config.name.clone());
        let state = self.state();
        if let Some(existing) = state.streams.get(&key) {
            // As stored: compared as JSON values (the request's unknown fields are not kept).
            let same = match (
                serde_json::from_str::<serde_json::Value>(&existing.config),
                serde_json::to_value(&config),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            return match (same, self.replicated(existing)) {
                (true, Some(r)) => Ok((r, false)),
                _ => Err(ApiError::stream_name_exists()),
            };
        }
        let voters = self.placeable()?;
        let replicas = usize::try_from(config.num_replicas).unwrap_or(0);
        let wanted = placement::tags(config.placement.as_ref());
        let peers =
            placement::choose(replicas, &voters, &state.load(), &wanted).map_err(no_peers)?;
        let created_ns = now_ns();
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        let assignment = StreamAssignment {
            account: account.to_owned(),
            name: config.name.clone(),
            config: text,
            group: RaftGroup {
                name: placement::stream_group(account, &config.name, created_ns),
                peers,
            },
            created_ns,
        };
        let proposed = self
            .propose(self.assign_command(assignment.clone()))
            .await
            .map_err(|_| unavailable())?;
        if let Some(r) = proposed.reply.refused {
            return Err(refused(r));
        }
        // As applied (an assignment with this configuration may have been there first).
        let applied = self.state().streams.get(&key).cloned();
        let stream = applied.as_ref().unwrap_or(&assignment);
        let answer = self
            .replicated(stream)
            .ok_or_else(|| ApiError::general("the assignment's configuration is unreadable"))?;
        Ok((answer, true))
    }

    /// Updates the replicated stream `config.name` of `account` (checked by the core): a new
    /// `num_replicas` first rescales its peers ([`MetaGroup::rescale_stream`]), then the
    /// new configuration through the meta group (each peer updates its copy as it applies
    /// it, `jsc::stream_group`), then its `discard: new` limits through the stream's group
    /// (so that every copy decides the publishes after that entry alike). A failure after the
    /// meta group's commit answers 10008: the same update again is applied again.
    async fn update_stream(
        self: &Arc<Self>,
        account: &str,
        config: StreamConfig,
    ) -> Result<Replicated, ApiError> {
        let (sa, _) = self.assigned(account, &config.name)?;
        if let Ok(old) = serde_json::from_str::<StreamConfig>(&sa.config) {
            // Fewer peers than the configuration says, with no change running: an R1
            // stream made replicated whose change of peers did not begin (`jsc::replicate`).
            let short = !self
                .state()
                .moves
                .contains_key(&(account.to_owned(), config.name.clone()))
                && usize::try_from(config.num_replicas).is_ok_and(|r| sa.group.peers.len() < r);
            let scaled = old.num_replicas != config.num_replicas || short;
            let moved = old.placement != config.placement;
            if scaled && moved {
                return Err(JsError::StreamMoveAndScale.err());
            }
            if scaled {
                self.rescale_stream(&sa, &config).await?;
            } else if moved {
                placement::check(config.placement.as_ref(), self.cluster_name())
                    .map_err(no_peers)?;
                self.move_stream(&sa, &config).await?;
            }
        }
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        let proposed = self
            .propose(MetaCommand::UpdateStream {
                account: account.to_owned(),
                name: config.name.clone(),
                config: text,
            })
            .await
            .map_err(|_| unavailable())?;
        if let Some(r) = proposed.reply.refused {
            return Err(refused(r));
        }
        let limits = DiscardNew::of(&config);
        self.stream_op(account, &config.name, StreamOp::Configure(limits))
            .await?;
        let key = (account.to_owned(), config.name.clone());
        let applied = self.state().streams.get(&key).cloned();
        applied
            .as_ref()
            .and_then(|sa| self.replicated(sa))
            .ok_or_else(unavailable)
    }

    /// Removes server `peer` from the peers of replicated stream `name` of `account`
    /// (`STREAM.PEER.REMOVE`): a member online that is not a peer, the least loaded, takes its
    /// place (placed last: it never initializes the group) when there is one, else the stream
    /// keeps fewer peers. In three steps, so that the group keeps its quorum throughout: the
    /// replacement is added to the assignment (it creates its copy and starts its group,
    /// empty); the group's leader adds it as a learner, waits until it caught up (from the log
    /// or a snapshot) and makes the new peers its voters ([`MetaGroup::set_stream_members`]);
    /// then the assignment loses the removed peer (which drops its copy and group as it applies
    /// it). Answered after the first step, as nats-server answers before the move; the meta
    /// leader runs the rest (`jsc::moves`: 10124 while another change of the stream runs).
    async fn remove_stream_peer(
        self: &Arc<Self>,
        account: &str,
        name: &str,
        peer: &str,
    ) -> Result<(), ApiError> {
        let (sa, _) = self.assigned(account, name)?;
        let removed = sa
            .group
            .peers
            .iter()
            .copied()
            .find(|id| self.name_of(*id).as_deref() == Some(peer))
            .ok_or_else(|| JsError::ClusterPeerNotMember.err())?;
        self.replace_stream_peer(account, name, removed).await
    }

    /// The meta group's voters, with whether each is up and its tags, where a new stream may
    /// be placed; 10008 without a leader, or with too few voters up to commit anything (as
    /// nats-server answers a leaderless meta group, before placement).
    pub(super) fn placeable(&self) -> Result<Vec<Voter>, ApiError> {
        let voters = self.voters_but(&[]);
        let up = voters.iter().filter(|v| v.online).count();
        if self.raft.metrics().borrow().current_leader.is_none() || up <= voters.len() / 2 {
            return Err(unavailable());
        }
        Ok(voters)
    }

    /// The meta group's voters but `peers`, with whether each is up and its tags: where a
    /// stream's new peer may be placed.
    pub(super) fn voters_but(&self, peers: &[u64]) -> Vec<Voter> {
        let online = self.online_tags();
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|id| !peers.contains(id))
            .map(|id| Voter {
                id,
                online: online.contains_key(&id),
                tags: online.get(&id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// [`MetaGroup::remove_stream_peer`] of the peer with node id `removed` (`SERVER.REMOVE`
    /// too, for each stream the server was a peer of): the change begun (`jsc::moves`, 10124
    /// while another runs), the meta leader runs the rest; the stream's replicated consumers
    /// whose group had the removed peer move alike once the stream's peers changed.
    pub(super) async fn replace_stream_peer(
        self: &Arc<Self>,
        account: &str,
        name: &str,
        removed: u64,
    ) -> Result<(), ApiError> {
        let state = self.state();
        let (sa, _) = self.assigned(account, name)?;
        if !sa.group.peers.contains(&removed) {
            return Err(JsError::ClusterPeerNotMember.err());
        }
        if sa.is_r1() {
            // Its messages are on the removed server alone: nothing to move them from.
            warn!(account = %account, stream = %name,
                  "JetStream cluster: an R1 stream of a removed server stays assigned to it");
            return Ok(());
        }
        self.check_no_move(account, name)?;
        let free = self.voters_but(&sa.group.peers);
        // The replacement holds the stream's placement tags too.
        let config = serde_json::from_str::<StreamConfig>(&sa.config).ok();
        let wanted = config
            .as_ref()
            .map(|c| placement::tags(c.placement.as_ref()))
            .unwrap_or_default();
        let r = config.as_ref().map_or(sa.group.peers.len(), |c| {
            usize::try_from(c.num_replicas).unwrap_or(1)
        });
        let kept = config.as_ref().and_then(|c| c.placement.as_ref());
        let added = placement::choose(1, &free, &state.load(), &wanted).unwrap_or_default();
        let mut with_new = sa.group.peers.clone();
        with_new.extend(&added);
        let last: Vec<u64> = with_new
            .iter()
            .copied()
            .filter(|id| *id != removed)
            .collect();
        self.begin_move(&sa, with_new, last, (r, r), kept)
            .await
            .map(drop)
    }

    /// Proposes `peers` as the peers of consumer assignment `ca`.
    pub(super) async fn set_consumer_peers(
        &self,
        ca: &ConsumerAssignment,
        peers: Vec<u64>,
    ) -> Result<(), ApiError> {
        self.apply_command(MetaCommand::SetConsumerPeers {
            account: ca.account.clone(),
            stream: ca.stream.clone(),
            name: ca.name.clone(),
            peers,
        })
        .await
    }

    /// Proposes `cmd`: done, or the API error of its refusal (10008 when not applied).
    pub(super) async fn apply_command(&self, cmd: MetaCommand) -> Result<(), ApiError> {
        let proposed = self.propose(cmd).await.map_err(|_| unavailable())?;
        match proposed.reply.refused {
            None => Ok(()),
            Some(r) => Err(refused(r)),
        }
    }

    /// Proposes `peers` as the peers of replicated stream `name` of `account`.
    pub(super) async fn set_peers(
        &self,
        account: &str,
        name: &str,
        peers: Vec<u64>,
    ) -> Result<(), ApiError> {
        self.apply_command(MetaCommand::SetStreamPeers {
            account: account.to_owned(),
            name: name.to_owned(),
            peers,
        })
        .await
    }

    /// Removes the replicated stream `name` of `account`.
    async fn delete_stream(&self, account: &str, name: &str) -> Result<(), ApiError> {
        let proposed = self
            .propose(MetaCommand::RemoveStream {
                account: account.to_owned(),
                name: name.to_owned(),
            })
            .await
            .map_err(|_| unavailable())?;
        match proposed.reply.refused {
            None => Ok(()),
            Some(r) => Err(refused(r)),
        }
    }

    /// Adds to `/jsz`'s `account_details[].stream_detail[]` of each replicated stream this
    /// member holds a copy of its group (`stream_raft_group`, as nats-server 2.10 names it)
    /// and `cluster` (`name`, `leader`, `replicas`), as `STREAM.INFO` shows them.
    pub fn annotate_jsz(&self, jsz: &mut serde_json::Value) {
        let Some(accounts) = jsz["account_details"].as_array_mut() else {
            return;
        };
        let online = self.online();
        let state = self.state();
        for account in accounts {
            let name = account["name"].as_str().unwrap_or_default().to_owned();
            let Some(details) = account["stream_detail"].as_array_mut() else {
                continue;
            };
            for detail in details {
                let stream = detail["name"].as_str().unwrap_or_default().to_owned();
                let Some(sa) = state.streams.get(&(name.clone(), stream)) else {
                    continue;
                };
                if sa.is_r1() {
                    continue; // no group
                }
                let Some(shown) = self.shown(sa, &online) else {
                    continue;
                };
                if let Some(map) = detail.as_object_mut() {
                    map.insert("stream_raft_group".into(), sa.group.name.clone().into());
                    if let Ok(cluster) = serde_json::to_value(&shown.cluster) {
                        map.insert("cluster".into(), cluster);
                    }
                }
            }
        }
    }

    /// The replicated streams of `account` this member's state machine holds.
    fn streams_of(&self, account: &str) -> Vec<Replicated> {
        let online = self.online();
        self.state()
            .streams
            .values()
            .filter(|sa| sa.account == account && !sa.is_r1())
            .filter_map(|sa| self.shown(sa, &online))
            .collect()
    }

    /// What the API shows of an assignment: its configuration, creation and peers (with the
    /// leader and their state where this member runs the stream's group).
    pub(super) fn replicated(&self, sa: &StreamAssignment) -> Option<Replicated> {
        self.shown(sa, &self.online())
    }

    /// [`MetaGroup::replicated`], with the members up (`online`: [`MetaGroup::online`]).
    fn shown(&self, sa: &StreamAssignment, online: &BTreeMap<u64, String>) -> Option<Replicated> {
        let config: StreamConfig = serde_json::from_str(&sa.config).ok()?;
        let names: BTreeMap<u64, String> = sa
            .group
            .peers
            .iter()
            .map(|id| (*id, self.name_of(*id).unwrap_or_else(|| id.to_string())))
            .collect();
        // A peer shows its group's view; another member, the peers (no leader known).
        let (leader, replicas) = match self.stream_group(&sa.account, &sa.name) {
            Some(g) => g.cluster(self),
            None => (
                None,
                sa.group
                    .peers
                    .iter()
                    .map(|id| PeerInfo {
                        name: names.get(id).cloned().unwrap_or_default(),
                        current: false,
                        offline: !online.contains_key(id),
                        active: 0,
                        lag: 0,
                    })
                    .collect(),
            ),
        };
        Some(self.as_shown(sa, config, leader, replicas))
    }

    /// What the API shows of assignment `sa` with configuration `config`, its group's
    /// `leader` and `replicas`.
    pub(super) fn as_shown(
        &self,
        sa: &StreamAssignment,
        config: StreamConfig,
        leader: Option<String>,
        replicas: Vec<PeerInfo>,
    ) -> Replicated {
        Replicated {
            config,
            created_ns: sa.created_ns,
            cluster: ClusterInfo {
                name: Some(self.cluster_name().to_owned()),
                leader,
                replicas,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_the_api_errors_nats_server_answers() {
        assert_eq!(refused(Refusal::StreamExists).err_code, 10058);
        assert_eq!(refused(Refusal::SubjectsOverlap).err_code, 10065);
        assert_eq!(refused(Refusal::StreamNotFound).err_code, 10059);
        assert_eq!(unavailable().err_code, 10008);
        assert_eq!(unavailable().code, 503);
        let e = no_peers(NoPeers("no suitable peers for placement".into()));
        assert_eq!((e.code, e.err_code), (400, 10005));
        assert_eq!(e.description, "no suitable peers for placement");
    }
}
