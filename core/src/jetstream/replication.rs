//! The hook of a clustered server for replicated streams (`num_replicas` > 1).
//!
//! A single server refuses `num_replicas` > 1 (10074, in [`super::config`]). hubd in a
//! JetStream cluster sets a [`Replication`] on the server ([`crate::server::Shared`]'s
//! `js_replication`); the API task then hands it `STREAM.CREATE` with R>1, `STREAM.DELETE` and
//! `STREAM.LEADER.STEPDOWN` of a stream it knows, and answers `STREAM.INFO`, `STREAM.NAMES` and `STREAM.LIST` with
//! its replicated streams next to the engine's own. leafd never sets one and keeps refusing.
//!
//! What a replicated stream is here (see `hub/JETSTREAM-CLUSTER.md`, "Status and next
//! steps"; R1 streams of a cluster that assigns them are in [`super::cluster_r1`]): an
//! assignment the cluster agreed on (configuration, peers), and on each of its
//! peers a **copy** in the engine ([`JetStream::create_replica`], called by hubd as the
//! assignments are applied). A copy answers `STREAM.INFO` from its store (`MSG.GET` and
//! `DIRECT.GET` are served by the group's leader, see [`super::reads`]) but never subscribes its subjects nor copies from sources: hubd's stream
//! group writes it (the group's leader subscribes the subjects in [`JetStream::account`] and
//! each peer appends the committed publishes to [`JetStream::store_of`]), so its stream task
//! takes nothing. `STREAM.PURGE` and `STREAM.MSG.DELETE` are checked here and handed to the
//! hook ([`Replication::purge`], [`Replication::delete_msg`]: hubd proposes them to the
//! stream's group, applied alike on every copy) from any member; `STREAM.UPDATE` is checked
//! here as for a single server (a change of `num_replicas` within 2-5 rescales the stream's
//! group; one to R1 is [`Replication::unreplicate`], the leader's copy becoming a plain
//! stream with [`JetStream::copy_to_plain`]; an R1 stream of a cluster that assigns them goes
//! to R2-R5 with [`Replication::replicate_r1`]) and handed to
//! [`Replication::update`] (hubd: through the meta group, each copy updated with
//! [`JetStream::update_replica`]). Consumers on a member that holds no copy answer
//! 10036 ("not currently supported in clustered mode").
//!
//! **Consumers on a copy**: an ephemeral consumer, or a durable one with `num_replicas: 1`,
//! created on a member with a copy of a stream with limits retention lives on that copy, as
//! nats-server's R1 consumers of an R3 stream live on one peer: it reads the copy's store, is
//! woken by [`JetStream::replica_appended`] (which hubd calls after its group applied
//! messages to the copy), takes its acks on this member, and is lost with the member (a
//! durable R1 one comes back with the member's store). A durable one without
//! `num_replicas: 1` (of any retention) is a **replicated consumer** ([`wants_group`]): the
//! hook assigns it to the stream's peers (`create_consumer`, `delete_consumer`), hubd runs its
//! group and starts its task on the member leading it (`JetStream::start_group_consumer`,
//! the state records going to the group); boot does not resume it. An existing one created
//! again with another configuration is updated (the single server's rules, then
//! [`Replication::update_consumer`]; the running task gets it with
//! [`JetStream::update_group_consumer`]); `CONSUMER.LEADER.STEPDOWN` is
//! [`Replication::step_down_consumer`]. Other consumers of interest or workqueue streams
//! (their acks would remove messages from one copy only) and replicated ephemerals answer
//! 10036 (`check_consumer_on_copy`).
//!
//! **Interest and workqueue retention**: only replicated durables are served (any other
//! consumer's acks would remove messages from one copy only: 10036); the removals their acks
//! release go to the stream's group through the [`super::consumer::RecordSink`] (see
//! `consumer/retain.rs`), and a new consumer of a workqueue stream is checked against the
//! assigned ones (10099, 10100) as on a single server.

use std::future::Future;
use std::pin::Pin;

use leaf_proto::subject::subjects_overlap;
use leaf_proto::time::{now_ns, rfc3339};
use leaf_store::PurgeRequest;

use super::config::consumer::ConsumerConfig;
use super::config::{Retention, StreamConfig};
use super::errors::{ApiError, JsError};
use super::wire::{ClusterInfo, ConsumerInfo, StreamInfo, StreamInfoResponse, StreamState};
use super::{Inner, JetStream};

/// An answer the hook gives later.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send>>;

/// A replicated stream as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicated {
    /// Its configuration (with its `num_replicas`).
    pub config: StreamConfig,
    /// When it was created (ns since the epoch), the same on every member.
    pub created_ns: i64,
    /// The cluster's name, the group's leader (none yet) and its peers.
    pub cluster: ClusterInfo,
}

/// What a clustered server does with replicated streams (see the module documentation).
pub trait Replication: Send + Sync {
    /// Creates the replicated stream `config` (normalized, `num_replicas` > 1) of `account`:
    /// the stream and whether it is new (`false`: it existed with this configuration).
    fn create(&self, account: &str, config: StreamConfig) -> Pending<(Replicated, bool)>;

    /// Deletes the replicated stream `name` of `account` (10059 when there is none).
    fn delete(&self, account: &str, name: &str) -> Pending<()>;

    /// Moves the leadership of replicated stream `name`'s group of `account` to another
    /// peer (`STREAM.LEADER.STEPDOWN`); by default not served (10036).
    fn step_down(&self, account: &str, name: &str) -> Pending<()> {
        let _ = (account, name);
        Box::pin(async { Err(unserved()) })
    }

    /// Updates replicated stream `config.name` of `account` to `config` (checked already
    /// against its configuration; `num_replicas` 2-5, possibly another than the stream's:
    /// then its peers grow or shrink to it): the stream as updated; by default not served
    /// (10036).
    fn update(&self, account: &str, config: StreamConfig) -> Pending<Replicated> {
        let _ = (account, config);
        Box::pin(async { Err(unserved()) })
    }

    /// Removes server `peer` (its name) from the peers of replicated stream `name` of
    /// `account` (`STREAM.PEER.REMOVE`), another member taking its place when one is free;
    /// by default not served (10036).
    fn remove_peer(&self, account: &str, name: &str, peer: &str) -> Pending<()> {
        let _ = (account, name, peer);
        Box::pin(async { Err(unserved()) })
    }

    /// Purges replicated stream `name` of `account` on every copy (`STREAM.PURGE`, checked
    /// already): how many messages went; by default not served (10036).
    fn purge(&self, account: &str, name: &str, req: PurgeRequest) -> Pending<u64> {
        let _ = (account, name, req);
        Box::pin(async { Err(unserved()) })
    }

    /// Deletes message `seq` of replicated stream `name` of `account` on every copy
    /// (`STREAM.MSG.DELETE`): whether it was there; by default not served (10036).
    fn delete_msg(&self, account: &str, name: &str, seq: u64) -> Pending<bool> {
        let _ = (account, name, seq);
        Box::pin(async { Err(unserved()) })
    }

