//! Replicated JetStream (issue 22): Raft groups on openraft among the hubd members of a
//! cluster. The design, what is built and what is next: `hub/JETSTREAM-CLUSTER.md`.
//!
//! * [`node_id`]: Raft node ids and nats-server peer ids from server names;
//! * [`meta`]: the meta group's state (stream and consumer assignments) and how a command
//!   changes it;
//! * [`types`]: the meta group's openraft types;
//! * [`store`]: the Raft log, vote, committed index and snapshots of every group on redb
//!   (`raft.redb`), fsynced before anything is acknowledged;
//! * [`machine`]: the meta group's state machine;
//! * [`transport`] and [`network`]: Raft RPCs as requests over the routes, in the system
//!   account;
//! * [`bootstrap`]: when a member may initialize the meta group (no split brain);
//! * [`group`]: the meta group of a member, its upkeep and what clients see of it;
//! * [`propose`]: proposals to the meta group from any member (forwarded to the leader);
//! * [`placement`]: which members carry a replicated stream;
//! * [`replication`]: the JetStream API's replicated streams on the meta group (the core's
//!   `Replication` hook);
//! * [`rescale`]: a change of a replicated stream's `num_replicas` (its peers grow or shrink
//!   online);
//! * [`moves`]: changes of a replicated stream's peers one at a time (a lock in the meta
//!   state, run by the meta leader, finished by the next one), and moves by placement;
//! * [`r1`]: R1 streams as the cluster's assignments with one peer (a plain stream there),
//!   the API requests about them forwarded to that peer;
//! * [`copies`]: each member's copies of the replicated streams assigned to it;
//! * [`stream_group`] and [`stream_machine`]: a replicated stream's group (its publishes
//!   proposed by the leader, PubAcks after the commit) and its state machine (the copy's
//!   store);
//! * [`reads`]: reads of a replicated stream's messages on its group's leader, after a read
//!   barrier;
//! * [`consumer_group`] and [`consumer_machine`]: a replicated consumer's group (the leader
//!   runs the consumer task, proposing its state records) and its state machine (the
//!   consumer's state record in the member's store): "Consumer groups" in
//!   `hub/JETSTREAM-CLUSTER.md`.

pub mod bootstrap;
pub mod consumer_group;
pub mod consumer_machine;
pub mod copies;
pub mod durable;
pub mod group;
pub mod limits;
pub mod machine;
pub mod meta;
pub mod moves;
pub mod network;
pub mod node_id;
pub mod placement;
pub mod propose;
pub mod r1;
pub mod r1_held;
pub mod reads;
pub mod replicate;
pub mod replication;
pub mod rescale;
pub mod rollup;
pub mod server_remove;
pub mod store;
pub mod stream_group;
pub mod stream_machine;
pub mod transport;
pub mod types;
pub mod unreplicate;

pub use group::{MetaGroup, MetaOptions};
