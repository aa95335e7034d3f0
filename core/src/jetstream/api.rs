//! The `$JS.API.` request handlers (and `$JS.<domain>.API.` when a domain is set).
//!
//! Requests arrive through an internal subscription and are handled one at a time by the API
//! task, in arrival order; replies are published to the request's reply subject, only where
//! the requester may publish itself (see [`crate::server::reply`]). Bodies are
//! JSON shaped as nats-server shapes them: stream and consumer infos, the consumer create
//! request and the `type`/`error` envelopes are the typed bodies of [`super::wire`] (shared
//! with sources and the leafd uplink), configurations those of [`super::config`]; the
//! answers nobody else reads (account info, names, lists, deletes) are built here. Pull and
//! push consumers are created, listed, described and deleted here (see [`super::consumer`]
//! for how they run); the 2.11 consumer requests (PAUSE, UNPIN, RESET) get an error saying
//! they are not supported yet.
//!
//! On a clustered server, replicated streams (`num_replicas` > 1) go to the server's hook
//! (see [`super::replication`]), and R1 streams are the cluster's assignments, served by the
//! member holding each (see [`super::cluster_r1`]).

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::consumer::ConsumerConfig;
use super::config::{ApiError, JsError, Storage, StreamConfig};
use super::consumer;
use super::handle::{Cmd, ConsumerHandle};
use super::info_request::InfoRequest;
use super::reads::{Read, ReadAnswer};
use super::retention;
use super::wire::{
    ConsumerCreateRequest, ConsumerInfo, ErrorResponse, MsgGetRequest, MsgGetResponse, Response,
    StoredMsg, StreamInfo, StreamInfoResponse, StreamState, TYPE_PREFIX,
};
use super::{Inner, StoredConfig};
use crate::server::ReplyTo;
use leaf_proto::headers;
use leaf_proto::subject::subjects_overlap;
use leaf_proto::time::{now_ns, rfc3339};
use leaf_store::{PurgeRequest, StoreError, StoredMessage};

/// One API request, copied off the publisher's buffer.
pub(crate) struct Request {
    /// The subject with any `$JS.<domain>.` prefix turned into `$JS.`.
    pub(crate) subject: String,
    /// Where the answer may go (only the requester, when it may not publish there itself).
    pub(crate) reply: Option<ReplyTo>,
    pub(crate) payload: Bytes,
    /// Sent by another member of the cluster (see [`super::cluster_r1`]): never forwarded
    /// again.
    pub(crate) forwarded: bool,
}

/// What the handler answers with.
pub(super) enum Reply {
    /// A JSON answer, serialized.
    Json(Vec<u8>),
    /// A raw message (DIRECT.GET): headers and payload.
    Raw(Vec<u8>, Bytes),
    /// Nothing (someone else answers).
    Nothing,
}

impl Reply {
    /// The answer as it goes back to a member that forwarded the request (`None`: nothing).
    pub(super) fn into_forwarded(self) -> Option<super::cluster_r1::Forwarded> {
        match self {
            Reply::Json(body) => Some(super::cluster_r1::Forwarded {
                headers: None,
                body,
            }),
            Reply::Raw(hdr, payload) => Some(super::cluster_r1::Forwarded {
                headers: Some(hdr),
                body: payload.to_vec(),
            }),
            Reply::Nothing => None,
        }
    }
}

/// Which subject form created a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateForm {
    /// `CONSUMER.CREATE.<stream>`.
    LegacyEphemeral,
    /// `CONSUMER.DURABLE.CREATE.<stream>.<durable>`.
    LegacyDurable,
    /// `CONSUMER.CREATE.<stream>.<name>[.<filter>]`.
    Named,
}

/// What `STREAM.CREATE` did.
enum Created {
    /// Created the stream: its info.
    New(Box<StreamInfoResponse>),
    /// The stream existed with the same configuration.
    Existed,
}

/// The stream and the read of a `STREAM.MSG.GET` or `DIRECT.GET` request (the request's
/// tokens after `$JS.API.`, and its body).
fn replicated_read<'a>(tokens: &[&'a str], payload: &[u8]) -> Option<(&'a str, Read)> {
    let (name, direct, last_by) = match tokens {
        ["STREAM", "MSG", "GET", name] => (*name, false, None),
        ["DIRECT", "GET", name] => (*name, true, None),
        ["DIRECT", "GET", name, subject @ ..] if !subject.is_empty() => {
            (*name, true, Some(subject.join(".")))
        }
        _ => return None,
    };
    let read = Read {
        direct,
        last_by,
        payload: payload.to_vec(),
    };
    Some((name, read))
}

/// The answer of kind `kind` (`stream_info_response`…) with `body`'s fields after its `type`.
fn ok<T: Serialize>(kind: &str, body: T) -> Reply {
    Reply::Json(serde_json::to_vec(&Response::new(kind, body)).unwrap_or_default())
}

/// The error answer of kind `kind`.
fn err(kind: &str, e: &ApiError) -> Reply {
    let body = ErrorResponse {
        kind: Some(format!("{TYPE_PREFIX}{kind}")),
        error: e.clone(),
    };
    Reply::Json(serde_json::to_vec(&body).unwrap_or_default())
}

/// A `STREAM.LIST` or `CONSUMER.LIST` page.
#[derive(Serialize)]
struct ListPage<T> {
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(flatten)]
    items: T,
    missing: [(); 0],
}

/// The items of a `STREAM.LIST` page.
#[derive(Serialize)]
struct Streams {
    streams: Vec<StreamInfo>,
}

/// The items of a `CONSUMER.LIST` page.
#[derive(Serialize)]
struct Consumers {
    consumers: Vec<ConsumerInfo>,
}