    /// Removes messages `seqs` of replicated stream `name` of `account` from every copy
    /// (interest retention: what a deleted replicated consumer alone held); how many were
    /// there. By default not served (10036).
    fn remove_msgs(&self, account: &str, name: &str, seqs: Vec<u64>) -> Pending<u64> {
        let _ = (account, name, seqs);
        Box::pin(async { Err(unserved()) })
    }

    /// The replicated streams of `account` known here, by name.
    fn streams(&self, account: &str) -> Vec<Replicated>;

    /// Checks that an R1 stream `config` may live on this server: a clustered server refuses
    /// a `placement` it does not match (10005; a cluster that assigns R1 streams,
    /// [`Replication::clusters_r1`], has placed it on a member that matches first). By
    /// default anything goes.
    fn check_here(&self, config: &StreamConfig) -> Result<(), ApiError> {
        let _ = config;
        Ok(())
    }

    /// The replicated stream `name` of `account`, if known here.
    fn stream(&self, account: &str, name: &str) -> Option<Replicated> {
        self.streams(account)
            .into_iter()
            .find(|s| s.config.name == name)
    }

    /// Creates the replicated consumer `config` (normalized, durable: see [`wants_group`]) of
    /// replicated stream `stream` of `account`; by default not served (10036).
    fn create_consumer(&self, account: &str, stream: &str, config: ConsumerConfig) -> Pending<()> {
        let _ = (account, stream, config);
        Box::pin(async { Err(unserved()) })
    }

    /// Updates the replicated consumer `config` (normalized, checked against its configuration
    /// with the single server's rules) of stream `stream` of `account`: every peer and every
    /// later leader use it; by default not served (10036).
    fn update_consumer(&self, account: &str, stream: &str, config: ConsumerConfig) -> Pending<()> {
        let _ = (account, stream, config);
        Box::pin(async { Err(unserved()) })
    }

    /// Moves the leadership of replicated consumer `name`'s group of stream `stream` of
    /// `account` to another peer (`CONSUMER.LEADER.STEPDOWN`); by default not served (10036).
    fn step_down_consumer(&self, account: &str, stream: &str, name: &str) -> Pending<()> {
        let _ = (account, stream, name);
        Box::pin(async { Err(unserved()) })
    }

    /// Deletes the replicated consumer `name` of stream `stream` of `account`; by default not
    /// served (10036).
    fn delete_consumer(&self, account: &str, stream: &str, name: &str) -> Pending<()> {
        let _ = (account, stream, name);
        Box::pin(async { Err(unserved()) })
    }

    /// Forwards a pull request (`CONSUMER.MSG.NEXT`: its reply subject and body) for
    /// replicated consumer `name` of stream `stream` of `account`, whose task does not run
    /// here, to the member leading its group; `false` when it cannot (no leader known, or this
    /// member leads and the task is not started yet). By default `false`.
    fn forward_pull(
        &self,
        account: &str,
        stream: &str,
        name: &str,
        reply: &str,
        payload: &[u8],
    ) -> bool {
        let _ = (account, stream, name, reply, payload);
        false
    }

    /// Serves `read` (`MSG.GET`, `DIRECT.GET`) of replicated stream `name` of `account` on the
    /// member leading its group, after a read barrier (see [`super::reads`]): the answer for
    /// the requester. By default not served (10036).
    fn read(
        &self,
        account: &str,
        name: &str,
        read: super::reads::Read,
    ) -> Pending<super::reads::ReadAnswer> {
        let _ = (account, name, read);
        Box::pin(async { Err(unserved()) })
    }

    /// The names of the replicated consumers of stream `stream` of `account` known here. By
    /// default none.
    fn consumer_names(&self, account: &str, stream: &str) -> Vec<String> {
        let _ = (account, stream);
        Vec::new()
    }

    /// The replicated consumer `name` of stream `stream` of `account`, if known here.
    fn consumer(&self, account: &str, stream: &str, name: &str) -> Option<ReplicatedConsumer> {
        let _ = (account, stream, name);
        None
    }

    /// Whether R1 streams are the cluster's (hubd in a JetStream cluster, as nats-server 2.9:
    /// see [`super::cluster_r1`]); `false` by default: they are this server's alone.
    fn clusters_r1(&self) -> bool {
        false
    }

    /// Assigns R1 stream `config` (normalized) of `account` to one member through the cluster
    /// (or finds it assigned with this configuration): whether that member is this one. By
    /// default: this one.
    fn assign_r1(&self, account: &str, config: StreamConfig) -> Pending<bool> {
        let _ = (account, config);
        Box::pin(async { Ok(true) })
    }

    /// Removes the assignment of R1 stream `name` of `account` (its member deletes it as it
    /// applies the removal). By default nothing to remove.
    fn remove_r1(&self, account: &str, name: &str) -> Pending<()> {
        let _ = (account, name);
        Box::pin(async { Ok(()) })
    }

    /// Makes `config` (checked already) the configuration of R1 stream `config.name`'s
    /// assignment of `account` (names and subjects stay unique in the cluster). By default
    /// nothing to do.
    fn update_r1(&self, account: &str, config: StreamConfig) -> Pending<()> {
        let _ = (account, config);
        Box::pin(async { Ok(()) })
    }

    /// Turns R1 stream `config.name` of `account`, this member's plain stream, into a
    /// replicated stream of `config.num_replicas` (2-5; `config` checked already against the
    /// stream's): the stream as updated. By default refused (10061, nats-server's words for a
    /// server that cannot).
    fn replicate_r1(&self, account: &str, config: StreamConfig) -> Pending<Replicated> {
        let _ = (account, config);
        Box::pin(async { Err(JsError::StreamReplicasNotUpdatable.err()) })
    }

    /// Turns replicated stream `config.name` of `account` into an R1 stream (`config`, its
    /// `num_replicas` 1, checked already against the stream's): the stream as updated. By
    /// default refused (10061).
    fn unreplicate(&self, account: &str, config: StreamConfig) -> Pending<Replicated> {
        let _ = (account, config);
        Box::pin(async { Err(JsError::StreamReplicasNotUpdatable.err()) })
    }

    /// Where R1 stream `name` of `account` is assigned: `Some(true)` on this member,
    /// `Some(false)` on another, `None` without an assignment.
    fn r1_here(&self, account: &str, name: &str) -> Option<bool> {
        let _ = (account, name);
        None
    }

    /// The R1 streams of `account` the cluster assigned (on any member), as shown by members
    /// that do not hold them: configuration, creation, the member holding them as `leader`.
    fn r1_streams(&self, account: &str) -> Vec<Replicated> {
        let _ = account;
        Vec::new()
    }

