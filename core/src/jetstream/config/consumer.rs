//! A consumer's configuration as nats-server's API carries it (`ConsumerConfig`), its
//! defaults and its checks against the stream.
//!
//! Unknown fields are ignored; durations are nanoseconds, as in nats-server's JSON.

use serde::{Deserialize, Serialize};

use crate::jetstream::config::{is_valid_name, ApiError, JsError, StreamConfig};
use leaf_proto::subject::{is_subset, is_valid_subject, subject_matches};
use leaf_proto::time::parse_rfc3339;

/// Default `ack_wait`: 30 s.
pub const DEFAULT_ACK_WAIT_NS: i64 = 30_000_000_000;
/// Default `max_waiting` of a pull consumer.
pub const DEFAULT_MAX_WAITING: i64 = 512;
/// Default `max_ack_pending` with explicit or all acks.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// How long an ephemeral consumer without pull requests lives when `inactive_threshold` is 0.
pub const DEFAULT_INACTIVE_NS: i64 = 5_000_000_000;
/// Shortest push idle heartbeat accepted: 100 ms.
pub const MIN_IDLE_HEARTBEAT_NS: i64 = 100_000_000;
/// Longest description accepted.
const MAX_DESCRIPTION: usize = 4096;

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// From the first message.
    #[default]
    All,
    /// From the last message (matching the filter).
    Last,
    /// Only messages stored after the consumer was created.
    New,
    /// From `opt_start_seq`.
    ByStartSequence,
    /// From the first message stored at or after `opt_start_time`.
    ByStartTime,
    /// The last message of every subject matching the filter, then new ones.
    LastPerSubject,
}

/// How messages are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    /// No acks: a delivered message counts as acknowledged (Go's zero value).
    #[default]
    None,
    /// Acknowledging a message acknowledges every earlier one.
    All,
    /// Every message is acknowledged on its own.
    Explicit,
}

/// How fast messages are replayed (only `instant` is served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayPolicy {
    /// As fast as possible.
    #[default]
    Instant,
    /// At the original pace (not supported yet: refused).
    Original,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// A consumer's configuration (`ConsumerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    /// Name of a durable consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable_name: Option<String>,
    /// Name of the consumer (2.9+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Push consumers' delivery subject (unset: a pull consumer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_subject: Option<String>,
    /// Push consumers' queue group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_group: Option<String>,
    /// Where the consumer starts.
    pub deliver_policy: DeliverPolicy,
    /// Start sequence of `by_start_sequence`.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub opt_start_seq: u64,
    /// Start time of `by_start_time` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<String>,
    /// Ack policy.
    pub ack_policy: AckPolicy,
    /// How long a delivered message waits for its ack before it is redelivered (ns).
    #[serde(skip_serializing_if = "is_zero")]
    pub ack_wait: i64,
    /// Most deliveries of one message (-1: unlimited).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_deliver: i64,
    /// Redelivery delays by delivery count (ns).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backoff: Vec<i64>,
    /// Only messages matching this subject.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// Only messages matching one of these subjects (2.10).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_subjects: Vec<String>,
    /// Replay policy.
    pub replay_policy: ReplayPolicy,
    /// Push rate limit (refused for pull consumers; accepted but not applied for push).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub rate_limit_bps: u64,
    /// Ack sampling (accepted, not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_freq: Option<String>,
    /// Most pull requests waiting at a time.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_waiting: i64,
    /// Most delivered messages waiting for their ack.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    /// Deliver headers only, with the payload's size in `Nats-Msg-Size`.
    #[serde(skip_serializing_if = "is_false")]
    pub headers_only: bool,
    /// Push flow control (refused for pull consumers).
    #[serde(skip_serializing_if = "is_false")]
    pub flow_control: bool,
    /// Push idle heartbeat (refused for pull consumers).
    #[serde(skip_serializing_if = "is_zero")]
    pub idle_heartbeat: i64,
    /// Largest batch of one pull request.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_batch: i64,
    /// Longest `expires` of one pull request (ns).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_expires: i64,
    /// Largest `max_bytes` of one pull request.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_bytes: i64,
    /// An ephemeral consumer without pull requests for this long is deleted (ns).
    #[serde(skip_serializing_if = "is_zero")]
    pub inactive_threshold: i64,
    /// Replicas (leafd is a single server).
    #[serde(skip_serializing_if = "is_zero")]
    pub num_replicas: i64,
    /// Keep the consumer's state in memory (leafd keeps it in the store either way).
    #[serde(skip_serializing_if = "is_false")]
    pub mem_storage: bool,
    /// A consumer for a mirror or source (nats-server's `direct`: kept out of a cluster's
    /// consensus). This server's sources ask their origin for one; a request to this server
    /// that sets it is served as before the field was known: accepted, and cleared by
    /// [`ConsumerConfig::normalize`] (not kept, not reported).
    #[serde(skip_serializing_if = "is_false")]
    pub direct: bool,
    /// Free-form metadata (2.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Every other field of the request: newer servers' fields this one does not implement
    /// are refused by name (see [`UNSUPPORTED_CONSUMER_FIELDS`]); any other unknown field is
    /// ignored, as nats-server ignores it. Emptied by [`ConsumerConfig::normalize`].
    #[serde(flatten, skip_serializing)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Consumer configuration fields of nats-server 2.11 and later that this server does not
