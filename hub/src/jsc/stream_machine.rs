//! The state machine of a replicated stream's group: the copy's stream in the member's
//! stream store (`leaf-store`) is the state; applying a committed entry, a batch of publishes
//! ([`StreamBatch`](super::types::StreamBatch) of [`StreamMsg`]), appends them there, publish
//! by publish in the batch's order, and replies with one [`StreamReply`] per publish
//! ([`BatchReply`]).
//!
//! **Deterministic**: every peer applies the same entries in the same order and decides the
//! same, publish by publish: a publish whose `Nats-Msg-Id` was stored within the stream's
//! `duplicate_window` (measured with the publishes' own times, never a peer's clock), by an
//! earlier entry or earlier in the same batch, is a duplicate, answered with the earlier
//! sequence and not stored; any other gets `last_seq + 1`. The time stored is the publish's
//! (the leader's clock), never earlier than the previous message's.
//!
//! **Expectations** (`Nats-Expected-Stream`, `-Last-Sequence`, `-Last-Msg-Id`,
//! `-Last-Subject-Sequence` with its `-Subject` filter), in a single server's order after the
//! dedupe, are checked here against the applied state (the marker's last sequence, the last stored
//! message's id, the subject's last sequence in the store or in the batch being applied, earlier
//! publishes of the same batch included), so every member decides alike; a refused publish takes no
//! sequence and is stored nowhere, and its [`Refusal`] becomes the error PubAck. The leader does
//! not check before proposing (a refused publish costs its place in a log entry). Entries applied
//! again find the subject's last sequence at or before the marker's (a backward scan of the store,
//! which holds more).
//!
//! **`discard: new`** ([`DiscardNew`]): after the expectations, a publish that would pass
//! `max_msgs`, `max_bytes` or (with `discard_new_per_subject`) `max_msgs_per_subject` is refused
//! ([`Limit`]), counted on the copy's store plus the messages of the same apply not stored yet
//! (stored first when the store trims subjects, whose counts are then not exact); applied again
//! after a crash, a publish was admitted iff the store holds it at the sequence it would take.
//!
//! **No interest** (interest retention): a publish the leader marked `no_interest` (no
//! consumer's filter matched it at capture) is decided as any other and, if it takes a new
//! sequence, takes it without being stored (`skip_decided`: the messages decided before it
//! stored first, then the store's skip), alike on every member.
//!
//! **Stream changes** ([`StreamOp`]: purge, message delete, the removals of acknowledged
//! messages under interest or workqueue retention) in an entry are applied after the
//! messages of the entries before it are stored, bounded by the applied last sequence (so that
//! applied again with the store ahead they remove nothing a later entry stored), and replied
//! with an [`OpReply`].
//!
//! **Applied once**: after the entries openraft applies together are appended (`append_each_lazy`:
//! the store's commit, not awaiting its fsync, see below), the *marker* (last applied log id,
//! membership, last sequence and time) is saved in the Raft database, without an fsync of its own
//! (handed to the group's log writer, it reaches the disk with the next log append). A
//! restart re-applies the entries after the marker (openraft does it), and every decision comes out
//! the same: the dedupe window is rebuilt from the messages up to the marker's sequence only, and a
//! publish whose sequence the store already holds (appended before the crash, marker not saved yet)
//! is not appended again. Each append names the sequence it expects before it (`append_each` with
//! the expected last sequence), so a peer whose store disagrees stops with an error rather than
//! diverging.
//!
//! **The store's commit is lazy**: an apply does not wait for the fsync of the messages it stores
//! (one fsync less on every PubAck's path): the entry is already fsynced in the Raft log of a
//! quorum (openraft commits it only then), so the PubAck still follows a quorum's fsync. The
//! store's lazy commits become durable with its next durable commit (any other write, the idle
//! record, at least every 64th commit) and, before a snapshot is saved (which lets openraft
//! purge the log before it), with `Store::sync`: the log goes only once the store holds its
//! entries durably. A crash may lose the latest lazy commits (a suffix: redb's commits are
//! ordered) while the marker, saved after them, reached the disk: at start a marker ahead of the
//! store falls back to the last snapshot's marker (the store holds what it covers), and the
//! entries after it, still in the log, apply again (the store ahead of that marker, as above).
//!
//! **Snapshots** (see "Snapshots and log purge" in `hub/JETSTREAM-CLUSTER.md`): a snapshot is
//! the marker as saved after its messages were appended, durably saved under `snapshot`
//! (openraft then purges the log before it); its data, read from the store when a member needs
//! it, is the marker and the stream's messages up to its last sequence. Installing one
//! reconciles the copy with it (removes what the snapshot lacks, appends what follows the
//! copy's last sequence) and then saves the marker: a crash in between leaves a store ahead of
//! the old marker, holding the same history, from which openraft restarts and sends the
//! snapshot again. A stream over [`SNAPSHOT_MAX_BYTES`] keeps its log instead (openraft 0.9's
//! snapshot data is in memory).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use leaf_core::jetstream::config::{Discard, StreamConfig};
use leaf_proto::subject::subject_matches;
use leaf_store::{Appended, NewMessage, PurgeRequest, Store};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::durable::Durable;
use super::rollup::{check, roll_up, Rollup};
use super::store::RaftDb;
use super::types::{
    BatchReply, Limit, Member, OpReply, Refusal, StreamMsg, StreamOp, StreamReply, StreamTypes,
};

/// The Raft database key of the marker.
const MARKER: &str = "applied";

/// How many messages are read at a time while rebuilding the dedupe window.
const SCAN_CHUNK: u64 = 512;

/// The Raft database key of the last snapshot's marker (what `build_snapshot` covered).
const SNAPSHOT: &str = "snapshot";

/// A snapshot is not built (the log is kept instead) when the stream holds more bytes than
/// this: openraft 0.9's snapshot data is one in-memory buffer on the leader and on the member
/// installing it (see the module documentation).
pub const SNAPSHOT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// How many messages are read, or appended, at a time while a snapshot is built or installed.
const COPY_CHUNK: usize = 256;

/// One message of a snapshot's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ImageMsg {
    seq: u64,
    subject: String,
    headers: Option<Vec<u8>>,
    payload: Vec<u8>,
    ts_ns: i64,
}

/// A snapshot's data (postcard): the marker it covers and the stream's messages up to the
/// marker's last sequence, in sequence order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Image {
    marker: Marker,
    msgs: Vec<ImageMsg>,
}

fn snapshot_id(marker: &Marker) -> String {
    match &marker.applied {
        Some(id) => format!("{}-{}", id.leader_id.term, id.index),
        None => "empty".to_owned(),
    }
}

fn snapshot_meta(marker: &Marker) -> SnapshotMeta<u64, Member> {
    SnapshotMeta {
        last_log_id: marker.applied,
        last_membership: marker.membership.clone(),
        snapshot_id: snapshot_id(marker),
    }
}

fn sm_read(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::read_state_machine(e).into()
}

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
    /// The marker as last saved, after its entries' messages were appended (what a snapshot
    /// covers: every message up to its last sequence is in the store).
    saved: Marker,
    window: Window,
    /// The newest sequence the store holds (appended, possibly ahead of the marker).
    stored_last: u64,
    /// The `Nats-Msg-Id` of the message at the marker's sequence (`Nats-Expected-Last-Msg-Id`).
    last_msg_id: Option<String>,
    /// The stream's `discard: new` limits, if it has any.
    discard_new: Option<DiscardNew>,
}

/// The `discard: new` limits of a stream (`max_msgs`, `max_bytes`, and
/// `max_msgs_per_subject` with `discard_new_per_subject`): a publish past one is refused
/// (10077), decided in the apply against the copy's store, alike on every member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardNew {
    max_msgs: Option<u64>,
    max_bytes: Option<u64>,
    max_per_subject: Option<u64>,
    /// The store trims each subject to `max_msgs_per_subject` after an append (`discard:
    /// new` without `discard_new_per_subject`): the counts of messages not stored yet are not
    /// exact, so they are stored before each check.
    trims: bool,
}

