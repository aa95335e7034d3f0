//! Tests of the store: API behaviour, a model-based proptest, crash safety under a
//! fault-injecting backend and real SIGKILLs, full-disk handling, and (ignored) benchmarks.

mod api;
mod bench;
mod compression;
mod fault;
mod kill;
mod limits;
mod model;
mod quarantine;
mod repair;
mod retention;
mod segments;

use std::path::Path;

use super::{NewMessage, Store, StoreOptions, StreamState};

/// A current-thread runtime (the store needs no I/O driver).
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Opens a store in `dir` with default options.
pub(crate) fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open")
}

/// A 128-byte-ish message whose payload encodes `n`.
pub(crate) fn msg(subject: &str, n: u64) -> NewMessage {
    let mut p = format!("payload-{n}-").into_bytes();
    p.resize(64, b'x');
    NewMessage::new(subject, p, i64::try_from(n).unwrap_or(0))
}

/// splitmix64: a tiny deterministic RNG for tests.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Checks that a stream's state agrees with what the reads return (counts, bytes, first and
/// last seq, subject index). Returns the stored messages.
pub(crate) fn check_consistent(store: &Store, name: &str) -> Vec<super::StoredMessage> {
    let st: StreamState = store.stream_state(name).unwrap().expect("stream exists");
    let all = store.read_range(name, 0, usize::MAX, u64::MAX).unwrap();
    assert_eq!(all.len() as u64, st.msgs, "msgs of {name}");
    let bytes: u64 = all
        .iter()
        .map(|m| {
            crate::format::msg_size(
                &m.subject,
                m.headers.as_ref().map_or(0, |h| h.len()),
                m.payload.len(),
            )
        })
        .sum();
    assert_eq!(bytes, st.bytes, "bytes of {name}");
    if let Some(first) = all.first() {
        assert_eq!(first.seq, st.first_seq);
        assert_eq!(first.ts_ns, st.first_ts_ns);
        assert!(all.last().unwrap().seq <= st.last_seq);
        assert_eq!(
            st.num_deleted,
            st.last_seq - st.first_seq + 1 - st.msgs,
            "num_deleted"
        );
    } else {
        assert_eq!(st.num_deleted, 0);
    }
    let mut subjects = std::collections::BTreeMap::<String, (u64, u64, u64)>::new();
    for m in &all {
        let e = subjects
            .entry(m.subject.clone())
            .or_insert((m.seq, m.seq, 0));
        e.1 = m.seq;
        e.2 += 1;
    }
    assert_eq!(subjects.len() as u64, st.num_subjects, "num_subjects");
    for (s, (f, l, n)) in &subjects {
        let ss = store
            .subject_state(name, s)
            .unwrap()
            .expect("subject indexed");
        assert_eq!(
            (ss.first_seq, ss.last_seq, ss.msgs),
            (*f, *l, *n),
            "subject {s}"
        );
        assert_eq!(store.last_by_subject(name, s).unwrap().unwrap().seq, *l);
    }
    all
}
