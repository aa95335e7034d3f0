//! The group-commit writer: one OS thread (`store-writer`) owns every write. It takes all
//! operations queued while the previous commit was in flight (up to `max_batch`), applies
//! them in ONE write transaction, commits with `Durability::Immediate` (one fsync), and only
//! then updates the in-memory cache and answers each operation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::format::{
    self, encode, BlockRec, BlockRef, MsgRef, StateRec, StreamDef, SubjectRec, BLOCKS,
    BLOCK_TARGET_BYTES, CONSUMERS, META, QUARANTINE, SEALED, SEGMENTS, STATES, STREAMS, SUBJECTS,
};
use super::quarantine::{self, Target as QuarantineTarget};
use super::queue::{OpQueue, Taken, Weighed};
use super::read::{block_containing, scan_forward, Blocks, Val};
use super::segments::Segments;
use super::{
    subject, Appended, Cache, NewMessage, PurgeRequest, Retain, Shared, StoreError, StreamEntry,
    StreamState,
};

mod remove;
mod retain;
mod seal;

pub(crate) use seal::{is_sparse, Adoption, Sealing};

/// The reply channel of an operation.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write operation sent to the writer thread.
pub(crate) enum Op {
    /// Create a stream.
    Create(String, Vec<u8>, Reply<StreamState>),
    /// Replace a stream's config bytes.
    UpdateConfig(String, Vec<u8>, Reply<()>),
    /// Compress the blocks a stream writes from now on, or not.
    SetCompression(String, bool, Reply<()>),
    /// Set the limits a stream is kept within after each append (and apply them).
    SetRetain(String, Retain, Reply<u64>),
    /// Delete a stream and everything under it.
    DeleteStream(String, Reply<()>),
    /// Append messages (all in this one commit); with `Some(last)`, only if the stream's last
    /// sequence is `last` when the op is applied.
    Append(String, Vec<NewMessage>, Option<u64>, Reply<Vec<Appended>>),
    /// Append messages one by one, each with its own optional expected last sequence, each
    /// with its own outcome (as separate `Append`s would), under one queue entry and reply.
    /// With `Lazy::Yes` the reply does not wait for an fsync (see [`Lazy`]).
    AppendEach(
        String,
        Vec<(NewMessage, Option<u64>)>,
        Lazy,
        Reply<Vec<EachOutcome>>,
    ),
    /// Nothing to write: the commit holding it is durable (with everything before it).
    Sync(Reply<()>),
    /// Delete one message.
    DeleteMsg(String, u64, Reply<bool>),
    /// Purge messages.
    Purge(String, PurgeRequest, Reply<u64>),
    /// Store a consumer blob.
    PutConsumer(String, String, Vec<u8>, Reply<()>),
    /// Delete a consumer blob.
    DeleteConsumer(String, String, Reply<bool>),
    /// Delete any set of messages (acknowledged under interest or workqueue retention).
    RemoveMsgs(String, Vec<u64>, Reply<u64>),
    /// Take the next `n` sequences without storing messages.
    Skip(String, i64, u64, Reply<Vec<Appended>>),
    /// Move a record into the quarantine table with the reason; false if there was none.
    Quarantine(QuarantineTarget, String, Reply<bool>),
    /// Name a segment file the sealer wrote (sent by the sealer thread; no reply: the writer
    /// itself acts on the outcome).
    Adopt(Box<Adoption>),
    /// Write the blocks a sparse segment still holds back into the active file (queued by
    /// the writer itself; no reply).
    Unseal(u64),
}

impl Weighed for Op {
    /// How many slots of `max_batch` this op takes.
    fn weight(&self) -> usize {
        match self {
            Op::Append(_, m, _, _) => m.len().max(1),
            Op::AppendEach(_, m, _, _) => m.len().max(1),
            _ => 1,
        }
    }

    /// The message bytes this op writes (subjects, headers, payloads), counted against
    /// `max_batch_bytes`.
    fn bytes(&self) -> u64 {
        let size = |m: &NewMessage| {
            (m.subject.len() + m.headers.as_ref().map_or(0, |h| h.len()) + m.payload.len()) as u64
        };
        match self {
            Op::Append(_, m, _, _) => m.iter().map(size).sum(),
            Op::AppendEach(_, m, _, _) => m.iter().map(|(m, _)| size(m)).sum(),
            _ => 0,
        }
    }
}

impl Op {
    /// Whether the op may be committed without an fsync.
    fn is_lazy(&self) -> bool {
        matches!(self, Op::AppendEach(_, _, Lazy::Yes, _))
    }

    fn is_append(&self) -> bool {
        matches!(self, Op::Append(..) | Op::AppendEach(..))
    }

    fn fail(self, e: StoreError) {
        match self {
            Op::Create(_, _, r) => drop(r.send(Err(e))),
            Op::UpdateConfig(_, _, r)
            | Op::SetCompression(_, _, r)
            | Op::DeleteStream(_, r)
            | Op::PutConsumer(_, _, _, r) => drop(r.send(Err(e))),
            Op::Append(_, _, _, r) | Op::Skip(_, _, _, r) => drop(r.send(Err(e))),
            Op::AppendEach(_, _, _, r) => drop(r.send(Err(e))),
            Op::Sync(r) => drop(r.send(Err(e))),
            Op::DeleteMsg(_, _, r) | Op::DeleteConsumer(_, _, r) | Op::Quarantine(_, _, r) => {
                drop(r.send(Err(e)))
            }
            Op::Purge(_, _, r) | Op::RemoveMsgs(_, _, r) | Op::SetRetain(_, _, r) => {
                drop(r.send(Err(e)))
            }
            Op::Adopt(_) | Op::Unseal(_) => {}
        }
    }

