//! Compressed blocks (JetStream's `compression: s2`): a compressed stream reads, purges,
//! removes and trims exactly as a plain one holding the same messages, takes less room, and
//! stays readable after a reopen (when its blocks may be of both kinds).

use redb::ReadableDatabase;

use super::{check_consistent, open, rt};
use crate::{format, NewMessage, PurgeRequest, Retain, Store, StoredMessage};

/// A compressible message: a text pattern and its number.
fn reading(subject: &str, n: u64) -> NewMessage {
    let line = format!("line {} temperature 21.{} ok;", n % 7, n % 10);
    NewMessage::new(
        subject,
        line.repeat(100).into_bytes(),
        i64::try_from(n).unwrap_or(0),
    )
}

/// What a stream holds, without the stream-specific parts.
fn contents(store: &Store, name: &str) -> Vec<(u64, String, Vec<u8>)> {
    check_consistent(store, name)
        .into_iter()
        .map(|m: StoredMessage| (m.seq, m.subject, m.payload.to_vec()))
        .collect()
}

/// The bytes of a stream's block values in the file.
fn block_bytes(dir: &std::path::Path, id: u32) -> usize {
    let db = redb::Database::open(dir.join(crate::FILE_NAME)).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(format::BLOCKS).unwrap();
    t.range((id, 0u64)..=(id, u64::MAX))
        .unwrap()
        .map(|e| e.unwrap().1.value().len())
        .sum()
}

#[test]
fn a_compressed_stream_behaves_as_a_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(async {
        for name in ["P", "Z"] {
            s.create_stream(name, b"{}".to_vec()).await.unwrap();
        }
        s.set_compression("Z", true).await.unwrap();
        for name in ["P", "Z"] {
            for n in 1..=300u64 {
                let subject = ["a", "b", "c"][(n % 3) as usize];
                s.append(name, reading(subject, n)).await.unwrap();
            }
        }
        assert_eq!(contents(&s, "P"), contents(&s, "Z"));
        for name in ["P", "Z"] {
            let purge = PurgeRequest {
                filter: Some("a".into()),
                up_to_seq: Some(100),
                keep: None,
            };
            s.purge(name, purge).await.unwrap();
            s.remove_msgs(name, vec![101, 150, 299]).await.unwrap();
            let retain = Retain {
                max_msgs: Some(150),
                ..Retain::default()
            };
            s.set_retain(name, retain).await.unwrap();
        }
        assert_eq!(contents(&s, "P"), contents(&s, "Z"));
        for subject in ["a", "b", "c"] {
            let last = |n| s.last_by_subject(n, subject).unwrap().map(|m| m.seq);
            assert_eq!(last("P"), last("Z"));
            let next = |n| s.next_by_subject(n, 160, subject).unwrap().map(|m| m.seq);
            assert_eq!(next("P"), next("Z"));
        }
        let get = |n| s.get(n, 200).unwrap().map(|m| (m.subject, m.payload));
        assert_eq!(get("Z"), get("P"));
        assert!(get("Z").is_some());
    });
    drop(s);
    // Stream ids: P was created first.
    let (plain, packed) = (block_bytes(dir.path(), 1), block_bytes(dir.path(), 2));
    assert!(packed * 4 < plain, "compressed {packed} vs plain {plain}");

    // Reopened, Z is not compressing any more: old compressed blocks and new plain ones mix.
    let s = open(dir.path());
    rt.block_on(async {
        for name in ["P", "Z"] {
            for n in 301..=320u64 {
                s.append(name, reading("d", n)).await.unwrap();
            }
        }
        assert_eq!(contents(&s, "P"), contents(&s, "Z"));
        s.set_compression("Z", true).await.unwrap();
        s.purge("Z", PurgeRequest::default()).await.unwrap();
        assert!(contents(&s, "Z").is_empty());
        assert!(s.set_compression("nope", true).await.is_err());
    });
}

#[test]
fn a_hostile_compressed_block_is_an_error_not_a_crash() {
    let mut buf = Vec::new();
    let mut value = format::COMPRESSED_MAGIC.to_vec();
    value.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]);
    assert!(format::block_bytes(&value, &mut buf).is_err());
    let mut packed = Vec::new();
    format::compress_block(b"plain bytes", &mut packed).unwrap();
    assert_eq!(
        format::block_bytes(&packed, &mut buf).unwrap(),
        b"plain bytes"
    );
    assert_eq!(format::block_bytes(b"raw", &mut buf).unwrap(), b"raw");
}
