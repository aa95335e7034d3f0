//! R1 streams of a JetStream cluster (hubd's), as nats-server 2.9 has them: a stream with
//! `num_replicas` 1 is an assignment of the cluster with one peer, not a stream of whichever
//! member was asked.
//!
//! * **Create** (`STREAM.CREATE`, R0/R1): the hook assigns it ([`Replication::assign_r1`]:
//!   through the meta group, unique names and subjects in the cluster, placed on this member
//!   when it qualifies, else on another one; 10008 without a meta leader). On this member the
//!   ordinary create follows (a **plain** stream: it subscribes its subjects, its own task
//!   stores, its consumers are ordinary ones); on another the request is forwarded there.
//! * **Every other request about it** (`STREAM.INFO`, `UPDATE`, `PURGE`, `MSG.GET`,
//!   `MSG.DELETE`, `DIRECT.GET`, consumer requests) on a member that does not hold it goes to
//!   the member that does ([`Replication::forward`]); that member runs its ordinary handler
//!   ([`JetStream::serve_forwarded`]) and its answer comes back here, to be published to the
//!   request's own reply (an answer confined to the requester stays confined). The wait is
//!   off the API task (a task per forwarded request, bounded in time by the hook). Pull
//!   requests are forwarded by the hook's `forward_pull` (their messages go from the holding
//!   member to the reply subject, over the routes).
//! * **Delete** (`STREAM.DELETE`): the assignment is removed through the cluster; the holding
//!   member deletes its stream (at once when it was asked, else as it applies the removal).
//! * **Update**: the holding member checks it as a single server and has the assignment's
//!   configuration updated (so that subjects stay unique) before applying it.
//! * **Lists**: `STREAM.NAMES` and `STREAM.LIST` show the assigned streams held elsewhere (the
//!   list with the assignment's configuration and an empty state; `STREAM.INFO` has its state).
//!
//! A forwarded request is never forwarded again (a member that does not hold the stream any
//! more answers it itself, e.g. 10059).
//!
//! [`Replication::assign_r1`]: super::replication::Replication::assign_r1
//! [`Replication::forward`]: super::replication::Replication::forward

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::Request;
use super::config::{ApiError, JsError, StreamConfig};
use super::replication::{Replicated, Replication};
use super::wire::ErrorResponse;
use super::{Inner, JetStream};
use crate::server::ReplyTo;

/// An API request sent to the member holding an R1 stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// Its subject (`$JS.API.…`).
    pub subject: String,
    /// Its body.
    pub payload: Vec<u8>,
    /// The requester's reply subject (a pull request's messages go there).
    pub reply: String,
}

/// The answer of the holding member to a [`Forward`]: headers and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// Its headers (a direct get's message headers or status).
    pub headers: Option<Vec<u8>>,
    /// Its body.
    pub body: Vec<u8>,
}

/// What `STREAM.CREATE` of an R1 stream does on a member of a cluster that assigns them.
pub(super) enum R1Create {
    /// The ordinary create (no such cluster, the stream exists here, its configuration does
    /// not read or overlaps one of this member's streams).
    Ordinary,
    /// The cluster assigned it to this member: the ordinary create, its assignment removed
    /// again if that fails.
    Here,
    /// Answered: an error, or `Ok` when the request went to the member it was assigned to
    /// (which answers).
    Answered(Result<(), ApiError>),
}

/// The stream a request (its tokens after `$JS.API.`) is about, for the requests the member
/// holding an R1 stream serves (not `STREAM.CREATE` and `STREAM.DELETE`, which go through
/// the cluster first).
pub(crate) fn r1_scoped<'a>(tokens: &[&'a str]) -> Option<&'a str> {
    match tokens {
        ["STREAM", "INFO" | "UPDATE" | "PURGE", name]
        | ["STREAM", "MSG", "GET" | "DELETE", name]
        | ["STREAM", "LEADER", "STEPDOWN", name]
        | ["STREAM", "PEER", "REMOVE", name]
        | ["DIRECT", "GET", name, ..]
        | ["CONSUMER", "CREATE", name, ..]
        | ["CONSUMER", "DURABLE", "CREATE", name, _]
        | ["CONSUMER", "INFO" | "DELETE", name, _]
        | ["CONSUMER", "NAMES" | "LIST", name]
        | ["CONSUMER", "LEADER", "STEPDOWN", name, _]
        | ["CONSUMER", "MSG", "NEXT", name, _] => Some(name),
        _ => None,
    }
}

