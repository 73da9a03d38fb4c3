//! Who a node peers with, by kube-router's rules: its flags ([`BgpOptions`], with
//! kube-router's defaults) and every node's annotations.
//!
//! - Full mesh (the default): every node is in the cluster ASN and peers with every
//!   other node over iBGP.
//! - `--nodes-full-mesh=false`: a node's ASN is its `node.asn` annotation; only nodes
//!   with the same ASN peer.
//! - Route reflection: `rr.server` nodes peer with each other, with plain nodes, and
//!   with the `rr.client` nodes of their cluster ID, whom they reflect to; a client
//!   peers only with the servers of its cluster ID.
//! - External peers: the global ones from the flags, for every node, and the node's
//!   own from its annotations.
//!
//! Bad annotations are reported naming the node and annotation; that node or peer is
//! left out and the rest is computed.

use super::annotations::{parse_node, valid_asn, AnnotationError, ExternalPeer, NodeBgp, BGP_PORT};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// kube-router's BGP flags, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpOptions {
    /// `--cluster-asn` (64512 when unset).
    pub cluster_asn: u32,
    /// `--enable-ibgp` (true).
    pub enable_ibgp: bool,
    /// `--nodes-full-mesh` (true).
    pub nodes_full_mesh: bool,
    /// `--peer-router-ips`, `--peer-router-asns`, `--peer-router-ports`,
    /// `--peer-router-passwords` (or `--peer-router-passwords-file`), checked.
    pub global_peers: Vec<ExternalPeer>,
    /// `--peer-router-multihop-ttl` (0: directly connected).
    pub multihop_ttl: u8,
    /// `--bgp-port` (179).
    pub bgp_port: u16,
    /// `--bgp-holdtime` (90 s).
    pub hold_time: Duration,
    /// `--bgp-graceful-restart` (false), `--bgp-graceful-restart-time` (90 s),
    /// `--bgp-graceful-restart-deferral-time` (360 s).
    pub graceful_restart: bool,
    pub graceful_restart_time: Duration,
    pub graceful_restart_deferral_time: Duration,
    /// `--router-id` (the node's IP when unset).
    pub router_id: Option<std::net::Ipv4Addr>,
    /// `--override-nexthop` (false).
    pub override_nexthop: bool,
    /// `--advertise-pod-cidr` (true), `--advertise-cluster-ip`,
    /// `--advertise-external-ip`, `--advertise-loadbalancer-ip` (false).
    pub advertise_pod_cidr: bool,
    pub advertise_cluster_ip: bool,
    pub advertise_external_ip: bool,
    pub advertise_loadbalancer_ip: bool,
}

/// kube-router's default cluster ASN.
pub const DEFAULT_CLUSTER_ASN: u32 = 64512;

impl Default for BgpOptions {
    fn default() -> Self {
        BgpOptions {
            cluster_asn: DEFAULT_CLUSTER_ASN,
            enable_ibgp: true,
            nodes_full_mesh: true,
            global_peers: Vec::new(),
            multihop_ttl: 0,
            bgp_port: BGP_PORT,
            hold_time: Duration::from_secs(90),
            graceful_restart: false,
            graceful_restart_time: Duration::from_secs(90),
            graceful_restart_deferral_time: Duration::from_secs(360),
            router_id: None,
            override_nexthop: false,
            advertise_pod_cidr: true,
            advertise_cluster_ip: false,
            advertise_external_ip: false,
            advertise_loadbalancer_ip: false,
        }
    }
}

/// A node of the cluster model, as the peering rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub ip: IpAddr,
    pub annotations: BTreeMap<String, String>,
}

/// One session to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
    pub port: u16,
    pub password: Option<Vec<u8>>,
    pub local_ip: Option<IpAddr>,
    /// Another node of the cluster (iBGP, or a node of another ASN).
    pub internal: bool,
    /// We reflect routes to this neighbour (it is our route-reflector client).
    pub rr_client: bool,
    /// eBGP multihop TTL (external peers only; 0: directly connected).
    pub multihop_ttl: u8,
}

