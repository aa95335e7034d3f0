//! When a member may initialize the meta group (see "Bootstrap and membership" in
//! `hub/JETSTREAM-CLUSTER.md`). Pure logic.
//!
//! Every member initializes the group itself, with the **same** membership: all the expected
//! members. openraft's initial membership entry is the same on every node that initializes
//! with the same set (log id 0 of term 0), so it makes no difference which members do it, and
//! none can form a group the others do not share. The set is the same everywhere because a
//! member initializes only when it sees exactly the expected number of members (the
//! configured routes + 1: itself and every other JetStream hubd member over a route) and each
//! of them answers a probe with the same set and no Raft state of its own. A member that sees
//! fewer (half of a cluster started apart) waits; the group then needs a majority of the whole
//! expected set to elect a leader, which no half has. A member that already has Raft state
//! (a restart) never initializes again; one without state joining a cluster whose group exists
//! (its peers report state) waits for the leader to add it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The expected number of JetStream members: this one and the `configured_peers` other
/// members the routes list, less the `without_js` members seen over a route whose INFO shows no
/// JetStream (hubd or nats-server members without it: they take no part in the group, as
/// nats-server's meta group shrinks to its JetStream peers).
pub fn expected(configured_peers: usize, without_js: usize) -> usize {
    (configured_peers + 1).saturating_sub(without_js).max(1)
}

/// A member's answer to a bootstrap probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// It has Raft state for the group (a vote or log): the group exists.
    pub has_state: bool,
    /// The members it sees (itself included).
    pub members: BTreeSet<u64>,
}

/// What a member without state should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not yet: why.
    Wait(String),
    /// Probe the other members of `members` (itself included), then initialize with it if
    /// [`confirmed`].
    Probe(BTreeSet<u64>),
}

/// The next step of member `own`, which sees the JetStream hubd members `seen` (others) over
/// its routes and expects `expected` members in all.
pub fn next_step(own: u64, expected: usize, seen: &BTreeSet<u64>) -> Step {
    let mut members = seen.clone();
    members.insert(own);
    match members.len().cmp(&expected) {
        std::cmp::Ordering::Less => Step::Wait(format!(
            "waiting for the meta group's members: {} of {expected} seen",
            members.len()
        )),
        std::cmp::Ordering::Greater => Step::Wait(format!(
            "{} JetStream members seen but the configuration lists {expected} (cluster.routes \
             must name every member for the meta group to form)",
            members.len()
        )),
        std::cmp::Ordering::Equal => Step::Probe(members),
    }
}

/// Whether the probe `answers` of every other member confirm `members`: none has state and
/// each sees the same set.
pub fn confirmed(members: &BTreeSet<u64>, answers: &[ProbeAnswer]) -> bool {
    answers.len() + 1 == members.len()
        && answers
            .iter()
            .all(|a| !a.has_state && a.members == *members)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quorum of `n` voters.
    fn quorum(n: usize) -> usize {
        n / 2 + 1
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_member_waits_until_it_sees_every_expected_member() {
        assert!(matches!(next_step(1, 3, &set(&[2])), Step::Wait(_)));
        assert_eq!(next_step(1, 3, &set(&[2, 3])), Step::Probe(set(&[1, 2, 3])));
        // More members than configured: no guess at the set.
        match next_step(1, 3, &set(&[2, 3, 4])) {
            Step::Wait(why) => assert!(why.contains("cluster.routes"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_halves_of_a_cluster_never_both_start() {
        // Four expected members started as two pairs without routes between them: neither
        // pair sees four, so neither initializes.
        for (own, other) in [(1, 2), (2, 1), (3, 4), (4, 3)] {
            assert!(matches!(next_step(own, 4, &set(&[other])), Step::Wait(_)));
        }
        // And a pair is no quorum of four.
        assert!(2 < quorum(4));
    }

    #[test]
    fn probes_must_agree_and_show_no_group() {
        let members = set(&[1, 2, 3]);
        let free = ProbeAnswer {
            has_state: false,
            members: members.clone(),
        };
        assert!(confirmed(&members, &[free.clone(), free.clone()]));
        // One answer missing.
        assert!(!confirmed(&members, std::slice::from_ref(&free)));
        // A member already in a group: join it instead.
        let joined = ProbeAnswer {
            has_state: true,
            ..free.clone()
        };
        assert!(!confirmed(&members, &[free.clone(), joined]));
        // A member that sees another set.
        let other = ProbeAnswer {
            has_state: false,
            members: set(&[1, 2, 4]),
        };
        assert!(!confirmed(&members, &[free, other]));
    }

    #[test]
    fn members_without_jetstream_are_not_expected() {
        assert_eq!(expected(2, 0), 3);
        // One of the two others runs no JetStream: a group of two.
        assert_eq!(expected(2, 1), 2);
        assert_eq!(expected(2, 2), 1);
        // A lone member (a cluster block without routes) is a group of one.
        assert_eq!(expected(0, 0), 1);
        // Members seen without JetStream that the routes do not list cannot make it zero.
        assert_eq!(expected(1, 5), 1);
    }

    #[test]
    fn quorums() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }
}
