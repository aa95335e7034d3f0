//! Interest and workqueue retention: which messages leave a stream because its consumers are
//! done with them, as nats-server 2.9 decides it.
//!
//! * **Interest.** A message stays while a consumer whose filter matches it still has to
//!   acknowledge it (ack policy `none` counts as acknowledged on delivery, `all` acknowledges
//!   everything up to the acknowledged message). A message published while no consumer's filter
//!   matches it is not stored: the stream takes its sequence with [`Store::skip`] (`no_interest`).
//!   Deleting a consumer releases what only it held (`release`).
//! * **Workqueue.** A message leaves when one consumer acknowledges it. Consumers must have
//!   disjoint filters (one unfiltered consumer at most), explicit acks and deliver policy `all`
//!   (`check_new_consumer`, `check_config`).
//!
//! Each consumer publishes the part of its state these decisions need in an `AckView` (shared
//! with the other consumers' tasks); a consumer updates its own view before it looks at the
//! others', so two consumers acknowledging the same message at once cannot both keep it.
//!
//! **Durability.** A consumer hands the removals its acks cause to the store in one
//! [`Store::remove_msgs`] operation submitted *before* the write of its own state that holds
//! those acks (see [`super::consumer`]). The store commits operations in submission order, so
//! once an ack is durable so is its removal; a crash in between can only lose the ack of a
//! message already removed, which is then simply not delivered again. At startup `reconcile`
//! removes what stored acks released if a removal was nevertheless lost (a failed write).
//!
//! **Replicated streams** (hubd): only replicated durables are served; their removals go to
//! the stream's group instead of the store, the other consumers' views come from the records
//! their groups applied ([`WithViews`]), and their leaders reconcile with [`orphans`] (see
//! `consumer/retain.rs` and "Retention on replicated streams" in `hub/JETSTREAM-CLUSTER.md`).

use leaf_proto::printable::printable;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::{debug, warn};

use super::config::consumer::{AckPolicy, ConsumerConfig, DeliverPolicy};
use super::config::{ApiError, JsError, Retention, StreamConfig};
use leaf_proto::subject::{is_subset, subject_matches};
use leaf_store::Store;

/// What other consumers need to know of a consumer's acknowledgements (nats-server's
/// `needAck` inputs).
#[derive(Debug, Clone, Default)]
pub(crate) struct AckView {
    /// Subject filters (empty: every subject).
    pub(crate) filters: Vec<String>,
    /// The consumer's ack policy.
    pub(crate) policy: AckPolicy,
    /// Every stream sequence up to this one is acknowledged (the ack floor).
    pub(crate) floor: u64,
    /// The next stream sequence to deliver: those before it were delivered or passed over.
    pub(crate) next: u64,
    /// Delivered sequences not acknowledged yet.
    pub(crate) pending: BTreeSet<u64>,
}

/// An [`AckView`] shared by a consumer's task (writer) and the other consumers (readers).
pub(crate) type SharedView = Arc<Mutex<AckView>>;

/// Locks a shared view (a poisoned lock still holds usable data).
pub(crate) fn lock(view: &SharedView) -> MutexGuard<'_, AckView> {
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AckView {
    /// A view for a consumer with `config`, before any state.
    pub(crate) fn new(config: &ConsumerConfig) -> AckView {
        AckView {
            filters: config.filters(),
            policy: config.ack_policy,
            ..AckView::default()
        }
    }

    /// Whether the consumer has subject filters.
    pub(crate) fn is_filtered(&self) -> bool {
        !self.filters.is_empty()
    }

    /// Whether the consumer's filters match `subject`.
    pub(crate) fn matches(&self, subject: &str) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| subject_matches(f.as_bytes(), subject.as_bytes()))
    }

    /// Whether the consumer still has to acknowledge message `seq` on `subject` (`None`: not
    /// known, taken as matching).
    pub(crate) fn needs_ack(&self, seq: u64, subject: Option<&str>) -> bool {
        if subject.is_some_and(|s| !self.matches(s)) {
            return false;
        }
        if seq <= self.floor {
            return false;
        }
        match self.policy {
            AckPolicy::None | AckPolicy::All => true,
            AckPolicy::Explicit => seq >= self.next || self.pending.contains(&seq),
        }
    }
}

