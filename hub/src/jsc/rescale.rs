//! A change of a replicated stream's `num_replicas` by `STREAM.UPDATE` (R2-R5 to R2-R5), as
//! nats-server 2.9's `jsClusteredStreamUpdateRequest`: its peers grow or shrink online, with
//! the machinery of `STREAM.PEER.REMOVE` (learners that catch up from the log or a snapshot,
//! then joint consensus), as a change of the stream's peers (`jsc::moves`: one at a time, run
//! by the meta leader). See "Rescaling a stream" in `hub/JETSTREAM-CLUSTER.md`. An R1 stream
//! made R2-R5 is `jsc::replicate`'s; R2-R5 to R1 is `jsc::unreplicate`'s (this shrink to the
//! leader, then the leader's copy made the R1 stream).
//!
//! * **Up** (R3 to R5): the new peers are chosen by placement among the members that are not
//!   peers (the least loaded holding the stream's placement tags; too few: 10005 as a create
//!   with too many replicas) and the change begins (they are added to the assignment: they
//!   create their copy and start the group, empty; placed last, they never initialize it).
//!   The update is answered then; the meta leader runs the rest: the group's leader makes them
//!   learners, waits until they caught up, then voters; then the stream's replicated
//!   consumers that follow its R get the same peers (their groups grow the same way, only once
//!   the new copies caught up, so that a consumer leader never runs on a copy behind).
//! * **Down** (R5 to R3): the change begins and is answered once done: the meta leader has the
//!   group's leader make the voters itself and the other peers up to the new R (online ones
//!   first: the leader is kept), each replicated consumer's group shrinks within those peers
//!   (its leader kept when it is one of them), and the assignments lose the others, which drop
//!   their copy and groups as they apply it.
//! * The new configuration is proposed last, so that a failure half-way leaves the old R in
//!   the configuration and the same update again carries on from where it stopped.
//!
//! A consumer **follows** the stream's R when its `num_replicas` is 0 (inherited) or equals
//! the stream's old R; its configuration then says the new R (when it named one). Another
//! keeps its R (at most the stream's) and its peers that stay.

use std::collections::BTreeSet;
use std::sync::Arc;

use leaf_core::jetstream::config::consumer::ConsumerConfig;
use leaf_core::jetstream::config::{ApiError, StreamConfig};
use tracing::{info, warn};

use super::group::MetaGroup;
use super::meta::{ConsumerAssignment, StreamAssignment};
use super::placement::{self, NoPeers};

/// The peers kept when a group of `peers` shrinks to `r`, if `leader` leads it: the leader
/// (when it is a peer), then the others online, then the others, in the assignment's order.
pub fn kept(peers: &[u64], leader: u64, online: &BTreeSet<u64>, r: usize) -> Vec<u64> {
    let leading = peers.iter().copied().filter(|p| *p == leader);
    let up = peers
        .iter()
        .copied()
        .filter(|p| *p != leader && online.contains(p));
    let down = peers
        .iter()
        .copied()
        .filter(|p| *p != leader && !online.contains(p));
    leading.chain(up).chain(down).take(r).collect()
}

/// The peers of a consumer (of `r` replicas, whose peers are `peers`) within the stream's
/// new peers `stream`, if `leader` leads its group: the leader when it stays, its peers
/// that stay, then the stream's others.
pub fn kept_within(stream: &[u64], peers: &[u64], leader: u64, r: usize) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    let candidates = std::iter::once(leader)
        .chain(peers.iter().copied())
        .chain(stream.iter().copied());
    for id in candidates {
        if stream.contains(&id) && !out.contains(&id) && out.len() < r {
            out.push(id);
        }
    }
    out
}

/// Whether consumer `config` (of a stream that had `old_r` replicas) follows the stream's R.
pub fn follows(config: &ConsumerConfig, old_r: usize) -> bool {
    config.num_replicas == 0 || usize::try_from(config.num_replicas).ok() == Some(old_r)
}

