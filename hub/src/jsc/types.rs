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

/// One publish to a replicated stream, as its group's log holds it (within a
/// [`StreamBatch`]): what the leader captured (the reply subject stays with the leader) and the
/// leader's time, which every peer stores (see `super::stream_machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMsg {
    /// The subject published to.
    pub subject: String,
    /// The raw header block (its `Nats-Msg-Id` is the dedupe key).
    pub headers: Option<Vec<u8>>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The leader's clock when it captured the publish (ns since the epoch).
    pub ts_ns: i64,
    /// Interest retention: no consumer's filter matched the subject when the leader captured
    /// it, so every member takes its sequence without storing it (a single server's
    /// `no_interest`, decided once by the leader so that every copy does the same).
    pub no_interest: bool,
}

/// One entry of a replicated stream's group's log: the publishes the leader took from its
/// queue in one go, in arrival order (at least one). One entry, one append (one fsync) on each
/// member, however many publishes it holds: this is the group commit of a replicated stream
/// (see `hub/JETSTREAM-CLUSTER.md`, "A replicated publish"). Encoded with postcard as part of
/// openraft's `Entry` in the Raft database (unreleased format: a `Vec` of [`StreamMsg`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBatch {
    /// The publishes, applied in this order.
    pub msgs: Vec<StreamMsg>,
    /// A change of the stream's messages applied after the publishes (`STREAM.PURGE`,
    /// `MSG.DELETE`): proposed alone, in an entry without publishes.
    pub op: Option<StreamOp>,
}

/// A change of a replicated stream's messages other than a publish, applied alike on every
/// member (see `super::stream_machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamOp {
    /// `STREAM.PURGE`: the messages matching `filter` below `up_to_seq`, or all but the
    /// newest `keep` of them.
    Purge {
        /// Subject filter (`None`: every subject).
        filter: Option<String>,
        /// Exclusive upper bound.
        up_to_seq: Option<u64>,
        /// How many of the newest matching messages stay.
        keep: Option<u64>,
    },
    /// `STREAM.MSG.DELETE` (with or without `no_erase`): message `seq`.
    Delete {
        /// The sequence.
        seq: u64,
    },
    /// `STREAM.UPDATE` (applied by the meta group): the stream's `discard: new` limits from
    /// this entry on, so that every member decides the publishes after it alike.
    Configure(Option<super::stream_machine::DiscardNew>),
    /// Messages that acks released (interest or workqueue retention), as a replicated
    /// consumer's leader found them (see `consumer_group`): each removed where it is still
    /// stored; a message already gone (removed again, a lost answer resent) is no error.
    /// (Last: postcard numbers the variants, so older log entries keep their meaning.)
    Remove {
        /// The sequences.
        seqs: Vec<u64>,
    },
}

/// What applying a [`StreamOp`] gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpReply {
    /// How many messages a purge removed.
    Purged(u64),
    /// Whether a delete found its message.
    Deleted(bool),
    /// The limits were set.
    Configured,
    /// How many of the messages to remove were still there.
    Removed(u64),
}

/// What applying a [`StreamBatch`] gave: one [`StreamReply`] per publish, in the batch's
/// order (none for a blank or membership entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReply {
    /// The publishes' replies.
    pub replies: Vec<StreamReply>,
    /// The reply of the batch's [`StreamOp`], if it has one.
    pub op: Option<OpReply>,
}

/// What applying a [`StreamMsg`] gave: the stream sequence it has (for a duplicate, the
/// sequence stored earlier), or why it was not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReply {
    /// The stream sequence.
    pub seq: u64,
    /// A duplicate `Nats-Msg-Id` within the window: not stored again.
    pub duplicate: bool,
    /// A `Nats-Expected-*` header the applied state did not meet: nothing stored.
    pub refused: Option<Refusal>,
}

/// Why a publish's `Nats-Expected-*` headers refused it (decided in the state machine, alike on
/// every member; answered as a single server's error PubAck).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// `Nats-Expected-Stream` names another stream (10060).
    StreamMismatch,
    /// `Nats-Expected-Last-Sequence` or `Nats-Expected-Last-Subject-Sequence` differs from
    /// the last sequence, given (10071).
    WrongLastSequence(u64),
    /// `Nats-Expected-Last-Msg-Id` differs from the last stored message's id, given (10070).
    WrongLastMsgId(String),
    /// `discard: new`: the publish would exceed this limit (10077, as a single server).
    Discarded(Limit),
}

/// The `discard: new` limit a publish would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// `max_msgs`.
    Msgs,
    /// `max_bytes`.
    Bytes,
    /// `max_msgs_per_subject` with `discard_new_per_subject`.
    PerSubject,
}

impl Limit {
    /// A single server's description of the refusal.
    pub fn text(self) -> &'static str {
        match self {
            Limit::Msgs => "maximum messages exceeded",
            Limit::Bytes => "maximum bytes exceeded",
            Limit::PerSubject => "maximum messages per subject exceeded",
        }
    }
}

openraft::declare_raft_types!(
    /// A replicated stream's group's Raft types.
    pub StreamTypes:
        D = StreamBatch,
        R = BatchReply,
        NodeId = u64,
        Node = Member,
);

/// A replicated stream's group's Raft.
pub type StreamRaft = openraft::Raft<StreamTypes>;

/// One entry of a replicated consumer's group's log: the consumer's whole state record, as the
/// consumer task writes it on a single server (`put_consumer`: an opaque blob of the core's
/// consumer module). State-based replication: applying a record replaces the previous one, so
/// the leader's coalescing (at most one proposal in flight) carries over unchanged (see
/// `super::consumer_machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    /// The consumer's state record.
    pub state: Vec<u8>,
}

openraft::declare_raft_types!(
    /// A replicated consumer's group's Raft types.
    pub ConsumerTypes:
        D = ConsumerRecord,
        R = (),
        NodeId = u64,
        Node = Member,
);

/// A replicated consumer's group's Raft.
pub type ConsumerRaft = openraft::Raft<ConsumerTypes>;
