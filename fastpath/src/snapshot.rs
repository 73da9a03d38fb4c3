//! The tables a worker forwards with, one generation at a time.
//!
//! A [`Snapshot`] holds everything a forwarding decision reads: the FIBs, the next-hop
//! groups their routes name, the next hops those groups pick from, the pods on this
//! node and the node's own addresses. One generation holds them all, so a worker never
//! sees a route pointing at a group of another generation (rust-vmm's vm-memory keeps
//! its regions so). The control thread builds a complete new generation off the hot
//! path and [`SnapshotCell::publish`]es it with one atomic swap; a worker
//! [`SnapshotCell::load`]s once per batch (wait-free) and decides the whole batch
//! against it. A generation is freed when the last worker holding it moves on.

use crate::ecmp::NextHopGroup;
use crate::wire::ethernet::Mac;
use arc_swap::{ArcSwap, Guard};
use lpm::{Lpm4, Lpm6, NextHop};
use nat::affinity::Affinity;
use nat::conntrack::flow::Conntrack;
use nat::conntrack::tcp::Timeouts;
use nat::frontend::Frontends;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A port of the fastpath (uplink, a pod's veth, the host port), as the workers
/// number them.
pub type PortId = u16;

/// How to send a frame to a neighbour: the port, and the MACs to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjacency {
    pub port: PortId,
    pub src_mac: Mac,
    pub dst_mac: Mac,
}

/// What a next-hop group member leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHopEntry {
    /// A neighbour whose MAC is known: rewrite and send.
    Resolved(Adjacency),
    /// A neighbour whose MAC is not known yet: the frame goes to the kernel through the
    /// host port, which resolves it (counted as a punt).
    Unresolved { port: PortId, addr: IpAddr },
    /// The node's own stack, through the host port.
    Host,
    /// Nothing there (a local pod CIDR's unused addresses): answer ICMP unreachable.
    Unreachable,
}

/// A pod on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub addrs: Vec<IpAddr>,
    pub port: PortId,
    pub mac: Mac,
}

/// The gateway pods send to: the fastpath answers their ARP and neighbour
/// solicitations for it with the MAC of the pod's port, and its echo requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// What a port is for, which decides what the fastpath accepts on it and how it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// The node's link to the network: only cluster traffic reaches the fastpath.
    Uplink,
    /// The host side of a pod's veth: the pod's gateway is behind it.
    Pod,
    /// The veth into the node's own stack: punts and host-bound traffic leave here.
    Host,
}

/// A port as the pipeline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    /// The MAC of the fastpath's end of the link (the source of frames it sends there).
    pub mac: Mac,
    /// The largest IP packet the link carries.
    pub mtu: u16,
    pub role: PortRole,
}

/// The service proxy's tables: the frontends of this generation, and the flows and
/// client affinities, which outlive generations (every snapshot holds the same ones).
#[derive(Debug, Clone)]
pub struct Services {
    pub frontends: Arc<Frontends>,
    pub conntrack: Arc<Conntrack>,
    pub affinity: Arc<Affinity>,
    /// The translations of fragmented IPv4 datagrams, for their later fragments.
    pub fragments: Arc<nat::fragments::Fragments>,
    pub timeouts: Timeouts,
    /// The node addresses flows are SNATed to (NodePort and external traffic with the
    /// Cluster policy, pod egress), one per family.
    pub snat4: Option<Ipv4Addr>,
    pub snat6: Option<Ipv6Addr>,
    /// The ports SNATed flows take, inclusive; the host's stack never picks them
    /// (the control side reserves them).
    pub snat_ports: (u16, u16),
    /// Sources inside the cluster (every node's pod CIDRs, the nodes): their flows to
    /// external frontends take every endpoint and keep their address.
    pub cluster: Vec<(IpAddr, u8)>,
    /// The service cluster IP ranges: destinations inside the cluster for pod egress
    /// (never a source that makes a packet the cluster's).
    pub service_ranges: Vec<(IpAddr, u8)>,
    /// Pod traffic to destinations outside `cluster` and not routed by BGP is SNATed
    /// to the node (`--enable-pod-egress`).
    pub pod_egress: bool,
    /// Every flow to a service is SNATed (`--masquerade-all`).
    pub masquerade_all: bool,
    /// TCP segments outside their flow's window are let through
    /// (`--conntrack-tcp-be-liberal`, kube-proxy's flag; Linux's
    /// `nf_conntrack_tcp_be_liberal`); by default they are dropped as invalid.
    pub tcp_be_liberal: bool,
    /// The node addresses NodePorts are served on.
    pub node_port_addrs: Vec<IpAddr>,
}