/// A rescale's error of placement (10005, as a create answers it).
fn no_peers(e: NoPeers) -> ApiError {
    leaf_core::jetstream::config::JsError::ClusterNoPeers.with(&e.0)
}

impl MetaGroup {
    /// Grows or shrinks the peers of replicated stream `sa` to `config.num_replicas` (see the
    /// module documentation); the caller proposes the configuration afterwards.
    pub(super) async fn rescale_stream(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        config: &StreamConfig,
    ) -> Result<(), ApiError> {
        // Nothing moves unless the meta group can take the proposals that follow (a group
        // changed and an assignment not would have to wait for the same update again).
        self.may_change_peers(sa)?;
        let old: StreamConfig = serde_json::from_str(&sa.config)
            .map_err(|e| ApiError::general(&format!("the assignment does not read: {e}")))?;
        let old_r = usize::try_from(old.num_replicas).unwrap_or(1);
        let new_r = usize::try_from(config.num_replicas).unwrap_or(1);
        info!(account = %sa.account, stream = %sa.name, from = old_r, to = new_r,
              "JetStream cluster: rescaling a stream");
        if new_r >= sa.group.peers.len() {
            self.grow_stream(sa, config, old_r, new_r).await
        } else {
            self.begin_shrink(sa, config, old_r, new_r).await
        }
    }

    /// Whether the meta group has a leader this member sees up, and a majority of its voters
    /// up (as this member sees them).
    pub(super) fn meta_writable(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let online = self.online();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let up = voters.iter().filter(|v| online.contains_key(v)).count();
        m.current_leader.is_some_and(|l| online.contains_key(&l)) && up > voters.len() / 2
    }

    /// [`MetaGroup::rescale_stream`] up to `new_r` peers: the new ones chosen and the change
    /// begun (`jsc::moves`: the meta leader runs the rest).
    async fn grow_stream(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        config: &StreamConfig,
        old_r: usize,
        new_r: usize,
    ) -> Result<(), ApiError> {
        let wanted = new_r - sa.group.peers.len();
        let mut peers = sa.group.peers.clone();
        if wanted > 0 {
            let free = self.voters_but(&sa.group.peers);
            let tags = placement::tags(config.placement.as_ref());
            let added =
                placement::choose(wanted, &free, &self.state().load(), &tags).map_err(no_peers)?;
            peers.extend(added);
        }
        self.begin_move(
            sa,
            peers.clone(),
            peers,
            (old_r, new_r),
            config.placement.as_ref(),
        )
        .await
        .map(drop)
    }

    /// The replicated consumers of stream `sa`, as assigned now.
    pub(super) fn consumers_of(&self, sa: &StreamAssignment) -> Vec<ConsumerAssignment> {
        self.state()
            .consumers
            .values()
            .filter(|ca| ca.account == sa.account && ca.stream == sa.name)
            .cloned()
            .collect()
    }

    /// Makes consumer `ca`'s configuration `config` name `r` replicas when it named one.
    pub(super) async fn consumer_names_r(
        &self,
        ca: &ConsumerAssignment,
        mut config: ConsumerConfig,
        r: usize,
    ) -> Result<(), ApiError> {
        if config.num_replicas == 0 {
            return Ok(());
        }
        config.num_replicas = i64::try_from(r).unwrap_or(1);
        self.update_consumer(&ca.account, &ca.stream, config).await
    }

    /// [`MetaGroup::rescale_stream`] down to `new_r` peers: the change begun (`jsc::moves`),
    /// answered once the meta leader ran it ([`MetaGroup::shrink_stream`]).
    async fn begin_shrink(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        config: &StreamConfig,
        old_r: usize,
        new_r: usize,
    ) -> Result<(), ApiError> {
        let id = self
            .begin_move(
                sa,
                sa.group.peers.clone(),
                Vec::new(),
                (old_r, new_r),
                config.placement.as_ref(),
            )
            .await?;
        if self.until_moved(&sa.account, &sa.name, id).await {
            Ok(())
        } else {
            Err(leaf_core::jetstream::config::JsError::ClusterNotAvail.err())
        }
    }