    /// Sends API request `request` about R1 stream `stream` of `account` to the member
    /// holding it, which serves it as its own clients' ([`JetStream::serve_forwarded`]): its
    /// answer (`None`: it answers nothing, e.g. a pull request, whose messages it sends to the
    /// reply subject itself). By default not served (10036).
    fn forward(
        &self,
        account: &str,
        stream: &str,
        request: super::cluster_r1::Forward,
    ) -> Pending<Option<super::cluster_r1::Forwarded>> {
        let _ = (account, stream, request);
        Box::pin(async { Err(unserved()) })
    }
}

/// A replicated consumer as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedConsumer {
    /// Its configuration.
    pub config: ConsumerConfig,
    /// The cluster's name, the group's leader (none known) and its peers.
    pub cluster: ClusterInfo,
}

/// Whether consumer `cfg` of stream `stream` is a replicated consumer with a group of its own
/// (hubd's consumer groups): a durable consumer without `num_replicas: 1` of a replicated
/// stream, whatever its retention (under interest and workqueue retention the messages its
/// acks release are removed through the stream's group: see `consumer/retain.rs`).
pub fn wants_group(stream: &StreamConfig, cfg: &ConsumerConfig) -> bool {
    stream.is_replicated() && cfg.is_durable() && cfg.num_replicas != 1
}

/// The `num_replicas` a `STREAM.CREATE` body asks for (1 when absent or unreadable: the
/// ordinary path then parses and answers it).
pub(crate) fn requested_replicas(payload: &[u8]) -> i64 {
    #[derive(serde::Deserialize)]
    struct Replicas {
        #[serde(default)]
        num_replicas: Option<i64>,
    }
    serde_json::from_slice::<Replicas>(payload)
        .ok()
        .and_then(|r| r.num_replicas)
        .unwrap_or(1)
}

/// Most replicas of a stream (nats-server's `StreamMaxReplicas`).
pub const MAX_REPLICAS: i32 = 5;

impl Replicated {
    /// Its info: the cluster's view (configuration, creation, peers) and an empty state, as
    /// no member stores its messages yet.
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            config: self.config.clone(),
            created: rfc3339(self.created_ns),
            state: StreamState {
                first_seq: self.config.first_seq.max(1),
                last_seq: self.config.first_seq.saturating_sub(1),
                first_ts: rfc3339(0),
                last_ts: rfc3339(0),
                ..StreamState::default()
            },
            domain: None,
            cluster: Some(self.cluster.clone()),
            mirror: None,
            sources: None,
            ts: Some(rfc3339(now_ns())),
        }
    }
}

impl Inner {
    /// The stream configuration of request body `payload` for stream `name`, normalized by the
    /// single server's rules as if it were R1, with its `num_replicas` (more than
    /// [`MAX_REPLICAS`]: 10052, as nats-server).
    fn replicated_config(&self, name: &str, payload: &[u8]) -> Result<StreamConfig, ApiError> {
        let mut cfg = self.read_config(name, payload)?;
        let replicas = cfg.num_replicas;
        if replicas > MAX_REPLICAS {
            return Err(ApiError::invalid_config(&format!(
                "maximum replicas is {MAX_REPLICAS}"
            )));
        }
        cfg.num_replicas = 1;
        let mut cfg = cfg.normalize()?;
        cfg.num_replicas = replicas;
        Ok(cfg)
    }

    /// `STREAM.CREATE` with `num_replicas` > 1 (`payload` the request's body) on a clustered
    /// server: the answer; `None` without a hook (the ordinary path then refuses, 10074).
    pub(crate) async fn create_replicated(
        &self,
        name: &str,
        payload: &[u8],
    ) -> Option<Result<StreamInfoResponse, ApiError>> {
        let (hook, account) = self.replication()?;
        let create = async {
            let cfg = self.replicated_config(name, payload)?;
            // An R1 stream of this engine keeps its name and subjects (a copy of a replicated
            // stream is the cluster's to judge).
            if self
                .stream(name)
                .is_some_and(|s| !s.config().is_replicated())
            {
                return Err(ApiError::stream_name_exists());
            }
            self.check_overlap(&cfg)?;
            let (stream, created) = hook.create(&account, cfg).await?;
            let mut body = StreamInfoResponse::from(stream.info());
            body.did_create = created;
            Ok(body)
        };
        Some(create.await)
    }

    /// `STREAM.DELETE` of a replicated stream: the answer; `None` when the stream is not a
    /// replicated one known here (or the server has no hook). This member's copy goes at
    /// once (the others' as they apply the removal).
    pub(crate) async fn delete_replicated(&self, name: &str) -> Option<Result<(), ApiError>> {
        let (hook, account) = self.replication()?;
        hook.stream(&account, name)?;
        let deleted = hook.delete(&account, name).await;
        if deleted.is_ok()
            && self
                .stream(name)
                .is_some_and(|s| s.config().is_replicated())
        {
            // Already gone if the hook removed it as it applied the removal.
            let _ = self.remove_stream(name).await;
        }
        Some(deleted)
    }

    /// `STREAM.LEADER.STEPDOWN` of a replicated stream: the answer; `None` when the stream
    /// is not a replicated one known here (or the server has no hook).
    pub(crate) async fn step_down_replicated(&self, name: &str) -> Option<Result<(), ApiError>> {
        let (hook, account) = self.replication()?;
        hook.stream(&account, name)?;
        Some(hook.step_down(&account, name).await)
    }

    /// `STREAM.UPDATE` of replicated stream `name` (`payload` the request's body): the
    /// answer; `None` when the stream is not a replicated one known here (or the server has
    /// no hook). The single server's checks against the stream's configuration; a change of
    /// `num_replicas` within 2-5 is the hook's to carry out (a rescale), one to R1 too
    /// ([`Replication::unreplicate`]; R1 to R>1 is [`Inner::replicate_plain`]).
    pub(crate) async fn update_replicated(
        &self,
        name: &str,
        payload: &[u8],
    ) -> Option<Result<StreamInfoResponse, ApiError>> {
        let (hook, account) = self.replication()?;
        let old = hook.stream(&account, name)?.config;
        let update = async {
            let mut cfg = self.replicated_config(name, payload)?;
            // R2-R5 to R2-R5 is a rescale of the stream's group; to R1 the group shrinks to
            // its leader, whose copy becomes a plain stream.
            let to_r1 = cfg.num_replicas != old.num_replicas && cfg.num_replicas <= 1;
            if to_r1 {
                cfg.num_replicas = 1;
            }
            let cfg = super::api::check_update(&old, cfg)?;
            self.check_overlap(&cfg)?;
            let stream = if to_r1 {
                hook.unreplicate(&account, cfg).await?
            } else {
                hook.update(&account, cfg).await?
            };
            Ok(StreamInfoResponse::from(stream.info()))
        };
        Some(update.await)
    }

