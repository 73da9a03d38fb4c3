//! Next-hop reachability (RFC 4271 9.1.2): a path whose NEXT_HOP this node cannot reach
//! is not eligible for the decision process. Without this check a directly connected
//! eBGP peer that sends a next hop off its subnet wins the best path, is installed,
//! and blackholes its prefix.
//!
//! How a next hop is reached:
//! - on a connected subnet (the uplink's): always;
//! - from a peer one hop away (eBGP without multihop), only so: its next hops must
//!   be on the shared link, as BIRD's `gateway direct` and FRR's connected check
//!   require;
//! - otherwise (iBGP, multihop eBGP) recursively: through a static route of the
//!   configuration, or through the longest learned route that covers it, whose own
//!   next hop is reached in turn (a bounded number of levels, and never through a
//!   route whose own next hop is the one being resolved: that resolves nothing).
//!   Default routes resolve nothing, as in FRR without `resolve-via-default`.
//!
//! The speaker keeps the paths that fail aside and puts them in when their next hop
//! becomes reachable (a covering route is learned), and takes paths out whose
//! recursive next hop stops being reachable (the covering route is withdrawn).

use super::rib::{PathAttrs, PeerId, Rib};
use crate::config::Cidr;
use lpm::{Prefix4, Prefix6};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// How many learned routes a recursive next hop may resolve through, one after the
/// other.
const MAX_DEPTH: usize = 4;

/// What the speaker knows of this node's own reachability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    /// The subnets of the node's interfaces.
    pub connected: Vec<Cidr>,
    /// The prefixes of the configuration's static routes.
    pub statics: Vec<Cidr>,
}

/// How a next hop is reached, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// On a connected subnet: it cannot change while the configuration stays.
    Connected,
    /// Through a static route or learned routes: checked again when routes change.
    Recursive,
}

/// A next hop that can be reached, and the learned routes it is reached through
/// (nearest first): a path for one of those prefixes would resolve through itself
/// (RFC 4271 9.1.2.1) and is not eligible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub how: Resolution,
    pub through: Vec<Cidr>,
}

impl Resolved {
    /// Whether a path for `prefix` may use this next hop.
    pub fn allows(&self, prefix: &Cidr) -> bool {
        !self.through.contains(prefix)
    }
}

impl Reachability {
    fn on_link(&self, a: IpAddr) -> bool {
        self.connected.iter().any(|c| c.contains(a))
    }

    /// How `next_hop` is reached for a path from a peer that is `direct` (one hop
    /// away), given the Loc-RIB; `None` if it is not.
    pub fn resolve(&self, next_hop: IpAddr, direct: bool, rib: &Rib) -> Option<Resolved> {
        if self.on_link(next_hop) {
            return Some(Resolved {
                how: Resolution::Connected,
                through: Vec::new(),
            });
        }
        if direct {
            return None;
        }
        let mut through = Vec::new();
        self.recursive(next_hop, rib, MAX_DEPTH, &mut through)
            .then_some(Resolved {
                how: Resolution::Recursive,
                through,
            })
    }

    fn recursive(
        &self,
        next_hop: IpAddr,
        rib: &Rib,
        depth: usize,
        through: &mut Vec<Cidr>,
    ) -> bool {
        let specific = |c: &Cidr| c.len() > 0 && c.contains(next_hop);
        if self.statics.iter().any(specific) {
            return true;
        }
        if depth == 0 {
            return false;
        }
        match covering(rib, next_hop) {
            Some((prefix, via)) if via != next_hop && !through.contains(&prefix) => {
                through.push(prefix);
                self.on_link(via) || self.recursive(via, rib, depth - 1, through)
            }
            _ => false,
        }
    }
}

