//! The state machine of a replicated consumer's group: **state-based replication**. The
//! consumer's state record in the member's stream store (`leaf-store`'s `put_consumer`, the
//! opaque blob the core's consumer task writes on a single server) is the state; a committed
//! entry is a whole record ([`ConsumerRecord`]), and applying it writes it to the store
//! (durably: the store's group commit), replacing the previous one. Of the entries openraft
//! applies together only the last record is written (a record supersedes the ones before it).
//!
//! **Applied once, idempotent**: after the record is written, the *marker* (last applied log
//! id, membership, and the record itself) is saved in the Raft database without an fsync of its
//! own (it reaches the disk with the next log append, as the stream machine's marker). A crash in
//! between leaves the store ahead of the marker; openraft applies the entries after the marker
//! again at the restart, which writes the same records again: harmless, since applying a record
//! only replaces.
//!
//! **Snapshots**: a consumer's record is small, so a snapshot is simply the marker (which holds
//! the record), saved under `snapshot` durably; installing one writes its record to the store
//! and saves the marker.
//!
//! The group around this machine (the leader running the consumer task, proposing its records,
//! answering acks after the commit) is described in "Consumer groups" in
//! `hub/JETSTREAM-CLUSTER.md`.

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};

use leaf_store::Store;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::store::RaftDb;
use super::types::{ConsumerRecord, ConsumerTypes, Member};

/// The Raft database key of the marker.
const MARKER: &str = "applied";

/// The Raft database key of the last snapshot (a marker).
const SNAPSHOT: &str = "snapshot";

/// What is saved after each apply, and what a snapshot holds (postcard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Marker {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
    /// The last applied record (`None` before the first).
    record: Option<Vec<u8>>,
}

fn snapshot_meta(marker: &Marker) -> SnapshotMeta<u64, Member> {
    SnapshotMeta {
        last_log_id: marker.applied,
        last_membership: marker.membership.clone(),
        snapshot_id: match &marker.applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_owned(),
        },
    }
}

fn sm_read(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::read_state_machine(e).into()
}

fn sm_write(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_state_machine(e).into()
}

