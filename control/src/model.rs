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

use crate::bgp::rib::Change;
use crate::config::{Cidr, Config};
use fastpath::ecmp::NextHopGroup;
use fastpath::snapshot::{
    Adjacency, Gateway, LocalPod, NextHopEntry, PortId, PortInfo, PortRole, Tables,
};
use fastpath::steer::SteerMode;
use fastpath::wire::ethernet::Mac;
use lpm::{LpmBuilder, NextHop, Prefix4, Prefix6};
use std::collections::{BTreeMap, HashMap};
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
pub type Neighbours = HashMap<IpAddr, Mac>;

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

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Hop {
    Pod(PortId, Mac),
    Host,
    Unreachable,
    Neighbour(IpAddr),
}

/// Interns next hops and groups, numbering them in first-use order.
#[derive(Default)]
struct Interner {
    hops: BTreeMap<Hop, u32>,
    hop_list: Vec<Hop>,
    groups: BTreeMap<Vec<u32>, u16>,
    group_list: Vec<Vec<u32>>,
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

    fn group(&mut self, hops: Vec<Hop>) -> Result<NextHop, String> {
        let mut members: Vec<u32> = hops.into_iter().map(|h| self.hop(h)).collect();
        members.sort_unstable();
        members.dedup();
        if let Some(&g) = self.groups.get(&members) {
            return NextHop::new(g).ok_or_else(|| "too many next-hop groups".to_string());
        }
        let g = u16::try_from(self.group_list.len())
            .ok()
            .filter(|&g| g < u16::MAX)
            .ok_or_else(|| "too many next-hop groups".to_string())?;
        self.groups.insert(members.clone(), g);
        self.group_list.push(members);
        NextHop::new(g).ok_or_else(|| "too many next-hop groups".to_string())
    }
}

/// The routes a routing protocol chose (BGP's best paths), each with its ECMP next
/// hops. Changes are applied in batches; the caller builds one snapshot per batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LearnedRoutes {
    routes: BTreeMap<Cidr, Vec<IpAddr>>,
    /// How many routes use each next hop (kept as routes change, so the set of next
    /// hops costs nothing to read).
    hops: BTreeMap<IpAddr, usize>,
}

impl LearnedRoutes {
    fn count(&mut self, hops: &[IpAddr], add: bool) {
        for h in hops {
            if add {
                *self.hops.entry(*h).or_default() += 1;
            } else if let Some(n) = self.hops.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    self.hops.remove(h);
                }
            }
        }
    }

    /// Applies a batch of Loc-RIB changes; returns how many changed a route.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change<Cidr>>) -> usize {
        let mut changed = 0;
        for c in changes {
            let old = match c.best {
                Some(best) => {
                    if self.routes.get(&c.prefix) == Some(&best.multipath) {
                        continue;
                    }
                    self.count(&best.multipath, true);
                    self.routes.insert(c.prefix, best.multipath)
                }
                None => self.routes.remove(&c.prefix),
            };
            if let Some(old) = &old {
                self.count(old, false);
            }
            changed += 1;
        }
        changed
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn contains(&self, prefix: &Cidr) -> bool {
        self.routes.contains_key(prefix)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every next hop the routes use (the uplink must resolve them), in order.
    pub fn next_hops(&self) -> Vec<IpAddr> {
        self.hops.keys().copied().collect()
    }
}

/// Builds the tables. `links` are the ports' interfaces in [`port_plan`] order;
/// `kernel_mac` is the MAC of the host port's kernel end.
pub fn build_tables(
    c: &Config,
    links: &[Link],
    kernel_mac: Mac,
    neighbours: &Neighbours,
) -> Result<Tables, String> {
    build_tables_learned(c, links, kernel_mac, neighbours, &LearnedRoutes::default())
}