/// The longest learned route covering `a` (the default route excepted), and the next
/// hop of its best path.
fn covering(rib: &Rib, a: IpAddr) -> Option<(Cidr, IpAddr)> {
    match a {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            (1..=32).rev().find_map(|len| {
                let p = Prefix4::new_masked(a, len);
                rib.v4
                    .best(&p)
                    .map(|b| (Cidr::V4(p), b.best.attrs.next_hop))
            })
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            (1..=128).rev().find_map(|len| {
                let p = Prefix6::new_masked(a, len);
                rib.v6
                    .best(&p)
                    .map(|b| (Cidr::V6(p), b.best.attrs.next_hop))
            })
        }
    }
}

/// Paths held out of the Loc-RIB because their next hop cannot be reached, by peer and
/// next hop, so that a change of the routes costs one resolution per next hop, not one
/// per path. A peer has one path per prefix: holding a new one replaces the old.
#[derive(Debug, Default)]
pub struct Held {
    by_next_hop: HashMap<(PeerId, IpAddr), HashMap<Cidr, Arc<PathAttrs>>>,
    /// Where each held (peer, prefix) is.
    at: HashMap<(PeerId, Cidr), IpAddr>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Holds a peer's path, replacing one it held for the prefix.
    pub fn hold(&mut self, peer: PeerId, prefix: Cidr, attrs: Arc<PathAttrs>) {
        self.forget(peer, &prefix);
        self.at.insert((peer, prefix), attrs.next_hop);
        self.by_next_hop
            .entry((peer, attrs.next_hop))
            .or_default()
            .insert(prefix, attrs);
    }

    /// Drops what is held for a peer's prefix (withdrawn, or replaced by an eligible
    /// path). Returns whether there was one.
    pub fn forget(&mut self, peer: PeerId, prefix: &Cidr) -> bool {
        let Some(nh) = self.at.remove(&(peer, *prefix)) else {
            return false;
        };
        if let Some(m) = self.by_next_hop.get_mut(&(peer, nh)) {
            m.remove(prefix);
            if m.is_empty() {
                self.by_next_hop.remove(&(peer, nh));
            }
        }
        true
    }

    /// Drops everything held for a peer.
    pub fn forget_peer(&mut self, peer: PeerId) {
        self.at.retain(|(p, _), _| *p != peer);
        self.by_next_hop.retain(|(p, _), _| *p != peer);
    }

    /// The (peer, next hop) pairs something is held for.
    pub fn next_hops(&self) -> Vec<(PeerId, IpAddr)> {
        self.by_next_hop.keys().copied().collect()
    }

    /// The paths held for a (peer, next hop).
    pub fn paths(&self, peer: PeerId, next_hop: IpAddr) -> Vec<(Cidr, Arc<PathAttrs>)> {
        self.by_next_hop
            .get(&(peer, next_hop))
            .map(|m| m.iter().map(|(p, a)| (*p, Arc::clone(a))).collect())
            .unwrap_or_default()
    }

    /// How many paths are held for a peer.
    pub fn count(&self, peer: PeerId) -> usize {
        self.at.keys().filter(|(p, _)| *p == peer).count()
    }