/// The SNAT port range when none is configured: above Linux's default ephemeral range
/// (32768-60999).
pub const DEFAULT_SNAT_PORTS: (u16, u16) = (61000, 65535);

impl Services {
    /// Whether the service stage has anything to do: services to serve, or pod egress
    /// to SNAT.
    #[inline]
    pub fn active(&self) -> bool {
        self.pod_egress || !self.frontends.is_empty()
    }
}

impl Default for Services {
    fn default() -> Services {
        Services {
            frontends: Arc::new(Frontends::default()),
            conntrack: Arc::new(Conntrack::new(0, 0)),
            affinity: Arc::new(Affinity::new(0)),
            fragments: Arc::new(nat::fragments::Fragments::new(0)),
            timeouts: Timeouts::default(),
            snat4: None,
            snat6: None,
            snat_ports: DEFAULT_SNAT_PORTS,
            cluster: Vec::new(),
            service_ranges: Vec::new(),
            pod_egress: false,
            masquerade_all: false,
            tcp_be_liberal: false,
            node_port_addrs: Vec::new(),
        }
    }
}

/// Why a snapshot was refused: it would send a worker out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("next-hop group {group} has member {member}, but there are {next_hops} next hops")]
    MemberOutOfRange {
        group: usize,
        member: u32,
        next_hops: usize,
    },
    #[error("the FIBs name next-hop group {group}, but there are {groups} groups")]
    GroupOutOfRange { group: usize, groups: usize },
    #[error("{what} sends to port {port}, but there are {ports} ports")]
    PortOutOfRange {
        what: String,
        port: PortId,
        ports: usize,
    },
}

/// The forwarding tables, as the control side builds them.
#[derive(Debug, Clone)]
pub struct Tables {
    pub fib4: Arc<Lpm4>,
    pub fib6: Arc<Lpm6>,
    /// The largest next-hop group id the FIBs were built with (the FIB builder knows it).
    pub max_group: Option<NextHop>,
    /// Indexed by the [`NextHop`] ids the FIBs return.
    pub groups: Vec<NextHopGroup>,
    /// Indexed by the members of `groups`.
    pub next_hops: Vec<NextHopEntry>,
    pub pods: Vec<LocalPod>,
    /// Traffic to these addresses belongs to the node's own stack.
    pub node_addrs: Vec<IpAddr>,
    pub gateway: Gateway,
    /// Indexed by [`PortId`].
    pub ports: Vec<PortInfo>,
    /// The host port, and the MACs that reach the node's stack through it.
    pub host: Option<Adjacency>,
    pub services: Services,
}

/// One generation of the forwarding tables, checked: every group the FIBs name exists
/// and every group member names a next hop.
#[derive(Debug, Clone)]
pub struct Snapshot {
    generation: u64,
    tables: Tables,
    /// Indexed by [`PortId`]: the index in `pods` of the pod behind the port.
    pod_of_port: Vec<Option<u32>>,
}

