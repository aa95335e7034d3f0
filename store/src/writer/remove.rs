//! Removal of acknowledged messages (interest and workqueue retention) and sequence skips,
//! applied inside the writer's batch like every other operation.
//!
//! * [`Batch::remove_msgs`] deletes any set of sequences in one operation: each touched block
//!   is decoded and written back once however many of its messages go, and each touched
//!   subject's index entry is fixed once. Sequences not stored are ignored.
//! * [`Batch::skip`] advances a stream's last sequence without storing a message (a message
//!   published to an interest stream nobody is interested in).

use std::collections::HashMap;

use super::{Batch, Done, OpResult};
use crate::format::BlockRec;
use crate::read::{block_containing, scan_backward, scan_forward};
use crate::{Appended, StoreError};

impl Batch<'_, '_> {
    /// Tombstones every stored message among `seqs`; the result is how many were removed.
    pub(super) fn remove_msgs(&mut self, name: &str, seqs: &[u64]) -> OpResult {
        let Some((id, mut st)) = self.state_of(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        self.flush_pending(id)?;
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let mut per_subject: HashMap<String, Vec<u64>> = HashMap::new();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut removed_first = false;
        // The block being edited: its first seq, contents and whether a slot was cleared.
        let mut current: Option<(u64, BlockRec, bool)> = None;
        for seq in seqs {
            let inside = current
                .as_ref()
                .is_some_and(|(first, b, _)| seq >= *first && seq - *first < b.slots.len() as u64);
            if !inside {
                if let Some((first, block, true)) = current.take() {
                    self.put_block(id, first, &block)?;
                }
                current = block_containing(&self.view(), id, seq)?.map(|(f, b)| (f, b, false));
            }
            let Some((first, block, changed)) = current.as_mut() else {
                continue;
            };
            let Ok(idx) = usize::try_from(seq - *first) else {
                continue;
            };
            if let Some(m) = block.slots.get_mut(idx).and_then(Option::take) {
                count += 1;
                bytes += m.size();
                removed_first |= seq == st.first_seq;
                per_subject.entry(m.subject).or_default().push(seq);
                *changed = true;
            }
        }
        if let Some((first, block, true)) = current.take() {
            self.put_block(id, first, &block)?;
        }
        if count == 0 {
            return Ok(Ok(Done::Count(0)));
        }
        self.freed = true;
        for (subject, gone) in per_subject {
            let Some(mut r) = self.subject_get(id, &subject)? else {
                return Err(StoreError::Corrupt(format!(
                    "subject {subject} missing from index"
                )));
            };
            r.msgs = r.msgs.saturating_sub(gone.len() as u64);
            if r.msgs == 0 {
                st.num_subjects = st.num_subjects.saturating_sub(1);
                self.subject_set(id, &subject, None);
                continue;
            }
            // `gone` is sorted: its ends tell whether the index bounds went.
            if gone.first() == Some(&r.first_seq) {
                let mut next = None;
                scan_forward(&self.view(), id, r.first_seq + 1, |s, m| {
                    if m.subject == subject {
                        next = Some(s);
                        return false;
                    }
                    s < r.last_seq
                })?;
                r.first_seq = next.ok_or_else(|| {
                    StoreError::Corrupt(format!("subject index of {subject} is off"))
                })?;
            }
            if gone.last() == Some(&r.last_seq) {
                let mut prev = None;
                scan_backward(&self.view(), id, r.last_seq.saturating_sub(1), |s, m| {
                    if m.subject == subject {
                        prev = Some(s);
                        return false;
                    }
                    s > r.first_seq
                })?;
                r.last_seq = prev.ok_or_else(|| {
                    StoreError::Corrupt(format!("subject index of {subject} is off"))
                })?;
            }
            self.subject_set(id, &subject, Some(r));
        }
        st.msgs = st.msgs.saturating_sub(count);
        st.bytes = st.bytes.saturating_sub(bytes);
        if removed_first || st.msgs == 0 {
            self.fix_first(id, &mut st)?;
        }
        self.set_state(name, st);
        Ok(Ok(Done::Count(count)))
    }

    /// Takes the next sequence of stream `name` without storing a message.
    pub(super) fn skip(&mut self, name: &str, ts_ns: i64, n: u64) -> OpResult {
        let Some((id, mut st)) = self.state_of(name) else {
            return Ok(Err(StoreError::NotFound(format!("stream {name}"))));
        };
        // Appends later in this batch start a new block: a block's slots are consecutive.
        self.flush_pending(id)?;
        st.last_seq += n;
        st.last_ts_ns = ts_ns;
        if st.msgs == 0 {
            st.first_seq = st.last_seq + 1;
            st.first_ts_ns = 0;
        }
        self.set_state(name, st);
        Ok(Ok(Done::Appended(vec![Appended {
            seq: st.last_seq,
            ts_ns,
            trimmed: 0,
            prev_in_subject: 0,
        }])))
    }
}
