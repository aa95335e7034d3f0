//! Unit tests of every API call.

use super::{check_consistent, msg, open, rt};
use crate::{NewMessage, PurgeRequest, Store, StoreError, StoreOptions};

#[test]
fn create_append_get_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = open(dir.path());
        let st = rt.block_on(s.create_stream("S", b"cfg".to_vec())).unwrap();
        assert_eq!((st.first_seq, st.last_seq, st.msgs), (0, 0, 0));
        assert!(matches!(
            rt.block_on(s.create_stream("S", vec![])),
            Err(StoreError::AlreadyExists(_))
        ));
        for i in 1..=10u64 {
            let a = rt.block_on(s.append("S", msg("a.b", i))).unwrap();
            assert_eq!(a.seq, i, "gapless and ordered");
        }
        let mut with_hdr = msg("a.c", 11);
        with_hdr.headers = Some(b"NATS/1.0\r\nX: y\r\n\r\n"[..].into());
        let acks = rt
            .block_on(s.append_batch("S", vec![with_hdr.clone(), msg("a.b", 12)]))
            .unwrap();
        assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), [11, 12]);
        let m = s.get("S", 11).unwrap().unwrap();
        assert_eq!(m.headers, with_hdr.headers);
        assert_eq!(m.payload, with_hdr.payload);
        assert_eq!(m.subject, "a.c");
        assert!(s.get("S", 13).unwrap().is_none());
        assert!(s.get("S", 0).unwrap().is_none());
        assert!(matches!(s.get("T", 1), Err(StoreError::NotFound(_))));
        assert!(matches!(
            rt.block_on(s.append("T", msg("x", 1))),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            rt.block_on(s.append("S", msg("a..b", 1))),
            Err(StoreError::Invalid(_))
        ));
        rt.block_on(s.update_stream_config("S", b"cfg2".to_vec()))
            .unwrap();
        rt.block_on(s.put_consumer("S", "c1", b"state1".to_vec()))
            .unwrap();
        check_consistent(&s, "S");
    }
    let s = open(dir.path());
    let streams = s.streams().unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].0, "S");
    assert_eq!(streams[0].1, b"cfg2");
    assert_eq!(streams[0].2.last_seq, 12);
    assert_eq!(
        s.consumers("S").unwrap(),
        vec![("c1".into(), b"state1".to_vec())]
    );
    let all = check_consistent(&s, "S");
    assert_eq!(all.len(), 12);
    assert_eq!(rt.block_on(s.append("S", msg("a.b", 13))).unwrap().seq, 13);
}

#[test]
fn concurrent_appenders_get_distinct_seqs_and_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let rt = rt();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let before = s.commits();
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                // 1000 appends per task, 32 in flight per task.
                for chunk in 0..(1000 / 25) {
                    let futs: Vec<_> = (0..25)
                        .map(|i| {
                            let n = t * 1000 + chunk * 25 + i;
                            (n, s.append("S", msg(&format!("t.{t}"), n)))
                        })
                        .collect();
                    for (n, f) in futs {
                        out.push((n, f.await.unwrap().seq));
                    }
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let commits = s.commits() - before;
    assert_eq!(results.len(), 8000);
    let mut seqs: Vec<u64> = results.iter().map(|r| r.1).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=8000).collect::<Vec<_>>());
    for (n, seq) in &results {
        assert_eq!(
            s.get("S", *seq).unwrap().unwrap().payload,
            msg("x", *n).payload
        );
    }
    assert!(commits < 8000 / 4, "{commits} commits for 8000 appends");
    check_consistent(&s, "S");
}

#[test]
fn group_commit_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let rt = rt();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let before = s.commits();
    let futs: Vec<_> = (0..256).map(|i| s.append("S", msg("a", i))).collect();
    let acks = rt.block_on(async {
        let mut v = Vec::new();
        for f in futs {
            v.push(f.await.unwrap().seq);
        }
        v
    });
    assert_eq!(acks, (1..=256).collect::<Vec<_>>(), "arrival order");
    let commits = s.commits() - before;
    assert!(
        commits <= 16,
        "{commits} commits for 256 concurrent appends"
    );
}

/// Appends 100 messages of 65 bytes (subject and payload) at once to a store opened with
/// `opts`; returns how many commits that took.
fn commits_for_100_appends(opts: StoreOptions) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts).unwrap();
    let rt = rt();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let before = s.commits();
    let futs: Vec<_> = (0..100).map(|i| s.append("S", msg("a", i))).collect();
    rt.block_on(async {
        for f in futs {
            f.await.unwrap();
        }
    });
    assert_eq!(s.stream_state("S").unwrap().unwrap().msgs, 100);
    s.commits() - before
}