/// A stream as retention sees it: its name, its retention policy and its consumers' views.
/// The stream implements it, so this module does not depend on the stream's.
pub(crate) trait StreamView {
    /// The stream's name (in the store).
    fn name(&self) -> &str;
    /// The stream's retention policy.
    fn retention(&self) -> Retention;
    /// The views of the stream's consumers other than `except`.
    fn views(&self, except: Option<&str>) -> Vec<SharedView>;
}

/// Whether a message on `subject` published now is dropped: the stream has interest
/// retention and no consumer's filter matches it.
pub(crate) fn no_interest(stream: &impl StreamView, subject: &str) -> bool {
    stream.retention() == Retention::Interest
        && !stream.views(None).iter().any(|v| lock(v).matches(subject))
}

/// Of `seqs`, just acknowledged by consumer `me` (whose own view is already updated), the
/// messages that leave the stream now: all of them under workqueue retention; under interest
/// retention those no other consumer still has to acknowledge; none under limits. `subject`
/// is the messages' subject when the caller knows it (one message); otherwise it is read from
/// the store when another consumer is filtered.
pub(crate) fn removable(
    stream: &impl StreamView,
    store: &Store,
    me: &str,
    seqs: &[u64],
    subject: Option<&str>,
) -> Vec<u64> {
    match stream.retention() {
        Retention::Limits => Vec::new(),
        Retention::WorkQueue => seqs.to_vec(),
        Retention::Interest => {
            let others = stream.views(Some(me));
            let filtered = others.iter().any(|v| lock(v).is_filtered());
            seqs.iter()
                .copied()
                .filter(|&seq| {
                    let loaded;
                    let subject = match (filtered, subject) {
                        (false, _) => None,
                        (true, Some(s)) => Some(s),
                        (true, None) => match store.get(stream.name(), seq) {
                            Ok(Some(m)) => {
                                loaded = m.subject;
                                Some(loaded.as_str())
                            }
                            // Not stored (any more): nothing to remove.
                            _ => return false,
                        },
                    };
                    !others.iter().any(|v| lock(v).needs_ack(seq, subject))
                })
                .collect()
        }
    }
}

/// After consumer `gone` (whose ack floor was `floor`) left an interest stream: removes the
/// messages after its floor that no remaining consumer has to acknowledge, and waits until
/// that is durable. Call it after the consumer is removed from the stream and stopped, and
/// before its stored state is deleted (so a crash in between leaves the consumer, not
/// messages nobody will ever remove).
pub(crate) async fn release(stream: &impl StreamView, store: &Store, gone: &str, floor: u64) {
    let seqs = released(stream, store, gone, floor);
    if seqs.is_empty() {
        return;
    }
    match store.remove_msgs(stream.name(), seqs).await {
        Ok(n) => debug!(stream = %printable(&stream.name()), consumer = gone, removed = n,
                        "interest released by a deleted consumer"),
        Err(e) => warn!(stream = %printable(&stream.name()), consumer = gone, error = %e,
                        "removing messages of a deleted consumer failed"),
    }
}

/// The stored messages after `floor` (the ack floor of consumer `gone`, which left an interest
/// stream) that no remaining consumer has to acknowledge (see [`release`]).
pub(crate) fn released(
    stream: &impl StreamView,
    store: &Store,
    gone: &str,
    floor: u64,
) -> Vec<u64> {
    if stream.retention() != Retention::Interest {
        return Vec::new();
    }
    let Ok(Some(state)) = store.stream_state(stream.name()) else {
        return Vec::new();
    };
    if state.msgs == 0 {
        return Vec::new();
    }
    let others = stream.views(Some(gone));
    let filtered = others.iter().any(|v| lock(v).is_filtered());
    let mut seqs = Vec::new();
    let mut from = floor.max(state.first_seq);
    while from <= state.last_seq {
        let Ok(batch) = store.read_range(stream.name(), from, 512, u64::MAX) else {
            break;
        };
        let Some(last) = batch.last().map(|m| m.seq) else {
            break;
        };
        for m in &batch {
            let subject = filtered.then_some(m.subject.as_str());
            if !others.iter().any(|v| lock(v).needs_ack(m.seq, subject)) {
                seqs.push(m.seq);
            }
        }
        from = last + 1;
    }
    seqs
}

/// Whether, after a restart, stored message `seq` on `subject` is one that acks already
/// released (its removal was lost while the acks were not): under interest retention when
/// the stream has consumers and none still has to ack it; under workqueue retention when a
/// consumer whose filter matches it acked it.
fn orphaned(retention: Retention, views: &[AckView], seq: u64, subject: &str) -> bool {
    match retention {
        Retention::Limits => false,
        Retention::Interest => {
            !views.is_empty() && !views.iter().any(|v| v.needs_ack(seq, Some(subject)))
        }
        Retention::WorkQueue => views
            .iter()
            .any(|v| v.matches(subject) && !v.needs_ack(seq, Some(subject))),
    }
}

