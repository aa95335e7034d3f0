//! Who is who in a JetStream cluster: the Raft node id and nats-server's peer id of a member,
//! both derived from its server name (stable across restarts, the same on every member
//! without coordination), and the check that no two names share a node id.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The Raft node id of the member named `server_name`: the first 8 bytes of SHA-256 of the
/// name, big-endian.
pub fn node_id(server_name: &str) -> u64 {
    let digest = Sha256::digest(server_name.as_bytes());
    let mut first = [0u8; 8];
    for (to, from) in first.iter_mut().zip(digest.iter()) {
        *to = *from;
    }
    u64::from_be_bytes(first)
}

/// nats-server's peer id of the member named `server_name` (`/jsz` `meta_cluster.peer`): each
/// of the first 8 bytes of SHA-256 of the name as a base-62 digit.
pub fn peer_id(server_name: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    Sha256::digest(server_name.as_bytes())
        .iter()
        .take(8)
        .map(|b| char::from(DIGITS[usize::from(*b % 62)]))
        .collect()
}

/// Two server names with one node id: the second cannot join the group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "JetStream cluster: server names {known:?} and {new:?} have the same Raft node id {id}; \
     rename one of them (server_name)"
)]
pub struct Collision {
    /// The name first seen with the id.
    pub known: String,
    /// The name refused.
    pub new: String,
    /// The shared node id.
    pub id: u64,
}

/// The names seen with each node id.
#[derive(Debug, Default)]
pub struct Names(HashMap<u64, String>);

impl Names {
    /// Records `name` with its node id `id`; fails if another name has that id.
    pub fn check(&mut self, name: &str, id: u64) -> Result<(), Collision> {
        match self.0.get(&id) {
            Some(known) if known != name => Err(Collision {
                known: known.clone(),
                new: name.to_owned(),
                id,
            }),
            Some(_) => Ok(()),
            None => {
                self.0.insert(id, name.to_owned());
                Ok(())
            }
        }
    }

    /// The name recorded with `id`.
    pub fn name(&self, id: u64) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("n1"), node_id("n1"));
        assert_ne!(node_id("n1"), node_id("n2"));
        // The first 8 bytes of SHA-256("n1"), so every build and member agrees.
        let digest = Sha256::digest(b"n1");
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        assert_eq!(node_id("n1"), u64::from_be_bytes(first));
    }

    #[test]
    fn peer_ids_are_eight_base62_digits() {
        let p = peer_id("n1");
        assert_eq!(p.len(), 8);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(p, peer_id("n1"));
        assert_ne!(p, peer_id("n2"));
    }

    #[test]
    fn a_name_colliding_with_another_is_refused() {
        let mut names = Names::default();
        assert!(names.check("n1", 7).is_ok());
        assert!(names.check("n1", 7).is_ok());
        let err = names.check("n9", 7).unwrap_err();
        assert_eq!(err.known, "n1");
        assert!(err.to_string().contains("\"n1\" and \"n9\""));
        assert_eq!(names.name(7), Some("n1"));
    }
}
