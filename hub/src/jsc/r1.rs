//! R1 streams in a JetStream cluster, as nats-server 2.9 has them (see "R1 streams" in
//! `hub/JETSTREAM-CLUSTER.md`, and `leaf_core::jetstream::cluster_r1` for the API's side).
//!
//! * **An assignment with one peer**: `STREAM.CREATE` with `num_replicas` 0/1 proposes a
//!   [`StreamAssignment`] to the meta group like an R>1 one ([`MetaGroup::assign_r1`]), so
//!   names and subjects are unique in the cluster (the state machine's 10058/10065 rules) and
//!   a create without a meta leader fails (10008). Its one peer is the member asked when it
//!   qualifies (up, `placement` tags), else the least loaded one that does
//!   ([`placement::choose`]). No Raft group runs for it.
//! * **A plain stream on the peer**: as the peer applies the assignment ([`start`]'s task) it
//!   creates an ordinary stream of its engine (`JetStream::create_assigned`: it subscribes
//!   its subjects, its own task stores, its consumers are ordinary), and deletes it when the
//!   assignment is removed (only on a removal this task saw: never for a mere absence at
//!   start, when the log may not be applied yet).
//! * **Served by the peer**: the API requests about it on another member go to the peer as
//!   the meta group's RPC [`API_RPC`] ([`MetaGroup::forward_api`], bounded by the transport's
//!   bytes in flight and [`FORWARD_WITHIN`]; 10008 when the peer does not answer), carrying
//!   the account, subject, body and reply subject; the peer runs its ordinary handler
//!   (`JetStream::serve_forwarded`) and the answer comes back to the member asked. Pull
//!   requests go the same way (their messages from the peer to the reply subject, over the
//!   routes). The RPC is accepted only when it arrives over a route, and a `$HRG.` message
//!   goes out on a route only when a server published it (`server::fanout`): no client can
//!   make a member act in an account through it.
//! * **Streams from before** (no assignment: stores from before this change): once the meta
//!   group has a leader each is proposed as an assignment with this member as its peer; when
//!   another member's assignment holds the name or subjects, that is logged (both members
//!   named) and the local stream keeps serving this member's clients, as before. A stream
//!   recorded as held for an assignment (`jsc::r1_held`) is never one from before: once the
//!   meta state caught up at start, one no longer assigned here is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use leaf_core::jetstream::accounts::AccountJetStreams;
use leaf_core::jetstream::cluster_r1::{Forward, Forwarded};
use leaf_core::jetstream::config::{ApiError, JsError, StreamConfig};
use leaf_core::jetstream::replication::Replicated;
use leaf_core::jetstream::JetStream;
use leaf_proto::time::now_ns;
use tokio::sync::watch;
use tracing::{info, warn};

use super::group::{MetaGroup, META};
use super::meta::{same_config, MetaCommand, MetaState, RaftGroup, StreamAssignment};
use super::placement::{self, Voter};
use super::replication::{no_peers, refused, unavailable};

/// The meta group's RPC of an API request forwarded to the member holding an R1 stream.
pub const API_RPC: &str = "api";

/// How long a member waits for the answer of the member holding an R1 stream.
pub const FORWARD_WITHIN: Duration = Duration::from_secs(4);

/// How often the assignments are checked again without a change (retries, migration).
const TICK: Duration = Duration::from_secs(1);

/// How long a new assignment of this member is left to the API request that made it (which
/// creates the stream and answers `did_create`) before this task creates the stream itself.
const LEFT_TO_THE_API: Duration = Duration::from_secs(1);

/// A stream: account and name.
type Key = (String, String);

impl MetaGroup {
    /// The R1 assignment of stream `name` of `account`, if any.
    fn r1_assignment(&self, account: &str, name: &str) -> Option<StreamAssignment> {
        let state = self.watch_state();
        let sa = state
            .borrow()
            .streams
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()?;
        sa.is_r1().then_some(sa)
    }

