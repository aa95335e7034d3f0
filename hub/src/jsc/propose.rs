//! Proposals to the meta group from any member: on the leader a `client_write`; on a
//! follower a `propose` request to the leader over the transport (`$HRG.meta.<leader>.propose`,
//! the body the postcard of the [`MetaCommand`], the answer of `Result<Proposed,
//! ProposeError>`), which the leader writes. A follower that turns out not to lead any more
//! answers [`ProposeError::NotLeader`] with the leader it knows, and the proposer tries there
//! (only then: a proposal that may have been written is never sent twice). The whole wait is
//! bounded by [`PROPOSE_TIMEOUT`], shorter than a client's usual API timeout (5 s), so the
//! client gets an answer: no leader, or one that does not answer in time, is
//! [`ProposeError`], which the API answers as 10008.
//!
//! Once the leader has applied a proposal, the proposer waits (within the same bound) until
//! its own state machine has applied it too, so that what the client asks this member next
//! sees it.

use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::group::{MetaGroup, META};
use super::meta::{MetaCommand, MetaReply};

/// The longest a proposal waits for its answer, the wait for a leader included.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a proposal waits for a leader to be known.
const LEADER_WAIT: Duration = Duration::from_millis(1500);

/// A proposal written and applied by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposed {
    /// Its log index.
    pub index: u64,
    /// What applying it gave.
    pub reply: MetaReply,
}

/// Why a proposal has no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// No member is known to lead.
    #[error("the meta group has no leader")]
    NoLeader,
    /// The member asked does not lead (and the leader it knows, if any).
    #[error("member {0} is not the meta leader")]
    NotLeader(u64, Option<u64>),
    /// The leader could not be reached, or did not answer in time.
    #[error("the meta leader {0} did not answer: {1}")]
    Unreachable(u64, String),
    /// The leader's Raft failed (it is shutting down).
    #[error("the meta group failed: {0}")]
    Failed(String),
    /// No answer within [`PROPOSE_TIMEOUT`].
    #[error("no answer from the meta group within {0:?}")]
    Timeout(Duration),
}

impl MetaGroup {
    /// Proposes `cmd` to the meta group and waits (bounded) until the leader and this member
    /// applied it.
    pub async fn propose(&self, cmd: MetaCommand) -> Result<Proposed, ProposeError> {
        let started = Instant::now();
        let deadline = started + PROPOSE_TIMEOUT;
        let mut hint: Option<u64> = None;
        loop {
            let leader = match hint.take() {
                Some(l) => l,
                None => self.wait_for_leader(deadline).await?,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::Timeout(PROPOSE_TIMEOUT));
            }
            let result = if leader == self.own {
                self.write(cmd.clone(), remaining).await
            } else {
                self.forward(leader, &cmd, remaining).await
            };
            match result {
                Ok(proposed) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let _ = self
                        .raft
                        .wait(Some(remaining))
                        .applied_index_at_least(Some(proposed.index), "the proposal applied here")
                        .await;
                    return Ok(proposed);
                }
                Err(ProposeError::NotLeader(_, next)) => {
                    // Not written: try the leader it names, or wait for one to be known.
                    hint = next.filter(|n| *n != leader);
                    if hint.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "JetStream cluster: a proposal to the meta group failed");
                    return Err(e);
                }
            }
        }
    }

    /// The current leader, waiting for one (at most [`LEADER_WAIT`] and until `deadline`).
    async fn wait_for_leader(&self, deadline: Instant) -> Result<u64, ProposeError> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(LEADER_WAIT);
        let mut metrics = self.raft.metrics();
        let found = tokio::time::timeout(wait, async {
            loop {
                if let Some(l) = metrics.borrow().current_leader {
                    return Some(l);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(l)) => Ok(l),
            _ => Err(ProposeError::NoLeader),
        }
    }

    /// Writes `cmd` here (this member leads), within `ttl`.
    async fn write(&self, cmd: MetaCommand, ttl: Duration) -> Result<Proposed, ProposeError> {
        match tokio::time::timeout(ttl, self.raft.client_write(cmd)).await {
            Ok(Ok(written)) => Ok(Proposed {
                index: written.log_id.index,
                reply: written.data,
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader(self.own, f.leader_id))
            }
            Ok(Err(e)) => Err(ProposeError::Failed(e.to_string())),
            Err(_) => Err(ProposeError::Timeout(PROPOSE_TIMEOUT)),
        }
    }

    /// Sends `cmd` to `leader` and waits up to `ttl` for its answer.
    async fn forward(
        &self,
        leader: u64,
        cmd: &MetaCommand,
        ttl: Duration,
    ) -> Result<Proposed, ProposeError> {
        let body = postcard::to_allocvec(cmd).map_err(|e| ProposeError::Failed(e.to_string()))?;
        let answer = self
            .transport
            .request(leader, META, "propose", &body, ttl)
            .await
            .map_err(|e| ProposeError::Unreachable(leader, e.to_string()))?;
        postcard::from_bytes::<Result<Proposed, ProposeError>>(&answer)
            .map_err(|e| ProposeError::Unreachable(leader, format!("a malformed answer: {e}")))?
    }

    /// Serves a `propose` request from another member: written here if this member leads.
    pub(super) async fn serve_proposal(&self, body: &[u8]) -> Option<Vec<u8>> {
        let cmd: MetaCommand = postcard::from_bytes(body).ok()?;
        let m = self.raft.metrics().borrow().clone();
        let answer = if m.state == ServerState::Leader {
            self.write(cmd, PROPOSE_TIMEOUT).await
        } else {
            Err(ProposeError::NotLeader(self.own, m.current_leader))
        };
        postcard::to_allocvec(&answer).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers cross the transport in postcard.
    #[test]
    fn answers_round_trip_through_postcard() {
        let answers: Vec<Result<Proposed, ProposeError>> = vec![
            Ok(Proposed {
                index: 7,
                reply: MetaReply::default(),
            }),
            Ok(Proposed {
                index: 8,
                reply: MetaReply {
                    refused: Some(super::super::meta::Refusal::StreamExists),
                },
            }),
            Err(ProposeError::NotLeader(1, Some(2))),
            Err(ProposeError::NotLeader(1, None)),
            Err(ProposeError::Failed("stopped".into())),
        ];
        for a in answers {
            let bytes = postcard::to_allocvec(&a).unwrap();
            let back: Result<Proposed, ProposeError> = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, a);
        }
    }
}
