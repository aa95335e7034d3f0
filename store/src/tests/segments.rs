//! Sealed segments: blocks move out of the active file into `seg-<n>.redb` files; reads,
//! deletes and purges find them there; a segment no commit names is removed; a failed seal
//! loses nothing; a version 3 file is migrated.

use std::path::Path;
use std::time::Duration;

use super::{check_consistent, msg, rt};
use crate::{PurgeRequest, Store, StoreOptions};

/// A store that seals once 16 KiB of blocks were written.
fn open_sealing(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            seal_bytes: Some(16 << 10),
            ..StoreOptions::default()
        },
    )
    .expect("open")
}

/// The segment files in `dir`.
fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Every segment the store names: number → (blocks named, blocks adopted).
fn segment_counts(s: &Store) -> Vec<(u64, (u64, u64))> {
    use redb::{ReadableDatabase, ReadableTable};
    let db = s.inner.shared.db.read().unwrap();
    let r = db.as_ref().unwrap().begin_read().unwrap();
    let t = r.open_table(crate::format::SEGMENTS).unwrap();
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value())
        })
        .collect()
}

/// Appends `n` messages in commits of 20, waiting for each sealer in between.
fn fill(s: &Store, from: u64, n: u64) {
    let rt = rt();
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(20) {
        let msgs = chunk
            .iter()
            .map(|i| msg(["s.a", "s.b", "s.c"][(*i % 3) as usize], *i))
            .collect();
        rt.block_on(s.append_batch("S", msgs)).unwrap();
        assert!(
            s.wait_sealed(Duration::from_secs(10)),
            "a sealer never ended"
        );
    }
}

#[test]
fn blocks_move_into_segments_and_every_read_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    fill(&s, 1, 2000);
    assert!(s.segments() >= 2, "only {} segments", s.segments());
    assert_eq!(segment_files(dir.path()).len(), s.segments());
    // Every sealed file opens read-only, which redb refuses for a file needing a repair.
    for f in segment_files(dir.path()) {
        redb::ReadOnlyDatabase::open(dir.path().join(&f))
            .unwrap_or_else(|e| panic!("{f} does not open clean: {e}"))
            .close()
            .unwrap();
    }
    for seq in 1..=2000u64 {
        let m = s.get("S", seq).unwrap().expect("stored");
        assert_eq!(m.payload, msg("x", seq).payload, "seq {seq}");
    }
    assert_eq!(s.last_by_subject("S", "s.a").unwrap().unwrap().seq, 1998);
    assert_eq!(
        s.next_by_subject("S", 501, "s.c").unwrap().unwrap().seq,
        503
    );
    // Deletes, purges and removals in sealed blocks.
    assert!(rt.block_on(s.delete_msg("S", 7)).unwrap());
    assert!(!rt.block_on(s.delete_msg("S", 7)).unwrap());
    assert_eq!(
        rt.block_on(s.remove_msgs("S", vec![100, 101, 1999]))
            .unwrap(),
        3
    );
    let purged = rt
        .block_on(s.purge(
            "S",
            PurgeRequest {
                filter: Some("s.b".into()),
                up_to_seq: Some(1000),
                keep: None,
            },
        ))
        .unwrap();
    assert_eq!(
        purged, 331,
        "333 on s.b below 1000, of which 7 and 100 were deleted"
    );
    let before = check_consistent(&s, "S");
    assert_eq!(before.len(), 2000 - 1 - 3 - 331);
    drop(s);
    let s = open_sealing(dir.path());
    assert_eq!(check_consistent(&s, "S"), before);
    assert!(s.get("S", 7).unwrap().is_none());
    assert!(s.get("S", 8).unwrap().is_some());
}

#[test]
fn a_segment_whose_blocks_are_all_gone_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    rt.block_on(s.create_stream("T", vec![])).unwrap();
    fill(&s, 1, 600);
    assert!(s.segments() > 0);
    let size = s.file_size();
    rt.block_on(s.purge("S", PurgeRequest::default())).unwrap();
    assert_eq!(s.segments(), 0, "every sealed block was purged");
    assert!(segment_files(dir.path()).is_empty());
    assert!(s.file_size() < size);
    // The same through a stream's deletion.
    fill(&s, 601, 600);
    assert!(s.segments() > 0);
    rt.block_on(s.delete_stream("S")).unwrap();
    assert_eq!(s.segments(), 0);
    assert!(segment_files(dir.path()).is_empty());
}

#[test]
fn a_segment_file_no_commit_names_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    fill(&s, 1, 400);
    let named = segment_files(dir.path());
    assert!(!named.is_empty());
    drop(s);
    // What a sealer killed before its segment was adopted leaves behind.
    std::fs::write(dir.path().join("seg-999.redb"), b"half a segment").unwrap();
    let s = open_sealing(dir.path());
    assert_eq!(segment_files(dir.path()), named);
    assert_eq!(check_consistent(&s, "S").len(), 400);
    // New segments are numbered past it.
    fill(&s, 401, 400);
    assert!(segment_files(dir.path())
        .iter()
        .any(|f| f == "seg-1000.redb"));
}

