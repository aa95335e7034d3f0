//! The uplink's ledger: what is known of every local sequence above the cursor, how each
//! message is sent, and when the gateway may forget a message. Pure bookkeeping, no I/O: the
//! forwarder ([`super::forward`]) feeds it what it reads, sends and hears, and carries out
//! what it decides; `tests/model.rs` runs it against a simulated hub, link and forger.
//!
//! # Trust
//!
//! A PubAck is a message like any other: anyone on the hub who can publish to the uplink's
//! reply subjects (which every subscriber of the forwarded subjects sees) can send one. So an
//! answer is only a *claim*. It moves the send window, never the cursor. The cursor (what the
//! gateway forgets) moves only over sequences that are
//!
//! * *proven*: the hub's JetStream API, asked through a request whose reply subject is random
//!   and never appears on forwarded traffic, showed a copy of the message in the hub stream
//!   (`STREAM.MSG.GET` at the claimed position, or the newest of the uplink's subjects), with
//!   this uplink's `Nats-Msg-Id` and the subject and payload it sent; or whose copy is linked
//!   (`Nats-Expected-Last-Msg-Id`) to a proven one (chains, below);
//! * or *skipped*: removed by the buffer's own limits before they were sent, refused by the
//!   hub for a reason the hub stream's configuration confirms (larger than its
//!   `max_msg_size`), or denied by the remote's `deny_exports` — each counted.
//!
//! Claims are checked on arrival too (an answer only for a message in flight, carrying the
//! send's random nonce, naming the hub stream and domain, with a hub sequence the hub can
//! have assigned); one that fails is counted and ignored. A copy that contradicts a claim
//! (another message at the position, or nothing and not removed) ends the round: everything
//! not proven is sent again, and the hub's duplicate detection answers for what it has.
//!
//! # Chains
//!
//! A message of sequence `s` is sent *one by one* (its own reply subject, no expectation) when
//! `s <= pm_hwm`, and *chained* above it: the first chained message of a round carries no
//! expectation, each later one `Nats-Expected-Last-Msg-Id` naming the previous one sent. The
//! hub stores a chained message only while its predecessor's id is the newest stored one. So a
//! proven copy of `k` that is linked to `q` proves a copy of `q` stored; `q`'s copy is chained
//! too (every copy of a sequence above `pm_hwm` is, whoever sent it and when: `pm_hwm` is
//! persisted before any message at or below it is sent one by one, and only grows), linked
//! or the first of some round. Following the links down ends at a round's first message, and a
//! round only starts at `max(cursor, pm_hwm) + 1` with that cursor persisted, so at or below
//! the cursor now. Hence everything from `max(cursor, pm_hwm) + 1` to `k` that was in the
//! buffer is on the hub. The full argument is in `leaf/DESIGN.md` ("Uplinks").

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::window::Window;

/// Most bytes in flight to the hub.
pub const MAX_IN_FLIGHT_BYTES: u64 = 4 << 20;
/// Most claims waiting for proof (one per answered message; chains need one per chain).
pub const MAX_CLAIMS: usize = 8192;
/// Most verification requests in flight at once.
pub const MAX_VERIFYING: usize = 256;
/// How far `pm_hwm` is raised past the message that needs it, by default (one store write
/// per step).
pub const HWM_STEP: u64 = 8192;

/// Settings of a ledger (from the uplink's configuration).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// One PubAck per this many chained messages (1: a PubAck on every message, still
    /// chained).
    pub ack_every: u32,
    /// Cap of the send window.
    pub max_in_flight: usize,
    /// Time the hub gets to answer.
    pub ack_timeout: Duration,
    /// Shortest interval between two proofs of a chain.
    pub verify_interval: Duration,
    /// How far `pm_hwm` is raised past the message that needs it ([`HWM_STEP`]).
    pub hwm_step: u64,
}

/// What the gateway persists of the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every local sequence up to this one is proven on the hub or skipped.
    pub confirmed: u64,
    /// The hub sequence of the newest proven message at or below the cursor (0: unknown).
    pub hub_seq: u64,
    /// Sequences up to this one may have copies on the hub that were sent one by one.
    pub pm_hwm: u64,
}

/// How one message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendPlan {
    /// It carries a reply subject (with a fresh nonce) and gets a PubAck.
    pub reply: bool,
    /// It is chained: `Nats-Expected-Last-Msg-Id` names this local sequence.
    pub expect_last: Option<u64>,
}

