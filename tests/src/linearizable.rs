//! A checker for histories of compare-and-set operations on one KV register (issue 22's KV
//! linearizability test, in the spirit of Jepsen's NATS analysis).
//!
//! Clients loop `get` → `update(key, value + 1, revision)`; every operation is recorded with
//! its invocation and completion time and its outcome ([`Outcome`]); a timeout is
//! [`Outcome::Unknown`] (the write may or may not have happened). After the run the bucket's
//! stored history of the key (every revision and its value) is read back. [`check`] then
//! finds:
//! - a **lost update**: two successful updates from the same expected revision;
//! - a **broken chain**: the stored values are not one chain (each revision's value the
//!   previous revision's plus one, so every write built on the latest one), or a successful
//!   update is not stored at its revision with its value right after the revision it expected;
//! - **real-time order** violated: a successful update that completed before another was
//!   invoked has the higher revision;
//! - a **phantom read**: a read returning a revision/value pair that was never stored;
//! - a **stale read**, as far as the server promises fresh reads ([`Reads`]): a read invoked at
//!   least [`Reads::StaleAfter`] after a successful update completed must return that update's
//!   revision or a later one. hubd answers `get` on the register's group leader after a read
//!   barrier, whichever member is asked (`hub/JETSTREAM-CLUSTER.md`, "Reads on the group's
//!   leader"), so its test asks `Reads::StaleAfter(Duration::ZERO)`: a read invoked after an
//!   update completed sees it. [`Reads::MayBeStale`] checks only phantom reads (for a server
//!   serving reads from a replica that may lag, as nats-server 2.9's direct gets).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A read returned this revision and value.
    Read {
        /// The revision read.
        revision: u64,
        /// The value read.
        value: u64,
    },
    /// An update from `expected` stored `value` at `revision`.
    Updated {
        /// The revision the update expected (the one its read returned).
        expected: u64,
        /// The revision it got.
        revision: u64,
        /// The value it wrote.
        value: u64,
    },
    /// An update refused: the register was no longer at the expected revision.
    CasFailed,
    /// No answer (timeout, disconnection): the operation may or may not have taken effect.
    Unknown,
}

/// One operation of a client: times are offsets from the run's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Which client did it.
    pub client: usize,
    /// When it was invoked.
    pub invoked: Duration,
    /// When its outcome was known.
    pub completed: Duration,
    /// What happened.
    pub outcome: Outcome,
}

/// How fresh reads must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// A read invoked at least this long after a successful update completed returns that
    /// update's revision or a later one.
    StaleAfter(Duration),
    /// Reads may be arbitrarily stale (only phantom reads are errors).
    MayBeStale,
}

/// A violation [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two successful updates expected the same revision.
    LostUpdate {
        /// The revision both expected.
        expected: u64,
        /// The revisions they got.
        revisions: (u64, u64),
    },
    /// The stored history is not one chain at `revision`.
    BrokenChain {
        /// Where.
        revision: u64,
        /// Why.
        why: String,
    },
    /// A successful update completed before another was invoked, yet got the higher revision.
    RealTimeOrder {
        /// The earlier update's revision.
        earlier: u64,
        /// The later update's revision.
        later: u64,
    },
    /// A read returned a revision/value never stored.
    PhantomRead {
        /// The revision read.
        revision: u64,
        /// The value read.
        value: u64,
    },
    /// A read returned an older revision than a write that completed well before it.
    StaleRead {
        /// The client that read.
        client: usize,
        /// The revision it read.
        read: u64,
        /// The revision already written.
        written: u64,
    },
}

