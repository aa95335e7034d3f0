//! The Raft state of a node's groups on redb: one file (`raft.redb` in the JetStream store
//! directory) for every group, tables keyed by the group's name.
//!
//! * [`LogStore`]: openraft's log storage of one group: entries, vote, committed index, the
//!   last purged log id. Every write is a redb commit with `Durability::Immediate` (one fsync)
//!   made before openraft is told it is done: an append is acknowledged (its `LogFlushed`
//!   callback) only once it is on disk. Appends and removals go through the group's **log
//!   writer** (a task per group, in the order openraft made them): `append` returns as soon
//!   as the entries are handed over (and readable: the reader sees them on top of the file),
//!   and appends queued meanwhile share one commit (group commit). openraft 0.9's core waits
//!   for the callback before it replicates, so a stream group's log store acknowledges the
//!   entries its member appends as leader at once ([`LogStore::early_ack`]) and the group
//!   waits for the log's durable end ([`Durable`]) where it matters. The one exception to the
//!   fsync is the committed log id (`save_committed`): see [`LogStore::save_committed`].
//!   Writes run on tokio's blocking pool, never on a worker thread.
//! * [`SnapshotSlot`]: the group's last snapshot (its meta and bytes), kept in the same file,
//!   for state machines that live in memory (the meta group's: see `super::machine`).
//!
//! A process killed at any point leaves the file at its last commit: whatever was
//! acknowledged is there at the next start (redb's commits are atomic).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, LeaderId, LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::durable::Durable;

/// Entries: (group, index) → postcard of the entry.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("raft_log");
/// Per group values: (group, key) → postcard of the value.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("raft_state");
/// Small records of this member beside the Raft state: (kind, key) → value (the R1 streams
/// this member holds for their assignment: `super::r1_held`).
const SIDE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("side");

/// Every value a group may have in [`STATE`] (what [`RaftDb::remove_group`] removes).
const GROUP_KEYS: &[&str] = &[
    "vote",
    "committed",
    "purged",
    "snapshot",
    "snapshot_meta",
    "applied",
    RESET_FLOOR,
];

/// The key of the last log id a member had when its group's state was reset
/// ([`RaftDb::reset_group`]): it refuses its vote to candidates behind it until it applied it.
pub const RESET_FLOOR: &str = "reset_floor";

/// A side record (see [`SIDE`]): its key and value.
pub type SideRecord = (Vec<u8>, Vec<u8>);

/// The file's name in the store directory.
pub const FILE_NAME: &str = "raft.redb";

/// Why the Raft database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// redb refused the file.
    #[error("{path}: cannot open the Raft state: {source}")]
    Open {
        /// The file.
        path: String,
        /// redb's error.
        source: redb::DatabaseError,
    },
    /// The tables could not be created.
    #[error("{path}: cannot create the Raft tables: {source}")]
    Tables {
        /// The file.
        path: String,
        /// redb's error.
        source: redb::Error,
    },
}

/// The Raft database of a node (one for all its groups), and the log writers of the groups
/// running on it (one per group: see [`RaftDb::log`]).
#[derive(Clone)]
pub struct RaftDb(Arc<Database>, Arc<Mutex<HashMap<Arc<str>, Weak<Writes>>>>);

