//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): a lookup table
//! of `M` slots (`M` prime) filled with backend indexes, so that a flow's hash picks a
//! backend with one array read, and a change of the backend set moves few flows.
//!
//! Every backend has a preference list over the slots (below), derived from its key
//! alone; backends take turns claiming their next preferred free
//! slot until the table is full. Two nodes with the same backend set therefore build
//! the same table, whatever order the set came in (the keys are sorted first), so any
//! node the fabric's ECMP sends a flow to picks the same backend for it.
//!
//! The hash of a key is fixed here (FNV-1a with a final mix), never seeded per process:
//! a node that restarts, or runs another build, must build the same table. A test pins
//! it.
//!
//! Preference lists. The paper derives them as `(offset + j * skip) mod M`. Two
//! backends whose skips are equal (or small multiples of each other) then walk the
//! same cycle of slots a fixed distance apart, and every change of the set cascades
//! along it: one such pair among 31 backends moved 2.8 % of the other backends' slots
//! at 1,200 slots each. Here the step walks a fixed pseudo-random permutation `σ` of
//! the slots first: backend `b`'s `j`-th choice is `(σ[(j * skip) mod M] + offset) mod M`.
//! `σ` depends on `M` alone (a seeded shuffle, built once per size and shared by
//! every table of that size), so the lists stay a function of the key, cost one more
//! array read each, and no longer shift into one another.
//!
//! Table sizes and disruption: the paper's `M ≥ 100 × N` keeps every backend's share
//! within 1 % of the others', but a change of the set moves far more than 1 % of the
//! other backends' flows at that size: measured over every N from 2 to 59 and every
//! backend removed, as shares of the whole table, 2.0 % on average and 3.2 % at worst
//! at 100 slots per backend, 0.9 % and 1.45 % at 400, 0.49 % and 0.84 % at 1,200 (it
//! falls roughly with the square root of the slots per backend); as shares of the
//! other backends' own slots, the measure, 0.52 % and 0.95 % at 1,200, where a
//! property test over random address sets then found a removal moving 1.02 %; at
//! 1,400, 0.49 % and 0.86 % (every N from 2 to 59, every backend removed; a newcomer
//! takes at most 0.61 % beyond its share), where the property test then found 1.03 %
//! for a set of 7. The size is therefore the smallest prime of [`SIZES`] (primes at
//! most 1.33× apart) with [`SLOTS_PER_BACKEND`] = 2,000 slots per backend, capped by
//! the caller (default [`DEFAULT_MAX_SIZE`]: past 32 backends the slots per backend,
//! and so the bound, fall). Slots are one byte while a service has at most 255 backends, so a service of 10 backends costs about
//! 20 KB and 10,000 of them about 200 MB (Cilium's default, 16,381 four-byte slots per
//! service, costs 650 MB for them). Where the size itself changes (the backend count
//! crosses a step of [`SIZES`]) the table is new and new flows spread anew; flows in
//! the connection tracking table keep their backend either way.

use std::sync::OnceLock;

/// The table sizes: primes about 1.25× apart (65537 in place of the one nearest it),
/// so that a service's table is at most a third larger than its backend count asks.
pub const SIZES: [u32; 45] = [
    101, 127, 163, 211, 269, 337, 431, 541, 677, 853, 1069, 1361, 1709, 2137, 2677, 3347, 4201,
    5261, 6577, 8231, 10289, 12889, 16127, 20161, 25219, 31531, 39419, 49277, 65537, 77017, 96281,
    120371, 150473, 188107, 235159, 293957, 367453, 459317, 574157, 717697, 897133, 1121423,
    1401791, 1752239, 2190299,
];

/// The default cap of a table's size (kube-router and Cilium both use 65537 by default).
pub const DEFAULT_MAX_SIZE: u32 = 65537;

/// Slots a table has per backend, at least: under 1 % disruption per change.
pub const SLOTS_PER_BACKEND: u64 = 2000;

/// The size of the table for `backends` backends: the smallest of [`SIZES`] with at
/// least [`SLOTS_PER_BACKEND`] slots each, but no larger than the largest of them at
/// most `max_size` (and never below the smallest).
pub fn table_size(backends: usize, max_size: u32) -> u32 {
    SIZES[size_index(backends, max_size)]
}

