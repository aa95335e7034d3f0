//! The one table of JetStream API errors this server answers with: each [`JsError`] names a
//! nats-server error by its identifier in nats-server's `server/errors.json` (without the
//! `JS` prefix and `Err`/`ErrF` suffix) and carries its HTTP-like status, its `err_code`
//! (what clients branch on) and, where the text is fixed, the description sent on the wire.
//!
//! Codes and statuses are nats-server's (the unit test checks them against the fixture
//! `errors/nats-errors.json`, a subset of nats-server's `errors.json`: identifier, status and
//! code only). The descriptions are what this server has always sent; where nats-server's
//! template takes a detail (`{err}`, `{seq}`…), [`JsError::with`] supplies the whole text.
//!
//! A few entries are this server's own use of a code and have no nats-server identifier
//! ([`JsError::constant`] is `None`); they keep the wire identical to earlier releases and
//! are listed in `core/DESIGN.md` ("JetStream API errors").

use serde::{Deserialize, Serialize};

/// An error answer of the JetStream API (`{"error": {code, err_code, description}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{description} ({code}/{err_code})")]
pub struct ApiError {
    /// HTTP-like status.
    pub code: u16,
    /// nats-server's error code, which clients branch on.
    pub err_code: u16,
    /// Human-readable text.
    pub description: String,
}

impl ApiError {
    /// An error with its codes and text; only the table below builds one from numbers.
    fn new(code: u16, err_code: u16, description: &str) -> Self {
        ApiError {
            code,
            err_code,
            description: description.to_string(),
        }
    }

    /// The same error with another HTTP-like status (a source's setup failure records why
    /// it failed: 503 no responders, 504 timeout).
    pub fn with_status(mut self, code: u16) -> Self {
        self.code = code;
        self
    }

    /// Whether this is `e`'s code.
    pub fn is(&self, e: JsError) -> bool {
        self.err_code == e.code()
    }
}

