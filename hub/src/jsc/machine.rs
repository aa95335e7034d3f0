//! The meta group's state machine for openraft: the assignments ([`MetaState`]) in memory,
//! the last applied log id and membership with them, snapshots of all three kept in the Raft
//! database ([`SnapshotSlot`]). At start the last snapshot is loaded, and openraft applies the
//! committed entries after it again (the committed index is saved: see `super::store`), so the
//! state is as it was.
//!
//! Every change is published on a watch channel, for the parts that will act on
//! assignments (next: see `hub/JETSTREAM-CLUSTER.md`).

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::meta::{MetaReply, MetaState};
use super::store::SnapshotSlot;
use super::types::{Member, MetaTypes};

/// Log id and membership, as openraft names them for the meta group.
type MetaLogId = LogId<u64>;
type MetaMembership = StoredMembership<u64, Member>;

/// What a snapshot holds (postcard).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Image {
    last_applied: Option<MetaLogId>,
    membership: MetaMembership,
    state: MetaState,
}

/// The meta group's state machine (cheap to clone: one shared state).
#[derive(Clone)]
pub struct MetaMachine {
    inner: Arc<Mutex<Image>>,
    slot: SnapshotSlot,
    changes: watch::Sender<MetaState>,
}

fn sm_read(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::read_state_machine(e).into()
}

fn sm_write(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_state_machine(e).into()
}

/// Why the state machine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The snapshot could not be read.
    #[error("cannot read the meta group's snapshot: {0}")]
    Read(#[from] redb::Error),
    /// The snapshot does not decode.
    #[error("the meta group's snapshot is damaged: {0}")]
    Decode(#[from] postcard::Error),
}

impl MetaMachine {
    /// The state machine, from the last snapshot in `slot` if there is one.
    pub fn open(slot: SnapshotSlot) -> Result<MetaMachine, LoadError> {
        let image = match slot.load()? {
            Some(stored) => postcard::from_bytes::<Image>(&stored.data)?,
            None => Image::default(),
        };
        let (changes, _) = watch::channel(image.state.clone());
        Ok(MetaMachine {
            inner: Arc::new(Mutex::new(image)),
            slot,
            changes,
        })
    }

    /// Watches the assignments: the current ones, and each change as it is applied.
    pub fn watch(&self) -> watch::Receiver<MetaState> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Image> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `image` as the group's snapshot, and returns it as openraft's.
    async fn store(&self, image: &Image) -> Result<Snapshot<MetaTypes>, StorageError<u64>> {
        let data = postcard::to_allocvec(image).map_err(|e| sm_write(AnyError::new(&e)))?;
        let snapshot_id = match &image.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: image.last_applied,
            last_membership: image.membership.clone(),
            snapshot_id,
        };
        let meta_bytes = postcard::to_allocvec(&meta).map_err(|e| sm_write(AnyError::new(&e)))?;
        self.slot
            .save(meta_bytes, data.clone())
            .await
            .map_err(|e| sm_write(AnyError::new(&e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<MetaTypes> for MetaMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaTypes>, StorageError<u64>> {
        let image = self.lock().clone();
        self.store(&image).await
    }
}

impl RaftStateMachine<MetaTypes> for MetaMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<MetaLogId>, MetaMembership), StorageError<u64>> {
        let image = self.lock();
        Ok((image.last_applied, image.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<MetaTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let state = {
            let mut image = self.lock();
            for entry in entries {
                image.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Blank => MetaReply::default(),
                    EntryPayload::Normal(cmd) => MetaReply {
                        refused: image.state.apply(&cmd).err(),
                    },
                    EntryPayload::Membership(m) => {
                        image.membership = StoredMembership::new(Some(entry.log_id), m);
                        MetaReply::default()
                    }
                };
                replies.push(reply);
            }
            image.state.clone()
        };
        self.changes.send_if_modified(|old| {
            let changed = *old != state;
            *old = state;
            changed
        });
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let mut image: Image =
            postcard::from_bytes(&data).map_err(|e| sm_write(AnyError::new(&e)))?;
        // The meta is authoritative for what the snapshot covers.
        image.last_applied = meta.last_log_id;
        image.membership = meta.last_membership.clone();
        self.store(&image).await?;
        let state = image.state.clone();
        let index = image.last_applied.map(|l| l.index);
        *self.lock() = image;
        self.changes.send_replace(state);
        tracing::info!(
            index,
            "JetStream cluster: meta state installed from the leader's snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MetaTypes>>, StorageError<u64>> {
        let Some(stored) = self.slot.load().map_err(|e| sm_read(AnyError::new(&e)))? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<u64, Member> =
            postcard::from_bytes(&stored.meta).map_err(|e| sm_read(AnyError::new(&e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::MetaMachine;
    use crate::jsc::store::{LogStore, RaftDb};
    use crate::jsc::types::MetaTypes;

    /// A fresh Raft database in a temporary directory, for openraft's storage suite.
    struct Fresh;

    impl StoreBuilder<MetaTypes, LogStore<MetaTypes>, MetaMachine, tempfile::TempDir> for Fresh {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore<MetaTypes>, MetaMachine), StorageError<u64>>
        {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let db = RaftDb::open(dir.path()).expect("the Raft database opens");
            let machine = MetaMachine::open(db.snapshots("meta"))
                .map_err(|e| openraft::StorageIOError::read_state_machine(&e))?;
            Ok((dir, db.log("meta"), machine))
        }
    }

    /// openraft's own checks of a log storage and state machine: log state, vote, append,
    /// truncate, purge, apply, snapshots.
    #[test]
    fn openraft_suite() {
        Suite::test_all(Fresh).expect("openraft's storage suite passes");
    }
}
