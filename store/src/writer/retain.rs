//! Keeping a stream within its limits ([`Retain`], JetStream's `discard: old`) inside the
//! commit of the append that crossed them.
//!
//! After every append operation the writer applies the stream's limits in the same batch:
//! first the per-subject limit of each subject the operation wrote (nats-server applies a
//! subject's limit before the stream's), then the stream's message and byte limits. The
//! oldest messages go, found by walking forward from the stream's (or the subject's) first
//! sequence and stopping as soon as enough are found, so the walk costs what is removed (plus,
//! for a subject, the other subjects' messages between its oldest ones), never the whole
//! stream. They are removed with [`Batch::remove_msgs`].
//!
//! Because the removal commits with the append, no reader ever sees the stream over its limits
//! and a publisher's acknowledgement (sent after the commit) already has them applied; a
//! crash between the append and the removal cannot happen.

use std::collections::HashSet;

use super::{Batch, Done, OpResult};
use crate::read::scan_forward;
use redb::ReadableTable;

use crate::{Retain, StoreError};

impl Batch<'_, '_> {
    /// Sets the limits of stream `name` and applies them at once (a stream updated to tighter
    /// limits is trimmed by the update, as nats-server trims it). The result is how many
    /// messages went.
    pub(super) fn set_retain(&mut self, name: &str, retain: Retain) -> OpResult {
        let Some(mut entry) = self.entry(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        let id = entry.id;
        entry.retain = retain;
        self.over.insert(name.to_string(), Some(entry));
        let mut trimmed = 0;
        if let Some(max) = retain.max_msgs_per_subject {
            // Every subject of the stream: those committed, and those this batch added.
            let mut subjects: HashSet<String> = HashSet::new();
            for e in self.subjects.range((id, "")..(id + 1, ""))? {
                subjects.insert(e?.0.value().1.to_string());
            }
            if let Some(added) = self.subj.get(&id) {
                subjects.extend(added.keys().cloned());
            }
            for subject in &subjects {
                trimmed += self.trim_subject(name, subject, max)?;
            }
        }
        trimmed += self.trim_oldest(name, retain.max_msgs, retain.max_bytes)?;
        Ok(Ok(Done::Count(trimmed)))
    }

    /// Applies the limits of stream `name` after an append operation that wrote messages on
    /// `subjects` with outcome `appended`; the number removed is recorded on the operation's
    /// last stored message ([`Appended::trimmed`](crate::Appended::trimmed)).
    pub(super) fn keep_within_limits<'s>(
        &mut self,
        name: &str,
        subjects: impl Iterator<Item = &'s str>,
        appended: Result<Done, StoreError>,
    ) -> OpResult {
        let mut done = match appended {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        let Some(retain) = self.entry(name).map(|e| e.retain) else {
            return Ok(Ok(done));
        };
        let last_stored = match &mut done {
            Done::Appended(all) => all.last_mut(),
            Done::Each(each) => each.iter_mut().rev().find_map(|r| r.as_mut().ok()),
            _ => None,
        };
        let Some(last_stored) = last_stored else {
            return Ok(Ok(done));
        };
        if retain.is_unlimited() {
            return Ok(Ok(done));
        }
        let mut trimmed = 0;
        if let Some(max) = retain.max_msgs_per_subject {
            let mut seen = HashSet::new();
            for subject in subjects {
                if seen.insert(subject) {
                    trimmed += self.trim_subject(name, subject, max)?;
                }
            }
        }
        trimmed += self.trim_oldest(name, retain.max_msgs, retain.max_bytes)?;
        last_stored.trimmed = trimmed;
        Ok(Ok(done))
    }

    /// Removes the oldest messages on `subject` beyond the newest `max`.
    fn trim_subject(&mut self, name: &str, subject: &str, max: u64) -> Result<u64, StoreError> {
        let Some((id, _)) = self.state_of(name) else {
            return Ok(0);
        };
        let Some(rec) = self.subject_get(id, subject)? else {
            return Ok(0);
        };
        let excess = rec.msgs.saturating_sub(max);
        if excess == 0 {
            return Ok(0);
        }
        self.flush_pending(id)?;
        let mut seqs = Vec::new();
        scan_forward(&self.view(), id, rec.first_seq, |seq, m| {
            if m.subject == subject {
                seqs.push(seq);
            }
            (seqs.len() as u64) < excess
        })?;
        self.remove_all(name, &seqs)
    }

    /// Removes the stream's oldest messages until it holds at most `max_msgs` messages and
    /// `max_bytes` bytes.
    fn trim_oldest(
        &mut self,
        name: &str,
        max_msgs: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        let Some((id, st)) = self.state_of(name) else {
            return Ok(0);
        };
        let msgs_excess = max_msgs.map_or(0, |max| st.msgs.saturating_sub(max));
        let bytes_excess = max_bytes.map_or(0, |max| st.bytes.saturating_sub(max));
        if msgs_excess == 0 && bytes_excess == 0 {
            return Ok(0);
        }
        self.flush_pending(id)?;
        let (mut seqs, mut freed) = (Vec::new(), 0u64);
        scan_forward(&self.view(), id, st.first_seq, |seq, m| {
            seqs.push(seq);
            freed += m.size();
            (seqs.len() as u64) < msgs_excess || freed < bytes_excess
        })?;
        self.remove_all(name, &seqs)
    }

    /// Removes `seqs` (all stored) and returns how many went.
    fn remove_all(&mut self, name: &str, seqs: &[u64]) -> Result<u64, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        match self.remove_msgs(name, seqs)? {
            Ok(Done::Count(n)) => Ok(n),
            Ok(_) => Err(StoreError::Corrupt("internal: reply type mismatch".into())),
            // The stream was found just before: nothing else can fail here.
            Err(e) => Err(e),
        }
    }
}
