//! The meta group's state: which streams and consumers exist in the cluster and which peers
//! (Raft node ids) carry each, as nats-server's stream and consumer assignments. Pure data and
//! the logic that applies one command; the group's log replays these commands on every member
//! in the same order, so every member holds the same state.

use std::collections::BTreeMap;

use leaf_proto::subject::subjects_overlap;
use serde::{Deserialize, Serialize};

/// A Raft group of an asset: its name and its peers (node ids; the first is the preferred
/// leader at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftGroup {
    /// The group's name (`S-...`, `C-...`): a subject token.
    pub name: String,
    /// The peers' node ids.
    pub peers: Vec<u64>,
}

/// A stream placed on peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAssignment {
    /// The account.
    pub account: String,
    /// The stream's name.
    pub name: String,
    /// Its configuration, as JSON text (the normalized configuration of the create request).
    pub config: String,
    /// Its group.
    pub group: RaftGroup,
    /// When it was created (ns since the epoch; the proposer's clock, the same on every
    /// member).
    pub created_ns: i64,
}

impl StreamAssignment {
    /// Whether it is an R1 stream (`num_replicas` 0 or 1 in its configuration, which always
    /// has it: a configuration without it is not taken for one): one peer holding a plain stream,
    /// no group (see `jsc::r1`).
    pub fn is_r1(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.config)
            .ok()
            .and_then(|v| v["num_replicas"].as_i64())
            .is_some_and(|r| r <= 1)
    }

    /// The subjects its configuration captures.
    pub fn subjects(&self) -> Vec<String> {
        serde_json::from_str::<serde_json::Value>(&self.config)
            .ok()
            .and_then(|v| serde_json::from_value(v["subjects"].clone()).ok())
            .unwrap_or_default()
    }
}

/// Whether two configurations (JSON texts) are the same: compared as JSON values, so that the
/// order of an object's keys does not matter.
pub(super) fn same_config(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A consumer placed on peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerAssignment {
    /// The account.
    pub account: String,
    /// The stream.
    pub stream: String,
    /// The consumer's name.
    pub name: String,
    /// Its configuration, as JSON text.
    pub config: String,
    /// Its group.
    pub group: RaftGroup,
}

/// A change of a stream's peers in progress (a rescale, a peer removal, a move by placement):
/// the lock that serializes them (see `jsc::moves`). While it is there, another change of the
/// stream's peers is refused (`Refusal::MoveInProgress`, 10124).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMove {
    /// Tells this move from a later one (the proposer's clock, ns).
    pub id: i64,
    /// The stream's peers once done; empty for a shrink (the group's leader decides who
    /// stays: `rescale::kept`).
    pub to: Vec<u64>,
    /// The stream's R before (the consumers that follow it).
    pub old_r: usize,
    /// The stream's R after.
    pub new_r: usize,
    /// The stream's `placement` after (JSON text, `null` for none). While the change runs, a
    /// configuration update must say `new_r` replicas and this placement: one decided on a
    /// stale state (the old R) would undo the change.
    pub placement: String,
}

impl StreamMove {
    /// Whether configuration `config` (JSON text) may be the stream's while this change runs.
    fn admits(&self, config: &str) -> bool {
        let Ok(config) = serde_json::from_str::<serde_json::Value>(config) else {
            return false;
        };
        let placement = serde_json::from_str(&self.placement).unwrap_or(serde_json::Value::Null);
        config["num_replicas"].as_u64() == u64::try_from(self.new_r).ok()
            && config["placement"] == placement
    }
}

