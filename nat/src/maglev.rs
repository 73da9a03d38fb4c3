//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): a lookup table
//! of `M` slots (`M` prime) filled with backend indexes, so that a flow's hash picks a
//! backend with one array read, and a change of the backend set moves few flows.
//!
//! Every backend has a preference list over the slots, `(offset + j * skip) mod M`,
//! derived from its key alone; backends take turns claiming their next preferred free
//! slot until the table is full. Two nodes with the same backend set therefore build
//! the same table, whatever order the set came in (the keys are sorted first), so any
//! node the fabric's ECMP sends a flow to picks the same backend for it.
//!
//! The hash of a key is fixed here (FNV-1a with a final mix), never seeded per process:
//! a node that restarts, or runs another build, must build the same table. A test pins
//! it.
//!
//! Table sizes: at `M ≥ 100 × N` every backend's share of the slots is within 1 % of
//! the others' (the paper's rule). The size is the smallest prime of [`SIZES`] at
//! least 100 times the backend count, capped by the caller (default
//! [`DEFAULT_MAX_SIZE`]) so that ten thousand small services do not cost gigabytes.
//!
//! Disruption, measured (the property tests bound it): removing one of N backends
//! moves its own slots and 1.5–3.8 % of the others' at 100–200 slots per backend (N up
//! to 120); adding one moves its share and up to 3.2 % more. It falls as the table
//! grows, roughly with the square root of the slots per backend. Measured over every
//! N from 2 to 59 and every backend removed, with primes about 1.25× apart: at 100
//! slots per backend the others lose 2.15 % on average and 3.7 % at worst; at 1,000,
//! 0.51 % and 1.21 %; at 1,600, 0.43 % and 1.09 % (the tail is about 2.5× the mean,
//! and random permutations instead of offset/skip do no better). So the issue's
//! "≤ 1 % at 100×" does not hold for Maglev itself: it needs about 2,000 slots per
//! backend (20× the memory) for the worst case; the tables stay at 100× until that
//! trade-off is settled. Where the size itself changes (the backend count
//! crosses a step of [`SIZES`]) the table is new and new flows spread anew; flows in
//! the connection tracking table keep their backend either way.

/// The table sizes, primes roughly doubling, so that a service's table is at most about
/// twice what its backend count asks for.
pub const SIZES: [u32; 16] = [
    101, 211, 401, 809, 1601, 3203, 6421, 12809, 25603, 51203, 65537, 131071, 262147, 524309,
    1048583, 2097169,
];

/// The default cap of a table's size (kube-router and Cilium both use 65537 by default).
pub const DEFAULT_MAX_SIZE: u32 = 65537;

/// Slots a table has per backend, at least: about 1 % disruption per change.
pub const SLOTS_PER_BACKEND: u64 = 100;

/// The size of the table for `backends` backends: the smallest of [`SIZES`] with at
/// least [`SLOTS_PER_BACKEND`] slots each, but no larger than the largest of them at
/// most `max_size` (and never below the smallest).
pub fn table_size(backends: usize, max_size: u32) -> u32 {
    let want = (backends as u64).saturating_mul(SLOTS_PER_BACKEND);
    let cap = SIZES
        .iter()
        .copied()
        .filter(|&s| s <= max_size)
        .max()
        .unwrap_or(SIZES[0]);
    SIZES
        .iter()
        .copied()
        .find(|&s| u64::from(s) >= want)
        .unwrap_or(cap)
        .min(cap)
}

/// FNV-1a over `bytes`, then a 64-bit finalizer (MurmurHash3's) so that keys differing
/// in one byte differ in every bit.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SKIP_SEED: u64 = 0x6d61_676c_6576_3032; // "maglev02"

/// A backend's preference list: where it starts and how far it steps.
fn preference(key: &[u8], m: u32) -> (u32, u32) {
    let m64 = u64::from(m);
    let offset = (hash(OFFSET_SEED, key) % m64) as u32;
    let skip = (hash(SKIP_SEED, key) % (m64 - 1) + 1) as u32;
    (offset, skip)
}

/// A built lookup table: each slot holds an index into the backend list it was built
/// from (in the caller's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    slots: Box<[u16]>,
}

/// Why a table cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("a Maglev table holds at most 65535 backends, {0} given")]
    TooManyBackends(usize),
    #[error("two backends have the same key (backend {0} and {1})")]
    DuplicateKey(usize, usize),
    #[error("{backends} backends do not fit a table of {size} slots (raise the table size)")]
    TableTooSmall { backends: usize, size: u32 },
}

