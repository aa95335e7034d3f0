//! `$JS.API.SERVER.REMOVE` (system account): a server (typically dead for good) removed from
//! the JetStream cluster, as nats-server 2.9's `jsLeaderServerRemoveRequest`.
//!
//! The body names the server, `{"peer": "<server name>"}`, or its peer id,
//! `{"peer_id": "<8 base62 characters>"}` (nats-server's form, shown in `/jsz`; it takes
//! precedence). Every member answers the requests of its own clients (routes do not carry
//! `$JS.API.`): the meta leader carries it out, another member forwards it to the leader it
//! knows over the Raft transport (the meta group's `remove_server` RPC) and answers with its
//! outcome. The leader, in this order:
//!
//! 1. each replicated stream the server is a peer of gets a replacement by placement, through
//!    `STREAM.PEER.REMOVE`'s path ([`MetaGroup::replace_stream_peer`]: a change of the
//!    stream's peers, `jsc::moves`: the replacement added to the assignment, the stream
//!    group's leader makes it a learner, then a voter in the removed one's place, the
//!    consumers follow, then the assignment loses the removed one; the first step before the
//!    answer, the rest run by this member as meta leader); each **R1 stream** of the server
//!    is assigned to another member up holding its placement tags instead (one meta command,
//!    `MetaCommand::ReassignR1`; created there, empty: its messages were on the removed
//!    server alone), or stays assigned to the removed server when no member qualifies
//!    (logged);
//! 2. the server is removed from the meta group's voters (`change_membership`, joint
//!    consensus); the leader's upkeep adds only members seen over a route, so a dead server is
//!    not added back (one that comes back is added again, as any new member).
//!
//! Answer `{"type":"io.nats.jetstream.api.v1.meta_server_remove_response","success":true}`;
//! 10044 ("server is not a member of the cluster") for a server that is no voter of the meta
//! group; 10124 ("stream move already in progress") when a stream of the server is in the
//! middle of another change of its peers (`jsc::moves`), before anything changes; 10003 for an empty body, or for the meta leader itself (step it down first); 10025
//! for a body that is not JSON; 10008 when the membership change fails.
//!
//! The replicated consumers of each such stream follow it: once the stream's group has its new
//! voters, each consumer group with the removed server gets the stream's replacement the same
//! way (`jsc::moves`; `MetaCommand::SetConsumerPeers`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use leaf_core::jetstream::config::{ApiError, JsError};
use openraft::{ChangeMembers, ServerState};
use serde_json::{json, Value};
use tracing::{info, warn};

use leaf_core::jetstream::config::StreamConfig;

use super::group::MetaGroup;
use super::meta::{MetaCommand, StreamAssignment};
use super::node_id::peer_id;
use super::placement;

/// The request's subject.
const SUBJECT: &[u8] = b"$JS.API.SERVER.REMOVE";
/// The answer's type.
const TYPE: &str = "io.nats.jetstream.api.v1.meta_server_remove_response";
/// How long the meta group's membership change may take.
const CHANGE_WITHIN: Duration = Duration::from_secs(10);
/// The meta group's RPC of a request forwarded to the leader.
pub const REMOVE_RPC: &str = "remove_server";
/// How long a forwarded request may take (the stream moves' first steps and the membership
/// change).
const FORWARD_WITHIN: Duration = Duration::from_secs(20);

/// The request's body.
#[derive(Debug, Default, serde::Deserialize)]
struct RemoveRequest {
    /// The server's name.
    #[serde(default)]
    peer: String,
    /// The server's peer id (takes precedence).
    #[serde(default)]
    peer_id: String,
}

impl MetaGroup {
    /// Serves `$JS.API.SERVER.REMOVE` in the system account (every member; see the module
    /// documentation).
    pub(super) fn serve_server_remove(self: &Arc<Self>) -> Result<(), String> {
        self.serve_system_request(SUBJECT, |g, body| async move {
            answer_of(g.remove_server_anywhere(&body).await)
        })
    }

    /// Carries out the request `body` here if this member leads the meta group, else at the
    /// leader it knows.
    async fn remove_server_anywhere(self: &Arc<Self>, body: &[u8]) -> Result<(), ApiError> {
        if let Some(outcome) = self.serve_remove_server(body).await {
            return outcome;
        }
        let leader = self.raft.metrics().borrow().current_leader;
        let Some(leader) = leader.filter(|l| *l != self.own) else {
            return Err(JsError::ClusterNotAvail.err());
        };
        let answer = self
            .transport
            .request(leader, super::group::META, REMOVE_RPC, body, FORWARD_WITHIN)
            .await
            .map_err(|_| JsError::ClusterNotAvail.err())?;
        match postcard::from_bytes::<Option<Result<(), ApiError>>>(&answer) {
            Ok(Some(outcome)) => outcome,
            _ => Err(JsError::ClusterNotAvail.err()),
        }
    }