/// One change of the meta state: a log entry of the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates a stream (or confirms one with the same configuration).
    AssignStream(StreamAssignment),
    /// Removes a stream and its consumers.
    RemoveStream {
        /// The account.
        account: String,
        /// The stream.
        name: String,
    },
    /// Creates a consumer of an assigned stream.
    AssignConsumer(ConsumerAssignment),
    /// Removes a consumer.
    RemoveConsumer {
        /// The account.
        account: String,
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
    },
    /// Changes an assigned stream's peers (`STREAM.PEER.REMOVE`; its group's name unchanged).
    SetStreamPeers {
        /// The account.
        account: String,
        /// The stream.
        name: String,
        /// The peers' node ids.
        peers: Vec<u64>,
    },
    /// Changes an assigned stream's configuration (its peers and group unchanged).
    UpdateStream {
        /// The account.
        account: String,
        /// The stream.
        name: String,
        /// The new configuration, as JSON text.
        config: String,
    },
    /// Changes an assigned consumer's peers (its stream's peer replaced; its group's name
    /// unchanged).
    SetConsumerPeers {
        /// The account.
        account: String,
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        /// The peers' node ids.
        peers: Vec<u64>,
    },
    /// Changes an assigned consumer's configuration (its group unchanged): a config update,
    /// checked by the proposer with the single server's rules.
    UpdateConsumer {
        /// The account.
        account: String,
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        /// The new configuration, as JSON text.
        config: String,
    },
    /// Starts a change of a stream's peers: refused while another is in progress or when the
    /// stream's peers are no longer `from` (the proposer decided on a stale state); else the
    /// peers become `peers` (the new ones added, none removed yet) and `change` is recorded.
    BeginMove {
        /// The account.
        account: String,
        /// The stream.
        name: String,
        /// The peers the proposer saw.
        from: Vec<u64>,
        /// The peers from now on.
        peers: Vec<u64>,
        /// The change.
        change: StreamMove,
    },
    /// Ends the change `id` of a stream's peers (done, or given up): its lock is released.
    /// Another change's record is left alone.
    EndMove {
        /// The account.
        account: String,
        /// The stream.
        name: String,
        /// The change's id.
        id: i64,
    },
    /// Gives R1 stream `name` another member, `to`, in place of `from` (`SERVER.REMOVE` of
    /// `from`: the stream is created there, empty). One step, so no change of the stream's
    /// peers is recorded for it; refused while one is (10124), or when the stream is not an
    /// R1 stream of `from` any more (decided on a stale state: 10124 too).
    ReassignR1 {
        /// The account.
        account: String,
        /// The stream.
        name: String,
        /// The member removed.
        from: u64,
        /// The member taking it.
        to: u64,
    },
    /// Creates a stream as [`MetaCommand::AssignStream`] does, unless its account already has
    /// `max_streams` assigned streams (the account's limit on the proposing member:
    /// `Refusal::MaxStreams`, 10027). The same stream again is not a new one.
    AssignStreamWithin {
        /// The assignment.
        assignment: StreamAssignment,
        /// The account's most streams.
        max_streams: u64,
    },
}

/// What applying a command gave: `None` when it was applied, else why not (the proposer
/// turns it into a JetStream error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaReply {
    /// Why the command was refused.
    pub refused: Option<Refusal>,
}

/// Why a meta command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// A stream of that name exists with another configuration.
    #[error("stream name already in use with a different configuration")]
    StreamExists,
    /// Another stream of the account captures some of the same subjects.
    #[error("subjects overlap with an existing stream")]
    SubjectsOverlap,
    /// The stream is not assigned.
    #[error("stream not found")]
    StreamNotFound,
    /// A consumer of that name exists with another configuration.
    #[error("consumer name already in use with a different configuration")]
    ConsumerExists,
    /// The consumer is not assigned.
    #[error("consumer not found")]
    ConsumerNotFound,
    /// A new consumer of a workqueue stream breaks its rules against the assigned ones
    /// (10098-10101, as a single server answers).
    #[error("{}", .0.description)]
    WorkQueue(leaf_core::jetstream::config::ApiError),
    /// Another change of the stream's peers is in progress (or ended under the proposer).
    #[error("stream move already in progress")]
    MoveInProgress,
    /// The account has as many streams as its `max_streams` allows.
    #[error("maximum number of streams reached")]
    MaxStreams,
}

