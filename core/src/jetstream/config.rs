//! Stream configuration as the JetStream API carries it, shaped as nats-server 2.9/2.10
//! shapes it (`StreamConfig`, its sources and republish settings), its defaults and checks,
//! and shorthands for the API errors of [`super::errors`]; consumer configuration in
//! [`consumer`]. The bodies that carry them (stream and consumer infos, requests, PubAck,
//! stored messages) are in [`super::wire`].
//!
//! Unknown fields in requests are ignored (newer clients send fields such as `allow_msg_ttl`),
//! every field has nats-server's default, and responses carry the same field names.

pub mod consumer;

use serde::{Deserialize, Serialize};

use leaf_proto::subject::is_valid_subject;

pub use super::errors::{ApiError, JsError};

/// Two minutes in nanoseconds: the default `duplicate_window`.
pub const DEFAULT_DUPLICATE_WINDOW_NS: i64 = 120_000_000_000;

/// How messages leave a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    /// Kept until a limit removes them.
    #[default]
    Limits,
    /// Kept while a consumer still has to see them.
    Interest,
    /// Removed once acknowledged by a consumer.
    #[serde(rename = "workqueue")]
    WorkQueue,
}

/// What happens when a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    /// The oldest messages make room.
    #[default]
    Old,
    /// New messages are refused.
    New,
}

/// Where a stream's messages are kept. leafd keeps both kinds on disk, durably: `memory`
/// streams are accepted for compatibility and behave like `file` streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk.
    #[default]
    File,
    /// In memory (kept on disk by leafd).
    Memory,
}

fn minus_one() -> i64 {
    -1
}
fn minus_one_i32() -> i32 {
    -1
}
fn one() -> i32 {
    1
}
fn is_zero(v: &i64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// A stream's configuration (`StreamConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// The stream's name.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Subjects captured (wildcards allowed); defaults to the stream's name.
    pub subjects: Vec<String>,
    /// Retention policy.
    pub retention: Retention,
    /// Most consumers (-1: unlimited).
    #[serde(default = "minus_one_i32")]
    pub max_consumers: i32,
    /// Most messages (-1: unlimited).
    #[serde(default = "minus_one")]
    pub max_msgs: i64,
    /// Most bytes (-1: unlimited).
    #[serde(default = "minus_one")]
    pub max_bytes: i64,
    /// Oldest message age in nanoseconds (0: unlimited).
    pub max_age: i64,
    /// Most messages per subject (-1: unlimited).
    #[serde(default = "minus_one")]
    pub max_msgs_per_subject: i64,
    /// Largest message (-1: unlimited).
    #[serde(default = "minus_one_i32")]
    pub max_msg_size: i32,
    /// Discard policy.
    pub discard: Discard,
    /// Storage type.
    pub storage: Storage,
    /// Replicas (1: leafd is a single server).
    #[serde(default = "one")]
    pub num_replicas: i32,
    /// Publishes are not acknowledged.
    #[serde(skip_serializing_if = "is_false")]
    pub no_ack: bool,
    /// Window for `Nats-Msg-Id` deduplication, in nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicate_window: i64,
    /// `DIRECT.GET` is served.
    pub allow_direct: bool,
    /// Mirrors serve direct gets (accepted; a mirror here does not answer direct gets for
    /// its origin).
    pub mirror_direct: bool,
    /// No more messages in or out.
    pub sealed: bool,
    /// Messages cannot be deleted.
    pub deny_delete: bool,
    /// The stream cannot be purged.
    pub deny_purge: bool,
    /// `Nats-Rollup` headers are honoured.
    pub allow_rollup_hdrs: bool,
    /// Discard new per subject (with `discard: new` and `max_msgs_per_subject`).
    #[serde(skip_serializing_if = "is_false")]
    pub discard_new_per_subject: bool,
    /// The stream this one mirrors (see [`super::source`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<StreamSource>,
    /// The streams this one sources (see [`super::source`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<StreamSource>>,
    /// Where stored messages are republished (see [`super::republish`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub republish: Option<RePublish>,
    /// Free-form metadata (2.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The sequence of the stream's first message (2.10; 0 or 1: from 1).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub first_seq: u64,
    /// How published subjects are transformed before they are stored (2.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<SubjectTransformConfig>,
    /// Compression at rest (2.10): `none` (absent) or `s2` (blocks compressed with Snappy,
    /// the format S2 extends, see `store/DESIGN.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Limits for the stream's consumers (2.10): defaults and ceilings of their
    /// `inactive_threshold` and `max_ack_pending`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_limits: Option<ConsumerLimits>,
    /// Where the stream's replicas go: a single server has one place, so it is kept and
    /// reported as given, as nats-server 2.9 does without a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<serde_json::Value>,
    /// Every other field of the request: newer servers' fields this one does not implement
    /// are refused by name (see [`UNSUPPORTED_STREAM_FIELDS`]); any other unknown field is
    /// ignored, as nats-server ignores it. Never reported back.
    #[serde(flatten, skip_serializing)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Stream configuration fields of newer nats-server versions that this server does not
/// implement: set to anything but their "off" value, they are refused, naming the field.
pub const UNSUPPORTED_STREAM_FIELDS: &[&str] = &[
    "allow_msg_ttl",
    "subject_delete_marker_ttl",
    "allow_msg_counter",
    "allow_atomic",
    "allow_msg_schedules",
    "persist_mode",
];

/// Limits for a stream's consumers (`StreamConsumerLimits`, 2.10). 0: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerLimits {
    /// The longest `inactive_threshold` (nanoseconds), and the default of consumers without.
    #[serde(skip_serializing_if = "is_zero")]
    pub inactive_threshold: i64,
    /// The largest `max_ack_pending`, and the default of consumers without.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
}