    fn complete(self, d: Done) {
        match (self, d) {
            (Op::Create(_, _, r), Done::State(s)) => drop(r.send(Ok(s))),
            (
                Op::UpdateConfig(_, _, r)
                | Op::SetCompression(_, _, r)
                | Op::DeleteStream(_, r)
                | Op::PutConsumer(_, _, _, r)
                | Op::Sync(r),
                Done::Unit,
            ) => drop(r.send(Ok(()))),
            (Op::Append(_, _, _, r) | Op::Skip(_, _, _, r), Done::Appended(a)) => {
                drop(r.send(Ok(a)))
            }
            (Op::AppendEach(_, _, _, r), Done::Each(a)) => drop(r.send(Ok(a))),
            (
                Op::DeleteMsg(_, _, r) | Op::DeleteConsumer(_, _, r) | Op::Quarantine(_, _, r),
                Done::Bool(b),
            ) => drop(r.send(Ok(b))),
            (
                Op::Purge(_, _, r) | Op::RemoveMsgs(_, _, r) | Op::SetRetain(_, _, r),
                Done::Count(n),
            ) => drop(r.send(Ok(n))),
            (Op::Adopt(_) | Op::Unseal(_), _) => {}
            (op, _) => op.fail(StoreError::Corrupt("internal: reply type mismatch".into())),
        }
    }
}

/// Whether an append's reply waits for the fsync of its commit.
///
/// `Lazy::Yes`: a batch made only of such appends is committed with `Durability::None` (no
/// fsync; a crash loses it, and only it: redb's commits are ordered, so what survives is a
/// prefix of the commits) and answered at once. It becomes durable with the next durable
/// commit: any other write, a [`Store::sync`](crate::Store::sync), the idle record of
/// `QuickRepair::WhenIdle`, or at the latest the [`MAX_LAZY_COMMITS`]-th lazy commit in a row.
/// With `QuickRepair::EveryCommit` every commit is durable.
/// For a caller that has the data durable elsewhere (a replicated stream's Raft log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lazy {
    /// The reply waits for the fsync (the store's durability contract).
    No,
    /// The reply does not wait for an fsync.
    Yes,
}

/// Lazy commits in a row, at most, before one is made durable anyway (redb frees the pages
/// of non-durable commits only at a durable one: this bounds the file's growth).
pub(crate) const MAX_LAZY_COMMITS: u32 = 64;

/// The outcome of one message of an [`Op::AppendEach`].
pub(crate) type EachOutcome = Result<Appended, StoreError>;

/// The successful outcome of an op, delivered after the commit.
enum Done {
    State(StreamState),
    Unit,
    Appended(Vec<Appended>),
    Each(Vec<EachOutcome>),
    Bool(bool),
    Count(u64),
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<OpQueue<Op>>,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: u64,
    pub(crate) max_file_bytes: Option<u64>,
    /// Set when a commit failed for lack of space: appends are refused without touching the
    /// disk until something is freed or `FULL_RETRY` has passed.
    pub(crate) full_since: Option<Instant>,
    /// Set when the database handle must be reopened before the next batch.
    pub(crate) needs_reopen: bool,
    /// Encoding buffer reused by every batch (a block is up to ~256 KiB: allocating it
    /// afresh per commit costs page faults).
    pub(crate) scratch: Vec<u8>,
    /// The newest commit did not record redb's allocator state: with
    /// `QuickRepair::WhenIdle`, an idle writer records it with an extra commit.
    pub(crate) unrecorded: bool,
    /// Lazy commits since the last durable one.
    pub(crate) lazy_run: u32,
    /// Seal once this many bytes of blocks were written into the active file since the last
    /// seal (`StoreOptions::seal_bytes`); `None`: never.
    pub(crate) seal_bytes: Option<u64>,
    /// Bytes of blocks written into the active file since the last seal started (or open).
    pub(crate) active_written: u64,
    /// The file's length was looked at after open (`seal::Writer::maybe_seal`), or need not
    /// be: the last close recorded the unsealed bytes.
    pub(crate) len_checked: bool,
    /// `active_written` when the running seal started (given back if it adopts nothing).
    pub(crate) sealing_from: u64,
    /// The next commit removes `META_UNSEALED` (read at open).
    pub(crate) clear_unsealed: bool,
    /// The sealer at work, if any.
    pub(crate) sealing: Option<Sealing>,
    /// Segments named by a quarter of their blocks or fewer, to unseal.
    pub(crate) sparse: std::collections::BTreeSet<u64>,
    /// The segment whose `Op::Unseal` is queued, if any.
    pub(crate) unsealing: Option<u64>,
}

/// How long appends are refused after a no-space failure before a commit is tried again
/// (space may have been freed outside the store).
#[cfg(not(test))]
const FULL_RETRY: Duration = Duration::from_secs(5);
#[cfg(test)]
const FULL_RETRY: Duration = Duration::from_millis(200);

/// The encoding buffer is kept between batches up to this capacity.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

impl Writer {
    /// Runs until every `Store` handle (every sender) is gone.
    pub(crate) fn run(mut self) {
        // Sparse segments found at open.
        self.maybe_unseal();
        loop {
            let mut ops = Vec::new();
            let idle = self.shared.quick_repair.idle().filter(|_| self.unrecorded);
            match self
                .queue
                .take_batch(self.max_batch, self.max_batch_bytes, idle, &mut ops)
            {
                Taken::Ops => self.run_batch(ops),
                Taken::Idle => self.record_allocator_state(),
                Taken::Closed => break,
            }
        }
        self.stop_sealer();
        self.record_unsealed();
        tracing::debug!("store writer exiting");
    }

