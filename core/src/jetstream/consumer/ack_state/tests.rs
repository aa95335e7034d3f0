//! The ack state against a model: random sequences of events (new deliveries in stream order,
//! redeliveries taken from the queue and sent, put back or found gone, acks, naks with and
//! without delay, `+WPI`, `+TERM`, the clock moving and the due check, messages removed from
//! the stream) under random rules (each ack policy, `ack_wait` or a `backoff`, `max_deliver`,
//! `max_ack_pending`). The model keeps every message ever delivered in a `BTreeMap` with an
//! absolute deadline and finds everything by linear scans.
//!
//! After every step the pending set (first consumer sequence, delivery count, deadline, queued),
//! the ack floor, the consumer sequence, the counters CONSUMER.INFO shows, the next deadline,
//! the redelivery queue's length and `max_ack_pending`'s verdict must agree, and these
//! invariants hold: the ack floor's stream sequence is below every pending one; with ack policy
//! `explicit` the floor's consumer sequence is just below the lowest pending message's; nothing
//! acknowledged or terminated is ever redelivered; no message goes out more than `max_deliver`
//! times; never more than `max_ack_pending` messages wait.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// One step of the consumer task, as it calls the ack state.
#[derive(Debug, Clone)]
enum Ev {
    /// Deliver the next new message, `gap` stream sequences after the last one (filtered
    /// subjects in between), if `max_ack_pending` allows.
    New {
        gap: u64,
    },
    /// Take the next redelivery and send it (0), put it back (1) or find it gone (2).
    Redeliver {
        then: u8,
    },
    /// An ack of a message picked among those delivered (or an unknown sequence).
    Ack {
        pick: usize,
        stale_dseq: bool,
    },
    Nak {
        pick: usize,
        delay: i64,
    },
    Wpi {
        pick: usize,
    },
    Term {
        pick: usize,
        stale_dseq: bool,
    },
    Removed {
        pick: usize,
    },
    /// The clock moves on, then the due check runs.
    Tick {
        ns: i64,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => (1u64..4).prop_map(|gap| Ev::New { gap }),
        4 => (0u8..3).prop_map(|then| Ev::Redeliver { then }),
        4 => (0usize..64, any::<bool>()).prop_map(|(pick, stale_dseq)| Ev::Ack { pick, stale_dseq }),
        2 => (0usize..64, prop_oneof![Just(0i64), 1i64..40]).prop_map(|(pick, delay)| Ev::Nak { pick, delay }),
        1 => (0usize..64).prop_map(|pick| Ev::Wpi { pick }),
        1 => (0usize..64, any::<bool>()).prop_map(|(pick, stale_dseq)| Ev::Term { pick, stale_dseq }),
        1 => (0usize..64).prop_map(|pick| Ev::Removed { pick }),
        4 => (1i64..30).prop_map(|ns| Ev::Tick { ns }),
    ]
}

fn rules() -> impl Strategy<Value = Rules> {
    (
        prop_oneof![
            Just(AckPolicy::Explicit),
            Just(AckPolicy::All),
            Just(AckPolicy::None)
        ],
        1i64..30,
        prop_oneof![Just(vec![]), proptest::collection::vec(1i64..30, 1..4)],
        prop_oneof![Just(-1i64), Just(0i64), 1i64..5],
        prop_oneof![Just(-1i64), Just(0i64), 1i64..6],
    )
        .prop_map(
            |(policy, ack_wait, backoff, max_deliver, max_ack_pending)| Rules {
                policy,
                ack_wait,
                backoff,
                max_deliver,
                max_ack_pending,
            },
        )
}

/// A message the model waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    first_dseq: u64,
    dc: u64,
    /// Absolute, ns.
    deadline: i64,
    queued: bool,
}

/// The obviously correct ack state.
#[derive(Debug)]
struct Model {
    rules: Rules,
    dseq: u64,
    floor: (u64, u64),
    waiting: BTreeMap<u64, Waiting>,
    /// Redelivery queue, front first (may name messages no longer waited for).
    queue: Vec<u64>,
    /// Acknowledged or terminated: never to be delivered again.
    done: BTreeSet<u64>,
    /// Every delivered stream sequence and the consumer sequence of its latest delivery.
    delivered: BTreeMap<u64, u64>,
    /// Deliveries of each stream sequence.
    deliveries: BTreeMap<u64, u64>,
}

