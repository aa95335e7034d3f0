//! Each member's copies of the replicated streams it is a peer of: as the meta group's
//! assignments are applied here (the state machine's watch channel, and every [`TICK`] to retry
//! what failed), a stream assigned to this member is created in its account's engine
//! (`JetStream::create_replica`: it answers reads, its stream task takes no publish) and its
//! stream group started ([`MetaGroup::ensure_stream_group`]: the group writes the copy), and
//! one that was assigned to it and no longer is (removed, or created again: another creation
//! time) is deleted after its group is stopped and its Raft state removed. An R1 stream made
//! replicated becomes the copy on the member that held it (`jsc::replicate::adopt`).
//!
//! Deletions follow what this task saw change, never the mere absence of an assignment: at
//! start the state machine may not have applied the whole log yet, and deleting a copy the
//! log still assigns would lose its data. A copy that no assignment accounts for (its stream
//! was deleted while this member was down, and the removal came in a snapshot) is logged once
//! and kept; `STREAM.DELETE` on this member removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use leaf_core::jetstream::accounts::AccountJetStreams;
use leaf_core::jetstream::config::StreamConfig;
use tokio::sync::watch;
use tracing::{info, warn};

use super::group::MetaGroup;
use super::meta::{MetaState, StreamAssignment};

/// How often assignments are checked again without a change (retries).
const TICK: Duration = Duration::from_secs(2);

/// A stream: account and name.
type Key = (String, String);

/// Keeps this member's copies in step with the assignments until `stop`.
pub fn start(group: Weak<MetaGroup>, engines: Arc<AccountJetStreams>, stop: watch::Receiver<bool>) {
    tokio::spawn(run(group, engines, stop));
}

/// What this task knows of this member's copies.
#[derive(Default)]
struct Copies {
    /// The copies created (or found) for an assignment, with its creation time.
    made: BTreeMap<Key, i64>,
    /// Copies without an assignment, already reported.
    reported: BTreeSet<Key>,
}

async fn run(
    group: Weak<MetaGroup>,
    engines: Arc<AccountJetStreams>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut changes) = group.upgrade().map(|g| g.watch_state()) else {
        return;
    };
    let mut copies = Copies::default();
    loop {
        let state = changes.borrow_and_update().clone();
        let Some(g) = group.upgrade() else {
            break;
        };
        copies.follow(&g, &state, &engines).await;
        drop(g);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => break,
        }
    }
}

/// The assignments of `state` that make `own` a peer.
fn assigned_to(own: u64, state: &MetaState) -> BTreeMap<Key, &StreamAssignment> {
    state
        .streams
        .iter()
        // R1 streams are plain streams of their peer (`jsc::r1`), not copies.
        .filter(|(_, sa)| !sa.is_r1() && sa.group.peers.contains(&own))
        .map(|(k, sa)| (k.clone(), sa))
        .collect()
}

