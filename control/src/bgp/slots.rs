//! The Loc-RIB's prefix table: open addressing with linear probing over one flat array
//! of small fixed-size entries.
//!
//! A general hash map keeps its control bytes and its entries in two arrays, so a new
//! key costs two cache misses, and it gives no way to start a batch of lookups before
//! using the first. Here a probe reads one array, four 16-byte IPv4 entries to a cache
//! line, and [`Table::warm`] loads the first entry of every key of a batch (an UPDATE's
//! prefixes) in one pass of independent loads, so their misses overlap instead of
//! following one another. Deletion shifts the following entries back (no tombstones),
//! so a table that churns stays as fast as a fresh one. The load is kept at three
//! quarters at most.

use hashbrown::DefaultHashBuilder;
use std::hash::{BuildHasher, Hash};

/// An entry of a [`Table`]: a key, or the empty marker.
pub trait Keyed: Copy {
    type Key: Copy + Eq + Hash;
    /// The empty entry.
    const EMPTY: Self;
    fn is_empty(&self) -> bool;
    /// The key of an occupied entry.
    fn key(&self) -> Self::Key;
}

/// Where a key is, or where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The entry holding the key.
    At(usize),
    /// The empty entry the probe ended at (`None` in a table of no capacity).
    Vacant(Option<usize>),
}

#[derive(Debug)]
pub struct Table<T: Keyed> {
    slots: Box<[T]>,
    len: usize,
    hasher: DefaultHashBuilder,
}

impl<T: Keyed> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Box::default(),
            len: 0,
            hasher: DefaultHashBuilder::default(),
        }
    }
}

/// The smallest table allocated.
const MIN_CAPACITY: usize = 8;

