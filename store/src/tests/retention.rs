//! The operations of interest and workqueue retention: `remove_msgs` and `skip`, alone and
//! mixed with appends in one group commit, and across a reopen.

use super::{check_consistent, msg, open, rt};

#[test]
fn remove_msgs_spans_blocks_and_fixes_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("W", vec![])).unwrap();
    // Several commits, so several blocks.
    for round in 0..4u64 {
        let msgs = (1..=10)
            .map(|i| msg(if i % 2 == 0 { "w.even" } else { "w.odd" }, round * 10 + i))
            .collect();
        rt.block_on(s.append_batch("W", msgs)).unwrap();
    }
    // First, last, both ends of a subject, across blocks, duplicates and unknown seqs.
    let gone = rt
        .block_on(s.remove_msgs("W", vec![40, 1, 2, 2, 15, 16, 999, 0, 39]))
        .unwrap();
    assert_eq!(gone, 6);
    let all = check_consistent(&s, "W");
    assert_eq!(all.len(), 34);
    let st = s.stream_state("W").unwrap().unwrap();
    assert_eq!((st.first_seq, st.last_seq, st.msgs), (3, 40, 34));
    let even = s.subject_state("W", "w.even").unwrap().unwrap();
    assert_eq!((even.first_seq, even.last_seq), (4, 38));
    let odd = s.subject_state("W", "w.odd").unwrap().unwrap();
    assert_eq!((odd.first_seq, odd.last_seq), (3, 37));
    // Everything: the stream is empty, first_seq is one past the last.
    let rest: Vec<u64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(rt.block_on(s.remove_msgs("W", rest)).unwrap(), 34);
    let st = s.stream_state("W").unwrap().unwrap();
    assert_eq!(
        (st.first_seq, st.last_seq, st.msgs, st.num_subjects),
        (41, 40, 0, 0)
    );
    check_consistent(&s, "W");
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.stream_state("W").unwrap().unwrap(), st);
}

#[test]
fn skip_many_takes_a_range_of_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("M", vec![])).unwrap();
    // An empty mirror whose origin starts at 1,000,001.
    assert_eq!(
        rt.block_on(s.skip_many("M", 1_000_000, 5)).unwrap().seq,
        1_000_000
    );
    let st = s.stream_state("M").unwrap().unwrap();
    assert_eq!(
        (st.first_seq, st.last_seq, st.msgs),
        (1_000_001, 1_000_000, 0)
    );
    assert_eq!(
        rt.block_on(s.append("M", msg("m.a", 6))).unwrap().seq,
        1_000_001
    );
    // An interior gap.
    assert_eq!(rt.block_on(s.skip_many("M", 3, 7)).unwrap().seq, 1_000_004);
    assert_eq!(
        rt.block_on(s.append("M", msg("m.b", 8))).unwrap().seq,
        1_000_005
    );
    let st = s.stream_state("M").unwrap().unwrap();
    assert_eq!(
        (st.first_seq, st.last_seq, st.msgs),
        (1_000_001, 1_000_005, 2)
    );
    check_consistent(&s, "M");
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.stream_state("M").unwrap().unwrap(), st);
}

#[test]
fn skip_takes_a_sequence_in_order_with_appends() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = open(dir.path());
    rt.block_on(s.create_stream("I", vec![])).unwrap();
    // A skip on an empty stream.
    assert_eq!(rt.block_on(s.skip("I", 5)).unwrap().seq, 1);
    let st = s.stream_state("I").unwrap().unwrap();
    assert_eq!((st.first_seq, st.last_seq, st.msgs), (2, 1, 0));
    // Appends and skips submitted together share commits and keep their order.
    let a = s.append("I", msg("i.a", 2));
    let b = s.skip("I", 6);
    let c = s.append("I", msg("i.a", 4));
    let d = s.skip("I", 7);
    let e = s.append("I", msg("i.b", 6));
    let seqs: Vec<u64> = rt.block_on(async {
        vec![
            a.await.unwrap().seq,
            b.await.unwrap().seq,
            c.await.unwrap().seq,
            d.await.unwrap().seq,
            e.await.unwrap().seq,
        ]
    });
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    for (seq, stored) in [(2, true), (3, false), (4, true), (5, false), (6, true)] {
        assert_eq!(s.get("I", seq).unwrap().is_some(), stored, "seq {seq}");
    }
    let st = s.stream_state("I").unwrap().unwrap();
    assert_eq!((st.first_seq, st.last_seq, st.msgs), (2, 6, 3));
    check_consistent(&s, "I");
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.stream_state("I").unwrap().unwrap(), st);
    check_consistent(&s, "I");
}