impl Inner {
    /// Handles one request and publishes its reply.
    pub(crate) async fn handle(&self, req: Request) {
        let Some(reply_to) = req.reply.clone() else {
            return; // nobody to answer
        };
        let reply = self.dispatch(&req).await;
        let Some(server) = self.server.upgrade() else {
            return;
        };
        match reply {
            Reply::Json(body) => {
                server.answer(&reply_to, None, &body);
            }
            Reply::Raw(hdr, payload) => {
                server.answer(&reply_to, Some(&hdr), &payload);
            }
            Reply::Nothing => {}
        }
    }

    pub(super) async fn dispatch(&self, req: &Request) -> Reply {
        let Some(rest) = req.subject.strip_prefix("$JS.API.") else {
            return err(
                "error_response",
                &ApiError::bad_request("unknown API subject"),
            );
        };
        let tokens: Vec<&str> = rest.split('.').collect();
        // An R1 stream of the cluster held by another member: served there (see
        // [`super::cluster_r1`]).
        if let Some(name) = super::cluster_r1::r1_scoped(&tokens) {
            if self.forward_r1(name, req) {
                return Reply::Nothing;
            }
        }
        // A replicated stream's messages are read on its group's leader (see [`super::reads`]).
        if let Some((name, read)) = replicated_read(&tokens, &req.payload) {
            if self.read_replicated(name, read, req.reply.as_ref()) {
                return Reply::Nothing;
            }
        }
        if let Some((kind, _)) = self.unserved_replicated(&tokens) {
            return err(kind, &super::replication::unserved());
        }
        match tokens.as_slice() {
            ["INFO"] => self.account_info(),
            ["STREAM", "CREATE", name] => self.stream_create(name, req).await,
            ["STREAM", "UPDATE", name] => self.stream_update(name, &req.payload).await,
            ["STREAM", "INFO", name] => self.stream_info(name, &req.payload),
            ["STREAM", "DELETE", name] => self.stream_delete(name).await,
            ["STREAM", "LEADER", "STEPDOWN", name] => self.stream_leader_stepdown(name).await,
            ["STREAM", "PURGE", name] => self.stream_purge(name, &req.payload).await,
            ["STREAM", "PEER", "REMOVE", name] => self.stream_peer_remove(name, &req.payload).await,
            ["STREAM", "NAMES"] => self.stream_names(&req.payload),
            ["STREAM", "LIST"] => self.stream_list(&req.payload),
            ["STREAM", "MSG", "GET", name] => self.msg_get(name, &req.payload),
            ["STREAM", "MSG", "DELETE", name] => self.msg_delete(name, &req.payload).await,
            ["DIRECT", "GET", name] => self.direct_get(name, &req.payload, None),
            ["DIRECT", "GET", name, subject @ ..] if !subject.is_empty() => {
                self.direct_get(name, &req.payload, Some(subject.join(".")))
            }
            ["CONSUMER", "CREATE", stream] => {
                self.consumer_create(
                    stream,
                    None,
                    None,
                    CreateForm::LegacyEphemeral,
                    &req.payload,
                )
                .await
            }
            ["CONSUMER", "CREATE", stream, name, filter @ ..] => {
                let filter = (!filter.is_empty()).then(|| filter.join("."));
                self.consumer_create(stream, Some(name), filter, CreateForm::Named, &req.payload)
                    .await
            }
            ["CONSUMER", "DURABLE", "CREATE", stream, name] => {
                self.consumer_create(
                    stream,
                    Some(name),
                    None,
                    CreateForm::LegacyDurable,
                    &req.payload,
                )
                .await
            }
            ["CONSUMER", "INFO", stream, name] => self.consumer_info(stream, name).await,
            ["CONSUMER", "DELETE", stream, name] => self.consumer_delete(stream, name).await,
            ["CONSUMER", "NAMES", stream] => self.consumer_names(stream, &req.payload),
            ["CONSUMER", "LIST", stream] => self.consumer_list(stream, &req.payload).await,
            ["CONSUMER", "LEADER", "STEPDOWN", stream, name] => {
                self.consumer_leader_stepdown(stream, name).await
            }
            ["CONSUMER", "MSG", "NEXT", stream, name] => {
                if let Some(reply) = &req.reply {
                    self.pull_request(
                        &format!("{stream}.{name}"),
                        reply.clone(),
                        req.payload.clone(),
                    );
                }
                Reply::Nothing
            }
            ["CONSUMER", ..] => err("error_response", &JsError::NotSupportedYet.err()),
            _ => err(
                "error_response",
                &ApiError::bad_request("unknown or unsupported JetStream API request"),
            ),
        }
    }

    fn account_info(&self) -> Reply {
        let streams = self.streams_snapshot();
        // In a cluster: the account's assignments (see `cluster_r1`).
        let counts = self.cluster_counts();
        let used = |storage: Storage| -> u64 {
            streams
                .iter()
                .filter(|s| s.config().storage == storage)
                .filter_map(|s| self.store_for(storage).stream_state(&s.name).ok().flatten())
                .map(|s| s.bytes)
                .sum()
        };
        let mut body = json!({
            "memory": used(Storage::Memory),
            "storage": used(Storage::File),
            "reserved_memory": 0,
            "reserved_storage": 0,
            "streams": counts.map_or(streams.len(), |c| c.streams),
            "consumers": counts.map_or_else(
                || streams.iter().map(|s| s.consumer_count()).sum::<usize>(),
                |c| c.consumers,
            ),
            "limits": {
                "max_memory": self.max_memory_bytes, "max_storage": self.max_file_bytes.map_or(-1, |b| b as i64),
                "max_streams": self.max_streams().map_or(-1, |n| n as i64),
                "max_consumers": self.max_consumers().map_or(-1, |n| n as i64),
                "max_ack_pending": -1,
                "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
                "max_bytes_required": false
            },
            // Level 0: the JetStream API of nats-server 2.10, our INFO's feature level.
            "api": {
                "level": 0,
                "total": self.api_total.load(std::sync::atomic::Ordering::Relaxed),
                "errors": 0,
            },
        });
        if let Some(d) = &self.domain {
            body["domain"] = json!(d);
        }
        ok("account_info_response", body)
    }