/// This node's BGP identity and sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peering {
    pub asn: u32,
    /// Our route-reflector cluster ID, if we are a server.
    pub rr_cluster_id: Option<u32>,
    /// This node's own annotation settings (prepend, communities, import rejects).
    pub node: NodeBgp,
    pub neighbors: Vec<Neighbor>,
}

/// The sessions of node `me` among `nodes` (which includes `me`). `None` if this node
/// cannot run BGP (no usable ASN); the errors say why.
pub fn peering(
    me: &str,
    nodes: &[ClusterNode],
    options: &BgpOptions,
) -> (Option<Peering>, Vec<AnnotationError>) {
    let mut errors = Vec::new();
    let mut parsed: Vec<(&ClusterNode, NodeBgp)> = Vec::new();
    for n in nodes {
        let (bgp, e) = parse_node(&n.name, &n.annotations);
        if n.name == me {
            errors.extend(e);
        }
        parsed.push((n, bgp));
    }
    let Some(mine) = parsed.iter().position(|(n, _)| n.name == me) else {
        errors.push(AnnotationError {
            node: me.to_string(),
            annotation: String::new(),
            peer: None,
            message: "this node is not in the cluster model".to_string(),
        });
        return (None, errors);
    };
    let asn_of = |b: &NodeBgp| {
        if options.nodes_full_mesh {
            Some(options.cluster_asn)
        } else {
            b.asn
        }
    };
    let (me_node, me_bgp) = &parsed[mine];
    let Some(asn) = asn_of(me_bgp) else {
        errors.push(AnnotationError {
            node: me.to_string(),
            annotation: "node.asn".to_string(),
            peer: None,
            message: "needed when --nodes-full-mesh=false; BGP stays off on this node".to_string(),
        });
        return (None, errors);
    };
    if !valid_asn(asn) {
        errors.push(AnnotationError {
            node: me.to_string(),
            annotation: String::new(),
            peer: None,
            message: format!("cluster ASN {asn} is reserved; BGP stays off on this node"),
        });
        return (None, errors);
    }
    let mut neighbors = Vec::new();
    if options.enable_ibgp {
        for (n, b) in &parsed {
            if n.name == me || n.ip == me_node.ip {
                continue;
            }
            let Some(their_asn) = asn_of(b) else {
                continue; // without node.asn a node peers with nobody
            };
            if their_asn != asn {
                continue;
            }
            let (peer, rr_client) =
                match (me_bgp.rr_server, me_bgp.rr_client, b.rr_server, b.rr_client) {
                    // A client peers only with the servers of its cluster.
                    (_, Some(c), Some(s), _) => (c == s, false),
                    (_, Some(_), None, _) => (false, false),
                    // A server peers with the clients of its cluster (and reflects to them).
                    (Some(s), None, _, Some(c)) => (s == c, true),
                    // Nobody else peers with clients.
                    (None, None, _, Some(_)) => (false, false),
                    // Servers and plain nodes mesh.
                    _ => (true, false),
                };
            if peer {
                neighbors.push(Neighbor {
                    address: n.ip,
                    asn,
                    port: options.bgp_port,
                    password: None,
                    local_ip: None,
                    internal: true,
                    rr_client,
                    multihop_ttl: 0,
                });
            }
        }
    }
    for p in options.global_peers.iter().chain(&me_bgp.peers) {
        if neighbors.iter().any(|n| n.address == p.ip) {
            continue;
        }
        neighbors.push(Neighbor {
            address: p.ip,
            asn: p.asn,
            port: p.port,
            password: p.password.clone(),
            local_ip: p.local_ip,
            internal: false,
            rr_client: false,
            multihop_ttl: options.multihop_ttl,
        });
    }
    (
        Some(Peering {
            asn,
            rr_cluster_id: me_bgp.rr_server,
            node: me_bgp.clone(),
            neighbors,
        }),
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8, ann: &[(&str, &str)]) -> ClusterNode {
        ClusterNode {
            name: format!("node{i}"),
            ip: IpAddr::from([192, 168, 100, 10 + i]),
            annotations: ann
                .iter()
                .map(|(k, v)| (format!("kube-router.io/{k}"), v.to_string()))
                .collect(),
        }
    }

    fn peers(me: &str, nodes: &[ClusterNode], o: &BgpOptions) -> Vec<(u8, bool)> {
        let (p, _) = peering(me, nodes, o);
        p.unwrap()
            .neighbors
            .iter()
            .filter(|x| x.internal)
            .map(|x| match x.address {
                IpAddr::V4(a) => (a.octets()[3] - 10, x.rr_client),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn full_mesh_in_the_cluster_asn_by_default() {
        let nodes = [n(1, &[]), n(2, &[]), n(3, &[("node.asn", "65001")])];
        let (p, e) = peering("node1", &nodes, &BgpOptions::default());
        assert!(e.is_empty());
        let p = p.unwrap();
        assert_eq!(p.asn, 64512);
        assert_eq!(
            peers("node1", &nodes, &BgpOptions::default()),
            [(2, false), (3, false)]
        );
    }

    #[test]
    fn without_full_mesh_only_the_same_asn_peers() {
        let o = BgpOptions {
            nodes_full_mesh: false,
            ..BgpOptions::default()
        };
        let nodes = [
            n(1, &[("node.asn", "65001")]),
            n(2, &[("node.asn", "65001")]),
            n(3, &[("node.asn", "65002")]),
            n(4, &[]),
        ];
        assert_eq!(peers("node1", &nodes, &o), [(2, false)]);
        let (p, e) = peering("node4", &nodes, &o);
        assert!(p.is_none());
        assert_eq!(
            e[0].to_string(),
            "node node4: kube-router.io/node.asn: needed when --nodes-full-mesh=false; BGP stays off on this node"
        );
    }

    #[test]
    fn route_reflection_by_cluster_id() {
        let nodes = [
            n(1, &[("rr.server", "42")]),
            n(2, &[("rr.server", "42")]),
            n(3, &[("rr.client", "42")]),
            n(4, &[("rr.client", "7")]),
            n(5, &[]),
        ];
        let o = BgpOptions::default();
        assert_eq!(
            peers("node1", &nodes, &o),
            [(2, false), (3, true), (5, false)]
        );
        assert_eq!(peers("node3", &nodes, &o), [(1, false), (2, false)]);
        assert_eq!(peers("node4", &nodes, &o), []);
        assert_eq!(peers("node5", &nodes, &o), [(1, false), (2, false)]);
    }

    #[test]
    fn external_peers_from_flags_and_annotations() {
        let o = BgpOptions {
            global_peers: vec![ExternalPeer {
                ip: "192.168.1.99".parse().unwrap(),
                asn: 65000,
                port: 179,
                password: None,
                local_ip: None,
            }],
            multihop_ttl: 3,
            ..BgpOptions::default()
        };
        let nodes = [
            n(1, &[("peer.ips", "192.168.1.100"), ("peer.asns", "65001")]),
            n(2, &[("peer.ips", "192.168.1.101"), ("peer.asns", "bad")]),
        ];
        let (p, e) = peering("node1", &nodes, &o);
        assert!(
            e.is_empty(),
            "another node's bad annotation is its own: {e:?}"
        );
        let ext: Vec<_> = p
            .unwrap()
            .neighbors
            .into_iter()
            .filter(|x| !x.internal)
            .map(|x| (x.address.to_string(), x.asn, x.multihop_ttl))
            .collect();
        assert_eq!(
            ext,
            [
                ("192.168.1.99".to_string(), 65000, 3),
                ("192.168.1.100".to_string(), 65001, 3)
            ]
        );
        let (_, e) = peering("node2", &nodes, &o);
        assert_eq!(e.len(), 1);
        assert!(e[0]
            .to_string()
            .starts_with("node node2: kube-router.io/peer.asns: peer 1"));
    }
}
