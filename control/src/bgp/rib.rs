//! The Loc-RIB: every peer's path for every prefix, and for each prefix the best path
//! by the decision process of RFC 4271 9.1.2.2, plus the paths equal to it up to the
//! router-id tie-break, which form the prefix's ECMP next-hop group (multipath).
//!
//! The decision process eliminates candidates step by step, as the RFC writes it
//! (holo's `bgp::rib` keeps the same shape), because the MED step compares only paths
//! from the same neighbouring AS and is not a total order: a sort by a pairwise
//! comparison can pick a different best than the RFC for the same paths.

use super::slots::{Found, Keyed, Table};
use crate::config::Cidr;
use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use lpm::{Address, Prefix};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// A peer, as the RIB numbers them.
pub type PeerId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    Sequence(Vec<u32>),
    Set(Vec<u32>),
}

/// The attributes of a path that the decision process and the export side read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    pub next_hop: IpAddr,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    /// Extended communities (RFC 4360), each as its 8 bytes in network order.
    pub ext_communities: Vec<u64>,
    /// Large communities (RFC 8092): global administrator, local data 1 and 2.
    pub large_communities: Vec<[u32; 3]>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
}

impl PathAttrs {
    /// AS_PATH length for the decision process: an AS_SET counts as one (RFC 4271
    /// 9.1.2.2 a).
    pub fn as_path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
            })
            .sum()
    }

    /// The neighbouring AS: the first AS of the path, if it starts with a sequence.
    pub fn neighbour_as(&self) -> Option<u32> {
        match self.as_path.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub peer: PeerId,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// The peer's address.
    pub address: IpAddr,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// Originated by this node (its pod CIDR, a service VIP).
    pub local: bool,
}

/// One peer's path to a prefix.
#[derive(Debug, Clone)]
pub struct Path {
    pub source: Source,
    pub attrs: Arc<PathAttrs>,
    /// When it was learned, in seconds of [`clock`] (not part of equality).
    pub since: u32,
}

impl PartialEq for Path {
    fn eq(&self, other: &Path) -> bool {
        self.source == other.source && self.attrs == other.attrs
    }
}

impl Eq for Path {}

/// Seconds since the process's first call: the RIB's timestamps.
pub fn clock() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u32::try_from(epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
}

/// The default LOCAL_PREF of paths that have none (eBGP-learned, local).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

impl Path {
    fn local_pref(&self) -> u32 {
        self.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    /// The identifier the router-id step compares: ORIGINATOR_ID for reflected paths
    /// (RFC 4456 9).
    fn origin_id(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.source.router_id)
    }
}

/// The decision for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    pub best: Path,
    /// Next hops of the paths equal to the best up to the router-id tie-break, the
    /// best's first, without repeats: the prefix's ECMP group.
    pub multipath: Vec<IpAddr>,
}

/// Keeps only the candidates for which `key` is smallest.
fn keep_min<K: Ord>(c: &mut Vec<&Path>, key: impl Fn(&Path) -> K) {
    if let Some(min) = c.iter().map(|p| key(p)).min() {
        c.retain(|p| key(p) == min);
    }
}

/// The RFC 4271 9.1.2.2 decision among `paths` (with a step for locally originated
/// paths first, as every implementation has). `None` if there are none.
pub fn decide(paths: &[Path]) -> Option<Best> {
    let mut c: Vec<&Path> = paths.iter().collect();
    if c.is_empty() {
        return None;
    }
    keep_min(&mut c, |p| !p.source.local);
    keep_min(&mut c, |p| std::cmp::Reverse(p.local_pref()));
    keep_min(&mut c, |p| p.attrs.as_path_len());
    keep_min(&mut c, |p| p.attrs.origin);
    // c) MED: a path loses to one from the same neighbouring AS with a lower MED
    // (a missing MED is the lowest, 0).
    let med = |p: &Path| p.attrs.med.unwrap_or(0);
    let survivors: Vec<&Path> = c
        .iter()
        .copied()
        .filter(|p| {
            let asn = p.attrs.neighbour_as();
            !c.iter()
                .any(|q| q.attrs.neighbour_as() == asn && med(q) < med(p))
        })
        .collect();
    c = survivors;
    keep_min(&mut c, |p| !p.source.ebgp);
    // (e, interior cost to the next hop: every next hop is one hop away here.)
    let multipath_set = c.clone();
    keep_min(&mut c, |p| p.origin_id());
    keep_min(&mut c, |p| p.attrs.cluster_list.len());
    keep_min(&mut c, |p| p.source.address);
    let best = (*c.first()?).clone();
    let mut multipath = vec![best.attrs.next_hop];
    for p in multipath_set {
        if !multipath.contains(&p.attrs.next_hop) {
            multipath.push(p.attrs.next_hop);
        }
    }
    Some(Best { best, multipath })
}

/// The forwarding side of a prefix's decision: what the FIB needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The best path is this node's own (it never goes to the FIB).
    pub local: bool,
    /// The ECMP next hops, the best's first. Shared: a change costs no allocation.
    pub hops: Arc<[IpAddr]>,
}

/// What changed for a prefix: its new decision, or `None` if it has no path left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<P> {
    pub prefix: P,
    pub best: Option<Decision>,
}

/// The changed decisions of one batch (an UPDATE, a peer going away), compact: each
/// change names its decision by index into the batch's distinct decisions, or
/// [`Changes::NONE`] when the prefix has no path left. A full table's worth of changes
/// shares a handful of decisions, so a change costs no reference count and no
/// allocation beyond its 12 bytes (IPv4).
#[derive(Debug)]
pub struct Changes<P> {
    list: Vec<(P, u32)>,
    decisions: Vec<Decision>,
    /// Decision indices by (group, local).
    numbers: Numbering<(usize, bool)>,
}

impl<P> Default for Changes<P> {
    fn default() -> Self {
        Changes {
            list: Vec::new(),
            decisions: Vec::new(),
            numbers: Numbering::default(),
        }
    }
}