/// As [`build_tables`], with the routes a routing protocol learned. A static route
/// for the same prefix wins over a learned one (as a lower administrative distance
/// would).
pub fn build_tables_learned(
    c: &Config,
    links: &[Link],
    kernel_mac: Mac,
    neighbours: &Neighbours,
    learned: &LearnedRoutes,
) -> Result<Tables, String> {
    let plan = port_plan(c);
    if links.len() != plan.len() {
        return Err(format!(
            "{} ports planned but {} links given",
            plan.len(),
            links.len()
        ));
    }
    let uplink = &links[usize::from(UPLINK_PORT)];
    let mut fib4: Vec<(Prefix4, NextHop)> = Vec::new();
    let mut fib6: Vec<(Prefix6, NextHop)> = Vec::new();
    let mut it = Interner::default();
    let mut add = |cidr: Cidr, nh: NextHop| match cidr {
        Cidr::V4(p) => fib4.push((p, nh)),
        Cidr::V6(p) => fib6.push((p, nh)),
    };
    let host_cidr = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Cidr::V4(Prefix4::new_masked(u32::from(a), 32)),
        IpAddr::V6(a) => Cidr::V6(Prefix6::new_masked(u128::from(a), 128)),
    };
    // Broad first, specific last: the builder keeps the last route for a prefix.
    for p in &c.pod_cidrs {
        add(*p, it.group(vec![Hop::Unreachable])?);
    }
    for (prefix, via) in &learned.routes {
        add(
            *prefix,
            it.group(via.iter().map(|&v| Hop::Neighbour(v)).collect())?,
        );
    }
    for r in &c.routes {
        let hops = r
            .via
            .as_slice()
            .iter()
            .map(|&v| Hop::Neighbour(v))
            .collect();
        add(r.prefix, it.group(hops)?);
    }
    for n in &c.nodes {
        for p in &n.pod_cidrs {
            add(*p, it.group(vec![Hop::Neighbour(n.ip)])?);
        }
    }
    for a in &c.uplink.addresses {
        add(a.subnet(), it.group(vec![Hop::Host])?);
        add(host_cidr(a.addr), it.group(vec![Hop::Host])?);
    }
    let mut pods = Vec::new();
    for (i, pod) in c.pods.iter().enumerate() {
        let port = (2 + i) as PortId;
        let group = it.group(vec![Hop::Pod(port, pod.mac.0)])?;
        for &ip in &pod.ips {
            add(host_cidr(ip), group);
        }
        pods.push(LocalPod {
            addrs: pod.ips.clone(),
            port,
            mac: pod.mac.0,
        });
    }
    let next_hops = it
        .hop_list
        .iter()
        .map(|h| match *h {
            Hop::Pod(port, mac) => NextHopEntry::Resolved(Adjacency {
                port,
                src_mac: links[usize::from(port)].mac,
                dst_mac: mac,
            }),
            Hop::Host => NextHopEntry::Host,
            Hop::Unreachable => NextHopEntry::Unreachable,
            Hop::Neighbour(addr) => match neighbours.get(&addr) {
                Some(&mac) => NextHopEntry::Resolved(Adjacency {
                    port: UPLINK_PORT,
                    src_mac: uplink.mac,
                    dst_mac: mac,
                }),
                None => NextHopEntry::Unresolved {
                    port: UPLINK_PORT,
                    addr,
                },
            },
        })
        .collect();
    let groups = it
        .group_list
        .iter()
        .map(|members| {
            let weighted: Vec<(u32, u32)> = members.iter().map(|&m| (m, 1)).collect();
            NextHopGroup::new(&weighted).map_err(|e| format!("next-hop group: {e}"))
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
        fib4: LpmBuilder::from_routes(fib4).table(),
        fib6: LpmBuilder::from_routes(fib6).table(),
        max_group,
        groups,
        next_hops,
        pods,
        node_addrs: c.uplink.addresses.iter().map(|a| a.addr).collect(),
        gateway,
        ports,
        host: Some(Adjacency {
            port: HOST_PORT,
            src_mac: links[usize::from(HOST_PORT)].mac,
            dst_mac: kernel_mac,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::rib::{AsSegment, Best, Origin, Path, PathAttrs, Source};
    use fastpath::snapshot::Snapshot;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const CONFIG: &str = "\
node: node1
uplink: {interface: up0, addresses: [192.168.100.11/24]}
host_port: {interface: xrf0, peer: xrk0}
pod_cidrs: [10.244.1.0/24]
routes:
  - {prefix: 198.51.100.0/24, via: 192.168.100.1}
";

    fn best(hops: &[&str]) -> Option<Best> {
        let attrs = |nh: &str| PathAttrs {
            origin: Origin::Igp,
            as_path: vec![AsSegment::Sequence(vec![65000])],
            next_hop: nh.parse().unwrap(),
            med: None,
            local_pref: None,
            communities: vec![],
            originator_id: None,
            cluster_list: vec![],
        };
        Some(Best {
            best: Path {
                source: Source {
                    peer: 1,
                    router_id: Ipv4Addr::new(1, 1, 1, 1),
                    address: hops[0].parse().unwrap(),
                    ebgp: true,
                    local: false,
                },
                attrs: Arc::new(attrs(hops[0])),
                since: 0,
            },
            multipath: hops.iter().map(|h| h.parse().unwrap()).collect(),
        })
    }

    fn change(prefix: &str, hops: &[&str]) -> Change<Cidr> {
        Change {
            prefix: prefix.parse().unwrap(),
            best: if hops.is_empty() { None } else { best(hops) },
        }
    }

    fn tables(learned: &LearnedRoutes) -> Snapshot {
        let c = crate::config::parse(CONFIG, "t.yaml").unwrap();
        let links: Vec<Link> = port_plan(&c)
            .iter()
            .map(|(n, _, _)| Link {
                name: n.clone(),
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
            })
            .collect();
        Snapshot::new(
            build_tables_learned(&c, &links, [2, 0, 0, 0, 0, 9], &Neighbours::new(), learned)
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
    fn learned_routes_become_ecmp_groups_and_static_routes_win() {
        let mut learned = LearnedRoutes::default();
        let n = learned.apply([
            change("10.244.2.0/24", &["192.168.100.12", "192.168.100.13"]),
            change("198.51.100.0/24", &["192.168.100.12"]),
            change("203.0.113.0/24", &["192.168.100.12"]),
        ]);
        assert_eq!(n, 3);
        let s = tables(&learned);
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
        let n = learned.apply([
            change("203.0.113.0/24", &[]),
            change("198.51.100.0/24", &["192.168.100.12"]),
        ]);
        assert_eq!((n, learned.len()), (1, 2));
        let s = tables(&learned);
        assert!(s
            .fib4
            .lookup(u32::from_be_bytes([203, 0, 113, 1]))
            .is_none());
        assert_eq!(learned.next_hops().len(), 2);
    }
}
