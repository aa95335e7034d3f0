//! The subscription interest structure: which subscriptions want a subject.
//!
//! # Trie
//!
//! Filters are stored in a trie of tokens. Each level of the trie holds
//! a hash map from literal token to child node, plus at most one `*`
//! child and one `>` child. A node carries the subscriptions whose filter
//! ends there (plain ones and queue groups) and, optionally, the next level.
//!
//! Matching a literal subject walks its tokens: at each level it follows the
//! literal child for the token (one hash lookup) and the `*` child, and
//! collects everything on the `>` child. The cost depends on the number of
//! tokens and on the wildcard filters that really apply, never on the
//! number of unrelated subscriptions: 100,000 subscriptions on `a.<i>.x`
//! are one map the lookup for `b.1.x` never enters.
//!
//! The walk, insertion, removal and teardown are all iterative, so a very
//! long subject cannot overflow the stack. Removal prunes nodes and levels
//! left empty, so the trie only holds live interest.
//!
//! Removing one subscription does not depend on how many others share its
//! filter: a node's subscriptions and queue groups are vectors (what a
//! match copies) plus, once they are long, an index from subscription (or
//! group name) to position (see [`bag`]). Tearing down 100,000
//! subscriptions of one subject is 100,000 hash lookups, not a quadratic
//! scan under the write lock.
//!
//! # Match cache
//!
//! Results are cached per literal subject as a shared
//! `Arc<MatchResult<T>>`, in a map bounded at [`CACHE_MAX`] entries. When it
//! is full, about half of it is dropped (an arbitrary half, in one `retain`
//! pass, so eviction is amortised O(1) per insertion).
//!
//! Trie and cache share one [`RwLock`]. A cache hit costs one read lock,
//! one hash lookup and one `Arc` clone. A miss walks the trie under the same
//! read lock, then takes the write lock to store the result only if the
//! trie generation has not moved meanwhile (so a result computed before a
//! concurrent insert or remove is returned but never cached).
//!
//! Every insert or remove bumps the generation and invalidates exactly the
//! cached subjects the changed filter matches: a literal filter removes its
//! one key, a wildcard filter scans the bounded cache. Callers can also
//! watch [`Sublist::generation`] to keep their own per-connection caches.
//!
//! Maps are hashed with a small `FxHash`-style multiplicative hasher, seeded
//! per sublist: with std's `SipHash` a cache hit costs about twice as much,
//! and the random seed plus the bounded cache keep crafted collisions
//! harmless.

mod bag;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use leaf_proto::subject::{is_literal, is_valid_queue_name, is_valid_subject, subject_matches};

/// Maximum number of subjects kept in the match cache.
pub const CACHE_MAX: usize = 1024;

/// Errors from changing a [`Sublist`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SublistError {
    /// The filter is not a valid subject (empty token, whitespace, `>` not last).
    #[error("invalid subject")]
    InvalidSubject,
    /// The queue group name is empty or contains whitespace.
    #[error("invalid queue group name")]
    InvalidQueue,
}

/// The subscriptions interested in one literal subject.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchResult<T> {
    /// Subscriptions outside any queue group: each gets the message.
    pub plain: Vec<T>,
    /// Queue groups, one per distinct name: one member of each gets the message.
    pub queues: Vec<QueueGroup<T>>,
}

/// The members of one queue group that match a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueGroup<T> {
    /// The queue group name.
    pub name: Box<[u8]>,
    /// Members, merged across every matching filter (never empty in a result).
    pub members: Vec<T>,
}

impl<T> MatchResult<T> {
    /// An empty result; does not allocate.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }

    /// True if no subscription matched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

impl<T> Default for MatchResult<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Eq + Hash> MatchResult<T> {
    /// Adds every subscription held by `node`, merging queue groups by name.
    fn add_node(&mut self, node: &Node<T>) {
        self.plain.extend_from_slice(node.plain.items());
        // A node's group names are distinct: only groups found on earlier nodes can merge.
        let merge = !self.queues.is_empty();
        for q in node.queues.iter() {
            let found = if merge {
                self.queues.iter_mut().find(|g| g.name == q.name)
            } else {
                None
            };
            match found {
                Some(g) => g.members.extend_from_slice(q.members.items()),
                None => self.queues.push(QueueGroup {
                    name: q.name.clone(),
                    members: q.members.items().to_vec(),
                }),
            }
        }
    }
}

/// A thread-safe subject trie with a bounded match cache.
///
/// `T` is the subscription handle, typically an `Arc` of the server's
/// subscription whose `PartialEq` is pointer identity. Inserting the same
/// handle twice on the same filter stores it twice; [`Sublist::remove`]
/// removes one copy.
pub struct Sublist<T> {
    /// Trie and cache, guarded together.
    state: RwLock<State<T>>,
    /// Mirror of `State::generation`, readable without the lock.
    generation: AtomicU64,
    /// Number of stored subscriptions, readable without the lock.
    count: AtomicUsize,
    /// The shared result returned for every subject nothing matches.
    empty: Arc<MatchResult<T>>,
}

/// Everything behind the lock.
struct State<T> {
    /// Top level of the trie (first token).
    root: Level<T>,
    /// Literal subject → result; at most [`CACHE_MAX`] entries.
    cache: HashMap<Box<[u8]>, Arc<MatchResult<T>>, FastState>,
    /// Bumped on every successful insert and remove.
    generation: u64,
    /// Hasher seed shared by all maps of this sublist.
    hasher: FastState,
}

/// One level of the trie: the children for one token position.
struct Level<T> {
    /// Children for literal tokens.
    literals: HashMap<Box<[u8]>, Node<T>, FastState>,
    /// Child for the `*` token.
    pwc: Option<Node<T>>,
    /// Child for the `>` token (never has a next level).
    fwc: Option<Node<T>>,
}

/// A trie node: the filter spelled by the path from the root to here.
struct Node<T> {
    /// Plain subscriptions on this exact filter.
    plain: bag::Bag<T, FastState>,
    /// Queue subscriptions on this exact filter, one group per name.
    queues: bag::Groups<T, FastState>,
    /// Children for the next token, if any filter is longer.
    next: Option<Box<Level<T>>>,
}

impl<T: Clone + Eq + Hash + Send + Sync> Sublist<T> {
    /// Creates an empty sublist.
    #[must_use]
    pub fn new() -> Self {
        let hasher = FastState::random();
        Self {
            state: RwLock::new(State {
                root: Level::new(hasher),
                cache: HashMap::with_capacity_and_hasher(CACHE_MAX, hasher),
                generation: 0,
                hasher,
            }),
            generation: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            empty: Arc::new(MatchResult::new()),
        }
    }

