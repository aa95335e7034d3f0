//! The envelope every API answer shares: `{"type": "io.nats.jetstream.api.v1.<kind>", …}`
//! around a body or an `error`, written by the API ([`Response`], [`super::ErrorResponse`])
//! and read by this workspace's clients of another server's API ([`read_answer`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::jetstream::errors::{ApiError, JsError};

/// What every response type starts with.
pub const TYPE_PREFIX: &str = "io.nats.jetstream.api.v1.";

/// A successful API answer: its `type` first, then the body's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response<T> {
    /// The response type, [`TYPE_PREFIX`] and the kind (`stream_info_response`…); absent
    /// from some servers' answers.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The body.
    #[serde(flatten)]
    pub body: T,
}

impl<T> Response<T> {
    /// The answer of kind `kind` (`stream_info_response`…) carrying `body`.
    pub fn new(kind: &str, body: T) -> Self {
        Response {
            kind: format!("{TYPE_PREFIX}{kind}"),
            body,
        }
    }
}

/// Why another server's answer gives no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The server answered with an API error.
    #[error("{0}")]
    Refused(ApiError),
    /// The answer is not one the API gives (never quoted: it may come from anyone).
    #[error("unreadable answer: {0}")]
    Unreadable(String),
}

impl AnswerError {
    /// Whether the server refused with `e`'s code.
    pub fn is(&self, e: JsError) -> bool {
        matches!(self, AnswerError::Refused(r) if r.is(e))
    }
}

impl From<AnswerError> for ApiError {
    /// The refusal, or a general error (500/10051) saying the answer was unreadable.
    fn from(e: AnswerError) -> ApiError {
        match e {
            AnswerError::Refused(e) => e,
            AnswerError::Unreadable(why) => ApiError::general(&format!("unreadable answer: {why}")),
        }
    }
}

/// Just the `error` of an answer (everything else ignored).
#[derive(Deserialize)]
struct ErrorField {
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Reads another server's answer: its `error` as [`AnswerError::Refused`], otherwise its body
/// as `T`. Fields `T` does not know are ignored and missing optional ones take their
/// defaults; an answer that is not a JSON object, whose error is unreadable or whose body
/// does not have `T`'s shape is [`AnswerError::Unreadable`].
pub fn read_answer<T: DeserializeOwned>(body: &[u8]) -> Result<T, AnswerError> {
    let unreadable = |why: &str| AnswerError::Unreadable(why.to_string());
    let probe: ErrorField =
        serde_json::from_slice(body).map_err(|_| unreadable("not a JSON object"))?;
    if let Some(error) = probe.error {
        let error = serde_json::from_value(error).map_err(|_| unreadable("malformed error"))?;
        return Err(AnswerError::Refused(error));
    }
    serde_json::from_slice(body)
        .map_err(|e| AnswerError::Unreadable(format!("unexpected shape at column {}", e.column())))
}

// Not generic, so compiled once in this crate: each crate that calls `read_answer` itself
// gets its own copy of the body's whole deserializer (stable Rust shares no generic
// instances between crates), which made leafd 2 % bigger.
impl super::StreamInfo {
    /// Reads another server's `STREAM.INFO`, `STREAM.CREATE` or `STREAM.UPDATE` answer (see
    /// [`read_answer`]).
    pub fn read(body: &[u8]) -> Result<Self, AnswerError> {
        read_answer(body)
    }
}

impl super::ConsumerInfo {
    /// Reads another server's `CONSUMER.CREATE` or `CONSUMER.INFO` answer (see
    /// [`read_answer`]).
    pub fn read(body: &[u8]) -> Result<Self, AnswerError> {
        read_answer(body)
    }
}

impl super::MsgGetResponse {
    /// Reads another server's `STREAM.MSG.GET` answer (see [`read_answer`]).
    pub fn read(body: &[u8]) -> Result<Self, AnswerError> {
        read_answer(body)
    }
}

impl super::ConsumerCreateRequest {
    /// The request's JSON (compiled once here, like the readers above).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