    /// Whether R1 stream `name` of `account` is assigned to this member (`None`: no R1
    /// assignment).
    pub fn r1_here(&self, account: &str, name: &str) -> Option<bool> {
        self.r1_assignment(account, name)
            .map(|sa| sa.group.peers.contains(&self.own))
    }

    /// Assigns R1 stream `config` of `account` (see the module documentation), or finds it
    /// assigned with this configuration: whether its peer is this member.
    pub async fn assign_r1(&self, account: &str, config: StreamConfig) -> Result<bool, ApiError> {
        placement::check(config.placement.as_ref(), self.cluster_name()).map_err(no_peers)?;
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        let key = (account.to_owned(), config.name.clone());
        let state = self.state();
        if let Some(existing) = state.streams.get(&key) {
            return if existing.is_r1() && same_config(&existing.config, &text) {
                let here = existing.group.peers.contains(&self.own);
                if here {
                    self.hold_assigned(account, &config.name).await?;
                }
                Ok(here)
            } else {
                Err(ApiError::stream_name_exists())
            };
        }
        let voters = self.placeable()?;
        let wanted = placement::tags(config.placement.as_ref());
        // This member when it qualifies, else the least loaded one that does.
        let here: Vec<Voter> = voters
            .iter()
            .filter(|v| v.id == self.own)
            .cloned()
            .collect();
        let peers = match placement::choose(1, &here, &BTreeMap::new(), &wanted) {
            Ok(p) => p,
            Err(_) => placement::choose(1, &voters, &state.load(), &wanted).map_err(no_peers)?,
        };
        let assignment = one_peer(account, &config.name, text, peers, now_ns());
        let proposed = self
            .propose(self.assign_command(assignment))
            .await
            .map_err(|_| unavailable())?;
        if let Some(r) = proposed.reply.refused {
            return Err(refused(r));
        }
        let here = self
            .r1_here(account, &config.name)
            .ok_or_else(unavailable)?;
        if here {
            self.hold_assigned(account, &config.name).await?;
        }
        Ok(here)
    }

    /// Removes the assignment of R1 stream `name` of `account`.
    pub async fn remove_r1(&self, account: &str, name: &str) -> Result<(), ApiError> {
        self.apply_command(MetaCommand::RemoveStream {
            account: account.to_owned(),
            name: name.to_owned(),
        })
        .await
    }

    /// Makes `config` the configuration of R1 stream `config.name`'s assignment of `account`.
    pub async fn update_r1(&self, account: &str, config: StreamConfig) -> Result<(), ApiError> {
        let text = serde_json::to_string(&config).map_err(|e| ApiError::general(&e.to_string()))?;
        self.apply_command(MetaCommand::UpdateStream {
            account: account.to_owned(),
            name: config.name.clone(),
            config: text,
        })
        .await
    }

    /// The R1 streams of `account` assigned in the cluster, their peer shown as `leader`.
    pub fn r1_streams(&self, account: &str) -> Vec<Replicated> {
        let state = self.watch_state();
        let state = state.borrow();
        state
            .streams
            .values()
            .filter(|sa| sa.account == account && sa.is_r1())
            .filter_map(|sa| {
                let config: StreamConfig = serde_json::from_str(&sa.config).ok()?;
                let leader = sa.group.peers.first().and_then(|id| self.name_of(*id));
                Some(self.as_shown(sa, config, leader, Vec::new()))
            })
            .collect()
    }

    /// Sends API request `request` about R1 stream `stream` of `account` to its peer (see the
    /// module documentation): its answer. 10059 without such an assignment, 10008 when the
    /// peer does not answer in time.
    pub async fn forward_api(
        &self,
        account: &str,
        stream: &str,
        request: Forward,
    ) -> Result<Option<Forwarded>, ApiError> {
        let sa = self
            .r1_assignment(account, stream)
            .ok_or_else(ApiError::stream_not_found)?;
        let peer = sa
            .group
            .peers
            .first()
            .copied()
            .filter(|p| *p != self.own)
            .ok_or_else(unavailable)?;
        let body = postcard::to_allocvec(&(account, request))
            .map_err(|e| ApiError::general(&e.to_string()))?;
        let answer = self
            .transport
            .request(peer, META, API_RPC, &body, FORWARD_WITHIN)
            .await
            .map_err(|_| unavailable())?;
        postcard::from_bytes::<Option<Forwarded>>(&answer).map_err(|_| unavailable())
    }

