//! The immutable lookup structure: a Poptrie (Asai & Ohara, SIGCOMM 2015) with direct
//! pointing.
//!
//! The top `DIRECT_BITS` of an address (18 for IPv4, 16 for IPv6) index `direct`, whose
//! entry is either a leaf (the answer) or the index of a 64-ary node. A node resolves six
//! more bits with two bitmaps instead of 64 pointers: bit `v` of `vector` says slot `v`
//! is an internal child, and the child is `nodes[base1 + popcnt(vector & mask(v)) - 1]`;
//! otherwise the answer is `leaves[base0 + popcnt(leafvec & mask(v)) - 1]`, where
//! `leafvec` marks where a run of equal leaves begins (leaf compression). A node is 24
//! bytes and a leaf 2, so a full IPv4 table fits in a few MiB, most of it in cache.
//!
//! Why this shape: with random destinations the cost of a lookup is its cache misses.
//! DIR-24-8 spends one miss into a 64 MiB array per lookup; here the 1 MiB direct array
//! and the upper nodes stay cached, and [`Lpm::lookup_batch`] walks a batch one level at
//! a time so that the independent loads of different addresses overlap (VPP's
//! `ip4_lookup_inline` does the same with explicit prefetches; this crate has no
//! `unsafe`, and the level-synchronous loop gives the CPU the same independent loads).

use crate::prefix::Address;
use std::num::NonZeroU16;

/// What a route maps to: a next-hop group id, 0 to 65534.
///
/// Stored as the id plus one, so that `Option<NextHop>` is two bytes and a leaf of the
/// trie is an `Option<NextHop>` as is: the lookup hands it back without decoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop(NonZeroU16);

impl NextHop {
    /// The largest id a route can carry.
    pub const MAX: u16 = u16::MAX - 1;

    /// The id `id`, or `None` when it is past [`NextHop::MAX`].
    #[inline]
    pub const fn new(id: u16) -> Option<NextHop> {
        match NonZeroU16::new(id.wrapping_add(1)) {
            Some(v) => Some(NextHop(v)),
            None => None,
        }
    }

    /// The id.
    #[inline]
    pub const fn id(self) -> u16 {
        self.0.get() - 1
    }

    /// The id as an index into a next-hop group array.
    #[inline]
    pub const fn index(self) -> usize {
        self.id() as usize
    }

    #[inline]
    pub(crate) fn raw(v: Option<NextHop>) -> u16 {
        v.map_or(0, |n| n.0.get())
    }

    #[inline]
    pub(crate) fn from_raw(raw: u16) -> Option<NextHop> {
        NonZeroU16::new(raw).map(NextHop)
    }
}

impl std::fmt::Debug for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NextHop({})", self.id())
    }
}

/// A direct-pointing entry with this bit set is a leaf; its low 16 bits are the raw leaf.
pub(crate) const DIRECT_LEAF: u32 = 1 << 31;

/// One 64-ary trie node.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    /// Bit `v` set: slot `v` is an internal child.
    pub vector: u64,
    /// Bit `v` set: a run of equal leaves starts at slot `v` (internal slots never set it).
    pub leafvec: u64,
    /// First leaf of this node in `leaves`.
    pub base0: u32,
    /// First child of this node in `nodes`.
    pub base1: u32,
}

/// Mask of the bits at and below `v`.
#[inline(always)]
fn upto(v: usize) -> u64 {
    u64::MAX >> (63 - v)
}

impl Node {
    /// Follows slot `v`: `Ok(child node index)` or `Err(leaf index)`.
    #[inline(always)]
    fn step(&self, v: usize) -> Result<usize, usize> {
        if self.vector & (1u64 << v) != 0 {
            Ok(self.base1 as usize + (self.vector & upto(v)).count_ones() as usize - 1)
        } else {
            Err(self.base0 as usize + (self.leafvec & upto(v)).count_ones() as usize - 1)
        }
    }
}

