//! The state machine of a replicated stream's group: the copy's stream in the member's
//! stream store (`leaf-store`) is the state; applying a committed [`StreamEntry`] appends it
//! there.
//!
//! **Deterministic**: every peer applies the same entries in the same order and decides the
//! same: an entry whose `Nats-Msg-Id` was stored within the stream's `duplicate_window`
//! (measured with the entries' own times, never a peer's clock) is a duplicate, answered with
//! the earlier sequence and not stored; any other gets `last_seq + 1`. The time stored is the
//! entry's (the leader's clock), never earlier than the previous message's.
//!
//! **Applied once**: after each batch is appended (durably: the store's commit), the
//! *marker* (last applied log id, membership, last sequence and time) is saved in the Raft
//! database, without an fsync of its own (it reaches the disk with the next log append). A
//! restart re-applies the entries after the marker (openraft does it), and every
//! decision comes out the same: the dedupe window is rebuilt from the messages up to the
//! marker's sequence only, and an entry whose sequence the store already holds (appended
//! before the crash, marker not saved yet) is not appended again. Each append names the
//! sequence it expects before it (`append_each` with the expected last sequence), so a peer
//! whose store disagrees stops with an error rather than diverging.
//!
//! **No snapshots yet**: the group keeps its whole log (its Raft configuration never
//! snapshots, so nothing is purged), and a member that was down catches up from the leader's
//! log. Installing a snapshot is refused (see `hub/JETSTREAM-CLUSTER.md`).

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use leaf_store::{Appended, NewMessage, Store};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::rollup::{check, roll_up, Rollup};
use super::store::RaftDb;
use super::types::{Member, StreamEntry, StreamReply, StreamTypes};

/// The Raft database key of the marker.
const MARKER: &str = "applied";

/// How many messages are read at a time while rebuilding the dedupe window.
const SCAN_CHUNK: u64 = 512;

/// What is saved after each applied batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Marker {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
    /// The stream's last sequence after the applied entries.
    last_seq: u64,
    /// The time of the last stored message.
    last_ts: i64,
}

/// The `Nats-Msg-Id`s stored within the window: id → (sequence, time), and the ids by time
/// for pruning.
#[derive(Debug, Default)]
struct Window {
    ids: HashMap<String, (u64, i64)>,
    by_time: VecDeque<(i64, String)>,
}

impl Window {
    fn insert(&mut self, id: String, seq: u64, ts: i64) {
        self.by_time.push_back((ts, id.clone()));
        self.ids.insert(id, (seq, ts));
    }

    /// Forgets the ids stored at or before `cutoff`.
    fn prune(&mut self, cutoff: i64) {
        while let Some((ts, _)) = self.by_time.front() {
            if *ts > cutoff {
                break;
            }
            let Some((ts, id)) = self.by_time.pop_front() else {
                break;
            };
            if self.ids.get(&id).is_some_and(|(_, t)| *t == ts) {
                self.ids.remove(&id);
            }
        }
    }
}

/// The state behind the machine.
#[derive(Debug, Default)]
struct State {
    marker: Marker,
    window: Window,
    /// The newest sequence the store holds (appended, possibly ahead of the marker).
    stored_last: u64,
}

impl State {
    /// Decides what entry `e` becomes (see the module documentation): its reply, and the
    /// message to store when it is not a duplicate.
    fn decide(&mut self, e: StreamEntry, window_ns: i64) -> (StreamReply, Option<NewMessage>) {
        let ts = e.ts_ns.max(self.marker.last_ts);
        let msg_id = e
            .headers
            .as_deref()
            .and_then(|h| leaf_proto::headers::get_str(h, "Nats-Msg-Id"))
            .filter(|id| !id.is_empty() && window_ns > 0)
            .map(str::to_owned);
        if window_ns > 0 {
            self.window.prune(ts.saturating_sub(window_ns));
        }
        if let Some((seq, _)) = msg_id.as_ref().and_then(|id| self.window.ids.get(id)) {
            return (
                StreamReply {
                    seq: *seq,
                    duplicate: true,
                },
                None,
            );
        }
        let seq = self.marker.last_seq + 1;
        self.marker.last_seq = seq;
        self.marker.last_ts = ts;
        if let Some(id) = msg_id {
            self.window.insert(id, seq, ts);
        }
        let msg = NewMessage {
            subject: e.subject,
            headers: e.headers.map(Bytes::from),
            payload: Bytes::from(e.payload),
            ts_ns: ts,
        };
        (
            StreamReply {
                seq,
                duplicate: false,
            },
            Some(msg),
        )
    }
}