/// The first of `fields` that `other` (a request's unknown fields) sets to anything but its
/// "off" value (absent, null, false, 0, "", "none", []).
pub(crate) fn first_set<'a>(
    other: &serde_json::Map<String, serde_json::Value>,
    fields: &[&'a str],
) -> Option<&'a str> {
    fields.iter().copied().find(|field| {
        other.get(*field).is_some_and(|v| {
            !(v.is_null()
                || v == &serde_json::Value::Bool(false)
                || v.as_i64() == Some(0)
                || v.as_str().is_some_and(|s| s.is_empty() || s == "none")
                || v.as_array().is_some_and(Vec::is_empty))
        })
    })
}

/// A subject transform applied to published messages (`SubjectTransformConfig`, 2.10).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SubjectTransformConfig {
    /// The subjects transformed (empty: `>`).
    #[serde(default)]
    pub src: String,
    /// The destination template (see [`leaf_proto::transform`]).
    #[serde(default)]
    pub dest: String,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            name: String::new(),
            description: None,
            subjects: Vec::new(),
            retention: Retention::Limits,
            max_consumers: -1,
            max_msgs: -1,
            max_bytes: -1,
            max_age: 0,
            max_msgs_per_subject: -1,
            max_msg_size: -1,
            discard: Discard::Old,
            storage: Storage::File,
            num_replicas: 1,
            no_ack: false,
            duplicate_window: 0,
            allow_direct: false,
            mirror_direct: false,
            sealed: false,
            deny_delete: false,
            deny_purge: false,
            allow_rollup_hdrs: false,
            discard_new_per_subject: false,
            mirror: None,
            sources: None,
            republish: None,
            metadata: None,
            first_seq: 0,
            subject_transform: None,
            compression: None,
            consumer_limits: None,
            placement: None,
            other: serde_json::Map::new(),
        }
    }
}

/// Where a stream republishes what it stores (`RePublish`, nats-server 2.9).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RePublish {
    /// The stored subjects to republish (empty: `>`, as nats-server reports it).
    #[serde(default)]
    pub src: String,
    /// Where: a transform template of `src` (see [`leaf_proto::transform`]).
    #[serde(default)]
    pub dest: String,
    /// Send only the headers, with the payload's size in `Nats-Msg-Size`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headers_only: bool,
}

impl RePublish {
    /// The source filter (`>` when empty).
    pub fn source(&self) -> &str {
        if self.src.is_empty() {
            ">"
        } else {
            &self.src
        }
    }
}

/// Where a mirror or source reads from (`StreamSource`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamSource {
    /// The origin stream.
    pub name: String,
    /// The first origin sequence to copy (0: from the start).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub opt_start_seq: u64,
    /// The first origin message time to copy (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<String>,
    /// Only origin messages on this subject (wildcards allowed).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// The origin is reached through another JetStream API prefix (another domain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStream>,
}

/// The API and delivery prefixes of a JetStream reached from outside (`ExternalStream`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalStream {
    /// The API prefix, such as `$JS.<domain>.API`.
    pub api: String,
    /// The prefix of delivery subjects (empty: the default `$JS.S`/`$JS.M` subjects).
    pub deliver: String,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// Whether `name` can name a stream (or consumer): no subject separators or wildcards, no