impl Model {
    fn wait(&self, dc: u64) -> i64 {
        match self.rules.backoff.len() {
            0 => self.rules.ack_wait,
            n => self.rules.backoff[((dc as usize).max(1) - 1).min(n - 1)],
        }
    }

    fn exhausted(&self, dc: u64) -> bool {
        self.rules.max_deliver > 0 && dc >= self.rules.max_deliver as u64
    }

    fn blocks_new(&self) -> bool {
        self.rules.policy != AckPolicy::None
            && self.rules.max_ack_pending > 0
            && self.waiting.len() >= self.rules.max_ack_pending as usize
    }

    fn delivered(&mut self, sseq: u64, dc: u64, now: i64) -> Delivery {
        let was_idle = self.waiting.is_empty();
        self.dseq += 1;
        self.delivered.insert(sseq, self.dseq);
        *self.deliveries.entry(sseq).or_default() += 1;
        if self.rules.policy == AckPolicy::None {
            self.floor = (self.dseq, sseq);
        } else {
            let first_dseq = self.waiting.get(&sseq).map_or(self.dseq, |w| w.first_dseq);
            let deadline = now + self.wait(dc);
            self.waiting.insert(
                sseq,
                Waiting {
                    first_dseq,
                    dc,
                    deadline,
                    queued: false,
                },
            );
        }
        Delivery {
            dseq: self.dseq,
            was_idle,
        }
    }

    /// The floor rule: nothing waiting: everything passed is acknowledged; the message right
    /// above the floor forgotten: just below the next waiting one above it.
    fn forget(&mut self, sseq: u64, passed: u64) -> Option<Forgot> {
        let w = self.waiting.remove(&sseq)?;
        let floor_before = self.floor.1;
        if self.waiting.is_empty() {
            self.floor = (self.dseq, passed);
        } else if w.first_dseq == self.floor.0 + 1 && !self.waiting.keys().any(|s| *s < sseq) {
            self.floor = (w.first_dseq, sseq);
            let above = self
                .waiting
                .iter()
                .filter(|(s, _)| **s > sseq)
                .min_by_key(|(s, _)| **s);
            if let Some((s, n)) = above {
                self.floor = (n.first_dseq - 1, s - 1);
            }
        }
        Some(Forgot { sseq, floor_before })
    }

    fn ack(&mut self, sseq: u64, dseq: u64, passed: u64) -> Acked {
        match self.rules.policy {
            AckPolicy::None => Acked::Nothing,
            AckPolicy::Explicit => {
                let Some(f) = self.forget(sseq, passed) else {
                    return Acked::Nothing;
                };
                self.done.insert(sseq);
                Acked::Forgot(f)
            }
            AckPolicy::All => {
                if dseq <= self.floor.0 || sseq <= self.floor.1 {
                    return Acked::Nothing;
                }
                if sseq > passed || dseq > self.dseq {
                    return Acked::Nothing;
                }
                let upto: Vec<u64> = self
                    .waiting
                    .keys()
                    .copied()
                    .filter(|s| *s <= sseq)
                    .collect();
                for s in upto {
                    self.waiting.remove(&s);
                }
                self.done
                    .extend(self.delivered.keys().copied().filter(|s| *s <= sseq));
                self.queue.retain(|s| *s > sseq);
                self.floor = if self.waiting.is_empty() {
                    (self.dseq, passed)
                } else {
                    (dseq, sseq)
                };
                Acked::Upto(sseq)
            }
        }
    }

    fn due(&mut self, now: i64, passed: u64) -> Vec<Forgot> {
        let due: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| !w.queued && w.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        let mut forgot = Vec::new();
        for s in due {
            let dc = self.waiting[&s].dc;
            if self.exhausted(dc) {
                forgot.extend(self.forget(s, passed));
            } else {
                self.waiting.get_mut(&s).unwrap().queued = true;
                self.queue.push(s);
            }
        }
        forgot
    }

    fn next_redelivery(&mut self, passed: u64) -> Option<Redelivery> {
        while !self.queue.is_empty() {
            let s = self.queue.remove(0);
            let Some(w) = self.waiting.get(&s).copied() else {
                continue;
            };
            if self.exhausted(w.dc) {
                return self.forget(s, passed).map(Redelivery::Exhausted);
            }
            return Some(Redelivery::Send {
                sseq: s,
                dc: w.dc + 1,
            });
        }
        None
    }
}

