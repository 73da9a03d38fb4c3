//! The immutable lookup structure: a Poptrie (Asai & Ohara, SIGCOMM 2015) whose top
//! level is an array of nodes.
//!
//! The top `DIRECT_BITS` of an address (18 for IPv4, 16 for IPv6) index `top`, an array
//! of 64-ary nodes; each resolves six more bits with two bitmaps instead of 64 pointers:
//! bit `v` of `vector` says slot `v` is an internal child, and the child is
//! `nodes[base1 + popcnt(vector & mask(v)) - 1]`; otherwise the answer is leaf
//! `popcnt(leafvec & mask(v)) - 1` of the node, where `leafvec` marks where a run of
//! equal leaves begins (leaf compression). A node with few runs keeps its leaves inline
//! (see [`Node`]); others keep them in `leaves` from `base0`. A node is 24 bytes and a
//! leaf 2; a full IPv4 table takes about 10 MiB against DIR-24-8's 64+ MiB.
//!
//! Why this shape: with random destinations a lookup costs its dependent cache misses.
//! The Poptrie paper points from a 4-byte direct array into the nodes; on a full table
//! nearly every /18 has routes below it, so that is a miss into the direct array, one
//! into the nodes and one into the leaves, each waiting for the one before. Storing the
//! top nodes themselves in the array (8 MiB for IPv4) and short leaf runs inside the
//! nodes makes the usual lookup one miss into a cache-sized array, with no branch on
//! what the direct entry is: a slot with no longer route is a node with one inline leaf.

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

/// One 64-ary trie node: 32 bytes, two to a cache line, never straddling one.
///
/// A node with few runs of leaves keeps them inline, which takes the dependent load of
/// `leaves` off the lookup. The 16 bytes after the bitmaps hold leaves 0..8 at 16 bits
/// each when the node has no child; a node with children keeps `base1` for them, and
/// leaves 0..6 in the 12 bytes after it. Whether a node is inline follows from its
/// bitmaps alone ([`Node::inline_offset`]), so builder and lookups agree without a tag.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C, align(32))]
pub(crate) struct Node {
    /// Bit `v` set: slot `v` is an internal child.
    pub vector: u64,
    /// Bit `v` set: a run of equal leaves starts at slot `v` (internal slots never set it).
    pub leafvec: u64,
    /// First child of this node in `nodes` (or inline leaves 0, 1 of a childless node).
    pub base1: u32,
    /// First leaf of this node in `leaves` (or inline leaves).
    pub base0: u32,
    /// Inline leaves.
    pub more: u64,
}

/// Leaves (16 bits each) that fit in a node: 128 bits after the bitmaps.
const INLINE_SLOTS: u32 = 8;

/// Mask of the bits at and below `v`.
#[inline(always)]
fn upto(v: usize) -> u64 {
    u64::MAX >> (63 - v)
}

/// Where a node sends an address.
pub(crate) enum Step {
    /// To node `.0`, which resolves the bits from depth `.1` on.
    Child(usize, u8),
    Leaf(usize),
    Answer(Option<NextHop>),
}

/// Most chunks a skip node passes over: 60 bits, so that they fit a `u64`.
pub(crate) const MAX_SKIP_CHUNKS: u8 = 10;

impl Node {
    /// A node whose every slot answers `v`.
    pub fn leaf(v: Option<NextHop>) -> Node {
        Node {
            leafvec: 1,
            base1: u32::from(NextHop::raw(v)),
            ..Node::default()
        }
    }

    /// A node that passes over `chunks` six-bit chunks (2 to [`MAX_SKIP_CHUNKS`]): an
    /// address whose bits there equal `expect` goes on to node `target`, which resolves
    /// from `chunks` levels deeper; any other address answers `outside`.
    ///
    /// Path compression: below the point where routes diverge, an IPv6 /48 would
    /// otherwise hang at the end of a chain of nodes with one child each. A skip node
    /// has `vector == 0 && leafvec == 0`, which no other node has (a node without
    /// children has at least one run of leaves).
    pub fn skip(chunks: u8, expect: u64, target: u32, outside: Option<NextHop>) -> Node {
        Node {
            vector: 0,
            leafvec: 0,
            base1: target,
            base0: u32::from(NextHop::raw(outside)) | (u32::from(chunks) << 16),
            more: expect,
        }
    }

    /// Whether this is a skip node (see [`Node::skip`]).
    #[inline(always)]
    pub fn is_skip(&self) -> bool {
        self.vector == 0 && self.leafvec == 0
    }

    /// Whether every slot answers the same (no child, one run).
    pub fn is_leaf(&self) -> bool {
        self.vector == 0 && self.leafvec == 1
    }

    /// Where inline leaves start, in 16-bit units after the bitmaps (`base1` is taken
    /// when the node has children), or `None` when the leaves are in `leaves`.
    #[inline(always)]
    pub fn inline_offset(&self) -> Option<u32> {
        let off = if self.vector == 0 { 0 } else { 2 };
        (self.leafvec.count_ones() + off <= INLINE_SLOTS).then_some(off)
    }

    /// The 128 bits after the bitmaps.
    #[inline(always)]
    pub fn inline_bits(&self) -> u128 {
        u128::from(self.base1) | (u128::from(self.base0) << 32) | (u128::from(self.more) << 64)
    }

    /// Stores `leaves` inline from `offset` (see [`Node::inline_offset`]).
    pub fn set_inline(&mut self, offset: u32, leaves: &[Option<NextHop>]) {
        let mut bits = self.inline_bits() & ((1u128 << (16 * offset)) - 1);
        for (k, &v) in leaves.iter().enumerate() {
            bits |= u128::from(NextHop::raw(v)) << (16 * (offset as usize + k));
        }
        self.base1 = bits as u32;
        self.base0 = (bits >> 32) as u32;
        self.more = (bits >> 64) as u64;
    }

