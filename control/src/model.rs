//! The snapshot builder for the static source: turns a node's [`Config`], its ports'
//! links and the neighbours the kernel has resolved into forwarding [`Tables`].
//!
//! Ports are numbered: 0 the uplink, 1 the host port, then the pods' interfaces in
//! the configuration's order ([`port_plan`]). The FIBs hold:
//! - every local pod address (/32, /128) → that pod's port;
//! - the node's pod CIDRs → unreachable (an address no pod has);
//! - the node's own addresses → the host port, and the uplink's subnets → the host port
//!   (the kernel owns its link: other hosts on it, ARP, BGP);
//! - other nodes' pod CIDRs → that node's address on the uplink;
//! - static routes → their next hops on the uplink (several: ECMP).

use crate::bgp::rib::FibBatch;
use crate::config::{Cidr, Config};
use fastpath::ecmp::NextHopGroup;
use fastpath::snapshot::{
    Adjacency, Gateway, LocalPod, NextHopEntry, PortId, PortInfo, PortRole, Tables,
};
use fastpath::steer::SteerMode;
use fastpath::wire::ethernet::Mac;
use hashbrown::{HashMap, HashSet};
use lpm::{Lpm4, Lpm6, LpmBuilder, NextHop, Prefix4, Prefix6};
use std::net::IpAddr;

pub const UPLINK_PORT: PortId = 0;
pub const HOST_PORT: PortId = 1;

/// What the fastpath needs to know of a port's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: Mac,
    pub mtu: u16,
}

/// The neighbours the kernel has resolved on the uplink.
pub type Neighbours = std::collections::HashMap<IpAddr, Mac>;

/// The ports, in [`PortId`] order, with the steering each one gets.
pub fn port_plan(c: &Config) -> Vec<(String, SteerMode, PortRole)> {
    let mut plan = vec![
        (
            c.uplink.interface.clone(),
            SteerMode::Cluster,
            PortRole::Uplink,
        ),
        (
            c.host_port.interface.clone(),
            SteerMode::All,
            PortRole::Host,
        ),
    ];
    plan.extend(
        c.pods
            .iter()
            .map(|p| (p.interface.clone(), SteerMode::All, PortRole::Pod)),
    );
    plan
}