/// Numbers for keys in the order they are first seen. The last key asked for is
/// remembered: most consecutive changes share their group.
#[derive(Debug, Clone)]
struct Numbering<K> {
    index: HashMap<K, u32, DefaultHashBuilder>,
    last: Option<(K, u32)>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Numbering {
            index: HashMap::default(),
            last: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Numbering<K> {
    fn clear(&mut self) {
        self.index.clear();
        self.last = None;
    }

    /// The number of `key`, and whether it is new (then it is `next`, the count of
    /// keys so far).
    fn number(&mut self, key: K, next: usize) -> (u32, bool) {
        if let Some((k, i)) = self.last {
            if k == key {
                return (i, false);
            }
        }
        let (i, new) = match self.index.get(&key) {
            Some(&i) => (i, false),
            None => {
                let i = next as u32;
                self.index.insert(key, i);
                (i, true)
            }
        };
        self.last = Some((key, i));
        (i, new)
    }
}

/// A group's key in a batch: its address. A batch holds a reference to every group it
/// names, so no other group can take that address while the batch lives.
fn group_key(hops: &Hops) -> usize {
    Arc::as_ptr(hops) as *const IpAddr as usize
}

impl<P: Copy> Changes<P> {
    /// The decision index of a prefix left without a path.
    pub const NONE: u32 = u32::MAX;

    fn push(&mut self, prefix: P, best: Option<(&Hops, bool)>) {
        let d = match best {
            Some((hops, local)) => self.decision(hops, local),
            None => Self::NONE,
        };
        self.list.push((prefix, d));
    }

    fn decision(&mut self, hops: &Hops, local: bool) -> u32 {
        let key = (group_key(hops), local);
        let (i, new) = self.numbers.number(key, self.decisions.len());
        if new {
            self.decisions.push(Decision {
                local,
                hops: Arc::clone(hops),
            });
        }
        i
    }

    pub fn clear(&mut self) {
        self.list.clear();
        self.decisions.clear();
        self.numbers.clear();
    }

    /// The distinct decisions the changes name.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The decision a change names (`None` for [`Changes::NONE`]).
    pub fn decision_of(&self, d: u32) -> Option<&Decision> {
        self.decisions.get(d as usize)
    }

    /// Every change in order, with its decision.
    pub fn iter(&self) -> impl Iterator<Item = (P, Option<&Decision>)> + '_ {
        self.list.iter().map(|&(p, d)| (p, self.decision_of(d)))
    }

    /// The changes one by one, each with its own copy of its decision.
    pub fn to_vec(&self) -> Vec<Change<P>> {
        self.iter()
            .map(|(prefix, d)| Change {
                prefix,
                best: d.cloned(),
            })
            .collect()
    }
}

/// Best-path changes for the FIB, per family, compact (a change costs 12 bytes for
/// IPv4): each names its ECMP group by its index in `groups`, or [`FibBatch::NONE`]
/// when the prefix has no learned route left. The groups are shared with the RIB, so a
/// batch takes one reference per group, not one per route.
#[derive(Debug, Clone, Default)]
pub struct FibBatch {
    pub v4: Vec<(Prefix<u32>, u32)>,
    pub v6: Vec<(Prefix<u128>, u32)>,
    pub groups: Vec<Hops>,
    /// A peer is still sending its initial table (no End-of-RIB yet): more of the
    /// burst is coming, so the FIB may wait for it.
    pub settling: bool,
    /// Group indices by the group's address, for `push`.
    numbers: Numbering<usize>,
    /// Group indices of a [`Changes`]' decisions, while one is appended.
    remap: Vec<u32>,
}

/// An ECMP group's next hops, shared.
pub type Hops = Arc<[IpAddr]>;

impl FibBatch {
    /// The group index of a change that removes the prefix's route.
    pub const NONE: u32 = u32::MAX;

    fn group(&mut self, hops: &Hops) -> u32 {
        let (i, new) = self.numbers.number(group_key(hops), self.groups.len());
        if new {
            self.groups.push(Arc::clone(hops));
        }
        i
    }

    /// Adds a change; our own paths never go to the FIB (they remove the route there).
    pub fn push(&mut self, c: &Change<Cidr>) {
        let g = match &c.best {
            Some(b) if !b.local => self.group(&b.hops),
            _ => Self::NONE,
        };
        match c.prefix {
            Cidr::V4(p) => self.v4.push((p, g)),
            Cidr::V6(p) => self.v6.push((p, g)),
        }
    }

    /// Appends a family's changes, given its list (`v4` or `v6`) with the change's
    /// prefix in it.
    fn extend_from<P: Copy>(
        &mut self,
        changes: &Changes<P>,
        list: impl Fn(&mut FibBatch) -> &mut Vec<(P, u32)>,
    ) {
        let mut remap = std::mem::take(&mut self.remap);
        remap.clear();
        for d in &changes.decisions {
            // Our own paths never go to the FIB (they remove the route there).
            remap.push(if d.local {
                Self::NONE
            } else {
                self.group(&d.hops)
            });
        }
        list(self).extend(
            changes
                .list
                .iter()
                .map(|&(p, d)| (p, remap.get(d as usize).copied().unwrap_or(Self::NONE))),
        );
        self.remap = remap;
    }

    /// Appends the changes of both families.
    pub fn extend(&mut self, changes: &RibChanges) {
        self.extend_from(&changes.v4, |b| &mut b.v4);
        self.extend_from(&changes.v6, |b| &mut b.v6);
    }

    /// Appends `other`'s changes after this batch's.
    pub fn append(&mut self, other: FibBatch) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.settling = other.settling;
        let map: Vec<u32> = other.groups.iter().map(|g| self.group(g)).collect();
        let re = |g: u32| if g == Self::NONE { g } else { map[g as usize] };
        self.v4
            .extend(other.v4.into_iter().map(|(p, g)| (p, re(g))));
        self.v6
            .extend(other.v6.into_iter().map(|(p, g)| (p, re(g))));
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The next hops of group `g` (`None` for [`FibBatch::NONE`]).
    pub fn hops(&self, g: u32) -> Option<&Hops> {
        self.groups.get(g as usize)
    }

    /// Every change, IPv4 first, each family in order.
    pub fn iter(&self) -> impl Iterator<Item = (Cidr, Option<&Hops>)> + '_ {
        self.v4
            .iter()
            .map(|(p, g)| (Cidr::V4(*p), self.hops(*g)))
            .chain(self.v6.iter().map(|(p, g)| (Cidr::V6(*p), self.hops(*g))))
    }
}