    /// Records redb's allocator state with an empty commit (`QuickRepair::WhenIdle`). A
    /// failure is logged and leaves the store as it was; the next batch reopens it if redb
    /// latched the error.
    fn record_allocator_state(&mut self) {
        self.unrecorded = false;
        // A durable commit (`repair::record_allocator_state`).
        self.lazy_run = 0;
        if self.needs_reopen {
            return;
        }
        let result = {
            let db = self
                .shared
                .db
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match db.as_ref() {
                Some(db) => super::repair::record_allocator_state(db),
                None => Err(StoreError::Closed),
            }
        };
        match result {
            Ok(()) => self.shared.recorded.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "recording the store's allocator state failed");
                self.needs_reopen = e.needs_reopen();
            }
        }
    }

    fn run_batch(&mut self, ops: Vec<Op>) {
        if self.needs_reopen {
            if let Err(e) = self.shared.reopen() {
                tracing::warn!(error = %e, "store reopen failed");
                for op in ops {
                    op.fail(e.replicate());
                }
                return;
            }
            self.needs_reopen = false;
        }
        if let Some(t) = self.full_since {
            if t.elapsed() >= FULL_RETRY {
                self.full_since = None;
            }
        }
        // Deletes may need a few fresh pages even at the limit: give batches without appends
        // headroom, so a purge can always free space.
        // The sealed segments count against the limit: the active file gets what they leave.
        let sealed = self.shared.sealed_bytes.load(Ordering::Relaxed);
        let limit = match self.max_file_bytes {
            None => u64::MAX,
            Some(m) if ops.iter().any(Op::is_append) => m.saturating_sub(sealed),
            Some(m) => m
                .saturating_sub(sealed)
                .saturating_add((m / 8).max(4 << 20)),
        };
        self.shared.limit.store(limit, Ordering::Relaxed);

        match self.apply_and_commit(&ops) {
            Ok((results, done)) => {
                let Finished {
                    overlay,
                    next_id,
                    freed,
                    dead,
                    sparse,
                    written,
                    active_blocks,
                } = done;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                let every = self.shared.quick_repair.every_commit();
                self.shared.recorded.store(every, Ordering::Release);
                self.unrecorded = !every;
                if freed {
                    self.full_since = None;
                }
                {
                    let mut cache = self
                        .shared
                        .cache
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (name, e) in overlay {
                        match e {
                            Some(e) => cache.streams.insert(name, e),
                            None => cache.streams.remove(&name),
                        };
                    }
                    cache.next_id = next_id;
                }
                for (op, r) in ops.iter().zip(&results) {
                    match op {
                        Op::Adopt(a) => {
                            let adopted = match r {
                                Ok(Done::Count(n)) => Some(*n),
                                _ => None,
                            };
                            self.seal_done(a.n, adopted);
                        }
                        Op::Unseal(n) => {
                            self.unsealing = None;
                            if let Ok(Done::Count(moved)) = r {
                                tracing::info!(
                                    segment = n,
                                    blocks = moved,
                                    "sparse segment unsealed"
                                );
                            }
                        }
                        _ => {}
                    }
                }
                if !dead.is_empty() {
                    // Readers hold the read lock for their whole read: taking the write lock
                    // waits for the reads in flight (whose snapshots may name these segments),
                    // and every later read sees the commit that stopped naming them.
                    let _no_reader = self
                        .shared
                        .db
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for n in &dead {
                        self.sparse.remove(n);
                        self.shared.segs.forget(*n);
                    }
                }
                self.sparse.extend(sparse);
                self.maybe_unseal();
                if !dead.is_empty() {
                    self.refresh_sealed_bytes();
                }
                self.maybe_seal(written, active_blocks);
                for (op, r) in ops.into_iter().zip(results) {
                    match r {
                        Ok(d) => op.complete(d),
                        Err(e) => op.fail(e),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = ops.len(), "store commit failed");
                // A reopen repairs without recording the allocator state: record it when idle.
                self.unrecorded = true;
                self.shared.recorded.store(false, Ordering::Release);
                if matches!(e, StoreError::InsufficientResources(_)) {
                    self.full_since = Some(Instant::now());
                }
                for op in &ops {
                    match op {
                        Op::Adopt(a) => self.seal_done(a.n, None),
                        // Tried again after the next commit that releases one of its blocks.
                        Op::Unseal(_) => self.unsealing = None,
                        _ => {}
                    }
                }
                for op in ops {
                    op.fail(e.replicate());
                }
                // redb latched the failure: reopen now (a repair scan), so readers see the
                // committed state again; if that fails too, retry before the next batch.
                if e.needs_reopen() {
                    self.needs_reopen = true;
                    match self.shared.reopen() {
                        Ok(()) => self.needs_reopen = false,
                        Err(e) => tracing::warn!(error = %e, "store reopen failed"),
                    }
                }
            }
        }
    }

    /// Applies all ops in one transaction and commits it. The outer error fails the whole
    /// batch (nothing was committed); per-op logical errors are in the result vector.
    #[allow(clippy::type_complexity)]
    fn apply_and_commit(
        &mut self,
        ops: &[Op],
    ) -> Result<(Vec<Result<Done, StoreError>>, Finished), StoreError> {
        let db_guard = self
            .shared
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let db = db_guard.as_ref().ok_or(StoreError::Closed)?;
        let cache = self
            .shared
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut txn = super::repair::begin_write(db, self.shared.quick_repair.every_commit())?;
        let lazy = self.lazy_run < MAX_LAZY_COMMITS
            && !self.shared.quick_repair.every_commit()
            && ops.iter().all(Op::is_lazy);
        txn.set_durability(if lazy {
            redb::Durability::None
        } else {
            redb::Durability::Immediate
        })?;
        let mut results = Vec::with_capacity(ops.len());
        let done = {
            let full = self.full_since.is_some();
            let touched = self.sealing.as_mut().map(|s| &mut s.touched);
            let mut b = Batch::open(
                &txn,
                &cache,
                full,
                &mut self.scratch,
                &self.shared.segs,
                touched,
                self.clear_unsealed,
            )?;
            for op in ops {
                results.push(b.apply(op)?);
            }
            b.finish()?
        };
        drop(cache);
        if self.scratch.capacity() > SCRATCH_KEEP_BYTES {
            // One huge message grew it: do not keep that much memory for good.
            self.scratch = Vec::new();
        }
        txn.commit()?;
        self.clear_unsealed = false;
        self.lazy_run = if lazy { self.lazy_run + 1 } else { 0 };
        Ok((results, done))
    }
}

/// Messages of one stream appended in this batch, not yet written as a block.
struct Pending<'a> {
    first_seq: u64,
    msgs: Vec<&'a NewMessage>,
    bytes: usize,
}