    /// Forwards a pull request for consumer `name` of R1 stream `stream` of `account` held by
    /// another member to it (its messages go from there to `reply`): `false` when `stream` is
    /// not such a stream.
    pub fn forward_r1_pull(
        self: &Arc<Self>,
        account: &str,
        stream: &str,
        name: &str,
        reply: &str,
        payload: &[u8],
    ) -> bool {
        if self.r1_here(account, stream) != Some(false) {
            return false;
        }
        let request = Forward {
            subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
            payload: payload.to_vec(),
            reply: reply.to_owned(),
        };
        let g = Arc::clone(self);
        let (account, stream) = (account.to_owned(), stream.to_owned());
        tokio::spawn(async move {
            if let Err(e) = g.forward_api(&account, &stream, request).await {
                tracing::debug!(stream = %stream, error = %e.description,
                                "JetStream cluster: a pull request of an R1 stream not forwarded");
            }
        });
        true
    }

    /// Serves an API request another member forwarded (postcard of the account and the
    /// [`Forward`]): the answer of this member's engine of that account (postcard of an
    /// `Option<Forwarded>`).
    pub(super) async fn serve_api(&self, body: &[u8]) -> Option<Vec<u8>> {
        let (account, request): (String, Forward) = postcard::from_bytes(body).ok()?;
        let js = self.engines.get().and_then(|e| e.get(&account));
        let answer = match js {
            Some(js) => js.serve_forwarded(request).await,
            None => {
                let error = JsError::ClusterNotAvail
                    .with("JetStream is not enabled for the account on the stream's member");
                let body = leaf_core::jetstream::wire::ErrorResponse { kind: None, error };
                Some(Forwarded {
                    headers: None,
                    body: serde_json::to_vec(&body).unwrap_or_default(),
                })
            }
        };
        postcard::to_allocvec(&answer).ok()
    }
}

/// Follows the R1 assignments of this member (its plain streams) until `stop`; serves the
/// forwarded API requests with `engines`.
pub fn start(group: Weak<MetaGroup>, engines: Arc<AccountJetStreams>, stop: watch::Receiver<bool>) {
    if let Some(g) = group.upgrade() {
        let _ = g.engines.set(engines.clone());
    }
    tokio::spawn(run(group, engines, stop));
}

async fn run(
    group: Weak<MetaGroup>,
    engines: Arc<AccountJetStreams>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut changes) = group.upgrade().map(|g| g.watch_state()) else {
        return;
    };
    let mut follower = Follower {
        started_ns: now_ns(),
        ..Follower::default()
    };
    loop {
        let state = changes.borrow_and_update().clone();
        let Some(g) = group.upgrade() else {
            break;
        };
        follower.load_held(&g);
        follower.follow(&g, &state, &engines).await;
        follower.sweep(&g, &engines);
        follower.migrate(&g, &engines).await;
        drop(g);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => break,
        }
    }
}

/// The assignment of R1 stream `name` of `account` (its configuration as JSON `config`) to
/// `peers` (one), created at `created_ns`.
fn one_peer(
    account: &str,
    name: &str,
    config: String,
    peers: Vec<u64>,
    created_ns: i64,
) -> StreamAssignment {
    StreamAssignment {
        account: account.to_owned(),
        name: name.to_owned(),
        config,
        group: RaftGroup {
            name: placement::stream_group(account, name, created_ns),
            peers,
        },
        created_ns,
    }
}

/// The R1 assignments of `state` whose peer is `own`.
fn assigned_to(own: u64, state: &MetaState) -> BTreeMap<Key, &StreamAssignment> {
    state
        .streams
        .iter()
        .filter(|(_, sa)| sa.is_r1() && sa.group.peers.contains(&own))
        .map(|(k, sa)| (k.clone(), sa))
        .collect()
}

