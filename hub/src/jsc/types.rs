//! The meta group's types for openraft: its commands and replies ([`super::meta`]), its node
//! ([`Member`]), and the rest openraft's defaults (u64 node ids, `Entry`, in-memory snapshot
//! data, tokio).

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::meta::{MetaCommand, MetaReply};

openraft::declare_raft_types!(
    /// The meta group's Raft types.
    pub MetaTypes:
        D = MetaCommand,
        R = MetaReply,
        NodeId = u64,
        Node = Member,
);

/// A member of a group as Raft keeps it in the membership: its server name (its node id is
/// derived from it: see `super::node_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The server name.
    pub name: String,
}

/// The meta group's Raft.
pub type MetaRaft = openraft::Raft<MetaTypes>;