    /// Follows `addr` from this node, which resolves its bits from `depth` on.
    #[inline(always)]
    fn step<A: Address>(&self, addr: A, depth: u8) -> Step {
        let v = addr.chunk(depth);
        let m = upto(v);
        if self.vector & (1u64 << v) != 0 {
            let child = self.base1 as usize + (self.vector & m).count_ones() as usize - 1;
            return Step::Child(child, depth + 6);
        }
        if self.leafvec == 0 {
            // A skip node (`vector` is zero too).
            let chunks = (self.base0 >> 16) as u8;
            return if addr.bits(depth, 6 * chunks) == self.more {
                Step::Child(self.base1 as usize, depth + 6 * chunks)
            } else {
                Step::Answer(NextHop::from_raw(self.base0 as u16))
            };
        }
        let k = (self.leafvec & m).count_ones() - 1;
        match self.inline_offset() {
            Some(off) => {
                let at = 16 * ((k + off) & (INLINE_SLOTS - 1));
                Step::Answer(NextHop::from_raw((self.inline_bits() >> at) as u16))
            }
            None => Step::Leaf(self.base0 as usize + k as usize),
        }
    }
}

/// An immutable longest-prefix-match table over addresses of type `A`, built and updated
/// by [`crate::LpmBuilder`]. Lookups never lock or allocate; many threads share one table.
#[derive(Clone, Debug)]
pub struct Lpm<A> {
    pub(crate) top: Vec<Node>,
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
            top: vec![Node::leaf(None); 1 << A::DIRECT_BITS],
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

    /// Bytes of lookup structure (top array, nodes, leaves), including slack.
    pub fn memory_bytes(&self) -> usize {
        self.top.capacity() * std::mem::size_of::<Node>()
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
        self.walk(self.top[addr.slot()], addr, A::DIRECT_BITS)
    }

    /// Walks from `node`, which resolves the bits of `addr` from `depth` on.
    #[inline(always)]
    fn walk(&self, mut node: Node, addr: A, mut depth: u8) -> Option<NextHop> {
        loop {
            match node.step(addr, depth) {
                Step::Answer(v) => return v,
                Step::Leaf(leaf) => return self.leaves[leaf],
                Step::Child(child, deeper) => {
                    node = self.nodes[child];
                    depth = deeper;
                }
            }
        }
    }

    /// Looks up every address of `addrs` into the same position of `out` (as far as the
    /// shorter of the two goes).
    ///
    /// Takes [`BATCH`] addresses at a time, one trie level at a time. Each level first
    /// gathers the node of every address still walking into a local array: a few
    /// instructions per address, so the out-of-order window holds the misses of dozens
    /// of addresses at once (what VPP gets from explicit prefetches; this crate has no
    /// `unsafe`). Then it resolves each address from that copy, in L1, where a
    /// mispredicted branch costs a few cycles instead of a memory round trip. Most
    /// answers are at the top level; the few addresses that go deeper are walked
    /// afterwards, again a level at a time.
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
        let mut nodes = [Node::default(); BATCH];
        for (nd, &a) in nodes.iter_mut().zip(addrs) {
            *nd = self.top[a.slot()];
        }
        let mut deeper = [Deeper::default(); BATCH];
        let mut down = 0;
        for (i, ((o, &a), nd)) in out.iter_mut().zip(addrs).zip(&nodes).enumerate() {
            *o = match nd.step(a, A::DIRECT_BITS) {
                Step::Answer(v) => v,
                Step::Leaf(l) => self.leaves[l],
                Step::Child(node, depth) => {
                    deeper[down] = Deeper {
                        addr: i as u8,
                        depth,
                        node: node as u32,
                    };
                    down += 1;
                    None
                }
            };
        }
        if down > 0 {
            self.walk_deeper(addrs, out, &mut deeper, down);
        }
    }

    /// The rest of [`Lpm::lookup_chunk`] for the addresses that go below the top
    /// level (`deeper[..down]`). Walks them a level at a time, each level gathering all
    /// their nodes before resolving any.
    #[inline(never)]
    fn walk_deeper(
        &self,
        addrs: &[A],
        out: &mut [Option<NextHop>],
        deeper: &mut [Deeper; BATCH],
        mut down: usize,
    ) {
        let mut nodes = [Node::default(); BATCH];
        let mut walking = [Deeper::default(); BATCH];
        while down > 0 {
            for ((w, nd), d) in walking.iter_mut().zip(&mut nodes).zip(&deeper[..down]) {
                *w = *d;
                *nd = self.nodes[d.node as usize];
            }
            let live = down;
            down = 0;
            for (w, nd) in walking[..live].iter().zip(&nodes) {
                let i = usize::from(w.addr);
                match nd.step(addrs[i], w.depth) {
                    Step::Answer(v) => out[i] = v,
                    Step::Leaf(l) => out[i] = self.leaves[l],
                    Step::Child(node, depth) => {
                        deeper[down] = Deeper {
                            addr: w.addr,
                            depth,
                            node: node as u32,
                        };
                        down += 1;
                    }
                }
            }
        }
    }
}

/// An address of a batch on its way below the top level.
#[derive(Clone, Copy, Default)]
struct Deeper {
    /// Its index in the batch.
    addr: u8,
    /// The depth `node` resolves from.
    depth: u8,
    node: u32,
}
