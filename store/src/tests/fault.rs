//! Crash safety under a fault-injecting redb backend, and full-disk handling.
//!
//! `FaultDisk` keeps the durable image (as of the last `sync_data`) apart from the writes
//! since; a power cut keeps the durable image plus a random subset of the unsynced writes,
//! the last one possibly torn.

use std::io;
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

use super::{check_consistent, msg, rt, Rng};
use crate::backend::BackendFactory;
use crate::{PurgeRequest, Store, StoreError, StoreOptions};

#[derive(Debug, Default)]
struct Disk {
    durable: Vec<u8>,
    current: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
    dead: bool,
    /// Power is cut at this many backend calls (write/set_len/sync).
    cut_at: Option<u64>,
    calls: u64,
    /// Writes ending past this fail with ENOSPC.
    limit: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct FaultDisk(Arc<Mutex<Disk>>);

#[derive(Debug)]
struct FaultBackend(FaultDisk);

fn eio() -> io::Error {
    io::Error::other("power cut")
}

impl Disk {
    fn tick(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(eio());
        }
        self.calls += 1;
        if self.cut_at.is_some_and(|c| self.calls >= c) {
            self.dead = true;
            return Err(eio());
        }
        Ok(())
    }
}

impl StorageBackend for FaultBackend {
    fn len(&self) -> io::Result<u64> {
        let d = self.0 .0.lock().unwrap();
        if d.dead {
            return Err(eio());
        }
        Ok(d.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let d = self.0 .0.lock().unwrap();
        if d.dead {
            return Err(eio());
        }
        let start = offset as usize;
        let end = start + out.len();
        let src = d
            .current
            .get(start..end)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.0 .0.lock().unwrap();
        d.tick()?;
        d.current.resize(len as usize, 0);
        // Length changes are made durable at once (redb syncs right after growing anyway).
        d.durable.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.0 .0.lock().unwrap();
        d.tick()?;
        d.durable = d.current.clone();
        d.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0 .0.lock().unwrap();
        d.tick()?;
        let end = offset as usize + data.len();
        if d.limit.is_some_and(|l| end as u64 > l) {
            return Err(io::Error::from_raw_os_error(28));
        }
        if d.current.len() < end {
            d.current.resize(end, 0);
        }
        d.current[offset as usize..end].copy_from_slice(data);
        d.unsynced.push((offset, data.to_vec()));
        Ok(())
    }
}

impl FaultDisk {
    fn factory(&self) -> BackendFactory {
        let disk = self.clone();
        Arc::new(move || Ok(Box::new(FaultBackend(disk.clone())) as Box<dyn StorageBackend>))
    }