    /// Adds `item` under `subject` (a filter, wildcards allowed), in queue
    /// group `queue` if given.
    ///
    /// # Errors
    ///
    /// [`SublistError::InvalidSubject`] or [`SublistError::InvalidQueue`]
    /// if either is malformed; nothing is changed then.
    pub fn insert(
        &self,
        subject: &[u8],
        queue: Option<&[u8]>,
        item: T,
    ) -> Result<(), SublistError> {
        check(subject, queue)?;
        let mut state = self.write();
        let hasher = state.hasher;
        let mut level = &mut state.root;
        let mut toks = subject.split(|&b| b == b'.').peekable();
        while let Some(tok) = toks.next() {
            let node = level.child_or_insert(tok);
            if toks.peek().is_none() {
                node.add(queue, item, &hasher);
                break;
            }
            level = node
                .next
                .get_or_insert_with(|| Box::new(Level::new(hasher)));
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.changed(&mut state, subject);
        Ok(())
    }

    /// Removes one copy of `item` from `subject`/`queue`.
    ///
    /// Returns `Ok(false)` if it was not there. Nodes and levels left empty
    /// are pruned.
    ///
    /// # Errors
    ///
    /// [`SublistError::InvalidSubject`] or [`SublistError::InvalidQueue`]
    /// if either is malformed.
    pub fn remove(
        &self,
        subject: &[u8],
        queue: Option<&[u8]>,
        item: &T,
    ) -> Result<bool, SublistError> {
        check(subject, queue)?;
        let toks: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
        let mut state = self.write();

        // Pass 1: walk down, remove the item and record, for each depth, what
        // pruning needs: whether the level holding the path node has other
        // children, and whether the path node holds subscriptions itself.
        let mut crowded = Vec::with_capacity(toks.len());
        let mut holds = Vec::with_capacity(toks.len());
        let mut leaf_empty = false;
        let mut level = &mut state.root;
        for (depth, tok) in toks.iter().enumerate() {
            crowded.push(level.child_count() > 1);
            let Some(node) = level.child_mut(tok) else {
                return Ok(false);
            };
            if depth + 1 == toks.len() {
                if !node.remove(queue, item) {
                    return Ok(false);
                }
                leaf_empty = node.is_empty();
                break;
            }
            holds.push(node.has_subs());
            let Some(next) = node.next.as_deref_mut() else {
                return Ok(false);
            };
            level = next;
        }

        // Pass 2: cut the topmost node whose whole subtree is now empty.
        if leaf_empty {
            let mut cut = toks.len() - 1;
            while cut > 0
                && !crowded.get(cut).copied().unwrap_or(true)
                && !holds.get(cut - 1).copied().unwrap_or(true)
            {
                cut -= 1;
            }
            state
                .root
                .prune(&toks, cut, crowded.get(cut).copied().unwrap_or(true));
        }

        self.count.fetch_sub(1, Ordering::Relaxed);
        self.changed(&mut state, subject);
        Ok(true)
    }

    /// Returns every subscription whose filter matches the literal `subject`.
    ///
    /// `subject` should be a valid literal subject (the caller validates
    /// publishes); anything else simply matches what the token walk finds.
    pub fn matches(&self, subject: &[u8]) -> Arc<MatchResult<T>> {
        let state = self.read();
        if let Some(hit) = state.cache.get(subject) {
            return Arc::clone(hit);
        }
        if self.count.load(Ordering::Relaxed) == 0 {
            return Arc::clone(&self.empty);
        }
        let generation = state.generation;
        let found = state.root.collect(subject);
        drop(state);

        let result = if found.is_empty() {
            Arc::clone(&self.empty)
        } else {
            Arc::new(found)
        };
        let mut state = self.write();
        if state.generation == generation && !state.cache.contains_key(subject) {
            if state.cache.len() >= CACHE_MAX {
                let mut keep = false;
                state.cache.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
            state.cache.insert(subject.into(), Arc::clone(&result));
        }
        result
    }

    /// Like [`Sublist::matches`] without touching the cache (a read lock only): for subjects
    /// used once, such as reply inboxes, caching would only evict useful entries.
    pub fn matches_uncached(&self, subject: &[u8]) -> Arc<MatchResult<T>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Arc::clone(&self.empty);
        }
        let state = self.read();
        if let Some(hit) = state.cache.get(subject) {
            return Arc::clone(hit);
        }
        let found = state.root.collect(subject);
        drop(state);
        if found.is_empty() {
            Arc::clone(&self.empty)
        } else {
            Arc::new(found)
        }
    }