/// What the ledger says about sending the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Send it so.
    Send(SendPlan),
    /// First persist [`Ledger::durable`] (`pm_hwm` is raised to this value), then ask again.
    RaiseHwm(u64),
    /// Not now: the window or a cap is full (wait for answers), or no round is open.
    Wait,
}

/// What an answer from the hub says, as the forwarder read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Stored (or a duplicate of a stored message) at hub sequence `hub_seq`.
    Stored {
        /// The hub stream's sequence.
        hub_seq: u64,
        /// The hub recognised the message id.
        duplicate: bool,
        /// The answer names the hub stream (and the hub's domain, where one is configured).
        names_match: bool,
    },
    /// Refused with a JetStream error.
    Refused {
        /// nats-server's error code.
        err_code: u16,
        /// A chain refusal naming a newest message that is not this uplink's.
        other_writer: bool,
    },
    /// Not stored and no reason given (a status message such as 503, or an unreadable
    /// answer).
    NotStored,
}

/// A proof the forwarder should ask for: read the hub stream at `hub_seq`, where the hub is
/// said to hold local sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    /// The local sequence.
    pub seq: u64,
    /// The claimed hub position.
    pub hub_seq: u64,
}

/// What the hub stream holds at a position, as read through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A copy of one of this uplink's messages.
    Copy {
        /// Its local sequence (from its `Nats-Msg-Id`).
        seq: u64,
        /// The local sequence its `Nats-Expected-Last-Msg-Id` names, if it is chained.
        linked_to: Option<u64>,
        /// A hash of its subject and payload ([`content_hash`]).
        content: u64,
    },
    /// Another message (another writer's, or no message id).
    Other,
    /// No message there: `removed` when the hub removed it (below the stream's first
    /// sequence, or deleted from a stream that removes acknowledged messages), otherwise
    /// there never was one (above the stream's last sequence).
    Missing {
        /// The position held a message once.
        removed: bool,
    },
}

/// A hash of a message's hub subject and payload: what a copy read back is compared with.
pub fn content_hash(subject: &[u8], payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the value is only compared within one process.
    let mut h = std::hash::DefaultHasher::new();
    subject.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// Why a round ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The hub refused a message, or stored nothing, for a reason that may go away.
    NotStored(String),
    /// No answer within `ack_timeout`.
    Timeout(usize),
    /// A duplicate inside a chain: the chain cannot go on from there.
    Duplicate,
    /// What the hub stream holds contradicts a claim.
    Contradicted(String),
}

/// Counters the status shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Answers that failed a check (not in flight, wrong nonce, stream, domain or sequence)
    /// and claims the hub stream contradicted.
    pub doubtful_answers: u64,
    /// Claims accepted without a copy to read (the hub removed the message first).
    pub unproven_accepted: u64,
    /// Messages skipped because the hub refuses them for good.
    pub rejected: u64,
    /// Messages the buffer dropped before they were sent.
    pub dropped: u64,
    /// Messages the remote's `deny_exports` keep off the link.
    pub denied: u64,
    /// Answers that said stored (window credit).
    pub claimed: u64,
    /// Messages the cursor passed as proven on the hub.
    pub proven: u64,
}

/// Why a sequence above the cursor is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// A copy is on the hub; the hub sequence of the range's last message (0: unknown).
    Proven(u64),
    /// Not on the hub, and never will be (dropped, rejected, denied).
    Skipped,
}

/// A message sent and not answered.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    bytes: u64,
    /// The size the hub's `max_msg_size` applies to (headers and payload).
    hub_bytes: u64,
    /// The nonce and content of a message with a reply subject.
    reply: Option<(u64, u64)>,
    /// Sent chained.
    chained: bool,
}

/// A claim: an answer said the hub stored `seq` at `hub_seq`.
#[derive(Debug, Clone, Copy)]
struct Claim {
    /// When the answer came.
    at: Instant,
    hub_seq: u64,
    content: u64,
    /// The lowest sequence the claim covers (its chain members), `seq` for one by one.
    lo: u64,
    /// A verification is in flight.
    verifying: bool,
    /// The answer was a duplicate (it proves nothing of other messages).
    duplicate: bool,
    /// Sent chained (a linked copy may prove the chain below it).
    chained: bool,
}

impl Claim {
    /// Proven by reading the newest chained claim, not on its own.
    fn is_chain(&self) -> bool {
        self.chained && !self.duplicate
    }
}

