//! # leaf-store: the JetStream storage engine of leafd and hubd
//!
//! Streams of messages in one redb file, written by a single group-commit writer thread.
//! The crate knows nothing of NATS or JetStream's API: streams, messages, purges and opaque
//! consumer records (the `jetstream` module of `leaf-core` builds on it).
//!
//! Durability contract: every write method returns a future that resolves `Ok` only after
//! the redb commit holding the write was made durable (`Durability::Immediate`, one fsync);
//! the one exception, [`Store::append_each_lazy`], says so (followed by [`Store::sync`]).
//! Concurrent and pipelined callers share commits: the writer takes everything queued while
//! the previous commit was in flight (up to [`StoreOptions::max_batch`]) into one transaction.
//! The write methods send their operation to the writer *when called* (not when first
//! polled), so calling `append` twice and awaiting later keeps the call order.
//!
//! Readers use their own redb read transactions and are never blocked by the writer. The
//! futures need no tokio runtime (only `tokio::sync::oneshot`). See `DESIGN.md` for the
//! on-disk format and the crash-safety argument (`store/DESIGN.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), leaf_store::StoreError> {
//! use leaf_store::{NewMessage, Store, StoreOptions};
//! let store = Store::open(std::path::Path::new("/var/lib/leafd"), StoreOptions::default())?;
//! store.create_stream("ORDERS", b"{}".to_vec()).await?;
//! let ack = store
//!     .append("ORDERS", NewMessage::new("orders.new", &b"hello"[..], 0))
//!     .await?; // durable from here on
//! assert_eq!(store.get("ORDERS", ack.seq)?.map(|m| m.payload), Some((&b"hello"[..]).into()));
//! # Ok(()) }
//! ```

mod backend;
mod error;
mod format;
mod migrate;
mod quarantine;
mod queue;
mod read;
mod repair;
mod segments;
mod subject;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

pub use error::StoreError;
pub use format::{msg_size, FORMAT_VERSION};
pub use quarantine::{Quarantined, Target as QuarantineTarget};
pub use repair::{QuickRepair, IDLE_BEFORE_RECORD};

use backend::{BackendFactory, LimitBackend};
use format::{decode, StateRec, StreamDef, SubjectRec};
use queue::OpQueue;
use writer::{Lazy, Op, Writer};

/// The database file's name inside the store directory.
pub const FILE_NAME: &str = "leaf.redb";

/// Options of [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Appends fail with [`StoreError::InsufficientResources`] once a commit would write
    /// past this offset of the file. Deletes and purges get 1/8 (at least 4 MiB) headroom so
    /// space can always be freed. `None`: no limit besides the disk.
    pub max_file_bytes: Option<u64>,
    /// Most operations (messages, for appends) in one group commit. Default 4096.
    pub max_batch: usize,
    /// Most message bytes (subjects, headers, payloads) in one group commit, besides
    /// `max_batch`; a commit takes at least one operation whatever its size. Default 4 MiB.
    pub max_batch_bytes: u64,
    /// redb page cache size in bytes. Default 32 MiB.
    pub cache_bytes: usize,
    /// When redb's allocator state is recorded, so that an open after a crash need not walk
    /// the whole file. Default [`QuickRepair::WhenIdle`] after [`IDLE_BEFORE_RECORD`];
    /// [`Store::open_memory`] ignores it (nothing to recover).
    pub quick_repair: QuickRepair,
    /// Once this many bytes of blocks were written into the active file (`leaf.redb`) since
    /// the last seal, a background thread moves its blocks into a sealed segment file
    /// (`seg-<n>.redb`, written once and closed cleanly), so that the file an open after a
    /// crash must walk stays about this small. Default [`SEAL_BYTES`]; `None`: never (every
    /// block stays in the active file). Stores without a directory never seal.
    pub seal_bytes: Option<u64>,
}

/// The default [`StoreOptions::seal_bytes`]: 32 MiB (an open after a crash walks about
/// this much, ~20 ms on the machine of `BENCHMARKS.md`).
pub const SEAL_BYTES: u64 = 32 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_file_bytes: None,
            max_batch: 4096,
            max_batch_bytes: 4 << 20,
            cache_bytes: 32 << 20,
            quick_repair: QuickRepair::default(),
            seal_bytes: Some(SEAL_BYTES),
        }
    }
}

/// A stream's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Sequence of the oldest stored message; `last_seq + 1` when the stream is empty (0 for
    /// a stream that never held a message).
    pub first_seq: u64,
    /// Sequence of the newest message ever appended (deletes do not lower it).
    pub last_seq: u64,
    /// Stored messages.
    pub msgs: u64,
    /// Sum of subject + headers + payload lengths of the stored messages.
    pub bytes: u64,
    /// Timestamp of the oldest stored message (0 when empty).
    pub first_ts_ns: i64,
    /// Timestamp of the newest appended message.
    pub last_ts_ns: i64,
    /// Distinct subjects among the stored messages.
    pub num_subjects: u64,
    /// Deleted sequence numbers between `first_seq` and `last_seq`.
    pub num_deleted: u64,
}

