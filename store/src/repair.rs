//! What an open after a crash has to repair: when the store records redb's allocator state
//! (redb's "quick repair"), so that the open loads it instead of walking every page of the
//! file. See `DESIGN.md` ("Restart after a crash") for the measurements behind the default.

use std::time::Duration;

use redb::Database;

use crate::StoreError;

/// When the writer records redb's allocator state ([`StoreOptions::quick_repair`]).
///
/// redb rebuilds its allocator state after an unclean stop by walking (and checksumming)
/// every page of the file, about 170 ms for a 1M-message store with a warm page cache and a
/// read of the whole file with a cold one, unless the last commit before the crash recorded
/// that state in two phases (two fsyncs), in which case the open loads it in a few ms.
///
/// [`StoreOptions::quick_repair`]: crate::StoreOptions::quick_repair
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickRepair {
    /// Never recorded: every open after a crash walks the file.
    Off,
    /// Recorded by one extra, empty commit once the writer has had nothing to do for this
    /// long after a commit (and once after open). Commits under load cost nothing more; a
    /// crash while the store is idle opens at once, a crash in the middle of a burst (before
    /// the idle commit) walks the file as with `Off`.
    WhenIdle(Duration),
    /// Recorded by every commit: each commit writes the allocator state and fsyncs twice,
    /// which costs about a third of the append rate and half again the latency of one
    /// commit on the machine measured; every open after a crash is quick.
    EveryCommit,
}

impl Default for QuickRepair {
    /// [`QuickRepair::WhenIdle`] after [`IDLE_BEFORE_RECORD`].
    fn default() -> Self {
        QuickRepair::WhenIdle(IDLE_BEFORE_RECORD)
    }
}

/// The default idle time before the writer records the allocator state: long enough that
/// a client publishing back to back (one publish per acknowledgement) never waits for the
/// extra commit, short enough that a store idle for a moment before a crash opens at once.
pub const IDLE_BEFORE_RECORD: Duration = Duration::from_millis(5);

impl QuickRepair {
    /// Whether every commit records the allocator state.
    pub(crate) fn every_commit(self) -> bool {
        self == QuickRepair::EveryCommit
    }

    /// How long the writer waits idle before recording the state with an extra commit.
    pub(crate) fn idle(self) -> Option<Duration> {
        match self {
            QuickRepair::WhenIdle(d) => Some(d),
            QuickRepair::Off | QuickRepair::EveryCommit => None,
        }
    }
}

/// Starts a write transaction recording the allocator state or not. A commit that does not
/// record it removes what the previous one recorded, so the record always matches the
/// newest commit (redb checks it belongs to that commit before loading it).
pub(crate) fn begin_write(
    db: &Database,
    record: bool,
) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(record);
    Ok(txn)
}

/// Commits an empty, durable transaction that records the allocator state.
pub(crate) fn record_allocator_state(db: &Database) -> Result<(), StoreError> {
    let mut txn = begin_write(db, true)?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}
