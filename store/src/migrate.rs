//! Migrations of older store files, run when the file is opened.
//!
//! Version 3 to 4: the `sealed` and `segments` tables are created (empty: no segments yet)
//! and the version is written, so that older binaries, which would not see sealed blocks,
//! refuse the file. Every migration ends at the current version, so every one creates them.
//!
//! Version 2 to 3: nothing to change (version 3 only adds compressed blocks); the version is
//! written so that older binaries refuse the file.
//!
//! Version 1 to 2: a stream's `bytes` counted subject, headers and payload; version 2 counts
//! each message as nats-server's file store does ([`format::msg_size`]). One pass over every
//! stored message recomputes each stream's counter; the new counters and the new version are
//! written in one commit, so a crash during the migration leaves a version 1 file that is
//! migrated again at the next open.

use std::collections::HashMap;

use redb::{Database, ReadableTable};

use crate::format::{self, decode, BlockRef, StateRec, FORMAT_VERSION};
use crate::StoreError;

/// Migrates a version 1 file to the current version.
pub(crate) fn from_v1(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let blocks = txn.open_table(format::BLOCKS)?;
        let mut bytes: HashMap<u32, u64> = HashMap::new();
        for e in blocks.iter()? {
            let (k, v) = e?;
            let id = k.value().0;
            let block: BlockRef<'_> = decode(v.value())?;
            let sum: u64 = block.slots.iter().flatten().map(|m| m.size()).sum();
            *bytes.entry(id).or_default() += sum;
        }
        let mut states = txn.open_table(format::STATES)?;
        let ids: Vec<u32> = states
            .iter()?
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for id in ids {
            let Some(raw) = states.get(id)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut state: StateRec = decode(&raw)?;
            state.bytes = bytes.get(&id).copied().unwrap_or(0);
            states.insert(id, format::encode(&state)?.as_slice())?;
        }
    }
    commit_version(txn, 1)
}

/// Migrates a version 2 file to the current version (see the module documentation).
pub(crate) fn from_v2(db: &Database) -> Result<(), StoreError> {
    commit_version(db.begin_write()?, 2)
}

/// Migrates a version 3 file to the current version (see the module documentation).
pub(crate) fn from_v3(db: &Database) -> Result<(), StoreError> {
    commit_version(db.begin_write()?, 3)
}

/// Writes the current version into `txn` and commits the migration from version `from`.
fn commit_version(txn: redb::WriteTransaction, from: u32) -> Result<(), StoreError> {
    txn.open_table(format::SEALED)?;
    txn.open_table(format::SEGMENTS)?;
    txn.open_table(format::META)?.insert(
        format::META_VERSION,
        format::u32_bytes(FORMAT_VERSION).as_slice(),
    )?;
    txn.commit()?;
    tracing::info!(from, to = FORMAT_VERSION, "store file migrated");
    Ok(())
}