impl From<StateRec> for StreamState {
    fn from(s: StateRec) -> Self {
        let span = if s.msgs == 0 {
            0
        } else {
            s.last_seq - s.first_seq + 1
        };
        StreamState {
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            msgs: s.msgs,
            bytes: s.bytes,
            first_ts_ns: s.first_ts_ns,
            last_ts_ns: s.last_ts_ns,
            num_subjects: s.num_subjects,
            num_deleted: span.saturating_sub(s.msgs),
        }
    }
}

/// One subject's entry in a stream's subject index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectState {
    /// Oldest stored sequence with this subject.
    pub first_seq: u64,
    /// Newest stored sequence with this subject.
    pub last_seq: u64,
    /// Stored messages with this subject.
    pub msgs: u64,
}

/// A page of a stream's subjects with their message counts ([`Store::subject_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectCounts {
    /// How many subjects match the filter.
    pub total: usize,
    /// The requested page: subject and stored messages, in subject order.
    pub page: Vec<(String, u64)>,
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Literal subject (no wildcards).
    pub subject: String,
    /// Raw NATS header block, if any.
    pub headers: Option<Bytes>,
    /// Payload.
    pub payload: Bytes,
    /// Timestamp (ns since the Unix epoch), chosen by the caller.
    pub ts_ns: i64,
}

impl NewMessage {
    /// A message without headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>, ts_ns: i64) -> Self {
        NewMessage {
            subject: subject.into(),
            headers: None,
            payload: payload.into(),
            ts_ns,
        }
    }
}

/// The acknowledgement of one appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number.
    pub seq: u64,
    /// Its timestamp.
    pub ts_ns: i64,
    /// Older messages the stream's [`Retain`] limits removed in the same commit (counted on
    /// the last message of an append operation).
    pub trimmed: u64,
    /// The newest sequence with the same subject before this message (0: none).
    pub prev_in_subject: u64,
}

/// The limits a stream with JetStream's `discard: old` is kept within: enforced by the
/// writer right after each append operation, in the same commit, so no reader ever sees the
/// stream over them and an acknowledged append already has them applied. Held in memory
/// (see [`Store::set_retain`]); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retain {
    /// Keep at most this many messages (the oldest go first).
    pub max_msgs: Option<u64>,
    /// Keep at most this many bytes (as [`StreamState::bytes`] counts them; the oldest go
    /// first).
    pub max_bytes: Option<u64>,
    /// Keep at most this many messages per subject (the oldest of the subject go first).
    pub max_msgs_per_subject: Option<u64>,
}

impl Retain {
    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_msgs.is_none() && self.max_bytes.is_none() && self.max_msgs_per_subject.is_none()
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Sequence number.
    pub seq: u64,
    /// Subject.
    pub subject: String,
    /// Raw header block, if any.
    pub headers: Option<Bytes>,
    /// Payload.
    pub payload: Bytes,
    /// Timestamp given at append.
    pub ts_ns: i64,
}

/// What [`Store::purge`] removes: the messages matching `filter` (all if `None`) with
/// seq < `up_to_seq` (if set), except the newest `keep` matching messages (if set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeRequest {
    /// Subject filter (wildcards allowed); `None`, `""` or `">"` match everything.
    pub filter: Option<String>,
    /// Exclusive upper bound (JetStream's purge `seq`).
    pub up_to_seq: Option<u64>,
    /// Keep this many of the newest matching messages.
    pub keep: Option<u64>,
}

/// A stream as cached in memory.
#[derive(Debug, Clone)]
pub(crate) struct StreamEntry {
    pub(crate) id: u32,
    pub(crate) config: Bytes,
    pub(crate) state: StateRec,
    /// The limits applied after each append (in memory only: set again by the stream's
    /// owner when the store is opened).
    pub(crate) retain: Retain,
    /// Blocks written from now on are compressed (in memory only, like `retain`; blocks of
    /// both kinds are read whatever it says).
    pub(crate) compress: bool,
}

/// In-memory copy of the streams table and states, updated only after a successful commit.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub(crate) streams: HashMap<String, StreamEntry>,
    pub(crate) next_id: u32,
}