/// The peer slot that marks a prefix with more than one path.
const MULTI: u32 = 0x00ff_ffff;

/// One path as the table keeps it: numbers into the peer and attribute tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PathRef {
    peer: u32,
    attrs: u32,
    since: u32,
}

/// A prefix's entry, 16 bytes for IPv4: most prefixes have one path, kept inline.
#[derive(Debug, Clone, Copy)]
struct Slot<A> {
    addr: A,
    /// The prefix length (low 8 bits) and above it the peer slot of the only path, or
    /// [`MULTI`].
    meta: u32,
    /// The only path's attribute set, or with [`MULTI`] the index of the paths in
    /// `LocRib::multi`.
    attrs: u32,
    since: u32,
}

impl<A: Address> Slot<A> {
    fn len(&self) -> u8 {
        (self.meta & 0xff) as u8
    }

    fn peer(&self) -> u32 {
        self.meta >> 8
    }

    fn prefix(&self) -> Prefix<A> {
        Prefix::new_masked(self.addr, self.len())
    }

    fn single(prefix: Prefix<A>, p: PathRef) -> Self {
        Slot {
            addr: prefix.addr(),
            meta: u32::from(prefix.len()) | (p.peer << 8),
            attrs: p.attrs,
            since: p.since,
        }
    }
}

/// The prefix length that marks an empty slot (no prefix is this long).
const EMPTY_LEN: u32 = 0xff;

impl<A: Address> Keyed for Slot<A> {
    type Key = (A, u8);
    const EMPTY: Self = Slot {
        addr: A::ZERO,
        meta: EMPTY_LEN,
        attrs: 0,
        since: 0,
    };

    fn is_empty(&self) -> bool {
        self.meta & 0xff == EMPTY_LEN
    }

    fn key(&self) -> (A, u8) {
        (self.addr, self.len())
    }
}

/// The paths of a prefix that has more than one, and their decision.
#[derive(Debug, Default)]
struct Multi {
    paths: Vec<PathRef>,
    /// Index of the best in `paths`.
    best: usize,
    hops: Option<Arc<[IpAddr]>>,
}

/// An interned attribute set and the one-hop group of its next hop.
#[derive(Debug)]
struct AttrEntry {
    attrs: Arc<PathAttrs>,
    /// Its hash in `LocRib::attr_index`.
    hash: u64,
    hops: Arc<[IpAddr]>,
    /// Paths using it; at zero the entry is freed.
    refs: u32,
}

#[derive(Debug)]
struct PeerSlot {
    source: Source,
    /// Prefixes this peer has a path for.
    paths: usize,
}

/// The Loc-RIB of one address family: every peer's path for every prefix, with the
/// decision kept per prefix.
///
/// Built for full tables: a prefix with one path costs one 16-byte slot (IPv4) in an
/// open-addressing table ([`super::slots`]); attribute sets are interned and shared by
/// every prefix that carries them, as are next-hop groups; there is no per-peer index
/// (taking a peer's paths away scans the table, which happens once per session loss).
#[derive(Debug)]
pub struct LocRib<A: Address> {
    slots: Table<Slot<A>>,
    /// The hashes of a batch's prefixes, kept from one batch to the next.
    hashes: Vec<u64>,
    multi: Vec<Multi>,
    free_multi: Vec<u32>,
    attrs: Vec<Option<AttrEntry>>,
    free_attrs: Vec<u32>,
    /// Indices into `attrs` by the attribute set's hash.
    attr_index: HashTable<u32>,
    attr_hasher: DefaultHashBuilder,
    /// One-hop groups by next hop, shared by the attribute sets.
    hop_groups: HashMap<IpAddr, Arc<[IpAddr]>, DefaultHashBuilder>,
    /// Multipath groups, shared by the prefixes that use them.
    groups: HashSet<Arc<[IpAddr]>, DefaultHashBuilder>,
    peers: Vec<Option<PeerSlot>>,
    peer_index: HashMap<PeerId, u32, DefaultHashBuilder>,
}

impl<A: Address> Default for LocRib<A> {
    fn default() -> Self {
        LocRib {
            slots: Table::default(),
            hashes: Vec::new(),
            multi: Vec::new(),
            free_multi: Vec::new(),
            attrs: Vec::new(),
            free_attrs: Vec::new(),
            attr_index: HashTable::new(),
            attr_hasher: DefaultHashBuilder::default(),
            hop_groups: HashMap::default(),
            groups: HashSet::default(),
            peers: Vec::new(),
            peer_index: HashMap::default(),
        }
    }
}

