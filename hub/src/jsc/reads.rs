//! Linearizable reads of a replicated stream's messages (`MSG.GET`, `DIRECT.GET`): the core's
//! `Replication::read` (see `leaf_core::jetstream::reads`), served by the stream group's
//! leader (see "Reads on the group's leader" in `hub/JETSTREAM-CLUSTER.md`).
//!
//! * **Where**: on the member leading the stream's group; another member (a follower, or a
//!   member without a copy) sends the read to it as the group's RPC [`READ`]
//!   ([`MetaGroup::read_stream`]: the leader its group knows, then each peer; a member not
//!   leading answers that it does not), bounded by the transport's bytes in flight and
//!   [`FORWARD_WITHIN`] in all. The answer comes back to the member the client asked, which
//!   answers the client (so an answer confined to the requester stays confined).
//! * **Barrier**: before answering from its copy the leader confirms that it still leads (a
//!   heartbeat answered by a quorum of the group, openraft's `get_read_log_id`) and waits
//!   until it applied everything committed when the check began (its read log id): a write
//!   acknowledged before the read was invoked is committed and so visible; a leader on the
//!   minority side of a partition gets no quorum and answers 10008, never its possibly stale
//!   copy. Retried within [`READ_WITHIN`] when the quorum did not answer in one heartbeat
//!   interval (a slow follower under load), no longer.
//! * **Cost**: one barrier round (one heartbeat round trip to the followers, no log entry, no
//!   fsync) serves every read waiting when it starts ([`ReadBarrier`]): reads arriving during a
//!   round wait for the next one (a round that began before a read was invoked does not prove
//!   the leadership at its invocation), so under load the rounds run back to back, each
//!   serving a batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use leaf_core::jetstream::config::{ApiError, JsError};
use leaf_core::jetstream::reads::{Read, ReadAnswer};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::group::MetaGroup;
use super::stream_group::StreamGroup;
use super::types::StreamRaft;

/// The group RPC of a read sent to the group's leader.
pub const READ: &str = "read";

/// How long a barrier may take (retries of a quorum that did not answer in time included).
pub const READ_WITHIN: Duration = Duration::from_secs(2);
/// How long a member waits for the answers of the members it sends a read to, in all.
pub const FORWARD_WITHIN: Duration = Duration::from_secs(4);
/// Reads waiting for a barrier round, at most: past it a read is answered 10008 at once.
pub const MAX_WAITING: usize = 4096;
/// The pause before a barrier round is tried again after a quorum did not answer.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// What a barrier round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// This member leads, a quorum confirmed it, and it applied everything committed when the
    /// round began: its copy may be read.
    Passed,
    /// This member does not lead (any more).
    NotLeader,
    /// No quorum confirmed the leadership in time, or the apply did not catch up: no read.
    Unavailable,
}

/// One barrier round.
type Round = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Barrier> + Send>> + Send + Sync>;

/// The read barrier of one group: reads queue ([`ReadBarrier::pass`]), one task runs the
/// rounds, each serving every read queued when it began.
pub struct ReadBarrier {
    waiting: mpsc::Sender<oneshot::Sender<Barrier>>,
}

impl ReadBarrier {
    /// The barrier of `raft`'s group (openraft's read barrier, see the module documentation).
    pub fn of(raft: &StreamRaft) -> ReadBarrier {
        let raft = raft.clone();
        ReadBarrier::with(Arc::new(move || {
            let raft = raft.clone();
            Box::pin(async move { round(&raft).await })
        }))
    }

    /// A barrier running `round` for each batch of waiting reads.
    fn with(round: Round) -> ReadBarrier {
        let (waiting, mut rx) = mpsc::channel::<oneshot::Sender<Barrier>>(MAX_WAITING);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let outcome = round().await;
                for w in batch {
                    let _ = w.send(outcome);
                }
            }
        });
        ReadBarrier { waiting }
    }

    /// Waits for a barrier round that begins after this call.
    pub async fn pass(&self) -> Barrier {
        let (tx, rx) = oneshot::channel();
        if self.waiting.try_send(tx).is_err() {
            return Barrier::Unavailable;
        }
        rx.await.unwrap_or(Barrier::Unavailable)
    }
}