/// State shared by the handles and the writer thread.
pub(crate) struct Shared {
    /// The database; `None` only while the writer reopens it. The writer holds the read
    /// lock for a batch, `compact` and reopen take the write lock.
    pub(crate) db: RwLock<Option<Database>>,
    pub(crate) cache: RwLock<Cache>,
    /// Successful commits since open (diagnostics and tests).
    pub(crate) commits: AtomicU64,
    /// Current write limit of the backend (u64::MAX for none).
    pub(crate) limit: Arc<AtomicU64>,
    /// Current file length.
    pub(crate) len: Arc<AtomicU64>,
    factory: BackendFactory,
    cache_bytes: usize,
    /// When the allocator state is recorded (`StoreOptions::quick_repair`).
    pub(crate) quick_repair: QuickRepair,
    /// The newest commit recorded redb's allocator state (tests wait for it).
    pub(crate) recorded: std::sync::atomic::AtomicBool,
    /// The sealed segment files the newest commit names.
    pub(crate) segs: segments::Segments,
    /// Their size on disk.
    pub(crate) sealed_bytes: AtomicU64,
    /// A sealer is at work (tests wait for it).
    pub(crate) sealing: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Opens the database through the factory, checks the format and loads the cache.
    fn open_db(&self) -> Result<(Database, Cache), StoreError> {
        let backend = (self.factory)()?;
        let db = redb::Builder::new()
            .set_cache_size(self.cache_bytes)
            .create_with_backend(LimitBackend::new(
                backend,
                self.limit.clone(),
                self.len.clone(),
            ))?;
        let record = self.quick_repair.every_commit();
        init_format(&db, record)?;
        let (cache, bad) = load_cache(&db)?;
        if !bad.is_empty() {
            quarantine_at_open(&db, &bad, record)?;
        }
        Ok((db, cache))
    }

    /// Closes and reopens the database (after redb latched an I/O failure). Readers wait.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        drop(db.take());
        let (new_db, cache) = self.open_db()?;
        *db = Some(new_db);
        *self.cache.write().unwrap_or_else(PoisonError::into_inner) = cache;
        tracing::info!("store reopened after a failed commit");
        Ok(())
    }
}

