//! The queue of write operations from the [`Store`](super::Store) handles to the writer
//! thread: a deque under a mutex, with a condition variable the writer sleeps on when it is
//! empty. The deque keeps its capacity, so a steady flow of appends allocates nothing here
//! (a channel allocated a block per few dozen operations), and a push wakes the writer only
//! when it is actually asleep.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What a batch of queued operations is limited by: each operation's weight (slots of the
/// batch) and the message bytes it writes. The writer's operation type implements it; the
/// queue knows nothing else of it.
pub(crate) trait Weighed {
    /// How many slots of a batch this operation takes.
    fn weight(&self) -> usize;
    /// The message bytes this operation writes.
    fn bytes(&self) -> u64;
}

/// What [`OpQueue::take_batch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Operations were moved into the batch.
    Ops,
    /// None came within the idle time.
    Idle,
    /// The queue is closed and empty: the writer stops.
    Closed,
}

/// Operations waiting for the writer.
pub(crate) struct OpQueue<Op> {
    state: Mutex<State<Op>>,
    wake: Condvar,
}

impl<Op> Default for OpQueue<Op> {
    fn default() -> Self {
        OpQueue {
            state: Mutex::new(State {
                ops: VecDeque::new(),
                closed: false,
                writer_asleep: false,
            }),
            wake: Condvar::new(),
        }
    }
}

struct State<Op> {
    ops: VecDeque<Op>,
    /// No more operations are accepted; the writer stops once `ops` is empty.
    closed: bool,
    /// The writer sleeps on `wake`.
    writer_asleep: bool,
}

impl<Op: Weighed> OpQueue<Op> {
    fn lock(&self) -> MutexGuard<'_, State<Op>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op`, or gives it back if the queue is closed.
    pub(crate) fn push(&self, op: Op) -> Result<(), Op> {
        let mut st = self.lock();
        if st.closed {
            return Err(op);
        }
        st.ops.push_back(op);
        let asleep = st.writer_asleep;
        drop(st);
        if asleep {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Refuses further operations; the writer finishes the queued ones and stops.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until operations are queued (at most `idle`, if given) and moves them into
    /// `into`, oldest first, until their weight reaches `max_weight` or their message bytes
    /// `max_bytes` (at least one op).
    pub(crate) fn take_batch(
        &self,
        max_weight: usize,
        max_bytes: u64,
        idle: Option<Duration>,
        into: &mut Vec<Op>,
    ) -> Taken {
        let deadline = idle.map(|d| Instant::now() + d);
        let mut st = self.lock();
        while st.ops.is_empty() {
            if st.closed {
                return Taken::Closed;
            }
            st.writer_asleep = true;
            st = match deadline {
                None => self.wake.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        st.writer_asleep = false;
                        return Taken::Idle;
                    };
                    self.wake
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            st.writer_asleep = false;
        }
        let (mut weight, mut bytes) = (0, 0);
        while weight < max_weight && bytes < max_bytes {
            let Some(op) = st.ops.pop_front() else {
                break;
            };
            weight += op.weight();
            bytes += op.bytes();
            into.push(op);
        }
        Taken::Ops
    }
}