/// The round being sent: from a resynchronisation (after a connect or a failure) to the next
/// failure.
#[derive(Debug, Clone)]
struct Round {
    /// The hub stream's last sequence when the round began: no new message can get a lower
    /// or equal one.
    base_hub_seq: u64,
    /// Every message goes one by one (the hub stream has other writers).
    one_by_one: bool,
    /// The last chained message sent, and how many were sent since the last reply subject.
    chain_tail: Option<(u64, u32)>,
    /// Why it broke; no new sends then.
    broken: Option<Break>,
    /// The highest sequence sent in the round.
    max_sent: u64,
}

/// The ledger of one uplink.
#[derive(Debug)]
pub struct Ledger {
    settings: Settings,
    durable: Durable,
    /// What was last persisted (a round starts only at the persisted cursor).
    persisted: Durable,
    /// Done ranges above the cursor: start -> (end, why).
    done: BTreeMap<u64, (u64, Done)>,
    in_flight: BTreeMap<u64, Sent>,
    in_flight_bytes: u64,
    claims: BTreeMap<u64, Claim>,
    /// Claims proven on their own, waiting for a verification request.
    to_verify: VecDeque<u64>,
    /// Such claims being verified now.
    verifying: usize,
    /// The chain claim being verified now.
    chain_verifying: Option<u64>,
    last_chain_verify: Option<Instant>,
    window: Window,
    round: Option<Round>,
    /// The hub stream's `max_msg_size` (None: no limit, or unknown).
    hub_max_msg_size: Option<u64>,
    /// The hub stream has writers besides this uplink: one by one until the next connect.
    other_writers: bool,
    counters: Counters,
}

impl Ledger {
    /// A ledger starting from what was persisted.
    pub fn new(settings: Settings, durable: Durable) -> Ledger {
        Ledger {
            window: Window::new(settings.max_in_flight, settings.ack_timeout),
            settings,
            durable,
            persisted: durable,
            done: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            in_flight_bytes: 0,
            claims: BTreeMap::new(),
            to_verify: VecDeque::new(),
            verifying: 0,
            chain_verifying: None,
            last_chain_verify: None,
            round: None,
            hub_max_msg_size: None,
            other_writers: false,
            counters: Counters::default(),
        }
    }

    /// New settings (a reload).
    pub fn reconfigure(&mut self, settings: Settings) {
        self.window
            .reconfigure(settings.max_in_flight, settings.ack_timeout);
        self.settings = settings;
    }

    /// What to persist now.
    pub fn durable(&self) -> Durable {
        self.durable
    }

    /// Whether something not yet persisted should be written.
    pub fn needs_persist(&self) -> bool {
        self.durable != self.persisted
    }

