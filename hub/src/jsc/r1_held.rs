//! Which plain streams a member holds for an R1 assignment, recorded durably, so that one
//! whose assignment went while the member was down is deleted at its next start rather than
//! taken for a stream from before R1 streams were the cluster's (see "R1 streams" in
//! `hub/JETSTREAM-CLUSTER.md`, "Deleted while its member was down").
//!
//! * **The record**: a side table of the member's Raft database (`raft.redb`, kind
//!   [`KIND`]: (account, stream) → the assignment's creation time), written with a durable
//!   commit **before** the member creates the stream for its assignment (the API's create,
//!   `jsc::r1`'s follower, or a stream from before once the cluster assigned it to this
//!   member), removed once the member deleted it for a removal it saw. A record without a
//!   stream (a create that failed, a crash in between) is harmless: the sweep below drops it.
//! * **Never proposed**: a recorded stream is never proposed as a stream from before.
//! * **The sweep at start**: once this member's meta state has **caught up** with the group
//!   ([`MetaGroup::caught_up`]: the meta leader confirmed its leadership with a quorum after
//!   this member asked, openraft's read index, and this member applied its log up to that
//!   index, so every command committed before the member asked is in its state, the removals
//!   made while it was down included, whether they came by log or inside a snapshot), each
//!   recorded stream that the state does not assign to this member (no assignment, or an R1
//!   one of another member: reassigned by `SERVER.REMOVE`) is deleted and logged with its
//!   account and why; its record goes with it. A state that is stale (no leader, a leader cut
//!   off from its quorum, an apply behind) never passes the check: nothing is deleted then,
//!   and the sweep is tried again on the next tick.

use std::collections::BTreeMap;
use std::time::Duration;

use leaf_core::jetstream::accounts::AccountJetStreams;
use leaf_core::jetstream::config::{ApiError, JsError};
use openraft::ServerState;
use tracing::warn;

use super::group::{MetaGroup, META};
use super::meta::MetaState;

/// The side table's kind of these records.
const KIND: &str = "r1_held";

/// The meta group's RPC asking its leader for a read index (see [`MetaGroup::caught_up`]).
pub const READ_INDEX_RPC: &str = "read_index";

/// How long the leader's read index and this member's apply up to it may take.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(5);

/// A stream: account and name.
pub type Key = (String, String);

/// Why this member should not hold its recorded R1 stream `key` any more, given the caught-up
/// `state`: `None` when it is still assigned to `own`, or is now a replicated stream (its
/// copy is `jsc::copies`' business).
pub fn not_held_because(state: &MetaState, own: u64, key: &Key) -> Option<&'static str> {
    match state.streams.get(key) {
        None => Some("its assignment was removed while this member was down"),
        Some(sa) if sa.is_r1() && !sa.group.peers.contains(&own) => {
            Some("the cluster assigned it to another member while this member was down")
        }
        Some(_) => None,
    }
}

impl MetaGroup {
    /// The R1 streams recorded as held by this member for their assignment, with the
    /// assignment's creation time.
    pub(super) fn held_r1(&self) -> Result<BTreeMap<Key, i64>, String> {
        let rows = self.db.side(KIND).map_err(|e| e.to_string())?;
        let mut held = BTreeMap::new();
        for (key, value) in rows {
            let key: Key = postcard::from_bytes(&key).map_err(|e| e.to_string())?;
            let created: i64 = postcard::from_bytes(&value).map_err(|e| e.to_string())?;
            held.insert(key, created);
        }
        Ok(held)
    }

    /// Records `held` (stream, the assignment's creation time) as held by this member, in one
    /// durable commit.
    pub(super) async fn hold_r1(&self, held: &[(Key, i64)]) -> Result<(), String> {
        let mut records = Vec::new();
        for (key, created) in held {
            let k = postcard::to_allocvec(key).map_err(|e| e.to_string())?;
            let v = postcard::to_allocvec(created).map_err(|e| e.to_string())?;
            records.push((k, Some(v)));
        }
        self.db
            .put_side(KIND, records)
            .await
            .map_err(|e| e.to_string())
    }

    /// Records R1 stream `name` of `account`, assigned to this member, as held here before
    /// the API's create makes it (10008 when the record cannot be written: the follower
    /// records and creates it then).
    pub(super) async fn hold_assigned(&self, account: &str, name: &str) -> Result<(), ApiError> {
        let key = (account.to_owned(), name.to_owned());
        let Some(created) = self.state().streams.get(&key).map(|sa| sa.created_ns) else {
            return Ok(());
        };
        self.hold_r1(&[(key, created)]).await.map_err(|e| {
            warn!(account, stream = name, error = %e, "JetStream cluster: an R1 stream's record not written");
            JsError::ClusterNotAvail.err()
        })
    }