/// At startup, once the stream's consumers are restored: removes the messages their stored
/// acks already released (see [`orphans`]). The crash ordering described in the module
/// documentation makes these rare (a removal that failed while the acks were written). The
/// removal is submitted before anything else can be written to the stream.
pub(crate) fn reconcile(stream: &impl StreamView, store: &Store) {
    let seqs = orphans(stream, store);
    if seqs.is_empty() {
        return;
    }
    let name = stream.name().to_owned();
    let removal = store.remove_msgs(&name, seqs);
    tokio::spawn(async move {
        match removal.await {
            Ok(n) => {
                warn!(stream = %printable(&name), removed = n, "removed acknowledged messages left by a crash")
            }
            Err(e) => {
                warn!(stream = %printable(&name), error = %e, "removing acknowledged messages failed")
            }
        }
    });
}

/// The stored messages the stream's consumers' acks already released (see [`orphaned`]):
/// the scan covers what the consumers have passed (up to the lowest next sequence under
/// interest retention, the highest under workqueue retention), not the undelivered backlog.
/// Used at startup ([`reconcile`]) and by a replicated consumer's leader (on taking the lead
/// and, under interest retention, periodically: see `consumer/retain.rs`).
pub(crate) fn orphans(stream: &impl StreamView, store: &Store) -> Vec<u64> {
    let retention = stream.retention();
    if retention == Retention::Limits {
        return Vec::new();
    }
    let views: Vec<AckView> = stream.views(None).iter().map(|v| lock(v).clone()).collect();
    let nexts = views.iter().map(|v| v.next);
    let Some(end) = (match retention {
        Retention::Interest => nexts.min(),
        _ => nexts.max(),
    }) else {
        return Vec::new();
    };
    let mut seqs = Vec::new();
    let mut from = 0;
    while from < end {
        let Ok(batch) = store.read_range(stream.name(), from, 512, u64::MAX) else {
            break;
        };
        let Some(last) = batch.last().map(|m| m.seq) else {
            break;
        };
        for m in batch.iter().take_while(|m| m.seq < end) {
            if orphaned(retention, &views, m.seq, &m.subject) {
                seqs.push(m.seq);
            }
        }
        from = last + 1;
    }
    seqs
}

/// A stream's views plus `extra` ones: the replicated consumers of a copy whose tasks run on
/// other members, seen through the state records their groups applied here (see
/// `consumer/retain.rs`).
pub(crate) struct WithViews<'a, S: StreamView> {
    /// The stream.
    pub(crate) stream: &'a S,
    /// Consumer name and view of each consumer not running here.
    pub(crate) extra: Vec<(String, SharedView)>,
}

impl<S: StreamView> StreamView for WithViews<'_, S> {
    fn name(&self) -> &str {
        self.stream.name()
    }

    fn retention(&self) -> Retention {
        self.stream.retention()
    }

    fn views(&self, except: Option<&str>) -> Vec<SharedView> {
        let mut views = self.stream.views(except);
        views.extend(
            self.extra
                .iter()
                .filter(|(name, _)| except != Some(name.as_str()))
                .map(|(_, v)| v.clone()),
        );
        views
    }
}

/// The ack floor (stream sequence) of a consumer, as its view last showed it.
pub(crate) fn floor_of(view: &SharedView) -> u64 {
    lock(view).floor
}

/// Checks a consumer configuration against the stream's retention, whether the consumer is
/// new or exists: a pull consumer on a workqueue stream needs acks (10084).
pub(crate) fn check_config(stream: &StreamConfig, config: &ConsumerConfig) -> Result<(), ApiError> {
    if stream.retention == Retention::WorkQueue
        && !config.is_push()
        && config.ack_policy == AckPolicy::None
    {
        return Err(JsError::ConsumerPullRequiresAck.err());
    }
    Ok(())
}