    /// The info of stream `name` (without any details a request asks for).
    fn info_of(&self, name: &str) -> Result<StreamInfo, ApiError> {
        let stream = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
        let state = self
            .store_for(stream.config().storage)
            .stream_state(name)
            .map_err(|e| ApiError::general(&e.to_string()))?
            .unwrap_or_default();
        let (first_seq, last_seq) = if state.msgs == 0 {
            (state.last_seq + 1, state.last_seq)
        } else {
            (state.first_seq, state.last_seq)
        };
        let (mirror, sources) = super::source::info(&stream);
        // A replicated stream's copy: the cluster's view of its peers; an R1 stream the
        // cluster assigned here: its one peer as leader.
        let cluster = if stream.config().is_replicated() {
            self.replicated(name).map(|r| r.cluster)
        } else {
            self.r1_cluster(name)
        };
        Ok(StreamInfo {
            config: stream.config(),
            created: rfc3339(stream.created_ns),
            state: StreamState {
                messages: state.msgs,
                bytes: state.bytes,
                first_seq,
                first_ts: rfc3339(if state.msgs == 0 {
                    0
                } else {
                    state.first_ts_ns
                }),
                last_seq,
                last_ts: rfc3339(state.last_ts_ns),
                num_subjects: state.num_subjects,
                subjects: None,
                num_deleted: state.num_deleted,
                deleted: Vec::new(),
                consumer_count: stream.consumer_count() as u64,
            },
            domain: None,
            cluster,
            mirror,
            sources,
            ts: Some(rfc3339(now_ns())),
        })
    }

    /// `STREAM.INFO`, with what its body asks for (see [`super::info_request`]).
    fn stream_info(&self, name: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "stream_info_response";
        if self.stream(name).is_none() {
            if let Some(r) = self.replicated(name) {
                return ok(KIND, StreamInfoResponse::from(r.info()));
            }
        }
        let answer = || -> Result<StreamInfoResponse, ApiError> {
            let mut body = StreamInfoResponse::from(self.info_of(name)?);
            let req = InfoRequest::parse(payload)?;
            let state = self
                .store
                .stream_state(name)
                .map_err(|e| ApiError::general(&e.to_string()))?
                .unwrap_or_default();
            req.add_details(self.store_of(name), name, &state, &mut body)?;
            Ok(body)
        };
        match answer() {
            Ok(body) => ok(KIND, body),
            Err(e) => err(KIND, &e),
        }
    }

    fn stream_info_reply(&self, name: &str) -> Reply {
        match self.info_of(name) {
            Ok(info) => ok("stream_info_response", StreamInfoResponse::from(info)),
            Err(e) => err("stream_info_response", &e),
        }
    }

    /// The configuration of a create or update request for stream `name`, as sent.
    pub(crate) fn read_config(&self, name: &str, payload: &[u8]) -> Result<StreamConfig, ApiError> {
        let mut cfg: StreamConfig =
            serde_json::from_slice(payload).map_err(|_| ApiError::invalid_json())?;
        if cfg.name.is_empty() {
            cfg.name = name.to_string();
        }
        if cfg.name != name {
            return Err(ApiError::stream_mismatch());
        }
        Ok(cfg)
    }

    fn parse_config(&self, name: &str, payload: &[u8]) -> Result<StreamConfig, ApiError> {
        self.read_config(name, payload)?.normalize()
    }

    /// Checks that `cfg`'s subjects overlap no other stream's of this engine.
    pub(crate) fn check_overlap(&self, cfg: &StreamConfig) -> Result<(), ApiError> {
        for other in self.streams_snapshot() {
            if other.name == cfg.name {
                continue;
            }
            let theirs = other.config().subjects;
            for a in &cfg.subjects {
                if theirs
                    .iter()
                    .any(|b| subjects_overlap(a.as_bytes(), b.as_bytes()))
                {
                    return Err(ApiError::subjects_overlap());
                }
            }
        }
        Ok(())
    }

    /// Creates or updates a stream for an in-process caller (see `JetStream::ensure_stream`).
    pub(crate) async fn ensure_stream(&self, cfg: &StreamConfig) -> Result<(), ApiError> {
        let payload = serde_json::to_vec(cfg).map_err(|e| ApiError::general(&e.to_string()))?;
        if self.stream(&cfg.name).is_some() {
            let same = self.stream(&cfg.name).map(|s| s.config());
            let wanted = self.parse_config(&cfg.name, &payload)?;
            if same.as_ref() == Some(&wanted) {
                return Ok(());
            }
            self.update_stream(&cfg.name, &payload).await.map(drop)
        } else {
            self.create_stream(&cfg.name, &payload).await.map(drop)
        }
    }

    async fn stream_create(&self, name: &str, req: &Request) -> Reply {
        const KIND: &str = "stream_create_response";
        let payload = &req.payload;
        let mut r1 = super::cluster_r1::R1Create::Ordinary;
        if super::replication::requested_replicas(payload) > 1 {
            if let Some(answer) = self.create_replicated(name, payload).await {
                return match answer {
                    Ok(body) => ok(KIND, body),
                    Err(e) => err(KIND, &e),
                };
            }
        } else {
            r1 = self.create_r1(name, req).await;
        }
        if let super::cluster_r1::R1Create::Answered(answer) = r1 {
            // Sent to the member it was assigned to, or refused by the cluster.
            return match answer {
                Ok(()) => Reply::Nothing,
                Err(e) => err(KIND, &e),
            };
        }
        let assigned_here = matches!(r1, super::cluster_r1::R1Create::Here);
        match self.create_stream(name, payload).await {
            Ok(Created::New(body)) => ok(KIND, *body),
            // Creating the same stream again is fine (answered as STREAM.INFO).
            Ok(Created::Existed) => self.stream_info_reply(name),
            // Created meanwhile as the cluster's assignment was applied here.
            Err(e) if e.err_code == 10058 && self.has_config(name, payload) => {
                self.stream_info_reply(name)
            }
            Err(e) => {
                if assigned_here && self.stream(name).is_none() {
                    self.undo_r1(name).await;
                }
                err(KIND, &e)
            }
        }
    }

