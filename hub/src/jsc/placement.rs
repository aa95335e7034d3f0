//! Where a replicated stream goes: which members carry it, or why none can (nats-server's
//! "no suitable peers for placement", 10005). Pure logic.
//!
//! The peers are chosen among the meta group's voters that are up (this member, and the
//! members seen over a route), the least loaded first (fewest streams already assigned to
//! them, as nats-server sorts replicated assets by their count), ties by node id; the first is
//! the preferred leader. `placement.cluster` must be this cluster's name (a hubd cluster has no
//! gateways to other clusters); with `placement.tags`, only members whose `server_tags` hold
//! every one of them are candidates (tags compared without case, as nats-server's).

use std::collections::BTreeMap;

use serde_json::Value;

use super::node_id::peer_id;

/// The start of every placement error, as nats-server words it.
const NO_PEERS: &str = "no suitable peers for placement";

/// A voter of the meta group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// Its node id.
    pub id: u64,
    /// Whether it is up (this member, or seen over a route).
    pub online: bool,
    /// Its `server_tags` (lowercase; known for the members up).
    pub tags: Vec<String>,
}

/// Why a stream cannot be placed: the whole error text (10005).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoPeers(pub String);

/// Checks a stream's `placement` (the configuration's JSON value) against this cluster.
pub fn check(placement: Option<&Value>, cluster: &str) -> Result<(), NoPeers> {
    let Some(placement) = placement else {
        return Ok(());
    };
    if let Some(wanted) = placement["cluster"].as_str().filter(|c| !c.is_empty()) {
        if wanted != cluster {
            return Err(NoPeers(NO_PEERS.to_owned()));
        }
    }
    Ok(())
}

