//! The connection tracking table: fixed memory, shared by every worker, no lock.
//!
//! # Layout
//!
//! One array of slots, chosen at start and never grown. A slot is a version word and
//! the entry's words (`K` of key, `V` of value: IPv4 and IPv6 flows have tables of
//! their own, each as compact as its addresses allow), all atomics. A key hashes to a
//! window of [`WINDOW`] consecutive slots; its entry lives in one of them. Both directions of a flow are two entries (the reply's key is the translated
//! tuple), so whichever worker receives a packet finds its flow with one lookup.
//!
//! # Why it is safe without a lock
//!
//! Each slot is a seqlock: a writer claims the slot by moving its version from even to
//! odd with a compare-and-swap (so writers of one slot exclude each other; a writer
//! that finds a slot of its window claimed spins a bounded while for it, as long as a
//! write takes, then scans again, and after a few scans gives up: it never blocks),
//! puts a `Release` fence, stores the words, then publishes with a `Release` increment
//! back to even. A reader loads the version (`Acquire`), the words, then, after an
//! `Acquire` fence, the version again. If any word it read came from a later write,
//! the two fences synchronise and the second load sees that write's odd version; so
//! the same even version both times means no write overlapped the read, and the words
//! are one entry, never a mix of two (the seqlock of Boehm, "Can seqlocks get along
//! with programming language memory models?", 2012). Every word is an atomic, so
//! a torn read is only ever discarded, never undefined behaviour; there is no `unsafe`
//! (the prefetch hint of batched lookups is the `prefetch` crate's).
//! A reader retries a slot a few times and then treats it as a miss (the packet takes
//! the new-flow path), so a writer descheduled mid-write delays nobody for long.
//!
//! # What it leaves to its users
//!
//! A slot's words are one entry, but two writers of one key are not ordered: the last
//! write stands. So a new flow is stored with [`Table::insert_new`] (the fastpath's
//! new-flow path: a flow another worker stored since this one's lookup, or whose
//! entry the lookup missed mid-write, is kept and the packet looked up again), SNAT
//! ports are claimed the same way, and an entry evicted from a full window is handed
//! back so that its flow's other direction goes too. Two workers updating one flow at
//! once (a state change seen on both directions' queues, a refreshed expiry racing
//! the control thread's marking of a removed backend) still both write: the later
//! write's state wins, which costs at worst a timeout of the wrong state or a flow
//! to a removed backend that goes on until its next marking sweep or its expiry.
//!
//! # Expiry
//!
//! Every entry carries the second it expires at. Lookups treat an expired entry as
//! absent and inserts reuse its slot, so nothing sweeps the table while workers run;
//! [`Table::sweep`] clears a chunk of slots at a time from the control thread, for the
//! occupancy count and to delete flows on purpose (a removed backend).
//!
//! # A full window
//!
//! An insert into a window with no free or expired slot evicts the entry that expires
//! soonest (the stalest), unless [`Table::insert`] is told to refuse; either way it is
//! counted. The table never grows.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Slots a key may live in.
pub const WINDOW: usize = 16;
/// Times a reader retries a slot being written before it calls it a miss.
const READ_RETRIES: usize = 4;
/// Times an insert scans its window again when a slot was being written or taken
/// under it.
const WRITE_RETRIES: usize = 4;
/// Times an insert (all its scans together) reads a slot's version again while
/// another write holds it.
const SETTLE_SPINS: usize = 256;

/// An entry as the table stores it: the key's words and the value's. The last value
/// word's low 32 bits are the second the entry expires at (0: the slot is free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry<const K: usize, const V: usize> {
    pub key: [u64; K],
    pub value: [u64; V],
}

impl<const K: usize, const V: usize> Entry<K, V> {
    pub fn expires(&self) -> u32 {
        self.value[V - 1] as u32
    }

    const FREE: Entry<K, V> = Entry {
        key: [0; K],
        value: [0; V],
    };
}

/// What an insert did. Without eviction a full window refuses; with it, only a window
/// kept busy by other writers through every retry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Into a free or expired slot, or over the key's own entry.
    Stored,
    /// Over the stalest live entry of a full window.
    Evicted,
    /// Nothing: the window was full (and eviction not wanted) or every slot was being
    /// written.
    Refused,
    /// Nothing: the key has a live entry ([`Table::insert_new`] only).
    Exists,
}

