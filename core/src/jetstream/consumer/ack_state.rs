//! A consumer's ack state: which delivered messages still wait for their ack (with their
//! delivery counts and deadlines), the ack floor, the consumer sequence and the redelivery
//! queue. Pure bookkeeping, no I/O: no clock of its own (every event that needs the time gets
//! `now`, wall-clock nanoseconds), no store, no channels. The consumer task
//! ([`super::Task`]) reads messages, sends them, keeps the retention view and persists; it
//! tells this state machine what happened and asks it what to do. `ack_state/tests.rs` runs it
//! against a model (`BTreeMap`s and linear scans) under random sequences of events.
//!
//! # Events
//!
//! * [`AckState::delivered`]: a message went out (first delivery or redelivery); hands out the
//!   next consumer sequence. With ack policy `none` the message counts as acknowledged at once
//!   (the ack floor moves to it); else it waits for its ack, `ack_wait` (or the `backoff` step
//!   for its delivery count) from `now`.
//! * [`AckState::ack`]: `+ACK` (`explicit`: forgets that message; `all`: forgets it and every
//!   earlier one, unless the floor is already at or past it; `none`: nothing).
//! * [`AckState::nak`]: `-NAK` queues the message for redelivery now, or with a delay makes it
//!   due `delay` from now. [`AckState::in_progress`]: `+WPI` restarts its `ack_wait`.
//!   [`AckState::term`]: `+TERM` forgets it (never redelivered); with ack policy `all` it
//!   acknowledges every earlier message as well, like `+ACK` (as nats-server 2.9 does).
//! * [`AckState::due`]: the messages whose deadline passed are queued for redelivery, or
//!   forgotten once delivered `max_deliver` times. [`AckState::next_redelivery`] takes the next
//!   queued one (skipping what was acked meanwhile, forgetting what was delivered often
//!   enough); [`AckState::unget_redelivery`] puts it back when it could not be sent.
//! * [`AckState::removed`]: the stream no longer has the message (it is forgotten).
//!
//! # The ack floor
//!
//! As nats-server reports it: a pair (consumer sequence, stream sequence) below which
//! everything is acknowledged. It moves when a message is forgotten: if nothing waits any more,
//! to the last consumer sequence and the last stream sequence the consumer has passed (the
//! caller's `passed`); if the forgotten message was the one right above the floor (its
//! consumer sequence is the floor's plus one), to just below the next waiting message.
//! Forgetting a message further up leaves the floor where it is.
//!
//! Every method that forgets a message returns a [`Forgot`] with the floor's stream sequence
//! as it was just before, which is what the consumer's retention view showed then (see
//! `retain.rs`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::jetstream::config::consumer::{AckPolicy, ConsumerConfig};

#[cfg(test)]
mod tests;

/// One delivered message waiting for its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    /// Consumer sequence of its first delivery.
    pub(super) dseq: u64,
    /// Deliveries so far.
    pub(super) dc: u64,
    /// When it was last delivered (or its ack_wait restarted), ns.
    pub(super) ts: i64,
    /// Queued for redelivery.
    #[serde(skip)]
    pub(super) queued: bool,
}

/// The parts of a consumer's configuration the ack state follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rules {
    pub(super) policy: AckPolicy,
    /// ns.
    pub(super) ack_wait: i64,
    /// Redelivery delays by delivery count, ns (empty: `ack_wait` always).
    pub(super) backoff: Vec<i64>,
    /// Most deliveries of one message (0 or less: unlimited).
    pub(super) max_deliver: i64,
    /// Most messages waiting for their ack before new ones wait (0 or less: unlimited).
    pub(super) max_ack_pending: i64,
}

impl Rules {
    /// The rules of `config`.
    pub(super) fn of(config: &ConsumerConfig) -> Self {
        Self {
            policy: config.ack_policy,
            ack_wait: config.ack_wait,
            backoff: config.backoff.clone(),
            max_deliver: config.max_deliver,
            max_ack_pending: config.max_ack_pending,
        }
    }

    /// How long a message delivered `dc` times waits for its ack, ns.
    pub(super) fn ack_wait_for(&self, dc: u64) -> i64 {
        if self.backoff.is_empty() {
            return self.ack_wait;
        }
        let i = (dc.saturating_sub(1) as usize).min(self.backoff.len() - 1);
        self.backoff.get(i).copied().unwrap_or(self.ack_wait)
    }

    /// Whether a message delivered `dc` times may not be delivered again.
    fn exhausted(&self, dc: u64) -> bool {
        self.max_deliver > 0 && dc as i64 >= self.max_deliver
    }
}

/// A message no longer waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Forgot {
    /// Its stream sequence.
    pub(super) sseq: u64,
    /// The ack floor's stream sequence just before it was forgotten.
    pub(super) floor_before: u64,
}

/// What an ack changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Acked {
    /// Nothing (not waited for, or below the floor).
    Nothing,
    /// One message is no longer waited for (ack policy `explicit`).
    Forgot(Forgot),
    /// Everything up to this stream sequence is acknowledged (ack policy `all`); the floor's
    /// stream sequence is it.
    Upto(u64),
}

