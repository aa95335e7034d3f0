//! The ledger against a model: a simulated hub stream with JetStream's rules (message ids and
//! their duplicate window, `Nats-Expected-Last-Msg-Id`), a FIFO link both ways, other writers,
//! refusals, silent drops, link cuts, leafd restarts, a hub that trims its stream, and a
//! forger on the hub who answers every reply subject it sees with made-up PubAcks. The driver
//! does what the forwarder does (resynchronise, plan, send, verify, persist); the properties:
//!
//! * safety, after every step: everything at or below the cursor that the gateway holds was
//!   stored on the hub (a forged answer never makes the gateway forget a message);
//! * liveness and exactness, once the faults stop: everything is confirmed, and every message
//!   is on the hub once (twice nowhere).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// Who wrote a message on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Id {
    Ours(u64),
    Foreign(u64),
}

#[derive(Debug, Clone, Copy)]
struct Copy {
    id: Id,
    linked_to: Option<u64>,
    content: u64,
}

/// A message on its way to the hub.
#[derive(Debug, Clone, Copy)]
struct Frame {
    seq: u64,
    nonce: Option<u64>,
    expect_last: Option<u64>,
    content: u64,
    too_big: bool,
}

/// The simulated hub.
#[derive(Debug, Default)]
struct Hub {
    /// Index = hub sequence - 1; `None` once removed.
    stream: Vec<Option<Copy>>,
    /// The newest stored message's id.
    last_id: Option<Id>,
    /// Message ids in the duplicate window: local sequence -> hub sequence.
    dedup: HashMap<u64, u64>,
    /// Every local sequence the hub ever stored, and how often.
    stored: HashMap<u64, u32>,
    /// Refuses everything for now (full).
    full: bool,
    /// No stream listens: messages vanish without an answer.
    deaf: bool,
    foreign: u64,
}

const MAX_MSG_SIZE: i64 = 1000;

fn content_of(seq: u64) -> u64 {
    content_hash(format!("gw.s.{}", seq % 3).as_bytes(), &seq.to_be_bytes())
}

impl Hub {
    fn last_seq(&self) -> u64 {
        self.stream.len() as u64
    }

    fn store(&mut self, copy: Copy) -> u64 {
        self.stream.push(Some(copy));
        self.last_id = Some(copy.id);
        let h = self.last_seq();
        if let Id::Ours(s) = copy.id {
            self.dedup.insert(s, h);
            *self.stored.entry(s).or_default() += 1;
        }
        h
    }

    /// JetStream's handling of a published message: the answer, if it gets one.
    fn publish(&mut self, f: Frame) -> Option<Reply> {
        if self.deaf {
            return None;
        }
        let reply = if f.too_big {
            Reply::Refused {
                err_code: 10054,
                other_writer: false,
            }
        } else if let Some(&h) = self.dedup.get(&f.seq) {
            Reply::Stored {
                hub_seq: h,
                duplicate: true,
                names_match: true,
            }
        } else if self.full {
            Reply::Refused {
                err_code: 10077,
                other_writer: false,
            }
        } else if f
            .expect_last
            .is_some_and(|q| self.last_id != Some(Id::Ours(q)))
        {
            Reply::Refused {
                err_code: 10070,
                other_writer: matches!(self.last_id, Some(Id::Foreign(_))),
            }
        } else {
            let h = self.store(Copy {
                id: Id::Ours(f.seq),
                linked_to: f.expect_last,
                content: f.content,
            });
            Reply::Stored {
                hub_seq: h,
                duplicate: false,
                names_match: true,
            }
        };
        f.nonce.map(|_| reply)
    }

    fn write_foreign(&mut self) {
        self.foreign += 1;
        self.store(Copy {
            id: Id::Foreign(self.foreign),
            linked_to: None,
            content: 0,
        });
    }

    fn read(&self, hub_seq: u64) -> Found {
        if hub_seq == 0 || hub_seq > self.last_seq() {
            return Found::Missing { removed: false };
        }
        match self.stream[hub_seq as usize - 1] {
            None => Found::Missing { removed: true },
            Some(Copy {
                id: Id::Ours(seq),
                linked_to,
                content,
            }) => Found::Copy {
                seq,
                linked_to,
                content,
            },
            Some(_) => Found::Other,
        }
    }

