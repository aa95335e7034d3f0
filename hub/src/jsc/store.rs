//! The Raft state of a node's groups on redb: one file (`raft.redb` in the JetStream store
//! directory) for every group, tables keyed by the group's name.
//!
//! * [`LogStore`]: openraft's log storage of one group: entries, vote, committed index, the
//!   last purged log id. Every write is a redb commit with `Durability::Immediate` (one fsync)
//!   made before openraft is told it is done: an append is acknowledged (its `LogFlushed`
//!   callback) only once it is on disk. Appends and removals go through the group's **log
//!   writer** (a task per group, in the order openraft made them): `append` returns as soon
//!   as the entries are handed over (and readable: the reader sees them on top of the file),
//!   so openraft's core replicates them to the followers while the leader's own fsync runs,
//!   and appends queued meanwhile share one commit (group commit). The one exception to the
//!   fsync is the committed log id (`save_committed`): see [`LogStore::save_committed`].
//!   Writes run on tokio's blocking pool, never on a worker thread.
//! * [`SnapshotSlot`]: the group's last snapshot (its meta and bytes), kept in the same file,
//!   for state machines that live in memory (the meta group's: see `super::machine`).
//!
//! A process killed at any point leaves the file at its last commit: whatever was
//! acknowledged is there at the next start (redb's commits are atomic).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError,
    StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Entries: (group, index) → postcard of the entry.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("raft_log");
/// Per group values: (group, key) → postcard of the value.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("raft_state");

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
            _types: PhantomData,
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
    /// proposals, two batches unapplied; a follower's appends, one replication request at a
    /// time from its leader; the meta group's few commands).
    queue: mpsc::UnboundedSender<Write>,
    /// Moves on when the group's state is cleared ([`RaftDb::remove_group`],
    /// [`RaftDb::reset_group`]): lazy values handed over before are not written.
    epoch: Arc<AtomicU64>,
}

/// One write of a group's log.
enum Write {
    /// Entries to append; `done` is told once they are fsynced (or why not).
    Append {
        rows: Vec<(u64, Vec<u8>)>,
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
        tokio::spawn(write_log(
            Arc::downgrade(&db),
            group,
            pending.clone(),
            epoch.clone(),
            rx,
        ));
        Arc::new(Writes {
            pending,
            queue,
            epoch,
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The log writer's loop: each write in order; the appends and lazy values queued together
/// in one commit (durable when it holds an append). It holds the database weakly: once every
/// handle of it is gone, what is left fails.
async fn write_log(
    db: Weak<Database>,
    group: Arc<str>,
    pending: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
    epoch: Arc<AtomicU64>,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    let mut next: Option<Write> = None;
    loop {
        let first = match next.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
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
        let rows: Vec<Vec<(u64, Vec<u8>)>> =
            appends.iter_mut().map(|(r, _)| std::mem::take(r)).collect();
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
                Ok(())
            }
            Err(e) => {
                if appends.is_empty() {
                    warn!(group = &*group, error = %e, "JetStream cluster: a lazy Raft state write failed");
                }
                Err(e.to_string())
            }
        };
        for (_, done) in appends {
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

/// An append's rows and what is told once they are written.
type AppendDone = (
    Vec<(u64, Vec<u8>)>,
    Box<dyn FnOnce(Result<(), String>) + Send>,
);

impl Batch {
    fn add(&mut self, write: Write) {
        match write {
            Write::Append { rows, done } => self.appends.push((rows, done)),
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
pub struct LogStore<C> {
    db: RaftDb,
    group: Arc<str>,
    writes: Arc<Writes>,
    _types: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            group: self.group.clone(),
            writes: self.writes.clone(),
            _types: PhantomData,
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
        let bytes = encode(vote).map_err(|e| StorageError::from(StorageIOError::write_vote(e)))?;
        self.db
            .put_state(&self.group, vec![("vote", Some(bytes))])
            .await
            .map_err(|e| StorageIOError::write_vote(redb_err(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_value("vote")
            .map_err(|e| StorageIOError::read_vote(e).into())
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
        for entry in entries {
            let index = entry.get_log_id().index;
            rows.push((index, encode(&entry).map_err(io_write::<C>)?));
        }
        if rows.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // Readable from now on (the reader overlays them), durable when `callback` is told.
        self.writes.pending().extend(rows.iter().cloned());
        let done = Box::new(move |outcome: Result<(), String>| {
            callback.log_io_completed(outcome.map_err(std::io::Error::other));
        });
        if let Err(refused) = self.writes.queue.send(Write::Append { rows, done }) {
            if let Write::Append { rows, done } = refused.0 {
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
            .map_err(io_write::<C>)
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