/// The next queued redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Redelivery {
    /// Send this message again; `dc` is the delivery count it goes out with.
    Send { sseq: u64, dc: u64 },
    /// It was delivered `max_deliver` times: forgotten instead.
    Exhausted(Forgot),
}

/// A delivery's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delivery {
    /// Its consumer sequence.
    pub(super) dseq: u64,
    /// Nothing was waiting for an ack before it.
    pub(super) was_idle: bool,
}

/// A consumer's ack state (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct AckState {
    rules: Rules,
    /// Last consumer sequence handed out.
    dseq: u64,
    /// Ack floor: consumer and stream sequences.
    floor: (u64, u64),
    /// Outstanding acks by stream sequence.
    pending: BTreeMap<u64, Pending>,
    /// Stream sequences queued for redelivery (each with `queued` set in `pending`).
    rdq: VecDeque<u64>,
}

impl AckState {
    /// A fresh state: nothing delivered, the floor at (0, 0).
    pub(super) fn new(rules: Rules) -> Self {
        Self::restore(rules, 0, (0, 0), BTreeMap::new())
    }

    /// The state as it was persisted (nothing queued for redelivery: what is overdue is found
    /// by the next [`AckState::due`]).
    pub(super) fn restore(
        rules: Rules,
        dseq: u64,
        floor: (u64, u64),
        mut pending: BTreeMap<u64, Pending>,
    ) -> Self {
        for p in pending.values_mut() {
            p.queued = false;
        }
        Self {
            rules,
            dseq,
            floor,
            pending,
            rdq: VecDeque::new(),
        }
    }

    /// The configuration changed.
    pub(super) fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    /// A new consumer starts at stream sequence `next`: the floor is just below it, as
    /// nats-server reports it.
    pub(super) fn start_at(&mut self, next: u64) {
        self.floor = (0, next.saturating_sub(1));
    }

    // ---- queries ----

    /// Last consumer sequence handed out.
    pub(super) fn dseq(&self) -> u64 {
        self.dseq
    }

    /// The ack floor: (consumer sequence, stream sequence).
    pub(super) fn floor(&self) -> (u64, u64) {
        self.floor
    }

    /// The messages waiting for their ack, by stream sequence.
    pub(super) fn pending(&self) -> &BTreeMap<u64, Pending> {
        &self.pending
    }

    /// `num_ack_pending` of CONSUMER.INFO.
    pub(super) fn num_ack_pending(&self) -> usize {
        self.pending.len()
    }

    /// `num_redelivered` of CONSUMER.INFO: waiting messages delivered more than once.
    pub(super) fn num_redelivered(&self) -> usize {
        self.pending.values().filter(|p| p.dc > 1).count()
    }

    /// Messages queued for redelivery.
    pub(super) fn num_queued(&self) -> usize {
        self.rdq.len()
    }

    /// Whether new messages wait because `max_ack_pending` messages wait for their ack.
    pub(super) fn blocks_new(&self) -> bool {
        self.rules.policy != AckPolicy::None
            && self.rules.max_ack_pending > 0
            && self.pending.len() as i64 >= self.rules.max_ack_pending
    }

    /// The earliest deadline of a waiting message not yet queued, ns.
    pub(super) fn next_deadline(&self) -> Option<i64> {
        self.pending
            .values()
            .filter(|p| !p.queued)
            .map(|p| p.ts + self.rules.ack_wait_for(p.dc))
            .min()
    }

    // ---- events ----

    /// Message `sseq` was sent with delivery count `dc` at `now`.
    pub(super) fn delivered(&mut self, sseq: u64, dc: u64, now: i64) -> Delivery {
        self.dseq += 1;
        let dseq = self.dseq;
        let was_idle = self.pending.is_empty();
        match self.rules.policy {
            AckPolicy::None => self.floor = (dseq, sseq),
            _ => {
                let p = self.pending.entry(sseq).or_insert(Pending {
                    dseq,
                    dc: 0,
                    ts: now,
                    queued: false,
                });
                p.dc = dc;
                p.ts = now;
                p.queued = false;
            }
        }
        Delivery { dseq, was_idle }
    }

    /// `+ACK` of stream sequence `sseq`, consumer sequence `dseq` (as the ack subject says).
    /// `passed`: the last stream sequence the consumer has passed.
    pub(super) fn ack(&mut self, sseq: u64, dseq: u64, passed: u64) -> Acked {
        match self.rules.policy {
            AckPolicy::Explicit => match self.pending.get(&sseq) {
                Some(p) => {
                    let dseq = p.dseq;
                    Acked::Forgot(self.forget(sseq, dseq, passed))
                }
                None => Acked::Nothing,
            },
            AckPolicy::All => {
                let (dflr, sflr) = self.floor;
                if dseq <= dflr || sseq <= sflr {
                    return Acked::Nothing;
                }
                // An ack subject is the client's to write: one for a message not delivered
                // yet (beyond what the consumer passed, or a consumer sequence it has not
                // reached) acknowledges nothing.
                if sseq > passed || dseq > self.dseq {
                    return Acked::Nothing;
                }
                self.floor = (dseq, sseq);
                self.pending = self.pending.split_off(&sseq.saturating_add(1));
                self.rdq.retain(|s| *s > sseq);
                if self.pending.is_empty() {
                    self.floor = (self.dseq, passed);
                }
                Acked::Upto(sseq)
            }
            AckPolicy::None => Acked::Nothing,
        }
    }

