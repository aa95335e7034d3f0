//! An account's `max_streams` in a JetStream cluster, as nats-server's clustered create
//! (`jsClusteredStreamRequest`) counts it: against the account's assigned streams, R1 and
//! replicated alike, whichever member holds them (see "R1 streams" in
//! `hub/JETSTREAM-CLUSTER.md`). The limit is the account's on the proposing member (its
//! configuration; the members of a cluster share it); the meta group's state machine decides
//! (`MetaCommand::AssignStreamWithin`), so two creates on two members cannot both pass the
//! last free place. Refused: 10027, the single server's error.

use super::group::MetaGroup;
use super::meta::{MetaCommand, StreamAssignment};

impl MetaGroup {
    /// The command that assigns `assignment`: within its account's `max_streams` when the
    /// account has one on this member.
    pub(super) fn assign_command(&self, assignment: StreamAssignment) -> MetaCommand {
        let max = self
            .engines
            .get()
            .and_then(|e| e.get(&assignment.account))
            .and_then(|js| js.max_streams());
        match max {
            Some(max_streams) => MetaCommand::AssignStreamWithin {
                assignment,
                max_streams,
            },
            None => MetaCommand::AssignStream(assignment),
        }
    }
}
