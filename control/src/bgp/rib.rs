//! The Loc-RIB: every peer's path for every prefix, and for each prefix the best path
//! by the decision process of RFC 4271 9.1.2.2, plus the paths equal to it up to the
//! router-id tie-break, which form the prefix's ECMP next-hop group (multipath).
//!
//! The decision process eliminates candidates step by step, as the RFC writes it
//! (holo's `bgp::rib` keeps the same shape), because the MED step compares only paths
//! from the same neighbouring AS and is not a total order: a sort by a pairwise
//! comparison can pick a different best than the RFC for the same paths.

use std::collections::HashMap;
use std::hash::Hash;
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

/// What changed for a prefix: its new decision, or `None` if it has no path left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<P> {
    pub prefix: P,
    pub best: Option<Best>,
}

#[derive(Debug, Default)]
struct Entry {
    /// One path per peer.
    paths: Vec<Path>,
    best: Option<Best>,
}

/// The Loc-RIB of one address family.
#[derive(Debug)]
pub struct LocRib<P> {
    entries: HashMap<P, Entry>,
    /// The prefixes each peer has a path for, for withdrawing a peer at once.
    by_peer: HashMap<PeerId, std::collections::HashSet<P>>,
}

impl<P> Default for LocRib<P> {
    fn default() -> Self {
        LocRib {
            entries: HashMap::new(),
            by_peer: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq + Hash> LocRib<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `source`'s path to `prefix` (`None`: withdraws it). Returns the change of
    /// the prefix's decision, if its best path or its ECMP group changed.
    pub fn update(
        &mut self,
        prefix: P,
        source: Source,
        attrs: Option<Arc<PathAttrs>>,
    ) -> Option<Change<P>> {
        let peer = self.by_peer.entry(source.peer).or_default();
        if attrs.is_some() {
            peer.insert(prefix);
        } else {
            peer.remove(&prefix);
        }
        self.set(prefix, source, attrs)
    }

    /// The entry side of [`LocRib::update`]; `by_peer` is the caller's.
    fn set(
        &mut self,
        prefix: P,
        source: Source,
        attrs: Option<Arc<PathAttrs>>,
    ) -> Option<Change<P>> {
        let entry = self.entries.entry(prefix).or_default();
        let at = entry
            .paths
            .iter()
            .position(|p| p.source.peer == source.peer);
        match (at, attrs) {
            (Some(i), Some(attrs)) => {
                if entry.paths[i].attrs != attrs {
                    entry.paths[i] = Path {
                        source,
                        attrs,
                        since: clock(),
                    };
                }
            }
            (None, Some(attrs)) => entry.paths.push(Path {
                source,
                attrs,
                since: clock(),
            }),
            (Some(i), None) => {
                entry.paths.swap_remove(i);
            }
            (None, None) => {
                if entry.paths.is_empty() {
                    self.entries.remove(&prefix);
                }
                return None;
            }
        }
        let best = decide(&entry.paths);
        let changed = best != entry.best;
        entry.best = best.clone();
        if entry.paths.is_empty() {
            self.entries.remove(&prefix);
        }
        changed.then_some(Change { prefix, best })
    }

    /// Withdraws every path of `peer` (its session went down); returns the changes.
    pub fn remove_peer(&mut self, peer: &Source) -> Vec<Change<P>> {
        let prefixes = self.by_peer.remove(&peer.peer).unwrap_or_default();
        prefixes
            .into_iter()
            .filter_map(|prefix| self.set(prefix, *peer, None))
            .collect()
    }

    /// How many prefixes `peer` has a path for.
    pub fn peer_len(&self, peer: PeerId) -> usize {
        self.by_peer.get(&peer).map_or(0, |s| s.len())
    }

    /// The prefixes `peer` has a path for.
    pub fn peer_prefixes(&self, peer: PeerId) -> Vec<P> {
        self.by_peer
            .get(&peer)
            .map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    /// The decision for `prefix`.
    pub fn best(&self, prefix: &P) -> Option<&Best> {
        self.entries.get(prefix)?.best.as_ref()
    }

    /// Every path to `prefix`.
    pub fn paths(&self, prefix: &P) -> &[Path] {
        self.entries.get(prefix).map_or(&[], |e| &e.paths)
    }

    /// Prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every prefix with its decision.
    pub fn iter(&self) -> impl Iterator<Item = (&P, &Best)> {
        self.entries
            .iter()
            .filter_map(|(p, e)| e.best.as_ref().map(|b| (p, b)))
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
        let c = rib.update(7, source(1, true), Some(a.clone())).unwrap();
        assert_eq!(c.best.unwrap().multipath, vec![a.next_hop]);
        assert_eq!(
            rib.update(7, source(1, true), Some(a.clone())),
            None,
            "same path again"
        );
        let b = Arc::new(attrs(2, &[65002]));
        let c = rib.update(7, source(2, true), Some(b.clone())).unwrap();
        assert_eq!(c.best.unwrap().multipath, vec![a.next_hop, b.next_hop]);
        let changes = rib.remove_peer(&source(1, true));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].best.as_ref().unwrap().best.source.peer, 2);
        let c = rib.update(7, source(2, true), None).unwrap();
        assert_eq!(c.best, None);
        assert!(rib.is_empty());
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
        DropPeer(PeerId),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..6, 0u32..5, proptest::option::of(arb_attrs()))
                .prop_map(|(p, peer, a)| Op::Set(p, peer, a)),
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
                        rib.update(prefix, src, attrs.map(Arc::new)).into_iter().collect::<Vec<_>>()
                    }
                    Op::DropPeer(peer) => {
                        model.retain(|(_, q), _| *q != peer);
                        rib.remove_peer(&source(peer, peer % 2 == 0))
                    }
                };
                for prefix in 0..6 {
                    let want = decide_model(&model, prefix);
                    let got = rib.best(&prefix).cloned();
                    // Ties among equal paths may order multipath members differently,
                    // but the best path and the member set are the same.
                    prop_assert_eq!(got.as_ref().map(|b| b.best.source.peer), want.as_ref().map(|b| b.best.source.peer));
                    let set = |b: &Option<Best>| b.as_ref().map(|b| { let mut v = b.multipath.clone(); v.sort(); v });
                    prop_assert_eq!(set(&got), set(&want));
                    let changed = changes.iter().any(|c| c.prefix == prefix);
                    let differs = set(&before[&prefix]) != set(&want)
                        || before[&prefix].as_ref().map(|b| b.best.clone()) != want.as_ref().map(|b| b.best.clone());
                    if differs {
                        prop_assert!(changed, "prefix {} changed but was not reported", prefix);
                    }
                }
                prop_assert_eq!(rib.len(), (0..6).filter(|p| model.keys().any(|(q, _)| q == p)).count());
            }
        }
    }
}