    /// A counter bumped by every successful insert and remove.
    ///
    /// A caller may cache [`Sublist::matches`] results itself and drop them
    /// when this value changes. Read it *before* calling `matches`: a result
    /// is then at least as new as the generation it is filed under, so a
    /// concurrent change can only cause a spurious drop, never a stale hit.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of stored subscriptions.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Number of subjects currently in the match cache.
    pub fn cache_len(&self) -> usize {
        self.read().cache.len()
    }

    /// Bumps the generation and drops the cached results `filter` affects.
    fn changed(&self, state: &mut State<T>, filter: &[u8]) {
        state.generation = state.generation.wrapping_add(1);
        self.generation.store(state.generation, Ordering::Release);
        if is_literal(filter) {
            state.cache.remove(filter);
        } else {
            state
                .cache
                .retain(|subject, _| !subject_matches(filter, subject));
        }
    }

    /// Takes the read lock, ignoring poisoning (the trie stays consistent).
    fn read(&self) -> RwLockReadGuard<'_, State<T>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the write lock, ignoring poisoning (the trie stays consistent).
    fn write(&self) -> RwLockWriteGuard<'_, State<T>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone + Eq + Hash + Send + Sync> Default for Sublist<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Sublist<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sublist")
            .field("count", &self.count.load(Ordering::Relaxed))
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Validates an insert or remove request.
fn check(subject: &[u8], queue: Option<&[u8]>) -> Result<(), SublistError> {
    if !is_valid_subject(subject) {
        return Err(SublistError::InvalidSubject);
    }
    if queue.is_some_and(|q| !is_valid_queue_name(q)) {
        return Err(SublistError::InvalidQueue);
    }
    Ok(())
}

impl<T> Level<T> {
    /// An empty level.
    fn new(hasher: FastState) -> Self {
        Self {
            literals: HashMap::with_hasher(hasher),
            pwc: None,
            fwc: None,
        }
    }

    /// Number of children.
    fn child_count(&self) -> usize {
        self.literals.len() + usize::from(self.pwc.is_some()) + usize::from(self.fwc.is_some())
    }

    /// The child for `tok`, if present.
    fn child_mut(&mut self, tok: &[u8]) -> Option<&mut Node<T>> {
        match tok {
            b"*" => self.pwc.as_mut(),
            b">" => self.fwc.as_mut(),
            _ => self.literals.get_mut(tok),
        }
    }

    /// The child for `tok`, created empty if absent.
    fn child_or_insert(&mut self, tok: &[u8]) -> &mut Node<T> {
        match tok {
            b"*" => self.pwc.get_or_insert_with(Node::new),
            b">" => self.fwc.get_or_insert_with(Node::new),
            _ => self.literals.entry(tok.into()).or_insert_with(Node::new),
        }
    }

    /// Drops the path node at depth `cut` of `toks`, with its subtree.
    ///
    /// If the level holding it has no other child (`!crowded`), the whole
    /// level is dropped from its parent node instead.
    fn prune(&mut self, toks: &[&[u8]], cut: usize, crowded: bool) {
        let (Some(parents), Some(tok)) = (toks.get(..cut), toks.get(cut)) else {
            return;
        };
        let Some((parent_tok, ancestors)) = parents.split_last() else {
            self.remove_child(tok);
            return;
        };
        let mut level = self;
        for t in ancestors {
            match level.child_mut(t).and_then(|n| n.next.as_deref_mut()) {
                Some(next) => level = next,
                None => return,
            }
        }
        let Some(parent) = level.child_mut(parent_tok) else {
            return;
        };
        match parent.next.as_deref_mut() {
            Some(next) if crowded => next.remove_child(tok),
            _ => parent.next = None,
        }
    }

    /// Drops the child for `tok` and its whole subtree.
    fn remove_child(&mut self, tok: &[u8]) {
        match tok {
            b"*" => self.pwc = None,
            b">" => self.fwc = None,
            _ => {
                self.literals.remove(tok);
            }
        }
    }