    /// Removes the records of `keys`, in one durable commit.
    pub(super) async fn release_r1(&self, keys: &[Key]) -> Result<(), String> {
        let mut records = Vec::new();
        for key in keys {
            records.push((postcard::to_allocvec(key).map_err(|e| e.to_string())?, None));
        }
        self.db
            .put_side(KIND, records)
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether this member's meta state has caught up with the group: the leader (this member,
    /// or asked over the transport, [`READ_INDEX_RPC`]) confirmed with a quorum that it leads
    /// and gave its read index (everything committed when it was asked), and this member
    /// applied its log up to that index, within [`CATCH_UP_WITHIN`] each.
    pub(super) async fn caught_up(&self) -> bool {
        let Some(leader) = self.raft.metrics().borrow().current_leader else {
            return false;
        };
        let index = if leader == self.own {
            self.read_index().await
        } else {
            let answer = self
                .transport
                .request(leader, META, READ_INDEX_RPC, &[], CATCH_UP_WITHIN)
                .await;
            answer
                .ok()
                .and_then(|a| postcard::from_bytes::<Option<Option<u64>>>(&a).ok())
                .flatten()
        };
        let Some(index) = index else {
            return false;
        };
        self.raft
            .wait(Some(CATCH_UP_WITHIN))
            .applied_index_at_least(index, "the meta state caught up with the leader")
            .await
            .is_ok()
    }

    /// On the leader: its read index (openraft's `get_read_log_id`: the leadership confirmed
    /// by a quorum, and the last log id committed then); `None` when it does not lead or no
    /// quorum answered in time.
    async fn read_index(&self) -> Option<Option<u64>> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        match tokio::time::timeout(CATCH_UP_WITHIN, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => Some(read.map(|l| l.index)),
            _ => None,
        }
    }

    /// Serves [`READ_INDEX_RPC`]: postcard of this member's read index as leader (`None` when
    /// it does not lead).
    pub(super) async fn serve_read_index(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(&self.read_index().await).ok()
    }

    /// The sweep at start (see the module documentation): whether it ran (`false`: the meta
    /// state has not caught up yet, or the records do not read; tried again later).
    pub(super) async fn sweep_r1(&self, engines: &AccountJetStreams) -> bool {
        if !self.caught_up().await {
            return false;
        }
        // The records first, then the state: a record written meanwhile is for an assignment
        // the state then holds.
        let held = match self.held_r1() {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "JetStream cluster: the R1 streams held here do not read");
                return false;
            }
        };
        let mut released = Vec::new();
        for key in held.into_keys() {
            // The state as it is now (a stream assigned here again meanwhile stays).
            let Some(why) = not_held_because(&self.state(), self.own, &key) else {
                continue;
            };
            if let Some(js) = engines.get(&key.0) {
                match js.delete_assigned(&key.1).await {
                    Ok(true) => warn!(account = %key.0, stream = %key.1, why,
                                      "JetStream cluster: R1 stream deleted at start: {why}"),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(account = %key.0, stream = %key.1, error = %e.description,
                              "JetStream cluster: cannot delete an R1 stream no longer held (retried at the next start)");
                        continue;
                    }
                }
            }
            released.push(key);
        }
        if let Err(e) = self.release_r1(&released).await {
            warn!(error = %e, "JetStream cluster: the records of R1 streams deleted at start stay");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsc::r1::tests::assignment;

    /// A recorded stream is kept while assigned to this member (or replicated now), and goes
    /// when its assignment is gone or names another member.
    #[test]
    fn a_recorded_stream_goes_without_its_assignment_here() {
        let mut state = MetaState::default();
        for sa in [
            assignment("MINE", 1, &[1]),
            assignment("MOVED", 1, &[2]),
            assignment("GREW", 3, &[1, 2, 3]),
        ] {
            state
                .streams
                .insert((sa.account.clone(), sa.name.clone()), sa);
        }
        let key = |n: &str| ("$G".to_owned(), n.to_owned());
        assert_eq!(not_held_because(&state, 1, &key("MINE")), None);
        assert_eq!(not_held_because(&state, 1, &key("GREW")), None);
        assert!(not_held_because(&state, 1, &key("MOVED")).is_some());
        assert!(not_held_because(&state, 1, &key("GONE")).is_some());
    }
}