/// `gone` (R1 streams of this member `own` no longer assigned as such) split into those
/// removed and those made replicated with this member as a peer, which `jsc::copies` keeps
/// (see `jsc::replicate`).
fn replicated_here(own: u64, state: &MetaState, gone: Vec<Key>) -> (Vec<Key>, Vec<Key>) {
    gone.into_iter().partition(|k| {
        !state
            .streams
            .get(k)
            .is_some_and(|sa| !sa.is_r1() && sa.group.peers.contains(&own))
    })
}

/// What the task knows of this member's R1 streams.
#[derive(Default)]
struct Follower {
    /// The assignments seen for this member (their streams made, found or left to the API).
    seen: BTreeSet<Key>,
    /// Problems already logged.
    reported: BTreeSet<Key>,
    /// When the task started: only streams created before are from before R1 streams were
    /// the cluster's (a later one had its assignment first, or is being deleted).
    started_ns: i64,
    /// Assignments of this member without a stream yet, since when (see [`LEFT_TO_THE_API`]).
    missing: BTreeMap<Key, tokio::time::Instant>,
    /// The streams recorded as held for their assignment (`jsc::r1_held`); `None` until the
    /// records were read (nothing is proposed as a stream from before meanwhile).
    held: Option<BTreeSet<Key>>,
    /// The sweep at start (`jsc::r1_held`): `None` until started, then whether it ran.
    swept: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Whether the records were read again after the sweep.
    reloaded: bool,
}

impl Follower {
    /// Creates and deletes this member's plain streams for the assignments of `state`.
    async fn follow(&mut self, g: &MetaGroup, state: &MetaState, engines: &AccountJetStreams) {
        let mine = assigned_to(g.own, state);
        self.missing.retain(|k, _| mine.contains_key(k));
        let gone: Vec<Key> = self
            .seen
            .iter()
            .filter(|k| !mine.contains_key(*k))
            .cloned()
            .collect();
        let (gone, replicated) = replicated_here(g.own, state, gone);
        for key in replicated {
            // Made replicated: the stream is kept, as the copy (`jsc::replicate`).
            self.seen.remove(&key);
        }
        for key in gone {
            let Some(js) = engines.get(&key.0) else {
                self.seen.remove(&key);
                self.release(g, key).await;
                continue;
            };
            match js.delete_assigned(&key.1).await {
                Ok(deleted) => {
                    if deleted {
                        info!(account = %key.0, stream = %key.1,
                              "JetStream cluster: R1 stream deleted (its assignment removed)");
                    }
                    self.seen.remove(&key);
                    self.release(g, key).await;
                }
                Err(e) => warn!(account = %key.0, stream = %key.1, error = %e.description,
                                "JetStream cluster: cannot delete an R1 stream (retried)"),
            }
        }
        let unheld = self.hold(g, &mine).await;
        for (key, sa) in mine {
            // Seen: its removal deletes this member's stream, whoever created it (the API
            // request that made it, or this task).
            self.seen.insert(key.clone());
            if unheld.contains(&key) {
                continue; // not created without its record: the next tick
            }
            let Some(js) = engines.get(&key.0) else {
                self.report(&key, "its account has no JetStream on this member");
                continue;
            };
            if js.stream_created_ns(&key.1).is_none() {
                let since = *self
                    .missing
                    .entry(key.clone())
                    .or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < LEFT_TO_THE_API {
                    continue; // the next tick
                }
            }
            self.missing.remove(&key);
            let config: StreamConfig = match serde_json::from_str(&sa.config) {
                Ok(c) => c,
                Err(e) => {
                    self.report(&key, &format!("its configuration does not read: {e}"));
                    continue;
                }
            };
            match js.create_assigned(config, sa.created_ns).await {
                Ok(created) => {
                    if created {
                        info!(account = %key.0, stream = %key.1,
                              "JetStream cluster: R1 stream created (assigned to this member)");
                    }
                    self.reported.remove(&key);
                }
                Err(e) => self.report(&key, &format!("cannot create it: {}", e.description)),
            }
        }
    }