/// One round of openraft's read barrier on `raft` (see the module documentation).
async fn round(raft: &StreamRaft) -> Barrier {
    let deadline = Instant::now() + READ_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, raft.get_read_log_id()).await {
            Ok(Ok((read, applied))) => {
                let want = read.map(|l| l.index);
                if want <= applied.map(|l| l.index) {
                    return Barrier::Passed;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                return match raft
                    .wait(Some(left))
                    .applied_index_at_least(want, "a linearizable read")
                    .await
                {
                    Ok(_) => Barrier::Passed,
                    Err(_) => Barrier::Unavailable,
                };
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                return Barrier::NotLeader;
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))))
                if Instant::now() + RETRY_AFTER < deadline =>
            {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            _ => return Barrier::Unavailable,
        }
    }
}

impl StreamGroup {
    /// Serves `read` if this member leads the group: the answer from its copy after a barrier
    /// round, or 10008; `None` when this member does not lead.
    pub async fn read(&self, read: &Read) -> Option<Result<ReadAnswer, ApiError>> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        match self.reads.pass().await {
            Barrier::Passed => Some(Ok(self.js.answer_read(&self.stream, read))),
            Barrier::NotLeader => None,
            Barrier::Unavailable => Some(Err(JsError::ClusterNotAvail.err())),
        }
    }
}

impl MetaGroup {
    /// Serves `read` of replicated stream `name` of `account` on its group's leader: here when
    /// this member leads, else sent to the leader this member knows, then to the other peers
    /// (see the module documentation). 10059 without such a stream, 10008 when no leader
    /// answered.
    pub async fn read_stream(
        &self,
        account: &str,
        name: &str,
        read: Read,
    ) -> Result<ReadAnswer, ApiError> {
        let (sa, here) = self.assigned(account, name)?;
        if let Some(sg) = &here {
            if let Some(answer) = sg.read(&read).await {
                return answer;
            }
        }
        let body = postcard::to_allocvec(&read).map_err(|e| ApiError::general(&e.to_string()))?;
        let deadline = Instant::now() + FORWARD_WITHIN;
        for target in self.leader_targets(
            here.as_ref()
                .and_then(|sg| sg.raft.metrics().borrow().current_leader),
            &sa.group.peers,
        ) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let answer = self
                .transport
                .request(target, &sa.group.name, READ, &body, left)
                .await
                .ok()
                .and_then(|a| {
                    postcard::from_bytes::<Option<Result<ReadAnswer, ApiError>>>(&a).ok()
                });
            if let Some(Some(answer)) = answer {
                return answer;
            }
        }
        Err(JsError::ClusterNotAvail.err())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::{Barrier, ReadBarrier, Round};

    /// Reads waiting together share one round; a read arriving while a round runs waits for
    /// the next one (the running round began before it); every read gets the outcome of its
    /// round.
    #[tokio::test]
    async fn reads_share_rounds_that_begin_after_them() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let round: Round = {
            let (rounds, release) = (rounds.clone(), release.clone());
            Arc::new(move || {
                let (rounds, release) = (rounds.clone(), release.clone());
                Box::pin(async move {
                    let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                    release.notified().await;
                    if n == 1 {
                        Barrier::Passed
                    } else {
                        Barrier::Unavailable
                    }
                })
            })
        };
        let barrier = Arc::new(ReadBarrier::with(round));
        let first = {
            let b = barrier.clone();
            tokio::spawn(async move { b.pass().await })
        };
        // The first round runs (holding the first read) before the next reads come.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rounds.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no round began");
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..5)
            .map(|_| {
                let b = barrier.clone();
                tokio::spawn(async move { b.pass().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.notify_one();
        assert_eq!(first.await.unwrap(), Barrier::Passed);
        // One more round for the five that waited.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rounds.load(Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second round");
            tokio::task::yield_now().await;
        }
        release.notify_one();
        for r in later {
            assert_eq!(r.await.unwrap(), Barrier::Unavailable);
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2, "one round for the batch");
    }
}