/// The state of one batch: open tables plus overlays over the shared cache.
struct Batch<'t, 'o> {
    meta: Table<'t, &'static str, &'static [u8]>,
    streams: Table<'t, &'static str, &'static [u8]>,
    states: Table<'t, u32, &'static [u8]>,
    blocks: Table<'t, (u32, u64), Val>,
    /// Blocks living in segment files: (stream id, first seq) → segment number.
    sealed: Table<'t, (u32, u64), u64>,
    /// Segment number → how many `sealed` entries name it.
    segments: Table<'t, u64, (u64, u64)>,
    /// The segment files, for reading sealed blocks.
    segs: &'t Segments,
    /// Per segment, how many of its blocks this batch took out of `sealed`.
    released: HashMap<u64, u64>,
    /// The keys this batch rewrote or removed while a sealer runs (`None` otherwise).
    touched: Option<&'t mut seal::Touched>,
    /// Bytes of block values this batch wrote into the active file.
    written: u64,
    subjects: Table<'t, (u32, &'static str), &'static [u8]>,
    consumers: Table<'t, (u32, &'static str), &'static [u8]>,
    quarantine: Table<'t, (&'static str, i64), &'static [u8]>,
    base: &'t Cache,
    over: HashMap<String, Option<StreamEntry>>,
    next_id: u32,
    pending: HashMap<u32, Pending<'o>>,
    /// Subject index entries read or changed in this batch, per stream id: subject →
    /// (entry, dirty). Nested so a lookup by `&str` allocates nothing.
    subj: HashMap<u32, HashMap<String, (Option<SubjectRec>, bool)>>,
    freed: bool,
    full: bool,
    /// The writer's reusable encoding buffer.
    scratch: &'t mut Vec<u8>,
    /// A compressed block value being written.
    packed: Vec<u8>,
    /// A compressed block read back, decompressed.
    unpacked: Vec<u8>,
}

type OpResult = Result<Result<Done, StoreError>, StoreError>;

impl<'t, 'o> Batch<'t, 'o> {
    fn open(
        txn: &'t WriteTransaction,
        base: &'t Cache,
        full: bool,
        scratch: &'t mut Vec<u8>,
        segs: &'t Segments,
        touched: Option<&'t mut seal::Touched>,
        clear_unsealed: bool,
    ) -> Result<Self, StoreError> {
        let mut meta = txn.open_table(META)?;
        if clear_unsealed {
            meta.remove(format::META_UNSEALED)?;
        }
        Ok(Batch {
            meta,
            streams: txn.open_table(STREAMS)?,
            states: txn.open_table(STATES)?,
            blocks: txn.open_table(BLOCKS)?,
            sealed: txn.open_table(SEALED)?,
            segments: txn.open_table(SEGMENTS)?,
            segs,
            released: HashMap::new(),
            touched,
            written: 0,
            subjects: txn.open_table(SUBJECTS)?,
            consumers: txn.open_table(CONSUMERS)?,
            quarantine: txn.open_table(QUARANTINE)?,
            base,
            over: HashMap::new(),
            next_id: base.next_id,
            pending: HashMap::new(),
            subj: HashMap::new(),
            freed: false,
            full,
            scratch,
            packed: Vec::new(),
            unpacked: Vec::new(),
        })
    }

    fn apply(&mut self, op: &'o Op) -> OpResult {
        match op {
            Op::Create(name, config, _) => self.create(name, config),
            Op::UpdateConfig(name, config, _) => self.update_config(name, config),
            Op::DeleteStream(name, _) => self.delete_stream(name),
            Op::SetRetain(name, retain, _) => self.set_retain(name, *retain),
            Op::SetCompression(name, compress, _) => self.set_compression(name, *compress),
            Op::Append(name, msgs, after, _) => {
                let appended = self.append(name, msgs, *after)?;
                let subjects = msgs.iter().map(|m| m.subject.as_str());
                self.keep_within_limits(name, subjects, appended)
            }
            Op::Sync(_) => Ok(Ok(Done::Unit)),
            Op::AppendEach(name, items, _, _) => {
                let appended = self.append_each(name, items)?;
                let subjects = items.iter().map(|(m, _)| m.subject.as_str());
                self.keep_within_limits(name, subjects, appended)
            }
            Op::DeleteMsg(name, seq, _) => self.delete_msg(name, *seq),
            Op::Purge(name, req, _) => self.purge(name, req),
            Op::PutConsumer(stream, name, blob, _) => self.put_consumer(stream, name, blob),
            Op::DeleteConsumer(stream, name, _) => self.delete_consumer(stream, name),
            Op::RemoveMsgs(name, seqs, _) => self.remove_msgs(name, seqs),
            Op::Skip(name, ts_ns, n, _) => self.skip(name, *ts_ns, *n),
            Op::Quarantine(target, reason, _) => self.quarantine(target, reason),
            Op::Adopt(a) => self.adopt(a),
            Op::Unseal(n) => self.unseal(*n),
        }
    }

