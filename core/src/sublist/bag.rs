//! The subscriptions stored at one trie node, so that removing one costs the same however many
//! share its subject: a [`Bag`] of items (the plain subscriptions, or one queue group's
//! members) and [`Groups`] (the node's queue groups by name).
//!
//! Both are a vector, as matching wants (a match result copies the vectors), plus, once the
//! vector is long, an index from item (or group name) to its position. Removing is then a hash
//! lookup and a `swap_remove` whose moved element gets its new position: no scan. Short lists
//! (under [`INDEX_FROM`]) are scanned: that is as fast and costs no memory. Without the index,
//! 100,000 subscribers of one subject (a fleet's replies, a leaf announcing its clients) made
//! every unsubscribe a scan of up to 100,000 entries under the sublist's write lock, so tearing
//! them all down took quadratic time.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Lists at least this long keep an index; it is dropped again below half of it.
pub(super) const INDEX_FROM: usize = 16;

/// A list of items with removal by value in constant expected time.
///
/// The same item may be stored twice (the sublist allows it); the index then points at one of
/// its copies, and removing an item whose copy the index pointed at looks for another copy by
/// scanning, which only ever happens while duplicates exist.
#[derive(Debug)]
pub(super) struct Bag<T, S> {
    items: Vec<T>,
    /// Position of one copy of every item, while `items` is long.
    index: Option<HashMap<T, usize, S>>,
}

impl<T, S> Default for Bag<T, S> {
    fn default() -> Self {
        Bag {
            items: Vec::new(),
            index: None,
        }
    }
}

impl<T: Clone + Eq + Hash, S: BuildHasher + Clone> Bag<T, S> {
    /// The items, in no particular order.
    pub(super) fn items(&self) -> &[T] {
        &self.items
    }

    /// Whether the bag holds nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds `item`; `hasher` builds the index when the bag grows long.
    pub(super) fn push(&mut self, item: T, hasher: &S) {
        let pos = self.items.len();
        self.items.push(item);
        match &mut self.index {
            Some(index) => {
                if let Some(item) = self.items.get(pos) {
                    index.insert(item.clone(), pos);
                }
            }
            None if self.items.len() >= INDEX_FROM => {
                let mut index = HashMap::with_capacity_and_hasher(self.items.len(), hasher.clone());
                for (i, item) in self.items.iter().enumerate() {
                    index.insert(item.clone(), i);
                }
                self.index = Some(index);
            }
            None => {}
        }
    }

    /// Removes one copy of `item`; false if it is not there.
    pub(super) fn remove(&mut self, item: &T) -> bool {
        let Some(index) = &mut self.index else {
            let Some(pos) = self.items.iter().position(|x| x == item) else {
                return false;
            };
            self.items.swap_remove(pos);
            return true;
        };
        let Some(pos) = index.remove(item) else {
            return false;
        };
        self.items.swap_remove(pos);
        if let Some(moved) = self.items.get(pos) {
            index.insert(moved.clone(), pos);
        }
        // Duplicates exist while the index has fewer entries than there are items: another
        // copy of `item` may still be stored, and must stay findable.
        if index.len() < self.items.len() && !index.contains_key(item) {
            if let Some(other) = self.items.iter().position(|x| x == item) {
                index.insert(item.clone(), other);
            }
        }
        if self.items.len() < INDEX_FROM / 2 {
            self.index = None;
        }
        true
    }

    /// Whether the index is built (for tests of the structure).
    #[cfg(test)]
    pub(super) fn is_indexed(&self) -> bool {
        self.index.is_some()
    }
}

/// One queue group stored at a node.
#[derive(Debug)]
pub(super) struct Group<T, S> {
    /// The group's name.
    pub(super) name: Box<[u8]>,
    /// Its members on this node's filter.
    pub(super) members: Bag<T, S>,
}

/// The queue groups of one node, found by name without a scan once there are many.
#[derive(Debug)]
pub(super) struct Groups<T, S> {
    list: Vec<Group<T, S>>,
    /// Position of every group by name, while `list` is long.
    index: Option<HashMap<Box<[u8]>, usize, S>>,
}

impl<T, S> Default for Groups<T, S> {
    fn default() -> Self {
        Groups {
            list: Vec::new(),
            index: None,
        }
    }
}

impl<T: Clone + Eq + Hash, S: BuildHasher + Clone> Groups<T, S> {
    /// The groups, in no particular order.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, Group<T, S>> {
        self.list.iter()
    }

    /// Whether there are none.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn position(&self, name: &[u8]) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.list.iter().position(|g| *g.name == *name),
        }
    }

    /// Adds `item` to group `name`, creating the group if needed.
    pub(super) fn add(&mut self, name: &[u8], item: T, hasher: &S) {
        if let Some(group) = self.position(name).and_then(|i| self.list.get_mut(i)) {
            group.members.push(item, hasher);
            return;
        }
        let mut members = Bag::default();
        members.push(item, hasher);
        let pos = self.list.len();
        self.list.push(Group {
            name: name.into(),
            members,
        });
        match &mut self.index {
            Some(index) => {
                index.insert(name.into(), pos);
            }
            None if self.list.len() >= INDEX_FROM => {
                let mut index = HashMap::with_capacity_and_hasher(self.list.len(), hasher.clone());
                for (i, g) in self.list.iter().enumerate() {
                    index.insert(g.name.clone(), i);
                }
                self.index = Some(index);
            }
            None => {}
        }
    }

    /// Removes one copy of `item` from group `name`, and the group once it is empty; false if
    /// it is not there.
    pub(super) fn remove(&mut self, name: &[u8], item: &T) -> bool {
        let Some(pos) = self.position(name) else {
            return false;
        };
        let Some(group) = self.list.get_mut(pos) else {
            return false;
        };
        if !group.members.remove(item) {
            return false;
        }
        if group.members.is_empty() {
            self.list.swap_remove(pos);
            if let Some(index) = &mut self.index {
                index.remove(name);
                if let Some(moved) = self.list.get(pos) {
                    index.insert(moved.name.clone(), pos);
                }
            }
            if self.list.len() < INDEX_FROM / 2 {
                self.index = None;
            }
        }
        true
    }

    /// Whether the index is built (for tests of the structure).
    #[cfg(test)]
    pub(super) fn is_indexed(&self) -> bool {
        self.index.is_some()
    }
}
