//! A consumer's part in interest and workqueue retention (see [`crate::jetstream::retention`]):
//! keeping its [`AckView`](crate::jetstream::retention::AckView) current, collecting the
//! removals its acks cause, and handing them to the store ahead of its own state.
//!
//! Nothing here runs for a stream with `limits` retention, and only the removals for one with
//! `workqueue` retention.

use leaf_proto::printable::printable;
use std::future::Future;

use super::ack_state::Forgot;
use super::Task;
use crate::jetstream::config::consumer::AckPolicy;
use crate::jetstream::config::Retention;
use crate::jetstream::retention::{self, lock};
use leaf_store::{StoreError, StoredMessage};

impl Task {
    /// Whether other consumers look at this consumer's view (interest retention only: under
    /// workqueue retention an ack removes its message whatever the others did).
    fn tracks(&self) -> bool {
        self.retention == Retention::Interest
    }

    /// Copies the whole relevant state into the view (at start and after a config update).
    pub(super) fn publish_view(&self) {
        if !self.tracks() {
            return;
        }
        let mut v = lock(&self.view);
        v.filters = self.filters.clone();
        v.policy = self.config.ack_policy;
        v.floor = self.state.ack.floor().1;
        v.next = self.state.next_sseq;
        v.pending = self.state.ack.pending().keys().copied().collect();
    }

    /// The configuration changed (filters or ack policy).
    pub(super) fn view_config(&self) {
        self.publish_view();
    }

    /// `msg` was just delivered. With ack policy `none` that acknowledges it.
    pub(super) fn view_delivered(&mut self, msg: &StoredMessage) {
        if !self.tracks() {
            return;
        }
        let none = self.config.ack_policy == AckPolicy::None;
        {
            let mut v = lock(&self.view);
            v.floor = self.state.ack.floor().1;
            v.next = self.state.next_sseq;
            if !none {
                v.pending.insert(msg.seq);
            }
        }
        if none {
            self.retire(&[msg.seq], Some(&msg.subject));
        }
    }

    /// A message is no longer waited for (acked, terminated, delivered too often or gone);
    /// the view shows the ack floor as it was just before.
    pub(super) fn view_forget(&self, forgot: Forgot) {
        if !self.tracks() {
            return;
        }
        let mut v = lock(&self.view);
        v.pending.remove(&forgot.sseq);
        v.floor = forgot.floor_before;
    }

    /// Everything up to `seq` is acknowledged (ack policy `all`): the view's floor is `seq`.
    pub(super) fn view_acked_upto(&self, seq: u64) {
        if !self.tracks() {
            return;
        }
        let mut v = lock(&self.view);
        let later = v.pending.split_off(&(seq + 1));
        v.pending = later;
        v.floor = seq;
    }

    /// An ack of stream sequence `sseq` was applied; the ack floor was `floor_before`. Collects
    /// the messages that leave the stream because of it: `sseq` (explicit acks, as nats-server,
    /// even when it was not pending), or everything after the old floor up to `sseq` (ack
    /// policy `all`, when the floor moved).
    pub(super) fn retire_acked(&mut self, floor_before: u64, sseq: u64) {
        if self.retention == Retention::Limits {
            return;
        }
        match self.config.ack_policy {
            AckPolicy::None => {}
            AckPolicy::Explicit => self.retire(&[sseq], None),
            AckPolicy::All => {
                if self.state.ack.floor().1 <= floor_before {
                    return;
                }
                let from = (floor_before + 1).max(self.stream_bounds().0);
                if from <= sseq {
                    let seqs: Vec<u64> = (from..=sseq).collect();
                    self.retire(&seqs, None);
                }
            }
        }
    }

    /// Queues the messages among `seqs` (just acknowledged here) that no other consumer needs.
    fn retire(&mut self, seqs: &[u64], subject: Option<&str>) {
        let Some(stream) = self.stream.upgrade() else {
            return;
        };
        let gone = retention::removable(&*stream, &self.store, &self.name, seqs, subject);
        self.removals.extend(gone);
    }

    /// Hands the queued removals to the store now (one operation), if any.
    pub(super) fn submit_removals(
        &mut self,
    ) -> Option<impl Future<Output = Result<u64, StoreError>> + Send + 'static> {
        if self.removals.is_empty() {
            return None;
        }
        let seqs = std::mem::take(&mut self.removals);
        Some(self.store.remove_msgs(&self.stream_name, seqs))
    }

    /// Submits the queued removals and waits for them (the consumer is stopping).
    pub(super) async fn flush_removals(&mut self) {
        let Some(removal) = self.submit_removals() else {
            return;
        };
        match removal.await {
            // The stream itself is being deleted.
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(stream = %printable(&self.stream_name), consumer = %printable(&self.name),
                                     error = %e, "removing acknowledged messages failed")
            }
        }
    }

    /// This (ephemeral) consumer deleted itself: releases what only it held.
    pub(super) fn release(&self) -> impl Future<Output = ()> + Send + 'static {
        let stream = (self.retention == Retention::Interest)
            .then(|| self.stream.upgrade())
            .flatten();
        let (store, name, floor) = (
            self.store.clone(),
            self.name.clone(),
            self.state.ack.floor().1,
        );
        async move {
            if let Some(stream) = stream {
                retention::release(&*stream, &store, &name, floor).await;
            }
        }
    }
}
