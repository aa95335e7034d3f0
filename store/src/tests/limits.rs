//! Limits applied by the writer in the commit of the append that crossed them
//! ([`Retain`](crate::Retain)): messages, bytes, per subject, and a randomized comparison with
//! a model of nats-server's order (a subject's limit first, then the stream's).
//! Also the paged subject counts of `STREAM.INFO`.

use super::{check_consistent, msg, open, rt, Rng};
use crate::{format, Retain};

fn seqs(store: &crate::Store, name: &str) -> Vec<u64> {
    check_consistent(store, name)
        .iter()
        .map(|m| m.seq)
        .collect()
}

#[test]
fn max_msgs_holds_when_each_append_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    rt().block_on(async {
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        let retain = Retain {
            max_msgs: Some(5),
            ..Retain::default()
        };
        store.set_retain("S", retain).await.unwrap();
        for n in 1..=8u64 {
            let a = store.append("S", msg("s.a", n)).await.unwrap();
            assert_eq!(a.seq, n);
            assert_eq!(a.trimmed, u64::from(n > 5), "append {n}");
            let st = store.stream_state("S").unwrap().unwrap();
            assert_eq!(st.msgs, n.min(5), "after append {n}");
        }
        assert_eq!(seqs(&store, "S"), vec![4, 5, 6, 7, 8]);
        // A group of appends is trimmed once, in the same commit; the count is on its last.
        let group = (9..=15).map(|n| (msg("s.a", n), None)).collect();
        let out = store.append_each("S", group).await.unwrap();
        let trimmed: Vec<u64> = out.iter().map(|a| a.as_ref().unwrap().trimmed).collect();
        assert_eq!(trimmed, vec![0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(seqs(&store, "S"), vec![11, 12, 13, 14, 15]);
    });
}

#[test]
fn max_bytes_removes_the_oldest_until_the_stream_fits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let one = msg("s.a", 1);
    let size = format::msg_size(&one.subject, 0, one.payload.len());
    rt().block_on(async {
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        let retain = Retain {
            max_bytes: Some(3 * size + size / 2),
            ..Retain::default()
        };
        store.set_retain("S", retain).await.unwrap();
        for n in 1..=6u64 {
            store.append("S", msg("s.a", n)).await.unwrap();
        }
        assert_eq!(seqs(&store, "S"), vec![4, 5, 6]);
        let st = store.stream_state("S").unwrap().unwrap();
        assert!(st.bytes <= 3 * size + size / 2);
    });
}

#[test]
fn a_subjects_limit_comes_before_the_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    rt().block_on(async {
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        let retain = Retain {
            max_msgs: Some(3),
            max_msgs_per_subject: Some(1),
            ..Retain::default()
        };
        store.set_retain("S", retain).await.unwrap();
        for (n, s) in [(1, "a"), (2, "b"), (3, "a")] {
            store.append("S", msg(s, n)).await.unwrap();
        }
        // a's old message went for the subject's limit; the stream's was never crossed.
        assert_eq!(seqs(&store, "S"), vec![2, 3]);
    });
}

#[test]
fn tighter_limits_apply_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    rt().block_on(async {
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        for (n, s) in [(1, "a"), (2, "b"), (3, "a"), (4, "a"), (5, "b"), (6, "c")] {
            store.append("S", msg(s, n)).await.unwrap();
        }
        let per_subject = Retain {
            max_msgs_per_subject: Some(1),
            ..Retain::default()
        };
        assert_eq!(store.set_retain("S", per_subject).await.unwrap(), 3);
        assert_eq!(seqs(&store, "S"), vec![4, 5, 6]);
        let two = Retain {
            max_msgs: Some(2),
            ..per_subject
        };
        assert_eq!(store.set_retain("S", two).await.unwrap(), 1);
        assert_eq!(seqs(&store, "S"), vec![5, 6]);
    });
}

