//! Reads of a replicated stream's messages (`$JS.API.STREAM.MSG.GET.<stream>` and
//! `$JS.API.DIRECT.GET.<stream>[.<subject>]`) answered by the stream group's leader.
//!
//! A member's copy may lag its group's leader (a heartbeat in steady state, more while it
//! catches up), and a member cut off from the others may hold a copy that no longer takes
//! writes. So on a clustered server every such read of a replicated stream known to the
//! hook goes to [`Replication::read`]: hubd serves it on the member leading the stream's group
//! after a read barrier (its leadership confirmed by a quorum, everything committed until then
//! applied), here or asked over the cluster's transport, and the answer comes back to this
//! member. This member then answers the requester as it answers any request, with the
//! request's own [`ReplyTo`]: an answer confined to the requester (a reply subject it may not
//! receive otherwise, see [`crate::server::reply`]) stays confined, as the leader never
//! publishes to the requester's reply subject itself. A read that cannot be served (no leader,
//! no quorum, no answer in time) answers 10008 (`MSG.GET`, as nats-server when the group has
//! no leader) or a `503` status (`DIRECT.GET`, what a client of nats-server gets when no
//! member answers), never a copy's possibly stale messages.
//!
//! The request is served off the API task (each read is a task of its own, bounded in time by
//! the hook), so reads waiting on a barrier or a member's answer never hold the API's other
//! requests; at most [`MAX_READS_IN_FLIGHT`] wait at once (past it: answered as unavailable).
//!
//! [`Replication::read`]: super::replication::Replication::read

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{ApiError, JsError};
use super::wire::TYPE_PREFIX;
use super::{Inner, JetStream};
use crate::server::ReplyTo;
use leaf_proto::headers;

/// A read of a replicated stream's messages, as the requester sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// `DIRECT.GET` (an answer with the message's headers and payload), else `MSG.GET` (a JSON
    /// answer).
    pub direct: bool,
    /// The subject of `DIRECT.GET.<stream>.<subject>` (last message on it); `None`: the
    /// request's body says what to read.
    pub last_by: Option<String>,
    /// The request's body (`{"seq"|"last_by_subj"|"next_by_subj"}`).
    pub payload: Vec<u8>,
}

/// The answer to a [`Read`], as it goes to the requester: headers (`DIRECT.GET`) and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAnswer {
    /// The answer's headers (a direct get's message headers or status).
    pub headers: Option<Vec<u8>>,
    /// The answer's body.
    pub body: Vec<u8>,
}

impl ReadAnswer {
    /// The answer to `read` when it could not be served: `error` (`MSG.GET`), or a `503`
    /// status (`DIRECT.GET`).
    pub fn failed(read: &Read, error: &ApiError) -> ReadAnswer {
        if read.direct {
            return ReadAnswer {
                headers: Some(headers::Builder::new(Some((503, ""))).finish()),
                body: Vec::new(),
            };
        }
        let body = super::wire::ErrorResponse {
            kind: Some(format!("{TYPE_PREFIX}stream_msg_get_response")),
            error: error.clone(),
        };
        ReadAnswer {
            headers: None,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}

impl Inner {
    /// Hands `read` of stream `name` to the hook when `name` is a replicated stream known
    /// here (see the module documentation), its answer going to `reply` later; `false` when it
    /// is not (the ordinary path answers from this engine's stream).
    pub(crate) fn read_replicated(&self, name: &str, read: Read, reply: Option<&ReplyTo>) -> bool {
        let Some((hook, account)) = self.replication() else {
            return false;
        };
        // This engine's copy says it at once; without one, the cluster's assignments.
        let replicated = match self.stream(name) {
            Some(s) => s.config().is_replicated(),
            None => hook.stream(&account, name).is_some(),
        };
        if !replicated {
            return false;
        }
        let Some(reply) = reply.cloned() else {
            return true; // nobody to answer
        };
        let Some(server) = self.server.upgrade() else {
            return true;
        };
        let in_flight = InFlight::take(&self.reads_in_flight);
        let Some(in_flight) = in_flight else {
            let answer = ReadAnswer::failed(&read, &JsError::ClusterNotAvail.err());
            server.answer(&reply, answer.headers.as_deref(), &answer.body);
            return true;
        };
        let server = Arc::downgrade(&server);
        let name = name.to_owned();
        tokio::spawn(async move {
            let answer = match hook.read(&account, &name, read.clone()).await {
                Ok(answer) => answer,
                Err(e) => ReadAnswer::failed(&read, &e),
            };
            drop(in_flight);
            if let Some(server) = server.upgrade() {
                server.answer(&reply, answer.headers.as_deref(), &answer.body);
            }
        });
        true
    }
}

/// Most reads of replicated streams one engine waits on at once: past it a read is answered
/// as unavailable at once (each waits at most the hook's bounds, a few seconds).
pub const MAX_READS_IN_FLIGHT: usize = 4096;

/// One read counted in [`Inner`]'s reads in flight, until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one more read, unless [`MAX_READS_IN_FLIGHT`] are waiting.
    fn take(count: &Arc<AtomicUsize>) -> Option<InFlight> {
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_READS_IN_FLIGHT).then_some(n + 1)
        });
        taken.ok().map(|_| InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl JetStream {
    /// Answers `read` of this member's copy of stream `name` as a single server would: hubd
    /// calls it on the member leading the stream's group, after its read barrier.
    pub fn answer_read(&self, name: &str, read: &Read) -> ReadAnswer {
        self.inner.answer_read_here(name, read)
    }
}

#[cfg(test)]
mod tests {
    use super::{Read, ReadAnswer};
    use crate::jetstream::config::JsError;

    /// Reads in flight are counted up to the bound and released when dropped.
    #[test]
    fn reads_in_flight_are_bounded() {
        use super::{InFlight, MAX_READS_IN_FLIGHT};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let count = Arc::new(AtomicUsize::new(0));
        let held: Vec<InFlight> = (0..MAX_READS_IN_FLIGHT)
            .map(|_| InFlight::take(&count).expect("under the bound"))
            .collect();
        assert!(InFlight::take(&count).is_none(), "past the bound");
        drop(held);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(InFlight::take(&count).is_some());
    }

    /// A read that could not be served: `MSG.GET` answers the error in its JSON envelope,
    /// `DIRECT.GET` a 503 status without a body (never a copy's messages).
    #[test]
    fn a_failed_read_answers_the_error_or_503() {
        let e = JsError::ClusterNotAvail.err();
        let get = Read {
            direct: false,
            last_by: None,
            payload: br#"{"seq":1}"#.to_vec(),
        };
        let answer = ReadAnswer::failed(&get, &e);
        assert_eq!(answer.headers, None);
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(json["error"]["err_code"], 10008);
        assert_eq!(
            json["type"],
            "io.nats.jetstream.api.v1.stream_msg_get_response"
        );
        let direct = Read {
            direct: true,
            last_by: Some("a.b".into()),
            payload: Vec::new(),
        };
        let answer = ReadAnswer::failed(&direct, &e);
        let hdr = String::from_utf8(answer.headers.unwrap()).unwrap();
        assert!(hdr.starts_with("NATS/1.0 503"), "{hdr}");
        assert!(answer.body.is_empty());
    }
}