/// The assignments of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Streams by (account, name).
    pub streams: BTreeMap<(String, String), StreamAssignment>,
    /// Consumers by (account, stream, name).
    pub consumers: BTreeMap<(String, String, String), ConsumerAssignment>,
    /// The changes of streams' peers in progress, by (account, stream).
    pub moves: BTreeMap<(String, String), StreamMove>,
}

impl MetaState {
    /// Whether another stream of `sa`'s account captures some of its subjects.
    fn overlaps(&self, sa: &StreamAssignment) -> bool {
        let subjects = sa.subjects();
        self.streams
            .values()
            .filter(|o| o.account == sa.account && o.name != sa.name)
            .any(|o| {
                o.subjects().iter().any(|b| {
                    subjects
                        .iter()
                        .any(|a| subjects_overlap(a.as_bytes(), b.as_bytes()))
                })
            })
    }

    /// Checks new consumer `ca` of a workqueue stream against the stream's assigned consumers
    /// (decided here, alike on every member, so that two creations on two members cannot both
    /// pass); other retentions, and configurations that do not read, are not checked here.
    fn check_workqueue(&self, ca: &ConsumerAssignment) -> Result<(), Refusal> {
        use leaf_core::jetstream::config::consumer::ConsumerConfig;
        use leaf_core::jetstream::config::{Retention, StreamConfig};
        let Some(sa) = self.streams.get(&(ca.account.clone(), ca.stream.clone())) else {
            return Ok(());
        };
        let Ok(stream) = serde_json::from_str::<StreamConfig>(&sa.config) else {
            return Ok(());
        };
        if stream.retention != Retention::WorkQueue {
            return Ok(());
        }
        let Ok(config) = serde_json::from_str::<ConsumerConfig>(&ca.config) else {
            return Ok(());
        };
        let existing: Vec<ConsumerConfig> = self
            .consumers
            .values()
            .filter(|o| o.account == ca.account && o.stream == ca.stream && o.name != ca.name)
            .filter_map(|o| serde_json::from_str(&o.config).ok())
            .collect();
        leaf_core::jetstream::retention::check_new_consumer(&stream, &existing, &config)
            .map_err(Refusal::WorkQueue)
    }

    /// The streams each node id is a peer of.
    pub fn load(&self) -> BTreeMap<u64, usize> {
        let mut load = BTreeMap::new();
        for sa in self.streams.values() {
            for peer in &sa.group.peers {
                *load.entry(*peer).or_insert(0) += 1;
            }
        }
        load
    }

    /// The assignment of consumer `name` of stream `stream` of `account`, to change.
    fn consumer_mut(
        &mut self,
        account: &str,
        stream: &str,
        name: &str,
    ) -> Result<&mut ConsumerAssignment, Refusal> {
        let key = (account.to_owned(), stream.to_owned(), name.to_owned());
        self.consumers
            .get_mut(&key)
            .ok_or(Refusal::ConsumerNotFound)
    }