    /// `STREAM.UPDATE` of R1 stream `name` of this engine asking for `num_replicas` > 1
    /// (`payload` the request's body) on a clustered server: the answer; `None` otherwise (a
    /// single server answers 10074 as for a create). The single server's checks against the
    /// stream's configuration, then the hook turns the plain stream into a replicated one
    /// ([`Replication::replicate_r1`]: hubd makes it the copy of a new group that grows to
    /// the new R; a hook that cannot answers 10061).
    pub(crate) async fn replicate_plain(
        &self,
        name: &str,
        payload: &[u8],
    ) -> Option<Result<StreamInfoResponse, ApiError>> {
        let (hook, account) = self.replication()?;
        let stream = self.stream(name).filter(|s| !s.config().is_replicated())?;
        let replicas = requested_replicas(payload);
        if replicas <= 1 {
            return None;
        }
        let update = async {
            let cfg = self.replicated_config(name, payload)?;
            let cfg = super::api::check_update(&stream.config(), cfg)?;
            self.check_overlap(&cfg)?;
            // Consumers of a copy of such a stream would remove messages from one copy only.
            if cfg.retention != Retention::Limits && stream.consumer_count() > 0 {
                return Err(JsError::StreamReplicasNotUpdatable.err());
            }
            let replicated = hook.replicate_r1(&account, cfg).await?;
            Ok(StreamInfoResponse::from(replicated.info()))
        };
        Some(update.await)
    }

    /// `STREAM.PEER.REMOVE` of server `peer` from replicated stream `name`: the answer;
    /// `None` when the stream is not a replicated one known here (or the server has no hook).
    pub(crate) async fn remove_peer_replicated(
        &self,
        name: &str,
        peer: &str,
    ) -> Option<Result<(), ApiError>> {
        let (hook, account) = self.hook_of(name)?;
        Some(hook.remove_peer(&account, name, peer).await)
    }

    /// `STREAM.PURGE` of replicated stream `name` (`req` checked): the answer; `None` when
    /// the stream is not a replicated one known here (or the server has no hook).
    pub(crate) async fn purge_replicated(
        &self,
        name: &str,
        req: PurgeRequest,
    ) -> Option<Result<u64, ApiError>> {
        let (hook, account) = self.hook_of(name)?;
        Some(hook.purge(&account, name, req).await)
    }

    /// `STREAM.MSG.DELETE` of message `seq` of replicated stream `name`: the answer; `None`
    /// when the stream is not a replicated one known here (or the server has no hook).
    pub(crate) async fn delete_msg_replicated(
        &self,
        name: &str,
        seq: u64,
    ) -> Option<Result<bool, ApiError>> {
        let (hook, account) = self.hook_of(name)?;
        Some(hook.delete_msg(&account, name, seq).await)
    }

    /// The hook and the account when `name` is a replicated stream known here.
    fn hook_of(&self, name: &str) -> Option<(std::sync::Arc<dyn Replication>, String)> {
        let (hook, account) = self.replication()?;
        hook.stream(&account, name)?;
        Some((hook, account))
    }

    /// `CONSUMER.CREATE` of a replicated consumer (see [`wants_group`]) of copy `stream`
    /// (`action`: the request's, `create`, `update` or empty): the answer; `None` without a
    /// hook. An existing consumer with another configuration is updated as on a single
    /// server (its rules: [`ConsumerConfig::check_update`]; 10148 for `action: create`).
    pub(crate) async fn create_replicated_consumer(
        &self,
        stream: &StreamConfig,
        cfg: ConsumerConfig,
        action: &str,
    ) -> Option<Result<ConsumerInfo, ApiError>> {
        let (hook, account) = self.replication()?;
        let create = async {
            let replicas = cfg.num_replicas;
            if replicas > i64::from(stream.num_replicas) || replicas < 0 {
                return Err(JsError::ConsumerReplicasExceedsStream.err());
            }
            // The single-server checks, then the replicas back.
            let cfg = ConsumerConfig {
                num_replicas: 0,
                ..cfg
            };
            let mut cfg = cfg.normalize(stream)?;
            cfg.num_replicas = replicas;
            super::retention::check_config(stream, &cfg)?;
            let name = cfg.consumer_name().unwrap_or_default().to_owned();
            match hook.consumer(&account, &stream.name, &name) {
                Some(old) if old.config == cfg => {}
                Some(_) if action == "create" => {
                    return Err(JsError::ConsumerAlreadyExists.err());
                }
                Some(old) => {
                    old.config.check_update(&cfg)?;
                    hook.update_consumer(&account, &stream.name, cfg.clone())
                        .await?;
                }
                None if action == "update" => return Err(JsError::ConsumerDoesNotExist.err()),
                None => {
                    // A workqueue's rules against the stream's other consumers (the
                    // replicated ones the cluster assigned).
                    if stream.retention == Retention::WorkQueue {
                        let existing: Vec<ConsumerConfig> = hook
                            .consumer_names(&account, &stream.name)
                            .iter()
                            .filter(|n| **n != name)
                            .filter_map(|n| hook.consumer(&account, &stream.name, n))
                            .map(|c| c.config)
                            .collect();
                        super::retention::check_new_consumer(stream, &existing, &cfg)?;
                    }
                    hook.create_consumer(&account, &stream.name, cfg.clone())
                        .await?
                }
            }
            let mut info = match self.replicated_consumer_record(&stream.name, &name) {
                // The configuration the cluster holds (the record gets it with the leader's
                // next write).
                Some(info) => ConsumerInfo {
                    config: cfg.clone(),
                    ..info
                },
                None => super::consumer::info_of_config(&stream.name, &name, now_ns(), &cfg),
            };
            info.cluster = hook
                .consumer(&account, &stream.name, &name)
                .map(|c| c.cluster);
            Ok(info)
        };
        Some(create.await)
    }

    /// `CONSUMER.DELETE` of a replicated consumer: the answer; `None` when it is not one
    /// known here (or the server has no hook).
    pub(crate) async fn delete_replicated_consumer(
        &self,
        stream: &str,
        name: &str,
    ) -> Option<Result<(), ApiError>> {
        let (hook, account) = self.replication()?;
        hook.consumer(&account, stream, name)?;
        let floor = self
            .replicated_consumer_record(stream, name)
            .map_or(0, |info| info.ack_floor.stream_seq);
        let deleted = hook.delete_consumer(&account, stream, name).await;
        if deleted.is_ok() {
            self.release_replicated(hook.as_ref(), &account, stream, name, floor)
                .await;
        }
        Some(deleted)
    }

    /// After replicated consumer `gone` (ack floor `floor`) of an interest stream was
    /// deleted: removes, through the stream's group, the messages after its floor that no
    /// remaining consumer needs (a single server's `retention::release`; the remaining
    /// consumers seen through their records on this member's copy). A failure is logged: the
    /// remaining consumers' leaders reconcile what they have all passed.
    async fn release_replicated(
        &self,
        hook: &dyn Replication,
        account: &str,
        stream: &str,
        gone: &str,
        floor: u64,
    ) {
        let Some(copy) = self.stream(stream) else {
            return;
        };
        if copy.config().retention != Retention::Interest {
            return;
        }
        let assigned: Vec<ConsumerConfig> = hook
            .consumer_names(account, stream)
            .iter()
            .filter(|n| n.as_str() != gone)
            .filter_map(|n| hook.consumer(account, stream, n))
            .map(|c| c.config)
            .collect();
        let store = self.store_of(stream);
        let all = super::retention::WithViews {
            stream: &*copy,
            extra: super::consumer::remote_views(&copy, store, assigned, Some(gone)),
        };
        let seqs = super::retention::released(&all, store, gone, floor);
        if seqs.is_empty() {
            return;
        }
        if let Err(e) = hook.remove_msgs(account, stream, seqs).await {
            tracing::warn!(stream, consumer = gone, error = %e.description,
                           "removing messages of a deleted replicated consumer failed");
        }
    }