    /// Whether stream `name` exists here with the configuration `payload` asks for.
    fn has_config(&self, name: &str, payload: &[u8]) -> bool {
        match (self.stream(name), self.parse_config(name, payload)) {
            (Some(s), Ok(cfg)) => s.config() == cfg,
            _ => false,
        }
    }

    async fn create_stream(&self, name: &str, payload: &[u8]) -> Result<Created, ApiError> {
        let cfg = self.parse_config(name, payload)?;
        if let Some(existing) = self.stream(name) {
            // Creating the same stream again is fine; a different configuration is not.
            return if existing.config() == cfg {
                Ok(Created::Existed)
            } else {
                Err(ApiError::stream_name_exists())
            };
        }
        self.check_overlap(&cfg)?;
        self.check_replicated_conflicts(&cfg)?;
        if self
            .max_streams()
            .is_some_and(|max| self.streams_snapshot().len() as u64 >= max)
        {
            return Err(JsError::MaximumStreamsLimit.err());
        }
        self.store_new_stream(cfg, now_ns()).await?;
        let mut body = StreamInfoResponse::from(self.info_of(name)?);
        body.did_create = true;
        Ok(Created::New(Box::new(body)))
    }

    /// Records the new stream `cfg` (checked) created at `created_ns` in its store and opens
    /// it.
    pub(crate) async fn store_new_stream(
        &self,
        cfg: StreamConfig,
        created_ns: i64,
    ) -> Result<(), ApiError> {
        let name = cfg.name.clone();
        let record = StoredConfig {
            config: cfg.clone(),
            created_ns,
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        // A memory stream, its record and its consumers live in the memory store: gone after
        // a restart, as on nats-server.
        let store = self.store_for(cfg.storage).clone();
        match store.create_stream(&name, bytes).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists(_)) => return Err(ApiError::stream_name_exists()),
            Err(StoreError::InsufficientResources(_)) => {
                return Err(ApiError::insufficient_resources())
            }
            Err(e) => return Err(ApiError::general(&e.to_string())),
        }
        // 2.10's first_seq: the stream starts with its earlier sequences taken.
        if cfg.first_seq > 1 {
            let skipped = store.skip_many(&name, cfg.first_seq - 1, 0).await;
            skipped.map_err(|e| ApiError::general(&e.to_string()))?;
        }
        self.open_stream(&name, cfg, created_ns)
    }

    async fn stream_update(&self, name: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "stream_update_response";
        if let Some(answer) = self.update_replicated(name, payload).await {
            return match answer {
                Ok(body) => ok(KIND, body),
                Err(e) => err(KIND, &e),
            };
        }
        if let Some(answer) = self.replicate_plain(name, payload).await {
            return match answer {
                Ok(body) => ok(KIND, body),
                Err(e) => err(KIND, &e),
            };
        }
        match self.update_stream(name, payload).await {
            Ok(body) => ok(KIND, body),
            Err(e) => err(KIND, &e),
        }
    }

    async fn update_stream(
        &self,
        name: &str,
        payload: &[u8],
    ) -> Result<StreamInfoResponse, ApiError> {
        let cfg = self.parse_config(name, payload)?;
        let stream = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
        let cfg = check_update(&stream.config(), cfg)?;
        self.check_overlap(&cfg)?;
        self.update_r1_assignment(&cfg).await?;
        self.apply_update(&stream, cfg).await?;
        Ok(StreamInfoResponse::from(self.info_of(name)?))
    }

    /// Makes `cfg` (checked with [`check_update`]) the configuration of `stream`: stored, its
    /// limits and compression set, its subjects and sources followed.
    pub(crate) async fn apply_update(
        &self,
        stream: &std::sync::Arc<super::stream::Stream>,
        cfg: StreamConfig,
    ) -> Result<(), ApiError> {
        let name = stream.name.as_str();
        let failed = |e: StoreError| ApiError::general(&e.to_string());
        let record = StoredConfig {
            config: cfg.clone(),
            created_ns: stream.created_ns,
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        self.store_of(name)
            .update_stream_config(name, bytes)
            .await
            .map_err(failed)?;
        // Tighter limits apply with the update, as on nats-server.
        let removed = self
            .store_of(name)
            .set_retain(name, super::stream::retain_of(&cfg))
            .await
            .map_err(failed)?;
        if removed > 0 {
            stream.consumers_recount();
        }
        // A change of compression applies to the blocks written from now on.
        let compressing = self.store_of(name).set_compression(name, cfg.compressed());
        compressing.await.map_err(failed)?;
        self.reconfigure(stream, cfg)
    }
}

/// The configuration `cfg` (normalized) updating `old`, or why it may not: the changes a
/// single server refuses (storage, retention, mirror, first sequence, unsealing).
pub(crate) fn check_update(
    old: &StreamConfig,
    cfg: StreamConfig,
) -> Result<StreamConfig, ApiError> {
    {
        if old.storage != cfg.storage || old.retention != cfg.retention {
            return Err(ApiError::invalid_config(
                "stream configuration update can not change storage type or retention policy",
            ));
        }
        if old.mirror != cfg.mirror {
            return Err(ApiError::mirror_not_updatable());
        }
        // An update that leaves first_seq out keeps it; another value is refused.
        let mut cfg = cfg;
        if cfg.first_seq == 0 {
            cfg.first_seq = old.first_seq;
        }
        if old.first_seq != cfg.first_seq {
            return Err(ApiError::invalid_config(
                "stream configuration update can not change first sequence",
            ));
        }
        if old.sealed && !cfg.sealed {
            return Err(ApiError::invalid_config(
                "stream configuration update can not unseal a sealed stream",
            ));
        }
        Ok(cfg)
    }
}