impl Maglev {
    /// Builds the table of `backends` (each named by its key: the bytes of its address
    /// and port) with [`table_size`] slots. `None` for no backend.
    pub fn new<K: AsRef<[u8]>>(
        backends: &[K],
        max_size: u32,
    ) -> Result<Option<Maglev>, MaglevError> {
        let n = backends.len();
        if n == 0 {
            return Ok(None);
        }
        if n > usize::from(u16::MAX) {
            return Err(MaglevError::TooManyBackends(n));
        }
        let size = table_size(n, max_size);
        if n > size as usize {
            return Err(MaglevError::TableTooSmall { backends: n, size });
        }
        Ok(Some(Self::with_size(backends, size)?))
    }

    /// Builds the table with `m` slots (`m` prime, backends non-empty).
    fn with_size<K: AsRef<[u8]>>(backends: &[K], m: u32) -> Result<Maglev, MaglevError> {
        let n = backends.len();
        // Sorted by key: the table depends on the set, not on the order it came in.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| backends[a].as_ref().cmp(backends[b].as_ref()));
        if let Some(w) = order
            .windows(2)
            .find(|w| backends[w[0]].as_ref() == backends[w[1]].as_ref())
        {
            return Err(MaglevError::DuplicateKey(w[0].min(w[1]), w[0].max(w[1])));
        }
        let prefs: Vec<(u32, u32)> = order
            .iter()
            .map(|&i| preference(backends[i].as_ref(), m))
            .collect();
        // `next[i]`: how far backend i went down its preference list.
        let mut next = vec![0u32; n];
        let mut slots = vec![u16::MAX; m as usize].into_boxed_slice();
        let mut filled = 0u32;
        'fill: loop {
            for (turn, &(offset, skip)) in prefs.iter().enumerate() {
                // The paper's population loop: the next free slot this backend prefers.
                // `j` stays below `m` because some slot is free while the table is not
                // full, and a backend's list visits every slot once (`skip` and the
                // prime `m` are coprime).
                let mut slot;
                loop {
                    let j = u64::from(next[turn]);
                    slot = ((u64::from(offset) + j * u64::from(skip)) % u64::from(m)) as usize;
                    next[turn] += 1;
                    if slots[slot] == u16::MAX {
                        break;
                    }
                }
                slots[slot] = order[turn] as u16;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Ok(Maglev { slots })
    }

    /// The backend (an index into the list the table was built from) for a flow hash,
    /// which must be spread over all 64 bits (the slot is taken from its top bits: a
    /// 32-bit hash goes in the high half).
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> usize {
        // A multiply-shift range reduction: no division on the hot path.
        let i = ((u128::from(flow_hash) * self.slots.len() as u128) >> 64) as usize;
        usize::from(self.slots[i])
    }

    /// The table's size.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slots, for tests and the status output.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// Bytes of memory the table holds.
    pub fn memory(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_prime(n: u32) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
    }

    fn keys(ids: impl IntoIterator<Item = u32>) -> Vec<Vec<u8>> {
        // As the service model writes a backend's key: address and port.
        ids.into_iter()
            .map(|i| {
                let mut k = vec![10, 244, (i >> 8) as u8, i as u8];
                k.extend_from_slice(&8080u16.to_be_bytes());
                k
            })
            .collect()
    }

    #[test]
    fn sizes_are_primes_in_order() {
        assert!(SIZES.iter().all(|&s| is_prime(s)), "{SIZES:?}");
        assert!(SIZES.windows(2).all(|w| w[0] < w[1]));
        assert!(SIZES.contains(&DEFAULT_MAX_SIZE));
    }

    #[test]
    fn the_size_follows_the_backends_within_the_cap() {
        assert_eq!(table_size(1, DEFAULT_MAX_SIZE), 101);
        assert_eq!(table_size(3, DEFAULT_MAX_SIZE), 401);
        assert_eq!(table_size(10, DEFAULT_MAX_SIZE), 1601);
        assert_eq!(table_size(655, DEFAULT_MAX_SIZE), 65537);
        assert_eq!(table_size(5000, DEFAULT_MAX_SIZE), 65537, "capped");
        assert_eq!(table_size(5000, 1_000_000), 524309);
        assert_eq!(table_size(5000, 50), 101, "never below the smallest");
    }

    /// Pinned: a table built today is the table every other node and every later build
    /// builds (flows keep their backend across an upgrade, and across nodes).
    #[test]
    fn the_table_is_pinned() {
        let t = Maglev::new(&keys(0..3), DEFAULT_MAX_SIZE).unwrap().unwrap();
        assert_eq!(t.len(), 401);
        let head: Vec<u16> = t.slots()[..16].to_vec();
        assert_eq!(head, PINNED_HEAD, "the Maglev hash or fill changed");
        assert_eq!(hash(0, b"xroute"), PINNED_HASH);
    }
    const PINNED_HEAD: [u16; 16] = [1, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 2, 2, 1, 0];
    const PINNED_HASH: u64 = 14185187740474384362;

    #[test]
    fn more_backends_than_slots_is_an_error_not_a_silent_loss() {
        let k = keys(0..200);
        assert_eq!(
            Maglev::new(&k, 101),
            Err(MaglevError::TableTooSmall {
                backends: 200,
                size: 101
            })
        );
    }

    #[test]
    fn bad_sets_are_refused() {
        let none: [&[u8]; 0] = [];
        assert_eq!(Maglev::new(&none, DEFAULT_MAX_SIZE), Ok(None));
        let dup = [&b"a"[..], b"b", b"a"];
        assert_eq!(
            Maglev::new(&dup, DEFAULT_MAX_SIZE),
            Err(MaglevError::DuplicateKey(0, 2))
        );
    }

    /// Slots whose backend changed between two tables, by backend key.
    fn moved(a: &Maglev, ka: &[Vec<u8>], b: &Maglev, kb: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        a.slots()
            .iter()
            .zip(b.slots())
            .map(|(&x, &y)| (ka[usize::from(x)].clone(), kb[usize::from(y)].clone()))
            .filter(|(x, y)| x != y)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against the reference: every slot holds a backend, each backend holds its
        /// share give or take one round, and the order the set came in does not matter.
        #[test]
        fn full_fair_and_independent_of_order(n in 1usize..40, rot in 0usize..40) {
            let k = keys(0..n as u32);
            let t = Maglev::new(&k, DEFAULT_MAX_SIZE).unwrap().unwrap();
            prop_assert_eq!(t.len() as u32, table_size(n, DEFAULT_MAX_SIZE));
            let mut count = vec![0usize; n];
            for &s in t.slots() {
                prop_assert!(usize::from(s) < n);
                count[usize::from(s)] += 1;
            }
            let (lo, hi) = (t.len() / n, t.len().div_ceil(n));
            prop_assert!(count.iter().all(|&c| c >= lo && c <= hi), "{:?}", count);
            let mut r = k.clone();
            r.rotate_left(rot % n);
            let u = Maglev::new(&r, DEFAULT_MAX_SIZE).unwrap().unwrap();
            let same: Vec<&[u8]> = t.slots().iter().map(|&s| &k[usize::from(s)][..]).collect();
            let other: Vec<&[u8]> = u.slots().iter().map(|&s| &r[usize::from(s)][..]).collect();
            prop_assert_eq!(same, other);
        }

        /// Removing one of N backends moves its own slots and at most 4 % of the others
        /// (see the module's docs for what is measured).
        #[test]
        fn removing_a_backend_moves_its_flows_and_few_others(n in 2usize..60, gone in 0usize..60) {
            let gone = gone % n;
            let before = keys(0..n as u32);
            let mut after = before.clone();
            let removed = after.remove(gone);
            let m = DEFAULT_MAX_SIZE;
            // Same table size, so slots compare one to one.
            prop_assume!(table_size(n, m) == table_size(n - 1, m));
            let a = Maglev::new(&before, m).unwrap().unwrap();
            let b = Maglev::new(&after, m).unwrap().unwrap();
            let moved = moved(&a, &before, &b, &after);
            let others = moved.iter().filter(|(from, _)| *from != removed).count();
            prop_assert!(
                others as f64 <= 0.04 * a.len() as f64,
                "{} of {} slots of the remaining backends moved", others, a.len()
            );
        }

        /// Adding one to N backends moves at most 1/(N+1) + 4 % of the slots.
        #[test]
        fn adding_a_backend_moves_its_share_and_few_more(n in 1usize..60) {
            let before = keys(0..n as u32);
            let after = keys(0..n as u32 + 1);
            let m = DEFAULT_MAX_SIZE;
            prop_assume!(table_size(n, m) == table_size(n + 1, m));
            let a = Maglev::new(&before, m).unwrap().unwrap();
            let b = Maglev::new(&after, m).unwrap().unwrap();
            let moved = moved(&a, &before, &b, &after).len();
            let bound = (1.0 / (n as f64 + 1.0) + 0.04) * a.len() as f64;
            prop_assert!(moved as f64 <= bound, "{} of {} slots moved", moved, a.len());
        }
    }

    #[test]
    fn pick_spreads_hashes_over_the_table() {
        let k = keys(0..4);
        let t = Maglev::new(&k, DEFAULT_MAX_SIZE).unwrap().unwrap();
        let mut count = [0u32; 4];
        let mut h = 1u64;
        for _ in 0..40_000 {
            h = h
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            count[t.pick(h)] += 1;
        }
        assert!(
            count.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{count:?}"
        );
        assert_eq!(t.pick(0), usize::from(t.slots()[0]));
        assert_eq!(t.pick(u64::MAX), usize::from(t.slots()[t.len() - 1]));
    }
}
