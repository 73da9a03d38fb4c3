//! Which uplink neighbours the fastpath needs, and what the kernel knows of them.
//!
//! The fastpath does not resolve neighbours on the uplink: the kernel does. This keeps
//! the wanted next hops (the configuration's static ones and those of the learned
//! routes) and their MACs as the kernel's events and dumps tell them; the control loop
//! asks the kernel to resolve the missing ones and rebuilds the snapshot when
//! [`NeighbourSync::event`] or [`NeighbourSync::replace`] says something changed.

use crate::model::Neighbours;
use fastpath::wire::ethernet::Mac;
use std::net::IpAddr;

/// Polls that read the whole table after the set of missing hops changed.
pub const MISSING_DUMPS: u32 = 10;

#[derive(Debug, Clone)]
pub struct NeighbourSync {
    /// The uplink's interface index: entries on other interfaces are not ours.
    uplink: u32,
    statics: Vec<IpAddr>,
    learned: Vec<IpAddr>,
    table: Neighbours,
    /// The missing hops at the last poll, and how many polls since they changed.
    last_missing: Vec<IpAddr>,
    polls: u32,
}

impl NeighbourSync {
    /// Follows the neighbours on interface `uplink`; `statics` are wanted always.
    pub fn new(uplink: u32, statics: Vec<IpAddr>) -> NeighbourSync {
        NeighbourSync {
            uplink,
            statics,
            learned: Vec::new(),
            table: Neighbours::new(),
            last_missing: Vec::new(),
            polls: 0,
        }
    }

    /// The resolved wanted neighbours.
    pub fn table(&self) -> &Neighbours {
        &self.table
    }

    pub fn wanted(&self, addr: &IpAddr) -> bool {
        self.statics.contains(addr) || self.learned.contains(addr)
    }

    /// The wanted next hops the kernel has not resolved (yet).
    pub fn missing(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .statics
            .iter()
            .chain(&self.learned)
            .filter(|h| !self.table.contains_key(h))
            .copied()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether this poll should read the kernel's whole table: for the first
    /// [`MISSING_DUMPS`] polls after the set of missing hops changed (a hop the kernel
    /// had resolved before it was wanted sends no event; one it resolves later does),
    /// not forever while a hop stays down.
    pub fn dump_wanted(&mut self) -> bool {
        let missing = self.missing();
        if missing != self.last_missing {
            self.last_missing = missing;
            self.polls = 0;
        }
        if self.last_missing.is_empty() {
            return false;
        }
        self.polls = self.polls.saturating_add(1);
        self.polls <= MISSING_DUMPS
    }

    /// The learned routes' next hops on the uplink are now `hops`; `true` if one of
    /// them is not resolved (the kernel should be asked at once).
    pub fn set_learned(&mut self, hops: Vec<IpAddr>) -> bool {
        self.learned = hops;
        self.learned.iter().any(|h| !self.table.contains_key(h))
    }

    /// A whole table read from the kernel (entries of the uplink only); `true` if what
    /// the fastpath forwards with changed.
    pub fn replace(&mut self, mut now: Neighbours) -> bool {
        now.retain(|ip, _| self.wanted(ip));
        if now == self.table {
            return false;
        }
        self.table = now;
        true
    }

    /// The kernel says the entry of `addr` on interface `ifindex` has `mac` now (`None`:
    /// gone or unusable); `true` if what the fastpath forwards with changed.
    pub fn event(&mut self, ifindex: u32, addr: IpAddr, mac: Option<Mac>) -> bool {
        if ifindex != self.uplink || !self.wanted(&addr) {
            return false;
        }
        match mac {
            Some(m) => self.table.insert(addr, m) != Some(m),
            None => self.table.remove(&addr).is_some(),
        }
    }

    /// The table as the stats endpoint shows it: sorted by address.
    pub fn sorted(&self) -> Vec<(IpAddr, Mac)> {
        let mut v: Vec<(IpAddr, Mac)> = self.table.iter().map(|(a, m)| (*a, *m)).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPLINK: u32 = 7;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sync() -> NeighbourSync {
        NeighbourSync::new(UPLINK, vec![ip("192.168.100.1")])
    }

    #[test]
    fn events_for_unwanted_addresses_or_other_interfaces_change_nothing() {
        let mut n = sync();
        assert!(!n.event(UPLINK, ip("192.168.100.9"), Some([1; 6])));
        assert!(!n.event(UPLINK + 1, ip("192.168.100.1"), Some([1; 6])));
        assert!(n.table().is_empty());
        assert_eq!(n.missing(), vec![ip("192.168.100.1")]);
    }

    #[test]
    fn a_changed_mac_is_a_change_the_same_one_is_not() {
        let mut n = sync();
        assert!(n.event(UPLINK, ip("192.168.100.1"), Some([1; 6])));
        assert!(!n.event(UPLINK, ip("192.168.100.1"), Some([1; 6])));
        assert!(n.event(UPLINK, ip("192.168.100.1"), Some([2; 6])));
        assert_eq!(n.table()[&ip("192.168.100.1")], [2; 6]);
        assert!(n.missing().is_empty());
        // Gone (failed, deleted): the hop is missing again.
        assert!(n.event(UPLINK, ip("192.168.100.1"), None));
        assert!(!n.event(UPLINK, ip("192.168.100.1"), None));
        assert_eq!(n.missing(), vec![ip("192.168.100.1")]);
    }

    #[test]
    fn a_missing_hop_is_looked_for_a_while_not_forever() {
        let mut n = sync();
        let dumps = (0..3 * MISSING_DUMPS).filter(|_| n.dump_wanted()).count();
        assert_eq!(dumps as u32, MISSING_DUMPS, "a static hop that stays down");
        // A new missing hop starts the count again.
        n.set_learned(vec![ip("192.168.100.12")]);
        assert!(n.dump_wanted());
        // Nothing missing: no dump.
        n.event(UPLINK, ip("192.168.100.1"), Some([1; 6]));
        n.event(UPLINK, ip("192.168.100.12"), Some([2; 6]));
        assert!(!n.dump_wanted());
    }

    #[test]
    fn learned_hops_are_wanted_while_their_routes_are() {
        let mut n = sync();
        assert!(n.set_learned(vec![ip("192.168.100.12")]));
        assert!(n.event(UPLINK, ip("192.168.100.12"), Some([3; 6])));
        assert!(!n.set_learned(vec![ip("192.168.100.12")]));
        assert_eq!(
            n.missing(),
            vec![ip("192.168.100.1")],
            "the static hop is still unresolved"
        );
        // The routes went: a dump no longer keeps the hop.
        n.set_learned(Vec::new());
        let mut dump = Neighbours::new();
        dump.insert(ip("192.168.100.12"), [3; 6]);
        dump.insert(ip("192.168.100.1"), [4; 6]);
        assert!(n.replace(dump.clone()));
        assert_eq!(n.sorted(), vec![(ip("192.168.100.1"), [4; 6])]);
        assert!(!n.replace(dump), "the same dump again changes nothing");
    }
}