    /// The stream blocks as this transaction sees them, active and sealed.
    fn view(&self) -> Blocks<'_, Table<'t, (u32, u64), Val>, SealedTable<'t>> {
        Blocks {
            active: &self.blocks,
            sealed: &self.sealed,
            segs: self.segs,
        }
    }

    /// The current (overlaid) entry of a stream.
    fn entry(&self, name: &str) -> Option<StreamEntry> {
        match self.over.get(name) {
            Some(e) => e.clone(),
            None => self.base.streams.get(name).cloned(),
        }
    }

    /// The current state of a stream, without cloning its config.
    fn state_of(&self, name: &str) -> Option<(u32, StateRec)> {
        match self.over.get(name) {
            Some(e) => e.as_ref().map(|e| (e.id, e.state)),
            None => self.base.streams.get(name).map(|e| (e.id, e.state)),
        }
    }

    fn set_state(&mut self, name: &str, state: StateRec) {
        if let Some(Some(e)) = self.over.get_mut(name) {
            e.state = state;
            return;
        }
        if let Some(mut e) = self.base.streams.get(name).cloned() {
            e.state = state;
            self.over.insert(name.to_string(), Some(e));
        }
    }

    fn subject_get(&mut self, id: u32, s: &str) -> Result<Option<SubjectRec>, StoreError> {
        if let Some((r, _)) = self.subj.get(&id).and_then(|m| m.get(s)) {
            return Ok(*r);
        }
        let r = match self.subjects.get((id, s))? {
            Some(v) => Some(format::decode::<SubjectRec>(v.value())?),
            None => None,
        };
        self.subj
            .entry(id)
            .or_default()
            .insert(s.to_string(), (r, false));
        Ok(r)
    }

    fn subject_set(&mut self, id: u32, s: &str, r: Option<SubjectRec>) {
        let m = self.subj.entry(id).or_default();
        match m.get_mut(s) {
            Some(e) => *e = (r, true),
            None => {
                m.insert(s.to_string(), (r, true));
            }
        }
    }

    fn create(&mut self, name: &str, config: &[u8]) -> OpResult {
        if name.is_empty() {
            return Ok(Err(StoreError::Invalid("empty stream name".into())));
        }
        if self.entry(name).is_some() {
            return Ok(Err(StoreError::AlreadyExists(name.to_string())));
        }
        let id = self.next_id;
        let Some(next) = id.checked_add(1) else {
            return Ok(Err(StoreError::InsufficientResources(
                "stream ids exhausted".into(),
            )));
        };
        self.next_id = next;
        self.meta
            .insert(format::META_NEXT_ID, format::u32_bytes(next).as_slice())?;
        let def = StreamDef {
            id,
            config: config.to_vec(),
        };
        self.streams.insert(name, encode(&def)?.as_slice())?;
        let state = StateRec::default();
        self.over.insert(
            name.to_string(),
            Some(StreamEntry {
                id,
                config: Bytes::copy_from_slice(config),
                state,
                retain: Retain::default(),
                compress: false,
            }),
        );
        Ok(Ok(Done::State(state.into())))
    }

    fn update_config(&mut self, name: &str, config: &[u8]) -> OpResult {
        let Some(mut e) = self.entry(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        let def = StreamDef {
            id: e.id,
            config: config.to_vec(),
        };
        self.streams.insert(name, encode(&def)?.as_slice())?;
        e.config = Bytes::copy_from_slice(config);
        self.over.insert(name.to_string(), Some(e));
        Ok(Ok(Done::Unit))
    }

    fn delete_stream(&mut self, name: &str) -> OpResult {
        let Some((id, _)) = self.state_of(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        self.pending.remove(&id);
        self.subj.remove(&id);
        self.remove_all_blocks(id)?;
        self.subjects
            .retain_in((id, "")..(id + 1, ""), |_, _| false)?;
        self.consumers
            .retain_in((id, "")..(id + 1, ""), |_, _| false)?;
        self.states.remove(id)?;
        self.streams.remove(name)?;
        self.over.insert(name.to_string(), None);
        self.freed = true;
        Ok(Ok(Done::Unit))
    }

    fn append(&mut self, name: &str, msgs: &'o [NewMessage], after: Option<u64>) -> OpResult {
        let Some((id, mut st)) = self.state_of(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        if let Err(e) = Self::check_append(&st, after, msgs.iter(), self.full) {
            return Ok(Err(e));
        }
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            out.push(self.append_one(id, &mut st, m)?);
        }
        self.set_state(name, st);
        Ok(Ok(Done::Appended(out)))
    }

    /// Why messages `msgs` may not be appended to a stream in state `st` (`after`: the last
    /// sequence the stream must have), if they may not.
    fn check_append<'m>(
        st: &StateRec,
        after: Option<u64>,
        mut msgs: impl Iterator<Item = &'m NewMessage>,
        full: bool,
    ) -> Result<(), StoreError> {
        if let Some(required) = after.filter(|&r| r != st.last_seq) {
            return Err(StoreError::LastSeqMismatch {
                required,
                found: st.last_seq,
            });
        }
        if let Some(m) = msgs.find(|m| !subject::is_message_subject(&m.subject)) {
            return Err(StoreError::Invalid(format!(
                "subject {:?} is not a valid subject",
                m.subject
            )));
        }
        if full {
            return Err(StoreError::InsufficientResources(
                "store is full; free space (purge/delete) first".into(),
            ));
        }
        Ok(())
    }

    /// Appends one checked message to stream `id`, whose state `st` is updated (and written
    /// back by the caller).
    fn append_one(
        &mut self,
        id: u32,
        st: &mut StateRec,
        m: &'o NewMessage,
    ) -> Result<Appended, StoreError> {
        let seq = st.last_seq + 1;
        let size = format::msg_size(
            &m.subject,
            m.headers.as_ref().map_or(0, Bytes::len),
            m.payload.len(),
        );
        if st.msgs == 0 {
            st.first_seq = seq;
            st.first_ts_ns = m.ts_ns;
        }
        st.last_seq = seq;
        st.last_ts_ns = m.ts_ns;
        st.msgs += 1;
        st.bytes += size;
        let mut prev_in_subject = 0;
        let rec = match self.subject_get(id, &m.subject)? {
            Some(mut r) => {
                prev_in_subject = r.last_seq;
                r.last_seq = seq;
                r.msgs += 1;
                r
            }
            None => {
                st.num_subjects += 1;
                SubjectRec {
                    first_seq: seq,
                    last_seq: seq,
                    msgs: 1,
                }
            }
        };
        self.subject_set(id, &m.subject, Some(rec));
        let p = self.pending.entry(id).or_insert_with(|| Pending {
            first_seq: seq,
            msgs: Vec::new(),
            bytes: 0,
        });
        p.msgs.push(m);
        p.bytes += size as usize;
        if p.bytes >= BLOCK_TARGET_BYTES {
            self.flush_pending(id)?;
        }
        Ok(Appended {
            seq,
            ts_ns: m.ts_ns,
            trimmed: 0,
            prev_in_subject,
        })
    }

    /// Appends each message as a separate one-message append would, collecting the
    /// outcomes (an outcome that fails the whole batch still fails it). The stream's state
    /// is looked up and written back once for all of them.
    fn append_each(&mut self, name: &str, items: &'o [(NewMessage, Option<u64>)]) -> OpResult {
        let Some((id, mut st)) = self.state_of(name) else {
            let e = StoreError::NotFound(format!("stream {name}"));
            let out = items.iter().map(|_| Err(e.replicate())).collect();
            return Ok(Ok(Done::Each(out)));
        };
        let mut out = Vec::with_capacity(items.len());
        for (msg, after) in items {
            out.push(
                match Self::check_append(&st, *after, std::iter::once(msg), self.full) {
                    Ok(()) => Ok(self.append_one(id, &mut st, msg)?),
                    Err(e) => Err(e),
                },
            );
        }
        if out.iter().any(Result::is_ok) {
            self.set_state(name, st);
        }
        Ok(Ok(Done::Each(out)))
    }

    /// Writes the open block of stream `id`, if any.
    fn flush_pending(&mut self, id: u32) -> Result<(), StoreError> {
        let Some(p) = self.pending.remove(&id) else {
            return Ok(());
        };
        let block = BlockRef {
            slots: p
                .msgs
                .iter()
                .map(|m| {
                    Some(MsgRef {
                        subject: &m.subject,
                        headers: m.headers.as_deref(),
                        payload: &m.payload,
                        ts_ns: m.ts_ns,
                    })
                })
                .collect(),
        };
        format::encode_into(&block, self.scratch)?;
        // A new block: its key (a sequence never used before) cannot be sealed.
        self.insert_block(id, p.first_seq)?;
        Ok(())
    }

    /// Stores the block encoded in `scratch` as block `first` of stream `id`: the encoding
    /// itself, or its compression when the stream compresses (see
    /// `format::COMPRESSED_MAGIC`).
    fn insert_block(&mut self, id: u32, first: u64) -> Result<(), StoreError> {
        let compress = self
            .over
            .values()
            .flatten()
            .chain(self.base.streams.values())
            .find(|e| e.id == id)
            .is_some_and(|e| e.compress);
        if compress {
            format::compress_block(self.scratch, &mut self.packed)?;
            self.blocks.insert((id, first), self.packed.as_slice())?;
            self.written += self.packed.len() as u64;
        } else {
            self.blocks.insert((id, first), self.scratch.as_slice())?;
            self.written += self.scratch.len() as u64;
        }
        Ok(())
    }

    /// Stores the block encoded in `scratch` in place of an existing block `first` of
    /// stream `id`, which may be sealed: the new version goes into the active file and the
    /// sealed one is released.
    fn rewrite_block(&mut self, id: u32, first: u64) -> Result<(), StoreError> {
        self.release_sealed(id, first)?;
        self.insert_block(id, first)
    }

    /// Removes block `first` of stream `id`, active or sealed.
    fn remove_block(&mut self, id: u32, first: u64) -> Result<(), StoreError> {
        if let Some(t) = self.touched.as_deref_mut() {
            t.keys.insert((id, first));
        }
        if self.blocks.remove((id, first))?.is_none() {
            self.release_sealed(id, first)?;
        }
        Ok(())
    }

    /// Takes block `first` of stream `id` out of `sealed`, if it is there, counting it
    /// against its segment; and records the key as touched for a running sealer.
    fn release_sealed(&mut self, id: u32, first: u64) -> Result<(), StoreError> {
        if let Some(t) = self.touched.as_deref_mut() {
            t.keys.insert((id, first));
        }
        if let Some(n) = self.sealed.remove((id, first))? {
            *self.released.entry(n.value()).or_default() += 1;
        }
        Ok(())
    }

    /// Removes every block of stream `id`, active and sealed.
    fn remove_all_blocks(&mut self, id: u32) -> Result<(), StoreError> {
        if let Some(t) = self.touched.as_deref_mut() {
            t.ids.insert(id);
        }
        self.blocks
            .retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)?;
        let released = &mut self.released;
        self.sealed.retain_in((id, 0u64)..=(id, u64::MAX), |_, n| {
            *released.entry(n).or_default() += 1;
            false
        })?;
        Ok(())
    }

    /// Sets whether stream `name` compresses the blocks it writes.
    fn set_compression(&mut self, name: &str, compress: bool) -> OpResult {
        let Some(mut entry) = self.entry(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        entry.compress = compress;
        self.over.insert(name.to_string(), Some(entry));
        Ok(Ok(Done::Unit))
    }

    /// Writes back a modified block, or removes it when no live message is left.
    fn put_block(&mut self, id: u32, first: u64, block: &BlockRec) -> Result<(), StoreError> {
        if block.slots.iter().all(Option::is_none) {
            self.remove_block(id, first)?;
        } else {
            format::encode_into(block, self.scratch)?;
            self.rewrite_block(id, first)?;
        }
        Ok(())
    }

    /// First live message at or after `from`: (seq, ts).
    fn first_live(&self, id: u32, from: u64) -> Result<Option<(u64, i64)>, StoreError> {
        let mut found = None;
        scan_forward(&self.view(), id, from, |seq, m| {
            found = Some((seq, m.ts_ns));
            false
        })?;
        Ok(found)
    }

    /// Re-derives first_seq / first_ts after removals at the front.
    fn fix_first(&self, id: u32, st: &mut StateRec) -> Result<(), StoreError> {
        if st.msgs == 0 {
            st.first_seq = st.last_seq + 1;
            st.first_ts_ns = 0;
            return Ok(());
        }
        match self.first_live(id, st.first_seq)? {
            Some((seq, ts)) => {
                st.first_seq = seq;
                st.first_ts_ns = ts;
                Ok(())
            }
            None => Err(StoreError::Corrupt(format!(
                "stream {id} counts {} messages but none is stored",
                st.msgs
            ))),
        }
    }

    fn delete_msg(&mut self, name: &str, seq: u64) -> OpResult {
        let Some((id, mut st)) = self.state_of(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        self.flush_pending(id)?;
        let Some((first, mut block)) = block_containing(&self.view(), id, seq)? else {
            return Ok(Ok(Done::Bool(false)));
        };
        let idx = usize::try_from(seq - first).map_err(|_| StoreError::Corrupt("slot".into()))?;
        let Some(m) = block.slots.get_mut(idx).and_then(Option::take) else {
            return Ok(Ok(Done::Bool(false)));
        };
        self.put_block(id, first, &block)?;
        self.freed = true;
        st.msgs = st.msgs.saturating_sub(1);
        st.bytes = st.bytes.saturating_sub(m.size());
        if let Some(mut r) = self.subject_get(id, &m.subject)? {
            r.msgs = r.msgs.saturating_sub(1);
            if r.msgs == 0 {
                st.num_subjects = st.num_subjects.saturating_sub(1);
                self.subject_set(id, &m.subject, None);
            } else {
                if seq == r.first_seq {
                    let mut next = None;
                    scan_forward(&self.view(), id, seq + 1, |s, x| {
                        if x.subject == m.subject {
                            next = Some(s);
                            return false;
                        }
                        s < r.last_seq
                    })?;
                    r.first_seq = next.ok_or_else(|| {
                        StoreError::Corrupt(format!("subject index of {} is off", m.subject))
                    })?;
                }
                if seq == r.last_seq {
                    let mut prev = None;
                    super::read::scan_backward(&self.view(), id, seq - 1, |s, x| {
                        if x.subject == m.subject {
                            prev = Some(s);
                            return false;
                        }
                        s > r.first_seq
                    })?;
                    r.last_seq = prev.ok_or_else(|| {
                        StoreError::Corrupt(format!("subject index of {} is off", m.subject))
                    })?;
                }
                self.subject_set(id, &m.subject, Some(r));
            }
        }
        if seq == st.first_seq || st.msgs == 0 {
            self.fix_first(id, &mut st)?;
        }
        self.set_state(name, st);
        Ok(Ok(Done::Bool(true)))
    }

    fn purge(&mut self, name: &str, req: &PurgeRequest) -> OpResult {
        let Some((id, mut st)) = self.state_of(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        self.flush_pending(id)?;
        let filter = req.filter.as_deref().filter(|f| !f.is_empty() && *f != ">");
        if st.msgs == 0 {
            return Ok(Ok(Done::Count(0)));
        }
        // Everything: drop the whole key ranges.
        if filter.is_none() && req.up_to_seq.is_none() && req.keep.is_none() {
            let n = st.msgs;
            self.remove_all_blocks(id)?;
            self.subjects
                .retain_in((id, "")..(id + 1, ""), |_, _| false)?;
            self.subj.remove(&id);
            st.msgs = 0;
            st.bytes = 0;
            st.num_subjects = 0;
            self.fix_first(id, &mut st)?;
            self.set_state(name, st);
            self.freed = true;
            return Ok(Ok(Done::Count(n)));
        }
        let matches = |s: &str| filter.is_none_or(|f| subject::matches(f, s));
        // The purged set is always a prefix (by seq) of the matching messages: everything
        // matching with seq <= cutoff.
        let mut cutoff = match req.up_to_seq {
            Some(0) => return Ok(Ok(Done::Count(0))),
            Some(u) => (u - 1).min(st.last_seq),
            None => st.last_seq,
        };
        if let Some(keep) = req.keep {
            let mut seqs = Vec::new();
            scan_forward(&self.view(), id, st.first_seq, |seq, m| {
                if matches(m.subject) {
                    seqs.push(seq);
                }
                true
            })?;
            let n = seqs.len() as u64;
            if n <= keep {
                return Ok(Ok(Done::Count(0)));
            }
            let idx = usize::try_from(n - keep - 1).unwrap_or(usize::MAX);
            let Some(&s) = seqs.get(idx) else {
                return Ok(Ok(Done::Count(0)));
            };
            cutoff = cutoff.min(s);
        }
        // Pass over the blocks up to the cutoff, tombstoning matches. Blocks are read as
        // borrowed views: a block purged whole is only counted, never copied.
        let mut rewrites: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
        let mut per_subject: HashMap<String, u64> = HashMap::new();
        let mut count = 0u64;
        let mut bytes = 0u64;
        let view = Blocks {
            active: &self.blocks,
            sealed: &self.sealed,
            segs: self.segs,
        };
        let unpacked = &mut self.unpacked;
        view.for_each(id, 0, cutoff, false, |first, v| {
            let mut block: BlockRef<'_> = format::decode(format::block_bytes(v, unpacked)?)?;
            let mut changed = false;
            for (i, slot) in block.slots.iter_mut().enumerate() {
                let seq = first + i as u64;
                if seq > cutoff {
                    break;
                }
                if slot.as_ref().is_some_and(|m| matches(m.subject)) {
                    if let Some(m) = slot.take() {
                        count += 1;
                        bytes += m.size();
                        match per_subject.get_mut(m.subject) {
                            Some(n) => *n += 1,
                            None => {
                                per_subject.insert(m.subject.to_string(), 1);
                            }
                        }
                        changed = true;
                    }
                }
            }
            if changed {
                let rest = if block.slots.iter().all(Option::is_none) {
                    None
                } else {
                    Some(format::encode(&block)?)
                };
                rewrites.push((first, rest));
            }
            Ok(true)
        })?;
        for (first, rest) in rewrites {
            match rest {
                None => self.remove_block(id, first)?,
                Some(b) => {
                    *self.scratch = b;
                    self.rewrite_block(id, first)?;
                }
            }
        }
        if count == 0 {
            return Ok(Ok(Done::Count(0)));
        }
        self.freed = true;
        // Subject index: each touched subject lost all its messages <= cutoff.
        let mut need_first: HashSet<String> = HashSet::new();
        for (s, n) in per_subject {
            let Some(mut r) = self.subject_get(id, &s)? else {
                return Err(StoreError::Corrupt(format!(
                    "subject {s} missing from index"
                )));
            };
            r.msgs = r.msgs.saturating_sub(n);
            if r.msgs == 0 {
                st.num_subjects = st.num_subjects.saturating_sub(1);
                self.subject_set(id, &s, None);
            } else {
                self.subject_set(id, &s, Some(r));
                need_first.insert(s);
            }
        }
        if !need_first.is_empty() {
            let mut found: Vec<(String, u64)> = Vec::new();
            scan_forward(&self.view(), id, cutoff + 1, |seq, m| {
                if need_first.remove(m.subject) {
                    found.push((m.subject.to_string(), seq));
                }
                !need_first.is_empty()
            })?;
            if let Some(s) = need_first.into_iter().next() {
                return Err(StoreError::Corrupt(format!("subject index of {s} is off")));
            }
            for (s, seq) in found {
                if let Some(mut r) = self.subject_get(id, &s)? {
                    r.first_seq = seq;
                    self.subject_set(id, &s, Some(r));
                }
            }
        }
        st.msgs = st.msgs.saturating_sub(count);
        st.bytes = st.bytes.saturating_sub(bytes);
        self.fix_first(id, &mut st)?;
        self.set_state(name, st);
        Ok(Ok(Done::Count(count)))
    }

    fn put_consumer(&mut self, stream: &str, name: &str, blob: &[u8]) -> OpResult {
        let Some((id, _)) = self.state_of(stream) else {
            return Ok(Err(StoreError::NotFound(format!("stream {stream}"))));
        };
        if name.is_empty() {
            return Ok(Err(StoreError::Invalid("empty consumer name".into())));
        }
        self.consumers.insert((id, name), blob)?;
        Ok(Ok(Done::Unit))
    }

    fn delete_consumer(&mut self, stream: &str, name: &str) -> OpResult {
        let Some((id, _)) = self.state_of(stream) else {
            return Ok(Err(StoreError::NotFound(format!("stream {stream}"))));
        };
        let existed = self.consumers.remove((id, name))?.is_some();
        Ok(Ok(Done::Bool(existed)))
    }

    /// Moves a stream's definition (its messages stay under its id, unreferenced) or a
    /// consumer's record into the quarantine table, bytes unchanged.
    fn quarantine(&mut self, target: &QuarantineTarget, reason: &str) -> OpResult {
        let what = target.key();
        let at = quarantine::now_ns();
        match target {
            QuarantineTarget::Stream(name) => {
                let Some((id, _)) = self.state_of(name) else {
                    return Ok(Ok(Done::Bool(false)));
                };
                let Some(bytes) = self
                    .streams
                    .remove(name.as_str())?
                    .map(|v| v.value().to_vec())
                else {
                    return Ok(Ok(Done::Bool(false)));
                };
                quarantine::put(&mut self.quarantine, &what, at, reason, &bytes)?;
                self.pending.remove(&id);
                self.subj.remove(&id);
                self.over.insert(name.to_string(), None);
            }
            QuarantineTarget::Consumer(stream, name) => {
                let Some((id, _)) = self.state_of(stream) else {
                    return Ok(Ok(Done::Bool(false)));
                };
                let Some(bytes) = self
                    .consumers
                    .remove((id, name.as_str()))?
                    .map(|v| v.value().to_vec())
                else {
                    return Ok(Ok(Done::Bool(false)));
                };
                quarantine::put(&mut self.quarantine, &what, at, reason, &bytes)?;
            }
        }
        Ok(Ok(Done::Bool(true)))
    }

    /// Writes the open blocks, the dirty subject entries and the touched stream states, and
    /// the counts of the segments this batch took blocks out of.
    fn finish(mut self) -> Result<Finished, StoreError> {
        let ids: Vec<u32> = self.pending.keys().copied().collect();
        for id in ids {
            self.flush_pending(id)?;
        }
        let mut dead = Vec::new();
        let mut sparse = Vec::new();
        for (n, released) in std::mem::take(&mut self.released) {
            let (held, total) = match self.segments.get(n)? {
                Some(v) => v.value(),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "sealed blocks name segment {n}, which the store does not list"
                    )))
                }
            };
            match held.checked_sub(released) {
                Some(0) => {
                    self.segments.remove(n)?;
                    dead.push(n);
                }
                Some(left) => {
                    self.segments.insert(n, (left, total))?;
                    if seal::is_sparse(left, total) {
                        sparse.push(n);
                    }
                }
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "segment {n} lists {held} blocks, {released} were taken out"
                    )))
                }
            }
        }
        for (id, entries) in &self.subj {
            for (s, (r, dirty)) in entries {
                if !dirty {
                    continue;
                }
                match r {
                    Some(r) => {
                        self.subjects
                            .insert((*id, s.as_str()), encode(r)?.as_slice())?;
                    }
                    None => {
                        self.subjects.remove((*id, s.as_str()))?;
                    }
                }
            }
        }
        for e in self.over.values().flatten() {
            self.states.insert(e.id, encode(&e.state)?.as_slice())?;
        }
        Ok(Finished {
            overlay: self.over,
            next_id: self.next_id,
            freed: self.freed,
            dead,
            sparse,
            written: self.written,
            active_blocks: self.blocks.len()?,
        })
    }
}

/// The `sealed` table in a write transaction.
type SealedTable<'t> = Table<'t, (u32, u64), u64>;

/// What a batch leaves for the writer to act on once it committed.
struct Finished {
    /// The streams it changed (`None`: deleted).
    overlay: HashMap<String, Option<StreamEntry>>,
    next_id: u32,
    /// It freed space (a delete or purge).
    freed: bool,
    /// Segments no `sealed` entry names any more: their files go after the commit.
    dead: Vec<u64>,
    /// Segments it left named by a quarter of their blocks or fewer.
    sparse: Vec<u64>,
    /// Bytes of block values written into the active file.
    written: u64,
    /// Blocks in the active file after it.
    active_blocks: u64,
}