impl Inner {
    async fn stream_delete(&self, name: &str) -> Reply {
        const KIND: &str = "stream_delete_response";
        if let Some(answer) = self.delete_replicated(name).await {
            return match answer {
                Ok(()) => ok(KIND, json!({ "success": true })),
                Err(e) => err(KIND, &e),
            };
        }
        if let Some(answer) = self.delete_r1(name).await {
            return match answer {
                Ok(()) => ok(KIND, json!({ "success": true })),
                Err(e) => err(KIND, &e),
            };
        }
        match self.remove_stream(name).await {
            Ok(()) => ok(KIND, json!({ "success": true })),
            Err(e) => err(KIND, &e),
        }
    }

    /// `STREAM.PEER.REMOVE` (`{"peer": <server name>}`): a peer of a replicated stream
    /// replaced; a stream of this engine alone has no peers (10036).
    async fn stream_peer_remove(&self, name: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "stream_remove_peer_response";
        #[derive(Deserialize)]
        struct PeerBody {
            #[serde(default)]
            peer: String,
        }
        let Ok(body) = serde_json::from_slice::<PeerBody>(payload) else {
            return err(KIND, &ApiError::invalid_json());
        };
        if body.peer.is_empty() {
            return err(KIND, &ApiError::bad_request("peer required"));
        }
        match self.remove_peer_replicated(name, &body.peer).await {
            Some(Ok(())) => ok(KIND, json!({ "success": true })),
            Some(Err(e)) => err(KIND, &e),
            None if self.stream(name).is_some() => err(KIND, &super::replication::unserved()),
            None => err(KIND, &ApiError::stream_not_found()),
        }
    }

    /// `STREAM.LEADER.STEPDOWN`: the replicated stream's group leader hands over; a stream of
    /// this engine alone has no group (10036).
    async fn stream_leader_stepdown(&self, name: &str) -> Reply {
        const KIND: &str = "stream_leader_stepdown_response";
        match self.step_down_replicated(name).await {
            Some(Ok(())) => ok(KIND, json!({ "success": true })),
            Some(Err(e)) => err(KIND, &e),
            None if self.stream(name).is_some() => err(KIND, &super::replication::unserved()),
            None => err(KIND, &ApiError::stream_not_found()),
        }
    }

    /// `CONSUMER.LEADER.STEPDOWN`: the replicated consumer's group leader hands over; a
    /// consumer of this engine alone has no group (10036, as `STREAM.LEADER.STEPDOWN`).
    async fn consumer_leader_stepdown(&self, stream: &str, name: &str) -> Reply {
        const KIND: &str = "consumer_leader_stepdown_response";
        match self.step_down_replicated_consumer(stream, name).await {
            Some(Ok(())) => ok(KIND, json!({ "success": true })),
            Some(Err(e)) => err(KIND, &e),
            None => match self.stream(stream) {
                Some(s) if s.consumer(name).is_some() => err(KIND, &super::replication::unserved()),
                Some(_) => err(KIND, &JsError::ConsumerNotFound.err()),
                None if self.replicated(stream).is_some() => {
                    err(KIND, &JsError::ConsumerNotFound.err())
                }
                None => err(KIND, &ApiError::stream_not_found()),
            },
        }
    }

    /// Deletes stream `name` of this engine with its consumers and data.
    pub(crate) async fn remove_stream(&self, name: &str) -> Result<(), ApiError> {
        let stream = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
        // Its consumers first, so none of their writes lands after the delete.
        for c in stream.consumers_snapshot() {
            stream.remove_consumer(&c.name);
            c.stop().await;
        }
        let store = self.store_for(stream.config().storage).clone();
        self.close_stream(name);
        store
            .delete_stream(name)
            .await
            .map_err(|e| ApiError::general(&e.to_string()))
    }

    async fn stream_purge(&self, name: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "stream_purge_response";
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct PurgeBody {
            filter: Option<String>,
            seq: Option<u64>,
            keep: Option<u64>,
        }
        let replicated = self.replicated(name);
        let stream = self.stream(name);
        let denied = match (&replicated, &stream) {
            (Some(r), _) => r.config.deny_purge || r.config.sealed,
            (None, Some(s)) => s.config().deny_purge || s.config().sealed,
            (None, None) => return err(KIND, &ApiError::stream_not_found()),
        };
        if denied {
            return err(KIND, &JsError::PurgeNotPermitted.err());
        }
        let body: PurgeBody = if payload.is_empty() {
            PurgeBody::default()
        } else {
            match serde_json::from_slice(payload) {
                Ok(b) => b,
                Err(_) => return err(KIND, &ApiError::invalid_json()),
            }
        };
        if body.seq.is_some() && body.keep.is_some() {
            return err(
                KIND,
                &ApiError::bad_request("sequence and keep can not both be set"),
            );
        }
        let req = PurgeRequest {
            filter: body.filter.filter(|f| !f.is_empty()),
            up_to_seq: body.seq.filter(|&s| s > 0),
            keep: body.keep.filter(|&k| k > 0),
        };
        // A replicated stream: through its group, from any member.
        if replicated.is_some() {
            if let Some(answer) = self.purge_replicated(name, req.clone()).await {
                return match answer {
                    Ok(purged) => ok(KIND, json!({ "success": true, "purged": purged })),
                    Err(e) => err(KIND, &e),
                };
            }
        }
        let Some(stream) = stream else {
            return err(KIND, &ApiError::stream_not_found());
        };
        match self.store_of(name).purge(name, req).await {
            Ok(purged) => {
                stream.consumers_recount();
                ok(KIND, json!({ "success": true, "purged": purged }))
            }
            Err(e) => err(KIND, &ApiError::general(&e.to_string())),
        }
    }

