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

mod changes;
mod decision;
mod path;
mod storage;

pub use changes::*;
pub use decision::*;
pub use path::*;
pub use storage::*;

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
