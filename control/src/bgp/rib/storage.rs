//! The storage of one family's Loc-RIB: a 16-byte slot per prefix in an
//! open-addressing table ([`super::super::slots`]), interned attribute sets and
//! next-hop groups, the decision kept per prefix.

use super::*;

/// The peer slot that marks a prefix with more than one path.
pub(super) const MULTI: u32 = 0x00ff_ffff;

/// One path as the table keeps it: numbers into the peer and attribute tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PathRef {
    peer: u32,
    attrs: u32,
    since: u32,
}

/// A prefix's entry, 16 bytes for IPv4: most prefixes have one path, kept inline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot<A> {
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
pub(super) const EMPTY_LEN: u32 = 0xff;

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
pub(super) struct Multi {
    paths: Vec<PathRef>,
    /// Index of the best in `paths`.
    best: usize,
    hops: Option<Arc<[IpAddr]>>,
}

/// An interned attribute set and the one-hop group of its next hop.
#[derive(Debug)]
pub(super) struct AttrEntry {
    attrs: Arc<PathAttrs>,
    /// Its hash in `LocRib::attr_index`.
    hash: u64,
    hops: Arc<[IpAddr]>,
    /// Paths using it; at zero the entry is freed.
    refs: u32,
}

#[derive(Debug)]
pub(super) struct PeerSlot {
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