impl DiscardNew {
    /// The limits of `cfg`, `None` without `discard: new` or without a limit.
    pub fn of(cfg: &StreamConfig) -> Option<DiscardNew> {
        let positive = |n: i64| u64::try_from(n).ok().filter(|&n| n > 0);
        if cfg.discard != Discard::New {
            return None;
        }
        let limits = DiscardNew {
            max_msgs: positive(cfg.max_msgs),
            max_bytes: positive(cfg.max_bytes),
            max_per_subject: positive(cfg.max_msgs_per_subject)
                .filter(|_| cfg.discard_new_per_subject),
            trims: positive(cfg.max_msgs_per_subject).is_some() && !cfg.discard_new_per_subject,
        };
        let any = limits.max_msgs.is_some()
            || limits.max_bytes.is_some()
            || limits.max_per_subject.is_some();
        any.then_some(limits)
    }

    /// The limit `e` would exceed in a stream holding `msgs` messages of `bytes` bytes,
    /// `same_subject` of them on `e`'s subject (a single server's order: bytes, per
    /// subject, messages).
    fn exceeded(&self, e: &StreamMsg, msgs: u64, bytes: u64, same_subject: u64) -> Option<Limit> {
        let size = leaf_store::msg_size(
            &e.subject,
            e.headers.as_ref().map_or(0, Vec::len),
            e.payload.len(),
        );
        if self.max_bytes.is_some_and(|max| bytes + size > max) {
            Some(Limit::Bytes)
        } else if self.max_per_subject.is_some_and(|max| same_subject >= max) {
            Some(Limit::PerSubject)
        } else if self.max_msgs.is_some_and(|max| msgs >= max) {
            Some(Limit::Msgs)
        } else {
            None
        }
    }
}

impl State {
    /// Decides what entry `e` becomes (see the module documentation): its reply, and the
    /// message to store when it is neither a duplicate nor refused by its `Nats-Expected-*`
    /// headers. `stream` is the stream's name; `subject_last(filter, bound)` is the last
    /// sequence of a message matching `filter` at or before `bound` (0 for none), as applied;
    /// `admit(e, seq)` the `discard: new` limit `e` would exceed as message `seq`, if any.
    fn decide<E>(
        &mut self,
        e: StreamMsg,
        window_ns: i64,
        stream: &str,
        subject_last: impl FnOnce(&str, u64) -> Result<u64, E>,
        admit: impl FnOnce(&StreamMsg, u64) -> Result<Option<Limit>, E>,
    ) -> Result<(StreamReply, Option<NewMessage>), E> {
        let ts = e.ts_ns.max(self.marker.last_ts);
        let header = |name: &str| {
            e.headers
                .as_deref()
                .and_then(|h| leaf_proto::headers::get_str(h, name))
        };
        let raw_id = header("Nats-Msg-Id").filter(|id| !id.is_empty());
        let msg_id = raw_id.filter(|_| window_ns > 0).map(str::to_owned);
        if window_ns > 0 {
            self.window.prune(ts.saturating_sub(window_ns));
        }
        if let Some((seq, _)) = msg_id.as_ref().and_then(|id| self.window.ids.get(id)) {
            let reply = StreamReply {
                seq: *seq,
                duplicate: true,
                refused: None,
            };
            return Ok((reply, None));
        }
        let refused = |r: Refusal| {
            let reply = StreamReply {
                refused: Some(r),
                ..StreamReply::default()
            };
            Ok((reply, None))
        };
        // The checks and their order are a single server's (see `leaf_core::jetstream`).
        if header("Nats-Expected-Stream").is_some_and(|s| !s.is_empty() && s != stream) {
            return refused(Refusal::StreamMismatch);
        }
        let last = self.marker.last_seq;
        if let Some(v) = header("Nats-Expected-Last-Sequence") {
            if v.parse::<u64>().ok() != Some(last) {
                return refused(Refusal::WrongLastSequence(last));
            }
        }
        if let Some(v) = header("Nats-Expected-Last-Msg-Id") {
            if self.last_msg_id.as_deref() != Some(v) {
                let id = self.last_msg_id.clone().unwrap_or_default();
                return refused(Refusal::WrongLastMsgId(id));
            }
        }
        if let Some(v) = header("Nats-Expected-Last-Subject-Sequence") {
            let filter = header("Nats-Expected-Last-Subject-Sequence-Subject")
                .filter(|f| !f.is_empty())
                .unwrap_or(&e.subject);
            let found = subject_last(filter, last)?;
            if v.parse::<u64>().ok() != Some(found) {
                return refused(Refusal::WrongLastSequence(found));
            }
        }
        if let Some(limit) = admit(&e, last + 1)? {
            return refused(Refusal::Discarded(limit));
        }
        let seq = last + 1;
        self.marker.last_seq = seq;
        self.marker.last_ts = ts;
        self.last_msg_id = raw_id.map(str::to_owned);
        if let Some(id) = msg_id {
            self.window.insert(id, seq, ts);
        }
        let msg = NewMessage {
            subject: e.subject,
            headers: e.headers.map(Bytes::from),
            payload: Bytes::from(e.payload),
            ts_ns: ts,
        };
        let reply = StreamReply {
            seq,
            duplicate: false,
            refused: None,
        };
        Ok((reply, Some(msg)))
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
    /// Whether the last snapshot was not built for the stream's size (logged once).
    too_big: Arc<AtomicBool>,
    /// With [`StreamMachine::after_durable`]: how far this member's Raft log is on disk.
    durable: Option<Durable>,
}

fn sm_write(e: impl Into<AnyError>) -> StorageError<u64> {
    StorageIOError::write_state_machine(e).into()
}

fn any(e: &(impl std::error::Error + 'static)) -> AnyError {
    AnyError::new(e)
}

/// Why a stream group's state machine could not be opened, or its snapshot read.
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
            // The store lost its last lazy commits (a crash: the applies do not wait for the
            // store's fsync) but holds what the last snapshot covers (synced before it was
            // saved): the entries after the snapshot are still in the log and apply again.
            if let Some(snap) = snapshot_marker(&db, group)?.filter(|m| m.last_seq <= stored_last) {
                info!(
                    stream,
                    group,
                    applied = marker.last_seq,
                    stored = stored_last,
                    snapshot = snap.last_seq,
                    "JetStream cluster: the stream lost its latest applies in a crash; applying \
                     the group's log again from its last snapshot"
                );
                marker = snap;
            }
        }
        if marker.last_seq > stored_last {
            // The store lost what the marker says was applied (a memory stream after a
            // restart): everything is applied again from the log; once the group's log was
            // purged the group's state was reset before (`copy_lost`) and the leader sends a
            // snapshot (see "Snapshots and log purge" in `hub/JETSTREAM-CLUSTER.md`).
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
        let last_msg_id = msg_id_at(&store, stream, marker.last_seq)?;
        Ok(StreamMachine {
            db,
            group: group.into(),
            store,
            stream: stream.into(),
            window_ns,
            state: Arc::new(Mutex::new(State {
                saved: marker.clone(),
                marker,
                window,
                stored_last,
                last_msg_id,
                discard_new: None,
            })),
            on_stored: None,
            too_big: Arc::new(AtomicBool::new(false)),
            durable: None,
        })
    }

    /// This machine, applying an entry only once this member's Raft log has it on disk
    /// (`durable`): the group's leader acknowledges its own appends before its fsync (see
    /// `LogStore::early_ack`), so what it applies, and the PubAcks it answers, wait for it
    /// here. On a follower the wait ends at once (it acknowledged the entry only once fsynced).
    pub fn after_durable(self, durable: Durable) -> StreamMachine {
        StreamMachine {
            durable: Some(durable),
            ..self
        }
    }

    /// This machine, telling `on_stored` of what each apply stores.
    pub fn on_stored(self, on_stored: OnStored) -> StreamMachine {
        StreamMachine {
            on_stored: Some(on_stored),
            ..self
        }
    }

