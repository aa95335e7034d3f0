//! Rollups (`Nats-Rollup: sub | all`) on a replicated stream: the leader checks the header
//! before proposing ([`check`]), and every peer applies the rollup to its copy right after
//! the group stored the message ([`roll_up`]), as a single server does after its append: the
//! messages the rollup replaces (its subject's older ones, or all older ones) are purged
//! below the rollup's sequence. The purge is decided by the entry alone (its subject and
//! sequence), so every copy removes the same messages. The KV store's purge and the object
//! store's metadata writes are rollups.
//!
//! The purge is a store commit of its own after the append: a member that crashes between
//! the two keeps the replaced messages in its copy (the entry, already stored, is not
//! applied again); see `hub/JETSTREAM-CLUSTER.md`.

use leaf_core::jetstream::config::{ApiError, JsError};
use leaf_store::{Appended, PurgeRequest, Store, StoreError};

/// What a rollup replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// The older messages of its subject.
    Subject,
    /// Every older message.
    All,
}

/// The rollup a header block asks for: `Ok(None)` without one; an error (the PubAck's) when
/// the stream does not allow rollups (`allow`: its `allow_rollup_hdrs`) or the value is
/// neither `sub` nor `all`.
pub fn check(block: Option<&[u8]>, allow: bool) -> Result<Option<Rollup>, ApiError> {
    let Some(value) = block.and_then(|b| leaf_proto::headers::get(b, "Nats-Rollup")) else {
        return Ok(None);
    };
    if !allow {
        return Err(JsError::RollupNotPermitted.err());
    }
    if value.eq_ignore_ascii_case(b"sub") {
        Ok(Some(Rollup::Subject))
    } else if value.eq_ignore_ascii_case(b"all") {
        Ok(Some(Rollup::All))
    } else {
        Err(JsError::StreamRollupFailed.with("rollup value invalid"))
    }
}

/// Applies the rollups among `stored` (each stored message with its subject and rollup) to
/// stream `stream` of `store`: whether any message was removed.
pub async fn roll_up(
    store: &Store,
    stream: &str,
    stored: &[(Appended, String, Option<Rollup>)],
) -> Result<bool, StoreError> {
    let mut removed = false;
    for (appended, subject, rollup) in stored {
        let Some(rollup) = rollup else {
            continue;
        };
        let req = PurgeRequest {
            filter: match rollup {
                Rollup::All => None,
                Rollup::Subject => Some(subject.clone()),
            },
            up_to_seq: Some(appended.seq),
            keep: None,
        };
        removed |= store.purge(stream, req).await? > 0;
    }
    Ok(removed)
}

/// The sequences of the first 100 messages stream `stream` of `store` holds (tests).
#[cfg(test)]
pub(crate) fn stored_seqs(store: &Store, stream: &str) -> Vec<u64> {
    store
        .read_range(stream, 1, 100, u64::MAX)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(field: &str) -> Vec<u8> {
        format!("NATS/1.0\r\n{field}\r\n\r\n").into_bytes()
    }

    #[test]
    fn the_header_is_checked() {
        assert_eq!(check(None, true), Ok(None));
        assert_eq!(check(Some(&block("X: y")), false), Ok(None));
        assert_eq!(
            check(Some(&block("Nats-Rollup: sub")), true),
            Ok(Some(Rollup::Subject))
        );
        assert_eq!(
            check(Some(&block("Nats-Rollup: ALL")), true),
            Ok(Some(Rollup::All))
        );
        let code = |r: Result<Option<Rollup>, ApiError>| r.err().map(|e| e.err_code);
        assert_eq!(
            code(check(Some(&block("Nats-Rollup: sub")), false)),
            Some(10115)
        );
        assert_eq!(
            code(check(Some(&block("Nats-Rollup: x")), true)),
            Some(10111)
        );
    }

    /// A subject rollup removes its subject's older messages only; an `all` rollup every
    /// older message; both keep the rollup itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollups_purge_below_their_sequence() {
        use leaf_store::NewMessage;
        // A memory store purges as a file store does.
        let store = Store::open_memory(leaf_store::StoreOptions::default()).unwrap();
        store.create_stream("S", b"{}".to_vec()).await.unwrap();
        let mut stored = Vec::new();
        for (i, subject) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            let msg = NewMessage::new(*subject, "x", i as i64 + 1);
            let appended = store.append_batch("S", vec![msg]).await.unwrap();
            stored.push((appended[0], subject.to_string(), None));
        }
        stored[3].2 = Some(Rollup::Subject);
        assert!(roll_up(&store, "S", &stored).await.unwrap());
        let seqs = |store: &Store| stored_seqs(store, "S");
        assert_eq!(seqs(&store), [2, 4, 5]);
        // Applied again: nothing more to remove.
        assert!(!roll_up(&store, "S", &stored).await.unwrap());
        stored[3].2 = None;
        stored[4].2 = Some(Rollup::All);
        assert!(roll_up(&store, "S", &stored).await.unwrap());
        assert_eq!(seqs(&store), [5]);
    }
}
