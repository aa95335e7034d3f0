//! Model-based test: random appends (few subjects), deletes and purges against a simple
//! in-memory model; every read and the state must agree with the model.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{msg, rt};
use crate::{subject, PurgeRequest, Store, StoreOptions};

#[derive(Debug, Clone)]
enum Act {
    Append(Vec<u8>),
    Delete(u64),
    Purge(Option<u8>, Option<u64>, Option<u64>),
    Remove(Vec<u64>),
    Skip,
}

const SUBJECTS: [&str; 4] = ["a.x", "a.y", "b.x", "c"];
const FILTERS: [&str; 5] = ["a.x", "a.*", "*.x", "c", ">"];

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        5 => proptest::collection::vec(0u8..4, 1..6).prop_map(Act::Append),
        2 => (0u64..40).prop_map(Act::Delete),
        1 => (proptest::option::of(0u8..5), proptest::option::of(0u64..40), proptest::option::of(0u64..6))
            .prop_map(|(f, u, k)| Act::Purge(f, u, k)),
        1 => proptest::collection::vec(0u64..40, 0..8).prop_map(Act::Remove),
        1 => Just(Act::Skip),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(acts in proptest::collection::vec(act(), 1..40)) {
        run_model(&acts, StoreOptions::default())?;
    }

    /// The same with a seal after every commit that finds no sealer at work: blocks move
    /// into segment files while the operations run, so reads, deletes, purges and removals
    /// meet blocks on both sides of every boundary (and the adoptions race them).
    #[test]
    fn store_matches_model_while_sealing(acts in proptest::collection::vec(act(), 1..40)) {
        run_model(&acts, StoreOptions { seal_bytes: Some(1), ..StoreOptions::default() })?;
    }
}

fn run_model(acts: &[Act], opts: StoreOptions) -> Result<(), TestCaseError> {
    {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let open = |p: &std::path::Path| Store::open(p, opts.clone()).unwrap();
        let s = open(dir.path());
        rt.block_on(s.create_stream("M", vec![])).unwrap();
        let mut model: BTreeMap<u64, (&str, u64)> = BTreeMap::new();
        let mut last = 0u64;
        let mut n = 0u64;
        for a in acts {
            match a {
                Act::Append(subs) => {
                    let msgs = subs
                        .iter()
                        .map(|i| {
                            n += 1;
                            msg(SUBJECTS[*i as usize], n)
                        })
                        .collect::<Vec<_>>();
                    let acks = rt.block_on(s.append_batch("M", msgs)).unwrap();
                    for (ack, i) in acks.iter().zip(subs) {
                        last += 1;
                        prop_assert_eq!(ack.seq, last);
                        model.insert(last, (SUBJECTS[*i as usize], ack.ts_ns as u64));
                    }
                }
                Act::Delete(seq) => {
                    let got = rt.block_on(s.delete_msg("M", *seq)).unwrap();
                    prop_assert_eq!(got, model.remove(seq).is_some());
                }
                Act::Purge(f, up_to, keep) => {
                    let filter = f.map(|i| FILTERS[i as usize]);
                    let matching: Vec<u64> = model
                        .iter()
                        .filter(|(_, (sub, _))| filter.is_none_or(|f| subject::matches(f, sub)))
                        .map(|(s, _)| *s)
                        .collect();
                    let keep_from = keep.map_or(matching.len(), |k| {
                        matching.len().saturating_sub(k as usize)
                    });
                    let gone: Vec<u64> = matching
                        .iter()
                        .enumerate()
                        .filter(|(i, s)| *i < keep_from && up_to.is_none_or(|u| **s < u))
                        .map(|(_, s)| *s)
                        .collect();
                    let req = PurgeRequest {
                        filter: filter.map(str::to_string),
                        up_to_seq: *up_to,
                        keep: *keep,
                    };
                    let purged = rt.block_on(s.purge("M", req)).unwrap();
                    prop_assert_eq!(purged, gone.len() as u64);
                    for g in gone {
                        model.remove(&g);
                    }
                }
                Act::Remove(seqs) => {
                    let mut want: Vec<u64> = seqs
                        .iter()
                        .copied()
                        .filter(|s| model.contains_key(s))
                        .collect();
                    want.sort_unstable();
                    want.dedup();
                    let got = rt.block_on(s.remove_msgs("M", seqs.clone())).unwrap();
                    prop_assert_eq!(got, want.len() as u64);
                    for g in want {
                        model.remove(&g);
                    }
                }
                Act::Skip => {
                    last += 1;
                    prop_assert_eq!(rt.block_on(s.skip("M", 7)).unwrap().seq, last);
                }
            }
        }
        // state
        let st = s.stream_state("M").unwrap().unwrap();
        prop_assert_eq!(st.msgs, model.len() as u64);
        prop_assert_eq!(st.last_seq, last);
        match model.first_key_value() {
            Some((f, _)) => prop_assert_eq!(st.first_seq, *f),
            None if last > 0 => prop_assert_eq!(st.first_seq, last + 1),
            None => {}
        }
        // get
        for seq in 0..=last + 1 {
            let got = s.get("M", seq).unwrap();
            match model.get(&seq) {
                Some((sub, n)) => {
                    let m = got.unwrap();
                    prop_assert_eq!(m.subject.as_str(), *sub);
                    prop_assert_eq!(m.payload, msg("x", *n).payload);
                }
                None => prop_assert!(got.is_none()),
            }
        }
        // read_range
        let all: Vec<u64> = s
            .read_range("M", 0, usize::MAX, u64::MAX)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        prop_assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
        // subject reads
        for f in FILTERS.iter().chain(SUBJECTS.iter()) {
            let want_last = model
                .iter()
                .rev()
                .find(|(_, (sub, _))| subject::matches(f, sub))
                .map(|(s, _)| *s);
            prop_assert_eq!(s.last_by_subject("M", f).unwrap().map(|m| m.seq), want_last);
            for from in [0, last / 3, last / 2, last] {
                let want = model
                    .range(from..)
                    .find(|(_, (sub, _))| subject::matches(f, sub))
                    .map(|(s, _)| *s);
                prop_assert_eq!(
                    s.next_by_subject("M", from, f).unwrap().map(|m| m.seq),
                    want
                );
            }
        }
        super::check_consistent(&s, "M");
        // reopen preserves everything
        drop(s);
        let s = open(dir.path());
        let again: Vec<u64> = s
            .read_range("M", 0, usize::MAX, u64::MAX)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        prop_assert_eq!(again, model.keys().copied().collect::<Vec<_>>());
        prop_assert_eq!(s.stream_state("M").unwrap().unwrap(), st);
        for seq in 0..=last + 1 {
            prop_assert_eq!(s.get("M", seq).unwrap().is_some(), model.contains_key(&seq));
        }
    }
    Ok(())
}
