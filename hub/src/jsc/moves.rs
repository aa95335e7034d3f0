//! Changes of a replicated stream's peers, one at a time: a rescale (`num_replicas` by
//! `STREAM.UPDATE`), a peer's replacement (`STREAM.PEER.REMOVE`, `SERVER.REMOVE`) and a move
//! by placement (`STREAM.UPDATE` with other `placement.tags`). See "Changes of a stream's
//! peers" in `hub/JETSTREAM-CLUSTER.md`.
//!
//! **The lock** is in the meta group's state, so every member agrees on it: a change begins
//! with `MetaCommand::BeginMove`, which the state machine refuses while another change of
//! the stream is recorded (10124 "stream move already in progress", nats-server's
//! `JSStreamMoveInProgressErr`) or when the stream's peers changed since the proposer looked
//! at them; it adds the new peers to the assignment (they create their copy and start the
//! group, empty) and records the change ([`StreamMove`]: the final peers, the old and new
//! R, the placement). While it is recorded, a configuration update that says another R or
//! placement is refused too (one decided on a stale state would undo the change).
//! `MetaCommand::EndMove` with the change's id releases it once done.
//!
//! **The runner** is the meta leader, whichever member took the request: its upkeep (every
//! 500 ms, and at once when it took the request itself) starts every recorded change it does
//! not run yet. A change is a sequence of idempotent steps: the stream group's leader makes
//! the final peers its voters (new ones as learners first, caught up from the log or a
//! snapshot, then joint consensus), each replicated consumer of the stream moves the same
//! way onto the stream's peers ([`consumer_peers`]; before the old copies go, since a
//! consumer's group runs where the copies are), the assignment drops the others (they delete
//! their copy and group as they apply it), then `EndMove`. A shrink (no final peers
//! recorded) runs `rescale`'s shrink: the group's leader decides who stays.
//!
//! **A runner that dies** (the meta leader SIGKILLed half-way): the next meta leader finds the
//! change recorded and not running there, and **finishes it**, running the steps again from
//! the start (the ones already done change nothing). A change that fails three times in a
//! row on one leader (a new peer that never catches up, a group without a quorum) is
//! **released** (`EndMove`, logged): the assignment keeps its peers as they are, and the same
//! request again (or `STREAM.PEER.REMOVE` of a peer that never caught up) carries on from there.
//! A former leader's runner that still runs stops at its next step (it checks that it leads
//! the meta group and that the change is still the recorded one).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use leaf_core::jetstream::config::consumer::ConsumerConfig;
use leaf_core::jetstream::config::{ApiError, JsError, StreamConfig};
use leaf_proto::time::now_ns;
use openraft::ServerState;
use tracing::{error, info, warn};

use super::group::MetaGroup;
use super::meta::{ConsumerAssignment, MetaCommand, StreamAssignment, StreamMove};
use super::placement;
use super::rescale::follows;

/// A stream: account and name.
pub type Key = (String, String);

/// How many times in a row one meta leader runs a change that fails before releasing it.
pub const ATTEMPTS: u32 = 3;

/// How long a shrink's requester waits for the change to be done before it answers.
const SHRINK_WITHIN: Duration = Duration::from_secs(30);

/// A change run (or tried) by this member as meta leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The change's id.
    pub id: i64,
    /// Its attempts that failed, in a row.
    pub failures: u32,
    /// Whether a task runs it now.
    pub active: bool,
}

/// What the meta leader does with a recorded change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Runs it (a new one, one recorded by a former leader, or one that failed fewer than
    /// [`ATTEMPTS`] times).
    Start,
    /// Nothing: a task runs it.
    Wait,
    /// Releases its lock: it failed [`ATTEMPTS`] times.
    Release,
}

/// What to do with recorded change `change` given what this member ran of it (`run`).
pub fn next(run: Option<&Run>, change: &StreamMove) -> Next {
    match run {
        Some(r) if r.id == change.id && r.active => Next::Wait,
        Some(r) if r.id == change.id && r.failures >= ATTEMPTS => Next::Release,
        _ => Next::Start,
    }
}

/// The peers of a consumer on `peers` that should have `r` replicas once its stream's peers
/// are `to`: those of its peers that stay, then the stream's others, at most `r`.
pub fn consumer_peers(peers: &[u64], to: &[u64], r: usize) -> Vec<u64> {
    let staying = peers.iter().filter(|p| to.contains(p));
    let others = to.iter().filter(|p| !peers.contains(p));
    staying.chain(others).copied().take(r).collect()
}