impl Copies {
    /// Creates and deletes copies for the assignments of `state`.
    async fn follow(&mut self, g: &Arc<MetaGroup>, state: &MetaState, engines: &AccountJetStreams) {
        let mine = assigned_to(g.own, state);
        self.convert_r1(g, state, engines).await;
        // Gone, or created again: this copy's assignment is no more. One made R1 with this
        // member as its peer is converted, never deleted (`jsc::unreplicate`).
        let stale: Vec<Key> = self
            .made
            .iter()
            .filter(|(k, created)| mine.get(*k).is_none_or(|sa| sa.created_ns != **created))
            .filter(|(k, created)| {
                !state.streams.get(*k).is_some_and(|sa| {
                    sa.is_r1() && sa.group.peers == [g.own] && sa.created_ns == **created
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (account, name) in stale {
            // Its group first: nothing applies to the copy while it goes.
            g.remove_stream_groups(&account, &name).await;
            let Some(js) = engines.get(&account) else {
                continue;
            };
            match js.delete_replica(&name).await {
                Ok(_) => {
                    info!(
                        account = %account,
                        stream = %name,
                        "JetStream cluster: copy of a replicated stream deleted"
                    );
                    self.made.remove(&(account, name));
                }
                Err(e) => {
                    warn!(
                        account = %account,
                        stream = %name,
                        error = %e,
                        "JetStream cluster: cannot delete a copy (retried)"
                    )
                }
            }
        }
        for (key, sa) in &mine {
            if self.made.get(key) != Some(&sa.created_ns) {
                self.adopt(g, key, sa, engines).await;
                self.make(key, sa, engines).await;
            }
            // The copy's group (started once; retried while it fails).
            if self.made.get(key) == Some(&sa.created_ns) {
                if let Some(js) = engines.get(&key.0) {
                    match g.ensure_stream_group(sa, &js).await {
                        Ok(()) => {
                            self.reported.remove(key);
                        }
                        Err(e) => self.report(key, &format!("its group: {e}")),
                    }
                }
            }
        }
        self.report_orphans(&mine, engines);
        // The consumer groups of the copies made.
        let copies = self.made.keys().cloned().collect();
        super::consumer_group::follow(g, state, engines, &copies).await;
    }

    /// Converts this member's copies whose assignment became R1 with this member as its
    /// peer into plain streams (`jsc::unreplicate::to_plain`): at once for a copy this task
    /// made for that assignment, else (a copy found at start) once the meta state caught up
    /// with the leader.
    async fn convert_r1(&mut self, g: &MetaGroup, state: &MetaState, engines: &AccountJetStreams) {
        let mut caught_up = None;
        for (key, sa) in &state.streams {
            let Some(js) = engines.get(&key.0) else {
                continue;
            };
            if !super::unreplicate::converts(g.own, sa, &js) {
                continue;
            }
            if self.made.get(key) != Some(&sa.created_ns) {
                if caught_up.is_none() {
                    caught_up = Some(g.caught_up().await);
                }
                if caught_up != Some(true) {
                    continue;
                }
            }
            match super::unreplicate::to_plain(g, sa, &js).await {
                Ok(()) => {
                    self.made.remove(key);
                    self.reported.remove(key);
                }
                Err(e) => self.report(
                    key,
                    &format!("cannot make this member's copy its R1 stream: {e}"),
                ),
            }
        }
    }

    /// Makes this member's plain stream the copy of `sa` when it was that stream's R1 peer
    /// (an R1 stream made replicated: `jsc::replicate`); [`Copies::make`] then finds it.
    async fn adopt(
        &mut self,
        g: &MetaGroup,
        key: &Key,
        sa: &StreamAssignment,
        engines: &AccountJetStreams,
    ) {
        let Some(js) = engines.get(&key.0) else {
            return;
        };
        if !super::replicate::adopts(g.own, sa, &js) {
            return;
        }
        let Some(config) = self.config_of(key, sa) else {
            return;
        };
        if let Err(e) = super::replicate::adopt(&g.db, sa, &js, config).await {
            self.report(
                key,
                &format!("cannot make this member's R1 stream its copy: {e}"),
            );
        }
    }

    /// Creates the copy of `sa` (or finds it made already).
    async fn make(&mut self, key: &Key, sa: &StreamAssignment, engines: &AccountJetStreams) {
        let (account, name) = key;
        let Some(js) = engines.get(account) else {
            self.report(key, "its account has no JetStream on this member");
            return;
        };
        let Some(config) = self.config_of(key, sa) else {
            return;
        };
        // A copy of an earlier stream of that name (deleted and created again while this
        // member did not see it): replaced.
        if js
            .stream_created_ns(name)
            .is_some_and(|created| created != sa.created_ns)
            && js.replica_names().contains(name)
        {
            if let Err(e) = js.delete_replica(name).await {
                warn!(
                    account = %account,
                    stream = %name,
                    error = %e,
                    "JetStream cluster: cannot replace an earlier copy (retried)"
                );
                return;
            }
        }
        match js.create_replica(config, sa.created_ns).await {
            Ok(created) => {
                if created {
                    info!(
                        account = %account,
                        stream = %name,
                        "JetStream cluster: copy of a replicated stream created"
                    );
                }
                self.made.insert(key.clone(), sa.created_ns);
                self.reported.remove(key);
            }
            Err(e) => self.report(key, &format!("cannot create it: {}", e.description)),
        }
    }

    /// Logs the copies of `engines` that no assignment of `mine` accounts for, once each.
    fn report_orphans(
        &mut self,
        mine: &BTreeMap<Key, &StreamAssignment>,
        engines: &AccountJetStreams,
    ) {
        let accounts: BTreeSet<String> = mine
            .keys()
            .map(|(a, _)| a.clone())
            .chain(self.made.keys().map(|(a, _)| a.clone()))
            .chain([leaf_core::server::GLOBAL_ACCOUNT.to_owned()])
            .collect();
        for account in accounts {
            let Some(js) = engines.get(&account) else {
                continue;
            };
            for name in js.replica_names() {
                let key = (account.clone(), name);
                if !mine.contains_key(&key) && !self.made.contains_key(&key) {
                    self.report(
                        &key,
                        "no assignment of the meta group accounts for it (kept; \
                         STREAM.DELETE on this member removes it)",
                    );
                }
            }
        }
    }

    /// The configuration of assignment `sa` (of copy `key`); one that does not read is logged.
    fn config_of(&mut self, key: &Key, sa: &StreamAssignment) -> Option<StreamConfig> {
        match serde_json::from_str(&sa.config) {
            Ok(c) => Some(c),
            Err(e) => {
                self.report(key, &format!("its configuration does not read: {e}"));
                None
            }
        }
    }

    /// Logs a problem with the copy `key`, once until it is solved.
    fn report(&mut self, key: &Key, why: &str) {
        if self.reported.insert(key.clone()) {
            warn!(
                account = %key.0,
                stream = %key.1,
                "JetStream cluster: copy of a replicated stream: {why}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsc::meta::RaftGroup;

    fn assignment(name: &str, peers: &[u64]) -> StreamAssignment {
        StreamAssignment {
            account: "$G".into(),
            name: name.into(),
            config: "{}".into(),
            group: RaftGroup {
                name: format!("S-{name}"),
                peers: peers.to_vec(),
            },
            created_ns: 1,
        }
    }

    #[test]
    fn only_the_streams_assigned_to_a_member_are_its_copies() {
        let mut state = MetaState::default();
        for sa in [assignment("A", &[1, 2, 3]), assignment("B", &[2, 3])] {
            state
                .streams
                .insert((sa.account.clone(), sa.name.clone()), sa);
        }
        let names = |own| -> Vec<String> {
            assigned_to(own, &state)
                .into_keys()
                .map(|(_, n)| n)
                .collect()
        };
        assert_eq!(names(1), ["A"]);
        assert_eq!(names(2), ["A", "B"]);
        assert!(names(4).is_empty());
    }
}
