//! Building and updating tables.
//!
//! [`LpmBuilder`] owns the routes (the source of truth: short ones in an ordered map,
//! longer ones in sorted per-slot vectors) and the latest
//! [`Lpm`]. An update never touches a published table: [`LpmBuilder::apply`] copies the
//! latest one, rebuilds only the regions the changes touched, and publishes the copy as
//! the next generation, so lookups on the current table go on undisturbed.
//!
//! A *region* is the part of the table one change can affect: a prefix of length
//! `DIRECT_BITS` or shorter repaints the direct-pointing slots it covers and rebuilds the
//! subtries below them; a longer prefix rebuilds the one subtrie below its slot. Regions
//! are aligned prefixes, so two of them either nest or are disjoint, and a batch rebuilds
//! only the outermost ones. Inside a region routes are visited in prefix order (address,
//! then length), in which every prefix comes after the prefixes that contain it: painting
//! in that order leaves each slot with its longest match, in one pass.
//!
//! Freed node and leaf blocks go to free lists by size (a block is at most 64 entries),
//! and the next build takes blocks of the same size from there, so a table that is
//! updated for days does not grow without bound.

use crate::prefix::{Address, Prefix};
use crate::table::{Lpm, NextHop, Node, MAX_SKIP_CHUNKS};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A route longer than `DIRECT_BITS`: address, length, next hop.
type LongRoute<A> = (A, u8, NextHop);

/// One change in a batch given to [`LpmBuilder::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange<A: Address> {
    /// Add a route, or replace the next hop of an existing one.
    Insert(Prefix<A>, NextHop),
    /// Remove a route; removing an absent route changes nothing.
    Remove(Prefix<A>),
}

/// The routes of one address family, and the latest table built from them.
#[derive(Debug)]
pub struct LpmBuilder<A: Address> {
    /// Routes of `DIRECT_BITS` or fewer bits.
    short: BTreeMap<Prefix<A>, NextHop>,
    /// Longer routes by direct slot, each slot's in prefix order: an update is a binary
    /// search in one slot's few routes, and a slot's rebuild reads them as they are.
    /// Slots without routes cost a null pointer (and no page until one is written).
    #[allow(clippy::box_collection)] // 8 bytes a slot, all zero when empty: see above
    long: Vec<Option<Box<Vec<LongRoute<A>>>>>,
    /// Routes in `long`.
    long_count: usize,
    /// Routes per prefix length: lets a covering-route search skip absent lengths.
    per_len: Vec<u32>,
    /// Per direct slot: the longest match among routes of length `DIRECT_BITS` or less.
    short_best: Vec<Option<NextHop>>,
    free: FreeBlocks,
    current: Arc<Lpm<A>>,
    /// Regions of the changes staged since the last table.
    regions: Vec<(Prefix<A>, bool)>,
}

/// A subtrie as built: either a node, or (when every address under it has the same
/// answer) just that answer, which the parent stores as a leaf.
enum Built {
    Leaf(Option<NextHop>),
    Node(Node),
}

#[derive(Debug, Default)]
struct FreeBlocks {
    /// `nodes[n]`: start indices of free blocks of `n` nodes.
    nodes: Vec<Vec<u32>>,
    leaves: Vec<Vec<u32>>,
}

impl FreeBlocks {
    fn new() -> Self {
        FreeBlocks {
            nodes: vec![Vec::new(); 65],
            leaves: vec![Vec::new(); 65],
        }
    }

    fn take<T: Copy>(lists: &mut [Vec<u32>], store: &mut Vec<T>, n: usize, fill: T) -> u32 {
        if n == 0 {
            return 0;
        }
        if let Some(i) = lists[n].pop() {
            return i;
        }
        let i = store.len();
        store.resize(i + n, fill);
        u32::try_from(i).expect("trie arrays stay below 2^32 entries")
    }
}

impl<A: Address> Default for LpmBuilder<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Address> LpmBuilder<A> {
    /// No routes; the table misses every address.
    pub fn new() -> Self {
        LpmBuilder {
            short: BTreeMap::new(),
            long: vec![None; 1 << A::DIRECT_BITS],
            long_count: 0,
            per_len: vec![0; usize::from(A::BITS) + 1],
            short_best: vec![None; 1 << A::DIRECT_BITS],
            free: FreeBlocks::new(),
            current: Arc::new(Lpm::empty()),
            regions: Vec::new(),
        }
    }