/// Checks a new consumer against a workqueue stream's rules, given the configurations of the
/// stream's consumers (nats-server's order: explicit ack 10098, one unfiltered consumer 10099,
/// disjoint filters 10100, deliver all 10101).
pub fn check_new_consumer(
    stream: &StreamConfig,
    existing: &[ConsumerConfig],
    config: &ConsumerConfig,
) -> Result<(), ApiError> {
    if stream.retention != Retention::WorkQueue {
        return Ok(());
    }
    if config.ack_policy != AckPolicy::Explicit {
        return Err(JsError::ConsumerWqRequiresExplicitAck.err());
    }
    if !existing.is_empty() {
        let filters = config.filters();
        if filters.is_empty() {
            return Err(JsError::ConsumerWqMultipleUnfiltered.err());
        }
        let unique = existing.iter().all(|other| {
            let theirs = other.filters();
            !theirs.is_empty()
                && filters
                    .iter()
                    .all(|f| theirs.iter().all(|t| !partitions_overlap(f, t)))
        });
        if !unique {
            return Err(JsError::ConsumerWqConsumerNotUnique.err());
        }
    }
    if config.deliver_policy != DeliverPolicy::All {
        return Err(JsError::ConsumerWqConsumerNotDeliverAll.err());
    }
    Ok(())
}