impl<T: Keyed> Table<T> {
    pub fn hash(&self, key: T::Key) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Room for `additional` more keys within the load limit (grows by doubling).
    /// Positions found before a growth are not valid after it.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len.saturating_add(additional);
        let cap = self.slots.len();
        if need <= cap - cap / 4 && cap > 0 {
            return;
        }
        let mut new_cap = cap.max(MIN_CAPACITY);
        while need > new_cap - new_cap / 4 {
            new_cap *= 2;
        }
        let mut slots = vec![T::EMPTY; new_cap].into_boxed_slice();
        let mask = new_cap - 1;
        for s in self.slots.iter().filter(|s| !s.is_empty()) {
            let mut i = self.hasher.hash_one(s.key()) as usize & mask;
            while !slots[i].is_empty() {
                i = (i + 1) & mask;
            }
            slots[i] = *s;
        }
        self.slots = slots;
    }

    /// Loads the first entry each hash probes, all before any is used: the cache
    /// misses of a batch overlap. A hint only; nothing changes.
    pub fn warm(&self, hashes: &[u64]) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.mask();
        let mut any = false;
        for &h in hashes {
            any ^= self.slots[h as usize & mask].is_empty();
        }
        std::hint::black_box(any);
    }

    /// Finds `key` (whose hash is `h`).
    pub fn find(&self, h: u64, key: T::Key) -> Found {
        if self.slots.is_empty() {
            return Found::Vacant(None);
        }
        let mask = self.mask();
        let mut i = h as usize & mask;
        // The load limit leaves a quarter of the entries empty: the probe ends.
        loop {
            let s = &self.slots[i];
            if s.is_empty() {
                return Found::Vacant(Some(i));
            }
            if s.key() == key {
                return Found::At(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, h: u64, key: T::Key) -> Option<&T> {
        match self.find(h, key) {
            Found::At(i) => self.slots.get(i),
            Found::Vacant(_) => None,
        }
    }

    /// The entry at `i` (from [`Table::find`]).
    pub fn at(&self, i: usize) -> Option<&T> {
        self.slots.get(i).filter(|s| !s.is_empty())
    }

    /// Puts `t` into the empty entry `i` that [`Table::find`] gave for `t`'s key, with
    /// room [`Table::reserve`]d before the find. Anything else is refused (`false`).
    pub fn insert_at(&mut self, i: usize, t: T) -> bool {
        let room = self.len < self.slots.len() - self.slots.len() / 4;
        match self.slots.get_mut(i) {
            Some(s) if s.is_empty() && room && !t.is_empty() => {
                *s = t;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Replaces the occupied entry `i` with `t` (same key).
    pub fn replace_at(&mut self, i: usize, t: T) {
        if let Some(s) = self.slots.get_mut(i) {
            debug_assert!(!s.is_empty() && s.key() == t.key());
            *s = t;
        }
    }

    /// Empties entry `i`, moving back the entries after it whose probe passed it.
    pub fn remove_at(&mut self, i: usize) {
        if self.slots.get(i).is_none_or(|s| s.is_empty()) {
            return;
        }
        let mask = self.mask();
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.is_empty() {
                break;
            }
            // `s` may fill the hole if its home is not after the hole on its probe:
            // its distance from home reaches back at least to the hole.
            let home = self.hasher.hash_one(s.key()) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = T::EMPTY;
        self.len -= 1;
    }

    /// Every occupied entry, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.slots.iter().filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct E {
        key: u16,
        value: u32,
    }

    impl Keyed for E {
        type Key = u16;
        const EMPTY: Self = E {
            key: u16::MAX,
            value: 0,
        };
        fn is_empty(&self) -> bool {
            self.key == u16::MAX
        }
        fn key(&self) -> u16 {
            self.key
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Batch(Vec<u16>),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        // Few keys and many operations: long probe runs, wrap-around, deletions inside
        // runs.
        prop_oneof![
            3 => (0u16..48, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0u16..48).prop_map(Op::Remove),
            1 => proptest::collection::vec(0u16..48, 0..12).prop_map(Op::Batch),
        ]
    }

    proptest! {
        /// The table holds exactly what a map holds, after any mix of inserts,
        /// replacements, removals and batch inserts.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec(arb_op(), 1..300)) {
            let mut t = Table::<E>::default();
            let mut m: HashMap<u16, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        t.reserve(1);
                        let h = t.hash(k);
                        match t.find(h, k) {
                            Found::At(i) => t.replace_at(i, E { key: k, value: v }),
                            Found::Vacant(Some(i)) => {
                                let e = E { key: k, value: v };
                                prop_assert!(t.insert_at(i, e));
                            }
                            Found::Vacant(None) => prop_assert!(false, "no room after reserve"),
                        }
                        m.insert(k, v);
                    }
                    Op::Remove(k) => {
                        let h = t.hash(k);
                        if let Found::At(i) = t.find(h, k) {
                            t.remove_at(i);
                        }
                        m.remove(&k);
                    }
                    Op::Batch(keys) => {
                        t.reserve(keys.len());
                        let hashes: Vec<u64> = keys.iter().map(|&k| t.hash(k)).collect();
                        t.warm(&hashes);
                        for (&k, &h) in keys.iter().zip(&hashes) {
                            if let Found::Vacant(Some(i)) = t.find(h, k) {
                                let e = E { key: k, value: 7 };
                                prop_assert!(t.insert_at(i, e));
                                m.insert(k, 7);
                            }
                        }
                    }
                }
                prop_assert_eq!(t.len(), m.len());
                prop_assert!(t.len() <= t.capacity() - t.capacity() / 4);
                for k in 0u16..48 {
                    prop_assert_eq!(t.get(t.hash(k), k).map(|e| e.value), m.get(&k).copied());
                }
                let mut got: Vec<(u16, u32)> = t.iter().map(|e| (e.key, e.value)).collect();
                got.sort_unstable();
                let mut want: Vec<(u16, u32)> = m.iter().map(|(&k, &v)| (k, v)).collect();
                want.sort_unstable();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn refuses_what_breaks_the_table() {
        let mut t = Table::<E>::default();
        assert_eq!(t.find(t.hash(1), 1), Found::Vacant(None));
        // No room reserved.
        assert!(!t.insert_at(0, E { key: 1, value: 1 }));
        t.reserve(1);
        let Found::Vacant(Some(i)) = t.find(t.hash(1), 1) else {
            panic!("an empty table with room has a vacant entry");
        };
        // Not the empty marker, not an occupied entry, not out of range.
        assert!(!t.insert_at(i, E::EMPTY));
        assert!(t.insert_at(i, E { key: 1, value: 1 }));
        assert!(!t.insert_at(i, E { key: 2, value: 2 }));
        assert!(!t.insert_at(t.capacity(), E { key: 2, value: 2 }));
        t.remove_at(t.capacity());
        assert_eq!(t.len(), 1);
    }
}
