//! A consumer's part in interest and workqueue retention (see [`crate::jetstream::retention`]):
//! keeping its [`AckView`](crate::jetstream::retention::AckView) current, collecting the
//! removals its acks cause, and handing them to the store ahead of its own state.
//!
//! Nothing here runs for a stream with `limits` retention, and only the removals for one with
//! `workqueue` retention.
//!
//! **A replicated consumer** (its task on its group's leader, records through a
//! [`RecordSink`](super::RecordSink)) of a replicated stream: its removals go to the sink
//! (hubd: an entry of the stream's group, so every copy removes them alike), submitted before
//! the record holding the acks, as on a single server. The other consumers of the stream may
//! run on other members: their views are read from the state records their groups applied to
//! this member's store (a record lags its leader, so a message it shows as still needed may
//! have been acked meanwhile: the message is kept, never removed early). Two consumers acking
//! the same message at once on two members may thus both keep it; and a leader may die
//! between the commit of a removal and its record's (the message gone, its ack not: the
//! message is simply not delivered again) or with removals not submitted. So the leader
//! reconciles ([`Task::reconcile_group`], the startup scan of a single server): when it takes
//! the lead, and every [`RECONCILE_EVERY`] under interest retention, it removes the stored
//! messages that no consumer's view (its own, and the others' records) still needs.

use leaf_proto::printable::printable;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::ack_state::Forgot;
use super::Task;
use crate::jetstream::config::consumer::AckPolicy;
use crate::jetstream::config::consumer::ConsumerConfig;
use crate::jetstream::config::Retention;
use crate::jetstream::retention::{self, lock, AckView, SharedView, WithViews};
use crate::jetstream::stream::Stream;
use leaf_store::{Store, StoreError, StoredMessage};

/// How often the leader of a replicated consumer of an interest stream looks for messages
/// every consumer is done with (see the module documentation).
pub(super) const RECONCILE_EVERY: Duration = Duration::from_secs(2);

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
        // Workqueue removals do not look at the other consumers: no records to read.
        let gone = if self.sink.is_some() && self.retention == Retention::Interest {
            let all = WithViews {
                stream: &*stream,
                extra: self.remote_views(&stream),
            };
            retention::removable(&all, &self.store, &self.name, seqs, subject)
        } else {
            retention::removable(&*stream, &self.store, &self.name, seqs, subject)
        };
        self.removals.extend(gone);
    }

    /// The views of the stream's consumers whose tasks do not run here (a replicated
    /// consumer's other consumers, from the records their groups applied to this member's
    /// store).
    fn remote_views(&self, stream: &Stream) -> Vec<(String, SharedView)> {
        let assigned = self
            .sink
            .as_ref()
            .map(|s| s.assigned(&self.stream_name))
            .unwrap_or_default();
        remote_views(stream, &self.store, assigned, None)
    }

    /// A replicated consumer's leader (see the module documentation): queues the removal of
    /// the stored messages no consumer needs any more, and schedules the next look under
    /// interest retention.
    pub(super) fn reconcile_group(&mut self) {
        if self.sink.is_none() || self.retention == Retention::Limits {
            return;
        }
        if self.retention == Retention::Interest {
            self.reconcile_at = Some(Instant::now() + RECONCILE_EVERY);
        }
        let Some(stream) = self.stream.upgrade() else {
            return;
        };
        let all = WithViews {
            stream: &*stream,
            extra: self.remote_views(&stream),
        };
        let mut seqs = retention::orphans(&all, &self.store);
        seqs.retain(|s| !self.removals.contains(s) && !self.removals_in_flight.contains(s));
        if !seqs.is_empty() {
            tracing::debug!(stream = %printable(&self.stream_name), consumer = %printable(&self.name),
                            removed = seqs.len(), "acknowledged messages left behind are removed");
            self.removals.extend(seqs);
        }
    }

    /// Hands the queued removals to the store now (one operation), if any.
    pub(super) fn submit_removals(&mut self) -> Option<super::RemovalFuture> {
        if self.removals.is_empty() {
            return None;
        }
        let seqs = std::mem::take(&mut self.removals);
        Some(match &self.sink {
            Some(sink) => {
                self.removals_in_flight.extend(&seqs);
                sink.remove(&self.stream_name, seqs)
            }
            None => Box::pin(self.store.remove_msgs(&self.stream_name, seqs)),
        })
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

/// The retention views of the consumers of `stream` (a replicated stream's copy) whose tasks
/// do not run on this member, but `except`: from the records their groups applied to `store`,
/// and, for a consumer in `assigned` (the cluster's assignments) without a record here yet
/// (just created), a view needing everything its filters match.
pub(crate) fn remote_views(
    stream: &Stream,
    store: &Store,
    assigned: Vec<ConsumerConfig>,
    except: Option<&str>,
) -> Vec<(String, SharedView)> {
    let Ok(stored) = store.consumers(&stream.name) else {
        return Vec::new();
    };
    let live = stream
        .consumers
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .cloned()
        .collect::<Vec<String>>();
    let skip = |name: &str| live.iter().any(|l| l == name) || except == Some(name);
    let mut views: Vec<(String, SharedView)> = stored
        .into_iter()
        // Names with a dot are not consumers (an uplink's cursor).
        .filter(|(name, _)| !name.contains('.') && !skip(name))
        .filter_map(|(name, bytes)| {
            let view = super::view_of_record(&bytes)?;
            Some((name, Arc::new(Mutex::new(view))))
        })
        .collect();
    for config in assigned {
        let Some(name) = config.consumer_name().map(str::to_owned) else {
            continue;
        };
        if skip(&name) || views.iter().any(|(n, _)| *n == name) {
            continue;
        }
        views.push((name, Arc::new(Mutex::new(AckView::new(&config)))));
    }
    views
}