    /// Every held path.
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &Cidr, &Arc<PathAttrs>)> + '_ {
        self.by_next_hop
            .iter()
            .flat_map(|((peer, _), m)| m.iter().map(move |(p, a)| (*peer, p, a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::rib::{Origin, PathAttrs, Source};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn learn(rib: &mut Rib, prefix: &str, next_hop: &str) {
        let source = Source {
            peer: 1,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            address: ip("192.168.50.1"),
            ebgp: false,
            local: false,
        };
        let attrs = PathAttrs {
            origin: Origin::Igp,
            as_path: vec![],
            next_hop: ip(next_hop),
            med: None,
            local_pref: Some(100),
            communities: vec![],
            ext_communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: vec![],
        };
        rib.update(cidr(prefix), source, Some(Arc::new(attrs)));
    }

    fn reach() -> Reachability {
        Reachability {
            connected: vec![cidr("192.168.50.0/24"), cidr("fd00:50::/64")],
            statics: vec![cidr("192.168.60.0/24"), cidr("0.0.0.0/0")],
        }
    }

    #[test]
    fn connected_next_hops_reach_from_every_peer_and_others_only_recursively() {
        let rib = Rib::new();
        let r = reach();
        let how = |nh: &str, direct: bool| r.resolve(ip(nh), direct, &rib).map(|x| x.how);
        assert_eq!(how("192.168.50.7", true), Some(Resolution::Connected));
        assert_eq!(how("fd00:50::9", false), Some(Resolution::Connected));
        // Off the link: never from a direct peer; through the static route otherwise.
        assert_eq!(how("192.168.60.2", true), None);
        assert_eq!(how("192.168.60.2", false), Some(Resolution::Recursive));
        // The static default route resolves nothing.
        assert_eq!(r.resolve(ip("203.0.113.1"), false, &rib), None);
    }

    #[test]
    fn held_paths_are_found_by_next_hop_and_replaced_per_prefix() {
        let attrs = |nh: &str| {
            let mut rib = Rib::new();
            learn(&mut rib, "10.0.0.0/8", nh);
            rib.paths(&cidr("10.0.0.0/8"))[0].attrs.clone()
        };
        let mut h = Held::default();
        h.hold(1, cidr("172.16.1.0/24"), attrs("198.51.100.1"));
        h.hold(1, cidr("172.16.2.0/24"), attrs("198.51.100.1"));
        h.hold(2, cidr("172.16.1.0/24"), attrs("198.51.100.1"));
        assert_eq!((h.count(1), h.count(2)), (2, 1));
        assert_eq!(h.paths(1, ip("198.51.100.1")).len(), 2);
        // The same prefix again with another next hop replaces the first.
        h.hold(1, cidr("172.16.1.0/24"), attrs("198.51.100.9"));
        assert_eq!(h.count(1), 2);
        assert_eq!(h.paths(1, ip("198.51.100.1")).len(), 1);
        let mut pairs = h.next_hops();
        pairs.sort();
        assert_eq!(pairs.len(), 3);
        assert!(h.forget(1, &cidr("172.16.2.0/24")));
        assert!(!h.forget(1, &cidr("172.16.2.0/24")));
        h.forget_peer(1);
        assert_eq!((h.count(1), h.iter().count()), (0, 1));
        h.forget_peer(2);
        assert!(h.is_empty());
    }

    #[test]
    fn learned_routes_resolve_recursively_but_not_through_themselves() {
        let mut rib = Rib::new();
        let r = reach();
        assert_eq!(r.resolve(ip("198.51.100.1"), false, &rib), None);
        learn(&mut rib, "198.51.100.0/24", "192.168.50.1");
        let via = r.resolve(ip("198.51.100.1"), false, &rib).unwrap();
        assert_eq!(via.how, Resolution::Recursive);
        assert_eq!(via.through, vec![cidr("198.51.100.0/24")]);
        // A path for 198.51.100.0/24 itself may not use it (RFC 4271 9.1.2.1).
        assert!(!via.allows(&cidr("198.51.100.0/24")) && via.allows(&cidr("172.16.0.0/16")));
        // Two levels: 203.0.113.9 via 198.51.100.1 via the link.
        learn(&mut rib, "203.0.113.0/24", "198.51.100.1");
        let two = r.resolve(ip("203.0.113.9"), false, &rib).unwrap();
        assert_eq!(
            two.through,
            vec![cidr("203.0.113.0/24"), cidr("198.51.100.0/24")]
        );
        // A route whose next hop lies inside itself resolves nothing.
        learn(&mut rib, "172.16.0.0/16", "172.16.0.1");
        assert_eq!(r.resolve(ip("172.16.0.1"), false, &rib), None);
        // A learned default route resolves nothing either.
        learn(&mut rib, "0.0.0.0/0", "192.168.50.1");
        assert_eq!(r.resolve(ip("100.64.0.1"), false, &rib), None);
        // A loop of two routes each resolving the other's next hop ends at the depth.
        learn(&mut rib, "10.1.0.0/16", "10.2.0.1");
        learn(&mut rib, "10.2.0.0/16", "10.1.0.1");
        assert_eq!(r.resolve(ip("10.1.0.1"), false, &rib), None);
    }
}