    /// Builds a table from `routes`; where a prefix appears twice, the later one wins.
    pub fn from_routes(routes: impl IntoIterator<Item = (Prefix<A>, NextHop)>) -> Self {
        let mut b = Self::new();
        for (p, v) in routes {
            b.set(p, Some(v));
        }
        let mut table = Lpm::empty();
        b.rebuild(&mut table, Prefix::new_masked(A::ZERO, 0), true);
        table.routes = b.len();
        table.nodes.shrink_to_fit();
        table.leaves.shrink_to_fit();
        b.current = Arc::new(table);
        b
    }

    /// The latest table.
    pub fn table(&self) -> Arc<Lpm<A>> {
        Arc::clone(&self.current)
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.short.len() + self.long_count
    }

    /// Whether there is no route.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot_routes(&self, slot: usize) -> &[LongRoute<A>] {
        self.long[slot].as_deref().map_or(&[], |v| v.as_slice())
    }

    /// The next hop of exactly `prefix`, if it is a route.
    pub fn get(&self, prefix: &Prefix<A>) -> Option<NextHop> {
        if prefix.len() <= A::DIRECT_BITS {
            return self.short.get(prefix).copied();
        }
        let v = self.slot_routes(prefix.addr().slot());
        v.binary_search_by(|r| (r.0, r.1).cmp(&(prefix.addr(), prefix.len())))
            .ok()
            .map(|i| v[i].2)
    }

    /// The routes in prefix order.
    pub fn routes(&self) -> impl Iterator<Item = (Prefix<A>, NextHop)> + '_ {
        let mut all: Vec<(Prefix<A>, NextHop)> = self.short.iter().map(|(p, v)| (*p, *v)).collect();
        all.extend(
            self.long
                .iter()
                .flatten()
                .flat_map(|v| v.iter().map(|&(a, l, nh)| (Prefix::new_masked(a, l), nh))),
        );
        all.sort_unstable_by_key(|r| r.0);
        all.into_iter()
    }

    /// Sets or removes the route for `prefix` in the route store; returns the old one.
    fn set(&mut self, prefix: Prefix<A>, next_hop: Option<NextHop>) -> Option<NextHop> {
        let old = if prefix.len() <= A::DIRECT_BITS {
            match next_hop {
                Some(v) => self.short.insert(prefix, v),
                None => self.short.remove(&prefix),
            }
        } else {
            let key = (prefix.addr(), prefix.len());
            let cell = &mut self.long[prefix.addr().slot()];
            let v = cell.get_or_insert_with(Box::default);
            let old = match (v.binary_search_by(|r| (r.0, r.1).cmp(&key)), next_hop) {
                (Ok(i), Some(nh)) => Some(std::mem::replace(&mut v[i].2, nh)),
                (Ok(i), None) => Some(v.remove(i).2),
                (Err(i), Some(nh)) => {
                    v.insert(i, (key.0, key.1, nh));
                    None
                }
                (Err(_), None) => None,
            };
            if v.is_empty() {
                *cell = None;
            }
            match (old.is_some(), next_hop.is_some()) {
                (false, true) => self.long_count += 1,
                (true, false) => self.long_count -= 1,
                _ => {}
            }
            old
        };
        match (old.is_some(), next_hop.is_some()) {
            (false, true) => self.per_len[usize::from(prefix.len())] += 1,
            (true, false) => self.per_len[usize::from(prefix.len())] -= 1,
            _ => {}
        }
        old
    }

    /// Applies a batch of changes in order and returns the table that holds them all.
    /// The previous table is left as it was for whoever still reads it. A batch that
    /// changes nothing returns the current table.
    pub fn apply(&mut self, changes: &[RouteChange<A>]) -> Arc<Lpm<A>> {
        for change in changes {
            match *change {
                RouteChange::Insert(p, v) => self.stage(p, Some(v)),
                RouteChange::Remove(p) => self.stage(p, None),
            };
        }
        self.commit()
    }

    /// Sets the route for `prefix` (`None`: removes it) without building a table yet;
    /// returns the route it had. [`LpmBuilder::commit`] builds the table that holds
    /// every change staged since the last one; [`LpmBuilder::get`] already sees them.
    pub fn stage(&mut self, prefix: Prefix<A>, next_hop: Option<NextHop>) -> Option<NextHop> {
        let old = self.set(prefix, next_hop);
        if old != next_hop {
            self.regions.push(region_of(prefix));
        }
        old
    }

    /// Builds and returns the table holding every staged change (the current one if
    /// they changed nothing).
    pub fn commit(&mut self) -> Arc<Lpm<A>> {
        let mut regions = std::mem::take(&mut self.regions);
        if regions.is_empty() {
            return self.table();
        }
        // Outermost regions first; for the same prefix the short-route kind (which also
        // repaints the direct slots) sorts first and absorbs the subtrie-only kind.
        regions.sort_unstable_by_key(|&(p, short)| (p, !short));
        let mut next = Lpm {
            top: self.current.top.clone(),
            nodes: with_headroom(&self.current.nodes),
            leaves: with_headroom(&self.current.leaves),
            routes: 0,
            _family: std::marker::PhantomData,
        };
        let mut outer: Option<(Prefix<A>, bool)> = None;
        for &region in &regions {
            match outer {
                Some((o, _)) if o.covers(&region.0) => {}
                _ => {
                    if let Some((o, short)) = outer {
                        self.rebuild(&mut next, o, short);
                    }
                    outer = Some(region);
                }
            }
        }
        if let Some((o, short)) = outer {
            self.rebuild(&mut next, o, short);
        }
        next.routes = self.len();
        self.current = Arc::new(next);
        regions.clear();
        if regions.capacity() <= 4096 {
            self.regions = regions;
        }
        self.table()
    }

    /// Rebuilds `region` of `table` from the routes. `short`: the region is a changed
    /// prefix of `DIRECT_BITS` or fewer bits, so its slots' short-route answers are
    /// repainted; otherwise it is one slot whose subtrie alone changed.
    fn rebuild(&mut self, table: &mut Lpm<A>, region: Prefix<A>, short: bool) {
        let first = region.addr().slot();
        let last = region.last().slot();
        if short {
            let outside = self.covering(region);
            self.short_best[first..=last].fill(outside);
            // In prefix order, each slot ends with its longest short match.
            let from = Prefix::bound(region.addr(), 0);
            let to = Prefix::bound(region.last(), A::BITS);
            for (p, &v) in self.short.range(from..=to) {
                if p.len() >= region.len() {
                    self.short_best[p.addr().slot()..=p.last().slot()].fill(Some(v));
                }
            }
        }
        let LpmBuilder {
            long,
            short_best,
            free,
            ..
        } = self;
        for slot in first..=last {
            let built = match long[slot].as_deref() {
                Some(routes) if !routes.is_empty() => {
                    build_node(table, free, A::DIRECT_BITS, short_best[slot], routes)
                }
                _ => Built::Leaf(short_best[slot]),
            };
            set_slot(table, free, slot, built);
        }
    }

    /// The longest route strictly shorter than `region` that contains it.
    fn covering(&self, region: Prefix<A>) -> Option<NextHop> {
        (0..region.len())
            .rev()
            .filter(|&len| self.per_len[usize::from(len)] != 0)
            .find_map(|len| self.short.get(&Prefix::new_masked(region.addr(), len)))
            .copied()
    }
}