#[test]
fn a_seal_that_fails_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    // The first segment's name is taken by a directory: creating the file fails.
    std::fs::create_dir(dir.path().join("seg-1.redb")).unwrap();
    fill(&s, 1, 400);
    assert!(dir.path().join("seg-1.redb").is_dir());
    assert!(s.segments() > 0, "later seals went on");
    assert_eq!(check_consistent(&s, "S").len(), 400);
    std::fs::remove_dir(dir.path().join("seg-1.redb")).unwrap();
    drop(s);
    let s = open_sealing(dir.path());
    assert_eq!(check_consistent(&s, "S").len(), 400);
}

/// A version 3 file (no segment tables) opens as a version 4 file without segments, and
/// seals from then on.
#[test]
fn version_3_files_are_migrated() {
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = Store::open(
            dir.path(),
            StoreOptions {
                seal_bytes: None,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        rt.block_on(s.create_stream("S", vec![])).unwrap();
        fill(&s, 1, 300);
        assert_eq!(s.segments(), 0);
    }
    {
        let db = redb::Database::open(dir.path().join(crate::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(crate::format::SEALED).unwrap();
        txn.delete_table(crate::format::SEGMENTS).unwrap();
        txn.open_table(crate::format::META)
            .unwrap()
            .insert("format_version", 3u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let s = open_sealing(dir.path());
    assert_eq!(check_consistent(&s, "S").len(), 300);
    fill(&s, 301, 400);
    assert!(s.segments() > 0);
    assert_eq!(check_consistent(&s, "S").len(), 700);
    drop(s);
    let db = redb::Database::open(dir.path().join(crate::FILE_NAME)).unwrap();
    let r = db.begin_read().unwrap();
    let meta = r.open_table(crate::format::META).unwrap();
    let v = meta.get("format_version").unwrap().unwrap();
    assert_eq!(v.value(), 4u32.to_le_bytes().as_slice());
}

/// A segment whose blocks mostly went (a KV bucket's old revisions, say) is not kept for the
/// few it still holds: they are written back into the active file and the file is removed.
#[test]
fn a_sparse_segment_is_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    // 60 blocks of 20 messages (one commit each).
    fill(&s, 1, 1200);
    let first_segments = segment_files(dir.path());
    assert!(!first_segments.is_empty());
    // Every block but one in eight goes whole.
    let gone: Vec<u64> = (1..=1200u64)
        .filter(|seq| ((seq - 1) / 20) % 8 != 0)
        .collect();
    assert_eq!(
        rt.block_on(s.remove_msgs("S", gone)).unwrap(),
        1200 - 8 * 20
    );
    // The unsealing is queued by the writer after that commit: wait until no segment is
    // sparse (a segment adopted with under 4 blocks never is: 1 of 3 is a third).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segment_counts(&s)
        .iter()
        .any(|(_, (live, total))| crate::writer::is_sparse(*live, *total))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sparse segments kept: {:?}",
            segment_counts(&s)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let left: Vec<String> = segment_files(dir.path())
        .into_iter()
        .filter(|f| first_segments.contains(f))
        .collect();
    assert!(
        left.len() < first_segments.len(),
        "no segment was unsealed: {left:?}"
    );
    assert!(s.wait_sealed(Duration::from_secs(10)));
    let kept = check_consistent(&s, "S");
    let want: Vec<u64> = (1..=1200u64)
        .filter(|seq| ((seq - 1) / 20) % 8 == 0)
        .collect();
    assert_eq!(kept.iter().map(|m| m.seq).collect::<Vec<_>>(), want);
    for m in &kept {
        assert_eq!(m.payload, msg("x", m.seq).payload);
    }
    drop(s);
    let s = open_sealing(dir.path());
    assert_eq!(check_consistent(&s, "S"), kept);
}

/// Readers running while blocks are sealed, adopted, released and unsealed underneath them
/// never fail and never miss a message that was never deleted.
#[test]
fn readers_never_miss_a_kept_message_while_segments_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            seal_bytes: Some(1),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    // Seqs ≡ 0 (mod 5) are kept for good; the others are removed in passes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let s = s.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let last = s.stream_state("S").unwrap().unwrap().last_seq;
                let got = s.read_range("S", 0, usize::MAX, u64::MAX).unwrap();
                for m in &got {
                    assert_eq!(m.payload, msg("x", m.seq).payload, "seq {}", m.seq);
                }
                let kept: std::collections::HashSet<u64> = got.iter().map(|m| m.seq).collect();
                for seq in (5..=last).step_by(5) {
                    assert!(kept.contains(&seq), "kept seq {seq} missing from a read");
                    assert!(
                        s.get("S", seq).unwrap().is_some(),
                        "kept seq {seq} not found"
                    );
                }
                reads += 1;
            }
            reads
        })
    };
    let mut next = 1u64;
    let mut most_segments = 0;
    for round in 0..150u64 {
        let msgs = (next..next + 50)
            .map(|i| msg(["s.a", "s.b"][(i % 2) as usize], i))
            .collect();
        rt.block_on(s.append_batch("S", msgs)).unwrap();
        next += 50;
        most_segments = most_segments.max(s.segments());
        if round % 3 == 2 {
            let gone: Vec<u64> = (1..next).filter(|seq| seq % 5 != 0).collect();
            rt.block_on(s.remove_msgs("S", gone)).unwrap();
        }
    }
    assert!(s.wait_sealed(Duration::from_secs(10)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader failed");
    assert!(reads > 10, "{reads} reads");
    assert!(most_segments > 0, "nothing was ever sealed");
    let gone: Vec<u64> = (1..next).filter(|seq| seq % 5 != 0).collect();
    rt.block_on(s.remove_msgs("S", gone)).unwrap();
    let kept = check_consistent(&s, "S");
    assert_eq!(
        kept.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (5..next).step_by(5).collect::<Vec<_>>()
    );
}

/// A read whose snapshot names a segment still finds its blocks when a commit meanwhile
/// rewrites them into the active file and the segment is forgotten: the writer removes the
/// file only once the reads in flight are done.
#[test]
fn a_read_in_flight_keeps_the_segment_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    fill(&s, 1, 600);
    // Wait until seq 5's block is sealed (seals run after commits: one more commit may be
    // needed once the first seal was adopted).
    let mut n = 601;
    while s.segments() == 0 {
        fill(&s, n, 20);
        n += 20;
    }
    let segments_before = segment_files(dir.path());
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || {
            crate::segments::PAUSE_BEFORE_SEALED_READ.with(|p| p.set(Duration::from_millis(400)));
            s.get("S", 5).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // Every message but seq 5 goes: every sealed block is rewritten or removed, so every
    // segment is forgotten while the reader waits inside its read.
    let gone: Vec<u64> = (1..n).filter(|seq| *seq != 5).collect();
    rt.block_on(s.remove_msgs("S", gone)).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.map(|m| m.seq), Some(5), "the read in flight lost seq 5");
    assert!(segment_files(dir.path())
        .iter()
        .all(|f| !segments_before.contains(f)));
}