macro_rules! js_errors {
    ($($(#[$doc:meta])* $name:ident = ($constant:expr, $status:expr, $code:expr, $text:expr);)*) => {
        /// A JetStream API error, named after nats-server's identifier (see the module
        /// documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum JsError {
            $($(#[$doc])* $name,)*
        }

        impl JsError {
            /// Every entry of the table.
            pub const ALL: &'static [JsError] = &[$(JsError::$name,)*];

            /// nats-server's identifier (`JSStreamNotFoundErr`…); `None` for this server's
            /// own use of a code.
            pub const fn constant(self) -> Option<&'static str> {
                match self { $(JsError::$name => $constant,)* }
            }
            /// The HTTP-like status.
            pub const fn status(self) -> u16 {
                match self { $(JsError::$name => $status,)* }
            }
            /// The `err_code`.
            pub const fn code(self) -> u16 {
                match self { $(JsError::$name => $code,)* }
            }
            /// The fixed description; `None` where it carries a detail ([`JsError::with`]).
            pub const fn text(self) -> Option<&'static str> {
                match self { $(JsError::$name => $text,)* }
            }
        }
    };
}

js_errors! {
    /// 400 10003.
    BadRequest = (Some("JSBadRequestErr"), 400, 10003, Some("bad request"));
    /// 501 10003: a request form this server does not serve (yet).
    NotSupportedYet = (None, 501, 10003, Some("this consumer request is not supported yet by this server"));
    /// 400 10005, with the reason ("no suitable peers for placement", and why).
    ClusterNoPeers = (Some("JSClusterNoPeersErrF"), 400, 10005, None);
    /// 400 10040: `STREAM.PEER.REMOVE` of a server that is not a peer of the stream.
    ClusterPeerNotMember = (Some("JSClusterPeerNotMemberErr"), 400, 10040, Some("peer not a member"));
    /// 400 10044: `SERVER.REMOVE` of a server that is not a member of the meta group.
    ClusterServerNotMember = (Some("JSClusterServerNotMemberErr"), 400, 10044, Some("server is not a member of the cluster"));
    /// 503 10008: no meta leader, or it did not answer.
    ClusterNotAvail = (Some("JSClusterNotAvailErr"), 503, 10008, Some("JetStream system temporarily unavailable"));
    /// 503 10036: a request on a replicated stream this server does not serve yet.
    ClusterUnSupportFeature = (Some("JSClusterUnSupportFeatureErr"), 503, 10036, Some("not currently supported in clustered mode"));
    /// 500 10012, with the reason.
    ConsumerCreate = (Some("JSConsumerCreateErrF"), 500, 10012, None);
    /// 400 10012: a consumer setting this server refuses (nats-server's status is 500).
    ConsumerNotSupported = (None, 400, 10012, None);
    /// 404 10014.
    ConsumerNotFound = (Some("JSConsumerNotFoundErr"), 404, 10014, Some("consumer not found"));
    /// 400 10015.
    SnapshotDeliverSubjectInvalid = (Some("JSSnapshotDeliverSubjectInvalidErr"), 400, 10015, Some("deliver subject not valid"));
    /// 400 10017.
    ConsumerDurableNameNotMatchSubject = (Some("JSConsumerDurableNameNotMatchSubjectErr"), 400, 10017, Some("consumer name in subject does not match durable name in request"));
    /// 400 10018.
    ConsumerDurableNameNotSet = (Some("JSConsumerDurableNameNotSetErr"), 400, 10018, Some("consumer expected to be durable but a durable name was not set"));
    /// 400 10020.
    ConsumerEphemeralWithDurableName = (Some("JSConsumerEphemeralWithDurableNameErr"), 400, 10020, Some("consumer expected to be ephemeral but a durable name was set in request"));
    /// 503 10023.
    InsufficientResources = (Some("JSInsufficientResourcesErr"), 503, 10023, Some("insufficient resources"));
    /// 400 10025.
    InvalidJson = (Some("JSInvalidJSONErr"), 400, 10025, Some("invalid JSON"));
    /// 400 10026.
    MaximumConsumersLimit = (Some("JSMaximumConsumersLimitErr"), 400, 10026, Some("maximum consumers limit reached"));
    /// 400 10027.
    MaximumStreamsLimit = (Some("JSMaximumStreamsLimitErr"), 400, 10027, Some("maximum number of streams reached"));
    /// 500 10029, with the reason.
    MirrorConsumerSetupFailed = (Some("JSMirrorConsumerSetupFailedErrF"), 500, 10029, None);
    /// 400 10031.
    MirrorWithSources = (Some("JSMirrorWithSourcesErr"), 400, 10031, Some("stream mirrors can not also contain other sources"));
    /// 400 10032.
    MirrorWithStartSeqAndTime = (Some("JSMirrorWithStartSeqAndTimeErr"), 400, 10032, Some("stream mirrors can not have both start seq and start time configured"));
    /// 400 10034.
    MirrorWithSubjects = (Some("JSMirrorWithSubjectsErr"), 400, 10034, Some("stream mirrors can not contain subjects"));
    /// 404 10037.
    NoMessageFound = (Some("JSNoMessageFoundErr"), 404, 10037, Some("no message found"));
    /// 503 10039.
    NotEnabledForAccount = (Some("JSNotEnabledForAccountErr"), 503, 10039, Some("JetStream not enabled for account"));
    /// 500 10045, with the reason.
    SourceConsumerSetupFailed = (Some("JSSourceConsumerSetupFailedErrF"), 500, 10045, None);
    /// 500 10051, with the reason.
    StreamGeneralError = (Some("JSStreamGeneralErrorF"), 500, 10051, None);
    /// 500 10052, with the reason.
    StreamInvalidConfig = (Some("JSStreamInvalidConfigF"), 500, 10052, None);
    /// 400 10054.
    StreamMessageExceedsMaximum = (Some("JSStreamMessageExceedsMaximumErr"), 400, 10054, Some("message size exceeds maximum allowed"));
    /// 400 10055.
    StreamMirrorNotUpdatable = (Some("JSStreamMirrorNotUpdatableErr"), 400, 10055, Some("stream mirror configuration can not be updated"));
    /// 400 10056.
    StreamMismatch = (Some("JSStreamMismatchErr"), 400, 10056, Some("stream name in subject does not match request"));
    /// 500 10057, with the reason.
    StreamMsgDeleteFailed = (Some("JSStreamMsgDeleteFailedF"), 500, 10057, None);
    /// 400 10058.
    StreamNameExist = (Some("JSStreamNameExistErr"), 400, 10058, Some("stream name already in use with a different configuration"));
    /// 404 10059.
    StreamNotFound = (Some("JSStreamNotFoundErr"), 404, 10059, Some("stream not found"));
    /// 400 10060.
    StreamNotMatch = (Some("JSStreamNotMatchErr"), 400, 10060, Some("expected stream does not match"));
    /// 400 10061.
    StreamReplicasNotUpdatable = (Some("JSStreamReplicasNotUpdatableErr"), 400, 10061, Some("Replicas configuration can not be updated"));
    /// 400 10065.
    StreamSubjectOverlap = (Some("JSStreamSubjectOverlapErr"), 400, 10065, Some("subjects overlap with an existing stream"));
    /// 400 10070, with the ID.
    StreamWrongLastMsgId = (Some("JSStreamWrongLastMsgIDErrF"), 400, 10070, None);
    /// 400 10071, with the sequence.
    StreamWrongLastSequence = (Some("JSStreamWrongLastSequenceErrF"), 400, 10071, None);
    /// 500 10074.
    StreamReplicasNotSupported = (Some("JSStreamReplicasNotSupportedErr"), 500, 10074, Some("replicas > 1 not supported in non-clustered mode"));
    /// 503 10077, with the reason.
    StreamStoreFailed = (Some("JSStreamStoreFailedF"), 503, 10077, None);
    /// 400 10078.
    ConsumerConfigRequired = (Some("JSConsumerConfigRequiredErr"), 400, 10078, Some("consumer config required"));
    /// 400 10079.
    ConsumerDeliverToWildcards = (Some("JSConsumerDeliverToWildcardsErr"), 400, 10079, Some("consumer deliver subject has wildcards"));
    /// 400 10080.
    ConsumerPushMaxWaiting = (Some("JSConsumerPushMaxWaitingErr"), 400, 10080, Some("consumer in push mode can not set max waiting"));
    /// 400 10081.
    ConsumerDeliverCycle = (Some("JSConsumerDeliverCycleErr"), 400, 10081, Some("consumer deliver subject forms a cycle"));
    /// 400 10082 for a stream that denies deletes (nats-server answers 500 10057).
    MsgDeleteNotPermitted = (None, 400, 10082, Some("message delete not permitted"));
    /// 400 10083.
    ConsumerSmallHeartbeat = (Some("JSConsumerSmallHeartbeatErr"), 400, 10083, Some("consumer idle heartbeat needs to be >= 100ms"));
    /// 400 10083 for a stream that denies purges (nats-server answers 500 10110).
    PurgeNotPermitted = (None, 400, 10083, Some("stream purge not permitted"));
    /// 400 10084.
    ConsumerPullRequiresAck = (Some("JSConsumerPullRequiresAckErr"), 400, 10084, Some("consumer in pull mode requires ack policy"));
    /// 400 10086.
    ConsumerPullWithRateLimit = (Some("JSConsumerPullWithRateLimitErr"), 400, 10086, Some("consumer in pull mode can not have rate limit set"));
    /// 400 10087.
    ConsumerMaxWaitingNegative = (Some("JSConsumerMaxWaitingNegativeErr"), 400, 10087, Some("consumer max waiting needs to be positive"));
    /// 400 10088.
    ConsumerHbRequiresPush = (Some("JSConsumerHBRequiresPushErr"), 400, 10088, Some("consumer idle heartbeat requires a push based consumer"));
    /// 400 10089.
    ConsumerFcRequiresPush = (Some("JSConsumerFCRequiresPushErr"), 400, 10089, Some("consumer flow control requires a push based consumer"));
    /// 400 10093.
    ConsumerFilterNotSubset = (Some("JSConsumerFilterNotSubsetErr"), 400, 10093, Some("consumer filter subject is not a valid subset of the interest subjects"));
    /// 400 10094, with the reason.
    ConsumerInvalidPolicy = (Some("JSConsumerInvalidPolicyErrF"), 400, 10094, None);
    /// 400 10098.
    ConsumerWqRequiresExplicitAck = (Some("JSConsumerWQRequiresExplicitAckErr"), 400, 10098, Some("workqueue stream requires explicit ack"));
    /// 400 10099.
    ConsumerWqMultipleUnfiltered = (Some("JSConsumerWQMultipleUnfilteredErr"), 400, 10099, Some("multiple non-filtered consumers not allowed on workqueue stream"));
    /// 400 10100.
    ConsumerWqConsumerNotUnique = (Some("JSConsumerWQConsumerNotUniqueErr"), 400, 10100, Some("filtered consumer not unique on workqueue stream"));
    /// 400 10101.
    ConsumerWqConsumerNotDeliverAll = (Some("JSConsumerWQConsumerNotDeliverAllErr"), 400, 10101, Some("consumer must be deliver all on workqueue stream"));
    /// 400 10103.
    ConsumerBadDurableName = (Some("JSConsumerBadDurableNameErr"), 400, 10103, Some("durable name can not contain '.', '*', '>'"));
    /// 400 10107, with the maximum.
    ConsumerDescriptionTooLong = (Some("JSConsumerDescriptionTooLongErrF"), 400, 10107, None);
    /// 400 10108.
    ConsumerWithFlowControlNeedsHeartbeats = (Some("JSConsumerWithFlowControlNeedsHeartbeats"), 400, 10108, Some("consumer with flow control also needs heartbeats"));
    /// 400 10109.
    StreamSealed = (Some("JSStreamSealedErr"), 400, 10109, Some("invalid operation on sealed stream"));
    /// 500 10111, with the reason.
    StreamRollupFailed = (Some("JSStreamRollupFailedF"), 500, 10111, None);
    /// 400 10114.
    ConsumerMaxRequestBatchNegative = (Some("JSConsumerMaxRequestBatchNegativeErr"), 400, 10114, Some("consumer max request batch needs to be > 0"));
    /// 500 10115 for a rollup on a stream that does not allow it (nats-server answers
    /// 500 10111).
    RollupNotPermitted = (None, 500, 10115, Some("rollup not permitted"));
    /// 400 10116.
    ConsumerMaxDeliverBackoff = (Some("JSConsumerMaxDeliverBackoffErr"), 400, 10116, Some("max deliver is required to be > length of backoff values"));
    /// 400 10121, with the limit.
    ConsumerMaxPendingAckExcess = (Some("JSConsumerMaxPendingAckExcessErrF"), 400, 10121, None);
    /// 400 10126.
    ConsumerReplicasExceedsStream = (Some("JSConsumerReplicasExceedsStream"), 400, 10126, Some("consumer config replica count exceeds parent stream"));
    /// 400 10123: `STREAM.UPDATE` changing both `placement` and `num_replicas`.
    StreamMoveAndScale = (Some("JSStreamMoveAndScaleErr"), 400, 10123, Some("can not move and scale a stream in a single update"));
    /// 400 10124: a change of a replicated stream's peers while another is in progress.
    StreamMoveInProgress = (Some("JSStreamMoveInProgressErr"), 400, 10124, Some("stream move already in progress"));
    /// 400 10127.
    ConsumerNameContainsPathSeparators = (Some("JSConsumerNameContainsPathSeparatorsErr"), 400, 10127, Some("Consumer name can not contain path separators"));
    /// 400 10128.
    StreamNameContainsPathSeparators = (Some("JSStreamNameContainsPathSeparatorsErr"), 400, 10128, Some("Stream name can not contain path separators"));
    /// 400 10131.
    ConsumerCreateFilterSubjectMismatch = (Some("JSConsumerCreateFilterSubjectMismatchErr"), 400, 10131, Some("Consumer create request did not match filtered subject from create subject"));
    /// 400 10132.
    ConsumerCreateDurableAndNameMismatch = (Some("JSConsumerCreateDurableAndNameMismatch"), 400, 10132, Some("Consumer Durable and Name have to be equal if both are provided"));
    /// 400 10136 (nats-server 2.10).
    ConsumerDuplicateFilterSubjects = (Some("JSConsumerDuplicateFilterSubjects"), 400, 10136, Some("consumer config can not have both filter_subject and filter_subjects"));
    /// 400 10148 (nats-server 2.10).
    ConsumerAlreadyExists = (Some("JSConsumerAlreadyExists"), 400, 10148, Some("consumer already exists"));
    /// 400 10149 (nats-server 2.10).
    ConsumerDoesNotExist = (Some("JSConsumerDoesNotExist"), 400, 10149, Some("consumer does not exist"));
    /// 400 10153, with the limit (nats-server 2.10).
    ConsumerInactiveThresholdExcess = (Some("JSConsumerInactiveThresholdExcess"), 400, 10153, None);
    /// 429 10167 (nats-server 2.10).
    StreamTooManyRequests = (Some("JSStreamTooManyRequests"), 429, 10167, Some("too many requests"));
}

impl JsError {
    /// The error with its fixed description (an entry without one sends its identifier's
    /// name; use [`JsError::with`] for those).
    pub fn err(self) -> ApiError {
        ApiError::new(self.status(), self.code(), self.text().unwrap_or("error"))
    }

    /// The error with `description` as its whole text (the entries whose nats-server
    /// description is a template).
    pub fn with(self, description: &str) -> ApiError {
        ApiError::new(self.status(), self.code(), description)
    }
}

#[cfg(test)]
mod tests;