impl<A: Address> LocRib<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The peer's slot, registering it (and refreshing its source) as needed.
    fn peer_slot(&mut self, source: Source) -> u32 {
        if let Some(&i) = self.peer_index.get(&source.peer) {
            if let Some(p) = self.peers[i as usize].as_mut() {
                p.source = source;
            }
            return i;
        }
        let i = match self.peers.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.peers.push(None);
                self.peers.len() - 1
            }
        };
        // Peer slots are 24 bits; a speaker has far fewer peers.
        let i = u32::try_from(i).unwrap_or(MULTI - 1).min(MULTI - 1);
        self.peers[i as usize] = Some(PeerSlot { source, paths: 0 });
        self.peer_index.insert(source.peer, i);
        i
    }

    fn source(&self, peer: u32) -> Source {
        match self.peers.get(peer as usize) {
            Some(Some(p)) => p.source,
            // Unreachable: a path's peer stays registered while it has paths.
            _ => Source {
                peer: PeerId::MAX,
                router_id: Ipv4Addr::UNSPECIFIED,
                address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                ebgp: false,
                local: false,
            },
        }
    }

    fn count(&mut self, peer: u32, add: bool) {
        if let Some(Some(p)) = self.peers.get_mut(peer as usize) {
            if add {
                p.paths += 1;
            } else {
                p.paths = p.paths.saturating_sub(1);
            }
        }
    }

    /// Interns `attrs` with one reference taken (the caller's, given back by
    /// [`LocRib::release`] or handed to a path).
    fn intern(&mut self, attrs: &Arc<PathAttrs>) -> u32 {
        let hash = self.attr_hasher.hash_one(&**attrs);
        let entries = &self.attrs;
        let same = |&i: &u32| match entries.get(i as usize) {
            Some(Some(e)) => Arc::ptr_eq(&e.attrs, attrs) || *e.attrs == **attrs,
            _ => false,
        };
        if let Some(&i) = self.attr_index.find(hash, same) {
            if let Some(e) = self.attrs[i as usize].as_mut() {
                e.refs += 1;
            }
            return i;
        }
        let next_hop = attrs.next_hop;
        let hops = Arc::clone(
            self.hop_groups
                .entry(next_hop)
                .or_insert_with(|| Arc::from([next_hop].as_slice())),
        );
        let entry = AttrEntry {
            attrs: Arc::clone(attrs),
            hash,
            hops,
            refs: 1,
        };
        let i = match self.free_attrs.pop() {
            Some(i) => {
                self.attrs[i as usize] = Some(entry);
                i
            }
            None => {
                self.attrs.push(Some(entry));
                (self.attrs.len() - 1) as u32
            }
        };
        let entries = &self.attrs;
        self.attr_index
            .insert_unique(hash, i, |&j| match entries.get(j as usize) {
                Some(Some(e)) => e.hash,
                _ => 0,
            });
        i
    }

    fn retain(&mut self, i: u32) {
        if let Some(Some(e)) = self.attrs.get_mut(i as usize) {
            e.refs += 1;
        }
    }

    fn release(&mut self, i: u32) {
        let Some(Some(e)) = self.attrs.get_mut(i as usize) else {
            return;
        };
        e.refs -= 1;
        if e.refs == 0 {
            if let Some(e) = self.attrs[i as usize].take() {
                if let Ok(o) = self.attr_index.find_entry(e.hash, |&j| j == i) {
                    o.remove();
                }
                let nh = e.attrs.next_hop;
                drop(e);
                if self
                    .hop_groups
                    .get(&nh)
                    .is_some_and(|g| Arc::strong_count(g) == 1)
                {
                    self.hop_groups.remove(&nh);
                }
            }
            self.free_attrs.push(i);
        }
    }

    fn entry(&self, i: u32) -> &AttrEntry {
        match self.attrs.get(i as usize) {
            Some(Some(e)) => e,
            _ => unreachable!("a path's attribute set stays interned while it is used"),
        }
    }

    fn path(&self, r: PathRef) -> Path {
        Path {
            source: self.source(r.peer),
            attrs: Arc::clone(&self.entry(r.attrs).attrs),
            since: r.since,
        }
    }

    /// The shared copy of a multipath group.
    fn group(&mut self, hops: Vec<IpAddr>) -> Arc<[IpAddr]> {
        if hops.len() == 1 {
            let nh = hops[0];
            return Arc::clone(
                self.hop_groups
                    .entry(nh)
                    .or_insert_with(|| Arc::from(hops.as_slice())),
            );
        }
        if let Some(g) = self.groups.get(hops.as_slice()) {
            return Arc::clone(g);
        }
        if self.groups.len() > 1024 {
            // Forget the groups no prefix uses any more.
            self.groups.retain(|g| Arc::strong_count(g) > 1);
        }
        let g: Arc<[IpAddr]> = Arc::from(hops);
        self.groups.insert(Arc::clone(&g));
        g
    }

    /// Sets `source`'s path to `prefix` (`None`: withdraws it). Returns the change of
    /// the prefix's decision, if its best path or its ECMP group changed.
    pub fn update(
        &mut self,
        prefix: Prefix<A>,
        source: Source,
        attrs: Option<Arc<PathAttrs>>,
    ) -> Option<Change<Prefix<A>>> {
        let mut out = Changes::default();
        match attrs {
            Some(a) => self.announce(source, &a, &[prefix], &mut out),
            None => self.withdraw(source, &[prefix], &mut out),
        }
        out.to_vec().pop()
    }

    /// Hashes a batch's prefixes into `self.hashes` and loads their first slots
    /// together (see [`Table::warm`]).
    fn hash_batch(&mut self, prefixes: &[Prefix<A>]) -> Vec<u64> {
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.clear();
        hashes.extend(
            prefixes
                .iter()
                .map(|p| self.slots.hash((p.addr(), p.len()))),
        );
        self.slots.warm(&hashes);
        hashes
    }

    /// Sets `source`'s path to each of `prefixes` to `attrs`; the changed decisions
    /// go to `out`.
    pub fn announce(
        &mut self,
        source: Source,
        attrs: &Arc<PathAttrs>,
        prefixes: &[Prefix<A>],
        out: &mut Changes<Prefix<A>>,
    ) {
        if prefixes.is_empty() {
            return;
        }
        let peer = self.peer_slot(source);
        let id = self.intern(attrs);
        let since = clock();
        // Room first: a growth moves every slot, so none may happen mid-batch.
        self.slots.reserve(prefixes.len());
        let hashes = self.hash_batch(prefixes);
        for (&prefix, &h) in prefixes.iter().zip(&hashes) {
            let p = PathRef {
                peer,
                attrs: id,
                since,
            };
            self.set(prefix, h, peer, Some(p), out);
        }
        self.hashes = hashes;
        self.release(id);
    }

    /// Withdraws `source`'s path to each of `prefixes`; the changed decisions go to
    /// `out`.
    pub fn withdraw(
        &mut self,
        source: Source,
        prefixes: &[Prefix<A>],
        out: &mut Changes<Prefix<A>>,
    ) {
        let Some(&peer) = self.peer_index.get(&source.peer) else {
            return;
        };
        let hashes = self.hash_batch(prefixes);
        for (&prefix, &h) in prefixes.iter().zip(&hashes) {
            self.set(prefix, h, peer, None, out);
        }
        self.hashes = hashes;
    }

    /// The decision of a slot with one path, for a [`Changes`].
    fn single_best(&self, s: &Slot<A>) -> (&Hops, bool) {
        (&self.entry(s.attrs).hops, self.source(s.peer()).local)
    }

    /// The decision of a slot with one path.
    fn single_decision(&self, s: &Slot<A>) -> Decision {
        let (hops, local) = self.single_best(s);
        Decision {
            local,
            hops: Arc::clone(hops),
        }
    }

    /// Puts a new prefix's slot where `find` said it goes (making room if it was not
    /// made before: that is a bug of the caller, not a reason to lose the route).
    fn insert(&mut self, h: u64, at: Option<usize>, slot: Slot<A>) -> bool {
        if at.is_some_and(|i| self.slots.insert_at(i, slot)) {
            return true;
        }
        self.slots.reserve(1);
        match self.slots.find(h, slot.key()) {
            Found::Vacant(Some(i)) => self.slots.insert_at(i, slot),
            _ => false,
        }
    }

    /// Sets `peer`'s path to `prefix` (hash `h`; `None`: no path). The table's one
    /// write path; a changed decision goes to `out`.
    fn set(
        &mut self,
        prefix: Prefix<A>,
        h: u64,
        peer: u32,
        new: Option<PathRef>,
        out: &mut Changes<Prefix<A>>,
    ) {
        // One probe: a new prefix (the common case while a table streams in) goes
        // into the slot the search ended at.
        let (i, slot) = match self.slots.find(h, (prefix.addr(), prefix.len())) {
            Found::At(i) => match self.slots.at(i) {
                Some(&s) => (i, s),
                None => return,
            },
            Found::Vacant(at) => {
                let Some(p) = new else { return };
                let slot = Slot::single(prefix, p);
                if self.insert(h, at, slot) {
                    self.retain(p.attrs);
                    self.count(peer, true);
                    out.push(prefix, Some(self.single_best(&slot)));
                }
                return;
            }
        };
        if slot.peer() != MULTI {
            let old = PathRef {
                peer: slot.peer(),
                attrs: slot.attrs,
                since: slot.since,
            };
            if old.peer == peer {
                match new {
                    Some(p) if p.attrs == old.attrs => {}
                    Some(p) => {
                        self.retain(p.attrs);
                        self.release(old.attrs);
                        let s = Slot::single(prefix, p);
                        self.slots.replace_at(i, s);
                        out.push(prefix, Some(self.single_best(&s)));
                    }
                    None => {
                        self.release(old.attrs);
                        self.count(peer, false);
                        self.slots.remove_at(i);
                        out.push(prefix, None);
                    }
                }
                return;
            }
            // Another peer's path: the prefix becomes multipath.
            let Some(p) = new else { return };
            self.retain(p.attrs);
            self.count(peer, true);
            let was = self.single_decision(&slot);
            let m = self.new_multi(vec![old, p]);
            let mut s = slot;
            s.meta = u32::from(prefix.len()) | (MULTI << 8);
            s.attrs = m;
            self.slots.replace_at(i, s);
            let (changed, d) = self.decide_multi(m, Some((old, was)));
            if changed {
                out.push(prefix, d.as_ref().map(|d| (&d.hops, d.local)));
            }
            return;
        }
        // A prefix with several paths.
        let m = slot.attrs as usize;
        let before = self.multi[m].paths[self.multi[m].best];
        let was = self.multi[m].hops.clone().map(|hops| Decision {
            local: self.source(before.peer).local,
            hops,
        });
        let at = self.multi[m].paths.iter().position(|q| q.peer == peer);
        match (at, new) {
            (Some(i), Some(p)) => {
                if self.multi[m].paths[i].attrs == p.attrs {
                    return;
                }
                self.retain(p.attrs);
                self.release(self.multi[m].paths[i].attrs);
                self.multi[m].paths[i] = p;
            }
            (None, Some(p)) => {
                self.retain(p.attrs);
                self.count(peer, true);
                self.multi[m].paths.push(p);
            }
            (Some(i), None) => {
                let gone = self.multi[m].paths.swap_remove(i);
                self.release(gone.attrs);
                self.count(peer, false);
            }
            (None, None) => return,
        }
        if self.multi[m].paths.len() == 1 {
            // Back to one path, inline.
            let only = self.multi[m].paths[0];
            self.free_multi_entry(m as u32);
            let s = Slot::single(prefix, only);
            self.slots.replace_at(i, s);
            let d = self.single_decision(&s);
            if before != only || was.as_ref() != Some(&d) {
                out.push(prefix, Some((&d.hops, d.local)));
            }
            return;
        }
        let (changed, d) = self.decide_multi(m as u32, was.map(|w| (before, w)));
        if changed {
            out.push(prefix, d.as_ref().map(|d| (&d.hops, d.local)));
        }
    }

    fn new_multi(&mut self, paths: Vec<PathRef>) -> u32 {
        let m = Multi {
            paths,
            best: 0,
            hops: None,
        };
        match self.free_multi.pop() {
            Some(i) => {
                self.multi[i as usize] = m;
                i
            }
            None => {
                self.multi.push(m);
                (self.multi.len() - 1) as u32
            }
        }
    }

    fn free_multi_entry(&mut self, m: u32) {
        self.multi[m as usize] = Multi::default();
        self.free_multi.push(m);
    }

    /// Decides among a multipath prefix's paths; says whether the best path or the
    /// group differs from `was`.
    fn decide_multi(
        &mut self,
        m: u32,
        was: Option<(PathRef, Decision)>,
    ) -> (bool, Option<Decision>) {
        let refs = self.multi[m as usize].paths.clone();
        let paths: Vec<Path> = refs.iter().map(|&r| self.path(r)).collect();
        let Some(best) = decide(&paths) else {
            return (was.is_some(), None);
        };
        let at = refs
            .iter()
            .position(|r| self.source(r.peer).peer == best.best.source.peer)
            .unwrap_or(0);
        let hops = self.group(best.multipath);
        let d = Decision {
            local: best.best.source.local,
            hops: Arc::clone(&hops),
        };
        let e = &mut self.multi[m as usize];
        e.best = at;
        e.hops = Some(hops);
        let changed = match was {
            Some((r, w)) => r != refs[at] || w != d,
            None => true,
        };
        (changed, Some(d))
    }

    /// The paths of a slot.
    fn slot_paths(&self, s: &Slot<A>) -> (Vec<PathRef>, usize) {
        if s.peer() == MULTI {
            let m = &self.multi[s.attrs as usize];
            (m.paths.clone(), m.best)
        } else {
            (
                vec![PathRef {
                    peer: s.peer(),
                    attrs: s.attrs,
                    since: s.since,
                }],
                0,
            )
        }
    }

    fn has_peer(&self, s: &Slot<A>, peer: u32) -> bool {
        if s.peer() == MULTI {
            self.multi[s.attrs as usize]
                .paths
                .iter()
                .any(|p| p.peer == peer)
        } else {
            s.peer() == peer
        }
    }

    /// Withdraws every path of `peer` (its session went down); the changes go to
    /// `out`.
    pub fn remove_peer(&mut self, peer: &Source, out: &mut Changes<Prefix<A>>) {
        let prefixes = self.peer_prefixes(peer.peer);
        self.withdraw(*peer, &prefixes, out);
        if let Some(i) = self.peer_index.remove(&peer.peer) {
            self.peers[i as usize] = None;
        }
    }

    /// How many prefixes `peer` has a path for.
    pub fn peer_len(&self, peer: PeerId) -> usize {
        self.peer_index
            .get(&peer)
            .and_then(|&i| self.peers[i as usize].as_ref())
            .map_or(0, |p| p.paths)
    }

    /// The prefixes `peer` has a path for (a scan of the table).
    pub fn peer_prefixes(&self, peer: PeerId) -> Vec<Prefix<A>> {
        let Some(&i) = self.peer_index.get(&peer) else {
            return Vec::new();
        };
        self.slots
            .iter()
            .filter(|s| self.has_peer(s, i))
            .map(Slot::prefix)
            .collect()
    }

    fn find(&self, prefix: &Prefix<A>) -> Option<&Slot<A>> {
        let key = (prefix.addr(), prefix.len());
        self.slots.get(self.slots.hash(key), key)
    }

    fn best_of(&self, s: &Slot<A>) -> Best {
        let (paths, best) = self.slot_paths(s);
        let hops = if s.peer() == MULTI {
            self.multi[s.attrs as usize].hops.clone()
        } else {
            None
        }
        .unwrap_or_else(|| Arc::clone(&self.entry(paths[best].attrs).hops));
        Best {
            best: self.path(paths[best]),
            multipath: hops.to_vec(),
        }
    }

    /// The decision for `prefix`.
    pub fn best(&self, prefix: &Prefix<A>) -> Option<Best> {
        self.find(prefix).map(|s| self.best_of(s))
    }

    /// The forwarding side of the decision for `prefix`.
    pub fn decision(&self, prefix: &Prefix<A>) -> Option<Decision> {
        let s = self.find(prefix)?;
        if s.peer() == MULTI {
            let m = &self.multi[s.attrs as usize];
            Some(Decision {
                local: self.source(m.paths[m.best].peer).local,
                hops: m.hops.clone()?,
            })
        } else {
            Some(self.single_decision(s))
        }
    }

    /// Every path to `prefix`.
    pub fn paths(&self, prefix: &Prefix<A>) -> Vec<Path> {
        self.find(prefix).map_or_else(Vec::new, |s| {
            self.slot_paths(s)
                .0
                .into_iter()
                .map(|r| self.path(r))
                .collect()
        })
    }

    /// Prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every prefix.
    pub fn prefixes(&self) -> impl Iterator<Item = Prefix<A>> + '_ {
        self.slots.iter().map(Slot::prefix)
    }

    /// Every prefix with its decision.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix<A>, Best)> + '_ {
        self.slots.iter().map(|s| (s.prefix(), self.best_of(s)))
    }

    /// Distinct attribute sets held.
    pub fn attribute_sets(&self) -> usize {
        self.attr_index.len()
    }
}