    /// Applies `cmd`; a refused command changes nothing.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), Refusal> {
        match cmd {
            MetaCommand::AssignStream(sa) => {
                let key = (sa.account.clone(), sa.name.clone());
                match self.streams.get(&key) {
                    Some(old) if !same_config(&old.config, &sa.config) => {
                        Err(Refusal::StreamExists)
                    }
                    Some(_) => Ok(()),
                    None if self.overlaps(sa) => Err(Refusal::SubjectsOverlap),
                    None => {
                        self.streams.insert(key, sa.clone());
                        Ok(())
                    }
                }
            }
            MetaCommand::RemoveStream { account, name } => {
                let key = (account.clone(), name.clone());
                if self.streams.remove(&key).is_none() {
                    return Err(Refusal::StreamNotFound);
                }
                self.moves.remove(&key);
                self.consumers
                    .retain(|(a, s, _), _| !(a == account && s == name));
                Ok(())
            }
            MetaCommand::AssignConsumer(ca) => {
                if !self
                    .streams
                    .contains_key(&(ca.account.clone(), ca.stream.clone()))
                {
                    return Err(Refusal::StreamNotFound);
                }
                let key = (ca.account.clone(), ca.stream.clone(), ca.name.clone());
                match self.consumers.get(&key) {
                    Some(old) if old.config != ca.config => Err(Refusal::ConsumerExists),
                    Some(_) => Ok(()),
                    None => {
                        self.check_workqueue(ca)?;
                        self.consumers.insert(key, ca.clone());
                        Ok(())
                    }
                }
            }
            MetaCommand::RemoveConsumer {
                account,
                stream,
                name,
            } => {
                let key = (account.clone(), stream.clone(), name.clone());
                match self.consumers.remove(&key) {
                    Some(_) => Ok(()),
                    None => Err(Refusal::ConsumerNotFound),
                }
            }
            MetaCommand::SetStreamPeers {
                account,
                name,
                peers,
            } => {
                let key = (account.clone(), name.clone());
                let Some(sa) = self.streams.get_mut(&key) else {
                    return Err(Refusal::StreamNotFound);
                };
                sa.group.peers.clone_from(peers);
                Ok(())
            }
            MetaCommand::UpdateStream {
                account,
                name,
                config,
            } => {
                let key = (account.clone(), name.clone());
                let Some(old) = self.streams.get(&key) else {
                    return Err(Refusal::StreamNotFound);
                };
                if self.moves.get(&key).is_some_and(|m| !m.admits(config)) {
                    return Err(Refusal::MoveInProgress);
                }
                let updated = StreamAssignment {
                    config: config.clone(),
                    ..old.clone()
                };
                if self.overlaps(&updated) {
                    return Err(Refusal::SubjectsOverlap);
                }
                self.streams.insert(key, updated);
                Ok(())
            }
            MetaCommand::SetConsumerPeers {
                account,
                stream,
                name,
                peers,
            } => {
                let ca = self.consumer_mut(account, stream, name)?;
                ca.group.peers.clone_from(peers);
                Ok(())
            }
            MetaCommand::UpdateConsumer {
                account,
                stream,
                name,
                config,
            } => {
                let ca = self.consumer_mut(account, stream, name)?;
                ca.config.clone_from(config);
                Ok(())
            }
            MetaCommand::BeginMove {
                account,
                name,
                from,
                peers,
                change,
            } => {
                let key = (account.clone(), name.clone());
                let Some(sa) = self.streams.get_mut(&key) else {
                    return Err(Refusal::StreamNotFound);
                };
                if self.moves.contains_key(&key) || sa.group.peers != *from {
                    return Err(Refusal::MoveInProgress);
                }
                sa.group.peers.clone_from(peers);
                self.moves.insert(key, change.clone());
                Ok(())
            }
            MetaCommand::EndMove { account, name, id } => {
                let key = (account.clone(), name.clone());
                if self.moves.get(&key).is_some_and(|m| m.id == *id) {
                    self.moves.remove(&key);
                }
                Ok(())
            }
            MetaCommand::ReassignR1 {
                account,
                name,
                from,
                to,
            } => self.reassign_r1(account, name, *from, *to),
            MetaCommand::AssignStreamWithin {
                assignment,
                max_streams,
            } => {
                let key = (assignment.account.clone(), assignment.name.clone());
                if !self.streams.contains_key(&key)
                    && self.streams_of(&assignment.account) >= *max_streams
                {
                    return Err(Refusal::MaxStreams);
                }
                self.apply(&MetaCommand::AssignStream(assignment.clone()))
            }
        }
    }

    /// How many streams account `account` has assigned.
    pub fn streams_of(&self, account: &str) -> u64 {
        let n = self.streams.keys().filter(|(a, _)| a == account).count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// [`MetaCommand::ReassignR1`].
    fn reassign_r1(
        &mut self,
        account: &str,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<(), Refusal> {
        let key = (account.to_owned(), name.to_owned());
        let Some(sa) = self.streams.get_mut(&key) else {
            return Err(Refusal::StreamNotFound);
        };
        if self.moves.contains_key(&key) || !sa.is_r1() || sa.group.peers != [from] {
            return Err(Refusal::MoveInProgress);
        }
        sa.group.peers = vec![to];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, config: &str) -> MetaCommand {
        MetaCommand::AssignStream(StreamAssignment {
            account: "$G".into(),
            name: name.into(),
            config: config.into(),
            group: RaftGroup {
                name: format!("S-{name}"),
                peers: vec![1, 2, 3],
            },
            created_ns: 1,
        })
    }

    fn consumer(stream: &str, name: &str) -> MetaCommand {
        MetaCommand::AssignConsumer(ConsumerAssignment {
            account: "$G".into(),
            stream: stream.into(),
            name: name.into(),
            config: "{}".into(),
            group: RaftGroup {
                name: format!("C-{name}"),
                peers: vec![1, 2, 3],
            },
        })
    }

    /// An update changes the configuration alone, is refused for a stream not assigned and
    /// for subjects another stream captures.
    #[test]
    fn streams_are_updated_and_moved_in_place() {
        let mut state = MetaState::default();
        let a = r#"{"subjects":["a.>"]}"#;
        assert_eq!(state.apply(&stream("A", a)), Ok(()));
        assert_eq!(state.apply(&stream("B", r#"{"subjects":["b.>"]}"#)), Ok(()));
        let update = |name: &str, config: &str| MetaCommand::UpdateStream {
            account: "$G".into(),
            name: name.into(),
            config: config.into(),
        };
        assert_eq!(
            state.apply(&update("A", r#"{"subjects":["b.x"]}"#)),
            Err(Refusal::SubjectsOverlap)
        );
        assert_eq!(state.apply(&update("C", a)), Err(Refusal::StreamNotFound));
        let wider = r#"{"subjects":["a.>","c.>"]}"#;
        assert_eq!(state.apply(&update("A", wider)), Ok(()));
        let sa = &state.streams[&("$G".to_owned(), "A".to_owned())];
        assert_eq!(sa.config, wider);
        assert_eq!((sa.group.name.as_str(), sa.created_ns), ("S-A", 1));
        // New peers (`STREAM.PEER.REMOVE`): the group's name stays.
        let peers = |name: &str, peers: Vec<u64>| MetaCommand::SetStreamPeers {
            account: "$G".into(),
            name: name.into(),
            peers,
        };
        assert_eq!(
            state.apply(&peers("C", vec![1])),
            Err(Refusal::StreamNotFound)
        );
        assert_eq!(state.apply(&peers("A", vec![1, 3, 4])), Ok(()));
        let sa = &state.streams[&("$G".to_owned(), "A".to_owned())];
        assert_eq!(
            (sa.group.name.as_str(), &sa.group.peers[..]),
            ("S-A", &[1, 3, 4][..])
        );
        assert_eq!(state.load().get(&4), Some(&1));
    }

    #[test]
    fn streams_are_assigned_once_and_removed_with_their_consumers() {
        let mut state = MetaState::default();
        assert_eq!(state.apply(&stream("ORDERS", "{\"a\":1}")), Ok(()));
        // The same configuration again: idempotent.
        assert_eq!(state.apply(&stream("ORDERS", "{\"a\":1}")), Ok(()));
        assert_eq!(
            state.apply(&stream("ORDERS", "{\"a\":2}")),
            Err(Refusal::StreamExists)
        );
        assert_eq!(state.apply(&consumer("ORDERS", "C1")), Ok(()));
        assert_eq!(
            state.apply(&consumer("NOPE", "C1")),
            Err(Refusal::StreamNotFound)
        );
        assert_eq!(state.consumers.len(), 1);
        let remove = MetaCommand::RemoveStream {
            account: "$G".into(),
            name: "ORDERS".into(),
        };
        assert_eq!(state.apply(&remove), Ok(()));
        assert!(state.streams.is_empty());
        assert!(state.consumers.is_empty());
        assert_eq!(state.apply(&remove), Err(Refusal::StreamNotFound));
    }

    #[test]
    fn configurations_compare_as_json_and_subjects_do_not_overlap() {
        let mut state = MetaState::default();
        let a = r#"{"name":"A","subjects":["orders.>"],"num_replicas":3}"#;
        assert_eq!(state.apply(&stream("A", a)), Ok(()));
        // The same configuration with its keys in another order: the same stream.
        let a2 = r#"{"num_replicas":3,"subjects":["orders.>"],"name":"A"}"#;
        assert_eq!(state.apply(&stream("A", a2)), Ok(()));
        let b = r#"{"name":"B","subjects":["orders.new"],"num_replicas":3}"#;
        assert_eq!(state.apply(&stream("B", b)), Err(Refusal::SubjectsOverlap));
        let c = r#"{"name":"C","subjects":["invoices.>"],"num_replicas":3}"#;
        assert_eq!(state.apply(&stream("C", c)), Ok(()));
        // Another account has its own subject space.
        let mut other = stream("B", b);
        if let MetaCommand::AssignStream(sa) = &mut other {
            sa.account = "OTHER".into();
        }
        assert_eq!(state.apply(&other), Ok(()));
        assert_eq!(state.load().get(&1), Some(&3));
        assert_eq!(state.load().get(&4), None);
    }

    /// A workqueue stream's consumer rules are decided by the state machine against the
    /// assigned consumers (a second unfiltered one 10099, an overlapping filter 10100), so
    /// that creations on two members cannot both pass; other retentions are not checked.
    #[test]
    fn workqueue_consumers_are_checked_against_the_assigned_ones() {
        let mut state = MetaState::default();
        let wq = r#"{"name":"W","subjects":["w.>"],"retention":"workqueue","num_replicas":3}"#;
        state.apply(&stream("W", wq)).unwrap();
        state
            .apply(&stream("L", r#"{"name":"L","subjects":["l.>"]}"#))
            .unwrap();
        let with = |stream: &str, name: &str, config: &str| match consumer(stream, name) {
            MetaCommand::AssignConsumer(ca) => MetaCommand::AssignConsumer(ConsumerAssignment {
                config: config.into(),
                ..ca
            }),
            other => other,
        };
        let code = |r: Result<(), Refusal>| match r {
            Err(Refusal::WorkQueue(e)) => e.err_code,
            Err(other) => panic!("{other:?}"),
            Ok(()) => 0,
        };
        let a = r#"{"durable_name":"A","ack_policy":"explicit","filter_subject":"w.a.>"}"#;
        assert_eq!(code(state.apply(&with("W", "A", a))), 0);
        let b = r#"{"durable_name":"B","ack_policy":"explicit"}"#;
        assert_eq!(code(state.apply(&with("W", "B", b))), 10099);
        let c = r#"{"durable_name":"C","ack_policy":"explicit","filter_subject":"w.a.x"}"#;
        assert_eq!(code(state.apply(&with("W", "C", c))), 10100);
        let d = r#"{"durable_name":"D","ack_policy":"explicit","filter_subject":"w.b"}"#;
        assert_eq!(code(state.apply(&with("W", "D", d))), 0);
        // The same assignment again: no new consumer, no check.
        assert_eq!(code(state.apply(&with("W", "A", a))), 0);
        assert_eq!(code(state.apply(&with("L", "B", b))), 0);
        assert_eq!(code(state.apply(&with("L", "E", b))), 0);
    }

    #[test]
    fn consumers_are_removed_by_name() {
        let mut state = MetaState::default();
        state.apply(&stream("S", "{}")).unwrap();
        state.apply(&consumer("S", "C1")).unwrap();
        let remove = MetaCommand::RemoveConsumer {
            account: "$G".into(),
            stream: "S".into(),
            name: "C1".into(),
        };
        assert_eq!(state.apply(&remove), Ok(()));
        assert_eq!(state.apply(&remove), Err(Refusal::ConsumerNotFound));
        assert_eq!(state.streams.len(), 1);
    }

    /// An update changes a consumer's configuration alone; one not assigned is refused.
    #[test]
    fn consumers_are_updated_in_place() {
        let mut state = MetaState::default();
        state.apply(&stream("S", "{}")).unwrap();
        state.apply(&consumer("S", "C1")).unwrap();
        let update = |name: &str| MetaCommand::UpdateConsumer {
            account: "$G".into(),
            stream: "S".into(),
            name: name.into(),
            config: r#"{"ack_wait":1}"#.into(),
        };
        assert_eq!(state.apply(&update("C2")), Err(Refusal::ConsumerNotFound));
        let peers = |name: &str| MetaCommand::SetConsumerPeers {
            account: "$G".into(),
            stream: "S".into(),
            name: name.into(),
            peers: vec![1, 3, 4],
        };
        assert_eq!(state.apply(&peers("C2")), Err(Refusal::ConsumerNotFound));
        assert_eq!(state.apply(&peers("C1")), Ok(()));
        assert_eq!(state.apply(&update("C1")), Ok(()));
        let ca = &state.consumers[&("$G".to_owned(), "S".to_owned(), "C1".to_owned())];
        assert_eq!(ca.config, r#"{"ack_wait":1}"#);
        assert_eq!(
            (ca.group.name.as_str(), &ca.group.peers[..]),
            ("C-C1", &[1, 3, 4][..])
        );
        // Assigned again with the new configuration: no change.
        let mut again = consumer("S", "C1");
        if let MetaCommand::AssignConsumer(ca) = &mut again {
            ca.config = r#"{"ack_wait":1}"#.into();
        }
        assert_eq!(state.apply(&again), Ok(()));
    }

    /// A change of a stream's peers locks it until its own end; another is refused, as is one
    /// decided on peers that changed since; a stream deleted takes its lock along.
    #[test]
    fn one_change_of_a_streams_peers_at_a_time() {
        let mut state = MetaState::default();
        state.apply(&stream("S", "{}")).unwrap();
        let begin = |id: i64, from: Vec<u64>, peers: Vec<u64>| MetaCommand::BeginMove {
            account: "$G".into(),
            name: "S".into(),
            from,
            peers: peers.clone(),
            change: StreamMove {
                id,
                to: peers,
                old_r: 3,
                new_r: 5,
                placement: "null".into(),
            },
        };
        let end = |id: i64| MetaCommand::EndMove {
            account: "$G".into(),
            name: "S".into(),
            id,
        };
        let key = ("$G".to_owned(), "S".to_owned());
        assert_eq!(
            state.apply(&begin(1, vec![1, 2, 3], vec![1, 2, 3, 4, 5])),
            Ok(())
        );
        assert_eq!(state.streams[&key].group.peers, [1, 2, 3, 4, 5]);
        assert_eq!(
            state.apply(&begin(2, vec![1, 2, 3, 4, 5], vec![1, 2, 3])),
            Err(Refusal::MoveInProgress)
        );
        // Another change's end (a stale runner) leaves the lock.
        assert_eq!(state.apply(&end(7)), Ok(()));
        assert!(state.moves.contains_key(&key));
        assert_eq!(state.apply(&end(1)), Ok(()));
        assert!(state.moves.is_empty());
        // Decided on the peers before the first change: refused, nothing changes.
        assert_eq!(
            state.apply(&begin(3, vec![1, 2, 3], vec![1, 2, 3, 6])),
            Err(Refusal::MoveInProgress)
        );
        assert_eq!(state.streams[&key].group.peers, [1, 2, 3, 4, 5]);
        assert_eq!(
            state.apply(&begin(4, vec![1, 2, 3, 4, 5], vec![1, 2, 3, 4, 5])),
            Ok(())
        );
        // While it runs, the configuration may change, but not its R or placement (an update
        // decided on the state before the change would undo it).
        let update = |config: &str| MetaCommand::UpdateStream {
            account: "$G".into(),
            name: "S".into(),
            config: config.into(),
        };
        assert_eq!(
            state.apply(&update(r#"{"num_replicas":3}"#)),
            Err(Refusal::MoveInProgress)
        );
        let elsewhere = r#"{"num_replicas":5,"placement":{"tags":["b"]}}"#;
        assert_eq!(
            state.apply(&update(elsewhere)),
            Err(Refusal::MoveInProgress)
        );
        let limits = r#"{"num_replicas":5,"max_msgs":10}"#;
        assert_eq!(state.apply(&update(limits)), Ok(()));
        assert_eq!(state.streams[&key].config, limits);
        let remove = MetaCommand::RemoveStream {
            account: "$G".into(),
            name: "S".into(),
        };
        state.apply(&remove).unwrap();
        assert!(state.moves.is_empty());
        let other = MetaCommand::BeginMove {
            account: "$G".into(),
            name: "NOPE".into(),
            from: vec![],
            peers: vec![],
            change: StreamMove {
                id: 5,
                to: vec![],
                old_r: 3,
                new_r: 3,
                placement: "null".into(),
            },
        };
        assert_eq!(state.apply(&other), Err(Refusal::StreamNotFound));
    }

    /// An R1 stream of a removed member goes to another one in one step, unless a change of
    /// its peers is recorded or it is no longer the removed member's R1 stream.
    #[test]
    fn an_r1_stream_is_reassigned_in_one_step() {
        let mut state = MetaState::default();
        let mut r1 = stream("S", r#"{"num_replicas":1}"#);
        if let MetaCommand::AssignStream(sa) = &mut r1 {
            sa.group.peers = vec![1];
        }
        state.apply(&r1).unwrap();
        state.apply(&stream("R3", r#"{"num_replicas":3}"#)).unwrap();
        let reassign = |name: &str, from: u64, to: u64| MetaCommand::ReassignR1 {
            account: "$G".into(),
            name: name.into(),
            from,
            to,
        };
        assert_eq!(
            state.apply(&reassign("S", 2, 3)),
            Err(Refusal::MoveInProgress)
        );
        assert_eq!(
            state.apply(&reassign("R3", 1, 4)),
            Err(Refusal::MoveInProgress)
        );
        assert_eq!(
            state.apply(&reassign("NOPE", 1, 4)),
            Err(Refusal::StreamNotFound)
        );
        assert_eq!(state.apply(&reassign("S", 1, 3)), Ok(()));
        let key = ("$G".to_owned(), "S".to_owned());
        assert_eq!(state.streams[&key].group.peers, [3]);
    }

    /// `max_streams` counts the account's assigned streams, whichever member holds them; the
    /// same stream again is no new one, another account has its own count.
    #[test]
    fn max_streams_counts_the_accounts_assignments() {
        let mut state = MetaState::default();
        let within = |name: &str, account: &str| {
            let MetaCommand::AssignStream(mut sa) =
                stream(name, &format!(r#"{{"subjects":["{name}"]}}"#))
            else {
                unreachable!()
            };
            sa.account = account.into();
            MetaCommand::AssignStreamWithin {
                assignment: sa,
                max_streams: 2,
            }
        };
        assert_eq!(state.apply(&within("A", "$G")), Ok(()));
        assert_eq!(state.apply(&within("B", "$G")), Ok(()));
        assert_eq!(state.apply(&within("B", "$G")), Ok(()));
        assert_eq!(state.apply(&within("C", "$G")), Err(Refusal::MaxStreams));
        assert_eq!(state.apply(&within("C", "OTHER")), Ok(()));
        assert_eq!(state.streams_of("$G"), 2);
    }

    #[test]
    fn the_state_round_trips_through_postcard() {
        let mut state = MetaState::default();
        state.apply(&stream("S", "{}")).unwrap();
        state.apply(&consumer("S", "C1")).unwrap();
        let bytes = postcard::to_allocvec(&state).unwrap();
        let back: MetaState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, state);
    }
}