impl std::ops::Deref for Snapshot {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl Snapshot {
    /// Checks `tables`; the generation is set when the snapshot is published.
    pub fn new(tables: Tables) -> Result<Snapshot, SnapshotError> {
        let groups = tables.groups.len();
        if let Some(g) = tables.max_group.filter(|g| g.index() >= groups) {
            return Err(SnapshotError::GroupOutOfRange {
                group: g.index(),
                groups,
            });
        }
        let next_hops = tables.next_hops.len();
        for (group, g) in tables.groups.iter().enumerate() {
            if let Some(&member) = g.members().iter().find(|&&m| m as usize >= next_hops) {
                return Err(SnapshotError::MemberOutOfRange {
                    group,
                    member,
                    next_hops,
                });
            }
        }
        let ports = tables.ports.len();
        let check = |what: &dyn Fn() -> String, port: PortId| {
            if usize::from(port) < ports {
                Ok(())
            } else {
                Err(SnapshotError::PortOutOfRange {
                    what: what(),
                    port,
                    ports,
                })
            }
        };
        for (i, nh) in tables.next_hops.iter().enumerate() {
            match nh {
                NextHopEntry::Resolved(a) => check(&|| format!("next hop {i}"), a.port)?,
                NextHopEntry::Unresolved { port, .. } => check(&|| format!("next hop {i}"), *port)?,
                NextHopEntry::Host | NextHopEntry::Unreachable => {}
            }
        }
        for pod in &tables.pods {
            check(&|| format!("pod {:?}", pod.addrs), pod.port)?;
        }
        if let Some(h) = &tables.host {
            check(&|| "the host port".to_string(), h.port)?;
        }
        let mut pod_of_port = vec![None; ports];
        for (i, pod) in tables.pods.iter().enumerate() {
            pod_of_port[usize::from(pod.port)] = Some(i as u32);
        }
        Ok(Snapshot {
            generation: 0,
            tables,
            pod_of_port,
        })
    }

    /// The generation number (1 for the first published).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The pod behind a port, if the port is a pod's.
    #[inline]
    pub fn pod_on(&self, port: PortId) -> Option<&LocalPod> {
        let i = (*self.pod_of_port.get(usize::from(port))?)?;
        self.pods.get(i as usize)
    }

    /// The next hop of group `group` for a flow (`hash` is called only if the group has
    /// more than one member). `None` if the FIB returned an id with no group, which
    /// [`Snapshot::new`] rules out.
    #[inline]
    pub fn next_hop(&self, group: NextHop, hash: impl FnOnce() -> u32) -> Option<&NextHopEntry> {
        let member = self.groups.get(group.index())?.pick(hash);
        self.next_hops.get(member as usize)
    }
}

/// Where the current snapshot lives: one writer publishes, every worker loads.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    generations: AtomicU64,
}

impl SnapshotCell {
    /// A cell whose first generation is `first`.
    pub fn new(mut first: Snapshot) -> SnapshotCell {
        first.generation = 1;
        SnapshotCell {
            current: ArcSwap::from_pointee(first),
            generations: AtomicU64::new(1),
        }
    }

    /// The current snapshot, for one batch: wait-free, and valid for as long as the
    /// guard is held even if a newer one is published meanwhile.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Makes `next` the current snapshot with the next generation number, and returns
    /// it. The previous one is freed when its last reader drops its guard.
    pub fn publish(&self, mut next: Snapshot) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        next.generation = generation;
        // ArcSwap's store is a release: a worker that loads the new pointer sees the
        // tables written before it.
        self.current.store(Arc::new(next));
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecmp::flow_hash_v4;
    use lpm::{LpmBuilder, Prefix4};

    fn nh(id: u16) -> NextHop {
        NextHop::new(id).unwrap()
    }