/// Checks `ops` against `stored` (the key's revisions and values, in revision order, the
/// first being the initial put) under `reads`: every violation found.
pub fn check(ops: &[Op], stored: &[(u64, u64)], reads: Reads) -> Vec<Violation> {
    let mut found = Vec::new();
    let updates: Vec<(&Op, u64, u64, u64)> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Updated {
                expected,
                revision,
                value,
            } => Some((op, expected, revision, value)),
            _ => None,
        })
        .collect();
    // Lost updates.
    let mut by_expected: HashMap<u64, u64> = HashMap::new();
    for (_, expected, revision, _) in &updates {
        if let Some(other) = by_expected.insert(*expected, *revision) {
            found.push(Violation::LostUpdate {
                expected: *expected,
                revisions: (other.min(*revision), other.max(*revision)),
            });
        }
    }
    // The stored chain.
    for pair in stored.windows(2) {
        let ((r0, v0), (r1, v1)) = (pair[0], pair[1]);
        if r1 <= r0 || v1 != v0 + 1 {
            found.push(Violation::BrokenChain {
                revision: r1,
                why: format!("{v1} at {r1} follows {v0} at {r0}"),
            });
        }
    }
    let position: HashMap<u64, usize> = stored
        .iter()
        .enumerate()
        .map(|(i, (r, _))| (*r, i))
        .collect();
    for (_, expected, revision, value) in &updates {
        let why = match position.get(revision) {
            None => Some(format!("acknowledged revision {revision} is not stored")),
            Some(&i) if stored[i].1 != *value => Some(format!(
                "stored value {} at {revision}, acknowledged {value}",
                stored[i].1
            )),
            Some(&i) if i == 0 || stored[i - 1].0 != *expected => Some(format!(
                "the update expected {expected}, stored after {:?}",
                i.checked_sub(1).map(|p| stored[p].0)
            )),
            Some(_) => None,
        };
        if let Some(why) = why {
            found.push(Violation::BrokenChain {
                revision: *revision,
                why,
            });
        }
    }
    // Real-time order of the successful updates.
    for (a, _, ra, _) in &updates {
        for (b, _, rb, _) in &updates {
            if a.completed < b.invoked && ra > rb {
                found.push(Violation::RealTimeOrder {
                    earlier: *ra,
                    later: *rb,
                });
            }
        }
    }
    // Reads.
    let stored_set: HashSet<(u64, u64)> = stored.iter().copied().collect();
    for op in ops {
        let Outcome::Read { revision, value } = op.outcome else {
            continue;
        };
        if !stored_set.contains(&(revision, value)) {
            found.push(Violation::PhantomRead { revision, value });
        }
        if let Reads::StaleAfter(bound) = reads {
            let newest = updates
                .iter()
                .filter(|(w, ..)| w.completed + bound <= op.invoked)
                .map(|(_, _, r, _)| *r)
                .max();
            if let Some(written) = newest.filter(|w| *w > revision) {
                found.push(Violation::StaleRead {
                    client: op.client,
                    read: revision,
                    written,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn read(client: usize, at: (u64, u64), revision: u64, value: u64) -> Op {
        Op {
            client,
            invoked: ms(at.0),
            completed: ms(at.1),
            outcome: Outcome::Read { revision, value },
        }
    }

    fn update(client: usize, at: (u64, u64), expected: u64, revision: u64, value: u64) -> Op {
        Op {
            client,
            invoked: ms(at.0),
            completed: ms(at.1),
            outcome: Outcome::Updated {
                expected,
                revision,
                value,
            },
        }
    }

    /// Two clients racing: one wins each round, the other's CAS fails; a timed-out update
    /// that did happen (revision 4) is part of the chain.
    fn good() -> (Vec<Op>, Vec<(u64, u64)>) {
        let ops = vec![
            read(0, (0, 5), 1, 0),
            read(1, (1, 6), 1, 0),
            update(0, (6, 10), 1, 2, 1),
            Op {
                client: 1,
                invoked: ms(7),
                completed: ms(11),
                outcome: Outcome::CasFailed,
            },
            read(1, (12, 14), 2, 1),
            update(1, (15, 20), 2, 3, 2),
            read(0, (21, 22), 3, 2),
            Op {
                client: 0,
                invoked: ms(23),
                completed: ms(3000),
                outcome: Outcome::Unknown,
            },
            read(1, (3001, 3002), 4, 3),
            update(1, (3003, 3010), 4, 5, 4),
        ];
        (ops, vec![(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)])
    }

    #[test]
    fn a_good_history_passes_with_fresh_reads() {
        let (ops, stored) = good();
        assert_eq!(check(&ops, &stored, Reads::StaleAfter(ms(0))), vec![]);
    }

    #[test]
    fn two_updates_from_one_revision_are_a_lost_update() {
        let (mut ops, _) = good();
        ops.push(update(2, (7, 12), 1, 6, 1));
        let stored = vec![(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 1)];
        let found = check(&ops, &stored, Reads::MayBeStale);
        assert!(found.contains(&Violation::LostUpdate {
            expected: 1,
            revisions: (2, 6)
        }));
        assert!(found
            .iter()
            .any(|v| matches!(v, Violation::BrokenChain { revision: 6, .. })));
    }

    #[test]
    fn an_acknowledged_update_missing_from_the_store_breaks_the_chain() {
        let (ops, _) = good();
        let stored = vec![(1, 0), (2, 1), (4, 3), (5, 4)];
        let found = check(&ops, &stored, Reads::MayBeStale);
        assert!(found
            .iter()
            .any(|v| matches!(v, Violation::BrokenChain { revision: 3, .. })));
    }

    #[test]
    fn revisions_against_real_time_are_found() {
        let ops = vec![update(0, (0, 5), 1, 3, 2), update(1, (6, 9), 1, 2, 1)];
        let found = check(&ops, &[(1, 0), (2, 1), (3, 2)], Reads::MayBeStale);
        assert!(found.contains(&Violation::RealTimeOrder {
            earlier: 3,
            later: 2
        }));
    }

    #[test]
    fn stale_reads_count_only_beyond_the_promised_bound() {
        let (mut ops, stored) = good();
        // Revision 3 completed at 20 ms; a read at 100 ms still returns 2.
        ops.push(read(2, (100, 101), 2, 1));
        assert_eq!(check(&ops, &stored, Reads::MayBeStale), vec![]);
        assert_eq!(check(&ops, &stored, Reads::StaleAfter(ms(250))), vec![]);
        assert_eq!(
            check(&ops, &stored, Reads::StaleAfter(ms(50))),
            vec![Violation::StaleRead {
                client: 2,
                read: 2,
                written: 3
            }]
        );
    }

    #[test]
    fn a_read_of_something_never_stored_is_a_phantom() {
        let (mut ops, stored) = good();
        ops.push(read(2, (30, 31), 3, 7));
        assert_eq!(
            check(&ops, &stored, Reads::MayBeStale),
            vec![Violation::PhantomRead {
                revision: 3,
                value: 7
            }]
        );
    }
}
