//! openraft's network for a group, over [`Transport`]: each RPC is one request to the target
//! member (`append`, `vote`, `snapshot`), its answer `Result<response, RaftError>` in
//! postcard; no route or no answer in time is `Unreachable` (openraft backs off and retries).
//! The receiving side ([`serve_rpc`]) hands the request to the group's Raft.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::durable::Durable;
use super::transport::{RequestError, Transport};

/// The network of group `group` (a factory of clients, one per target).
#[derive(Clone)]
pub struct GroupNetwork {
    /// The member's transport.
    pub transport: Arc<Transport>,
    /// The group's name.
    pub group: String,
    /// A group whose leader acknowledges its own appends before its fsync
    /// (`LogStore::early_ack`): its log's durable end, past which no commit index is sent.
    pub durable: Option<Durable>,
}

/// A client of one target.
pub struct Client {
    net: GroupNetwork,
    target: u64,
}

impl<C> RaftNetworkFactory<C> for GroupNetwork
where
    C: RaftTypeConfig<NodeId = u64>,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    type Network = Client;

    async fn new_client(&mut self, target: u64, _node: &C::Node) -> Client {
        Client {
            net: self.clone(),
            target,
        }
    }
}

impl Client {
    /// Sends `req` as `rpc` and decodes the answer.
    async fn call_typed<Req, Resp, E, N>(
        &self,
        rpc: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, N, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        N: openraft::Node,
    {
        let body =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .net
            .transport
            .request(self.target, &self.net.group, rpc, &body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                RequestError::Timeout(_) => RPCError::Network(NetworkError::new(&e)),
                RequestError::NoRoute(_) | RequestError::Busy(_) => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
            })?;
        let result: Result<Resp, RaftError<u64, E>> =
            postcard::from_bytes(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<C> RaftNetwork<C> for Client
where
    C: RaftTypeConfig<NodeId = u64>,
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, C::Node, RaftError<u64>>> {
        if let Some(durable) = &self.net.durable {
            rpc.leader_commit = durable.clamp(rpc.leader_commit);
        }
        self.call_typed("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, C::Node, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call_typed("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, C::Node, RaftError<u64>>> {
        self.call_typed("vote", &rpc, &option).await
    }
}

/// Serves one Raft RPC (`append`, `vote`, `snapshot`) received for `raft`: the answer's body,
/// `None` for another RPC or a body that does not decode.
pub async fn serve_rpc<C>(raft: &Raft<C>, rpc: &str, body: &[u8]) -> Option<Vec<u8>>
where
    C: RaftTypeConfig<NodeId = u64>,
    AppendEntriesRequest<C>: DeserializeOwned,
    InstallSnapshotRequest<C>: DeserializeOwned,
{
    match rpc {
        "append" => {
            let req: AppendEntriesRequest<C> = postcard::from_bytes(body).ok()?;
            postcard::to_allocvec(&raft.append_entries(req).await).ok()
        }
        "vote" => {
            let req: VoteRequest<u64> = postcard::from_bytes(body).ok()?;
            postcard::to_allocvec(&raft.vote(req).await).ok()
        }
        "snapshot" => {
            let req: InstallSnapshotRequest<C> = postcard::from_bytes(body).ok()?;
            postcard::to_allocvec(&raft.install_snapshot(req).await).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotSegmentId, Vote};

    use crate::jsc::meta::{MetaCommand, RaftGroup, StreamAssignment};
    use crate::jsc::types::MetaTypes;

    fn round_trip<T>(v: &T) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let bytes = postcard::to_allocvec(v).expect("encodes");
        postcard::from_bytes(&bytes).expect("decodes")
    }

    /// Every RPC body and answer the transport carries survives postcard (openraft's types
    /// are plain serde types, but postcard refuses self-describing tricks: checked here).
    #[test]
    fn raft_rpcs_round_trip_through_postcard() {
        let log_id = LogId::new(CommittedLeaderId::new(4, 7), 12);
        let req: AppendEntriesRequest<MetaTypes> = AppendEntriesRequest {
            vote: Vote::new_committed(4, 7),
            prev_log_id: Some(log_id),
            entries: vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(4, 7), 13),
                payload: EntryPayload::Normal(MetaCommand::AssignStream(StreamAssignment {
                    account: "$G".into(),
                    name: "ORDERS".into(),
                    config: "{\"subjects\":[\"orders.>\"]}".into(),
                    group: RaftGroup {
                        name: "S-1".into(),
                        peers: vec![1, 2, 3],
                    },
                    created_ns: 7,
                })),
            }],
            leader_commit: Some(log_id),
        };
        let back = round_trip(&req);
        assert_eq!(back.entries.len(), 1);
        assert_eq!(back.entries[0].payload, req.entries[0].payload);
        assert_eq!(back.prev_log_id, req.prev_log_id);

        let vote = VoteRequest::new(Vote::new(5, 9), Some(log_id));
        assert_eq!(round_trip(&vote), vote);

        let ok: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
            Ok(AppendEntriesResponse::Success);
        assert_eq!(round_trip(&ok), ok);
        let stopped: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
            Err(RaftError::Fatal(Fatal::Stopped));
        assert_eq!(round_trip(&stopped), stopped);
        let mismatch: Result<(), RaftError<u64, InstallSnapshotError>> = Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: "a".into(),
                    offset: 0,
                },
                got: SnapshotSegmentId {
                    id: "b".into(),
                    offset: 10,
                },
            }),
        ));
        assert_eq!(round_trip(&mismatch), mismatch);
    }
}