/// An immutable longest-prefix-match table over addresses of type `A`, built and updated
/// by [`crate::LpmBuilder`]. Lookups never lock or allocate; many threads share one table.
#[derive(Clone, Debug)]
pub struct Lpm<A> {
    pub(crate) direct: Vec<u32>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) leaves: Vec<Option<NextHop>>,
    pub(crate) routes: usize,
    pub(crate) _family: std::marker::PhantomData<fn() -> A>,
}

/// An IPv4 table.
pub type Lpm4 = Lpm<u32>;
/// An IPv6 table.
pub type Lpm6 = Lpm<u128>;

/// How many addresses [`Lpm::lookup_batch`] walks together: enough independent loads in
/// flight to cover a cache miss, few enough that the per-batch state stays in L1.
pub const BATCH: usize = 64;

impl<A: Address> Lpm<A> {
    /// An empty table: every lookup misses.
    pub fn empty() -> Self {
        Lpm {
            direct: vec![DIRECT_LEAF; 1 << A::DIRECT_BITS],
            nodes: Vec::new(),
            leaves: Vec::new(),
            routes: 0,
            _family: std::marker::PhantomData,
        }
    }

    /// The number of routes the table was built from.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// Whether the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// Bytes of lookup structure (direct array, nodes, leaves), including slack.
    pub fn memory_bytes(&self) -> usize {
        self.direct.capacity() * std::mem::size_of::<u32>()
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.leaves.capacity() * std::mem::size_of::<Option<NextHop>>()
    }

    /// Trie nodes and leaves in use (for reports).
    pub fn node_count(&self) -> (usize, usize) {
        (self.nodes.len(), self.leaves.len())
    }

    /// The next hop of the longest prefix that contains `addr`.
    #[inline]
    pub fn lookup(&self, addr: A) -> Option<NextHop> {
        let d = self.direct[addr.slot()];
        if d & DIRECT_LEAF != 0 {
            return NextHop::from_raw(d as u16);
        }
        let mut node = self.nodes[d as usize];
        let mut depth = A::DIRECT_BITS;
        loop {
            match node.step(addr.chunk(depth)) {
                Ok(child) => {
                    node = self.nodes[child];
                    depth += 6;
                }
                Err(leaf) => return self.leaves[leaf],
            }
        }
    }

    /// Looks up every address of `addrs` into the same position of `out` (as far as the
    /// shorter of the two goes).
    ///
    /// Walks [`BATCH`] addresses at a time, level by level: all direct-array loads first,
    /// then one node step for every address still inside the trie, and so on, so that a
    /// batch has up to [`BATCH`] independent memory loads in flight at every level.
    pub fn lookup_batch(&self, addrs: &[A], out: &mut [Option<NextHop>]) {
        debug_assert!(
            out.len() >= addrs.len(),
            "lookup_batch: out is shorter than addrs"
        );
        for (a, o) in addrs.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            self.lookup_chunk(a, o);
        }
    }

    #[inline]
    fn lookup_chunk(&self, addrs: &[A], out: &mut [Option<NextHop>]) {
        // Addresses still inside the trie: (index into `addrs`, node index).
        let mut pending = [(0u8, 0u32); BATCH];
        let mut n = 0;
        for (i, (&a, o)) in addrs.iter().zip(out.iter_mut()).enumerate() {
            let d = self.direct[a.slot()];
            if d & DIRECT_LEAF != 0 {
                *o = NextHop::from_raw(d as u16);
            } else {
                pending[n] = (i as u8, d);
                n += 1;
            }
        }
        let mut depth = A::DIRECT_BITS;
        while n > 0 {
            let mut still = 0;
            for j in 0..n {
                let (i, node) = pending[j];
                match self.nodes[node as usize].step(addrs[i as usize].chunk(depth)) {
                    Ok(child) => {
                        pending[still] = (i, child as u32);
                        still += 1;
                    }
                    Err(leaf) => out[i as usize] = self.leaves[leaf],
                }
            }
            n = still;
            depth += 6;
        }
    }
}