/// The tags a stream's `placement` asks for, lowercased, without duplicates.
pub fn tags(placement: Option<&Value>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let asked = placement
        .and_then(|p| p["tags"].as_array())
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for tag in asked {
        let tag = tag.trim().to_lowercase();
        if !tag.is_empty() && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

/// The error of a cluster with a nats-server member that has JetStream.
pub fn mixed(member: &str) -> NoPeers {
    NoPeers(format!(
        "{NO_PEERS}, nats-server member {member} has JetStream: hubd and nats-server cannot \
         share replicated streams"
    ))
}

/// Chooses `replicas` peers among `voters` holding every tag of `wanted` (lowercase), the
/// least loaded first (`load`: streams per node id). Too few: nats-server's reasons, "peer
/// offline" when members that are down would have made up the number, "tags not matched
/// [...]" with the wanted tags some member lacked.
pub fn choose(
    replicas: usize,
    voters: &[Voter],
    load: &BTreeMap<u64, usize>,
    wanted: &[String],
) -> Result<Vec<u64>, NoPeers> {
    let mut unmatched: Vec<&str> = Vec::new();
    let mut tagged = 0;
    let mut online: Vec<u64> = Vec::new();
    for voter in voters {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|t| !voter.tags.contains(t))
            .map(String::as_str)
            .collect();
        if voter.online && !missing.is_empty() {
            for tag in missing {
                if !unmatched.contains(&tag) {
                    unmatched.push(tag);
                }
            }
            continue;
        }
        tagged += 1;
        if voter.online {
            online.push(voter.id);
        }
    }
    if online.len() < replicas {
        let mut text = NO_PEERS.to_owned();
        if tagged >= replicas {
            text.push_str(", peer offline");
        }
        if !unmatched.is_empty() {
            // In the order the placement asked for them.
            let listed: Vec<String> = wanted
                .iter()
                .filter(|t| unmatched.contains(&t.as_str()))
                .map(|t| format!("'{t}'"))
                .collect();
            text.push_str(&format!(", tags not matched [{}]", listed.join(", ")));
        }
        return Err(NoPeers(text));
    }
    online.sort_by_key(|id| (load.get(id).copied().unwrap_or(0), *id));
    online.truncate(replicas);
    Ok(online)
}

/// The name of the group of stream `stream` of `account` created at `created_ns`: `S-` and
/// a hash (a subject token; a stream created again gets another group).
pub fn stream_group(account: &str, stream: &str, created_ns: i64) -> String {
    format!(
        "S-{}",
        peer_id(&format!("{account}\0{stream}\0{created_ns}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn voters(ids: &[(u64, bool)]) -> Vec<Voter> {
        ids.iter()
            .map(|(id, online)| Voter {
                id: *id,
                online: *online,
                tags: Vec::new(),
            })
            .collect()
    }

    fn tagged(id: u64, online: bool, tags: &[&str]) -> Voter {
        Voter {
            id,
            online,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn wanted(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn only_members_with_every_tag_are_chosen() {
        let all = [
            tagged(1, true, &["ssd", "eu"]),
            tagged(2, true, &["hdd", "eu"]),
            tagged(3, true, &["ssd", "us"]),
            tagged(4, true, &["ssd", "eu", "gpu"]),
        ];
        let none = BTreeMap::new();
        assert_eq!(choose(2, &all, &none, &wanted(&["ssd"])), Ok(vec![1, 3]));
        assert_eq!(
            choose(2, &all, &none, &wanted(&["ssd", "eu"])),
            Ok(vec![1, 4])
        );
        assert_eq!(choose(4, &all, &none, &[]), Ok(vec![1, 2, 3, 4]));
        assert_eq!(
            choose(3, &all, &none, &wanted(&["ssd", "eu"])),
            Err(NoPeers(
                "no suitable peers for placement, tags not matched ['ssd', 'eu']".into()
            ))
        );
        assert_eq!(
            choose(1, &all, &none, &wanted(&["arm"])),
            Err(NoPeers(
                "no suitable peers for placement, tags not matched ['arm']".into()
            ))
        );
        // A tagged member down: offline, and the others' missing tags.
        let down = [
            tagged(1, true, &["ssd"]),
            tagged(2, false, &[]),
            tagged(3, true, &["hdd"]),
        ];
        assert_eq!(
            choose(2, &down, &none, &wanted(&["ssd"])),
            Err(NoPeers(
                "no suitable peers for placement, peer offline, tags not matched ['ssd']".into()
            ))
        );
    }

    #[test]
    fn placement_tags_are_lowercased_once_each() {
        assert_eq!(tags(None), Vec::<String>::new());
        assert_eq!(
            tags(Some(&json!({"tags": ["SSD", " eu", "ssd", ""]}))),
            ["ssd", "eu"]
        );
    }

    #[test]
    fn the_least_loaded_voters_are_chosen() {
        let all = voters(&[(1, true), (2, true), (3, true), (4, true)]);
        let load = BTreeMap::from([(1, 2), (2, 0), (3, 1)]);
        assert_eq!(choose(3, &all, &load, &[]), Ok(vec![2, 4, 3]));
        assert_eq!(choose(1, &all, &BTreeMap::new(), &[]), Ok(vec![1]));
    }

    #[test]
    fn too_few_voters_up_is_no_placement() {
        let all = voters(&[(1, true), (2, false), (3, true)]);
        assert_eq!(
            choose(3, &all, &BTreeMap::new(), &[]),
            Err(NoPeers(
                "no suitable peers for placement, peer offline".into()
            ))
        );
        assert_eq!(choose(2, &all, &BTreeMap::new(), &[]), Ok(vec![1, 3]));
        assert_eq!(
            choose(5, &all, &BTreeMap::new(), &[]),
            Err(NoPeers("no suitable peers for placement".into()))
        );
    }

    #[test]
    fn placement_names_this_cluster() {
        assert_eq!(check(None, "C"), Ok(()));
        assert_eq!(check(Some(&json!({"cluster": "C"})), "C"), Ok(()));
        assert_eq!(check(Some(&json!({"cluster": ""})), "C"), Ok(()));
        assert_eq!(
            check(Some(&json!({"cluster": "OTHER"})), "C"),
            Err(NoPeers("no suitable peers for placement".into()))
        );
        assert_eq!(check(Some(&json!({"tags": ["ssd", "eu"]})), "C"), Ok(()));
    }

    #[test]
    fn group_names_are_tokens_and_differ_per_creation() {
        let a = stream_group("$G", "ORDERS", 1);
        assert!(a.starts_with("S-") && a.len() == 10, "{a}");
        assert!(!a.contains(['.', '*', '>', ' ']), "{a}");
        assert_ne!(a, stream_group("$G", "ORDERS", 2));
        assert_ne!(a, stream_group("APP", "ORDERS", 1));
    }
}