/// whitespace, no path separators (the name is used as a subject token).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name
            .bytes()
            .any(|b| matches!(b, b'.' | b'*' | b'>' | b'/' | b'\\') || b.is_ascii_whitespace())
}

impl StreamConfig {
    /// Whether it is a replicated stream's (`num_replicas` > 1: only a clustered server has
    /// them, see [`super::replication`]).
    pub fn is_replicated(&self) -> bool {
        self.num_replicas > 1
    }

    /// Fills in nats-server's defaults and checks the configuration.
    pub fn normalize(mut self) -> Result<StreamConfig, ApiError> {
        if self.name.contains('/') || self.name.contains('\\') {
            return Err(JsError::StreamNameContainsPathSeparators.err());
        }
        if !is_valid_name(&self.name) {
            return Err(ApiError::invalid_config(
                "stream name is required and can not contain '.', '*', '>'",
            ));
        }
        if self.num_replicas == 0 {
            self.num_replicas = 1;
        }
        if self.num_replicas > 1 {
            return Err(JsError::StreamReplicasNotSupported.err());
        }
        self.check_origins()?;
        if self.sources.as_ref().is_some_and(Vec::is_empty) {
            self.sources = None;
        }
        if self.subjects.is_empty() && self.mirror.is_none() && self.sources.is_none() {
            self.subjects = vec![self.name.clone()];
        }
        for s in &self.subjects {
            if !is_valid_subject(s.as_bytes()) {
                return Err(ApiError::invalid_config(&format!("invalid subject {s:?}")));
            }
            if leaf_proto::subject::subjects_overlap(s.as_bytes(), b"$JS.API.>") {
                return Err(ApiError::invalid_config(
                    "subjects overlap with jetstream api",
                ));
            }
        }
        self.check_republish()?;
        self.check_newer_fields()?;
        for (field, v) in [
            ("max_msgs", self.max_msgs),
            ("max_bytes", self.max_bytes),
            ("max_msgs_per_subject", self.max_msgs_per_subject),
        ] {
            if v == 0 || v < -1 {
                if v == 0 {
                    // nats-server treats 0 as unlimited.
                    match field {
                        "max_msgs" => self.max_msgs = -1,
                        "max_bytes" => self.max_bytes = -1,
                        _ => self.max_msgs_per_subject = -1,
                    }
                } else {
                    return Err(ApiError::invalid_config(&format!(
                        "{field} must be -1 or positive"
                    )));
                }
            }
        }
        if self.max_msg_size == 0 {
            self.max_msg_size = -1;
        }
        if self.max_consumers == 0 {
            self.max_consumers = -1;
        }
        if self.discard_new_per_subject {
            if self.discard != Discard::New {
                return Err(ApiError::invalid_config(
                    "discard new per subject requires discard new policy to be set",
                ));
            }
            if self.max_msgs_per_subject <= 0 {
                return Err(ApiError::invalid_config(
                    "discard new per subject requires max msgs per subject > 0",
                ));
            }
        }
        // With a mirror, accepted (nats.go sets it on every KV mirror) though the mirror
        // does not answer its origin's direct gets yet: see the table in core/DESIGN.md.
        if self.mirror_direct && self.mirror.is_none() {
            return Err(ApiError::invalid_config(
                "stream has no mirror but does have mirror direct",
            ));
        }
        if self.max_age < 0 || self.duplicate_window < 0 {
            return Err(ApiError::invalid_config(
                "max_age and duplicate_window can not be negative",
            ));
        }
        if self.duplicate_window == 0 {
            self.duplicate_window = if self.max_age > 0 {
                self.max_age.min(DEFAULT_DUPLICATE_WINDOW_NS)
            } else {
                DEFAULT_DUPLICATE_WINDOW_NS
            };
        }
        if self.max_age > 0 && self.duplicate_window > self.max_age {
            return Err(ApiError::invalid_config(
                "duplicates window can not be larger then max age",
            ));
        }
        Ok(self)
    }
}

impl StreamConfig {
    /// Whether the stream's messages are compressed at rest.
    pub fn compressed(&self) -> bool {
        self.compression.as_deref() == Some("s2")
    }