/// Whether two workqueue filters may claim the same message: one contains the other (as
/// nats-server 2.9 checks), or, more strictly, some subject matches both.
fn partitions_overlap(a: &str, b: &str) -> bool {
    is_subset(a.as_bytes(), b.as_bytes())
        || is_subset(b.as_bytes(), a.as_bytes())
        || leaf_proto::subject::subjects_overlap(a.as_bytes(), b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(json: &str) -> ConsumerConfig {
        serde_json::from_str(json).unwrap()
    }

    fn wq() -> StreamConfig {
        serde_json::from_str(r#"{"name":"W","subjects":["w.>"],"retention":"workqueue"}"#).unwrap()
    }

    fn code(r: Result<(), ApiError>) -> u16 {
        r.err().map_or(0, |e| e.err_code)
    }

    #[test]
    fn explicit_view_needs_what_is_pending_or_not_delivered() {
        let mut v = AckView::new(&consumer(
            r#"{"ack_policy":"explicit","filter_subject":"w.a"}"#,
        ));
        v.floor = 3;
        v.next = 8;
        v.pending = [5, 7].into_iter().collect();
        assert!(!v.needs_ack(3, Some("w.a")), "at or below the floor");
        assert!(v.needs_ack(5, Some("w.a")), "pending");
        assert!(!v.needs_ack(6, Some("w.a")), "delivered and acked");
        assert!(v.needs_ack(8, Some("w.a")), "not delivered yet");
        assert!(!v.needs_ack(8, Some("w.b")), "not for this consumer");
        assert!(v.needs_ack(8, None), "unknown subject counts as matching");
    }

    #[test]
    fn none_and_all_views_need_what_is_above_the_floor() {
        for policy in ["none", "all"] {
            let mut v = AckView::new(&consumer(&format!(r#"{{"ack_policy":"{policy}"}}"#)));
            v.floor = 4;
            v.next = 9;
            assert!(!v.needs_ack(4, Some("x")));
            assert!(v.needs_ack(5, Some("x")), "{policy}");
        }
    }

    #[test]
    fn orphans_after_a_restart() {
        let view = |filter: &str, floor: u64, next: u64, pending: &[u64]| {
            let mut v = AckView::new(&consumer(&format!(
                r#"{{"ack_policy":"explicit","filter_subject":"{filter}"}}"#
            )));
            v.floor = floor;
            v.next = next;
            v.pending = pending.iter().copied().collect();
            v
        };
        // Workqueue: acked by the consumer that owns the subject.
        let wq = [view("w.a", 2, 6, &[4]), view("w.b", 0, 1, &[])];
        assert!(orphaned(Retention::WorkQueue, &wq, 3, "w.a"), "acked");
        assert!(!orphaned(Retention::WorkQueue, &wq, 4, "w.a"), "pending");
        assert!(
            !orphaned(Retention::WorkQueue, &wq, 6, "w.a"),
            "not delivered"
        );
        assert!(
            !orphaned(Retention::WorkQueue, &wq, 3, "w.b"),
            "its owner has not seen it"
        );
        assert!(
            !orphaned(Retention::WorkQueue, &wq, 3, "w.c"),
            "nobody's yet"
        );
        // Interest: nobody still needs it.
        let interest = [view("", 0, 5, &[2]), view("i.b", 0, 1, &[])];
        assert!(orphaned(Retention::Interest, &interest, 3, "i.a"));
        assert!(
            !orphaned(Retention::Interest, &interest, 2, "i.a"),
            "pending"
        );
        assert!(
            !orphaned(Retention::Interest, &interest, 3, "i.b"),
            "i.b not delivered"
        );
        assert!(
            !orphaned(Retention::Interest, &[], 3, "i.a"),
            "no consumers: left alone"
        );
        assert!(!orphaned(Retention::Limits, &interest, 3, "i.a"));
    }

    /// A stream view with its own consumers' views (the running tasks').
    struct Views(Retention, Vec<(String, SharedView)>);

    impl StreamView for Views {
        fn name(&self) -> &str {
            "S"
        }
        fn retention(&self) -> Retention {
            self.0
        }
        fn views(&self, except: Option<&str>) -> Vec<SharedView> {
            self.1
                .iter()
                .filter(|(n, _)| except != Some(n.as_str()))
                .map(|(_, v)| v.clone())
                .collect()
        }
    }

    /// The views of consumers running elsewhere (a replicated stream's copy) count as the
    /// running ones do, `except` leaving out either kind: an interest message acked by the
    /// running consumer stays while a remote one still needs it.
    #[test]
    fn remote_views_count_for_interest() {
        let shared = |floor: u64, next: u64| -> SharedView {
            let mut v = AckView::new(&consumer(r#"{"ack_policy":"explicit"}"#));
            v.floor = floor;
            v.next = next;
            Arc::new(Mutex::new(v))
        };
        let own = Views(Retention::Interest, vec![("A".into(), shared(10, 11))]);
        let with = WithViews {
            stream: &own,
            extra: vec![("B".into(), shared(4, 5))],
        };
        assert_eq!(with.views(None).len(), 2);
        assert_eq!(with.views(Some("A")).len(), 1);
        assert_eq!(with.views(Some("B")).len(), 1);
        let needed = |seq: u64| {
            with.views(Some("A"))
                .iter()
                .any(|v| lock(v).needs_ack(seq, None))
        };
        assert!(needed(5), "B has not got 5 yet");
        assert!(!needed(4), "B acked 4");
        assert!(!WithViews {
            stream: &own,
            extra: Vec::new()
        }
        .views(Some("A"))
        .iter()
        .any(|v| lock(v).needs_ack(5, None)));
    }

    #[test]
    fn workqueue_consumer_rules() {
        let s = wq();
        let explicit = r#""ack_policy":"explicit""#;
        let new = |extra: &str| consumer(&format!("{{{explicit}{extra}}}"));
        assert_eq!(code(check_new_consumer(&s, &[], &new(""))), 0);
        assert_eq!(
            code(check_new_consumer(
                &s,
                &[],
                &consumer(r#"{"ack_policy":"all"}"#)
            )),
            10098
        );
        assert_eq!(code(check_new_consumer(&s, &[new("")], &new(""))), 10099);
        let a = new(r#","filter_subject":"w.a.>""#);
        assert_eq!(code(check_new_consumer(&s, &[new("")], &a)), 10100);
        assert_eq!(
            code(check_new_consumer(
                &s,
                std::slice::from_ref(&a),
                &new(r#","filter_subject":"w.a.b""#)
            )),
            10100
        );
        assert_eq!(
            code(check_new_consumer(
                &s,
                std::slice::from_ref(&a),
                &new(r#","filter_subject":"w.*.c""#)
            )),
            10100,
            "w.*.c and w.a.> share w.a.c"
        );
        assert_eq!(
            code(check_new_consumer(
                &s,
                std::slice::from_ref(&a),
                &new(r#","filter_subject":"w.b""#)
            )),
            0
        );
        assert_eq!(
            code(check_new_consumer(
                &s,
                &[],
                &new(r#","deliver_policy":"new""#)
            )),
            10101
        );
        let pull_none = consumer(r#"{"ack_policy":"none"}"#);
        assert_eq!(code(check_config(&s, &pull_none)), 10084);
        let push_none = consumer(r#"{"ack_policy":"none","deliver_subject":"d"}"#);
        assert_eq!(code(check_config(&s, &push_none)), 0);
        assert_eq!(code(check_new_consumer(&s, &[], &push_none)), 10098);
        // Other retentions: no rule.
        let limits: StreamConfig = serde_json::from_str(r#"{"name":"L"}"#).unwrap();
        assert_eq!(code(check_config(&limits, &pull_none)), 0);
        assert_eq!(code(check_new_consumer(&limits, &[new("")], &pull_none)), 0);
    }
}