    fn adjacency(port: PortId) -> NextHopEntry {
        NextHopEntry::Resolved(Adjacency {
            port,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, port as u8],
        })
    }

    /// 10.244.1.0/24 over two uplink neighbours (ECMP), 10.244.0.5/32 a local pod.
    fn tables() -> Tables {
        let fib4 = LpmBuilder::from_routes([
            ("10.244.1.0/24".parse::<Prefix4>().unwrap(), nh(0)),
            ("10.244.0.5/32".parse().unwrap(), nh(1)),
        ])
        .table();
        let groups = vec![
            NextHopGroup::new(&[(0, 1), (1, 1)]).unwrap(),
            NextHopGroup::new(&[(2, 1)]).unwrap(),
        ];
        let next_hops = vec![adjacency(1), adjacency(2), adjacency(7)];
        let pods = vec![LocalPod {
            addrs: vec!["10.244.0.5".parse().unwrap()],
            port: 7,
            mac: [2, 0, 0, 0, 0, 7],
        }];
        let gateway = Gateway {
            ipv4: Some(Ipv4Addr::new(10, 244, 0, 1)),
            ipv6: None,
        };
        let fib6 = LpmBuilder::new().table();
        let port = |role| PortInfo {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            role,
        };
        let mut ports = vec![port(PortRole::Uplink), port(PortRole::Uplink)];
        ports.extend((2..8).map(|_| port(PortRole::Pod)));
        Tables {
            fib4,
            fib6,
            max_group: Some(nh(1)),
            groups,
            next_hops,
            pods,
            node_addrs: vec![],
            gateway,
            ports,
            host: None,
            services: Services::default(),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(tables()).unwrap()
    }

    #[test]
    fn routes_resolve_through_groups_to_neighbours() {
        let s = snapshot();
        let dst = u32::from(Ipv4Addr::new(10, 244, 1, 9));
        let group = s.fib4.lookup(dst).unwrap();
        let mut ports = std::collections::HashSet::new();
        for sport in 0..64u16 {
            let h = flow_hash_v4(0x0a00_0002, dst, 6, sport, 80);
            let first = s.next_hop(group, || h).unwrap().clone();
            assert_eq!(
                s.next_hop(group, || h),
                Some(&first),
                "a flow sticks to its member"
            );
            if let NextHopEntry::Resolved(a) = first {
                ports.insert(a.port);
            }
        }
        assert_eq!(ports, [1, 2].into_iter().collect());
        let pod = s
            .fib4
            .lookup(u32::from(Ipv4Addr::new(10, 244, 0, 5)))
            .unwrap();
        assert_eq!(s.next_hop(pod, || unreachable!()), Some(&adjacency(7)));
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        let e = Snapshot::new(Tables {
            max_group: Some(nh(2)),
            ..tables()
        });
        assert_eq!(
            e.unwrap_err(),
            SnapshotError::GroupOutOfRange {
                group: 2,
                groups: 2
            }
        );
        let e = Snapshot::new(Tables {
            next_hops: vec![],
            ..tables()
        });
        assert!(matches!(
            e.unwrap_err(),
            SnapshotError::MemberOutOfRange { group: 0, .. }
        ));
        let e = Snapshot::new(Tables {
            ports: vec![],
            ..tables()
        });
        assert_eq!(
            e.unwrap_err().to_string(),
            "next hop 0 sends to port 1, but there are 0 ports"
        );
    }

    #[test]
    fn workers_see_whole_generations_in_order_and_old_ones_are_freed() {
        let cell = Arc::new(SnapshotCell::new(snapshot()));
        let first = Arc::downgrade(&*cell.load());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || {
                    let mut last = 0;
                    for _ in 0..20_000 {
                        let s = cell.load();
                        // Generation g was built with g - 1 next hops beyond the first
                        // three, and with as many node addresses: a publish that gave
                        // tables another generation's number would show here.
                        let extra = s.generation() as usize - 1;
                        assert_eq!(s.next_hops.len(), 3 + extra, "number and tables disagree");
                        assert_eq!(s.node_addrs.len(), extra, "number and tables disagree");
                        assert!(s.generation() >= last, "generations go backwards");
                        last = s.generation();
                    }
                    last
                })
            })
            .collect();
        for g in 2..=201usize {
            let mut next = tables();
            for _ in 1..g {
                next.next_hops.push(NextHopEntry::Host);
                next.node_addrs.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            assert_eq!(cell.publish(Snapshot::new(next).unwrap()), g as u64);
        }
        for r in readers {
            assert!(r.join().unwrap() >= 1);
        }
        assert_eq!(cell.load().generation(), 201);
        assert!(first.upgrade().is_none(), "generation 1 is still alive");
    }
}