    /// The names of the replicated consumers of `stream` known here (running on this member
    /// or not).
    pub(crate) fn replicated_consumer_names(&self, stream: &str) -> Vec<String> {
        self.replication()
            .map(|(hook, account)| hook.consumer_names(&account, stream))
            .unwrap_or_default()
    }

    /// Replicated consumer `name` of `stream` (its configuration and cluster block), if it
    /// is one known here.
    pub(crate) fn replicated_consumer(
        &self,
        stream: &str,
        name: &str,
    ) -> Option<ReplicatedConsumer> {
        let (hook, account) = self.replication()?;
        hook.consumer(&account, stream, name)
    }

    /// `CONSUMER.LEADER.STEPDOWN` of replicated consumer `name` of `stream`: the answer;
    /// `None` when it is not one known here (or the server has no hook).
    pub(crate) async fn step_down_replicated_consumer(
        &self,
        stream: &str,
        name: &str,
    ) -> Option<Result<(), ApiError>> {
        let (hook, account) = self.replication()?;
        hook.consumer(&account, stream, name)?;
        Some(hook.step_down_consumer(&account, stream, name).await)
    }

    /// The info of replicated consumer `name` of `stream` from this member's stored record
    /// (what its group applied here), when there is one.
    pub(crate) fn replicated_consumer_record(
        &self,
        stream: &str,
        name: &str,
    ) -> Option<ConsumerInfo> {
        let stored = self.store_of(stream).consumers(stream).ok()?;
        let (_, bytes) = stored.into_iter().find(|(c, _)| c == name)?;
        super::consumer::info_of_record(stream, name, &bytes).ok()
    }

    /// The replicated stream `name` known here (not one of this engine's).
    pub(crate) fn replicated(&self, name: &str) -> Option<Replicated> {
        let (hook, account) = self.replication()?;
        hook.stream(&account, name)
    }

    /// The replicated streams known here.
    pub(crate) fn replicated_streams(&self) -> Vec<Replicated> {
        self.replication()
            .map(|(hook, account)| hook.streams(&account))
            .unwrap_or_default()
    }

    /// Checks that an R1 stream `cfg` of this engine takes neither the name nor the subjects
    /// of a replicated stream.
    pub(crate) fn check_replicated_conflicts(&self, cfg: &StreamConfig) -> Result<(), ApiError> {
        for other in self.replicated_streams() {
            if other.config.name == cfg.name {
                return Err(ApiError::stream_name_exists());
            }
            let overlaps = cfg.subjects.iter().any(|a| {
                other
                    .config
                    .subjects
                    .iter()
                    .any(|b| subjects_overlap(a.as_bytes(), b.as_bytes()))
            });
            if overlaps {
                return Err(ApiError::subjects_overlap());
            }
        }
        match self.replication() {
            Some((hook, _)) => hook.check_here(cfg),
            None => Ok(()),
        }
    }

    /// A request on a replicated stream that this server does not serve (its kind and
    /// stream), from the request's tokens after `$JS.API.`: one that would change the stream,
    /// or a consumer request on a member without a copy (message reads go to the group's
    /// leader: [`super::reads`]).
    pub(crate) fn unserved_replicated<'a>(
        &self,
        tokens: &[&'a str],
    ) -> Option<(&'static str, &'a str)> {
        let (kind, name, writes) = match tokens {
            // Consumers live on a member's copy (see `check_consumer_on_copy`): served where
            // there is one.
            ["CONSUMER", "CREATE", name, ..] | ["CONSUMER", "DURABLE", "CREATE", name, _] => {
                ("consumer_create_response", *name, false)
            }
            ["CONSUMER", "DELETE", name, _] => ("consumer_delete_response", *name, false),
            ["CONSUMER", "INFO", name, _] => ("consumer_info_response", *name, false),
            ["CONSUMER", "NAMES", name] => ("consumer_names_response", *name, false),
            ["CONSUMER", "LIST", name] => ("consumer_list_response", *name, false),
            _ => return None,
        };
        let unserved = match self.stream(name) {
            Some(copy) => writes && copy.config().is_replicated(),
            None => self.replicated(name).is_some(),
        };
        unserved.then_some((kind, name))
    }
}

/// Whether consumer `cfg` (as requested, before normalizing) may live on this member's copy
/// of replicated stream `stream` (see the module documentation): an ephemeral consumer, or a
/// durable one with `num_replicas: 1`, on a stream with limits retention. Such a consumer is
/// this member's alone (as nats-server's R1 consumers on an R3 stream): it reads the copy,
/// and is lost with the member or its copy. Everything else answers 10036.
pub(crate) fn check_consumer_on_copy(
    stream: &StreamConfig,
    cfg: &ConsumerConfig,
) -> Result<(), ApiError> {
    if stream.retention != Retention::Limits {
        return Err(JsError::ClusterUnSupportFeature.with(
            "consumers on replicated streams with interest or workqueue retention must be \
             replicated durables (their acks remove messages from every copy through the \
             stream's group): an ephemeral consumer, or one with num_replicas 1, would remove \
             them from one copy only",
        ));
    }
    let durable = cfg.is_durable();
    if cfg.num_replicas > 1 || (durable && cfg.num_replicas != 1) {
        return Err(JsError::ClusterUnSupportFeature.with(
            "replicated consumers are not supported yet (they need consumer groups): use an \
             ephemeral consumer, or a durable one with num_replicas 1, which lives on this \
             member's copy of the stream only",
        ));
    }
    Ok(())
}

impl JetStream {
    /// Tells the consumers of this member's copy of replicated stream `name` that the group
    /// applied `appended` to the copy (sequence and subject of each stored message, in
    /// order), as a stream's own task does after each append; `trimmed`: the stream's limits
    /// removed older messages in the same commits. Also moves [`JetStream::watch_appended`].
    pub fn replica_appended<'a>(
        &self,
        name: &str,
        appended: impl IntoIterator<Item = (u64, &'a str)>,
        trimmed: bool,
    ) {
        let Some(stream) = self.inner.stream(name) else {
            return;
        };
        for (seq, subject) in appended {
            stream.consumers_appended(seq, subject);
        }
        if trimmed {
            stream.consumers_recount();
        }
    }

