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

use super::rib::Rib;
use crate::config::Cidr;
use lpm::{Prefix4, Prefix6};
use std::net::IpAddr;

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

impl Reachability {
    fn on_link(&self, a: IpAddr) -> bool {
        self.connected.iter().any(|c| c.contains(a))
    }

    /// How `next_hop` is reached for a path from a peer that is `direct` (one hop
    /// away), given the Loc-RIB; `None` if it is not.
    pub fn resolve(&self, next_hop: IpAddr, direct: bool, rib: &Rib) -> Option<Resolution> {
        if self.on_link(next_hop) {
            return Some(Resolution::Connected);
        }
        if direct {
            return None;
        }
        self.recursive(next_hop, rib, MAX_DEPTH)
            .then_some(Resolution::Recursive)
    }

    fn recursive(&self, next_hop: IpAddr, rib: &Rib, depth: usize) -> bool {
        let specific = |c: &Cidr| c.len() > 0 && c.contains(next_hop);
        if self.statics.iter().any(specific) {
            return true;
        }
        if depth == 0 {
            return false;
        }
        match covering_next_hop(rib, next_hop) {
            Some(via) if via != next_hop => {
                self.on_link(via) || self.recursive(via, rib, depth - 1)
            }
            _ => false,
        }
    }
}

/// The next hop of the best path of the longest learned route covering `a` (the
/// default route excepted).
fn covering_next_hop(rib: &Rib, a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            (1..=32).rev().find_map(|len| {
                rib.v4
                    .best(&Prefix4::new_masked(a, len))
                    .map(|b| b.best.attrs.next_hop)
            })
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            (1..=128).rev().find_map(|len| {
                rib.v6
                    .best(&Prefix6::new_masked(a, len))
                    .map(|b| b.best.attrs.next_hop)
            })
        }
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
        assert_eq!(
            r.resolve(ip("192.168.50.7"), true, &rib),
            Some(Resolution::Connected)
        );
        assert_eq!(
            r.resolve(ip("fd00:50::9"), false, &rib),
            Some(Resolution::Connected)
        );
        // Off the link: never from a direct peer; through the static route otherwise.
        assert_eq!(r.resolve(ip("192.168.60.2"), true, &rib), None);
        assert_eq!(
            r.resolve(ip("192.168.60.2"), false, &rib),
            Some(Resolution::Recursive)
        );
        // The static default route resolves nothing.
        assert_eq!(r.resolve(ip("203.0.113.1"), false, &rib), None);
    }

    #[test]
    fn learned_routes_resolve_recursively_but_not_through_themselves() {
        let mut rib = Rib::new();
        let r = reach();
        assert_eq!(r.resolve(ip("198.51.100.1"), false, &rib), None);
        learn(&mut rib, "198.51.100.0/24", "192.168.50.1");
        assert_eq!(
            r.resolve(ip("198.51.100.1"), false, &rib),
            Some(Resolution::Recursive)
        );
        // Two levels: 203.0.113.9 via 198.51.100.1 via the link.
        learn(&mut rib, "203.0.113.0/24", "198.51.100.1");
        assert!(r.resolve(ip("203.0.113.9"), false, &rib).is_some());
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