/// Compares everything observable and checks the invariants.
fn check(real: &AckState, model: &Model) -> Result<(), TestCaseError> {
    let pending: BTreeMap<u64, Waiting> = real
        .pending()
        .iter()
        .map(|(s, p)| {
            (
                *s,
                Waiting {
                    first_dseq: p.dseq,
                    dc: p.dc,
                    deadline: p.ts + real.rules.ack_wait_for(p.dc),
                    queued: p.queued,
                },
            )
        })
        .collect();
    prop_assert_eq!(&pending, &model.waiting);
    prop_assert_eq!(real.floor(), model.floor);
    prop_assert_eq!(real.dseq(), model.dseq);
    prop_assert_eq!(real.num_ack_pending(), model.waiting.len());
    prop_assert_eq!(
        real.num_redelivered(),
        model.waiting.values().filter(|w| w.dc > 1).count()
    );
    prop_assert_eq!(real.num_queued(), model.queue.len());
    prop_assert_eq!(real.blocks_new(), model.blocks_new());
    let next = model
        .waiting
        .values()
        .filter(|w| !w.queued)
        .map(|w| w.deadline)
        .min();
    prop_assert_eq!(real.next_deadline(), next);
    // Invariants.
    let floor = real.floor();
    for s in model.waiting.keys() {
        prop_assert!(
            floor.1 < *s,
            "ack floor {:?} at or above pending {}",
            floor,
            s
        );
        prop_assert!(!model.done.contains(s), "acknowledged {} still pending", s);
    }
    if model.rules.policy == AckPolicy::Explicit {
        if let Some(w) = model.waiting.values().min_by_key(|w| w.first_dseq) {
            prop_assert_eq!(floor.0 + 1, w.first_dseq);
        }
    }
    if model.rules.max_ack_pending > 0 {
        prop_assert!(model.waiting.len() <= model.rules.max_ack_pending as usize);
    }
    if model.rules.max_deliver > 0 {
        for n in model.deliveries.values() {
            prop_assert!(
                *n <= model.rules.max_deliver as u64,
                "delivered {} times",
                n
            );
        }
    }
    Ok(())
}