    /// Creates this member's copy of replicated stream `config` (`num_replicas` > 1) created at
    /// `created_ns` (the same on every member): it answers reads and its stream task takes no
    /// publish; the clustered server writes its store (see the module documentation). `false` when the copy exists with this configuration.
    pub async fn create_replica(
        &self,
        config: StreamConfig,
        created_ns: i64,
    ) -> Result<bool, ApiError> {
        let inner = &self.inner;
        if !config.is_replicated() {
            return Err(ApiError::invalid_config("not a replicated stream"));
        }
        match inner.stream(&config.name) {
            Some(s) if s.config() == config => return Ok(false),
            // The same stream, updated while this member did not see it.
            Some(s) if s.config().is_replicated() && s.created_ns == created_ns => {
                inner.apply_update(&s, config).await?;
                return Ok(false);
            }
            Some(_) => return Err(ApiError::stream_name_exists()),
            None => {}
        }
        inner.store_new_stream(config, created_ns).await?;
        Ok(true)
    }

    /// Stops plain (R1) stream `name` from taking anything (its
    /// subjects unsubscribed, its sources stopped) and waits, at most 10 s, until what it
    /// took is stored and answered: its store's last sequence and the time of that message
    /// (`None` for none held). The first step of making it a replicated stream's copy
    /// (hubd); [`JetStream::plain_to_copy`] is the last.
    pub async fn quiesce_plain(&self, name: &str) -> Result<(u64, Option<i64>), ApiError> {
        let inner = &self.inner;
        let stream = match inner.stream(name) {
            Some(s) if !s.config().is_replicated() => s,
            _ => return Err(ApiError::stream_not_found()),
        };
        inner.unsubscribe_subjects(name);
        super::source::stop_all(&stream);
        let drained = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while stream.queued() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        if drained.is_err() {
            return Err(ApiError::general("the stream still stores what it took"));
        }
        let store = inner.store_of(name);
        let failed = |e: leaf_store::StoreError| ApiError::general(&e.to_string());
        let last = store
            .stream_state(name)
            .map_err(failed)?
            .map_or(0, |s| s.last_seq);
        let ts = store.get(name, last).map_err(failed)?.map(|m| m.ts_ns);
        Ok((last, ts))
    }

    /// Makes `config` (`num_replicas` > 1) the configuration of this member's plain stream
    /// `config.name`, stopped with [`JetStream::quiesce_plain`], and `created_ns` (the
    /// cluster's assignment's) its creation time: from now on it is a replicated stream's
    /// copy (its stream task takes nothing, hubd's group writes it), with its messages. Its
    /// consumers stay, as R1 consumers of the copy: each stopped (its last state written),
    /// a durable one's record made to say `num_replicas: 1` (else it would be taken for a
    /// replicated consumer, which a copy does not resume), then the stream reopened as a copy
    /// with them. Nothing to do when it is a copy already.
    pub async fn plain_to_copy(
        &self,
        config: StreamConfig,
        created_ns: i64,
    ) -> Result<(), ApiError> {
        let inner = &self.inner;
        if !config.is_replicated() {
            return Err(ApiError::invalid_config("not a replicated stream"));
        }
        let name = config.name.clone();
        let stream = match inner.stream(&name) {
            Some(s) if s.config().is_replicated() => return Ok(()),
            Some(s) => s,
            None => return Err(ApiError::stream_not_found()),
        };
        let store = inner.store_for(config.storage).clone();
        let failed = |e: leaf_store::StoreError| ApiError::general(&e.to_string());
        for c in stream.consumers_snapshot() {
            stream.remove_consumer(&c.name);
            c.stop().await;
        }
        for (cname, bytes) in store.consumers(&name).map_err(failed)? {
            let durable = super::consumer::decode_record(&bytes)
                .is_ok_and(|(c, _)| c.is_durable() && c.num_replicas != 1);
            if cname.contains('.') || !durable {
                continue;
            }
            let Ok(mut record) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            record["config"]["num_replicas"] = serde_json::json!(1);
            let bytes = serde_json::to_vec(&record).unwrap_or(bytes);
            store
                .put_consumer(&name, &cname, bytes)
                .await
                .map_err(failed)?;
        }
        reopen_with(inner, &store, config, created_ns).await
    }

    /// Makes this member's copy of replicated stream `config.name` a plain (R1) stream of
    /// configuration `config` (`num_replicas` 1) created at `created_ns`, the reverse of
    /// [`JetStream::plain_to_copy`] (hubd: its group shrank to this member and was stopped):
    /// its consumers stopped, the stream reopened from its store as a plain stream (its
    /// subjects subscribed, its own task stores from its last sequence, the dedupe window
    /// rebuilt from the stored ids) with the consumers stored for it. Nothing to do when it
    /// is a plain stream already.
    pub async fn copy_to_plain(
        &self,
        config: StreamConfig,
        created_ns: i64,
    ) -> Result<(), ApiError> {
        let inner = &self.inner;
        if config.is_replicated() {
            return Err(ApiError::invalid_config("a replicated stream"));
        }
        let name = config.name.clone();
        let stream = match inner.stream(&name) {
            Some(s) if s.config().is_replicated() => s,
            Some(_) => return Ok(()),
            None => return Err(ApiError::stream_not_found()),
        };
        let store = inner.store_for(config.storage).clone();
        for c in stream.consumers_snapshot() {
            stream.remove_consumer(&c.name);
            c.stop().await;
        }
        reopen_with(inner, &store, config, created_ns).await
    }

    /// Makes `config` (an update the cluster agreed on) the configuration of this member's
    /// copy of replicated stream `config.name`: stored, its store's limits set (tighter ones
    /// apply at once, as on a single server); its stream task still takes nothing.
    pub async fn update_replica(&self, config: StreamConfig) -> Result<(), ApiError> {
        let inner = &self.inner;
        if !config.is_replicated() {
            return Err(ApiError::invalid_config("not a replicated stream"));
        }
        match inner.stream(&config.name) {
            Some(s) if s.config() == config => Ok(()),
            Some(s) if s.config().is_replicated() => inner.apply_update(&s, config).await,
            _ => Err(ApiError::stream_not_found()),
        }
    }

    /// Deletes this member's copy of replicated stream `name` with its data; `false` when
    /// there is none (an R1 stream of that name is never touched).
    pub async fn delete_replica(&self, name: &str) -> Result<bool, ApiError> {
        let inner = &self.inner;
        match inner.stream(name) {
            Some(s) if s.config().is_replicated() => inner.remove_stream(name).await.map(|()| true),
            _ => Ok(false),
        }
    }

    /// The account this engine serves (`None` once the server is gone): a clustered server
    /// subscribes a replicated stream's subjects there on the member leading its group.
    pub fn account(&self) -> Option<std::sync::Arc<crate::server::Account>> {
        self.inner.server.upgrade()
    }

