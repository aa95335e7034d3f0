//! An R1 stream made replicated: `STREAM.UPDATE` of `num_replicas` 1 to 2-5, as nats-server
//! 2.9's `jsClusteredStreamUpdateRequest` (the stream's group gets new peers; the peer that
//! held the stream keeps its store and is the group's first leader). See "R1 to R2-R5" under
//! "Rescaling" in `hub/JETSTREAM-CLUSTER.md`.
//!
//! An R1 stream is a plain stream of its one peer's engine (`jsc::r1`); a replicated one is a
//! group whose members hold copies (`jsc::copies`). The change, asked on the peer (a request
//! elsewhere is forwarded there as any request about an R1 stream):
//!
//! 1. The new peers are chosen by placement first (too few: 10005, nothing changed); then the
//!    assignment's configuration says the new R (`UpdateStream`) with the peer alone. Its
//!    `jsc::r1` task no longer counts it as its R1 stream (without deleting it: the
//!    assignment is still there, with this member as peer), and its `jsc::copies` task
//!    **adopts** the plain stream ([`adopt`]): the stream stops taking publishes
//!    (`JetStream::quiesce_plain`: its subjects unsubscribed, what it took stored and
//!    answered), the group's applied marker is saved with the store's last sequence and time
//!    and no entry applied (`stream_machine::adopt`), then the stream becomes a copy
//!    (`JetStream::plain_to_copy`: its configuration says the new R; its messages and
//!    consumers stay). The store is not copied: it is the copy's store, and the marker makes
//!    the group start where the store ends (first publish `last_seq + 1`, the dedupe window
//!    rebuilt from the stored ids).
//! 2. The group starts with this member as its only voter, whatever peers the assignment
//!    lists by then, and before it serves anything else ([`settle`]) builds a snapshot and
//!    purges its log up to it: a member added later is behind the purged log and gets the
//!    adopted messages in a snapshot (read from the store), never the log alone.
//! 3. The change of the stream's peers (`jsc::moves`: `BeginMove` with the new peers, run by
//!    the meta leader) adds the others as learners, which catch up from that snapshot, then
//!    makes them voters, as a rescale up does. The update is answered once the change began.
//!
//! Publishes during the change: those the plain stream took are stored and answered by it
//! before the marker is read; from the unsubscription until the group's leader subscribes
//! the subjects, a publish has no responders (no PubAck, the client retries); after that the
//! group stores them. None is lost once acknowledged and none stored twice (a retry with its
//! msg id is a duplicate: the window holds the adopted ids).
//!
//! Consumers of the R1 stream stay on this member as consumers of its copy (R1 consumers of
//! a copy: their state and acks as they were, served to clients of this member and lost with
//! it), as nats-server's R1 consumers of a replicated stream; they do not become consumer
//! groups. R>1 to R1 is `jsc::unreplicate`.

use std::sync::Arc;
use std::time::Duration;

use leaf_core::jetstream::config::{ApiError, JsError, StreamConfig};
use leaf_core::jetstream::replication::Replicated;
use leaf_core::jetstream::JetStream;
use leaf_proto::time::now_ns;
use tracing::info;

use super::group::MetaGroup;
use super::meta::{MetaCommand, StreamAssignment};
use super::placement;
use super::replication::no_peers;
use super::store::RaftDb;
use super::stream_machine::SNAPSHOT_MAX_BYTES;
use super::types::{Member, StreamRaft};

/// The metrics of a stream group's Raft.
type StreamMetrics = openraft::RaftMetrics<u64, Member>;

/// How long each step of [`settle`] may take.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

impl MetaGroup {
    /// Makes R1 stream `config.name` of `account`, this member's plain stream, a replicated
    /// stream of `config.num_replicas` (see the module documentation): answered once the
    /// change of its peers began.
    pub(super) async fn replicate_r1(
        self: &Arc<Self>,
        account: &str,
        config: StreamConfig,
    ) -> Result<Replicated, ApiError> {
        let key = (account.to_owned(), config.name.clone());
        let sa = self
            .state()
            .streams
            .get(&key)
            .cloned()
            .filter(StreamAssignment::is_r1)
            .ok_or_else(ApiError::stream_not_found)?;
        // A stream kept from before R1 streams were the cluster's, whose name another
        // member's assignment holds: not the cluster's to replicate.
        if sa.group.peers != [self.own] {
            return Err(JsError::StreamReplicasNotUpdatable.err());
        }
        placement::check(config.placement.as_ref(), self.cluster_name()).map_err(no_peers)?;
        let old: StreamConfig = serde_json::from_str(&sa.config)
            .map_err(|e| ApiError::general(&format!("the assignment does not read: {e}")))?;
        if old.placement != config.placement {
            return Err(JsError::StreamMoveAndScale.err());
        }
        self.may_change_peers(&sa)?;
        // The other peers get the adopted messages in one snapshot, which openraft 0.9 holds
        // in memory: a stream too large for it is not replicated (the group would never be
        // ready for them).
        let bytes = self
            .engines
            .get()
            .and_then(|e| e.get(account))
            .and_then(|js| js.store_of(&config.name).stream_state(&config.name).ok())
            .flatten()
            .map_or(0, |st| st.bytes);
        if bytes > SNAPSHOT_MAX_BYTES {
            return Err(JsError::StreamReplicasNotUpdatable.with(&format!(
                "replicas configuration can not be updated: the stream holds {bytes} bytes, more than \
                 a snapshot may ({SNAPSHOT_MAX_BYTES})"
            )));
        }
        let new_r = usize::try_from(config.num_replicas).unwrap_or(1);
        let tags = placement::tags(config.placement.as_ref());
        let free = self.voters_but(&sa.group.peers);
        let added = placement::choose(new_r.saturating_sub(1), &free, &self.state().load(), &tags)
            .map_err(no_peers)?;
        info!(account, stream = %config.name, to = new_r,
              "JetStream cluster: an R1 stream becomes replicated");
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        self.apply_command(MetaCommand::UpdateStream {
            account: account.to_owned(),
            name: config.name.clone(),
            config: text,
        })
        .await?;
        let (sa, _) = self.assigned(account, &config.name)?;
        let mut peers = sa.group.peers.clone();
        peers.extend(added);
        self.begin_move(
            &sa,
            peers.clone(),
            peers,
            (1, new_r),
            config.placement.as_ref(),
        )
        .await?;
        let (sa, _) = self.assigned(account, &config.name)?;
        self.replicated(&sa)
            .ok_or_else(super::replication::unavailable)
    }
}