    /// Moves every child's next level onto `out` (for iterative teardown).
    fn take_next_levels(&mut self, out: &mut Vec<Level<T>>) {
        let nodes = self
            .literals
            .values_mut()
            .chain(self.pwc.as_mut())
            .chain(self.fwc.as_mut());
        out.extend(nodes.filter_map(|n| n.next.take()).map(|level| *level));
    }
}

impl<T: Clone + Eq + Hash> Level<T> {
    /// Walks the trie for a literal `subject` and gathers every match.
    ///
    /// Iterative: the literal path is followed in a loop and only `*`
    /// branches are parked on an explicit stack (no allocation when the
    /// trie has no `*` filters on the way).
    fn collect(&self, subject: &[u8]) -> MatchResult<T> {
        let mut out = MatchResult::new();
        let mut pending: Vec<(&Level<T>, usize)> = Vec::new();
        let mut cursor = Some((self, 0usize));
        while let Some((level, start)) = cursor.take().or_else(|| pending.pop()) {
            let rest = subject.get(start..).unwrap_or_default();
            let (tok, next_start) = match rest.iter().position(|&b| b == b'.') {
                Some(i) => (&rest[..i], Some(start + i + 1)),
                None => (rest, None),
            };
            if let Some(fwc) = &level.fwc {
                out.add_node(fwc);
            }
            if let Some(pwc) = &level.pwc {
                match (next_start, &pwc.next) {
                    (None, _) => out.add_node(pwc),
                    (Some(n), Some(next)) => pending.push((next, n)),
                    (Some(_), None) => {}
                }
            }
            if let Some(lit) = level.literals.get(tok) {
                match (next_start, &lit.next) {
                    (None, _) => out.add_node(lit),
                    (Some(n), Some(next)) => cursor = Some((next, n)),
                    (Some(_), None) => {}
                }
            }
        }
        out
    }
}

impl<T> Drop for Level<T> {
    /// Tears the subtree down with an explicit stack instead of recursion.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.take_next_levels(&mut stack);
        while let Some(mut level) = stack.pop() {
            level.take_next_levels(&mut stack);
        }
    }
}

impl<T> Node<T> {
    /// An empty node.
    fn new() -> Self {
        Self {
            plain: bag::Bag::default(),
            queues: bag::Groups::default(),
            next: None,
        }
    }
}

impl<T: Clone + Eq + Hash> Node<T> {
    /// True if subscriptions end at this node.
    fn has_subs(&self) -> bool {
        !self.plain.is_empty() || !self.queues.is_empty()
    }

    /// True if the node holds nothing and has no children.
    fn is_empty(&self) -> bool {
        !self.has_subs() && self.next.is_none()
    }

    /// Stores `item`, in queue group `queue` if given.
    fn add(&mut self, queue: Option<&[u8]>, item: T, hasher: &FastState) {
        match queue {
            None => self.plain.push(item, hasher),
            Some(name) => self.queues.add(name, item, hasher),
        }
    }

    /// Removes one copy of `item`; drops its queue group if that empties it.
    fn remove(&mut self, queue: Option<&[u8]>, item: &T) -> bool {
        match queue {
            None => self.plain.remove(item),
            Some(name) => self.queues.remove(name, item),
        }
    }
}

/// Reads 8 little-endian bytes (0 if `b` is not exactly 8 long).
#[inline]
fn load8(b: &[u8]) -> u64 {
    <[u8; 8]>::try_from(b).map_or(0, u64::from_le_bytes)
}

/// Reads 4 little-endian bytes (0 if `b` is not exactly 4 long).
#[inline]
fn load4(b: &[u8]) -> u64 {
    <[u8; 4]>::try_from(b).map_or(0, |w| u64::from(u32::from_le_bytes(w)))
}

/// Seeded builder for [`FastHasher`].
#[derive(Clone, Copy)]
struct FastState {
    /// Random per-sublist seed.
    seed: u64,
}

impl FastState {
    /// A builder with a seed drawn from std's random hasher keys.
    fn random() -> Self {
        Self {
            seed: RandomState::new().hash_one(0x6c65_6166_u64),
        }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher { hash: self.seed }
    }
}

/// An `FxHash`-style hasher: rotate, xor a word, multiply. Fast on short keys.
struct FastHasher {
    /// Running state.
    hash: u64,
}

impl FastHasher {
    /// Odd multiplier with well-spread bits (from `FxHash`).
    const K: u64 = 0x517c_c1b7_2722_0a95;