    /// The request `body` carried out if this member leads the meta group; `None` when it
    /// does not.
    pub(super) async fn serve_remove_server(
        self: &Arc<Self>,
        body: &[u8],
    ) -> Option<Result<(), ApiError>> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        Some(self.remove_server(body).await)
    }

    /// Removes the server the request `body` names (see the module documentation).
    async fn remove_server(self: &Arc<Self>, body: &[u8]) -> Result<(), ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("bad request"));
        }
        let req: RemoveRequest =
            serde_json::from_slice(body).map_err(|_| ApiError::invalid_json())?;
        let m = self.raft.metrics().borrow().clone();
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let removed = voters
            .iter()
            .copied()
            .find(|id| {
                let name = self.member_name(&m, *id).unwrap_or_default();
                if req.peer_id.is_empty() {
                    !req.peer.is_empty() && name == req.peer
                } else {
                    peer_id(&name) == req.peer_id
                }
            })
            .ok_or_else(|| JsError::ClusterServerNotMember.err())?;
        if removed == self.own {
            return Err(ApiError::bad_request(
                "the meta leader cannot remove itself: step it down first",
            ));
        }
        let name = self
            .member_name(&m, removed)
            .unwrap_or_else(|| removed.to_string());
        info!(server = %name, "JetStream cluster: removing a server");
        let streams: Vec<(String, String)> = self
            .state()
            .streams
            .values()
            .filter(|sa| sa.group.peers.contains(&removed))
            .map(|sa| (sa.account.clone(), sa.name.clone()))
            .collect();
        // Every stream's change begins, or none (one already changing: 10124).
        for (account, stream) in &streams {
            self.check_no_move(account, stream)?;
        }
        for (account, stream) in streams {
            let r1 = self
                .state()
                .streams
                .get(&(account.clone(), stream.clone()))
                .is_some_and(StreamAssignment::is_r1);
            let replaced = if r1 {
                self.reassign_r1(&account, &stream, removed).await
            } else {
                self.replace_stream_peer(&account, &stream, removed).await
            };
            if let Err(e) = replaced {
                warn!(account = %account, stream = %stream, server = %name, error = %e.description,
                      "JetStream cluster: a removed server's stream peer not replaced");
                return Err(e);
            }
        }
        let changed = tokio::time::timeout(
            CHANGE_WITHIN,
            self.raft.change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([removed])),
                false,
            ),
        )
        .await;
        match changed {
            Ok(Ok(_)) => {
                info!(server = %name, "JetStream cluster: server removed from the meta group");
                Ok(())
            }
            Ok(Err(e)) => {
                warn!(server = %name, error = %e, "JetStream cluster: server not removed");
                Err(JsError::ClusterNotAvail.err())
            }
            Err(_) => Err(JsError::ClusterNotAvail.err()),
        }
    }
}

impl MetaGroup {
    /// R1 stream `name` of `account` on the removed server `removed`: assigned to another
    /// member up that holds its `placement` tags, the least loaded (`MetaCommand::ReassignR1`,
    /// one step of the meta state, refused with 10124 while another change of the stream's
    /// peers runs); that member creates it, empty (its messages and consumers were on the
    /// removed server alone). No such member: it stays assigned to the removed server
    /// (logged), which serves it again if it comes back.
    async fn reassign_r1(&self, account: &str, name: &str, removed: u64) -> Result<(), ApiError> {
        let state = self.state();
        let Some(sa) = state
            .streams
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()
        else {
            return Ok(());
        };
        let wanted = serde_json::from_str::<StreamConfig>(&sa.config)
            .map(|c| placement::tags(c.placement.as_ref()))
            .unwrap_or_default();
        let free = self.voters_but(&[removed]);
        let to = match placement::choose(1, &free, &state.load(), &wanted) {
            Ok(to) => to,
            Err(e) => {
                warn!(account, stream = name, reason = %e.0,
                      "JetStream cluster: an R1 stream of a removed server stays assigned to it");
                return Ok(());
            }
        };
        let Some(to) = to.first().copied() else {
            return Ok(());
        };
        self.apply_command(MetaCommand::ReassignR1 {
            account: account.to_owned(),
            name: name.to_owned(),
            from: removed,
            to,
        })
        .await?;
        info!(account, stream = name, to = %self.name_of(to).unwrap_or_default(),
              "JetStream cluster: an R1 stream of a removed server assigned to another member (empty)");
        Ok(())
    }
}

/// The API answer of an outcome.
fn answer_of(outcome: Result<(), ApiError>) -> Value {
    match outcome {
        Ok(()) => json!({ "type": TYPE, "success": true }),
        Err(e) => json!({ "type": TYPE, "error": e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_nats_servers() {
        assert_eq!(
            answer_of(Ok(())),
            json!({"type": "io.nats.jetstream.api.v1.meta_server_remove_response", "success": true})
        );
        let e = answer_of(Err(JsError::ClusterServerNotMember.err()));
        assert_eq!(e["error"]["err_code"], 10044, "{e}");
        assert_eq!(e["error"]["code"], 400, "{e}");
        let req: RemoveRequest = serde_json::from_str(r#"{"peer":"n4"}"#).unwrap();
        assert_eq!((req.peer.as_str(), req.peer_id.as_str()), ("n4", ""));
    }
}