    /// Checks `republish` as nats-server 2.9 does (and reports an empty source as `>`): the
    /// source lies within the stream's subjects or covers one, the destination overlaps none
    /// of them (a cycle), and the transform compiles.
    fn check_republish(&mut self) -> Result<(), ApiError> {
        let Some(rp) = &mut self.republish else {
            return Ok(());
        };
        if rp.src.is_empty() {
            rp.src = ">".into();
        }
        let src = rp.src.as_bytes();
        let within = is_valid_subject(src)
            && self.subjects.iter().any(|s| {
                leaf_proto::subject::is_subset(src, s.as_bytes())
                    || leaf_proto::subject::is_subset(s.as_bytes(), src)
            });
        if !within {
            return Err(ApiError::invalid_config(
                "stream configuration for republish source is not valid subset of subjects",
            ));
        }
        let cycle = self
            .subjects
            .iter()
            .any(|s| leaf_proto::subject::subjects_overlap(rp.dest.as_bytes(), s.as_bytes()));
        if cycle {
            return Err(ApiError::invalid_config(
                "stream configuration for republish destination forms a cycle",
            ));
        }
        if leaf_proto::transform::Transform::new(&rp.src, &rp.dest).is_err() {
            return Err(ApiError::invalid_config(
                "stream configuration for republish not valid",
            ));
        }
        Ok(())
    }

    /// Checks the fields of newer nats-server versions: those implemented (`first_seq`,
    /// `subject_transform`) are checked, the others refused unless they are off.
    fn check_newer_fields(&mut self) -> Result<(), ApiError> {
        if let Some(field) = first_set(&self.other, UNSUPPORTED_STREAM_FIELDS) {
            return Err(ApiError::invalid_config(&format!(
                "stream configuration field {field} is not supported by this server"
            )));
        }
        // Checked: what is left is ignored, and must not make two otherwise equal
        // configurations differ (creating the same stream again is fine).
        self.other.clear();
        match self.compression.as_deref() {
            None | Some("") => self.compression = None,
            Some("none" | "s2") => {}
            Some(other) => {
                return Err(ApiError::invalid_config(&format!(
                    "stream configuration field compression {other:?} is not supported by \
                     this server (\"none\" or \"s2\")"
                )))
            }
        }
        if let Some(l) = &self.consumer_limits {
            if l.inactive_threshold < 0 || l.max_ack_pending < 0 {
                return Err(ApiError::invalid_config(
                    "stream configuration consumer_limits can not be negative",
                ));
            }
        }
        if self.first_seq > 1 && self.mirror.is_some() {
            return Err(ApiError::invalid_config(
                "stream mirrors can not have first sequence configured",
            ));
        }
        if let Some(t) = &mut self.subject_transform {
            if t.src.is_empty() {
                t.src = ">".into();
            }
            if leaf_proto::transform::Transform::new(&t.src, &t.dest).is_err() {
                return Err(ApiError::invalid_config(&format!(
                    "stream configuration subject transform from {:?} to {:?} is not valid",
                    t.src, t.dest
                )));
            }
        }
        Ok(())
    }

    /// Checks `mirror` and `sources` as nats-server 2.9 does.
    fn check_origins(&self) -> Result<(), ApiError> {
        if let Some(m) = &self.mirror {
            if !self.subjects.is_empty() {
                return Err(JsError::MirrorWithSubjects.err());
            }
            if self.sources.as_ref().is_some_and(|s| !s.is_empty()) {
                return Err(JsError::MirrorWithSources.err());
            }
            if m.opt_start_seq > 0 && m.opt_start_time.is_some() {
                return Err(JsError::MirrorWithStartSeqAndTime.err());
            }
        }
        let origins = self.mirror.iter().chain(self.sources.iter().flatten());
        let mut seen = std::collections::HashSet::new();
        for o in origins {
            if !is_valid_name(&o.name) {
                return Err(ApiError::invalid_config(&format!(
                    "invalid origin stream name {:?}",
                    o.name
                )));
            }
            if o.external.is_none() && o.name == self.name {
                return Err(ApiError::invalid_config(
                    "a stream can not mirror or source itself",
                ));
            }
            if !o.filter_subject.is_empty() && !is_valid_subject(o.filter_subject.as_bytes()) {
                return Err(ApiError::invalid_config(&format!(
                    "invalid filter subject {:?}",
                    o.filter_subject
                )));
            }
            if let Some(t) = &o.opt_start_time {
                if leaf_proto::time::parse_rfc3339(t).is_none() {
                    return Err(ApiError::invalid_config(&format!(
                        "invalid opt_start_time {t:?}"
                    )));
                }
            }
            if let Some(ext) = &o.external {
                if !ext.api.is_empty() && !is_valid_subject(ext.api.as_bytes()) {
                    return Err(ApiError::invalid_config("invalid external api prefix"));
                }
            }
            if !seen.insert(o.index_name()) {
                return Err(ApiError::invalid_config(
                    "duplicate source configuration detected",
                ));
            }
        }
        Ok(())
    }
}