#[test]
fn max_batch_bounds_a_commit() {
    let opts = StoreOptions {
        max_batch: 10,
        ..StoreOptions::default()
    };
    assert!(commits_for_100_appends(opts) >= 10);
}

#[test]
fn max_batch_bytes_bounds_a_commit() {
    // At most 10 messages of 65 bytes per commit.
    let opts = StoreOptions {
        max_batch_bytes: 650,
        ..StoreOptions::default()
    };
    assert!(commits_for_100_appends(opts) >= 10);
}

#[test]
fn delete_msg_updates_state_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let rt = rt();
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let subjects = ["a", "b", "a", "c", "a", "b"];
    for (i, sub) in subjects.iter().enumerate() {
        rt.block_on(s.append("S", msg(sub, i as u64))).unwrap();
    }
    assert!(rt.block_on(s.delete_msg("S", 3)).unwrap());
    assert!(!rt.block_on(s.delete_msg("S", 3)).unwrap());
    assert!(!rt.block_on(s.delete_msg("S", 99)).unwrap());
    let ss = s.subject_state("S", "a").unwrap().unwrap();
    assert_eq!((ss.first_seq, ss.last_seq, ss.msgs), (1, 5, 2));
    assert!(rt.block_on(s.delete_msg("S", 1)).unwrap());
    let st = s.stream_state("S").unwrap().unwrap();
    assert_eq!(
        (st.first_seq, st.last_seq, st.msgs, st.num_deleted),
        (2, 6, 4, 1)
    );
    assert_eq!(s.subject_state("S", "a").unwrap().unwrap().first_seq, 5);
    assert!(rt.block_on(s.delete_msg("S", 6)).unwrap());
    let ss = s.subject_state("S", "b").unwrap().unwrap();
    assert_eq!((ss.first_seq, ss.last_seq, ss.msgs), (2, 2, 1));
    assert!(rt.block_on(s.delete_msg("S", 4)).unwrap());
    assert!(s.subject_state("S", "c").unwrap().is_none());
    assert_eq!(s.next_by_subject("S", 0, "a").unwrap().unwrap().seq, 5);
    assert_eq!(s.next_by_subject("S", 3, "*").unwrap().unwrap().seq, 5);
    assert_eq!(s.last_by_subject("S", ">").unwrap().unwrap().seq, 5);
    let seqs: Vec<u64> = s
        .read_range("S", 0, 10, u64::MAX)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [2, 5]);
    check_consistent(&s, "S");
    // Delete everything: the stream is empty and first = last + 1.
    assert!(rt.block_on(s.delete_msg("S", 2)).unwrap());
    assert!(rt.block_on(s.delete_msg("S", 5)).unwrap());
    let st = s.stream_state("S").unwrap().unwrap();
    assert_eq!((st.first_seq, st.last_seq, st.msgs), (7, 6, 0));
    assert_eq!(rt.block_on(s.append("S", msg("z", 0))).unwrap().seq, 7);
    check_consistent(&s, "S");
}

fn filled(rt: &tokio::runtime::Runtime, s: &Store) {
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    let msgs: Vec<NewMessage> = (0..30u64)
        .map(|i| msg(["x.a", "x.b", "y.a"][(i % 3) as usize], i))
        .collect();
    rt.block_on(s.append_batch("S", msgs)).unwrap();
}