/// Told of the messages each apply stored in the copy (their append results and subjects,
/// in order) and whether older messages were removed (limits, rollups): the copy's
/// consumers are woken by it.
pub type OnStored = Arc<dyn Fn(&[(Appended, String, Option<Rollup>)], bool) + Send + Sync>;

/// The state machine of one stream group (cheap to clone: one shared state).
#[derive(Clone)]
pub struct StreamMachine {
    db: RaftDb,
    group: Arc<str>,
    store: Store,
    stream: Arc<str>,
    window_ns: i64,
    state: Arc<Mutex<State>>,
    on_stored: Option<OnStored>,
}

fn sm_write(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_state_machine(e).into()
}

fn any(e: &(impl std::error::Error + 'static)) -> AnyError {
    AnyError::new(e)
}

/// Why a stream group's state machine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The Raft database could not be read.
    #[error("cannot read the stream group's state: {0}")]
    Raft(#[from] redb::Error),
    /// The marker does not decode.
    #[error("the stream group's state is damaged: {0}")]
    Decode(#[from] postcard::Error),
    /// The stream store could not be read.
    #[error("cannot read the stream: {0}")]
    Store(#[from] leaf_store::StoreError),
}

impl StreamMachine {
    /// The machine of group `group` applying to stream `stream` of `store`, with the stream's
    /// `duplicate_window` (ns) and `first_seq` (its first message's sequence; earlier ones
    /// are taken when the copy is created); reads the marker and rebuilds the dedupe window
    /// (blocking reads: call it off the async threads).
    pub fn open(
        db: RaftDb,
        group: &str,
        store: Store,
        stream: &str,
        window_ns: i64,
        first_seq: u64,
    ) -> Result<StreamMachine, OpenError> {
        let fresh = Marker {
            last_seq: first_seq.saturating_sub(1),
            ..Marker::default()
        };
        let mut marker: Marker = match db.get_state(group, MARKER)? {
            Some(bytes) => postcard::from_bytes(&bytes)?,
            None => fresh.clone(),
        };
        let state = store.stream_state(stream)?;
        let stored_last = state.as_ref().map_or(0, |s| s.last_seq);
        let stored_first = state.as_ref().map_or(0, |s| s.first_seq);
        if marker.last_seq > stored_last {
            // The store lost what the marker says was applied (a memory stream after a
            // restart): everything is applied again from the log, which is never purged.
            warn!(
                stream,
                group,
                applied = marker.last_seq,
                stored = stored_last,
                "JetStream cluster: the stream holds less than its group applied; applying \
                 the group's log again"
            );
            marker = fresh;
        }
        let window = rebuild_window(&store, stream, &marker, window_ns, stored_first)?;
        Ok(StreamMachine {
            db,
            group: group.into(),
            store,
            stream: stream.into(),
            window_ns,
            state: Arc::new(Mutex::new(State {
                marker,
                window,
                stored_last,
            })),
            on_stored: None,
        })
    }

    /// This machine, telling `on_stored` of what each apply stores.
    pub fn on_stored(self, on_stored: OnStored) -> StreamMachine {
        StreamMachine {
            on_stored: Some(on_stored),
            ..self
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ids stored within the window before the marker's sequence (only those: so that
/// entries applied again decide as they did the first time).
fn rebuild_window(
    store: &Store,
    stream: &str,
    marker: &Marker,
    window_ns: i64,
    stored_first: u64,
) -> Result<Window, leaf_store::StoreError> {
    let mut window = Window::default();
    if window_ns <= 0 || marker.applied.is_none() {
        return Ok(window);
    }
    let cutoff = marker.last_ts.saturating_sub(window_ns);
    let mut found = Vec::new();
    let mut end = marker.last_seq;
    'scan: while end > 0 && end >= stored_first {
        let from = end.saturating_sub(SCAN_CHUNK - 1).max(1);
        let chunk = store.read_range(stream, from, SCAN_CHUNK as usize, u64::MAX)?;
        for m in chunk.into_iter().filter(|m| m.seq <= end).rev() {
            if m.ts_ns <= cutoff {
                break 'scan;
            }
            let id = m
                .headers
                .as_deref()
                .and_then(|h| leaf_proto::headers::get_str(h, "Nats-Msg-Id"))
                .filter(|id| !id.is_empty());
            if let Some(id) = id {
                found.push((id.to_owned(), m.seq, m.ts_ns));
            }
        }
        end = from - 1;
    }
    for (id, seq, ts) in found.into_iter().rev() {
        window.insert(id, seq, ts);
    }
    Ok(window)
}

impl RaftSnapshotBuilder<StreamTypes> for StreamMachine {
    /// The marker as openraft's snapshot (no data: see the module documentation).
    async fn build_snapshot(&mut self) -> Result<Snapshot<StreamTypes>, StorageError<u64>> {
        let marker = self.lock().marker.clone();
        let data = postcard::to_allocvec(&marker).map_err(|e| sm_write(any(&e)))?;
        let snapshot_id = match &marker.applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_owned(),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: marker.applied,
                last_membership: marker.membership.clone(),
                snapshot_id,
            },
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<StreamTypes> for StreamMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError<u64>> {
        let st = self.lock();
        Ok((st.marker.applied, st.marker.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<StreamReply>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<StreamTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut to_store = Vec::new();
        let marker = {
            let mut st = self.lock();
            for entry in entries {
                st.marker.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => replies.push(StreamReply::default()),
                    EntryPayload::Membership(m) => {
                        st.marker.membership = StoredMembership::new(Some(entry.log_id), m);
                        replies.push(StreamReply::default());
                    }
                    EntryPayload::Normal(e) => {
                        let (reply, msg) = st.decide(e, self.window_ns);
                        if let Some(msg) = msg {
                            if reply.seq > st.stored_last {
                                to_store.push((msg, Some(reply.seq - 1)));
                            }
                        }
                        replies.push(reply);
                    }
                }
            }
            st.marker.clone()
        };
        if let Some(last) = to_store
            .last()
            .and_then(|(_, before)| *before)
            .map(|b| b + 1)
        {
            // Checked by the leader: a rollup header here reads.
            let kinds: Vec<_> = to_store
                .iter()
                .map(|(m, _)| (m.subject.clone(), check(m.headers.as_deref(), true)))
                .collect();
            let outcomes = self
                .store
                .append_each(&self.stream, to_store)
                .await
                .map_err(|e| sm_write(any(&e)))?;
            let mut stored = Vec::with_capacity(outcomes.len());
            for (outcome, (subject, rollup)) in outcomes.into_iter().zip(kinds) {
                let appended = outcome.map_err(|e| sm_write(any(&e)))?;
                stored.push((appended, subject, rollup.ok().flatten()));
            }
            let rolled_up = roll_up(&self.store, &self.stream, &stored)
                .await
                .map_err(|e| sm_write(any(&e)))?;
            if let Some(on_stored) = &self.on_stored {
                on_stored(&stored, rolled_up);
            }
            let mut st = self.lock();
            st.stored_last = st.stored_last.max(last);
        }
        let bytes = postcard::to_allocvec(&marker).map_err(|e| sm_write(any(&e)))?;
        // Not fsynced: losing it to a crash only makes the entries after an older marker
        // apply again, which changes nothing (see the module documentation).
        self.db
            .put_state_lazy(&self.group, vec![(MARKER, bytes)])
            .await
            .map_err(|e| sm_write(any(&e)))?;
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
        _meta: &SnapshotMeta<u64, Member>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        Err(sm_write(AnyError::error(
            "snapshots of a replicated stream's group are not supported yet (its log is \
             never purged)",
        )))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<StreamTypes>>, StorageError<u64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry};

    use super::*;

    fn log_entry(index: u64, e: StreamEntry) -> Entry<StreamTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(e),
        }
    }

    /// Entries applied again after a crash that lost the marker (the store has them, the
    /// marker does not) decide the same (sequences, duplicates) and are not stored twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_applied_again_are_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store"),
            leaf_store::StoreOptions::default(),
        )
        .unwrap();
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        let window = 60_000_000_000;
        let entries: Vec<Entry<StreamTypes>> = [Some("a"), Some("b"), None, Some("a"), Some("c")]
            .into_iter()
            .enumerate()
            .map(|(i, id)| log_entry(i as u64 + 1, entry(id, 1_000 + i as i64)))
            .collect();
        let seqs = |replies: &[StreamReply]| -> Vec<(u64, bool)> {
            replies.iter().map(|r| (r.seq, r.duplicate)).collect()
        };
        let expected = vec![(1, false), (2, false), (3, false), (1, true), (4, false)];
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        let first = m.apply(entries.clone()).await.unwrap();
        assert_eq!(seqs(&first), expected);
        assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
        // Reopened with the marker: nothing to apply again.
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
        // The marker lost: everything applies again, alike, and nothing is stored twice.
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        assert_eq!(m.applied_state().await.unwrap().0, None);
        let again = m.apply(entries.clone()).await.unwrap();
        assert_eq!(seqs(&again), expected);
        let state = store.stream_state("S").unwrap().unwrap();
        assert_eq!((state.msgs, state.last_seq), (4, 4));
        // The next entry follows.
        let next = m
            .apply([
                log_entry(6, entry(Some("b"), 2_000)),
                log_entry(7, entry(None, 2_001)),
            ])
            .await
            .unwrap();
        assert_eq!(seqs(&next), [(2, true), (5, false)]);
        assert_eq!(store.stream_state("S").unwrap().unwrap().last_seq, 5);
    }

    fn entry(id: Option<&str>, ts: i64) -> StreamEntry {
        StreamEntry {
            subject: "s".into(),
            headers: id.map(|id| format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n").into_bytes()),
            payload: b"x".to_vec(),
            ts_ns: ts,
        }
    }

    /// Sequences follow apply order; a msg-id seen within the window (entry times) is a
    /// duplicate of its first sequence, after the window it is stored again; times never go
    /// back.
    #[test]
    fn entries_get_sequences_and_duplicates_deterministically() {
        let mut st = State::default();
        let w = 100;
        let (r, m) = st.decide(entry(Some("a"), 1000), w);
        assert_eq!((r.seq, r.duplicate), (1, false));
        assert!(m.is_some());
        let (r, m) = st.decide(entry(None, 1010), w);
        assert_eq!((r.seq, r.duplicate), (2, false));
        assert!(m.is_some());
        let (r, m) = st.decide(entry(Some("a"), 1050), w);
        assert_eq!((r.seq, r.duplicate), (1, true));
        assert!(m.is_none());
        // A leader with a slower clock: stored at the previous time.
        let (r, m) = st.decide(entry(Some("b"), 900), w);
        assert_eq!(r.seq, 3);
        assert_eq!(m.map(|m| m.ts_ns), Some(1010));
        let (r, _) = st.decide(entry(Some("a"), 1200), w);
        assert_eq!((r.seq, r.duplicate), (4, false));
    }

    /// A stream created with `first_seq` 10 (its copy has sequences 1-9 taken): the first
    /// entry gets sequence 10.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_entry_gets_the_streams_first_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store"),
            leaf_store::StoreOptions::default(),
        )
        .unwrap();
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        store.skip_many("S", 9, 0).await.unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        let mut m = StreamMachine::open(db, "S-x", store.clone(), "S", 1_000, 10).unwrap();
        let replies = m.apply([log_entry(1, entry(Some("a"), 5))]).await.unwrap();
        assert_eq!(replies[0].seq, 10);
        assert_eq!(store.stream_state("S").unwrap().unwrap().msgs, 1);
    }
}