/// The JetStream API's error answers, by nats-server's identifiers (see [`super::errors`]).
impl ApiError {
    /// 429 "too many requests" (10167): the server holds as much as it may of what this
    /// kind of request fills (a stream's ingest, the API's queue), as nats-server answers
    /// when a stream's ingest queue is full.
    pub fn too_many_requests() -> Self {
        JsError::StreamTooManyRequests.err()
    }
    /// 10059.
    pub fn stream_not_found() -> Self {
        JsError::StreamNotFound.err()
    }
    /// 10058.
    pub fn stream_name_exists() -> Self {
        JsError::StreamNameExist.err()
    }
    /// 10065.
    pub fn subjects_overlap() -> Self {
        JsError::StreamSubjectOverlap.err()
    }
    /// 10037.
    pub fn no_message_found() -> Self {
        JsError::NoMessageFound.err()
    }
    /// 10052.
    pub fn invalid_config(text: &str) -> Self {
        JsError::StreamInvalidConfig.with(text)
    }
    /// 10025.
    pub fn invalid_json() -> Self {
        JsError::InvalidJson.err()
    }
    /// 10003.
    pub fn bad_request(text: &str) -> Self {
        JsError::BadRequest.with(text)
    }
    /// 10056.
    pub fn stream_mismatch() -> Self {
        JsError::StreamMismatch.err()
    }
    /// 10023.
    pub fn insufficient_resources() -> Self {
        JsError::InsufficientResources.err()
    }
    /// 10077.
    pub fn store_failed(text: &str) -> Self {
        JsError::StreamStoreFailed.with(text)
    }
    /// 10071.
    pub fn wrong_last_sequence(seq: u64) -> Self {
        JsError::StreamWrongLastSequence.with(&format!("wrong last sequence: {seq}"))
    }
    /// 10070.
    pub fn wrong_last_msg_id(id: &str) -> Self {
        JsError::StreamWrongLastMsgId.with(&format!("wrong last msg ID: {id}"))
    }
    /// 10060.
    pub fn expected_stream_mismatch() -> Self {
        JsError::StreamNotMatch.err()
    }
    /// 10054.
    pub fn message_too_large() -> Self {
        JsError::StreamMessageExceedsMaximum.err()
    }
    /// 10109.
    pub fn sealed() -> Self {
        JsError::StreamSealed.err()
    }
    /// 10055.
    pub fn mirror_not_updatable() -> Self {
        JsError::StreamMirrorNotUpdatable.err()
    }
    /// 10051.
    pub fn general(text: &str) -> Self {
        JsError::StreamGeneralError.with(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let cfg: StreamConfig = serde_json::from_str(
            r#"{"name":"S","allow_msg_ttl":false,"x_y":1,"subjects":["a.>"]}"#,
        )
        .unwrap();
        let cfg = cfg.normalize().unwrap();
        assert_eq!(cfg.max_msgs, -1);
        assert_eq!(cfg.duplicate_window, DEFAULT_DUPLICATE_WINDOW_NS);
        assert_eq!(cfg.num_replicas, 1);
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["retention"], "limits");
        assert_eq!(json["discard"], "old");
        assert_eq!(json["storage"], "file");
    }