    /// Proposes this member's plain streams that no assignment accounts for (from before R1
    /// streams were the cluster's) as assignments with this member as their peer, once the
    /// meta group has a leader; one another member's assignment holds is logged.
    async fn migrate(&mut self, g: &MetaGroup, engines: &AccountJetStreams) {
        if g.raft.metrics().borrow().current_leader.is_none() {
            return;
        }
        for (account, js) in engines.engines() {
            self.migrate_engine(g, &account, &js).await;
        }
    }

    async fn migrate_engine(&mut self, g: &MetaGroup, account: &str, js: &JetStream) {
        for (config, created_ns) in js.plain_streams() {
            let key = (account.to_owned(), config.name.clone());
            // A stream held for an assignment is never one from before (`jsc::r1_held`).
            let held = self.held.as_ref().is_none_or(|h| h.contains(&key));
            if created_ns >= self.started_ns
                || held
                || self.seen.contains(&key)
                || self.reported.contains(&key)
            {
                continue;
            }
            let holder = |state: &MetaState| state.streams.get(&key).cloned();
            let existing = holder(&g.state());
            if existing.is_none() {
                let Ok(text) = serde_json::to_string(&config) else {
                    continue;
                };
                let assignment = one_peer(account, &config.name, text, vec![g.own], created_ns);
                if g.propose(MetaCommand::AssignStream(assignment))
                    .await
                    .is_err()
                {
                    return; // no leader now: the next tick tries again
                }
            }
            match holder(&g.state()) {
                Some(sa) if sa.is_r1() && sa.group.peers.contains(&g.own) => {
                    if existing.is_none() {
                        info!(account = %account, stream = %config.name,
                              "JetStream cluster: R1 stream from before assigned to this member");
                    }
                    let mine = BTreeMap::from([(key.clone(), &sa)]);
                    if !self.hold(g, &mine).await.is_empty() {
                        continue; // recorded on a later tick
                    }
                    self.seen.insert(key);
                }
                Some(sa) => {
                    let other = sa
                        .group
                        .peers
                        .iter()
                        .filter_map(|id| g.name_of(*id))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let why = format!(
                        "a stream of this name on this member ({}) and the cluster's on {other}: \
                         kept, served to this member's clients only",
                        g.name_of(g.own).unwrap_or_default()
                    );
                    self.report(&key, &why);
                }
                None => {
                    // Refused (its subjects overlap another member's stream), or not applied here yet.
                    let overlapping = g.state().streams.values().any(|sa| {
                        sa.account == account
                            && sa.subjects().iter().any(|b| {
                                config.subjects.iter().any(|a| {
                                    leaf_proto::subject::subjects_overlap(
                                        a.as_bytes(),
                                        b.as_bytes(),
                                    )
                                })
                            })
                    });
                    if overlapping {
                        self.report(
                            &key,
                            "its subjects overlap a stream of the cluster: kept, served to \
                             this member's clients only",
                        );
                    }
                }
            }
        }
    }

    /// Reads the records of the streams held here for their assignment, until they read.
    fn load_held(&mut self, g: &MetaGroup) {
        if self.held.is_some() {
            return;
        }
        match g.held_r1() {
            Ok(held) => self.held = Some(held.into_keys().collect()),
            Err(e) => {
                warn!(error = %e, "JetStream cluster: the R1 streams held here do not read (retried)")
            }
        }
    }

    /// Records the assignments of `mine` not recorded yet as held here (one durable commit);
    /// returns those that could not be (not created until they are).
    async fn hold(
        &mut self,
        g: &MetaGroup,
        mine: &BTreeMap<Key, &StreamAssignment>,
    ) -> BTreeSet<Key> {
        let Some(held) = self.held.as_mut() else {
            return mine.keys().cloned().collect();
        };
        let new: Vec<(Key, i64)> = mine
            .iter()
            .filter(|(k, _)| !held.contains(*k))
            .map(|(k, sa)| (k.clone(), sa.created_ns))
            .collect();
        if new.is_empty() {
            return BTreeSet::new();
        }
        match g.hold_r1(&new).await {
            Ok(()) => {
                held.extend(new.into_iter().map(|(k, _)| k));
                BTreeSet::new()
            }
            Err(e) => {
                warn!(error = %e, "JetStream cluster: R1 streams not recorded as held (retried)");
                new.into_iter().map(|(k, _)| k).collect()
            }
        }
    }

