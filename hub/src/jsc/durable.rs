//! How far a group's Raft log is on disk, for a group whose leader does not wait for its own
//! fsync before it replicates (see [`super::store::LogStore::early_ack`] and "The leader's
//! append does not wait for its own fsync" in `hub/JETSTREAM-CLUSTER.md`).
//!
//! The group's log writer moves it on after each durable commit of appends (and back after a
//! truncation); the state machine waits on it before it applies an entry
//! ([`Durable::reached`]), and the network sends the followers no commit index past it
//! ([`Durable::clamp`]). So nothing is applied anywhere, and no PubAck is sent, before the
//! leader has the entry fsynced too.

use std::sync::{Arc, Mutex, PoisonError};

use openraft::LogId;
use tokio::sync::watch;

/// The group's durable end: the last index on disk (`None`: none) and whether the log writer
/// has stopped; plus the log id of the last durable append.
#[derive(Clone)]
pub struct Durable(Arc<State>);

struct State {
    end: watch::Sender<(Option<u64>, bool)>,
    /// The log id of the last entry the writer made durable (`None`: not known, e.g. right
    /// after a start or a truncation).
    last: Mutex<Option<LogId<u64>>>,
}

impl Durable {
    /// Starts at `end`: the last index in the file (all of it is durable).
    pub(super) fn new(end: Option<u64>) -> Durable {
        Durable(Arc::new(State {
            end: watch::Sender::new((end, false)),
            last: Mutex::new(None),
        }))
    }

    /// Entries up to `index` (with log id `last`, when known) are on disk.
    pub(super) fn advance(&self, index: u64, last: Option<LogId<u64>>) {
        self.0.end.send_if_modified(|(end, _)| {
            let moved = *end < Some(index);
            if moved {
                *end = Some(index);
            }
            moved
        });
        if let Some(last) = last {
            let mut slot = self.0.last.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_none_or(|l| l.index <= last.index) {
                *slot = Some(last);
            }
        }
    }

    /// Entries from `index` on were removed (a truncation, or every entry: `0`).
    pub(super) fn cut(&self, index: u64) {
        let below = index.checked_sub(1);
        self.0.end.send_if_modified(|(end, _)| {
            let moved = *end > below;
            if moved {
                *end = below;
            }
            moved
        });
        let mut slot = self.0.last.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|l| l.index >= index) {
            *slot = None;
        }
    }

    /// The log writer has stopped, or an append failed: nothing becomes durable any more.
    pub(super) fn close(&self) {
        self.0.end.send_modify(|(_, closed)| *closed = true);
    }

    /// Waits until entry `index` is on disk: `false` if it never will be (the writer stopped,
    /// or an append failed).
    pub async fn reached(&self, index: u64) -> bool {
        let mut rx = self.0.end.subscribe();
        let reached = match rx
            .wait_for(|(end, closed)| *closed || *end >= Some(index))
            .await
        {
            Ok(state) => state.0 >= Some(index),
            Err(_) => false,
        };
        reached
    }

    /// The commit index a leader may send its followers: `committed`, or the last durable log
    /// id when `committed` is past it (the leader counted itself in the quorum before its own
    /// fsync ended: a follower must not apply what the leader could still lose).
    pub fn clamp(&self, committed: Option<LogId<u64>>) -> Option<LogId<u64>> {
        let c = committed?;
        let end = self.0.end.borrow().0;
        if end >= Some(c.index) {
            return Some(c);
        }
        let last = *self.0.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.filter(|l| l.index < c.index && end >= Some(l.index))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, LogId};

    use super::Durable;

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// A wait ends once the index is durable, or when the writer stops; a truncation moves
    /// the end back; the commit index sent on is never past the durable end.
    #[tokio::test]
    async fn waits_and_clamps_follow_the_durable_end() {
        let d = Durable::new(Some(3));
        assert!(
            d.reached(3).await,
            "what is in the file at start is durable"
        );
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.reached(5).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(d.clamp(Some(id(1, 5))), None, "no durable log id known yet");
        d.advance(5, Some(id(1, 5)));
        assert!(tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joins"));
        assert_eq!(d.clamp(Some(id(1, 5))), Some(id(1, 5)));
        assert_eq!(
            d.clamp(Some(id(1, 7))),
            Some(id(1, 5)),
            "clamped to the durable end"
        );
        assert_eq!(d.clamp(None), None);

        d.cut(4);
        assert_eq!(d.clamp(Some(id(1, 5))), None, "the known log id was cut");
        assert!(d.reached(3).await);
        d.advance(6, Some(id(2, 6)));
        assert_eq!(d.clamp(Some(id(2, 9))), Some(id(2, 6)));

        let stuck = {
            let d = d.clone();
            tokio::spawn(async move { d.reached(100).await })
        };
        d.close();
        assert!(!stuck.await.expect("joins"), "the writer stopped");
    }
}
