//! A replicated stream made R1: `STREAM.UPDATE` of `num_replicas` 2-5 to 1, as nats-server
//! 2.9's `jsClusteredStreamUpdateRequest` (the peers removed down to one, the stream stays).
//! The reverse of `jsc::replicate`; see "R2-R5 to R1" under "Rescaling a stream" in
//! `hub/JETSTREAM-CLUSTER.md`.
//!
//! 1. Asked on any member ([`MetaGroup::unreplicate`]): 10124 while another change of the
//!    stream's peers runs, 10008 without a writable meta group; a change of `placement` with
//!    it is 10123 (as a rescale).
//! 2. The stream's **replicated consumers are removed** from the meta group (each member
//!    stops and deletes them as it applies that): their state lives in their groups, which
//!    a plain stream has none of. R1 consumers of the kept copy (ephemeral ones and durable
//!    ones of `num_replicas: 1` on that member) stay, as plain consumers of the plain stream
//!    (durable ones from their stored state; ephemeral ones are stopped and lost).
//! 3. The group **shrinks to its leader** with the rescale's machinery (`jsc::rescale`:
//!    `kept` with R1, the leader kept; `SetStreamPeers`: the others drop their copies and
//!    groups as they apply it). Answered after it, as a rescale down.
//! 4. The assignment's configuration says R1 (`UpdateStream`): it is an R1 assignment
//!    (`is_r1`) with the kept member as its one peer. That member's `jsc::copies` task does
//!    not delete its copy then but **converts** it ([`to_plain`]): it records the stream as
//!    an R1 stream held here (`jsc::r1_held`), stops the stream's group and removes its Raft
//!    state, and makes the copy a plain stream (`JetStream::copy_to_plain`: reopened from its
//!    store, its subjects subscribed, its own task storing from the last sequence, the
//!    dedupe window rebuilt from the stored ids). `jsc::r1` then follows it as any R1 stream
//!    of this member. A copy still found under an R1 assignment of this member at start (a
//!    crash before the conversion) is converted once the meta state caught up with the
//!    leader (`MetaGroup::caught_up`: never on a stale state, where a later entry might make
//!    it replicated again).
//!
//! The same update again after a failure carries on where it stopped (the consumers already
//! gone, the peers already one). Publishes during the change: until the group stops, its
//! leader stores and answers them; from then until the plain stream subscribes the subjects
//! a publish has no responders (no PubAck: the client retries); a retry with its msg id of a
//! message stored is a duplicate for the plain stream (its window read from the store).

use std::sync::Arc;

use leaf_core::jetstream::config::{ApiError, JsError, StreamConfig};
use leaf_core::jetstream::replication::Replicated;
use leaf_core::jetstream::JetStream;
use tracing::info;

use super::group::MetaGroup;
use super::meta::{MetaCommand, StreamAssignment};

impl MetaGroup {
    /// Makes replicated stream `config.name` of `account` an R1 stream of configuration
    /// `config` (`num_replicas` 1; see the module documentation): the stream as shown once
    /// its assignment is R1.
    pub(super) async fn unreplicate(
        self: &Arc<Self>,
        account: &str,
        config: StreamConfig,
    ) -> Result<Replicated, ApiError> {
        let (sa, _) = self.assigned(account, &config.name)?;
        let old: StreamConfig = serde_json::from_str(&sa.config)
            .map_err(|e| ApiError::general(&format!("the assignment does not read: {e}")))?;
        if old.placement != config.placement {
            return Err(JsError::StreamMoveAndScale.err());
        }
        self.may_change_peers(&sa)?;
        info!(account, stream = %config.name, from = old.num_replicas,
              "JetStream cluster: a replicated stream becomes R1");
        for ca in self.consumers_of(&sa) {
            self.apply_command(MetaCommand::RemoveConsumer {
                account: ca.account.clone(),
                stream: ca.stream.clone(),
                name: ca.name.clone(),
            })
            .await?;
            info!(account, stream = %ca.stream, consumer = %ca.name,
                  "JetStream cluster: a replicated consumer removed (its stream becomes R1)");
        }
        if sa.group.peers.len() > 1 {
            self.rescale_stream(&sa, &config).await?;
        }
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        self.apply_command(MetaCommand::UpdateStream {
            account: account.to_owned(),
            name: config.name.clone(),
            config: text,
        })
        .await?;
        let (sa, _) = self.assigned(account, &config.name)?;
        let leader = sa.group.peers.first().and_then(|id| self.name_of(*id));
        Ok(self.as_shown(&sa, config, leader, Vec::new()))
    }
}

/// Whether assignment `sa` is an R1 one of this member (`own`) whose engine `js` still holds
/// its stream as a replicated stream's copy (of the same creation): to convert ([`to_plain`]).
pub fn converts(own: u64, sa: &StreamAssignment, js: &JetStream) -> bool {
    sa.is_r1()
        && sa.group.peers == [own]
        && js.replica_names().contains(&sa.name)
        && js.stream_created_ns(&sa.name) == Some(sa.created_ns)
}

/// Converts this member's copy of R1 assignment `sa` (see [`converts`]) into the plain
/// stream of that assignment (see the module documentation): recorded as held here, its
/// group stopped and its Raft state removed, the copy reopened as a plain stream. Run again
/// from the start after a failure.
pub async fn to_plain(g: &MetaGroup, sa: &StreamAssignment, js: &JetStream) -> Result<(), String> {
    let config: StreamConfig = serde_json::from_str(&sa.config)
        .map_err(|e| format!("its configuration does not read: {e}"))?;
    let key = (sa.account.clone(), sa.name.clone());
    g.hold_r1(&[(key, sa.created_ns)]).await?;
    g.remove_stream_groups(&sa.account, &sa.name).await;
    js.copy_to_plain(config, sa.created_ns)
        .await
        .map_err(|e| e.description)?;
    info!(account = %sa.account, stream = %sa.name,
          "JetStream cluster: this member's copy is now the R1 stream");
    Ok(())
}
