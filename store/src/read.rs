//! Read-side helpers over a stream's blocks, wherever each lives: in the active file's
//! `blocks` table or in a sealed segment named by its `sealed` table ([`Blocks`]). Shared by
//! readers (read transactions) and the writer (its own write transaction, which sees its
//! uncommitted changes).

use std::cmp::Ordering;

use redb::ReadableTable;

use super::format::{block_bytes, decode, BlockRec, BlockRef, MsgRef};
use super::segments::Segments;
use super::{StoreError, StoredMessage};

/// The type of the `blocks` table's value.
pub(crate) type Val = &'static [u8];

/// A stream's blocks as one ordered sequence: the active file's `blocks` table merged with
/// the blocks its `sealed` table places in segment files. A key is in at most one of the
/// two tables (the writer keeps it so), so the merge is a union ordered by first seq.
pub(crate) struct Blocks<'a, A, S> {
    pub(crate) active: &'a A,
    pub(crate) sealed: &'a S,
    pub(crate) segs: &'a Segments,
}

impl<A, S> Blocks<'_, A, S>
where
    A: ReadableTable<(u32, u64), Val>,
    S: ReadableTable<(u32, u64), u64>,
{
    /// The first seq of the block starting at or before `seq`, if any.
    pub(crate) fn start_at_or_before(&self, id: u32, seq: u64) -> Result<Option<u64>, StoreError> {
        let a = match self.active.range((id, 0u64)..=(id, seq))?.next_back() {
            Some(e) => Some(e?.0.value().1),
            None => None,
        };
        let s = match self.sealed.range((id, 0u64)..=(id, seq))?.next_back() {
            Some(e) => Some(e?.0.value().1),
            None => None,
        };
        Ok(a.max(s))
    }

    /// Calls `f(first, value)` for the block starting at or before `seq` (the newest such
    /// block), if any; returns what `f` returned.
    pub(crate) fn with_block_at_or_before<T>(
        &self,
        id: u32,
        seq: u64,
        f: impl FnOnce(u64, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let a = match self.active.range((id, 0u64)..=(id, seq))?.next_back() {
            Some(e) => {
                let (k, v) = e?;
                Some((k.value().1, v))
            }
            None => None,
        };
        let s = match self.sealed.range((id, 0u64)..=(id, seq))?.next_back() {
            Some(e) => {
                let (k, v) = e?;
                Some((k.value().1, v.value()))
            }
            None => None,
        };
        match (a, s) {
            (Some((af, v)), Some((sf, _))) if af > sf => f(af, v.value()).map(Some),
            (Some((af, v)), None) => f(af, v.value()).map(Some),
            (_, Some((sf, n))) => match self.segs.read_block(n, id, sf)? {
                Some(v) => f(sf, &v).map(Some),
                None => Ok(None),
            },
            (None, None) => Ok(None),
        }
    }

    /// Calls `f(first, value)` for every block of stream `id` whose first seq is in
    /// `from..=to`, in order (newest first when `back`), until `f` returns false.
    pub(crate) fn for_each(
        &self,
        id: u32,
        from: u64,
        to: u64,
        back: bool,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if from > to {
            return Ok(());
        }
        let mut active = self.active.range((id, from)..=(id, to))?;
        let mut sealed = self.sealed.range((id, from)..=(id, to))?;
        let mut a = step(&mut active, back).transpose()?;
        let mut s = step(&mut sealed, back).transpose()?;
        loop {
            let take_active = match (&a, &s) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ak, _)), Some((sk, _))) => {
                    let order = ak.value().1.cmp(&sk.value().1);
                    if back {
                        order == Ordering::Greater
                    } else {
                        order == Ordering::Less
                    }
                }
            };
            let more = if take_active {
                let Some((k, v)) = a.take() else {
                    return Ok(());
                };
                let more = f(k.value().1, v.value())?;
                a = step(&mut active, back).transpose()?;
                more
            } else {
                let Some((k, n)) = s.take() else {
                    return Ok(());
                };
                let first = k.value().1;
                let more = match self.segs.read_block(n.value(), id, first)? {
                    Some(v) => f(first, &v)?,
                    None => true,
                };
                s = step(&mut sealed, back).transpose()?;
                more
            };
            if !more {
                return Ok(());
            }
        }
    }
}