/// Why the state machine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The Raft database could not be read.
    #[error("cannot read the consumer group's state: {0}")]
    Read(#[from] redb::Error),
    /// The marker does not decode.
    #[error("the consumer group's marker is damaged: {0}")]
    Decode(#[from] postcard::Error),
}

/// A replicated consumer's group's state machine (cheap to clone: one shared state).
#[derive(Clone)]
pub struct ConsumerMachine {
    db: RaftDb,
    group: Arc<str>,
    store: Store,
    stream: Arc<str>,
    consumer: Arc<str>,
    marker: Arc<Mutex<Marker>>,
}

impl ConsumerMachine {
    /// The machine of group `group` applying to consumer `consumer` of stream `stream` in
    /// `store`; reads its marker (a blocking read: call it off the async threads).
    pub fn open(
        db: RaftDb,
        group: &str,
        store: Store,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerMachine, OpenError> {
        let marker = match db.get_state(group, MARKER)? {
            Some(bytes) => postcard::from_bytes(&bytes)?,
            None => Marker::default(),
        };
        Ok(ConsumerMachine {
            db,
            group: group.into(),
            store,
            stream: stream.into(),
            consumer: consumer.into(),
            marker: Arc::new(Mutex::new(marker)),
        })
    }

    /// The last applied record (what the member's store holds once the apply finished): the
    /// state a new leader starts the consumer task from.
    pub fn applied_record(&self) -> Option<Vec<u8>> {
        self.lock().record.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marker> {
        self.marker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `record` to the store (durably).
    async fn write(&self, record: Vec<u8>) -> Result<(), StorageError<u64>> {
        self.store
            .put_consumer(&self.stream, &self.consumer, record)
            .await
            .map_err(|e| sm_write(AnyError::new(&e)))
    }
}

impl RaftSnapshotBuilder<ConsumerTypes> for ConsumerMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ConsumerTypes>, StorageError<u64>> {
        let marker = self.lock().clone();
        let bytes = postcard::to_allocvec(&marker).map_err(|e| sm_write(AnyError::new(&e)))?;
        self.db
            .put_state(&self.group, vec![(SNAPSHOT, Some(bytes.clone()))])
            .await
            .map_err(|e| sm_write(AnyError::new(&e)))?;
        Ok(Snapshot {
            meta: snapshot_meta(&marker),
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<ConsumerTypes> for ConsumerMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError<u64>> {
        let m = self.lock();
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<ConsumerTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut next = self.lock().clone();
        let mut last_record = None;
        let mut replies = Vec::new();
        for entry in entries {
            next.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(ConsumerRecord { state }) => last_record = Some(state),
                EntryPayload::Membership(m) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            replies.push(());
        }
        if let Some(record) = last_record {
            self.write(record.clone()).await?;
            next.record = Some(record);
        }
        let bytes = postcard::to_allocvec(&next).map_err(|e| sm_write(AnyError::new(&e)))?;
        self.db
            .put_state_lazy(&self.group, vec![(MARKER, bytes)])
            .await
            .map_err(|e| sm_write(AnyError::new(&e)))?;
        *self.lock() = next;
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
        let mut marker: Marker = postcard::from_bytes(&snapshot.into_inner())
            .map_err(|e| sm_write(AnyError::new(&e)))?;
        // The meta is authoritative for what the snapshot covers.
        marker.applied = meta.last_log_id;
        marker.membership = meta.last_membership.clone();
        if let Some(record) = &marker.record {
            self.write(record.clone()).await?;
        }
        let bytes = postcard::to_allocvec(&marker).map_err(|e| sm_write(AnyError::new(&e)))?;
        self.db
            .put_state(
                &self.group,
                vec![(MARKER, Some(bytes.clone())), (SNAPSHOT, Some(bytes))],
            )
            .await
            .map_err(|e| sm_write(AnyError::new(&e)))?;
        *self.lock() = marker;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ConsumerTypes>>, StorageError<u64>> {
        let Some(bytes) = self
            .db
            .get_state(&self.group, SNAPSHOT)
            .map_err(|e| sm_read(AnyError::new(&e)))?
        else {
            return Ok(None);
        };
        let marker: Marker =
            postcard::from_bytes(&bytes).map_err(|e| sm_read(AnyError::new(&e)))?;
        Ok(Some(Snapshot {
            meta: snapshot_meta(&marker),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry};

    use super::*;

    async fn store_with_stream(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("store"), leaf_store::StoreOptions::default()).unwrap();
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        store
    }

    fn record(index: u64, state: &[u8]) -> Entry<ConsumerTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ConsumerRecord {
                state: state.to_vec(),
            }),
        }
    }

    /// A fresh Raft database and stream store in a temporary directory, for openraft's
    /// storage suite.
    struct Fresh;

    impl
        openraft::testing::StoreBuilder<
            ConsumerTypes,
            crate::jsc::store::LogStore<ConsumerTypes>,
            ConsumerMachine,
            tempfile::TempDir,
        > for Fresh
    {
        async fn build(
            &self,
        ) -> Result<
            (
                tempfile::TempDir,
                crate::jsc::store::LogStore<ConsumerTypes>,
                ConsumerMachine,
            ),
            StorageError<u64>,
        > {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = store_with_stream(dir.path()).await;
            let db = RaftDb::open(dir.path()).expect("the Raft database opens");
            let machine = ConsumerMachine::open(db.clone(), "C-x", store, "S", "C")
                .map_err(|e| StorageIOError::read_state_machine(&e))?;
            Ok((dir, db.log("C-x"), machine))
        }
    }

    /// openraft's own checks of a log storage and state machine: log state, vote, append,
    /// truncate, purge, apply, snapshots.
    #[test]
    fn openraft_suite() {
        openraft::testing::Suite::test_all(Fresh).expect("openraft's storage suite passes");
    }

    fn stored(store: &Store) -> Option<Vec<u8>> {
        store
            .consumers("S")
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == "C")
            .map(|(_, state)| state)
    }

    #[tokio::test]
    async fn the_last_applied_record_is_the_stores_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_stream(dir.path()).await;
        let db = RaftDb::open(dir.path()).unwrap();
        let mut m = ConsumerMachine::open(db.clone(), "C-x", store.clone(), "S", "C").unwrap();
        assert_eq!(m.applied_state().await.unwrap().0, None);
        assert_eq!(m.applied_record(), None);

        m.apply(vec![record(1, b"one"), record(2, b"two")])
            .await
            .unwrap();
        assert_eq!(stored(&store).as_deref(), Some(&b"two"[..]));
        m.apply(vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Blank,
        }])
        .await
        .unwrap();
        assert_eq!(stored(&store).as_deref(), Some(&b"two"[..]));
        assert_eq!(m.applied_record().as_deref(), Some(&b"two"[..]));

        // Reopened: the marker gives the applied log id and record.
        let mut again = ConsumerMachine::open(db.clone(), "C-x", store.clone(), "S", "C").unwrap();
        assert_eq!(
            again.applied_state().await.unwrap().0.map(|l| l.index),
            Some(3)
        );
        assert_eq!(again.applied_record().as_deref(), Some(&b"two"[..]));

        // Entries applied again (a crash before the marker reached the disk) only replace.
        again.apply(vec![record(2, b"two")]).await.unwrap();
        assert_eq!(stored(&store).as_deref(), Some(&b"two"[..]));
        again.apply(vec![record(4, b"four")]).await.unwrap();
        assert_eq!(stored(&store).as_deref(), Some(&b"four"[..]));
    }

    #[tokio::test]
    async fn an_installed_snapshot_gives_the_leaders_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_stream(dir.path()).await;
        let db = RaftDb::open(dir.path()).unwrap();
        let mut leader = ConsumerMachine::open(db, "C-x", store, "S", "C").unwrap();
        assert!(leader.get_current_snapshot().await.unwrap().is_none());
        leader
            .apply(vec![record(1, b"one"), record(2, b"two")])
            .await
            .unwrap();
        let snap = leader.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
        let current = leader.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);

        let other = tempfile::tempdir().unwrap();
        let store = store_with_stream(other.path()).await;
        store
            .put_consumer("S", "C", b"stale".to_vec())
            .await
            .unwrap();
        let db = RaftDb::open(other.path()).unwrap();
        let mut follower =
            ConsumerMachine::open(db.clone(), "C-x", store.clone(), "S", "C").unwrap();
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(stored(&store).as_deref(), Some(&b"two"[..]));
        let mut reopened = ConsumerMachine::open(db, "C-x", store, "S", "C").unwrap();
        assert_eq!(
            reopened.applied_state().await.unwrap().0.map(|l| l.index),
            Some(2)
        );
        assert_eq!(reopened.applied_record().as_deref(), Some(&b"two"[..]));
    }
}
