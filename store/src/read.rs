//! Read-side helpers over the `blocks` table, shared by readers (read transactions) and the
//! writer (its own write transaction, which sees its uncommitted changes).

use redb::ReadableTable;

use super::format::{block_bytes, decode, BlockRec, BlockRef, MsgRef};
use super::{StoreError, StoredMessage};

/// The type of the `blocks` table's value.
pub(crate) type Val = &'static [u8];

/// The block holding `seq` (its first seq and contents), if a block covers `seq`.
pub(crate) fn block_containing<T: ReadableTable<(u32, u64), Val>>(
    t: &T,
    id: u32,
    seq: u64,
) -> Result<Option<(u64, BlockRec)>, StoreError> {
    let mut r = t.range((id, 0u64)..=(id, seq))?;
    let Some(e) = r.next_back() else {
        return Ok(None);
    };
    let (k, v) = e?;
    let first = k.value().1;
    let mut buf = Vec::new();
    let block: BlockRec = decode(block_bytes(v.value(), &mut buf)?)?;
    if seq < first.saturating_add(block.slots.len() as u64) {
        Ok(Some((first, block)))
    } else {
        Ok(None)
    }
}

/// The live message `seq`, if any (the block is decoded without copying the other messages).
pub(crate) fn get_msg<T: ReadableTable<(u32, u64), Val>>(
    t: &T,
    id: u32,
    seq: u64,
) -> Result<Option<StoredMessage>, StoreError> {
    let mut r = t.range((id, 0u64)..=(id, seq))?;
    let Some(e) = r.next_back() else {
        return Ok(None);
    };
    let (k, v) = e?;
    let first = k.value().1;
    let mut buf = Vec::new();
    let block: BlockRef<'_> = decode(block_bytes(v.value(), &mut buf)?)?;
    let idx = usize::try_from(seq - first).map_err(|_| StoreError::Corrupt("slot".into()))?;
    Ok(block
        .slots
        .get(idx)
        .and_then(Option::as_ref)
        .map(|m| to_stored(seq, m)))
}

/// Calls `f(seq, msg)` for every live message with seq >= `from`, in order, until `f`
/// returns false. Messages are borrowed from the stored block (nothing is copied).
pub(crate) fn scan_forward<T, F>(t: &T, id: u32, from: u64, mut f: F) -> Result<(), StoreError>
where
    T: ReadableTable<(u32, u64), Val>,
    F: FnMut(u64, MsgRef<'_>) -> bool,
{
    let start = match t.range((id, 0u64)..=(id, from))?.next_back() {
        Some(e) => e?.0.value().1,
        None => from,
    };
    let mut buf = Vec::new();
    for e in t.range((id, start)..=(id, u64::MAX))? {
        let (k, v) = e?;
        let first = k.value().1;
        let block: BlockRef<'_> = decode(block_bytes(v.value(), &mut buf)?)?;
        for (i, slot) in block.slots.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq < from {
                continue;
            }
            if let Some(m) = slot {
                if !f(seq, m) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Calls `f(seq, msg)` for every live message with seq <= `upto`, newest first, until `f`
/// returns false. Messages are borrowed from the stored block (nothing is copied).
pub(crate) fn scan_backward<T, F>(t: &T, id: u32, upto: u64, mut f: F) -> Result<(), StoreError>
where
    T: ReadableTable<(u32, u64), Val>,
    F: FnMut(u64, MsgRef<'_>) -> bool,
{
    let mut buf = Vec::new();
    for e in t.range((id, 0u64)..=(id, upto))?.rev() {
        let (k, v) = e?;
        let first = k.value().1;
        let block: BlockRef<'_> = decode(block_bytes(v.value(), &mut buf)?)?;
        for (i, slot) in block.slots.into_iter().enumerate().rev() {
            let seq = first + i as u64;
            if seq > upto {
                continue;
            }
            if let Some(m) = slot {
                if !f(seq, m) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
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
