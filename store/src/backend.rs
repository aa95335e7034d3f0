//! The storage backend under redb: the file (or, in tests, a fault-injecting image) wrapped
//! so that the file never grows past `max_file_bytes` and its length is observable.

use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{BackendError, StorageBackend};

/// Produces a fresh backend for the same underlying storage; called at open and again
/// whenever the writer must reopen the database after an I/O failure.
pub(crate) type BackendFactory = Arc<dyn Fn() -> io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// A factory opening (creating if needed) the database file at `path`.
pub(crate) fn file_factory(path: PathBuf) -> BackendFactory {
    Arc::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let backend =
            redb::backends::FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Box::new(backend) as Box<dyn StorageBackend>)
    })
}

/// Wraps the real backend: refuses any write ending beyond `limit` with `StorageFull`
/// (which redb reports as an I/O error, failing the commit without changing the committed
/// state) and publishes the current length.
///
/// Only writes are limited, not `set_len`: redb grows the file by doubling it (a sparse
/// extension on Linux file systems), while its allocator places pages lowest-first, so the
/// highest written offset, not the length, is what tracks the space actually used.
#[derive(Debug)]
pub(crate) struct LimitBackend {
    inner: Box<dyn StorageBackend>,
    limit: Arc<AtomicU64>,
    len: Arc<AtomicU64>,
}

impl LimitBackend {
    /// Wraps `inner`. `limit` (u64::MAX for none) is read on every write, so the writer can
    /// change it between commits; `len` is updated on every length change.
    pub(crate) fn new(
        inner: Box<dyn StorageBackend>,
        limit: Arc<AtomicU64>,
        len: Arc<AtomicU64>,
    ) -> Self {
        LimitBackend { inner, limit, len }
    }

    fn check(&self, end: u64) -> io::Result<()> {
        let max = self.limit.load(Ordering::Relaxed);
        if end > max {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("store file write would end at {end} bytes, limit is {max}"),
            ));
        }
        Ok(())
    }
}

impl StorageBackend for LimitBackend {
    fn len(&self) -> io::Result<u64> {
        let l = self.inner.len()?;
        self.len.store(l, Ordering::Relaxed);
        Ok(l)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)?;
        self.len.store(len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        self.check(end)?;
        self.inner.write(offset, data)?;
        self.len.fetch_max(end, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