    /// A shrink to `new_r` peers, run by the meta leader: the stream's group, then each
    /// replicated consumer's, then the assignments (see the module documentation).
    pub(super) async fn shrink_stream(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        old_r: usize,
        new_r: usize,
    ) -> Result<(), ApiError> {
        let online: BTreeSet<u64> = self.online().into_keys().collect();
        let peers = &sa.group.peers;
        let stream = self
            .change_group_members(&sa.group.name, peers, |leader| {
                kept(peers, leader, &online, new_r)
            })
            .await?;
        for ca in self.consumers_of(sa) {
            let Ok(config) = serde_json::from_str::<ConsumerConfig>(&ca.config) else {
                continue;
            };
            let r = if follows(&config, old_r) {
                new_r
            } else {
                ca.group.peers.len().min(new_r)
            };
            let cpeers = &ca.group.peers;
            if cpeers.len() == r && cpeers.iter().all(|p| stream.contains(p)) {
                continue;
            }
            let targets: Vec<u64> = cpeers.iter().chain(&stream).copied().collect();
            let mut moved = self
                .change_group_members(&ca.group.name, &targets, |leader| {
                    kept_within(&stream, cpeers, leader, r)
                })
                .await;
            if let Ok(now) = moved {
                moved = self
                    .set_consumer_peers(&ca, now.clone())
                    .await
                    .map(|()| now);
            }
            let mut named = moved.map(drop);
            if named.is_ok() && follows(&config, old_r) {
                named = self.consumer_names_r(&ca, config, new_r).await;
            }
            if let Err(e) = named {
                warn!(account = %ca.account, stream = %ca.stream, consumer = %ca.name,
                      error = %e, "JetStream cluster: a consumer's peers not shrunk");
            }
        }
        self.set_peers(&sa.account, &sa.name, stream.clone())
            .await?;
        info!(account = %sa.account, stream = %sa.name, peers = ?stream,
              "JetStream cluster: a stream's peers shrank");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrink_keeps_the_leader_then_the_members_up() {
        let online = BTreeSet::from([1, 2, 4, 5]);
        assert_eq!(kept(&[1, 2, 3, 4, 5], 4, &online, 3), [4, 1, 2]);
        // 3 is down: left out while others are up.
        assert_eq!(kept(&[3, 1, 2, 4, 5], 5, &online, 3), [5, 1, 2]);
        assert_eq!(kept(&[3, 1, 2], 1, &online, 3), [1, 2, 3]);
        // A leader that is not a peer (a stale guess) is not added.
        assert_eq!(kept(&[1, 2, 3], 9, &online, 2), [1, 2]);
    }

    #[test]
    fn a_consumer_shrinks_within_the_streams_peers() {
        // Its leader stays when it is one of the stream's peers.
        assert_eq!(kept_within(&[1, 2, 3], &[1, 2, 3, 4, 5], 3, 3), [3, 1, 2]);
        // Its leader goes with the stream's copy: its other peers first.
        assert_eq!(kept_within(&[1, 2, 3], &[5, 2, 1, 3, 4], 5, 3), [2, 1, 3]);
        // An R2 consumer on peers 4 and 5 of a stream shrinking to 1-3.
        assert_eq!(kept_within(&[1, 2, 3], &[4, 5], 4, 2), [1, 2]);
        assert_eq!(kept_within(&[1, 2, 3], &[2, 5], 5, 2), [2, 1]);
    }

    #[test]
    fn consumers_with_the_streams_r_or_none_follow_it() {
        let with = |r: i64| ConsumerConfig {
            num_replicas: r,
            ..ConsumerConfig::default()
        };
        assert!(follows(&with(0), 3));
        assert!(follows(&with(3), 3));
        assert!(!follows(&with(2), 3));
    }
}
