//! The store's error type and the mapping from redb's errors.

use std::io;

/// Everything a [`Store`](super::Store) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named stream (or consumer) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A stream with this name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The store reached `max_file_bytes`, or the disk is full (`ENOSPC`/`EDQUOT`).
    /// Nothing of the failed operation was written; freeing space (purge, delete) makes
    /// later operations succeed again.
    #[error("insufficient resources: {0}")]
    InsufficientResources(String),
    /// The database file or one of its records failed to decode or failed a checksum.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// An I/O error other than a full disk.
    #[error("store I/O error: {0}")]
    Io(#[from] io::Error),
    /// The store is shut down (its writer thread is gone) or could not be reopened after a
    /// failed commit.
    #[error("store closed")]
    Closed,
    /// The file was written by a newer (or unknown) version of the on-disk format.
    #[error("unsupported store format version {found} (this build supports {supported})")]
    Version {
        /// The version found in the file's `meta` table.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// Another process (or another `Store` in this process) has the file open.
    #[error("store file is already open elsewhere")]
    AlreadyOpen,
    /// The request itself is invalid (empty name, empty batch, a value too large for a record).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A conditional append ([`Store::append_after`](super::Store::append_after)) found the
    /// stream's last sequence different from the one it required; nothing was written.
    #[error("last sequence is {found}, the append required {required}")]
    LastSeqMismatch {
        /// The last sequence the append required.
        required: u64,
        /// The stream's last sequence when the append was applied.
        found: u64,
    },
}

impl StoreError {
    /// A copy of this error (`io::Error` is not `Clone`): to fail every operation of a batch
    /// whose commit failed, or to hand one failure to several waiters.
    pub fn replicate(&self) -> StoreError {
        match self {
            StoreError::NotFound(s) => StoreError::NotFound(s.clone()),
            StoreError::AlreadyExists(s) => StoreError::AlreadyExists(s.clone()),
            StoreError::InsufficientResources(s) => StoreError::InsufficientResources(s.clone()),
            StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
            StoreError::Io(e) => StoreError::Io(io::Error::new(e.kind(), e.to_string())),
            StoreError::Closed => StoreError::Closed,
            StoreError::Version { found, supported } => StoreError::Version {
                found: *found,
                supported: *supported,
            },
            StoreError::AlreadyOpen => StoreError::AlreadyOpen,
            StoreError::Invalid(s) => StoreError::Invalid(s.clone()),
            StoreError::LastSeqMismatch { required, found } => StoreError::LastSeqMismatch {
                required: *required,
                found: *found,
            },
        }
    }

    /// Whether the database handle must be closed and reopened before the next write: redb
    /// latches any I/O failure and answers every later call with `PreviousIo`.
    pub(crate) fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::Io(_) | StoreError::InsufficientResources(_) | StoreError::Corrupt(_)
        )
    }
}

/// Whether an I/O error means "no space left" (the disk, a quota, or our own file limit).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(io) if is_no_space(&io) => {
                StoreError::InsufficientResources(io.to_string())
            }
            redb::Error::Io(io) => StoreError::Io(io),
            redb::Error::Corrupted(s) => StoreError::Corrupt(s),
            redb::Error::PreviousIo => StoreError::Io(io::Error::other(
                "an earlier I/O error failed the database handle",
            )),
            redb::Error::DatabaseClosed => StoreError::Closed,
            redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen,
            redb::Error::UpgradeRequired(v) => StoreError::Version {
                found: u32::from(v),
                supported: super::format::FORMAT_VERSION,
            },
            redb::Error::ValueTooLarge(n) => {
                StoreError::Invalid(format!("record of {n} bytes is too large"))
            }
            other => StoreError::Io(io::Error::other(other.to_string())),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::CompactionError,
    redb::SetDurabilityError
);

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::Corrupt(format!("record does not decode: {e}"))
    }
}