impl Inner {
    /// Sends request `req` about stream `name` to the member holding it when `name` is an R1
    /// stream of the cluster that this member does not hold (see the module documentation);
    /// `false` otherwise (this member serves it).
    pub(super) fn forward_r1(&self, name: &str, req: &Request) -> bool {
        if req.forwarded || self.stream(name).is_some() {
            return false;
        }
        let Some((hook, account)) = self.replication() else {
            return false;
        };
        if hook.r1_here(&account, name) != Some(false) {
            return false;
        }
        self.send_forward(hook, account, name, req);
        true
    }

    /// Sends `req` to the member holding R1 stream `name`, its answer (or the error) going
    /// to the request's reply later.
    fn send_forward(&self, hook: Arc<dyn Replication>, account: String, name: &str, req: &Request) {
        let Some(reply) = req.reply.clone() else {
            return; // nobody to answer
        };
        let request = Forward {
            subject: req.subject.clone(),
            payload: req.payload.to_vec(),
            reply: reply.subject().to_owned(),
        };
        let server = self.server.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let answer = hook.forward(&account, &name, request).await;
            let Some(server) = server.upgrade() else {
                return;
            };
            match answer {
                Ok(Some(a)) => {
                    server.answer(&reply, a.headers.as_deref(), &a.body);
                }
                Ok(None) => {}
                Err(error) => {
                    let body = ErrorResponse { kind: None, error };
                    server.answer(&reply, None, &serde_json::to_vec(&body).unwrap_or_default());
                }
            }
        });
    }

    /// `STREAM.CREATE` of an R1 stream on a member of a cluster that assigns them (see
    /// [`R1Create`]).
    pub(super) async fn create_r1(&self, name: &str, req: &Request) -> R1Create {
        let Some((hook, account)) = self.replication() else {
            return R1Create::Ordinary;
        };
        if !hook.clusters_r1() || self.stream(name).is_some() {
            return R1Create::Ordinary;
        }
        let Some(cfg) = self
            .read_config(name, &req.payload)
            .ok()
            .and_then(|c| c.normalize().ok())
        else {
            return R1Create::Ordinary; // the ordinary create answers the error
        };
        // Overlaps with this member's streams: the ordinary create answers them.
        if self.check_overlap(&cfg).is_err() {
            return R1Create::Ordinary;
        }
        match hook.assign_r1(&account, cfg).await {
            Ok(true) => R1Create::Here,
            Ok(false) if req.forwarded => R1Create::Answered(Err(JsError::ClusterNotAvail.err())),
            Ok(false) => {
                self.send_forward(hook, account, name, req);
                R1Create::Answered(Ok(()))
            }
            Err(e) => R1Create::Answered(Err(e)),
        }
    }

    /// After R1 stream `name` was assigned to this member and its create failed here (a
    /// limit, the store): its assignment is removed again (a failure is logged; the
    /// member's follower keeps trying to create it then).
    pub(super) async fn undo_r1(&self, name: &str) {
        let Some((hook, account)) = self.replication() else {
            return;
        };
        if let Err(e) = hook.remove_r1(&account, name).await {
            tracing::warn!(stream = name, error = %e.description,
                           "an R1 stream not created here keeps its assignment");
        }
    }

    /// `STREAM.DELETE` of an R1 stream the cluster assigned: `None` when `name` has no such
    /// assignment, or this member holds a stream of that name that another member's
    /// assignment does not account for (deleted here only). The assignment is removed; this
    /// member's stream, when it holds it, deleted at once (else its member deletes it as it
    /// applies the removal).
    pub(super) async fn delete_r1(&self, name: &str) -> Option<Result<(), ApiError>> {
        let (hook, account) = self.replication()?;
        let here = hook.r1_here(&account, name)?;
        let local = self
            .stream(name)
            .is_some_and(|s| !s.config().is_replicated());
        if local && !here {
            return None;
        }
        if let Err(e) = hook.remove_r1(&account, name).await {
            return Some(Err(e));
        }
        if local && self.stream(name).is_some() {
            // Gone already when the removal's apply got there first.
            if let Err(e) = self.remove_stream(name).await {
                if self.stream(name).is_some() {
                    return Some(Err(e));
                }
            }
        }
        Some(Ok(()))
    }

    /// Before this member's R1 stream `cfg.name` is updated to `cfg` (checked): its
    /// assignment's configuration through the cluster, when it has one here.
    pub(super) async fn update_r1_assignment(&self, cfg: &StreamConfig) -> Result<(), ApiError> {
        let Some((hook, account)) = self.replication() else {
            return Ok(());
        };
        if hook.r1_here(&account, &cfg.name) != Some(true) {
            return Ok(());
        }
        hook.update_r1(&account, cfg.clone()).await
    }

    /// The R1 streams the cluster assigned to other members (for `STREAM.NAMES` and
    /// `STREAM.LIST`).
    pub(super) fn r1_elsewhere(&self) -> Vec<Replicated> {
        let Some((hook, account)) = self.replication() else {
            return Vec::new();
        };
        hook.r1_streams(&account)
            .into_iter()
            .filter(|r| self.stream(&r.config.name).is_none())
            .collect()
    }
}

