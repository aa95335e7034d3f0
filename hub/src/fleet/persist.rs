//! The fleet table across hub restarts: a snapshot in `<jetstream store_dir>/fleet.json`
//! (only with JetStream on, which gives hubd a directory of its own), written when the table
//! changed at most every [`SAVE_EVERY`] and at a clean shutdown, read at start. Restored
//! gateways are offline since they were last seen until their leaf reconnects.
//!
//! The file is JSON, `{"version": 1, "gateways": [{account, name, received_ms,
//! last_seen_ms, record}]}`, written to a temporary file and renamed over the old one (a
//! crash leaves the old snapshot or the new one), mode 0600. It is read only up to
//! [`MAX_FILE_BYTES`]; a file that cannot be read or parsed is reported and ignored (the
//! table starts empty); each record is checked again as if it had just arrived.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use leaf_core::fleet::StatusRecord;
use serde::{Deserialize, Serialize};

use super::table::{Gateway, Table};

/// The snapshot's file name in the store directory.
pub const FILE_NAME: &str = "fleet.json";
/// Shortest time between two writes of the snapshot.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
/// The largest snapshot read (the table's byte bound plus room for the keys and times).
pub const MAX_FILE_BYTES: u64 = 2 * super::table::DEFAULT_MAX_BYTES as u64;

/// Why the snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a snapshot of this version.
    #[error("{path}: not a fleet snapshot: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    gateways: Vec<Saved>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    account: String,
    name: String,
    received_ms: u64,
    last_seen_ms: u64,
    record: StatusRecord,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The snapshot of `table`, as the bytes to write.
pub fn snapshot(table: &Table) -> Vec<u8> {
    let gateways = table
        .gateways()
        .into_iter()
        .map(|g| Saved {
            account: g.account.clone(),
            name: g.name.clone(),
            received_ms: millis(g.received),
            last_seen_ms: millis(g.last_seen),
            record: g.record.clone(),
        })
        .collect();
    serde_json::to_vec(&Snapshot {
        version: 1,
        gateways,
    })
    .unwrap_or_default()
}

/// Writes `bytes` to `path` (through a temporary file renamed over it).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PersistError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads the snapshot at `path` into `table` (the gateways offline); `Ok(0)` when there is
/// none. Returns how many gateways were restored; records that fail the checks are skipped.
pub fn restore(path: &Path, table: &mut Table) -> Result<usize, PersistError> {
    let invalid = |reason: String| PersistError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PersistError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if snapshot.version != 1 {
        return Err(invalid(format!("version {}", snapshot.version)));
    }
    let mut restored = 0;
    for s in snapshot.gateways {
        if s.record.check().is_err() || s.record.server_name != s.name {
            continue;
        }
        let size = serde_json::to_vec(&s.record).map_or(0, |b| b.len());
        table.restore(Gateway {
            account: s.account,
            name: s.name,
            record: s.record,
            size,
            received: from_millis(s.received_ms),
            link: 0,
            connected: false,
            last_seen: from_millis(s.last_seen_ms),
        });
        restored += 1;
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::table::tests::record;
    use crate::fleet::table::Limits;

    #[test]
    fn a_snapshot_restores_the_gateways_offline() {
        let dir = std::env::temp_dir().join(format!("fleet-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut table = Table::new(Limits::default());
        table.store("A", 7, record("gw1", 40), 500, t0);
        table.store("$G", 8, record("gw2", 0), 500, t0);
        write(&path, &snapshot(&table)).unwrap();

        let mut back = Table::new(Limits::default());
        assert_eq!(restore(&path, &mut back).unwrap(), 2);
        let g = back.get("A", "gw1").unwrap();
        assert!(!g.connected);
        assert_eq!(g.record.backlog_msgs(), 40);
        assert_eq!(g.last_seen, t0);
        // The leaf comes back: connected by name.
        back.refresh(&[(99, "gw1".into())], t0 + Duration::from_secs(5));
        assert!(back.get("A", "gw1").unwrap().connected);

        std::fs::write(&path, b"{ not json").unwrap();
        let err = restore(&path, &mut Table::new(Limits::default())).unwrap_err();
        assert!(err.to_string().contains("not a fleet snapshot"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(restore(&path, &mut back).unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