/// [`table_size`]'s index in [`SIZES`].
fn size_index(backends: usize, max_size: u32) -> usize {
    let want = (backends as u64).saturating_mul(SLOTS_PER_BACKEND);
    // The largest size within the cap (the smallest when the cap is below them all).
    let cap = SIZES.iter().rposition(|&s| s <= max_size).unwrap_or(0);
    SIZES
        .iter()
        .position(|&s| u64::from(s) >= want)
        .unwrap_or(cap)
        .min(cap)
}

/// `σ` of one size and its inverse.
struct Sigma {
    fwd: Box<[u32]>,
    inv: Box<[u32]>,
}

/// `σ` of size `SIZES[index]`: a permutation of `0..M` from a Fisher–Yates shuffle
/// driven by SplitMix64 seeded with `M` (integer arithmetic only, so every node and
/// build computes the same one), with its inverse. Built on first use and kept: 8 bytes
/// per slot, once per size in use.
fn sigma(index: usize) -> &'static Sigma {
    static SIGMAS: [OnceLock<Sigma>; SIZES.len()] = [const { OnceLock::new() }; SIZES.len()];
    SIGMAS[index].get_or_init(|| {
        let m = SIZES[index];
        let mut state = u64::from(m) ^ 0x7369_676d_615f_7631; // "sigma_v1"
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut p: Vec<u32> = (0..m).collect();
        for i in (1..p.len()).rev() {
            // Multiply-shift: uniform enough over 0..=i, and exact on every platform.
            let j = ((u128::from(next()) * (i as u128 + 1)) >> 64) as usize;
            p.swap(i, j);
        }
        let mut inv = vec![0u32; p.len()];
        for (i, &v) in p.iter().enumerate() {
            inv[v as usize] = i as u32;
        }
        Sigma {
            fwd: p.into_boxed_slice(),
            inv: inv.into_boxed_slice(),
        }
    })
}

/// `a^e mod m` (`m` below 2^32, so no product overflows).
fn pow_mod(mut a: u64, mut e: u64, m: u64) -> u64 {
    let mut r = 1 % m;
    a %= m;
    while e > 0 {
        if e & 1 == 1 {
            r = r * a % m;
        }
        a = a * a % m;
        e >>= 1;
    }
    r
}

/// How many slots the population fills by ranking instead of probing: about where
/// probing for one more free slot (`M / free` reads) costs as much as scanning the free
/// slots' ranks.
fn tail_len(m: u32) -> u32 {
    ((2 * u64::from(m)).isqrt() as u32).min(m)
}

/// Where a backend is on its preference list (`pos` is the next index of `σ` it reads).
struct Walk {
    offset: u32,
    skip: u32,
    pos: u32,
}

impl Walk {
    /// The paper's population step: the next free slot this backend prefers. It ends
    /// because some slot is free while the table is not full, and a backend's list
    /// visits every slot once (`skip` and the prime `m` are coprime, so `pos` visits
    /// every index of `σ`). All three values stay below `m`, so the sums below do not
    /// overflow and one subtraction reduces them.
    fn probe(&mut self, sigma: &[u32], slots: &[u16], m: u32) -> usize {
        let Walk {
            offset,
            skip,
            mut pos,
        } = *self;
        let slot = loop {
            let mut slot = sigma[pos as usize] + offset;
            if slot >= m {
                slot -= m;
            }
            pos += skip;
            if pos >= m {
                pos -= m;
            }
            if slots[slot as usize] == FREE {
                break slot as usize;
            }
        };
        self.pos = pos;
        slot
    }

    /// For each of `free`, how many steps from its start this backend's list takes to
    /// reach it: slot `s` is `σ[p] + offset` for `p = σ⁻¹[s - offset]`, which the list
    /// (starting at index 0 of `σ`) reaches after `p / skip` steps (mod `m`). A list
    /// visits each slot once, so the free slot of fewest steps is the next one
    /// [`Walk::probe`] would find, and stays so as other slots fill (slots never
    /// empty).
    fn ranks(&self, free: &[u32], sigma: &Sigma, m: u32) -> Vec<u32> {
        let m64 = u64::from(m);
        let skip_inv = pow_mod(u64::from(self.skip), m64 - 2, m64); // Fermat: m is prime
        free.iter()
            .map(|&s| {
                let q = if s >= self.offset {
                    s - self.offset
                } else {
                    s + (m - self.offset)
                };
                (u64::from(sigma.inv[q as usize]) * skip_inv % m64) as u32
            })
            .collect()
    }
}

/// A slot no backend has claimed yet.
const FREE: u16 = u16::MAX;

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
    slots: Slots,
}

