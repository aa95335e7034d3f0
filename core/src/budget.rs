//! Budgets for the queues that remote input fills: a bound in bytes (and optionally in items)
//! on what one queue holds, so that no client, leaf or hub can make the server's memory grow
//! by sending faster than it is served.
//!
//! * A [`Budget`] counts what its queue holds. Each item costs its bytes plus
//!   [`ITEM_OVERHEAD`] (the bookkeeping around it: strings, the queue slot), so that a flood
//!   of empty messages is bounded too. A charge that would pass the limit is refused; the
//!   caller then answers with an error or drops the item, as the queue's owner documents.
//! * A budget may have a parent (one budget shared by several queues, such as every stream's
//!   ingest): a charge must fit both, and is released from both.
//! * Past its *stall mark* a budget asks producers that can wait (a client's or a link's read
//!   loop) to wait for it to drain, bounded in time (see
//!   [`crate::server::Fanout::wait_for_stalled`]): TCP then slows the publisher, as it does
//!   for a slow subscriber.
//! * What is charged is held by a [`Charge`], which gives it back when dropped: an item can
//!   move from queue to queue (or into the store and back) without any path forgetting to
//!   release it.
//! * [`channel`]: a tokio channel whose sender charges a budget and whose items carry their
//!   [`Charge`] to the receiver.
//!
//! The table of every queue fed by remote input, with its bound and what happens past it, is
//! in `core/DESIGN.md` ("Bounded memory").

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

/// What each queued item costs besides its bytes.
pub const ITEM_OVERHEAD: usize = 128;

/// How often a budget lets its owner log that it refused something.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bound of one queue (see the module documentation).
#[derive(Debug)]
pub struct Budget {
    /// Bytes charged (items' bytes plus their overhead).
    bytes: AtomicUsize,
    /// Items charged.
    items: AtomicUsize,
    max_bytes: usize,
    max_items: usize,
    stall_bytes: usize,
    stall_items: usize,
    parent: Option<Arc<Budget>>,
    /// Wakes producers waiting for the budget to drain below its stall mark.
    drained: Notify,
    /// Charges refused so far.
    refused: AtomicU64,
    /// When a refusal was last reported (ms since `created`, plus one; 0: never).
    last_report_ms: AtomicU64,
    created: Instant,
}

