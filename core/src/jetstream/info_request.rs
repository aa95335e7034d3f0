//! The optional body of a `STREAM.INFO` request (nats-server's `JSApiStreamInfoRequest`):
//! per-subject message counts for a subject filter, paged, and the list of deleted sequences.
//!
//! With `subjects_filter`, the answer's `state.subjects` maps each stored subject matching it
//! to its message count (at most [`MAX_SUBJECT_DETAILS`] from `offset` on, in subject order),
//! and the answer carries `total`, `offset` and `limit` as nats-server's does; with no
//! matching subject, `state.subjects` is left out. With `deleted_details`, `state.deleted`
//! lists the sequences between the first and the last that are no longer stored.

use serde::Deserialize;

use super::config::ApiError;
use super::wire::{Paged, StreamInfoResponse};
use leaf_store::{StoreError, StreamState};

/// The most subjects one answer lists (nats-server's `JSMaxSubjectDetails`).
pub const MAX_SUBJECT_DETAILS: usize = 100_000;

/// What a `STREAM.INFO` request may ask for beyond the stream's info.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InfoRequest {
    /// List the deleted sequences in `state.deleted`.
    pub deleted_details: bool,
    /// Count the messages of each subject matching this filter in `state.subjects`.
    pub subjects_filter: String,
    /// The first subject of the page (in subject order).
    pub offset: usize,
}

/// The body as sent: any field may be missing or `null`.
#[derive(Default, Deserialize)]
struct RawInfoRequest {
    deleted_details: Option<bool>,
    subjects_filter: Option<String>,
    offset: Option<usize>,
}

impl InfoRequest {
    /// Parses a request body; an empty body or `null` (what some clients send) asks for
    /// nothing more, as does a `null` field. Unknown fields are ignored, as nats-server
    /// ignores them here.
    pub fn parse(payload: &[u8]) -> Result<Self, ApiError> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let raw: Option<RawInfoRequest> =
            serde_json::from_slice(payload).map_err(|_| ApiError::invalid_json())?;
        let raw = raw.unwrap_or_default();
        Ok(InfoRequest {
            deleted_details: raw.deleted_details.unwrap_or_default(),
            subjects_filter: raw.subjects_filter.unwrap_or_default(),
            offset: raw.offset.unwrap_or_default(),
        })
    }

    /// Adds what the request asks for to `body` (a stream info answer) for stream `name` in
    /// state `state`.
    pub fn add_details(
        &self,
        store: &leaf_store::Store,
        name: &str,
        state: &StreamState,
        body: &mut StreamInfoResponse,
    ) -> Result<(), ApiError> {
        let failed = |e: StoreError| ApiError::general(&e.to_string());
        if !self.subjects_filter.is_empty() {
            let counts = store
                .subject_counts(
                    name,
                    &self.subjects_filter,
                    self.offset,
                    MAX_SUBJECT_DETAILS,
                )
                .map_err(failed)?;
            if counts.total > 0 {
                body.info.state.subjects = Some(counts.page.into_iter().collect());
                body.paged = Some(Paged {
                    total: counts.total,
                    offset: self.offset,
                    limit: MAX_SUBJECT_DETAILS,
                });
            }
        }
        if self.deleted_details && state.num_deleted > 0 {
            body.info.state.deleted = deleted(store, name, state).map_err(failed)?;
        }
        Ok(())
    }
}

/// The sequences between the stream's first and last that are not stored, in order.
fn deleted(
    store: &leaf_store::Store,
    name: &str,
    state: &StreamState,
) -> Result<Vec<u64>, StoreError> {
    let mut gone = Vec::new();
    let mut expected = state.first_seq;
    while expected <= state.last_seq {
        let batch = store.read_range(name, expected, 1024, u64::MAX)?;
        let Some(last) = batch.last().map(|m| m.seq) else {
            break;
        };
        for m in &batch {
            gone.extend(expected..m.seq);
            expected = m.seq + 1;
        }
        expected = expected.max(last + 1);
    }
    gone.extend(expected..=state.last_seq);
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_clients_send() {
        for nothing in [
            &b""[..],
            b"null",
            b"{}",
            b" ",
            br#"{"subjects_filter":null}"#,
        ] {
            assert_eq!(InfoRequest::parse(nothing), Ok(InfoRequest::default()));
        }
        let r = InfoRequest::parse(br#"{"subjects_filter":"a.*","offset":2,"x":1}"#).unwrap();
        assert_eq!((r.subjects_filter.as_str(), r.offset), ("a.*", 2));
        assert!(InfoRequest::parse(br#"{"offset":"x"}"#).is_err());
        assert!(InfoRequest::parse(b"{").is_err());
    }
}
