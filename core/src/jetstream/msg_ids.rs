//! A stream's `Nats-Msg-Id` bookkeeping for duplicate detection: the ids stored within the
//! duplicate window, in the order they were stored (to expire them), and the ids of
//! publishes still in flight to the store.
//!
//! Under load the window holds a million ids and more, far more than the CPU caches, so the
//! table is built for few memory touches per message: every id is hashed once, when its
//! publish arrives ([`MsgId`] carries the hash), and the tables hash nothing else. Growing a
//! table moves entries by their stored hash without reading the ids' text, and a lookup
//! reads an id's text only when the hashes match (and not at all when both sides share it).
//! The hash is seeded per table, so ids chosen by a client cannot be made to collide.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A `Nats-Msg-Id` and its hash.
#[derive(Debug, Clone)]
pub(crate) struct MsgId {
    hash: u64,
    text: Arc<str>,
}

impl MsgId {
    /// The id's text.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for MsgId {
    fn eq(&self, other: &MsgId) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for MsgId {}

impl Hash for MsgId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands the hash a [`MsgId`] carries to the table unchanged.
#[derive(Default)]
struct CarriedHash(u64);

impl Hasher for CarriedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `MsgId` is hashed here, through `write_u64`; fold anything else anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(5) ^ u64::from(*b);
        }
    }
}

type IdMap<V> = HashMap<MsgId, V, BuildHasherDefault<CarriedHash>>;

/// The ids a stream knows: stored within the duplicate window, and in flight.
#[derive(Default)]
pub(crate) struct MsgIds {
    seed: foldhash::fast::RandomState,
    /// Stored ids: id → (stream sequence, stored at ns).
    stored: IdMap<(u64, i64)>,
    /// The ids in `stored` in the order they were stored, with that time.
    order: VecDeque<(MsgId, i64)>,
    /// Ids of publishes in flight, counted (small, so it stays in cache).
    in_flight: IdMap<u32>,
}

impl MsgIds {
    /// The key for `text`, hashed with this table's seed.
    pub(crate) fn key(&self, text: &str) -> MsgId {
        MsgId {
            hash: self.seed.hash_one(text),
            text: Arc::from(text),
        }
    }

    /// The sequence and store time of `id`, if it was stored at or after `since_ns`.
    pub(crate) fn stored_since(&self, id: &MsgId, since_ns: i64) -> Option<u64> {
        match self.stored.get(id) {
            Some(&(seq, ts)) if ts >= since_ns => Some(seq),
            _ => None,
        }
    }

    /// `id` was stored as `seq` at `ts_ns`.
    pub(crate) fn stored(&mut self, id: MsgId, seq: u64, ts_ns: i64) {
        self.order.push_back((id.clone(), ts_ns));
        self.stored.insert(id, (seq, ts_ns));
    }

    /// Forgets ids stored before `cutoff_ns`.
    pub(crate) fn expire(&mut self, cutoff_ns: i64) {
        while self.order.front().is_some_and(|(_, ts)| *ts < cutoff_ns) {
            let Some((id, ts)) = self.order.pop_front() else {
                break;
            };
            // Unless the id was stored again since (a later entry in the order expires it).
            if let Entry::Occupied(e) = self.stored.entry(id) {
                if e.get().1 == ts {
                    e.remove();
                }
            }
        }
    }

    /// Whether a publish with `id` is in flight.
    pub(crate) fn is_in_flight(&self, id: &MsgId) -> bool {
        self.in_flight.contains_key(id)
    }

    /// A publish with `id` went in flight.
    pub(crate) fn sent(&mut self, id: &MsgId) {
        *self.in_flight.entry(id.clone()).or_default() += 1;
    }

    /// A publish with `id` is no longer in flight (stored or failed).
    pub(crate) fn landed(&mut self, id: &MsgId) {
        // Two lookups in a small table rather than an entry, which would take a clone of
        // the id (a reference count touched twice).
        if let Some(n) = self.in_flight.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(id);
            }
        }
    }

    /// Ids stored within the window.
    #[cfg(test)]
    fn stored_len(&self) -> usize {
        self.stored.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_are_equal_keys_and_different_texts_are_not() {
        let ids = MsgIds::default();
        let (a, b, c) = (
            ids.key("leaf@1:1"),
            ids.key("leaf@1:1"),
            ids.key("leaf@1:2"),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_str(), "leaf@1:1");
    }

    #[test]
    fn stored_ids_are_found_within_the_window_and_expire_after_it() {
        let mut ids = MsgIds::default();
        for i in 0..10_000u64 {
            let id = ids.key(&format!("leaf@7:{i}"));
            ids.stored(id, i + 1, i as i64);
        }
        assert_eq!(ids.stored_since(&ids.key("leaf@7:42"), 0), Some(43));
        // Stored before the window starts: not a duplicate.
        assert_eq!(ids.stored_since(&ids.key("leaf@7:42"), 43), None);
        assert_eq!(ids.stored_since(&ids.key("leaf@7:10000"), 0), None);
        ids.expire(5_000);
        assert_eq!(ids.stored_len(), 5_000);
        assert_eq!(ids.stored_since(&ids.key("leaf@7:4999"), 0), None);
        assert_eq!(ids.stored_since(&ids.key("leaf@7:5000"), 0), Some(5_001));
    }

    #[test]
    fn an_id_stored_again_expires_with_its_newer_entry() {
        let mut ids = MsgIds::default();
        ids.stored(ids.key("x"), 1, 10);
        ids.stored(ids.key("x"), 5, 20);
        ids.expire(15);
        assert_eq!(ids.stored_since(&ids.key("x"), 0), Some(5));
        ids.expire(25);
        assert_eq!(ids.stored_since(&ids.key("x"), 0), None);
    }

    #[test]
    fn in_flight_ids_are_counted() {
        let mut ids = MsgIds::default();
        let x = ids.key("x");
        ids.sent(&x);
        ids.sent(&ids.key("x"));
        ids.landed(&x);
        assert!(ids.is_in_flight(&x));
        ids.landed(&ids.key("x"));
        assert!(!ids.is_in_flight(&x));
        // Landing an id that is not in flight changes nothing.
        ids.landed(&x);
        assert!(!ids.is_in_flight(&x));
    }

    #[test]
    fn tables_of_different_streams_hash_differently() {
        let (a, b) = (MsgIds::default(), MsgIds::default());
        let (x, y) = (a.key("same"), b.key("same"));
        assert_ne!(x.hash, y.hash, "seeds are per table");
    }
}
