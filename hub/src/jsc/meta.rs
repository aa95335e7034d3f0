//! The meta group's state: which streams and consumers exist in the cluster and which peers
//! (Raft node ids) carry each, as nats-server's stream and consumer assignments. Pure data and
//! the logic that applies one command; the group's log replays these commands on every member
//! in the same order, so every member holds the same state.

use std::collections::BTreeMap;

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
    /// Its configuration, as the JSON text of the create request.
    pub config: String,
    /// Its group.
    pub group: RaftGroup,
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
    /// The stream is not assigned.
    #[error("stream not found")]
    StreamNotFound,
    /// A consumer of that name exists with another configuration.
    #[error("consumer name already in use with a different configuration")]
    ConsumerExists,
    /// The consumer is not assigned.
    #[error("consumer not found")]
    ConsumerNotFound,
}

/// The assignments of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Streams by (account, name).
    pub streams: BTreeMap<(String, String), StreamAssignment>,
    /// Consumers by (account, stream, name).
    pub consumers: BTreeMap<(String, String, String), ConsumerAssignment>,
}

impl MetaState {
    /// Applies `cmd`; a refused command changes nothing.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), Refusal> {
        match cmd {
            MetaCommand::AssignStream(sa) => {
                let key = (sa.account.clone(), sa.name.clone());
                match self.streams.get(&key) {
                    Some(old) if old.config != sa.config => Err(Refusal::StreamExists),
                    Some(_) => Ok(()),
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
        }
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
