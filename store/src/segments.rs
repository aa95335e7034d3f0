//! Sealed segment files (`seg-<n>.redb`): blocks moved out of the active file so that the
//! file a crash leaves dirty stays small (see `DESIGN.md`, "Sealed segments").
//!
//! A segment is a redb file holding one table, `blocks`, with the same keys and values as the
//! active file's. It is written once by the sealer thread ([`write_segment`]), closed cleanly
//! (redb records its allocator state, so it is reopened without a repair walk) and fsynced
//! with its directory before the active file names it; from then on it is only read
//! ([`Segments::read_block`]), read-only, until the writer forgets it (every block it held was
//! deleted, purged or rewritten into the active file) and removes the file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use redb::{ReadOnlyDatabase, ReadableDatabase, TableDefinition};

use crate::StoreError;

/// The one table of a segment file: the same key and value as the active file's `blocks`.
const SEGMENT_BLOCKS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("blocks");

/// redb's page cache for one open segment: reads go through a block at a time, so a small
/// cache is enough and a store with many segments stays small.
const SEGMENT_CACHE_BYTES: usize = 1 << 20;

/// At most this many segment files are kept open; beyond it the handles are closed and
/// reopened on demand (a clean open reads the header and the allocator state only).
const MAX_OPEN: usize = 16;

/// The sealer commits the segment it writes every this many bytes (non-durably, the last
/// commit durably), so redb never holds a whole segment's dirty pages in memory.
const WRITE_CHUNK_BYTES: u64 = 4 << 20;

/// The segment files of one store directory, as the active file names them.
pub(crate) struct Segments {
    /// The store directory; `None` for a store without files (memory or test images):
    /// nothing is ever sealed there.
    dir: Option<PathBuf>,
    /// Segments the newest commit of the active file names.
    live: RwLock<HashSet<u64>>,
    /// Open read-only handles.
    open: Mutex<HashMap<u64, Arc<ReadOnlyDatabase>>>,
    /// The next segment number to write.
    next: AtomicU64,
}