/// Creates `dir` and any missing parents with mode 0700 (set exactly: the umask only takes
/// bits away). An existing directory is left as it is (a systemd `StateDirectory=` has the
/// mode its unit gives it).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the tables and writes the format version into a new file; checks it otherwise.
fn init_format(db: &Database, record: bool) -> Result<(), StoreError> {
    // Read the version and let go of the read transaction before any migration writes.
    let found = {
        let r = db.begin_read()?;
        match r.open_table(format::META) {
            Ok(t) => match t.get(format::META_VERSION)? {
                Some(v) => Some(format::u32_from(v.value())?),
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match found {
        Some(1) => return migrate::from_v1(db),
        Some(2) => return migrate::from_v2(db),
        Some(3) => return migrate::from_v3(db),
        Some(FORMAT_VERSION) => return Ok(()),
        Some(found) => {
            return Err(StoreError::Version {
                found,
                supported: FORMAT_VERSION,
            })
        }
        None => {}
    }
    let txn = repair::begin_write(db, record)?;
    {
        let mut meta = txn.open_table(format::META)?;
        meta.insert(
            format::META_VERSION,
            format::u32_bytes(FORMAT_VERSION).as_slice(),
        )?;
        meta.insert(format::META_NEXT_ID, format::u32_bytes(1).as_slice())?;
        txn.open_table(format::STREAMS)?;
        txn.open_table(format::STATES)?;
        txn.open_table(format::BLOCKS)?;
        txn.open_table(format::SEALED)?;
        txn.open_table(format::SEGMENTS)?;
        txn.open_table(format::SUBJECTS)?;
        txn.open_table(format::CONSUMERS)?;
    }
    txn.commit()?;
    Ok(())
}

/// The unsealed bytes the last clean close recorded, if it did (see `format::META_UNSEALED`).
fn recorded_unsealed(db: &Database) -> Result<Option<u64>, StoreError> {
    let r = db.begin_read()?;
    let meta = r.open_table(format::META)?;
    let value = meta.get(format::META_UNSEALED)?;
    let Some(v) = value else {
        return Ok(None);
    };
    match <[u8; 8]>::try_from(v.value()) {
        Ok(b) => Ok(Some(u64::from_le_bytes(b))),
        Err(_) => {
            // Only a hint: the file's length stands in for it.
            tracing::warn!("meta unsealed_bytes is not 8 bytes; ignored");
            Ok(None)
        }
    }
}

/// The segments the newest commit names, and those of them that are sparse (named by a
/// quarter of their blocks or fewer: the writer unseals them).
#[allow(clippy::type_complexity)]
fn live_segments(
    db: &Database,
) -> Result<
    (
        std::collections::HashSet<u64>,
        std::collections::BTreeSet<u64>,
    ),
    StoreError,
> {
    let r = db.begin_read()?;
    let table = r.open_table(format::SEGMENTS)?;
    let mut live = std::collections::HashSet::new();
    let mut sparse = std::collections::BTreeSet::new();
    for e in table.iter()? {
        let (k, v) = e?;
        let (held, total) = v.value();
        live.insert(k.value());
        if writer::is_sparse(held, total) {
            sparse.insert(k.value());
        }
    }
    Ok((live, sparse))
}

/// A stream definition that cannot be read at open: (name, its bytes, why).
type BadStream = (String, Vec<u8>, String);

/// Reads the streams, their states and the next stream id. A stream whose definition or
/// state record cannot be decoded is left out of the cache and returned, to be quarantined.
fn load_cache(db: &Database) -> Result<(Cache, Vec<BadStream>), StoreError> {
    let r = db.begin_read()?;
    let meta = r.open_table(format::META)?;
    let next_id = match meta.get(format::META_NEXT_ID)? {
        Some(v) => format::u32_from(v.value())?,
        None => return Err(StoreError::Corrupt("meta lacks next_stream_id".into())),
    };
    let streams = r.open_table(format::STREAMS)?;
    let states = r.open_table(format::STATES)?;
    let mut cache = Cache {
        streams: HashMap::new(),
        next_id,
    };
    let mut bad = Vec::new();
    for e in streams.iter()? {
        let (k, v) = e?;
        let name = k.value().to_string();
        let def: StreamDef = match decode(v.value()) {
            Ok(d) => d,
            Err(e) => {
                bad.push((name, v.value().to_vec(), format!("stream definition: {e}")));
                continue;
            }
        };
        let state: StateRec = match states.get(def.id)? {
            Some(s) => match decode(s.value()) {
                Ok(s) => s,
                Err(e) => {
                    bad.push((name, v.value().to_vec(), format!("stream state: {e}")));
                    continue;
                }
            },
            None => {
                bad.push((name, v.value().to_vec(), "stream has no state".into()));
                continue;
            }
        };
        cache.streams.insert(
            name,
            StreamEntry {
                id: def.id,
                config: Bytes::from(def.config),
                state,
                retain: Retain::default(),
                compress: false,
            },
        );
    }
    Ok((cache, bad))
}

/// Moves the stream definitions `load_cache` could not read into the quarantine table (their
/// messages stay under their ids), so the names can be used again and nothing is lost.
fn quarantine_at_open(db: &Database, bad: &[BadStream], record: bool) -> Result<(), StoreError> {
    let at = quarantine::now_ns();
    let txn = repair::begin_write(db, record)?;
    {
        let mut streams = txn.open_table(format::STREAMS)?;
        let mut table = txn.open_table(format::QUARANTINE)?;
        for (name, bytes, reason) in bad {
            let what = quarantine::Target::Stream(name.clone()).key();
            quarantine::put(&mut table, &what, at, reason, bytes)?;
            streams.remove(name.as_str())?;
            tracing::error!(record = %what, reason = %reason, "store record quarantined");
        }
    }
    txn.commit()?;
    Ok(())
}

/// The active file's `blocks` table in a read transaction.
type ActiveTable = redb::ReadOnlyTable<(u32, u64), read::Val>;
/// The `sealed` table in a read transaction.
type SealedTable = redb::ReadOnlyTable<(u32, u64), u64>;

/// Opens the two tables that place a stream's blocks.
fn read_tables(txn: &redb::ReadTransaction) -> Result<(ActiveTable, SealedTable), StoreError> {
    Ok((
        txn.open_table(format::BLOCKS)?,
        txn.open_table(format::SEALED)?,
    ))
}

/// The handle: owns the writer thread's sender; the last clone's drop stops the writer
/// (after it finished the queued operations) and closes the file cleanly.
struct Inner {
    queue: Arc<OpQueue<Op>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            if t.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

/// The message store. Cheap to clone; all clones share one database and one writer thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("file_size", &self.file_size())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` (file `dir/leaf.redb`) and starts the
    /// writer thread. After an unclean stop redb first repairs the file: a scan of all its
    /// pages unless the last commit recorded the allocator state (`opts.quick_repair`, see
    /// `DESIGN.md`), so this may take a while on a large store. Directories it
    /// creates are mode 0700 and the file 0600, whatever the umask.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        Store::open_in(backend::file_factory(dir.join(FILE_NAME)), Some(dir), opts)
    }

    /// Opens a store held in memory only (JetStream's `storage: memory`): nothing is
    /// written to disk and nothing survives the process. `opts.max_file_bytes` bounds the
    /// memory image (`max_memory_store`); past it appends fail as on a full disk.
    pub fn open_memory(opts: StoreOptions) -> Result<Store, StoreError> {
        let opts = StoreOptions {
            quick_repair: QuickRepair::Off,
            ..opts
        };
        Store::open_with(backend::memory_factory(), opts)
    }

    /// Opens the store over any backend factory (tests plug in fault-injecting storage),
    /// without segment files.
    pub(crate) fn open_with(
        factory: BackendFactory,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        Store::open_in(factory, None, opts)
    }

    /// Opens the store over a backend factory; with `dir`, sealed segments live there.
    pub(crate) fn open_in(
        factory: BackendFactory,
        dir: Option<&Path>,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        let mut shared = Shared {
            db: RwLock::new(None),
            cache: RwLock::new(Cache::default()),
            commits: AtomicU64::new(0),
            limit: Arc::new(AtomicU64::new(u64::MAX)),
            len: Arc::new(AtomicU64::new(0)),
            factory,
            cache_bytes: opts.cache_bytes,
            quick_repair: opts.quick_repair,
            recorded: std::sync::atomic::AtomicBool::new(false),
            segs: segments::Segments::none(),
            sealed_bytes: AtomicU64::new(0),
            sealing: std::sync::atomic::AtomicBool::new(false),
        };
        let (db, cache) = shared.open_db()?;
        let mut sparse = std::collections::BTreeSet::new();
        let unsealed = match dir {
            Some(_) => recorded_unsealed(&db)?,
            None => None,
        };
        if let Some(dir) = dir {
            let (live, sparse_at_open) = live_segments(&db)?;
            sparse = sparse_at_open;
            shared.segs = segments::Segments::open(dir, live)?;
            shared.sealed_bytes = AtomicU64::new(shared.segs.bytes());
        }
        *shared.db.write().unwrap_or_else(PoisonError::into_inner) = Some(db);
        *shared.cache.write().unwrap_or_else(PoisonError::into_inner) = cache;
        let shared = Arc::new(shared);
        let queue = Arc::new(OpQueue::default());
        let writer = Writer {
            shared: shared.clone(),
            queue: queue.clone(),
            max_batch: opts.max_batch.max(1),
            max_batch_bytes: opts.max_batch_bytes.max(1),
            max_file_bytes: opts.max_file_bytes,
            full_since: None,
            needs_reopen: false,
            scratch: Vec::new(),
            // Recorded once after open too: a repair at open leaves no record.
            unrecorded: true,
            lazy_run: 0,
            seal_bytes: opts.seal_bytes.filter(|_| dir.is_some()).map(|b| b.max(1)),
            active_written: unsealed.unwrap_or(0),
            len_checked: unsealed.is_some(),
            sealing_from: 0,
            clear_unsealed: unsealed.is_some(),
            sealing: None,
            sparse,
            unsealing: None,
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())?;
        Ok(Store {
            inner: Arc::new(Inner {
                queue,
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Sends an op to the writer now; the returned future waits for its commit.
    fn submit<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.inner.queue.push(make(reply)).is_ok();
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Creates a stream with opaque `config` bytes. Fails with `AlreadyExists`.
    pub fn create_stream(
        &self,
        name: &str,
        config: Vec<u8>,
    ) -> impl Future<Output = Result<StreamState, StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::Create(name, config, r))
    }

    /// Sets the limits stream `name` is kept within after every later append (see
    /// [`Retain`]) and applies them at once; resolves with how many messages that removed.
    /// The operation is queued when this is called and operations are applied in order, so
    /// every append submitted after the call sees the limits (the future need not be
    /// awaited). Not persisted: the owner sets them again after opening the store. Fails
    /// with `NotFound`.
    pub fn set_retain(
        &self,
        name: &str,
        retain: Retain,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::SetRetain(name, retain, r))
    }

    /// Whether blocks of stream `name` written from now on are compressed (JetStream's
    /// `compression: s2`; Snappy at rest, see `DESIGN.md`). Queued at once, like
    /// [`Store::set_retain`]; not persisted. Fails with `NotFound`.
    pub fn set_compression(
        &self,
        name: &str,
        compress: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::SetCompression(name, compress, r))
    }

    /// Replaces a stream's config bytes. Fails with `NotFound`.
    pub fn update_stream_config(
        &self,
        name: &str,
        config: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::UpdateConfig(name, config, r))
    }

    /// Deletes a stream with all its messages, subject index entries and consumer blobs.
    pub fn delete_stream(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::DeleteStream(name, r))
    }

    /// Appends one message; resolves with its sequence number once it is durable.
    pub fn append(
        &self,
        name: &str,
        msg: NewMessage,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        let name = name.to_string();
        let f = self.submit(move |r| Op::Append(name, vec![msg], None, r));
        async move {
            f.await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("internal: empty append reply".into()))
        }
    }

    /// Appends one message only if the stream's last sequence is `last` when the writer
    /// applies it (otherwise [`StoreError::LastSeqMismatch`], nothing written). A publisher
    /// that pipelines appends uses it to make one depend on the previous one: if that one
    /// failed, the last sequence is not the one predicted, so this one fails too.
    pub fn append_after(
        &self,
        name: &str,
        msg: NewMessage,
        last: u64,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        let name = name.to_string();
        let f = self.submit(move |r| Op::Append(name, vec![msg], Some(last), r));
        async move {
            f.await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("internal: empty append reply".into()))
        }
    }

    /// Appends messages in order, each with its own optional expected last sequence (see
    /// [`Store::append_after`]) and its own outcome, exactly as that many separate `append`
    /// or `append_after` calls made back to back would, but as one queue entry with one
    /// reply: a publisher with many appends in flight pays the hand-over once per group.
    /// The outer error fails the whole group (nothing of it was written).
    pub fn append_each(
        &self,
        name: &str,
        items: Vec<(NewMessage, Option<u64>)>,
    ) -> impl Future<Output = Result<Vec<Result<Appended, StoreError>>, StoreError>> + Send + 'static
    {
        let name = name.to_string();
        self.submit(move |r| Op::AppendEach(name, items, Lazy::No, r))
    }

    /// [`Store::append_each`], but **not durable when it resolves**: the exception to the
    /// durability contract, for a caller that holds the messages durably elsewhere (a
    /// replicated stream's members, whose Raft log has them fsynced). A group of only such
    /// appends is committed without an fsync; a crash may lose it and every commit after it,
    /// never an earlier one (redb's commits are ordered). It becomes durable with the next
    /// durable commit of the store: any other write, [`Store::sync`], the idle record
    /// ([`QuickRepair::WhenIdle`]), or a lazy commit made durable anyway after 63 in a row
    /// (which bounds the pages redb keeps until a durable commit).
    pub fn append_each_lazy(
        &self,
        name: &str,
        items: Vec<(NewMessage, Option<u64>)>,
    ) -> impl Future<Output = Result<Vec<Result<Appended, StoreError>>, StoreError>> + Send + 'static
    {
        let name = name.to_string();
        self.submit(move |r| Op::AppendEach(name, items, Lazy::Yes, r))
    }

    /// Resolves once everything written before the call is durable (one durable commit,
    /// shared with whatever else is queued): after [`Store::append_each_lazy`].
    pub fn sync(&self) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.submit(Op::Sync)
    }

    /// Appends messages with consecutive sequence numbers, all in one commit.
    pub fn append_batch(
        &self,
        name: &str,
        msgs: Vec<NewMessage>,
    ) -> impl Future<Output = Result<Vec<Appended>, StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::Append(name, msgs, None, r))
    }

    /// Deletes one message (interior deletes allowed). `Ok(false)` if it was not stored.
    pub fn delete_msg(
        &self,
        name: &str,
        seq: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::DeleteMsg(name, seq, r))
    }

    /// Purges messages (see [`PurgeRequest`]); resolves with how many were removed.
    pub fn purge(
        &self,
        name: &str,
        req: PurgeRequest,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::Purge(name, req, r))
    }

    /// Removes the stored messages among `seqs` (any order, duplicates and sequences not
    /// stored are ignored) in one operation; resolves with how many were removed. Interest
    /// and workqueue retention remove acknowledged messages with it: many removals share one
    /// operation, and each touched block is rewritten once.
    pub fn remove_msgs(
        &self,
        name: &str,
        seqs: Vec<u64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let name = name.to_string();
        self.submit(move |r| Op::RemoveMsgs(name, seqs, r))
    }

    /// Takes the stream's next sequence without storing a message (nats-server's "skip"):
    /// `last_seq` advances, nothing else changes. Resolves like [`Store::append`], in order
    /// with the appends around it.
    pub fn skip(
        &self,
        name: &str,
        ts_ns: i64,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        self.skip_many(name, 1, ts_ns)
    }

    /// Takes the stream's next `n` sequences (at least one) without storing messages, in one
    /// operation (a mirror skipping what its origin removed). Resolves with the last one.
    pub fn skip_many(
        &self,
        name: &str,
        n: u64,
        ts_ns: i64,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send + 'static {
        let name = name.to_string();
        let n = n.max(1);
        let f = self.submit(move |r| Op::Skip(name, ts_ns, n, r));
        async move {
            f.await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("internal: empty skip reply".into()))
        }
    }

    /// Stores a consumer's opaque state blob (durable like appends, same group commit).
    pub fn put_consumer(
        &self,
        stream: &str,
        consumer: &str,
        state: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (stream, consumer) = (stream.to_string(), consumer.to_string());
        self.submit(move |r| Op::PutConsumer(stream, consumer, state, r))
    }

    /// Deletes a consumer blob; `Ok(false)` if there was none.
    pub fn delete_consumer(
        &self,
        stream: &str,
        consumer: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let (stream, consumer) = (stream.to_string(), consumer.to_string());
        self.submit(move |r| Op::DeleteConsumer(stream, consumer, r))
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.inner
            .shared
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// All streams: (name, config, state), sorted by name.
    pub fn streams(&self) -> Result<Vec<(String, Vec<u8>, StreamState)>, StoreError> {
        let mut v: Vec<_> = self
            .cache()
            .streams
            .iter()
            .map(|(n, e)| (n.clone(), e.config.to_vec(), e.state.into()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// A stream's counters, `None` if it does not exist.
    pub fn stream_state(&self, name: &str) -> Result<Option<StreamState>, StoreError> {
        Ok(self.cache().streams.get(name).map(|e| e.state.into()))
    }

    /// The stream's id, or `NotFound`.
    fn stream_id(&self, name: &str) -> Result<u32, StoreError> {
        self.cache()
            .streams
            .get(name)
            .map(|e| e.id)
            .ok_or_else(|| StoreError::NotFound(format!("stream {name}")))
    }

    /// Runs `f` in a read transaction.
    ///
    /// After a failed commit redb answers every call on the old handle with an I/O error until
    /// the writer has reopened the database. A read that lands in that window is retried on the
    /// new handle (bounded: about 200 ms), so a full disk fails writes but not reads.
    fn with_read<T>(
        &self,
        f: impl Fn(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempts = 0;
        loop {
            let result = {
                let db = self
                    .inner
                    .shared
                    .db
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                let db = db.as_ref().ok_or(StoreError::Closed)?;
                db.begin_read()
                    .map_err(StoreError::from)
                    .and_then(|txn| f(&txn))
            };
            match result {
                Err(StoreError::Io(_)) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                other => return other,
            }
        }
    }

    /// A stream's blocks wherever they live, as `txn` sees them.
    fn blocks<'a>(
        &'a self,
        active: &'a ActiveTable,
        sealed: &'a SealedTable,
    ) -> read::Blocks<'a, ActiveTable, SealedTable> {
        read::Blocks {
            active,
            sealed,
            segs: &self.inner.shared.segs,
        }
    }

    /// The message `seq`, `None` if it is not stored (never written, deleted or purged).
    pub fn get(&self, name: &str, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let id = self.stream_id(name)?;
        self.with_read(|txn| {
            let (active, sealed) = read_tables(txn)?;
            read::get_msg(&self.blocks(&active, &sealed), id, seq)
        })
    }

    /// The newest message matching `filter`. A literal subject is one index lookup plus one
    /// block read; a wildcard filter scans backwards from the newest message.
    pub fn last_by_subject(
        &self,
        name: &str,
        filter: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let id = self.stream_id(name)?;
        self.with_read(|txn| {
            let (active, sealed) = read_tables(txn)?;
            let blocks = self.blocks(&active, &sealed);
            if subject::is_literal(filter) && !filter.is_empty() {
                let subjects = txn.open_table(format::SUBJECTS)?;
                let Some(v) = subjects.get((id, filter))? else {
                    return Ok(None);
                };
                let r: SubjectRec = decode(v.value())?;
                return read::get_msg(&blocks, id, r.last_seq);
            }
            let mut found = None;
            read::scan_backward(&blocks, id, u64::MAX, |seq, m| {
                if subject::matches(filter, m.subject) {
                    found = Some(read::to_stored(seq, &m));
                    return false;
                }
                true
            })?;
            Ok(found)
        })
    }

    /// The first message with seq >= `from_seq` matching `filter`. A literal subject starts
    /// at its index entry's first_seq and stops after its last_seq; a wildcard scans.
    pub fn next_by_subject(
        &self,
        name: &str,
        from_seq: u64,
        filter: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let id = self.stream_id(name)?;
        self.with_read(|txn| {
            let (active, sealed) = read_tables(txn)?;
            let blocks = self.blocks(&active, &sealed);
            let mut from = from_seq;
            let mut until = u64::MAX;
            if subject::is_literal(filter) && !filter.is_empty() {
                let subjects = txn.open_table(format::SUBJECTS)?;
                let Some(v) = subjects.get((id, filter))? else {
                    return Ok(None);
                };
                let r: SubjectRec = decode(v.value())?;
                if r.last_seq < from_seq {
                    return Ok(None);
                }
                from = from.max(r.first_seq);
                until = r.last_seq;
            }
            let mut found = None;
            read::scan_forward(&blocks, id, from, |seq, m| {
                if seq > until {
                    return false;
                }
                if subject::matches(filter, m.subject) {
                    found = Some(read::to_stored(seq, &m));
                    return false;
                }
                true
            })?;
            Ok(found)
        })
    }

    /// Up to `max_msgs` stored messages from `from_seq` on, in order, skipping deleted
    /// sequences, stopping before the total of accounted bytes would exceed `max_bytes`
    /// (but always returning at least one message if any is stored at or after `from_seq`).
    pub fn read_range(
        &self,
        name: &str,
        from_seq: u64,
        max_msgs: usize,
        max_bytes: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let id = self.stream_id(name)?;
        if max_msgs == 0 {
            return Ok(Vec::new());
        }
        self.with_read(|txn| {
            let (active, sealed) = read_tables(txn)?;
            let blocks = self.blocks(&active, &sealed);
            let mut out = Vec::new();
            let mut bytes = 0u64;
            read::scan_forward(&blocks, id, from_seq, |seq, m| {
                let size = m.size();
                if !out.is_empty() && bytes + size > max_bytes {
                    return false;
                }
                bytes += size;
                out.push(read::to_stored(seq, &m));
                out.len() < max_msgs
            })?;
            Ok(out)
        })
    }

    /// The subject index entry of a literal subject.
    pub fn subject_state(
        &self,
        name: &str,
        subject: &str,
    ) -> Result<Option<SubjectState>, StoreError> {
        let id = self.stream_id(name)?;
        self.with_read(|txn| {
            let subjects = txn.open_table(format::SUBJECTS)?;
            let Some(v) = subjects.get((id, subject))? else {
                return Ok(None);
            };
            let r: SubjectRec = decode(v.value())?;
            Ok(Some(SubjectState {
                first_seq: r.first_seq,
                last_seq: r.last_seq,
                msgs: r.msgs,
            }))
        })
    }

    /// The message count of every stored subject matching `filter` (wildcards allowed), in
    /// subject order: `limit` of them from `offset` on, with the number that match in all.
    pub fn subject_counts(
        &self,
        name: &str,
        filter: &str,
        offset: usize,
        limit: usize,
    ) -> Result<SubjectCounts, StoreError> {
        let id = self.stream_id(name)?;
        self.with_read(|txn| {
            let subjects = txn.open_table(format::SUBJECTS)?;
            let mut out = SubjectCounts::default();
            let mut take = |subject: &str, rec: SubjectRec| {
                if out.total >= offset && out.page.len() < limit {
                    out.page.push((subject.to_string(), rec.msgs));
                }
                out.total += 1;
            };
            if subject::is_literal(filter) {
                if let Some(v) = subjects.get((id, filter))? {
                    take(filter, decode(v.value())?);
                }
                return Ok(out);
            }
            for e in subjects.range((id, "")..(id + 1, ""))? {
                let (k, v) = e?;
                let subject = k.value().1;
                if subject::matches(filter, subject) {
                    take(subject, decode(v.value())?);
                }
            }
            Ok(out)
        })
    }

    /// Moves a record the layer above cannot read (a stream's configuration, a consumer's
    /// record) into quarantine with `reason`, bytes unchanged, and stops serving it: a
    /// quarantined stream is gone from [`Store::streams`] (its messages stay in the file,
    /// unreferenced) and its name can be used again. `Ok(false)` if there was no such record.
    pub fn quarantine(
        &self,
        target: QuarantineTarget,
        reason: impl Into<String>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let reason = reason.into();
        self.submit(move |r| Op::Quarantine(target, reason, r))
    }

    /// Every quarantined record (at open, or through [`Store::quarantine`]), by name.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.with_read(quarantine::list)
    }

    /// All consumer blobs of a stream, sorted by consumer name.
    pub fn consumers(&self, stream: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let id = self.stream_id(stream)?;
        self.with_read(|txn| {
            let t = txn.open_table(format::CONSUMERS)?;
            let mut out = Vec::new();
            for e in t.range((id, "")..(id + 1, ""))? {
                let (k, v) = e?;
                out.push((k.value().1.to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Bytes the store takes on disk: the active file's length (redb grows it by doubling,
    /// sparsely, and never shrinks it except through [`Store::compact`]) plus the sealed
    /// segment files'.
    pub fn file_size(&self) -> u64 {
        self.inner.shared.len.load(Ordering::Relaxed)
            + self.inner.shared.sealed_bytes.load(Ordering::Relaxed)
    }

    /// How many sealed segment files the store has (see [`StoreOptions::seal_bytes`]).
    pub fn segments(&self) -> usize {
        self.inner.shared.segs.count()
    }

    /// Successful commits since open (diagnostics: appends per commit = batching factor).
    pub fn commits(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    /// Waits (at most `within`) until no sealer is at work; whether none is.
    #[cfg(test)]
    pub(crate) fn wait_sealed(&self, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while self.inner.shared.sealing.load(Ordering::Acquire) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        true
    }

    /// Whether the newest commit recorded redb's allocator state, so that an open after a
    /// crash now would not walk the file (see [`QuickRepair`]).
    #[cfg(test)]
    pub(crate) fn allocator_state_recorded(&self) -> bool {
        self.inner.shared.recorded.load(Ordering::Acquire)
    }

    /// Compacts the file (moves pages down and truncates the free tail), returning whether
    /// anything was done. Blocking and exclusive: it waits for the commit in flight, and all
    /// readers and the writer wait for it, so call it when the store is idle (e.g. at
    /// startup, or from `spawn_blocking` after a large purge).
    pub fn compact(&self) -> Result<bool, StoreError> {
        let mut db = self
            .inner
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let db = db.as_mut().ok_or(StoreError::Closed)?;
        let mut any = false;
        for _ in 0..16 {
            if !db.compact()? {
                break;
            }
            any = true;
        }
        Ok(any)
    }
}