/// The destinations the uplink's steering program sends to the fastpath.
pub fn uplink_destinations(c: &Config) -> (Vec<Prefix4>, Vec<Prefix6>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for p in &c.pod_cidrs {
        match p {
            Cidr::V4(p) => v4.push(*p),
            Cidr::V6(p) => v6.push(*p),
        }
    }
    // The VIPs of the services served here.
    for s in c.services.iter().filter(|s| !s.ports.is_empty()) {
        for ip in s
            .cluster_ips
            .iter()
            .chain(&s.external_ips)
            .chain(&s.load_balancer_ips)
        {
            match ip {
                IpAddr::V4(a) => v4.push(Prefix4::new_masked(u32::from(*a), 32)),
                IpAddr::V6(a) => v6.push(Prefix6::new_masked(u128::from(*a), 128)),
            }
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    (v4, v6)
}

/// The next hops the uplink needs MACs for.
pub fn uplink_next_hops(c: &Config) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = c.nodes.iter().map(|n| n.ip).collect();
    for r in &c.routes {
        v.extend_from_slice(r.via.as_slice());
    }
    v.sort();
    v.dedup();
    v
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Hop {
    Pod(PortId, Mac),
    Host,
    Unreachable,
    Neighbour(IpAddr),
}

const MAX_GROUPS: usize = u16::MAX as usize;

/// Why the forwarding tables could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("too many next-hop groups (at most {MAX_GROUPS} distinct ECMP sets)")]
    TooManyGroups,
    #[error("{planned} ports planned but {given} links given")]
    Links { planned: usize, given: usize },
    #[error("next-hop group: {0}")]
    Group(#[from] fastpath::ecmp::GroupError),
    #[error("services: {0}")]
    Services(#[from] nat::frontend::FrontendError),
}

/// Interns next hops and groups, numbering them in first-use order. Groups made for
/// learned routes are counted and their numbers reused once no route uses them.
#[derive(Debug, Default)]
struct Interner {
    hops: HashMap<Hop, u32>,
    hop_list: Vec<Hop>,
    groups: HashMap<Vec<u32>, u16>,
    group_list: Vec<Vec<u32>>,
    /// Groups below this number are the configuration's: never counted nor freed.
    fixed: usize,
    /// Per group: the learned routes using it.
    refs: Vec<u32>,
    free: Vec<u16>,
    /// Per neighbour address: the live learned groups that name it.
    hop_users: HashMap<IpAddr, u32>,
}

impl Interner {
    fn hop(&mut self, h: Hop) -> u32 {
        if let Some(&i) = self.hops.get(&h) {
            return i;
        }
        let i = self.hop_list.len() as u32;
        self.hops.insert(h.clone(), i);
        self.hop_list.push(h);
        i
    }

    fn group(&mut self, hops: Vec<Hop>) -> Result<NextHop, BuildError> {
        let mut members: Vec<u32> = hops.into_iter().map(|h| self.hop(h)).collect();
        members.sort_unstable();
        members.dedup();
        if let Some(&g) = self.groups.get(&members) {
            return NextHop::new(g).ok_or(BuildError::TooManyGroups);
        }
        let g = match self.free.pop() {
            Some(g) => {
                self.group_list[usize::from(g)] = members.clone();
                g
            }
            None if self.group_list.len() < MAX_GROUPS => {
                self.group_list.push(members.clone());
                self.refs.push(0);
                (self.group_list.len() - 1) as u16
            }
            None => return Err(BuildError::TooManyGroups),
        };
        self.groups.insert(members, g);
        NextHop::new(g).ok_or(BuildError::TooManyGroups)
    }

    /// The group of a learned route's next hops, counted as used once more.
    fn learned(&mut self, hops: &[IpAddr]) -> Result<NextHop, BuildError> {
        let g = self.group(hops.iter().map(|&h| Hop::Neighbour(h)).collect())?;
        let i = g.index();
        if i >= self.fixed {
            if self.refs[i] == 0 {
                for h in hops {
                    *self.hop_users.entry(*h).or_default() += 1;
                }
            }
            self.refs[i] += 1;
        }
        Ok(g)
    }

    /// One more learned route uses group `g` (already counted at least once).
    fn retain(&mut self, g: NextHop) {
        let i = g.index();
        if i >= self.fixed {
            self.refs[i] += 1;
        }
    }

    /// A learned route stopped using group `g`.
    fn release(&mut self, g: NextHop) {
        let i = g.index();
        if i < self.fixed || self.refs[i] == 0 {
            return;
        }
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            let members = self.group_list[i].clone();
            self.groups.remove(&members);
            self.free.push(i as u16);
            for m in members {
                if let Hop::Neighbour(a) = self.hop_list[m as usize] {
                    if let Some(n) = self.hop_users.get_mut(&a) {
                        *n -= 1;
                        if *n == 0 {
                            self.hop_users.remove(&a);
                        }
                    }
                }
            }
        }
    }
}

/// The forwarding state of a node, kept up to date as a routing protocol's best paths
/// change: the configuration's routes are set once, learned routes are staged into the
/// LPM builders change by change, and [`Fib::tables`] publishes them (only the
/// regions of the trie that changed are rebuilt). A static route for the same prefix
/// wins over a learned one (as a lower administrative distance would); a learned route
/// for one of the node's own pod CIDRs replaces its unreachable route.
#[derive(Debug)]
pub struct Fib {
    it: Interner,
    b4: LpmBuilder<u32>,
    b6: LpmBuilder<u128>,
    /// Prefixes a static route holds.
    statics: HashSet<Cidr>,
    /// The node's pod CIDRs' routes, back when a learned route for them goes.
    base: HashMap<Cidr, NextHop>,
    /// Learned routes for prefixes a static route holds.
    shadowed: HashSet<Cidr>,
    /// Learned routes in the builders.
    learned: usize,
    pods: Vec<LocalPod>,
}

impl Fib {
    /// The configuration's routes, no learned ones.
    pub fn new(c: &Config) -> Result<Fib, BuildError> {
        let mut it = Interner::default();
        let mut fib4: Vec<(Prefix4, NextHop)> = Vec::new();
        let mut fib6: Vec<(Prefix6, NextHop)> = Vec::new();
        let mut statics = HashSet::new();
        let mut add = |cidr: Cidr, nh: NextHop, fixed: bool| {
            if fixed {
                statics.insert(cidr);
            }
            match cidr {
                Cidr::V4(p) => fib4.push((p, nh)),
                Cidr::V6(p) => fib6.push((p, nh)),
            }
        };
        let host_cidr = |ip: IpAddr| match ip {
            IpAddr::V4(a) => Cidr::V4(Prefix4::new_masked(u32::from(a), 32)),
            IpAddr::V6(a) => Cidr::V6(Prefix6::new_masked(u128::from(a), 128)),
        };
        // Broad first, specific last: the builder keeps the last route for a prefix.
        let mut base = HashMap::new();
        for p in &c.pod_cidrs {
            let g = it.group(vec![Hop::Unreachable])?;
            base.insert(*p, g);
            add(*p, g, false);
        }
        for r in &c.routes {
            let hops = r
                .via
                .as_slice()
                .iter()
                .map(|&v| Hop::Neighbour(v))
                .collect();
            add(r.prefix, it.group(hops)?, true);
        }
        for n in &c.nodes {
            for p in &n.pod_cidrs {
                add(*p, it.group(vec![Hop::Neighbour(n.ip)])?, true);
            }
        }
        for a in &c.uplink.addresses {
            add(a.subnet(), it.group(vec![Hop::Host])?, true);
            add(host_cidr(a.addr), it.group(vec![Hop::Host])?, true);
        }
        let mut pods = Vec::new();
        for (i, pod) in c.pods.iter().enumerate() {
            let port = (2 + i) as PortId;
            let group = it.group(vec![Hop::Pod(port, pod.mac.0)])?;
            for &ip in &pod.ips {
                add(host_cidr(ip), group, true);
            }
            pods.push(LocalPod {
                addrs: pod.ips.clone(),
                port,
                mac: pod.mac.0,
            });
        }
        base.retain(|p, _| !statics.contains(p));
        it.fixed = it.group_list.len();
        Ok(Fib {
            it,
            b4: LpmBuilder::from_routes(fib4),
            b6: LpmBuilder::from_routes(fib6),
            statics,
            base,
            shadowed: HashSet::new(),
            learned: 0,
            pods,
        })
    }

    fn stage(&mut self, prefix: Cidr, nh: Option<NextHop>) -> Option<NextHop> {
        match prefix {
            Cidr::V4(p) => self.b4.stage(p, nh),
            Cidr::V6(p) => self.b6.stage(p, nh),
        }
    }

    /// Stages a batch of Loc-RIB changes (the next [`Fib::tables`] holds them), looking
    /// each of the batch's groups up once; returns how many changed a route. A change
    /// that cannot be taken (no next-hop group left) is logged and skipped.
    pub fn apply_batch(&mut self, batch: &FibBatch) -> usize {
        let mut groups: Vec<Result<NextHop, BuildError>> = batch
            .groups
            .iter()
            .map(|hops| self.it.learned(hops))
            .collect();
        let mut changed = 0;
        let mut refused = 0usize;
        let changes = batch
            .v4
            .iter()
            .map(|&(p, g)| (Cidr::V4(p), g))
            .chain(batch.v6.iter().map(|&(p, g)| (Cidr::V6(p), g)));
        for (prefix, g) in changes {
            let new = match groups.get(g as usize) {
                None => None,
                Some(Ok(nh)) => {
                    // One more route on the group (the lookup above took the first).
                    self.it.retain(*nh);
                    Some(*nh)
                }
                Some(Err(e)) => {
                    if refused == 0 {
                        tracing::error!(%prefix, error = %e, "learned route not installed");
                    }
                    refused += 1;
                    continue;
                }
            };
            if self.set_learned(prefix, new) {
                changed += 1;
            }
        }
        // Give back the references the lookups took.
        for nh in groups.drain(..).flatten() {
            self.it.release(nh);
        }
        if refused > 0 {
            tracing::error!(routes = refused, "learned routes not installed");
        }
        changed
    }

    /// Sets the learned route of `prefix` to group `new` (whose reference the caller
    /// took) or removes it; says whether the table changed.
    fn set_learned(&mut self, prefix: Cidr, new: Option<NextHop>) -> bool {
        if self.statics.contains(&prefix) {
            if let Some(nh) = new {
                self.it.release(nh);
                self.shadowed.insert(prefix);
            } else {
                self.shadowed.remove(&prefix);
            }
            return false;
        }
        let base = self.base.get(&prefix).copied();
        let new = new.or(base);
        let old = self.stage(prefix, new);
        let old_learned = old.filter(|&o| Some(o) != base);
        if let Some(o) = old_learned {
            self.it.release(o);
        }
        let learned = new.is_some() && new != base;
        match (learned, old_learned.is_some()) {
            (true, false) => self.learned += 1,
            (false, true) => self.learned -= 1,
            _ => {}
        }
        old != new
    }

    /// Learned routes (those a static route shadows included).
    pub fn learned_len(&self) -> usize {
        self.learned + self.shadowed.len()
    }

    /// Every next hop the learned routes use (the uplink must resolve them), in order.
    pub fn learned_next_hops(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.it.hop_users.keys().copied().collect();
        v.sort();
        v
    }

    /// The tables holding every change applied so far. `links` are the ports'
    /// interfaces in [`port_plan`] order; `kernel_mac` is the MAC of the host port's
    /// kernel end.
    pub fn tables(
        &mut self,
        c: &Config,
        links: &[Link],
        kernel_mac: Mac,
        neighbours: &Neighbours,
        proxy: &crate::services::Proxy,
    ) -> Result<Tables, BuildError> {
        let plan = port_plan(c);
        if links.len() != plan.len() {
            return Err(BuildError::Links {
                planned: plan.len(),
                given: links.len(),
            });
        }
        let uplink = &links[usize::from(UPLINK_PORT)];
        let (fib4, fib6) = (self.b4.commit(), self.b6.commit());
        let on_link = |a: IpAddr| c.uplink.addresses.iter().any(|x| x.subnet().contains(a));
        let resolver = Resolver {
            hops: &self.it.hop_list,
            groups: &self.it.group_list,
            fib4: &fib4,
            fib6: &fib6,
            on_link: &on_link,
            links,
            uplink_mac: uplink.mac,
            neighbours,
        };
        let next_hops = (0..self.it.hop_list.len())
            .map(|i| resolver.entry(i, RECURSION_DEPTH))
            .collect();
        let groups = self
            .it
            .group_list
            .iter()
            .map(|members| {
                let weighted: Vec<(u32, u32)> = members.iter().map(|&m| (m, 1)).collect();
                NextHopGroup::new(&weighted).map_err(BuildError::Group)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_group = (!groups.is_empty())
            .then(|| NextHop::new((groups.len() - 1) as u16))
            .flatten();
        let first = |v6: bool| {
            c.pod_cidrs
                .iter()
                .find(|p| matches!(p, Cidr::V6(_)) == v6)
                .map(Cidr::first_host)
        };
        let gateway = Gateway {
            ipv4: c.gateway.ipv4.or_else(|| match first(false) {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            }),
            ipv6: c.gateway.ipv6.or_else(|| match first(true) {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            }),
        };
        let ports = plan
            .iter()
            .zip(links)
            .map(|((_, _, role), l)| PortInfo {
                mac: l.mac,
                mtu: l.mtu,
                role: *role,
            })
            .collect();
        Ok(Tables {
            fib4,
            fib6,
            max_group,
            groups,
            next_hops,
            pods: self.pods.clone(),
            node_addrs: c.uplink.addresses.iter().map(|a| a.addr).collect(),
            gateway,
            ports,
            host: Some(Adjacency {
                port: HOST_PORT,
                src_mac: links[usize::from(HOST_PORT)].mac,
                dst_mac: kernel_mac,
            }),
            services: proxy.services(c)?,
        })
    }
}

/// How many routes a learned next hop off the uplink's subnets may be resolved through.
const RECURSION_DEPTH: usize = 4;

/// Turns the interned next hops into the fastpath's entries. A learned next hop that
/// is not on the uplink's subnets (a multihop or iBGP peer's) is resolved recursively
/// through the FIB: it forwards as the first member of the group of the route that
/// covers it (a static route, or a learned one), so its packets go to a neighbour the
/// node can reach instead of being punted to a kernel whose own route for them points
/// back at the fastpath.
struct Resolver<'a> {
    hops: &'a [Hop],
    groups: &'a [Vec<u32>],
    fib4: &'a Lpm4,
    fib6: &'a Lpm6,
    on_link: &'a dyn Fn(IpAddr) -> bool,
    links: &'a [Link],
    uplink_mac: Mac,
    neighbours: &'a Neighbours,
}

impl Resolver<'_> {
    fn entry(&self, hop: usize, depth: usize) -> NextHopEntry {
        match self.hops[hop] {
            Hop::Pod(port, mac) => NextHopEntry::Resolved(Adjacency {
                port,
                src_mac: self.links[usize::from(port)].mac,
                dst_mac: mac,
            }),
            Hop::Host => NextHopEntry::Host,
            Hop::Unreachable => NextHopEntry::Unreachable,
            Hop::Neighbour(addr) if (self.on_link)(addr) || depth == 0 => {
                match self.neighbours.get(&addr) {
                    Some(&mac) => NextHopEntry::Resolved(Adjacency {
                        port: UPLINK_PORT,
                        src_mac: self.uplink_mac,
                        dst_mac: mac,
                    }),
                    None => NextHopEntry::Unresolved {
                        port: UPLINK_PORT,
                        addr,
                    },
                }
            }
            Hop::Neighbour(addr) => {
                let group = match addr {
                    IpAddr::V4(a) => self.fib4.lookup(u32::from(a)),
                    IpAddr::V6(a) => self.fib6.lookup(u128::from(a)),
                };
                let via = group
                    .and_then(|g| self.groups.get(g.index()))
                    .and_then(|members| members.first())
                    .map(|&m| m as usize)
                    .filter(|&m| m != hop);
                match via {
                    Some(m) => self.entry(m, depth - 1),
                    None => NextHopEntry::Unresolved {
                        port: UPLINK_PORT,
                        addr,
                    },
                }
            }
        }
    }
}

/// Builds the tables of the configuration alone. `links` are the ports' interfaces in
/// [`port_plan`] order; `kernel_mac` is the MAC of the host port's kernel end.
pub fn build_tables(
    c: &Config,
    links: &[Link],
    kernel_mac: Mac,
    neighbours: &Neighbours,
    proxy: &crate::services::Proxy,
) -> Result<Tables, BuildError> {
    Fib::new(c)?.tables(c, links, kernel_mac, neighbours, proxy)
}

#[cfg(test)]
mod tests {
    fn test_proxy() -> crate::services::Proxy {
        crate::services::Proxy::new(crate::services::ProxySettings {
            conntrack_max: 1024,
            ..Default::default()
        })
    }
    use super::*;
    use crate::bgp::rib::{Change, Decision};
    use fastpath::snapshot::Snapshot;

    const CONFIG: &str = "\
node: node1
uplink: {interface: up0, addresses: [192.168.100.11/24]}
host_port: {interface: xrf0, peer: xrk0}
pod_cidrs: [10.244.1.0/24]
routes:
  - {prefix: 198.51.100.0/24, via: 192.168.100.1}
";

    fn change(prefix: &str, hops: &[&str]) -> Change<Cidr> {
        Change {
            prefix: prefix.parse().unwrap(),
            best: (!hops.is_empty()).then(|| Decision {
                local: false,
                hops: hops.iter().map(|h| h.parse().unwrap()).collect(),
            }),
        }
    }

    fn batch(changes: impl IntoIterator<Item = Change<Cidr>>) -> FibBatch {
        let mut b = FibBatch::default();
        for c in changes {
            b.push(&c);
        }
        b
    }

    fn config() -> Config {
        crate::config::parse(CONFIG, "t.yaml").unwrap()
    }

    fn links(c: &Config) -> Vec<Link> {
        port_plan(c)
            .iter()
            .map(|(n, _, _)| Link {
                name: n.clone(),
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
            })
            .collect()
    }

    fn tables(fib: &mut Fib) -> Snapshot {
        let c = config();
        let links = links(&c);
        Snapshot::new(
            fib.tables(
                &c,
                &links,
                [2, 0, 0, 0, 0, 9],
                &Neighbours::new(),
                &test_proxy(),
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn members(s: &Snapshot, dst: [u8; 4]) -> Vec<IpAddr> {
        let g = s.fib4.lookup(u32::from_be_bytes(dst)).unwrap();
        s.groups[g.index()]
            .members()
            .iter()
            .map(|&m| match &s.next_hops[m as usize] {
                NextHopEntry::Unresolved { addr, .. } => *addr,
                other => panic!("{other:?}"),
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn off_link_next_hops_resolve_through_the_route_that_covers_them() {
        let mut fib = Fib::new(&config()).unwrap();
        // A multihop peer's route via 198.51.100.7 (the static route's prefix, via
        // 192.168.100.1 on the uplink), and an iBGP route via 203.0.113.5, covered
        // only by another learned route via 192.168.100.12.
        fib.apply_batch(&batch([
            change("172.16.1.0/24", &["198.51.100.7"]),
            change("203.0.113.0/24", &["192.168.100.12"]),
            change("172.16.2.0/24", &["203.0.113.5"]),
            change("172.16.3.0/24", &["100.64.0.1"]),
        ]));
        let c = config();
        let links = links(&c);
        let mut n = Neighbours::new();
        n.insert("192.168.100.1".parse().unwrap(), [2, 0, 0, 0, 1, 1]);
        n.insert("192.168.100.12".parse().unwrap(), [2, 0, 0, 0, 1, 12]);
        let s = Snapshot::new(
            fib.tables(&c, &links, [2, 0, 0, 0, 0, 9], &n, &test_proxy())
                .unwrap(),
        )
        .unwrap();
        let entry = |dst: [u8; 4]| {
            let g = s.fib4.lookup(u32::from_be_bytes(dst)).unwrap();
            s.next_hop(g, || 0).unwrap().clone()
        };
        let mac = |e: NextHopEntry| match e {
            NextHopEntry::Resolved(a) => a.dst_mac,
            other => panic!("not resolved: {other:?}"),
        };
        assert_eq!(mac(entry([172, 16, 1, 1])), [2, 0, 0, 0, 1, 1]);
        assert_eq!(mac(entry([172, 16, 2, 1])), [2, 0, 0, 0, 1, 12]);
        // Nothing covers 100.64.0.1: it stays unresolved (punted), as before.
        assert!(matches!(
            entry([172, 16, 3, 1]),
            NextHopEntry::Unresolved { .. }
        ));
    }

    #[test]
    fn learned_routes_become_ecmp_groups_and_static_routes_win() {
        let mut learned = Fib::new(&config()).unwrap();
        let n = learned.apply_batch(&batch([
            change("10.244.2.0/24", &["192.168.100.12", "192.168.100.13"]),
            change("198.51.100.0/24", &["192.168.100.12"]),
            change("203.0.113.0/24", &["192.168.100.12"]),
        ]));
        assert_eq!(
            n, 2,
            "the static route's prefix changes nothing in the table"
        );
        assert_eq!(learned.learned_len(), 3);
        let s = tables(&mut learned);
        assert_eq!(
            members(&s, [10, 244, 2, 9]),
            [
                "192.168.100.12".parse::<IpAddr>().unwrap(),
                "192.168.100.13".parse().unwrap()
            ]
        );
        assert_eq!(
            members(&s, [198, 51, 100, 1]),
            ["192.168.100.1".parse::<IpAddr>().unwrap()]
        );
        // A batch: withdraw one, repeat one unchanged; one snapshot follows.
        let n = learned.apply_batch(&batch([
            change("203.0.113.0/24", &[]),
            change("198.51.100.0/24", &["192.168.100.12"]),
        ]));
        assert_eq!((n, learned.learned_len()), (1, 2));
        let s = tables(&mut learned);
        assert!(s
            .fib4
            .lookup(u32::from_be_bytes([203, 0, 113, 1]))
            .is_none());
        assert_eq!(learned.learned_next_hops().len(), 2);
        // The pod CIDR's own route comes back when a learned one for it goes; groups
        // no route uses are freed with their next hops.
        learned.apply_batch(&batch([change("10.244.1.0/24", &["192.168.100.14"])]));
        assert_eq!(
            members(&tables(&mut learned), [10, 244, 1, 1]),
            ["192.168.100.14".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(learned.learned_next_hops().len(), 3);
        learned.apply_batch(&batch([
            change("10.244.1.0/24", &[]),
            change("10.244.2.0/24", &[]),
            change("198.51.100.0/24", &[]),
        ]));
        let s = tables(&mut learned);
        let g = s.fib4.lookup(u32::from_be_bytes([10, 244, 1, 1])).unwrap();
        assert!(matches!(
            s.next_hops[s.groups[g.index()].members()[0] as usize],
            NextHopEntry::Unreachable
        ));
        assert_eq!(learned.learned_len(), 0);
        assert!(learned.learned_next_hops().is_empty());
    }
}