    /// Removes the record of `key` (its stream deleted for a removal this task saw).
    async fn release(&mut self, g: &MetaGroup, key: Key) {
        match g.release_r1(std::slice::from_ref(&key)).await {
            Ok(()) => {
                if let Some(held) = self.held.as_mut() {
                    held.remove(&key);
                }
            }
            Err(e) => warn!(account = %key.0, stream = %key.1, error = %e,
                            "JetStream cluster: the record of a deleted R1 stream stays"),
        }
    }

    /// Starts the sweep at start (`jsc::r1_held`) in a task of its own, tried every
    /// [`TICK`] until it ran (its wait for the meta leader never holds this task up); the
    /// records are read again once it ran.
    fn sweep(&mut self, g: &Arc<MetaGroup>, engines: &Arc<AccountJetStreams>) {
        use std::sync::atomic::Ordering;
        match &self.swept {
            None => {
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                self.swept = Some(done.clone());
                let (group, engines) = (Arc::downgrade(g), engines.clone());
                tokio::spawn(async move {
                    while let Some(g) = group.upgrade() {
                        if g.sweep_r1(&engines).await {
                            done.store(true, Ordering::Release);
                            break;
                        }
                        drop(g);
                        tokio::time::sleep(TICK).await;
                    }
                });
            }
            Some(done) if !self.reloaded && done.load(Ordering::Acquire) => {
                self.reloaded = true;
                self.held = None;
                self.load_held(g);
            }
            Some(_) => {}
        }
    }

    /// Logs a problem with R1 stream `key`, once until it is solved.
    fn report(&mut self, key: &Key, why: &str) {
        if self.reported.insert(key.clone()) {
            warn!(account = %key.0, stream = %key.1, "JetStream cluster: R1 stream: {why}");
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An assignment of stream `name` of `$G` with `replicas` to `peers` (unit tests).
    pub(in crate::jsc) fn assignment(name: &str, replicas: i64, peers: &[u64]) -> StreamAssignment {
        StreamAssignment {
            account: "$G".into(),
            name: name.into(),
            config: format!(r#"{{"name":"{name}","num_replicas":{replicas}}}"#),
            group: RaftGroup {
                name: format!("S-{name}"),
                peers: peers.to_vec(),
            },
            created_ns: 1,
        }
    }

    #[test]
    fn an_r1_stream_made_replicated_here_is_not_gone() {
        let mut state = MetaState::default();
        for sa in [assignment("X", 3, &[1, 2, 3]), assignment("Y", 3, &[2, 3])] {
            state
                .streams
                .insert((sa.account.clone(), sa.name.clone()), sa);
        }
        let key = |n: &str| ("$G".to_owned(), n.to_owned());
        let (gone, replicated) = replicated_here(1, &state, vec![key("X"), key("Y"), key("Z")]);
        assert_eq!(gone, [key("Y"), key("Z")]);
        assert_eq!(replicated, [key("X")]);
    }

    #[test]
    fn only_r1_assignments_of_a_member_are_its_plain_streams() {
        let mut state = MetaState::default();
        for sa in [
            assignment("A", 1, &[1]),
            assignment("B", 3, &[1, 2, 3]),
            assignment("C", 1, &[2]),
            assignment("D", 0, &[1]),
        ] {
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
        assert_eq!(names(1), ["A", "D"]);
        assert_eq!(names(2), ["C"]);
        assert!(names(3).is_empty());
        assert!(assignment("X", 1, &[1]).is_r1());
        assert!(!assignment("X", 2, &[1, 2]).is_r1());
    }
}