/// The Loc-RIBs of both families, addressed by [`Cidr`].
#[derive(Debug, Default)]
pub struct Rib {
    pub v4: LocRib<u32>,
    pub v6: LocRib<u128>,
}

/// The changes of both families.
#[derive(Debug, Default)]
pub struct RibChanges {
    pub v4: Changes<Prefix<u32>>,
    pub v6: Changes<Prefix<u128>>,
}

impl RibChanges {
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Every change, IPv4 first, with its decision.
    pub fn iter(&self) -> impl Iterator<Item = (Cidr, Option<&Decision>)> + '_ {
        self.v4
            .iter()
            .map(|(p, d)| (Cidr::V4(p), d))
            .chain(self.v6.iter().map(|(p, d)| (Cidr::V6(p), d)))
    }
}

impl Rib {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`LocRib::update`] in the prefix's family.
    pub fn update(
        &mut self,
        prefix: Cidr,
        source: Source,
        attrs: Option<Arc<PathAttrs>>,
    ) -> Option<Change<Cidr>> {
        match prefix {
            Cidr::V4(p) => self.v4.update(p, source, attrs).map(|c| Change {
                prefix: Cidr::V4(c.prefix),
                best: c.best,
            }),
            Cidr::V6(p) => self.v6.update(p, source, attrs).map(|c| Change {
                prefix: Cidr::V6(c.prefix),
                best: c.best,
            }),
        }
    }

    /// Withdraws every path of `peer` in both families; the changes go to `out`.
    pub fn remove_peer(&mut self, peer: &Source, out: &mut RibChanges) {
        self.v4.remove_peer(peer, &mut out.v4);
        self.v6.remove_peer(peer, &mut out.v6);
    }

    pub fn peer_len(&self, peer: PeerId) -> usize {
        self.v4.peer_len(peer) + self.v6.peer_len(peer)
    }

    pub fn peer_prefixes(&self, peer: PeerId) -> Vec<Cidr> {
        let mut out: Vec<Cidr> = self
            .v4
            .peer_prefixes(peer)
            .into_iter()
            .map(Cidr::V4)
            .collect();
        out.extend(self.v6.peer_prefixes(peer).into_iter().map(Cidr::V6));
        out
    }

    pub fn best(&self, prefix: &Cidr) -> Option<Best> {
        match prefix {
            Cidr::V4(p) => self.v4.best(p),
            Cidr::V6(p) => self.v6.best(p),
        }
    }

    pub fn decision(&self, prefix: &Cidr) -> Option<Decision> {
        match prefix {
            Cidr::V4(p) => self.v4.decision(p),
            Cidr::V6(p) => self.v6.decision(p),
        }
    }

    pub fn paths(&self, prefix: &Cidr) -> Vec<Path> {
        match prefix {
            Cidr::V4(p) => self.v4.paths(p),
            Cidr::V6(p) => self.v6.paths(p),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Every prefix of both families.
    pub fn prefixes(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.v4
            .prefixes()
            .map(Cidr::V4)
            .chain(self.v6.prefixes().map(Cidr::V6))
    }

    /// Every prefix with its decision.
    pub fn iter(&self) -> impl Iterator<Item = (Cidr, Best)> + '_ {
        self.v4
            .iter()
            .map(|(p, b)| (Cidr::V4(p), b))
            .chain(self.v6.iter().map(|(p, b)| (Cidr::V6(p), b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source(peer: PeerId, ebgp: bool) -> Source {
        Source {
            peer,
            router_id: Ipv4Addr::new(10, 0, 0, peer as u8),
            address: IpAddr::V4(Ipv4Addr::new(192, 168, 0, peer as u8)),
            ebgp,
            local: false,
        }
    }

    fn attrs(next_hop: u8, path: &[u32]) -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: vec![AsSegment::Sequence(path.to_vec())],
            next_hop: IpAddr::V4(Ipv4Addr::new(192, 168, 0, next_hop)),
            med: None,
            local_pref: None,
            communities: vec![],
            ext_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: vec![],
        }
    }

    fn path(peer: PeerId, ebgp: bool, a: PathAttrs) -> Path {
        Path {
            source: source(peer, ebgp),
            attrs: Arc::new(a),
            since: 0,
        }
    }

    fn best_peer(paths: &[Path]) -> PeerId {
        decide(paths).unwrap().best.source.peer
    }

    #[test]
    fn each_step_decides_in_rfc_order() {
        // Local preference beats a shorter AS path.
        let mut lp = attrs(1, &[65001, 65002]);
        lp.local_pref = Some(200);
        assert_eq!(
            best_peer(&[path(1, false, lp), path(2, false, attrs(2, &[65001]))]),
            1
        );
        // Shorter AS path; an AS_SET counts one.
        let mut set = attrs(1, &[]);
        set.as_path = vec![AsSegment::Set(vec![1, 2, 3])];
        assert_eq!(
            best_peer(&[path(1, true, attrs(2, &[7, 8])), path(2, true, set)]),
            2
        );
        // Lower origin.
        let mut inc = attrs(1, &[65001]);
        inc.origin = Origin::Incomplete;
        assert_eq!(
            best_peer(&[path(1, true, inc), path(2, true, attrs(2, &[65002]))]),
            2
        );
        // eBGP over iBGP.
        assert_eq!(
            best_peer(&[
                path(1, false, attrs(1, &[65001])),
                path(2, true, attrs(2, &[65002]))
            ]),
            2
        );
        // Lowest router id, then lowest address.
        assert_eq!(
            best_peer(&[
                path(3, true, attrs(3, &[65001])),
                path(2, true, attrs(2, &[65002]))
            ]),
            2
        );
        // Locally originated first of all.
        let mut local = path(9, false, attrs(9, &[]));
        local.source.local = true;
        let mut high = attrs(1, &[]);
        high.local_pref = Some(1000);
        assert_eq!(best_peer(&[path(1, false, high), local]), 9);
    }

    #[test]
    fn med_compares_only_within_a_neighbouring_as() {
        // a (AS 1, MED 10), b (AS 1, MED 5), c (AS 2, MED 1): b eliminates a; c stays,
        // having no rival from AS 2. Then the router id decides between b and c.
        let mut a = attrs(1, &[1]);
        a.med = Some(10);
        let mut b = attrs(2, &[1]);
        b.med = Some(5);
        let mut c = attrs(3, &[2]);
        c.med = Some(1);
        let paths = [path(1, true, a), path(5, true, b), path(3, true, c)];
        assert_eq!(best_peer(&paths), 3);
        let without_c = [paths[0].clone(), paths[1].clone()];
        assert_eq!(best_peer(&without_c), 5, "the lower MED wins within AS 1");
    }

    #[test]
    fn reflected_paths_use_the_originator_id_then_the_cluster_list() {
        let mut a = attrs(1, &[]);
        a.originator_id = Some(Ipv4Addr::new(10, 9, 9, 9));
        let b = attrs(2, &[]);
        // Peer 1 has the lower router id, but its path's originator is higher.
        assert_eq!(
            best_peer(&[path(1, false, a.clone()), path(2, false, b)]),
            2
        );
        let mut short = a.clone();
        short.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1)];
        let mut long = a;
        long.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1); 2];
        assert_eq!(best_peer(&[path(1, false, long), path(2, false, short)]), 2);
    }

    #[test]
    fn equal_paths_form_the_ecmp_group() {
        let paths = [
            path(1, true, attrs(1, &[65001])),
            path(2, true, attrs(2, &[65002])),
            path(3, true, attrs(3, &[65003, 65004])),
        ];
        let b = decide(&paths).unwrap();
        assert_eq!(b.best.source.peer, 1);
        assert_eq!(
            b.multipath,
            vec![paths[0].attrs.next_hop, paths[1].attrs.next_hop],
            "the longer path is not a member"
        );
    }

    #[test]
    fn the_rib_reports_only_real_changes_and_forgets_a_peer() {
        let mut rib = LocRib::<u32>::new();
        let a = Arc::new(attrs(1, &[65001]));
        let c = rib.update(p(7), source(1, true), Some(a.clone())).unwrap();
        assert_eq!(&c.best.unwrap().hops[..], &[a.next_hop]);
        assert_eq!(
            rib.update(p(7), source(1, true), Some(a.clone())),
            None,
            "same path again"
        );
        let b = Arc::new(attrs(2, &[65002]));
        let c = rib.update(p(7), source(2, true), Some(b.clone())).unwrap();
        assert_eq!(&c.best.unwrap().hops[..], &[a.next_hop, b.next_hop]);
        assert_eq!(
            (rib.peer_len(1), rib.peer_len(2), rib.attribute_sets()),
            (1, 1, 2)
        );
        let mut out = Changes::default();
        rib.remove_peer(&source(1, true), &mut out);
        let changes = out.to_vec();
        assert_eq!(changes.len(), 1);
        assert_eq!(&changes[0].best.as_ref().unwrap().hops[..], &[b.next_hop]);
        assert_eq!(rib.best(&p(7)).unwrap().best.source.peer, 2);
        let c = rib.update(p(7), source(2, true), None).unwrap();
        assert_eq!(c.best, None);
        assert!(rib.is_empty());
        assert_eq!(rib.attribute_sets(), 0, "unused attribute sets are freed");
    }

    fn p(i: u32) -> Prefix<u32> {
        Prefix::new_masked(i << 8, 24)
    }

    fn arb_attrs() -> impl Strategy<Value = PathAttrs> {
        (
            0u8..4,
            proptest::collection::vec(1u32..4, 0..3),
            proptest::option::of(0u32..3),
            proptest::option::of(prop_oneof![Just(100u32), Just(200)]),
            0usize..3,
        )
            .prop_map(|(nh, path, med, lp, origin)| {
                let mut a = attrs(nh, &path);
                a.med = med;
                a.local_pref = lp;
                a.origin = [Origin::Igp, Origin::Egp, Origin::Incomplete][origin];
                a
            })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u32, PeerId, Option<PathAttrs>),
        /// One UPDATE's worth: the same path (or a withdrawal) for several prefixes,
        /// repeats allowed.
        Batch(Vec<u32>, PeerId, Option<PathAttrs>),
        DropPeer(PeerId),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..6, 0u32..5, proptest::option::of(arb_attrs()))
                .prop_map(|(p, peer, a)| Op::Set(p, peer, a)),
            2 => (proptest::collection::vec(0u32..6, 0..8), 0u32..5, proptest::option::of(arb_attrs()))
                .prop_map(|(ps, peer, a)| Op::Batch(ps, peer, a)),
            1 => (0u32..5).prop_map(Op::DropPeer),
        ]
    }

    proptest! {
        /// The incremental RIB always holds what deciding from scratch over every
        /// peer's current paths gives, and reports exactly the prefixes whose decision
        /// changed.
        #[test]
        fn incremental_matches_from_scratch(ops in proptest::collection::vec(arb_op(), 1..80)) {
            let mut rib = LocRib::<u32>::new();
            // The model: (prefix, peer) -> path.
            let mut model: HashMap<(u32, PeerId), Path> = HashMap::new();
            let decide_model = |m: &HashMap<(u32, PeerId), Path>, prefix: u32| {
                let mut paths: Vec<Path> =
                    m.iter().filter(|((p, _), _)| *p == prefix).map(|(_, v)| v.clone()).collect();
                paths.sort_by_key(|p| p.source.peer);
                decide(&paths)
            };
            for op in ops {
                let before: HashMap<u32, Option<Best>> =
                    (0..6).map(|p| (p, decide_model(&model, p))).collect();
                let changes = match op {
                    Op::Set(prefix, peer, attrs) => {
                        // A peer's session is eBGP or iBGP for good: even peers are
                        // external, odd ones internal, in every operation.
                        let ebgp = peer % 2 == 0;
                        let src = source(peer, ebgp);
                        match &attrs {
                            Some(a) => { model.insert((prefix, peer), Path { source: src, attrs: Arc::new(a.clone()), since: 0 }); }
                            None => { model.remove(&(prefix, peer)); }
                        }
                        rib.update(p(prefix), src, attrs.map(Arc::new)).into_iter().collect::<Vec<_>>()
                    }
                    Op::Batch(prefixes, peer, attrs) => {
                        let src = source(peer, peer % 2 == 0);
                        let attrs = attrs.map(Arc::new);
                        for &prefix in &prefixes {
                            match &attrs {
                                Some(a) => { model.insert((prefix, peer), Path { source: src, attrs: Arc::clone(a), since: 0 }); }
                                None => { model.remove(&(prefix, peer)); }
                            }
                        }
                        let ps: Vec<Prefix<u32>> = prefixes.iter().map(|&x| p(x)).collect();
                        let mut out = Changes::default();
                        match &attrs {
                            Some(a) => rib.announce(src, a, &ps, &mut out),
                            None => rib.withdraw(src, &ps, &mut out),
                        }
                        out.to_vec()
                    }
                    Op::DropPeer(peer) => {
                        model.retain(|(_, q), _| *q != peer);
                        let mut out = Changes::default();
                        rib.remove_peer(&source(peer, peer % 2 == 0), &mut out);
                        out.to_vec()
                    }
                };
                for prefix in 0..6 {
                    let want = decide_model(&model, prefix);
                    let got = rib.best(&p(prefix));
                    // Ties among equal paths may order multipath members differently,
                    // but the best path and the member set are the same.
                    prop_assert_eq!(got.as_ref().map(|b| b.best.source.peer), want.as_ref().map(|b| b.best.source.peer));
                    let set = |b: &Option<Best>| b.as_ref().map(|b| { let mut v = b.multipath.clone(); v.sort(); v });
                    prop_assert_eq!(set(&got), set(&want));
                    let changed = changes.iter().any(|c| c.prefix == p(prefix));
                    // The reported decision is the RIB's decision.
                    if let Some(c) = changes.iter().rev().find(|c| c.prefix == p(prefix)) {
                        prop_assert_eq!(c.best.as_ref().map(|d| { let mut v = d.hops.to_vec(); v.sort(); v }), set(&want));
                    }
                    prop_assert_eq!(rib.decision(&p(prefix)).map(|d| { let mut v = d.hops.to_vec(); v.sort(); v }), set(&want));
                    let differs = set(&before[&prefix]) != set(&want)
                        || before[&prefix].as_ref().map(|b| b.best.clone()) != want.as_ref().map(|b| b.best.clone());
                    if differs {
                        prop_assert!(changed, "prefix {} changed but was not reported", prefix);
                    }
                }
                prop_assert_eq!(rib.len(), (0..6).filter(|p| model.keys().any(|(q, _)| q == p)).count());
                for peer in 0..5u32 {
                    prop_assert_eq!(rib.peer_len(peer), model.keys().filter(|(_, q)| *q == peer).count());
                    let mut got: Vec<Prefix<u32>> = rib.peer_prefixes(peer);
                    got.sort();
                    let mut want: Vec<Prefix<u32>> = model.keys().filter(|(_, q)| *q == peer).map(|(x, _)| p(*x)).collect();
                    want.sort();
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(rib.paths(&p(0)).len(), model.keys().filter(|(x, _)| *x == 0).count());
                }
                let used: std::collections::HashSet<&PathAttrs> = model.values().map(|v| &*v.attrs).collect();
                prop_assert_eq!(rib.attribute_sets(), used.len(), "attribute sets are shared and freed");
            }
        }
    }
}