/// One byte a slot up to 255 backends, two beyond.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slots {
    Narrow(Box<[u8]>),
    Wide(Box<[u16]>),
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
        let index = size_index(n, max_size);
        let size = SIZES[index];
        if n > size as usize {
            return Err(MaglevError::TableTooSmall { backends: n, size });
        }
        Ok(Some(Self::with_size(backends, index)?))
    }

    /// Builds the table with `SIZES[index]` slots (backends non-empty, at most that
    /// many).
    fn with_size<K: AsRef<[u8]>>(backends: &[K], index: usize) -> Result<Maglev, MaglevError> {
        let m = SIZES[index];
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
        let sigma = sigma(index);
        let mut walk: Vec<Walk> = order
            .iter()
            .map(|&i| {
                let (offset, skip) = preference(backends[i].as_ref(), m);
                Walk {
                    offset,
                    skip,
                    pos: 0,
                }
            })
            .collect();
        // Backends take turns, each claiming its next preferred free slot.
        let mut slots = vec![FREE; m as usize];
        let mut filled = 0u32;
        let mut turn = 0usize;
        let next = |turn: usize| if turn + 1 == n { 0 } else { turn + 1 };
        // While many slots are free, by probing down the lists (the paper's loop).
        let probing = m - tail_len(m);
        while filled < probing {
            let slot = walk[turn].probe(&sigma.fwd, &slots, m);
            slots[slot] = order[turn] as u16;
            filled += 1;
            turn = next(turn);
        }
        // The last few, where probing reads about `m / free` slots a claim (the last
        // 160 of 12,889 slots take 38 % of the probes): by the free slots' ranks in the
        // list of the backend whose turn it is, which give the slot the probe finds.
        let mut free: Vec<u32> = (0..m).filter(|&s| slots[s as usize] == FREE).collect();
        let mut ranks: Vec<Option<Vec<u32>>> = (0..n).map(|_| None).collect();
        while let Some(last) = free.len().checked_sub(1) {
            let r = ranks[turn].get_or_insert_with(|| walk[turn].ranks(&free, sigma, m));
            let mut k = last;
            for (i, &rank) in r.iter().enumerate() {
                if rank < r[k] {
                    k = i;
                }
            }
            slots[free.swap_remove(k) as usize] = order[turn] as u16;
            for r in ranks.iter_mut().flatten() {
                r.swap_remove(k);
            }
            turn = next(turn);
        }
        let slots = if n <= usize::from(u8::MAX) {
            Slots::Narrow(slots.iter().map(|&s| s as u8).collect())
        } else {
            Slots::Wide(slots.into_boxed_slice())
        };
        Ok(Maglev { slots })
    }

    /// The backend (an index into the list the table was built from) for a flow hash,
    /// which must be spread over all 64 bits (the slot is taken from its top bits: a
    /// 32-bit hash goes in the high half).
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> usize {
        // A multiply-shift range reduction: no division on the hot path.
        let i = ((u128::from(flow_hash) * self.len() as u128) >> 64) as usize;
        self.backend_at(i)
    }

    /// The backend in slot `i` (below [`Maglev::len`]).
    #[inline]
    pub fn backend_at(&self, i: usize) -> usize {
        match &self.slots {
            Slots::Narrow(s) => usize::from(s[i]),
            Slots::Wide(s) => usize::from(s[i]),
        }
    }

    /// The table's size.
    pub fn len(&self) -> usize {
        match &self.slots {
            Slots::Narrow(s) => s.len(),
            Slots::Wide(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the table holds (the shared `σ` of its size and its inverse
    /// aside: 8 bytes a slot, once per size in use).
    pub fn memory(&self) -> usize {
        match &self.slots {
            Slots::Narrow(s) => std::mem::size_of_val(&**s),
            Slots::Wide(s) => std::mem::size_of_val(&**s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_prime(n: u32) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
    }

    fn slots(t: &Maglev) -> Vec<u16> {
        (0..t.len()).map(|i| t.backend_at(i) as u16).collect()
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
        assert!(SIZES
            .windows(2)
            .all(|w| f64::from(w[1]) / f64::from(w[0]) < 1.34));
        assert!(SIZES.contains(&DEFAULT_MAX_SIZE));
    }

    #[test]
    fn the_size_follows_the_backends_within_the_cap() {
        assert_eq!(table_size(1, DEFAULT_MAX_SIZE), 2137);
        assert_eq!(table_size(3, DEFAULT_MAX_SIZE), 6577);
        assert_eq!(table_size(10, DEFAULT_MAX_SIZE), 20161);
        assert_eq!(table_size(24, DEFAULT_MAX_SIZE), 49277);
        assert_eq!(table_size(25, DEFAULT_MAX_SIZE), 65537);
        assert_eq!(table_size(32, DEFAULT_MAX_SIZE), 65537);
        assert_eq!(table_size(5000, DEFAULT_MAX_SIZE), 65537, "capped");
        assert_eq!(table_size(5000, 1_000_000), 897133);
        assert_eq!(table_size(5000, 50), 101, "never below the smallest");
        assert_eq!(table_size(3, 4000), 3347, "capped below the ask");
    }

    /// Pinned: a table built today is the table every other node and every later build
    /// builds (flows keep their backend across an upgrade, and across nodes).
    #[test]
    fn the_table_is_pinned() {
        let t = Maglev::new(&keys(0..3), DEFAULT_MAX_SIZE).unwrap().unwrap();
        assert_eq!(t.len(), 6577);
        let head: Vec<u16> = slots(&t)[..16].to_vec();
        assert_eq!(head, PINNED_HEAD, "the Maglev hash or fill changed");
        assert_eq!(hash(0, b"xroute"), PINNED_HASH);
    }
    const PINNED_HEAD: [u16; 16] = [0, 2, 1, 1, 2, 2, 2, 0, 0, 1, 0, 0, 0, 2, 2, 1];
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
        (0..a.len())
            .map(|i| (ka[a.backend_at(i)].clone(), kb[b.backend_at(i)].clone()))
            .filter(|(x, y)| x != y)
            .collect()
    }

    /// The share of their own slots the other backends lose when `gone` of `keys` is
    /// removed, if the table keeps its size.
    fn removal_moves(keys: &[Vec<u8>], gone: usize) -> Option<f64> {
        let m = DEFAULT_MAX_SIZE;
        let mut after = keys.to_vec();
        let removed = after.remove(gone);
        // Same table size, so slots compare one to one.
        if table_size(keys.len(), m) != table_size(after.len(), m) {
            return None;
        }
        let a = Maglev::new(keys, m).unwrap().unwrap();
        let b = Maglev::new(&after, m).unwrap().unwrap();
        let others = moved(&a, keys, &b, &after)
            .iter()
            .filter(|(from, _)| *from != removed)
            .count();
        let theirs = (0..a.len())
            .filter(|&i| keys[a.backend_at(i)] != removed)
            .count();
        Some(others as f64 / theirs as f64)
    }

    /// The share of the table that moves beyond the newcomer's own share when a backend
    /// joins `keys`, if the table keeps its size.
    fn addition_excess(keys: &[Vec<u8>], new: Vec<u8>) -> Option<f64> {
        let m = DEFAULT_MAX_SIZE;
        let mut after = keys.to_vec();
        after.push(new);
        if table_size(keys.len(), m) != table_size(after.len(), m) {
            return None;
        }
        let a = Maglev::new(keys, m).unwrap().unwrap();
        let b = Maglev::new(&after, m).unwrap().unwrap();
        let moved = moved(&a, keys, &b, &after).len() as f64 / a.len() as f64;
        Some(moved - 1.0 / after.len() as f64)
    }

    /// The bound, over every N from 2 to 59 and every backend removed (and every
    /// N + 1st added): the others lose at most 1 % of their own slots, and a newcomer
    /// takes at most its share and 1 % of the table. Measured: 0.49 % on average, 0.86 %
    /// at worst; 0.61 % beyond the share (see the module's docs).
    #[test]
    fn every_removal_and_addition_below_sixty_moves_at_most_one_percent_more() {
        let (mut worst, mut sum, mut count) = (0f64, 0f64, 0usize);
        let mut worst_add = f64::MIN;
        for n in 2..60u32 {
            let k = keys(0..n);
            for gone in 0..n as usize {
                if let Some(f) = removal_moves(&k, gone) {
                    assert!(
                        f <= 0.01,
                        "N = {n}, backend {gone} removed: {:.3} % moved",
                        f * 100.0
                    );
                    worst = worst.max(f);
                    sum += f;
                    count += 1;
                }
            }
            if let Some(f) = addition_excess(&k, keys([n]).remove(0)) {
                assert!(
                    f <= 0.01,
                    "N = {n}, one added: {:.3} % beyond its share",
                    f * 100.0
                );
                worst_add = worst_add.max(f);
            }
        }
        assert!(count > 1000, "only {count} removals kept the size");
        eprintln!(
            "removals: {count}, mean {:.3} %, worst {:.3} %; additions: worst excess {:.3} %",
            100.0 * sum / count as f64,
            100.0 * worst,
            100.0 * worst_add
        );
    }

    /// A backend's key: an IPv4 or IPv6 address and a port, as the service model writes.
    fn random_key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| [&a[..], &p.to_be_bytes()].concat()),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(a, p)| [&a[..], &p.to_be_bytes()].concat()),
        ]
    }

    /// The reference: the paper's population loop, probing to the last slot.
    fn probed(backends: &[Vec<u8>], max_size: u32) -> Vec<u16> {
        let index = size_index(backends.len(), max_size);
        let (m, sigma) = (SIZES[index], &sigma(index).fwd);
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by(|&a, &b| backends[a].cmp(&backends[b]));
        let mut at = vec![0u32; order.len()];
        let mut slots = vec![None; m as usize];
        let mut left = m;
        while left > 0 {
            for (turn, &b) in order.iter().enumerate() {
                if left == 0 {
                    break;
                }
                let (offset, skip) = preference(&backends[b], m);
                loop {
                    let slot = ((u64::from(sigma[at[turn] as usize]) + u64::from(offset))
                        % u64::from(m)) as usize;
                    at[turn] = ((u64::from(at[turn]) + u64::from(skip)) % u64::from(m)) as u32;
                    if slots[slot].is_none() {
                        slots[slot] = Some(b as u16);
                        left -= 1;
                        break;
                    }
                }
            }
        }
        slots.into_iter().map(Option::unwrap).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The build (probing, then ranking the last free slots) fills every slot as
        /// the paper's population loop probing to the last slot does over the same
        /// preference lists, for any set and table size, more backends than the ranked
        /// tail included.
        #[test]
        fn the_build_is_the_papers_population(
            set in proptest::collection::btree_set(random_key(), 1..300),
            cap in prop::sample::select(vec![101u32, 211, 1069, 4201, 12889, 65537]),
        ) {
            let k: Vec<Vec<u8>> = set.into_iter().collect();
            if k.len() <= table_size(k.len(), cap) as usize {
                let t = Maglev::new(&k, cap).unwrap().unwrap();
                prop_assert_eq!(slots(&t), probed(&k, cap));
            }
        }

        /// Against the reference: every slot holds a backend, each backend holds its
        /// share give or take one round, and the order the set came in does not matter.
        #[test]
        fn full_fair_and_independent_of_order(n in 1usize..40, rot in 0usize..40) {
            let k = keys(0..n as u32);
            let t = Maglev::new(&k, DEFAULT_MAX_SIZE).unwrap().unwrap();
            prop_assert_eq!(t.len() as u32, table_size(n, DEFAULT_MAX_SIZE));
            let mut count = vec![0usize; n];
            for s in slots(&t) {
                prop_assert!(usize::from(s) < n);
                count[usize::from(s)] += 1;
            }
            let (lo, hi) = (t.len() / n, t.len().div_ceil(n));
            prop_assert!(count.iter().all(|&c| c >= lo && c <= hi), "{:?}", count);
            let mut r = k.clone();
            r.rotate_left(rot % n);
            let u = Maglev::new(&r, DEFAULT_MAX_SIZE).unwrap().unwrap();
            let same: Vec<&[u8]> = slots(&t).iter().map(|&s| &k[usize::from(s)][..]).collect();
            let other: Vec<&[u8]> = slots(&u).iter().map(|&s| &r[usize::from(s)][..]).collect();
            prop_assert_eq!(same, other);
        }

        /// The same bounds for any addresses: removing one of N moves only its own
        /// slots and at most 1 % of the table more; adding one, its share and 1 % more.
        #[test]
        fn any_backend_set_moves_at_most_one_percent_more(
            set in proptest::collection::btree_set(random_key(), 2..48),
            gone in any::<prop::sample::Index>(),
        ) {
            let k: Vec<Vec<u8>> = set.into_iter().collect();
            let gone = gone.index(k.len());
            if let Some(f) = removal_moves(&k, gone) {
                prop_assert!(f <= 0.01, "{:.3} % of the others moved", f * 100.0);
            }
            let (last, rest) = k.split_last().unwrap();
            if let Some(f) = addition_excess(rest, last.clone()) {
                prop_assert!(f <= 0.01, "{:.3} % beyond the newcomer's share", f * 100.0);
            }
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
        assert_eq!(t.pick(0), t.backend_at(0));
        assert_eq!(t.pick(u64::MAX), t.backend_at(t.len() - 1));
    }
}