impl RaftDb {
    /// Opens (or creates) `dir/raft.redb`.
    pub fn open(dir: &Path) -> Result<RaftDb, OpenError> {
        let path = dir.join(FILE_NAME);
        let name = path.display().to_string();
        let db = Database::create(&path).map_err(|source| OpenError::Open {
            path: name.clone(),
            source,
        })?;
        let tables = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?;
            txn.open_table(STATE)?;
            txn.open_table(SIDE)?;
            txn.commit()?;
            Ok(())
        };
        tables().map_err(|source| OpenError::Tables { path: name, source })?;
        Ok(RaftDb(Arc::new(db), Arc::default()))
    }

    /// The log storage of group `group`. Every log storage of a group shares its one log
    /// writer while any of them lives (a group stopped and started again keeps the order of
    /// its writes); the writer ends once the last is dropped and its queue is done.
    pub fn log<C: RaftTypeConfig>(&self, group: &str) -> LogStore<C> {
        let group: Arc<str> = group.into();
        let mut writers = self.1.lock().unwrap_or_else(PoisonError::into_inner);
        writers.retain(|_, w| w.strong_count() > 0);
        let writes = match writers.get(&group).and_then(Weak::upgrade) {
            Some(writes) => writes,
            None => {
                let writes = Writes::start(self.0.clone(), group.clone());
                writers.insert(group.clone(), Arc::downgrade(&writes));
                writes
            }
        };
        LogStore {
            db: self.clone(),
            group,
            writes,
            own: None,
            leading: None,
        }
    }

    /// Reads the value `key` of `group`.
    pub(super) fn get_state(&self, group: &str, key: &str) -> Result<Option<Vec<u8>>, redb::Error> {
        let txn = self.0.begin_read()?;
        let table = txn.open_table(STATE)?;
        Ok(table.get((group, key))?.map(|v| v.value().to_vec()))
    }

    /// Writes (or with `None`, removes) values of `group` in one durable commit, on the
    /// blocking pool.
    pub(super) async fn put_state(
        &self,
        group: &str,
        values: Vec<(&'static str, Option<Vec<u8>>)>,
    ) -> Result<(), redb::Error> {
        let group = group.to_owned();
        durable(self.0.clone(), move |txn| {
            let mut table = txn.open_table(STATE)?;
            for (key, value) in &values {
                match value {
                    Some(v) => {
                        table.insert((group.as_str(), *key), v.as_slice())?;
                    }
                    None => {
                        table.remove((group.as_str(), *key))?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Writes values of `group` in a commit that is not fsynced (`Durability::None`): it
    /// reaches the disk with the next durable commit of the file, and a crash before that
    /// loses it (for values that may be lost: a stream group's apply marker, see
    /// `super::stream_machine`, and the committed log id, see [`LogStore::save_committed`]).
    ///
    /// While the group's log writer runs (its Raft is up), the values are handed to it and
    /// this returns at once: the writer puts them into its next commit, the next append's
    /// (durable) or, with no append queued, a commit of their own (not durable). They then
    /// never wait for an fsync of the log (redb has one writer at a time), and the caller
    /// (openraft's core for the committed id, the state machine for its marker) goes on
    /// meanwhile. A reader may not see them at once; nothing reads them while the group
    /// runs (they are read when it starts).
    pub(super) async fn put_state_lazy(
        &self,
        group: &str,
        values: Vec<(&'static str, Vec<u8>)>,
    ) -> Result<(), redb::Error> {
        let values = match self.live_writer(group) {
            Some(writes) => {
                let epoch = writes.epoch.load(Ordering::Acquire);
                match writes.queue.send(Write::Lazy { values, epoch }) {
                    Ok(()) => return Ok(()),
                    Err(refused) => match refused.0 {
                        Write::Lazy { values, .. } => values,
                        _ => return Ok(()),
                    },
                }
            }
            None => values,
        };
        let group = group.to_owned();
        let db = self.0.clone();
        blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(redb::Durability::None).map_err(|e| {
                redb::Error::from(redb::StorageError::from(std::io::Error::other(e)))
            })?;
            {
                let mut table = txn.open_table(STATE)?;
                for (key, value) in &values {
                    table.insert((group.as_str(), *key), value.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// The log writer of `group`, if one runs.
    fn live_writer(&self, group: &str) -> Option<Arc<Writes>> {
        self.1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .and_then(Weak::upgrade)
    }

    /// Removes everything of `group` (its log entries and values) in one durable commit: a
    /// replicated stream's group once the stream is deleted.
    pub async fn remove_group(&self, group: &str) -> Result<(), redb::Error> {
        self.clear_group(group, None).await
    }

    /// Removes `group`'s log entries and values, but its vote and the `floor` saved in its
    /// place when there is one, in one durable commit.
    async fn clear_group(&self, group: &str, floor: Option<Vec<u8>>) -> Result<(), redb::Error> {
        // Entries of a live log writer not committed yet are forgotten too (a group is
        // cleared when it does not run: normally there are none).
        // Values handed to it and not written yet are dropped by it (the epoch moves on
        // before this commit begins; the writer compares inside its own transaction).
        if let Some(writes) = self.live_writer(group) {
            writes.pending().clear();
            writes.epoch.fetch_add(1, Ordering::AcqRel);
            writes.durable.cut(0);
        }
        let group = group.to_owned();
        durable(self.0.clone(), move |txn| {
            let g: &str = &group;
            txn.open_table(LOG)?
                .retain_in((g, 0)..=(g, u64::MAX), |_, _| false)?;
            let mut state = txn.open_table(STATE)?;
            let keep_vote = floor.is_some();
            for key in GROUP_KEYS.iter().filter(|k| !(keep_vote && **k == "vote")) {
                state.remove((g, *key))?;
            }
            if let Some(floor) = &floor {
                state.insert((g, RESET_FLOOR), floor.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Forgets `group`'s log, commit, snapshot and applied marker, keeping its vote, and saves
    /// `floor` (postcard of the last log id it had) under [`RESET_FLOOR`], in one durable
    /// commit: a member whose copy of a memory stream was lost then gets a snapshot from the
    /// leader (see "Snapshots and log purge" in `hub/JETSTREAM-CLUSTER.md`).
    pub async fn reset_group(&self, group: &str, floor: Vec<u8>) -> Result<(), redb::Error> {
        self.clear_group(group, Some(floor)).await
    }

    /// The side records of `kind` (see [`SIDE`]): key and value.
    pub(super) fn side(&self, kind: &str) -> Result<Vec<SideRecord>, redb::Error> {
        let txn = self.0.begin_read()?;
        let table = txn.open_table(SIDE)?;
        let mut out = Vec::new();
        for row in table.range((kind, &[][..])..)? {
            let (k, v) = row?;
            let (k_kind, key) = k.value();
            if k_kind != kind {
                break;
            }
            out.push((key.to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes (or with `None`, removes) side records of `kind` in one durable commit, on the
    /// blocking pool.
    pub(super) async fn put_side(
        &self,
        kind: &'static str,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), redb::Error> {
        durable(self.0.clone(), move |txn| {
            let mut table = txn.open_table(SIDE)?;
            for (key, value) in &records {
                match value {
                    Some(v) => {
                        table.insert((kind, key.as_slice()), v.as_slice())?;
                    }
                    None => {
                        table.remove((kind, key.as_slice()))?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// The snapshot slot of `group`.
    pub fn snapshots(&self, group: &str) -> SnapshotSlot {
        SnapshotSlot {
            db: self.clone(),
            group: group.into(),
        }
    }
}

/// Runs `f` on tokio's blocking pool (a redb commit waits for fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, redb::Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(redb::Error::from(redb::StorageError::from(
            std::io::Error::other(e.to_string()),
        ))),
    }
}

/// Runs `write` in one redb write transaction committed with `Durability::Immediate` (one
/// fsync), on tokio's blocking pool: every write of the Raft state goes through here.
async fn durable(
    db: Arc<Database>,
    write: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
) -> Result<(), redb::Error> {
    blocking(move || {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| redb::Error::from(redb::StorageError::from(std::io::Error::other(e))))?;
        write(&txn)?;
        txn.commit()?;
        Ok(())
    })
    .await
}

/// The log writer of one group: a task committing the group's appends and removals in the
/// order they were handed over, the appends queued together in one commit.
pub struct Writes {
    /// Entries handed over and not committed yet (index → encoded entry): the log reader
    /// sees them on top of the file.
    pending: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
    /// The writer's queue. Unbounded: what fills it is bounded upstream (a stream group's
    /// proposals, eight batches unapplied; a follower's appends, one replication request at a
    /// time from its leader; the meta group's few commands).
    queue: mpsc::UnboundedSender<Write>,
    /// Moves on when the group's state is cleared ([`RaftDb::remove_group`],
    /// [`RaftDb::reset_group`]): lazy values handed over before are not written.
    epoch: Arc<AtomicU64>,
    /// How far the log is on disk (moved on by the writer after each durable commit).
    durable: Durable,
}

/// One write of a group's log.
enum Write {
    /// Entries to append (the last one's log id when it is a `LogId<u64>`); `done` is told
    /// once they are fsynced (or why not).
    Append {
        rows: Vec<(u64, Vec<u8>)>,
        last: Option<LogId<u64>>,
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    },
    /// Entries `start..=end` to remove (with the purged log id to record, for a purge);
    /// answered once fsynced.
    Remove {
        start: u64,
        end: u64,
        purged: Option<Vec<u8>>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Values of the group's state to write without an fsync of their own (see
    /// [`RaftDb::put_state_lazy`]), if the group was not cleared since `epoch`.
    Lazy {
        values: Vec<(&'static str, Vec<u8>)>,
        epoch: u64,
    },
}

impl Writes {
    /// Starts the log writer of `group`.
    fn start(db: Arc<Database>, group: Arc<str>) -> Arc<Writes> {
        let (queue, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let epoch = Arc::new(AtomicU64::new(0));
        // What the file holds is durable. A read error leaves it at none: a state machine
        // waiting on it then waits for the next durable append.
        let durable = Durable::new(last_index_in_file(&db, &group).unwrap_or(None));
        tokio::spawn(write_log(
            Arc::downgrade(&db),
            group,
            pending.clone(),
            epoch.clone(),
            durable.clone(),
            rx,
        ));
        Arc::new(Writes {
            pending,
            queue,
            epoch,
            durable,
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The last index of `group`'s entries in the file.
fn last_index_in_file(db: &Database, group: &str) -> Result<Option<u64>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(LOG)?;
    let last = table.range((group, 0)..=(group, u64::MAX))?.next_back();
    Ok(match last {
        Some(item) => Some(item?.0.value().1),
        None => None,
    })
}

/// The log writer's loop: each write in order; the appends and lazy values queued together
/// in one commit (durable when it holds an append), `on_disk` moved on after it. It holds the
/// database weakly: once every handle of it is gone, what is left fails.
async fn write_log(
    db: Weak<Database>,
    group: Arc<str>,
    pending: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
    epoch: Arc<AtomicU64>,
    on_disk: Durable,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    let mut next: Option<Write> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => {
                    on_disk.close();
                    return;
                }
            },
        };
        let Some(db) = db.upgrade() else {
            let gone = || "the Raft database is closed".to_owned();
            match first {
                Write::Remove { done, .. } => drop(done.send(Err(gone()))),
                Write::Append { done, .. } => done(Err(gone())),
                Write::Lazy { .. } => {}
            }
            continue;
        };
        if let Write::Remove {
            start,
            end,
            purged,
            done,
        } = first
        {
            let group = group.clone();
            let written = durable(db, move |txn| {
                let g: &str = &group;
                txn.open_table(LOG)?
                    .retain_in((g, start)..=(g, end), |_, _| false)?;
                if let Some(p) = &purged {
                    txn.open_table(STATE)?.insert((g, "purged"), p.as_slice())?;
                }
                Ok(())
            })
            .await;
            let _ = done.send(written.map_err(|e| e.to_string()));
            continue;
        }
        // Appends and lazy values: what was queued meanwhile joins this commit, up to a
        // removal.
        let mut batch = Batch::default();
        batch.add(first);
        while let Ok(w) = rx.try_recv() {
            match w {
                removal @ Write::Remove { .. } => {
                    next = Some(removal);
                    break;
                }
                w => batch.add(w),
            }
        }
        let Batch {
            mut appends,
            lazy,
            lazy_epoch,
        } = batch;
        let rows: Vec<Vec<(u64, Vec<u8>)>> = appends
            .iter_mut()
            .map(|(r, _, _)| std::mem::take(r))
            .collect();
        let last_id = appends.iter().rev().find_map(|(_, last, _)| *last);
        let (g, file, epoch) = (group.clone(), db, epoch.clone());
        let written = blocking(move || {
            let mut txn = file.begin_write()?;
            let durability = if rows.is_empty() {
                redb::Durability::None
            } else {
                redb::Durability::Immediate
            };
            txn.set_durability(durability).map_err(|e| {
                redb::Error::from(redb::StorageError::from(std::io::Error::other(e)))
            })?;
            {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in rows.iter().flatten() {
                    table.insert((&*g, *index), bytes.as_slice())?;
                }
            }
            // Inside the transaction: a clear of the group either ran before it (the
            // epoch moved on: the values are dropped) or runs after it (and clears them).
            if lazy_epoch.is_some_and(|e| e == epoch.load(Ordering::Acquire)) {
                let mut table = txn.open_table(STATE)?;
                for (key, value) in &lazy {
                    table.insert((&*g, *key), value.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(rows)
        })
        .await;
        let outcome = match written {
            Ok(rows) => {
                // Committed: the file has them now (unless a newer entry took the same
                // index meanwhile, after a truncation).
                let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
                for (index, bytes) in rows.iter().flatten() {
                    if pending.get(index) == Some(bytes) {
                        pending.remove(index);
                    }
                }
                drop(pending);
                if let Some(last) = rows.iter().flatten().map(|(i, _)| *i).max() {
                    on_disk.advance(last, last_id);
                }
                Ok(())
            }
            Err(e) => {
                if appends.is_empty() {
                    warn!(group = &*group, error = %e, "JetStream cluster: a lazy Raft state write failed");
                } else {
                    // Appends acknowledged before their fsync (`LogStore::early_ack`) never
                    // become durable: what waits on them fails rather than waits on.
                    on_disk.close();
                }
                Err(e.to_string())
            }
        };
        for (_, _, done) in appends {
            done(outcome.clone());
        }
    }
}

/// The appends and lazy values the log writer puts into one commit.
#[derive(Default)]
struct Batch {
    /// The appends' rows and callbacks, in order.
    appends: Vec<AppendDone>,
    /// The lazy values, the last one of each key (in the order first seen).
    lazy: Vec<(&'static str, Vec<u8>)>,
    /// The epoch the lazy values were handed over in (the newest, if several).
    lazy_epoch: Option<u64>,
}

/// An append's rows, its last log id and what is told once they are written.
type AppendDone = (
    Vec<(u64, Vec<u8>)>,
    Option<LogId<u64>>,
    Box<dyn FnOnce(Result<(), String>) + Send>,
);

impl Batch {
    fn add(&mut self, write: Write) {
        match write {
            Write::Append { rows, last, done } => self.appends.push((rows, last, done)),
            Write::Lazy { values, epoch } => {
                if self.lazy_epoch.is_some_and(|e| e != epoch) {
                    // Handed over before a clear: dropped.
                    self.lazy.clear();
                }
                self.lazy_epoch = Some(epoch);
                for (key, value) in values {
                    match self.lazy.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => self.lazy.push((key, value)),
                    }
                }
            }
            Write::Remove { .. } => {}
        }
    }
}

/// One group's log in the Raft database; also its own log reader.
pub struct LogStore<C: RaftTypeConfig> {
    db: RaftDb,
    group: Arc<str>,
    writes: Arc<Writes>,
    /// With [`LogStore::early_ack`]: this member's id.
    own: Option<C::NodeId>,
    /// With [`LogStore::early_ack`]: the leader id of the last vote saved here when it names
    /// this member (the entries it appends as that leader are acknowledged at once).
    leading: Option<LeaderId<C::NodeId>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            group: self.group.clone(),
            writes: self.writes.clone(),
            own: self.own.clone(),
            leading: self.leading.clone(),
        }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// The log's durable end (see [`Durable`]).
    pub fn durable(&self) -> Durable {
        self.writes.durable.clone()
    }

    /// Makes the appends this member (`own`) makes as the group's leader acknowledged to
    /// openraft as soon as they are handed to the log writer, not once fsynced: openraft 0.9's
    /// core waits for that acknowledgement before it sends the entries to the followers, so
    /// the leader's fsync and the followers' would run one after the other. The leader then
    /// counts itself in the commit quorum before its fsync ends; what makes that safe is the
    /// group's use of [`Durable`]: its state machine applies an entry (and answers its
    /// publishes) only once it is durable here too, and its network sends the followers no
    /// commit index past it. A follower's appends are acknowledged only once fsynced, as
    /// before. See "The leader's append does not wait for its own fsync" in
    /// `hub/JETSTREAM-CLUSTER.md`.
    pub fn early_ack(self, own: C::NodeId) -> LogStore<C> {
        LogStore {
            own: Some(own),
            ..self
        }
    }
}

/// The first and last index of `range`, inclusive (`None`: empty).
fn inclusive(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => *e,
        Bound::Excluded(e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (start <= end).then_some((start, end))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    postcard::to_allocvec(v).map_err(|e| AnyError::new(&e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(bytes).map_err(|e| AnyError::new(&e))
}

fn io_read<C: RaftTypeConfig>(e: impl Into<AnyError>) -> StorageError<C::NodeId> {
    StorageIOError::read_logs(e).into()
}

fn io_write<C: RaftTypeConfig>(e: impl Into<AnyError>) -> StorageError<C::NodeId> {
    StorageIOError::write_logs(e).into()
}

fn redb_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// A value of this group's state.
    fn read_value<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        match self.db.get_state(&self.group, key).map_err(redb_err)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Entries with indexes in `start..=end`: the file's, and on top of them those handed to
    /// the log writer and not committed yet.
    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<C::Entry>, AnyError> {
        // The pending ones first: an entry committed between the two reads is then found in
        // the file (the writer removes it from `pending` only after its commit).
        let pending: Vec<(u64, Vec<u8>)> = self
            .writes
            .pending()
            .range(start..=end)
            .map(|(i, b)| (*i, b.clone()))
            .collect();
        let txn = self.db.0.begin_read().map_err(redb_err)?;
        let table = txn.open_table(LOG).map_err(redb_err)?;
        let group: &str = &self.group;
        let mut rows: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for item in table
            .range((group, start)..=(group, end))
            .map_err(redb_err)?
        {
            let (k, v) = item.map_err(redb_err)?;
            rows.insert(k.value().1, v.value().to_vec());
        }
        rows.extend(pending);
        rows.values().map(|b| decode(b)).collect()
    }

    /// The last entry's log id (a pending one if any: they follow the file's).
    fn last_entry_id(&self) -> Result<Option<LogId<C::NodeId>>, AnyError> {
        let last_pending = self
            .writes
            .pending()
            .last_key_value()
            .map(|(_, b)| b.clone());
        if let Some(bytes) = last_pending {
            let entry: C::Entry = decode(&bytes)?;
            return Ok(Some(entry.get_log_id().clone()));
        }
        let txn = self.db.0.begin_read().map_err(redb_err)?;
        let table = txn.open_table(LOG).map_err(redb_err)?;
        let group: &str = &self.group;
        let last = table
            .range((group, 0)..=(group, u64::MAX))
            .map_err(redb_err)?
            .next_back();
        match last {
            Some(item) => {
                let (_, v) = item.map_err(redb_err)?;
                let entry: C::Entry = decode(v.value())?;
                Ok(Some(entry.get_log_id().clone()))
            }
            None => Ok(None),
        }
    }

    /// Removes the entries with indexes in `start..=end` (pending ones at once, the file's
    /// through the log writer, after the writes handed over before) in one durable commit,
    /// writing the purged log id too when given.
    async fn remove_entries(
        &self,
        start: u64,
        end: u64,
        purged: Option<Vec<u8>>,
    ) -> Result<(), AnyError> {
        self.writes
            .pending()
            .retain(|index, _| *index < start || *index > end);
        let (done, answer) = oneshot::channel();
        let write = Write::Remove {
            start,
            end,
            purged,
            done,
        };
        if self.writes.queue.send(write).is_err() {
            return Err(AnyError::error("the log writer has stopped"));
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AnyError::error(e)),
            Err(_) => Err(AnyError::error("the log writer has stopped")),
        }
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        match inclusive(&range) {
            Some((start, end)) => self.read_entries(start, end).map_err(io_read::<C>),
            None => Ok(Vec::new()),
        }
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let purged: Option<LogId<C::NodeId>> = self.read_value("purged").map_err(io_read::<C>)?;
        let last = self.last_entry_id().map_err(io_read::<C>)?;
        Ok(LogState {
            last_purged_log_id: purged.clone(),
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // Before anything else is appended: entries of another leader follow this vote.
        self.leading = None;
        let bytes = encode(vote).map_err(|e| StorageError::from(StorageIOError::write_vote(e)))?;
        self.db
            .put_state(&self.group, vec![("vote", Some(bytes))])
            .await
            .map_err(|e| StorageIOError::write_vote(redb_err(e)))?;
        if self.own.is_some() && vote.leader_id().voted_for() == self.own {
            self.leading = Some(vote.leader_id().clone());
        }
        Ok(())
    }

    /// The saved vote; with [`LogStore::early_ack`], a committed vote for this member is read
    /// back as not committed: openraft 0.9 would otherwise make the member leader again at
    /// start in the same term, and its log may lack entries it acknowledged to itself before
    /// they were fsynced (and sent to a follower): appending new entries under the same log
    /// ids would make the logs diverge. So it starts as a follower that voted for itself in
    /// that term, and leads again only after an election in a new term.
    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        let vote: Option<Vote<C::NodeId>> = self
            .read_value("vote")
            .map_err(|e| StorageError::from(StorageIOError::read_vote(e)))?;
        Ok(vote.map(|v| match &self.own {
            Some(own) if v.is_committed() && v.leader_id().voted_for().as_ref() == Some(own) => {
                Vote::new(v.leader_id().get_term(), own.clone())
            }
            _ => v,
        }))
    }

    /// Saves the committed log id **without fsync** (`Durability::None`): it reaches the disk
    /// with the file's next durable commit (the next append or vote). openraft calls this on
    /// every commit, before it applies the entries, so an fsync here sat on every PubAck's
    /// path. Safe because the value is only a hint: openraft reads it at start to re-apply
    /// the entries up to it, and an older value (a crash lost the last lazy writes) only means
    /// fewer entries re-applied at once; the rest are committed again by the leader as usual.
    /// The id saved is never ahead of the durable log (openraft saves it after the entries
    /// were flushed), and a lost write leaves the previous value, also behind the log. It is
    /// handed to the log writer without waiting ([`RaftDb::put_state_lazy`]): the core does
    /// not wait behind the fsync of an append in flight (redb has one writer at a time).
    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let written = match committed {
            Some(c) => {
                let value = encode(&c).map_err(io_write::<C>)?;
                self.db
                    .put_state_lazy(&self.group, vec![("committed", value)])
                    .await
            }
            None => {
                self.db
                    .put_state(&self.group, vec![("committed", None)])
                    .await
            }
        };
        written.map_err(|e| io_write::<C>(redb_err(e)))
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_value("committed").map_err(io_read::<C>)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        let mut last = None;
        // Whether every entry is this member's own as the leader it voted for (see
        // `early_ack`): no other member makes entries with that leader id, and a vote for
        // another leader is saved here before its entries are appended.
        let mut own_entries = self.own.is_some() && self.leading.is_some();
        for entry in entries {
            let log_id = entry.get_log_id();
            own_entries &= self.leading.as_ref() == Some(&log_id.leader_id);
            let index = log_id.index;
            last = Some(log_id.clone());
            rows.push((index, encode(&entry).map_err(io_write::<C>)?));
        }
        let last = match last {
            Some(l) => Some(encode(&l).map_err(io_write::<C>)?),
            None => None,
        };
        if rows.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // Readable from now on (the reader overlays them), durable when `callback` is told.
        self.writes.pending().extend(rows.iter().cloned());
        let last = last.and_then(|l| postcard::from_bytes::<LogId<u64>>(&l).ok());
        let done: Box<dyn FnOnce(Result<(), String>) + Send> = if own_entries {
            // The leader's own entries (see `early_ack`): acknowledged now; a failed write
            // leaves the durable end behind them, so nothing past it is applied here or
            // committed on the followers.
            callback.log_io_completed(Ok(()));
            let group = self.group.clone();
            Box::new(move |outcome: Result<(), String>| {
                if let Err(e) = outcome {
                    error!(group = &*group, error = %e,
                           "JetStream cluster: the leader's Raft log append failed");
                }
            })
        } else {
            Box::new(move |outcome: Result<(), String>| {
                callback.log_io_completed(outcome.map_err(std::io::Error::other));
            })
        };
        if let Err(refused) = self.writes.queue.send(Write::Append { rows, last, done }) {
            if let Write::Append { rows, done, .. } = refused.0 {
                let mut pending = self.writes.pending();
                for (index, _) in &rows {
                    pending.remove(index);
                }
                drop(pending);
                done(Err("the log writer has stopped".into()));
            }
            return Err(io_write::<C>(AnyError::error("the log writer has stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.remove_entries(log_id.index, u64::MAX, None)
            .await
            .map_err(io_write::<C>)?;
        // After the writer made the appends before it durable (in order): the entries from
        // here on are gone, the ones that take their place are not durable yet.
        self.writes.durable.cut(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let purged = encode(&log_id).map_err(io_write::<C>)?;
        self.remove_entries(0, log_id.index, Some(purged))
            .await
            .map_err(io_write::<C>)
    }
}

/// A snapshot as stored.
pub struct StoredSnapshot {
    /// openraft's snapshot meta, postcard.
    pub meta: Vec<u8>,
    /// The snapshot's bytes.
    pub data: Vec<u8>,
}

/// The last snapshot of one group, in the Raft database.
#[derive(Clone)]
pub struct SnapshotSlot {
    db: RaftDb,
    group: Arc<str>,
}

impl SnapshotSlot {
    /// The stored snapshot.
    pub fn load(&self) -> Result<Option<StoredSnapshot>, redb::Error> {
        let meta = self.db.get_state(&self.group, "snapshot_meta")?;
        let data = self.db.get_state(&self.group, "snapshot")?;
        Ok(meta
            .zip(data)
            .map(|(meta, data)| StoredSnapshot { meta, data }))
    }

    /// Replaces the stored snapshot, durably.
    pub async fn save(&self, meta: Vec<u8>, data: Vec<u8>) -> Result<(), redb::Error> {
        self.db
            .put_state(
                &self.group,
                vec![("snapshot_meta", Some(meta)), ("snapshot", Some(data))],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::inclusive;

    #[test]
    fn ranges_become_inclusive_bounds() {
        assert_eq!(inclusive(&(3..7)), Some((3, 6)));
        assert_eq!(inclusive(&(3..=7)), Some((3, 7)));
        assert_eq!(inclusive(&(..)), Some((0, u64::MAX)));
        assert_eq!(inclusive(&(5..5)), None);
        assert_eq!(inclusive(&(0..0)), None);
        assert_eq!(inclusive(&(9..)), Some((9, u64::MAX)));
    }
}

#[cfg(test)]
mod reopen_tests {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

    use super::RaftDb;
    use crate::jsc::types::MetaTypes;

    fn entry(term: u64, index: u64) -> Entry<MetaTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// What was written (vote, entries, committed index, purge) is there after the database
    /// is closed and opened again, and groups do not see each other's entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = RaftDb::open(dir.path()).unwrap();
            let mut log = db.log::<MetaTypes>("meta");
            log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
            let mut other = db.log::<MetaTypes>("S-other");
            other.save_vote(&Vote::new(9, 2)).await.unwrap();
            openraft::storage::RaftLogStorageExt::blocking_append(
                &mut log,
                (1..=5).map(|i| entry(3, i)),
            )
            .await
            .unwrap();
            log.save_committed(Some(LogId::new(CommittedLeaderId::new(3, 1), 4)))
                .await
                .unwrap();
            log.truncate(LogId::new(CommittedLeaderId::new(3, 1), 5))
                .await
                .unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(3, 1), 2))
                .await
                .unwrap();
        }
        let db = RaftDb::open(dir.path()).unwrap();
        let mut log = db.log::<MetaTypes>("meta");
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(3, 1))
        );
        assert_eq!(
            log.read_committed().await.unwrap().map(|c| c.index),
            Some(4)
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
        let entries = log.try_get_log_entries(0..100).await.unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4]);
        let mut other = db.log::<MetaTypes>("S-other");
        assert_eq!(other.read_vote().await.unwrap(), Some(Vote::new(9, 2)));
        assert!(other.try_get_log_entries(..).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod early_ack_tests {
    use std::future::Future;
    use std::time::Duration;

    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

    use super::RaftDb;
    use crate::jsc::types::MetaTypes;

    fn entry(term: u64, leader: u64, index: u64) -> Entry<MetaTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    /// `f`'s output if it is ready at its first poll.
    async fn now<F: Future>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            () = std::future::ready(()) => None,
        }
    }

    /// With `early_ack(1)`: entries member 1 appends as the leader of its vote are
    /// acknowledged and become durable (the durable end moves on); once it saved a vote for
    /// another leader, that leader's entries are acknowledged only once durable (the end is
    /// past them when the append returns); a truncation moves the end back; a reopen starts
    /// it at the file's last entry and reads the member's own committed vote back as not
    /// committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leaders_own_appends_are_acknowledged_and_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = RaftDb::open(dir.path()).unwrap();
            let mut log = db.log::<MetaTypes>("S-1").early_ack(1);
            let durable = log.durable();
            assert_eq!(now(durable.reached(0)).await, None, "an empty log");

            log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
            log.blocking_append((0..=2).map(|i| entry(3, 1, i)))
                .await
                .unwrap();
            let reached = tokio::time::timeout(Duration::from_secs(10), durable.reached(2));
            assert_eq!(reached.await, Ok(true), "the writer makes them durable");
            let read = log.try_get_log_entries(0..=2).await.unwrap();
            assert_eq!(read.len(), 3);

            // A vote for member 2: its entries are acknowledged once fsynced.
            log.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
            log.blocking_append((3..=4).map(|i| entry(4, 2, i)))
                .await
                .unwrap();
            assert_eq!(now(durable.reached(4)).await, Some(true));

            log.truncate(LogId::new(CommittedLeaderId::new(4, 2), 4))
                .await
                .unwrap();
            assert_eq!(now(durable.reached(4)).await, None, "index 4 is gone");
            assert_eq!(now(durable.reached(3)).await, Some(true));
            log.save_vote(&Vote::new_committed(5, 1)).await.unwrap();
        }
        let db = RaftDb::open(dir.path()).unwrap();
        let mut log = db.log::<MetaTypes>("S-1").early_ack(1);
        assert_eq!(now(log.durable().reached(3)).await, Some(true));
        assert_eq!(now(log.durable().reached(4)).await, None);
        // Its own leadership is not resumed in the same term after a restart.
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(5, 1)));
        let mut plain = db.log::<MetaTypes>("S-1");
        assert_eq!(
            plain.read_vote().await.unwrap(),
            Some(Vote::new_committed(5, 1))
        );
    }
}