/// Whether this member (`own`) adopts its plain stream for assignment `sa` (see the module
/// documentation): it is the assignment's first peer and its engine `js` holds a plain
/// stream of that name with the same storage (the R1 stream it was; the update may have
/// changed other fields, and the creation time may differ: an R1 stream created by the API
/// keeps the engine's, the copy takes the assignment's). A plain stream of a first peer is
/// otherwise never there: a replicated stream is created only where no plain stream of
/// its name is (`Inner::create_replicated`, the meta group's unique names).
pub fn adopts(own: u64, sa: &StreamAssignment, js: &JetStream) -> bool {
    let Some((plain, _)) = js
        .plain_streams()
        .into_iter()
        .find(|(c, _)| c.name == sa.name)
    else {
        return false;
    };
    let storage = serde_json::from_str::<StreamConfig>(&sa.config).map(|c| c.storage);
    sa.group.peers.first() == Some(&own) && storage.is_ok_and(|s| s == plain.storage)
}

/// Adopts this member's plain stream as the copy of assignment `sa`'s group (`config` its
/// configuration; see the module documentation): the stream stopped and drained, the group's
/// applied marker saved at its last sequence, the stream made a copy. Run again from the
/// start after a failure or a crash (the group starts only once the stream is a copy).
pub async fn adopt(
    db: &RaftDb,
    sa: &StreamAssignment,
    js: &JetStream,
    config: StreamConfig,
) -> Result<(), String> {
    let (last_seq, last_ts) = js
        .quiesce_plain(&sa.name)
        .await
        .map_err(|e| e.description)?;
    super::stream_machine::adopt(db, &sa.group.name, last_seq, last_ts.unwrap_or_else(now_ns))
        .await
        .map_err(|e| format!("cannot save the group's marker: {e}"))?;
    js.plain_to_copy(config, sa.created_ns)
        .await
        .map_err(|e| e.description)?;
    info!(account = %sa.account, stream = %sa.name, last_seq,
          "JetStream cluster: this member's R1 stream is now its group's copy");
    Ok(())
}

/// The last steps of an adoption, on the group's first member (`own`) right after it
/// initialized the group alone: once it leads and applied the membership, a snapshot is
/// built and the log purged up to it, so every member added later is sent the snapshot (the
/// adopted messages); then the adoption is done (`stream_machine::adopted_done`). Each step
/// within [`SETTLE_WITHIN`].
pub async fn settle(raft: &StreamRaft, own: u64, db: &RaftDb, group: &str) -> Result<(), String> {
    let until = |what: &'static str, ok: Box<dyn Fn(&StreamMetrics) -> bool + Send + Sync>| {
        let mut metrics = raft.metrics();
        async move {
            let reached = tokio::time::timeout(SETTLE_WITHIN, metrics.wait_for(|m| ok(m))).await;
            match reached {
                Ok(Ok(_)) => Ok(()),
                _ => Err(format!("{what} not in time")),
            }
        }
    };
    until(
        "the adopting member's lead",
        Box::new(move |m| m.current_leader == Some(own) && m.last_applied.is_some()),
    )
    .await?;
    let applied = raft.metrics().borrow().last_applied;
    raft.trigger()
        .snapshot()
        .await
        .map_err(|e| format!("cannot build the first snapshot: {e}"))?;
    until(
        "the first snapshot",
        Box::new(move |m| m.snapshot.is_some() && m.snapshot >= applied),
    )
    .await?;
    let Some(index) = raft.metrics().borrow().snapshot.map(|s| s.index) else {
        return Err("no snapshot".to_owned());
    };
    raft.trigger()
        .purge_log(index)
        .await
        .map_err(|e| format!("cannot purge the log: {e}"))?;
    until(
        "the log's purge",
        Box::new(move |m| m.purged.is_some_and(|p| p.index >= index)),
    )
    .await?;
    super::stream_machine::adopted_done(db, group)
        .await
        .map_err(|e| format!("cannot save the adoption's end: {e}"))?;
    info!(
        group,
        snapshot = index,
        "JetStream cluster: the adopted copy's group is ready for new members"
    );
    Ok(())
}