    fn list_request(payload: &[u8]) -> (usize, Option<String>) {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct ListBody {
            offset: usize,
            subject: Option<String>,
        }
        let body: ListBody = serde_json::from_slice(payload).unwrap_or_default();
        (body.offset, body.subject.filter(|s| !s.is_empty()))
    }

    fn filtered_names(&self, subject: Option<&str>) -> Vec<String> {
        let captures = |subjects: &[String]| {
            subject.is_none_or(|f| {
                subjects
                    .iter()
                    .any(|sub| subjects_overlap(sub.as_bytes(), f.as_bytes()))
            })
        };
        let mut names: Vec<String> = self
            .streams_snapshot()
            .into_iter()
            .filter(|s| captures(&s.config().subjects))
            .map(|s| s.name.clone())
            .collect();
        // The replicated streams the cluster knows (see `super::replication`).
        names.extend(
            self.replicated_streams()
                .into_iter()
                .filter(|r| captures(&r.config.subjects))
                .map(|r| r.config.name),
        );
        // The cluster's R1 streams held by other members.
        names.extend(
            self.r1_elsewhere()
                .into_iter()
                .filter(|r| captures(&r.config.subjects))
                .map(|r| r.config.name),
        );
        names.sort();
        names.dedup();
        names
    }

    fn stream_names(&self, payload: &[u8]) -> Reply {
        let (offset, subject) = Self::list_request(payload);
        let names = self.filtered_names(subject.as_deref());
        let total = names.len();
        let page: Vec<String> = names.into_iter().skip(offset).take(1024).collect();
        ok(
            "stream_names_response",
            json!({ "total": total, "offset": offset, "limit": 1024, "streams": page }),
        )
    }

    fn stream_list(&self, payload: &[u8]) -> Reply {
        let (offset, subject) = Self::list_request(payload);
        let names = self.filtered_names(subject.as_deref());
        let total = names.len();
        let streams: Vec<StreamInfo> = names
            .iter()
            .skip(offset)
            .take(256)
            .filter_map(|n| {
                self.info_of(n)
                    .ok()
                    .or_else(|| self.replicated(n).map(|r| r.info()))
                    .or_else(|| {
                        let elsewhere = self.r1_elsewhere();
                        let r = elsewhere.into_iter().find(|r| r.config.name == *n)?;
                        Some(r.info())
                    })
            })
            .collect();
        let page = ListPage {
            total,
            offset,
            limit: 256,
            items: Streams { streams },
            missing: [],
        };
        ok("stream_list_response", page)
    }

    /// Finds the message a MSG.GET or DIRECT.GET body asks for.
    fn find_message(
        &self,
        name: &str,
        payload: &[u8],
        last_by: Option<String>,
    ) -> Result<StoredMessage, ApiError> {
        if self.stream(name).is_none() {
            return Err(ApiError::stream_not_found());
        }
        let body: MsgGetRequest = if let Some(subject) = last_by {
            MsgGetRequest {
                last_by_subj: Some(subject),
                ..MsgGetRequest::default()
            }
        } else {
            serde_json::from_slice(payload).map_err(|_| ApiError::invalid_json())?
        };
        let found = match (body.seq, body.last_by_subj, body.next_by_subj) {
            (seq, None, None) if seq > 0 => self.store_of(name).get(name, seq),
            (0, Some(subject), None) => self.store_of(name).last_by_subject(name, &subject),
            (seq, None, Some(subject)) => {
                self.store_of(name)
                    .next_by_subject(name, seq.max(1), &subject)
            }
            _ => return Err(ApiError::bad_request("bad request")),
        };
        found
            .map_err(|e| ApiError::general(&e.to_string()))?
            .ok_or_else(ApiError::no_message_found)
    }

    /// Answers `read` of stream `name` from this engine's store (on a clustered server: the
    /// copy of the member leading its group, after its read barrier).
    pub(crate) fn answer_read_here(&self, name: &str, read: &Read) -> ReadAnswer {
        let reply = if read.direct {
            self.direct_get(name, &read.payload, read.last_by.clone())
        } else {
            self.msg_get(name, &read.payload)
        };
        match reply {
            Reply::Json(body) => ReadAnswer {
                headers: None,
                body,
            },
            Reply::Raw(hdr, payload) => ReadAnswer {
                headers: Some(hdr),
                body: payload.to_vec(),
            },
            Reply::Nothing => ReadAnswer {
                headers: None,
                body: Vec::new(),
            },
        }
    }