    /// The image that survives a power cut now: the durable bytes plus a random subset of
    /// the unsynced writes (the last applied one possibly torn at a 512-byte boundary).
    fn survivor(&self, rng: &mut Rng, mode: u64) -> FaultDisk {
        let d = self.0.lock().unwrap();
        let mut img = d.durable.clone();
        if mode > 0 {
            let n = d.unsynced.len();
            for (i, (off, data)) in d.unsynced.iter().enumerate() {
                if rng.below(2) == 0 {
                    continue;
                }
                let mut data = &data[..];
                if i + 1 == n || rng.below(4) == 0 {
                    let sectors = data.len().div_ceil(512) as u64;
                    let keep = (rng.below(sectors + 1) * 512) as usize;
                    data = &data[..keep.min(data.len())];
                }
                let end = *off as usize + data.len();
                if img.len() < end {
                    img.resize(end, 0);
                }
                img[*off as usize..end].copy_from_slice(data);
            }
        }
        FaultDisk(Arc::new(Mutex::new(Disk {
            durable: img.clone(),
            current: img,
            ..Disk::default()
        })))
    }
}

/// Power cut at a random backend call while 4 tasks × 8 in-flight appenders run; every
/// acknowledged message must survive, the store must open and be consistent.
#[test]
fn power_cut_keeps_every_acked_message() {
    power_cut_rounds(None);
}

/// The same while the store seals every 8 KiB into segment files (real files in a temporary
/// directory, fsynced before they are adopted; the cut tears the active file's image only):
/// the cut lands before, during and after adopting commits and releases of sealed blocks.
#[test]
fn power_cut_while_sealing_keeps_every_acked_message() {
    let segments = tempfile::tempdir().unwrap();
    power_cut_rounds(Some(segments.path()));
}

fn power_cut_rounds(segments: Option<&std::path::Path>) {
    let opts = StoreOptions {
        seal_bytes: segments.map(|_| 8 << 10),
        ..StoreOptions::default()
    };
    let open = |factory| Store::open_in(factory, segments, opts.clone());
    let mut sealed = 0;
    let mut rng = Rng(0x5eed);
    let rounds = std::env::var("LEAF_STORE_CUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12u64);
    let mut total_acked = 0;
    for round in 0..rounds {
        let disk = FaultDisk::default();
        let rt = rt();
        // Previous life: some data, deletes and purges already durable.
        let mut acked: Vec<(u64, crate::NewMessage)> = Vec::new();
        let tried_deletes = Arc::new(Mutex::new(std::collections::HashSet::<u64>::new()));
        {
            let s = open(disk.factory()).unwrap();
            rt.block_on(s.create_stream("S", b"{}".to_vec())).unwrap();
            for i in 0..50 {
                let m = msg(["a", "b", "c.d"][i % 3], i as u64);
                acked.push((rt.block_on(s.append("S", m.clone())).unwrap().seq, m));
            }
            {
                let mut d = disk.0.lock().unwrap();
                d.cut_at = Some(d.calls + 1 + rng.below(400));
            }
            let results = rt.block_on(async {
                let mut tasks = Vec::new();
                for t in 0..4u64 {
                    let s = s.clone();
                    let tried = tried_deletes.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut ok = Vec::new();
                        let mut n = 1000 * (t + 1);
                        'outer: loop {
                            let batch: Vec<_> = (0..8)
                                .map(|i| {
                                    let m = msg(["a", "b", "c.d"][(i % 3) as usize], n + i);
                                    (m.clone(), s.append("S", m))
                                })
                                .collect();
                            n += 8;
                            for (m, f) in batch {
                                match f.await {
                                    Ok(a) => ok.push((a.seq, m)),
                                    Err(_) => break 'outer,
                                }
                            }
                            if t == 0 && n % 64 == 0 {
                                // interleave deletes and purges with the appends
                                tried.lock().unwrap().insert(n / 16);
                                let _ = s.delete_msg("S", n / 16).await;
                                let _ = s
                                    .purge(
                                        "S",
                                        PurgeRequest {
                                            filter: Some("b".into()),
                                            keep: Some(20),
                                            ..Default::default()
                                        },
                                    )
                                    .await;
                            }
                        }
                        ok
                    }));
                }
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            });
            acked.extend(results);
            drop(s);
        }
        let image = disk.survivor(&mut rng, round % 2);
        let s =
            open(image.factory()).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        sealed += s.segments();
        let stored = check_consistent(&s, "S");
        let present: std::collections::HashMap<u64, &crate::StoredMessage> =
            stored.iter().map(|m| (m.seq, m)).collect();
        // Deleted/purged messages were removed on purpose; all others must be present.
        let st = s.stream_state("S").unwrap().unwrap();
        for (seq, m) in &acked {
            if let Some(got) = present.get(seq) {
                assert_eq!(got.payload, m.payload, "round {round} seq {seq}");
                assert_eq!(got.subject, m.subject);
            } else {
                assert!(
                    m.subject == "b" || tried_deletes.lock().unwrap().contains(seq),
                    "round {round}: acked seq {seq} ({}) lost; state {st:?}",
                    m.subject
                );
            }
            assert!(*seq <= st.last_seq, "round {round}: acked {seq} > last_seq");
        }
        // Appends continue gaplessly after the recovered last_seq.
        let next = rt.block_on(s.append("S", msg("a", 0))).unwrap().seq;
        assert_eq!(next, st.last_seq + 1);
        total_acked += acked.len();
        drop(s);
        if let Some(dir) = segments {
            // The next round starts from an empty image: its segments go too.
            for e in std::fs::read_dir(dir).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
    }
    assert!(total_acked > 0);
    if segments.is_some() {
        assert!(sealed > 0, "no round reopened with a segment");
    }
}