/// The account's streams and consumers as `$JS.API.INFO` counts them in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterCounts {
    /// The account's streams: its assignments (R1 and replicated, whichever member holds
    /// them) and this member's streams no assignment accounts for.
    pub(crate) streams: usize,
    /// The replicated consumers assigned, and the other consumers of this member's streams
    /// and copies (those of R1 streams held elsewhere are on their member: not counted).
    pub(crate) consumers: usize,
}

impl Inner {
    /// What `STREAM.INFO` shows as `cluster` of plain stream `name` when it is an R1 stream
    /// the cluster assigned to this member (the cluster's name, this member as its leader,
    /// as nats-server shows an R1 stream of a cluster); `None` otherwise.
    pub(crate) fn r1_cluster(&self, name: &str) -> Option<super::wire::ClusterInfo> {
        let (hook, account) = self.replication()?;
        if hook.r1_here(&account, name) != Some(true) {
            return None;
        }
        hook.r1_streams(&account)
            .into_iter()
            .find(|r| r.config.name == name)
            .map(|r| r.cluster)
    }

    /// The account's counts across the cluster (`None` without a cluster that assigns R1
    /// streams: the engine's own counts then), as nats-server's clustered account info: the
    /// streams are the account's assignments.
    pub(crate) fn cluster_counts(&self) -> Option<ClusterCounts> {
        let (hook, account) = self.replication()?;
        if !hook.clusters_r1() {
            return None;
        }
        let replicated = hook.streams(&account);
        let mut names: std::collections::BTreeSet<String> = replicated
            .iter()
            .map(|r| r.config.name.clone())
            .chain(hook.r1_streams(&account).into_iter().map(|r| r.config.name))
            .collect();
        let mut consumers = 0;
        for r in &replicated {
            consumers += hook.consumer_names(&account, &r.config.name).len();
        }
        for stream in self.streams_snapshot().iter() {
            names.insert(stream.name.clone());
            let grouped = if stream.config().is_replicated() {
                hook.consumer_names(&account, &stream.name)
            } else {
                Vec::new()
            };
            consumers += stream
                .consumers_snapshot()
                .iter()
                .filter(|c| !grouped.contains(&c.name))
                .count();
        }
        Some(ClusterCounts {
            streams: names.len(),
            consumers,
        })
    }
}

