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

/// The database file's mode: the store holds every message, readable by its owner only.
pub(crate) const FILE_MODE: u32 = 0o600;

/// A factory opening (creating if needed, mode [`FILE_MODE`] whatever the umask) the
/// database file at `path`.
pub(crate) fn file_factory(path: PathBuf) -> BackendFactory {
    Arc::new(move || {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)?;
        // The umask can only take bits away from `mode`; set it exactly, and narrow a file
        // an older version created with the umask's bits.
        if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        }
        let backend =
            redb::backends::FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Box::new(backend) as Box<dyn StorageBackend>)
    })
}

/// A factory over one memory image shared by every backend it makes: the store of
/// JetStream's `storage: memory` streams. Reopening after a failed commit (a full image)
/// finds the last commit, as a file would; nothing survives the process.
pub(crate) fn memory_factory() -> BackendFactory {
    let image: Arc<std::sync::RwLock<Image>> = Arc::default();
    Arc::new(move || Ok(Box::new(MemoryBackend(image.clone())) as Box<dyn StorageBackend>))
}

/// The bytes of a memory image. redb grows its file by doubling the length; only bytes
/// written take memory: the rest of `len` reads as zeros, as a sparse file's hole does.
#[derive(Debug, Default)]
struct Image {
    data: Vec<u8>,
    len: u64,
}

/// A database image in memory (see [`memory_factory`]).
#[derive(Debug)]
struct MemoryBackend(Arc<std::sync::RwLock<Image>>);

impl MemoryBackend {
    fn image(&self) -> std::sync::RwLockReadGuard<'_, Image> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn image_mut(&self) -> std::sync::RwLockWriteGuard<'_, Image> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "outside the memory image")
}

/// `offset..offset + n` as indexes, within `len`.
fn span(offset: u64, n: usize, len: u64) -> io::Result<(usize, usize)> {
    let end = offset.checked_add(n as u64).filter(|&e| e <= len);
    let end = end.ok_or_else(out_of_range)?;
    let start = usize::try_from(offset).map_err(|_| out_of_range())?;
    let end = usize::try_from(end).map_err(|_| out_of_range())?;
    Ok((start, end))
}

impl StorageBackend for MemoryBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.image().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let image = self.image();
        let (start, end) = span(offset, out.len(), image.len)?;
        out.fill(0);
        if start < image.data.len() {
            let stored = end.min(image.data.len());
            out[..stored - start].copy_from_slice(&image.data[start..stored]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut image = self.image_mut();
        image.len = len;
        let keep = usize::try_from(len).unwrap_or(usize::MAX);
        if image.data.len() > keep {
            image.data.truncate(keep);
            image.data.shrink_to_fit();
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut image = self.image_mut();
        let len = image.len.max(offset.saturating_add(data.len() as u64));
        let (start, end) = span(offset, data.len(), len)?;
        if image.data.len() < end {
            image.data.resize(end, 0);
        }
        image.data[start..end].copy_from_slice(data);
        image.len = len;
        Ok(())
    }
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