/// Disk full (ENOSPC from the backend): appends fail with InsufficientResources, acked data
/// stays, and the store works again once space is available.
#[test]
fn disk_full_then_recovers() {
    let disk = FaultDisk::default();
    let rt = rt();
    let s = Store::open_with(disk.factory(), StoreOptions::default()).unwrap();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let limit = disk.0.lock().unwrap().current.len() as u64 + (2 << 20);
    disk.0.lock().unwrap().limit = Some(limit);
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..100_000u64 {
        let batch: Vec<_> = (0..64).map(|j| msg("a", i * 64 + j)).collect();
        match rt.block_on(s.append_batch("S", batch.clone())) {
            Ok(a) => acked.extend(a.into_iter().zip(batch)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(failed, Some(StoreError::InsufficientResources(_))),
        "{failed:?}"
    );
    assert!(!acked.is_empty());
    // Refused quickly while full, without touching the disk.
    assert!(matches!(
        rt.block_on(s.append("S", msg("a", 0))),
        Err(StoreError::InsufficientResources(_))
    ));
    for (a, m) in &acked {
        assert_eq!(s.get("S", a.seq).unwrap().unwrap().payload, m.payload);
    }
    // Space comes back (e.g. the operator freed some): appends work after the retry delay.
    disk.0.lock().unwrap().limit = None;
    std::thread::sleep(std::time::Duration::from_millis(250));
    let a = rt.block_on(s.append("S", msg("a", 1))).unwrap();
    assert_eq!(a.seq, acked.last().unwrap().0.seq + 1);
    check_consistent(&s, "S");
}

/// max_file_bytes: appends are refused, acked data stays, a purge makes room again.
#[test]
fn max_file_bytes_then_purge() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            max_file_bytes: Some(4 << 20),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..100_000u64 {
        let batch: Vec<_> = (0..64).map(|j| msg("a", i * 64 + j)).collect();
        match rt.block_on(s.append_batch("S", batch.clone())) {
            Ok(a) => acked.extend(a.into_iter().zip(batch)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(failed, Some(StoreError::InsufficientResources(_))),
        "{failed:?}"
    );
    let stored_bytes = acked.len() as u64 * 65;
    assert!(
        stored_bytes > (1 << 20),
        "only {stored_bytes} bytes fit in 4 MiB"
    );
    for (a, m) in &acked {
        assert_eq!(s.get("S", a.seq).unwrap().unwrap().payload, m.payload);
    }
    let n = rt
        .block_on(s.purge(
            "S",
            PurgeRequest {
                keep: Some(100),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(n, acked.len() as u64 - 100);
    let a = rt.block_on(s.append("S", msg("a", 1))).unwrap();
    assert_eq!(a.seq, acked.last().unwrap().0.seq + 1);
    // The freed pages are reused: refill until full again (the pages the purge freed become
    // allocatable only a commit or two later, so one early refusal is tolerated).
    let mut refilled = 0u64;
    let mut refusals = 0;
    // Bounded: 4 MiB hold far fewer than 20,000 batches of 64 small messages.
    let mut attempts = 0;
    while refusals < 2 {
        attempts += 1;
        assert!(
            attempts < 20_000,
            "the store never refused a refill past its limit"
        );
        let batch: Vec<_> = (0..64).map(|j| msg("a", j)).collect();
        match rt.block_on(s.append_batch("S", batch)) {
            Ok(_) => refilled += 64,
            Err(StoreError::InsufficientResources(_)) => {
                refusals += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        refilled >= acked.len() as u64 / 4,
        "only {refilled} refilled after purging {n}"
    );
    check_consistent(&s, "S");
    drop(s);
    let s = super::open(dir.path());
    check_consistent(&s, "S");
}
