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

/// Builds the tables. `links` are the ports' interfaces in [`port_plan`] order;
/// `kernel_mac` is the MAC of the host port's kernel end.
pub fn build_tables(
    c: &Config,
    links: &[Link],
    kernel_mac: Mac,
    neighbours: &Neighbours,
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
