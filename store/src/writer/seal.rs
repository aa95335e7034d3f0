//! Sealing: moving the active file's blocks into a segment file, so that the file a crash
//! leaves dirty (and redb's repair walks) stays small. See `DESIGN.md`, "Sealed segments".
//!
//! 1. After a commit that brought the active file's blocks past `StoreOptions::seal_bytes`
//!    written since the last seal (or past [`SEAL_BLOCKS`] blocks), the writer opens a read
//!    transaction (a snapshot of that commit) and hands it to a `store-sealer` thread, which
//!    copies every block of the snapshot, values unchanged, into a new `seg-<n>.redb`,
//!    closes it cleanly and fsyncs it and the directory ([`segments::write_segment`]).
//!    The writer goes on committing meanwhile; every block key it rewrites or removes, and
//!    every stream it deletes or purges whole, is recorded as touched ([`Touched`]).
//! 2. The sealer queues an [`Op::Adopt`] with the keys it wrote. The writer applies it in an
//!    ordinary (durable) batch: each key not touched since the snapshot is removed from
//!    `blocks` and entered in `sealed` with the segment's number, and `segments` counts them.
//!    A touched key stays where the writer put it (the segment's copy is stale and nothing
//!    names it).
//! 3. Once no `sealed` entry names a segment (its blocks deleted, purged or rewritten into the
//!    active file), a commit removes it from `segments` and the writer removes the file after
//!    that commit.
//!
//! A crash before the adopting commit leaves a file no commit names, removed at the next open
//! (`Segments::open`); after it, every adopted block is in exactly one place.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{ReadableDatabase, ReadableTable};

use super::{Batch, Done, Op, OpResult, Writer};
use crate::format::BLOCKS;
use crate::queue::OpQueue;
use crate::segments::write_segment;
use crate::StoreError;

/// A seal also starts once the active file holds this many blocks, however small (one
/// message per block when every publish commits alone).
pub(crate) const SEAL_BLOCKS: u64 = 65_536;

/// Block keys changed in the active file while a sealer copies a snapshot of it.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Blocks rewritten or removed.
    pub(crate) keys: HashSet<(u32, u64)>,
    /// Streams deleted or purged whole.
    pub(crate) ids: HashSet<u32>,
}

impl Touched {
    fn contains(&self, key: (u32, u64)) -> bool {
        self.ids.contains(&key.0) || self.keys.contains(&key)
    }
}

/// What the sealer wrote: segment `n` holding the blocks `keys` (empty if it failed).
#[derive(Debug)]
pub(crate) struct Adoption {
    pub(crate) n: u64,
    pub(crate) keys: Vec<(u32, u64)>,
}

/// A sealer at work.
pub(crate) struct Sealing {
    n: u64,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(crate) touched: Touched,
}

impl Batch<'_, '_> {
    /// Names segment `a.n` as the home of every block of `a.keys` not touched since the
    /// sealer's snapshot; the count of adopted blocks is the result.
    pub(super) fn adopt(&mut self, a: &Adoption) -> OpResult {
        let Some(touched) = self.touched.as_deref() else {
            return Ok(Err(StoreError::Invalid(format!(
                "segment {} arrived with no sealer running",
                a.n
            ))));
        };
        // Readable from now on: later operations of this batch, and readers once it
        // committed, find blocks there (a failed batch forgets it again).
        if !a.keys.is_empty() {
            self.segs.adopted(a.n);
        }
        let mut count = 0u64;
        for &key in &a.keys {
            if touched.contains(key) || self.blocks.remove(key)?.is_none() {
                continue;
            }
            self.sealed.insert(key, a.n)?;
            count += 1;
        }
        if count > 0 {
            self.segments.insert(a.n, (count, count))?;
        }
        Ok(Ok(Done::Count(count)))
    }

    /// Writes every block segment `n` still holds back into the active file (it is then
    /// named by nothing and removed after the commit); the count of blocks moved is the
    /// result.
    pub(super) fn unseal(&mut self, n: u64) -> OpResult {
        let mut keys = Vec::new();
        for e in self.sealed.iter()? {
            let (k, v) = e?;
            if v.value() == n {
                keys.push(k.value());
            }
        }
        let mut moved = 0u64;
        for (id, first) in keys {
            let Some(value) = self.segs.read_block(n, id, first)? else {
                continue;
            };
            self.release_sealed(id, first)?;
            self.blocks.insert((id, first), value.as_slice())?;
            self.written += value.len() as u64;
            moved += 1;
        }
        Ok(Ok(Done::Count(moved)))
    }
}

/// Whether a segment named by `live` of the `total` blocks it was adopted with holds so
/// little that it is unsealed.
pub(crate) fn is_sparse(live: u64, total: u64) -> bool {
    live > 0 && live.saturating_mul(4) <= total
}

impl Writer {
    /// After a commit that wrote `written` bytes of blocks and left `active_blocks` blocks in
    /// the active file: starts a sealer if the active file holds enough and none runs.
    pub(super) fn maybe_seal(&mut self, written: u64, active_blocks: u64) {
        self.active_written = self.active_written.saturating_add(written);
        let Some(seal_bytes) = self.seal_bytes else {
            return;
        };
        if self.sealing.is_some() || !self.shared.segs.enabled() || active_blocks == 0 {
            return;
        }
        // Unless the last close recorded how much is unsealed (`META_UNSEALED`), the first
        // commit after open also looks at the file's length: after a crash, or in a file
        // written before segments existed, the active file may hold everything.
        let file_len = self.shared.len.load(Ordering::Relaxed);
        let large_at_open = !self.len_checked && file_len >= seal_bytes.saturating_mul(2);
        self.len_checked = true;
        if self.active_written < seal_bytes && active_blocks < SEAL_BLOCKS && !large_at_open {
            return;
        }
        if let Some(max) = self.max_file_bytes {
            // A segment takes disk space before the active file's pages are freed.
            let sealed = self.shared.segs.bytes();
            if sealed.saturating_add(seal_bytes.saturating_mul(2)) > max {
                return;
            }
        }
        if let Err(e) = self.start_seal() {
            tracing::warn!(error = %e, "could not start sealing a segment");
        }
    }