    /// `-NAK` of `sseq` at `now`: queued for redelivery, or with a `delay` (ns, > 0) due that
    /// long from now. Returns whether the deadlines changed.
    pub(super) fn nak(&mut self, sseq: u64, delay: i64, now: i64) -> bool {
        let wait = self
            .rules
            .ack_wait_for(self.pending.get(&sseq).map_or(1, |p| p.dc));
        let Some(p) = self.pending.get_mut(&sseq) else {
            return false;
        };
        if delay > 0 {
            p.ts = now - wait + delay;
            return true;
        }
        if !p.queued {
            p.queued = true;
            self.rdq.push_back(sseq);
        }
        false
    }

    /// `+WPI` of `sseq` at `now`: its `ack_wait` starts again.
    pub(super) fn in_progress(&mut self, sseq: u64, now: i64) {
        if let Some(p) = self.pending.get_mut(&sseq) {
            p.ts = now;
        }
    }

    /// `+TERM` of `sseq` (consumer sequence `dseq`): no longer waited for, never redelivered.
    /// As in nats-server 2.9, a term is an acknowledgement that suppresses redelivery: with
    /// ack policy `all` it acknowledges every earlier message too, exactly as `+ACK` does;
    /// with `explicit` it forgets that message only; with `none` there is nothing to forget.
    pub(super) fn term(&mut self, sseq: u64, dseq: u64, passed: u64) -> Acked {
        match self.rules.policy {
            AckPolicy::All => self.ack(sseq, dseq, passed),
            AckPolicy::Explicit | AckPolicy::None => match self.removed(sseq, passed) {
                Some(forgot) => Acked::Forgot(forgot),
                None => Acked::Nothing,
            },
        }
    }

    /// The stream no longer has `sseq`: forgotten if it was waited for.
    pub(super) fn removed(&mut self, sseq: u64, passed: u64) -> Option<Forgot> {
        let p = self.pending.get(&sseq).copied()?;
        Some(self.forget(sseq, p.dseq, passed))
    }

    /// Queues the messages whose deadline is at or before `now` for redelivery; forgets those
    /// delivered `max_deliver` times (returned, in stream order).
    pub(super) fn due(&mut self, now: i64, passed: u64) -> Vec<Forgot> {
        let rules = &self.rules;
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.queued && p.ts + rules.ack_wait_for(p.dc) <= now)
            .map(|(s, _)| *s)
            .collect();
        let mut forgot = Vec::new();
        for sseq in due {
            let Some(p) = self.pending.get_mut(&sseq) else {
                continue;
            };
            if self.rules.exhausted(p.dc) {
                let dseq = p.dseq;
                forgot.push(self.forget(sseq, dseq, passed));
            } else {
                p.queued = true;
                self.rdq.push_back(sseq);
            }
        }
        forgot
    }

    /// Takes the next queued redelivery. The caller sends it ([`AckState::delivered`] with its
    /// `dc`), or puts it back ([`AckState::unget_redelivery`]), or reports it gone
    /// ([`AckState::removed`]).
    pub(super) fn next_redelivery(&mut self, passed: u64) -> Option<Redelivery> {
        while let Some(sseq) = self.rdq.pop_front() {
            let Some(p) = self.pending.get(&sseq).copied() else {
                continue;
            };
            if self.rules.exhausted(p.dc) {
                return Some(Redelivery::Exhausted(self.forget(sseq, p.dseq, passed)));
            }
            return Some(Redelivery::Send { sseq, dc: p.dc + 1 });
        }
        None
    }

    /// Puts back a redelivery taken by [`AckState::next_redelivery`] but not sent.
    pub(super) fn unget_redelivery(&mut self, sseq: u64) {
        self.rdq.push_front(sseq);
    }

    /// Forgets an outstanding ack and moves the ack floor as nats-server does.
    fn forget(&mut self, sseq: u64, dseq: u64, passed: u64) -> Forgot {
        let floor_before = self.floor.1;
        self.pending.remove(&sseq);
        if self.pending.is_empty() {
            self.floor = (self.dseq, passed);
        } else if dseq == self.floor.0 + 1 && self.pending.range(..sseq).next().is_none() {
            // Next in line by consumer sequence, and nothing older still waits: with ack policy
            // `all` an ack of a redelivery leaves the floor's consumer sequence past messages
            // still pending, so the consumer sequence alone does not say "next in line".
            self.floor = (dseq, sseq);
            if let Some((&next, p)) = self.pending.range(sseq.saturating_add(1)..).next() {
                self.floor = (p.dseq.saturating_sub(1), next - 1);
            }
        }
        Forgot { sseq, floor_before }
    }
}