#[test]
fn purge_variants() {
    let rt = rt();
    // up_to_seq (exclusive)
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    filled(&rt, &s);
    let n = rt
        .block_on(s.purge(
            "S",
            PurgeRequest {
                up_to_seq: Some(11),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(s.stream_state("S").unwrap().unwrap().first_seq, 11);
    check_consistent(&s, "S");
    // filter
    let n = rt
        .block_on(s.purge(
            "S",
            PurgeRequest {
                filter: Some("x.*".into()),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(n, 13);
    assert!(s.subject_state("S", "x.a").unwrap().is_none());
    check_consistent(&s, "S");
    // keep
    let n = rt
        .block_on(s.purge(
            "S",
            PurgeRequest {
                keep: Some(2),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(n, 5);
    let seqs: Vec<u64> = check_consistent(&s, "S").iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [27, 30]);
    // all
    let n = rt.block_on(s.purge("S", PurgeRequest::default())).unwrap();
    assert_eq!(n, 2);
    let st = s.stream_state("S").unwrap().unwrap();
    assert_eq!(
        (st.first_seq, st.last_seq, st.msgs, st.num_subjects),
        (31, 30, 0, 0)
    );
    check_consistent(&s, "S");

    // filter + keep on a fresh stream
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    filled(&rt, &s);
    let n = rt
        .block_on(s.purge(
            "S",
            PurgeRequest {
                filter: Some("x.a".into()),
                keep: Some(3),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(n, 7);
    let ss = s.subject_state("S", "x.a").unwrap().unwrap();
    assert_eq!((ss.first_seq, ss.last_seq, ss.msgs), (22, 28, 3));
    assert_eq!(s.stream_state("S").unwrap().unwrap().first_seq, 2);
    check_consistent(&s, "S");
}

#[test]
fn delete_stream_frees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    filled(&rt, &s);
    rt.block_on(s.put_consumer("S", "c", b"x".to_vec()))
        .unwrap();
    rt.block_on(s.delete_stream("S")).unwrap();
    assert!(s.stream_state("S").unwrap().is_none());
    assert!(matches!(
        rt.block_on(s.delete_stream("S")),
        Err(StoreError::NotFound(_))
    ));
    // Same name again: a new, empty stream with a new id.
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    assert!(s.get("S", 1).unwrap().is_none());
    assert!(s.subject_state("S", "x.a").unwrap().is_none());
    assert!(s.consumers("S").unwrap().is_empty());
    assert_eq!(rt.block_on(s.append("S", msg("q", 1))).unwrap().seq, 1);
    drop(s);
    // Nothing of the old stream is left in any table.
    let s = open(dir.path());
    let db = s.inner.shared.db.read().unwrap();
    let txn = redb::ReadableDatabase::begin_read(db.as_ref().unwrap()).unwrap();
    use redb::ReadableTableMetadata;
    assert_eq!(
        txn.open_table(crate::format::BLOCKS)
            .unwrap()
            .len()
            .unwrap(),
        1
    );
    assert_eq!(
        txn.open_table(crate::format::SUBJECTS)
            .unwrap()
            .len()
            .unwrap(),
        1
    );
    assert_eq!(
        txn.open_table(crate::format::CONSUMERS)
            .unwrap()
            .len()
            .unwrap(),
        0
    );
}

#[test]
fn consumer_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("A", vec![])).unwrap();
    rt.block_on(s.create_stream("B", vec![])).unwrap();
    rt.block_on(s.put_consumer("A", "c2", b"2".to_vec()))
        .unwrap();
    rt.block_on(s.put_consumer("A", "c1", b"1".to_vec()))
        .unwrap();
    rt.block_on(s.put_consumer("B", "c1", b"b".to_vec()))
        .unwrap();
    rt.block_on(s.put_consumer("A", "c1", b"1b".to_vec()))
        .unwrap();
    assert_eq!(
        s.consumers("A").unwrap(),
        vec![("c1".into(), b"1b".to_vec()), ("c2".into(), b"2".to_vec())]
    );
    assert!(rt.block_on(s.delete_consumer("A", "c1")).unwrap());
    assert!(!rt.block_on(s.delete_consumer("A", "c1")).unwrap());
    assert_eq!(
        s.consumers("B").unwrap(),
        vec![("c1".into(), b"b".to_vec())]
    );
    assert!(matches!(
        rt.block_on(s.put_consumer("Z", "c", vec![])),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn read_range_limits() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    filled(&rt, &s);
    assert_eq!(s.read_range("S", 5, 3, u64::MAX).unwrap().len(), 3);
    assert_eq!(s.read_range("S", 5, 3, u64::MAX).unwrap()[0].seq, 5);
    // each message accounts 3 + 64 bytes
    assert_eq!(s.read_range("S", 1, 100, 200).unwrap().len(), 2);
    assert_eq!(s.read_range("S", 1, 100, 1).unwrap().len(), 1);
    assert!(s.read_range("S", 31, 100, u64::MAX).unwrap().is_empty());
}

#[test]
fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = redb::Database::open(dir.path().join(crate::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(crate::format::META)
            .unwrap()
            .insert("format_version", 5u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(dir.path(), StoreOptions::default()) {
        Err(StoreError::Version {
            found: 5,
            supported: 4,
        }) => {}
        other => panic!("expected a version error, got {other:?}"),
    }
}

/// A version 1 file (bytes counted as subject, headers and payload) is migrated when opened:
/// every stream's bytes as nats-server counts them, the version written.
#[test]
fn version_1_files_are_migrated() {
    use redb::{ReadableDatabase, ReadableTable};
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = open(dir.path());
        rt.block_on(s.create_stream("S", b"{}".to_vec())).unwrap();
        rt.block_on(s.create_stream("T", b"{}".to_vec())).unwrap();
        let mut with_hdr = msg("a.h", 2);
        with_hdr.headers = Some(bytes::Bytes::from_static(b"NATS/1.0\r\nA: b\r\n\r\n"));
        for m in [msg("a.b", 1), with_hdr, msg("a.c", 3)] {
            rt.block_on(s.append("S", m)).unwrap();
        }
        rt.block_on(s.delete_msg("S", 3)).unwrap();
        rt.block_on(s.append("T", msg("t", 1))).unwrap();
    }
    // Write it back as version 1 wrote it.
    {
        let db = redb::Database::open(dir.path().join(crate::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let blocks = txn.open_table(crate::format::BLOCKS).unwrap();
            let mut v1: std::collections::HashMap<u32, u64> = Default::default();
            for e in blocks.iter().unwrap() {
                let (k, v) = e.unwrap();
                let block: crate::format::BlockRec = crate::format::decode(v.value()).unwrap();
                for m in block.slots.iter().flatten() {
                    let h = m.headers.as_ref().map_or(0, Vec::len);
                    *v1.entry(k.value().0).or_default() +=
                        crate::format::msg_size_v1(&m.subject, h, m.payload.len());
                }
            }
            let mut states = txn.open_table(crate::format::STATES).unwrap();
            for (id, bytes) in v1 {
                let raw = states.get(id).unwrap().unwrap().value().to_vec();
                let mut st: crate::format::StateRec = crate::format::decode(&raw).unwrap();
                st.bytes = bytes;
                states
                    .insert(id, crate::format::encode(&st).unwrap().as_slice())
                    .unwrap();
            }
            txn.open_table(crate::format::META)
                .unwrap()
                .insert("format_version", 1u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let s = open(dir.path());
    let st = s.stream_state("S").unwrap().unwrap();
    assert_eq!(st.bytes, (30 + 3 + 64) + (34 + 3 + 18 + 64));
    check_consistent(&s, "S");
    check_consistent(&s, "T");
    drop(s);
    let db = redb::Database::open(dir.path().join(crate::FILE_NAME)).unwrap();
    let r = db.begin_read().unwrap();
    let meta = r.open_table(crate::format::META).unwrap();
    let v = meta.get("format_version").unwrap().unwrap();
    assert_eq!(v.value(), crate::FORMAT_VERSION.to_le_bytes().as_slice());
}

#[test]
fn second_open_is_refused_and_futures_need_no_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert!(matches!(
        Store::open(dir.path(), StoreOptions::default()),
        Err(StoreError::AlreadyOpen)
    ));
    // A plain executor without tokio's I/O driver.
    let st = futures_lite_block_on(s.create_stream("S", vec![])).unwrap();
    assert_eq!(st.msgs, 0);
}

/// A minimal block_on (no tokio runtime at all).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct T(std::thread::Thread);
    impl Wake for T {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(T(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn compact_shrinks_after_purge() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    for i in 0..200u64 {
        let msgs = (0..50).map(|j| msg("a", i * 50 + j)).collect();
        rt.block_on(s.append_batch("S", msgs)).unwrap();
    }
    let big = s.file_size();
    rt.block_on(s.purge(
        "S",
        PurgeRequest {
            keep: Some(10),
            ..Default::default()
        },
    ))
    .unwrap();
    s.compact().unwrap();
    let small = s.file_size();
    assert!(small < big, "{small} < {big}");
    assert_eq!(check_consistent(&s, "S").len(), 10);
}

#[test]
fn append_after_depends_on_the_predicted_last_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    // Pipelined: all three are queued before any commits; each names its predecessor.
    let a = s.append_after("S", msg("a", 1), 0);
    let b = s.append_after("S", msg("a", 2), 1);
    let c = s.append_after("S", msg("a", 3), 2);
    let (a, b, c) = rt.block_on(async { (a.await, b.await, c.await) });
    assert_eq!((a.unwrap().seq, b.unwrap().seq, c.unwrap().seq), (1, 2, 3));
    // A wrong prediction (as after a failed predecessor) writes nothing.
    match rt.block_on(s.append_after("S", msg("a", 4), 7)) {
        Err(StoreError::LastSeqMismatch { required, found }) => {
            assert_eq!((required, found), (7, 3))
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // Within one batch too: the failed one does not advance the sequence the next one sees.
    let d = s.append_after("S", msg("a", 5), 4);
    let e = s.append_after("S", msg("a", 6), 3);
    let (d, e) = rt.block_on(async { (d.await, e.await) });
    assert!(matches!(d, Err(StoreError::LastSeqMismatch { .. })));
    assert_eq!(e.unwrap().seq, 4);
    assert_eq!(check_consistent(&s, "S").len(), 4);
}

#[test]
fn append_each_gives_every_message_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("S", vec![])).unwrap();
    rt.block_on(s.append("S", msg("a", 1))).unwrap();
    // A plain one, a chain on it, a wrong prediction (fails alone), a plain one after it,
    // and a bad subject (refused alone).
    let items = vec![
        (msg("a", 2), None),
        (msg("a", 3), Some(2)),
        (msg("a", 4), Some(9)),
        (msg("b", 5), None),
        (msg("a..b", 6), None),
        (msg("b", 7), Some(4)),
    ];
    let out = rt.block_on(s.append_each("S", items)).unwrap();
    assert_eq!(out.len(), 6);
    assert_eq!(out[0].as_ref().unwrap().seq, 2);
    assert_eq!(out[1].as_ref().unwrap().seq, 3);
    assert!(matches!(
        out[2],
        Err(StoreError::LastSeqMismatch {
            required: 9,
            found: 3
        })
    ));
    assert_eq!(out[3].as_ref().unwrap().seq, 4);
    assert!(matches!(out[4], Err(StoreError::Invalid(_))));
    assert_eq!(out[5].as_ref().unwrap().seq, 5);
    let stored = check_consistent(&s, "S");
    assert_eq!(stored.len(), 5);
    // Unknown stream: every message fails on its own, the group itself is answered.
    let out = rt
        .block_on(s.append_each("NOPE", vec![(msg("a", 1), None)]))
        .unwrap();
    assert!(matches!(out[0], Err(StoreError::NotFound(_))));
}

/// A memory store works as a file store does, bounded by `max_file_bytes`, and writes no file.
#[test]
fn memory_store_is_bounded_and_recovers_after_a_purge() {
    let rt = rt();
    let s = Store::open_memory(StoreOptions {
        max_file_bytes: Some(2 << 20),
        ..StoreOptions::default()
    })
    .unwrap();
    rt.block_on(s.create_stream("M", b"{}".to_vec())).unwrap();
    let mut stored = 0u64;
    let full = loop {
        let mut m = msg("m.x", stored + 1);
        m.payload = bytes::Bytes::from(vec![7u8; 16 << 10]);
        match rt.block_on(s.append("M", m)) {
            Ok(a) => stored = a.seq,
            Err(e) => break e,
        }
        assert!(stored < 1000, "2 MiB never filled");
    };
    assert!(
        matches!(full, StoreError::InsufficientResources(_)),
        "{full:?}"
    );
    assert!(stored > 10);
    assert_eq!(check_consistent(&s, "M").len() as u64, stored);
    rt.block_on(s.purge("M", PurgeRequest::default())).unwrap();
    rt.block_on(s.append("M", msg("m.y", 1))).unwrap();
    assert_eq!(s.stream_state("M").unwrap().unwrap().msgs, 1);
}

/// Lazy appends (`append_each_lazy`) are readable at once, keep their expected sequences,
/// go on past the lazy commits allowed in a row (one is made durable), and are all there
/// after `sync` and a reopen.
#[test]
fn lazy_appends_are_there_after_sync_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let rounds = u64::from(crate::writer::MAX_LAZY_COMMITS) + 6;
    {
        let s = open(dir.path());
        rt.block_on(s.create_stream("S", vec![])).unwrap();
        for i in 1..=rounds {
            let out = rt
                .block_on(s.append_each_lazy("S", vec![(msg("a", i), Some(i - 1))]))
                .unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].as_ref().unwrap().seq, i);
            assert!(s.get("S", i).unwrap().is_some(), "readable at once");
        }
        let refused = rt
            .block_on(s.append_each_lazy("S", vec![(msg("a", 0), Some(1))]))
            .unwrap();
        assert!(refused[0].is_err(), "a wrong expected sequence is refused");
        rt.block_on(s.sync()).unwrap();
    }
    let s = open(dir.path());
    let st = s.stream_state("S").unwrap().unwrap();
    assert_eq!((st.first_seq, st.last_seq, st.msgs), (1, rounds, rounds));
    check_consistent(&s, "S");
}