impl JetStream {
    /// The account's most streams (`None`: unlimited); in a cluster the meta group holds the
    /// account's assignments to it.
    pub fn max_streams(&self) -> Option<u64> {
        self.inner.max_streams()
    }

    /// Serves an API request another member of the cluster forwarded (see the module
    /// documentation) as if a client of this engine's account had sent it: the answer, or
    /// `None` (a pull request: its messages go to the request's reply subject from here).
    /// Nothing is forwarded again.
    pub async fn serve_forwarded(&self, request: Forward) -> Option<Forwarded> {
        // Only a pull request's deliveries go to the reply subject from here; every other
        // answer goes back to the member asked, which answers its client.
        let pull = request.subject.starts_with("$JS.API.CONSUMER.MSG.NEXT.");
        let req = Request {
            subject: request.subject,
            reply: pull.then(|| ReplyTo::anyone(request.reply)),
            payload: bytes::Bytes::from(request.payload),
            forwarded: true,
        };
        self.inner.dispatch(&req).await.into_forwarded()
    }

    /// Creates the plain (R1) stream `config` the cluster assigned to this member, created at
    /// `created_ns`, unless a stream of that name exists here: whether it created it.
    pub async fn create_assigned(
        &self,
        config: StreamConfig,
        created_ns: i64,
    ) -> Result<bool, ApiError> {
        let inner = &self.inner;
        if config.is_replicated() {
            return Err(ApiError::invalid_config("a replicated stream"));
        }
        if inner.stream(&config.name).is_some() {
            return Ok(false);
        }
        inner.check_overlap(&config)?;
        let name = config.name.clone();
        match inner.store_new_stream(config, created_ns).await {
            Ok(()) => Ok(true),
            // Created meanwhile by the API (the same assignment).
            Err(_) if inner.stream(&name).is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes this member's plain stream `name` (its R1 assignment was removed): whether
    /// there was one (a copy of a replicated stream is never touched).
    pub async fn delete_assigned(&self, name: &str) -> Result<bool, ApiError> {
        let inner = &self.inner;
        match inner.stream(name) {
            Some(s) if !s.config().is_replicated() => {
                inner.remove_stream(name).await.map(|()| true)
            }
            _ => Ok(false),
        }
    }

    /// This engine's plain (R1) streams: configuration and creation time.
    pub fn plain_streams(&self) -> Vec<(StreamConfig, i64)> {
        let mut streams: Vec<(StreamConfig, i64)> = self
            .inner
            .streams_snapshot()
            .iter()
            .map(|s| (s.config(), s.created_ns))
            .filter(|(c, _)| !c.is_replicated())
            .collect();
        streams.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        streams
    }
}

#[cfg(test)]
mod tests {
    use super::r1_scoped;

    #[test]
    fn the_requests_about_one_stream_are_scoped() {
        let scoped = |s: &str| {
            let tokens: Vec<&str> = s.split('.').collect();
            r1_scoped(&tokens).map(str::to_owned)
        };
        for s in [
            "STREAM.INFO.S",
            "STREAM.UPDATE.S",
            "STREAM.PURGE.S",
            "STREAM.MSG.GET.S",
            "STREAM.MSG.DELETE.S",
            "DIRECT.GET.S",
            "DIRECT.GET.S.a.b",
            "CONSUMER.CREATE.S",
            "CONSUMER.CREATE.S.c.f",
            "CONSUMER.DURABLE.CREATE.S.d",
            "CONSUMER.INFO.S.c",
            "CONSUMER.DELETE.S.c",
            "CONSUMER.NAMES.S",
            "CONSUMER.LIST.S",
            "CONSUMER.MSG.NEXT.S.c",
        ] {
            assert_eq!(scoped(s).as_deref(), Some("S"), "{s}");
        }
        for s in ["STREAM.CREATE.S", "STREAM.DELETE.S", "STREAM.NAMES", "INFO"] {
            assert_eq!(scoped(s), None, "{s}");
        }
    }
}