impl Segments {
    /// Segments of a store without a directory: none, and none will be written.
    pub(crate) fn none() -> Segments {
        Segments {
            dir: None,
            live: RwLock::default(),
            open: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }

    /// The segments of `dir`, of which the active file names `live`. Every other segment
    /// file there (written by a sealer that crashed before its segment was named, or
    /// forgotten by a commit whose file removal did not happen) is removed.
    pub(crate) fn open(dir: &Path, live: HashSet<u64>) -> Result<Segments, StoreError> {
        let mut highest = live.iter().copied().max().unwrap_or(0);
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(segment_number) else {
                continue;
            };
            if live.contains(&n) {
                continue;
            }
            tracing::info!(segment = n, "removing a segment file no commit names");
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a segment file");
            }
            highest = highest.max(n);
        }
        for n in &live {
            // Not fatal (a store that refuses to open is a crash loop under systemd): the
            // blocks it held read as deleted, and the error says which file went missing.
            if !segment_path(dir, *n).is_file() {
                tracing::error!(file = %segment_path(dir, *n).display(), "a segment file the store names is missing: its messages are lost");
            }
        }
        Ok(Segments {
            dir: Some(dir.to_path_buf()),
            live: RwLock::new(live),
            open: Mutex::default(),
            next: AtomicU64::new(highest + 1),
        })
    }

    /// Whether segments can be written (the store has a directory).
    pub(crate) fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// The directory and a fresh segment number for the sealer.
    pub(crate) fn allocate(&self) -> Option<(PathBuf, u64)> {
        let dir = self.dir.clone()?;
        Some((dir, self.next.fetch_add(1, Ordering::Relaxed)))
    }

    /// Segment `n` is complete and about to be named by a commit: readable from now on.
    pub(crate) fn adopted(&self, n: u64) {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(n);
    }

    /// Segment `n` is no longer named by the newest commit: its handle is closed and its
    /// file removed (a failure to remove is logged; the next open removes it). The caller
    /// makes sure no read still runs on a snapshot that names it (see [`Self::read_block`]).
    pub(crate) fn forget(&self, n: u64) {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&n);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&n);
        if let Some(dir) = &self.dir {
            let path = segment_path(dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a segment file")
                }
            }
        }
    }

    /// The bytes on disk of the segments the newest commit names.
    pub(crate) fn bytes(&self) -> u64 {
        let Some(dir) = &self.dir else {
            return 0;
        };
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        live.iter()
            .filter_map(|n| std::fs::metadata(segment_path(dir, *n)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// How many segments the newest commit names.
    pub(crate) fn count(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The value of block `(id, first)` in segment `n`; `None` if the segment is not live
    /// (which a committed snapshot cannot see: the writer forgets a segment only after the
    /// commit that stopped naming it, under the database's write lock, so no read that
    /// started before that commit is still running).
    pub(crate) fn read_block(
        &self,
        n: u64,
        id: u32,
        first: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        #[cfg(test)]
        PAUSE_BEFORE_SEALED_READ.with(|p| std::thread::sleep(p.get()));
        let Some(db) = self.handle(n)? else {
            return Ok(None);
        };
        let txn = db.begin_read()?;
        let table = txn.open_table(SEGMENT_BLOCKS)?;
        let value = table.get((id, first))?.map(|v| v.value().to_vec());
        if value.is_none() {
            return Err(StoreError::Corrupt(format!(
                "segment {n} lacks block ({id}, {first}) that the store names"
            )));
        }
        Ok(value)
    }

    /// An open handle on segment `n`, `None` if it is not live.
    fn handle(&self, n: u64) -> Result<Option<Arc<ReadOnlyDatabase>>, StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if let Some(db) = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&n)
        {
            return Ok(Some(db.clone()));
        }
        let live = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&n);
        if !live {
            return Ok(None);
        }
        let db = match redb::Builder::new()
            .set_cache_size(SEGMENT_CACHE_BYTES)
            .open_read_only(segment_path(dir, n))
        {
            Ok(db) => Arc::new(db),
            // Forgotten (and removed) between the check and the open.
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(n, db.clone());
        Ok(Some(db))
    }
}

/// The blocks a sealer copies: (stream id, first seq) and the value, in key order.
pub(crate) type BlockSource<'a> =
    dyn Iterator<Item = Result<((u32, u64), Vec<u8>), StoreError>> + 'a;

#[cfg(test)]
thread_local! {
    /// Tests widen the window between a reader's snapshot and its read of a sealed block
    /// (on the thread that sets it only).
    pub(crate) static PAUSE_BEFORE_SEALED_READ: std::cell::Cell<std::time::Duration> =
        const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

/// `seg-<n>.redb` in `dir`.
pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n}.redb"))
}

/// The number of a segment file's name, `None` for any other name.
fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".redb")?
        .parse()
        .ok()
}

/// Writes the blocks `source` yields, in key order, into a new segment file `n` in `dir`,
/// closes it cleanly and fsyncs it and the directory. Returns the keys written; stops (and
/// removes the file) when `cancelled` says so or on any error.
pub(crate) fn write_segment(
    dir: &Path,
    n: u64,
    source: &mut BlockSource<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<(u32, u64)>, StoreError> {
    let path = segment_path(dir, n);
    let result = write_file(&path, source, cancelled);
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result
}

fn write_file(
    path: &Path,
    source: &mut BlockSource<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<(u32, u64)>, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(crate::backend::FILE_MODE)
        .open(path)?;
    let db = redb::Builder::new()
        .set_cache_size(SEGMENT_CACHE_BYTES)
        .create_with_backend(redb::backends::FileBackend::new(file)?)?;
    let mut keys = Vec::new();
    let mut source = source.peekable();
    while source.peek().is_some() {
        let mut txn = db.begin_write()?;
        let mut written = 0u64;
        {
            let mut table = txn.open_table(SEGMENT_BLOCKS)?;
            while written < WRITE_CHUNK_BYTES {
                let Some(item) = source.next() else {
                    break;
                };
                if cancelled() {
                    return Err(StoreError::Closed);
                }
                let (key, value) = item?;
                table.insert(key, value.as_slice())?;
                written += value.len() as u64;
                keys.push(key);
            }
        }
        let last = source.peek().is_none();
        txn.set_durability(if last {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        txn.commit()?;
    }
    // A clean close records the allocator state: the file is reopened without a walk.
    db.close()?;
    std::fs::File::open(path)?.sync_all()?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    // The check that a reader will open it as it is (no repair needed).
    redb::Builder::new()
        .set_cache_size(SEGMENT_CACHE_BYTES)
        .open_read_only(path)?
        .close()?;
    Ok(keys)
}