    /// Mixes one word into the state.
    #[inline]
    fn mix(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Whole words, then the tail as one overlapping load (the length is
        // hashed separately by `[u8]`'s `Hash`, so overlap is harmless).
        let n = bytes.len();
        if n >= 8 {
            let mut words = bytes.chunks_exact(8);
            for w in &mut words {
                self.mix(load8(w));
            }
            if !words.remainder().is_empty() {
                self.mix(load8(bytes.get(n - 8..).unwrap_or_default()));
            }
        } else if n >= 4 {
            let lo = load4(bytes.get(..4).unwrap_or_default());
            let hi = load4(bytes.get(n - 4..).unwrap_or_default());
            self.mix(lo | hi << 32);
        } else if let (Some(&a), Some(&b), Some(&c)) =
            (bytes.first(), bytes.get(n / 2), bytes.last())
        {
            self.mix(u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the best bits on top; hashbrown indexes with
        // the low bits, so bring the top bits down.
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sorted plain members of a result.
    fn plain(r: &MatchResult<u32>) -> Vec<u32> {
        let mut v = r.plain.clone();
        v.sort_unstable();
        v
    }

    /// Queue groups of a result as sorted (name, sorted members).
    fn queues(r: &MatchResult<u32>) -> Vec<(Vec<u8>, Vec<u32>)> {
        let mut v: Vec<_> = r
            .queues
            .iter()
            .map(|g| {
                let mut m = g.members.clone();
                m.sort_unstable();
                (g.name.to_vec(), m)
            })
            .collect();
        v.sort();
        v
    }

    /// A sublist holding `(filter, id)` plain subscriptions.
    fn with(subs: &[(&str, u32)]) -> Sublist<u32> {
        let sl = Sublist::new();
        for (f, id) in subs {
            sl.insert(f.as_bytes(), None, *id).unwrap();
        }
        sl
    }

    #[test]
    fn literals() {
        let sl = with(&[("foo", 1), ("foo.bar", 2), ("foo.bar", 3), ("foo.baz", 4)]);
        assert_eq!(sl.count(), 4);
        assert_eq!(plain(&sl.matches(b"foo")), [1]);
        assert_eq!(plain(&sl.matches(b"foo.bar")), [2, 3]);
        assert_eq!(plain(&sl.matches(b"foo.baz")), [4]);
        assert!(sl.matches(b"foo.bar.baz").is_empty());
        assert!(sl.matches(b"bar").is_empty());
    }

    #[test]
    fn single_wildcard() {
        let sl = with(&[
            ("*", 1),
            ("foo.*", 2),
            ("*.bar", 3),
            ("foo.*.baz", 4),
            ("*.*", 5),
        ]);
        assert_eq!(plain(&sl.matches(b"foo")), [1]);
        assert_eq!(plain(&sl.matches(b"foo.bar")), [2, 3, 5]);
        assert_eq!(plain(&sl.matches(b"foo.x")), [2, 5]);
        assert_eq!(plain(&sl.matches(b"foo.x.baz")), [4]);
        assert!(sl.matches(b"foo.x.y").is_empty());
    }

    #[test]
    fn full_wildcard() {
        let sl = with(&[(">", 1), ("foo.>", 2), ("foo.bar.>", 3), ("*.>", 4)]);
        assert_eq!(plain(&sl.matches(b"foo")), [1]);
        assert_eq!(plain(&sl.matches(b"foo.bar")), [1, 2, 4]);
        assert_eq!(plain(&sl.matches(b"foo.bar.baz")), [1, 2, 3, 4]);
        assert_eq!(plain(&sl.matches(b"x.y.z")), [1, 4]);
    }

    #[test]
    fn mixed() {
        let sl = with(&[
            ("a.b.c", 1),
            ("a.*.c", 2),
            ("a.>", 3),
            ("*.b.>", 4),
            ("a.b.*", 5),
            ("*.*.*", 6),
            ("a.b", 7),
        ]);
        assert_eq!(plain(&sl.matches(b"a.b.c")), [1, 2, 3, 4, 5, 6]);
        assert_eq!(plain(&sl.matches(b"a.x.c")), [2, 3, 6]);
        assert_eq!(plain(&sl.matches(b"a.b")), [3, 7]);
        assert_eq!(plain(&sl.matches(b"z.b.c.d")), [4]);
    }

    #[test]
    fn queue_groups_merge_across_nodes() {
        let sl = Sublist::new();
        sl.insert(b"foo.*", Some(b"q1"), 1).unwrap();
        sl.insert(b"foo.bar", Some(b"q1"), 2).unwrap();
        sl.insert(b"foo.>", Some(b"q2"), 3).unwrap();
        sl.insert(b"foo.bar", None, 4).unwrap();
        sl.insert(b"foo.bar", Some(b"q1"), 5).unwrap();
        let r = sl.matches(b"foo.bar");
        assert_eq!(plain(&r), [4]);
        assert_eq!(
            queues(&r),
            [(b"q1".to_vec(), vec![1, 2, 5]), (b"q2".to_vec(), vec![3])]
        );
        let r = sl.matches(b"foo.baz");
        assert!(r.plain.is_empty());
        assert_eq!(
            queues(&r),
            [(b"q1".to_vec(), vec![1]), (b"q2".to_vec(), vec![3])]
        );

        // A queue member is removed only from its own group.
        assert!(!sl.remove(b"foo.bar", None, &2).unwrap());
        assert!(!sl.remove(b"foo.bar", Some(b"q2"), &2).unwrap());
        assert!(sl.remove(b"foo.bar", Some(b"q1"), &2).unwrap());
        assert_eq!(
            queues(&sl.matches(b"foo.bar"))[0],
            (b"q1".to_vec(), vec![1, 5])
        );
    }

    #[test]
    fn remove_and_prune() {
        let sl = with(&[("a.b.c.d", 1), ("a.b", 2), ("a.*.c", 3), ("a.>", 4)]);
        assert!(!sl.remove(b"a.b.c.d", None, &9).unwrap());
        assert!(!sl.remove(b"a.b.c", None, &1).unwrap());
        assert!(!sl.remove(b"x.y", None, &1).unwrap());
        assert!(sl.remove(b"a.b.c.d", None, &1).unwrap());
        assert!(!sl.remove(b"a.b.c.d", None, &1).unwrap());
        assert!(sl.matches(b"a.b.c.d").plain == [4]);
        {
            // `c.d` below `a.b` is gone, `a.b` itself stays.
            let st = sl.read();
            let ab = st
                .root
                .literals
                .get(&b"a"[..])
                .unwrap()
                .next
                .as_ref()
                .unwrap();
            let b = ab.literals.get(&b"b"[..]).unwrap();
            assert!(b.next.is_none());
            assert_eq!(b.plain.items(), [2]);
        }
        for (f, id) in [("a.b", 2), ("a.*.c", 3), ("a.>", 4)] {
            assert!(sl.remove(f.as_bytes(), None, &id).unwrap());
        }
        assert_eq!(sl.count(), 0);
        let st = sl.read();
        assert_eq!(st.root.child_count(), 0);
    }

    #[test]
    fn prune_keeps_siblings_and_holders() {
        let sl = with(&[("a.b.c", 1), ("a.b.d", 2), ("a", 3), ("a.x.y.z", 4)]);
        assert!(sl.remove(b"a.x.y.z", None, &4).unwrap());
        {
            let st = sl.read();
            let a = st.root.literals.get(&b"a"[..]).unwrap();
            let lvl = a.next.as_ref().unwrap();
            assert_eq!(lvl.child_count(), 1);
            assert!(lvl.literals.contains_key(&b"b"[..]));
        }
        assert!(sl.remove(b"a.b.c", None, &1).unwrap());
        assert!(sl.remove(b"a.b.d", None, &2).unwrap());
        {
            let st = sl.read();
            let a = st.root.literals.get(&b"a"[..]).unwrap();
            assert!(a.next.is_none());
            assert_eq!(a.plain.items(), [3]);
        }
        assert_eq!(plain(&sl.matches(b"a")), [3]);
        assert!(sl.remove(b"a", None, &3).unwrap());
        assert_eq!(sl.read().root.child_count(), 0);
    }

    #[test]
    fn cache_invalidation() {
        let sl = with(&[("foo.bar", 1)]);
        assert_eq!(plain(&sl.matches(b"foo.bar")), [1]);
        assert!(sl.matches(b"foo.baz").is_empty());
        assert!(sl.matches(b"other").is_empty());
        assert_eq!(sl.cache_len(), 3);

        // A wildcard insert drops only the cached subjects it matches.
        sl.insert(b"foo.*", None, 2).unwrap();
        assert_eq!(sl.cache_len(), 1);
        assert_eq!(plain(&sl.matches(b"foo.bar")), [1, 2]);
        assert_eq!(plain(&sl.matches(b"foo.baz")), [2]);

        // A literal insert drops just its own key.
        sl.insert(b"foo.baz", None, 3).unwrap();
        assert_eq!(sl.cache_len(), 2);
        assert_eq!(plain(&sl.matches(b"foo.baz")), [2, 3]);

        assert!(sl.remove(b"foo.*", None, &2).unwrap());
        assert_eq!(plain(&sl.matches(b"foo.bar")), [1]);
        assert_eq!(plain(&sl.matches(b"foo.baz")), [3]);
        assert!(sl.remove(b"foo.bar", None, &1).unwrap());
        assert!(sl.matches(b"foo.bar").is_empty());
        sl.insert(b">", Some(b"q"), 4).unwrap();
        assert_eq!(queues(&sl.matches(b"other")), [(b"q".to_vec(), vec![4])]);
    }

    #[test]
    fn cache_is_bounded_and_hits_share() {
        let sl = with(&[("s.*", 1)]);
        for i in 0..5000 {
            let r = sl.matches(format!("s.{i}").as_bytes());
            assert_eq!(r.plain, [1]);
            assert!(sl.cache_len() <= CACHE_MAX);
        }
        let a = sl.matches(b"s.x");
        let b = sl.matches(b"s.x");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn empty_results_are_shared() {
        let sl: Sublist<u32> = Sublist::new();
        let a = sl.matches(b"nothing");
        sl.insert(b"x", None, 1).unwrap();
        let b = sl.matches(b"nothing.here");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&b, &sl.empty));
    }

    #[test]
    fn generation_changes() {
        let sl = Sublist::new();
        let g0 = sl.generation();
        sl.insert(b"a", None, 1).unwrap();
        let g1 = sl.generation();
        assert_ne!(g0, g1);
        sl.matches(b"a");
        assert_eq!(sl.generation(), g1);
        assert!(!sl.remove(b"a", None, &2).unwrap());
        assert_eq!(sl.generation(), g1);
        assert!(sl.insert(b"a..b", None, 1).is_err());
        assert_eq!(sl.generation(), g1);
        assert!(sl.remove(b"a", None, &1).unwrap());
        assert_ne!(sl.generation(), g1);
    }

    #[test]
    fn invalid_refused() {
        let sl = Sublist::new();
        for bad in [&b""[..], b"a..b", b".a", b"a.", b"a b", b"a.>.b", b"\t"] {
            assert_eq!(sl.insert(bad, None, 1), Err(SublistError::InvalidSubject));
            assert_eq!(sl.remove(bad, None, &1), Err(SublistError::InvalidSubject));
        }
        assert_eq!(
            sl.insert(b"a", Some(b""), 1),
            Err(SublistError::InvalidQueue)
        );
        assert_eq!(
            sl.insert(b"a", Some(b"q 1"), 1),
            Err(SublistError::InvalidQueue)
        );
        assert_eq!(sl.count(), 0);
        assert_eq!(sl.generation(), 0);
    }

    #[test]
    fn ten_thousand_subscriptions() {
        let sl = Sublist::new();
        for i in 0..10_000u32 {
            sl.insert(format!("dev.{i}.temp").as_bytes(), None, i)
                .unwrap();
        }
        sl.insert(b"dev.*.temp", None, 10_000).unwrap();
        sl.insert(b"dev.>", Some(b"log"), 10_001).unwrap();
        assert_eq!(sl.count(), 10_002);
        for i in (0..10_000u32).step_by(7) {
            let r = sl.matches(format!("dev.{i}.temp").as_bytes());
            assert_eq!(plain(&r), [i, 10_000]);
            assert_eq!(queues(&r), [(b"log".to_vec(), vec![10_001])]);
        }
        assert_eq!(plain(&sl.matches(b"dev.x.temp")), [10_000]);
        for i in 0..10_000u32 {
            assert!(sl
                .remove(format!("dev.{i}.temp").as_bytes(), None, &i)
                .unwrap());
        }
        assert_eq!(plain(&sl.matches(b"dev.5.temp")), [10_000]);
        assert_eq!(sl.count(), 2);
    }

    thread_local! {
        /// How often a [`Probe`] was compared on this thread.
        static COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// A subscription handle that counts its comparisons: what removing one costs.
    #[derive(Debug, Clone, Copy)]
    struct Probe(u32);

    impl PartialEq for Probe {
        fn eq(&self, other: &Self) -> bool {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0 == other.0
        }
    }

    impl Eq for Probe {}

    impl std::hash::Hash for Probe {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    /// `n` plain subscriptions, `n` members of one queue group and `n` queue groups of one
    /// member each, all on `fleet.replies`.
    fn crowded(n: u32) -> Sublist<Probe> {
        let sl = Sublist::new();
        for i in 0..n {
            sl.insert(b"fleet.replies", None, Probe(i)).unwrap();
            sl.insert(b"fleet.replies", Some(b"workers"), Probe(n + i))
                .unwrap();
            sl.insert(
                b"fleet.replies",
                Some(format!("g{i}").as_bytes()),
                Probe(2 * n + i),
            )
            .unwrap();
        }
        sl
    }

    #[test]
    fn removing_a_subscription_does_not_scan_its_subject() {
        const N: u32 = 20_000;
        let sl = crowded(N);
        assert_eq!(sl.count(), 3 * N as usize);
        COMPARISONS.with(|c| c.set(0));
        // In insertion order, the order a scan pays most for (each removal's swap moves the
        // last entry to the front).
        for i in 0..N {
            assert!(sl.remove(b"fleet.replies", None, &Probe(i)).unwrap());
            assert!(sl
                .remove(b"fleet.replies", Some(b"workers"), &Probe(N + i))
                .unwrap());
            assert!(sl
                .remove(
                    b"fleet.replies",
                    Some(format!("g{i}").as_bytes()),
                    &Probe(2 * N + i)
                )
                .unwrap());
        }
        let compared = COMPARISONS.with(std::cell::Cell::get);
        // A scan compares about N²/2 times per list (4·10⁸ here); the index a few per removal.
        assert!(
            compared <= 4 * 3 * u64::from(N),
            "{compared} comparisons to remove {} subscriptions",
            3 * N
        );
        assert_eq!(sl.count(), 0);
        assert_eq!(sl.read().root.child_count(), 0);
    }

    /// The trie node of `fleet.replies`.
    fn replies_node<T>(st: &State<T>) -> &Node<T> {
        let fleet = st.root.literals.get(&b"fleet"[..]).unwrap();
        let next = fleet.next.as_ref().unwrap();
        next.literals.get(&b"replies"[..]).unwrap()
    }

    #[test]
    fn crowded_nodes_are_indexed_and_stay_exact() {
        let sl = crowded(100);
        {
            let st = sl.read();
            let node = replies_node(&st);
            assert!(node.plain.is_indexed());
            assert!(node.queues.is_indexed(), "100 group names");
            let workers = node.queues.iter().find(|g| &*g.name == b"workers").unwrap();
            assert!(workers.members.is_indexed());
        }
        // The same handle twice on one filter is stored twice and removed one at a time.
        sl.insert(b"fleet.replies", None, Probe(7)).unwrap();
        for _ in 0..2 {
            assert!(sl.remove(b"fleet.replies", None, &Probe(7)).unwrap());
        }
        assert!(!sl.remove(b"fleet.replies", None, &Probe(7)).unwrap());
        // What is left still matches exactly, and small lists drop their index again.
        for i in (0..100).filter(|i| *i != 7 && i % 3 != 0) {
            assert!(sl.remove(b"fleet.replies", None, &Probe(i)).unwrap());
        }
        let r = sl.matches(b"fleet.replies");
        let mut left: Vec<u32> = r.plain.iter().map(|p| p.0).collect();
        left.sort_unstable();
        assert_eq!(left, (0..100).filter(|i| i % 3 == 0).collect::<Vec<_>>());
        assert_eq!(r.queues.len(), 101, "workers and g0..g99");
        for i in 0..100 {
            if i % 3 == 0 {
                assert!(sl.remove(b"fleet.replies", None, &Probe(i)).unwrap());
            }
        }
        let st = sl.read();
        let node = replies_node(&st);
        assert!(node.plain.is_empty() && !node.plain.is_indexed());
    }

    #[test]
    fn deep_subject_does_not_overflow() {
        let deep = vec!["a"; 200_000].join(".");
        let sl = Sublist::new();
        sl.insert(deep.as_bytes(), None, 1).unwrap();
        sl.insert(b"a.>", None, 2).unwrap();
        assert_eq!(plain(&sl.matches(deep.as_bytes())), [1, 2]);
        assert!(sl.remove(deep.as_bytes(), None, &1).unwrap());
        sl.insert(deep.as_bytes(), None, 1).unwrap();
        drop(sl);
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let sl = Arc::new(Sublist::new());
        sl.insert(b"t.*", None, 0).unwrap();
        let writers: Vec<_> = (1..3u32)
            .map(|w| {
                let sl = Arc::clone(&sl);
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let id = w * 100_000 + i;
                        let subj = format!("t.{}", i % 50);
                        sl.insert(subj.as_bytes(), None, id).unwrap();
                        sl.matches(subj.as_bytes());
                        assert!(sl.remove(subj.as_bytes(), None, &id).unwrap());
                    }
                })
            })
            .collect();
        for _ in 0..20_000 {
            assert!(sl.matches(b"t.7").plain.contains(&0));
        }
        for w in writers {
            w.join().unwrap();
        }
        for i in 0..50 {
            assert_eq!(sl.matches(format!("t.{i}").as_bytes()).plain, [0]);
        }
    }

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Subscribe a fresh id on a filter, maybe in a queue group.
        Insert(Vec<u8>, Option<Vec<u8>>),
        /// Unsubscribe the n-th live subscription (modulo), or a bogus one.
        Remove(usize, bool),
        /// Compare matches for a literal subject against the model.
        Match(Vec<u8>),
    }

    /// Random valid filter over a tiny alphabet, 1..=4 tokens.
    fn filter() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "*"]), 0..3),
            prop::sample::select(vec!["a", "b", "c", "*", ">"]),
        )
            .prop_map(|(mut v, last)| {
                v.push(last);
                v.join(".").into_bytes()
            })
    }

    /// Random literal subject over the same alphabet, 1..=5 tokens.
    fn literal() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 1..6)
            .prop_map(|v| v.join(".").into_bytes())
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (filter(), prop::option::of(prop::sample::select(vec!["q1", "q2"])))
                .prop_map(|(f, q)| Op::Insert(f, q.map(|q| q.as_bytes().to_vec()))),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::Remove(i, b)),
            4 => literal().prop_map(Op::Match),
        ]
    }

    proptest! {
        #[test]
        fn matches_agree_with_linear_scan(ops in prop::collection::vec(op(), 1..200)) {
            let sl = Sublist::new();
            let mut model: Vec<(Vec<u8>, Option<Vec<u8>>, u32)> = Vec::new();
            let mut next_id = 0u32;
            for op in ops {
                match op {
                    Op::Insert(f, q) => {
                        let g = sl.generation();
                        sl.insert(&f, q.as_deref(), next_id).unwrap();
                        prop_assert_ne!(g, sl.generation());
                        model.push((f, q, next_id));
                        next_id += 1;
                    }
                    Op::Remove(i, bogus) => {
                        if model.is_empty() {
                            continue;
                        }
                        let (f, q, id) = model[i % model.len()].clone();
                        if bogus {
                            prop_assert!(!sl.remove(&f, q.as_deref(), &u32::MAX).unwrap());
                        } else {
                            prop_assert!(sl.remove(&f, q.as_deref(), &id).unwrap());
                            model.remove(i % model.len());
                        }
                    }
                    Op::Match(s) => {
                        let r = sl.matches(&s);
                        let mut want_plain: Vec<u32> = Vec::new();
                        let mut want_q: std::collections::BTreeMap<Vec<u8>, Vec<u32>> =
                            std::collections::BTreeMap::default();
                        for (f, q, id) in &model {
                            if leaf_proto::subject::subject_matches(f, &s) {
                                match q {
                                    None => want_plain.push(*id),
                                    Some(q) => want_q.entry(q.clone()).or_default().push(*id),
                                }
                            }
                        }
                        want_plain.sort_unstable();
                        for v in want_q.values_mut() {
                            v.sort_unstable();
                        }
                        let want_q: Vec<_> = want_q.into_iter().collect();
                        prop_assert_eq!(plain(&r), want_plain);
                        prop_assert_eq!(queues(&r), want_q);
                    }
                }
                prop_assert_eq!(sl.count(), model.len());
            }
            // Removing everything leaves an empty trie.
            for (f, q, id) in model {
                prop_assert!(sl.remove(&f, q.as_deref(), &id).unwrap());
            }
            prop_assert_eq!(sl.read().root.child_count(), 0);
        }
    }
}