/// The stream sequence `pick` names: one delivered, or one never delivered.
fn picked(model: &Model, pick: usize) -> u64 {
    let seqs: Vec<u64> = model.delivered.keys().copied().collect();
    match seqs.get(pick % (seqs.len() + 1)) {
        Some(s) => *s,
        None => seqs.last().map_or(1, |s| s + 1 + pick as u64 % 3),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn ack_state_matches_model(rules in rules(), evs in proptest::collection::vec(ev(), 1..80)) {
        let mut real = AckState::new(rules.clone());
        real.start_at(1);
        let mut model = Model {
            rules,
            dseq: 0,
            floor: (0, 0),
            waiting: BTreeMap::new(),
            queue: Vec::new(),
            done: BTreeSet::new(),
            delivered: BTreeMap::new(),
            deliveries: BTreeMap::new(),
        };
        let mut now = 1_000i64;
        // The last stream sequence passed: the last new message delivered.
        let mut passed = 0u64;
        for ev in &evs {
            match *ev {
                Ev::New { gap } => {
                    prop_assert_eq!(real.blocks_new(), model.blocks_new());
                    if !model.blocks_new() {
                        passed += gap;
                        let d = real.delivered(passed, 1, now);
                        prop_assert_eq!(d, model.delivered(passed, 1, now));
                    }
                }
                Ev::Redeliver { then } => {
                    let got = real.next_redelivery(passed);
                    prop_assert_eq!(got, model.next_redelivery(passed));
                    if let Some(Redelivery::Send { sseq, dc }) = got {
                        prop_assert!(!model.done.contains(&sseq), "redelivering acknowledged {}", sseq);
                        match then {
                            0 => {
                                let d = real.delivered(sseq, dc, now);
                                prop_assert_eq!(d, model.delivered(sseq, dc, now));
                            }
                            1 => {
                                real.unget_redelivery(sseq);
                                model.queue.insert(0, sseq);
                            }
                            _ => {
                                prop_assert_eq!(real.removed(sseq, passed), model.forget(sseq, passed));
                            }
                        }
                    }
                }
                Ev::Ack { pick, stale_dseq } => {
                    let sseq = picked(&model, pick);
                    let latest = model.delivered.get(&sseq).copied().unwrap_or(model.dseq + 1);
                    let dseq = if stale_dseq { latest.saturating_sub(1) } else { latest };
                    prop_assert_eq!(real.ack(sseq, dseq, passed), model.ack(sseq, dseq, passed));
                }
                Ev::Nak { pick, delay } => {
                    let sseq = picked(&model, pick);
                    let changed = real.nak(sseq, delay, now);
                    let mut expect = false;
                    if let Some(w) = model.waiting.get_mut(&sseq) {
                        if delay > 0 {
                            w.deadline = now + delay;
                            expect = true;
                        } else if !w.queued {
                            w.queued = true;
                            model.queue.push(sseq);
                        }
                    }
                    prop_assert_eq!(changed, expect);
                }
                Ev::Wpi { pick } => {
                    let sseq = picked(&model, pick);
                    real.in_progress(sseq, now);
                    if let Some(w) = model.waiting.get(&sseq).copied() {
                        let deadline = now + model.wait(w.dc);
                        model.waiting.insert(sseq, Waiting { deadline, ..w });
                    }
                }
                Ev::Term { pick, stale_dseq } => {
                    let sseq = picked(&model, pick);
                    let latest = model.delivered.get(&sseq).copied().unwrap_or(model.dseq + 1);
                    let dseq = if stale_dseq { latest.saturating_sub(1) } else { latest };
                    // nats-server 2.9: a term is an ack (cumulative under `all`).
                    let expect = if model.rules.policy == AckPolicy::All {
                        model.ack(sseq, dseq, passed)
                    } else {
                        match model.forget(sseq, passed) {
                            Some(f) => {
                                model.done.insert(sseq);
                                Acked::Forgot(f)
                            }
                            None => Acked::Nothing,
                        }
                    };
                    prop_assert_eq!(real.term(sseq, dseq, passed), expect);
                }
                Ev::Removed { pick } => {
                    let sseq = picked(&model, pick);
                    prop_assert_eq!(real.removed(sseq, passed), model.forget(sseq, passed));
                }
                Ev::Tick { ns } => {
                    now += ns;
                    prop_assert_eq!(real.due(now, passed), model.due(now, passed));
                }
            }
            check(&real, &model)?;
        }
    }
}

/// The persisted state comes back as it was, with nothing queued for redelivery.
#[test]
fn restore_keeps_what_was_persisted() {
    let rules = Rules {
        policy: AckPolicy::Explicit,
        ack_wait: 10,
        backoff: vec![],
        max_deliver: -1,
        max_ack_pending: 0,
    };
    let mut a = AckState::new(rules.clone());
    a.start_at(1);
    a.delivered(1, 1, 0);
    a.delivered(2, 1, 0);
    assert!(a.due(10, 2).is_empty());
    assert_eq!(a.num_queued(), 2);
    let b = AckState::restore(rules, a.dseq(), a.floor(), a.pending().clone());
    assert_eq!((b.dseq(), b.floor()), (2, (0, 0)));
    assert_eq!(b.num_queued(), 0);
    assert!(b.pending().values().all(|p| !p.queued && p.dc == 1));
    assert_eq!(b.next_deadline(), Some(10));
}

#[test]
fn acks_of_messages_not_delivered_are_ignored() {
    let rules = Rules {
        policy: AckPolicy::All,
        ack_wait: 10,
        backoff: vec![],
        max_deliver: -1,
        max_ack_pending: 0,
    };
    let mut a = AckState::new(rules);
    a.start_at(1);
    a.delivered(1, 1, 0);
    a.delivered(2, 1, 0);
    // A forged ack subject: the largest stream sequence (once an overflow), a consumer
    // sequence not reached.
    assert!(matches!(a.ack(u64::MAX, 2, 2), Acked::Nothing));
    assert!(matches!(a.ack(2, 9, 2), Acked::Nothing));
    assert_eq!(a.num_ack_pending(), 2);
    assert!(matches!(a.ack(1, 1, 2), Acked::Upto(1)));
    assert_eq!(a.num_ack_pending(), 1);
}