    /// The newest copy of ours (read-back with `last_by_subj`).
    fn newest_ours(&self) -> Option<(u64, Found)> {
        (1..=self.last_seq())
            .rev()
            .find(|&h| matches!(self.read(h), Found::Copy { .. }))
            .map(|h| (h, self.read(h)))
    }

    /// Copies of ours above `from` in hub order (the walk with `next_by_subj`).
    fn ours_from(&self, from: u64) -> Vec<(u64, Found)> {
        (from.max(1)..=self.last_seq())
            .filter(|&h| matches!(self.read(h), Found::Copy { .. }))
            .map(|h| (h, self.read(h)))
            .collect()
    }

    fn trim(&mut self, n: usize) {
        for slot in self.stream.iter_mut().filter(|c| c.is_some()).take(n) {
            *slot = None;
        }
    }
}

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    /// Send up to this many messages.
    Send(u8),
    /// The hub processes up to this many messages from the link.
    Deliver(u8),
    /// The gateway reads up to this many answers.
    Answer(u8),
    /// Another writer stores a message.
    Foreign,
    /// The hub is full / not full.
    Full(bool),
    /// The hub's stream stops / starts listening.
    Deaf(bool),
    /// The link drops (what is queued both ways is lost).
    Cut,
    /// leafd restarts (the cut, and the ledger starts from what is on disk).
    Restart,
    /// The hub forgets its duplicate window.
    ForgetDedup,
    /// Time passes (timeouts).
    Wait(u16),
    /// The hub trims its oldest messages.
    Trim(u8),
    /// The hub's API stops / starts answering the gateway.
    ApiDown(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1u8..40).prop_map(Step::Send),
        8 => (1u8..40).prop_map(Step::Deliver),
        8 => (1u8..40).prop_map(Step::Answer),
        1 => Just(Step::Foreign),
        1 => any::<bool>().prop_map(Step::Full),
        1 => any::<bool>().prop_map(Step::Deaf),
        1 => Just(Step::Cut),
        1 => Just(Step::Restart),
        1 => Just(Step::ForgetDedup),
        1 => (1u16..8000).prop_map(Step::Wait),
        1 => (1u8..20).prop_map(Step::Trim),
        1 => any::<bool>().prop_map(Step::ApiDown),
    ]
}

/// How the forger behaves.
#[derive(Debug, Clone, Copy)]
struct Forger {
    /// Answers every reply subject it sees.
    active: bool,
    /// Sometimes forges refusals and duplicates too.
    mischief: bool,
}

/// The gateway side: the buffer, the ledger and what the forwarder keeps.
struct Sim {
    settings: Settings,
    ledger: Ledger,
    /// What is on disk.
    disk: Durable,
    /// Local messages `1..=total`; `absent` ones were dropped by the buffer's limits.
    total: u64,
    absent: HashSet<u64>,
    too_big: HashSet<u64>,
    read_pos: u64,
    to_hub: VecDeque<Frame>,
    to_leaf: VecDeque<(u64, u64, Reply)>,
    hub: Hub,
    forger: Forger,
    in_round: bool,
    /// The hub's API does not answer (no proofs, no read-back).
    api_down: bool,
    /// Every round sends one by one (as with other writers in the hub stream).
    one_by_one: bool,
    /// A proof tail delivers the copies of one-by-one rounds (see `tail`).
    tail: bool,
    /// Its deliveries on their way: hub sequence and what is there.
    tail_queue: VecDeque<(u64, Found)>,
    now: Instant,
    nonce: u64,
    rng: u64,
}