#[test]
fn limits_live_in_memory_until_set_again() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        {
            let store = open(dir.path());
            store.create_stream("S", b"{}".to_vec()).await.unwrap();
            let retain = Retain {
                max_msgs: Some(2),
                ..Retain::default()
            };
            store.set_retain("S", retain).await.unwrap();
            for n in 1..=3 {
                store.append("S", msg("s", n)).await.unwrap();
            }
            assert_eq!(seqs(&store, "S"), vec![2, 3]);
        }
        let store = open(dir.path());
        store.append("S", msg("s", 4)).await.unwrap();
        assert_eq!(seqs(&store, "S"), vec![2, 3, 4]);
        assert!(store.set_retain("nope", Retain::default()).await.is_err());
    });
}

/// Random appends (single and grouped) on three subjects under random limits, against a model
/// of nats-server: after each message, the newest of its subject, then of the stream.
#[test]
fn random_appends_match_the_model() {
    let size = {
        let one = msg("a", 1);
        format::msg_size(&one.subject, 0, one.payload.len())
    };
    for case in 0..12u64 {
        let mut rng = Rng(case);
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let pick = |rng: &mut Rng, max: u64| (rng.below(3) > 0).then(|| 1 + rng.below(max));
        let retain = Retain {
            max_msgs: pick(&mut rng, 12),
            max_bytes: pick(&mut rng, 12).map(|n| n * size),
            max_msgs_per_subject: pick(&mut rng, 4),
        };
        let mut model: Vec<(u64, String)> = Vec::new();
        let mut next = 1u64;
        rt().block_on(async {
            store.create_stream("S", b"{}".to_vec()).await.unwrap();
            store.set_retain("S", retain).await.unwrap();
            for _ in 0..60 {
                let n = 1 + rng.below(4);
                let group: Vec<String> = (0..n)
                    .map(|_| ["a", "b", "c"][rng.below(3) as usize].to_string())
                    .collect();
                let items = group
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (msg(s, next + i as u64), None))
                    .collect();
                store.append_each("S", items).await.unwrap();
                // nats-server's order, message by message: the subject's limit, then the
                // stream's. The store applies them once per operation; the outcome is the same.
                for s in group {
                    model.push((next, s.clone()));
                    next += 1;
                    if let Some(max) = retain.max_msgs_per_subject {
                        let mine: Vec<u64> =
                            model.iter().filter(|m| m.1 == s).map(|m| m.0).collect();
                        let excess = (mine.len() as u64).saturating_sub(max) as usize;
                        model.retain(|m| !mine[..excess].contains(&m.0));
                    }
                    let keep_msgs = retain.max_msgs.unwrap_or(u64::MAX);
                    let keep_bytes = retain.max_bytes.unwrap_or(u64::MAX);
                    while model.len() as u64 > keep_msgs || model.len() as u64 * size > keep_bytes {
                        model.remove(0);
                    }
                }
                let want: Vec<u64> = model.iter().map(|m| m.0).collect();
                assert_eq!(seqs(&store, "S"), want, "case {case} with {retain:?}");
            }
        });
    }
}

#[test]
fn subject_counts_are_paged_in_subject_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    rt().block_on(async {
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        store.create_stream("T", b"{}".to_vec()).await.unwrap();
        for (n, s) in [(1, "b"), (2, "a"), (3, "b"), (4, "c.x"), (5, "a")] {
            store.append("S", msg(s, n)).await.unwrap();
        }
        store.append("T", msg("a", 1)).await.unwrap();
        let page = |filter: &str, offset, limit| {
            let c = store.subject_counts("S", filter, offset, limit).unwrap();
            let names: Vec<(String, u64)> = c.page;
            (c.total, names)
        };
        let own = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(s, n)| ((*s).to_string(), *n)).collect()
        };
        assert_eq!(
            page(">", 0, 10),
            (3, own(&[("a", 2), ("b", 2), ("c.x", 1)]))
        );
        assert_eq!(page("*", 0, 10), (2, own(&[("a", 2), ("b", 2)])));
        assert_eq!(page(">", 1, 1), (3, own(&[("b", 2)])));
        assert_eq!(page("c.x", 0, 10), (1, own(&[("c.x", 1)])));
        assert_eq!(page("nope", 0, 10), (0, Vec::new()));
    });
}