fn region_of<A: Address>(p: Prefix<A>) -> (Prefix<A>, bool) {
    if p.len() <= A::DIRECT_BITS {
        (p, true)
    } else {
        (Prefix::new_masked(p.addr(), A::DIRECT_BITS), false)
    }
}

fn with_headroom<T: Clone>(v: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len() + v.len() / 32 + 64);
    out.extend_from_slice(v);
    out
}

/// Replaces top slot `slot` with `built`, freeing the subtrie that was there.
fn set_slot<A: Address>(table: &mut Lpm<A>, free: &mut FreeBlocks, slot: usize, built: Built) {
    let old = table.top[slot];
    if !old.is_leaf() {
        free_below(table, free, old);
    }
    table.top[slot] = match built {
        Built::Leaf(v) => Node::leaf(v),
        Built::Node(node) => node,
    };
}

/// Returns the blocks below `node` (its children and leaves, recursively) to the free lists.
fn free_below<A: Address>(table: &Lpm<A>, free: &mut FreeBlocks, node: Node) {
    if node.is_skip() {
        free_below(table, free, table.nodes[node.base1 as usize]);
        free.nodes[1].push(node.base1);
        return;
    }
    let children = node.vector.count_ones() as usize;
    for k in 0..children {
        free_below(table, free, table.nodes[node.base1 as usize + k]);
    }
    if children > 0 {
        free.nodes[children].push(node.base1);
    }
    let leaves = node.leafvec.count_ones() as usize;
    if leaves > 0 && node.inline_offset().is_none() {
        free.leaves[leaves].push(node.base0);
    }
}

