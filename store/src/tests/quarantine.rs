//! Records that cannot be read are quarantined, not fatal.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{msg, open, rt};
use crate::format::{CONSUMERS, QUARANTINE, STREAMS};
use crate::{QuarantineTarget, FILE_NAME};

/// Writes `bytes` over stream `name`'s definition, through redb directly.
fn overwrite_stream_def(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let db = redb::Database::open(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(STREAMS)
        .unwrap()
        .insert(name, bytes)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn an_undecodable_stream_definition_is_quarantined_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let s = open(dir.path());
        for name in ["A", "B"] {
            rt.block_on(s.create_stream(name, b"cfg".to_vec())).unwrap();
            rt.block_on(s.append(name, msg("x", 1))).unwrap();
        }
    }
    let garbage = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    overwrite_stream_def(dir.path(), "A", &garbage);
    let s = open(dir.path());
    let names: Vec<String> = s.streams().unwrap().into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["B"], "A is out of service, B serves");
    assert_eq!(s.get("B", 1).unwrap().unwrap().payload, msg("x", 1).payload);
    let q = s.quarantined().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].what, "stream A");
    assert_eq!(q[0].bytes, garbage.len());
    assert!(q[0].reason.contains("stream definition"), "{}", q[0].reason);
    // The name can be used again, and the quarantined bytes stay as they were.
    rt.block_on(s.create_stream("A", b"new".to_vec())).unwrap();
    rt.block_on(s.append("A", msg("y", 1))).unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.streams().unwrap().len(), 2);
    assert_eq!(
        s.quarantined().unwrap().len(),
        1,
        "kept, not quarantined twice"
    );
    drop(s);
    let db = redb::Database::open(dir.path().join(FILE_NAME)).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(QUARANTINE).unwrap();
    let (_, v) = t.first().unwrap().unwrap();
    assert!(v.value().ends_with(&garbage), "the original bytes are kept");
}

#[test]
fn quarantine_moves_a_consumer_or_a_stream_aside() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("S", b"cfg".to_vec())).unwrap();
    rt.block_on(s.put_consumer("S", "bad", b"garbage".to_vec()))
        .unwrap();
    rt.block_on(s.put_consumer("S", "good", b"ok".to_vec()))
        .unwrap();
    let target = QuarantineTarget::Consumer("S".into(), "bad".into());
    assert!(rt.block_on(s.quarantine(target.clone(), "json")).unwrap());
    assert!(!rt.block_on(s.quarantine(target, "json")).unwrap(), "gone");
    assert_eq!(s.consumers("S").unwrap(), [("good".into(), b"ok".to_vec())]);
    rt.block_on(s.create_stream("T", b"{".to_vec())).unwrap();
    assert!(rt
        .block_on(s.quarantine(QuarantineTarget::Stream("T".into()), "bad config"))
        .unwrap());
    assert!(s.stream_state("T").unwrap().is_none());
    let q = s.quarantined().unwrap();
    let what: Vec<&str> = q.iter().map(|q| q.what.as_str()).collect();
    assert_eq!(what, ["consumer S bad", "stream T"]);
    assert_eq!(q[1].reason, "bad config");
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.quarantined().unwrap().len(), 2, "kept across a restart");
    // The consumer table really lost the record (not only the cache).
    drop(s);
    let db = redb::Database::open(dir.path().join(FILE_NAME)).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(CONSUMERS).unwrap();
    assert_eq!(t.len().unwrap(), 1);
}