    fn msg_get(&self, name: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "stream_msg_get_response";
        match self.find_message(name, payload, None) {
            Ok(m) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let message = StoredMsg {
                    data: b64.encode(&m.payload),
                    hdrs: m.headers.as_ref().map(|h| b64.encode(h)),
                    time: rfc3339(m.ts_ns),
                    subject: m.subject,
                    seq: m.seq,
                };
                ok(KIND, MsgGetResponse { message })
            }
            Err(e) => err(KIND, &e),
        }
    }

    fn direct_get(&self, name: &str, payload: &[u8], last_by: Option<String>) -> Reply {
        let status = |code: u16, text: &str| {
            Reply::Raw(
                headers::Builder::new(Some((code, text))).finish(),
                Bytes::new(),
            )
        };
        // nats-server answers direct gets only for streams that allow them (a subscription
        // per such stream): for any other name the requester gets "no responders".
        match self.stream(name) {
            Some(s) if s.config().allow_direct => {}
            _ => return status(503, ""),
        }
        if last_by.is_none() && payload.is_empty() {
            return status(408, "Empty Request");
        }
        match self.find_message(name, payload, last_by) {
            Ok(m) => {
                let mut b = headers::Builder::new(None);
                if let Some(h) = &m.headers {
                    b = b.add_block(h);
                }
                let hdr = b
                    .add("Nats-Stream", name)
                    .add("Nats-Subject", &m.subject)
                    .add("Nats-Sequence", &m.seq.to_string())
                    .add("Nats-Time-Stamp", &rfc3339(m.ts_ns))
                    .finish();
                Reply::Raw(hdr, m.payload)
            }
            Err(e) if e.is(JsError::NoMessageFound) || e.is(JsError::StreamNotFound) => {
                status(404, "Message Not Found")
            }
            Err(_) => status(408, "Bad Request"),
        }
    }

    async fn msg_delete(&self, name: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "stream_msg_delete_response";
        #[derive(Deserialize)]
        struct DeleteBody {
            seq: u64,
        }
        let replicated = self.replicated(name);
        let stream = self.stream(name);
        let denied = match (&replicated, &stream) {
            (Some(r), _) => r.config.deny_delete || r.config.sealed,
            (None, Some(s)) => s.config().deny_delete || s.config().sealed,
            (None, None) => return err(KIND, &ApiError::stream_not_found()),
        };
        if denied {
            return err(KIND, &JsError::MsgDeleteNotPermitted.err());
        }
        let Ok(body) = serde_json::from_slice::<DeleteBody>(payload) else {
            return err(KIND, &ApiError::invalid_json());
        };
        let no_message = || JsError::StreamMsgDeleteFailed.with("no message found");
        // A replicated stream: through its group, from any member (`no_erase` or not: the
        // store does not erase).
        if replicated.is_some() {
            if let Some(answer) = self.delete_msg_replicated(name, body.seq).await {
                return match answer {
                    Ok(true) => ok(KIND, json!({ "success": true })),
                    Ok(false) => err(KIND, &no_message()),
                    Err(e) => err(KIND, &e),
                };
            }
        }
        let Some(stream) = stream else {
            return err(KIND, &ApiError::stream_not_found());
        };
        match self.store_of(name).delete_msg(name, body.seq).await {
            Ok(true) => {
                stream.consumers_recount();
                ok(KIND, json!({ "success": true }))
            }
            Ok(false) => err(KIND, &no_message()),
            Err(e) => err(KIND, &JsError::StreamMsgDeleteFailed.with(&e.to_string())),
        }
    }

    // ---- consumers ----

    async fn consumer_create(
        &self,
        stream_name: &str,
        subject_name: Option<&str>,
        subject_filter: Option<String>,
        form: CreateForm,
        payload: &[u8],
    ) -> Reply {
        const KIND: &str = "consumer_create_response";
        let Ok(body) = serde_json::from_slice::<ConsumerCreateRequest>(payload) else {
            return err(KIND, &ApiError::invalid_json());
        };
        if body.stream_name != stream_name {
            return err(KIND, &ApiError::stream_mismatch());
        }
        let Some(mut cfg) = body.config else {
            return err(KIND, &JsError::ConsumerConfigRequired.err());
        };
        match form {
            CreateForm::LegacyDurable => {
                let Some(d) = cfg.durable_name.as_deref().filter(|d| !d.is_empty()) else {
                    return err(KIND, &JsError::ConsumerDurableNameNotSet.err());
                };
                if Some(d) != subject_name {
                    return err(KIND, &JsError::ConsumerDurableNameNotMatchSubject.err());
                }
            }
            CreateForm::Named => {
                let Some(name) = subject_name else {
                    return err(KIND, &ApiError::bad_request("consumer name required"));
                };
                if name.contains('/') || name.contains('\\') {
                    return err(KIND, &JsError::ConsumerNameContainsPathSeparators.err());
                }
                if cfg
                    .durable_name
                    .as_deref()
                    .is_some_and(|d| !d.is_empty() && d != name)
                {
                    return err(KIND, &JsError::ConsumerDurableNameNotMatchSubject.err());
                }
                cfg.name = Some(name.to_string());
                if let Some(filter) = &subject_filter {
                    if !cfg.filter_subjects.is_empty() || &cfg.filter_subject != filter {
                        return err(KIND, &JsError::ConsumerCreateFilterSubjectMismatch.err());
                    }
                }
            }
            CreateForm::LegacyEphemeral => {
                if cfg.durable_name.as_deref().is_some_and(|d| !d.is_empty()) {
                    return err(KIND, &JsError::ConsumerEphemeralWithDurableName.err());
                }
            }
        }
        let Some(stream) = self.stream(stream_name) else {
            return err(KIND, &ApiError::stream_not_found());
        };
        let stream_cfg = stream.config();
        if super::replication::wants_group(&stream_cfg, &cfg) {
            if let Some(answer) = self
                .create_replicated_consumer(&stream_cfg, cfg.clone(), &body.action)
                .await
            {
                return match answer {
                    Ok(info) => ok(KIND, info),
                    Err(e) => err(KIND, &e),
                };
            }
        }
        if stream_cfg.is_replicated() {
            if let Err(e) = super::replication::check_consumer_on_copy(&stream_cfg, &cfg) {
                return err(KIND, &e);
            }
        }
        let mut cfg = match cfg.normalize(&stream_cfg) {
            Ok(c) => c,
            Err(e) => return err(KIND, &e),
        };
        if let Err(e) = retention::check_config(&stream_cfg, &cfg) {
            return err(KIND, &e);
        }
        if cfg.name.is_none() {
            cfg.name = Some(ephemeral_name());
        }
        let name = cfg.name.clone().unwrap_or_default();
        if let Some(existing) = stream.consumer(&name) {
            let old = existing.config();
            if old == cfg {
                return self.consumer_info_reply(KIND, &existing).await;
            }
            if body.action == "create" {
                return err(KIND, &JsError::ConsumerAlreadyExists.err());
            }
            if let Err(e) = old.check_update(&cfg) {
                return err(KIND, &e);
            }
            *existing
                .config
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = cfg.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            existing.send(Cmd::Update(Box::new(cfg), tx));
            return match rx.await {
                Ok(info) => ok(KIND, info),
                Err(_) => err(KIND, &JsError::ConsumerNotFound.err()),
            };
        }
        if body.action == "update" {
            return err(KIND, &JsError::ConsumerDoesNotExist.err());
        }
        if stream_cfg.max_consumers > 0
            && stream.consumer_count() >= stream_cfg.max_consumers as usize
        {
            return err(KIND, &JsError::MaximumConsumersLimit.err());
        }
        if self.max_consumers().is_some_and(|max| {
            let all: usize = self
                .streams_snapshot()
                .iter()
                .map(|s| s.consumer_count())
                .sum();
            all as u64 >= max
        }) {
            return err(KIND, &JsError::MaximumConsumersLimit.err());
        }
        let existing: Vec<ConsumerConfig> = stream
            .consumers_snapshot()
            .iter()
            .map(|c| c.config())
            .collect();
        if let Err(e) = retention::check_new_consumer(&stream_cfg, &existing, &cfg) {
            return err(KIND, &e);
        }
        let handle = match consumer::start(
            &stream,
            self.store_of(stream_name).clone(),
            self.server.clone(),
            cfg,
            now_ns(),
            None,
        ) {
            Ok(h) => h,
            Err(e) => return err(KIND, &JsError::ConsumerCreate.with(&e)),
        };
        stream.add_consumer(handle.clone());
        self.consumer_info_reply(KIND, &handle).await
    }

    async fn consumer_info_reply(&self, kind: &str, c: &ConsumerHandle) -> Reply {
        match c.info().await {
            Some(info) => ok(kind, info),
            None => err(kind, &JsError::ConsumerNotFound.err()),
        }
    }

    async fn consumer_info(&self, stream: &str, name: &str) -> Reply {
        const KIND: &str = "consumer_info_response";
        let Some(s) = self.stream(stream) else {
            return err(KIND, &ApiError::stream_not_found());
        };
        match self.consumer_info_of(&s, name).await {
            Some(info) => ok(KIND, info),
            None => err(KIND, &JsError::ConsumerNotFound.err()),
        }
    }

    /// The info of consumer `name` of stream `s`: its task's, or for a replicated consumer
    /// whose task runs on another member this member's record; a replicated one with its
    /// `cluster`.
    async fn consumer_info_of(
        &self,
        s: &super::stream::Stream,
        name: &str,
    ) -> Option<ConsumerInfo> {
        let replicated = self.replicated_consumer(&s.name, name);
        let info = match (s.consumer(name), &replicated) {
            (Some(c), _) => c.info().await,
            // The record this member's group applied, with the configuration the cluster
            // agreed on (an update reaches the record with the leader's next write).
            (None, Some(r)) => {
                self.replicated_consumer_record(&s.name, name)
                    .map(|info| ConsumerInfo {
                        config: r.config.clone(),
                        ..info
                    })
            }
            (None, None) => None,
        };
        info.map(|mut info| {
            if let Some(r) = replicated {
                info.cluster = Some(r.cluster);
            }
            info
        })
    }

    /// The names of the consumers of stream `s`: its tasks' and the replicated ones known
    /// here, sorted.
    fn all_consumer_names(&self, s: &super::stream::Stream) -> Vec<String> {
        let mut names: Vec<String> = s
            .consumers_snapshot()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        names.extend(self.replicated_consumer_names(&s.name));
        names.sort();
        names.dedup();
        names
    }

    async fn consumer_delete(&self, stream: &str, name: &str) -> Reply {
        const KIND: &str = "consumer_delete_response";
        let Some(s) = self.stream(stream) else {
            return err(KIND, &ApiError::stream_not_found());
        };
        if let Some(deleted) = self.delete_replicated_consumer(stream, name).await {
            return match deleted {
                Ok(()) => ok(KIND, json!({ "success": true })),
                Err(e) => err(KIND, &e),
            };
        }
        let Some(c) = s.remove_consumer(name) else {
            return err(KIND, &JsError::ConsumerNotFound.err());
        };
        c.stop().await;
        // Interest retention: what only this consumer held goes first (see `release`).
        let store = self.store_of(stream).clone();
        retention::release(&*s, &store, name, retention::floor_of(&c.view)).await;
        match store.delete_consumer(stream, name).await {
            Ok(_) => ok(KIND, json!({ "success": true })),
            Err(e) => err(KIND, &ApiError::general(&e.to_string())),
        }
    }

    fn consumer_names(&self, stream: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "consumer_names_response";
        let Some(s) = self.stream(stream) else {
            return err(KIND, &ApiError::stream_not_found());
        };
        let (offset, _) = Self::list_request(payload);
        let all = self.all_consumer_names(&s);
        let names: Vec<&str> = all
            .iter()
            .skip(offset)
            .take(1024)
            .map(String::as_str)
            .collect();
        ok(
            KIND,
            json!({ "total": all.len(), "offset": offset, "limit": 1024, "consumers": names }),
        )
    }

    async fn consumer_list(&self, stream: &str, payload: &[u8]) -> Reply {
        const KIND: &str = "consumer_list_response";
        let Some(s) = self.stream(stream) else {
            return err(KIND, &ApiError::stream_not_found());
        };
        let (offset, _) = Self::list_request(payload);
        let all = self.all_consumer_names(&s);
        let mut consumers = Vec::new();
        for name in all.iter().skip(offset).take(256) {
            if let Some(info) = self.consumer_info_of(&s, name).await {
                consumers.push(info);
            }
        }
        let page = ListPage {
            total: all.len(),
            offset,
            limit: 256,
            items: Consumers { consumers },
            missing: [],
        };
        ok(KIND, page)
    }
}

/// A random 8-character name for an ephemeral consumer.
fn ephemeral_name() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| {
            char::from(
                CHARS
                    .get(fastrand::usize(..CHARS.len()))
                    .copied()
                    .unwrap_or(b'X'),
            )
        })
        .collect()
}