    /// `d` (an earlier [`Ledger::durable`]) is on disk now.
    pub fn persisted(&mut self, d: Durable) {
        self.persisted = d;
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Messages that may be in flight now.
    pub fn window_limit(&self) -> usize {
        self.window.limit()
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages answered as stored and not proven yet.
    pub fn unproven(&self) -> u64 {
        self.claims
            .iter()
            .map(|(&seq, c)| seq_count(c.lo, seq))
            .sum()
    }

    /// Whether a round is open and not broken (new messages may be sent).
    pub fn sending(&self) -> bool {
        self.round.as_ref().is_some_and(|r| r.broken.is_none())
    }

    /// Whether the round sends one by one (the hub stream has other writers).
    pub fn one_by_one_round(&self) -> bool {
        self.round.as_ref().is_some_and(|r| r.one_by_one)
    }

    /// The hub stream's last sequence when the round began.
    pub fn round_base(&self) -> u64 {
        self.round.as_ref().map_or(0, |r| r.base_hub_seq)
    }

    /// Why the round broke, if it did.
    pub fn broken(&self) -> Option<&Break> {
        self.round.as_ref().and_then(|r| r.broken.as_ref())
    }

    /// Whether `seq` needs no sending (done above the cursor, or at or below it).
    pub fn is_done(&self, seq: u64) -> bool {
        seq <= self.durable.confirmed || self.done_range(seq).is_some()
    }

    fn done_range(&self, seq: u64) -> Option<(u64, u64, Done)> {
        self.done
            .range(..=seq)
            .next_back()
            .filter(|(_, (end, _))| *end >= seq)
            .map(|(&s, &(e, d))| (s, e, d))
    }

    // ----- the hub stream ----------------------------------------------------------------

    /// What the hub stream's configuration says: its `max_msg_size` (negative: none).
    pub fn hub_stream_limits(&mut self, max_msg_size: i64) {
        self.hub_max_msg_size = u64::try_from(max_msg_size).ok().filter(|&m| m > 0);
    }

    // ----- rounds -------------------------------------------------------------------------

    /// The link is up and the hub synchronised (claims proven, read-back done, the cursor
    /// persisted): a round of sends begins at the cursor. `base_hub_seq` is the hub stream's
    /// last sequence as the API reported it. Refused (false) while the cursor on disk is
    /// behind, or messages are in flight.
    pub fn begin_round(&mut self, base_hub_seq: u64) -> bool {
        if self.persisted.confirmed != self.durable.confirmed || !self.in_flight.is_empty() {
            return false;
        }
        // Proven islands above the cursor (a duplicate proven alone, copies found by a walk):
        // a chain must not step over a message the hub holds, so they are sent one by one.
        let island_top = self
            .done
            .iter()
            .filter(|(_, (_, d))| matches!(d, Done::Proven(_)))
            .map(|(_, (end, _))| *end)
            .max();
        if let Some(top) = island_top.filter(|&t| t > self.durable.pm_hwm) {
            self.durable.pm_hwm = top;
        }
        // `ack_every` 1 still chains (with a reply subject on every message): proofs stay one
        // read per chain. Only other writers in the hub stream make chains impossible.
        let one_by_one = self.other_writers;
        self.round = Some(Round {
            base_hub_seq,
            one_by_one,
            chain_tail: None,
            broken: None,
            max_sent: 0,
        });
        true
    }

    /// Whether a new `pm_hwm` must be persisted before the round can begin.
    pub fn hwm_pending(&self) -> bool {
        self.durable.pm_hwm != self.persisted.pm_hwm
    }

    /// The link went down: what was in flight has an unknown fate.
    pub fn link_lost(&mut self) {
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        // The requests in flight are lost with the link: everything is verified again.
        self.to_verify.clear();
        for (&seq, c) in self.claims.iter_mut() {
            c.verifying = false;
            if !c.is_chain() {
                self.to_verify.push_back(seq);
            }
        }
        self.verifying = 0;
        self.chain_verifying = None;
        self.round = None;
        self.other_writers = false;
        self.window.restart();
    }

    fn break_round(&mut self, why: Break) {
        let Some(r) = &mut self.round else {
            return;
        };
        if r.broken.is_some() {
            return;
        }
        if why == Break::Duplicate {
            // The hub holds copies from an earlier round that were not proven (no read-back,
            // or one it could not see): a chain resent over them breaks on the first one
            // again. What this round sent goes one by one next, each copy answered on its own.
            self.durable.pm_hwm = self.durable.pm_hwm.max(r.max_sent);
        }
        r.broken = Some(why);
    }

    /// Whether the broken round has drained (nothing in flight): time to resynchronise.
    pub fn ready_to_resync(&self) -> bool {
        self.round.as_ref().is_some_and(|r| r.broken.is_some()) && self.in_flight.is_empty()
    }

    /// Ends the broken round (the forwarder resynchronises next).
    pub fn end_round(&mut self) {
        self.round = None;
    }

    // ----- sending ------------------------------------------------------------------------

    /// Whether the window and the caps leave room for one more message `seq` of `bytes`.
    pub fn has_room(&self, bytes: u64, seq: u64) -> bool {
        self.room(self.in_flight.len(), self.in_flight_bytes, bytes, seq)
    }

    /// Whether, once a message of `bytes` is sent, there is room for the next one, `seq` of
    /// `next_bytes`.
    pub fn room_after(&self, bytes: u64, next_bytes: u64, seq: u64) -> bool {
        self.room(
            self.in_flight.len() + 1,
            self.in_flight_bytes + bytes,
            next_bytes,
            seq,
        )
    }

    fn room(&self, flying: usize, flying_bytes: u64, bytes: u64, seq: u64) -> bool {
        flying < self.window.limit()
            && (flying == 0 || flying_bytes + bytes <= MAX_IN_FLIGHT_BYTES)
            && self.claims.len() < MAX_CLAIMS
            && seq.saturating_sub(self.durable.confirmed) <= self.max_unproven()
    }

    /// How far ahead of the cursor messages may be sent: proofs must keep up.
    fn max_unproven(&self) -> u64 {
        4 * self.settings.max_in_flight.max(1024) as u64
    }

    /// How to send `seq` (read from the buffer, not done); `successor` says whether another
    /// message is in hand and will follow at once (only then may a chained message go
    /// without a reply subject).
    pub fn plan(&mut self, seq: u64, bytes: u64, successor: bool) -> Plan {
        if !self.sending() || !self.has_room(bytes, seq) {
            return Plan::Wait;
        }
        let Some(round) = &self.round else {
            return Plan::Wait;
        };
        if round.one_by_one || seq <= self.durable.pm_hwm {
            if seq > self.persisted.pm_hwm {
                if seq > self.durable.pm_hwm {
                    self.durable.pm_hwm = seq.saturating_add(self.settings.hwm_step);
                }
                return Plan::RaiseHwm(self.durable.pm_hwm);
            }
            return Plan::Send(SendPlan {
                reply: true,
                expect_last: None,
            });
        }
        Plan::Send(match round.chain_tail {
            None => SendPlan {
                reply: true,
                expect_last: None,
            },
            Some((last, since_reply)) => SendPlan {
                reply: !successor || since_reply + 1 >= self.settings.ack_every,
                expect_last: Some(last),
            },
        })
    }

    /// `seq` was written to the link as `plan` said; `reply` is its nonce and content hash
    /// when it has a reply subject.
    pub fn sent(
        &mut self,
        seq: u64,
        plan: SendPlan,
        bytes: u64,
        hub_bytes: u64,
        reply: Option<(u64, u64)>,
        now: Instant,
    ) {
        let chained = self
            .round
            .as_ref()
            .is_some_and(|r| !r.one_by_one && seq > self.durable.pm_hwm);
        if let Some(r) = &mut self.round {
            r.max_sent = r.max_sent.max(seq);
            if chained {
                let since = match (plan.reply, r.chain_tail) {
                    (true, _) => 0,
                    (false, Some((_, n))) => n + 1,
                    (false, None) => 1,
                };
                r.chain_tail = Some((seq, since));
            }
        }
        self.in_flight.insert(
            seq,
            Sent {
                at: now,
                bytes,
                hub_bytes,
                reply,
                chained,
            },
        );
        self.in_flight_bytes += bytes;
    }

    /// Sequences `from..=to` are not in the buffer (its limits removed them before they were
    /// sent): counted as dropped.
    pub fn absent(&mut self, from: u64, to: u64) {
        let from = from.max(self.durable.confirmed + 1);
        if from > to {
            return;
        }
        self.counters.dropped += to - from + 1;
        self.mark(from, to, Done::Skipped);
    }

    /// `seq` is kept off the link by the remote's `deny_exports`.
    pub fn denied(&mut self, seq: u64) {
        self.counters.denied += 1;
        self.mark(seq, seq, Done::Skipped);
    }

    // ----- answers ------------------------------------------------------------------------

    /// An answer on the reply subject of `seq` with nonce `nonce`.
    pub fn on_reply(&mut self, seq: u64, nonce: u64, reply: Reply, now: Instant) {
        let Some(sent) = self.in_flight.get(&seq).copied() else {
            // A message already proven (the proof tail's copy can come before the hub's
            // PubAck) needs no answer; otherwise late (after a timeout or a link drop) or
            // forged.
            if !self.is_done(seq) {
                self.counters.doubtful_answers += 1;
            }
            return;
        };
        let Some((sent_nonce, content)) = sent.reply else {
            self.counters.doubtful_answers += 1;
            return;
        };
        if sent_nonce != nonce {
            self.counters.doubtful_answers += 1;
            return;
        }
        match reply {
            Reply::Stored {
                hub_seq,
                duplicate,
                names_match,
            } => {
                if !names_match || hub_seq == 0 || !self.plausible(seq, hub_seq, duplicate) {
                    self.counters.doubtful_answers += 1;
                    return;
                }
                let members: Vec<u64> = if sent.chained && !duplicate {
                    self.in_flight
                        .range(..=seq)
                        .filter(|(_, s)| s.chained)
                        .map(|(&k, _)| k)
                        .collect()
                } else {
                    vec![seq]
                };
                let lo = members.first().copied().unwrap_or(seq);
                for m in &members {
                    if let Some(s) = self.in_flight.remove(m) {
                        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(s.bytes);
                    }
                }
                self.window
                    .on_answer(now, now.saturating_duration_since(sent.at), members.len());
                self.counters.claimed += members.len() as u64;
                self.add_claim(
                    seq,
                    Claim {
                        at: now,
                        hub_seq,
                        content,
                        lo,
                        verifying: false,
                        duplicate,
                        chained: sent.chained,
                    },
                );
                if duplicate && sent.chained {
                    // A chained message the hub already had was not stored as chained: its
                    // successors are refused. Start over from what is proven.
                    self.drop_chain_members(seq);
                    self.break_round(Break::Duplicate);
                }
            }
            Reply::Refused {
                err_code,
                other_writer,
            } => {
                // 10054: larger than the hub stream's max_msg_size; believed only when the
                // stream's configuration (read through the API) says so.
                let permanent = err_code == 10054
                    && self
                        .hub_max_msg_size
                        .is_some_and(|max| sent.hub_bytes > max);
                if other_writer && sent.chained {
                    self.other_writers = true;
                }
                self.remove_in_flight(seq);
                if permanent {
                    self.counters.rejected += 1;
                    self.mark(seq, seq, Done::Skipped);
                    if sent.chained {
                        // Its successors expected it: they are refused too.
                        self.drop_chain_members(seq);
                        self.break_round(Break::NotStored(format!(
                            "message {seq} is larger than the hub stream's max_msg_size"
                        )));
                    }
                } else {
                    if sent.chained {
                        self.drop_chain_members(seq);
                    }
                    self.break_round(Break::NotStored(format!(
                        "message {seq} refused (error {err_code})"
                    )));
                }
            }
            Reply::NotStored => {
                self.remove_in_flight(seq);
                if sent.chained {
                    self.drop_chain_members(seq);
                }
                self.break_round(Break::NotStored(format!("message {seq} not stored")));
            }
        }
    }

    /// Whether a "stored" answer's hub sequence is one the hub can have assigned: above the
    /// round's base for a new message, and in the order of the claims around it.
    fn plausible(&self, seq: u64, hub_seq: u64, duplicate: bool) -> bool {
        if duplicate {
            return true;
        }
        let base = self.round.as_ref().map_or(0, |r| r.base_hub_seq);
        if hub_seq <= base {
            return false;
        }
        let below = self
            .claims
            .range(..seq)
            .rev()
            .find(|(_, c)| !c.duplicate)
            .map(|(_, c)| c.hub_seq);
        let above = self
            .claims
            .range(seq + 1..)
            .find(|(_, c)| !c.duplicate)
            .map(|(_, c)| c.hub_seq);
        below.is_none_or(|b| b < hub_seq) && above.is_none_or(|a| a > hub_seq)
    }

    fn remove_in_flight(&mut self, seq: u64) {
        if let Some(s) = self.in_flight.remove(&seq) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(s.bytes);
        }
    }

    /// A chain broke at `seq`: its members up to `seq` have an unknown fate (they are sent
    /// again after the resynchronisation finds what the hub holds).
    fn drop_chain_members(&mut self, seq: u64) {
        let members: Vec<u64> = self
            .in_flight
            .range(..=seq)
            .filter(|(_, s)| s.chained)
            .map(|(&k, _)| k)
            .collect();
        for m in members {
            self.remove_in_flight(m);
        }
    }

    /// Housekeeping at `now`: a message unanswered for `ack_timeout` breaks the round (and
    /// everything in flight has an unknown fate).
    pub fn tick(&mut self, now: Instant) {
        let Some((_, oldest)) = self.in_flight.first_key_value() else {
            return;
        };
        if now.saturating_duration_since(oldest.at) > self.settings.ack_timeout {
            let n = self.in_flight.len();
            self.in_flight.clear();
            self.in_flight_bytes = 0;
            self.window.on_timeout();
            self.break_round(Break::Timeout(n));
        }
    }

    // ----- proofs -------------------------------------------------------------------------

    /// The claims to verify now: the newest chained claim (at most one at a time, at most
    /// every `verify_interval` unless claims pile up) and every other claim (up to
    /// [`MAX_VERIFYING`] at once). With `tail` (the hub stream's copies are being delivered
    /// as they are stored, see `tail`), a claim of a message sent one by one waits for its
    /// copy there, and is read on its own only once it is older than `ack_timeout`.
    pub fn verifications(&mut self, now: Instant, tail: bool) -> Vec<Verify> {
        let mut out = Vec::new();
        let chain_due = self
            .last_chain_verify
            .is_none_or(|t| now.saturating_duration_since(t) >= self.settings.verify_interval)
            || self.claims.len() >= MAX_CLAIMS / 2
            || !self.sending();
        if self.chain_verifying.is_none() && chain_due {
            if let Some((&seq, c)) = self
                .claims
                .iter_mut()
                .rev()
                .find(|(_, c)| c.is_chain() && !c.verifying)
            {
                c.verifying = true;
                self.chain_verifying = Some(seq);
                self.last_chain_verify = Some(now);
                out.push(Verify {
                    seq,
                    hub_seq: c.hub_seq,
                });
            }
        }
        while self.verifying < MAX_VERIFYING {
            let Some(&seq) = self.to_verify.front() else {
                break;
            };
            let young = |c: &Claim| {
                tail && !c.duplicate
                    && now.saturating_duration_since(c.at) < self.settings.ack_timeout
            };
            if self.claims.get(&seq).is_some_and(young) {
                break;
            }
            self.to_verify.pop_front();
            let Some(c) = self.claims.get_mut(&seq) else {
                continue;
            };
            if c.verifying || c.is_chain() {
                continue;
            }
            c.verifying = true;
            self.verifying += 1;
            out.push(Verify {
                seq,
                hub_seq: c.hub_seq,
            });
        }
        out
    }

    /// Whether any claim waits for a proof.
    pub fn has_claims(&self) -> bool {
        !self.claims.is_empty()
    }

    fn add_claim(&mut self, seq: u64, claim: Claim) {
        if !claim.is_chain() {
            self.to_verify.push_back(seq);
        }
        if let Some(old) = self.claims.insert(seq, claim) {
            self.end_verification(seq, &old);
        }
    }

    /// Claim `seq` is no longer being verified (its request was answered, failed or is moot).
    fn end_verification(&mut self, seq: u64, c: &Claim) {
        if !c.verifying {
            return;
        }
        if self.chain_verifying == Some(seq) {
            self.chain_verifying = None;
        } else {
            self.verifying = self.verifying.saturating_sub(1);
        }
    }

    fn remove_claim(&mut self, seq: u64) -> Option<Claim> {
        let c = self.claims.remove(&seq)?;
        self.end_verification(seq, &c);
        Some(c)
    }

    /// A verification could not be done (no answer from the API): it is asked again later.
    pub fn verify_failed(&mut self, v: Verify) {
        let Some(c) = self.claims.get(&v.seq).copied() else {
            return;
        };
        self.end_verification(v.seq, &c);
        if let Some(c) = self.claims.get_mut(&v.seq) {
            if c.verifying && !c.is_chain() {
                self.to_verify.push_back(v.seq);
            }
            c.verifying = false;
        }
    }

    /// What the hub stream holds where claim `v` said.
    pub fn on_verified(&mut self, v: Verify, found: Found) {
        let Some(claim) = self.claims.get(&v.seq).copied() else {
            return;
        };
        if claim.hub_seq != v.hub_seq {
            return;
        }
        self.end_verification(v.seq, &claim);
        if let Some(c) = self.claims.get_mut(&v.seq) {
            c.verifying = false;
        }
        match found {
            Found::Copy {
                seq,
                linked_to,
                content,
            } if seq == v.seq && content == claim.content => {
                self.prove(seq, v.hub_seq, linked_to);
            }
            Found::Missing { removed: true } => {
                // Stored once and removed by the hub (limits, acknowledgements) before it
                // could be read: no copy can prove it; the claim passed every check.
                self.counters.unproven_accepted += seq_count(claim.lo, v.seq);
                self.remove_claim(v.seq);
                self.mark(
                    claim.lo.max(self.durable.confirmed + 1),
                    v.seq,
                    Done::Proven(0),
                );
            }
            other => {
                self.counters.doubtful_answers += 1;
                let why = match other {
                    Found::Copy { seq, .. } if seq == v.seq => format!(
                        "the hub stream holds a different message under the id of message {seq}"
                    ),
                    Found::Missing { .. } => format!(
                        "an answer said message {} was stored at hub sequence {}, where the hub has nothing",
                        v.seq, v.hub_seq
                    ),
                    _ => format!(
                        "an answer said message {} was stored at hub sequence {}, where the hub holds another message",
                        v.seq, v.hub_seq
                    ),
                };
                // Every claim is doubtful now: what is on the hub is found again by the
                // resynchronisation (and the hub's duplicate detection).
                let idle: Vec<u64> = self
                    .claims
                    .iter()
                    .filter(|(_, c)| !c.verifying)
                    .map(|(&k, _)| k)
                    .collect();
                for k in idle {
                    self.remove_claim(k);
                }
                self.break_round(Break::Contradicted(why));
            }
        }
    }

    /// The newest copy of this uplink's messages on the hub (read-back), or one found by a
    /// walk over the uplink's hub subjects: proven, with the chain below it.
    pub fn on_read_back(&mut self, hub_seq: u64, found: Found) {
        if let Found::Copy { seq, linked_to, .. } = found {
            self.prove(seq, hub_seq, linked_to);
        }
    }

    /// A copy of `seq` at `hub_seq` is on the hub; linked to `linked_to`, it proves its chain
    /// down to `max(cursor, pm_hwm) + 1`.
    fn prove(&mut self, seq: u64, hub_seq: u64, linked_to: Option<u64>) {
        if seq <= self.durable.confirmed {
            return;
        }
        let lo = match linked_to {
            Some(q) if q < seq => (self.durable.confirmed.max(self.durable.pm_hwm) + 1).min(seq),
            _ => seq,
        };
        self.mark(lo, seq, Done::Proven(hub_seq));
        // The claims and messages in flight it covers are settled.
        let covered: Vec<u64> = self.claims.range(lo..=seq).map(|(&k, _)| k).collect();
        for k in covered {
            self.remove_claim(k);
        }
        let flying: Vec<u64> = self.in_flight.range(lo..=seq).map(|(&k, _)| k).collect();
        for k in flying {
            self.remove_in_flight(k);
        }
    }

    /// Records `from..=to` as done (replacing what was recorded there) and moves the cursor
    /// over what is done from its start.
    fn mark(&mut self, from: u64, to: u64, why: Done) {
        let from = from.max(self.durable.confirmed + 1);
        if from > to {
            return;
        }
        let overlapping: Vec<(u64, u64, Done)> = self
            .done
            .range(..=to)
            .filter(|(_, (e, _))| *e >= from)
            .map(|(&s, &(e, d))| (s, e, d))
            .collect();
        for (s, e, d) in overlapping {
            self.done.remove(&s);
            if s < from {
                let left = match d {
                    // The hub sequence recorded is the range end's.
                    Done::Proven(_) => Done::Proven(0),
                    Done::Skipped => Done::Skipped,
                };
                self.done.insert(s, (from - 1, left));
            }
            if e > to {
                self.done.insert(to + 1, (e, d));
            }
        }
        self.done.insert(from, (to, why));
        self.advance();
    }

    /// Moves the cursor over the done ranges that start right after it.
    fn advance(&mut self) {
        while let Some((&s, &(e, d))) = self.done.first_key_value() {
            if s > self.durable.confirmed + 1 {
                break;
            }
            self.done.pop_first();
            if e > self.durable.confirmed {
                if let Done::Proven(_) = d {
                    self.counters.proven += e - s.max(self.durable.confirmed + 1) + 1;
                }
                self.durable.confirmed = e;
                if let Done::Proven(h) = d {
                    if h > 0 {
                        self.durable.hub_seq = h;
                    }
                }
            }
        }
        // Claims and in-flight messages at or below the cursor are settled.
        let c = self.durable.confirmed;
        while let Some((&k, _)) = self.claims.first_key_value() {
            if k > c {
                break;
            }
            self.remove_claim(k);
        }
        while let Some((&k, _)) = self.in_flight.first_key_value() {
            if k > c {
                break;
            }
            self.remove_in_flight(k);
        }
    }
}

#[cfg(test)]
impl Ledger {
    /// As if a chain refusal had named another writer's message.
    pub(crate) fn assume_other_writers(&mut self) {
        self.other_writers = true;
    }