    /// Starts the task of replicated consumer `config` (see [`wants_group`]) on this member's
    /// copy of stream `stream`, from `record` (its group's last applied state record; `None`:
    /// a new consumer created at `created_ns`), its state records going to `sink` (the
    /// group's proposals): hubd does this on the member leading the consumer's group. The
    /// configuration is `config` (the cluster's, which an update may have changed since the
    /// record was written), the creation time the record's. A task running already is
    /// stopped first.
    pub async fn start_group_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
        created_ns: i64,
        record: Option<Vec<u8>>,
        sink: std::sync::Arc<dyn super::consumer::RecordSink>,
    ) -> Result<(), ApiError> {
        let inner = &self.inner;
        let Some(s) = inner.stream(stream) else {
            return Err(ApiError::stream_not_found());
        };
        let name = config.consumer_name().unwrap_or_default().to_owned();
        self.stop_group_consumer(stream, &name, true).await;
        let created_ns = match &record {
            Some(bytes) => {
                super::consumer::decode_record(bytes)
                    .map_err(|e| JsError::ConsumerCreate.with(&e))?
                    .1
            }
            None => created_ns,
        };
        let handle = super::consumer::start_with_sink(
            &s,
            inner.store_of(stream).clone(),
            inner.server.clone(),
            config,
            created_ns,
            record,
            Some(sink),
        )
        .map_err(|e| JsError::ConsumerCreate.with(&e))?;
        s.add_consumer(handle);
        Ok(())
    }

    /// Gives the task of replicated consumer `config`'s name on this member's copy of
    /// `stream`, if it runs here, the configuration `config` (an update the cluster agreed
    /// on), as `CONSUMER.CREATE` updates a single server's consumer. Whether it ran.
    pub async fn update_group_consumer(&self, stream: &str, config: ConsumerConfig) -> bool {
        let Some(s) = self.inner.stream(stream) else {
            return false;
        };
        let Some(c) = s.consumer(config.consumer_name().unwrap_or_default()) else {
            return false;
        };
        if c.config() == config {
            return true;
        }
        *c.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        c.send(super::handle::Cmd::Update(Box::new(config), tx));
        rx.await.is_ok()
    }

    /// Stops the task of consumer `name` of this member's copy of `stream`, waiting for its
    /// write in flight; its stored record stays. `handover`: its group's lead was lost (the
    /// waiting pull requests are told `409 Leadership Change`), else it is deleted or the
    /// member stops (`409 Consumer Deleted`). Whether it ran.
    pub async fn stop_group_consumer(&self, stream: &str, name: &str, handover: bool) -> bool {
        let Some(s) = self.inner.stream(stream) else {
            return false;
        };
        match s.remove_consumer(name) {
            Some(c) if handover => {
                c.hand_over().await;
                true
            }
            Some(c) => {
                c.stop().await;
                true
            }
            None => false,
        }
    }

    /// Serves a pull request forwarded by another member (see `Replication::forward_pull`)
    /// for consumer `name` of this member's copy of `stream`: its messages (or its status) go
    /// to `reply`, as if a client of this account had asked here.
    pub fn forwarded_pull(&self, stream: &str, name: &str, reply: &str, payload: Vec<u8>) {
        self.inner.pull_request(
            &format!("{stream}.{name}"),
            crate::server::ReplyTo::anyone(reply),
            bytes::Bytes::from(payload),
        );
    }

    /// Deletes the stored record of replicated consumer `name` of this member's copy of
    /// `stream` (the consumer is deleted), its task stopped first.
    pub async fn delete_group_consumer(&self, stream: &str, name: &str) -> Result<(), ApiError> {
        self.stop_group_consumer(stream, name, false).await;
        if self.inner.stream(stream).is_none() {
            return Ok(());
        }
        match self
            .inner
            .store_of(stream)
            .delete_consumer(stream, name)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::general(&e.to_string())),
        }
    }

    /// The names of this member's copies of replicated streams.
    pub fn replica_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .streams_snapshot()
            .iter()
            .filter(|s| s.config().is_replicated())
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }
}

/// The error of a request on a replicated stream not served yet.
pub(crate) fn unserved() -> ApiError {
    JsError::ClusterUnSupportFeature.err()
}