/// Whether the node at `depth` can be a skip node ([`Node::skip`]): every route below it
/// (longer than `depth`) shares the next two or more six-bit chunks and ends past them.
/// Returns how many chunks, and their bits.
fn skippable<A: Address>(depth: u8, routes: &[(A, u8, NextHop)]) -> Option<(u8, u64)> {
    let mut below = routes.iter().filter(|r| r.1 > depth);
    let first = *below.next()?;
    let (mut last, mut shortest) = (first.0, first.1);
    for &(a, len, _) in below {
        last = a;
        shortest = shortest.min(len);
    }
    // In prefix order, what the first and last share, all in between share too.
    let shared = first.0.common_len(last).saturating_sub(depth);
    let chunks = (shared / 6)
        .min((shortest - depth - 1) / 6)
        .min(MAX_SKIP_CHUNKS);
    (chunks >= 2).then(|| (chunks, first.0.bits(depth, 6 * chunks)))
}

/// Builds the node at `depth` whose addresses answer `outside` unless a route in `routes`
/// says otherwise. `routes` are in prefix order and inside the node; those of `depth` bits
/// or fewer were painted by an ancestor and are skipped.
fn build_node<A: Address>(
    table: &mut Lpm<A>,
    free: &mut FreeBlocks,
    depth: u8,
    outside: Option<NextHop>,
    routes: &[(A, u8, NextHop)],
) -> Built {
    if let Some((chunks, expect)) = skippable(depth, routes) {
        let deeper = depth + 6 * chunks;
        let target = match build_node(table, free, deeper, outside, routes) {
            Built::Leaf(v) if v == outside => return Built::Leaf(outside),
            Built::Leaf(v) => Node::leaf(v),
            Built::Node(node) => node,
        };
        let t = FreeBlocks::take(&mut free.nodes, &mut table.nodes, 1, Node::default());
        table.nodes[t as usize] = target;
        return Built::Node(Node::skip(chunks, expect, t, outside));
    }
    let end = depth + 6;
    let mut vals = [outside; 64];
    let mut deeper = 0u64;
    for &(addr, len, v) in routes {
        if len <= depth {
            continue;
        }
        let c = addr.chunk(depth);
        if len <= end {
            let n = 1usize << (end - len);
            vals[c..c + n].fill(Some(v));
        } else {
            deeper |= 1 << c;
        }
    }

    let mut vector = 0u64;
    let mut children = [Node::default(); 64];
    let mut nchildren = 0;
    let mut i = 0;
    while deeper != 0 && i < routes.len() {
        let c = routes[i].0.chunk(depth);
        let mut j = i + 1;
        while j < routes.len() && routes[j].0.chunk(depth) == c {
            j += 1;
        }
        if deeper & (1 << c) != 0 {
            match build_node(table, free, end, vals[c], &routes[i..j]) {
                Built::Leaf(v) => vals[c] = v,
                Built::Node(node) => {
                    vector |= 1 << c;
                    children[nchildren] = node;
                    nchildren += 1;
                }
            }
        }
        i = j;
    }

    if vector == 0 && vals.iter().all(|v| *v == vals[0]) {
        return Built::Leaf(vals[0]);
    }
    let mut leafvec = 0u64;
    let mut leaves = [None; 64];
    let mut nleaves = 0;
    for (c, &v) in vals.iter().enumerate() {
        if vector & (1 << c) != 0 {
            continue;
        }
        if nleaves == 0 || leaves[nleaves - 1] != v {
            leafvec |= 1 << c;
            leaves[nleaves] = v;
            nleaves += 1;
        }
    }
    let base1 = FreeBlocks::take(
        &mut free.nodes,
        &mut table.nodes,
        nchildren,
        Node::default(),
    );
    table.nodes[base1 as usize..base1 as usize + nchildren].copy_from_slice(&children[..nchildren]);
    let mut node = Node {
        vector,
        leafvec,
        base1,
        ..Node::default()
    };
    match node.inline_offset() {
        Some(offset) => node.set_inline(offset, &leaves[..nleaves]),
        None => {
            node.base0 = FreeBlocks::take(&mut free.leaves, &mut table.leaves, nleaves, None);
            let b = node.base0 as usize;
            table.leaves[b..b + nleaves].copy_from_slice(&leaves[..nleaves]);
        }
    }
    Built::Node(node)
}