/// A clean close records how much the active file holds unsealed, so the next open does not
/// take a large file for an unsealed one and seal at its first commit (a restarted hub
/// would read the active file back while its gateways reconnect).
#[test]
fn a_clean_reopen_does_not_seal_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let opts = StoreOptions {
        seal_bytes: Some(64 << 10),
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    // Past one seal (the first commit may seal too: a fresh file is already long), then a
    // little more that stays unsealed.
    let mut n = 1;
    while s.segments() == 0 {
        fill(&s, n, 200);
        n += 200;
    }
    fill(&s, n, 100);
    n += 100;
    let before = segment_files(dir.path());
    let active_len = s
        .inner
        .shared
        .len
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        active_len >= 2 * (64 << 10),
        "the active file ({active_len} B) is long enough to look unsealed"
    );
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    fill(&s, n, 20);
    assert!(s.wait_sealed(Duration::from_secs(10)));
    assert_eq!(
        segment_files(dir.path()),
        before,
        "the reopen sealed at once"
    );
    assert_eq!(check_consistent(&s, "S").len() as u64, n + 20 - 1);
}

/// A segment file that went missing (deleted by hand, a bad restore) does not stop the store
/// from opening (under systemd that would be a crash loop): its messages read as gone, the
/// rest is served and appends go on.
#[test]
fn a_missing_segment_file_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    fill(&s, 1, 400);
    let files = segment_files(dir.path());
    assert!(!files.is_empty());
    drop(s);
    std::fs::remove_file(dir.path().join(&files[0])).unwrap();
    let s = open_sealing(dir.path());
    let read = s.read_range("S", 0, usize::MAX, u64::MAX).unwrap();
    assert!(
        read.len() < 400,
        "the missing segment's messages cannot be read"
    );
    assert_eq!(s.get("S", 400).unwrap().unwrap().seq, 400);
    let next = rt.block_on(s.append("S", msg("s.a", 401))).unwrap();
    assert_eq!(next.seq, 401);
}

/// A segment file overwritten with garbage: reading its messages is an error (never a
/// panic), and everything else is served and written as before.
#[test]
fn a_garbage_segment_file_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open_sealing(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    rt.block_on(s.create_stream("T", vec![])).unwrap();
    fill(&s, 1, 400);
    let files = segment_files(dir.path());
    assert!(!files.is_empty());
    drop(s);
    let path = dir.path().join(&files[0]);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0xa5u8; len]).unwrap();
    let s = open_sealing(dir.path());
    assert!(s.get("S", 1).is_err(), "seq 1 lives in the damaged segment");
    assert!(s.read_range("S", 0, usize::MAX, u64::MAX).is_err());
    assert_eq!(s.get("S", 400).unwrap().unwrap().seq, 400);
    let a = rt.block_on(s.append("T", msg("t", 1))).unwrap();
    assert_eq!(
        s.get("T", a.seq).unwrap().unwrap().payload,
        msg("t", 1).payload
    );
}