/// Closes stream `config.name` of `inner`, stores `config` (created at `created_ns`) as its
/// configuration and opens it again from its store with its stored consumers: how a plain
/// stream becomes a copy and back ([`JetStream::plain_to_copy`], [`JetStream::copy_to_plain`]).
async fn reopen_with(
    inner: &Inner,
    store: &leaf_store::Store,
    config: StreamConfig,
    created_ns: i64,
) -> Result<(), ApiError> {
    let name = config.name.clone();
    inner.close_stream(&name);
    let record = super::StoredConfig {
        config: config.clone(),
        created_ns,
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    store
        .update_stream_config(&name, bytes)
        .await
        .map_err(|e| ApiError::general(&e.to_string()))?;
    inner.open_stream(&name, config, created_ns)?;
    inner.restore_consumers(&name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::requested_replicas;
    use crate::jetstream::config::StreamConfig;
    use crate::jetstream::{test_support, JetStream};

    /// A replicated stream's copy exists and is stored, but subscribes nothing (no publish
    /// reaches it), even once opened again from the store; deleting copies never touches an
    /// R1 stream; an R1 configuration is no copy.
    #[tokio::test]
    async fn copies_take_no_publish_and_only_copies_are_deleted_as_such() {
        let server = test_support::server().await;
        let shared = server.shared().clone();
        let dir = tempfile::tempdir().unwrap();
        let options = test_support::options(dir.path());
        let account = shared.global().clone();
        let js = JetStream::start(&shared, &account, options).unwrap();
        let copy = StreamConfig {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..StreamConfig::default()
        };
        assert_eq!(js.create_replica(copy.clone(), 42).await, Ok(true));
        assert_eq!(js.create_replica(copy.clone(), 42).await, Ok(false));
        assert_eq!(js.replica_names(), ["R3"]);
        assert_eq!(js.stream_created_ns("R3"), Some(42));
        assert!(!account.has_interest(b"r3.x"), "a copy subscribes nothing");
        let r1 = StreamConfig {
            name: "R1".into(),
            subjects: vec!["r1.>".into()],
            ..StreamConfig::default()
        };
        assert!(js.create_replica(r1.clone(), 1).await.is_err());
        js.ensure_stream(&r1).await.unwrap();
        assert!(account.has_interest(b"r1.x"), "an R1 stream captures");
        assert_eq!(js.delete_replica("R1").await, Ok(false));
        assert_eq!(js.stream_names(), ["R1", "R3"]);
        // Opened again from the store (a restart): still no subscription.
        js.suspend();
        js.resume().unwrap();
        assert_eq!(js.replica_names(), ["R3"]);
        assert!(
            !account.has_interest(b"r3.x"),
            "a reopened copy subscribes nothing"
        );
        assert_eq!(js.delete_replica("R3").await, Ok(true));
        assert_eq!(js.stream_names(), ["R1"]);
    }

    /// Ephemeral consumers and durable ones with `num_replicas: 1` may live on a copy of a
    /// limits stream; replicated consumers, and consumers of interest or workqueue streams,
    /// answer 10036.
    #[test]
    fn consumers_on_copies_are_ephemeral_or_r1() {
        use super::check_consumer_on_copy;
        use crate::jetstream::config::consumer::ConsumerConfig;
        use crate::jetstream::config::Retention;
        let stream = StreamConfig {
            name: "KV_b".into(),
            subjects: vec!["$KV.b.>".into()],
            num_replicas: 3,
            ..StreamConfig::default()
        };
        let consumer = |json: &str| -> ConsumerConfig { serde_json::from_str(json).unwrap() };
        let code = |s: &StreamConfig, c: &ConsumerConfig| {
            check_consumer_on_copy(s, c).err().map(|e| e.err_code)
        };
        assert_eq!(code(&stream, &consumer("{}")), None);
        assert_eq!(code(&stream, &consumer(r#"{"name":"e"}"#)), None);
        assert_eq!(code(&stream, &consumer(r#"{"num_replicas":1}"#)), None);
        assert_eq!(code(&stream, &consumer(r#"{"mem_storage":true}"#)), None);
        assert_eq!(
            code(
                &stream,
                &consumer(r#"{"durable_name":"d","num_replicas":1}"#)
            ),
            None
        );
        assert_eq!(
            code(&stream, &consumer(r#"{"durable_name":"d"}"#)),
            Some(10036)
        );
        assert_eq!(
            code(
                &stream,
                &consumer(r#"{"durable_name":"d","num_replicas":3}"#)
            ),
            Some(10036)
        );
        assert_eq!(
            code(&stream, &consumer(r#"{"num_replicas":3}"#)),
            Some(10036)
        );
        let message = check_consumer_on_copy(&stream, &consumer(r#"{"durable_name":"d"}"#))
            .unwrap_err()
            .description;
        assert!(message.contains("consumer groups"), "{message}");
        for retention in [Retention::Interest, Retention::WorkQueue] {
            let s = StreamConfig {
                retention,
                ..stream.clone()
            };
            assert_eq!(code(&s, &consumer("{}")), Some(10036));
        }
    }

    /// A replicated consumer's task started by the clustered server puts its state records
    /// through the group's sink (a new one at once); stopped for a hand-over, its waiting pull
    /// request hears `409 Leadership Change` (nats-server's status), not `Consumer Deleted`.
    #[tokio::test]
    async fn a_group_consumer_writes_through_its_sink_and_hands_over() {
        use crate::jetstream::consumer::{RecordSink, RemovalFuture, WriteFuture};
        use crate::server::fanout::{InternalSink, Msg};
        use crate::server::Publisher;
        use std::sync::{Arc, Mutex};

        struct Recorded(Arc<Mutex<Vec<Vec<u8>>>>);
        impl RecordSink for Recorded {
            fn put(&self, _: &str, _: &str, record: Vec<u8>) -> WriteFuture {
                self.0.lock().unwrap().push(record);
                Box::pin(async { Ok(()) })
            }
            fn remove(&self, _: &str, _: Vec<u64>) -> RemovalFuture {
                Box::pin(async { Ok(0) })
            }
        }
        struct Statuses(Arc<Mutex<Vec<String>>>);
        impl InternalSink for Statuses {
            fn deliver(&self, msg: &Msg<'_>, _: &Publisher) {
                let hdr = String::from_utf8_lossy(msg.headers.unwrap_or_default()).into_owned();
                self.0.lock().unwrap().push(hdr);
            }
        }

        let server = test_support::server().await;
        let shared = server.shared().clone();
        let dir = tempfile::tempdir().unwrap();
        let account = shared.global().clone();
        let js = JetStream::start(&shared, &account, test_support::options(dir.path())).unwrap();
        let stream = StreamConfig {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..StreamConfig::default()
        };
        js.create_replica(stream.clone(), 1).await.unwrap();
        let config: crate::jetstream::config::consumer::ConsumerConfig =
            serde_json::from_str(r#"{"durable_name":"D","ack_policy":"explicit"}"#).unwrap();
        let config = config.normalize(&stream).unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        js.start_group_consumer("R3", config, 7, None, Arc::new(Recorded(records.clone())))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while records.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no record put");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (_, created) =
            crate::jetstream::consumer::decode_record(&records.lock().unwrap()[0]).unwrap();
        assert_eq!(created, 7);
        assert!(
            js.store_of("R3").consumers("R3").unwrap().is_empty(),
            "the sink, not the store"
        );
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let _sub = account
            .subscribe_internal(b"_INBOX.t", None, Arc::new(Statuses(statuses.clone())))
            .unwrap();
        js.forwarded_pull("R3", "D", "_INBOX.t", br#"{"batch":1}"#.to_vec());
        // The request is queued before the hand-over (one task, in order).
        assert!(js.stop_group_consumer("R3", "D", true).await);
        let got = statuses.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("409 Leadership Change"), "{got:?}");
        assert!(!js.stop_group_consumer("R3", "D", true).await, "stopped");
    }

    /// Durable consumers of a replicated stream (any retention) without `num_replicas: 1` get
    /// a group; ephemeral, R1 and non-replicated streams' do not.
    #[test]
    fn only_replicated_durables_get_a_group() {
        use super::wants_group;
        use crate::jetstream::config::consumer::ConsumerConfig;
        use crate::jetstream::config::Retention;
        let stream = StreamConfig {
            name: "S".into(),
            num_replicas: 3,
            ..StreamConfig::default()
        };
        let consumer = |json: &str| -> ConsumerConfig { serde_json::from_str(json).unwrap() };
        assert!(wants_group(&stream, &consumer(r#"{"durable_name":"d"}"#)));
        assert!(wants_group(
            &stream,
            &consumer(r#"{"durable_name":"d","num_replicas":3}"#)
        ));
        assert!(!wants_group(
            &stream,
            &consumer(r#"{"durable_name":"d","num_replicas":1}"#)
        ));
        assert!(!wants_group(&stream, &consumer(r#"{"num_replicas":3}"#)));
        let r1 = StreamConfig {
            num_replicas: 1,
            ..stream.clone()
        };
        assert!(!wants_group(&r1, &consumer(r#"{"durable_name":"d"}"#)));
        for retention in [Retention::Interest, Retention::WorkQueue] {
            let s = StreamConfig {
                retention,
                ..stream.clone()
            };
            assert!(wants_group(&s, &consumer(r#"{"durable_name":"d"}"#)));
            assert!(!wants_group(
                &s,
                &consumer(r#"{"durable_name":"d","num_replicas":1}"#)
            ));
        }
    }

    #[test]
    fn the_requested_replicas_are_read_leniently() {
        assert_eq!(requested_replicas(br#"{"name":"S","num_replicas":3}"#), 3);
        assert_eq!(requested_replicas(br#"{"name":"S"}"#), 1);
        assert_eq!(requested_replicas(b"not json"), 1);
        assert_eq!(requested_replicas(br#"{"num_replicas":"x"}"#), 1);
    }
}