    #[test]
    fn ignored_fields_do_not_make_configurations_differ() {
        let parse = |json: &str| {
            serde_json::from_str::<StreamConfig>(json)
                .unwrap()
                .normalize()
                .unwrap()
        };
        let a = parse(r#"{"name":"S","allow_msg_ttl":false,"future_field":{"x":1}}"#);
        assert_eq!(a, parse(r#"{"name":"S"}"#));
        let e = serde_json::from_str::<StreamConfig>(r#"{"name":"S","allow_atomic":true}"#)
            .unwrap()
            .normalize()
            .unwrap_err();
        assert!(e.description.contains("allow_atomic"), "{e}");
    }

    #[test]
    fn combinations_nats_server_refuses_and_unlimited_zeros() {
        let check = |json: &str| {
            serde_json::from_str::<StreamConfig>(json)
                .unwrap()
                .normalize()
        };
        for bad in [
            r#"{"name":"S","discard_new_per_subject":true,"max_msgs_per_subject":1}"#,
            r#"{"name":"S","discard_new_per_subject":true,"discard":"new"}"#,
            r#"{"name":"S","mirror_direct":true}"#,
        ] {
            assert_eq!(check(bad).unwrap_err().err_code, 10052, "{bad}");
        }
        let ok = check(
            r#"{"name":"S","discard_new_per_subject":true,"discard":"new","max_msgs_per_subject":1}"#,
        );
        assert!(ok.is_ok());
        let zeros = check(
            r#"{"name":"S","max_consumers":0,"max_msgs":0,"max_bytes":0,"max_msg_size":0,"max_msgs_per_subject":0}"#,
        )
        .unwrap();
        assert_eq!(
            (
                zeros.max_consumers,
                zeros.max_msgs,
                zeros.max_bytes,
                zeros.max_msg_size,
                zeros.max_msgs_per_subject
            ),
            (-1, -1, -1, -1, -1)
        );
    }

    #[test]
    fn subjects_default_to_the_name_and_are_checked() {
        let cfg = StreamConfig {
            name: "ORDERS".into(),
            ..StreamConfig::default()
        }
        .normalize()
        .unwrap();
        assert_eq!(cfg.subjects, ["ORDERS"]);
        for bad in ["a..b", "$JS.API.STREAM.INFO.x"] {
            let e = StreamConfig {
                name: "S".into(),
                subjects: vec![bad.into()],
                ..StreamConfig::default()
            }
            .normalize()
            .unwrap_err();
            assert_eq!(e.err_code, 10052, "{bad}");
        }
        assert!(StreamConfig::default().normalize().is_err());
        assert_eq!(
            StreamConfig {
                name: "a/b".into(),
                ..StreamConfig::default()
            }
            .normalize()
            .unwrap_err()
            .err_code,
            10128
        );
    }

    #[test]
    fn mirrors_and_sources_are_checked() {
        let origin = StreamSource {
            name: "O".into(),
            ..StreamSource::default()
        };
        let code = |cfg: StreamConfig| cfg.normalize().map(|_| 0).unwrap_or_else(|e| e.err_code);
        let mirror = StreamConfig {
            name: "M".into(),
            mirror: Some(origin.clone()),
            ..StreamConfig::default()
        };
        let cfg = mirror.clone().normalize().unwrap();
        assert!(
            cfg.subjects.is_empty(),
            "a mirror has no subjects of its own"
        );
        let with_subjects = StreamConfig {
            subjects: vec!["m.>".into()],
            ..mirror.clone()
        };
        assert_eq!(code(with_subjects), 10034);
        let with_sources = StreamConfig {
            sources: Some(vec![origin.clone()]),
            ..mirror.clone()
        };
        assert_eq!(code(with_sources), 10031);
        let both_starts = StreamConfig {
            mirror: Some(StreamSource {
                opt_start_seq: 3,
                opt_start_time: Some("2024-01-01T00:00:00Z".into()),
                ..origin.clone()
            }),
            ..mirror.clone()
        };
        assert_eq!(code(both_starts), 10032);
        let sourcing = StreamConfig {
            name: "S".into(),
            sources: Some(vec![origin.clone()]),
            ..StreamConfig::default()
        };
        assert!(sourcing.clone().normalize().unwrap().subjects.is_empty());
        let twice = StreamConfig {
            sources: Some(vec![origin.clone(), origin.clone()]),
            ..sourcing.clone()
        };
        assert_eq!(code(twice), 10052);
        let itself = StreamConfig {
            sources: Some(vec![StreamSource {
                name: "S".into(),
                ..StreamSource::default()
            }]),
            ..sourcing
        };
        assert_eq!(code(itself), 10052);
        let json: StreamConfig = serde_json::from_str(
            r#"{"name":"C","sources":[{"name":"O","filter_subject":"a.>","external":{"api":"$JS.leaf.API","deliver":""}}]}"#,
        )
        .unwrap();
        let back = serde_json::to_value(json.normalize().unwrap()).unwrap();
        assert_eq!(back["sources"][0]["external"]["api"], "$JS.leaf.API");
        assert_eq!(back["sources"][0]["filter_subject"], "a.>");
        assert!(back["sources"][0].get("opt_start_seq").is_none());
    }

    #[test]
    fn duplicate_window_follows_max_age() {
        let cfg = StreamConfig {
            name: "S".into(),
            max_age: 1_000_000_000,
            ..StreamConfig::default()
        }
        .normalize()
        .unwrap();
        assert_eq!(cfg.duplicate_window, 1_000_000_000);
    }
}