/// implement: set to anything but their "off" value, they are refused, naming the field.
pub const UNSUPPORTED_CONSUMER_FIELDS: &[&str] = &[
    "pause_until",
    "priority_groups",
    "priority_policy",
    "priority_timeout",
    "pinned_ttl",
];

/// A duration in nanoseconds as Go prints one (`30s`, `1m30s`, `1.5s`), for error texts.
fn format_duration(ns: i64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (m, s) = (secs / 60, secs % 60);
    let seconds = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if m > 0 {
        format!("{m}m{seconds}")
    } else {
        seconds
    }
}

fn invalid_policy(text: &str) -> ApiError {
    JsError::ConsumerInvalidPolicy.with(text)
}

impl ConsumerConfig {
    /// The consumer's name: `name`, else `durable_name`.
    pub fn consumer_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or(self.durable_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    /// Whether the consumer pushes its messages to `deliver_subject`.
    pub fn is_push(&self) -> bool {
        self.deliver_subject
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    }

    /// Whether the consumer is durable.
    pub fn is_durable(&self) -> bool {
        self.durable_name.as_deref().is_some_and(|d| !d.is_empty())
    }

    /// The subject filters (empty: everything).
    pub fn filters(&self) -> Vec<String> {
        if !self.filter_subject.is_empty() {
            vec![self.filter_subject.clone()]
        } else {
            self.filter_subjects.clone()
        }
    }

    /// The start time of `by_start_time`, in ns.
    pub fn start_time_ns(&self) -> Option<i64> {
        self.opt_start_time.as_deref().and_then(parse_rfc3339)
    }

    /// Checks the configuration against the stream's and fills in nats-server's defaults.
    pub fn normalize(mut self, stream: &StreamConfig) -> Result<ConsumerConfig, ApiError> {
        if let Some(field) = super::first_set(&self.other, UNSUPPORTED_CONSUMER_FIELDS) {
            return Err(JsError::ConsumerNotSupported.with(&format!(
                "consumer configuration field {field} is not supported by this server"
            )));
        }
        self.other.clear();
        self.direct = false;
        if self.deliver_subject.as_deref().is_some_and(str::is_empty) {
            self.deliver_subject = None;
        }
        if self.deliver_group.as_deref().is_some_and(str::is_empty) {
            self.deliver_group = None;
        }
        let push = self.is_push();
        if let Some(d) = self.deliver_subject.as_deref() {
            if !is_valid_subject(d.as_bytes()) {
                return Err(JsError::SnapshotDeliverSubjectInvalid.err());
            }
            if d.split('.').any(|t| t == "*" || t == ">") {
                return Err(JsError::ConsumerDeliverToWildcards.err());
            }
            if stream
                .subjects
                .iter()
                .any(|s| subject_matches(s.as_bytes(), d.as_bytes()))
            {
                return Err(JsError::ConsumerDeliverCycle.err());
            }
            if self.max_waiting != 0 {
                return Err(JsError::ConsumerPushMaxWaiting.err());
            }
            if self.flow_control && self.idle_heartbeat <= 0 {
                return Err(JsError::ConsumerWithFlowControlNeedsHeartbeats.err());
            }
            if self.idle_heartbeat > 0 && self.idle_heartbeat < MIN_IDLE_HEARTBEAT_NS {
                return Err(JsError::ConsumerSmallHeartbeat.err());
            }
        }
        if let Some(d) = self.durable_name.as_deref() {
            if d.is_empty() {
                self.durable_name = None;
            } else if !is_valid_name(d) {
                return Err(JsError::ConsumerBadDurableName.err());
            }
        }
        if let (Some(n), Some(d)) = (self.name.as_deref(), self.durable_name.as_deref()) {
            if !n.is_empty() && n != d {
                return Err(JsError::ConsumerCreateDurableAndNameMismatch.err());
            }
        }
        if let Some(n) = self.name.as_deref() {
            if n.is_empty() {
                self.name = None;
            } else if !is_valid_name(n) {
                return Err(JsError::ConsumerNameContainsPathSeparators.err());
            }
        }
        if self.name.is_none() {
            self.name = self.durable_name.clone();
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION)
        {
            return Err(JsError::ConsumerDescriptionTooLong
                .with("consumer description is too long, maximum allowed is 4096"));
        }
        if self.rate_limit_bps > 0 && !push {
            return Err(JsError::ConsumerPullWithRateLimit.err());
        }
        if self.max_waiting < 0 {
            return Err(JsError::ConsumerMaxWaitingNegative.err());
        }
        if self.idle_heartbeat > 0 && !push {
            return Err(JsError::ConsumerHbRequiresPush.err());
        }
        if self.flow_control && !push {
            return Err(JsError::ConsumerFcRequiresPush.err());
        }
        if self.max_batch < 0 {
            return Err(JsError::ConsumerMaxRequestBatchNegative.err());
        }
        if self.num_replicas > 1 {
            return Err(JsError::ConsumerReplicasExceedsStream.err());
        }
        if self.replay_policy == ReplayPolicy::Original {
            return Err(JsError::ConsumerNotSupported
                .with("replay policy original is not supported yet by this server"));
        }
        if !self.backoff.is_empty() && self.max_deliver > 0 {
            if self.max_deliver <= self.backoff.len() as i64 {
                return Err(JsError::ConsumerMaxDeliverBackoff.err());
            }
        } else if !self.backoff.is_empty() {
            return Err(JsError::ConsumerMaxDeliverBackoff.err());
        }
        if !self.filter_subject.is_empty() && !self.filter_subjects.is_empty() {
            return Err(JsError::ConsumerDuplicateFilterSubjects.err());
        }
        // A filter is valid when it lies within one of the stream's subjects, or (a wildcard
        // filter) covers one of them entirely: `foo.*` on `[foo.A, foo.B]`, `>` on
        // `[a, c.>]`. Filters that only partly overlap a subject (`foo.*.x` on `foo.a.*`) are
        // refused, as nats-server 2.9 refuses them. For a literal filter the second test is
        // the first one (a subject within a literal is that literal).
        for f in self.filters() {
            let f = f.as_bytes();
            let inside = is_valid_subject(f)
                && stream
                    .subjects
                    .iter()
                    .any(|s| is_subset(f, s.as_bytes()) || is_subset(s.as_bytes(), f));
            if !inside {
                return Err(JsError::ConsumerFilterNotSubset.err());
            }
        }
        let has_seq = self.opt_start_seq > 0;
        let has_time = self.opt_start_time.is_some();
        let name = match self.deliver_policy {
            DeliverPolicy::All => "all",
            DeliverPolicy::Last => "last",
            DeliverPolicy::New => "new",
            DeliverPolicy::LastPerSubject => "last per subject",
            DeliverPolicy::ByStartSequence => "by start sequence",
            DeliverPolicy::ByStartTime => "by start time",
        };
        let bad_start = |what: &str| {
            invalid_policy(&format!(
                "consumer delivery policy is deliver {name}, but optional start {what} is also set"
            ))
        };
        let not_set = |what: &str| {
            invalid_policy(&format!(
                "consumer delivery policy is deliver {name}, but optional {what} is not set"
            ))
        };
        match self.deliver_policy {
            DeliverPolicy::All
            | DeliverPolicy::Last
            | DeliverPolicy::New
            | DeliverPolicy::LastPerSubject => {
                if has_seq {
                    return Err(bad_start("sequence"));
                }
                if has_time {
                    return Err(bad_start("time"));
                }
                if self.deliver_policy == DeliverPolicy::LastPerSubject && self.filters().is_empty()
                {
                    return Err(not_set("filter subject"));
                }
            }
            DeliverPolicy::ByStartSequence => {
                if !has_seq {
                    return Err(not_set("start sequence"));
                }
                if has_time {
                    return Err(bad_start("time"));
                }
            }
            DeliverPolicy::ByStartTime => {
                if !has_time {
                    return Err(not_set("start time"));
                }
                if has_seq {
                    return Err(bad_start("sequence"));
                }
                if self.start_time_ns().is_none() {
                    return Err(invalid_policy("consumer start time is not a valid time"));
                }
            }
        }
        // nats-server's defaults.
        if self.max_waiting == 0 && !push {
            self.max_waiting = DEFAULT_MAX_WAITING;
        }
        let acks = self.ack_policy != AckPolicy::None;
        if let Some(first) = self.backoff.first() {
            self.ack_wait = *first;
        }
        if self.ack_wait == 0 && acks {
            self.ack_wait = DEFAULT_ACK_WAIT_NS;
        }
        if self.max_deliver == 0 {
            self.max_deliver = -1;
        }
        // The stream's consumer_limits (2.10): defaults, and ceilings a consumer may not pass.
        let limits = stream.consumer_limits.unwrap_or_default();
        if acks && self.max_ack_pending == 0 {
            self.max_ack_pending = match limits.max_ack_pending {
                0 => DEFAULT_MAX_ACK_PENDING,
                limit => limit.min(DEFAULT_MAX_ACK_PENDING),
            };
        }
        if acks && limits.max_ack_pending > 0 && self.max_ack_pending > limits.max_ack_pending {
            return Err(JsError::ConsumerMaxPendingAckExcess.with(&format!(
                "consumer max ack pending exceeds system limit of {}",
                limits.max_ack_pending
            )));
        }
        if limits.inactive_threshold > 0 {
            if self.inactive_threshold == 0 {
                self.inactive_threshold = limits.inactive_threshold;
            } else if self.inactive_threshold > limits.inactive_threshold {
                return Err(JsError::ConsumerInactiveThresholdExcess.with(&format!(
                    "consumer inactive threshold exceeds system limit of {}",
                    format_duration(limits.inactive_threshold)
                )));
            }
        }
        Ok(self)
    }

    /// Why `new` may not replace `self` on a running consumer, if it may not.
    pub fn check_update(&self, new: &ConsumerConfig) -> Result<(), ApiError> {
        let refuse =
            |what: &str| Err(JsError::ConsumerCreate.with(&format!("{what} can not be updated")));
        if self.deliver_policy != new.deliver_policy {
            return refuse("deliver policy");
        }
        if self.opt_start_seq != new.opt_start_seq {
            return refuse("start sequence");
        }
        if self.opt_start_time != new.opt_start_time {
            return refuse("start time");
        }
        if self.ack_policy != new.ack_policy {
            return refuse("ack policy");
        }
        if self.replay_policy != new.replay_policy {
            return refuse("replay policy");
        }
        if self.is_push() != new.is_push() {
            return refuse("push/pull mode");
        }
        if self.max_waiting != new.max_waiting {
            return refuse("max waiting");
        }
        if self.filters() != new.filters() {
            return refuse("filter subject");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamConfig {
        StreamConfig {
            name: "S".into(),
            subjects: vec!["orders.>".into()],
            ..StreamConfig::default()
        }
    }

    #[test]
    fn defaults_follow_nats_server() {
        let cfg: ConsumerConfig = serde_json::from_str(
            r#"{"durable_name":"d","ack_policy":"explicit","unknown_field":1}"#,
        )
        .unwrap();
        let cfg = cfg.normalize(&stream()).unwrap();
        assert_eq!(cfg.ack_wait, DEFAULT_ACK_WAIT_NS);
        assert_eq!(cfg.max_deliver, -1);
        assert_eq!(cfg.max_waiting, DEFAULT_MAX_WAITING);
        assert_eq!(cfg.max_ack_pending, DEFAULT_MAX_ACK_PENDING);
        assert_eq!(cfg.name.as_deref(), Some("d"));
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["deliver_policy"], "all");
        assert_eq!(json["ack_policy"], "explicit");
    }

    #[test]
    fn the_streams_consumer_limits_are_defaults_and_ceilings() {
        let limited = StreamConfig {
            consumer_limits: Some(crate::jetstream::config::ConsumerLimits {
                inactive_threshold: 30_000_000_000,
                max_ack_pending: 10,
            }),
            ..stream()
        };
        let parse = |json: &str| {
            serde_json::from_str::<ConsumerConfig>(json)
                .unwrap()
                .normalize(&limited)
        };
        let c = parse(r#"{"ack_policy":"explicit"}"#).unwrap();
        assert_eq!(
            (c.max_ack_pending, c.inactive_threshold),
            (10, 30_000_000_000)
        );
        let c = parse(r#"{"ack_policy":"explicit","max_ack_pending":5,"inactive_threshold":1}"#);
        assert_eq!(
            c.map(|c| (c.max_ack_pending, c.inactive_threshold)),
            Ok((5, 1))
        );
        assert_eq!(
            parse(r#"{"ack_policy":"explicit","max_ack_pending":11}"#)
                .unwrap_err()
                .err_code,
            10121
        );
        let e = parse(r#"{"inactive_threshold":31000000000}"#).unwrap_err();
        assert_eq!(e.err_code, 10153);
        assert!(e.description.ends_with("30s"), "{e}");
        assert_eq!(format_duration(90_500_000_000), "1m30.5s");
    }

    #[test]
    fn newer_fields_are_refused_by_name_and_others_ignored() {
        let parse = |json: &str| {
            serde_json::from_str::<ConsumerConfig>(json)
                .unwrap()
                .normalize(&stream())
        };
        let e = parse(r#"{"pause_until":"2030-01-01T00:00:00Z"}"#).unwrap_err();
        assert!(e.description.contains("pause_until"), "{e}");
        assert!(parse(r#"{"priority_groups":["a"],"priority_policy":"pinned_client"}"#).is_err());
        let quiet = parse(r#"{"priority_groups":[],"priority_policy":"none","zz":1}"#).unwrap();
        assert_eq!(quiet, parse("{}").unwrap());
    }

    #[test]
    fn a_filter_may_be_wider_than_the_stream_subjects_it_covers() {
        let stream = |subjects: &[&str]| StreamConfig {
            name: "S".into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            ..StreamConfig::default()
        };
        let check = |filter: &str, on: &StreamConfig| {
            serde_json::from_str::<ConsumerConfig>(&format!(r#"{{"filter_subject":"{filter}"}}"#))
                .unwrap()
                .normalize(on)
                .map(|_| ())
                .map_err(|e| e.err_code)
        };
        let abc = stream(&["foo.A", "foo.B", "foo.C"]);
        assert_eq!(check("foo.*", &abc), Ok(()));
        assert_eq!(check("foo.>", &abc), Ok(()));
        assert_eq!(check("foo.B", &abc), Ok(()));
        assert_eq!(check("foo.D", &abc), Err(10093));
        assert_eq!(check("bar.*", &abc), Err(10093));
        assert_eq!(check(">", &stream(&["a", "b", "c.>"])), Ok(()));
        assert_eq!(check("c.*", &stream(&["a", "b", "c.>"])), Ok(()));
        // Overlapping without either covering the other: refused, as nats-server 2.9 does.
        assert_eq!(check("foo.*.x", &stream(&["foo.a.*"])), Err(10093));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let check = |json: &str| {
            serde_json::from_str::<ConsumerConfig>(json)
                .unwrap()
                .normalize(&stream())
                .unwrap_err()
                .err_code
        };
        assert_eq!(check(r#"{"deliver_subject":"x.*"}"#), 10079);
        assert_eq!(check(r#"{"deliver_subject":"orders.x"}"#), 10081);
        assert_eq!(
            check(r#"{"deliver_subject":"x","flow_control":true}"#),
            10108
        );
        assert_eq!(check(r#"{"deliver_subject":"x","max_waiting":3}"#), 10080);
        assert_eq!(check(r#"{"idle_heartbeat":1000000000}"#), 10088);
        assert_eq!(check(r#"{"filter_subject":"other.x"}"#), 10093);
        assert_eq!(check(r#"{"filter_subject":"other.*"}"#), 10093);
        assert_eq!(check(r#"{"deliver_policy":"by_start_sequence"}"#), 10094);
        assert_eq!(check(r#"{"deliver_policy":"last_per_subject"}"#), 10094);
        assert_eq!(check(r#"{"opt_start_seq":3}"#), 10094);
        assert_eq!(check(r#"{"durable_name":"a.b"}"#), 10103);
        assert!(
            serde_json::from_str::<ConsumerConfig>(r#"{"filter_subject":"orders.*"}"#)
                .unwrap()
                .normalize(&stream())
                .is_ok()
        );
    }
}