/// The peers of a stream that a move to placement tags `wanted` replaces: those whose
/// `server_tags` (`tags`, known for the members up) lack one of them; with tags wanted, a
/// peer that is down is replaced too (its tags cannot be checked).
pub fn replaced(peers: &[u64], tags: &BTreeMap<u64, Vec<String>>, wanted: &[String]) -> Vec<u64> {
    if wanted.is_empty() {
        return Vec::new();
    }
    peers
        .iter()
        .copied()
        .filter(|p| {
            tags.get(p)
                .is_none_or(|have| wanted.iter().any(|t| !have.contains(t)))
        })
        .collect()
}

/// `a`, then the ones of `b` it lacks.
fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|p| !a.contains(p)));
    out
}

/// Whether `a` and `b` hold the same peers.
fn same(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

/// Runs of changes on this member, by stream.
#[derive(Debug, Default)]
pub struct Runs(std::sync::Mutex<HashMap<Key, Run>>);

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Run>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MetaGroup {
    /// 10124 when a change of stream `name`'s peers is in progress.
    pub(super) fn check_no_move(&self, account: &str, name: &str) -> Result<(), ApiError> {
        let key = (account.to_owned(), name.to_owned());
        if self.state().moves.contains_key(&key) {
            return Err(JsError::StreamMoveInProgress.err());
        }
        Ok(())
    }

    /// Whether a change of stream `sa`'s peers may begin: none in progress (10124), and the
    /// meta group has a leader this member sees up and a majority of its voters up, so that it
    /// can take the proposals that follow (10008 before anything moves).
    pub(super) fn may_change_peers(&self, sa: &StreamAssignment) -> Result<(), ApiError> {
        self.check_no_move(&sa.account, &sa.name)?;
        if !self.meta_writable() {
            return Err(JsError::ClusterNotAvail.err());
        }
        Ok(())
    }

    /// Begins a change of stream `sa`'s peers: `peers` are its peers from now on (the new
    /// ones added) and `to` once done (empty: a shrink to `new_r`, see the module
    /// documentation); `placement` is the stream's once done. 10124 while another change
    /// runs; the meta leader runs it. Returns the change's id.
    pub(super) async fn begin_move(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        peers: Vec<u64>,
        to: Vec<u64>,
        (old_r, new_r): (usize, usize),
        placement: Option<&serde_json::Value>,
    ) -> Result<i64, ApiError> {
        let id = now_ns();
        let change = StreamMove {
            id,
            to,
            old_r,
            new_r,
            placement: serde_json::to_string(&placement).unwrap_or_else(|_| "null".into()),
        };
        info!(account = %sa.account, stream = %sa.name, from = ?sa.group.peers, to = ?change.to,
              old_r, new_r, "JetStream cluster: a change of a stream's peers begins");
        self.apply_command(MetaCommand::BeginMove {
            account: sa.account.clone(),
            name: sa.name.clone(),
            from: sa.group.peers.clone(),
            peers,
            change,
        })
        .await?;
        self.resume_moves();
        Ok(id)
    }

    /// Waits (at most [`SHRINK_WITHIN`]) until change `id` of stream `name` is no longer
    /// recorded in this member's state: whether it ended.
    pub(super) async fn until_moved(&self, account: &str, name: &str, id: i64) -> bool {
        let key = (account.to_owned(), name.to_owned());
        let mut state = self.watch_state();
        let ended = tokio::time::timeout(
            SHRINK_WITHIN,
            state.wait_for(|s| s.moves.get(&key).is_none_or(|m| m.id != id)),
        )
        .await;
        matches!(ended, Ok(Ok(_)))
    }

    /// On the meta leader: starts each recorded change it does not run yet, releases those
    /// that failed [`ATTEMPTS`] times (see the module documentation). Called by the upkeep.
    pub(super) fn resume_moves(self: &Arc<Self>) {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return;
        }
        let moves = self.state().moves;
        let mut runs = self.runs.lock();
        runs.retain(|key, run| moves.get(key).is_some_and(|m| m.id == run.id) || run.active);
        for (key, change) in moves {
            let decided = next(runs.get(&key), &change);
            if decided == Next::Wait {
                continue;
            }
            let failures = runs
                .get(&key)
                .filter(|r| r.id == change.id)
                .map_or(0, |r| r.failures);
            runs.insert(
                key.clone(),
                Run {
                    id: change.id,
                    failures,
                    active: true,
                },
            );
            let g = Arc::clone(self);
            tokio::spawn(async move {
                let outcome = match decided {
                    Next::Release => {
                        error!(account = %key.0, stream = %key.1, attempts = ATTEMPTS,
                              "JetStream cluster: a change of a stream's peers failed; released");
                        g.end_move(&key, change.id).await
                    }
                    _ => g.run_move(&key, &change).await,
                };
                let mut runs = g.runs.lock();
                if let Some(run) = runs.get_mut(&key).filter(|r| r.id == change.id) {
                    run.active = false;
                    if let Err(e) = outcome {
                        run.failures += 1;
                        warn!(account = %key.0, stream = %key.1, error = %e,
                              failures = run.failures,
                              "JetStream cluster: a change of a stream's peers not done yet");
                    }
                }
            });
        }
    }

    /// Whether this member still runs change `id` of stream `key`: it leads the meta group
    /// and the change is the one recorded.
    fn still_runs(&self, key: &Key, id: i64) -> Result<(), ApiError> {
        let leads = self.raft.metrics().borrow().state == ServerState::Leader;
        let recorded = self.state().moves.get(key).is_some_and(|m| m.id == id);
        if leads && recorded {
            Ok(())
        } else {
            Err(ApiError::general(
                "no longer the runner of this change (another meta leader)",
            ))
        }
    }

    /// Proposes the end of change `id` of stream `key`.
    async fn end_move(&self, key: &Key, id: i64) -> Result<(), ApiError> {
        self.apply_command(MetaCommand::EndMove {
            account: key.0.clone(),
            name: key.1.clone(),
            id,
        })
        .await
    }

    /// Carries out change `change` of stream `key` (see the module documentation), then ends
    /// it.
    async fn run_move(self: &Arc<Self>, key: &Key, change: &StreamMove) -> Result<(), ApiError> {
        self.still_runs(key, change.id)?;
        let (sa, _) = self.assigned(&key.0, &key.1)?;
        if change.to.is_empty() {
            self.shrink_stream(&sa, change.old_r, change.new_r).await?;
        } else {
            self.set_stream_members(&sa, &change.to).await?;
            info!(account = %key.0, stream = %key.1, peers = ?change.to,
                  "JetStream cluster: a stream's new peers are its voters");
            // The consumers before the old copies go: a consumer's group needs a quorum of
            // its members running, and they run where the stream's copy is.
            let mut first = Ok(());
            for ca in self.consumers_of(&sa) {
                self.still_runs(key, change.id)?;
                if let Err(e) = self.move_consumer(&ca, change).await {
                    warn!(account = %ca.account, stream = %ca.stream, consumer = %ca.name,
                          error = %e, "JetStream cluster: a consumer's peers not moved yet");
                    first = first.and(Err(e));
                }
            }
            first?;
            self.still_runs(key, change.id)?;
            if sa.group.peers != change.to {
                self.set_peers(&key.0, &key.1, change.to.clone()).await?;
            }
        }
        self.end_move(key, change.id).await?;
        info!(account = %key.0, stream = %key.1, "JetStream cluster: a change of a stream's peers is done");
        Ok(())
    }

    /// Consumer `ca` of a stream whose peers become `change.to`: when it follows the stream's
    /// R it gets `change.new_r` peers, else it keeps its number; its peers that stay are kept
    /// and the others replaced by the stream's new ones, in three steps (the new ones added to
    /// the assignment, where they start the consumer's group as their copy is there; the
    /// group's leader makes them learners, then the voters; the assignment without the
    /// others). A configuration that named the old R names the new one.
    async fn move_consumer(
        &self,
        ca: &ConsumerAssignment,
        change: &StreamMove,
    ) -> Result<(), ApiError> {
        let Ok(config) = serde_json::from_str::<ConsumerConfig>(&ca.config) else {
            return Ok(());
        };
        let follows = follows(&config, change.old_r);
        let r = if follows {
            change.new_r.min(change.to.len())
        } else {
            ca.group.peers.len().min(change.to.len())
        };
        let target = consumer_peers(&ca.group.peers, &change.to, r);
        if !same(&target, &ca.group.peers) {
            let with_new = union(&ca.group.peers, &target);
            if with_new != ca.group.peers {
                self.set_consumer_peers(ca, with_new.clone()).await?;
            }
            self.set_members(&ca.group.name, &with_new, &target).await?;
            if target != with_new {
                self.set_consumer_peers(ca, target).await?;
            }
        }
        if follows && change.old_r != change.new_r {
            self.consumer_names_r(ca, config, change.new_r).await?;
        }
        Ok(())
    }

    /// `STREAM.UPDATE` of stream `sa` with another `placement` (`config`'s, checked by the
    /// caller against this cluster): its peers whose tags lack one of the new ones are
    /// replaced by members holding them ([`placement::choose`], 10005 as a create when too
    /// few), through a change of its peers (answered once it began; the caller proposes the
    /// configuration then). Nothing moves when every peer holds the tags.
    pub(super) async fn move_stream(
        self: &Arc<Self>,
        sa: &StreamAssignment,
        config: &StreamConfig,
    ) -> Result<(), ApiError> {
        self.may_change_peers(sa)?;
        let wanted = placement::tags(config.placement.as_ref());
        let gone = replaced(&sa.group.peers, &self.online_tags(), &wanted);
        if gone.is_empty() {
            return Ok(());
        }
        let free = self.voters_but(&sa.group.peers);
        let added = placement::choose(gone.len(), &free, &self.state().load(), &wanted)
            .map_err(|e| JsError::ClusterNoPeers.with(&e.0))?;
        let with_new = union(&sa.group.peers, &added);
        let to: Vec<u64> = with_new
            .iter()
            .copied()
            .filter(|p| !gone.contains(p))
            .collect();
        let r = usize::try_from(config.num_replicas).unwrap_or(1);
        info!(account = %sa.account, stream = %sa.name, replaced = ?gone, by = ?added,
              "JetStream cluster: moving a stream by its placement");
        self.begin_move(sa, with_new, to, (r, r), config.placement.as_ref())
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: i64) -> StreamMove {
        StreamMove {
            id,
            to: vec![1, 2, 3],
            old_r: 3,
            new_r: 3,
            placement: "null".into(),
        }
    }

    #[test]
    fn a_recorded_change_runs_once_and_is_released_after_repeated_failures() {
        let run = |id, failures, active| Run {
            id,
            failures,
            active,
        };
        // New here (taken by this member, or recorded by a former meta leader): run it.
        assert_eq!(next(None, &change(1)), Next::Start);
        assert_eq!(next(Some(&run(1, 0, true)), &change(1)), Next::Wait);
        assert_eq!(next(Some(&run(1, 1, false)), &change(1)), Next::Start);
        assert_eq!(
            next(Some(&run(1, ATTEMPTS, false)), &change(1)),
            Next::Release
        );
        // A run of an earlier change says nothing of this one.
        assert_eq!(
            next(Some(&run(0, ATTEMPTS, false)), &change(1)),
            Next::Start
        );
        assert_eq!(next(Some(&run(0, 0, true)), &change(1)), Next::Start);
    }

    #[test]
    fn consumers_keep_the_peers_that_stay_and_take_the_streams_new_ones() {
        // A grow: a following consumer gets every peer, its own first.
        assert_eq!(
            consumer_peers(&[1, 2, 3], &[1, 2, 3, 4, 5], 5),
            [1, 2, 3, 4, 5]
        );
        // One that does not follow keeps its peers.
        assert_eq!(consumer_peers(&[2, 3], &[1, 2, 3, 4, 5], 2), [2, 3]);
        // A peer replaced (2 by 4).
        assert_eq!(consumer_peers(&[3, 2, 1], &[1, 3, 4], 3), [3, 1, 4]);
        // A move to disjoint members: all of them.
        assert_eq!(consumer_peers(&[1, 2, 3], &[4, 5, 6], 3), [4, 5, 6]);
        // An R1-of-two consumer of a stream moved: its peer replaced.
        assert_eq!(consumer_peers(&[2], &[1, 4], 1), [1]);
    }

    #[test]
    fn a_move_replaces_the_peers_without_the_new_tags() {
        let tags = BTreeMap::from([
            (1, vec!["a".to_owned()]),
            (2, vec!["a".to_owned(), "b".to_owned()]),
            (3, vec!["a".to_owned()]),
        ]);
        let b = vec!["b".to_owned()];
        assert_eq!(replaced(&[1, 2, 3], &tags, &b), [1, 3]);
        // No tags asked: nobody, not even a peer down.
        assert_eq!(replaced(&[1, 2, 4], &tags, &[]), Vec::<u64>::new());
        // With tags, a peer down (its tags unknown) is replaced.
        assert_eq!(replaced(&[2, 4], &tags, &b), [4]);
        let ab = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(replaced(&[1, 2, 3], &tags, &ab), [1, 3]);
    }

    #[test]
    fn unions_keep_the_order() {
        assert_eq!(union(&[3, 1], &[1, 4, 5]), [3, 1, 4, 5]);
        assert!(same(&[1, 2, 3], &[3, 1, 2]));
        assert!(!same(&[1, 2], &[1, 2, 3]));
    }
}