/// The next item of `r`, from the back when `back`.
fn step<I: DoubleEndedIterator>(r: &mut I, back: bool) -> Option<I::Item> {
    if back {
        r.next_back()
    } else {
        r.next()
    }
}

/// The block holding `seq` (its first seq and contents), if a block covers `seq`.
pub(crate) fn block_containing<A, S>(
    t: &Blocks<'_, A, S>,
    id: u32,
    seq: u64,
) -> Result<Option<(u64, BlockRec)>, StoreError>
where
    A: ReadableTable<(u32, u64), Val>,
    S: ReadableTable<(u32, u64), u64>,
{
    let found = t.with_block_at_or_before(id, seq, |first, v| {
        let mut buf = Vec::new();
        let block: BlockRec = decode(block_bytes(v, &mut buf)?)?;
        Ok((first, block))
    })?;
    Ok(found.filter(|(first, block)| seq < first.saturating_add(block.slots.len() as u64)))
}

/// The live message `seq`, if any (the block is decoded without copying the other messages).
pub(crate) fn get_msg<A, S>(
    t: &Blocks<'_, A, S>,
    id: u32,
    seq: u64,
) -> Result<Option<StoredMessage>, StoreError>
where
    A: ReadableTable<(u32, u64), Val>,
    S: ReadableTable<(u32, u64), u64>,
{
    let found = t.with_block_at_or_before(id, seq, |first, v| {
        let mut buf = Vec::new();
        let block: BlockRef<'_> = decode(block_bytes(v, &mut buf)?)?;
        let idx = usize::try_from(seq - first).map_err(|_| StoreError::Corrupt("slot".into()))?;
        Ok(block
            .slots
            .get(idx)
            .and_then(Option::as_ref)
            .map(|m| to_stored(seq, m)))
    })?;
    Ok(found.flatten())
}

/// Calls `f(seq, msg)` for every live message with seq >= `from`, in order, until `f`
/// returns false. Messages are borrowed from the stored block (nothing is copied).
pub(crate) fn scan_forward<A, S, F>(
    t: &Blocks<'_, A, S>,
    id: u32,
    from: u64,
    mut f: F,
) -> Result<(), StoreError>
where
    A: ReadableTable<(u32, u64), Val>,
    S: ReadableTable<(u32, u64), u64>,
    F: FnMut(u64, MsgRef<'_>) -> bool,
{
    let start = t.start_at_or_before(id, from)?.unwrap_or(from);
    let mut buf = Vec::new();
    t.for_each(id, start, u64::MAX, false, |first, v| {
        let block: BlockRef<'_> = decode(block_bytes(v, &mut buf)?)?;
        for (i, slot) in block.slots.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq < from {
                continue;
            }
            if let Some(m) = slot {
                if !f(seq, m) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
}

/// Calls `f(seq, msg)` for every live message with seq <= `upto`, newest first, until `f`
/// returns false. Messages are borrowed from the stored block (nothing is copied).
pub(crate) fn scan_backward<A, S, F>(
    t: &Blocks<'_, A, S>,
    id: u32,
    upto: u64,
    mut f: F,
) -> Result<(), StoreError>
where
    A: ReadableTable<(u32, u64), Val>,
    S: ReadableTable<(u32, u64), u64>,
    F: FnMut(u64, MsgRef<'_>) -> bool,
{
    let mut buf = Vec::new();
    t.for_each(id, 0, upto, true, |first, v| {
        let block: BlockRef<'_> = decode(block_bytes(v, &mut buf)?)?;
        for (i, slot) in block.slots.into_iter().enumerate().rev() {
            let seq = first + i as u64;
            if seq > upto {
                continue;
            }
            if let Some(m) = slot {
                if !f(seq, m) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
}

/// Copies a stored message out of its block into the public message type.
pub(crate) fn to_stored(seq: u64, m: &MsgRef<'_>) -> StoredMessage {
    StoredMessage {
        seq,
        subject: m.subject.to_string(),
        headers: m.headers.map(bytes::Bytes::copy_from_slice),
        payload: bytes::Bytes::copy_from_slice(m.payload),
        ts_ns: m.ts_ns,
    }
}