    /// Hands a snapshot of the newest commit to a sealer thread.
    fn start_seal(&mut self) -> Result<(), StoreError> {
        let Some((dir, n)) = self.shared.segs.allocate() else {
            return Ok(());
        };
        let txn = {
            let db = self
                .shared
                .db
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            db.as_ref().ok_or(StoreError::Closed)?.begin_read()?
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let queue = self.queue.clone();
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("store-sealer".into())
            .spawn(move || run_sealer(txn, dir, n, &queue, &stop))?;
        tracing::debug!(segment = n, "sealing started");
        self.shared.sealing.store(true, Ordering::Release);
        self.sealing_from = self.active_written;
        self.active_written = 0;
        self.sealing = Some(Sealing {
            n,
            cancel,
            thread: Some(thread),
            touched: Touched::default(),
        });
        Ok(())
    }

    /// The adoption of segment `n` committed (`Some(blocks adopted)`) or failed (`None`):
    /// the sealer is done; a segment that names no block is removed.
    pub(super) fn seal_done(&mut self, n: u64, adopted: Option<u64>) {
        if let Some(mut s) = self.sealing.take() {
            if s.n != n {
                tracing::warn!(segment = n, running = s.n, "an unexpected segment arrived");
            }
            if let Some(t) = s.thread.take() {
                if t.join().is_err() {
                    tracing::error!("store sealer thread panicked");
                }
            }
        }
        match adopted {
            Some(blocks) if blocks > 0 => {
                tracing::info!(segment = n, blocks, "segment sealed");
            }
            _ => {
                // Nothing moved: what the seal was to take is still in the active file.
                self.active_written = self.active_written.saturating_add(self.sealing_from);
                self.shared.segs.forget(n);
            }
        }
        self.sealing_from = 0;
        self.refresh_sealed_bytes();
        self.shared.sealing.store(false, Ordering::Release);
    }

    /// Queues the unsealing of one sparse segment, unless one is queued already.
    pub(super) fn maybe_unseal(&mut self) {
        if self.unsealing.is_some() {
            return;
        }
        let Some(n) = self.sparse.pop_first() else {
            return;
        };
        if self.queue.push(Op::Unseal(n)).is_ok() {
            self.unsealing = Some(n);
        }
    }

    /// Stops a running sealer (the store is closing); its file is removed.
    pub(super) fn stop_sealer(&mut self) {
        if let Some(mut s) = self.sealing.take() {
            s.cancel.store(true, Ordering::Relaxed);
            if let Some(t) = s.thread.take() {
                if t.join().is_err() {
                    tracing::error!("store sealer thread panicked");
                }
            }
            self.active_written = self.active_written.saturating_add(self.sealing_from);
            self.sealing_from = 0;
        }
        self.shared.sealing.store(false, Ordering::Release);
    }

    /// Records, at a clean close, how many bytes of blocks the active file holds unsealed,
    /// so that the next open need not guess from the file's length (and seal at once).
    pub(super) fn record_unsealed(&mut self) {
        if self.seal_bytes.is_none() || self.needs_reopen {
            return;
        }
        let result = (|| {
            let db = self
                .shared
                .db
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let db = db.as_ref().ok_or(StoreError::Closed)?;
            let txn = crate::repair::begin_write(db, false)?;
            txn.open_table(crate::format::META)?.insert(
                crate::format::META_UNSEALED,
                self.active_written.to_le_bytes().as_slice(),
            )?;
            txn.commit()?;
            Ok::<(), StoreError>(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record the unsealed bytes at close");
        }
    }

    /// Re-reads the size of the live segment files (after one was added or removed).
    pub(super) fn refresh_sealed_bytes(&self) {
        self.shared
            .sealed_bytes
            .store(self.shared.segs.bytes(), Ordering::Relaxed);
    }
}

/// The sealer thread: copies the snapshot's blocks into segment `n` and queues the result.
fn run_sealer(
    txn: redb::ReadTransaction,
    dir: PathBuf,
    n: u64,
    queue: &OpQueue<Op>,
    cancel: &AtomicBool,
) {
    let result = (|| {
        let table = txn.open_table(BLOCKS)?;
        let mut blocks = table.range::<(u32, u64)>(..)?.map(|e| {
            e.map(|(k, v)| (k.value(), v.value().to_vec()))
                .map_err(StoreError::from)
        });
        write_segment(&dir, n, &mut blocks, &|| cancel.load(Ordering::Relaxed))
    })();
    drop(txn);
    let keys = match result {
        Ok(keys) => keys,
        Err(e) => {
            if !cancel.load(Ordering::Relaxed) {
                tracing::warn!(segment = n, error = %e, "sealing a segment failed");
            }
            Vec::new()
        }
    };
    if queue
        .push(Op::Adopt(Box::new(Adoption { n, keys })))
        .is_err()
    {
        // The store is closing: nothing will name the file.
        let _ = std::fs::remove_file(crate::segments::segment_path(&dir, n));
    }
}