impl Budget {
    /// A budget of at most `max_bytes` bytes and `max_items` items, stalling producers past
    /// a quarter of either.
    pub fn new(max_bytes: usize, max_items: usize) -> Budget {
        Budget {
            bytes: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            max_bytes,
            max_items,
            stall_bytes: max_bytes / 4,
            stall_items: max_items / 4,
            parent: None,
            drained: Notify::new(),
            refused: AtomicU64::new(0),
            last_report_ms: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// The same, stalling producers past `bytes` bytes or `items` items instead.
    #[must_use]
    pub fn stall_at(mut self, bytes: usize, items: usize) -> Budget {
        self.stall_bytes = bytes.min(self.max_bytes);
        self.stall_items = items.min(self.max_items);
        self
    }

    /// The same, inside `parent`: every charge must fit both.
    #[must_use]
    pub fn within(mut self, parent: Arc<Budget>) -> Budget {
        self.parent = Some(parent);
        self
    }

    /// The cost of an item of `bytes` bytes (its bytes plus [`ITEM_OVERHEAD`]).
    pub fn cost(bytes: usize) -> usize {
        bytes.saturating_add(ITEM_OVERHEAD)
    }

    /// Charges one item of `cost` bytes (see [`Budget::cost`]) if it fits this budget and
    /// its parents; `None` (nothing charged, the refusal counted) if it does not.
    pub fn try_charge(self: &Arc<Self>, cost: usize) -> Option<Charge> {
        if self.take(cost) {
            Some(Charge {
                budget: self.clone(),
                bytes: cost,
            })
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Charges one item of `cost` bytes whether it fits or not: for items whose producer is
    /// bounded by other means (a mirror or source, by its flow control), so that what they
    /// hold still counts towards the stall mark and the limit others see.
    pub fn charge(self: &Arc<Self>, cost: usize) -> Charge {
        let mut budget = Some(&**self);
        while let Some(b) = budget {
            b.bytes.fetch_add(cost, Ordering::Relaxed);
            b.items.fetch_add(1, Ordering::Relaxed);
            budget = b.parent.as_deref();
        }
        Charge {
            budget: self.clone(),
            bytes: cost,
        }
    }

    /// Takes `cost` bytes and one item from this budget and its parents, or nothing.
    fn take(&self, cost: usize) -> bool {
        let bytes = self
            .bytes
            .fetch_add(cost, Ordering::Relaxed)
            .saturating_add(cost);
        let items = self.items.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let fits = bytes <= self.max_bytes
            && items <= self.max_items
            && self.parent.as_deref().is_none_or(|p| p.take(cost));
        if !fits {
            self.bytes.fetch_sub(cost, Ordering::Relaxed);
            self.items.fetch_sub(1, Ordering::Relaxed);
        }
        fits
    }

    /// Gives back one item of `cost` bytes, here and in the parents.
    fn release(&self, cost: usize) {
        let before = self.bytes.fetch_sub(cost, Ordering::Relaxed);
        let items_before = self.items.fetch_sub(1, Ordering::Relaxed);
        let was_stalled = before > self.stall_bytes || items_before > self.stall_items;
        if was_stalled && !self.over_own_stall_mark() {
            self.drained.notify_waiters();
        }
        if let Some(parent) = &self.parent {
            parent.release(cost);
        }
    }

    fn over_own_stall_mark(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > self.stall_bytes
            || self.items.load(Ordering::Relaxed) > self.stall_items
    }

    /// Whether this budget (or a parent) holds more than its stall mark: producers that can
    /// wait should.
    pub fn is_stalled(&self) -> bool {
        self.over_own_stall_mark() || self.parent.as_deref().is_some_and(Budget::is_stalled)
    }

    /// Waits until the budget is at or below its stall mark, for at most `limit`.
    pub async fn wait_drained(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut budget = self;
        loop {
            // A parent that is past its mark is waited for on its own notifications.
            while !budget.over_own_stall_mark() {
                match &budget.parent {
                    Some(p) => budget = p,
                    None => return,
                }
            }
            let drained = budget.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if !budget.over_own_stall_mark() {
                continue;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return;
            }
            budget = self;
        }
    }

    /// Bytes charged now (items' bytes plus overhead).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Items charged now.
    pub fn items(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    /// The most bytes this budget holds.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Charges refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the owner should log a refusal now: at most once per 10 s, so a flood does not
    /// turn into a flood of log lines.
    pub fn should_report(&self) -> bool {
        let now = u64::try_from(self.created.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_report_ms.load(Ordering::Relaxed);
        let interval = REFUSAL_LOG_INTERVAL.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_report_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// What one item holds of a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// A channel bounded by `budget`: see [`Sender::try_send`].
pub fn channel<T>(budget: Arc<Budget>) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Sender { tx, budget }, Receiver { rx })
}

/// The sending side of a [`channel`].
#[derive(Debug)]
pub struct Sender<T> {
    tx: mpsc::UnboundedSender<(T, Option<Charge>)>,
    budget: Arc<Budget>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` of `bytes` bytes (its cost is [`Budget::cost`]) if the budget has room;
    /// gives it back when it has not. An item sent to a receiver that is gone is dropped.
    pub fn try_send(&self, item: T, bytes: usize) -> Result<(), T> {
        match self.budget.try_charge(Budget::cost(bytes)) {
            Some(charge) => {
                let _ = self.tx.send((item, Some(charge)));
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Queues `item` without charging the budget: for the few items the server itself sends
    /// (commands, not data), each bounded by its sender.
    pub fn send_uncharged(&self, item: T) {
        let _ = self.tx.send((item, None));
    }

    /// The budget the channel charges.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }
}

/// The receiving side of a [`channel`].
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<(T, Option<Charge>)>,
}

impl<T> Receiver<T> {
    /// The next item and what it holds of the budget (given back when dropped: keep it while
    /// the item's memory is still held), or `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<(T, Option<Charge>)> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_given_back_on_drop() {
        let b = Arc::new(Budget::new(1000, 3));
        let one = b.try_charge(400).expect("fits");
        let two = b.try_charge(400).expect("fits");
        assert!(b.try_charge(400).is_none(), "1200 bytes > 1000");
        assert_eq!(b.refused(), 1);
        assert_eq!((b.bytes(), b.items()), (800, 2));
        drop(one);
        assert_eq!((b.bytes(), b.items()), (400, 1));
        let small: Vec<Charge> = (0..2).map(|_| b.try_charge(1).expect("fits")).collect();
        assert!(b.try_charge(1).is_none(), "4 items > 3");
        drop((two, small));
        assert_eq!((b.bytes(), b.items()), (0, 0));
    }

    #[test]
    fn a_parent_bounds_its_children_together() {
        let all = Arc::new(Budget::new(1000, usize::MAX));
        let a = Arc::new(Budget::new(800, usize::MAX).within(all.clone()));
        let b = Arc::new(Budget::new(800, usize::MAX).within(all.clone()));
        let x = a.try_charge(600).expect("fits a and all");
        assert!(b.try_charge(600).is_none(), "all would hold 1200");
        assert_eq!(b.bytes(), 0, "a refused charge leaves nothing behind");
        assert_eq!(all.bytes(), 600);
        let forced = b.charge(600);
        assert_eq!((all.bytes(), b.bytes()), (1200, 600));
        assert!(a.is_stalled(), "the parent is past its stall mark");
        drop((x, forced));
        assert_eq!(
            (all.bytes(), all.items(), a.bytes(), b.bytes()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn the_stall_mark_is_a_quarter_unless_set() {
        let b = Arc::new(Budget::new(1000, 100));
        let _x = b.try_charge(250).expect("fits");
        assert!(!b.is_stalled());
        let _y = b.try_charge(1).expect("fits");
        assert!(b.is_stalled());
        let c = Arc::new(Budget::new(1000, 100).stall_at(900, 2));
        let _z: Vec<Charge> = (0..2).map(|_| c.try_charge(1).expect("fits")).collect();
        assert!(!c.is_stalled());
        let _w = c.try_charge(1).expect("fits");
        assert!(c.is_stalled(), "3 items > 2");
    }

    #[tokio::test]
    async fn waiting_ends_when_it_drains_or_at_the_limit() {
        let b = Arc::new(Budget::new(100, 100));
        let held = b.try_charge(90).expect("fits");
        let started = tokio::time::Instant::now();
        b.wait_drained(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "still stalled"
        );
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_drained(Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the release")
            .expect("waiter");
    }

    #[tokio::test]
    async fn a_channel_holds_its_charge_until_the_receiver_drops_it() {
        let budget = Arc::new(Budget::new(2 * Budget::cost(10), usize::MAX));
        let (tx, mut rx) = channel::<u32>(budget.clone());
        assert_eq!(tx.try_send(1, 10), Ok(()));
        assert_eq!(tx.try_send(2, 10), Ok(()));
        assert_eq!(tx.try_send(3, 10), Err(3));
        tx.send_uncharged(4);
        let (one, charge) = rx.recv().await.expect("queued");
        assert_eq!(one, 1);
        assert_eq!(budget.items(), 2, "held while the charge lives");
        drop(charge);
        assert_eq!(tx.try_send(5, 10), Ok(()));
        let got: Vec<u32> = [
            rx.recv().await.expect("2").0,
            rx.recv().await.expect("4").0,
            rx.recv().await.expect("5").0,
        ]
        .into();
        assert_eq!(got, [2, 4, 5]);
    }

    #[test]
    fn refusals_are_reported_at_most_every_ten_seconds() {
        let b = Budget::new(1, 1);
        assert!(b.should_report());
        assert!(!b.should_report());
    }
}