    /// Sets the stream's `discard: new` limits ([`DiscardNew::of`] its configuration), for
    /// the publishes applied from now on.
    pub fn set_discard_new(&self, limits: Option<DiscardNew>) {
        self.lock().discard_new = limits;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether this member's copy of `stream` lost what group `group` applied to it (a memory
/// stream after a restart: the store behind the applied marker) while the group's log before
/// the marker was purged, so that the entries cannot be applied again: the group's state is
/// then reset so that the leader sends a snapshot (see `super::stream_group`).
pub fn copy_lost(db: &RaftDb, group: &str, store: &Store, stream: &str) -> Result<bool, OpenError> {
    let Some(bytes) = db.get_state(group, MARKER)? else {
        return Ok(false);
    };
    let marker: Marker = postcard::from_bytes(&bytes)?;
    let stored_last = store.stream_state(stream)?.map_or(0, |s| s.last_seq);
    if marker.last_seq <= stored_last {
        return Ok(false);
    }
    // Only the latest lazy applies lost (see `StreamMachine::open`): not the copy.
    if snapshot_marker(db, group)?.is_some_and(|m| m.last_seq <= stored_last) {
        return Ok(false);
    }
    Ok(db.get_state(group, "purged")?.is_some())
}

/// The Raft database key saying that group `group` adopted a store (see [`adopt`]) whose
/// snapshot is not built and log not purged yet.
const ADOPTED: &str = "adopted";

/// Makes group `group` (without Raft state yet) start from what a plain stream left in its
/// store: the stream's last sequence `last_seq` (and that message's time `last_ts`) saved as
/// the applied marker (no log entry applied, no membership), and the group marked as
/// *adopting* until [`adopted_done`]. The messages are then the copy's as if the group had
/// applied them: its first publish takes `last_seq + 1`, the dedupe window is rebuilt from
/// them, and a snapshot built after the group's start holds them (see
/// "R1 to R2-R5" in `hub/JETSTREAM-CLUSTER.md`). Durable (one commit).
pub async fn adopt(
    db: &RaftDb,
    group: &str,
    last_seq: u64,
    last_ts: i64,
) -> Result<(), redb::Error> {
    let marker = Marker {
        last_seq,
        last_ts,
        ..Marker::default()
    };
    let bytes = postcard::to_allocvec(&marker).unwrap_or_default();
    db.put_state(
        group,
        vec![(MARKER, Some(bytes)), (ADOPTED, Some(Vec::new()))],
    )
    .await
}

/// Whether group `group` adopted a store and has not built its first snapshot and purged
/// its log yet ([`adopt`]).
pub fn adopting(db: &RaftDb, group: &str) -> Result<bool, redb::Error> {
    Ok(db.get_state(group, ADOPTED)?.is_some())
}

/// Group `group`'s adoption ([`adopt`]) is done: its first snapshot is built and its log
/// purged up to it, so a member added later gets the adopted messages in a snapshot.
pub async fn adopted_done(db: &RaftDb, group: &str) -> Result<(), redb::Error> {
    db.put_state(group, vec![(ADOPTED, None)]).await
}

/// The marker of group `group`'s last snapshot built or installed, if any.
fn snapshot_marker(db: &RaftDb, group: &str) -> Result<Option<Marker>, OpenError> {
    match db.get_state(group, SNAPSHOT)? {
        Some(bytes) => Ok(Some(postcard::from_bytes(&bytes)?)),
        None => Ok(None),
    }
}

/// The `Nats-Msg-Id` of message `seq` of `stream`, if it is stored and has one.
fn msg_id_at(
    store: &Store,
    stream: &str,
    seq: u64,
) -> Result<Option<String>, leaf_store::StoreError> {
    Ok(store
        .get(stream, seq)?
        .and_then(|m| m.headers)
        .and_then(|h| leaf_proto::headers::get_str(&h, "Nats-Msg-Id").map(str::to_owned))
        .filter(|id| !id.is_empty()))
}

/// The sequence of the newest message of `stream` matching `filter` at or before `bound` (0
/// for none): the store's subject index, or, when the store is ahead of `bound` (entries
/// applied again after a crash), a backward scan from `bound`.
fn last_in_store(
    store: &Store,
    stream: &str,
    filter: &str,
    bound: u64,
) -> Result<u64, leaf_store::StoreError> {
    let newest = store.last_by_subject(stream, filter)?.map_or(0, |m| m.seq);
    if newest <= bound {
        return Ok(newest);
    }
    let first = store.stream_state(stream)?.map_or(0, |s| s.first_seq);
    let mut end = bound;
    while end > 0 && end >= first {
        let from = end.saturating_sub(SCAN_CHUNK - 1).max(1);
        let chunk = store.read_range(stream, from, SCAN_CHUNK as usize, u64::MAX)?;
        let found = chunk
            .iter()
            .filter(|m| m.seq <= end)
            .rev()
            .find(|m| subject_matches(filter.as_bytes(), m.subject.as_bytes()));
        if let Some(m) = found {
            return Ok(m.seq);
        }
        end = from - 1;
    }
    Ok(0)
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
    // An adopted store's marker has no applied entry but messages (see [`adopt`]).
    if window_ns <= 0 || (marker.applied.is_none() && marker.last_seq == 0) {
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

impl StreamMachine {
    /// The marker of the last snapshot built (or installed), from the Raft database.
    fn saved_snapshot(&self) -> Result<Option<Marker>, OpenError> {
        snapshot_marker(&self.db, &self.group)
    }

    /// A snapshot's data: `marker` and the stream's messages up to its last sequence (those
    /// the store still holds: limits may have removed older ones since).
    fn image(&self, marker: &Marker) -> Result<Vec<u8>, OpenError> {
        let mut msgs = Vec::new();
        self.scan(marker.last_seq.saturating_add(1), |m| {
            msgs.push(ImageMsg {
                seq: m.seq,
                subject: m.subject,
                headers: m.headers.map(|h| h.to_vec()),
                payload: m.payload.to_vec(),
                ts_ns: m.ts_ns,
            });
        })?;
        let image = Image {
            marker: marker.clone(),
            msgs,
        };
        Ok(postcard::to_allocvec(&image)?)
    }

    /// Calls `f` with each message the copy holds below sequence `below`, in order.
    fn scan(
        &self,
        below: u64,
        mut f: impl FnMut(leaf_store::StoredMessage),
    ) -> Result<(), leaf_store::StoreError> {
        let mut from = self
            .store
            .stream_state(&self.stream)?
            .map_or(1, |s| s.first_seq.max(1));
        while from < below {
            let chunk = self
                .store
                .read_range(&self.stream, from, COPY_CHUNK, u64::MAX)?;
            let Some(last) = chunk.last().map(|m| m.seq) else {
                break;
            };
            chunk.into_iter().filter(|m| m.seq < below).for_each(&mut f);
            from = last + 1;
        }
        Ok(())
    }

    /// Makes the copy's store hold what the snapshot `marker`/`msgs` (in sequence order)
    /// holds: removes the stored messages the snapshot lacks, appends those after the copy's
    /// last sequence (skipping the sequences the snapshot does not hold) and takes the
    /// sequences up to the marker's. Messages at or before the copy's last sequence that both
    /// hold are the same (every member stores the same history); the steps can be run again
    /// after a crash and come to the same store (see the module documentation).
    async fn copy_in(&self, marker: &Marker, msgs: Vec<ImageMsg>) -> Result<(), StorageError<u64>> {
        let write = |e: leaf_store::StoreError| sm_write(any(&e));
        let st = self
            .store
            .stream_state(&self.stream)
            .map_err(write)?
            .ok_or_else(|| sm_write(AnyError::error("the copy of the stream is missing")))?;
        let old_last = st.last_seq;
        if old_last > marker.last_seq {
            return Err(sm_write(AnyError::error(format!(
                "the copy of the stream holds sequence {old_last}, beyond the snapshot's last \
                 sequence {}",
                marker.last_seq
            ))));
        }
        let kept: HashSet<u64> = msgs
            .iter()
            .map(|m| m.seq)
            .take_while(|s| *s <= old_last)
            .collect();
        let mut gone = Vec::new();
        let mut from = st.first_seq.max(1);
        while st.msgs > 0 && from <= old_last {
            let chunk = self
                .store
                .read_range(&self.stream, from, COPY_CHUNK, u64::MAX)
                .map_err(write)?;
            let Some(last) = chunk.last().map(|m| m.seq) else {
                break;
            };
            gone.extend(
                chunk
                    .iter()
                    .map(|m| m.seq)
                    .filter(|s| *s <= old_last && !kept.contains(s)),
            );
            from = last + 1;
        }
        if !gone.is_empty() {
            self.store
                .remove_msgs(&self.stream, gone)
                .await
                .map_err(write)?;
        }
        let mut last = old_last;
        let mut run: Vec<(NewMessage, Option<u64>)> = Vec::new();
        for m in msgs.into_iter().filter(|m| m.seq > old_last) {
            if m.seq > last + 1 || run.len() >= COPY_CHUNK {
                self.append_run(&mut run).await?;
            }
            if m.seq > last + 1 {
                self.store
                    .skip_many(&self.stream, m.seq - last - 1, m.ts_ns)
                    .await
                    .map_err(write)?;
            }
            run.push((
                NewMessage {
                    subject: m.subject,
                    headers: m.headers.map(Bytes::from),
                    payload: Bytes::from(m.payload),
                    ts_ns: m.ts_ns,
                },
                Some(m.seq - 1),
            ));
            last = m.seq;
        }
        self.append_run(&mut run).await?;
        if marker.last_seq > last {
            self.store
                .skip_many(&self.stream, marker.last_seq - last, marker.last_ts)
                .await
                .map_err(write)?;
        }
        Ok(())
    }

    /// Appends `run` (each with its expected last sequence) and empties it.
    async fn append_run(
        &self,
        run: &mut Vec<(NewMessage, Option<u64>)>,
    ) -> Result<(), StorageError<u64>> {
        if run.is_empty() {
            return Ok(());
        }
        let outcomes = self
            .store
            .append_each(&self.stream, std::mem::take(run))
            .await
            .map_err(|e| sm_write(any(&e)))?;
        for outcome in outcomes {
            outcome.map_err(|e| sm_write(any(&e)))?;
        }
        Ok(())
    }
}

impl StreamMachine {
    /// Decides publish `e` against the applied state and the messages decided but not
    /// stored yet (`to_store`, where a stored one goes): its reply.
    fn apply_publish(
        &self,
        e: StreamMsg,
        to_store: &mut Vec<(NewMessage, Option<u64>)>,
    ) -> Result<StreamReply, leaf_store::StoreError> {
        let mut st = self.lock();
        let stored_last = st.stored_last;
        let limits = st.discard_new;
        let pending: &[(NewMessage, Option<u64>)] = to_store;
        let subject_last = |filter: &str, bound: u64| {
            let pending = pending
                .iter()
                .rev()
                .find(|(m, _)| subject_matches(filter.as_bytes(), m.subject.as_bytes()));
            match pending {
                Some((_, before)) => Ok(before.map_or(0, |b| b + 1)),
                None => last_in_store(&self.store, &self.stream, filter, bound),
            }
        };
        let admit = |e: &StreamMsg, seq: u64| match limits {
            None => Ok(None),
            Some(l) if seq <= stored_last => {
                // Applied again after a crash: the store holds what was decided then, and
                // a refused publish took no sequence.
                let held = self.store.get(&self.stream, seq)?.is_some_and(|m| {
                    m.subject == e.subject
                        && m.payload.as_ref() == e.payload.as_slice()
                        && m.headers.as_deref() == e.headers.as_deref()
                });
                // Which limit refused it is not known again; nobody waits for this reply.
                Ok((!held).then_some(l.max_msgs.map_or(Limit::Bytes, |_| Limit::Msgs)))
            }
            Some(l) => {
                let state = self.store.stream_state(&self.stream)?;
                let (mut msgs, mut bytes) = state.map_or((0, 0), |s| (s.msgs, s.bytes));
                let mut same = match l.max_per_subject {
                    Some(_) => self
                        .store
                        .subject_state(&self.stream, &e.subject)?
                        .map_or(0, |s| s.msgs),
                    None => 0,
                };
                for (m, _) in pending {
                    msgs += 1;
                    bytes += leaf_store::msg_size(
                        &m.subject,
                        m.headers.as_ref().map_or(0, |h| h.len()),
                        m.payload.len(),
                    );
                    same += u64::from(m.subject == e.subject);
                }
                Ok(l.exceeded(e, msgs, bytes, same))
            }
        };
        let (reply, msg) = st.decide(e, self.window_ns, &self.stream, subject_last, admit)?;
        drop(st);
        if let Some(msg) = msg {
            if reply.seq > stored_last {
                to_store.push((msg, Some(reply.seq - 1)));
            }
        }
        Ok(reply)
    }

    /// A publish the leader found no interest for (interest retention) was just decided as
    /// `reply`: if it was to be stored (a new sequence, not stored before a crash), its
    /// sequence is taken without storing it, after the messages decided before it.
    async fn skip_decided(
        &self,
        reply: &StreamReply,
        to_store: &mut Vec<(NewMessage, Option<u64>)>,
    ) -> Result<(), StorageError<u64>> {
        let decided_here = to_store
            .last()
            .is_some_and(|(_, before)| before.map(|b| b + 1) == Some(reply.seq));
        if !decided_here || reply.duplicate || reply.refused.is_some() {
            return Ok(());
        }
        let Some((msg, _)) = to_store.pop() else {
            return Ok(());
        };
        self.store_pending(to_store).await?;
        let skipped = self
            .store
            .skip(&self.stream, msg.ts_ns)
            .await
            .map_err(|e| sm_write(any(&e)))?;
        if skipped.seq != reply.seq {
            return Err(sm_write(AnyError::error(format!(
                "the store skipped sequence {} where {} was decided",
                skipped.seq, reply.seq
            ))));
        }
        let mut st = self.lock();
        st.stored_last = st.stored_last.max(reply.seq);
        Ok(())
    }

    /// The exclusive bound below which a purge `req` keeping the newest `keep` matching
    /// messages before its `up_to_seq` removes: the sequence of the `keep`-th newest one.
    fn keep_bound(&self, req: &PurgeRequest, keep: u64) -> Result<u64, leaf_store::StoreError> {
        let bound = req.up_to_seq.unwrap_or(u64::MAX);
        let filter = req.filter.as_deref().filter(|f| !f.is_empty());
        let mut seqs = Vec::new();
        self.scan(bound, |m| {
            if filter.is_none_or(|f| subject_matches(f.as_bytes(), m.subject.as_bytes())) {
                seqs.push(m.seq);
            }
        })?;
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        Ok(match seqs.len().checked_sub(keep) {
            Some(n) if n > 0 => seqs[n],
            _ => 0,
        })
    }

    /// Stores the decided messages `to_store` (one commit), applies their rollups, tells
    /// `on_stored`, and empties it.
    async fn store_pending(
        &self,
        to_store: &mut Vec<(NewMessage, Option<u64>)>,
    ) -> Result<(), StorageError<u64>> {
        let Some(last) = to_store
            .last()
            .and_then(|(_, before)| *before)
            .map(|b| b + 1)
        else {
            to_store.clear();
            return Ok(());
        };
        let to_store = std::mem::take(to_store);
        // Checked by the leader: a rollup header here reads.
        let kinds: Vec<_> = to_store
            .iter()
            .map(|(m, _)| (m.subject.clone(), check(m.headers.as_deref(), true)))
            .collect();
        // Lazy (no fsync awaited): the entries are fsynced in the Raft log of a quorum, and
        // the store is synced before a snapshot lets the log go (see the module doc).
        let outcomes = self
            .store
            .append_each_lazy(&self.stream, to_store)
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
        Ok(())
    }

    /// Applies `op` to the copy (after the earlier entries' messages were stored): bounded
    /// by the applied state's last sequence, so that applied again after a crash (the store
    /// holding messages of later entries) it removes only what it removed the first time.
    async fn apply_op(&self, op: StreamOp) -> Result<OpReply, StorageError<u64>> {
        let last = self.lock().marker.last_seq;
        let write = |e: leaf_store::StoreError| sm_write(any(&e));
        let reply = match op {
            StreamOp::Purge {
                filter,
                up_to_seq,
                keep,
            } => {
                let bound = last.saturating_add(1);
                let mut req = PurgeRequest {
                    filter,
                    up_to_seq: Some(up_to_seq.map_or(bound, |u| u.min(bound))),
                    keep,
                };
                let ahead = self.lock().stored_last > last;
                if let (Some(keep), true) = (req.keep, ahead) {
                    // The store's `keep` would count the later entries' messages: the
                    // newest `keep` matching ones up to the bound are found here.
                    req.up_to_seq = Some(self.keep_bound(&req, keep).map_err(write)?);
                    req.keep = None;
                }
                OpReply::Purged(self.store.purge(&self.stream, req).await.map_err(write)?)
            }
            StreamOp::Configure(limits) => {
                self.set_discard_new(limits);
                return Ok(OpReply::Configured);
            }
            StreamOp::Remove { mut seqs } => {
                // Bounded by the applied last sequence, as a delete (applied again after a
                // crash with the store ahead, it removes nothing a later entry stored).
                seqs.retain(|s| *s <= last);
                let removed = if seqs.is_empty() {
                    0
                } else {
                    self.store
                        .remove_msgs(&self.stream, seqs)
                        .await
                        .map_err(write)?
                };
                OpReply::Removed(removed)
            }
            StreamOp::Delete { seq } => {
                let found = seq <= last
                    && self
                        .store
                        .delete_msg(&self.stream, seq)
                        .await
                        .map_err(write)?;
                OpReply::Deleted(found)
            }
        };
        if let Some(on_stored) = &self.on_stored {
            on_stored(&[], true);
        }
        Ok(reply)
    }
}

impl RaftSnapshotBuilder<StreamTypes> for StreamMachine {
    /// Saves the marker as saved after the last apply as the group's snapshot (openraft then
    /// purges the log before it); its data is read from the store when a member needs it
    /// (`get_current_snapshot`). A stream over [`SNAPSHOT_MAX_BYTES`] keeps its last
    /// snapshot (and so its log): see the module documentation.
    async fn build_snapshot(&mut self) -> Result<Snapshot<StreamTypes>, StorageError<u64>> {
        let marker = self.lock().saved.clone();
        let bytes = self
            .store
            .stream_state(&self.stream)
            .map_err(|e| sm_read(any(&e)))?
            .map_or(0, |s| s.bytes);
        let marker = if bytes > SNAPSHOT_MAX_BYTES {
            if !self.too_big.swap(true, Ordering::Relaxed) {
                warn!(
                    stream = &*self.stream,
                    group = &*self.group,
                    bytes,
                    max = SNAPSHOT_MAX_BYTES,
                    "JetStream cluster: the stream is too large for a snapshot; its group \
                     keeps its Raft log instead"
                );
            }
            self.saved_snapshot()
                .map_err(|e| sm_read(any(&e)))?
                .unwrap_or_default()
        } else {
            self.too_big.store(false, Ordering::Relaxed);
            let record = postcard::to_allocvec(&marker).map_err(|e| sm_write(any(&e)))?;
            // The applies' lazy store commits durable first: the log before the snapshot may
            // be purged once it is saved, and the store is then their only copy here.
            self.store.sync().await.map_err(|e| sm_write(any(&e)))?;
            // Durable, with the marker itself: the lazily saved marker may still be queued
            // at the log writer (see `RaftDb::put_state_lazy`).
            self.db
                .put_state(
                    &self.group,
                    vec![(MARKER, Some(record.clone())), (SNAPSHOT, Some(record))],
                )
                .await
                .map_err(|e| sm_write(any(&e)))?;
            marker
        };
        Ok(Snapshot {
            meta: snapshot_meta(&marker),
            snapshot: Box::new(Cursor::new(Vec::new())),
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchReply>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<StreamTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<openraft::Entry<StreamTypes>> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&self.durable, entries.last()) {
            if !durable.reached(last.log_id.index).await {
                return Err(sm_write(AnyError::error(
                    "the Raft log writer stopped before the entry was on disk",
                )));
            }
        }
        let mut replies = Vec::new();
        let mut to_store: Vec<(NewMessage, Option<u64>)> = Vec::new();
        for entry in entries {
            self.lock().marker.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(BatchReply::default()),
                EntryPayload::Membership(m) => {
                    self.lock().marker.membership = StoredMembership::new(Some(entry.log_id), m);
                    replies.push(BatchReply::default());
                }
                EntryPayload::Normal(batch) => {
                    let mut batch_replies = Vec::with_capacity(batch.msgs.len());
                    for e in batch.msgs {
                        // Counts of messages not stored yet are not exact when the store
                        // trims subjects: stored first, so every member decides alike.
                        let trims = self.lock().discard_new.is_some_and(|l| l.trims);
                        if trims && !to_store.is_empty() {
                            self.store_pending(&mut to_store).await?;
                        }
                        let no_interest = e.no_interest;
                        let reply = self
                            .apply_publish(e, &mut to_store)
                            .map_err(|e| sm_write(any(&e)))?;
                        if no_interest {
                            self.skip_decided(&reply, &mut to_store).await?;
                        }
                        batch_replies.push(reply);
                    }
                    let op = match batch.op {
                        Some(op) => {
                            self.store_pending(&mut to_store).await?;
                            Some(self.apply_op(op).await?)
                        }
                        None => None,
                    };
                    replies.push(BatchReply {
                        replies: batch_replies,
                        op,
                    });
                }
            }
        }
        self.store_pending(&mut to_store).await?;
        let marker = self.lock().marker.clone();
        let bytes = postcard::to_allocvec(&marker).map_err(|e| sm_write(any(&e)))?;
        // Not fsynced, and handed to the group's log writer without waiting (it goes into
        // the next log commit): losing it to a crash only makes the entries after an older
        // marker apply again, which changes nothing (see the module documentation).
        self.db
            .put_state_lazy(&self.group, vec![(MARKER, bytes)])
            .await
            .map_err(|e| sm_write(any(&e)))?;
        self.lock().saved = marker;
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

    /// Makes the copy hold the snapshot's messages (`copy_in`), then saves its marker
    /// (durably, as the applied marker and as this member's snapshot).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let image: Image =
            postcard::from_bytes(snapshot.get_ref()).map_err(|e| sm_write(any(&e)))?;
        let mut marker = image.marker;
        // The meta is authoritative for what the snapshot covers.
        marker.applied = meta.last_log_id;
        marker.membership = meta.last_membership.clone();
        self.copy_in(&marker, image.msgs).await?;
        let bytes = postcard::to_allocvec(&marker).map_err(|e| sm_write(any(&e)))?;
        self.db
            .put_state(
                &self.group,
                vec![(MARKER, Some(bytes.clone())), (SNAPSHOT, Some(bytes))],
            )
            .await
            .map_err(|e| sm_write(any(&e)))?;
        let write = |e: leaf_store::StoreError| sm_write(any(&e));
        let state = self.store.stream_state(&self.stream).map_err(write)?;
        let stored_first = state.as_ref().map_or(0, |s| s.first_seq);
        let stored_last = state.as_ref().map_or(0, |s| s.last_seq);
        let window = rebuild_window(
            &self.store,
            &self.stream,
            &marker,
            self.window_ns,
            stored_first,
        )
        .map_err(write)?;
        let last_msg_id = msg_id_at(&self.store, &self.stream, marker.last_seq).map_err(write)?;
        let id = snapshot_id(&marker);
        let mut st = self.lock();
        let discard_new = st.discard_new;
        *st = State {
            saved: marker.clone(),
            marker,
            window,
            stored_last,
            last_msg_id,
            discard_new,
        };
        drop(st);
        if let Some(on_stored) = &self.on_stored {
            on_stored(&[], true);
        }
        info!(
            stream = &*self.stream,
            group = &*self.group,
            snapshot = %id,
            "JetStream cluster: installed a snapshot of the stream's group"
        );
        Ok(())
    }

    /// The last snapshot built or installed, its data read from the store now.
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<StreamTypes>>, StorageError<u64>> {
        let Some(marker) = self.saved_snapshot().map_err(|e| sm_read(any(&e)))? else {
            return Ok(None);
        };
        let data = self.image(&marker).map_err(|e| sm_read(any(&e)))?;
        Ok(Some(Snapshot {
            meta: snapshot_meta(&marker),
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use leaf_store::StoredMessage;
    use openraft::{CommittedLeaderId, Entry};

    use super::super::types::StreamBatch;
    use super::*;

    /// A store in a temporary directory with an empty stream `S`.
    async fn store_with_stream() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store"),
            leaf_store::StoreOptions::default(),
        )
        .unwrap();
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        (dir, store)
    }

    /// Log entry `index` holding the batch `msgs`.
    fn batch_entry(index: u64, msgs: Vec<StreamMsg>) -> Entry<StreamTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(StreamBatch { msgs, op: None }),
        }
    }

    /// Log entry `index` holding a batch of one publish.
    fn log_entry(index: u64, e: StreamMsg) -> Entry<StreamTypes> {
        batch_entry(index, vec![e])
    }

    /// The publishes' replies of applied entries, in order.
    fn flat(replies: Vec<BatchReply>) -> Vec<StreamReply> {
        replies.into_iter().flat_map(|r| r.replies).collect()
    }

    /// Entries applied again after a crash that lost the marker (the store has them, the
    /// marker does not) decide the same (sequences, duplicates) and are not stored twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_applied_again_are_not_stored_twice() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let window = 60_000_000_000;
        let entries: Vec<Entry<StreamTypes>> = [Some("a"), Some("b"), None, Some("a"), Some("c")]
            .into_iter()
            .enumerate()
            .map(|(i, id)| log_entry(i as u64 + 1, entry(id, 1_000 + i as i64)))
            .collect();
        let seqs = |replies: Vec<BatchReply>| -> Vec<(u64, bool)> {
            flat(replies).iter().map(|r| (r.seq, r.duplicate)).collect()
        };
        let expected = vec![(1, false), (2, false), (3, false), (1, true), (4, false)];
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        let first = m.apply(entries.clone()).await.unwrap();
        assert_eq!(seqs(first), expected);
        assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
        // Reopened with the marker: nothing to apply again.
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
        // The marker lost: everything applies again, alike, and nothing is stored twice.
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        assert_eq!(m.applied_state().await.unwrap().0, None);
        let again = m.apply(entries.clone()).await.unwrap();
        assert_eq!(seqs(again), expected);
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
        assert_eq!(seqs(next), [(2, true), (5, false)]);
        assert_eq!(store.stream_state("S").unwrap().unwrap().last_seq, 5);
    }

    /// A group adopting a store a plain stream wrote (`adopt`): its first publish takes the
    /// store's last sequence + 1, a msg id the store holds is a duplicate of its sequence, and
    /// the adoption is pending until `adopted_done`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_adopted_store_is_where_the_group_starts() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let window = 60_000_000_000;
        // The plain stream's messages (written here by another group's machine).
        let mut writer =
            StreamMachine::open(db.clone(), "S-plain", store.clone(), "S", window, 0).unwrap();
        let written: Vec<Entry<StreamTypes>> = ["a", "b", "c"]
            .into_iter()
            .enumerate()
            .map(|(i, id)| log_entry(i as u64 + 1, entry(Some(id), 1_000 + i as i64)))
            .collect();
        writer.apply(written).await.unwrap();
        assert!(!adopting(&db, "S-new").unwrap());
        adopt(&db, "S-new", 3, 1_002).await.unwrap();
        assert!(adopting(&db, "S-new").unwrap());
        let mut m =
            StreamMachine::open(db.clone(), "S-new", store.clone(), "S", window, 0).unwrap();
        assert_eq!(m.applied_state().await.unwrap().0, None);
        let replies = m
            .apply([
                log_entry(1, entry(Some("b"), 2_000)),
                log_entry(2, entry(Some("d"), 2_001)),
            ])
            .await
            .unwrap();
        let seqs: Vec<(u64, bool)> = flat(replies).iter().map(|r| (r.seq, r.duplicate)).collect();
        assert_eq!(seqs, [(2, true), (4, false)]);
        assert_eq!(store.stream_state("S").unwrap().unwrap().last_seq, 4);
        adopted_done(&db, "S-new").await.unwrap();
        assert!(!adopting(&db, "S-new").unwrap());
    }

    /// Publishes the leader found no interest for take their sequences without being stored,
    /// between stored ones of the same batch, alike when applied again after a lost marker;
    /// a duplicate of one is answered with its sequence.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_without_interest_take_a_sequence_and_are_not_stored() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let skip = |id: &str, ts: i64| StreamMsg {
            no_interest: true,
            ..entry(Some(id), ts)
        };
        let entries = vec![
            batch_entry(
                1,
                vec![entry(Some("a"), 1), skip("b", 2), entry(Some("c"), 3)],
            ),
            batch_entry(2, vec![skip("d", 4), skip("b", 5), entry(Some("e"), 6)]),
        ];
        let decided = |replies: Vec<BatchReply>| -> Vec<(u64, bool)> {
            flat(replies).iter().map(|r| (r.seq, r.duplicate)).collect()
        };
        let expected = vec![
            (1, false),
            (2, false),
            (3, false),
            (4, false),
            (2, true),
            (5, false),
        ];
        let mut m =
            StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 60_000_000_000, 0).unwrap();
        assert_eq!(decided(m.apply(entries.clone()).await.unwrap()), expected);
        let stored = |store: &Store| -> (u64, u64, Vec<u64>) {
            let (_, last, msgs, held) = contents(store);
            (last, msgs, held.iter().map(|m| m.seq).collect())
        };
        assert_eq!(stored(&store), (5, 3, vec![1, 3, 5]));
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m =
            StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 60_000_000_000, 0).unwrap();
        assert_eq!(decided(m.apply(entries).await.unwrap()), expected);
        assert_eq!(stored(&store), (5, 3, vec![1, 3, 5]));
    }

    /// What a copy holds: its counters and messages.
    fn contents(store: &Store) -> (u64, u64, u64, Vec<StoredMessage>) {
        let st = store.stream_state("S").unwrap().unwrap();
        let msgs = store.read_range("S", 1, 1000, u64::MAX).unwrap();
        (st.first_seq, st.last_seq, st.msgs, msgs)
    }

    /// A snapshot built after some applies (a message since removed from the leader's
    /// copy) installed on a fresh member and on members holding part of the history (one a
    /// message the leader no longer has): every copy then holds what the leader's does, and
    /// the next entries are decided alike everywhere (sequences, duplicates); a member
    /// reopened after the install starts from it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_installed_snapshot_gives_the_leaders_copy_and_decisions() {
        let window = 60_000_000_000;
        let ids = [Some("a"), Some("b"), None, Some("a"), Some("c")];
        let entries: Vec<Entry<StreamTypes>> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| log_entry(i as u64 + 1, entry(id, 1_000 + i as i64)))
            .collect();
        let (ldir, lstore) = store_with_stream().await;
        let ldb = RaftDb::open(ldir.path()).unwrap();
        let mut leader =
            StreamMachine::open(ldb.clone(), "S-x", lstore.clone(), "S", window, 0).unwrap();
        leader.apply(entries.clone()).await.unwrap();
        assert!(lstore.delete_msg("S", 3).await.unwrap());
        assert!(leader.get_current_snapshot().await.unwrap().is_none());
        let built = leader.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(5));
        let snap = leader.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta, built.meta);
        let next = vec![
            log_entry(6, entry(Some("b"), 2_000)),
            log_entry(7, entry(None, 2_001)),
            log_entry(8, entry(Some("c"), 2_002)),
            log_entry(9, entry(Some("d"), 2_003)),
        ];
        let decided = |replies: Vec<BatchReply>| -> Vec<(u64, bool)> {
            flat(replies).iter().map(|r| (r.seq, r.duplicate)).collect()
        };
        let expected = decided(leader.apply(next.clone()).await.unwrap());
        assert_eq!(expected, [(2, true), (5, false), (4, true), (6, false)]);
        let want = contents(&lstore);
        // Members holding nothing, the first two entries, the first three (message 3 too).
        for held in [0, 2, 3] {
            let (dir, store) = store_with_stream().await;
            let db = RaftDb::open(dir.path()).unwrap();
            let mut m =
                StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
            if held > 0 {
                m.apply(entries[..held].to_vec()).await.unwrap();
            }
            let data = snap.snapshot.get_ref().clone();
            let mut rx = m.begin_receiving_snapshot().await.unwrap();
            rx.get_mut().extend_from_slice(&data);
            m.install_snapshot(&snap.meta, rx).await.unwrap();
            assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
            // Reopened after the install: it starts from the snapshot.
            let mut m =
                StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
            assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(5));
            let own = m.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(own.meta, snap.meta);
            assert_eq!(decided(m.apply(next.clone()).await.unwrap()), expected);
            assert_eq!(contents(&store), want, "a member that held {held} entries");
        }
    }

    fn entry(id: Option<&str>, ts: i64) -> StreamMsg {
        StreamMsg {
            subject: "s".into(),
            headers: id.map(|id| format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n").into_bytes()),
            payload: b"x".to_vec(),
            ts_ns: ts,
            no_interest: false,
        }
    }

    /// `State::decide` without a store (no subject lookups).
    fn decide(st: &mut State, e: StreamMsg, w: i64) -> (StreamReply, Option<NewMessage>) {
        st.decide(
            e,
            w,
            "S",
            |_, _| Ok::<u64, std::convert::Infallible>(0),
            |_, _| Ok(None),
        )
        .unwrap()
    }

    fn with_headers(subject: &str, headers: &[(&str, &str)], ts: i64) -> StreamMsg {
        let mut block = String::from("NATS/1.0\r\n");
        for (k, v) in headers {
            block.push_str(&format!("{k}: {v}\r\n"));
        }
        block.push_str("\r\n");
        StreamMsg {
            subject: subject.into(),
            headers: Some(block.into_bytes()),
            payload: b"x".to_vec(),
            ts_ns: ts,
            no_interest: false,
        }
    }

    /// The `Nats-Expected-*` headers are checked against the applied state, within a batch
    /// too (the subject's last sequence of an entry not stored yet), and a refused entry
    /// takes no sequence; entries applied again after the marker was lost decide alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expectations_are_decided_by_the_applied_state() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let seq = "Nats-Expected-Last-Subject-Sequence";
        let msgs = [
            with_headers("k.a", &[(seq, "0"), ("Nats-Msg-Id", "m1")], 1),
            with_headers("k.a", &[(seq, "0")], 2),
            with_headers("k.b", &[(seq, "0"), ("Nats-Expected-Last-Msg-Id", "m1")], 3),
            with_headers("k.a", &[(seq, "1")], 4),
            with_headers("k.a", &[("Nats-Expected-Last-Sequence", "2")], 5),
            with_headers("k.a", &[("Nats-Expected-Last-Sequence", "3")], 6),
            with_headers("k.a", &[("Nats-Expected-Stream", "T")], 7),
            with_headers("k.c", &[("Nats-Expected-Last-Msg-Id", "m1")], 8),
            with_headers(
                "k.c",
                &[
                    (seq, "3"),
                    ("Nats-Expected-Last-Subject-Sequence-Subject", "k.*"),
                ],
                9,
            ),
        ];
        let entries: Vec<Entry<StreamTypes>> = msgs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, e)| log_entry(i as u64 + 1, e))
            .collect();
        let expected = vec![
            (1, None),
            (0, Some(Refusal::WrongLastSequence(1))),
            (2, None),
            (3, None),
            (0, Some(Refusal::WrongLastSequence(3))),
            (4, None),
            (0, Some(Refusal::StreamMismatch)),
            (0, Some(Refusal::WrongLastMsgId(String::new()))),
            (0, Some(Refusal::WrongLastSequence(4))),
        ];
        let outcome = |replies: Vec<BatchReply>| -> Vec<(u64, Option<Refusal>)> {
            flat(replies)
                .into_iter()
                .map(|r| (r.seq, r.refused))
                .collect()
        };
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 1_000, 0).unwrap();
        assert_eq!(outcome(m.apply(entries.clone()).await.unwrap()), expected);
        assert_eq!(store.stream_state("S").unwrap().unwrap().last_seq, 4);
        // Applied again, one by one, with the marker lost (the store ahead of the marker).
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 1_000, 0).unwrap();
        let mut again = Vec::new();
        for e in entries.iter().cloned() {
            again.extend(outcome(m.apply([e]).await.unwrap()));
        }
        assert_eq!(again, expected);
        assert_eq!(store.stream_state("S").unwrap().unwrap().msgs, 4);
        // The same publishes as one batch (one log entry) in a fresh stream decide alike:
        // each against the state the earlier ones of the batch left, also applied again.
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let one = vec![batch_entry(1, msgs.to_vec())];
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 1_000, 0).unwrap();
        assert_eq!(outcome(m.apply(one.clone()).await.unwrap()), expected);
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 1_000, 0).unwrap();
        assert_eq!(outcome(m.apply(one).await.unwrap()), expected);
        let state = store.stream_state("S").unwrap().unwrap();
        assert_eq!((state.msgs, state.last_seq), (4, 4));
    }

    /// A batch (one log entry) is decided publish by publish, in order: an id twice in one
    /// batch is a duplicate of the first, times never go back within the batch, the next
    /// batch sees the earlier one's ids; the entry's reply has one reply per publish, a blank
    /// entry none; applied again after the marker was lost, the same and nothing stored twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_decided_publish_by_publish() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let window = 60_000_000_000;
        let entries = vec![
            batch_entry(
                1,
                vec![
                    entry(Some("a"), 1_000),
                    entry(Some("b"), 1_001),
                    entry(Some("a"), 1_002),
                    entry(None, 900),
                    entry(Some("b"), 1_003),
                    entry(Some("c"), 1_004),
                ],
            ),
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
                payload: EntryPayload::Blank,
            },
            batch_entry(3, vec![entry(Some("c"), 1_005), entry(Some("d"), 1_006)]),
        ];
        let shape = |replies: Vec<BatchReply>| -> Vec<Vec<(u64, bool)>> {
            replies
                .into_iter()
                .map(|b| b.replies.iter().map(|r| (r.seq, r.duplicate)).collect())
                .collect()
        };
        let expected = vec![
            vec![
                (1, false),
                (2, false),
                (1, true),
                (3, false),
                (2, true),
                (4, false),
            ],
            vec![],
            vec![(4, true), (5, false)],
        ];
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        assert_eq!(shape(m.apply(entries.clone()).await.unwrap()), expected);
        let times: Vec<i64> = store
            .read_range("S", 1, 10, u64::MAX)
            .unwrap()
            .iter()
            .map(|m| m.ts_ns)
            .collect();
        assert_eq!(times, [1_000, 1_001, 1_001, 1_004, 1_006]);
        // The marker lost: applied again alike, nothing stored twice.
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", window, 0).unwrap();
        assert_eq!(shape(m.apply(entries).await.unwrap()), expected);
        let state = store.stream_state("S").unwrap().unwrap();
        assert_eq!((state.msgs, state.last_seq), (5, 5));
    }

    /// Sequences follow apply order; a msg-id seen within the window (entry times) is a
    /// duplicate of its first sequence, after the window it is stored again; times never go
    /// back.
    #[test]
    fn entries_get_sequences_and_duplicates_deterministically() {
        let mut st = State::default();
        let w = 100;
        let (r, m) = decide(&mut st, entry(Some("a"), 1000), w);
        assert_eq!((r.seq, r.duplicate), (1, false));
        assert!(m.is_some());
        let (r, m) = decide(&mut st, entry(None, 1010), w);
        assert_eq!((r.seq, r.duplicate), (2, false));
        assert!(m.is_some());
        let (r, m) = decide(&mut st, entry(Some("a"), 1050), w);
        assert_eq!((r.seq, r.duplicate), (1, true));
        assert!(m.is_none());
        // A leader with a slower clock: stored at the previous time.
        let (r, m) = decide(&mut st, entry(Some("b"), 900), w);
        assert_eq!(r.seq, 3);
        assert_eq!(m.map(|m| m.ts_ns), Some(1010));
        let (r, _) = decide(&mut st, entry(Some("a"), 1200), w);
        assert_eq!((r.seq, r.duplicate), (4, false));
    }

    /// A stream created with `first_seq` 10 (its copy has sequences 1-9 taken): the first
    /// entry gets sequence 10.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_entry_gets_the_streams_first_sequence() {
        let (dir, store) = store_with_stream().await;
        store.skip_many("S", 9, 0).await.unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        let mut m = StreamMachine::open(db, "S-x", store.clone(), "S", 1_000, 10).unwrap();
        let replies = flat(m.apply([log_entry(1, entry(Some("a"), 5))]).await.unwrap());
        assert_eq!(replies[0].seq, 10);
        assert_eq!(store.stream_state("S").unwrap().unwrap().msgs, 1);
    }
    /// Log entry `index` holding `op` alone.
    fn op_entry(index: u64, op: StreamOp) -> Entry<StreamTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(StreamBatch {
                msgs: Vec::new(),
                op: Some(op),
            }),
        }
    }

    fn on(subject: &str, ts: i64) -> StreamMsg {
        StreamMsg {
            subject: subject.into(),
            headers: None,
            payload: b"x".to_vec(),
            ts_ns: ts,
            no_interest: false,
        }
    }

    /// `discard: new` refuses the publishes past `max_msgs` or per subject (10077's
    /// limits), within one batch too; applied again after the marker was lost, one entry at
    /// a time, the same decisions and nothing stored twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discard_new_is_decided_alike() {
        let cfg = |json: &str| {
            let cfg: StreamConfig = serde_json::from_str(json).unwrap();
            DiscardNew::of(&cfg)
        };
        assert_eq!(cfg(r#"{"name":"S","max_msgs":3}"#), None);
        assert_eq!(cfg(r#"{"name":"S","discard":"new"}"#), None);
        let per_subject = cfg(
            r#"{"name":"S","discard":"new","max_msgs":4,"max_msgs_per_subject":2,
                "discard_new_per_subject":true}"#,
        );
        assert!(per_subject.is_some());
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let msgs = vec![
            on("a", 1),
            on("a", 2),
            on("a", 3),
            on("b", 4),
            on("c", 5),
            on("d", 6),
        ];
        let expected = vec![
            (1, None),
            (2, None),
            (0, Some(Refusal::Discarded(Limit::PerSubject))),
            (3, None),
            (4, None),
            (0, Some(Refusal::Discarded(Limit::Msgs))),
        ];
        let outcome = |replies: Vec<BatchReply>| -> Vec<(u64, Option<Refusal>)> {
            flat(replies)
                .into_iter()
                .map(|r| (r.seq, r.refused))
                .collect()
        };
        let m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 0, 0).unwrap();
        m.set_discard_new(per_subject);
        let mut m1 = m.clone();
        let one = vec![batch_entry(1, msgs.clone())];
        assert_eq!(outcome(m1.apply(one).await.unwrap()), expected);
        assert_eq!(store.stream_state("S").unwrap().unwrap().msgs, 4);
        // Applied again entry by entry (the store ahead of a lost marker): alike.
        let entries: Vec<_> = msgs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, e)| log_entry(i as u64 + 1, e))
            .collect();
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 0, 0).unwrap();
        m.set_discard_new(per_subject);
        let mut again = Vec::new();
        for e in entries {
            again.extend(outcome(m.apply([e]).await.unwrap()));
        }
        // Which limit is not known again (nobody waits for these replies): refused alike.
        let refused = |v: &[(u64, Option<Refusal>)]| -> Vec<(u64, bool)> {
            v.iter().map(|(s, r)| (*s, r.is_some())).collect()
        };
        assert_eq!(refused(&again), refused(&expected));
        let state = store.stream_state("S").unwrap().unwrap();
        assert_eq!((state.msgs, state.last_seq), (4, 4));
        // max_bytes: the next message would pass it.
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let size = leaf_store::msg_size("a", 0, 1);
        let bytes = cfg(&format!(
            r#"{{"name":"S","discard":"new","max_bytes":{}}}"#,
            2 * size
        ));
        let mut m = StreamMachine::open(db, "S-x", store, "S", 0, 0).unwrap();
        m.set_discard_new(bytes);
        let replies = m
            .apply([batch_entry(1, vec![on("a", 1), on("a", 2), on("a", 3)])])
            .await
            .unwrap();
        assert_eq!(
            outcome(replies),
            vec![
                (1, None),
                (2, None),
                (0, Some(Refusal::Discarded(Limit::Bytes)))
            ]
        );
    }

    /// The store lost its latest lazy applies in a crash (the marker, saved after them, did
    /// not): the machine restarts from the last snapshot's marker, which the store holds,
    /// the copy does not count as lost though the log was purged, and the lost entry applies
    /// again alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latest_lazy_applies_lost_apply_again_from_the_snapshot() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 0, 0).unwrap();
        m.apply([batch_entry(1, vec![on("a", 1), on("b", 2)])])
            .await
            .unwrap();
        m.build_snapshot().await.unwrap();
        let third = flat(m.apply([batch_entry(2, vec![on("c", 3)])]).await.unwrap());
        assert_eq!(third[0].seq, 3);
        // What a crash leaves: the store without the last (lazy) commit, the marker with it.
        let crashed = Store::open_memory(leaf_store::StoreOptions::default()).unwrap();
        crashed.create_stream("S", b"{}".to_vec()).await.unwrap();
        for seq in 1..=2 {
            let kept = store.get("S", seq).unwrap().unwrap();
            let msg = NewMessage {
                subject: kept.subject,
                headers: kept.headers,
                payload: kept.payload,
                ts_ns: kept.ts_ns,
            };
            crashed.append("S", msg).await.unwrap();
        }
        db.put_state("S-x", vec![("purged", Some(vec![0]))])
            .await
            .unwrap();
        assert!(!copy_lost(&db, "S-x", &crashed, "S").unwrap());
        let mut m = StreamMachine::open(db.clone(), "S-x", crashed.clone(), "S", 0, 0).unwrap();
        assert_eq!(m.applied_state().await.unwrap().0.map(|l| l.index), Some(1));
        let again = flat(m.apply([batch_entry(2, vec![on("c", 3)])]).await.unwrap());
        assert_eq!((again[0].seq, again[0].duplicate), (3, false));
        assert_eq!(contents(&crashed), contents(&store));
        // Without a snapshot the store were lost for good once the log was purged.
        db.put_state("S-x", vec![(SNAPSHOT, None)]).await.unwrap();
        let empty = Store::open_memory(leaf_store::StoreOptions::default()).unwrap();
        empty.create_stream("S", b"{}".to_vec()).await.unwrap();
        assert!(copy_lost(&db, "S-x", &empty, "S").unwrap());
    }

    /// A purge and a message delete are applied after the publishes before them, bounded by
    /// the applied state: applied again after a crash (the store holding later messages)
    /// they remove nothing of what followed them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purges_and_deletes_apply_in_log_order() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        let entries = vec![
            batch_entry(1, vec![on("a", 1), on("b", 2), on("a", 3), on("b", 4)]),
            op_entry(2, StreamOp::Delete { seq: 2 }),
            op_entry(
                3,
                StreamOp::Purge {
                    filter: Some("a".into()),
                    up_to_seq: None,
                    keep: None,
                },
            ),
            batch_entry(4, vec![on("a", 5), on("c", 6)]),
            op_entry(5, StreamOp::Delete { seq: 9 }),
            op_entry(
                6,
                StreamOp::Purge {
                    filter: None,
                    up_to_seq: None,
                    keep: Some(1),
                },
            ),
            batch_entry(7, vec![on("d", 7)]),
        ];
        let ops = |replies: Vec<BatchReply>| -> Vec<Option<OpReply>> {
            replies.into_iter().map(|r| r.op).collect()
        };
        let expected = vec![
            None,
            Some(OpReply::Deleted(true)),
            Some(OpReply::Purged(2)),
            None,
            Some(OpReply::Deleted(false)),
            Some(OpReply::Purged(2)),
            None,
        ];
        let seqs = |store: &Store| super::super::rollup::stored_seqs(store, "S");
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 0, 0).unwrap();
        assert_eq!(ops(m.apply(entries.clone()).await.unwrap()), expected);
        assert_eq!(seqs(&store), [6, 7]);
        // The marker lost: applied again, one entry at a time; the same copy.
        db.put_state("S-x", vec![(MARKER, None)]).await.unwrap();
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 0, 0).unwrap();
        for e in entries {
            m.apply([e]).await.unwrap();
        }
        assert_eq!(seqs(&store), [6, 7]);
        assert_eq!(store.stream_state("S").unwrap().unwrap().last_seq, 7);
    }
    /// A copy behind its applied marker is lost only once the log is purged (else the
    /// entries apply again); a reset forgets everything of the group but its vote and keeps
    /// the floor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_copy_is_detected_and_its_group_reset() {
        let (dir, store) = store_with_stream().await;
        let db = RaftDb::open(dir.path()).unwrap();
        assert!(!copy_lost(&db, "S-x", &store, "S").unwrap());
        let mut m = StreamMachine::open(db.clone(), "S-x", store.clone(), "S", 0, 0).unwrap();
        m.apply([batch_entry(1, vec![on("a", 1), on("b", 2)])])
            .await
            .unwrap();
        assert!(!copy_lost(&db, "S-x", &store, "S").unwrap());
        // The copy lost (a memory store after a restart).
        let empty = Store::open_memory(leaf_store::StoreOptions::default()).unwrap();
        empty.create_stream("S", b"{}".to_vec()).await.unwrap();
        assert!(
            !copy_lost(&db, "S-x", &empty, "S").unwrap(),
            "the log is whole"
        );
        db.put_state(
            "S-x",
            vec![("purged", Some(vec![0])), ("vote", Some(vec![7]))],
        )
        .await
        .unwrap();
        assert!(copy_lost(&db, "S-x", &empty, "S").unwrap());
        db.reset_group("S-x", vec![1, 2]).await.unwrap();
        assert!(!copy_lost(&db, "S-x", &empty, "S").unwrap());
        assert_eq!(db.get_state("S-x", MARKER).unwrap(), None);
        assert_eq!(db.get_state("S-x", "purged").unwrap(), None);
        assert_eq!(db.get_state("S-x", "vote").unwrap(), Some(vec![7]));
        assert_eq!(
            db.get_state("S-x", super::super::store::RESET_FLOOR)
                .unwrap(),
            Some(vec![1, 2])
        );
    }
}