/// The table's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub inserts: AtomicU64,
    pub evictions: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug)]
pub struct Table<const K: usize, const V: usize> {
    words: Box<[AtomicU64]>,
    /// Slots, a power of two.
    slots: usize,
    /// The slot hash's seed.
    seed: u64,
    pub counters: Counters,
}

/// A seed no one outside the process knows: the standard library's per-process random
/// hasher keys, through one hash of a counter (each table gets its own).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static TABLES: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(TABLES.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Mixes a key into a slot index, from the table's own seed: chosen at random when the
/// table is made, so that nobody outside the process can craft flows that all land in
/// one window (and evict each other) without seeing the table.
fn hash<const K: usize>(seed: u64, key: &[u64; K]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    for &w in key {
        h = (h ^ w).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h.wrapping_mul(0x94d0_49bb_1331_11eb) ^ (h >> 29)
}

impl<const K: usize, const V: usize> Table<K, V> {
    /// Words of a slot: the version, the key, the value.
    const STRIDE: usize = 1 + K + V;

    /// A table of at least `entries` slots (rounded up to a power of two), all free.
    pub fn new(entries: usize) -> Table<K, V> {
        assert!(V > 0, "a value holds at least the expiry word");
        let slots = entries.max(WINDOW).next_power_of_two();
        let words = (0..slots * Self::STRIDE)
            .map(|_| AtomicU64::new(0))
            .collect();
        Table {
            words,
            slots,
            seed: random_seed(),
            counters: Counters::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots
    }

    /// Bytes the table holds.
    pub fn memory(&self) -> usize {
        self.slots * Self::STRIDE * std::mem::size_of::<AtomicU64>()
    }

    fn slot(&self, i: usize) -> &[AtomicU64] {
        let at = (i & (self.slots - 1)) * Self::STRIDE;
        &self.words[at..at + Self::STRIDE]
    }

    fn window(&self, key: &[u64; K]) -> impl Iterator<Item = usize> {
        let start = hash(self.seed, key) as usize;
        (0..WINDOW).map(move |i| start.wrapping_add(i))
    }

    /// Reads slot `i` consistently; `None` if writers kept it busy.
    fn read(&self, i: usize) -> Option<Entry<K, V>> {
        let s = self.slot(i);
        for _ in 0..READ_RETRIES {
            let v = s[0].load(Ordering::Acquire);
            if v & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut e = Entry::<K, V>::FREE;
            for (k, w) in e.key.iter_mut().zip(&s[1..1 + K]) {
                *k = w.load(Ordering::Relaxed);
            }
            for (x, w) in e.value.iter_mut().zip(&s[1 + K..]) {
                *x = w.load(Ordering::Relaxed);
            }
            // The words' loads happen before the version is read again.
            fence(Ordering::Acquire);
            if s[0].load(Ordering::Relaxed) == v {
                return Some(e);
            }
        }
        None
    }

    /// The live entry of `key` at second `now`.
    pub fn get(&self, key: &[u64; K], now: u32) -> Option<[u64; V]> {
        self.window(key).find_map(|i| {
            // Most slots of a window hold other keys: one word tells, without the
            // seqlock's reads. A key being written right now may be missed, as if the
            // lookup came just before the write.
            if !self.may_hold(i, key) {
                return None;
            }
            self.read(i)
                .filter(|e| e.key == *key && e.expires() > now)
                .map(|e| e.value)
        })
    }

    /// Whether slot `i`'s first key word is `key`'s (a cheap filter before a read).
    #[inline]
    fn may_hold(&self, i: usize, key: &[u64; K]) -> bool {
        self.slot(i)[1].load(Ordering::Relaxed) == key[0]
    }

    /// Looks up a batch: first prefetches the start of every key's window, so that
    /// their cache misses overlap, then looks each up (VPP's batch shape).
    pub fn get_batch(&self, keys: &[[u64; K]], now: u32, out: &mut [Option<[u64; V]>]) {
        for k in keys {
            self.prefetch(k);
        }
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = self.get(k, now);
        }
    }

    /// Asks the CPU to bring the first slot of `key`'s window (every cache line of it)
    /// into the cache, without waiting for it: a later lookup of `key` then finds it
    /// there.
    #[inline]
    pub fn prefetch(&self, key: &[u64; K]) {
        let i = hash(self.seed, key) as usize;
        let at = (i & (self.slots - 1)) * Self::STRIDE;
        // The first word, the ninth and the last: each line the slot touches (a slot is
        // at most 13 words, so three lines).
        prefetch::read(&self.words[at]);
        if Self::STRIDE > 8 {
            prefetch::read(&self.words[at + 8]);
        }
        prefetch::read(&self.words[at + Self::STRIDE - 1]);
    }

    /// Slot `i`'s version once no write is under way there: a write takes a few
    /// nanoseconds, so a writer waits that long (a bounded spin) before it gives the
    /// scan up; `None` if the slot stayed claimed (its writer descheduled) through
    /// what is left of the insert's budget of `spins`.
    fn settled(&self, i: usize, spins: &mut usize) -> Option<u64> {
        let s = self.slot(i);
        loop {
            let v = s[0].load(Ordering::Acquire);
            if v & 1 == 0 {
                return Some(v);
            }
            if *spins == 0 {
                return None;
            }
            *spins -= 1;
            std::hint::spin_loop();
        }
    }

    /// Claims slot `i` for writing if its version is still `v`.
    fn claim(&self, i: usize, v: u64) -> bool {
        self.slot(i)[0]
            .compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Writes a claimed slot and publishes it.
    fn write(&self, i: usize, e: &Entry<K, V>) {
        let s = self.slot(i);
        // Orders the odd version before the words: a reader whose loads see any word
        // of this write (its fence pairs with this one) then sees the version change.
        fence(Ordering::Release);
        for (w, &k) in s[1..1 + K].iter().zip(&e.key) {
            w.store(k, Ordering::Relaxed);
        }
        for (w, &x) in s[1 + K..].iter().zip(&e.value) {
            w.store(x, Ordering::Relaxed);
        }
        // Publishes the words: a reader that sees the new even version sees them.
        s[0].fetch_add(1, Ordering::Release);
    }

    /// Stores `value` for `key` (its expiry in the last word), at second `now`: over the
    /// key's own entry, else in a free or expired slot, else over the stalest entry of
    /// the window when `evict`, else not at all.
    pub fn insert(&self, key: &[u64; K], value: [u64; V], now: u32, evict: bool) -> Inserted {
        self.store(key, value, now, evict, true, &mut None)
    }

    /// As [`Table::insert`] with eviction, handing back the entry evicted (with
    /// [`Inserted::Evicted`]): its owner may hold more entries that go with it.
    pub fn insert_reporting(
        &self,
        key: &[u64; K],
        value: [u64; V],
        now: u32,
        replace: bool,
        evicted: &mut Option<Entry<K, V>>,
    ) -> Inserted {
        self.store(key, value, now, true, replace, evicted)
    }

    /// As [`Table::insert`], but only if `key` has no live entry: two workers claiming
    /// the same key at once (two new flows picking one SNAT port) get one `Stored` and
    /// one `Exists`, never both stored.
    pub fn insert_new(&self, key: &[u64; K], value: [u64; V], now: u32, evict: bool) -> Inserted {
        self.store(key, value, now, evict, false, &mut None)
    }

    fn store(
        &self,
        key: &[u64; K],
        value: [u64; V],
        now: u32,
        evict: bool,
        replace: bool,
        evicted: &mut Option<Entry<K, V>>,
    ) -> Inserted {
        let entry = Entry { key: *key, value };
        // One spin budget for the whole insert.
        let mut spins = SETTLE_SPINS;
        // A slot being written may be this key's (another worker writing the flow's
        // other direction, a sweep): rather than put a second copy beside it, the scan
        // starts again, a bounded number of times, then the insert is refused.
        'attempt: for _ in 0..WRITE_RETRIES {
            // The key's own slot first, then a free or expired one, then the stalest.
            // Three words say which a slot is; the entry is read only where the key
            // may be.
            let mut free = None;
            let mut stalest: Option<(usize, u64, u32)> = None;
            for i in self.window(key) {
                let s = self.slot(i);
                let Some(v) = self.settled(i, &mut spins) else {
                    continue 'attempt;
                };
                let expires = s[K + V].load(Ordering::Relaxed) as u32;
                if expires != 0 && self.may_hold(i, key) {
                    match self.read(i) {
                        Some(e) if e.key == *key && e.expires() > now && !replace => {
                            return Inserted::Exists;
                        }
                        Some(e) if e.key == *key && e.expires() != 0 => {
                            if self.claim(i, v) {
                                self.write(i, &entry);
                                self.counters.inserts.fetch_add(1, Ordering::Relaxed);
                                return Inserted::Stored;
                            }
                            continue 'attempt;
                        }
                        Some(_) => {}
                        None => continue 'attempt,
                    }
                }
                if expires <= now {
                    free.get_or_insert((i, v));
                } else if stalest.is_none_or(|(_, _, x)| expires < x) {
                    stalest = Some((i, v, expires));
                }
            }
            if let Some((i, v)) = free {
                if self.claim(i, v) {
                    self.write(i, &entry);
                    if !replace && self.claimed_twice(key, i, now) {
                        return Inserted::Exists;
                    }
                    self.counters.inserts.fetch_add(1, Ordering::Relaxed);
                    return Inserted::Stored;
                }
                // Another insert took it first: look again.
                continue 'attempt;
            }
            if let Some((i, v, _)) = stalest.filter(|_| evict) {
                if self.claim(i, v) {
                    let old = self.words(i);
                    self.write(i, &entry);
                    // The stalest entry is gone whether this claim stands or not.
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                    *evicted = Some(old);
                    if !replace && self.claimed_twice(key, i, now) {
                        return Inserted::Exists;
                    }
                    self.counters.inserts.fetch_add(1, Ordering::Relaxed);
                    return Inserted::Evicted;
                }
                continue 'attempt;
            }
            break;
        }
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        Inserted::Refused
    }

    /// Slot `i`'s words, read under the slot's claim (the caller holds it: nobody
    /// writes them meanwhile).
    fn words(&self, i: usize) -> Entry<K, V> {
        let s = self.slot(i);
        let mut e = Entry::<K, V>::FREE;
        for (x, w) in e.key.iter_mut().zip(&s[1..1 + K]) {
            *x = w.load(Ordering::Relaxed);
        }
        for (x, w) in e.value.iter_mut().zip(&s[1 + K..]) {
            *x = w.load(Ordering::Relaxed);
        }
        e
    }

    /// After [`Table::insert_new`] wrote `key` into slot `mine`: whether another writer
    /// may have claimed the key in another slot of the window at the same time (its
    /// live entry there, or a slot being written). Then this claim is withdrawn (slot
    /// `mine` freed), so that the key is never held twice; both may withdraw, and both
    /// callers try elsewhere.
    fn claimed_twice(&self, key: &[u64; K], mine: usize, now: u32) -> bool {
        let mine = mine & (self.slots - 1);
        let rival = self.window(key).any(|j| {
            if j & (self.slots - 1) == mine {
                return false;
            }
            let v = self.slot(j)[0].load(Ordering::Acquire);
            if v & 1 == 1 {
                return self.may_hold(j, key);
            }
            self.may_hold(j, key)
                && self
                    .read(j)
                    .is_some_and(|e| e.key == *key && e.expires() > now)
        });
        if rival {
            // Frees `mine` if it still holds this claim (another insert may have taken
            // the slot since): under the slot's claim its words are read as they are.
            for _ in 0..WRITE_RETRIES * 4 {
                let s = self.slot(mine);
                let v = s[0].load(Ordering::Acquire);
                if v & 1 == 1 || !self.claim(mine, v) {
                    std::hint::spin_loop();
                    continue;
                }
                let e = self.words(mine);
                let ours = e.key == *key;
                self.write(mine, if ours { &Entry::FREE } else { &e });
                break;
            }
        }
        rival
    }

    /// Removes `key`'s entry; `true` if there was a live one.
    pub fn remove(&self, key: &[u64; K], now: u32) -> bool {
        for i in self.window(key) {
            let v = self.slot(i)[0].load(Ordering::Acquire);
            let Some(e) = self.read(i) else { continue };
            if e.key == *key && e.expires() > now && self.claim(i, v) {
                self.write(i, &Entry::FREE);
                return true;
            }
        }
        false
    }

    /// From the control thread: visits slots `from..from + count` (wrapping), frees
    /// the expired ones and those `doomed` says must go, and returns how many live
    /// entries it left. Workers run on meanwhile.
    pub fn sweep(
        &self,
        from: usize,
        count: usize,
        now: u32,
        mut doomed: impl FnMut(&Entry<K, V>) -> bool,
    ) -> usize {
        self.sweep_with(from, count, now, |e| {
            if doomed(e) {
                Fate::Free
            } else {
                Fate::Keep
            }
        })
    }

    /// As [`Table::sweep`], with `fate` deciding each live entry's: kept, freed, or
    /// given a new value (its key stays). An entry a worker writes meanwhile is left
    /// as the worker wrote it (the claim fails) and counted live.
    pub fn sweep_with(
        &self,
        from: usize,
        count: usize,
        now: u32,
        mut fate: impl FnMut(&Entry<K, V>) -> Fate<V>,
    ) -> usize {
        let mut live = 0;
        for i in from..from + count.min(self.slots) {
            let v = self.slot(i)[0].load(Ordering::Acquire);
            let Some(e) = self.read(i) else {
                live += 1;
                continue;
            };
            if e.expires() == 0 {
                continue;
            }
            let f = if e.expires() <= now {
                Fate::Free
            } else {
                fate(&e)
            };
            match f {
                Fate::Keep => live += 1,
                Fate::Free => {
                    if self.claim(i, v) {
                        self.write(i, &Entry::FREE);
                    } else {
                        live += 1;
                    }
                }
                Fate::Replace(value) => {
                    if self.claim(i, v) {
                        self.write(i, &Entry { key: e.key, value });
                    }
                    live += 1;
                }
            }
        }
        live
    }
}

/// What a sweep does with a live entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate<const V: usize> {
    Keep,
    Free,
    /// Keep the key with this value.
    Replace([u64; V]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const K: usize = 5;
    const V: usize = 4;
    type T = Table<K, V>;

    fn key(n: u64) -> [u64; K] {
        [0, 0xffff_0a00_0000 | n, 0, 0xffff_0a60_000a, (n << 16) | 6]
    }

    fn value(n: u64, expires: u32) -> [u64; V] {
        [n, !n, n.rotate_left(17), (n << 32) | u64::from(expires)]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        InsertNew(u64, u32),
        Get(u64),
        Remove(u64),
        Tick(u32),
        /// A sweep that frees the keys `k % 3 == 0` and gives those `k % 3 == 1` the
        /// value of key `k + 1000` (keeping their expiry).
        Judge,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..200, 1u32..100).prop_map(|(k, ttl)| Op::Insert(k, ttl)),
            (0u64..200, 1u32..100).prop_map(|(k, ttl)| Op::InsertNew(k, ttl)),
            (0u64..200).prop_map(Op::Get),
            (0u64..200).prop_map(Op::Remove),
            (1u32..30).prop_map(Op::Tick),
            Just(Op::Judge),
        ]
    }

    proptest! {
        /// Against a map with expiry, in a table large enough never to be full: the
        /// same answers, whatever the sequence.
        #[test]
        fn matches_a_map_with_expiry(ops in proptest::collection::vec(op(), 1..400)) {
            let t = T::new(1 << 14);
            let mut reference: HashMap<u64, (u64, u32)> = HashMap::new();
            let mut now = 1u32;
            for op in ops {
                match op {
                    Op::Insert(k, ttl) => {
                        let r = t.insert(&key(k), value(k + u64::from(now), now + ttl), now, true);
                        prop_assert_eq!(r, Inserted::Stored);
                        reference.insert(k, (k + u64::from(now), now + ttl));
                    }
                    Op::Get(k) => {
                        let want = reference
                            .get(&k)
                            .filter(|(_, exp)| *exp > now)
                            .map(|&(n, exp)| value(n, exp));
                        prop_assert_eq!(t.get(&key(k), now), want);
                    }
                    Op::Remove(k) => {
                        let was = reference.remove(&k).is_some_and(|(_, exp)| exp > now);
                        prop_assert_eq!(t.remove(&key(k), now), was);
                    }
                    Op::InsertNew(k, ttl) => {
                        let live = reference.get(&k).is_some_and(|(_, exp)| *exp > now);
                        let r = t.insert_new(&key(k), value(k + u64::from(now), now + ttl), now, true);
                        if live {
                            prop_assert_eq!(r, Inserted::Exists);
                        } else {
                            prop_assert_eq!(r, Inserted::Stored);
                            reference.insert(k, (k + u64::from(now), now + ttl));
                        }
                    }
                    Op::Tick(d) => now += d,
                    Op::Judge => {
                        let left = t.sweep_with(0, t.capacity(), now, |e| {
                            let k = e.key[1] & 0xff_ffff;
                            match k % 3 {
                                0 => Fate::Free,
                                1 => Fate::Replace(value(k + 1000, (e.value[3] & 0xffff_ffff) as u32)),
                                _ => Fate::Keep,
                            }
                        });
                        reference.retain(|k, (_, exp)| *exp > now && k % 3 != 0);
                        for (k, (n, _)) in reference.iter_mut() {
                            if k % 3 == 1 {
                                *n = k + 1000;
                            }
                        }
                        prop_assert_eq!(left, reference.len());
                    }
                }
            }
            let live = reference.values().filter(|(_, exp)| *exp > now).count();
            prop_assert_eq!(t.sweep(0, t.capacity(), now, |_| false), live);
        }

        /// A table far too small: it never grows, never answers a wrong value, and
        /// every insert is stored, counted as an eviction, or refused and counted.
        #[test]
        fn a_full_table_evicts_or_refuses_and_never_lies(n in 100u64..2000, evict in any::<bool>()) {
            let t = T::new(64);
            let mut outcomes = [0u64; 3];
            for k in 0..n {
                let r = t.insert(&key(k), value(k, 1000 + k as u32), 1, evict);
                outcomes[r as usize] += 1;
            }
            prop_assert_eq!(t.capacity(), 64);
            prop_assert_eq!(outcomes[0] + outcomes[1] + outcomes[2], n);
            prop_assert_eq!(t.counters.evictions.load(Ordering::Relaxed), outcomes[1]);
            prop_assert_eq!(t.counters.refused.load(Ordering::Relaxed), outcomes[2]);
            prop_assert!(evict || outcomes[1] == 0);
            for k in 0..n {
                if let Some(v) = t.get(&key(k), 1) {
                    prop_assert_eq!(v, value(k, 1000 + k as u32));
                }
            }
            // Every entry the table answers for is live, and nothing else is.
            let answered = (0..n).filter(|&k| t.get(&key(k), 1).is_some()).count();
            prop_assert_eq!(t.sweep(0, 64, 1, |_| false), answered);
        }
    }

    #[test]
    fn eviction_takes_the_stalest_of_the_window() {
        let t = T::new(WINDOW);
        // A table of one window: fill it, with the third expiring first.
        for k in 0..WINDOW as u64 {
            let exp = if k == 2 { 50 } else { 100 + k as u32 };
            assert_eq!(t.insert(&key(k), value(k, exp), 1, true), Inserted::Stored);
        }
        assert_eq!(
            t.insert(&key(99), value(99, 500), 1, false),
            Inserted::Refused
        );
        assert_eq!(
            t.insert(&key(99), value(99, 500), 1, true),
            Inserted::Evicted
        );
        assert_eq!(t.get(&key(2), 1), None, "the stalest went");
        assert_eq!(t.get(&key(3), 1), Some(value(3, 103)));
        assert_eq!(t.get(&key(99), 1), Some(value(99, 500)));
        // Expired entries make room without eviction.
        assert_eq!(
            t.insert(&key(100), value(100, 900), 200, false),
            Inserted::Stored
        );
    }

    #[test]
    fn sweep_deletes_what_it_is_told_to() {
        let t = T::new(1024);
        for k in 0..100 {
            t.insert(&key(k), value(k, 100), 1, true);
        }
        // The entries of "backend" 7 (values whose first word ends in 7) go.
        let live = t.sweep(0, 1024, 1, |e| e.value[0] % 10 == 7);
        assert_eq!(live, 90);
        assert_eq!(t.get(&key(17), 1), None);
        assert_eq!(t.get(&key(18), 1), Some(value(18, 100)));
    }

    /// Two workers writing the same keys at once (a flow's two directions, written by
    /// whichever worker saw a packet): never two entries for one key.
    #[test]
    fn concurrent_writers_of_one_key_leave_one_entry() {
        let t = std::sync::Arc::new(T::new(512));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let t = std::sync::Arc::clone(&t);
                std::thread::spawn(move || {
                    for round in 0..20_000u64 {
                        let k = round % 32;
                        t.insert(&key(k), value(k | (w << 8), 1000), 1, true);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let mut seen = std::collections::HashMap::new();
        t.sweep(0, t.capacity(), 1, |e| {
            *seen.entry(e.key).or_insert(0) += 1;
            false
        });
        assert_eq!(seen.len(), 32, "every key is there");
        assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn insert_new_stores_only_where_no_live_entry_is() {
        let t = T::new(64);
        assert_eq!(
            t.insert_new(&key(1), value(1, 10), 1, true),
            Inserted::Stored
        );
        assert_eq!(
            t.insert_new(&key(1), value(2, 10), 1, true),
            Inserted::Exists
        );
        assert_eq!(t.get(&key(1), 1), Some(value(1, 10)), "the first stays");
        assert_eq!(
            t.insert_new(&key(1), value(3, 20), 10, true),
            Inserted::Stored,
            "an expired entry is no entry"
        );
        assert_eq!(t.get(&key(1), 10), Some(value(3, 20)));
    }

    /// Two workers claiming the same keys at once (two new flows on one SNAT port):
    /// no key is won by both, and a won key holds its winner's value.
    #[test]
    fn concurrent_claims_of_one_key_have_one_winner() {
        for round in 0..200u64 {
            let t = std::sync::Arc::new(T::new(256));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let claimers: Vec<_> = (0..2u64)
                .map(|w| {
                    let (t, barrier) = (std::sync::Arc::clone(&t), std::sync::Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        (0..32u64)
                            .filter(|&k| {
                                let v = value(k | (w << 8) | (round << 16), 1000);
                                t.insert_new(&key(k), v, 1, true) == Inserted::Stored
                            })
                            .map(|k| (k, w))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let won: Vec<(u64, u64)> = claimers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            // At most one winner a key (a claim may also be refused or lose to the
            // other at once: both then try elsewhere).
            let mut keys: Vec<u64> = won.iter().map(|&(k, _)| k).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(
                keys.len(),
                won.len(),
                "round {round}: a key won twice: {won:?}"
            );
            for (k, w) in won {
                let v = t.get(&key(k), 1).unwrap();
                assert_eq!(v[0] >> 8 & 0xff, w, "key {k} holds another's value");
            }
        }
    }

    /// Workers writing and reading at once: a reader sees an entry whole or not at all.
    #[test]
    fn concurrent_readers_never_see_a_torn_entry() {
        let t = std::sync::Arc::new(T::new(256));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let t = std::sync::Arc::clone(&t);
                std::thread::spawn(move || {
                    for round in 0..20_000u64 {
                        let k = (round * 2 + w) % 64;
                        t.insert(&key(k), value(k ^ (round << 8), 1000), 1, true);
                    }
                })
            })
            .collect();
        let reader = {
            let t = std::sync::Arc::clone(&t);
            std::thread::spawn(move || {
                let mut seen = 0u64;
                for round in 0..200_000u64 {
                    let k = round % 64;
                    if let Some(v) = t.get(&key(k), 1) {
                        // Every word derives from the first: a mix of two writes fails.
                        let n = v[0];
                        assert_eq!(v, value(n, 1000), "torn entry for key {k}");
                        assert_eq!(n & 0xff, k, "another key's value");
                        seen += 1;
                    }
                }
                seen
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        assert!(
            reader.join().unwrap() > 0,
            "the reader never found an entry"
        );
    }
}