    /// The bookkeeping agrees with itself.
    pub(crate) fn check_invariants(&self) {
        let c = self.durable.confirmed;
        let singles = self
            .claims
            .values()
            .filter(|x| x.verifying && !x.is_chain())
            .count();
        assert_eq!(self.verifying, singles, "single verifications counted");
        let chains: Vec<u64> = self
            .claims
            .iter()
            .filter(|(_, x)| x.verifying && x.is_chain())
            .map(|(&k, _)| k)
            .collect();
        assert_eq!(self.chain_verifying.into_iter().collect::<Vec<_>>(), chains);
        let bytes: u64 = self.in_flight.values().map(|x| x.bytes).sum();
        assert_eq!(self.in_flight_bytes, bytes, "bytes in flight");
        assert!(
            self.claims.keys().all(|&k| k > c),
            "claims above the cursor"
        );
        assert!(
            self.in_flight.keys().all(|&k| k > c),
            "in flight above the cursor"
        );
        let mut last = c;
        for (&start, &(end, _)) in &self.done {
            assert!(
                start > last && end >= start,
                "done ranges disjoint, above the cursor"
            );
            last = end;
        }
        assert!(
            self.done.first_key_value().is_none_or(|(&s, _)| s > c + 1),
            "the cursor moved over every range that starts right after it"
        );
        assert!(self.persisted.confirmed <= c && self.persisted.pm_hwm <= self.durable.pm_hwm);
    }
}

fn seq_count(lo: u64, hi: u64) -> u64 {
    hi.saturating_sub(lo) + 1
}

#[cfg(test)]
mod tests;
