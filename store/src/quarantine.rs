//! Quarantine: records that cannot be decoded are moved aside instead of failing the store.
//!
//! A record the store itself cannot read when it opens (a stream definition or its state
//! record), or one the layer above cannot read (a stream's configuration, a consumer's
//! record: [`Store::quarantine`](super::Store::quarantine)), is moved into the `quarantine`
//! table with its bytes unchanged and the reason, and is no longer served. Everything else
//! keeps working; the records stay in the file for an operator (or a later version) to
//! inspect, and [`Store::quarantined`](super::Store::quarantined) lists them.

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use super::format::{self, encode, QUARANTINE};
use super::StoreError;

/// What is moved into quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A stream's definition (name → config). The stream's messages stay under its id.
    Stream(String),
    /// A consumer's record: (stream, consumer).
    Consumer(String, String),
}

impl Target {
    /// What it is called in the quarantine table and in logs: `stream <name>` or
    /// `consumer <stream> <name>`.
    pub fn key(&self) -> String {
        match self {
            Target::Stream(s) => format!("stream {s}"),
            Target::Consumer(s, c) => format!("consumer {s} {c}"),
        }
    }
}

/// One quarantined record, as listed by [`Store::quarantined`](super::Store::quarantined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// `stream <name>` or `consumer <stream> <name>`.
    pub what: String,
    /// When it was quarantined (ns since the epoch).
    pub at_ns: i64,
    /// Why its record could not be read.
    pub reason: String,
    /// The size of the record kept.
    pub bytes: usize,
}

/// A quarantined record as stored: the reason and the original bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Rec {
    reason: String,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

/// Now, in ns since the epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Writes one quarantined record (`bytes` are kept as they were).
pub(crate) fn put(
    table: &mut Table<'_, (&'static str, i64), &'static [u8]>,
    what: &str,
    at_ns: i64,
    reason: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let rec = encode(&Rec {
        reason: reason.to_string(),
        bytes: bytes.to_vec(),
    })?;
    // Two quarantines of one name in the same nanosecond would share a key: keep both.
    let mut at = at_ns;
    while table.get((what, at))?.is_some() {
        at += 1;
    }
    table.insert((what, at), rec.as_slice())?;
    Ok(())
}

/// Every quarantined record, oldest key first (a file without the table has none).
pub(crate) fn list(txn: &redb::ReadTransaction) -> Result<Vec<Quarantined>, StoreError> {
    let t = match txn.open_table(QUARANTINE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        let (what, at_ns) = k.value();
        let (reason, bytes) = match format::decode::<Rec>(v.value()) {
            Ok(r) => (r.reason, r.bytes.len()),
            Err(e) => (
                format!("unreadable quarantine record: {e}"),
                v.value().len(),
            ),
        };
        out.push(Quarantined {
            what: what.to_string(),
            at_ns,
            reason,
            bytes,
        });
    }
    Ok(out)
}