impl Sim {
    fn new(ack_every: u32, total: u64, forger: Forger) -> Sim {
        let settings = Settings {
            ack_every,
            max_in_flight: 64,
            ack_timeout: Duration::from_secs(5),
            verify_interval: Duration::from_millis(50),
            hwm_step: 8,
        };
        let disk = Durable::default();
        let absent: HashSet<u64> = (1..=total).filter(|s| s % 17 == 5).collect();
        let too_big: HashSet<u64> = (1..=total).filter(|s| s % 53 == 7).collect();
        Sim {
            settings,
            ledger: Ledger::new(settings, disk),
            disk,
            total,
            absent,
            too_big,
            read_pos: 1,
            to_hub: VecDeque::new(),
            to_leaf: VecDeque::new(),
            hub: Hub::default(),
            forger,
            in_round: false,
            api_down: false,
            one_by_one: false,
            tail: false,
            tail_queue: VecDeque::new(),
            now: Instant::now(),
            nonce: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// A gateway whose buffer holds every message, none too big, and no forger.
    fn plain(ack_every: u32, total: u64) -> Sim {
        let mut sim = Sim::new(
            ack_every,
            total,
            Forger {
                active: false,
                mischief: false,
            },
        );
        sim.absent.clear();
        sim.too_big.clear();
        sim
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn persist(&mut self) {
        let d = self.ledger.durable();
        // The cursor and pm_hwm only grow on disk.
        assert!(d.confirmed >= self.disk.confirmed && d.pm_hwm >= self.disk.pm_hwm);
        self.disk = d;
        self.ledger.persisted(d);
    }

    /// The forwarder's resynchronisation.
    fn resync(&mut self) {
        self.ledger.end_round();
        let base = self.hub.last_seq();
        self.ledger.hub_stream_limits(MAX_MSG_SIZE);
        self.verify();
        if let Some((h, found)) = self.hub.newest_ours().filter(|_| !self.api_down) {
            self.ledger.on_read_back(h, found);
        }
        let d = self.ledger.durable();
        if d.pm_hwm > d.confirmed && !self.api_down {
            let from = if d.hub_seq > 0 { d.hub_seq + 1 } else { 1 };
            for (h, found) in self.hub.ours_from(from) {
                let d = self.ledger.durable();
                match found {
                    Found::Copy { seq, .. } if seq > d.pm_hwm => break,
                    Found::Copy { seq, .. } if seq > d.confirmed => {
                        self.ledger.on_read_back(h, found)
                    }
                    _ => {}
                }
            }
        }
        self.persist();
        if self.one_by_one {
            self.ledger.assume_other_writers();
        }
        assert!(self.ledger.begin_round(base), "a round can begin");
        if self.ledger.hwm_pending() {
            self.persist();
        }
        self.read_pos = self.ledger.durable().confirmed + 1;
        self.in_round = true;
    }

    /// The next message to send, skipping what is absent or done.
    fn next_unsent(&mut self, from: u64) -> Option<u64> {
        let mut s = from;
        while s <= self.total {
            if self.absent.contains(&s) {
                let end = (s..=self.total)
                    .take_while(|x| self.absent.contains(x))
                    .last()
                    .unwrap_or(s);
                self.ledger.absent(s, end);
                s = end + 1;
                continue;
            }
            if !self.ledger.is_done(s) {
                return Some(s);
            }
            s += 1;
        }
        None
    }

    fn send(&mut self, n: u8) {
        if !self.in_round {
            self.resync();
        }
        for i in 0..n {
            let Some(seq) = self.next_unsent(self.read_pos) else {
                return;
            };
            self.read_pos = seq;
            let successor = i + 1 < n
                && self.next_unsent(seq + 1).is_some()
                && self.ledger.room_after(10, 10, seq + 1);
            let plan = loop {
                match self.ledger.plan(seq, 10, successor) {
                    Plan::RaiseHwm(_) => self.persist(),
                    Plan::Wait => return,
                    Plan::Send(p) => break p,
                }
            };
            let tag = plan.reply.then(|| {
                self.nonce += 1;
                (self.nonce, content_of(seq))
            });
            self.to_hub.push_back(Frame {
                seq,
                nonce: tag.map(|t| t.0),
                expect_last: plan.expect_last,
                content: content_of(seq),
                too_big: self.too_big.contains(&seq),
            });
            let hub_bytes = if self.too_big.contains(&seq) {
                5000
            } else {
                10
            };
            self.ledger.sent(seq, plan, 10, hub_bytes, tag, self.now);
            self.read_pos = seq + 1;
        }
    }

    fn deliver(&mut self, n: u8) {
        for _ in 0..n {
            let Some(f) = self.to_hub.pop_front() else {
                return;
            };
            let before = self.hub.last_seq();
            let real = self.hub.publish(f);
            if self.tail && self.ledger.one_by_one_round() && self.hub.last_seq() > before {
                let h = self.hub.last_seq();
                if h > self.ledger.round_base() {
                    self.tail_queue.push_back((h, self.hub.read(h)));
                }
            }
            if let Some(nonce) = f.nonce {
                // The forger sees the message (it was routed on the hub) and answers first.
                if self.forger.active {
                    let guess = self.hub.last_seq() + 1 + self.random() % 3;
                    let forged = if self.forger.mischief && self.random().is_multiple_of(4) {
                        match self.random() % 3 {
                            0 => Reply::Refused {
                                err_code: 10054,
                                other_writer: false,
                            },
                            1 => Reply::Refused {
                                err_code: 10070,
                                other_writer: true,
                            },
                            _ => Reply::Stored {
                                hub_seq: 1 + self.random() % guess,
                                duplicate: true,
                                names_match: true,
                            },
                        }
                    } else {
                        Reply::Stored {
                            hub_seq: guess,
                            duplicate: false,
                            names_match: true,
                        }
                    };
                    self.to_leaf.push_back((f.seq, nonce, forged));
                    // And for messages it has not seen, with nonces it can only guess.
                    let (ahead, nonce_guess) = (f.seq + 1 + self.random() % 50, self.random());
                    self.to_leaf.push_back((
                        ahead,
                        nonce_guess,
                        Reply::Stored {
                            hub_seq: guess + 1,
                            duplicate: false,
                            names_match: true,
                        },
                    ));
                }
                if let Some(r) = real {
                    self.to_leaf.push_back((f.seq, nonce, r));
                }
            }
        }
    }

    fn answer(&mut self, n: u8) {
        for _ in 0..n {
            if let Some((h, found)) = self.tail_queue.pop_front() {
                self.ledger.on_read_back(h, found);
            }
            let Some((seq, nonce, reply)) = self.to_leaf.pop_front() else {
                continue;
            };
            self.ledger.on_reply(seq, nonce, reply, self.now);
        }
        self.pump_side();
    }

    /// What the pump does between sends: proofs, and the resynchronisation of a broken
    /// round once it drained.
    fn pump_side(&mut self) {
        self.verify();
        if self.ledger.needs_persist() {
            self.persist();
        }
        if self.ledger.ready_to_resync() {
            self.in_round = false;
        }
    }

    /// Proofs the ledger asks for, read from the hub (or not, while its API is down).
    fn verify(&mut self) {
        let tail = self.tail && self.ledger.one_by_one_round();
        for v in self.ledger.verifications(self.now, tail) {
            if self.api_down {
                self.ledger.verify_failed(v);
            } else {
                let found = self.hub.read(v.hub_seq);
                self.ledger.on_verified(v, found);
            }
        }
    }

    fn cut(&mut self) {
        self.to_hub.clear();
        self.to_leaf.clear();
        self.tail_queue.clear();
        self.ledger.link_lost();
        self.in_round = false;
    }

    fn run(&mut self, s: &Step) {
        match *s {
            Step::Send(n) => self.send(n),
            Step::Deliver(n) => self.deliver(n),
            Step::Answer(n) => self.answer(n),
            Step::Foreign => self.hub.write_foreign(),
            Step::Full(b) => self.hub.full = b,
            Step::Deaf(b) => self.hub.deaf = b,
            Step::Cut => self.cut(),
            Step::Restart => {
                self.cut();
                self.ledger = Ledger::new(self.settings, self.disk);
            }
            Step::ForgetDedup => self.hub.dedup.clear(),
            Step::Wait(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.ledger.tick(self.now);
                self.pump_side();
            }
            Step::Trim(n) => self.hub.trim(usize::from(n)),
            Step::ApiDown(b) => self.api_down = b,
        }
    }

    /// Everything at or below the cursor that is in the buffer was stored on the hub (or
    /// refused for good).
    fn check_safety(&self) {
        let c = self.ledger.durable().confirmed;
        for s in 1..=c.min(self.total) {
            if self.absent.contains(&s) || self.too_big.contains(&s) {
                continue;
            }
            assert!(
                self.hub.stored.contains_key(&s),
                "message {s} is below the cursor {c} but the hub never stored it"
            );
        }
    }

    /// The faults stop: everything gets confirmed.
    fn heal(&mut self) {
        self.hub.full = false;
        self.hub.deaf = false;
        self.api_down = false;
        self.forger.active = false;
        for _ in 0..2000 {
            if self.ledger.durable().confirmed >= self.total && self.to_hub.is_empty() {
                return;
            }
            self.send(40);
            self.deliver(40);
            self.answer(80);
            self.now += Duration::from_millis(60);
            self.ledger.tick(self.now);
            self.pump_side();
            self.check_safety();
            self.ledger.check_invariants();
        }
        panic!(
            "not everything was confirmed: cursor {} of {}",
            self.ledger.durable().confirmed,
            self.total
        );
    }

    fn check_exactly_once(&self) {
        for s in 1..=self.total {
            let n = self.hub.stored.get(&s).copied().unwrap_or(0);
            if self.absent.contains(&s) || self.too_big.contains(&s) {
                assert_eq!(n, 0, "message {s} should not be on the hub");
            } else {
                assert_eq!(n, 1, "message {s} is on the hub {n} times");
            }
        }
    }
}

fn scenario(ack_every: u32, forger: Forger, steps: &[Step], dedup_forgotten: bool) {
    let mut sim = Sim::new(ack_every, 400, forger);
    // ack_every 0 stands for a hub stream with other writers: one by one, proven by a tail
    // in every other step sequence.
    sim.one_by_one = ack_every == 0;
    sim.tail = sim.one_by_one && steps.len().is_multiple_of(2);
    for s in steps {
        if forger.active && matches!(s, Step::Trim(_)) {
            // A hub that removes messages before they can be read leaves claims that cannot
            // be proven (accepted, counted): the forger's one opening, tested apart.
            continue;
        }
        if !dedup_forgotten && matches!(s, Step::ForgetDedup) {
            continue;
        }
        sim.run(s);
        sim.check_safety();
        sim.ledger.check_invariants();
    }
    sim.heal();
    sim.check_safety();
    if !dedup_forgotten {
        sim.check_exactly_once();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn chained_uplink_is_safe_and_exact(steps in proptest::collection::vec(step(), 1..300)) {
        scenario(8, Forger { active: false, mischief: false }, &steps, false);
    }

    #[test]
    fn chained_uplink_with_a_puback_on_every_message_is_safe_and_exact(
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        scenario(1, Forger { active: false, mischief: false }, &steps, false);
    }

    #[test]
    fn one_by_one_uplink_is_safe_and_exact(steps in proptest::collection::vec(step(), 1..300)) {
        scenario(0, Forger { active: false, mischief: false }, &steps, false);
    }

    #[test]
    fn forged_answers_never_make_the_gateway_forget(
        steps in proptest::collection::vec(step(), 1..300),
        ack_every in prop_oneof![Just(0u32), Just(1u32), Just(8u32)],
        mischief in any::<bool>(),
    ) {
        scenario(ack_every, Forger { active: true, mischief }, &steps, false);
    }

    #[test]
    fn nothing_is_lost_when_the_duplicate_window_is_forgotten(
        steps in proptest::collection::vec(step(), 1..300),
        ack_every in prop_oneof![Just(0u32), Just(1u32), Just(8u32)],
    ) {
        scenario(ack_every, Forger { active: false, mischief: false }, &steps, true);
    }
}

#[test]
fn a_forged_ack_ahead_of_the_window_is_ignored() {
    let mut sim = Sim::plain(8, 100);
    sim.send(10);
    // Claims for messages never sent, and with a wrong nonce, change nothing.
    sim.ledger.on_reply(
        50,
        1,
        Reply::Stored {
            hub_seq: 50,
            duplicate: false,
            names_match: true,
        },
        sim.now,
    );
    assert_eq!(sim.ledger.counters().doubtful_answers, 1);
    assert!(!sim.ledger.is_done(50));
    // The hub is deaf: the last message of the burst gets a forged answer only.
    sim.hub.deaf = true;
    sim.deliver(10);
    sim.ledger.on_reply(
        10,
        sim.nonce,
        Reply::Stored {
            hub_seq: 10,
            duplicate: false,
            names_match: true,
        },
        sim.now,
    );
    assert_eq!(
        sim.ledger.unproven(),
        10,
        "all ten are claimed by the chain's answer"
    );
    sim.pump_side();
    assert_eq!(sim.ledger.durable().confirmed, 0, "nothing is proven");
    assert!(matches!(sim.ledger.broken(), Some(Break::Contradicted(_))));
}

#[test]
fn a_forged_ack_naming_another_stream_is_ignored() {
    let mut sim = Sim::plain(1, 10);
    sim.send(1);
    sim.ledger.on_reply(
        1,
        sim.nonce,
        Reply::Stored {
            hub_seq: 1,
            duplicate: false,
            names_match: false,
        },
        sim.now,
    );
    assert_eq!(sim.ledger.counters().doubtful_answers, 1);
    assert_eq!(
        sim.ledger.in_flight(),
        1,
        "still waiting for the hub's answer"
    );
}

#[test]
fn a_chain_is_proven_by_its_newest_copy() {
    let mut sim = Sim::plain(8, 30);
    sim.send(30);
    sim.deliver(30);
    sim.answer(30);
    assert_eq!(sim.ledger.durable().confirmed, 30);
    assert_eq!(sim.hub.last_seq(), 30);
}

#[test]
fn a_round_begins_only_at_the_persisted_cursor() {
    let mut sim = Sim::plain(8, 30);
    sim.send(10);
    sim.deliver(10);
    sim.ledger.on_reply(
        10,
        sim.nonce,
        Reply::Stored {
            hub_seq: 10,
            duplicate: false,
            names_match: true,
        },
        sim.now,
    );
    for v in sim.ledger.verifications(sim.now, false) {
        let found = sim.hub.read(v.hub_seq);
        sim.ledger.on_verified(v, found);
    }
    assert_eq!(sim.ledger.durable().confirmed, 10);
    sim.ledger.link_lost();
    // The cursor moved but is not on disk: a round starting there could be linked to by
    // copies a later process cannot account for.
    assert!(!sim.ledger.begin_round(10));
    sim.persist();
    assert!(sim.ledger.begin_round(10));
}

#[test]
fn an_oversized_message_is_skipped_only_if_the_hub_stream_says_so() {
    let mut sim = Sim::plain(1, 10);
    sim.send(1);
    // A 10054 for a message the stream's max_msg_size admits is not believed.
    sim.ledger.on_reply(
        1,
        sim.nonce,
        Reply::Refused {
            err_code: 10054,
            other_writer: false,
        },
        sim.now,
    );
    assert_eq!(sim.ledger.counters().rejected, 0);
    assert!(!sim.ledger.is_done(1));
}

/// Messages sent one by one may leave a hole (one refused, the next stored). After a restart
/// (the other writers gone) and a resynchronisation that could not read the hub, a chain
/// resent over that stretch would get linked across the hole, its answers lost with the link.
/// The next resynchronisation reads that chain's newest copy back: it must not prove the
/// hole. It does not, because `pm_hwm` was persisted before those messages were sent one by
/// one: they are proven one by one again.
#[test]
fn a_chain_never_proves_messages_sent_one_by_one() {
    let mut sim = Sim::plain(8, 20);
    sim.one_by_one = true;
    sim.send(3);
    sim.deliver(1);
    sim.hub.full = true;
    sim.deliver(1);
    sim.hub.full = false;
    sim.deliver(1);
    assert_eq!(
        sim.hub.stored.keys().copied().collect::<HashSet<_>>(),
        HashSet::from([1, 3])
    );
    sim.cut();
    sim.one_by_one = false;
    sim.ledger = Ledger::new(sim.settings, sim.disk);
    sim.api_down = true;
    // Were 1..=3 sent chained now, 4 would be stored linked to 3, across the hole at 2.
    sim.send(4);
    sim.deliver(10);
    sim.cut();
    sim.api_down = false;
    sim.send(1);
    sim.check_safety();
    sim.heal();
    sim.check_exactly_once();
}
